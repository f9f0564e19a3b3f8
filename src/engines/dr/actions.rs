//! The DR actions as tasks: test failover, production failover, stop failover (failback).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{stream, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};

use super::{find_server, status, Server};
use crate::core::wire::CLIENT_ID;
use crate::engines::tasks::JobContext;
use crate::engines::tasks::{Executor, RunEnd, TaskHandle};
use crate::engines::topology::SCOPE_ADMIN;
use crate::error::{Error, Kind, Result};
use crate::meta::dr::InventoryItem;
use crate::meta::{Topology, TopologyStatus};

pub const TEST_KIND: &str = "drStartFailoverTest";
pub const PROD_KIND: &str = "drStartFailoverProd";
pub const STOP_KIND: &str = "drStopFailover";

/// Objects verified at once during a test failover.
const VERIFY_IN_FLIGHT: usize = 4;
const INVENTORY_PAGE: usize = 500;
/// Differences listed in a test report (all are counted).
const LISTED: usize = 1000;
const FAILBACK_POLL: Duration = Duration::from_millis(250);

pub fn register(state: &JobContext) {
    state
        .tasks
        .register(TEST_KIND, Arc::new(TestFailover(state.clone())));
    state
        .tasks
        .register(PROD_KIND, Arc::new(ProdFailover(state.clone())));
    state
        .tasks
        .register(STOP_KIND, Arc::new(StopFailover(state.clone())));
}

async fn server_of(state: &JobContext, task: &TaskHandle) -> Result<Server> {
    let uuid = task.params["server"].as_str().unwrap_or_default();
    find_server(state, uuid)
        .await?
        .ok_or_else(|| Error::not_found(format!("server {uuid} is no longer in the topology")))
}

/// Sets a server's status at the end of an action, whatever it was.
async fn settle(state: &JobContext, uuid: &str, to: &str) -> Result<()> {
    let all = [
        status::STAND_BY,
        status::STARTING_FAILOVER_PROD,
        status::FAILOVER_PROD,
        status::STARTING_FAILOVER_TEST,
        status::FAILOVER_TEST,
        status::STOPPING_FAILOVER,
    ];
    state
        .meta
        .move_server(uuid, &all, to, None)
        .await
        .map(|_| ())
}

/// Runs an action; on failure the server returns to `on_failure`.
async fn guarded(
    state: &JobContext,
    uuid: &str,
    on_failure: &str,
    work: impl std::future::Future<Output = Result<RunEnd>>,
) -> Result<RunEnd> {
    let outcome = work.await;
    if outcome.is_err() {
        settle(state, uuid, on_failure).await?;
    }
    outcome
}

// ---- test failover -----------------------------------------------------------------------

struct TestFailover(JobContext);

#[async_trait]
impl Executor for TestFailover {
    async fn run(&self, task: TaskHandle) -> Result<RunEnd> {
        let state = self.0.clone();
        let server = server_of(&state, &task).await?;
        let uuid = server.uuid.clone();
        guarded(&state, &uuid, status::STAND_BY, async {
            let recovery = server
                .recovery
                .clone()
                .ok_or_else(|| Error::bad_request("only recovery servers fail over"))?;
            let (report, cancelled) =
                verify_copy(&state, &task, &server.primary.topology, &recovery.topology).await?;
            if cancelled {
                settle(&state, &uuid, status::STAND_BY).await?;
                return Ok(RunEnd::Cancelled(report));
            }
            state.meta.record_test(&uuid, &task.uuid).await?;
            settle(&state, &uuid, status::FAILOVER_TEST).await?;
            Ok(RunEnd::Completed(report))
        })
        .await
    }
}

/// What a test failover found.
#[derive(Default)]
struct Differences {
    checked: u64,
    bytes: u64,
    missing: Vec<Value>,
    corrupt: Vec<Value>,
    different: Vec<Value>,
    counts: [u64; 3],
}

impl Differences {
    fn note(&mut self, which: usize, item: &InventoryItem, detail: String) {
        self.counts[which] += 1;
        let list = match which {
            0 => &mut self.missing,
            1 => &mut self.corrupt,
            _ => &mut self.different,
        };
        if list.len() < LISTED {
            list.push(json!({ "bucket": item.bucket, "key": item.name, "detail": detail }));
        }
    }

    fn report(&self, primary: &str, recovery: &str) -> Value {
        json!({
            "primary": primary, "recovery": recovery,
            "objectsChecked": self.checked, "bytesChecked": self.bytes,
            "missingCount": self.counts[0], "corruptCount": self.counts[1], "differentCount": self.counts[2],
            "missing": self.missing, "corrupt": self.corrupt, "different": self.different,
            "ok": self.counts.iter().all(|c| *c == 0),
        })
    }
}

/// How one object looks at the recovery site.
enum Check {
    Same(u64),
    Missing(String),
    Corrupt(String),
    Different(String),
}

/// Reads every object of the primary's inventory back from the recovery site, whose own
/// verification aborts a transfer of bytes that do not match: production is only read.
/// Answers the report and whether the check was cancelled before the end.
async fn verify_copy(
    state: &JobContext,
    task: &TaskHandle,
    primary: &Topology,
    recovery: &Topology,
) -> Result<(Value, bool)> {
    let mut found = Differences::default();
    let mut after: Option<(String, String)> = None;
    loop {
        let page = inventory_page(state, primary, after.as_ref()).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.bucket.clone(), last.name.clone()));
        let full = page.len() == INVENTORY_PAGE;
        let checks: Vec<_> = page
            .iter()
            .map(|item| check_one(state, recovery, item))
            .collect();
        let results: Vec<Check> = stream::iter(checks)
            .buffered(VERIFY_IN_FLIGHT)
            .collect()
            .await;
        let mut bytes = 0;
        for (item, check) in page.iter().zip(results) {
            found.checked += 1;
            match check {
                Check::Same(n) => bytes += n,
                Check::Missing(d) => found.note(0, item, d),
                Check::Corrupt(d) => found.note(1, item, d),
                Check::Different(d) => found.note(2, item, d),
            }
        }
        found.bytes += bytes;
        if task.progress(page.len() as i64, bytes as i64).await? {
            return Ok((found.report(&primary.id, &recovery.id), true));
        }
        if !full {
            break;
        }
    }
    Ok((found.report(&primary.id, &recovery.id), false))
}

async fn inventory_page(
    state: &JobContext,
    site: &Topology,
    after: Option<&(String, String)>,
) -> Result<Vec<InventoryItem>> {
    let mut url = format!(
        "{}/replicator/remote/inventory?limit={INVENTORY_PAGE}",
        site.uri.trim_end_matches('/')
    );
    if let Some((b, n)) = after {
        url.push_str(&format!("&afterBucket={b}&afterName={n}"));
    }
    let resp = state
        .topology
        .peer_request(Method::GET, &url)
        .send()
        .await
        .map_err(|e| {
            Error::upstream(
                Kind::BadGateway,
                format!("site {} unreachable: {e}", site.id),
            )
        })?;
    if !resp.status().is_success() {
        return Err(Error::upstream(
            Kind::BadGateway,
            format!("inventory of site {}: {}", site.id, resp.status()),
        ));
    }
    let text = resp
        .text()
        .await
        .map_err(|e| Error::upstream(Kind::BadGateway, e.to_string()))?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| Error::internal(format!("inventory line: {e}")))
        })
        .collect()
}

/// Whether the recovery site's metadata says it holds the object (`HEAD` answers 204).
async fn holds(state: &JobContext, url: &str, item: &InventoryItem) -> bool {
    let head = state
        .topology
        .peer_request(Method::HEAD, url)
        .header(CLIENT_ID, &item.client_id)
        .send()
        .await;
    matches!(head, Ok(h) if h.status() == 204)
}

async fn check_one(state: &JobContext, recovery: &Topology, item: &InventoryItem) -> Check {
    let url = format!(
        "{}/replicator/remote/buckets/{}/{}",
        recovery.uri.trim_end_matches('/'),
        item.bucket,
        item.name
    );
    let resp = match state
        .topology
        .peer_request(Method::GET, &url)
        .header(CLIENT_ID, &item.client_id)
        .send()
        .await
    {
        Ok(r) => r,
        // A transfer aborted before its headers left: tell a corrupt copy from an
        // unreachable site by asking whether the object is there.
        Err(e) => {
            return if holds(state, &url, item).await {
                Check::Corrupt(format!(
                    "the recovery site aborted the transfer (its bytes fail verification): {e}"
                ))
            } else {
                Check::Missing(format!("recovery site unreachable: {e}"))
            };
        }
    };
    match resp.status().as_u16() {
        200 => {}
        404 | 410 => return Check::Missing("not at the recovery site".into()),
        // A small object is verified before anything is sent: a copy that fails answers 5xx
        // while its metadata says it is there.
        s if s >= 500 && holds(state, &url, item).await => {
            return Check::Corrupt(format!(
                "the recovery site holds the object but cannot serve it (its bytes fail verification): {s}"
            ))
        }
        s => return Check::Missing(format!("recovery site answered {s}")),
    }
    let hash = resp
        .headers()
        .get("x-clonecloudstore-hash")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if hash != item.hash {
        return Check::Different(format!(
            "hash {hash} at the recovery site, {} at the primary",
            item.hash
        ));
    }
    let mut body = resp.bytes_stream();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => size += c.len() as u64,
            Err(e) => {
                return Check::Corrupt(format!("the recovery site's bytes fail verification: {e}"))
            }
        }
    }
    if size != item.size {
        return Check::Corrupt(format!(
            "{size} bytes at the recovery site, {} expected",
            item.size
        ));
    }
    Check::Same(size)
}

// ---- production failover and failback ----------------------------------------------------

struct ProdFailover(JobContext);

#[async_trait]
impl Executor for ProdFailover {
    async fn run(&self, task: TaskHandle) -> Result<RunEnd> {
        let state = self.0.clone();
        let server = server_of(&state, &task).await?;
        let uuid = server.uuid.clone();
        guarded(&state, &uuid, status::STAND_BY, async {
            let told = set_primary_status(&state, &server.primary.topology, TopologyStatus::Down).await?;
            settle(&state, &uuid, status::FAILOVER_PROD).await?;
            Ok(RunEnd::Completed(json!({ "primary": server.primary.topology.id, "primaryStatus": "DOWN", "sitesInformed": told })))
        })
        .await
    }
}

struct StopFailover(JobContext);

#[async_trait]
impl Executor for StopFailover {
    async fn run(&self, task: TaskHandle) -> Result<RunEnd> {
        let state = self.0.clone();
        let server = server_of(&state, &task).await?;
        let uuid = server.uuid.clone();
        let was = task.params["from"]
            .as_str()
            .unwrap_or(status::FAILOVER_PROD)
            .to_owned();
        if was == status::FAILOVER_TEST {
            settle(&state, &uuid, status::STAND_BY).await?;
            return Ok(RunEnd::Completed(json!({ "ended": "test failover" })));
        }
        guarded(&state, &uuid, status::FAILOVER_PROD, async {
            let primary = &server.primary.topology;
            let told = set_primary_status(&state, primary, TopologyStatus::Up).await?;
            state.site.hooks().orders_queued();
            let (pending, _) = state.meta.pending_totals(Some(&primary.id)).await?;
            task.set_totals(pending.count, pending.bytes).await?;
            let cancelled = wait_for_failback(&state, &task, &primary.id, pending.count).await?;
            settle(&state, &uuid, status::STAND_BY).await?;
            let result = json!({ "primary": primary.id, "primaryStatus": "UP", "sitesInformed": told, "converged": !cancelled });
            Ok(if cancelled { RunEnd::Cancelled(result) } else { RunEnd::Completed(result) })
        })
        .await
    }
}

/// Waits until this site owes the primary nothing; progress is the orders delivered.
async fn wait_for_failback(
    state: &JobContext,
    task: &TaskHandle,
    primary: &str,
    total: i64,
) -> Result<bool> {
    let mut reported = 0;
    loop {
        let (pending, _) = state.meta.pending_totals(Some(primary)).await?;
        let delivered = (total - pending.count).max(0);
        let cancel = task.progress(delivered - reported, 0).await?;
        reported = delivered.max(reported);
        if pending.count == 0 {
            return Ok(false);
        }
        if cancel {
            return Ok(true);
        }
        tokio::time::sleep(FAILBACK_POLL).await;
    }
}

/// Sets the primary's status here and at every other reachable site; answers which sites
/// took it. A site that is unreachable now learns it from the next failover action.
async fn set_primary_status(
    state: &JobContext,
    primary: &Topology,
    to: TopologyStatus,
) -> Result<Vec<String>> {
    let updated = Topology {
        status: to,
        ..primary.clone()
    };
    let mut told = Vec::new();
    if primary.id != state.site_id {
        state.meta.upsert_topology(&updated).await?;
        state.topology.peers_changed();
        told.push(state.site_id.clone());
    }
    for peer in state
        .topology
        .up_peers()
        .await?
        .iter()
        .filter(|p| p.id != primary.id)
    {
        let url = format!(
            "{}/administration/topologies",
            peer.uri.trim_end_matches('/')
        );
        // The peers' administration API: a token of this site with the admin scope (only
        // for this call; every other peer call carries the peer scope).
        let request = state
            .topology
            .request_with_scope(Method::PUT, url, SCOPE_ADMIN)
            .json(&updated)
            .timeout(state.topology.peer_timeout());
        match request.send().await {
            Ok(r) if r.status().is_success() => told.push(peer.id.clone()),
            Ok(r) => {
                tracing::warn!(peer = %peer.id, "telling the peer that {} is {}: {}", primary.id, to.as_str(), r.status())
            }
            Err(e) => {
                tracing::warn!(peer = %peer.id, "telling the peer that {} is {}: {e}", primary.id, to.as_str())
            }
        }
    }
    Ok(told)
}
