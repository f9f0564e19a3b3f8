//! The read-only DID and RSE routes the stock Rucio client calls before listing replicas
//! (`rucio replica list file|dataset` ask `GET /dids/{scope}/{name}/meta` and `GET /rses/`
//! first). A bucket is a scope and a dataset (`<bucket>:<bucket>`), an object a file of that
//! dataset, a site an RSE. Every answer is built from the live replica catalogue.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::HeaderMap;
use serde_json::{json, Value};

use super::{
    json_body, ndjson, negotiate, optional_list, parse_dids, rfc1123_opt, rse_id, select_sites,
    Result, RucioError, NDJSON,
};
use crate::engines::catalogue::view::{self, SiteInfo};
use crate::model::replica::{Did, Replica, ReplicaState};
use crate::state::AppState;

/// What the catalogue knows about one DID.
enum Described {
    File {
        did: Did,
        copies: Vec<Replica>,
    },
    Dataset {
        did: Did,
        files: Vec<(String, Vec<Replica>)>,
    },
}

fn not_found(did: &Did) -> RucioError {
    RucioError::not_found(
        "DataIdentifierNotFound",
        format!("Data identifier '{did}' not found"),
    )
}

/// The DID as a file (an object with copies) or, for `b:b`, as the bucket's dataset.
async fn describe(state: &AppState, did: Did) -> Result<Described> {
    let sites = view::sites(&state.catalogue).await?;
    let rows = view::replicas(&state.catalogue, std::slice::from_ref(&did), &sites).await?;
    let copies: Vec<Replica> = rows
        .iter()
        .filter(|r| r.bucket == did.scope && r.name == did.name)
        .cloned()
        .collect();
    if !copies.is_empty() {
        return Ok(Described::File { did, copies });
    }
    if !did.is_dataset() {
        return Err(not_found(&did));
    }
    let mut files: Vec<(String, Vec<Replica>)> = Vec::new();
    for r in rows.into_iter().filter(|r| r.bucket == did.scope) {
        match files.last_mut() {
            Some((name, copies)) if *name == r.name => copies.push(r),
            _ => files.push((r.name.clone(), vec![r])),
        }
    }
    if files.is_empty() {
        return Err(not_found(&did));
    }
    Ok(Described::Dataset { did, files })
}

/// The copy whose size and checksums describe a file (an AVAILABLE one first).
fn described_by(copies: &[Replica]) -> Option<&Replica> {
    copies
        .iter()
        .find(|r| r.state == ReplicaState::Available && r.adler32.is_some())
        .or_else(|| copies.iter().find(|r| r.adler32.is_some()))
        .or(copies.first())
}

/// Rucio's DID record (`get_did`, and the DID_COLUMN metadata).
fn record(d: &Described) -> Value {
    match d {
        Described::File { did, copies } => {
            let r = described_by(copies);
            let available = copies.iter().any(|c| c.state == ReplicaState::Available);
            json!({
                "scope": did.scope, "name": did.name, "type": "FILE", "did_type": "FILE",
                "account": "root", "bytes": r.map(|r| r.bytes), "length": null,
                "md5": null, "adler32": r.and_then(|r| r.adler32.clone()),
                "sha256": r.and_then(|r| r.sha256.clone()),
                "availability": if available { "AVAILABLE" } else { "LOST" },
                "is_open": null, "monotonic": false, "hidden": false, "obsolete": false,
                "complete": null, "suppressed": false, "purge_replicas": true,
                "expired_at": null, "deleted_at": null, "guid": null, "events": null,
                "is_archive": null, "constituent": null,
                "created_at": rfc1123_opt(copies.iter().map(|c| c.created_at).min()),
                "updated_at": rfc1123_opt(copies.iter().map(|c| c.updated_at).max()),
                "accessed_at": rfc1123_opt(copies.iter().filter_map(|c| c.accessed_at).max()),
            })
        }
        Described::Dataset { did, files } => {
            let bytes: u64 = files
                .iter()
                .filter_map(|(_, c)| described_by(c).map(|r| r.bytes))
                .sum();
            let all = files.iter().flat_map(|(_, c)| c.iter());
            json!({
                "scope": did.scope, "name": did.name, "type": "DATASET", "did_type": "DATASET",
                "account": "root", "bytes": bytes, "length": files.len(),
                "md5": null, "adler32": null, "availability": "AVAILABLE",
                "is_open": true, "monotonic": false, "hidden": false, "obsolete": false,
                "complete": null, "suppressed": false, "purge_replicas": true,
                "expired_at": null, "deleted_at": null, "guid": null, "events": null,
                "is_archive": null, "constituent": null,
                "created_at": rfc1123_opt(all.clone().map(|c| c.created_at).min()),
                "updated_at": rfc1123_opt(all.clone().map(|c| c.updated_at).max()),
                "accessed_at": rfc1123_opt(all.filter_map(|c| c.accessed_at).max()),
            })
        }
    }
}

/// One file line of `list_files`.
fn file_line(scope: &str, name: &str, copies: &[Replica]) -> Value {
    let r = described_by(copies);
    json!({
        "scope": scope, "name": name, "bytes": r.map(|r| r.bytes),
        "adler32": r.and_then(|r| r.adler32.clone()), "guid": null, "events": null,
    })
}

/// The query's `key=value` pairs (decoded); a malformed query is Rucio's `ValueError`.
fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or(""))
        .map_err(|e| RucioError::value_error(format!("invalid query string: {e}")))
}

fn query_value<'a>(pairs: &'a [(String, String)], key: &str) -> Result<Option<&'a str>> {
    let mut found = pairs.iter().filter(|(k, _)| k == key);
    let first = found.next().map(|(_, v)| v.as_str());
    if found.next().is_some() {
        return Err(RucioError::value_error(format!(
            "query parameter '{key}' given more than once"
        )));
    }
    Ok(first)
}

fn query_flag(pairs: &[(String, String)], key: &str) -> Result<bool> {
    match query_value(pairs, key)? {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" || v.is_empty() => Ok(false),
        Some(v) => Err(RucioError::value_error(format!(
            "query parameter '{key}' must be true or false, not {v:?}"
        ))),
    }
}

/// `GET /dids/{scope}/{name}`.
pub async fn get_did(
    State(state): State<AppState>,
    Path((scope, name)): Path<(String, String)>,
) -> Result<Response> {
    let d = describe(&state, Did::new(scope, name)).await?;
    Ok(Json(record(&d)).into_response())
}

/// `GET /dids/{scope}/{name}/meta` (the `DID_COLUMN` plugin; other plugins add nothing).
pub async fn meta(
    State(state): State<AppState>,
    Path((scope, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    query_pairs(query.as_deref())?;
    let d = describe(&state, Did::new(scope, name)).await?;
    Ok(Json(record(&d)).into_response())
}

/// `POST /dids/bulkmeta`: `{"dids": [...]}`, one metadata line per DID.
pub async fn bulk_meta(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    negotiate(&headers, &[NDJSON])?;
    let p = json_body(&body)?;
    let dids = parse_dids(optional_list(&p, "dids")?)?;
    let mut lines = Vec::new();
    for did in dids {
        lines.push(record(&describe(&state, did).await?));
    }
    Ok(ndjson(lines))
}

/// `GET /dids/{scope}/{name}/files`.
pub async fn files(
    State(state): State<AppState>,
    Path((scope, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    negotiate(&headers, &[NDJSON])?;
    let lines = match describe(&state, Did::new(scope, name)).await? {
        Described::File { did, copies } => vec![file_line(&did.scope, &did.name, &copies)],
        Described::Dataset { did, files } => files
            .iter()
            .map(|(name, copies)| file_line(&did.scope, name, copies))
            .collect(),
    };
    Ok(ndjson(lines))
}

/// `GET /dids/{scope}/` (`scope_list`): the DID named by `?name=` (a file with its dataset as
/// parent, or the dataset, with its files when `recursive`); without a name the scope's dataset.
pub async fn scope_list(
    State(state): State<AppState>,
    Path(scope): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    negotiate(&headers, &[NDJSON])?;
    let pairs = query_pairs(query.as_deref())?;
    let name = query_value(&pairs, "name")?.unwrap_or(&scope).to_owned();
    let recursive = query_flag(&pairs, "recursive")?;
    let parent = json!({ "scope": scope, "name": scope });
    let lines = match describe(&state, Did::new(&scope, &name)).await {
        Ok(Described::File { did, .. }) => vec![json!({
            "scope": did.scope, "name": did.name, "type": "FILE", "parent": parent, "level": 1,
        })],
        Ok(Described::Dataset { did, files }) => {
            let mut lines = vec![json!({
                "scope": did.scope, "name": did.name, "type": "DATASET", "parent": null,
                "level": 0,
            })];
            if recursive {
                lines.extend(files.iter().map(|(name, _)| {
                    json!({
                        "scope": did.scope, "name": name, "type": "FILE", "parent": parent,
                        "level": 1,
                    })
                }));
            }
            lines
        }
        Err(e) if e.class == "DataIdentifierNotFound" => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(ndjson(lines))
}

/// An RSE as Rucio describes it; its one protocol is the PFN prefix of `catalogue::pfn`.
fn rse_record(site: &SiteInfo) -> Value {
    let uri = site.url.parse::<http::Uri>().ok();
    let scheme = uri.as_ref().and_then(|u| u.scheme_str().map(str::to_owned));
    let host = uri
        .as_ref()
        .and_then(|u| u.host().map(str::to_owned))
        .unwrap_or_default();
    let port = uri.as_ref().and_then(|u| {
        u.port_u16().or(match u.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        })
    });
    let prefix = format!(
        "{}/replicator/remote/buckets/",
        uri.as_ref()
            .map(|u| u.path().trim_end_matches('/'))
            .unwrap_or("")
    );
    let availability = if site.up { 7 } else { 0 };
    let protocol = json!({
        "scheme": scheme, "hostname": host, "port": port, "prefix": prefix,
        "impl": "rucio.rse.protocols.webdav.Default", "extended_attributes": null,
        "domains": {
            "lan": { "read": 1, "write": 1, "delete": 1 },
            "wan": { "read": 1, "write": 1, "delete": 1, "third_party_copy_read": 1,
                     "third_party_copy_write": 1 },
        },
    });
    let mut record = json!({
        "id": rse_id(&site.id), "rse": site.id, "vo": "def", "rse_type": "DISK",
        "deterministic": true, "volatile": false, "staging_area": false,
        "availability": availability, "availability_read": site.up,
        "availability_write": site.up, "availability_delete": site.up,
        "lfn2pfn_algorithm": "identity", "verify_checksum": true, "domain": ["wan"],
        "protocols": [protocol],
    });
    for key in [
        "city",
        "region_code",
        "country_name",
        "continent",
        "time_zone",
        "ISP",
        "ASN",
        "longitude",
        "latitude",
        "qos_class",
        "sign_url",
        "credentials",
    ] {
        record[key] = Value::Null;
    }
    record
}

/// `GET /rses/` (`?expression=`: a site id, `*` or a union `a|b`).
pub async fn list_rses(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    negotiate(&headers, &[NDJSON])?;
    let pairs = query_pairs(query.as_deref())?;
    let expression = query_value(&pairs, "expression")?;
    let sites = view::sites(&state.catalogue).await?;
    let selected = select_sites(&sites, expression)?;
    Ok(ndjson(selected.iter().map(rse_record)))
}

/// `GET /rses/{rse}`.
pub async fn get_rse(State(state): State<AppState>, Path(rse): Path<String>) -> Result<Response> {
    let sites = view::sites(&state.catalogue).await?;
    let site = super::find_site(&sites, &rse)?;
    Ok(Json(rse_record(site)).into_response())
}
