//! Leases: how the nodes of one site (sharing a PostgreSQL database) divide work without a
//! coordinator of their own. A singleton (the definition scheduler, the reaper, the scrubber,
//! the sender of a peer's outbox...) runs only on the node holding its lease, renewed while it
//! runs; a node that dies stops renewing and another one takes the lease once it lapses.
//! Tasks carry their own lease (`tasks.claimed_by`, `claimed_until`). With SQLite there is one
//! node and every lease is simply its own; the code path is the same.

use super::replication::now_ms;
use super::MetaStore;
use crate::error::Result;

impl MetaStore {
    /// Takes or renews the lease `name` for this node until `ttl_ms` from now. Answers whether
    /// this node holds it (it is free, lapsed, or already this node's): one statement, so two
    /// nodes asking at once cannot both get it.
    pub async fn hold_lease(&self, name: &str, ttl_ms: i64) -> Result<bool> {
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
             WHERE leases.holder = excluded.holder OR leases.expires < $4",
        )
        .bind(name)
        .bind(self.node_id())
        .bind(now + ttl_ms)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Whether this node should run the singleton `name` now: takes or renews its lease for
    /// [`MetaStore::lease_ms`]. A database error answers false (the work waits for a node
    /// that can reach the database).
    pub async fn lead(&self, name: &str) -> bool {
        match self.hold_lease(name, self.lease_ms()).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(lease = name, "lease: {e}");
                false
            }
        }
    }

    /// Gives a lease up at once (another node may take it without waiting for it to lapse).
    pub async fn release_lease(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(self.node_id())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The node holding a lease now, if any.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT holder FROM leases WHERE name = $1 AND expires >= $2")
                .bind(name)
                .bind(now_ms())
                .fetch_optional(self.pool())
                .await?,
        )
    }
}
