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
use crate::meta::dr::{InventoryItem, WrittenItem};
use crate::meta::tasks::Task;
use crate::meta::{Topology, TopologyStatus};

pub const TEST_KIND: &str = "drStartFailoverTest";
pub const PROD_KIND: &str = "drStartFailoverProd";
pub const STOP_KIND: &str = "drStopFailover";

/// Objects verified at once during a test failover.
const VERIFY_IN_FLIGHT: usize = 4;
const INVENTORY_PAGE: usize = 500;
/// Differences listed in a test report (all are counted).
const LISTED: usize = 1000;

const FAILBACK_POLL: Duration = Duration::from_millis(500);
/// Objects verified at the primary at once during a failback.
const FAILBACK_IN_FLIGHT: usize = 8;
/// Clock margin: objects created this long before the failover started are verified too.
const FAILBACK_MARGIN_MS: i64 = 60_000;

/// Registers the three DR executors, each kind with its own slots (`[dr] max_concurrent_tasks`,
/// or `[tasks] limits.<kind>`), apart from definition runs.
pub fn register(state: &JobContext) {
    let limit = |kind: &str| {
        state
            .config
            .tasks
            .limits
            .get(kind)
            .copied()
            .unwrap_or(state.config.dr.max_concurrent_tasks)
    };
    state.tasks.register(
        TEST_KIND,
        Arc::new(TestFailover(state.clone())),
        limit(TEST_KIND),
    );
    state.tasks.register(
        PROD_KIND,
        Arc::new(ProdFailover(state.clone())),
        limit(PROD_KIND),
    );
    state.tasks.register(
        STOP_KIND,
        Arc::new(StopFailover(state.clone())),
        limit(STOP_KIND),
    );
}

/// A DR task that ended without its executor (cancelled while Pending, interrupted by a
/// crash): its server leaves the transitional status for the stable one it came from.
async fn roll_back(state: &JobContext, task: &Task) -> Result<()> {
    let uuid = task.params["server"].as_str().unwrap_or_default();
    let from = task.params["from"]
        .as_str()
        .unwrap_or(status::STAND_BY)
        .to_owned();
    let transitional = [
        status::STARTING_FAILOVER_PROD,
        status::STARTING_FAILOVER_TEST,
        status::STOPPING_FAILOVER,
    ];
    if state
        .meta
        .roll_back_server(uuid, &task.uuid, &transitional, &from)
        .await?
    {
        tracing::info!(server = %uuid, task = %task.uuid, "DR task abandoned: server back to {from}");
    }
    Ok(())
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
            let ok = report["ok"].as_bool().unwrap_or(false);
            let summary = format!(
                "the test failover found {} missing, {} corrupt and {} different copies of {}'s objects at {} ({} checked)",
                report["missingCount"], report["corruptCount"], report["differentCount"],
                server.primary.topology.id, recovery.topology.id, report["objectsChecked"]
            );
            state.meta.record_test_outcome(&uuid, ok, &summary).await?;
            settle(&state, &uuid, status::FAILOVER_TEST).await?;
            if ok {
                Ok(RunEnd::Completed(report))
            } else {
                Ok(RunEnd::Failed(report, summary))
            }
        })
        .await
    }

    async fn abandoned(&self, task: &Task) -> Result<()> {
        roll_back(&self.0, task).await
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
            state.meta.record_failover_start(&uuid, crate::meta::replication::now_ms()).await?;
            let told = set_primary_status(&state, &server.primary.topology, TopologyStatus::Down).await?;
            settle(&state, &uuid, status::FAILOVER_PROD).await?;
            Ok(RunEnd::Completed(json!({ "primary": server.primary.topology.id, "primaryStatus": "DOWN", "sitesInformed": told })))
        })
        .await
    }

    async fn abandoned(&self, task: &Task) -> Result<()> {
        roll_back(&self.0, task).await
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
        let primary = server.primary.topology.clone();
        let outcome = async {
            let told = set_primary_status(&state, &primary, TopologyStatus::Up).await?;
            state.site.hooks().orders_queued();
            let since = state
                .meta
                .server_state(&uuid)
                .await?
                .failover_start
                .map(|t| t - FAILBACK_MARGIN_MS)
                .unwrap_or(0);
            let proof = prove_failback(&state, &task, &primary, since).await;
            Ok::<_, Error>((told, proof))
        }
        .await;
        let (told, proof) = match outcome {
            Ok((told, Ok(proof))) => (told, proof),
            Ok((_, Err(e))) | Err(e) => {
                // Traffic stays at the recovery site: the primary is DOWN again everywhere.
                let _ = set_primary_status(&state, &primary, TopologyStatus::Down).await;
                settle(&state, &uuid, status::FAILOVER_PROD).await?;
                return Err(e);
            }
        };
        let mut result = json!({
            "primary": primary.id, "sitesInformed": told,
            "objectsVerified": proof.verified, "objectsUnverified": proof.unverified,
            "pendingOrders": proof.pending, "failedOperationsRetried": proof.retried,
            "converged": !proof.cancelled,
        });
        if proof.cancelled {
            let _ = set_primary_status(&state, &primary, TopologyStatus::Down).await;
            settle(&state, &uuid, status::FAILOVER_PROD).await?;
            result["primaryStatus"] = json!("DOWN");
            return Ok(RunEnd::Cancelled(result));
        }
        result["primaryStatus"] = json!("UP");
        settle(&state, &uuid, status::STAND_BY).await?;
        Ok(RunEnd::Completed(result))
    }

    async fn abandoned(&self, task: &Task) -> Result<()> {
        roll_back(&self.0, task).await
    }
}

/// Where a failback stands.
#[derive(Default)]
struct Proof {
    verified: u64,
    unverified: u64,
    pending: i64,
    retried: u64,
    cancelled: bool,
}

/// Waits until the primary holds, stored and verified, every object this site holds that was
/// written since the failover started (`since`), this site owes it no order, and no failed
/// operation towards it is left (they are retried, as Backbeat's retry does). Progress is the
/// objects verified at the primary. Ends early on cancel; fails after `[dr]
/// failback_deadline_secs` (when set) with what is still missing.
async fn prove_failback(
    state: &JobContext,
    task: &TaskHandle,
    primary: &Topology,
    since: i64,
) -> Result<Proof> {
    let deadline_secs = state.config.dr.failback_deadline_secs;
    let deadline =
        (deadline_secs > 0).then(|| std::time::Instant::now() + Duration::from_secs(deadline_secs));
    // (bucket, name) -> the hash verified at the primary.
    let mut verified: std::collections::HashMap<(String, String), String> = Default::default();
    let (mut reported, mut retried) = (0i64, 0u64);
    loop {
        retried += retry_failed_for(state, &primary.id).await?;
        let (pending, _) = state.meta.pending_totals(Some(&primary.id)).await?;
        let written = written_since(state, since).await?;
        let todo: Vec<_> = written
            .iter()
            .filter(|w| verified.get(&(w.bucket.clone(), w.name.clone())) != Some(&w.hash))
            .collect();
        let checks: Vec<_> = todo.iter().map(|w| held_at(state, primary, w)).collect();
        let held: Vec<bool> = stream::iter(checks)
            .buffered(FAILBACK_IN_FLIGHT)
            .collect()
            .await;
        for (w, ok) in todo.iter().zip(held) {
            if ok {
                verified.insert((w.bucket.clone(), w.name.clone()), w.hash.clone());
            }
        }
        let done = written
            .iter()
            .filter(|w| verified.get(&(w.bucket.clone(), w.name.clone())) == Some(&w.hash))
            .count() as i64;
        task.set_totals(written.len() as i64 + pending.count, 0)
            .await?;
        let cancel = task.progress(done - reported, 0).await?;
        reported = done;
        let proof = Proof {
            verified: done as u64,
            unverified: (written.len() as i64 - done) as u64,
            pending: pending.count,
            retried,
            cancelled: cancel,
        };
        let failed_left = state
            .meta
            .list_failed(&state.site_id, &primary.id, None, 1)
            .await?
            .0
            .len();
        if proof.unverified == 0 && pending.count == 0 && failed_left == 0 {
            return Ok(proof);
        }
        if cancel {
            return Ok(proof);
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Err(Error::upstream(
                Kind::BadGateway,
                format!(
                    "failback not proven after {deadline_secs} s: site {} does not hold {} of the {} objects written during the failover, and {} orders to it are still pending (is it reachable?)",
                    primary.id, proof.unverified, written.len(), pending.count
                ),
            ));
        }
        tokio::time::sleep(FAILBACK_POLL).await;
    }
}

/// Every object this site holds that was created at or after `since`.
async fn written_since(state: &JobContext, since: i64) -> Result<Vec<WrittenItem>> {
    let mut out = Vec::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let page = state
            .meta
            .written_since(
                since,
                after.as_ref().map(|(b, n)| (b.as_str(), n.as_str())),
                INVENTORY_PAGE as i64,
            )
            .await?;
        let full = page.len() == INVENTORY_PAGE;
        if let Some(last) = page.last() {
            after = Some((last.bucket.clone(), last.name.clone()));
        }
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// Queues again every failed operation towards `site` (what Backbeat's retry does); answers
/// how many.
async fn retry_failed_for(state: &JobContext, site: &str) -> Result<u64> {
    let mut n = 0;
    loop {
        let (page, _) = state
            .meta
            .list_failed(&state.site_id, site, None, 100)
            .await?;
        if page.is_empty() {
            break;
        }
        let before = n;
        for op in &page {
            let key = op.order.object_name.clone().unwrap_or_default();
            n += state
                .meta
                .retry_failed(
                    &state.site_id,
                    &op.order.bucket_name,
                    &key,
                    &op.version_id,
                    site,
                )
                .await?
                .len() as u64;
        }
        if n == before {
            break;
        }
    }
    if n > 0 {
        tracing::info!(
            site,
            retried = n,
            "failback: failed operations queued again"
        );
        state.site.hooks().orders_queued();
    }
    Ok(n)
}

/// Whether the primary holds the object with the same hash (its own store: HEAD on the
/// remote route; the hash it reports is the one it verified while storing).
async fn held_at(state: &JobContext, primary: &Topology, w: &WrittenItem) -> bool {
    let url = format!(
        "{}/replicator/remote/buckets/{}/{}",
        primary.uri.trim_end_matches('/'),
        w.bucket,
        w.name
    );
    match state
        .topology
        .peer_request(Method::HEAD, &url)
        .header(CLIENT_ID, &w.client_id)
        .timeout(state.topology.peer_timeout())
        .send()
        .await
    {
        Ok(r) if r.status() == 204 => {
            r.headers()
                .get("x-clonecloudstore-hash")
                .and_then(|v| v.to_str().ok())
                == Some(w.hash.as_str())
        }
        _ => false,
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
