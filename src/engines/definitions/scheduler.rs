//! Fires due definitions. The due time moves forward in the same transaction that creates the
//! run's task, compare-and-set on the old due time, so one due time fires once even across
//! restarts or with several processes on one store; a window missed while the process was down
//! fires once when it comes back (the next due time is the first one after now).

use std::time::Duration;

use crate::engines::tasks::JobContext;
use crate::meta::replication::now_ms;
use crate::meta::tasks::status;

const TICK: Duration = Duration::from_millis(500);

pub async fn run(state: JobContext) {
    loop {
        if let Err(e) = fire_due(&state).await {
            tracing::warn!("scheduler: {e}");
        }
        tokio::time::sleep(TICK).await;
    }
}

async fn fire_due(state: &JobContext) -> crate::error::Result<()> {
    // One node of a site fires (the compare-and-set below would also keep a due time from
    // firing twice, the lease keeps the nodes from racing for it).
    if !state.meta.lead("scheduler").await {
        return Ok(());
    }
    let now = now_ms();
    for d in state.meta.list_definitions().await? {
        let (Some(due), Some(schedule)) = (d.next_due, d.schedule.as_ref()) else {
            continue;
        };
        if !d.enabled || due > now {
            continue;
        }
        let next = super::due_after(schedule, now);
        if still_running(state, d.last_task.as_deref()).await? {
            if state.meta.skip_due(&d.id, due, next).await? {
                tracing::info!(definition = %d.name, "due while the previous run is still going: skipped");
            }
            continue;
        }
        let params = serde_json::json!({ "definition": d.id, "scheduled": due });
        if let Some(task) = state
            .meta
            .start_definition_run(&d, super::RUN_KIND, &params, Some((due, next)))
            .await?
        {
            tracing::info!(definition = %d.name, task = %task.uuid, "scheduled run started");
            state.tasks.start(task);
        }
    }
    Ok(())
}

pub async fn still_running(state: &JobContext, task: Option<&str>) -> crate::error::Result<bool> {
    let Some(uuid) = task else { return Ok(false) };
    Ok(state
        .meta
        .get_task(uuid)
        .await?
        .is_some_and(|t| status::ACTIVE.contains(&t.status.as_str())))
}
