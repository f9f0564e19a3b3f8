//! Disaster recovery over the topology. Each site is a PRIMARY server; each (primary,
//! recovery) pair of sites is a RECOVERY server, whose RPO is the age of the oldest change of
//! the primary not yet replicated to the recovery site. Test failover verifies, byte for byte,
//! that the recovery site holds every object of the primary; production failover marks the
//! primary DOWN everywhere (lookups go to the other sites, writes keep being queued for it);
//! stop_failover brings it back UP, waits until what changed meanwhile has reached it, then
//! returns to STAND_BY. Each action is a task of the task engine.

pub mod actions;

use uuid::Uuid;

use crate::engines::tasks::JobContext;
use crate::error::Result;
use crate::meta::replication::now_ms;
use crate::meta::{Topology, TopologyStatus};

pub use crate::model::dr::status;

/// Stable identifiers: the same site or pair has the same uuid at every site.
fn v5(name: &str) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("mirrorgate:{name}").as_bytes(),
    )
    .to_string()
}

pub fn site_uuid(site: &str) -> String {
    v5(&format!("site:{site}"))
}

pub fn tenant_uuid() -> String {
    v5("tenant")
}

pub fn primary_uuid(site: &str) -> String {
    v5(&format!("primary:{site}"))
}

pub fn recovery_uuid(primary: &str, recovery: &str) -> String {
    v5(&format!("recovery:{primary}:{recovery}"))
}

/// A site of the DR view: this one or a peer.
#[derive(Debug, Clone)]
pub struct DrSite {
    pub topology: Topology,
    pub is_self: bool,
}

/// A server of the DR view.
#[derive(Debug, Clone)]
pub struct Server {
    pub uuid: String,
    pub primary: DrSite,
    /// None for a PRIMARY server.
    pub recovery: Option<DrSite>,
}

impl Server {
    pub fn kind(&self) -> &'static str {
        if self.recovery.is_some() {
            "RECOVERY"
        } else {
            "PRIMARY"
        }
    }

    /// The site hosting the server: the recovery site of a pair.
    pub fn site(&self) -> &DrSite {
        self.recovery.as_ref().unwrap_or(&self.primary)
    }
}

/// This site and every peer (deleted ones only when asked).
pub async fn sites(state: &JobContext, with_deleted: bool) -> Result<Vec<DrSite>> {
    let mut out = vec![DrSite {
        topology: Topology {
            id: state.site_id.clone(),
            name: state.site_id.clone(),
            uri: state.public_url.clone(),
            status: TopologyStatus::Up,
        },
        is_self: true,
    }];
    for t in state.meta.list_topologies(None).await? {
        if t.id == state.site_id || (t.status == TopologyStatus::Deleted && !with_deleted) {
            continue;
        }
        out.push(DrSite {
            topology: t,
            is_self: false,
        });
    }
    out.sort_by(|a, b| a.topology.id.cmp(&b.topology.id));
    Ok(out)
}

/// Every server, ordered by uuid (the pagination order).
pub async fn servers(state: &JobContext) -> Result<Vec<Server>> {
    let sites = sites(state, false).await?;
    let mut out = Vec::new();
    for p in &sites {
        out.push(Server {
            uuid: primary_uuid(&p.topology.id),
            primary: p.clone(),
            recovery: None,
        });
        for r in sites.iter().filter(|r| r.topology.id != p.topology.id) {
            out.push(Server {
                uuid: recovery_uuid(&p.topology.id, &r.topology.id),
                primary: p.clone(),
                recovery: Some(r.clone()),
            });
        }
    }
    out.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    Ok(out)
}

pub async fn find_server(state: &JobContext, uuid: &str) -> Result<Option<Server>> {
    Ok(servers(state).await?.into_iter().find(|s| s.uuid == uuid))
}

/// RPO of a RECOVERY server: the lag and its status against the threshold. Known where the
/// primary's outbox is, i.e. on the primary site itself.
pub async fn rpo(state: &JobContext, server: &Server) -> Result<serde_json::Value> {
    let threshold = state.config.dr.rpo_threshold_seconds;
    let Some(recovery) = &server.recovery else {
        return Ok(serde_json::json!({ "status": "OK", "threshold_seconds": threshold }));
    };
    if !server.primary.is_self {
        return Ok(
            serde_json::json!({ "status": "UNKNOWN", "threshold_seconds": threshold,
            "detail": "the RPO is measured on the primary site" }),
        );
    }
    let (_, oldest) = state
        .meta
        .pending_totals(Some(&recovery.topology.id))
        .await?;
    let lag = oldest
        .map(|o| ((now_ms() - o).max(0) / 1000) as u64)
        .unwrap_or(0);
    let status = match lag {
        l if l <= threshold => "OK",
        l if l <= 2 * threshold => "WARNING",
        l if l <= 4 * threshold => "ERROR",
        _ => "CRITICAL",
    };
    Ok(serde_json::json!({ "status": status, "threshold_seconds": threshold, "lag_seconds": lag }))
}
