//! DR server state and the inventory of a site's objects.

use sqlx::Row;

use super::replication::now_ms;
use super::MetaStore;
use crate::error::Result;

/// The stored state of a DR server (absent: STAND_BY, never tested).
#[derive(Debug, Clone, Default)]
pub struct ServerState {
    pub status: Option<String>,
    pub task_uuid: Option<String>,
    pub test_start: Option<i64>,
    pub test_task: Option<String>,
}

/// One READY object of this site, with its bucket's owner.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryItem {
    pub bucket: String,
    pub name: String,
    pub size: u64,
    pub hash: String,
    pub client_id: String,
}

impl MetaStore {
    pub async fn server_state(&self, uuid: &str) -> Result<ServerState> {
        let row = sqlx::query(
            "SELECT status, task_uuid, test_start, test_task FROM dr_servers WHERE uuid = $1",
        )
        .bind(uuid)
        .fetch_optional(self.pool())
        .await?;
        Ok(row
            .map(|r| ServerState {
                status: r.get(0),
                task_uuid: r.get(1),
                test_start: r.get(2),
                test_task: r.get(3),
            })
            .unwrap_or_default())
    }

    /// Moves a server to `to` if its status is one of `from` (absent counts as STAND_BY).
    pub async fn move_server(
        &self,
        uuid: &str,
        from: &[&str],
        to: &str,
        task_uuid: Option<&str>,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT status FROM dr_servers WHERE uuid = $1")
                .bind(uuid)
                .fetch_optional(&mut *tx)
                .await?;
        let current = current.unwrap_or_else(|| crate::model::dr::status::STAND_BY.to_owned());
        if !from.contains(&current.as_str()) {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO dr_servers (uuid, status, task_uuid, updated) VALUES ($1,$2,$3,$4)
             ON CONFLICT (uuid) DO UPDATE SET status = excluded.status,
             task_uuid = COALESCE(excluded.task_uuid, dr_servers.task_uuid), updated = excluded.updated",
        )
        .bind(uuid)
        .bind(to)
        .bind(task_uuid)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn record_test(&self, uuid: &str, task: &str) -> Result<()> {
        sqlx::query("UPDATE dr_servers SET test_start = $1, test_task = $2 WHERE uuid = $3")
            .bind(now_ms())
            .bind(task)
            .bind(uuid)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Servers left in a transitional status by a stop: back to where they were stable.
    pub async fn settle_servers(&self) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE dr_servers SET status = CASE status WHEN 'STOPPING_FAILOVER' THEN 'FAILOVER_PROD' ELSE 'STAND_BY' END
             WHERE status IN ('STARTING_FAILOVER_PROD', 'STARTING_FAILOVER_TEST', 'STOPPING_FAILOVER')",
        )
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// One page of this site's READY objects in (bucket, name) order, after the given one.
    pub async fn inventory(
        &self,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<InventoryItem>> {
        let (b, n) = after.unwrap_or(("", ""));
        let rows = sqlx::query(
            "SELECT o.bucket, o.name, o.size, o.hash, b.client_id FROM objects o JOIN buckets b ON b.name = o.bucket
             WHERE o.status = 'READY' AND (o.bucket > $1 OR (o.bucket = $1 AND o.name > $2))
             ORDER BY o.bucket, o.name LIMIT $3",
        )
        .bind(b)
        .bind(n)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| InventoryItem {
                bucket: r.get(0),
                name: r.get(1),
                size: r.get::<i64, _>(2) as u64,
                hash: r.get::<Option<String>, _>(3).unwrap_or_default(),
                client_id: r.get(4),
            })
            .collect())
    }
}
