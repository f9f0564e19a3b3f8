//! Alfresco's replication-definitions and running-actions API, under `/api` and
//! `/alfresco/service/api`. Running actions are a view of the task engine, so every task type
//! shows. Errors in the web-script envelope `{"status":{code,name,description},"message",...}`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engines::definitions::{first_due, PayloadEntry, PERIODS, RUN_KIND};
use crate::error::{Error, Kind};
use crate::meta::replication::now_ms;
use crate::meta::tasks::{status, Definition, Schedule, Task};
use crate::model::object::{format_time, from_millis, parse_time};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    let api = Router::new()
        .route(
            "/replication-definitions",
            get(list_definitions).post(create_definition),
        )
        .route(
            "/replication-definition/{name}",
            get(get_definition)
                .put(update_definition)
                .delete(delete_definition),
        )
        .route("/running-actions", get(list_running).post(run_by_node_ref))
        .route("/running_actions", get(list_running).post(run_by_node_ref))
        .route(
            "/running-replication-actions",
            get(list_running_replications).post(run_by_name),
        )
        .route(
            "/running-replicaton-actions",
            get(list_running_replications).post(run_by_name),
        )
        .route(
            "/running-action/{id}",
            get(get_running).delete(cancel_running),
        )
        .route("/transfer-reports/{id}", get(get_report))
        // The seed's paths also with a trailing slash.
        .route(
            "/replication-definitions/",
            get(list_definitions).post(create_definition),
        )
        .route(
            "/replication-definition/{name}/",
            get(get_definition)
                .put(update_definition)
                .delete(delete_definition),
        )
        .route("/running-actions/", get(list_running).post(run_by_node_ref))
        .route(
            "/running-replication-actions/",
            get(list_running_replications).post(run_by_name),
        )
        .route(
            "/running-action/{id}/",
            get(get_running).delete(cancel_running),
        );
    Router::new()
        .nest("/api", api.clone())
        .nest("/alfresco/service/api", api)
}

/// An error in Alfresco's web-script envelope.
pub struct AlfrescoError(Error);

type Result<T> = std::result::Result<T, AlfrescoError>;

impl From<Error> for AlfrescoError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for AlfrescoError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = json!({
            "status": { "code": status.as_u16(), "name": status.canonical_reason().unwrap_or(""), "description": self.0.message },
            "message": self.0.message,
            "exception": "",
            "callstack": [],
            "server": "mirrorgate",
            "time": format_time(&chrono::Utc::now()),
        });
        let mut resp = (status, Json(body)).into_response();
        resp.headers_mut().insert(
            crate::http::common::ERROR,
            crate::http::common::text_header(&self.0.message),
        );
        resp
    }
}

fn iso(ms: Option<i64>) -> Value {
    ms.map(|t| json!({ "iso8601": format_time(&from_millis(t)) }))
        .unwrap_or(Value::Null)
}

/// `<type>=<actionId>=<instance>`, Alfresco's running-action tracking id.
fn tracking_id(t: &Task) -> String {
    format!("{}={}={}", t.kind, t.action_id, t.instance)
}

fn running_action(t: &Task) -> Value {
    json!({
        "actionID": t.action_id,
        "actionType": t.kind,
        "actionInstance": t.instance.to_string(),
        "actionNodeRef": t.node_ref,
        "startedAt": iso(t.started),
        "cancelRequested": t.cancel_requested,
        "details": format!("/api/running-action/{}", tracking_id(t)),
        "taskUuid": t.uuid,
        "status": t.status,
        "progress": {
            "objectsDone": t.objects_done, "objectsTotal": t.objects_total,
            "bytesDone": t.bytes_done, "bytesTotal": t.bytes_total,
        },
        "failureMessage": t.failure,
        "result": t.result,
        "scheduledFor": t.params.get("scheduled").and_then(Value::as_i64).map(|ms| format_time(&from_millis(ms))),
    })
}

// ---- definitions -------------------------------------------------------------------------

async fn last_task(state: &AppState, d: &Definition) -> crate::error::Result<Option<Task>> {
    match &d.last_task {
        Some(uuid) => state.meta.get_task(uuid).await,
        None => Ok(None),
    }
}

fn status_of(task: &Option<Task>) -> String {
    task.as_ref()
        .map(|t| t.status.clone())
        .unwrap_or_else(|| status::NEW.to_owned())
}

fn payload_json(d: &Definition) -> Vec<Value> {
    d.payload
        .iter()
        .filter_map(|p| PayloadEntry::parse(p).ok().map(|e| (p, e)))
        .map(|(p, e)| {
            let name = e.path.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_owned();
            json!({ "nodeRef": p, "isFolder": e.is_folder(), "name": if name.is_empty() { e.bucket.clone() } else { name }, "path": format!("/{}/{}", e.bucket, e.path) })
        })
        .collect()
}

fn schedule_json(s: &Option<Schedule>) -> Value {
    match s {
        None => Value::Null,
        Some(s) => {
            json!({ "start": iso(Some(s.start_ms)), "intervalPeriod": s.period, "intervalCount": s.count })
        }
    }
}

async fn detail(state: &AppState, d: &Definition) -> crate::error::Result<Value> {
    let task = last_task(state, d).await?;
    let active = task
        .as_ref()
        .filter(|t| status::ACTIVE.contains(&t.status.as_str()));
    Ok(json!({
        "name": d.name,
        "nodeRef": crate::meta::tasks::definition_node_ref(&d.id),
        "description": d.description,
        "status": status_of(&task),
        "startedAt": iso(task.as_ref().and_then(|t| t.started)),
        "endedAt": iso(task.as_ref().and_then(|t| t.ended)),
        "failureMessage": task.as_ref().filter(|t| t.status == status::FAILED).and_then(|t| t.failure.clone()),
        "executionDetails": active.map(|t| format!("/api/running-action/{}", tracking_id(t))),
        "payload": payload_json(d),
        "transferLocalReport": d.local_report,
        "transferRemoteReport": d.remote_report,
        "enabled": d.enabled,
        "targetName": d.target,
        "schedule": schedule_json(&d.schedule),
    }))
}

#[derive(Deserialize)]
struct SortQuery {
    sort: Option<String>,
}

async fn list_definitions(
    State(state): State<AppState>,
    Query(q): Query<SortQuery>,
) -> Result<Json<Value>> {
    let mut rows = Vec::new();
    for d in state.meta.list_definitions().await? {
        let task = last_task(&state, &d).await?;
        rows.push((d, task));
    }
    match q.sort.as_deref().unwrap_or("name") {
        "name" => rows.sort_by(|a, b| a.0.name.cmp(&b.0.name)),
        "status" => rows.sort_by(|a, b| {
            status_of(&a.1)
                .cmp(&status_of(&b.1))
                .then(a.0.name.cmp(&b.0.name))
        }),
        // Most recent run first, never-run last.
        "lastRun" => rows.sort_by_key(|(d, t)| {
            (
                std::cmp::Reverse(t.as_ref().and_then(|t| t.started)),
                d.name.clone(),
            )
        }),
        other => {
            return Err(Error::bad_request(format!(
                "sort must be name, status or lastRun, not {other:?}"
            ))
            .into())
        }
    }
    let data: Vec<Value> = rows
        .iter()
        .map(|(d, t)| json!({
            "name": d.name, "nodeRef": crate::meta::tasks::definition_node_ref(&d.id), "status": status_of(t), "startedAt": iso(t.as_ref().and_then(|t| t.started)),
            "enabled": d.enabled, "details": format!("/api/replication-definition/{}", d.name),
        }))
        .collect();
    Ok(Json(json!({ "data": data })))
}

/// The editable fields of a request (`ReplicationDefinitionRequest`).
struct Request {
    name: Option<String>,
    description: Option<String>,
    payload: Option<Vec<String>>,
    enabled: Option<bool>,
    target: Option<String>,
    schedule: Option<Schedule>,
}

fn text_field(v: &Value, field: &str) -> crate::error::Result<Option<String>> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
        Some(_) => Err(Error::bad_request(format!("{field} must be a string"))),
    }
}

fn parse_date(v: &Value) -> Option<i64> {
    let s = v.get("iso8601").unwrap_or(v).as_str()?;
    parse_time(s)
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        })
        .map(|t| t.timestamp_millis())
}

fn parse_schedule(v: &Value) -> crate::error::Result<Option<Schedule>> {
    let Some(s) = v.get("schedule").filter(|s| !s.is_null()) else {
        return Ok(None);
    };
    let period = text_field(s, "intervalPeriod")?;
    if let Some(p) = &period {
        if !PERIODS.contains(&p.as_str()) {
            return Err(Error::bad_request(format!(
                "intervalPeriod must be one of {PERIODS:?}"
            )));
        }
    }
    let count = match s.get("intervalCount") {
        None | Some(Value::Null) => None,
        Some(c) => Some(
            c.as_i64()
                .filter(|c| *c > 0)
                .ok_or_else(|| Error::bad_request("intervalCount must be a positive integer"))?,
        ),
    };
    if period.is_some() != count.is_some() {
        return Err(Error::bad_request(
            "intervalPeriod and intervalCount go together",
        ));
    }
    let start_ms = match s.get("start").filter(|v| !v.is_null()) {
        Some(v) => parse_date(v)
            .ok_or_else(|| Error::bad_request("schedule start must be an ISO-8601 date"))?,
        // An interval without a start starts at midnight today.
        None => chrono::Utc::now()
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
            .timestamp_millis(),
    };
    Ok(Some(Schedule {
        start_ms,
        period,
        count,
    }))
}

fn parse_request(body: &[u8]) -> crate::error::Result<Request> {
    let v: Value = serde_json::from_slice(body)?;
    if !v.is_object() {
        return Err(Error::bad_request("the body must be a JSON object"));
    }
    let payload = match v.get("payload") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|i| {
                    let s = i
                        .as_str()
                        .or_else(|| i.get("nodeRef").and_then(Value::as_str))
                        .ok_or_else(|| Error::bad_request("payload entries are strings"))?;
                    if s.starts_with(NODE_REF_PREFIX) {
                        return Ok(s.to_owned());
                    }
                    PayloadEntry::parse(s).map(|_| s.to_owned())
                })
                .collect::<crate::error::Result<Vec<_>>>()?,
        ),
        Some(_) => return Err(Error::bad_request("payload must be an array")),
    };
    let enabled = match v.get("enabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(Error::bad_request("enabled must be a boolean")),
    };
    Ok(Request {
        name: text_field(&v, "name")?,
        description: text_field(&v, "description")?,
        payload,
        enabled,
        target: text_field(&v, "targetName")?,
        schedule: parse_schedule(&v)?,
    })
}

/// Payload entries in the seed's form, `workspace://SpacesStore/<id>`, name the object whose
/// id (its CCS id at this site) is `<id>`: they are stored as its `bucket/key`.
async fn resolve_payload(state: &AppState, r: &mut Request) -> crate::error::Result<()> {
    let Some(payload) = r.payload.as_mut() else {
        return Ok(());
    };
    for entry in payload.iter_mut() {
        if let Some(id) = entry.strip_prefix(NODE_REF_PREFIX) {
            let (bucket, key) = state.meta.object_by_id(id).await?.ok_or_else(|| {
                Error::bad_request(format!("payload entry {entry:?}: no object with id {id:?}"))
            })?;
            *entry = format!("{bucket}/{key}");
        }
    }
    Ok(())
}

const NODE_REF_PREFIX: &str = "workspace://SpacesStore/";

/// `targetName` must be a site of the topology (not this one, not DELETED).
async fn check_target(state: &AppState, target: &Option<String>) -> crate::error::Result<()> {
    match target {
        Some(t) if !state.topology.is_peer_site(t).await? => Err(Error::bad_request(format!(
            "Unable to find transfer target {t:?}: targetName must be a site of the topology"
        ))),
        _ => Ok(()),
    }
}

fn with_due(mut d: Definition) -> Definition {
    d.next_due = d.schedule.as_ref().and_then(|s| first_due(s, now_ms()));
    d
}

async fn create_definition(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>> {
    let mut r = parse_request(&body)?;
    resolve_payload(&state, &mut r).await?;
    check_target(&state, &r.target).await?;
    let name = r
        .name
        .ok_or_else(|| Error::bad_request("name is required"))?;
    let description = r
        .description
        .ok_or_else(|| Error::bad_request("description is required"))?;
    let d = with_due(Definition {
        name,
        id: uuid::Uuid::new_v4().to_string(),
        description,
        payload: r.payload.unwrap_or_default(),
        enabled: r.enabled.unwrap_or(true),
        target: r.target.unwrap_or_default(),
        schedule: r.schedule,
        next_due: None,
        last_task: None,
        local_report: None,
        remote_report: None,
    });
    state.meta.save_definition(None, &d).await?;
    Ok(Json(json!({ "data": detail(&state, &d).await? })))
}

async fn find(state: &AppState, name: &str) -> crate::error::Result<Definition> {
    state
        .meta
        .get_definition(name)
        .await?
        .ok_or_else(|| Error::not_found(format!("no replication definition named {name:?}")))
}

async fn get_definition(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    let d = find(&state, &name).await?;
    Ok(Json(json!({ "data": detail(&state, &d).await? })))
}

/// PUT: only the fields sent change, except the schedule, which a PUT without one clears.
async fn update_definition(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let old = find(&state, &name).await?;
    let mut r = parse_request(&body)?;
    resolve_payload(&state, &mut r).await?;
    check_target(&state, &r.target).await?;
    let d = with_due(Definition {
        name: r.name.unwrap_or_else(|| old.name.clone()),
        description: r.description.unwrap_or_else(|| old.description.clone()),
        payload: r.payload.unwrap_or_else(|| old.payload.clone()),
        enabled: r.enabled.unwrap_or(old.enabled),
        target: r.target.unwrap_or_else(|| old.target.clone()),
        schedule: r.schedule,
        ..old.clone()
    });
    state.meta.save_definition(Some(&old.name), &d).await?;
    Ok(Json(json!({ "data": detail(&state, &d).await? })))
}

async fn delete_definition(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    if !state.meta.delete_definition(&name).await? {
        return Err(Error::not_found(format!("no replication definition named {name:?}")).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---- running actions ---------------------------------------------------------------------

/// Starts a run of a definition now.
async fn start_run(state: &AppState, d: &Definition) -> crate::error::Result<Task> {
    if !d.enabled {
        return Err(Error::bad_request(format!(
            "replication definition {:?} is disabled",
            d.name
        )));
    }
    if crate::engines::definitions::scheduler::still_running(&state.jobs, d.last_task.as_deref())
        .await?
    {
        return Err(Error::conflict(format!(
            "replication definition {:?} is already running",
            d.name
        )));
    }
    let params = json!({ "definition": d.id });
    let task = state
        .meta
        .start_definition_run(d, RUN_KIND, &params, None)
        .await?
        .ok_or_else(|| Error::internal("run not started"))?;
    state.tasks.start(task.clone());
    Ok(task)
}

/// A form (`field=value`) or JSON body field.
fn body_field(headers: &HeaderMap, body: &[u8], field: &str) -> Option<String> {
    let is_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"));
    let value = if is_json || body.first() == Some(&b'{') {
        serde_json::from_slice::<Value>(body)
            .ok()?
            .get(field)?
            .as_str()?
            .to_owned()
    } else {
        form_urlencoded_field(body, field)?
    };
    Some(value).filter(|v| !v.is_empty())
}

fn form_urlencoded_field(body: &[u8], field: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    pairs.into_iter().find(|(k, _)| k == field).map(|(_, v)| v)
}

async fn run_by_node_ref(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>> {
    let node_ref = body_field(&headers, &body, "nodeRef")
        .ok_or_else(|| Error::bad_request("nodeRef is required"))?;
    let id = node_ref.rsplit('/').next().unwrap_or_default();
    let d = state
        .meta
        .get_definition_by_id(id)
        .await?
        .ok_or_else(|| Error::not_found(format!("no action with nodeRef {node_ref:?}")))?;
    let task = start_run(&state, &d).await?;
    Ok(Json(json!({ "data": running_action(&task) })))
}

async fn run_by_name(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>> {
    let name = body_field(&headers, &body, "name")
        .ok_or_else(|| Error::bad_request("name is required"))?;
    let d = find(&state, &name).await?;
    let task = start_run(&state, &d).await?;
    Ok(Json(json!({ "data": running_action(&task) })))
}

#[derive(Deserialize)]
struct RunningQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "nodeRef")]
    node_ref: Option<String>,
    name: Option<String>,
    /// mirrorgate extension: also list ended tasks (the newest 1000).
    #[serde(default)]
    all: bool,
}

async fn listed_tasks(state: &AppState, all: bool) -> crate::error::Result<Vec<Task>> {
    if all {
        state.meta.recent_tasks(1000).await
    } else {
        state.meta.active_tasks().await
    }
}

async fn list_running(
    State(state): State<AppState>,
    Query(q): Query<RunningQuery>,
) -> Result<Json<Value>> {
    let tasks = listed_tasks(&state, q.all).await?;
    let data: Vec<Value> = tasks
        .iter()
        .filter(|t| q.kind.as_ref().is_none_or(|k| &t.kind == k))
        .filter(|t| q.node_ref.as_ref().is_none_or(|n| &t.node_ref == n))
        .map(running_action)
        .collect();
    Ok(Json(json!({ "data": data })))
}

async fn list_running_replications(
    State(state): State<AppState>,
    Query(q): Query<RunningQuery>,
) -> Result<Json<Value>> {
    let only = match &q.name {
        Some(name) => Some(find(&state, name).await?.id),
        None => None,
    };
    let tasks = listed_tasks(&state, q.all).await?;
    let data: Vec<Value> = tasks
        .iter()
        .filter(|t| t.kind == RUN_KIND && only.as_ref().is_none_or(|id| &t.action_id == id))
        .map(running_action)
        .collect();
    Ok(Json(json!({ "data": data })))
}

/// A task by tracking id (`type=actionId=instance`, also with `-`) or by its uuid.
async fn find_task(state: &AppState, id: &str) -> crate::error::Result<Task> {
    let id = id.trim_end_matches('/');
    let by_tracking = || -> Option<(String, String, i64)> {
        if let Some((kind, rest)) = id.split_once('=') {
            let (action, instance) = rest.rsplit_once('=')?;
            return Some((kind.to_owned(), action.to_owned(), instance.parse().ok()?));
        }
        let (kind, rest) = id.split_once('-')?;
        let (action, instance) = rest.rsplit_once('-')?;
        Some((kind.to_owned(), action.to_owned(), instance.parse().ok()?))
    };
    if let Some((kind, action, instance)) = by_tracking() {
        if let Some(t) = state.meta.find_task(&kind, &action, instance).await? {
            return Ok(t);
        }
    }
    state
        .meta
        .get_task(id)
        .await?
        .ok_or_else(|| Error::not_found(format!("no running action {id:?}")))
}

async fn get_running(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>> {
    let t = find_task(&state, &id).await?;
    Ok(Json(json!({ "data": running_action(&t) })))
}

async fn cancel_running(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let t = find_task(&state, &id).await?;
    if !state.tasks.cancel(&t.uuid).await? {
        return Err(Error::new(
            Kind::NotFound,
            crate::error::Origin::Client,
            format!("action {id:?} is not running"),
        )
        .into());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn get_report(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>> {
    let (mut header, entries) = state
        .meta
        .get_report(&id)
        .await?
        .ok_or_else(|| Error::not_found(format!("no transfer report {id:?}")))?;
    let count = |o: &str| entries.iter().filter(|e| e.outcome == o).count();
    header["summary"] = json!({ "sent": count("sent"), "skipped": count("skipped"), "failed": count("failed"), "received": count("received") });
    header["entries"] = json!(entries);
    Ok(Json(json!({ "data": header })))
}
