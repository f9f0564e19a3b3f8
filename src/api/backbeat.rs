//! Backbeat's CRR API over mirrorgate's failed operations, pause flags and replication events:
//! `/_/backbeat/api/_/crr/...` and `/_/backbeat/api/crr/...` (both answer), and
//! `/_/backbeat/api/metrics/crr/{site|all}/{type}`, the Prometheus text at
//! `/_/backbeat/api/monitoring/metrics` (and `/_/monitoring/metrics`), and the public
//! `/_/healthcheck`. Errors in Backbeat's envelope `{"code","description",<Name>:true}`.
//!
//! A failed bucket-level order (bucket create or delete at a peer) is listed with the key
//! [`BUCKET_KEY`] (`*`, never a valid object name), and retried by posting that key.

use std::collections::{BTreeMap, HashSet};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Error, Kind};
use crate::meta::replication::{now_ms, FailedOp, Totals};
use crate::model::object::{format_time, from_millis};
use crate::state::AppState;

/// The key under which a failed bucket-level order is listed and retried.
pub const BUCKET_KEY: &str = "*";

/// Failed entries per page.
const PAGE: i64 = 100;

pub fn routes() -> Router<AppState> {
    let crr = Router::new()
        .route("/failed", get(list_failed).post(retry_failed))
        .route("/failed/{bucket}/{*key}", get(failed_for_object))
        .route("/pause", post(pause_all))
        .route("/pause/{site}", post(pause_site))
        .route("/resume", post(resume_all))
        .route(
            "/resume/{site}",
            post(resume_site).get(get_schedule).delete(delete_schedule),
        )
        .route(
            "/resume/{site}/schedule",
            post(schedule_resume)
                .get(get_schedule)
                .delete(delete_schedule),
        )
        .route("/status", get(status_all))
        .route("/status/{site}", get(status_site));
    Router::new()
        .nest("/_/backbeat/api/_/crr", crr.clone())
        .nest("/_/backbeat/api/crr", crr)
        .route("/_/backbeat/api/metrics/crr/{site}/{kind}", get(metrics))
        .route("/_/backbeat/api/_/metrics/crr/{site}/{kind}", get(metrics))
        .route("/_/backbeat/api/monitoring/metrics", get(prometheus))
        .route("/_/backbeat/api/_/monitoring/metrics", get(prometheus))
        .route("/_/monitoring/metrics", get(prometheus))
        .route("/_/healthcheck", get(healthcheck))
}

/// Prometheus text: every mirrorgate metric (the replication ones are `mirrorgate_replication_*`).
async fn prometheus() -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::http::metrics::render().await,
    )
        .into_response()
}

/// Public liveness of the replication service: 200 when the metadata store answers.
async fn healthcheck(State(state): State<AppState>) -> Result<Json<Value>> {
    state.meta.pause_states().await?;
    Ok(Json(json!({
        "site": state.site_id,
        "internalConnections": { "metadata": "ok" },
    })))
}

/// An error in Backbeat's envelope.
#[derive(Debug)]
pub struct BackbeatError {
    status: StatusCode,
    name: &'static str,
    description: String,
}

type Result<T> = std::result::Result<T, BackbeatError>;

impl BackbeatError {
    fn new(status: StatusCode, name: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            name,
            description: description.into(),
        }
    }
    fn malformed(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MalformedPOSTRequest", d)
    }
    fn query(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidQueryParameter", d)
    }
}

impl From<Error> for BackbeatError {
    fn from(e: Error) -> Self {
        let name = match e.kind {
            Kind::BadRequest => "InvalidQueryParameter",
            Kind::NotFound => "RouteNotFound",
            Kind::Forbidden | Kind::Unauthorized => "AccessDenied",
            _ => "InternalError",
        };
        Self {
            status: e.status(),
            name,
            description: e.message,
        }
    }
}

impl IntoResponse for BackbeatError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.status.as_u16(), "description": self.description });
        body[self.name] = Value::Bool(true);
        let mut resp = (self.status, Json(body)).into_response();
        resp.headers_mut().insert(
            crate::http::common::ERROR,
            crate::http::common::text_header(&self.description),
        );
        resp
    }
}

fn version_json(op: &FailedOp) -> Value {
    json!({
        "Bucket": op.order.bucket_name,
        "Key": op.order.object_name.as_deref().unwrap_or(BUCKET_KEY),
        "VersionId": op.version_id,
        "StorageClass": op.order.to_site,
        "Size": op.order.size.unwrap_or(0),
        "LastModified": format_time(&from_millis(op.last_modified)),
    })
}

#[derive(Deserialize)]
struct FailedQuery {
    sitename: Option<String>,
    marker: Option<String>,
}

async fn list_failed(
    State(state): State<AppState>,
    Query(q): Query<FailedQuery>,
) -> Result<Json<Value>> {
    let site = q
        .sitename
        .filter(|s| !s.is_empty())
        .ok_or_else(|| BackbeatError::query("sitename is required"))?;
    let marker = match q.marker {
        None => None,
        Some(m) => Some(
            m.parse::<i64>()
                .map_err(|_| BackbeatError::query(format!("marker {m:?} must be an integer")))?,
        ),
    };
    let (ops, next) = state
        .meta
        .list_failed(&state.site_id, &site, marker, PAGE)
        .await?;
    let mut body = json!({ "IsTruncated": next.is_some(), "Versions": ops.iter().map(version_json).collect::<Vec<_>>() });
    if let Some(next) = next {
        body["NextMarker"] = json!(next);
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
struct VersionQuery {
    #[serde(rename = "versionId")]
    version_id: Option<String>,
}

async fn failed_for_object(
    State(state): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
    Query(q): Query<VersionQuery>,
) -> Result<Json<Value>> {
    let version = q.version_id.filter(|v| !v.is_empty());
    let key = if key == BUCKET_KEY {
        String::new()
    } else {
        key
    };
    let ops = state
        .meta
        .failed_for_object(&state.site_id, &bucket, &key, version.as_deref())
        .await?;
    Ok(Json(
        json!({ "IsTruncated": false, "Versions": ops.iter().map(version_json).collect::<Vec<_>>() }),
    ))
}

/// One validated entry of a retry request.
#[derive(Hash, PartialEq, Eq)]
struct RetryItem {
    bucket: String,
    key: String,
    version: String,
    site: String,
    force: bool,
}

fn parse_retry(body: &[u8]) -> Result<Vec<RetryItem>> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| BackbeatError::malformed(format!("body is not JSON: {e}")))?;
    let items = value
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| BackbeatError::malformed("body must be a non-empty JSON array"))?;
    let text = |item: &Value, field: &str, required: bool| -> Result<String> {
        match item.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            None | Some(Value::Null) if !required => Ok(String::new()),
            Some(Value::String(_)) if !required => Ok(String::new()),
            _ => Err(BackbeatError::malformed(format!(
                "{field} must be a non-empty string"
            ))),
        }
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for item in items {
        if !item.is_object() {
            return Err(BackbeatError::malformed("each entry must be an object"));
        }
        let parsed = RetryItem {
            bucket: text(item, "Bucket", true)?,
            key: text(item, "Key", true)?,
            version: text(item, "VersionId", false)?,
            site: text(item, "StorageClass", true)?,
            force: item
                .get("ForceRetry")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        let key = (
            parsed.bucket.clone(),
            parsed.key.clone(),
            parsed.version.clone(),
            parsed.site.clone(),
        );
        if seen.insert(key) {
            out.push(parsed);
        }
    }
    Ok(out)
}

async fn retry_failed(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>> {
    let items = parse_retry(&body)?;
    let mut retried = Vec::new();
    for item in items {
        let key = if item.key == BUCKET_KEY {
            ""
        } else {
            &item.key
        };
        let mut ops = state
            .meta
            .retry_failed(&state.site_id, &item.bucket, key, &item.version, &item.site)
            .await?;
        if ops.is_empty() && item.force && !key.is_empty() {
            ops.extend(force_retry(&state, &item).await?);
        }
        for op in ops {
            let mut v = version_json(&op);
            v["ReplicationStatus"] = json!("PENDING");
            retried.push(v);
        }
    }
    state.replication.service.outbox_ready.notify_one();
    Ok(Json(Value::Array(retried)))
}

/// `ForceRetry`: queue a fresh order for an object that is not in the failed list.
async fn force_retry(state: &AppState, item: &RetryItem) -> Result<Option<FailedOp>> {
    let Some(obj) = state.meta.get_object(&item.bucket, &item.key).await? else {
        return Ok(None);
    };
    let Some(bucket) = state.meta.get_bucket(&item.bucket).await? else {
        return Ok(None);
    };
    let Some(hash) = obj
        .hash
        .clone()
        .filter(|_| obj.status == crate::meta::Status::Ready)
    else {
        return Ok(None);
    };
    let order = crate::model::order::Order {
        op_id: uuid::Uuid::new_v4().to_string(),
        from_site: state.site_id.clone(),
        to_site: item.site.clone(),
        client_id: bucket.client_id,
        bucket_name: item.bucket.clone(),
        object_name: Some(item.key.clone()),
        size: Some(obj.size),
        hash: Some(hash),
        action: crate::model::order::Action::Create,
        version_time: Some(obj.creation.timestamp_millis()),
    };
    state
        .meta
        .queue_orders(std::slice::from_ref(&order))
        .await?;
    Ok(Some(FailedOp {
        id: 0,
        order,
        version_id: obj.id,
        attempts: 0,
        error: None,
        failed_at: now_ms(),
        last_modified: obj.creation.timestamp_millis(),
    }))
}

// ---- pause and resume --------------------------------------------------------------------

async fn known_site(state: &AppState, site: &str) -> Result<()> {
    state.topology.peer(site).await.map(|_| ()).map_err(|_| {
        BackbeatError::new(
            StatusCode::NOT_FOUND,
            "RouteNotFound",
            format!("unknown site {site}"),
        )
    })
}

async fn all_peers(state: &AppState) -> Result<Vec<String>> {
    Ok(state
        .topology
        .up_peers()
        .await?
        .iter()
        .map(|p| p.id.clone())
        .collect())
}

async fn set_paused(
    state: &AppState,
    sites: Vec<String>,
    paused: bool,
    resume_at: Option<i64>,
) -> Result<Json<Value>> {
    for site in &sites {
        state.meta.set_pause(site, paused, resume_at).await?;
    }
    state.replication.service.outbox_ready.notify_one();
    Ok(Json(json!({})))
}

async fn pause_all(State(state): State<AppState>) -> Result<Json<Value>> {
    let sites = all_peers(&state).await?;
    set_paused(&state, sites, true, None).await
}

async fn pause_site(
    State(state): State<AppState>,
    Path(site): Path<String>,
) -> Result<Json<Value>> {
    known_site(&state, &site).await?;
    set_paused(&state, vec![site], true, None).await
}

async fn resume_all(State(state): State<AppState>) -> Result<Json<Value>> {
    let sites = all_peers(&state).await?;
    set_paused(&state, sites, false, None).await
}

async fn resume_site(
    State(state): State<AppState>,
    Path(site): Path<String>,
) -> Result<Json<Value>> {
    known_site(&state, &site).await?;
    set_paused(&state, vec![site], false, None).await
}

/// Pauses now and resumes after `hours` (default 6, as Backbeat).
async fn schedule_resume(
    State(state): State<AppState>,
    Path(site): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    known_site(&state, &site).await?;
    let hours = if body.is_empty() {
        6.0
    } else {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| BackbeatError::malformed(format!("body is not JSON: {e}")))?;
        match v.get("hours") {
            None => 6.0,
            Some(h) => h
                .as_f64()
                .filter(|h| *h > 0.0 && *h <= 8760.0)
                .ok_or_else(|| BackbeatError::malformed("hours must be a positive number"))?,
        }
    };
    let at = now_ms() + (hours * 3_600_000.0) as i64;
    set_paused(&state, vec![site], true, Some(at)).await
}

async fn get_schedule(
    State(state): State<AppState>,
    Path(site): Path<String>,
) -> Result<Json<Value>> {
    known_site(&state, &site).await?;
    let states = state.meta.pause_states().await?;
    let when = states
        .get(&site)
        .and_then(|(p, at)| at.filter(|_| *p))
        .map(|at| json!(format_time(&from_millis(at))));
    Ok(Json(json!({ site: when.unwrap_or(json!("none")) })))
}

/// Cancels a scheduled resume: the site stays paused until resumed by hand.
async fn delete_schedule(
    State(state): State<AppState>,
    Path(site): Path<String>,
) -> Result<Json<Value>> {
    known_site(&state, &site).await?;
    let states = state.meta.pause_states().await?;
    if let Some((true, Some(_))) = states.get(&site) {
        state.meta.set_pause(&site, true, None).await?;
    }
    Ok(Json(json!({})))
}

async fn statuses(state: &AppState, only: Option<String>) -> Result<Json<Value>> {
    let paused = crate::engines::replication::effective_pauses(&state.replication).await?;
    let sites = match only {
        Some(s) => {
            known_site(state, &s).await?;
            vec![s]
        }
        None => all_peers(state).await?,
    };
    let map: BTreeMap<String, &str> = sites
        .into_iter()
        .map(|s| {
            let p = paused.get(&s).copied().unwrap_or(false);
            (s, if p { "disabled" } else { "enabled" })
        })
        .collect();
    Ok(Json(json!(map)))
}

async fn status_all(State(state): State<AppState>) -> Result<Json<Value>> {
    statuses(&state, None).await
}

async fn status_site(
    State(state): State<AppState>,
    Path(site): Path<String>,
) -> Result<Json<Value>> {
    statuses(&state, Some(site)).await
}

// ---- metrics -----------------------------------------------------------------------------

const DAY_MS: i64 = 86_400_000;
const THROUGHPUT_WINDOW_MS: i64 = 900_000;

fn results(description: &str, t: Totals) -> Value {
    json!({ "description": description, "results": { "count": t.count, "size": t.bytes } })
}

async fn metrics(
    State(state): State<AppState>,
    Path((site, kind)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let site = (site != "all").then_some(site);
    if let Some(s) = &site {
        known_site(&state, s).await?;
    }
    let s = site.as_deref();
    let kinds: Vec<&str> = match kind.as_str() {
        "all" => vec![
            "pending",
            "backlog",
            "completions",
            "failures",
            "throughput",
        ],
        k @ ("pending" | "backlog" | "completions" | "failures" | "throughput") => vec![k],
        other => {
            return Err(BackbeatError::new(
                StatusCode::NOT_FOUND,
                "RouteNotFound",
                format!("unknown metrics type {other:?}"),
            ))
        }
    };
    let mut out = serde_json::Map::new();
    for k in kinds {
        let v = match k {
            "pending" | "backlog" => results(
                "Number of objects and bytes waiting to be replicated",
                state.meta.pending_totals(s).await?.0,
            ),
            "completions" => results(
                "Objects and bytes replicated in the last 24 hours",
                state
                    .meta
                    .event_totals(s, "COMPLETED", now_ms() - DAY_MS)
                    .await?,
            ),
            "failures" => results(
                "Objects and bytes that failed to replicate in the last 24 hours",
                state
                    .meta
                    .event_totals(s, "FAILED", now_ms() - DAY_MS)
                    .await?,
            ),
            _ => {
                let t = state
                    .meta
                    .event_totals(s, "COMPLETED", now_ms() - THROUGHPUT_WINDOW_MS)
                    .await?;
                let secs = (THROUGHPUT_WINDOW_MS / 1000) as f64;
                json!({ "description": "Objects and bytes per second replicated over the last 15 minutes",
                        "results": { "count": t.count as f64 / secs, "size": t.bytes as f64 / secs } })
            }
        };
        out.insert(k.to_owned(), v);
    }
    Ok(Json(Value::Object(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_body_validation() {
        assert!(parse_retry(b"[]").is_err());
        assert!(parse_retry(b"{}").is_err());
        assert!(parse_retry(br#"[{"Bucket":"b","Key":"k"}]"#).is_err());
        assert!(parse_retry(br#"[{"Bucket":"","Key":"k","StorageClass":"s"}]"#).is_err());
        assert!(
            parse_retry(br#"[{"Bucket":"b","Key":"k","StorageClass":"s","VersionId":3}]"#).is_err()
        );
        let two = parse_retry(br#"[{"Bucket":"b","Key":"k","StorageClass":"s"},{"Bucket":"b","Key":"k","StorageClass":"s","VersionId":null}]"#).unwrap();
        assert_eq!(two.len(), 1, "deduplicated");
    }
}
