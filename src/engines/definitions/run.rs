//! A definition run: every payload object that the target lacks, or holds with another hash, is
//! sent through the replication engine (an order to the target, which pulls and verifies it);
//! the others are skipped. Pages of objects are processed in turn so memory stays bounded and a
//! cancel request stops the run between pages, with partial counts. Both transfer reports are
//! written as the run goes: the local one (sent, skipped, failed) and the remote one (what the
//! target confirmed holding).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::{stream, StreamExt};
use serde_json::json;

use super::PayloadEntry;
use crate::core::wire::CLIENT_ID;
use crate::engines::tasks::JobContext;
use crate::engines::tasks::{Executor, RunEnd, TaskHandle};
use crate::error::{Error, Result};
use crate::meta::tasks::{Definition, ReportEntry};
use crate::meta::{Object, ObjectFilter, Status, Topology};
use crate::model::order::{Action, Order};

/// Objects examined per page.
const PAGE: i64 = 100;
/// Target checks in flight at once.
const CHECKS_IN_FLIGHT: usize = 8;
const WAIT_POLL: Duration = Duration::from_millis(200);

pub struct DefinitionRun(pub JobContext);

/// What happened to the objects of a run so far.
#[derive(Default)]
struct Tally {
    sent: i64,
    skipped: i64,
    failed: i64,
    bytes_sent: i64,
}

struct Run<'a> {
    state: &'a JobContext,
    task: &'a TaskHandle,
    definition: Definition,
    target: Topology,
    local_report: String,
    remote_report: String,
    owners: HashMap<String, String>,
    tally: Tally,
    withdrawn: u64,
}

#[async_trait]
impl Executor for DefinitionRun {
    /// A run copies what the target lacks: run again, it copies what is still missing.
    fn resumable(&self) -> bool {
        true
    }

    async fn run(&self, task: TaskHandle) -> Result<RunEnd> {
        let state = self.0.clone();
        let id = task.params["definition"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let definition = state.meta.get_definition_by_id(&id).await?.ok_or_else(|| {
            Error::not_found(format!("replication definition {id} no longer exists"))
        })?;
        let target = state.topology.peer(&definition.target).await.map_err(|_| {
            Error::bad_request(format!(
                "target {:?} is not a site of the topology",
                definition.target
            ))
        })?;
        let local_report = state
            .meta
            .create_report("local", &definition.name, &task.uuid, &target.id)
            .await?;
        let remote_report = state
            .meta
            .create_report("remote", &definition.name, &task.uuid, &target.id)
            .await?;
        state
            .meta
            .set_definition_reports(&definition.id, &local_report, &remote_report)
            .await?;
        let mut run = Run {
            state: &state,
            task: &task,
            definition,
            target,
            local_report,
            remote_report,
            owners: HashMap::new(),
            tally: Tally::default(),
            withdrawn: 0,
        };
        let cancelled = run.execute().await?;
        let result = run.result();
        if cancelled {
            return Ok(RunEnd::Cancelled(result));
        }
        if run.tally.failed > 0 {
            state.meta.set_task_result(&task.uuid, &result).await?;
            return Err(Error::internal(format!("{} of the payload objects could not be replicated to {}; see the transfer report {}", run.tally.failed, run.target.id, run.local_report)));
        }
        Ok(RunEnd::Completed(result))
    }
}

impl Run<'_> {
    fn result(&self) -> serde_json::Value {
        json!({
            "sent": self.tally.sent,
            "skipped": self.tally.skipped,
            "failed": self.tally.failed,
            "bytesSent": self.tally.bytes_sent,
            "ordersWithdrawn": self.withdrawn,
            "target": self.target.id,
            "transferLocalReport": self.local_report,
            "transferRemoteReport": self.remote_report,
        })
    }

    /// Walks the payload; answers whether the run was cancelled.
    async fn execute(&mut self) -> Result<bool> {
        let entries: Vec<PayloadEntry> = self
            .definition
            .payload
            .iter()
            .map(|e| PayloadEntry::parse(e))
            .collect::<Result<_>>()?;
        self.set_totals(&entries).await?;
        for entry in &entries {
            if entry.is_folder() {
                let filter = ObjectFilter {
                    name_prefix: Some(entry.path.clone()),
                    ..Default::default()
                };
                let mut after = String::new();
                loop {
                    let page = self
                        .state
                        .meta
                        .list_objects(&entry.bucket, &filter, Some(&after), PAGE)
                        .await?;
                    let Some(last) = page.last() else { break };
                    after = last.name.clone();
                    let full = page.len() as i64 == PAGE;
                    if self.process(page).await? {
                        return Ok(true);
                    }
                    if !full {
                        break;
                    }
                }
            } else {
                let obj = self
                    .state
                    .meta
                    .get_object(&entry.bucket, &entry.path)
                    .await?
                    .filter(|o| o.status == Status::Ready);
                match obj {
                    Some(obj) => {
                        if self.process(vec![obj]).await? {
                            return Ok(true);
                        }
                    }
                    None => self.missing_entry(entry).await?,
                }
            }
        }
        Ok(false)
    }

    async fn set_totals(&self, entries: &[PayloadEntry]) -> Result<()> {
        let (mut count, mut bytes) = (0, 0);
        for e in entries {
            let (c, b) = if e.is_folder() {
                self.state.meta.prefix_totals(&e.bucket, &e.path).await?
            } else {
                match self.state.meta.get_object(&e.bucket, &e.path).await? {
                    Some(o) if o.status == Status::Ready => (1, o.size as i64),
                    _ => (1, 0),
                }
            };
            count += c;
            bytes += b;
        }
        self.task.set_totals(count, bytes).await
    }

    async fn missing_entry(&mut self, e: &PayloadEntry) -> Result<()> {
        self.tally.failed += 1;
        let entry = ReportEntry {
            outcome: "failed".into(),
            bucket: e.bucket.clone(),
            object: e.path.clone(),
            size: 0,
            detail: Some("not found at this site".into()),
        };
        self.state
            .meta
            .add_report_entries(&self.local_report, &[entry])
            .await?;
        self.task.progress(1, 0).await?;
        Ok(())
    }

    async fn owner(&mut self, bucket: &str) -> Result<String> {
        if let Some(o) = self.owners.get(bucket) {
            return Ok(o.clone());
        }
        let owner = self
            .state
            .meta
            .get_bucket(bucket)
            .await?
            .map(|b| b.client_id)
            .unwrap_or_default();
        self.owners.insert(bucket.to_owned(), owner.clone());
        Ok(owner)
    }

    /// Sends what the target lacks from one page; answers whether cancellation was requested.
    async fn process(&mut self, page: Vec<Object>) -> Result<bool> {
        let owner = self.owner(&page[0].bucket).await?;
        let held = self.target_holds(&page, &owner).await;
        let (skip, send): (Vec<_>, Vec<_>) =
            page.into_iter().zip(held).partition(|(_, same)| *same);
        let skipped: Vec<ReportEntry> = skip
            .iter()
            .map(|(o, _)| entry("skipped", o, Some("target holds the same bytes")))
            .collect();
        self.tally.skipped += skipped.len() as i64;
        self.state
            .meta
            .add_report_entries(&self.local_report, &skipped)
            .await?;
        let skipped_bytes: i64 = skip.iter().map(|(o, _)| o.size as i64).sum();
        if self.task.progress(skip.len() as i64, skipped_bytes).await? {
            return Ok(true);
        }
        let to_send: Vec<Object> = send.into_iter().map(|(o, _)| o).collect();
        if to_send.is_empty() {
            return Ok(false);
        }
        let orders: Vec<Order> = to_send.iter().map(|o| self.order_for(o, &owner)).collect();
        self.state.meta.queue_orders(&orders).await?;
        self.state.site.queued(&orders);
        let op_ids: Vec<String> = orders.iter().map(|o| o.op_id.clone()).collect();
        let cancelled = self.await_outcomes(to_send).await?;
        if cancelled {
            // Cancelling withdraws what this run queued and has not sent.
            let n = self
                .state
                .meta
                .withdraw_queued_orders(&op_ids, &self.target.id)
                .await?;
            self.withdrawn += n;
        }
        Ok(cancelled)
    }

    fn order_for(&self, o: &Object, owner: &str) -> Order {
        Order {
            op_id: uuid::Uuid::new_v4().to_string(),
            from_site: self.state.site_id.clone(),
            to_site: self.target.id.clone(),
            client_id: owner.to_owned(),
            bucket_name: o.bucket.clone(),
            object_name: Some(o.name.clone()),
            size: Some(o.size),
            hash: o.hash.clone(),
            action: Action::Create,
            version_time: Some(o.creation.timestamp_millis()),
        }
    }

    /// Whether the target already holds each object with the same hash (HEAD on its own store).
    async fn target_holds(&self, page: &[Object], owner: &str) -> Vec<bool> {
        let base = self.target.uri.trim_end_matches('/');
        let checks: Vec<_> = page
            .iter()
            .map(|o| {
                let url = format!("{base}/replicator/remote/buckets/{}/{}", o.bucket, o.name);
                let request = self
                    .state
                    .topology
                    .peer_request(reqwest::Method::HEAD, url)
                    .header(CLIENT_ID, owner)
                    .timeout(self.state.topology.peer_timeout());
                same_hash(request, o.hash.clone())
            })
            .collect();
        stream::iter(checks)
            .buffered(CHECKS_IN_FLIGHT)
            .collect()
            .await
    }

    /// Waits until the target reported an outcome for every sent object, or cancellation.
    async fn await_outcomes(&mut self, mut waiting: Vec<Object>) -> Result<bool> {
        while !waiting.is_empty() {
            let mut still = Vec::new();
            let (mut local, mut remote) = (Vec::new(), Vec::new());
            let (mut done, mut bytes) = (0, 0);
            for o in waiting {
                let status = self
                    .state
                    .meta
                    .replication_status(&o.bucket, &o.name)
                    .await?;
                match status.get(&self.target.id).map(String::as_str) {
                    Some("COMPLETED") => {
                        self.tally.sent += 1;
                        self.tally.bytes_sent += o.size as i64;
                        local.push(entry("sent", &o, None));
                        remote.push(entry(
                            "received",
                            &o,
                            Some("stored and verified by the target"),
                        ));
                    }
                    Some("FAILED") => {
                        self.tally.failed += 1;
                        local.push(entry(
                            "failed",
                            &o,
                            Some("the target could not store it; see the failed operations"),
                        ));
                    }
                    _ => {
                        still.push(o);
                        continue;
                    }
                }
                done += 1;
                bytes += local.last().map(|e| e.size).unwrap_or(0);
            }
            self.state
                .meta
                .add_report_entries(&self.local_report, &local)
                .await?;
            self.state
                .meta
                .add_report_entries(&self.remote_report, &remote)
                .await?;
            if self.task.progress(done, bytes).await? {
                return Ok(true);
            }
            waiting = still;
            if !waiting.is_empty() {
                tokio::time::sleep(WAIT_POLL).await;
            }
        }
        Ok(false)
    }
}

async fn same_hash(request: reqwest::RequestBuilder, hash: Option<String>) -> bool {
    match request.send().await {
        Ok(r) if r.status() == 204 => {
            r.headers()
                .get("x-clonecloudstore-hash")
                .and_then(|v| v.to_str().ok())
                == hash.as_deref()
        }
        _ => false,
    }
}

fn entry(outcome: &str, o: &Object, detail: Option<&str>) -> ReportEntry {
    ReportEntry {
        outcome: outcome.into(),
        bucket: o.bucket.clone(),
        object: o.name.clone(),
        size: o.size as i64,
        detail: detail.map(str::to_owned),
    }
}
