//! CCS administration: `/administration/topologies` and `/administration/ownerships`.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::config::check_site_id;
use crate::error::{Error, Result};
use crate::http::common::no_content;
use crate::meta::{Topology, TopologyStatus};
use crate::model::names::check_bucket;
use crate::model::object::rights;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/administration/topologies",
            get(list_topologies).post(add_topology).put(update_topology),
        )
        .route(
            "/administration/topologies/{site}",
            get(get_topology).delete(delete_topology),
        )
        .route(
            "/administration/ownerships/{id}",
            get(list_ownerships).delete(revoke_bucket),
        )
        .route(
            "/administration/ownerships/{client}/{bucket}",
            get(get_ownership).delete(revoke),
        )
        .route(
            "/administration/ownerships/{client}/{bucket}/{ownership}",
            post(add_ownership).put(set_ownership),
        )
}

#[derive(Deserialize)]
struct StatusQuery {
    status: Option<String>,
}

async fn list_topologies(
    State(state): State<AppState>,
    Query(q): Query<StatusQuery>,
) -> Result<Json<Vec<Topology>>> {
    let status = q
        .status
        .map(|s| {
            TopologyStatus::parse(&s)
                .ok_or_else(|| Error::bad_request(format!("unknown topology status {s:?}")))
        })
        .transpose()?;
    Ok(Json(state.meta.list_topologies(status).await?))
}

/// A topology entry must name another site with a valid id (the config's site id rule) and
/// a reachable http(s) URL; anything else is 400.
pub(crate) fn check_topology(t: &Topology, self_id: &str) -> Result<()> {
    check_site_id(&t.id).map_err(|e| Error::bad_request(format!("topology id: {e}")))?;
    if t.id == self_id {
        return Err(Error::bad_request(format!(
            "topology id {:?} is this site's own id: the topology lists the other sites",
            t.id
        )));
    }
    let url: reqwest::Url = t
        .uri
        .parse()
        .map_err(|e| Error::bad_request(format!("topology uri {:?}: {e}", t.uri)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::bad_request(format!(
            "topology uri {:?}: must be http or https",
            t.uri
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::bad_request(format!(
            "topology uri {:?}: has no host",
            t.uri
        )));
    }
    if url.cannot_be_a_base() || !url.username().is_empty() || url.password().is_some() {
        return Err(Error::bad_request(format!(
            "topology uri {:?}: must be a plain http(s)://host[:port][/path] URL",
            t.uri
        )));
    }
    Ok(())
}

async fn add_topology(State(state): State<AppState>, body: axum::body::Bytes) -> Result<Response> {
    let mut t: Topology = serde_json::from_slice(&body)?;
    check_topology(&t, &state.site_id)?;
    if t.name.is_empty() {
        t.name = t.id.clone();
    }
    state.meta.upsert_topology(&t).await?;
    state.topology_changed();
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

async fn update_topology(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let t: Topology = serde_json::from_slice(&body)?;
    check_topology(&t, &state.site_id)?;
    if state.meta.get_topology(&t.id).await?.is_none() {
        return Err(Error::not_found(format!("remote site {} not found", t.id)));
    }
    state.meta.upsert_topology(&t).await?;
    state.topology_changed();
    Ok((StatusCode::ACCEPTED, Json(t)).into_response())
}

async fn get_topology(
    State(state): State<AppState>,
    Path(site): Path<String>,
) -> Result<Json<Topology>> {
    state
        .meta
        .get_topology(&site)
        .await?
        .map(Json)
        .ok_or_else(|| Error::not_found(format!("remote site {site} not found")))
}

async fn delete_topology(
    State(state): State<AppState>,
    Path(site): Path<String>,
) -> Result<Response> {
    let mut t = state
        .meta
        .get_topology(&site)
        .await?
        .ok_or_else(|| Error::not_found(format!("remote site {site} not found")))?;
    t.status = TopologyStatus::Deleted;
    state.meta.upsert_topology(&t).await?;
    state.topology_changed();
    Ok(no_content(HeaderMap::new()))
}

#[derive(Serialize)]
struct Ownership {
    client: String,
    bucket: String,
    ownership: &'static str,
}

#[derive(Deserialize)]
struct OwnershipQuery {
    ownership: Option<String>,
}

fn parse_rights(s: &str) -> Result<i64> {
    rights::parse(s).ok_or_else(|| Error::bad_request(format!("ownership {s:?} not valid: READ, WRITE, READ_WRITE, DELETE, DELETE_READ, DELETE_WRITE, OWNER or 1..7")))
}

async fn list_ownerships(
    State(state): State<AppState>,
    Path(client): Path<String>,
    Query(q): Query<OwnershipQuery>,
) -> Result<Json<Vec<Ownership>>> {
    let wanted = q.ownership.as_deref().map(parse_rights).transpose()?;
    let grants = state.meta.grants_of(&client).await?;
    Ok(Json(
        grants
            .into_iter()
            .filter(|(_, r)| wanted.is_none_or(|w| r & w == w))
            .map(|(bucket, r)| Ownership {
                client: client.clone(),
                bucket,
                ownership: rights::name(r),
            })
            .collect(),
    ))
}

async fn get_ownership(
    State(state): State<AppState>,
    Path((client, bucket)): Path<(String, String)>,
) -> Result<Json<Ownership>> {
    check_bucket(&bucket)?;
    match state.meta.rights(&client, &bucket).await? {
        0 => Err(Error::not_found(format!(
            "no ownership of {client} on {bucket}"
        ))),
        r => Ok(Json(Ownership {
            client,
            bucket,
            ownership: rights::name(r),
        })),
    }
}

async fn grant(
    state: &AppState,
    client: String,
    bucket: String,
    ownership: &str,
    add: bool,
) -> Result<Ownership> {
    check_bucket(&bucket)?;
    let wanted = parse_rights(ownership)?;
    if state.meta.get_bucket(&bucket).await?.is_none() {
        return Err(Error::not_found(format!("bucket {bucket} not found")));
    }
    if !add && state.meta.rights(&client, &bucket).await? == 0 {
        return Err(Error::not_found(format!(
            "no ownership of {client} on {bucket}"
        )));
    }
    let r = state.meta.grant(&client, &bucket, wanted, add).await?;
    Ok(Ownership {
        client,
        bucket,
        ownership: rights::name(r),
    })
}

async fn add_ownership(
    State(state): State<AppState>,
    Path((client, bucket, o)): Path<(String, String, String)>,
) -> Result<Response> {
    Ok((
        StatusCode::CREATED,
        Json(grant(&state, client, bucket, &o, true).await?),
    )
        .into_response())
}

async fn set_ownership(
    State(state): State<AppState>,
    Path((client, bucket, o)): Path<(String, String, String)>,
) -> Result<Response> {
    Ok((
        StatusCode::ACCEPTED,
        Json(grant(&state, client, bucket, &o, false).await?),
    )
        .into_response())
}

async fn revoke(
    State(state): State<AppState>,
    Path((client, bucket)): Path<(String, String)>,
) -> Result<Response> {
    check_bucket(&bucket)?;
    if !state.meta.revoke(&client, &bucket).await? {
        return Err(Error::not_found(format!(
            "no ownership of {client} on {bucket}"
        )));
    }
    Ok(no_content(HeaderMap::new()))
}

async fn revoke_bucket(
    State(state): State<AppState>,
    Path(bucket): Path<String>,
) -> Result<Response> {
    check_bucket(&bucket)?;
    if state.meta.get_bucket(&bucket).await?.is_none() {
        return Err(Error::not_found(format!("bucket {bucket} not found")));
    }
    state.meta.revoke_all(&bucket).await?;
    Ok(no_content(HeaderMap::new()))
}
