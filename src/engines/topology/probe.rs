//! Liveness probe: every `[topology] probe_interval_ms`, `GET /healthz` on each UP peer (with
//! the lookup timeout). A peer that fails it is recorded as failing, exactly as a failed
//! lookup would be: every location cached at it is dropped at its first failure, so a cached
//! answer never says that a dead site holds an object for longer than about one interval,
//! even when no request has been sent to that site meanwhile. A success records nothing (a
//! peer that answers `/healthz` but fails lookups keeps its failure count).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use super::TopologyService;

/// Starts the probe loop (nothing when the interval is 0).
pub fn start(topology: Arc<TopologyService>) {
    let interval = topology.config.probe_interval_ms;
    if interval == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            probe_once(&topology).await;
        }
    });
}

/// Probes every UP peer once, in parallel.
pub async fn probe_once(topology: &TopologyService) {
    let Ok(peers) = topology.up_peers().await else {
        return;
    };
    let mut probes: FuturesUnordered<_> = peers
        .iter()
        // A peer already skipped for failing is not asked until its backoff ends.
        .filter(|peer| !topology.is_skipped(&peer.id))
        .map(|peer| async move {
            let started = Instant::now();
            let url = format!("{}/healthz", peer.uri.trim_end_matches('/'));
            let ok = topology
                .client
                .get(&url)
                .timeout(topology.peer_timeout())
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                topology.seen(&peer.id);
            } else {
                tracing::info!(peer = %peer.id, "liveness probe failed");
                topology.record(&peer.id, false, started);
            }
        })
        .collect();
    while probes.next().await.is_some() {}
}
