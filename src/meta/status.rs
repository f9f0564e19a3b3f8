//! Read-only figures for the operator's status view: failed operations grouped by reason and
//! the health of this site's copies. Plain SQL that PostgreSQL accepts too.

use sqlx::Row;

use super::replication::now_ms;
use super::MetaStore;
use crate::error::Result;

/// Failed operations towards one peer that share a reason.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailureReason {
    pub reason: String,
    pub count: i64,
    /// A few of them, newest first: (bucket, key, action).
    pub examples: Vec<(String, String, String)>,
}

/// What the catalogue knows about this site's copies right now.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyHealth {
    /// Copies declared BAD whose repair has not ended (the healer's queue).
    pub repairs_in_flight: i64,
    /// Suspicious declarations of the last 24 hours.
    pub suspicious_last_day: i64,
    /// Copies that ended LOST in the last 24 hours (no good copy was left to repair from).
    pub lost_last_day: i64,
}

/// Objects of this site between two states right now. After a burst of work both go back to
/// zero; a delete whose outcome waits for the storage stays DELETING until it answers.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectsInFlight {
    /// Uploads (from clients or peers) not READY yet.
    pub uploading: i64,
    /// Deletes not done yet.
    pub deleting: i64,
}

const EXAMPLES: i64 = 3;
const DAY_MS: i64 = 24 * 3600 * 1000;

impl MetaStore {
    /// Failed operations towards `site`, grouped by reason, the most frequent first.
    pub async fn failure_reasons(&self, site: &str, max: i64) -> Result<Vec<FailureReason>> {
        let groups = sqlx::query(
            "SELECT COALESCE(error, ''), COUNT(*) FROM failed_ops WHERE site = $1
             GROUP BY COALESCE(error, '') ORDER BY COUNT(*) DESC, COALESCE(error, '') LIMIT $2",
        )
        .bind(site)
        .bind(max)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(groups.len());
        for g in groups {
            let reason: String = g.get(0);
            let examples = sqlx::query(
                "SELECT bucket, object, action FROM failed_ops
                 WHERE site = $1 AND COALESCE(error, '') = $2 ORDER BY id DESC LIMIT $3",
            )
            .bind(site)
            .bind(&reason)
            .bind(EXAMPLES)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
            out.push(FailureReason {
                reason,
                count: g.get(1),
                examples,
            });
        }
        Ok(out)
    }

    /// Open repairs and recent suspicious or lost declarations of `site`'s copies.
    pub async fn copy_health(&self, site: &str) -> Result<CopyHealth> {
        let row = sqlx::query(
            "SELECT
               COALESCE(SUM(CASE WHEN state = 'B' THEN 1 ELSE 0 END), 0),
               COALESCE(SUM(CASE WHEN state = 'S' AND created_at >= $2 THEN 1 ELSE 0 END), 0),
               COALESCE(SUM(CASE WHEN state = 'L' AND updated_at >= $2 THEN 1 ELSE 0 END), 0)
             FROM bad_replicas WHERE site = $1",
        )
        .bind(site)
        .bind(now_ms() - DAY_MS)
        .fetch_one(self.pool())
        .await?;
        Ok(CopyHealth {
            repairs_in_flight: row.get(0),
            suspicious_last_day: row.get(1),
            lost_last_day: row.get(2),
        })
    }

    /// Uploads and deletes under way at this site (by the status index).
    pub async fn objects_in_flight(&self) -> Result<ObjectsInFlight> {
        let row = sqlx::query(
            "SELECT
               COALESCE(SUM(CASE WHEN status = 'UPLOAD' THEN 1 ELSE 0 END), 0),
               COALESCE(SUM(CASE WHEN status = 'DELETING' THEN 1 ELSE 0 END), 0)
             FROM objects WHERE status IN ('UPLOAD', 'DELETING')",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(ObjectsInFlight {
            uploading: row.get(0),
            deleting: row.get(1),
        })
    }
}
