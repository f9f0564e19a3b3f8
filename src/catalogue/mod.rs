//! The replica catalogue and self-healing.
//!
//! Each site keeps the rows of its own copies, written where the copies change: a verified
//! write (`stored`, state A with size, SHA-256 and adler32), a pull in progress (`copying`, C),
//! a deletion (`removed`), a BAD declaration (D, then A again once repaired). Rows for peers'
//! copies are learned from replication (`peer_applied` at the source, `pulled_from` at the
//! replica); listings ask the UP peers live for their own rows and fall back to the learned
//! ones when a peer does not answer (see [`view`]).
//!
//! Background jobs: the healer (repairs BAD copies from a good copy elsewhere, or gives them up
//! as LOST), the scrubber (re-reads stored objects at a bounded rate), and housekeeping (the
//! tombstone reaper and the end of TEMPORARY_UNAVAILABLE declarations).

pub mod healing;
pub mod model;
pub mod pfn;
pub mod reaper;
pub mod scrub;
pub mod view;

use std::time::Duration;

use tokio::sync::Notify;

use crate::app::AppState;
use crate::meta::Object;
use crate::replication::order::{Action, Order};
use crate::replication::WriteOrigin;

/// In-memory coordination of the catalogue's background jobs (their state is in the store).
#[derive(Default)]
pub struct CatalogueService {
    /// Wakes the healer when a repair was queued.
    pub repairs_ready: Notify,
}

/// A verified copy was stored here (client write, replica pull).
pub async fn stored(state: &AppState, obj: &Object, adler32: &str) {
    let done = state
        .meta
        .replica_stored(obj, &state.site_id, Some(adler32))
        .await;
    log_failure(done, "recording a stored copy", obj);
}

/// The copy here was deleted. A deletion a peer ordered means the object is going away
/// everywhere: what this site learned about other copies goes too.
pub async fn removed(state: &AppState, bucket: &str, name: &str, origin: &WriteOrigin) {
    let done = match origin {
        WriteOrigin::Replica { from_site } if *from_site != state.site_id => {
            state.meta.forget_replicas(bucket, name).await
        }
        _ => {
            state
                .meta
                .replica_removed(bucket, name, &state.site_id)
                .await
        }
    };
    if let Err(e) = done {
        tracing::warn!("catalogue: recording the deletion of {bucket}/{name}: {e}");
    }
}

/// A replication order starts pulling a copy here.
pub async fn copying(state: &AppState, order: &Order, name: &str) {
    let obj = Object {
        id: String::new(),
        site: state.site_id.clone(),
        bucket: order.bucket_name.clone(),
        name: name.to_owned(),
        hash: order.hash.clone(),
        status: crate::meta::Status::Upload,
        creation: chrono::Utc::now(),
        expires: None,
        size: order.size.unwrap_or(0),
        metadata: Default::default(),
    };
    let done = state.meta.replica_copying(&obj, &state.site_id).await;
    log_failure(done, "recording a copy in progress", &obj);
}

/// A pull ended: a COPYING row it left (no copy was stored) goes.
pub async fn copy_ended(state: &AppState, bucket: &str, name: &str) {
    if let Err(e) = state
        .meta
        .replica_copy_failed(bucket, name, &state.site_id)
        .await
    {
        tracing::warn!("catalogue: forgetting the failed copy of {bucket}/{name}: {e}");
    }
}

/// The copy pulled here came from `site`: that site holds the same good bytes.
pub async fn pulled_from(state: &AppState, bucket: &str, name: &str, site: &str) {
    let done = state
        .meta
        .learn_copy(bucket, name, site, &state.site_id, (0, None))
        .await;
    if let Err(e) = done {
        tracing::warn!("catalogue: recording {site}'s copy of {bucket}/{name}: {e}");
    }
}

/// A peer completed an order of this site: it now holds (or no longer holds) a copy.
pub async fn peer_applied(state: &AppState, order: &Order) {
    let Some(name) = &order.object_name else {
        return;
    };
    let (bucket, peer) = (&order.bucket_name, &order.to_site);
    let done = match order.action {
        Action::Delete => state.meta.replica_removed(bucket, name, peer).await,
        _ => {
            let announced = (order.size.unwrap_or(0), order.hash.as_deref());
            state
                .meta
                .learn_copy(bucket, name, peer, &state.site_id, announced)
                .await
        }
    };
    if let Err(e) = done {
        tracing::warn!("catalogue: recording {peer}'s copy of {bucket}/{name}: {e}");
    }
}

fn log_failure(done: crate::error::Result<()>, what: &str, obj: &Object) {
    if let Err(e) = done {
        // The startup reconciliation repairs a row missed here.
        tracing::warn!("catalogue: {what} {}/{}: {e}", obj.bucket, obj.name);
    }
}

/// Startup: brings this site's rows in line with its objects (a crash between an object
/// commit and its row, an import, rows of buckets deleted meanwhile).
pub async fn recover(state: &AppState) -> anyhow::Result<()> {
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
pub fn start(state: &AppState) {
    tokio::spawn(healing::healer(state.clone()));
    tokio::spawn(scrub::scrubber(state.clone()));
    tokio::spawn(housekeeping(state.clone()));
}

/// Reaps tombstoned copies and ends expired TEMPORARY_UNAVAILABLE declarations.
async fn housekeeping(state: AppState) {
    let tick = Duration::from_millis(state.config.rucio.background_interval_ms.max(50));
    loop {
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
