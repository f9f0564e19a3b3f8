//! Metadata store. Handlers only call these methods; the SQL stays here, written in the common
//! subset of SQLite and PostgreSQL (numbered `$N` placeholders, `ON CONFLICT`, BIGINT-sized
//! integers, CASTs where PostgreSQL would widen a type).
//!
//! # One code path for two engines
//!
//! The pool is sqlx's `Any` driver: each query is written once and runs on the embedded SQLite
//! file (the default) or on a PostgreSQL database shared by the nodes of one site. Chosen over
//! an enum of pools or generic functions because the SQL already agrees and the ~120 queries
//! stay as they are; its costs are small and measured (rows are copied once into `AnyRow`, only
//! on cache misses and writes: `tests/read_path.rs`). The few real differences are in
//! [`Backend`]: how a write transaction starts, `FOR UPDATE SKIP LOCKED`, the failed-operation
//! id and the cache notifications (PostgreSQL triggers, see `migrations/postgres`).

mod blocks;
pub mod cache;
pub mod dr;
pub mod group;
mod import;
mod leases;
mod notify;
pub mod replicas;
pub mod replication;
pub mod status;
pub mod tasks;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::AnyConnection;
use sqlx::{Any, AnyPool, ConnectOptions, QueryBuilder, Row};

use crate::error::{Error, Result};
use crate::model::blocks::BlockHashes;
pub use crate::model::object::{Bucket, Object, Status, Topology, TopologyStatus};
use crate::model::order::Order;
use cache::{CacheOptions, CachedObject, Change, Changing, MetaCache};

/// What an upload's bytes were verified to be as they streamed in, recorded when it becomes
/// READY: the object's row, its block hashes and this site's copy in the catalogue commit
/// together.
pub struct Verified<'a> {
    pub size: u64,
    pub sha256: &'a str,
    pub adler32: &'a str,
    pub blocks: &'a BlockHashes,
}

/// The metadata store. Bucket, grant and object rows (and an object's replication status)
/// are served from an in-process [`MetaCache`]; every method that writes them reports what it
/// changed to the cache (see `cache` for why a cached answer is never older than the last
/// write made through this store).
#[derive(Clone)]
pub struct MetaStore {
    pool: AnyPool,
    backend: Backend,
    /// Where the per-object writes go to share transactions (see `group`).
    group: group::GroupCommit,
    cache: Arc<MetaCache>,
    /// This site's id: whose replica state the cached object rows carry (empty: none).
    local_site: Arc<str>,
    /// This node's id among the site's nodes (it names the holder of leases).
    node: Arc<str>,
    /// How long a lease lasts unrenewed (ms).
    lease_ms: i64,
}

/// What a read of an object needs at once: the bucket, the client's rights on it and the
/// object (each `None`/0 when absent), read in one query on a cache miss.
#[derive(Debug, Clone)]
pub struct ReadView {
    pub bucket: Option<Bucket>,
    pub rights: i64,
    pub object: Option<Object>,
    /// This site's copy of the object is declared BAD or LOST: it must not be served.
    pub bad_here: bool,
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

/// 1 when this site's copy of object `o` is declared BAD (state D, LOST included), else NULL;
/// parameter `site_param` is this site (one lookup by the replicas primary key).
fn bad_here_column(site_param: u8) -> String {
    format!(
        "(SELECT 1 FROM replicas r WHERE r.bucket = o.bucket AND r.name = o.name
         AND r.site = ${site_param} AND r.state = 'D') AS bad_here"
    )
}

/// The one query of a [`MetaStore::read_view`] miss ($1 client, $2 bucket, $3 object, $4 site).
static READ_VIEW_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT b.name AS b_name, b.id AS b_id, b.client_id AS b_client_id, b.site AS b_site,
             b.creation AS b_creation, b.expires AS b_expires, b.status AS b_status,
             (SELECT rights FROM ownerships WHERE client_id = $1 AND bucket = $2) AS rights,
             o.bucket AS bucket, o.name AS name, o.id AS id, o.site AS site, o.hash AS hash,
             o.status AS status, o.creation AS creation, o.expires AS expires, o.size AS size,
             o.metadata AS metadata, o.replica_of AS replica_of, {}
             FROM (SELECT $2 AS k) q
             LEFT JOIN buckets b ON b.name = q.k
             LEFT JOIN objects o ON o.bucket = q.k AND o.name = $3",
        bad_here_column(4)
    )
});

/// The query of a [`MetaStore::cached_object`] miss ($1 bucket, $2 object, $3 site).
static CACHED_OBJECT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {OBJECT_COLUMNS}, replica_of, {} FROM objects o WHERE bucket = $1 AND name = $2",
        bad_here_column(3)
    )
});

/// Whether a connection coming back to the pool may be reused. sqlx can leave one inside a
/// transaction nobody owns: a `BEGIN IMMEDIATE` whose future is dropped (a client gone, a
/// timeout) between the BEGIN and the creation of its `Transaction` (launchbadge/sqlx#3932).
/// Reused, it holds SQLite's write lock for good and refuses every later BEGIN ("non-zero
/// transaction depth"): the whole site stops writing. Closed, SQLite rolls it back.
async fn leaves_no_transaction(conn: &mut AnyConnection) -> sqlx::Result<bool> {
    use sqlx::TransactionManager;
    let depth = |c: &AnyConnection| sqlx::any::AnyTransactionManager::get_transaction_depth(c);
    if depth(conn) == 0 {
        return Ok(true);
    }
    // A dropped `Transaction` queued its rollback: the ping lets the connection run it.
    sqlx::Connection::ping(conn).await?;
    Ok(depth(conn) == 0)
}

/// Runs a query assembled with a `QueryBuilder` (filters). sqlx writes `?` placeholders for
/// the `Any` driver, which PostgreSQL does not accept: they are numbered `$1, $2, ...` (the
/// assembled SQL has no `?` elsewhere).
pub(crate) async fn fetch_built(
    q: &mut QueryBuilder<'_, Any>,
    pool: &AnyPool,
) -> Result<Vec<AnyRow>> {
    use sqlx::Execute;
    let mut built = q.build();
    let args = built
        .take_arguments()
        .map_err(|e| Error::internal(format!("query arguments: {e}")))?
        .unwrap_or_default();
    let sql = number_placeholders(built.sql());
    Ok(sqlx::query_with(&sql, args).fetch_all(pool).await?)
}

fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// The engine behind the store, for the few places where SQLite and PostgreSQL differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The advisory lock every PostgreSQL write transaction takes (see [`MetaStore::write_tx`]).
const PG_WRITE_LOCK: i64 = 0x6d67_7772; // "mgwr"

impl Backend {
    fn of_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            anyhow::bail!("metadata.url {url:?}: expected sqlite://PATH or postgres://...")
        }
    }

    /// The engine of an open connection (for helpers that only hold a transaction).
    pub(crate) fn of_conn(conn: &AnyConnection) -> Self {
        if conn.backend_name().eq_ignore_ascii_case("postgresql") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

/// Begins a write transaction (see [`MetaStore::write_tx`]).
pub(crate) async fn begin_write(
    pool: &AnyPool,
    backend: Backend,
) -> Result<sqlx::Transaction<'static, Any>> {
    match backend {
        Backend::Sqlite => Ok(pool.begin_with("BEGIN IMMEDIATE").await?),
        Backend::Postgres => {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_WRITE_LOCK)
                .execute(&mut *tx)
                .await?;
            Ok(tx)
        }
    }
}

/// The SQLite pool: WAL, FULL sync, a long busy timeout, foreign keys, as before the `Any`
/// layer (set by PRAGMA on each new connection, since the `Any` driver keeps only the URL).
async fn open_sqlite(url: &str) -> anyhow::Result<AnyPool> {
    let path = url.trim_start_matches("sqlite://");
    let path = path.split('?').next().unwrap_or(path);
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let native = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
    // No ping before each use: an embedded SQLite connection does not go stale, and the ping
    // costs two thread hand-offs per query (measured +15-27% on small requests).
    Ok(AnyPoolOptions::new()
        .max_connections(8)
        .test_before_acquire(false)
        .after_connect(|conn, _| Box::pin(sqlite_pragmas(conn)))
        .after_release(|conn, _| Box::pin(leaves_no_transaction(conn)))
        .connect(native.to_url_lossy().as_str())
        .await?)
}

/// FULL: an acknowledged write survives a crash of the process or the machine.
async fn sqlite_pragmas(conn: &mut AnyConnection) -> sqlx::Result<()> {
    for pragma in [
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = FULL",
        "PRAGMA busy_timeout = 30000",
        "PRAGMA foreign_keys = ON",
    ] {
        sqlx::query(pragma).execute(&mut *conn).await?;
    }
    Ok(())
}

async fn open_postgres(url: &str, pool_size: u32) -> anyhow::Result<AnyPool> {
    Ok(AnyPoolOptions::new()
        .max_connections(pool_size.max(2))
        .after_release(|conn, _| Box::pin(leaves_no_transaction(conn)))
        .connect(url)
        .await?)
}

/// How long a lease lasts unrenewed when the config says nothing (ms).
pub const DEFAULT_LEASE_MS: i64 = 30_000;

/// Connections of a store opened without `[metadata]` settings.
fn default_pool_size() -> u32 {
    crate::config::MetadataConfig::default().pool_size
}

impl MetaStore {
    /// Opens (creating if needed) the store and applies migrations, with the default cache.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        Self::open_with(url, CacheOptions::default()).await
    }

    /// Opens the store with the `[metadata]` settings (URL aside): the cache's size and TTL.
    pub async fn open_config(
        url: &str,
        config: &crate::config::MetadataConfig,
    ) -> anyhow::Result<Self> {
        let options = CacheOptions {
            max_entries: config.cache_max_entries,
            ttl: (config.cache_ttl_ms > 0).then(|| Duration::from_millis(config.cache_ttl_ms)),
            // No bodies when the row cache is off: a body is only served for a fresh row.
            max_body_bytes: if config.cache_max_entries > 0 {
                config.body_cache_bytes
            } else {
                0
            },
            max_body_len: config.body_cache_max_object,
        };
        let window = Duration::from_micros(config.group_commit_window_us);
        Self::open_pool(url, options, config.pool_size, window).await
    }

    pub async fn open_with(url: &str, cache: CacheOptions) -> anyhow::Result<Self> {
        Self::open_pool(url, cache, default_pool_size(), group::DEFAULT_WINDOW).await
    }

    /// Opens the pool, runs the migrations and starts the group committer (see `group`).
    pub async fn open_pool(
        url: &str,
        cache: CacheOptions,
        pool_size: u32,
        window: Duration,
    ) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let pool = match backend {
            Backend::Sqlite => open_sqlite(url).await?,
            Backend::Postgres => open_postgres(url, pool_size).await?,
        };
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        let cache = Arc::new(MetaCache::new(cache));
        if backend == Backend::Postgres {
            notify::listen(url, &cache).await?;
        }
        Ok(Self {
            group: group::GroupCommit::start(pool.clone(), backend, window),
            pool,
            backend,
            cache,
            local_site: Arc::from(""),
            node: Arc::from("node"),
            lease_ms: DEFAULT_LEASE_MS,
        })
    }

    /// Names this site, so that object rows carry the state of its own copy (see
    /// [`CachedObject::bad_here`]).
    pub fn with_local_site(mut self, site: &str) -> Self {
        self.local_site = Arc::from(site);
        self
    }

    /// Names this node and how long its leases last (see `leases`).
    pub fn with_node(mut self, node: &str, lease_ms: u64) -> Self {
        self.node = Arc::from(node);
        self.lease_ms = (lease_ms as i64).max(1);
        self
    }

    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// How long a lease lasts unrenewed (ms): renew it well within that.
    pub fn lease_ms(&self) -> i64 {
        self.lease_ms
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The cache of bucket, grant and object rows. Its `invalidate` is the one way to tell it
    /// about a change made elsewhere (a database notification, later).
    pub fn cache(&self) -> &MetaCache {
        &self.cache
    }

    /// Starts a write that changes `changes`: the cache hears of them when the returned guard
    /// is dropped (call `done()` on it once the transaction is over).
    pub(crate) fn changing(&self, changes: Vec<Change>) -> Changing {
        Changing::new(self.cache.clone(), changes)
    }

    /// [`MetaStore::changing`] for an object and the orders queued with its change.
    pub(crate) fn changing_object(&self, bucket: &str, name: &str, orders: &[Order]) -> Changing {
        let mut changes = vec![Change::object(bucket, name)];
        changes.extend(order_changes(orders));
        self.changing(changes)
    }

    /// A bucket, the client's rights on it and an object in it: from the cache when it knows
    /// all three, else in one query (which fills the cache).
    pub async fn read_view(&self, client_id: &str, bucket: &str, name: &str) -> Result<ReadView> {
        if let Some(b) = self.cache.bucket(bucket) {
            if let Some(rights) = self.cache.rights(client_id, bucket) {
                if let Some(o) = self.cache.object(bucket, name) {
                    return Ok(ReadView {
                        bucket: b,
                        rights,
                        bad_here: o.as_ref().is_some_and(|o| o.bad_here),
                        object: o.map(|o| o.object.clone()),
                    });
                }
            }
        }
        let ticket = self.cache.ticket(bucket);
        let row = sqlx::query(&READ_VIEW_SQL)
            .bind(client_id)
            .bind(bucket)
            .bind(name)
            .bind(&*self.local_site)
            .fetch_one(&self.pool)
            .await?;
        let found_bucket = row.get::<Option<String>, _>("b_name").map(|b_name| Bucket {
            name: b_name,
            id: row.get("b_id"),
            client_id: row.get("b_client_id"),
            site: row.get("b_site"),
            creation: crate::model::object::from_millis(row.get("b_creation")),
            expires: row
                .get::<Option<i64>, _>("b_expires")
                .map(crate::model::object::from_millis),
            status: Status::parse(row.get("b_status")).unwrap_or(Status::Unknown),
        });
        let rights = row.get::<Option<i64>, _>("rights").unwrap_or(0);
        let object = match row.get::<Option<String>, _>("id") {
            Some(_) => Some(CachedObject {
                object: object_from_row(&row)?,
                replica_of: row.get("replica_of"),
                bad_here: row.get::<Option<i64>, _>("bad_here").is_some(),
            }),
            None => None,
        };
        self.cache.put_bucket(ticket, bucket, found_bucket.clone());
        self.cache.put_rights(ticket, client_id, bucket, rights);
        self.cache.put_object(ticket, bucket, name, object.clone());
        Ok(ReadView {
            bucket: found_bucket,
            rights,
            bad_here: object.as_ref().is_some_and(|o| o.bad_here),
            object: object.map(|o| o.object),
        })
    }

    /// An object row and the site it was replicated from, through the cache.
    pub(crate) async fn cached_object(
        &self,
        bucket: &str,
        name: &str,
    ) -> Result<Option<Arc<CachedObject>>> {
        if let Some(hit) = self.cache.object(bucket, name) {
            return Ok(hit);
        }
        let ticket = self.cache.ticket(bucket);
        let row = sqlx::query(&CACHED_OBJECT_SQL)
            .bind(bucket)
            .bind(name)
            .bind(&*self.local_site)
            .fetch_optional(&self.pool)
            .await?;
        let found = match row {
            Some(r) => Some(CachedObject {
                object: object_from_row(&r)?,
                replica_of: r.get("replica_of"),
                bad_here: r.get::<Option<i64>, _>("bad_here").is_some(),
            }),
            None => None,
        };
        self.cache.put_object(ticket, bucket, name, found.clone());
        Ok(found.map(Arc::new))
    }

    /// Runs `write` in the next group commit (see `group`): answered once it is durable.
    pub(crate) async fn grouped<T, F>(&self, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut sqlx::AnyConnection) -> futures::future::BoxFuture<'c, Result<T>>
            + Send
            + 'static,
    {
        self.group.run(write).await
    }

    /// Transactions the group committer made and the writes they held.
    pub fn group_commit_counts(&self) -> (u64, u64) {
        self.group.counts()
    }

    /// A write transaction that takes the database's write lock up front, so that the
    /// transactions that read and then write run one after the other, as if alone. SQLite:
    /// BEGIN IMMEDIATE (else a writer that got in between makes it fail with SQLITE_BUSY
    /// instead of waiting). PostgreSQL: a transaction-scoped advisory lock, the same for every
    /// node of the site (its default READ COMMITTED would let two such transactions interleave).
    pub async fn write_tx(&self) -> Result<sqlx::Transaction<'static, Any>> {
        begin_write(&self.pool, self.backend).await
    }

    // ---- buckets -------------------------------------------------------------------------

    /// Creates a bucket owned by its creator. A DELETED bucket of that name may be re-created.
    pub async fn create_bucket(&self, bucket: &Bucket, orders: &[Order]) -> Result<()> {
        let mut changes = vec![Change::bucket(&bucket.name)];
        changes.extend(order_changes(orders));
        let changing = self.changing(changes);
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
        changing.done();
        Ok(())
    }

    pub async fn get_bucket(&self, name: &str) -> Result<Option<Bucket>> {
        if let Some(hit) = self.cache.bucket(name) {
            return Ok(hit);
        }
        let ticket = self.cache.ticket(name);
        let row = sqlx::query("SELECT name, id, client_id, site, creation, expires, status FROM buckets WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        let found = row.map(|r| bucket_from_row(&r));
        self.cache.put_bucket(ticket, name, found.clone());
        Ok(found)
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
        let changing = self.changing(vec![Change::bucket(name)]);
        sqlx::query("UPDATE buckets SET status = $1 WHERE name = $2")
            .bind(status.as_str())
            .bind(name)
            .execute(&self.pool)
            .await?;
        changing.done();
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
        let mut changes = vec![Change::bucket(bucket)];
        changes.extend(order_changes(orders));
        let changing = self.changing(changes);
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
        changing.done();
        Ok(())
    }

    // ---- ownership -----------------------------------------------------------------------

    /// The client's rights on a bucket (0 when none).
    pub async fn rights(&self, client_id: &str, bucket: &str) -> Result<i64> {
        if let Some(hit) = self.cache.rights(client_id, bucket) {
            return Ok(hit);
        }
        let ticket = self.cache.ticket(bucket);
        let r: Option<i64> = sqlx::query_scalar(
            "SELECT rights FROM ownerships WHERE client_id = $1 AND bucket = $2",
        )
        .bind(client_id)
        .bind(bucket)
        .fetch_optional(&self.pool)
        .await?;
        let rights = r.unwrap_or(0);
        self.cache.put_rights(ticket, client_id, bucket, rights);
        Ok(rights)
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
        let changing = self.changing(vec![Change::Rights {
            client: client_id.to_owned(),
            bucket: bucket.to_owned(),
        }]);
        sqlx::query(sql)
            .bind(client_id)
            .bind(bucket)
            .bind(rights)
            .execute(&self.pool)
            .await?;
        changing.done();
        self.rights(client_id, bucket).await
    }

    pub async fn revoke(&self, client_id: &str, bucket: &str) -> Result<bool> {
        let changing = self.changing(vec![Change::Rights {
            client: client_id.to_owned(),
            bucket: bucket.to_owned(),
        }]);
        let done = sqlx::query("DELETE FROM ownerships WHERE client_id = $1 AND bucket = $2")
            .bind(client_id)
            .bind(bucket)
            .execute(&self.pool)
            .await?;
        changing.done();
        Ok(done.rows_affected() > 0)
    }

    /// Revokes every grant on a bucket except its owner's.
    pub async fn revoke_all(&self, bucket: &str) -> Result<u64> {
        let changing = self.changing(vec![Change::BucketRights {
            bucket: bucket.to_owned(),
        }]);
        let done = sqlx::query(
            "DELETE FROM ownerships WHERE bucket = $1 AND client_id <> (SELECT client_id FROM buckets WHERE name = $1)",
        )
        .bind(bucket)
        .execute(&self.pool)
        .await?;
        changing.done();
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

    /// The object when this site may serve it: its copy is not declared BAD or LOST.
    pub async fn servable_object(&self, bucket: &str, name: &str) -> Result<Option<Object>> {
        Ok(self
            .cached_object(bucket, name)
            .await?
            .filter(|o| !o.bad_here)
            .map(|o| o.object.clone()))
    }

    pub async fn get_object(&self, bucket: &str, name: &str) -> Result<Option<Object>> {
        Ok(self
            .cached_object(bucket, name)
            .await?
            .map(|o| o.object.clone()))
    }

    /// Registers an upload (status UPLOAD). A READY object is a conflict (409), an upload in
    /// progress is 406 as CCS; a DELETED or failed row is replaced.
    pub async fn begin_upload(&self, obj: &Object) -> Result<()> {
        let changing = self.changing_object(&obj.bucket, &obj.name, &[]);
        let obj = obj.clone();
        self.grouped(move |tx| Box::pin(async move { begin_upload_in(tx, &obj).await }))
            .await?;
        changing.done();
        Ok(())
    }

    /// Marks an upload READY with its verified size and hash, and queues its orders, in one
    /// transaction. `replica_of` names the site a replica was copied from.
    /// Fails (and changes nothing) when the upload row is no longer this upload's.
    pub async fn finish_upload(
        &self,
        obj: &Object,
        verified: &Verified<'_>,
        replica_of: Option<&str>,
        orders: &[Order],
    ) -> Result<()> {
        let changing = self.changing_object(&obj.bucket, &obj.name, orders);
        let ready = Object {
            size: verified.size,
            hash: Some(verified.sha256.to_owned()),
            status: Status::Ready,
            ..obj.clone()
        };
        let (replica_of, orders) = (replica_of.map(str::to_owned), orders.to_vec());
        let (blocks, adler32) = (verified.blocks.clone(), verified.adler32.to_owned());
        let here = self.local_site.clone();
        self.grouped(move |tx| {
            Box::pin(async move {
                let hash = ready.hash.as_deref().unwrap_or_default();
                let row = (ready.size, hash, replica_of.as_deref());
                finish_upload_in(tx, &ready, row, &orders).await?;
                blocks::put_blocks_in(tx, (&ready.bucket, &ready.name, hash), &blocks).await?;
                replicas::stored_in(tx, &ready, &here, Some(&adler32)).await
            })
        })
        .await?;
        changing.done();
        Ok(())
    }

    /// Starts deleting an object: READY or ERR_DEL becomes DELETING, as one compare-and-set,
    /// so of concurrent deletes exactly one proceeds. Returns the row it changed.
    /// With `version`, see `check_version_to_delete`.
    pub async fn begin_delete(
        &self,
        bucket: &str,
        name: &str,
        version: Option<VersionToDelete<'_>>,
    ) -> Result<Object> {
        let changing = self.changing_object(bucket, name, &[]);
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
            check_version_to_delete(&obj, version)?;
        }
        sqlx::query("UPDATE objects SET status = 'DELETING' WHERE bucket = $1 AND name = $2 AND id = $3 AND status = $4")
            .bind(bucket)
            .bind(name)
            .bind(&obj.id)
            .bind(obj.status.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        changing.done();
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
        let changing = self.changing_object(&obj.bucket, &obj.name, &[]);
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
        changing.done();
        Ok(changed > 0)
    }

    /// Replaces a READY object by a new verified version (an UPDATE from a peer), keeping it
    /// READY throughout: compare-and-set on the row and hash it replaces.
    pub async fn replace_object(
        &self,
        old: &Object,
        new: &Object,
        replica_of: Option<&str>,
        (blocks, adler32): (&BlockHashes, &str),
    ) -> Result<()> {
        let changing = self.changing_object(&old.bucket, &old.name, &[]);
        let metadata =
            serde_json::to_string(&new.metadata).map_err(|e| Error::internal(e.to_string()))?;
        let (old, new) = (old.clone(), new.clone());
        let (replica_of, blocks) = (replica_of.map(str::to_owned), blocks.clone());
        let (adler32, here) = (adler32.to_owned(), self.local_site.clone());
        // The new version's row, its block hashes and this site's copy in the catalogue commit
        // together, or none does.
        let replaced = self
            .grouped(move |tx| {
                Box::pin(async move {
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
                    .bind(metadata)
                    .bind(replica_of)
                    .bind(&old.bucket)
                    .bind(&old.name)
                    .bind(&old.id)
                    .bind(&old.hash)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if changed == 0 {
                        return Err(Error::conflict(format!(
                            "object {}/{} changed while its new version was pulled",
                            old.bucket, old.name
                        )));
                    }
                    let hash = new.hash.as_deref().unwrap_or_default();
                    blocks::put_blocks_in(tx, (&new.bucket, &new.name, hash), &blocks).await?;
                    replicas::stored_in(tx, &new, &here, Some(&adler32)).await
                })
            })
            .await;
        changing.done();
        replaced
    }

    /// Marks a DELETING object DELETED and queues its orders, in one transaction.
    pub async fn finish_delete(&self, obj: &Object, orders: &[Order]) -> Result<()> {
        let changing = self.changing_object(&obj.bucket, &obj.name, orders);
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
        if let Some(hash) = &obj.hash {
            replication::record_tombstone(
                &mut tx,
                &obj.bucket,
                &obj.name,
                hash,
                obj.creation.timestamp_millis(),
            )
            .await?;
        }
        replication::insert_orders(&mut tx, orders).await?;
        tx.commit().await?;
        changing.done();
        Ok(())
    }

    /// Forgets an upload that did not finish (only while it is still UPLOAD).
    pub async fn cancel_upload(&self, bucket: &str, name: &str, id: &str) -> Result<()> {
        let changing = self.changing_object(bucket, name, &[]);
        // Grouped like `begin_upload`, so it runs after a registration still in flight.
        let (bucket, name, id) = (bucket.to_owned(), name.to_owned(), id.to_owned());
        self.grouped(move |tx| {
            Box::pin(async move {
                sqlx::query(
                    "DELETE FROM objects WHERE bucket = $1 AND name = $2 AND id = $3 AND status = 'UPLOAD'",
                )
                .bind(bucket)
                .bind(name)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                Ok(())
            })
        })
        .await?;
        changing.done();
        Ok(())
    }

    pub async fn set_object_status(&self, bucket: &str, name: &str, status: Status) -> Result<()> {
        let changing = self.changing_object(bucket, name, &[]);
        sqlx::query("UPDATE objects SET status = $1 WHERE bucket = $2 AND name = $3")
            .bind(status.as_str())
            .bind(bucket)
            .bind(name)
            .execute(&self.pool)
            .await?;
        changing.done();
        Ok(())
    }

    /// Removes and returns the uploads a crash interrupted.
    /// With several nodes (PostgreSQL) an upload may be another node's, in flight: only
    /// those begun more than a day ago are taken for abandoned.
    pub async fn sweep_uploads(&self) -> Result<Vec<(String, String)>> {
        let begun_before = match self.backend {
            Backend::Sqlite => i64::MAX,
            Backend::Postgres => replication::now_ms() - 86_400_000,
        };
        let changing = self.changing(vec![Change::All]);
        let rows = sqlx::query(
            "DELETE FROM objects WHERE status = 'UPLOAD' AND creation < $1 RETURNING bucket, name",
        )
        .bind(begun_before)
        .fetch_all(&self.pool)
        .await?;
        changing.done();
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
        let mut q: QueryBuilder<Any> = QueryBuilder::new(format!(
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
        let rows = fetch_built(&mut q, &self.pool).await?;
        rows.iter().map(object_from_row).collect()
    }

    // ---- topology ------------------------------------------------------------------------

    pub async fn upsert_topology(&self, t: &Topology) -> Result<()> {
        let changing = self.changing(vec![Change::Topology]);
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
        changing.done();
        Ok(())
    }

    /// Adds a peer from the config unless the administration API already knows it.
    pub async fn seed_topology(&self, t: &Topology) -> Result<()> {
        let changing = self.changing(vec![Change::Topology]);
        sqlx::query("INSERT INTO topologies (id, name, uri, status) VALUES ($1,$2,$3,$4) ON CONFLICT (id) DO NOTHING")
            .bind(&t.id)
            .bind(&t.name)
            .bind(&t.uri)
            .bind(t.status.as_str())
            .execute(&self.pool)
            .await?;
        changing.done();
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

/// The objects whose replication status queued orders change.
pub(crate) fn order_changes(orders: &[Order]) -> impl Iterator<Item = Change> + '_ {
    orders.iter().filter_map(|o| {
        o.object_name
            .as_deref()
            .map(|name| Change::object(&o.bucket_name, name))
    })
}

fn push_time(q: &mut QueryBuilder<Any>, column: &str, op: &str, t: Option<DateTime<Utc>>) {
    if let Some(t) = t {
        q.push(format!(" AND {column} {op} "))
            .push_bind(t.timestamp_millis());
    }
}

/// [`MetaStore::begin_upload`] inside a transaction: the bucket check and the registration
/// are one step, so a bucket DELETE either sees this upload (and refuses) or happened before
/// (and the upload is refused here).
async fn begin_upload_in(tx: &mut AnyConnection, obj: &Object) -> Result<()> {
    let bucket: Option<String> = sqlx::query_scalar("SELECT status FROM buckets WHERE name = $1")
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
    upsert_object(tx, obj).await
}

/// [`MetaStore::finish_upload`] inside a transaction; `ready` is (size, hash, replica_of).
async fn finish_upload_in(
    tx: &mut AnyConnection,
    obj: &Object,
    (size, hash, replica_of): (u64, &str, Option<&str>),
    orders: &[Order],
) -> Result<()> {
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
    replication::insert_orders(tx, orders).await
}

async fn upsert_object(tx: &mut AnyConnection, obj: &Object) -> Result<()> {
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
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn bucket_from_row(r: &AnyRow) -> Bucket {
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

fn object_from_row(r: &AnyRow) -> Result<Object> {
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

fn topology_from_row(r: &AnyRow) -> Topology {
    Topology {
        id: r.get("id"),
        name: r.get("name"),
        uri: r.get("uri"),
        status: TopologyStatus::parse(r.get("status")).unwrap_or(TopologyStatus::Unknown),
    }
}

/// The version a DELETE order names: its hash and, from peers that send it, its creation (ms).
#[derive(Debug, Clone, Copy)]
pub struct VersionToDelete<'a> {
    pub hash: &'a str,
    pub created: Option<i64>,
}

/// Whether `held` may be deleted by an order for `version`. The same version: yes. Another
/// one, compared by creation as the conflict rule does: an older one held here lost to the
/// deleted version, so it goes too; a newer one stays (`Gone`: the order is superseded). An
/// order without a creation (an older peer) may delete only its own version
/// (`PreconditionFailed`).
fn check_version_to_delete(held: &Object, version: VersionToDelete<'_>) -> Result<()> {
    if held.hash.as_deref() == Some(version.hash) {
        return Ok(());
    }
    let (bucket, name) = (&held.bucket, &held.name);
    let held_hash = held.hash.as_deref().unwrap_or("none");
    match version.created {
        Some(created) if held.creation.timestamp_millis() < created => Ok(()),
        Some(_) => Err(Error::gone(format!(
            "{bucket}/{name} is here in a newer version ({held_hash}) than the one to delete ({})",
            version.hash
        ))),
        None => Err(Error::precondition_failed(format!(
            "{bucket}/{name} is here in another version ({held_hash}) than the one to delete ({})",
            version.hash
        ))),
    }
}
