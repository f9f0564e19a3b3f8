//! The task engine's slots and cancellation, on a real SQLite store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

/// An executor that runs until its gate gets a permit, and counts what was undone.
struct Gated {
    gate: Arc<Semaphore>,
    abandoned: Arc<AtomicUsize>,
}

#[async_trait]
impl Executor for Gated {
    async fn run(&self, _task: TaskHandle) -> Result<RunEnd> {
        self.gate.acquire().await.expect("gate").forget();
        Ok(RunEnd::Completed(serde_json::json!({})))
    }

    async fn abandoned(&self, _task: &Task) -> Result<()> {
        self.abandoned.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn gated() -> (Arc<Gated>, Arc<Semaphore>, Arc<AtomicUsize>) {
    let gate = Arc::new(Semaphore::new(0));
    let abandoned = Arc::new(AtomicUsize::new(0));
    let executor = Arc::new(Gated {
        gate: gate.clone(),
        abandoned: abandoned.clone(),
    });
    (executor, gate, abandoned)
}

async fn status_of(meta: &MetaStore, uuid: &str) -> String {
    meta.get_task(uuid).await.unwrap().unwrap().status
}

async fn reaches(meta: &MetaStore, uuid: &str, want: &str) {
    for _ in 0..250 {
        if status_of(meta, uuid).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = status_of(meta, uuid).await;
    panic!("task {uuid} never reached {want}: {now}");
}

/// Each kind has its own slots: a full kind queues its own tasks Pending and holds no other
/// kind back; a Pending task cancels at once and its submission is undone.
#[tokio::test]
async fn kinds_have_their_own_slots_and_pending_tasks_cancel_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/meta.db", dir.path().display());
    let meta = MetaStore::open(&url).await.unwrap();
    let engine = TaskEngine::new(meta.clone());
    let (runs, runs_gate, _) = gated();
    let (failovers, failovers_gate, failovers_undone) = gated();
    engine.register("definitionRun", runs, 1);
    engine.register("failover", failovers, 1);
    let params = serde_json::json!({});
    let submit = |kind: &'static str, id: &'static str| {
        let (engine, params) = (&engine, params.clone());
        async move { engine.submit(kind, id, id, params).await.unwrap() }
    };

    let busy = submit("definitionRun", "a1").await;
    reaches(&meta, &busy.uuid, status::RUNNING).await;
    let queued = submit("definitionRun", "a2").await;
    let failover = submit("failover", "a3").await;
    reaches(&meta, &failover.uuid, status::RUNNING).await;
    assert_eq!(status_of(&meta, &queued.uuid).await, status::PENDING);
    assert_eq!(engine.free_slots("definitionRun"), Some(0));

    // A second failover waits for its own kind's slot; cancelled while Pending, it ends
    // Cancelled at once and its executor undoes the submission.
    let waiting = submit("failover", "a4").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(status_of(&meta, &waiting.uuid).await, status::PENDING);
    assert!(engine.cancel(&waiting.uuid).await.unwrap());
    assert_eq!(status_of(&meta, &waiting.uuid).await, status::CANCELLED);
    assert!(failovers_undone.load(Ordering::SeqCst) >= 1);

    // The running failover finishes while the definition runs are still held up; the
    // cancelled one never runs, and the queued run starts once its own kind has a slot.
    failovers_gate.add_permits(1);
    reaches(&meta, &failover.uuid, status::COMPLETED).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(status_of(&meta, &waiting.uuid).await, status::CANCELLED);
    assert_eq!(status_of(&meta, &queued.uuid).await, status::PENDING);
    runs_gate.add_permits(2);
    reaches(&meta, &busy.uuid, status::COMPLETED).await;
    reaches(&meta, &queued.uuid, status::COMPLETED).await;
}
