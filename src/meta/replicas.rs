//! The replica catalogue in the metadata store: this site's copies, what it learned about its
//! peers' copies, declarations (bad, suspicious, temporarily unavailable) with the repair queue
//! they drive, and the scrubber's cursor.

use sqlx::any::AnyRow;
use sqlx::{Any, QueryBuilder, Row, Transaction};

use super::cache::{Change, Changing};
use super::replication::now_ms;
use super::{MetaStore, Object};
use crate::error::Result;
use crate::model::order::{Action, Order};
use crate::model::replica::{BadReplica, BadState, Replica, ReplicaState};

const REPLICA_COLUMNS: &str = "bucket, name, site, state, bytes, sha256, adler32, tombstone, lock_cnt, error_message, created_at, updated_at, accessed_at";
const BAD_COLUMNS: &str =
    "id, bucket, name, site, state, reason, expires_at, attempts, created_at, updated_at";

/// What became of a BAD declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    Declared,
    AlreadyDeclared,
    UnknownReplica,
}

/// What became of a tombstone or a state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    Done,
    NotFound,
    Locked,
    /// The transition is not allowed from the replica's current state.
    Refused(ReplicaState),
}

/// Which declarations to list.
#[derive(Debug, Default, Clone)]
pub struct BadFilter {
    pub state: Option<BadState>,
    pub site: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: Option<i64>,
}

/// A repair the healer owes: a BAD declaration of one of this site's copies.
#[derive(Debug, Clone)]
pub struct Repair {
    pub id: i64,
    pub bucket: String,
    pub name: String,
    pub attempts: u32,
}

fn replica_from_row(r: &AnyRow) -> Replica {
    Replica {
        bucket: r.get("bucket"),
        name: r.get("name"),
        site: r.get("site"),
        state: ReplicaState::parse(r.get("state")).unwrap_or(ReplicaState::Unavailable),
        bytes: r.get::<i64, _>("bytes") as u64,
        sha256: r.get("sha256"),
        adler32: r.get("adler32"),
        tombstone: r.get("tombstone"),
        lock_cnt: r.get("lock_cnt"),
        error_message: r.get("error_message"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        accessed_at: r.get("accessed_at"),
    }
}

fn bad_from_row(r: &AnyRow) -> BadReplica {
    BadReplica {
        id: r.get("id"),
        bucket: r.get("bucket"),
        name: r.get("name"),
        site: r.get("site"),
        state: BadState::parse(r.get("state")).unwrap_or(BadState::Bad),
        reason: r.get("reason"),
        expires_at: r.get("expires_at"),
        attempts: r.get("attempts"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

async fn replica_in_tx(
    tx: &mut Transaction<'_, Any>,
    bucket: &str,
    name: &str,
    site: &str,
) -> Result<Option<Replica>> {
    let row = sqlx::query(&format!(
        "SELECT {REPLICA_COLUMNS} FROM replicas WHERE bucket = $1 AND name = $2 AND site = $3"
    ))
    .bind(bucket)
    .bind(name)
    .bind(site)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.as_ref().map(replica_from_row))
}

async fn set_state_in_tx(
    tx: &mut Transaction<'_, Any>,
    bucket: &str,
    name: &str,
    site: &str,
    state: ReplicaState,
) -> Result<()> {
    sqlx::query(
        "UPDATE replicas SET state = $1, updated_at = $2 WHERE bucket = $3 AND name = $4 AND site = $5",
    )
    .bind(state.code())
    .bind(now_ms())
    .bind(bucket)
    .bind(name)
    .bind(site)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Moves the open declarations of one state to another (BAD -> RECOVERED, BAD -> LOST...).
async fn close_bad_in_tx(
    tx: &mut Transaction<'_, Any>,
    bucket: &str,
    name: &str,
    site: &str,
    from: BadState,
    to: BadState,
) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE bad_replicas SET state = $1, updated_at = $2, next_attempt = NULL
         WHERE bucket = $3 AND name = $4 AND site = $5 AND state = $6",
    )
    .bind(to.code())
    .bind(now_ms())
    .bind(bucket)
    .bind(name)
    .bind(site)
    .bind(from.code())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

async fn insert_bad_in_tx(
    tx: &mut Transaction<'_, Any>,
    replica: &Replica,
    state: BadState,
    reason: Option<&str>,
    expires_at: Option<i64>,
) -> Result<()> {
    let now = now_ms();
    let next_attempt = (state == BadState::Bad).then_some(now);
    sqlx::query(
        "INSERT INTO bad_replicas (bucket, name, site, state, reason, expires_at, next_attempt, created_at, updated_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$8)",
    )
    .bind(&replica.bucket)
    .bind(&replica.name)
    .bind(&replica.site)
    .bind(state.code())
    .bind(reason)
    .bind(expires_at)
    .bind(next_attempt)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl MetaStore {
    /// A write that may change this site's replica state of an object: the cached object row
    /// carries that state (`bad_here`), so the cache hears of it.
    fn copy_changing(&self, bucket: &str, name: &str) -> Changing {
        self.changing(vec![Change::object(bucket, name)])
    }

    // ---- rows kept in step with the data plane -------------------------------------------

    /// A verified copy was stored here: AVAILABLE with its digests. Locks survive (a copy being
    /// replaced keeps its pins); a tombstone does not (the bytes are new).
    pub async fn replica_stored(
        &self,
        obj: &Object,
        site: &str,
        adler32: Option<&str>,
    ) -> Result<()> {
        let changing = self.copy_changing(&obj.bucket, &obj.name);
        let (obj, site, adler32) = (obj.clone(), site.to_owned(), adler32.map(str::to_owned));
        self.grouped(move |tx| {
            Box::pin(async move { stored_in(tx, &obj, &site, adler32.as_deref()).await })
        })
        .await?;
        changing.done();
        Ok(())
    }

    /// A copy is being pulled here (COPYING) unless a row already says more.
    pub async fn replica_copying(&self, obj: &Object, site: &str) -> Result<()> {
        let now = now_ms();
        let row = (
            obj.bucket.clone(),
            obj.name.clone(),
            site.to_owned(),
            obj.size as i64,
        );
        let sha256 = obj.hash.clone();
        self.grouped(move |tx| {
            Box::pin(async move {
                let (bucket, name, site, size) = row;
                sqlx::query(
                    "INSERT INTO replicas (bucket, name, site, state, bytes, sha256, created_at, updated_at)
                     VALUES ($1,$2,$3,'C',$4,$5,$6,$6) ON CONFLICT (bucket, name, site) DO NOTHING",
                )
                .bind(bucket)
                .bind(name)
                .bind(site)
                .bind(size)
                .bind(sha256)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// A pull ended without storing a copy: forget the COPYING row it left. Looked up first, so
    /// the common case (the copy was stored) takes no write lock.
    pub async fn replica_copy_failed(&self, bucket: &str, name: &str, site: &str) -> Result<()> {
        let copying = self
            .replica(bucket, name, site)
            .await?
            .is_some_and(|r| r.state == ReplicaState::Copying);
        if !copying {
            return Ok(());
        }
        sqlx::query(
            "DELETE FROM replicas WHERE bucket = $1 AND name = $2 AND site = $3 AND state = 'C'",
        )
        .bind(bucket)
        .bind(name)
        .bind(site)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The copy at `site` is gone.
    pub async fn replica_removed(&self, bucket: &str, name: &str, site: &str) -> Result<()> {
        let changing = self.copy_changing(bucket, name);
        let row = (bucket.to_owned(), name.to_owned(), site.to_owned());
        self.grouped(move |tx| {
            Box::pin(async move { removed_in(tx, &row.0, &row.1, &row.2).await })
        })
        .await?;
        changing.done();
        Ok(())
    }

    /// Forgets every row of an object (a peer deleted it and told us to follow).
    pub async fn forget_replicas(&self, bucket: &str, name: &str) -> Result<()> {
        let changing = self.copy_changing(bucket, name);
        sqlx::query("DELETE FROM replicas WHERE bucket = $1 AND name = $2")
            .bind(bucket)
            .bind(name)
            .execute(self.pool())
            .await?;
        changing.done();
        Ok(())
    }

    /// Records that `peer` holds a good copy: the same bytes as `source`'s row when there is
    /// one, else the size and hash an order announced.
    pub async fn learn_copy(
        &self,
        bucket: &str,
        name: &str,
        peer: &str,
        source: &str,
        announced: (u64, Option<&str>),
    ) -> Result<()> {
        let row = (
            bucket.to_owned(),
            name.to_owned(),
            peer.to_owned(),
            source.to_owned(),
        );
        let (size, sha256) = (announced.0, announced.1.map(str::to_owned));
        self.grouped(move |tx| {
            Box::pin(async move {
                let (bucket, name, peer, source) = row;
                learn_copy_in(
                    tx,
                    (&bucket, &name),
                    &peer,
                    &source,
                    (size, sha256.as_deref()),
                )
                .await
            })
        })
        .await
    }

    /// Startup: READY objects without a row get one (adler32 is filled in by the scrubber),
    /// own rows without a READY object go, and rows of buckets this site no longer has go.
    pub async fn reconcile_replicas(&self, site: &str) -> Result<(u64, u64)> {
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        let added = sqlx::query(
            "INSERT INTO replicas (bucket, name, site, state, bytes, sha256, created_at, updated_at)
             SELECT o.bucket, o.name, $1, 'A', o.size, o.hash, $2, $2 FROM objects o
             WHERE o.status = 'READY' AND NOT EXISTS
               (SELECT 1 FROM replicas r WHERE r.bucket = o.bucket AND r.name = o.name AND r.site = $1)",
        )
        .bind(site)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let removed = sqlx::query(
            "DELETE FROM replicas WHERE (site = $1 AND NOT EXISTS
               (SELECT 1 FROM objects o WHERE o.bucket = replicas.bucket AND o.name = replicas.name AND o.status = 'READY'))
             OR NOT EXISTS (SELECT 1 FROM buckets b WHERE b.name = replicas.bucket AND b.status = 'READY')",
        )
        .bind(site)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok((added, removed))
    }

    // ---- reading --------------------------------------------------------------------------

    pub async fn replica(&self, bucket: &str, name: &str, site: &str) -> Result<Option<Replica>> {
        let row = sqlx::query(&format!(
            "SELECT {REPLICA_COLUMNS} FROM replicas WHERE bucket = $1 AND name = $2 AND site = $3"
        ))
        .bind(bucket)
        .bind(name)
        .bind(site)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(replica_from_row))
    }

    /// Rows of these objects and of every object of these buckets, optionally of one site, in
    /// (bucket, name, site) order. Asked in slices, under SQLite's limit of bound parameters.
    pub async fn replicas_of(
        &self,
        objects: &[(String, String)],
        buckets: &[String],
        site: Option<&str>,
    ) -> Result<Vec<Replica>> {
        const SLICE: usize = 400;
        let mut out = Vec::new();
        for chunk in objects.chunks(SLICE) {
            out.extend(self.replicas_matching(chunk, &[], site).await?);
        }
        for chunk in buckets.chunks(SLICE) {
            out.extend(self.replicas_matching(&[], chunk, site).await?);
        }
        out.sort_by(|a, b| (&a.bucket, &a.name, &a.site).cmp(&(&b.bucket, &b.name, &b.site)));
        out.dedup_by(|a, b| (&a.bucket, &a.name, &a.site) == (&b.bucket, &b.name, &b.site));
        Ok(out)
    }

    async fn replicas_matching(
        &self,
        objects: &[(String, String)],
        buckets: &[String],
        site: Option<&str>,
    ) -> Result<Vec<Replica>> {
        if objects.is_empty() && buckets.is_empty() {
            return Ok(Vec::new());
        }
        let mut q: QueryBuilder<Any> =
            QueryBuilder::new(format!("SELECT {REPLICA_COLUMNS} FROM replicas WHERE ("));
        let mut terms = q.separated(" OR ");
        for (bucket, name) in objects {
            terms
                .push("(bucket = ")
                .push_bind_unseparated(bucket)
                .push_unseparated(" AND name = ")
                .push_bind_unseparated(name)
                .push_unseparated(")");
        }
        for bucket in buckets {
            terms.push("bucket = ").push_bind_unseparated(bucket);
        }
        q.push(")");
        if let Some(site) = site {
            q.push(" AND site = ").push_bind(site);
        }
        let rows = super::fetch_built(&mut q, self.pool()).await?;
        Ok(rows.iter().map(replica_from_row).collect())
    }

    /// Every row of one site.
    /// One page of the rows of `site`, in (bucket, name) order after `after`.
    pub async fn replicas_page(
        &self,
        site: &str,
        after: Option<&(String, String)>,
        limit: i64,
    ) -> Result<Vec<Replica>> {
        let (bucket, name) = after.cloned().unwrap_or_default();
        let rows = sqlx::query(&format!(
            "SELECT {REPLICA_COLUMNS} FROM replicas WHERE site = $1
             AND (bucket > $2 OR (bucket = $2 AND name > $3)) ORDER BY bucket, name LIMIT $4"
        ))
        .bind(site)
        .bind(bucket)
        .bind(name)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(replica_from_row).collect())
    }

    pub async fn replicas_at(&self, site: &str) -> Result<Vec<Replica>> {
        let rows = sqlx::query(&format!(
            "SELECT {REPLICA_COLUMNS} FROM replicas WHERE site = $1 ORDER BY bucket, name"
        ))
        .bind(site)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(replica_from_row).collect())
    }

    // ---- state changes --------------------------------------------------------------------

    /// Rucio's transitions: B only without locks (tombstone OBSOLETE), T only from A or T,
    /// A closes open BAD declarations as RECOVERED, U records the error.
    pub async fn change_replica_state(
        &self,
        bucket: &str,
        name: &str,
        site: &str,
        to: ReplicaState,
        error_message: Option<&str>,
    ) -> Result<Changed> {
        let changing = self.copy_changing(bucket, name);
        let mut tx = self.write_tx().await?;
        let Some(current) = replica_in_tx(&mut tx, bucket, name, site).await? else {
            return Ok(Changed::NotFound);
        };
        match to {
            ReplicaState::BeingDeleted if current.lock_cnt > 0 => return Ok(Changed::Locked),
            ReplicaState::TemporaryUnavailable
                if !matches!(
                    current.state,
                    ReplicaState::Available | ReplicaState::TemporaryUnavailable
                ) =>
            {
                return Ok(Changed::Refused(current.state))
            }
            _ => {}
        }
        let tombstone = (to == ReplicaState::BeingDeleted).then_some(0i64);
        sqlx::query(
            "UPDATE replicas SET state = $1, updated_at = $2, error_message = $3,
             tombstone = COALESCE($4, tombstone) WHERE bucket = $5 AND name = $6 AND site = $7",
        )
        .bind(to.code())
        .bind(now_ms())
        .bind(error_message)
        .bind(tombstone)
        .bind(bucket)
        .bind(name)
        .bind(site)
        .execute(&mut *tx)
        .await?;
        if to == ReplicaState::Available {
            close_bad_in_tx(
                &mut tx,
                bucket,
                name,
                site,
                BadState::Bad,
                BadState::Recovered,
            )
            .await?;
        }
        tx.commit().await?;
        changing.done();
        Ok(Changed::Done)
    }

    /// Sets the lock count (the pins Rucio's rules would hold).
    pub async fn set_lock_cnt(&self, bucket: &str, name: &str, site: &str, n: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE replicas SET lock_cnt = $1, updated_at = $2 WHERE bucket = $3 AND name = $4 AND site = $5",
        )
        .bind(n)
        .bind(now_ms())
        .bind(bucket)
        .bind(name)
        .bind(site)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets a tombstone (ms; 0 = OBSOLETE) on an unlocked copy.
    pub async fn set_tombstone(
        &self,
        bucket: &str,
        name: &str,
        site: &str,
        at_ms: i64,
    ) -> Result<Changed> {
        let mut tx = self.write_tx().await?;
        let Some(current) = replica_in_tx(&mut tx, bucket, name, site).await? else {
            return Ok(Changed::NotFound);
        };
        if current.lock_cnt > 0 {
            return Ok(Changed::Locked);
        }
        sqlx::query(
            "UPDATE replicas SET tombstone = $1, updated_at = $2 WHERE bucket = $3 AND name = $4 AND site = $5",
        )
        .bind(at_ms)
        .bind(now_ms())
        .bind(bucket)
        .bind(name)
        .bind(site)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Changed::Done)
    }

    /// Registers a copy that exists here (Rucio `add_replicas`); an existing row is kept as is.
    /// Returns whether a row was added.
    pub async fn register_replica(&self, replica: &Replica) -> Result<bool> {
        let changing = self.copy_changing(&replica.bucket, &replica.name);
        let done = sqlx::query(
            "INSERT INTO replicas (bucket, name, site, state, bytes, sha256, adler32, tombstone, lock_cnt, created_at, updated_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$10) ON CONFLICT (bucket, name, site) DO NOTHING",
        )
        .bind(&replica.bucket)
        .bind(&replica.name)
        .bind(&replica.site)
        .bind(replica.state.code())
        .bind(replica.bytes as i64)
        .bind(&replica.sha256)
        .bind(&replica.adler32)
        .bind(replica.tombstone)
        .bind(replica.lock_cnt)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        changing.done();
        Ok(done.rows_affected() > 0)
    }

    /// The copies whose tombstone has passed and that no lock holds.
    pub async fn due_tombstones(&self, site: &str, limit: i64) -> Result<Vec<Replica>> {
        let rows = sqlx::query(&format!(
            "SELECT {REPLICA_COLUMNS} FROM replicas WHERE site = $1 AND tombstone IS NOT NULL
             AND tombstone <= $2 AND lock_cnt = 0 AND state IN ('A', 'U', 'B', 'T') LIMIT $3"
        ))
        .bind(site)
        .bind(now_ms())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(replica_from_row).collect())
    }

    pub async fn set_replica_state(
        &self,
        bucket: &str,
        name: &str,
        site: &str,
        state: ReplicaState,
        error: Option<&str>,
    ) -> Result<()> {
        let changing = self.copy_changing(bucket, name);
        sqlx::query(
            "UPDATE replicas SET state = $1, error_message = $2, updated_at = $3 WHERE bucket = $4 AND name = $5 AND site = $6",
        )
        .bind(state.code())
        .bind(error)
        .bind(now_ms())
        .bind(bucket)
        .bind(name)
        .bind(site)
        .execute(self.pool())
        .await?;
        changing.done();
        Ok(())
    }

    /// The bytes were re-read and found good: earlier suspicions no longer count.
    pub async fn replica_verified(
        &self,
        bucket: &str,
        name: &str,
        site: &str,
        adler32: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE replicas SET verified_at = $1, adler32 = COALESCE(adler32, $2) WHERE bucket = $3 AND name = $4 AND site = $5",
        )
        .bind(now_ms())
        .bind(adler32)
        .bind(bucket)
        .bind(name)
        .bind(site)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Fills in an adler32 the row does not have yet (rows from before it was computed).
    pub async fn fill_adler32(
        &self,
        bucket: &str,
        name: &str,
        site: &str,
        adler32: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE replicas SET adler32 = $1 WHERE bucket = $2 AND name = $3 AND site = $4 AND adler32 IS NULL",
        )
        .bind(adler32)
        .bind(bucket)
        .bind(name)
        .bind(site)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    // ---- declarations ---------------------------------------------------------------------

    /// Declares a copy BAD: state D and a BAD row, which queues its repair. `force` declares
    /// again a copy that is already BAD (a repair pending, or LOST: e.g. once a good copy is
    /// back somewhere).
    pub async fn declare_bad(
        &self,
        bucket: &str,
        name: &str,
        site: &str,
        reason: Option<&str>,
        force: bool,
    ) -> Result<Declared> {
        let changing = self.copy_changing(bucket, name);
        let mut tx = self.write_tx().await?;
        let Some(replica) = replica_in_tx(&mut tx, bucket, name, site).await? else {
            return Ok(Declared::UnknownReplica);
        };
        if replica.state == ReplicaState::Copying {
            return Ok(Declared::UnknownReplica);
        }
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM bad_replicas WHERE bucket = $1 AND name = $2 AND site = $3 AND state = 'B'",
        )
        .bind(bucket)
        .bind(name)
        .bind(site)
        .fetch_one(&mut *tx)
        .await?;
        // A BAD copy (repair pending, or LOST) is declared again only when forced.
        if (open > 0 || replica.state == ReplicaState::Bad) && !force {
            return Ok(Declared::AlreadyDeclared);
        }
        close_bad_in_tx(&mut tx, bucket, name, site, BadState::Bad, BadState::Bad).await?;
        insert_bad_in_tx(&mut tx, &replica, BadState::Bad, reason, None).await?;
        set_state_in_tx(&mut tx, bucket, name, site, ReplicaState::Bad).await?;
        tx.commit().await?;
        changing.done();
        Ok(Declared::Declared)
    }

    /// Records a suspicion. Returns how many suspicions count now (those since the copy was
    /// last verified), or None when the copy is unknown.
    pub async fn declare_suspicious(
        &self,
        bucket: &str,
        name: &str,
        site: &str,
        reason: Option<&str>,
    ) -> Result<Option<i64>> {
        let mut tx = self.write_tx().await?;
        let Some(replica) = replica_in_tx(&mut tx, bucket, name, site).await? else {
            return Ok(None);
        };
        insert_bad_in_tx(&mut tx, &replica, BadState::Suspicious, reason, None).await?;
        let counted: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM bad_replicas b JOIN replicas r
               ON r.bucket = b.bucket AND r.name = b.name AND r.site = b.site
             WHERE b.bucket = $1 AND b.name = $2 AND b.site = $3 AND b.state = 'S'
               AND b.created_at >= COALESCE(r.verified_at, 0)",
        )
        .bind(bucket)
        .bind(name)
        .bind(site)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(counted))
    }

    /// Declares a copy TEMPORARY_UNAVAILABLE until `expires_at` (only from A or T).
    pub async fn declare_temporary(
        &self,
        bucket: &str,
        name: &str,
        site: &str,
        reason: Option<&str>,
        expires_at: i64,
    ) -> Result<Changed> {
        let mut tx = self.write_tx().await?;
        let Some(replica) = replica_in_tx(&mut tx, bucket, name, site).await? else {
            return Ok(Changed::NotFound);
        };
        if !matches!(
            replica.state,
            ReplicaState::Available | ReplicaState::TemporaryUnavailable
        ) {
            return Ok(Changed::Refused(replica.state));
        }
        sqlx::query(
            "DELETE FROM bad_replicas WHERE bucket = $1 AND name = $2 AND site = $3 AND state = 'T'",
        )
        .bind(bucket)
        .bind(name)
        .bind(site)
        .execute(&mut *tx)
        .await?;
        insert_bad_in_tx(
            &mut tx,
            &replica,
            BadState::TemporaryUnavailable,
            reason,
            Some(expires_at),
        )
        .await?;
        set_state_in_tx(
            &mut tx,
            bucket,
            name,
            site,
            ReplicaState::TemporaryUnavailable,
        )
        .await?;
        tx.commit().await?;
        Ok(Changed::Done)
    }

    /// Ends the TEMPORARY_UNAVAILABLE declarations whose time has passed: the copy is
    /// AVAILABLE again and the declaration is removed, as Rucio's expiration daemon does.
    pub async fn expire_temporary(&self, site: &str) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        let expired = sqlx::query(
            "DELETE FROM bad_replicas WHERE site = $1 AND state = 'T' AND expires_at <= $2
             RETURNING bucket, name",
        )
        .bind(site)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for r in &expired {
            sqlx::query(
                "UPDATE replicas SET state = 'A', updated_at = $1 WHERE bucket = $2 AND name = $3 AND site = $4 AND state = 'T'",
            )
            .bind(now)
            .bind(r.get::<String, _>(0))
            .bind(r.get::<String, _>(1))
            .bind(site)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(expired.len() as u64)
    }

    // ---- repairs --------------------------------------------------------------------------

    /// BAD declarations of this site's copies whose repair is due.
    pub async fn due_repairs(&self, site: &str, limit: i64) -> Result<Vec<Repair>> {
        let rows = sqlx::query(
            "SELECT id, bucket, name, attempts FROM bad_replicas
             WHERE site = $1 AND state = 'B' AND next_attempt <= $2 ORDER BY next_attempt, id LIMIT $3",
        )
        .bind(site)
        .bind(now_ms())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| Repair {
                id: r.get(0),
                bucket: r.get(1),
                name: r.get(2),
                attempts: r.get::<i64, _>(3) as u32,
            })
            .collect())
    }

    /// The copy was rewritten from a good one: AVAILABLE, verified, declarations RECOVERED.
    pub async fn repair_succeeded(
        &self,
        bucket: &str,
        name: &str,
        site: &str,
        adler32: &str,
    ) -> Result<()> {
        let changing = self.copy_changing(bucket, name);
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        sqlx::query(
            "UPDATE replicas SET state = 'A', adler32 = $1, verified_at = $2, updated_at = $2, error_message = NULL
             WHERE bucket = $3 AND name = $4 AND site = $5",
        )
        .bind(adler32)
        .bind(now)
        .bind(bucket)
        .bind(name)
        .bind(site)
        .execute(&mut *tx)
        .await?;
        close_bad_in_tx(
            &mut tx,
            bucket,
            name,
            site,
            BadState::Bad,
            BadState::Recovered,
        )
        .await?;
        tx.commit().await?;
        changing.done();
        Ok(())
    }

    /// Ends the open BAD declarations of a copy with `outcome` (LOST, DELETED).
    pub async fn close_repairs(
        &self,
        bucket: &str,
        name: &str,
        site: &str,
        outcome: BadState,
    ) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let n = close_bad_in_tx(&mut tx, bucket, name, site, BadState::Bad, outcome).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// A repair attempt failed; try again at `next_ms`.
    pub async fn repair_postponed(&self, id: i64, next_ms: i64, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE bad_replicas SET attempts = attempts + 1, next_attempt = $1, last_error = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(next_ms)
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    // ---- listing declarations ---------------------------------------------------------------

    /// Declarations, newest first.
    pub async fn bad_replicas(&self, filter: &BadFilter) -> Result<Vec<BadReplica>> {
        let mut q: QueryBuilder<Any> = QueryBuilder::new(format!(
            "SELECT {BAD_COLUMNS} FROM bad_replicas WHERE 1 = 1"
        ));
        if let Some(state) = filter.state {
            q.push(" AND state = ").push_bind(state.code());
        }
        if let Some(site) = &filter.site {
            q.push(" AND site = ").push_bind(site.clone());
        }
        if let Some(since) = filter.since_ms {
            q.push(" AND created_at >= ").push_bind(since);
        }
        if let Some(until) = filter.until_ms {
            q.push(" AND created_at <= ").push_bind(until);
        }
        q.push(" ORDER BY id DESC");
        if let Some(limit) = filter.limit {
            q.push(" LIMIT ").push_bind(limit);
        }
        let rows = super::fetch_built(&mut q, self.pool()).await?;
        Ok(rows.iter().map(bad_from_row).collect())
    }

    // ---- scrubbing ------------------------------------------------------------------------

    /// The scrubber's position: (bucket, name, pass number, pass start).
    pub async fn scrub_cursor(&self) -> Result<(String, String, i64, i64)> {
        let row =
            sqlx::query("SELECT bucket, name, pass, pass_started FROM scrub_cursor WHERE id = 1")
                .fetch_optional(self.pool())
                .await?;
        Ok(match row {
            Some(r) => (r.get(0), r.get(1), r.get(2), r.get(3)),
            None => (String::new(), String::new(), 0, now_ms()),
        })
    }

    pub async fn save_scrub_cursor(
        &self,
        bucket: &str,
        name: &str,
        pass: i64,
        pass_started: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO scrub_cursor (id, bucket, name, pass, pass_started) VALUES (1, $1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET bucket = excluded.bucket, name = excluded.name,
             pass = excluded.pass, pass_started = excluded.pass_started",
        )
        .bind(bucket)
        .bind(name)
        .bind(pass)
        .bind(pass_started)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The next READY objects after (bucket, name), in order.
    pub async fn ready_objects_after(
        &self,
        bucket: &str,
        name: &str,
        limit: i64,
    ) -> Result<Vec<Object>> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM objects WHERE status = 'READY' AND (bucket > $1 OR (bucket = $1 AND name > $2))
             ORDER BY bucket, name LIMIT $3",
            super::OBJECT_COLUMNS
        ))
        .bind(bucket)
        .bind(name)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(super::object_from_row).collect()
    }
}

/// The catalogue rows of the copies peers reported applied (the source's side of
/// replication), inside the transaction that completes their orders: a peer that stored a
/// version holds the copy this site (`here`) holds, or at least the bytes it announced; one
/// that applied a DELETE holds none.
pub(crate) async fn peers_applied_in(
    tx: &mut sqlx::AnyConnection,
    orders: &[&Order],
    here: &str,
) -> Result<()> {
    for order in orders {
        let Some(name) = order.object_name.as_deref() else {
            continue;
        };
        let (bucket, peer) = (order.bucket_name.as_str(), order.to_site.as_str());
        match order.action {
            Action::Delete => removed_in(tx, bucket, name, peer).await?,
            _ => {
                let announced = (order.size.unwrap_or(0), order.hash.as_deref());
                learn_copy_in(tx, (bucket, name), peer, here, announced).await?;
            }
        }
    }
    Ok(())
}

/// [`MetaStore::replica_removed`] inside a transaction.
async fn removed_in(
    tx: &mut sqlx::AnyConnection,
    bucket: &str,
    name: &str,
    site: &str,
) -> Result<()> {
    sqlx::query("DELETE FROM replicas WHERE bucket = $1 AND name = $2 AND site = $3")
        .bind(bucket)
        .bind(name)
        .bind(site)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// [`MetaStore::replica_stored`] inside a transaction (also run by `finish_upload`, so a new
/// object's row and its copy's row commit together).
pub(crate) async fn stored_in(
    tx: &mut sqlx::AnyConnection,
    obj: &Object,
    site: &str,
    adler32: Option<&str>,
) -> Result<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO replicas (bucket, name, site, state, bytes, sha256, adler32, verified_at, created_at, updated_at)
         VALUES ($1,$2,$3,'A',$4,$5,$6,$7,$7,$7)
         ON CONFLICT (bucket, name, site) DO UPDATE SET state = 'A', bytes = excluded.bytes,
         sha256 = excluded.sha256, adler32 = COALESCE(excluded.adler32, replicas.adler32),
         tombstone = NULL, error_message = NULL, verified_at = excluded.verified_at,
         updated_at = excluded.updated_at",
    )
    .bind(&obj.bucket)
    .bind(&obj.name)
    .bind(site)
    .bind(obj.size as i64)
    .bind(&obj.hash)
    .bind(adler32)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// [`MetaStore::learn_copy`] inside a transaction.
async fn learn_copy_in(
    tx: &mut sqlx::AnyConnection,
    (bucket, name): (&str, &str),
    peer: &str,
    source: &str,
    announced: (u64, Option<&str>),
) -> Result<()> {
    let now = now_ms();
    let copied = sqlx::query(
        "INSERT INTO replicas (bucket, name, site, state, bytes, sha256, adler32, created_at, updated_at)
         SELECT bucket, name, $3, 'A', bytes, sha256, adler32, $5, $5 FROM replicas
         WHERE bucket = $1 AND name = $2 AND site = $4
         ON CONFLICT (bucket, name, site) DO UPDATE SET state = 'A', bytes = excluded.bytes,
         sha256 = excluded.sha256, adler32 = excluded.adler32, updated_at = excluded.updated_at",
    )
    .bind(bucket)
    .bind(name)
    .bind(peer)
    .bind(source)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if copied.rows_affected() > 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO replicas (bucket, name, site, state, bytes, sha256, created_at, updated_at)
         VALUES ($1,$2,$3,'A',$4,$5,$6,$6)
         ON CONFLICT (bucket, name, site) DO UPDATE SET state = 'A', bytes = excluded.bytes,
         sha256 = excluded.sha256, updated_at = excluded.updated_at",
    )
    .bind(bucket)
    .bind(name)
    .bind(peer)
    .bind(announced.0 as i64)
    .bind(announced.1)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
