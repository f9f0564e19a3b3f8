//! The tombstone reaper: deletes this site's copies whose tombstone has passed and that no lock
//! holds (BEING_DELETED while it works). Only the copy here goes; the other sites keep theirs.

use super::Catalogue;
use crate::core::objects;
use crate::error::{Kind, Result};
use crate::model::order::WriteOrigin;

use crate::model::replica::ReplicaState;

/// Copies reaped per round.
const ROUND: i64 = 100;

/// Deletes the due copies; returns how many went.
pub async fn reap_due(state: &Catalogue) -> Result<usize> {
    let site = &state.site_id;
    let due = state.meta.due_tombstones(site, ROUND).await?;
    let mut reaped = 0;
    for r in &due {
        state
            .meta
            .set_replica_state(&r.bucket, &r.name, site, ReplicaState::BeingDeleted, None)
            .await?;
        let origin = WriteOrigin::Replica {
            from_site: site.clone(),
        };
        match objects::delete(&state.site, &r.bucket, &r.name, &origin).await {
            Ok(()) => reaped += 1,
            Err(e) if matches!(e.kind, Kind::NotFound | Kind::Gone) => {
                state.meta.replica_removed(&r.bucket, &r.name, site).await?;
                reaped += 1;
            }
            Err(e) => {
                tracing::warn!(bucket = %r.bucket, object = %r.name, "reaping a tombstoned copy: {e}");
                let why = format!("reaper: {}", e.message);
                state
                    .meta
                    .set_replica_state(
                        &r.bucket,
                        &r.name,
                        site,
                        ReplicaState::Unavailable,
                        Some(&why),
                    )
                    .await?;
            }
        }
    }
    if reaped > 0 {
        metrics::counter!("mirrorgate_reaped_replicas_total").increment(reaped as u64);
        tracing::info!(replicas = reaped, "tombstoned copies reaped");
    }
    Ok(reaped)
}
