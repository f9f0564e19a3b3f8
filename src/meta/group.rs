//! Group commit. The writes that every object makes (upload rows, block hashes, orders, inbox
//! outcomes, catalogue rows) are handed to one committer task, which runs the writes that
//! arrive within a short window (or up to a count) in one transaction, each in its own
//! savepoint, and commits them with one fsync (`synchronous = FULL` is unchanged). A caller
//! gets its answer only once the transaction holding its write committed, so nothing is
//! acknowledged before it is durable; a write that fails rolls back to its savepoint and
//! leaves the others of its group alone.
//!
//! A write handed over still runs if its caller goes away meanwhile (like a COMMIT already
//! sent): callers that undo work when dropped must wait for the outcome (see
//! `core::objects::store`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::{AnyConnection, AnyPool};
use tokio::sync::{mpsc, oneshot};

use super::Backend;
use crate::error::{Error, Result};

/// How long the committer waits for more writes once one arrived, unless configured
/// (`[metadata] group_commit_window_us`).
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(2);
/// Writes per transaction at most.
const MAX_WRITES: usize = 256;
/// Writes waiting for a group at most: beyond, callers wait to hand theirs over (every caller
/// waits for its answer anyway, so this only bounds a burst).
const QUEUE: usize = 4 * MAX_WRITES;

/// What a write leaves for after the commit: a call that delivers its answer.
type Deliver = Box<dyn FnOnce(Result<()>) + Send>;
/// A write: runs its statements and says whether they succeeded.
type Write =
    Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, (bool, Deliver)> + Send>;

/// The handle to the committer task.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Write>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    commits: AtomicU64,
    writes: AtomicU64,
}

impl GroupCommit {
    /// Starts the committer on `pool`.
    pub fn start(pool: AnyPool, backend: Backend, window: Duration) -> Self {
        let (queue, writes) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        tokio::spawn(commit_loop(pool, backend, writes, window, stats.clone()));
        Self { queue, stats }
    }

    /// Runs `write` in the next group and answers once that group committed (or failed).
    pub async fn run<T, F>(&self, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<T>>();
        let erased: Write = Box::new(move |conn| {
            Box::pin(async move {
                let outcome = write(conn).await;
                let ok = outcome.is_ok();
                let deliver: Deliver = Box::new(move |committed: Result<()>| {
                    let _ = answer.send(committed.and(outcome));
                });
                (ok, deliver)
            })
        });
        self.queue
            .send(erased)
            .await
            .map_err(|_| Error::internal("the group committer stopped"))?;
        answered
            .await
            .map_err(|_| Error::internal("a write was dropped by the group committer"))?
    }

    /// Transactions committed and writes they held, since the start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.stats.commits.load(Ordering::Relaxed),
            self.stats.writes.load(Ordering::Relaxed),
        )
    }
}

async fn commit_loop(
    pool: AnyPool,
    backend: Backend,
    mut queue: mpsc::Receiver<Write>,
    window: Duration,
    stats: Arc<Stats>,
) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        // What queued while the previous group committed joins at once.
        while group.len() < MAX_WRITES {
            match queue.try_recv() {
                Ok(write) => group.push(write),
                Err(_) => break,
            }
        }
        let until = tokio::time::Instant::now() + window;
        while group.len() < MAX_WRITES && !window.is_zero() {
            match tokio::time::timeout_at(until, queue.recv()).await {
                Ok(Some(write)) => group.push(write),
                _ => break,
            }
        }
        let n = group.len() as u64;
        let delivered = commit_group(&pool, backend, group).await;
        if delivered {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.writes.fetch_add(n, Ordering::Relaxed);
            metrics::counter!("mirrorgate_meta_group_commits_total").increment(1);
            metrics::counter!("mirrorgate_meta_group_writes_total").increment(n);
        }
    }
}

/// Runs one group in one transaction, each write in a savepoint, then answers every write
/// with the outcome of the commit. Returns whether the transaction committed.
async fn commit_group(pool: &AnyPool, backend: Backend, group: Vec<Write>) -> bool {
    let mut delivers = Vec::with_capacity(group.len());
    let outcome = async {
        let mut tx = super::begin_write(pool, backend).await?;
        for (i, write) in group.into_iter().enumerate() {
            // One statement round trip per write for its savepoint: the previous write's is
            // released in the same call (a round trip is a hand-off to SQLite's worker
            // thread, which costs more than the statement), and COMMIT releases the last.
            let mark = match i {
                0 => "SAVEPOINT grouped",
                _ => "RELEASE SAVEPOINT grouped; SAVEPOINT grouped",
            };
            sqlx::Executor::execute(&mut *tx, mark).await?;
            // A write that panics loses its answer (its caller gets an error), not the
            // committer: the site keeps writing.
            let ok = match AssertUnwindSafe(write(&mut tx)).catch_unwind().await {
                Ok((ok, deliver)) => {
                    delivers.push(deliver);
                    ok
                }
                Err(_) => false,
            };
            if !ok {
                sqlx::query("ROLLBACK TO SAVEPOINT grouped")
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok::<_, Error>(())
    }
    .await;
    let committed = outcome.is_ok();
    if let Err(e) = &outcome {
        tracing::error!("group commit failed: {e}");
    }
    for deliver in delivers {
        deliver(
            outcome
                .as_ref()
                .map(|_| ())
                .map_err(|e| Error::internal(format!("group commit: {e}"))),
        );
    }
    committed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that inserts `keys` into table `t`, in the next group.
    async fn insert(group: &GroupCommit, keys: &'static [i64]) -> Result<()> {
        group
            .run(move |conn| {
                Box::pin(async move {
                    for k in keys {
                        sqlx::query("INSERT INTO t (k) VALUES ($1)")
                            .bind(k)
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    #[tokio::test]
    async fn a_failed_write_leaves_the_others_of_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/group.db", dir.path().display());
        sqlx::any::install_default_drivers();
        let pool = super::super::open_sqlite(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        let group = GroupCommit::start(pool.clone(), Backend::Sqlite, Duration::from_millis(300));
        // A write that fails after its first insert must lose that insert too, first in its
        // group, after a success and after another failure alike.
        let (a, b, c, d, e) = tokio::join!(
            insert(&group, &[1, 1]),
            insert(&group, &[2]),
            insert(&group, &[3, 3]),
            insert(&group, &[4, 4]),
            insert(&group, &[5]),
        );
        assert!(a.is_err() && c.is_err() && d.is_err(), "{a:?} {c:?} {d:?}");
        assert!(b.is_ok() && e.is_ok(), "{b:?} {e:?}");
        let keys: Vec<i64> = sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(keys, vec![2, 5]);
        assert_eq!(
            group.counts(),
            (1, 5),
            "the five writes shared one transaction"
        );
    }
}
