//! `POST /replicas/` (register copies that exist at an RSE), `PUT /replicas/` (state changes)
//! and `DELETE /replicas/` (remove the copy at an RSE). A request about another RSE is forwarded
//! to that site, which alone knows its copies' locks and state.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value};

use super::{
    created, find_site, forward, json_body, parse_date, parse_did, required_list, required_str,
    Result, RucioError,
};
use crate::core::objects;
use crate::engines::catalogue::healing;
use crate::engines::catalogue::scrub::{verify_stored, Verdict};
use crate::engines::catalogue::view::{self, SiteInfo};
use crate::error::Kind;
use crate::meta::replicas::{Changed, Declared};
use crate::meta::replication::now_ms;
use crate::meta::{Object, Status};
use crate::model::order::WriteOrigin;
use crate::model::replica::{Did, Replica, ReplicaState};
use crate::state::AppState;

/// The RSE a request is about, and its parsed body.
async fn target(state: &AppState, body: &Bytes) -> Result<(Map<String, Value>, SiteInfo)> {
    let p = json_body(body)?;
    let rse = required_str(&p, "rse")?.to_owned();
    required_list(&p, "files")?;
    let sites = view::sites(&state.catalogue).await?;
    let site = find_site(&sites, &rse)?.clone();
    Ok((p, site))
}

/// `POST|PUT|DELETE /replicas/` concern one RSE: the parameters when it is this site, else the
/// answer of the site that is.
async fn here_or_forward(
    state: &AppState,
    method: Method,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<std::result::Result<Map<String, Value>, Response>> {
    let (p, site) = target(state, body).await?;
    if site.local {
        return Ok(Ok(p));
    }
    let answer = forward(
        state,
        &site,
        method,
        "/replicas/",
        headers,
        &Value::Object(p),
    )
    .await?;
    Ok(Err(answer))
}

fn files(p: &Map<String, Value>) -> &[Value] {
    p.get("files")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Every DID once.
fn unique_dids(items: &[Value]) -> Result<Vec<Did>> {
    let mut seen = HashSet::new();
    items
        .iter()
        .map(|item| {
            let did = parse_did(item)?;
            if !seen.insert(did.clone()) {
                return Err(RucioError::duplicate(format!(
                    "{did} appears twice in the request"
                )));
            }
            Ok(did)
        })
        .collect()
}

// ---- POST: register ------------------------------------------------------------------------

/// One file of a registration.
struct NewReplica {
    did: Did,
    bytes: u64,
    adler32: Option<String>,
    state: ReplicaState,
    tombstone: Option<i64>,
    lock_cnt: i64,
}

fn parse_new(item: &Value, did: Did) -> Result<NewReplica> {
    let invalid = |m: &str| RucioError::invalid_object(format!("Problem validating {did}: {m}"));
    let bytes = item
        .get("bytes")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid("'bytes' is a required non-negative integer"))?;
    let state = match item.get("state").and_then(Value::as_str) {
        None => ReplicaState::Available,
        Some(s) => match ReplicaState::parse(s) {
            Some(st @ (ReplicaState::Available | ReplicaState::Unavailable)) => st,
            _ => return Err(invalid("a registered replica is AVAILABLE or UNAVAILABLE")),
        },
    };
    let tombstone = match item.get("tombstone").filter(|v| !v.is_null()) {
        None => None,
        Some(Value::String(t)) => Some(parse_date(t)?),
        Some(_) => return Err(invalid("'tombstone' must be a date")),
    };
    let lock_cnt = match item.get("lock_cnt") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| invalid("'lock_cnt' must be a non-negative integer"))?
            as i64,
    };
    Ok(NewReplica {
        did: did.clone(),
        bytes,
        adler32: item
            .get("adler32")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase),
        state,
        tombstone,
        lock_cnt,
    })
}

/// `POST /replicas/`: registers copies that exist at the RSE (their bytes are verified);
/// copies the catalogue already has are skipped.
pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let p = match here_or_forward(&state, Method::POST, &headers, &body).await? {
        Ok(p) => p,
        Err(answer) => return Ok(answer),
    };
    let items = files(&p);
    let dids = unique_dids(items)?;
    let parsed = items
        .iter()
        .zip(dids)
        .map(|(item, did)| parse_new(item, did))
        .collect::<Result<Vec<_>>>()?;
    for f in &parsed {
        register_one(&state, f).await?;
    }
    Ok(created())
}

async fn stored_object(state: &AppState, did: &Did) -> Result<Object> {
    match state.meta.get_bucket(&did.scope).await? {
        Some(b) if b.status == Status::Ready => {}
        _ => {
            return Err(RucioError::not_found(
                "ScopeNotFound",
                format!("Scope '{}' does not exist", did.scope),
            ))
        }
    }
    match state.meta.get_object(&did.scope, &did.name).await? {
        Some(o) if o.status == Status::Ready => Ok(o),
        _ => Err(RucioError::not_found(
            "DataIdentifierNotFound",
            format!(
                "Data identifier '{did}' is not stored at RSE {}",
                state.site_id
            ),
        )),
    }
}

fn mismatch(m: String) -> RucioError {
    RucioError::new(StatusCode::CONFLICT, "FileConsistencyMismatch", m)
}

async fn register_one(state: &AppState, f: &NewReplica) -> Result<()> {
    let obj = stored_object(state, &f.did).await?;
    if f.bytes != obj.size {
        return Err(mismatch(format!(
            "{}: {} bytes declared, {} stored",
            f.did, f.bytes, obj.size
        )));
    }
    let site = &state.site_id;
    if state
        .meta
        .replica(&obj.bucket, &obj.name, site)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let adler32 = match verify_stored(&state.catalogue, &obj, None).await? {
        Verdict::Good { adler32 } => adler32,
        Verdict::Bad(why) => return Err(mismatch(format!("{}: stored bytes: {why}", f.did))),
    };
    if f.adler32.as_ref().is_some_and(|a| *a != adler32) {
        return Err(mismatch(format!(
            "{}: adler32 {} declared, {adler32} stored",
            f.did,
            f.adler32.as_deref().unwrap_or("")
        )));
    }
    let now = now_ms();
    let replica = Replica {
        bucket: obj.bucket.clone(),
        name: obj.name.clone(),
        site: site.clone(),
        state: f.state,
        bytes: obj.size,
        sha256: obj.hash.clone(),
        adler32: Some(adler32),
        tombstone: f.tombstone,
        lock_cnt: f.lock_cnt,
        error_message: None,
        created_at: now,
        updated_at: now,
        accessed_at: None,
    };
    state.meta.register_replica(&replica).await?;
    Ok(())
}

// ---- PUT: state changes --------------------------------------------------------------------

/// One file of a state change. `lock_cnt` is a mirrorgate extension: it sets the locks that
/// Rucio's rules would hold.
struct Update {
    did: Did,
    to: Option<ReplicaState>,
    error_message: Option<String>,
    lock_cnt: Option<i64>,
}

fn parse_update(item: &Value) -> Result<Update> {
    let did = parse_did(item)?;
    let to = match item.get("state").filter(|v| !v.is_null()) {
        None => None,
        Some(v) => Some(v.as_str().and_then(ReplicaState::parse).ok_or_else(|| {
            RucioError::invalid_object(format!("{v} is not a valid ReplicaState"))
        })?),
    };
    let lock_cnt = match item.get("lock_cnt").filter(|v| !v.is_null()) {
        None => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            RucioError::invalid_object("'lock_cnt' must be a non-negative integer")
        })? as i64),
    };
    if to.is_none() && lock_cnt.is_none() {
        return Err(RucioError::key_error("state"));
    }
    Ok(Update {
        did,
        to,
        error_message: item
            .get("error_message")
            .and_then(Value::as_str)
            .map(str::to_owned),
        lock_cnt,
    })
}

/// `PUT /replicas/`: Rucio's transitions (see `MetaStore::change_replica_state`); D declares
/// the copy BAD (its repair is queued); A on a BAD copy re-reads it first.
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let p = match here_or_forward(&state, Method::PUT, &headers, &body).await? {
        Ok(p) => p,
        Err(answer) => return Ok(answer),
    };
    let updates = files(&p)
        .iter()
        .map(parse_update)
        .collect::<Result<Vec<_>>>()?;
    let mut current = Vec::new();
    for u in &updates {
        let row = state
            .meta
            .replica(&u.did.scope, &u.did.name, &state.site_id)
            .await?
            .ok_or_else(|| RucioError::replica_not_found(&u.did, &state.site_id))?;
        current.push(row);
    }
    for (u, row) in updates.iter().zip(current) {
        if let Some(n) = u.lock_cnt {
            state
                .meta
                .set_lock_cnt(&u.did.scope, &u.did.name, &state.site_id, n)
                .await?;
        }
        if let Some(to) = u.to {
            change_state(&state, u, row.state, to).await?;
        }
    }
    Ok(StatusCode::OK.into_response())
}

async fn change_state(
    state: &AppState,
    u: &Update,
    from: ReplicaState,
    to: ReplicaState,
) -> Result<()> {
    let (did, site) = (&u.did, &state.site_id);
    let refused = |why: &str| {
        RucioError::unsupported(format!(
            "State {} for replica {did} on {site} cannot be updated: {why}",
            to.name()
        ))
    };
    match (from, to) {
        (_, ReplicaState::Copying) => Err(refused("COPYING is set by replication only")),
        (_, ReplicaState::Bad) => {
            let reason = u
                .error_message
                .clone()
                .unwrap_or_else(|| "declared BAD with PUT /replicas/".into());
            match healing::declare_bad(
                &state.catalogue,
                &did.scope,
                &did.name,
                &reason,
                false,
                "api",
            )
            .await?
            {
                Declared::UnknownReplica => Err(RucioError::replica_not_found(did, site)),
                _ => Ok(()),
            }
        }
        (ReplicaState::Bad, ReplicaState::Available) => {
            healing::declare_good(&state.catalogue, &did.scope, &did.name)
                .await?
                .map_err(|why| refused(&why))
        }
        _ => {
            let changed = state
                .meta
                .change_replica_state(&did.scope, &did.name, site, to, u.error_message.as_deref())
                .await?;
            match changed {
                Changed::Done => Ok(()),
                Changed::NotFound => Err(RucioError::replica_not_found(did, site)),
                Changed::Locked => Err(refused("the replica is locked")),
                Changed::Refused(current) => {
                    Err(refused(&format!("not allowed from {}", current.name())))
                }
            }
        }
    }
}

// ---- DELETE --------------------------------------------------------------------------------

/// `DELETE /replicas/`: removes the copies at the RSE (only there). Another RSE's copies are
/// removed by that site (forwarded), so their locks hold wherever the request arrives (423).
pub async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let p = match here_or_forward(&state, Method::DELETE, &headers, &body).await? {
        Ok(p) => p,
        Err(answer) => return Ok(answer),
    };
    let dids = unique_dids(files(&p))?;
    remove_here(&state, &dids).await?;
    Ok(StatusCode::OK.into_response())
}

async fn remove_here(state: &AppState, dids: &[Did]) -> Result<()> {
    let site = &state.site_id;
    for did in dids {
        let row = state
            .meta
            .replica(&did.scope, &did.name, site)
            .await?
            .ok_or_else(|| RucioError::replica_not_found(did, site))?;
        if row.lock_cnt > 0 {
            return Err(RucioError::locked(did, site));
        }
    }
    let origin = WriteOrigin::Replica {
        from_site: site.clone(),
    };
    for did in dids {
        match objects::delete(state, &did.scope, &did.name, &origin).await {
            Ok(()) => {}
            Err(e) if matches!(e.kind, Kind::NotFound | Kind::Gone) => {
                state
                    .meta
                    .replica_removed(&did.scope, &did.name, site)
                    .await?
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
