//! CCS replicator routes. `/replicator/remote/...` answers from this site's own store;
//! `/replicator/local/...` finds the object through the topology and streams it from the site
//! that holds it, verifying size and SHA-256 on the way.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::{StreamExt, TryStreamExt};
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;

use super::accessor::{
    self, object_type, readable_bucket, readable_object, serve_object, type_header,
};
use crate::core::objects::{self, Verification};
use crate::core::stream::Verify;
use crate::core::wire::{wants_json, wants_zstd, HASH, SIZE, VERIFY, VERIFY_BY_RECEIVER};
use crate::engines::replication::prefetch::{self, PrefetchHint, UploadStatus};
use crate::engines::topology::{Caller, Located, Target};
use crate::error::{Error, Kind, Origin, Result};
use crate::http::common::{no_content, ClientId, OpId, CLIENT_ID, OP_ID, TARGET_ID};
use crate::http::peer::PeerSite;
use crate::state::AppState;
use crate::storage::ByteStream;

/// Reads a peer makes of this site's own copies (trust class: peer).
pub fn remote_routes() -> Router<AppState> {
    Router::new()
        .route("/replicator/remote/inventory", get(inventory))
        .route(
            "/replicator/remote/buckets/{bucket}",
            get(accessor::get_bucket).head(remote_head_bucket),
        )
        .route(
            "/replicator/remote/buckets/{bucket}/{*object}",
            get(remote_get_object).head(remote_head_object),
        )
        .route("/replicator/remote/reports", post(corrupt_report))
        .route(
            "/replicator/remote/blocks/{bucket}/{*object}",
            get(remote_blocks),
        )
        .route("/replicator/remote/prefetch", post(prefetch_hint))
        .route("/replicator/remote/uploads/{id}", get(upload_status))
        .route(
            "/replicator/remote/uploads/{id}/blocks/{index}",
            get(upload_block),
        )
}

/// Reads a client makes through the topology (trust class: client).
pub fn local_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/replicator/local/buckets/{bucket}",
            get(local_get).head(local_head),
        )
        .route(
            "/replicator/local/buckets/{bucket}/{*object}",
            get(local_get).head(local_head),
        )
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CheckQuery {
    #[serde(default, deserialize_with = "crate::http::common::lenient_bool")]
    full_check: bool,
}

fn not_found_none() -> Response {
    (StatusCode::NOT_FOUND, type_header("NONE")).into_response()
}

// ---- remote: this site's own store -------------------------------------------------------

/// `HEAD /replicator/remote/buckets/{bucket}`: 204 BUCKET for a live bucket the client can
/// read; with `fullCheck=true` the storage must hold the bucket too.
async fn remote_head_bucket(
    State(state): State<AppState>,
    ClientId(client): ClientId,
    Query(q): Query<CheckQuery>,
    Path(bucket): Path<String>,
) -> Result<Response> {
    match readable_bucket(&state, &client, &bucket).await {
        Ok(_) => {
            if q.full_check && !state.storage.has_bucket(&bucket).await? {
                tracing::warn!(bucket = %bucket, "fullCheck: the bucket is missing from storage");
                return Ok(not_found_none());
            }
            Ok(no_content(type_header("BUCKET")))
        }
        Err(e) if e.kind == Kind::BadRequest => Err(e),
        Err(_) => Ok(not_found_none()),
    }
}

/// `fullCheck` of one stored copy: storage must hold the recorded size, and a small object
/// (read whole in one step) must match its recorded SHA-256 as well (a mismatch declares
/// the copy bad, which queues its repair).
async fn copy_checks_out(
    state: &AppState,
    obj: &crate::model::object::Object,
    op_id: &str,
) -> Result<bool> {
    if state.storage.stat(&obj.bucket, &obj.name).await? != Some(obj.size) {
        tracing::warn!(bucket = %obj.bucket, object = %obj.name, "fullCheck: stored size differs from the recorded one");
        return Ok(false);
    }
    if obj.size > objects::SMALL_OBJECT {
        return Ok(true);
    }
    match objects::read_verified(&state.site, obj, op_id).await {
        Ok(_) => Ok(true),
        Err(e) if e.message.starts_with(objects::INTEGRITY_FAILURE) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn remote_get_object(
    State(state): State<AppState>,
    ClientId(client): ClientId,
    OpId(op_id): OpId,
    Path((bucket, name)): Path<(String, String)>,
    req_headers: HeaderMap,
) -> Result<Response> {
    let obj = match readable_object(&state, &client, &bucket, &name).await {
        Err(e) if e.kind == Kind::NotFound => {
            return Err(deleting_is_not_gone(&state, &bucket, &name, e).await)
        }
        other => other?,
    };
    let verification = verification_asked(&req_headers);
    serve_object(&state, obj, &op_id, &req_headers, verification).await
}

/// `GET /replicator/remote/blocks/{bucket}/{*object}` (trust class: peer): the block hashes
/// of this site's copy with the object's headers, for a pull by ranges; 404 when none were
/// recorded (the peer then pulls the object as one stream).
async fn remote_blocks(
    State(state): State<AppState>,
    ClientId(client): ClientId,
    Path((bucket, name)): Path<(String, String)>,
) -> Result<Response> {
    let obj = readable_object(&state, &client, &bucket, &name).await?;
    let hash = obj.hash.clone().unwrap_or_default();
    let Some(blocks) = state.meta.blocks_of(&bucket, &name, &hash).await? else {
        return Err(Error::not_found(format!(
            "no block hashes recorded for {bucket}/{name}"
        )));
    };
    let list = crate::engines::replication::ranged::BlockList {
        block_size: blocks.block_size,
        digests: blocks.to_hex(),
    };
    Ok((crate::core::wire::object_headers(&obj), axum::Json(list)).into_response())
}

/// `POST /replicator/remote/prefetch` (trust class: peer): a peer started a large upload;
/// this site follows it (see `replication::prefetch`). 202 when it does, 200 when it leaves
/// the object to its order (enough prefetches running), 403 when an authenticated caller
/// speaks for another site.
async fn prefetch_hint(
    State(state): State<AppState>,
    caller: Option<axum::Extension<PeerSite>>,
    axum::Json(hint): axum::Json<PrefetchHint>,
) -> Result<StatusCode> {
    if let Some(axum::Extension(PeerSite(site))) = &caller {
        if *site != hint.site {
            return Err(Error::forbidden(format!(
                "site {site} cannot announce an upload of site {}",
                hint.site
            )));
        }
    }
    if !state.topology.is_peer_site(&hint.site).await? {
        return Err(Error::forbidden(format!(
            "{} is not a peer of this site",
            hint.site
        )));
    }
    Ok(if prefetch::follow(&state.replication, hint) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    })
}

/// `GET /replicator/remote/uploads/{id}` (trust class: peer): what a peer may pull now of
/// an upload in progress here (`core::uploads`); 404 when this process does not know it.
async fn upload_status(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let upload = upload_in_progress(&state, &id)?;
    let status = tokio::task::spawn_blocking(move || UploadStatus::of(&upload))
        .await
        .map_err(|e| Error::internal(e.to_string()))?;
    Ok(axum::Json(status).into_response())
}

/// `GET /replicator/remote/uploads/{id}/blocks/{index}` (trust class: peer): one completed
/// block of an upload in progress, as written (the peer checks it against its digest); 404
/// when it is not complete, or the upload ended.
async fn upload_block(
    State(state): State<AppState>,
    Path((id, index)): Path<(String, u64)>,
) -> Result<Response> {
    let upload = upload_in_progress(&state, &id)?;
    let block = tokio::task::spawn_blocking(move || upload.read_block(index))
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
    let Some(block) = block else {
        return Err(Error::not_found(format!(
            "block {index} of upload {id} is not readable"
        )));
    };
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from(block),
    )
        .into_response())
}

fn upload_in_progress(
    state: &AppState,
    id: &str,
) -> Result<std::sync::Arc<crate::core::uploads::UploadProgress>> {
    state
        .uploads
        .get(id)
        .ok_or_else(|| Error::not_found(format!("no upload {id} in progress here")))
}

/// A verifying peer asks for the bytes as stored (`wire::VERIFY`). Honoured here only: these
/// routes are authenticated as peer, a client's reads are always verified by this site.
fn verification_asked(h: &HeaderMap) -> Verification {
    match h.get(VERIFY).and_then(|v| v.to_str().ok()) {
        Some(VERIFY_BY_RECEIVER) => Verification::ByReceiver,
        _ => Verification::Here,
    }
}

/// What a peer reports about a copy of this site it could not verify.
#[derive(Deserialize)]
struct CorruptReport {
    bucket: String,
    name: String,
    hash: String,
    reason: String,
}

/// `POST /replicator/remote/reports` (trust class: peer): a peer that pulled one of this
/// site's copies unhashed found that the bytes do not match; this site re-reads its copy now
/// and declares it BAD if it fails (see `healing::reported_by_peer`). 202, or 404 when this
/// site does not hold that version.
async fn corrupt_report(
    State(state): State<AppState>,
    axum::Json(r): axum::Json<CorruptReport>,
) -> Result<StatusCode> {
    let reason: String = r.reason.chars().take(500).collect();
    let held = crate::engines::catalogue::healing::reported_by_peer(
        &state.catalogue,
        &r.bucket,
        &r.name,
        &r.hash,
        &reason,
    )
    .await?;
    Ok(if held {
        StatusCode::ACCEPTED
    } else {
        StatusCode::NOT_FOUND
    })
}

/// A peer pulling an object whose delete is under way here gets a 503 (retry), not a 404:
/// the delete may still fail and leave the object READY, and a 404 would tell the peer that
/// its order's version is gone for good.
async fn deleting_is_not_gone(
    state: &AppState,
    bucket: &str,
    name: &str,
    not_found: Error,
) -> Error {
    match state.meta.get_object(bucket, name).await {
        Ok(Some(obj)) if obj.status == crate::model::object::Status::Deleting => Error::new(
            Kind::Unavailable,
            Origin::Internal,
            format!("{bucket}/{name} is being deleted here"),
        ),
        _ => not_found,
    }
}

async fn remote_head_object(
    State(state): State<AppState>,
    ClientId(client): ClientId,
    OpId(op_id): OpId,
    Query(q): Query<CheckQuery>,
    Path((bucket, name)): Path<(String, String)>,
) -> Result<Response> {
    crate::model::names::check_object(&name)?;
    if readable_bucket(&state, &client, &bucket).await.is_err() {
        return Ok(not_found_none());
    }
    match object_type(&state, &bucket, &name).await? {
        Some((kind, Some(obj))) => {
            // fullCheck: the bytes must be in storage too, and check out.
            if q.full_check && !copy_checks_out(&state, &obj, &op_id).await? {
                return Ok(not_found_none());
            }
            let mut h = crate::core::wire::object_headers(&obj);
            h.extend(type_header(kind));
            Ok(no_content(h))
        }
        Some((kind, None)) => Ok(no_content(type_header(kind))),
        None => Ok(not_found_none()),
    }
}

// ---- local: through the topology ---------------------------------------------------------

fn pinned(headers: &HeaderMap) -> Option<String> {
    headers
        .get(&TARGET_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn with_target(mut resp: Response, site: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(site) {
        resp.headers_mut().insert(TARGET_ID, v);
    }
    resp
}

/// `{bucket}` or `{bucket}/{*object}` of a local route, names checked.
#[derive(Deserialize)]
struct TargetPath {
    bucket: String,
    object: Option<String>,
}

impl TargetPath {
    fn checked(self) -> Result<Target> {
        crate::model::names::check_bucket(&self.bucket)?;
        if let Some(name) = &self.object {
            crate::model::names::check_object(name)?;
        }
        Ok(Target {
            bucket: self.bucket,
            object: self.object,
        })
    }
}

async fn local_head(
    State(state): State<AppState>,
    ClientId(client): ClientId,
    OpId(op_id): OpId,
    Query(q): Query<CheckQuery>,
    Path(path): Path<TargetPath>,
    req_headers: HeaderMap,
) -> Result<Response> {
    let target = path.checked()?;
    let caller = Caller {
        client_id: &client,
        op_id: &op_id,
    };
    head_through(&state, &target, &caller, pinned(&req_headers), q.full_check)
        .await
        .map_err(for_client)
}

/// With `full_check`, the peers check their storage before answering (see
/// `remote_head_object`), and no cached location is trusted.
async fn head_through(
    state: &AppState,
    target: &Target,
    caller: &Caller<'_>,
    pinned: Option<String>,
    full_check: bool,
) -> Result<Response> {
    match state
        .topology
        .locate_checked(target, caller, pinned.as_deref(), full_check)
        .await?
    {
        Some(Located { site, kind }) => {
            let kind: &'static str = match kind.as_str() {
                "OBJECT" => "OBJECT",
                "DIRECTORY" => "DIRECTORY",
                _ => "BUCKET",
            };
            Ok(with_target(no_content(type_header(kind)), &site.id))
        }
        None => Ok(not_found_none()),
    }
}

async fn local_get(
    State(state): State<AppState>,
    ClientId(client): ClientId,
    OpId(op_id): OpId,
    Path(path): Path<TargetPath>,
    req_headers: HeaderMap,
) -> Result<Response> {
    let target = path.checked()?;
    let caller = Caller {
        client_id: &client,
        op_id: &op_id,
    };
    fetch_through(&state, &target, &caller, pinned(&req_headers), &req_headers).await
}

/// Errors of the peers (unreachable, failing, corrupt copy: `BadGateway` inside) are
/// answered to clients as 500, a status CCS lists, with the message saying what happened.
fn for_client(e: Error) -> Error {
    match e.kind {
        Kind::BadGateway | Kind::GatewayTimeout | Kind::Unavailable => {
            Error::new(Kind::Internal, Origin::Upstream, e.message)
        }
        _ => e,
    }
}

/// Locates the target and streams it from the site holding it. A location that turns out
/// stale (the site lost it, is unreachable, or its copy is corrupt) is dropped and the
/// lookup done once more.
pub async fn fetch_through(
    state: &AppState,
    target: &Target,
    caller: &Caller<'_>,
    pinned: Option<String>,
    req_headers: &HeaderMap,
) -> Result<Response> {
    fetch_through_peers(state, target, caller, pinned, req_headers)
        .await
        .map_err(for_client)
}

/// 404, or 410 when the target is a bucket known as deleted, here or at a peer (a site that
/// never held the bucket asks them).
async fn nowhere(state: &AppState, target: &Target, caller: &Caller<'_>) -> Error {
    if target.object.is_none() {
        let gone = || Error::gone(format!("bucket {} is deleted", target.bucket));
        match state.meta.get_bucket(&target.bucket).await {
            Ok(Some(b)) if b.status == crate::model::object::Status::Deleted => return gone(),
            Ok(None)
                if state
                    .topology
                    .deleted_at_a_peer(&target.bucket, caller)
                    .await =>
            {
                return gone()
            }
            _ => {}
        }
    }
    Error::not_found(format!("{} not found at any site", describe(target)))
}

async fn fetch_through_peers(
    state: &AppState,
    target: &Target,
    caller: &Caller<'_>,
    pinned: Option<String>,
    req_headers: &HeaderMap,
) -> Result<Response> {
    for attempt in 0..2 {
        let Some(located) = state
            .topology
            .locate(target, caller, pinned.as_deref())
            .await?
        else {
            return Err(nowhere(state, target, caller).await);
        };
        match fetch_from(state, &located, target, caller, req_headers).await {
            Err(e) if attempt == 0 && pinned.is_none() && worth_another_lookup(&e) => {
                state
                    .topology
                    .invalidate(&target.bucket, target.object.as_deref());
            }
            other => return other.map(|resp| with_target(resp, &located.site.id)),
        }
    }
    Err(nowhere(state, target, caller).await)
}

/// The site no longer has it, or cannot be reached: the location (maybe cached) is stale,
/// another site may hold a copy.
fn worth_another_lookup(e: &Error) -> bool {
    matches!(e.kind, Kind::NotFound | Kind::Gone | Kind::BadGateway)
}

fn describe(t: &Target) -> String {
    match &t.object {
        Some(o) => format!("object {}/{o}", t.bucket),
        None => format!("bucket {}", t.bucket),
    }
}

/// GETs the target from one site and relays the answer; object bytes are verified on the way.
/// A `Range` is passed on (without zstd: ranges are of the stored bytes); the peer's 206 is
/// relayed as it comes (a part cannot be checked against the whole object's hash), its 416
/// with its `Content-Range`.
async fn fetch_from(
    state: &AppState,
    located: &Located,
    target: &Target,
    caller: &Caller<'_>,
    req_headers: &HeaderMap,
) -> Result<Response> {
    let site = &located.site;
    let url = format!("{}{}", site.uri.trim_end_matches('/'), target.remote_path());
    let json = target.object.is_none() || wants_json(req_headers);
    let range = req_headers.get(header::RANGE).filter(|_| !json);
    let zstd = !json && range.is_none() && wants_zstd(req_headers);
    let mut request = state
        .topology
        .peer_request(http::Method::GET, &url)
        .header(CLIENT_ID, caller.client_id)
        .header(OP_ID, caller.op_id);
    if json {
        request = request.header(header::ACCEPT, "application/json");
    } else {
        request = request.header(header::ACCEPT, "application/octet-stream");
    }
    if zstd {
        request = request.header(header::ACCEPT_ENCODING, "zstd");
    }
    if !json && range.is_none() {
        // The whole object is verified here (relay_body): the holder need not hash it too.
        request = request.header(VERIFY, VERIFY_BY_RECEIVER);
    }
    if let Some(range) = range {
        request = request.header(header::RANGE, range.clone());
        if let Some(if_range) = req_headers.get(header::IF_RANGE) {
            request = request.header(header::IF_RANGE, if_range.clone());
        }
    }
    let started = Instant::now();
    let resp = request.send().await;
    state.topology.record(&site.id, resp.is_ok(), started);
    let resp = resp.map_err(|e| {
        Error::upstream(
            Kind::BadGateway,
            format!("site {} unreachable: {e}", site.id),
        )
    })?;
    if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
        return Ok(accessor::range_not_satisfiable(
            resp.headers().get(header::CONTENT_RANGE).cloned(),
        ));
    }
    if !resp.status().is_success() {
        return Err(relay_error(&site.id, &resp));
    }
    let partial = resp.status() == StatusCode::PARTIAL_CONTENT && range.is_some();
    let mut out = HeaderMap::new();
    for (name, value) in resp.headers() {
        let n = name.as_str();
        if (n.starts_with("x-clonecloudstore-") && name != OP_ID && n != "x-clonecloudstore-module")
            || name == header::CONTENT_TYPE
            || name == header::CONTENT_ENCODING
            || (name == header::CONTENT_LENGTH && !zstd)
            || (partial && (name == header::CONTENT_RANGE || name == header::ACCEPT_RANGES))
        {
            out.insert(HeaderName::from(name), value.clone());
        }
    }
    let small =
        !partial && !json && announced_size(&out).is_some_and(|s| s <= objects::SMALL_OBJECT);
    let mut body = if partial {
        into_stream(resp, site.id.clone())
    } else {
        relay_body(state, target, &site.id, resp, caller.op_id, zstd, json)?
    };
    if small {
        let whole = whole_verified(body, &site.id).await?;
        body = Box::pin(futures::stream::once(async move { Ok(whole) }));
    }
    let stream: ByteStream = Box::pin(objects::Metered::new(body));
    let mut response = Response::new(Body::from_stream(stream));
    if partial {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    *response.headers_mut() = out;
    Ok(response)
}

fn announced_size(h: &HeaderMap) -> Option<u64> {
    h.get(SIZE)?.to_str().ok()?.parse().ok()
}

/// A small object's verified body, read whole before anything is answered: the holder sent
/// it unhashed, and a copy that fails the check here (reported to the holder by the
/// verifier) is then a clean error rather than a cut 200. At most `SMALL_OBJECT` bytes plus
/// one chunk are held: the verifier fails a longer body.
async fn whole_verified(mut body: ByteStream, site: &str) -> Result<bytes::Bytes> {
    let mut whole = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => whole.extend_from_slice(&c),
            Err(e) if e.origin == Origin::Storage => {
                return Err(Error::upstream(
                    Kind::BadGateway,
                    format!(
                        "the copy at site {site} is corrupt, no good copy could be read: {}: {}",
                        objects::INTEGRITY_FAILURE,
                        e.message
                    ),
                ))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(whole.freeze())
}

/// The peer's body as a stream; object bytes are wrapped in verification of the size and
/// hash the peer announced (a mismatch is reported to the peer, which streamed them unhashed).
fn relay_body(
    state: &AppState,
    target: &Target,
    site: &str,
    resp: reqwest::Response,
    op_id: &str,
    zstd: bool,
    json: bool,
) -> Result<ByteStream> {
    let header_text = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let expected_hash = header_text(HASH);
    let expected_size = header_text(SIZE).and_then(|s| s.parse::<u64>().ok());
    let raw = into_stream(resp, site.to_owned());
    if json {
        return Ok(raw);
    }
    let (Some(hash), Some(size)) = (expected_hash, expected_size) else {
        return Err(Error::upstream(
            Kind::BadGateway,
            format!("site {site} sent an object without size and hash"),
        ));
    };
    let (op_id, peer) = (op_id.to_owned(), site.to_owned());
    let (replication, bucket) = (state.replication.clone(), target.bucket.clone());
    let (name, version) = (target.object.clone().unwrap_or_default(), hash.clone());
    let on_mismatch = Box::new(move |what: &str| {
        metrics::counter!("mirrorgate_hash_mismatches_total", "source" => "peer").increment(1);
        tracing::error!(op_id = %op_id, peer = %peer, "integrity failure on read-through, transfer aborted: {what}");
        crate::engines::replication::applier::report_corrupt(
            &replication,
            &peer,
            &bucket,
            &name,
            &version,
            what,
        );
    });
    Ok(if zstd {
        Box::pin(Verify::compressed(raw, &hash, size, on_mismatch)?)
    } else {
        Box::pin(Verify::new(raw, &hash, size, on_mismatch))
    })
}

/// Maps a peer's error status to ours, keeping its message.
fn relay_error(site: &str, resp: &reqwest::Response) -> Error {
    let message = resp
        .headers()
        .get(crate::http::common::ERROR)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    // A 404 stays a 404 (a copy declared bad is not served; the reader goes on).
    if message.starts_with(objects::INTEGRITY_FAILURE) && resp.status() != StatusCode::NOT_FOUND {
        return Error::upstream(
            Kind::BadGateway,
            format!("the copy at site {site} is corrupt, no good copy could be read: {message}"),
        );
    }
    let kind = match resp.status() {
        StatusCode::NOT_FOUND => Kind::NotFound,
        StatusCode::GONE => Kind::Gone,
        StatusCode::FORBIDDEN => Kind::Forbidden,
        StatusCode::BAD_REQUEST => Kind::BadRequest,
        StatusCode::NOT_ACCEPTABLE => Kind::NotAcceptable,
        _ => Kind::BadGateway,
    };
    Error::upstream(
        kind,
        format!("site {site} answered {}: {message}", resp.status()),
    )
}

fn into_stream(resp: reqwest::Response, site: String) -> ByteStream {
    Box::pin(resp.bytes_stream().map_err(move |e| {
        Error::upstream(
            Kind::BadGateway,
            format!("stream from site {site} broke: {e}"),
        )
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InventoryQuery {
    after_bucket: Option<String>,
    after_name: Option<String>,
    limit: Option<i64>,
}

/// `GET /replicator/remote/inventory`: this site's READY objects (bucket, name, size, hash,
/// owner) as NDJSON, one page in (bucket, name) order. Used between sites (DR test failover).
async fn inventory(
    State(state): State<AppState>,
    Query(q): Query<InventoryQuery>,
) -> Result<Response> {
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let after = q.after_bucket.as_deref().zip(q.after_name.as_deref());
    let items = state.meta.inventory(after, limit).await?;
    let mut body = Vec::new();
    for item in &items {
        serde_json::to_writer(&mut body, item).map_err(|e| Error::internal(e.to_string()))?;
        body.push(b'\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}
