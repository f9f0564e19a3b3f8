//! Acronis DR v2 under `/api/dr/v2`: sites, servers (cursor pagination), and the failover
//! actions answering 202 `{task_uuid}`. Errors in the seed's envelope
//! `{"error":{"code","message","context","debug","domain"}}`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use data_encoding::BASE64URL_NOPAD;
use futures::StreamExt;
use http::HeaderMap;
use http::StatusCode;
use serde_json::{json, Value};

use crate::engines::dr::actions::{PROD_KIND, STOP_KIND, TEST_KIND};
use crate::engines::dr::{self, status, DrSite, Server};
use crate::error::{Error, Kind};
use crate::meta::tasks::status as task_status;
use crate::meta::TopologyStatus;
use crate::model::object::{format_time, from_millis};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/dr/v2/sites", get(list_sites))
        .route("/api/dr/v2/sites/{uuid}", get(get_site))
        .route("/api/dr/v2/servers", get(list_servers))
        .route(
            "/api/dr/v2/servers/{target}",
            get(get_server).post(server_action),
        )
        .route("/api/dr/v2/servers/{target}/rpo", get(get_rpo))
        .route("/api/dr/v2/tasks/{target}", get(get_task).post(task_action))
}

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 50;

// ---- errors ------------------------------------------------------------------------------

/// An error in the DR envelope.
#[derive(Debug)]
pub struct DrError {
    status: StatusCode,
    code: &'static str,
    message: String,
    context: Value,
}

type Result<T> = std::result::Result<T, DrError>;

impl DrError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            context: json!({}),
        }
    }
    fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", m)
    }
    fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "EntityNotFound", m)
    }
    fn not_ready(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ServerNotReady", m)
    }
    fn unavailable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", m)
    }
    fn busy(server: &str, task: &str) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "ResourceBusy",
            format!("Resource [{server}] is busy with other tasks [{task}] that are currently in progress. Try again later."),
        );
        e.context = json!({ "resource_id": server, "task_uuids": [task] });
        e
    }
}

impl From<Error> for DrError {
    fn from(e: Error) -> Self {
        let code = match e.kind {
            Kind::BadRequest => "BadRequest",
            Kind::NotFound => "EntityNotFound",
            Kind::Conflict => "Conflict",
            Kind::Unavailable => "ServiceUnavailable",
            _ => "InternalError",
        };
        Self::new(e.status(), code, e.message)
    }
}

impl IntoResponse for DrError {
    fn into_response(self) -> Response {
        let body = json!({ "error": {
            "code": self.code, "message": self.message, "context": self.context,
            "debug": { "msg": self.message }, "domain": "DisasterRecovery",
        }});
        let mut resp = (self.status, Json(body)).into_response();
        resp.headers_mut().insert(
            crate::http::common::ERROR,
            crate::http::common::text_header(&self.message),
        );
        resp
    }
}

// ---- pagination --------------------------------------------------------------------------

/// A page request: the first page with filters, or a cursor that carries them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct PageRequest {
    /// "after" or "before" the key; absent for the first page.
    #[serde(skip_serializing_if = "Option::is_none")]
    dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    limit: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    filters: Vec<(String, String)>,
}

impl PageRequest {
    fn cursor(&self, dir: &str, key: &str) -> String {
        let next = PageRequest {
            dir: Some(dir.into()),
            key: Some(key.into()),
            ..self.clone()
        };
        BASE64URL_NOPAD.encode(serde_json::to_string(&next).unwrap_or_default().as_bytes())
    }

    fn filter(&self, name: &str) -> Vec<&str> {
        self.filters
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

fn query_pairs(raw: &Option<String>) -> Result<Vec<(String, String)>> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| DrError::bad_request(format!("query: {e}")))
}

/// Parses limit/after/before; the other parameters are the filters (`allowed`). A cursor
/// ignores every other parameter except `limit`, which is mutually exclusive with it.
fn page_request(pairs: Vec<(String, String)>, allowed: &[&str]) -> Result<PageRequest> {
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (after, before, limit) = (get("after"), get("before"), get("limit"));
    if after.is_some() as u8 + before.is_some() as u8 + limit.is_some() as u8 > 1 {
        return Err(DrError::bad_request(
            "limit, after and before are mutually exclusive",
        ));
    }
    if let Some(cursor) = after.or(before) {
        let bytes = BASE64URL_NOPAD
            .decode(cursor.as_bytes())
            .map_err(|_| DrError::bad_request("invalid cursor"))?;
        return serde_json::from_slice::<PageRequest>(&bytes)
            .ok()
            .filter(|p| {
                p.key.is_some()
                    && matches!(p.dir.as_deref(), Some("after" | "before"))
                    && (1..=MAX_LIMIT).contains(&p.limit)
            })
            .ok_or_else(|| DrError::bad_request("invalid cursor"));
    }
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                DrError::bad_request(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
            })?,
    };
    let mut filters = Vec::new();
    for (k, v) in pairs {
        if k == "limit" {
            continue;
        }
        if allowed.contains(&k.as_str()) {
            filters.push((k, v));
        } else {
            return Err(DrError::bad_request(format!(
                "unknown query parameter {k:?}"
            )));
        }
    }
    Ok(PageRequest {
        dir: None,
        key: None,
        limit,
        filters,
    })
}

/// One page of `items` (sorted by key) and the `paging` object.
fn paginate<T>(items: Vec<T>, key: impl Fn(&T) -> &str, req: &PageRequest) -> (Vec<T>, Value) {
    let total = items.len();
    let (start, end) = match (req.dir.as_deref(), req.key.as_deref()) {
        (Some("after"), Some(k)) => {
            let s = items.partition_point(|i| key(i) <= k);
            (s, (s + req.limit).min(total))
        }
        (Some("before"), Some(k)) => {
            let e = items.partition_point(|i| key(i) < k);
            (e.saturating_sub(req.limit), e)
        }
        _ => (0, req.limit.min(total)),
    };
    let mut cursors = serde_json::Map::new();
    if end < total && end > start {
        cursors.insert(
            "after".into(),
            json!(req.cursor("after", key(&items[end - 1]))),
        );
    }
    if start > 0 && end > start {
        cursors.insert(
            "before".into(),
            json!(req.cursor("before", key(&items[start]))),
        );
    }
    let page: Vec<T> = items.into_iter().skip(start).take(end - start).collect();
    let paging = json!({ "count": page.len(), "total": total, "cursors": cursors });
    (page, paging)
}

// ---- sites -------------------------------------------------------------------------------

fn flag(pairs: &[(String, String)], name: &str) -> Result<bool> {
    match pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
    {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(DrError::bad_request(format!(
            "{name} must be true or false, not {other:?}"
        ))),
    }
}

async fn site_json(state: &AppState, site: &DrSite) -> Result<Value> {
    let uuid = dr::site_uuid(&site.topology.id);
    let deleted = site.topology.status == TopologyStatus::Deleted;
    let mut issues = Vec::new();
    let readiness = match site.topology.status {
        TopologyStatus::Down => {
            issues.push(json!({ "domain": "DisasterRecovery", "target": uuid, "severity": "ERROR",
                "error": { "code": "SiteNotReady", "domain": "DisasterRecovery", "message": "The site is DOWN in the topology (failed over, or unreachable)." } }));
            "ERROR"
        }
        TopologyStatus::Unknown => "WARNING",
        _ if site.is_self => worst_rpo(state, &site.topology.id).await?,
        _ => "OK",
    };
    Ok(json!({
        "uuid": uuid,
        "tenant_uuid": dr::tenant_uuid(),
        "default": site.is_self,
        "status": if deleted { "DEPROVISIONING" } else { "PROVISIONED" },
        "failover_readiness": readiness,
        "deleted_at": Value::Null,
        "name": site.topology.name,
        "site_id": site.topology.id,
        "url": site.topology.uri,
        "_links": [{ "rel": "DR_SITE_SERVERS", "type": "application/json", "href": format!("{}/api/dr/v2/servers", state.public_url) }],
        "_issues": issues,
    }))
}

/// OK, WARNING or ERROR from the worst RPO of this site's recovery servers.
async fn worst_rpo(state: &AppState, site: &str) -> Result<&'static str> {
    let mut worst = "OK";
    for server in dr::servers(&state.jobs)
        .await?
        .iter()
        .filter(|s| s.recovery.is_some() && s.primary.topology.id == site)
    {
        match dr::rpo(&state.jobs, server).await?["status"].as_str() {
            Some("WARNING") if worst == "OK" => worst = "WARNING",
            Some("ERROR" | "CRITICAL") => worst = "ERROR",
            _ => {}
        }
    }
    Ok(worst)
}

async fn list_sites(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Json<Value>> {
    let req = page_request(query_pairs(&raw)?, &["allow_deleted"])?;
    let with_deleted = flag(&req.filters, "allow_deleted")?;
    let mut sites = dr::sites(&state.jobs, with_deleted).await?;
    sites.sort_by_key(|s| dr::site_uuid(&s.topology.id));
    let keyed: Vec<(String, DrSite)> = sites
        .into_iter()
        .map(|s| (dr::site_uuid(&s.topology.id), s))
        .collect();
    let (page, paging) = paginate(keyed, |(k, _)| k.as_str(), &req);
    let mut items = Vec::new();
    for (_, site) in &page {
        items.push(site_json(&state, site).await?);
    }
    Ok(Json(json!({ "items": items, "paging": paging })))
}

async fn get_site(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let with_deleted = flag(&query_pairs(&raw)?, "allow_deleted")?;
    let site = dr::sites(&state.jobs, with_deleted)
        .await?
        .into_iter()
        .find(|s| dr::site_uuid(&s.topology.id) == uuid)
        .ok_or_else(|| DrError::not_found(format!("Site [{uuid}] was not found.")))?;
    Ok(Json(site_json(&state, &site).await?))
}

// ---- servers -----------------------------------------------------------------------------

const ACTIONS: [(&str, &str); 3] = [
    ("start_failover_prod", "DR_CLOUD_SERVER_START_FAILOVER_PROD"),
    ("start_failover_test", "DR_CLOUD_SERVER_START_FAILOVER_TEST"),
    ("stop_failover", "DR_CLOUD_SERVER_STOP_FAILOVER"),
];

/// The statuses an action may start from.
fn allowed_from(action: &str) -> &'static [&'static str] {
    match action {
        "start_failover_prod" => &[status::STAND_BY],
        "start_failover_test" => &[status::STAND_BY],
        _ => &[status::FAILOVER_TEST, status::FAILOVER_PROD],
    }
}

/// The server's status, and the uuid of the task running on it, if any.
async fn live_state(
    state: &AppState,
    uuid: &str,
) -> Result<(String, Option<String>, crate::meta::dr::ServerState)> {
    let stored = state.meta.server_state(uuid).await?;
    let status = stored
        .status
        .clone()
        .unwrap_or_else(|| status::STAND_BY.to_owned());
    let running = match &stored.task_uuid {
        Some(t) => state
            .meta
            .get_task(t)
            .await?
            .filter(|t| task_status::ACTIVE.contains(&t.status.as_str()))
            .map(|t| t.uuid),
        None => None,
    };
    Ok((status, running, stored))
}

fn issue(server: &str, link: &str, code: &str, message: &str, context: Value) -> Value {
    json!({ "domain": "DisasterRecovery", "link": link, "target": server, "severity": "ERROR",
            "error": { "code": code, "context": context, "domain": "DisasterRecovery", "message": message } })
}

/// The operator's credential, forwarded with requests to the owner site.
fn authorization(headers: &HeaderMap) -> Option<String> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Whether the request was forwarded by another site (answer from this site's own state).
fn forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(dr::FORWARDED)
}

/// A server as its owner site answers it; when the owner cannot be reached, this site's view
/// with an `OwnerUnreachable` issue (its status may be stale).
async fn server_view(state: &AppState, s: &Server, headers: &HeaderMap) -> Result<Value> {
    let owner = s.owner();
    if owner.is_self || forwarded(headers) {
        return server_json(state, s, headers).await;
    }
    let auth = authorization(headers);
    let path = format!("/api/dr/v2/servers/{}", s.uuid);
    let why = match dr::forward(
        &state.jobs,
        &owner.topology,
        reqwest::Method::GET,
        &path,
        auth.as_deref(),
        None,
    )
    .await
    {
        Ok((200, v)) if v.get("uuid").is_some() => return Ok(v),
        Ok((code, v)) => format!("the owner site answered {code}: {v}"),
        Err(e) => e.message,
    };
    let mut local = server_json(state, s, headers).await?;
    if let Some(i) = local["_issues"].as_array_mut() {
        i.push(json!({ "domain": "DisasterRecovery", "target": s.uuid, "severity": "WARNING",
        "error": { "code": "OwnerUnreachable", "domain": "DisasterRecovery", "context": { "owner_site": owner.topology.id },
        "message": format!("The state of this server is kept by site {}, which cannot be reached ({why}); this is the last state known here and actions are refused until it answers.", owner.topology.id) } }));
    }
    Ok(local)
}

async fn server_json(state: &AppState, s: &Server, headers: &HeaderMap) -> Result<Value> {
    let (status, running, stored) = live_state(state, &s.uuid).await?;
    let created = match stored.created {
        Some(c) => c,
        None => state
            .meta
            .server_state_or_create(&s.uuid)
            .await?
            .created
            .unwrap_or_else(crate::meta::replication::now_ms),
    };
    let (mut links, mut issues) = (Vec::new(), Vec::new());
    for (action, rel) in ACTIONS {
        if s.recovery.is_none() {
            issues.push(issue(
                &s.uuid,
                rel,
                "ServerNotReady",
                "A primary server does not fail over: use one of its recovery servers.",
                json!({}),
            ));
        } else if let Some(task) = &running {
            issues.push(issue(
                &s.uuid,
                rel,
                "ResourceBusy",
                "The resource is busy, another task is currently in progress. Try again later.",
                json!({ "resource_id": s.uuid, "task_uuids": [task] }),
            ));
        } else if !allowed_from(action).contains(&status.as_str()) {
            issues.push(issue(
                &s.uuid,
                rel,
                "ServerNotReady",
                &format!("Not possible while the server is {status}."),
                json!({}),
            ));
        } else {
            links.push(json!({ "rel": rel, "type": "application/json", "href": format!("{}/api/dr/v2/servers/{}:{action}", state.public_url, s.uuid) }));
        }
    }
    if stored.test_ok == Some(false) {
        issues.push(
            json!({ "domain": "DisasterRecovery", "target": s.uuid, "severity": "ERROR",
            "error": { "code": "TestFailoverFoundDifferences", "domain": "DisasterRecovery",
                "context": { "task_uuid": stored.test_task },
                "message": stored.test_summary.clone().unwrap_or_default() } }),
        );
    }
    let primary = &s.primary.topology.id;
    let name = match &s.recovery {
        Some(r) => format!("{primary} on {}", r.topology.id),
        None => primary.clone(),
    };
    let recovery = s.recovery.as_ref().map(|r| {
        let mut rec = json!({ "resource_id": dr::primary_uuid(primary), "primary_site": primary, "recovery_site": r.topology.id });
        if status == status::FAILOVER_PROD {
            rec["active_failover"] = json!({ "id": stored.task_uuid });
        }
        if let Some(start) = stored.test_start {
            rec["test_failover"] = json!({ "last_start": format_time(&from_millis(start)), "last_task_uuid": stored.test_task,
                "ok": stored.test_ok, "summary": stored.test_summary });
        }
        rec
    });
    Ok(json!({
        "uuid": s.uuid,
        "site_uuid": dr::site_uuid(&s.site().topology.id),
        "name": name,
        "description": match &s.recovery {
            Some(r) => format!("The copy of site {primary} held by site {}", r.topology.id),
            None => format!("Site {primary}"),
        },
        "created_at": format_time(&from_millis(created)),
        "owner_site": s.owner().topology.id,
        "type": s.kind(),
        "status": status,
        "task_uuid": running.or(stored.task_uuid),
        "rpo": dr::rpo_anywhere(&state.jobs, s, authorization(headers).as_deref()).await?,
        "recovery": recovery,
        "_links": links,
        "_issues": issues,
    }))
}

fn check_filters(req: &PageRequest) -> Result<()> {
    for t in req.filter("type") {
        if !matches!(t, "PRIMARY" | "RECOVERY") {
            return Err(DrError::bad_request(format!(
                "type must be PRIMARY or RECOVERY, not {t:?}"
            )));
        }
    }
    for id in req.filter("recovery.resource_id") {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(DrError::bad_request(format!(
                "recovery.resource_id {id:?} does not match ^[a-zA-Z0-9-]+$"
            )));
        }
    }
    Ok(())
}

async fn list_servers(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let req = page_request(query_pairs(&raw)?, &["type", "recovery.resource_id"])?;
    check_filters(&req)?;
    let (types, resources) = (req.filter("type"), req.filter("recovery.resource_id"));
    let servers: Vec<Server> = dr::servers(&state.jobs)
        .await?
        .into_iter()
        .filter(|s| types.is_empty() || types.contains(&s.kind()))
        .filter(|s| {
            resources.is_empty()
                || (s.recovery.is_some()
                    && resources
                        .iter()
                        .any(|r| r.eq_ignore_ascii_case(&dr::primary_uuid(&s.primary.topology.id))))
        })
        .collect();
    let (page, paging) = paginate(servers, |s| s.uuid.as_str(), &req);
    let views: Vec<_> = page
        .iter()
        .map(|s| server_view(&state, s, &headers))
        .collect();
    let items: Vec<Value> = futures::stream::iter(views)
        .buffered(8)
        .collect::<Vec<Result<Value>>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    Ok(Json(json!({ "items": items, "paging": paging })))
}

async fn find(state: &AppState, uuid: &str) -> Result<Server> {
    dr::find_server(&state.jobs, uuid)
        .await?
        .ok_or_else(|| DrError::not_found(format!("Server [{uuid}] was not found.")))
}

async fn get_server(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(uuid): Path<String>,
) -> Result<Json<Value>> {
    let s = find(&state, &uuid).await?;
    Ok(Json(server_view(&state, &s, &headers).await?))
}

/// `GET /servers/{uuid}/rpo` (a mirrorgate addition): the RPO as this site measures it; the
/// primary site's answer is the real one, which the other sites ask for.
async fn get_rpo(State(state): State<AppState>, Path(uuid): Path<String>) -> Result<Json<Value>> {
    let s = find(&state, &uuid).await?;
    Ok(Json(dr::rpo(&state.jobs, &s).await?))
}

// ---- tasks -------------------------------------------------------------------------------

/// A DR task as the seed's clients read it (a mirrorgate addition: the seed has only task_uuid).
fn task_json(state: &AppState, t: &crate::meta::tasks::Task) -> Value {
    let time = |ms: Option<i64>| ms.map(|m| format_time(&from_millis(m)));
    json!({
        "uuid": t.uuid,
        "type": t.kind,
        "status": t.status,
        "site_id": state.site_id,
        "resource_id": t.params.get("server"),
        "created_at": format_time(&from_millis(t.created)),
        "started_at": time(t.started),
        "completed_at": time(t.ended),
        "cancel_requested": t.cancel_requested,
        "progress": { "objects_done": t.objects_done, "objects_total": t.objects_total,
                      "bytes_done": t.bytes_done, "bytes_total": t.bytes_total },
        "error": t.failure.as_ref().map(|m| json!({ "message": m })),
        "result": t.result,
    })
}

fn is_dr_kind(kind: &str) -> bool {
    matches!(kind, TEST_KIND | PROD_KIND | STOP_KIND)
}

/// A DR task here, else at the first peer that knows it (tasks run on the owner site).
async fn locate_task(
    state: &AppState,
    uuid: &str,
    headers: &HeaderMap,
    method: reqwest::Method,
    path: &str,
) -> Result<(u16, Value)> {
    if forwarded(headers) {
        return Err(DrError::not_found(format!("Task [{uuid}] was not found.")));
    }
    let auth = authorization(headers);
    for peer in state.topology.up_peers().await?.iter() {
        if let Ok((code, v)) = dr::forward(
            &state.jobs,
            peer,
            method.clone(),
            path,
            auth.as_deref(),
            None,
        )
        .await
        {
            if code != 404 {
                return Ok((code, v));
            }
        }
    }
    Err(DrError::not_found(format!("Task [{uuid}] was not found.")))
}

/// `GET /tasks/{uuid}`: a DR task, readable with the DR scopes, from whichever site runs it.
async fn get_task(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(uuid): Path<String>,
) -> Result<Response> {
    if let Some(t) = state
        .meta
        .get_task(&uuid)
        .await?
        .filter(|t| is_dr_kind(&t.kind))
    {
        return Ok(Json(task_json(&state, &t)).into_response());
    }
    let path = format!("/api/dr/v2/tasks/{uuid}");
    let (code, v) = locate_task(&state, &uuid, &headers, reqwest::Method::GET, &path).await?;
    Ok((
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
        Json(v),
    )
        .into_response())
}

/// `POST /tasks/{uuid}:cancel`: asks a DR task to stop; the server returns to a stable status.
async fn task_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(target): Path<String>,
) -> Result<Response> {
    let Some((uuid, "cancel")) = target.split_once(':') else {
        return Err(DrError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "POST needs an action: {uuid}:cancel",
        ));
    };
    if let Some(t) = state
        .meta
        .get_task(uuid)
        .await?
        .filter(|t| is_dr_kind(&t.kind))
    {
        state.tasks.cancel(&t.uuid).await?;
        let t = state.meta.get_task(uuid).await?.unwrap_or(t);
        return Ok((StatusCode::ACCEPTED, Json(task_json(&state, &t))).into_response());
    }
    let path = format!("/api/dr/v2/tasks/{uuid}:cancel");
    let (code, v) = locate_task(&state, uuid, &headers, reqwest::Method::POST, &path).await?;
    Ok((
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
        Json(v),
    )
        .into_response())
}

/// `POST /servers/{uuid}:{action}`: checks, moves the server to its transitional status with
/// the task recorded (compare-and-set, so two requests cannot both start), then starts the task.
async fn server_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(target): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let (uuid, action) = target.split_once(':').ok_or_else(|| DrError::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "POST needs an action: {uuid}:start_failover_prod, :start_failover_test or :stop_failover"))?;
    let (kind, transitional) = match action {
        "start_failover_prod" => (PROD_KIND, status::STARTING_FAILOVER_PROD),
        "start_failover_test" => (TEST_KIND, status::STARTING_FAILOVER_TEST),
        "stop_failover" => (STOP_KIND, status::STOPPING_FAILOVER),
        other => return Err(DrError::not_found(format!("unknown action {other:?}"))),
    };
    check_body(&body)?;
    let server = find(&state, uuid).await?;
    if server.recovery.is_none() {
        return Err(DrError::not_ready(
            "A primary server does not fail over: use one of its recovery servers.",
        ));
    }
    // One owner per server: the action runs there, whichever site the request reached.
    let owner = server.owner();
    if !owner.is_self {
        if forwarded(&headers) {
            return Err(DrError::unavailable(format!(
                "site {} is not the owner of server {uuid} (site {} is): the sites disagree on the topology",
                state.site_id, owner.topology.id
            )));
        }
        let path = format!("/api/dr/v2/servers/{target}");
        let auth = authorization(&headers);
        let (code, v) = dr::forward(&state.jobs, &owner.topology, reqwest::Method::POST, &path, auth.as_deref(), Some(body))
            .await
            .map_err(|e| DrError::unavailable(format!(
                "the state of server {uuid} is kept by site {}, which cannot be reached: {}; no action is taken elsewhere, so that two sites cannot fail it over at once",
                owner.topology.id, e.message
            )))?;
        return Ok((
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
            Json(v),
        )
            .into_response());
    }
    let (current, running, _) = live_state(&state, uuid).await?;
    if let Some(task) = running {
        return Err(DrError::busy(uuid, &task));
    }
    if !allowed_from(action).contains(&current.as_str()) {
        return Err(DrError::not_ready(format!(
            "{action} is not possible while the server is {current}."
        )));
    }
    let params = json!({ "server": uuid, "from": current });
    let task = state
        .meta
        .create_task(kind, uuid, &format!("dr:server/{uuid}"), &params)
        .await?;
    if !state
        .meta
        .move_server(uuid, allowed_from(action), transitional, Some(&task.uuid))
        .await?
    {
        state
            .meta
            .transition_task(
                &task.uuid,
                &[task_status::PENDING],
                task_status::CANCELLED,
                Some("another action started first"),
            )
            .await?;
        let (_, running, stored) = live_state(&state, uuid).await?;
        return Err(DrError::busy(
            uuid,
            &running.or(stored.task_uuid).unwrap_or_default(),
        ));
    }
    state.tasks.start(task.clone());
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "task_uuid": task.uuid })),
    )
        .into_response())
}

/// The body is `{}` or `{"recovery_point": {...}}`; only the latest recovery point exists here.
fn check_body(body: &[u8]) -> Result<()> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| DrError::bad_request(format!("body is not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| DrError::bad_request("the body must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| *k != "recovery_point") {
        return Err(DrError::bad_request(format!("unknown field {k:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(q: &str) -> Result<PageRequest> {
        page_request(serde_urlencoded::from_str(q).unwrap(), &["type"])
    }

    #[test]
    fn paging_walks_forward_and_back_exactly_once() {
        let items: Vec<String> = (0..23).map(|i| format!("k{i:02}")).collect();
        let first = req("limit=5").unwrap();
        let (mut page, mut paging) = paginate(items.clone(), |s| s.as_str(), &first);
        let mut seen = page.clone();
        while let Some(after) = paging["cursors"]["after"].as_str() {
            let r = req(&format!("after={after}")).unwrap();
            (page, paging) = paginate(items.clone(), |s| s.as_str(), &r);
            seen.extend(page.clone());
        }
        assert_eq!(seen, items);
        let mut back = page.clone();
        while let Some(before) = paging["cursors"]["before"].as_str() {
            let r = req(&format!("before={before}")).unwrap();
            (page, paging) = paginate(items.clone(), |s| s.as_str(), &r);
            back.splice(0..0, page.clone());
        }
        assert_eq!(back, items);
    }

    #[test]
    fn invalid_requests() {
        assert!(req("limit=0").is_err());
        assert!(req("limit=51").is_err());
        assert!(req("limit=x").is_err());
        assert!(req("limit=5&after=abc").is_err());
        assert!(req("after=a&before=b").is_err());
        assert!(req("after=notacursor").is_err());
        assert!(req("color=red").is_err());
        assert_eq!(req("").unwrap().limit, 10);
    }
}
