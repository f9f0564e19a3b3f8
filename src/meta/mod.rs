//! Metadata store. Handlers only call these methods; the SQL stays here, written in the common
//! subset of SQLite and PostgreSQL so a PostgreSQL pool can be added behind the same methods.

pub mod dr;
mod import;
pub mod replicas;
pub mod replication;
pub mod tasks;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::error::{Error, Result};
pub use crate::model::object::{Bucket, Object, Status, Topology, TopologyStatus};
use crate::model::order::Order;

#[derive(Clone)]
pub struct MetaStore {
    pool: SqlitePool,
}

/// Listing filter of `PUT /cloudclonestore/{bucket}` (the CCS filter headers).
#[derive(Debug, Default, Clone)]
pub struct ObjectFilter {
    pub name_prefix: Option<String>,
    pub statuses: Vec<Status>,
    pub creation_before: Option<DateTime<Utc>>,
    pub creation_after: Option<DateTime<Utc>>,
    pub expires_before: Option<DateTime<Utc>>,
    pub expires_after: Option<DateTime<Utc>>,
    pub size_lt: Option<u64>,
    pub size_gt: Option<u64>,
    pub metadata_eq: BTreeMap<String, String>,
}

const OBJECT_COLUMNS: &str =
    "bucket, name, id, site, hash, status, creation, expires, size, metadata";

impl MetaStore {
    /// Opens (creating if needed) the store and applies migrations.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let path = url.strip_prefix("sqlite://").ok_or_else(|| {
            anyhow::anyhow!("metadata.url {url:?}: only sqlite:// is supported in this build")
        })?;
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged write survives a crash of the process or the machine.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        // No ping before each use: an embedded SQLite connection does not go stale, and the ping
        // costs two thread hand-offs per query (measured +15-27% on small requests).
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A write transaction that takes SQLite's write lock up front (BEGIN IMMEDIATE): a
    /// transaction that reads and then writes would otherwise fail with SQLITE_BUSY instead of
    /// waiting when another writer got in between.
    pub async fn write_tx(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    // ---- buckets -------------------------------------------------------------------------

    /// Creates a bucket owned by its creator. A DELETED bucket of that name may be re-created.
    pub async fn create_bucket(&self, bucket: &Bucket, orders: &[Order]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT status FROM buckets WHERE name = $1")
                .bind(&bucket.name)
                .fetch_optional(&mut *tx)
                .await?;
        if matches!(existing.as_deref(), Some(s) if s != Status::Deleted.as_str()) {
            return Err(Error::conflict(format!(
                "bucket {} already exists",
                bucket.name
            )));
        }
        sqlx::query(
            "INSERT INTO buckets (name, id, client_id, site, creation, expires, status) VALUES ($1,$2,$3,$4,$5,$6,$7)
             ON CONFLICT (name) DO UPDATE SET id = excluded.id, client_id = excluded.client_id, site = excluded.site,
             creation = excluded.creation, expires = excluded.expires, status = excluded.status",
        )
        .bind(&bucket.name)
        .bind(&bucket.id)
        .bind(&bucket.client_id)
        .bind(&bucket.site)
        .bind(bucket.creation.timestamp_millis())
        .bind(bucket.expires.map(|e| e.timestamp_millis()))
        .bind(bucket.status.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM ownerships WHERE bucket = $1")
            .bind(&bucket.name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO ownerships (client_id, bucket, rights) VALUES ($1, $2, $3)")
            .bind(&bucket.client_id)
            .bind(&bucket.name)
            .bind(crate::model::object::rights::OWNER)
            .execute(&mut *tx)
            .await?;
        replication::insert_orders(&mut tx, orders).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_bucket(&self, name: &str) -> Result<Option<Bucket>> {
        let row = sqlx::query("SELECT name, id, client_id, site, creation, expires, status FROM buckets WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| bucket_from_row(&r)))
    }

    /// Buckets the client may read, live ones only.
    pub async fn list_buckets(&self, client_id: &str) -> Result<Vec<Bucket>> {
        let rows = sqlx::query(
            "SELECT b.name, b.id, b.client_id, b.site, b.creation, b.expires, b.status FROM buckets b
             JOIN ownerships o ON o.bucket = b.name AND o.client_id = $1
             WHERE (o.rights & 1) = 1 AND b.status = 'READY' ORDER BY b.name",
        )
        .bind(client_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(bucket_from_row).collect())
    }

    pub async fn set_bucket_status(&self, name: &str, status: Status) -> Result<()> {
        sqlx::query("UPDATE buckets SET status = $1 WHERE name = $2")
            .bind(status.as_str())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether a bucket still holds objects that are not deleted.
    pub async fn bucket_has_objects(&self, bucket: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM objects WHERE bucket = $1 AND status NOT IN ('DELETED','ERR_UPL') LIMIT 1) t",
        )
        .bind(bucket)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Marks a bucket DELETED and forgets its deleted object rows and grants.
    /// Refuses while the bucket holds live objects or uploads in flight (checked in the same
    /// transaction, so an upload cannot slip in between), and when it is not READY.
    pub async fn delete_bucket(&self, bucket: &str, orders: &[Order]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM objects WHERE bucket = $1 AND status NOT IN ('DELETED','ERR_UPL') LIMIT 1) t",
        )
        .bind(bucket)
        .fetch_one(&mut *tx)
        .await?;
        if live > 0 {
            return Err(Error::not_acceptable(format!(
                "bucket {bucket} is not empty (or an upload to it is in flight)"
            )));
        }
        let changed = sqlx::query(
            "UPDATE buckets SET status = 'DELETED' WHERE name = $1 AND status = 'READY'",
        )
        .bind(bucket)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(Error::gone(format!("bucket {bucket} is already deleted")));
        }
        sqlx::query("DELETE FROM objects WHERE bucket = $1")
            .bind(bucket)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM ownerships WHERE bucket = $1")
            .bind(bucket)
            .execute(&mut *tx)
            .await?;
        replication::insert_orders(&mut tx, orders).await?;
        sqlx::query("DELETE FROM replication_status WHERE bucket = $1")
            .bind(bucket)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- ownership -----------------------------------------------------------------------

    /// The client's rights on a bucket (0 when none).
    pub async fn rights(&self, client_id: &str, bucket: &str) -> Result<i64> {
        let r: Option<i64> = sqlx::query_scalar(
            "SELECT rights FROM ownerships WHERE client_id = $1 AND bucket = $2",
        )
        .bind(client_id)
        .bind(bucket)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.unwrap_or(0))
    }

    /// Sets (replaces) a grant. `add` ORs the rights into an existing grant instead.
    pub async fn grant(
        &self,
        client_id: &str,
        bucket: &str,
        rights: i64,
        add: bool,
    ) -> Result<i64> {
        let sql = if add {
            "INSERT INTO ownerships (client_id, bucket, rights) VALUES ($1,$2,$3)
             ON CONFLICT (client_id, bucket) DO UPDATE SET rights = ownerships.rights | excluded.rights"
        } else {
            "INSERT INTO ownerships (client_id, bucket, rights) VALUES ($1,$2,$3)
             ON CONFLICT (client_id, bucket) DO UPDATE SET rights = excluded.rights"
        };
        sqlx::query(sql)
            .bind(client_id)
            .bind(bucket)
            .bind(rights)
            .execute(&self.pool)
            .await?;
        self.rights(client_id, bucket).await
    }

    pub async fn revoke(&self, client_id: &str, bucket: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM ownerships WHERE client_id = $1 AND bucket = $2")
            .bind(client_id)
            .bind(bucket)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Revokes every grant on a bucket except its owner's.
    pub async fn revoke_all(&self, bucket: &str) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM ownerships WHERE bucket = $1 AND client_id <> (SELECT client_id FROM buckets WHERE name = $1)",
        )
        .bind(bucket)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// (bucket, rights) granted to a client.
    pub async fn grants_of(&self, client_id: &str) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT bucket, rights FROM ownerships WHERE client_id = $1 ORDER BY bucket",
        )
        .bind(client_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    // ---- objects -------------------------------------------------------------------------

    pub async fn get_object(&self, bucket: &str, name: &str) -> Result<Option<Object>> {
        let row = sqlx::query(&format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = $1 AND name = $2"
        ))
        .bind(bucket)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| object_from_row(&r)).transpose()
    }

    /// Registers an upload (status UPLOAD). A READY object is a conflict (409), an upload in
    /// progress is 406 as CCS; a DELETED or failed row is replaced.
    pub async fn begin_upload(&self, obj: &Object) -> Result<()> {
        let mut tx = self.write_tx().await?;
        // The bucket check and the registration are one step: a bucket DELETE either sees
        // this upload (and refuses) or happened before (and the upload is refused here).
        let bucket: Option<String> =
            sqlx::query_scalar("SELECT status FROM buckets WHERE name = $1")
                .bind(&obj.bucket)
                .fetch_optional(&mut *tx)
                .await?;
        if bucket.as_deref() != Some(Status::Ready.as_str()) {
            return Err(Error::not_found(format!("bucket {} not found", obj.bucket)));
        }
        let existing: Option<String> =
            sqlx::query_scalar("SELECT status FROM objects WHERE bucket = $1 AND name = $2")
                .bind(&obj.bucket)
                .bind(&obj.name)
                .fetch_optional(&mut *tx)
                .await?;
        match existing.as_deref().and_then(Status::parse) {
            Some(Status::Upload) => {
                return Err(Error::not_acceptable(format!(
                    "object {}/{} is already being created",
                    obj.bucket, obj.name
                )))
            }
            Some(Status::Ready | Status::Deleting) => {
                return Err(Error::conflict(format!(
                    "object {}/{} already exists",
                    obj.bucket, obj.name
                )))
            }
            _ => {}
        }
        upsert_object(&mut tx, obj).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks an upload READY with its verified size and hash, and queues its orders, in one
    /// transaction. `replica_of` names the site a replica was copied from.
    /// Fails (and changes nothing) when the upload row is no longer this upload's.
    pub async fn finish_upload(
        &self,
        obj: &Object,
        size: u64,
        hash: &str,
        replica_of: Option<&str>,
        orders: &[Order],
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "UPDATE objects SET status = 'READY', size = $1, hash = $2, replica_of = $3
             WHERE bucket = $4 AND name = $5 AND id = $6 AND status = 'UPLOAD'",
        )
        .bind(size as i64)
        .bind(hash)
        .bind(replica_of)
        .bind(&obj.bucket)
        .bind(&obj.name)
        .bind(&obj.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(Error::conflict(format!(
                "upload of {}/{} was cancelled before it completed",
                obj.bucket, obj.name
            )));
        }
        replication::insert_orders(&mut tx, orders).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Starts deleting an object: READY or ERR_DEL becomes DELETING, as one compare-and-set,
    /// so of concurrent deletes exactly one proceeds. Returns the row it changed.
    /// With `version`, only that version (hash) is deleted; another is `PreconditionFailed`.
    pub async fn begin_delete(
        &self,
        bucket: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<Object> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(&format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = $1 AND name = $2"
        ))
        .bind(bucket)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let obj = match row {
            Some(r) => object_from_row(&r)?,
            None => {
                return Err(Error::not_found(format!(
                    "object {bucket}/{name} not found"
                )))
            }
        };
        match obj.status {
            Status::Ready | Status::ErrDel => {}
            Status::Deleted => {
                return Err(Error::gone(format!(
                    "object {bucket}/{name} is already deleted"
                )))
            }
            other => {
                return Err(Error::conflict(format!(
                    "object {bucket}/{name} is {}, it cannot be deleted now",
                    other.as_str()
                )))
            }
        }
        if let Some(version) = version {
            if obj.hash.as_deref() != Some(version) {
                return Err(Error::precondition_failed(format!(
                    "{bucket}/{name} is here in another version ({}) than the one to delete ({version})",
                    obj.hash.as_deref().unwrap_or("none")
                )));
            }
        }
        sqlx::query("UPDATE objects SET status = 'DELETING' WHERE bucket = $1 AND name = $2 AND id = $3 AND status = $4")
            .bind(bucket)
            .bind(name)
            .bind(&obj.id)
            .bind(obj.status.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(obj)
    }

    /// Objects a crash left DELETING (their bytes may or may not be gone).
    pub async fn interrupted_deletes(&self) -> Result<Vec<Object>> {
        let rows = sqlx::query(&format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE status = 'DELETING'"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(object_from_row).collect()
    }

    /// Changes an object's status only if the row is still `obj` (same id) in status `from`.
    /// Answers whether it changed.
    pub async fn swap_object_status(&self, obj: &Object, from: Status, to: Status) -> Result<bool> {
        let changed = sqlx::query(
            "UPDATE objects SET status = $1 WHERE bucket = $2 AND name = $3 AND id = $4 AND status = $5",
        )
        .bind(to.as_str())
        .bind(&obj.bucket)
        .bind(&obj.name)
        .bind(&obj.id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    /// Replaces a READY object by a new verified version (an UPDATE from a peer), keeping it
    /// READY throughout: compare-and-set on the row and hash it replaces.
    pub async fn replace_object(
        &self,
        old: &Object,
        new: &Object,
        replica_of: Option<&str>,
    ) -> Result<()> {
        let changed = sqlx::query(
            "UPDATE objects SET id = $1, site = $2, hash = $3, creation = $4, expires = $5, size = $6,
             metadata = $7, replica_of = $8
             WHERE bucket = $9 AND name = $10 AND id = $11 AND status = 'READY' AND hash = $12",
        )
        .bind(&new.id)
        .bind(&new.site)
        .bind(&new.hash)
        .bind(new.creation.timestamp_millis())
        .bind(new.expires.map(|e| e.timestamp_millis()))
        .bind(new.size as i64)
        .bind(serde_json::to_string(&new.metadata).map_err(|e| Error::internal(e.to_string()))?)
        .bind(replica_of)
        .bind(&old.bucket)
        .bind(&old.name)
        .bind(&old.id)
        .bind(&old.hash)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(Error::conflict(format!(
                "object {}/{} changed while its new version was pulled",
                old.bucket, old.name
            )));
        }
        Ok(())
    }

    /// Marks a DELETING object DELETED and queues its orders, in one transaction.
    pub async fn finish_delete(&self, obj: &Object, orders: &[Order]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "UPDATE objects SET status = 'DELETED' WHERE bucket = $1 AND name = $2 AND id = $3 AND status = 'DELETING'",
        )
        .bind(&obj.bucket)
        .bind(&obj.name)
        .bind(&obj.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(Error::conflict(format!(
                "object {}/{} changed while it was being deleted",
                obj.bucket, obj.name
            )));
        }
        replication::insert_orders(&mut tx, orders).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets an upload that did not finish (only while it is still UPLOAD).
    pub async fn cancel_upload(&self, bucket: &str, name: &str, id: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM objects WHERE bucket = $1 AND name = $2 AND id = $3 AND status = 'UPLOAD'",
        )
        .bind(bucket)
        .bind(name)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_object_status(&self, bucket: &str, name: &str, status: Status) -> Result<()> {
        sqlx::query("UPDATE objects SET status = $1 WHERE bucket = $2 AND name = $3")
            .bind(status.as_str())
            .bind(bucket)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes and returns the uploads a crash interrupted.
    pub async fn sweep_uploads(&self) -> Result<Vec<(String, String)>> {
        let rows =
            sqlx::query("DELETE FROM objects WHERE status = 'UPLOAD' RETURNING bucket, name")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Whether some live object's name starts with `prefix` (a "directory").
    pub async fn has_prefix(&self, bucket: &str, prefix: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM objects WHERE bucket = $1 AND status = 'READY'
             AND substr(name, 1, length($2)) = $2 LIMIT 1) t",
        )
        .bind(bucket)
        .bind(prefix)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// One page of a bucket's objects, in name order, after `after`.
    pub async fn list_objects(
        &self,
        bucket: &str,
        filter: &ObjectFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Object>> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = "
        ));
        q.push_bind(bucket);
        if let Some(after) = after {
            q.push(" AND name > ").push_bind(after);
        }
        if let Some(prefix) = &filter.name_prefix {
            q.push(" AND substr(name, 1, length(")
                .push_bind(prefix)
                .push(")) = ")
                .push_bind(prefix);
        }
        let statuses = if filter.statuses.is_empty() {
            vec![Status::Ready]
        } else {
            filter.statuses.clone()
        };
        q.push(" AND status IN (");
        let mut sep = q.separated(", ");
        for s in &statuses {
            sep.push_bind(s.as_str());
        }
        q.push(")");
        push_time(&mut q, "creation", "<", filter.creation_before);
        push_time(&mut q, "creation", ">", filter.creation_after);
        push_time(&mut q, "expires", "<", filter.expires_before);
        push_time(&mut q, "expires", ">", filter.expires_after);
        if let Some(lt) = filter.size_lt {
            q.push(" AND size < ").push_bind(lt as i64);
        }
        if let Some(gt) = filter.size_gt {
            q.push(" AND size > ").push_bind(gt as i64);
        }
        q.push(" ORDER BY name LIMIT ").push_bind(limit);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(object_from_row).collect()
    }

    // ---- topology ------------------------------------------------------------------------

    pub async fn upsert_topology(&self, t: &Topology) -> Result<()> {
        sqlx::query(
            "INSERT INTO topologies (id, name, uri, status) VALUES ($1,$2,$3,$4)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, uri = excluded.uri, status = excluded.status",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.uri)
        .bind(t.status.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Adds a peer from the config unless the administration API already knows it.
    pub async fn seed_topology(&self, t: &Topology) -> Result<()> {
        sqlx::query("INSERT INTO topologies (id, name, uri, status) VALUES ($1,$2,$3,$4) ON CONFLICT (id) DO NOTHING")
            .bind(&t.id)
            .bind(&t.name)
            .bind(&t.uri)
            .bind(t.status.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_topology(&self, id: &str) -> Result<Option<Topology>> {
        let row = sqlx::query("SELECT id, name, uri, status FROM topologies WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| topology_from_row(&r)))
    }

    pub async fn list_topologies(&self, status: Option<TopologyStatus>) -> Result<Vec<Topology>> {
        let rows = sqlx::query("SELECT id, name, uri, status FROM topologies ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(topology_from_row)
            .filter(|t| status.is_none_or(|s| s == t.status))
            .collect())
    }
}

fn push_time(q: &mut QueryBuilder<Sqlite>, column: &str, op: &str, t: Option<DateTime<Utc>>) {
    if let Some(t) = t {
        q.push(format!(" AND {column} {op} "))
            .push_bind(t.timestamp_millis());
    }
}

async fn upsert_object(tx: &mut sqlx::Transaction<'_, Sqlite>, obj: &Object) -> Result<()> {
    sqlx::query(
        "INSERT INTO objects (bucket, name, id, site, hash, status, creation, expires, size, metadata)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)
         ON CONFLICT (bucket, name) DO UPDATE SET id = excluded.id, site = excluded.site, hash = excluded.hash,
         status = excluded.status, creation = excluded.creation, expires = excluded.expires, size = excluded.size,
         metadata = excluded.metadata",
    )
    .bind(&obj.bucket)
    .bind(&obj.name)
    .bind(&obj.id)
    .bind(&obj.site)
    .bind(&obj.hash)
    .bind(obj.status.as_str())
    .bind(obj.creation.timestamp_millis())
    .bind(obj.expires.map(|e| e.timestamp_millis()))
    .bind(obj.size as i64)
    .bind(serde_json::to_string(&obj.metadata).map_err(|e| Error::internal(e.to_string()))?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn bucket_from_row(r: &SqliteRow) -> Bucket {
    Bucket {
        name: r.get("name"),
        id: r.get("id"),
        client_id: r.get("client_id"),
        site: r.get("site"),
        creation: crate::model::object::from_millis(r.get("creation")),
        expires: r
            .get::<Option<i64>, _>("expires")
            .map(crate::model::object::from_millis),
        status: Status::parse(r.get("status")).unwrap_or(Status::Unknown),
    }
}

fn object_from_row(r: &SqliteRow) -> Result<Object> {
    let metadata: String = r.get("metadata");
    Ok(Object {
        bucket: r.get("bucket"),
        name: r.get("name"),
        id: r.get("id"),
        site: r.get("site"),
        hash: r.get("hash"),
        status: Status::parse(r.get("status")).unwrap_or(Status::Unknown),
        creation: crate::model::object::from_millis(r.get("creation")),
        expires: r
            .get::<Option<i64>, _>("expires")
            .map(crate::model::object::from_millis),
        size: r.get::<i64, _>("size") as u64,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| Error::internal(format!("stored metadata: {e}")))?,
    })
}

fn topology_from_row(r: &SqliteRow) -> Topology {
    Topology {
        id: r.get("id"),
        name: r.get("name"),
        uri: r.get("uri"),
        status: TopologyStatus::parse(r.get("status")).unwrap_or(TopologyStatus::Unknown),
    }
}
