//! Replication state in the metadata store: outbox, inbox, per-peer status, failed operations,
//! pause flags and completion events. Orders are inserted in the same transaction as the
//! metadata change that caused them (see `insert_orders`).

use std::collections::{BTreeMap, HashMap};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::MetaStore;
use crate::error::Result;
use crate::model::order::{Action, Order, OrderStatus};

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An order this site owes a peer.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub order: Order,
    pub attempts: u32,
    pub created: i64,
}

/// An order received from a peer.
#[derive(Debug, Clone)]
pub struct InboxRow {
    pub seq: i64,
    pub order: Order,
    pub attempts: u32,
    /// When it was received (ms).
    pub created: i64,
}

/// A failed operation, as Backbeat lists it.
#[derive(Debug, Clone)]
pub struct FailedOp {
    pub id: i64,
    pub order: Order,
    pub version_id: String,
    pub attempts: u32,
    pub error: Option<String>,
    pub failed_at: i64,
    /// The version's last-modified (ms): its creation for a CREATE, when it was queued for a
    /// DELETE or a bucket order (Backbeat's `LastModified`).
    pub last_modified: i64,
}

/// Count and bytes (Backbeat's `results`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub count: i64,
    pub bytes: i64,
}

const OUTBOX_COLUMNS: &str =
    "seq, op_id, to_site, client_id, bucket, object, size, hash, action, attempts, created, version_time";

fn order_from_row(r: &AnyRow, from_site: &str, to_site: &str) -> Order {
    Order {
        op_id: r.get("op_id"),
        from_site: from_site.to_owned(),
        to_site: to_site.to_owned(),
        client_id: r.get("client_id"),
        bucket_name: r.get("bucket"),
        object_name: r
            .get::<Option<String>, _>("object")
            .filter(|o| !o.is_empty()),
        size: r.get::<Option<i64>, _>("size").map(|s| s as u64),
        hash: r.get("hash"),
        action: Action::parse(r.get("action")),
        // Failed operations have no such column: a requeued one takes it from the object.
        version_time: r.try_get("version_time").ok().flatten(),
    }
}

fn inbox_from_row(r: &AnyRow, self_site: &str) -> InboxRow {
    let from: String = r.get("from_site");
    InboxRow {
        seq: r.get("seq"),
        order: order_from_row(r, &from, self_site),
        attempts: r.get::<i64, _>("attempts") as u32,
        created: r.get("created"),
    }
}

fn outbox_from_row(r: &AnyRow, self_site: &str) -> OutboxRow {
    let to: String = r.get("to_site");
    OutboxRow {
        seq: r.get("seq"),
        order: order_from_row(r, self_site, &to),
        attempts: r.get::<i64, _>("attempts") as u32,
        created: r.get("created"),
    }
}

/// Queues orders (source side) and marks their objects PENDING for each peer.
pub async fn insert_orders(tx: &mut AnyConnection, orders: &[Order]) -> Result<()> {
    for o in orders {
        insert_order(tx, o, None).await?;
    }
    Ok(())
}

/// Inserts one order. Its version is `version` (id and last-modified, for a requeued failed
/// operation) or else the object's row as this transaction sees it: orders are inserted in the
/// transaction of the change that caused them, so that row is the version the order is for. A
/// CREATE's last-modified is the version's creation, any other order's the time it was queued.
async fn insert_order(
    tx: &mut AnyConnection,
    o: &Order,
    version: Option<(&str, i64)>,
) -> Result<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO outbox (op_id, to_site, client_id, bucket, object, size, hash, action, state, next_attempt, created, version_id, modified, version_time)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,'QUEUED',$9,$9,
           COALESCE($10, (SELECT id FROM objects WHERE bucket = $4 AND name = $5), ''),
           COALESCE($11, CASE WHEN $8 = 'CREATE' THEN (SELECT creation FROM objects WHERE bucket = $4 AND name = $5) END, $9),
           COALESCE($12, (SELECT creation FROM objects WHERE bucket = $4 AND name = $5 AND ($10 IS NULL OR id = $10))))
         ON CONFLICT (op_id, to_site) DO NOTHING",
    )
    .bind(&o.op_id)
    .bind(&o.to_site)
    .bind(&o.client_id)
    .bind(&o.bucket_name)
    .bind(&o.object_name)
    .bind(o.size.map(|s| s as i64))
    .bind(&o.hash)
    .bind(o.action.as_str())
    .bind(now)
    .bind(version.map(|v| v.0))
    .bind(version.map(|v| v.1))
    .bind(o.version_time)
    .execute(&mut *tx)
    .await?;
    if let Some(object) = &o.object_name {
        set_status(tx, &o.bucket_name, object, &o.to_site, "PENDING").await?;
    }
    Ok(())
}

/// Remembers that version `hash` of a name, created at `version_time` (ms), was deleted here.
/// One tombstone a name, the newest deleted version: an order's version that is older, or
/// that one, is superseded (see `MetaStore::deleted_here`).
pub(crate) async fn record_tombstone(
    tx: &mut AnyConnection,
    bucket: &str,
    name: &str,
    hash: &str,
    version_time: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO tombstones (bucket, name, hash, version_time, recorded) VALUES ($1,$2,$3,$4,$5)
         ON CONFLICT (bucket, name) DO UPDATE SET hash = excluded.hash,
         version_time = excluded.version_time, recorded = excluded.recorded
         WHERE excluded.version_time > tombstones.version_time",
    )
    .bind(bucket)
    .bind(name)
    .bind(hash)
    .bind(version_time)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn set_status(
    tx: &mut AnyConnection,
    bucket: &str,
    object: &str,
    site: &str,
    status: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO replication_status (bucket, object, site, status, updated) VALUES ($1,$2,$3,$4,$5)
         ON CONFLICT (bucket, object, site) DO UPDATE SET status = excluded.status, updated = excluded.updated",
    )
    .bind(bucket)
    .bind(object)
    .bind(site)
    .bind(status)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Rows per multi-row statement: well under SQLite's and PostgreSQL's bind limits.
const ROWS_PER_STATEMENT: usize = 256;

/// `($1,$2),($3,$4)`-style placeholders for `rows` rows of `cols` values, numbered from 1.
fn value_lists(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            format!("({})", row.join(","))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `$first,...` for `n` values, as in `IN (...)` of a statement whose other binds come first.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// [`set_status`] for the objects of many outbox rows in few statements (a statement is a
/// hand-off to SQLite's worker thread, the dearest part of a small write). A name met twice
/// is set once: PostgreSQL refuses an upsert that touches one row twice.
async fn set_statuses(tx: &mut AnyConnection, rows: &[OutboxRow], status: &str) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    let keys: Vec<(&str, &str, &str)> = rows
        .iter()
        .filter_map(|r| {
            let o = &r.order;
            let name = o.object_name.as_deref()?;
            seen.insert((o.bucket_name.as_str(), name, o.to_site.as_str()))
                .then_some((o.bucket_name.as_str(), name, o.to_site.as_str()))
        })
        .collect();
    let now = now_ms();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO replication_status (bucket, object, site, status, updated) VALUES {}
             ON CONFLICT (bucket, object, site) DO UPDATE SET status = excluded.status, updated = excluded.updated",
            value_lists(chunk.len(), 5)
        );
        let mut query = sqlx::query(&sql);
        for (bucket, object, site) in chunk {
            query = query
                .bind(*bucket)
                .bind(*object)
                .bind(*site)
                .bind(status)
                .bind(now);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Counts completions or failures (`kind`) of orders, given as (peer, bytes) each. The counts are kept per site, kind and second, so a total over a day reads at most
/// a day's seconds, however many orders ran (one row an event made the Backbeat metrics
/// read every event of the last 24 hours on each call).
async fn count_events(tx: &mut AnyConnection, kind: &str, events: &[(&str, i64)]) -> Result<()> {
    let mut per_site: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (site, bytes) in events {
        let slot = per_site.entry(site).or_default();
        *slot = (slot.0 + 1, slot.1 + bytes);
    }
    let second = now_ms() / 1000;
    for (site, (count, bytes)) in per_site {
        sqlx::query(
            "INSERT INTO replication_counts (site, kind, second, count, bytes) VALUES ($1,$2,$3,$4,$5)
             ON CONFLICT (site, kind, second) DO UPDATE SET count = replication_counts.count + excluded.count,
             bytes = replication_counts.bytes + excluded.bytes",
        )
        .bind(site)
        .bind(kind)
        .bind(second)
        .bind(count)
        .bind(bytes)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// The (site, bytes) of each order, for [`count_events`].
fn order_events(rows: &[OutboxRow]) -> Vec<(&str, i64)> {
    rows.iter()
        .map(|r| (r.order.to_site.as_str(), r.order.size.unwrap_or(0) as i64))
        .collect()
}

impl MetaStore {
    // ---- outbox (source side) ------------------------------------------------------------

    /// Peers with orders waiting, and whether any are due for a status check.
    pub async fn outbox_sites(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT to_site FROM outbox")
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The oldest QUEUED orders for a peer, in order.
    pub async fn queued_orders(
        &self,
        self_site: &str,
        site: &str,
        limit: i64,
    ) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE to_site = $1 AND state = 'QUEUED' ORDER BY seq LIMIT $2"
        ))
        .bind(site)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| outbox_from_row(r, self_site)).collect())
    }

    /// SENT orders for a peer whose outcome is due to be asked.
    pub async fn sent_orders_due(
        &self,
        self_site: &str,
        site: &str,
        limit: i64,
    ) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE to_site = $1 AND state = 'SENT' AND next_attempt <= $2
             ORDER BY seq LIMIT $3"
        ))
        .bind(site)
        .bind(now_ms())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| outbox_from_row(r, self_site)).collect())
    }

    /// The peer stored these orders durably: now PROCESSING there.
    pub async fn mark_sent(&self, rows: &[OutboxRow], check_after_ms: i64) -> Result<()> {
        let changing = self.changing(row_changes(rows));
        let mut tx = self.write_tx().await?;
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        set_next_attempt(&mut tx, &seqs, now_ms() + check_after_ms, true).await?;
        set_statuses(&mut tx, rows, "PROCESSING").await?;
        tx.commit().await?;
        changing.done();
        Ok(())
    }

    /// Asks again later about SENT orders that are still in progress at the peer.
    pub async fn postpone_check(&self, seqs: &[i64], after_ms: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        set_next_attempt(&mut tx, seqs, now_ms() + after_ms, false).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A send failed: count the attempt. `give_up(row, attempts)` says which rows end now;
    /// they are returned (already moved to the failed operations).
    pub async fn send_failed(
        &self,
        rows: &[OutboxRow],
        error: &str,
        give_up: impl Fn(&OutboxRow, u32) -> bool,
    ) -> Result<Vec<OutboxRow>> {
        let mut exhausted = Vec::new();
        let changing = self.changing(row_changes(rows));
        let mut tx = self.write_tx().await?;
        for row in rows {
            let attempts = row.attempts + 1;
            if give_up(row, attempts) {
                fail_in_tx(&mut tx, row, attempts, error).await?;
                exhausted.push(row.clone());
            } else {
                sqlx::query("UPDATE outbox SET attempts = $1, last_error = $2 WHERE seq = $3")
                    .bind(attempts as i64)
                    .bind(error)
                    .bind(row.seq)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        changing.done();
        Ok(exhausted)
    }

    /// The peer applied the order.
    pub async fn order_completed(&self, row: &OutboxRow) -> Result<()> {
        self.orders_completed(std::slice::from_ref(row)).await
    }

    /// The peer applied these orders: one grouped write for all of them, with the catalogue's
    /// rows for the peer's copies (whoever sees COMPLETED finds the copy listed).
    pub async fn orders_completed(&self, rows: &[OutboxRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let changing = self.changing(row_changes(rows));
        let rows = rows.to_vec();
        let here = self.local_site.clone();
        self.grouped(move |tx| {
            Box::pin(async move {
                complete_in_tx(tx, &rows).await?;
                let orders: Vec<&Order> = rows.iter().map(|r| &r.order).collect();
                super::replicas::peers_applied_in(tx, &orders, &here).await
            })
        })
        .await?;
        changing.done();
        Ok(())
    }

    /// The order failed for good (the peer gave up, or a permanent error).
    pub async fn order_failed(&self, row: &OutboxRow, attempts: u32, error: &str) -> Result<()> {
        let changing = self.changing(row_changes(std::slice::from_ref(row)));
        let mut tx = self.write_tx().await?;
        fail_in_tx(&mut tx, row, attempts, error).await?;
        tx.commit().await?;
        changing.done();
        Ok(())
    }

    /// The peer does not know the order (it was lost): send it again.
    pub async fn requeue(&self, seq: i64) -> Result<()> {
        sqlx::query("UPDATE outbox SET state = 'QUEUED' WHERE seq = $1")
            .bind(seq)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Orders and bytes still owed to a peer, and the creation time of the oldest.
    pub async fn pending_totals(&self, site: Option<&str>) -> Result<(Totals, Option<i64>)> {
        let row = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT), MIN(created) FROM outbox WHERE ($1 IS NULL OR to_site = $1)",
        )
        .bind(site)
        .fetch_one(self.pool())
        .await?;
        Ok((
            Totals {
                count: row.get(0),
                bytes: row.get(1),
            },
            row.get(2),
        ))
    }

    /// Completions or failures recorded since `since_ms`.
    pub async fn event_totals(
        &self,
        site: Option<&str>,
        kind: &str,
        since_ms: i64,
    ) -> Result<Totals> {
        // Per second: an event in the second `since_ms` falls in counts (up to 1 s early).
        const SUMS: &str = "SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT), \
            CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM replication_counts";
        let (one_site, all_sites);
        let query = match site {
            Some(site) => {
                one_site = format!("{SUMS} WHERE site = $1 AND kind = $2 AND second >= $3");
                sqlx::query(&one_site).bind(site)
            }
            None => {
                all_sites = format!("{SUMS} WHERE kind = $1 AND second >= $2");
                sqlx::query(&all_sites)
            }
        };
        let row = query
            .bind(kind)
            .bind(since_ms.div_euclid(1000))
            .fetch_one(self.pool())
            .await?;
        Ok(Totals {
            count: row.get(0),
            bytes: row.get(1),
        })
    }

    /// Per-peer replication status of an object (source side).
    pub async fn replication_status(
        &self,
        bucket: &str,
        object: &str,
    ) -> Result<BTreeMap<String, String>> {
        if let Some(hit) = self.cache().replication(bucket, object) {
            return Ok((*hit).clone());
        }
        let ticket = self.cache().ticket(bucket);
        let rows = sqlx::query(
            "SELECT site, status FROM replication_status WHERE bucket = $1 AND object = $2",
        )
        .bind(bucket)
        .bind(object)
        .fetch_all(self.pool())
        .await?;
        let sites: BTreeMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        self.cache()
            .put_replication(ticket, bucket, object, sites.clone());
        Ok(sites)
    }

    /// The site a replica was copied from, None for an original.
    pub async fn replica_of(&self, bucket: &str, object: &str) -> Result<Option<String>> {
        Ok(self
            .cached_object(bucket, object)
            .await?
            .and_then(|o| o.replica_of.clone()))
    }

    /// Queues orders outside a metadata change (a forced retry).
    pub async fn queue_orders(&self, orders: &[Order]) -> Result<()> {
        let changing = self.changing(super::order_changes(orders).collect());
        let mut tx = self.write_tx().await?;
        insert_orders(&mut tx, orders).await?;
        tx.commit().await?;
        changing.done();
        Ok(())
    }

    /// After a crash: orders claimed by the previous run are claimable again.
    /// With several nodes (PostgreSQL) the claims may be live ones of other nodes: they are
    /// left to lapse instead.
    pub async fn reset_inbox_claims(&self) -> Result<u64> {
        if self.backend() == super::Backend::Postgres {
            return Ok(0);
        }
        let done = sqlx::query(
            "UPDATE inbox SET state = 'PENDING', claimed_until = NULL WHERE state = 'PROCESSING'",
        )
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    // ---- failed operations ---------------------------------------------------------------

    /// One page of a site's failed operations, newest first. `marker` is the id of the first
    /// entry of the page (inclusive); ids only grow, so paging never repeats or skips one.
    pub async fn list_failed(
        &self,
        self_site: &str,
        site: &str,
        marker: Option<i64>,
        limit: i64,
    ) -> Result<(Vec<FailedOp>, Option<i64>)> {
        let rows = sqlx::query(
            "SELECT * FROM failed_ops WHERE site = $1 AND ($2 IS NULL OR id <= $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(site)
        .bind(marker)
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        let mut ops: Vec<FailedOp> = rows.iter().map(|r| failed_from_row(r, self_site)).collect();
        let next = if ops.len() as i64 > limit {
            ops.pop().map(|o| o.id)
        } else {
            None
        };
        Ok((ops, next))
    }

    /// Failed operations of one object at every site.
    pub async fn failed_for_object(
        &self,
        self_site: &str,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<Vec<FailedOp>> {
        let rows = sqlx::query(
            "SELECT * FROM failed_ops WHERE bucket = $1 AND object = $2 AND ($3 IS NULL OR version_id = $3) ORDER BY id DESC",
        )
        .bind(bucket)
        .bind(key)
        .bind(version)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| failed_from_row(r, self_site)).collect())
    }

    /// Moves one failed operation back to the queue (attempts reset, same version). None when
    /// there is no such entry. `version` empty means the object's current version: the entry of
    /// the version the name holds now (its DELETE when the name is deleted, else its CREATE);
    /// entries of older versions are left as they are (listed until retried by their
    /// `VersionId` or expired). `key` empty is the bucket's own (bucket-level) entry.
    pub async fn retry_failed(
        &self,
        self_site: &str,
        bucket: &str,
        key: &str,
        version: &str,
        site: &str,
    ) -> Result<Vec<FailedOp>> {
        let mut tx = self.write_tx().await?;
        let current: Option<(String, String)> = if key.is_empty() {
            None
        } else {
            sqlx::query_as("SELECT id, status FROM objects WHERE bucket = $1 AND name = $2")
                .bind(bucket)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?
        };
        let version = match (&current, version) {
            (Some((id, _)), "") => id.clone(),
            (_, v) => v.to_owned(),
        };
        // The current version's entry is the operation that brings the name to its state now.
        let action =
            current
                .filter(|(id, _)| *id == version)
                .map(|(_, status)| match status.as_str() {
                    "DELETED" | "DELETING" | "ERR_DEL" => "DELETE",
                    _ => "CREATE",
                });
        let rows = sqlx::query(
            "DELETE FROM failed_ops WHERE bucket = $1 AND object = $2 AND version_id = $3 AND site = $4
             AND ($5 IS NULL OR action = $5) RETURNING *",
        )
        .bind(bucket)
        .bind(key)
        .bind(&version)
        .bind(site)
        .bind(action)
        .fetch_all(&mut *tx)
        .await?;
        let mut ops: Vec<FailedOp> = rows.iter().map(|r| failed_from_row(r, self_site)).collect();
        ops.sort_by_key(|o| (o.last_modified, o.id));
        for op in &mut ops {
            op.order.op_id = uuid::Uuid::new_v4().to_string();
            insert_order(
                &mut tx,
                &op.order,
                Some((op.version_id.as_str(), op.last_modified)),
            )
            .await?;
        }
        let changing = self.changing(vec![super::cache::Change::object(bucket, key)]);
        tx.commit().await?;
        changing.done();
        Ok(ops)
    }

    /// Forgets failed operations older than the retention window.
    pub async fn prune_failed(&self, before_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM failed_ops WHERE failed_at < $1")
            .bind(before_ms)
            .execute(self.pool())
            .await?;
        sqlx::query("DELETE FROM replication_counts WHERE second < $1")
            .bind((now_ms() - 86_400_000) / 1000)
            .execute(self.pool())
            .await?;
        sqlx::query("DELETE FROM inbox WHERE state = 'DONE' AND finished < $1")
            .bind(before_ms)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    // ---- tombstones ----------------------------------------------------------------------

    /// A DELETE order of version `hash` (created at `version_time`) ended here, whatever this
    /// site held: a CREATE of that version that arrives later is superseded.
    pub async fn remember_deleted(
        &self,
        bucket: &str,
        name: &str,
        hash: &str,
        version_time: i64,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        record_tombstone(&mut tx, bucket, name, hash, version_time).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether version `hash` of a name, created at `version_time`, is deleted here: it is the
    /// newest version deleted here, or older than it (the conflict rule made that one win over
    /// it, so its delete holds for it too).
    pub async fn deleted_here(
        &self,
        bucket: &str,
        name: &str,
        hash: &str,
        version_time: i64,
    ) -> Result<bool> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT hash, version_time FROM tombstones WHERE bucket = $1 AND name = $2",
        )
        .bind(bucket)
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some_and(|(deleted, at)| {
            version_time < at || (version_time == at && deleted == hash)
        }))
    }

    /// Forgets tombstones recorded before `before_ms` (no order that old is applied any more).
    pub async fn prune_tombstones(&self, before_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM tombstones WHERE recorded < $1")
            .bind(before_ms)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    // ---- pause ---------------------------------------------------------------------------

    pub async fn set_pause(&self, site: &str, paused: bool, resume_at: Option<i64>) -> Result<()> {
        sqlx::query(
            "INSERT INTO replication_pause (site, paused, resume_at) VALUES ($1,$2,$3)
             ON CONFLICT (site) DO UPDATE SET paused = excluded.paused, resume_at = excluded.resume_at",
        )
        .bind(site)
        .bind(i64::from(paused))
        .bind(resume_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// site -> (paused, scheduled resume time).
    pub async fn pause_states(&self) -> Result<HashMap<String, (bool, Option<i64>)>> {
        let rows = sqlx::query("SELECT site, paused, resume_at FROM replication_pause")
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), (r.get::<i64, _>(1) != 0, r.get(2))))
            .collect())
    }

    // ---- inbox (receiving side) ----------------------------------------------------------

    /// Stores received orders durably. A re-sent order is not applied twice; one that failed
    /// here is revived.
    pub async fn receive_orders(&self, orders: &[Order]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        for o in orders {
            sqlx::query(
                "INSERT INTO inbox (op_id, from_site, client_id, bucket, object, size, hash, action, state, next_attempt, created, version_time)
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,'PENDING',$9,$9,$10)
                 ON CONFLICT (op_id) DO UPDATE SET state = 'PENDING', attempts = 0, next_attempt = excluded.next_attempt,
                 last_error = NULL WHERE inbox.state = 'FAILED'",
            )
            .bind(&o.op_id)
            .bind(&o.from_site)
            .bind(&o.client_id)
            .bind(&o.bucket_name)
            .bind(&o.object_name)
            .bind(o.size.map(|s| s as i64))
            .bind(&o.hash)
            .bind(o.action.as_str())
            .bind(now)
            .bind(o.version_time)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The status of each received order; with `from_site`, orders another site sent are
    /// UNKNOWN (a peer learns only about its own orders).
    /// Whether a bucket-level order (CREATE or DELETE) for `bucket` is received here and not
    /// applied yet: until it is, the bucket's row does not say what the bucket will be.
    pub async fn bucket_order_pending(&self, bucket: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM inbox WHERE bucket = $1 AND object IS NULL \
             AND state IN ('PENDING', 'PROCESSING') LIMIT 1",
        )
        .bind(bucket)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    pub async fn order_statuses(
        &self,
        op_ids: &[String],
        from_site: Option<&str>,
    ) -> Result<Vec<OrderStatus>> {
        if op_ids.is_empty() {
            return Ok(Vec::new());
        }
        // One query for the whole list (a sender asks about up to a batch of orders at once).
        let list = placeholders(2, op_ids.len());
        let sql = format!(
            "SELECT op_id, state, last_error, attempts FROM inbox \
             WHERE ($1 IS NULL OR from_site = $1) AND op_id IN ({list})"
        );
        let mut query = sqlx::query(&sql).bind(from_site);
        for op_id in op_ids {
            query = query.bind(op_id);
        }
        let rows = query.fetch_all(self.pool()).await?;
        let found: HashMap<String, OrderStatus> = rows
            .iter()
            .map(|r| {
                let status = OrderStatus {
                    op_id: r.get(0),
                    status: r.get(1),
                    error: r.get(2),
                    attempts: r.get::<i64, _>(3) as u32,
                };
                (status.op_id.clone(), status)
            })
            .collect();
        Ok(op_ids
            .iter()
            .map(|op_id| {
                found.get(op_id).cloned().unwrap_or_else(|| OrderStatus {
                    op_id: op_id.clone(),
                    status: "UNKNOWN".into(),
                    error: None,
                    attempts: 0,
                })
            })
            .collect())
    }

    /// Claims the next due order whose object has no earlier order still open, so orders for
    /// one object apply in the order they arrived; a bucket order also waits for (and is
    /// waited for by) every earlier order of its bucket, so an object order retried late
    /// cannot re-create a bucket deleted after it. The claim is a lease: a crashed worker's
    /// order is claimable again once it expires.
    pub async fn claim_inbox(&self, self_site: &str, lease_ms: i64) -> Result<Option<InboxRow>> {
        Ok(self.claim_inbox_batch(self_site, lease_ms, 1).await?.pop())
    }

    /// [`MetaStore::claim_inbox`] for up to `limit` orders at once, in one grouped write. The
    /// candidates are chosen on the rows as they were before the claim, so two orders of one
    /// object are never claimed together (the later one still sees the earlier one open).
    /// What blocks a candidate is three index lookups (an earlier open order of its object, an
    /// earlier open bucket order, and for a bucket order any earlier open order of its
    /// bucket), not one condition with ORs: that one scanned every row of the bucket, done
    /// ones included, for each candidate, so a backlog cost the receiver quadratic CPU.
    pub async fn claim_inbox_batch(
        &self,
        self_site: &str,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<InboxRow>> {
        let self_site = self_site.to_owned();
        // Nodes claiming at once (PostgreSQL) skip each other's candidates instead of waiting.
        let skip_locked = match self.backend() {
            super::Backend::Sqlite => "",
            super::Backend::Postgres => " FOR UPDATE OF i SKIP LOCKED",
        };
        self.grouped(move |tx| {
            Box::pin(async move {
                let now = now_ms();
                let rows = sqlx::query(&format!(
                    "UPDATE inbox SET state = 'PROCESSING', claimed_until = $1 WHERE seq IN (
                        SELECT i.seq FROM inbox i
                        WHERE ((i.state = 'PENDING' AND i.next_attempt <= $2) OR (i.state = 'PROCESSING' AND i.claimed_until < $2))
                        AND NOT EXISTS (SELECT 1 FROM inbox j WHERE j.bucket = i.bucket AND j.object = i.object
                                        AND j.state IN ('PENDING', 'PROCESSING') AND j.seq < i.seq)
                        AND NOT EXISTS (SELECT 1 FROM inbox j WHERE j.bucket = i.bucket AND j.object IS NULL
                                        AND j.state IN ('PENDING', 'PROCESSING') AND j.seq < i.seq)
                        AND (i.object IS NOT NULL OR NOT EXISTS (SELECT 1 FROM inbox j WHERE j.bucket = i.bucket
                                        AND j.state IN ('PENDING', 'PROCESSING') AND j.seq < i.seq))
                        ORDER BY i.seq LIMIT $3{skip_locked})
                     RETURNING seq, op_id, from_site, client_id, bucket, object, size, hash, action, attempts, created, version_time"
                ))
                .bind(now + lease_ms)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                let mut claimed: Vec<InboxRow> =
                    rows.iter().map(|r| inbox_from_row(r, &self_site)).collect();
                claimed.sort_by_key(|r| r.seq);
                Ok(claimed)
            })
        })
        .await
    }

    /// Extends a claim while a long transfer runs.
    pub async fn extend_claim(&self, seq: i64, lease_ms: i64) -> Result<()> {
        sqlx::query("UPDATE inbox SET claimed_until = $1 WHERE seq = $2 AND state = 'PROCESSING'")
            .bind(now_ms() + lease_ms)
            .bind(seq)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn inbox_done(&self, seq: i64) -> Result<()> {
        self.grouped(move |tx| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE inbox SET state = 'DONE', finished = $1, last_error = NULL WHERE seq = $2",
                )
                .bind(now_ms())
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Counts a failed attempt; retried at `next_ms`, or FAILED for good when `next_ms` is None.
    pub async fn inbox_attempt_failed(
        &self,
        seq: i64,
        error: &str,
        next_ms: Option<i64>,
    ) -> Result<()> {
        let (state, next) = match next_ms {
            Some(n) => ("PENDING", n),
            None => ("FAILED", now_ms()),
        };
        let error = error.to_owned();
        self.grouped(move |tx| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE inbox SET state = $1, attempts = attempts + 1, next_attempt = $2, last_error = $3, finished = $4 WHERE seq = $5",
                )
                .bind(state)
                .bind(next)
                .bind(error)
                .bind(now_ms())
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Whether a later order for the same object is waiting (an earlier CREATE is superseded).
    pub async fn has_later_order(
        &self,
        seq: i64,
        bucket: &str,
        object: Option<&str>,
    ) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM inbox WHERE bucket = $1 AND object IS NOT DISTINCT FROM $2 AND seq > $3",
        )
        .bind(bucket)
        .bind(object)
        .bind(seq)
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }
}

/// Removes a completed order, marks its object COMPLETED for the peer and counts it.
async fn complete_in_tx(tx: &mut AnyConnection, rows: &[OutboxRow]) -> Result<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let seqs: Vec<i64> = chunk.iter().map(|r| r.seq).collect();
        let sql = format!(
            "DELETE FROM outbox WHERE seq IN ({})",
            placeholders(1, seqs.len())
        );
        let mut query = sqlx::query(&sql);
        for seq in &seqs {
            query = query.bind(seq);
        }
        query.execute(&mut *tx).await?;
    }
    set_statuses(tx, rows, "COMPLETED").await?;
    count_events(tx, "COMPLETED", &order_events(rows)).await
}

/// Sets when the outbox rows `seqs` are next looked at; `sent` also marks them SENT.
async fn set_next_attempt(
    tx: &mut AnyConnection,
    seqs: &[i64],
    next_attempt: i64,
    sent: bool,
) -> Result<()> {
    let set = match sent {
        true => "state = 'SENT', next_attempt = $1, last_error = NULL",
        false => "next_attempt = $1",
    };
    for chunk in seqs.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "UPDATE outbox SET {set} WHERE seq IN ({})",
            placeholders(2, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(next_attempt);
        for seq in chunk {
            query = query.bind(seq);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

/// The objects whose replication status a change of these outbox rows touches.
fn row_changes(rows: &[OutboxRow]) -> Vec<super::cache::Change> {
    rows.iter()
        .filter_map(|r| {
            r.order
                .object_name
                .as_deref()
                .map(|name| super::cache::Change::object(&r.order.bucket_name, name))
        })
        .collect()
}

async fn fail_in_tx(
    tx: &mut AnyConnection,
    row: &OutboxRow,
    attempts: u32,
    error: &str,
) -> Result<()> {
    let o = &row.order;
    // The version the order was queued for (rows queued before it was recorded: the current one).
    let queued: Option<(String, Option<i64>)> =
        sqlx::query_as("DELETE FROM outbox WHERE seq = $1 RETURNING version_id, modified")
            .bind(row.seq)
            .fetch_optional(&mut *tx)
            .await?;
    let (mut version, mut modified) = queued.unwrap_or_default();
    if version.is_empty() {
        if let Some(name) = &o.object_name {
            let current: Option<(String, i64)> =
                sqlx::query_as("SELECT id, creation FROM objects WHERE bucket = $1 AND name = $2")
                    .bind(&o.bucket_name)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((id, creation)) = current {
                version = id;
                modified = modified.or(Some(creation));
            }
        }
    }
    // A renewed entry takes the next id (listed first again). PostgreSQL draws it from the
    // column's sequence, which MAX(id) + 1 would collide with later.
    let next_id = match super::Backend::of_conn(tx) {
        super::Backend::Sqlite => "(SELECT COALESCE(MAX(id), 0) + 1 FROM failed_ops)",
        super::Backend::Postgres => "nextval(pg_get_serial_sequence('failed_ops', 'id'))",
    };
    sqlx::query(&format!(
        "INSERT INTO failed_ops (op_id, site, client_id, bucket, object, version_id, size, hash, action, attempts, error, failed_at, modified)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)
         ON CONFLICT (bucket, object, version_id, action, site) DO UPDATE SET op_id = excluded.op_id,
         size = excluded.size, hash = excluded.hash, attempts = excluded.attempts, error = excluded.error,
         failed_at = excluded.failed_at, modified = excluded.modified, id = {next_id}"
    ))
    .bind(&o.op_id)
    .bind(&o.to_site)
    .bind(&o.client_id)
    .bind(&o.bucket_name)
    .bind(o.object_name.clone().unwrap_or_default())
    .bind(version)
    .bind(o.size.map(|s| s as i64))
    .bind(&o.hash)
    .bind(o.action.as_str())
    .bind(attempts as i64)
    .bind(error)
    .bind(now_ms())
    .bind(modified)
    .execute(&mut *tx)
    .await?;
    if let Some(object) = &o.object_name {
        set_status(tx, &o.bucket_name, object, &o.to_site, "FAILED").await?;
    }
    count_events(tx, "FAILED", &[(&o.to_site, o.size.unwrap_or(0) as i64)]).await?;
    Ok(())
}

fn failed_from_row(r: &AnyRow, self_site: &str) -> FailedOp {
    let site: String = r.get("site");
    FailedOp {
        id: r.get("id"),
        order: order_from_row(r, self_site, &site),
        version_id: r.get("version_id"),
        attempts: r.get::<i64, _>("attempts") as u32,
        error: r.get("error"),
        failed_at: r.get("failed_at"),
        last_modified: r
            .get::<Option<i64>, _>("modified")
            .unwrap_or_else(|| r.get("failed_at")),
    }
}
