//! The task engine: every asynchronous job (a definition run, a failover, a resync) is a durable
//! task with a uuid, a type, a status, times, progress counters, a failure message and a cancel
//! flag. Executors are registered per task type. Cancellation is cooperative: an executor sees
//! the flag when it reports progress. After a crash no task stays Running: `recover` ends
//! running ones Failed (or Cancelled when cancel had been asked) and starts pending ones.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use tokio::sync::Semaphore;

use crate::core::Site;
use crate::engines::topology::TopologyService;
use crate::error::{Error, Result};
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

/// How a run ended when it did not fail.
pub enum RunEnd {
    Completed(serde_json::Value),
    Cancelled(serde_json::Value),
}

#[async_trait]
pub trait Executor: Send + Sync {
    async fn run(&self, task: TaskHandle) -> Result<RunEnd>;
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

/// Tasks running at once; the others wait Pending.
const MAX_CONCURRENT_TASKS: usize = 4;

pub struct TaskEngine {
    meta: MetaStore,
    executors: RwLock<HashMap<String, Arc<dyn Executor>>>,
    slots: Arc<Semaphore>,
}

impl TaskEngine {
    pub fn new(meta: MetaStore) -> Self {
        Self {
            meta,
            executors: RwLock::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_TASKS)),
        }
    }
}

impl TaskEngine {
    pub fn register(&self, kind: &str, executor: Arc<dyn Executor>) {
        self.executors
            .write()
            .expect("executors lock")
            .insert(kind.to_owned(), executor);
    }

    fn executor(&self, kind: &str) -> Option<Arc<dyn Executor>> {
        self.executors
            .read()
            .expect("executors lock")
            .get(kind)
            .cloned()
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
        let Some(executor) = self.executor(&task.kind) else {
            tracing::error!(task = %task.uuid, kind = %task.kind, "no executor for task type");
            return;
        };
        let (meta, slots) = (self.meta.clone(), self.slots.clone());
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            run_task(meta, task, executor).await;
        });
    }

    /// After a restart: nothing stays Running; Pending tasks start.
    pub async fn recover(&self) -> Result<()> {
        for task in self.meta.active_tasks().await? {
            match task.status.as_str() {
                status::RUNNING => {
                    let why = "interrupted: the process stopped while the task ran; start it again";
                    self.meta
                        .transition_task(&task.uuid, &[status::RUNNING], status::FAILED, Some(why))
                        .await?;
                    tracing::warn!(task = %task.uuid, kind = %task.kind, "{why}");
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
                }
                _ => self.start(task),
            }
        }
        Ok(())
    }
}

async fn run_task(meta: MetaStore, task: Task, executor: Arc<dyn Executor>) {
    match meta
        .transition_task(&task.uuid, &[status::PENDING], status::RUNNING, None)
        .await
    {
        Ok(true) => {}
        Ok(false) => return, // cancelled while it waited
        Err(e) => return tracing::error!(task = %task.uuid, "starting task: {e}"),
    }
    let span = tracing::info_span!("task", uuid = %task.uuid, kind = %task.kind);
    let _enter = span.enter();
    tracing::info!("task started");
    let handle = TaskHandle {
        uuid: task.uuid.clone(),
        params: task.params.clone(),
        meta: meta.clone(),
    };
    let outcome = executor.run(handle).await;
    let active = [status::RUNNING, status::CANCEL_REQUESTED];
    let recorded = match outcome {
        Ok(RunEnd::Completed(result)) => {
            finish(&meta, &task.uuid, &result, status::COMPLETED, &active).await
        }
        Ok(RunEnd::Cancelled(result)) => {
            finish(&meta, &task.uuid, &result, status::CANCELLED, &active).await
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
