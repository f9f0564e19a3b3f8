//! The replication engine. Every write at this site queues one order per UP peer in the same
//! transaction (the outbox); a sender per peer delivers them in batches and asks for their
//! outcome; at the receiving site orders land in the inbox and workers pull the bytes from the
//! source, verifying size and SHA-256 before anything becomes READY. Failures are retried with
//! backoff and, once exhausted, kept as failed operations (the Backbeat API lists and retries
//! them). Nothing is dropped silently.

pub mod applier;
pub mod prefetch;
pub mod ranged;
pub mod sender;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;

use crate::config::ReplicationConfig;
use crate::core::Site;
use crate::engines::topology::TopologyService;
use crate::error::Result;
use crate::meta::replication::now_ms;

/// What the replication engine works with: the site, the topology and its own coordination.
#[derive(Clone)]
pub struct Replication {
    pub site: Site,
    pub topology: Arc<TopologyService>,
    pub service: Arc<ReplicationService>,
}

crate::deref_to_site!(Replication);

/// In-memory coordination of the background loops (the durable state is in the store).
#[derive(Default)]
pub struct ReplicationService {
    /// Wakes the sender when orders were queued.
    pub outbox_ready: Notify,
    /// Wakes the appliers when orders were received.
    pub inbox_ready: Notify,
    /// Peers whose sender is running, and when a peer may be tried again after failures.
    senders: Mutex<HashMap<String, SenderState>>,
    /// Stagings shared by prefetches and ranged pulls.
    pub(crate) stagings: Mutex<prefetch::Stagings>,
    /// Wakes the pulls waiting for a prefetch to end (see `prefetch::PullClaim`).
    pub(crate) prefetch_ended: Notify,
}

#[derive(Default, Clone, Copy)]
pub(crate) struct SenderState {
    running: bool,
    retry_at_ms: i64,
}

/// When an order that failed `attempts` times with `error` ends as a failed operation, given
/// when it was created (ms): a transient failure (peer refused, reset, timed out, 5xx, 429, a
/// draining peer) only once the order is `max_order_age_secs` old, so a peer that restarts or
/// is slow never turns an acknowledged write into a failed operation; another failure after
/// `max_attempts`, or at that age.
pub fn give_up(cfg: &ReplicationConfig, error: &crate::error::Error) -> impl Fn(i64, u32) -> bool {
    let (transient, max_attempts) = (error.is_transient(), cfg.max_attempts);
    let cfg = cfg.clone();
    move |created, attempts| too_old(&cfg, created) || (!transient && attempts >= max_attempts)
}

/// Whether an order created at `created` (ms) is past `max_order_age_secs`.
pub fn too_old(cfg: &ReplicationConfig, created: i64) -> bool {
    created <= now_ms() - (cfg.max_order_age_secs as i64).saturating_mul(1000)
}

/// The delay before attempt `attempts + 1`: exponential from `backoff_initial_ms`, capped at
/// `backoff_max_ms`, with ±20% jitter so peers coming back are not hit all at once.
pub fn backoff_ms(cfg: &ReplicationConfig, attempts: u32) -> i64 {
    let exp = attempts.saturating_sub(1).min(30) as i32;
    let base = (cfg.backoff_initial_ms as f64 * 2f64.powi(exp)).min(cfg.backoff_max_ms as f64);
    (base * rand::thread_rng().gen_range(0.8..1.2)) as i64
}

/// Which peers are paused now; scheduled resumes that are due are applied on the way.
pub async fn effective_pauses(state: &Replication) -> Result<HashMap<String, bool>> {
    let mut out = HashMap::new();
    for (site, (paused, resume_at)) in state.meta.pause_states().await? {
        let due = paused && resume_at.is_some_and(|at| at <= now_ms());
        if due {
            state.meta.set_pause(&site, false, None).await?;
            tracing::info!(peer = %site, "scheduled resume of replication");
        }
        out.insert(site, paused && !due);
    }
    Ok(out)
}

/// The replication status of an object: "REPLICA" for a copy, else the overall status over the
/// peers (FAILED if any failed, PROCESSING if any is in flight, PENDING if any waits, else
/// COMPLETED) with the per-peer detail. None when there is nothing to report.
pub async fn object_status(
    state: &Replication,
    bucket: &str,
    name: &str,
) -> Result<Option<(String, BTreeMap<String, String>)>> {
    if state.meta.replica_of(bucket, name).await?.is_some() {
        return Ok(Some(("REPLICA".into(), BTreeMap::new())));
    }
    let sites = state.meta.replication_status(bucket, name).await?;
    if sites.is_empty() {
        return Ok(None);
    }
    let any = |s: &str| sites.values().any(|v| v == s);
    let overall = if any("FAILED") {
        "FAILED"
    } else if any("PROCESSING") {
        "PROCESSING"
    } else if any("PENDING") {
        "PENDING"
    } else {
        "COMPLETED"
    };
    Ok(Some((overall.into(), sites)))
}

/// Starts the background loops: the sender, the appliers and the janitor.
pub fn start(state: &Replication) {
    prefetch::sweep(state, None);
    tokio::spawn(sender::dispatch(state.clone()));
    for worker in 0..state.config.replication.workers {
        tokio::spawn(applier::work(state.clone(), worker));
    }
    tokio::spawn(janitor(state.clone()));
}

/// Prunes failed operations past their retention, old events, tombstones older than any
/// order still applied (`max_order_age_secs`), and staging files unused for as long.
async fn janitor(state: Replication) {
    let retention_ms = state.config.replication.failed_retention_hours as i64 * 3_600_000;
    let order_age_ms = (state.config.replication.max_order_age_secs as i64).saturating_mul(1000);
    let staging_idle = Duration::from_secs(state.config.replication.max_order_age_secs);
    loop {
        let sweeping = state.clone();
        let _ = tokio::task::spawn_blocking(move || prefetch::sweep(&sweeping, Some(staging_idle)))
            .await;
        if let Err(e) = state.meta.prune_tombstones(now_ms() - order_age_ms).await {
            tracing::warn!("pruning tombstones: {e}");
        }
        let before = now_ms() - retention_ms;
        if !state.meta.lead("janitor").await {
            tokio::time::sleep(Duration::from_secs(60)).await;
            continue;
        }
        match state.meta.prune_failed(before).await {
            Ok(n) if n > 0 => {
                tracing::info!(pruned = n, "failed operations past retention removed")
            }
            Err(e) => tracing::warn!("pruning failed operations: {e}"),
            _ => {}
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let cfg = ReplicationConfig {
            backoff_initial_ms: 100,
            backoff_max_ms: 1000,
            ..Default::default()
        };
        let b1 = backoff_ms(&cfg, 1);
        assert!((80..=120).contains(&b1), "{b1}");
        let b3 = backoff_ms(&cfg, 3);
        assert!((320..=480).contains(&b3), "{b3}");
        let b20 = backoff_ms(&cfg, 20);
        assert!((800..=1200).contains(&b20), "{b20}");
    }
}
