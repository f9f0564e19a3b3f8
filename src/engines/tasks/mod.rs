//! The task engine: every asynchronous job (a definition run, a failover, a resync) is a durable
//! task with a uuid, a type, a status, times, progress counters, a failure message and a cancel
//! flag. Executors are registered per task type. Cancellation is cooperative: an executor sees
//! the flag when it reports progress. After a crash no task stays Running: `recover` ends
//! running ones Failed (or Cancelled when cancel had been asked) and starts pending ones.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::core::Site;
use crate::engines::topology::TopologyService;
use crate::error::{Error, Result};
use crate::meta::replication::now_ms;
use crate::meta::tasks::{status, Task};
use crate::meta::MetaStore;

/// What the task-driven engines (definitions, disaster recovery) work with.
#[derive(Clone)]
pub struct JobContext {
    pub site: Site,
    pub topology: Arc<TopologyService>,
    pub tasks: Arc<TaskEngine>,
}

crate::deref_to_site!(JobContext);

/// How a run ended: completed, cancelled, or failed with a result worth keeping (what a test
/// failover found) and the reason.
pub enum RunEnd {
    Completed(serde_json::Value),
    Cancelled(serde_json::Value),
    Failed(serde_json::Value, String),
}

#[async_trait]
pub trait Executor: Send + Sync {
    async fn run(&self, task: TaskHandle) -> Result<RunEnd>;

    /// The task ended without its executor finishing it: cancelled while Pending, or found
    /// Running after a crash. Undo what its submission set up (a DR server's transitional
    /// status). Nothing by default.
    async fn abandoned(&self, _task: &Task) -> Result<()> {
        Ok(())
    }

    /// Whether a run whose node died (its lease lapsed, on a site of several nodes) may run
    /// again from the start on another node; otherwise it ends Failed, as after a crash of a
    /// single node. No by default.
    fn resumable(&self) -> bool {
        false
    }
}

/// What an executor holds of its task: its parameters and the progress channel.
pub struct TaskHandle {
    pub uuid: String,
    pub params: serde_json::Value,
    meta: MetaStore,
}

impl TaskHandle {
    pub async fn set_totals(&self, objects: i64, bytes: i64) -> Result<()> {
        self.meta.set_task_totals(&self.uuid, objects, bytes).await
    }

    /// Records progress; answers whether cancellation was requested.
    pub async fn progress(&self, objects: i64, bytes: i64) -> Result<bool> {
        let cancel = self
            .meta
            .add_task_progress(&self.uuid, objects, bytes)
            .await?;
        metrics::counter!("mirrorgate_task_objects_total").increment(objects.max(0) as u64);
        metrics::counter!("mirrorgate_task_bytes_total").increment(bytes.max(0) as u64);
        Ok(cancel)
    }

    pub async fn cancel_requested(&self) -> Result<bool> {
        self.progress(0, 0).await
    }
}

/// Tasks of one kind running at once when nothing else is said; the others wait Pending.
pub const DEFAULT_CONCURRENT_TASKS: usize = 4;

/// A registered task kind: its executor and its own slots (kinds never wait on each other's:
/// a burst of definition runs does not hold a failover back).
#[derive(Clone)]
struct Kind {
    executor: Arc<dyn Executor>,
    slots: Arc<Semaphore>,
}

pub struct TaskEngine {
    meta: MetaStore,
    kinds: RwLock<HashMap<String, Kind>>,
}

impl TaskEngine {
    pub fn new(meta: MetaStore) -> Self {
        Self {
            meta,
            kinds: RwLock::new(HashMap::new()),
        }
    }
}

impl TaskEngine {
    /// Registers the executor of `kind` with `limit` slots of its own (at least one).
    pub fn register(&self, kind: &str, executor: Arc<dyn Executor>, limit: usize) {
        self.kinds.write().expect("executors lock").insert(
            kind.to_owned(),
            Kind {
                executor,
                slots: Arc::new(Semaphore::new(limit.max(1))),
            },
        );
    }

    fn kind(&self, kind: &str) -> Option<Kind> {
        self.kinds
            .read()
            .expect("executors lock")
            .get(kind)
            .cloned()
    }

    fn executor(&self, kind: &str) -> Option<Arc<dyn Executor>> {
        self.kind(kind).map(|k| k.executor)
    }

    /// Slots free for `kind` now (None: unknown kind).
    pub fn free_slots(&self, kind: &str) -> Option<usize> {
        self.kind(kind).map(|k| k.slots.available_permits())
    }

    /// Asks a task to stop. A Pending one ends Cancelled at once, and its executor undoes what
    /// its submission set up; a Running one stops at its next check. Answers whether the task
    /// was still active.
    pub async fn cancel(&self, uuid: &str) -> Result<bool> {
        if !self.meta.request_cancel(uuid).await? {
            return Ok(false);
        }
        if let Some(task) = self.meta.get_task(uuid).await? {
            if task.status == status::CANCELLED {
                if let Some(executor) = self.executor(&task.kind) {
                    executor.abandoned(&task).await?;
                }
            }
        }
        Ok(true)
    }

    /// Creates a task and starts it as soon as a slot is free.
    pub async fn submit(
        &self,
        kind: &str,
        action_id: &str,
        node_ref: &str,
        params: serde_json::Value,
    ) -> Result<Task> {
        if self.executor(kind).is_none() {
            return Err(Error::internal(format!("no executor for task type {kind}")));
        }
        let task = self
            .meta
            .create_task(kind, action_id, node_ref, &params)
            .await?;
        self.start(task.clone());
        Ok(task)
    }

    /// Runs an existing Pending task in the background.
    pub fn start(&self, task: Task) {
        let Some(Kind { executor, slots }) = self.kind(&task.kind) else {
            tracing::error!(task = %task.uuid, kind = %task.kind, "no executor for task type");
            return;
        };
        let meta = self.meta.clone();
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            run_task(meta, task, executor).await;
        });
    }

    /// After a restart: nothing stays Running; Pending tasks start. On a site of several
    /// nodes (PostgreSQL) only the tasks of nodes that died (lapsed leases) or of this node's
    /// previous run are recovered, now and then every half lease (see [`TaskEngine::adopt`]).
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        if self.meta.backend() == crate::meta::Backend::Postgres {
            self.adopt(true).await?;
            let engine = Arc::downgrade(self);
            let every =
                std::time::Duration::from_millis((self.meta.lease_ms() / 2).max(100) as u64);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(engine) = engine.upgrade() else {
                        return;
                    };
                    if let Err(e) = engine.adopt(false).await {
                        tracing::warn!("taking over the tasks of a stopped node: {e}");
                    }
                }
            });
            return Ok(());
        }
        for task in self.meta.active_tasks().await? {
            match task.status.as_str() {
                status::RUNNING => {
                    let why = "interrupted: the process stopped while the task ran; start it again";
                    self.meta
                        .transition_task(&task.uuid, &[status::RUNNING], status::FAILED, Some(why))
                        .await?;
                    tracing::warn!(task = %task.uuid, kind = %task.kind, "{why}");
                    self.abandon(&task).await;
                }
                status::CANCEL_REQUESTED => {
                    self.meta
                        .transition_task(
                            &task.uuid,
                            &[status::CANCEL_REQUESTED],
                            status::CANCELLED,
                            None,
                        )
                        .await?;
                    self.abandon(&task).await;
                }
                _ => self.start(task),
            }
        }
        Ok(())
    }
}

impl TaskEngine {
    /// Takes over the running tasks whose node stopped renewing their lease (`own`: also those
    /// of this node's previous run): a resumable one runs again from the start here, another
    /// ends as after a crash. Pending tasks nobody started for a lease start here.
    async fn adopt(&self, own: bool) -> Result<()> {
        for task in self.meta.lapsed_tasks(own).await? {
            if !self.meta.adopt_task(&task).await? {
                continue; // another node was faster
            }
            let executor = self.executor(&task.kind);
            match executor {
                Some(executor) if executor.resumable() && task.status == status::RUNNING => {
                    tracing::warn!(task = %task.uuid, from = ?task.claimed_by, "running again a task whose node stopped");
                    let meta = self.meta.clone();
                    let span = tracing::info_span!("task", uuid = %task.uuid, kind = %task.kind);
                    tokio::spawn(run_started(meta, task, executor).instrument(span));
                }
                _ => self.end_interrupted(&task).await?,
            }
        }
        let stale = now_ms() - self.meta.lease_ms();
        for task in self.meta.active_tasks().await? {
            if task.status == status::PENDING && (own || task.created < stale) {
                self.start(task);
            }
        }
        Ok(())
    }

    /// A task found running (or cancelling) whose run is gone: Failed (Cancelled when cancel
    /// was asked), and its executor undoes what its submission set up.
    async fn end_interrupted(&self, task: &Task) -> Result<()> {
        let (from, to, why) = match task.status.as_str() {
            status::CANCEL_REQUESTED => (status::CANCEL_REQUESTED, status::CANCELLED, None),
            _ => (
                status::RUNNING,
                status::FAILED,
                Some("interrupted: the process stopped while the task ran; start it again"),
            ),
        };
        if self
            .meta
            .transition_task(&task.uuid, &[from], to, why)
            .await?
        {
            self.abandon(task).await;
        }
        Ok(())
    }

    async fn abandon(&self, task: &Task) {
        if let Some(executor) = self.executor(&task.kind) {
            if let Err(e) = executor.abandoned(task).await {
                tracing::error!(task = %task.uuid, "undoing an abandoned task: {e}");
            }
        }
    }
}

async fn run_task(meta: MetaStore, task: Task, executor: Arc<dyn Executor>) {
    match meta
        .transition_task(&task.uuid, &[status::PENDING], status::RUNNING, None)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            // Cancelled while it waited: undo what its submission set up.
            if let Err(e) = executor.abandoned(&task).await {
                tracing::error!(task = %task.uuid, "undoing a cancelled task: {e}");
            }
            return;
        }
        Err(e) => return tracing::error!(task = %task.uuid, "starting task: {e}"),
    }
    let span = tracing::info_span!("task", uuid = %task.uuid, kind = %task.kind);
    // `instrument`, not `span.enter()` across awaits: see replication::applier::apply_claimed.
    run_started(meta, task, executor).instrument(span).await
}

async fn run_started(meta: MetaStore, task: Task, executor: Arc<dyn Executor>) {
    tracing::info!("task started");
    let handle = TaskHandle {
        uuid: task.uuid.clone(),
        params: task.params.clone(),
        meta: meta.clone(),
    };
    let renewal = tokio::spawn(renew_claim(meta.clone(), task.uuid.clone()));
    let outcome = executor.run(handle).await;
    renewal.abort();
    let active = [status::RUNNING, status::CANCEL_REQUESTED];
    let recorded = match outcome {
        Ok(RunEnd::Completed(result)) => {
            finish(&meta, &task.uuid, &result, status::COMPLETED, &active).await
        }
        Ok(RunEnd::Cancelled(result)) => {
            finish(&meta, &task.uuid, &result, status::CANCELLED, &active).await
        }
        Ok(RunEnd::Failed(result, why)) => {
            tracing::warn!("task failed: {why}");
            match meta.set_task_result(&task.uuid, &result).await {
                Ok(()) => meta
                    .transition_task(&task.uuid, &active, status::FAILED, Some(&why))
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            }
        }
        Err(e) => {
            tracing::warn!("task failed: {e}");
            meta.transition_task(&task.uuid, &active, status::FAILED, Some(&e.message))
                .await
                .map(|_| ())
        }
    };
    metrics::counter!("mirrorgate_tasks_finished_total", "kind" => task.kind.clone()).increment(1);
    if let Err(e) = recorded {
        tracing::error!("recording the end of task {}: {e}", task.uuid);
    }
}

/// Claims a task this node runs and renews the claim (three times a lease) until aborted, so
/// that the other nodes of the site leave it alone while this node lives.
async fn renew_claim(meta: MetaStore, uuid: String) {
    let every = std::time::Duration::from_millis((meta.lease_ms() / 3).max(50) as u64);
    if let Err(e) = meta.claim_task(&uuid).await {
        tracing::warn!(task = %uuid, "claiming the task: {e}");
    }
    loop {
        tokio::time::sleep(every).await;
        match meta.renew_task(&uuid).await {
            Ok(true) => {}
            Ok(false) => return, // ended, or another node took it over
            Err(e) => tracing::warn!(task = %uuid, "renewing the task's lease: {e}"),
        }
    }
}

async fn finish(
    meta: &MetaStore,
    uuid: &str,
    result: &serde_json::Value,
    to: &str,
    from: &[&str],
) -> Result<()> {
    meta.set_task_result(uuid, result).await?;
    meta.transition_task(uuid, from, to, None).await?;
    tracing::info!(status = to, "task ended");
    Ok(())
}

#[cfg(test)]
mod tests;
