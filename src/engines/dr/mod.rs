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

    /// The site that owns the server's DR state (status, running task, failover and test
    /// records) and runs its actions: the hosting site, i.e. the recovery site of a pair (the
    /// site that must be alive when the primary is not). Every other site forwards actions to
    /// it and reads the state from it.
    pub fn owner(&self) -> &DrSite {
        self.site()
    }
}

/// Header marking a DR request forwarded by another site: the receiver answers from its own
/// state and never forwards it again.
pub const FORWARDED: &str = "x-mirrorgate-dr-forwarded";

/// A DR API request forwarded to another site on behalf of the operator, whose own credential
/// (`authorization`) goes with it. Answers the status and JSON body, or an error when the site
/// cannot be reached.
pub async fn forward(
    state: &JobContext,
    site: &Topology,
    method: reqwest::Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<bytes::Bytes>,
) -> Result<(u16, serde_json::Value)> {
    let url = format!("{}{path}", site.uri.trim_end_matches('/'));
    let mut request = state
        .topology
        .forward_request(method, url)
        .header(FORWARDED, state.site_id.as_str())
        .timeout(
            state
                .topology
                .peer_timeout()
                .max(std::time::Duration::from_secs(10)),
        );
    if let Some(a) = authorization {
        request = request.header(reqwest::header::AUTHORIZATION, a);
    }
    if let Some(b) = body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b);
    }
    let resp = request.send().await.map_err(|e| {
        crate::error::Error::upstream(
            crate::error::Kind::Unavailable,
            format!("site {} is unreachable: {e}", site.id),
        )
    })?;
    let status = resp.status().as_u16();
    let value = resp.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, value))
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

/// RPO of a RECOVERY server measured from any site: on the primary itself from its outbox,
/// elsewhere by asking the primary (`GET /api/dr/v2/servers/{uuid}/rpo`, the operator's
/// credential forwarded). A primary that cannot be asked: UNKNOWN, saying why.
pub async fn rpo_anywhere(
    state: &JobContext,
    server: &Server,
    authorization: Option<&str>,
) -> Result<serde_json::Value> {
    if server.recovery.is_none() || server.primary.is_self {
        return rpo(state, server).await;
    }
    let threshold = state.config.dr.rpo_threshold_seconds;
    let path = format!("/api/dr/v2/servers/{}/rpo", server.uuid);
    let why = match forward(
        state,
        &server.primary.topology,
        reqwest::Method::GET,
        &path,
        authorization,
        None,
    )
    .await
    {
        Ok((200, v)) if v.get("status").is_some() => return Ok(v),
        Ok((code, _)) => format!("the primary site answered {code}"),
        Err(e) => e.message,
    };
    Ok(
        serde_json::json!({ "status": "UNKNOWN", "threshold_seconds": threshold,
        "detail": format!("the RPO is measured on the primary site {}: {why}", server.primary.topology.id) }),
    )
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
