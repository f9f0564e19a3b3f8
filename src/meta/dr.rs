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
    /// When this site first answered for the server.
    pub created: Option<i64>,
    /// When the running (or last) production failover started.
    pub failover_start: Option<i64>,
    /// Whether the last test failover found every copy good, and what it found otherwise.
    pub test_ok: Option<bool>,
    pub test_summary: Option<String>,
}

/// An object written at this site (or replicated to it) since a time.
#[derive(Debug, Clone)]
pub struct WrittenItem {
    pub bucket: String,
    pub name: String,
    pub hash: String,
    pub client_id: String,
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
            "SELECT status, task_uuid, test_start, test_task, created, failover_start, test_ok, test_summary
             FROM dr_servers WHERE uuid = $1",
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
                created: r.get(4),
                failover_start: r.get(5),
                test_ok: r.get::<Option<i64>, _>(6).map(|v| v != 0),
                test_summary: r.get(7),
            })
            .unwrap_or_default())
    }

    /// The server's state, its row created (STAND_BY, `created` = now) the first time it is
    /// read, so `created_at` stays the same afterwards.
    pub async fn server_state_or_create(&self, uuid: &str) -> Result<ServerState> {
        sqlx::query(
            "INSERT INTO dr_servers (uuid, status, updated, created) VALUES ($1, 'STAND_BY', $2, $2)
             ON CONFLICT (uuid) DO UPDATE SET created = COALESCE(dr_servers.created, excluded.created)
             WHERE dr_servers.created IS NULL",
        )
        .bind(uuid)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        self.server_state(uuid).await
    }

    /// Records when a production failover started (what failback must prove delivered).
    pub async fn record_failover_start(&self, uuid: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE dr_servers SET failover_start = $1 WHERE uuid = $2")
            .bind(at)
            .bind(uuid)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records the outcome of a test failover.
    pub async fn record_test_outcome(&self, uuid: &str, ok: bool, summary: &str) -> Result<()> {
        sqlx::query("UPDATE dr_servers SET test_ok = $1, test_summary = $2 WHERE uuid = $3")
            .bind(ok as i64)
            .bind(summary)
            .bind(uuid)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Puts a server back to `to` if it is still in `from` because of `task` (a task that
    /// ended without finishing: cancelled while waiting, or interrupted).
    pub async fn roll_back_server(
        &self,
        uuid: &str,
        task: &str,
        from: &[&str],
        to: &str,
    ) -> Result<bool> {
        let list = from
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(",");
        let done = sqlx::query(&format!(
            "UPDATE dr_servers SET status = $1, updated = $2 WHERE uuid = $3 AND task_uuid = $4 AND status IN ({list})"
        ))
        .bind(to)
        .bind(now_ms())
        .bind(uuid)
        .bind(task)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// One page of the READY objects of this site created (written or replicated here) at or
    /// after `since_ms`, in (bucket, name) order after the given one.
    pub async fn written_since(
        &self,
        since_ms: i64,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<WrittenItem>> {
        let (b, n) = after.unwrap_or(("", ""));
        let rows = sqlx::query(
            "SELECT o.bucket, o.name, o.hash, b.client_id FROM objects o JOIN buckets b ON b.name = o.bucket
             WHERE o.status = 'READY' AND o.creation >= $1 AND (o.bucket > $2 OR (o.bucket = $2 AND o.name > $3))
             ORDER BY o.bucket, o.name LIMIT $4",
        )
        .bind(since_ms)
        .bind(b)
        .bind(n)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| WrittenItem {
                bucket: r.get(0),
                name: r.get(1),
                hash: r.get::<Option<String>, _>(2).unwrap_or_default(),
                client_id: r.get(3),
            })
            .collect())
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
            "INSERT INTO dr_servers (uuid, status, task_uuid, updated, created) VALUES ($1,$2,$3,$4,$4)
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
