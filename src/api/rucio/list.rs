//! Listings: replicas of DIDs (`GET /replicas/{scope}/{name}`, `POST /replicas/list`, NDJSON or
//! metalink), dataset replicas (`GET /replicas/{scope}/{name}/datasets`,
//! `POST /replicas/datasets_bulk`, `GET /replicas/rse/{rse}`) and `POST /replicas/dids`.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    json_body, metalink, ndjson, negotiate, optional_bool, optional_list, optional_str, parse_dids,
    required_list, required_str, rfc1123_opt, rse_id, select_sites, strings, Result, RucioError,
    METALINK, NDJSON,
};
use crate::engines::catalogue::pfn;
use crate::engines::catalogue::view::{self, SiteInfo};
use crate::model::replica::{Did, Replica, ReplicaState};
use crate::state::AppState;

/// What a listing asks for.
struct ListRequest {
    dids: Vec<Did>,
    schemes: Option<Vec<String>>,
    rse_expression: Option<String>,
    all_states: bool,
    closeness: bool,
    limit: Option<usize>,
}

/// One copy as a listing shows it.
pub struct Located {
    pub rse: String,
    pub pfn: String,
    pub state: ReplicaState,
    pub priority: usize,
}

/// One file of a listing, its copies in priority order.
pub struct FileReplicas {
    pub did: Did,
    pub bytes: u64,
    pub adler32: Option<String>,
    pub sha256: Option<String>,
    pub copies: Vec<Located>,
}

#[derive(Deserialize, Default)]
pub struct DidQuery {
    schemes: Option<String>,
    select: Option<String>,
    sort: Option<String>,
    limit: Option<usize>,
}

/// `GET /replicas/{scope}/{name}` (available copies only), `.../{name}/datasets` and
/// `.../{name}/datasets_vp`.
pub async fn did(
    State(state): State<AppState>,
    Path((scope, rest)): Path<(String, String)>,
    Query(q): Query<DidQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    if rest.ends_with("/datasets_vp") {
        // Rucio without a Virtual Placement service (none here) answers `["other"]`.
        negotiate(&headers, &[NDJSON])?;
        return Ok(ndjson([json!("other")]));
    }
    if let Some(name) = rest.strip_suffix("/datasets") {
        // `deep` changes nothing: a dataset's replicas are always computed from its files.
        negotiate(&headers, &[NDJSON])?;
        let did = Did::new(scope, name);
        return Ok(ndjson(dataset_replicas(&state, &[did]).await?));
    }
    let format = negotiate(&headers, &[NDJSON, METALINK])?;
    let sort = q.select.or(q.sort);
    let req = ListRequest {
        dids: vec![Did::new(scope, rest)],
        schemes: q.schemes.as_deref().map(split_schemes),
        rse_expression: None,
        all_states: false,
        closeness: sort.as_deref() == Some("closeness"),
        limit: q.limit,
    };
    let files = list_files(&state, &req).await?;
    Ok(render(&files, format, false, false))
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    select: Option<String>,
    sort: Option<String>,
    limit: Option<usize>,
    /// Comma-separated, like the GET route's (the body's `schemes`, when given, wins).
    schemes: Option<String>,
}

/// `POST /replicas/list`.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let format = negotiate(&headers, &[NDJSON, METALINK])?;
    let p = json_body(&body)?;
    let sort = q
        .sort
        .or(q.select)
        .or(optional_str(&p, "sort")?.map(str::to_owned));
    let schemes = match super::present(&p, "schemes") {
        None => None,
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(a)) => Some(strings(a, "schemes")?),
        Some(_) => return Err(RucioError::type_error("'schemes' must be a list")),
    }
    .or_else(|| q.schemes.as_deref().map(split_schemes));
    let req = ListRequest {
        dids: parse_dids(optional_list(&p, "dids")?)?,
        schemes,
        rse_expression: optional_str(&p, "rse_expression")?.map(str::to_owned),
        all_states: optional_bool(&p, "all_states")?,
        closeness: sort.as_deref() == Some("closeness"),
        limit: q.limit,
    };
    let files = list_files(&state, &req).await?;
    Ok(render(&files, format, req.all_states, true))
}

fn split_schemes(text: &str) -> Vec<String> {
    text.split(',').map(|x| x.trim().to_owned()).collect()
}

fn render(files: &[FileReplicas], format: &str, all_states: bool, detailed: bool) -> Response {
    if format == METALINK {
        let xml = metalink::render(files, detailed);
        return ([(header::CONTENT_TYPE, METALINK)], xml).into_response();
    }
    ndjson(files.iter().map(|f| file_line(f, all_states)))
}

/// Rucio's per-file line of `list_replicas`.
fn file_line(f: &FileReplicas, all_states: bool) -> Value {
    let mut pfns = Map::new();
    let mut rses: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut states = Map::new();
    for c in &f.copies {
        pfns.insert(
            c.pfn.clone(),
            json!({
                "rse_id": rse_id(&c.rse), "rse": c.rse, "type": "DISK", "volatile": false,
                "domain": "wan", "priority": c.priority, "client_extract": false,
            }),
        );
        rses.entry(&c.rse).or_default().push(&c.pfn);
        states.insert(c.rse.clone(), json!(c.state.name()));
    }
    let mut line = json!({
        "scope": f.did.scope, "name": f.did.name, "bytes": f.bytes, "md5": null,
        "adler32": f.adler32, "pfns": pfns, "rses": rses,
        "parents": [format!("{0}:{0}", f.did.scope)],
    });
    if all_states {
        line["states"] = Value::Object(states);
    }
    line
}

/// The files the request names (datasets expanded), with their copies at the selected RSEs.
async fn list_files(state: &AppState, req: &ListRequest) -> Result<Vec<FileReplicas>> {
    let sites = view::sites(&state.catalogue).await?;
    let selected = select_sites(&sites, req.rse_expression.as_deref())?;
    let rows = view::replicas(&state.catalogue, &req.dids, &selected).await?;
    let files = by_file(&rows);
    let mut out = Vec::new();
    for did in &req.dids {
        let named = files_of(&files, did);
        if named.is_empty() {
            return Err(RucioError::not_found(
                "DataIdentifierNotFound",
                format!("Data identifier '{did}' not found"),
            ));
        }
        for (name, copies) in named {
            out.push(file_replicas(&did.scope, name, copies, &selected, req));
        }
    }
    Ok(out)
}

/// Rows grouped by file, in (bucket, name) order.
type ByFile<'a> = BTreeMap<(String, String), Vec<&'a Replica>>;

fn by_file(rows: &[Replica]) -> ByFile<'_> {
    let mut files = ByFile::new();
    for r in rows {
        files
            .entry((r.bucket.clone(), r.name.clone()))
            .or_default()
            .push(r);
    }
    files
}

/// A file DID names itself; a dataset DID (`b:b` without such an object) its bucket's files.
fn files_of<'f, 'a>(files: &'f ByFile<'a>, did: &Did) -> Vec<(&'f str, &'f [&'a Replica])> {
    let key = (did.scope.clone(), did.name.clone());
    if let Some(((_, name), copies)) = files.get_key_value(&key) {
        return vec![(name.as_str(), copies.as_slice())];
    }
    if !did.is_dataset() {
        return Vec::new();
    }
    files
        .range((did.scope.clone(), String::new())..)
        .take_while(|((bucket, _), _)| *bucket == did.scope)
        .map(|((_, name), copies)| (name.as_str(), copies.as_slice()))
        .collect()
}

fn file_replicas(
    bucket: &str,
    name: &str,
    rows: &[&Replica],
    selected: &[SiteInfo],
    req: &ListRequest,
) -> FileReplicas {
    // Size and checksums of the file: this site's row first, then any.
    let described = rows
        .iter()
        .find(|r| {
            selected.first().is_some_and(|s| s.local && s.id == r.site) && r.adler32.is_some()
        })
        .or_else(|| rows.iter().find(|r| r.adler32.is_some()))
        .or(rows.first());
    let mut shown: Vec<(&SiteInfo, &Replica)> = rows
        .iter()
        .filter(|r| req.all_states || r.state == ReplicaState::Available)
        .filter_map(|r| selected.iter().find(|s| s.id == r.site).map(|s| (s, *r)))
        .collect();
    shown.sort_by_key(|(s, _)| (req.closeness && !s.local, s.id.clone()));
    let mut copies: Vec<Located> = shown
        .into_iter()
        .map(|(s, r)| (pfn::build(&s.url, bucket, name), r))
        .filter(|(p, _)| {
            req.schemes
                .as_ref()
                .is_none_or(|schemes| schemes.iter().any(|x| x == pfn::scheme(p)))
        })
        .enumerate()
        .map(|(i, (p, r))| Located {
            rse: r.site.clone(),
            pfn: p,
            state: r.state,
            priority: i + 1,
        })
        .collect();
    if let Some(limit) = req.limit {
        copies.truncate(limit);
    }
    FileReplicas {
        did: Did::new(bucket, name),
        bytes: described.map(|r| r.bytes).unwrap_or(0),
        adler32: described.and_then(|r| r.adler32.clone()),
        sha256: described.and_then(|r| r.sha256.clone()),
        copies,
    }
}

// ---- dataset replicas ------------------------------------------------------------------------

/// `POST /replicas/datasets_bulk`.
pub async fn datasets_bulk(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    negotiate(&headers, &[NDJSON])?;
    let p = json_body(&body)?;
    let items = required_list(&p, "dids")?;
    if items.is_empty() {
        return Err(RucioError::value_error("List of DIDs is empty"));
    }
    let dids = parse_dids(items)
        .map_err(|e| RucioError::invalid_object(format!("Cannot validate DIDs: {}", e.message)))?;
    Ok(ndjson(dataset_replicas(&state, &dids).await?))
}

/// `GET /replicas/rse/{rse}`: the dataset replicas an RSE holds.
pub async fn at_rse(
    State(state): State<AppState>,
    Path(rse): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    negotiate(&headers, &[NDJSON])?;
    let sites = view::sites(&state.catalogue).await?;
    let site = super::find_site(&sites, &rse)?;
    let held = view::replicas_at(&state.catalogue, site).await?;
    let datasets: Vec<Did> = held
        .iter()
        .map(|r| r.bucket.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|b| Did::new(b.clone(), b))
        .collect();
    let all = view::replicas(&state.catalogue, &datasets, &sites).await?;
    let mut lines = Vec::new();
    for d in &datasets {
        lines.extend(dataset_lines(&all, &d.scope, Some(&rse)));
    }
    Ok(ndjson(lines))
}

/// Dataset replicas of these DIDs at every RSE (a file DID has none).
async fn dataset_replicas(state: &AppState, dids: &[Did]) -> Result<Vec<Value>> {
    let datasets: Vec<Did> = dids.iter().filter(|d| d.is_dataset()).cloned().collect();
    if datasets.is_empty() {
        return Ok(Vec::new());
    }
    let sites = view::sites(&state.catalogue).await?;
    let rows = view::replicas(&state.catalogue, &datasets, &sites).await?;
    Ok(datasets
        .iter()
        .flat_map(|d| dataset_lines(&rows, &d.scope, None))
        .collect())
}

/// One line per RSE holding files of the bucket: the dataset's size and file count, and how
/// much of it is AVAILABLE there.
fn dataset_lines(rows: &[Replica], bucket: &str, only: Option<&str>) -> Vec<Value> {
    let in_bucket: Vec<&Replica> = rows.iter().filter(|r| r.bucket == bucket).collect();
    let mut files: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &in_bucket {
        files.insert(&r.name, r.bytes);
    }
    let (length, bytes) = (files.len(), files.values().sum::<u64>());
    let mut per_site: BTreeMap<&str, Vec<&Replica>> = BTreeMap::new();
    for r in &in_bucket {
        per_site.entry(&r.site).or_default().push(r);
    }
    per_site
        .into_iter()
        .filter(|(site, _)| only.is_none_or(|o| o == *site))
        .map(|(site, copies)| {
            let available: Vec<&&Replica> = copies
                .iter()
                .filter(|r| r.state == ReplicaState::Available)
                .collect();
            let available_length = available.len();
            let state = if available_length == length {
                "AVAILABLE"
            } else {
                "UNAVAILABLE"
            };
            json!({
                "scope": bucket, "name": bucket, "rse": site, "rse_id": rse_id(site),
                "bytes": bytes, "length": length,
                "available_bytes": available.iter().map(|r| r.bytes).sum::<u64>(),
                "available_length": available_length, "state": state,
                "created_at": rfc1123_opt(copies.iter().map(|r| r.created_at).min()),
                "updated_at": rfc1123_opt(copies.iter().map(|r| r.updated_at).max()),
                "accessed_at": rfc1123_opt(copies.iter().filter_map(|r| r.accessed_at).max()),
            })
        })
        .collect()
}

// ---- PFNs to DIDs ----------------------------------------------------------------------------

/// `POST /replicas/dids`: `{pfn: {scope, name}}` per PFN of that RSE.
pub async fn dids(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    negotiate(&headers, &[NDJSON])?;
    let p = json_body(&body)?;
    let rse = required_str(&p, "rse")?;
    let pfns = strings(optional_list(&p, "pfns")?, "pfns")?;
    let sites = view::sites(&state.catalogue).await?;
    let site = super::find_site(&sites, rse)?;
    let mut lines = Vec::new();
    for p in &pfns {
        match pfn::parse(std::slice::from_ref(site), p) {
            Some((_, bucket, key)) => {
                lines.push(json!({ p.as_str(): { "scope": bucket, "name": key } }))
            }
            None => {
                return Err(RucioError::new(
                    http::StatusCode::BAD_REQUEST,
                    "InvalidPath",
                    format!("PFN {p} does not belong to RSE {rse}"),
                ))
            }
        }
    }
    Ok(ndjson(lines))
}
