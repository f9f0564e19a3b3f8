//! The replica catalogue and self-healing.
//!
//! Each site keeps the rows of its own copies, written where the copies change: a verified
//! write (`stored`, state A with size, SHA-256 and adler32), a pull in progress (`copying`, C),
//! a deletion (`removed`), a BAD declaration (D, then A again once repaired). Rows for peers'
//! copies are learned from replication (`orders_completed` at the source, `pulled_from` at the
//! replica); listings ask the UP peers live for their own rows and fall back to the learned
//! ones when a peer does not answer (see [`view`]).
//!
//! Background jobs: the healer (repairs BAD copies from a good copy elsewhere, or gives them up
//! as LOST), the scrubber (re-reads stored objects at a bounded rate), and housekeeping (the
//! tombstone reaper and the end of TEMPORARY_UNAVAILABLE declarations).

pub mod healing;

pub mod pfn;
pub mod reaper;
pub mod scrub;
pub mod view;

use std::time::Duration;

use tokio::sync::Notify;

use std::sync::Arc;

use crate::core::Site;
use crate::engines::replication::Replication;
use crate::engines::topology::TopologyService;

/// What the catalogue works with: the site, the topology (live questions to peers) and the
/// replication engine (repairs pull through its verified path).
#[derive(Clone)]
pub struct Catalogue {
    pub site: Site,
    pub topology: Arc<TopologyService>,
    pub replication: Replication,
    pub service: Arc<CatalogueService>,
}

crate::deref_to_site!(Catalogue);

/// In-memory coordination of the catalogue's background jobs (their state is in the store).
#[derive(Default)]
pub struct CatalogueService {
    /// Wakes the healer when a repair was queued.
    pub repairs_ready: Notify,
}

/// Startup: brings this site's rows in line with its objects (a crash between an object
/// commit and its row, an import, rows of buckets deleted meanwhile).
pub async fn recover(state: &Catalogue) -> anyhow::Result<()> {
    let (added, removed) = state.meta.reconcile_replicas(&state.site_id).await?;
    if added > 0 || removed > 0 {
        tracing::info!(
            added,
            removed,
            "replica catalogue reconciled with the objects"
        );
    }
    Ok(())
}

/// Starts the healer, the scrubber and housekeeping.
pub fn start(state: &Catalogue) {
    tokio::spawn(healing::healer(state.clone()));
    tokio::spawn(scrub::scrubber(state.clone()));
    tokio::spawn(housekeeping(state.clone()));
}

/// Reaps tombstoned copies and ends expired TEMPORARY_UNAVAILABLE declarations.
async fn housekeeping(state: Catalogue) {
    let tick = Duration::from_millis(state.config.rucio.background_interval_ms.max(50));
    loop {
        if !state.meta.lead("reaper").await {
            tokio::time::sleep(tick).await;
            continue;
        }
        if let Err(e) = reaper::reap_due(&state).await {
            tracing::warn!("tombstone reaper: {e}");
        }
        match state.meta.expire_temporary(&state.site_id).await {
            Ok(n) if n > 0 => tracing::info!(replicas = n, "TEMPORARY_UNAVAILABLE ended"),
            Err(e) => tracing::warn!("ending TEMPORARY_UNAVAILABLE declarations: {e}"),
            _ => {}
        }
        tokio::time::sleep(tick).await;
    }
}
