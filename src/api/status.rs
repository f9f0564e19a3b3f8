//! `GET /api/status`: one answer to "is a site behind, by how much, since when, and why". This
//! site and every peer (reachability, last contact), per peer the replication backlog, its
//! oldest order, recent throughput and failures grouped by reason, pauses, running tasks, DR
//! servers with RPO, copies under repair, uploads and deletes under way and the scrubber.
//! Operator class, read scope (the control-plane auth layer checks it like every `/api/`
//! route). The same figures are published as Prometheus gauges each time the view is
//! computed and every few seconds.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engines::dr;
use crate::error::Result;
use crate::meta::replication::now_ms;
use crate::model::object::{Topology, TopologyStatus};
use crate::state::AppState;

/// The window of the throughput figure.
const THROUGHPUT_WINDOW_MS: i64 = 5 * 60 * 1000;
/// Failure reasons listed per peer.
const REASONS: i64 = 10;
/// How often the gauges are refreshed without anyone asking.
const PUBLISH_EVERY: Duration = Duration::from_secs(10);

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/status", get(status))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusQuery {
    /// A peer whose oldest pending order is older than this is `behind` (default: the DR RPO
    /// threshold).
    behind_secs: Option<u64>,
}

async fn status(
    State(state): State<AppState>,
    Query(q): Query<StatusQuery>,
) -> Result<Json<Value>> {
    let behind = q
        .behind_secs
        .unwrap_or(state.config.dr.rpo_threshold_seconds);
    Ok(Json(snapshot(&state, behind).await?))
}

/// Refreshes the status gauges in the background for as long as the site runs.
pub fn publish_periodically(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PUBLISH_EVERY);
        loop {
            tick.tick().await;
            let behind = state.config.dr.rpo_threshold_seconds;
            if let Err(e) = snapshot(&state, behind).await {
                tracing::debug!("status gauges: {}", e.message);
            }
        }
    });
}

/// The whole view, peers ordered worst first.
pub async fn snapshot(state: &AppState, behind_secs: u64) -> Result<Value> {
    let now = now_ms();
    let pauses = state.meta.pause_states().await?;
    let mut peers = Vec::new();
    for peer in state.topology.replication_peers().await?.iter() {
        let (paused, resume_at) = pauses.get(&peer.id).copied().unwrap_or((false, None));
        // A pause whose resume time has come is over (the sender lifts it on its next round).
        let paused = paused && resume_at.is_none_or(|at| at > now);
        peers.push(peer_view(state, peer, paused, resume_at, behind_secs, now).await?);
    }
    peers.sort_by_key(|p| std::cmp::Reverse(severity(p)));
    let copies = state.meta.copy_health(&state.site_id).await?;
    let objects = state.meta.objects_in_flight().await?;
    publish_site_gauges(&copies, &objects);
    let (scrub_bucket, scrub_name, pass, pass_started) = state.meta.scrub_cursor().await?;
    Ok(json!({
        "site": { "id": state.site_id, "url": state.public_url, "now": now },
        "behindThresholdSecs": behind_secs,
        "worst": peers.first().and_then(|p| p["problem"].as_str().map(str::to_owned)),
        "peers": peers,
        "tasks": tasks(state).await?,
        "dr": { "servers": dr_servers(state).await? },
        "copies": copies,
        "objects": objects,
        "scrubber": {
            "pass": pass, "passStartedAt": pass_started,
            "position": { "bucket": scrub_bucket, "key": scrub_name },
        },
    }))
}

async fn peer_view(
    state: &AppState,
    peer: &Topology,
    paused: bool,
    resume_at: Option<i64>,
    behind_secs: u64,
    now: i64,
) -> Result<Value> {
    let (backlog, oldest) = state.meta.pending_totals(Some(&peer.id)).await?;
    let age_secs = oldest.map(|o| (now - o).max(0) / 1000);
    let done = state
        .meta
        .event_totals(Some(&peer.id), "COMPLETED", now - THROUGHPUT_WINDOW_MS)
        .await?;
    let reasons = state.meta.failure_reasons(&peer.id, REASONS).await?;
    let failed: i64 = reasons.iter().map(|r| r.count).sum();
    let contact = state.topology.contact(&peer.id);
    let reachable = peer.status == TopologyStatus::Up && contact.answering();
    let behind = age_secs.is_some_and(|a| a as u64 > behind_secs);
    let problem = problem(
        &peer.id,
        peer.status,
        reachable,
        paused,
        behind,
        age_secs,
        failed,
    );
    publish_peer_gauges(&peer.id, reachable, failed);
    let window = (THROUGHPUT_WINDOW_MS / 1000) as f64;
    Ok(json!({
        "id": peer.id, "url": peer.uri, "status": peer.status,
        "reachable": reachable, "lastContactAt": contact.last_ok_ms,
        "consecutiveFailures": contact.consecutive_failures,
        "paused": paused, "resumeAt": resume_at,
        "backlog": {
            "objects": backlog.count, "bytes": backlog.bytes,
            "oldestPendingAt": oldest, "oldestPendingAgeSecs": age_secs,
        },
        "throughput": {
            "windowSecs": window as i64, "objects": done.count, "bytes": done.bytes,
            "bytesPerSec": done.bytes as f64 / window,
        },
        "failures": { "total": failed, "byReason": reasons },
        "behind": behind,
        "problem": problem,
    }))
}

/// The peer's worst problem in words, None when all is well.
fn problem(
    id: &str,
    status: TopologyStatus,
    reachable: bool,
    paused: bool,
    behind: bool,
    age_secs: Option<i64>,
    failed: i64,
) -> Option<String> {
    let age = age_secs.unwrap_or(0);
    if status == TopologyStatus::Down {
        Some(format!(
            "{id} is DOWN in the topology (orders wait, oldest {age} s)"
        ))
    } else if !reachable {
        Some(format!(
            "{id} does not answer (oldest pending order {age} s)"
        ))
    } else if failed > 0 {
        Some(format!("{failed} failed operations towards {id}"))
    } else if paused {
        Some(format!(
            "replication to {id} is paused (oldest pending order {age} s)"
        ))
    } else if behind {
        Some(format!("{id} is behind: oldest pending order {age} s"))
    } else {
        None
    }
}

/// Orders the peers worst first: behind, then failures, unreachable, paused, then backlog age.
fn severity(p: &Value) -> (bool, bool, i64, bool, bool, i64) {
    (
        p["behind"].as_bool().unwrap_or(false),
        p["problem"].is_string(),
        p["failures"]["total"].as_i64().unwrap_or(0),
        !p["reachable"].as_bool().unwrap_or(true),
        p["paused"].as_bool().unwrap_or(false),
        p["backlog"]["oldestPendingAgeSecs"].as_i64().unwrap_or(0),
    )
}

async fn tasks(state: &AppState) -> Result<Vec<Value>> {
    Ok(state
        .meta
        .active_tasks()
        .await?
        .iter()
        .map(|t| {
            json!({
                "uuid": t.uuid, "type": t.kind, "status": t.status, "createdAt": t.created,
                "startedAt": t.started, "cancelRequested": t.cancel_requested,
                "progress": {
                    "objectsDone": t.objects_done, "objectsTotal": t.objects_total,
                    "bytesDone": t.bytes_done, "bytesTotal": t.bytes_total,
                },
            })
        })
        .collect())
}

/// The recovery servers whose DR state this site owns or whose RPO it measures (it is the
/// primary): status from the owner's record, RPO from the primary's outbox.
async fn dr_servers(state: &AppState) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for server in dr::servers(&state.jobs).await? {
        let Some(recovery) = &server.recovery else {
            continue;
        };
        let (owned, primary) = (server.owner().is_self, server.primary.is_self);
        if !owned && !primary {
            continue;
        }
        // The owner keeps the server's state; a server never acted on is STAND_BY.
        let status = match owned {
            true => Some(
                (state.meta.server_state(&server.uuid).await?.status)
                    .unwrap_or_else(|| "STAND_BY".into()),
            ),
            false => None,
        };
        let rpo = match primary {
            true => Some(dr::rpo(&state.jobs, &server).await?),
            false => None,
        };
        out.push(json!({
            "uuid": server.uuid, "primary": server.primary.topology.id,
            "recovery": recovery.topology.id, "owner": server.owner().topology.id,
            "status": status,
            "rpo": rpo,
        }));
    }
    Ok(out)
}

/// The backlog gauges (pending orders, bytes, oldest) are the sender's; these are the view's.
fn publish_peer_gauges(peer: &str, reachable: bool, failed: i64) {
    let peer = peer.to_owned();
    let up = if reachable { 1.0 } else { 0.0 };
    metrics::gauge!("mirrorgate_peer_reachable", "peer" => peer.clone()).set(up);
    metrics::gauge!("mirrorgate_replication_failed_operations", "peer" => peer).set(failed as f64);
}

fn publish_site_gauges(
    copies: &crate::meta::status::CopyHealth,
    objects: &crate::meta::status::ObjectsInFlight,
) {
    metrics::gauge!("mirrorgate_objects_in_flight", "status" => "UPLOAD")
        .set(objects.uploading as f64);
    metrics::gauge!("mirrorgate_objects_in_flight", "status" => "DELETING")
        .set(objects.deleting as f64);
    metrics::gauge!("mirrorgate_copies_repairs_in_flight").set(copies.repairs_in_flight as f64);
    metrics::gauge!("mirrorgate_copies_suspicious_last_day").set(copies.suspicious_last_day as f64);
    metrics::gauge!("mirrorgate_copies_lost_last_day").set(copies.lost_last_day as f64);
}
