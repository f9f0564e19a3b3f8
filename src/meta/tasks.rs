//! Task engine, replication definitions and transfer reports in the metadata store.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::replication::now_ms;
use super::MetaStore;
use crate::error::{Error, Result};

/// Task statuses (Alfresco's names).
pub mod status {
    pub const NEW: &str = "New";
    pub const PENDING: &str = "Pending";
    pub const RUNNING: &str = "Running";
    pub const CANCEL_REQUESTED: &str = "CancelRequested";
    pub const COMPLETED: &str = "Completed";
    pub const FAILED: &str = "Failed";
    pub const CANCELLED: &str = "Cancelled";

    /// Statuses of a task that has not ended.
    pub const ACTIVE: [&str; 3] = [PENDING, RUNNING, CANCEL_REQUESTED];
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Task {
    pub uuid: String,
    pub instance: i64,
    pub kind: String,
    pub action_id: String,
    pub node_ref: String,
    pub status: String,
    pub created: i64,
    pub started: Option<i64>,
    pub ended: Option<i64>,
    pub objects_done: i64,
    pub objects_total: i64,
    pub bytes_done: i64,
    pub bytes_total: i64,
    pub failure: Option<String>,
    pub cancel_requested: bool,
    pub params: serde_json::Value,
    pub result: Option<serde_json::Value>,
    /// The node running it and until when its lease holds (ms).
    #[serde(skip)]
    pub claimed_by: Option<String>,
    #[serde(skip)]
    pub claimed_until: Option<i64>,
}

/// A replication definition as stored.
#[derive(Debug, Clone)]
pub struct Definition {
    pub name: String,
    pub id: String,
    pub description: String,
    pub payload: Vec<String>,
    pub enabled: bool,
    pub target: String,
    pub schedule: Option<Schedule>,
    pub next_due: Option<i64>,
    pub last_task: Option<String>,
    pub local_report: Option<String>,
    pub remote_report: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub start_ms: i64,
    pub period: Option<String>,
    pub count: Option<i64>,
}

/// One line of a transfer report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReportEntry {
    pub outcome: String,
    pub bucket: String,
    pub object: String,
    pub size: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn task_from_row(r: &AnyRow) -> Task {
    let json = |col: &str| {
        r.get::<Option<String>, _>(col)
            .and_then(|s| serde_json::from_str(&s).ok())
    };
    Task {
        uuid: r.get("uuid"),
        instance: r.get("instance"),
        kind: r.get("kind"),
        action_id: r.get("action_id"),
        node_ref: r.get("node_ref"),
        status: r.get("status"),
        created: r.get("created"),
        started: r.get("started"),
        ended: r.get("ended"),
        objects_done: r.get("objects_done"),
        objects_total: r.get("objects_total"),
        bytes_done: r.get("bytes_done"),
        bytes_total: r.get("bytes_total"),
        failure: r.get("failure"),
        cancel_requested: r.get::<i64, _>("cancel_requested") != 0,
        params: json("params").unwrap_or(serde_json::Value::Null),
        result: json("result"),
        claimed_by: r.get("claimed_by"),
        claimed_until: r.get("claimed_until"),
    }
}

fn definition_from_row(r: &AnyRow) -> Definition {
    let start: Option<i64> = r.get("schedule_start");
    Definition {
        name: r.get("name"),
        id: r.get("id"),
        description: r.get("description"),
        payload: serde_json::from_str(r.get::<&str, _>("payload")).unwrap_or_default(),
        enabled: r.get::<i64, _>("enabled") != 0,
        target: r.get("target"),
        schedule: start.map(|start_ms| Schedule {
            start_ms,
            period: r.get("interval_period"),
            count: r.get("interval_count"),
        }),
        next_due: r.get("next_due"),
        last_task: r.get("last_task"),
        local_report: r.get("local_report"),
        remote_report: r.get("remote_report"),
    }
}

impl MetaStore {
    // ---- tasks ---------------------------------------------------------------------------

    /// Creates a task, Pending.
    pub async fn create_task(
        &self,
        kind: &str,
        action_id: &str,
        node_ref: &str,
        params: &serde_json::Value,
    ) -> Result<Task> {
        let mut tx = self.write_tx().await?;
        let task = insert_task(&mut tx, kind, action_id, node_ref, params).await?;
        tx.commit().await?;
        Ok(task)
    }

    pub async fn get_task(&self, uuid: &str) -> Result<Option<Task>> {
        let row = sqlx::query("SELECT * FROM tasks WHERE uuid = $1")
            .bind(uuid)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(task_from_row))
    }

    pub async fn find_task(
        &self,
        kind: &str,
        action_id: &str,
        instance: i64,
    ) -> Result<Option<Task>> {
        let row =
            sqlx::query("SELECT * FROM tasks WHERE kind = $1 AND action_id = $2 AND instance = $3")
                .bind(kind)
                .bind(action_id)
                .bind(instance)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.as_ref().map(task_from_row))
    }

    /// Tasks that have not ended, oldest first.
    pub async fn active_tasks(&self) -> Result<Vec<Task>> {
        let rows = sqlx::query("SELECT * FROM tasks WHERE status IN ('Pending','Running','CancelRequested') ORDER BY instance")
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(task_from_row).collect())
    }

    /// Every task, newest first (bounded).
    pub async fn recent_tasks(&self, limit: i64) -> Result<Vec<Task>> {
        let rows = sqlx::query("SELECT * FROM tasks ORDER BY instance DESC LIMIT $1")
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(task_from_row).collect())
    }

    /// Moves a task to `to` if it is in one of `from` (compare-and-set). Returns whether it moved.
    pub async fn transition_task(
        &self,
        uuid: &str,
        from: &[&str],
        to: &str,
        failure: Option<&str>,
    ) -> Result<bool> {
        let ended =
            matches!(to, status::COMPLETED | status::FAILED | status::CANCELLED).then(now_ms);
        let started = (to == status::RUNNING).then(now_ms);
        let from_list = from
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(",");
        let done = sqlx::query(&format!(
            "UPDATE tasks SET status = $1, failure = COALESCE($2, failure), ended = COALESCE($3, ended),
             started = COALESCE(started, $4) WHERE uuid = $5 AND status IN ({from_list})"
        ))
        .bind(to)
        .bind(failure)
        .bind(ended)
        .bind(started)
        .bind(uuid)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks a task this node just moved to Running as its own for a lease (renewed by
    /// [`MetaStore::renew_task`] while it runs).
    pub async fn claim_task(&self, uuid: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tasks SET claimed_by = $1, claimed_until = $2
             WHERE uuid = $3 AND status IN ('Running','CancelRequested')
             AND (claimed_by IS NULL OR claimed_by = $1)",
        )
        .bind(self.node_id())
        .bind(now_ms() + self.lease_ms())
        .bind(uuid)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Extends this node's lease on a running task; false when it is no longer this node's.
    pub async fn renew_task(&self, uuid: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tasks SET claimed_until = $1
             WHERE uuid = $2 AND claimed_by = $3 AND status IN ('Running','CancelRequested')",
        )
        .bind(now_ms() + self.lease_ms())
        .bind(uuid)
        .bind(self.node_id())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Running tasks whose node stopped renewing their lease (it died); with `own`, also
    /// those an earlier run of this very node left.
    pub async fn lapsed_tasks(&self, own: bool) -> Result<Vec<Task>> {
        let rows = sqlx::query(
            "SELECT * FROM tasks WHERE status IN ('Running','CancelRequested')
             AND (claimed_until IS NULL OR claimed_until < $1 OR ($2 = 1 AND claimed_by = $3))
             ORDER BY instance",
        )
        .bind(now_ms())
        .bind(i64::from(own))
        .bind(self.node_id())
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(task_from_row).collect())
    }

    /// Takes over a lapsed task (compare-and-set on the claim [`MetaStore::lapsed_tasks`]
    /// saw), its progress counted again from zero since it runs again from the start.
    pub async fn adopt_task(&self, task: &Task) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tasks SET claimed_by = $1, claimed_until = $2, objects_done = 0, bytes_done = 0
             WHERE uuid = $3 AND status IN ('Running','CancelRequested')
             AND claimed_by IS NOT DISTINCT FROM $4 AND claimed_until IS NOT DISTINCT FROM $5",
        )
        .bind(self.node_id())
        .bind(now_ms() + self.lease_ms())
        .bind(&task.uuid)
        .bind(&task.claimed_by)
        .bind(task.claimed_until)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Asks a task to stop; it notices at its next check. Pending tasks end Cancelled at once.
    pub async fn request_cancel(&self, uuid: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE tasks SET cancel_requested = 1,
             status = CASE status WHEN 'Running' THEN 'CancelRequested' WHEN 'Pending' THEN 'Cancelled' ELSE status END,
             ended = CASE status WHEN 'Pending' THEN $1 ELSE ended END
             WHERE uuid = $2 AND status IN ('Pending','Running','CancelRequested')",
        )
        .bind(now_ms())
        .bind(uuid)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn set_task_totals(&self, uuid: &str, objects: i64, bytes: i64) -> Result<()> {
        sqlx::query("UPDATE tasks SET objects_total = $1, bytes_total = $2 WHERE uuid = $3")
            .bind(objects)
            .bind(bytes)
            .bind(uuid)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Adds to a task's progress and answers whether cancellation was requested.
    pub async fn add_task_progress(&self, uuid: &str, objects: i64, bytes: i64) -> Result<bool> {
        let cancel: Option<i64> = sqlx::query_scalar(
            "UPDATE tasks SET objects_done = objects_done + $1, bytes_done = bytes_done + $2 WHERE uuid = $3 RETURNING cancel_requested",
        )
        .bind(objects)
        .bind(bytes)
        .bind(uuid)
        .fetch_optional(self.pool())
        .await?;
        Ok(cancel.unwrap_or(0) != 0)
    }

    pub async fn set_task_result(&self, uuid: &str, result: &serde_json::Value) -> Result<()> {
        sqlx::query("UPDATE tasks SET result = $1 WHERE uuid = $2")
            .bind(result.to_string())
            .bind(uuid)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    // ---- definitions ---------------------------------------------------------------------

    pub async fn list_definitions(&self) -> Result<Vec<Definition>> {
        let rows = sqlx::query("SELECT * FROM replication_definitions ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(definition_from_row).collect())
    }

    pub async fn get_definition(&self, name: &str) -> Result<Option<Definition>> {
        let row = sqlx::query("SELECT * FROM replication_definitions WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(definition_from_row))
    }

    pub async fn get_definition_by_id(&self, id: &str) -> Result<Option<Definition>> {
        let row = sqlx::query("SELECT * FROM replication_definitions WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(definition_from_row))
    }

    /// Inserts or replaces (under `old_name`, which may differ when renaming) a definition.
    /// A taken name is a 400, as Alfresco.
    pub async fn save_definition(&self, old_name: Option<&str>, d: &Definition) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let taken: Option<String> =
            sqlx::query_scalar("SELECT name FROM replication_definitions WHERE name = $1")
                .bind(&d.name)
                .fetch_optional(&mut *tx)
                .await?;
        if taken.is_some() && old_name != Some(d.name.as_str()) {
            return Err(Error::bad_request(format!(
                "a replication definition named {:?} already exists",
                d.name
            )));
        }
        if let Some(old) = old_name {
            sqlx::query("DELETE FROM replication_definitions WHERE name = $1")
                .bind(old)
                .execute(&mut *tx)
                .await?;
        }
        let s = d.schedule.as_ref();
        sqlx::query(
            "INSERT INTO replication_definitions (name, id, description, payload, enabled, target, schedule_start,
             interval_period, interval_count, next_due, last_task, local_report, remote_report, created)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
        )
        .bind(&d.name)
        .bind(&d.id)
        .bind(&d.description)
        .bind(serde_json::to_string(&d.payload).unwrap_or_else(|_| "[]".into()))
        .bind(i64::from(d.enabled))
        .bind(&d.target)
        .bind(s.map(|s| s.start_ms))
        .bind(s.and_then(|s| s.period.clone()))
        .bind(s.and_then(|s| s.count))
        .bind(d.next_due)
        .bind(&d.last_task)
        .bind(&d.local_report)
        .bind(&d.remote_report)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_definition(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM replication_definitions WHERE name = $1")
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Starts a run of a definition: creates its task and records it as the last one, in one
    /// transaction. With `due` set this is a scheduled firing: it happens only if the
    /// definition's next due time is still `due` (so one due time fires once, whatever the
    /// number of processes or restarts) and moves it to `next_due`.
    pub async fn start_definition_run(
        &self,
        d: &Definition,
        kind: &str,
        params: &serde_json::Value,
        due: Option<(i64, Option<i64>)>,
    ) -> Result<Option<Task>> {
        let mut tx = self.write_tx().await?;
        if let Some((due, next)) = due {
            let moved = sqlx::query(
                "UPDATE replication_definitions SET next_due = $1 WHERE id = $2 AND next_due = $3",
            )
            .bind(next)
            .bind(&d.id)
            .bind(due)
            .execute(&mut *tx)
            .await?;
            if moved.rows_affected() == 0 {
                return Ok(None);
            }
        }
        let node_ref = definition_node_ref(&d.id);
        let task = insert_task(&mut tx, kind, &d.id, &node_ref, params).await?;
        sqlx::query("UPDATE replication_definitions SET last_task = $1 WHERE id = $2")
            .bind(&task.uuid)
            .bind(&d.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(task))
    }

    /// Skips a due time without running (the previous run is still going).
    pub async fn skip_due(&self, id: &str, due: i64, next: Option<i64>) -> Result<bool> {
        let moved = sqlx::query(
            "UPDATE replication_definitions SET next_due = $1 WHERE id = $2 AND next_due = $3",
        )
        .bind(next)
        .bind(id)
        .bind(due)
        .execute(self.pool())
        .await?;
        Ok(moved.rows_affected() > 0)
    }

    pub async fn set_definition_reports(&self, id: &str, local: &str, remote: &str) -> Result<()> {
        sqlx::query("UPDATE replication_definitions SET local_report = $1, remote_report = $2 WHERE id = $3")
            .bind(local)
            .bind(remote)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    // ---- transfer reports ----------------------------------------------------------------

    pub async fn create_report(
        &self,
        kind: &str,
        definition: &str,
        task: &str,
        target: &str,
    ) -> Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO transfer_reports (id, kind, definition, task, target, created) VALUES ($1,$2,$3,$4,$5,$6)")
            .bind(&id)
            .bind(kind)
            .bind(definition)
            .bind(task)
            .bind(target)
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        Ok(id)
    }

    pub async fn add_report_entries(&self, report: &str, entries: &[ReportEntry]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for e in entries {
            sqlx::query("INSERT INTO transfer_report_entries (report, outcome, bucket, object, size, detail) VALUES ($1,$2,$3,$4,$5,$6)")
                .bind(report)
                .bind(&e.outcome)
                .bind(&e.bucket)
                .bind(&e.object)
                .bind(e.size)
                .bind(&e.detail)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A report's header (kind, definition, task, target, created) and its entries.
    pub async fn get_report(
        &self,
        id: &str,
    ) -> Result<Option<(serde_json::Value, Vec<ReportEntry>)>> {
        let Some(head) = sqlx::query("SELECT * FROM transfer_reports WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
        else {
            return Ok(None);
        };
        let rows = sqlx::query("SELECT outcome, bucket, object, size, detail FROM transfer_report_entries WHERE report = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(self.pool())
            .await?;
        let entries = rows
            .iter()
            .map(|r| ReportEntry {
                outcome: r.get(0),
                bucket: r.get(1),
                object: r.get(2),
                size: r.get(3),
                detail: r.get(4),
            })
            .collect();
        let header = serde_json::json!({
            "id": id,
            "kind": head.get::<String, _>("kind"),
            "definition": head.get::<String, _>("definition"),
            "task": head.get::<String, _>("task"),
            "target": head.get::<String, _>("target"),
            "created": crate::model::object::format_time(&crate::model::object::from_millis(head.get("created"))),
        });
        Ok(Some((header, entries)))
    }

    /// The (bucket, name) of the object with this id (a payload nodeRef).
    pub async fn object_by_id(&self, id: &str) -> Result<Option<(String, String)>> {
        let row = sqlx::query("SELECT bucket, name FROM objects WHERE id = $1 LIMIT 1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Withdraws orders a cancelled run queued and has not sent yet; answers how many.
    pub async fn withdraw_queued_orders(&self, op_ids: &[String], to_site: &str) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let mut n = 0;
        for op in op_ids {
            let row = sqlx::query(
                "DELETE FROM outbox WHERE op_id = $1 AND to_site = $2 AND state = 'QUEUED' RETURNING bucket, object",
            )
            .bind(op)
            .bind(to_site)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = row {
                n += 1;
                sqlx::query("DELETE FROM replication_status WHERE bucket = $1 AND object = $2 AND site = $3 AND status = 'PENDING'")
                    .bind(r.get::<String, _>(0))
                    .bind(r.get::<Option<String>, _>(1))
                    .bind(to_site)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(n)
    }

    /// (count, bytes) of the READY objects under a prefix.
    pub async fn prefix_totals(&self, bucket: &str, prefix: &str) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM objects WHERE bucket = $1 AND status = 'READY'
             AND substr(name, 1, length($2)) = $2",
        )
        .bind(bucket)
        .bind(prefix)
        .fetch_one(self.pool())
        .await?;
        Ok((row.get(0), row.get(1)))
    }
}

/// The Alfresco-style node reference of a definition.
pub fn definition_node_ref(id: &str) -> String {
    format!("workspace://SpacesStore/{id}")
}

async fn insert_task(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    kind: &str,
    action_id: &str,
    node_ref: &str,
    params: &serde_json::Value,
) -> Result<Task> {
    let uuid = uuid::Uuid::new_v4().to_string();
    let row = sqlx::query(
        "INSERT INTO tasks (uuid, instance, kind, action_id, node_ref, status, created, params)
         VALUES ($1, (SELECT COALESCE(MAX(instance), 0) + 1 FROM tasks), $2, $3, $4, 'Pending', $5, $6) RETURNING *",
    )
    .bind(&uuid)
    .bind(kind)
    .bind(action_id)
    .bind(node_ref)
    .bind(now_ms())
    .bind(params.to_string())
    .fetch_one(&mut **tx)
    .await?;
    Ok(task_from_row(&row))
}
