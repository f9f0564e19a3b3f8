//! The CCS accessor public API under `/cloudclonestore`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::Utc;
use futures::TryStreamExt;
use http::{header, HeaderMap, HeaderValue, StatusCode};

use crate::core::objects::{self, encode_for_client, Expected, Payload, Verification};
use crate::core::stream;
use crate::core::wire::{self, object_headers, wants_json, wants_zstd, ByteRange};
use crate::engines::topology::{Caller, Target};
use crate::error::{Error, Kind, Result};
use crate::http::common::{no_content, ClientId, OpId, TARGET_ID, TYPE};
use crate::meta::{Bucket, Object, ObjectFilter, Status};
use crate::model::names::{check_bucket, check_object};
use crate::model::object::rights;
use crate::model::order::WriteOrigin;
use crate::state::AppState;
use crate::storage::ByteStream;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/cloudclonestore", get(list_buckets))
        .route(
            "/cloudclonestore/{bucket}",
            get(get_bucket)
                .head(head_bucket)
                .post(create_bucket)
                .delete(delete_bucket)
                .put(list_objects),
        )
        .route(
            "/cloudclonestore/{bucket}/{*object}",
            get(get_object)
                .head(head_object)
                .post(create_object)
                .delete(delete_object),
        )
}

/// Objects per metadata page when streaming a listing.
const LIST_PAGE: i64 = 1000;

const REPLICATION_STATUS: http::HeaderName =
    http::HeaderName::from_static("x-clonecloudstore-replication-status");

pub(crate) fn type_header(kind: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(TYPE, HeaderValue::from_static(kind));
    h
}

/// A live bucket: 404 when absent, 410 when deleted.
async fn live_bucket(state: &AppState, name: &str) -> Result<Bucket> {
    check_bucket(name)?;
    live(state.meta.get_bucket(name).await?, name)
}

/// The bucket row read for `name`, if it is live: 404 when absent, 410 when deleted.
fn live(bucket: Option<Bucket>, name: &str) -> Result<Bucket> {
    let bucket = bucket.ok_or_else(|| Error::not_found(format!("bucket {name} not found")))?;
    match bucket.status {
        Status::Deleted => Err(Error::gone(format!("bucket {name} is deleted"))),
        Status::Ready => Ok(bucket),
        other => Err(Error::not_found(format!(
            "bucket {name} is not available (status {})",
            other.as_str()
        ))),
    }
}

/// A live bucket the client can read. Without READ the bucket does not exist for the client:
/// 404, as CCS answers reads.
pub(crate) async fn readable_bucket(state: &AppState, client: &str, name: &str) -> Result<Bucket> {
    let bucket = live_bucket(state, name).await?;
    if state.meta.rights(client, name).await? & rights::READ == 0 {
        return Err(Error::not_found(format!("bucket {name} not found")));
    }
    Ok(bucket)
}

/// A live bucket on which the client holds `right`, else 403 (CCS answers 404 only to reads,
/// so a WRITE-only client can write and a READ-only one is told it may not).
async fn require(state: &AppState, client: &str, bucket: &str, right: i64) -> Result<Bucket> {
    let b = live_bucket(state, bucket).await?;
    if state.meta.rights(client, bucket).await? & right == 0 {
        return Err(Error::forbidden(format!(
            "client {client} may not do that on bucket {bucket}"
        )));
    }
    Ok(b)
}

async fn list_buckets(
    State(state): State<AppState>,
    ClientId(client): ClientId,
) -> Result<Json<Vec<Bucket>>> {
    Ok(Json(state.meta.list_buckets(&client).await?))
}

pub(super) async fn get_bucket(
    State(state): State<AppState>,
    ClientId(client): ClientId,
    Path(bucket): Path<String>,
) -> Result<Json<Bucket>> {
    Ok(Json(readable_bucket(&state, &client, &bucket).await?))
}

pub(super) async fn head_bucket(
    State(state): State<AppState>,
    ClientId(client): ClientId,
    Path(bucket): Path<String>,
) -> Result<Response> {
    match readable_bucket(&state, &client, &bucket).await {
        Ok(_) => Ok(no_content(type_header("BUCKET"))),
        Err(e) if e.kind == crate::error::Kind::BadRequest => Err(e),
        Err(_) => Ok((StatusCode::NOT_FOUND, type_header("NONE")).into_response()),
    }
}

async fn create_bucket(
    State(state): State<AppState>,
    ClientId(client): ClientId,
    Path(name): Path<String>,
) -> Result<Response> {
    check_bucket(&name)?;
    let bucket = Bucket {
        id: name.clone(),
        name: name.clone(),
        client_id: client.clone(),
        site: state.site_id.clone(),
        creation: Utc::now(),
        expires: None,
        status: Status::Ready,
    };
    let origin = WriteOrigin::Client { client_id: client };
    crate::core::buckets::create(&state.site, &bucket, &origin).await?;
    Ok((StatusCode::CREATED, Json(bucket)).into_response())
}

async fn delete_bucket(
    State(state): State<AppState>,
    ClientId(client): ClientId,
    Path(name): Path<String>,
) -> Result<Response> {
    require(&state, &client, &name, rights::DELETE).await?;
    let origin = WriteOrigin::Client { client_id: client };
    crate::core::buckets::delete(&state.site, &name, &origin).await?;
    Ok(no_content(HeaderMap::new()))
}

/// `PUT /cloudclonestore/{bucket}`: the bucket's objects as an NDJSON stream, read from the
/// metadata store page by page. Without READ it is 403, as CCS.
async fn list_objects(
    State(state): State<AppState>,
    ClientId(client): ClientId,
    Path(bucket): Path<String>,
    req_headers: HeaderMap,
) -> Result<Response> {
    require(&state, &client, &bucket, rights::READ).await?;
    let filter = wire::parse_filter(&req_headers)?;
    let pages = futures::stream::try_unfold(Some(String::new()), move |cursor| {
        let (state, bucket, filter) = (state.clone(), bucket.clone(), filter.clone());
        async move {
            let Some(after) = cursor else { return Ok(None) };
            let page = state
                .meta
                .list_objects(&bucket, &filter, Some(&after), LIST_PAGE)
                .await?;
            let next = (page.len() as i64 == LIST_PAGE)
                .then(|| page.last().map(|o| o.name.clone()))
                .flatten();
            Ok(Some((ndjson_page(&page, &filter), next)))
        }
    });
    let body: ByteStream = Box::pin(pages.try_filter(|b| futures::future::ready(!b.is_empty())));
    let zstd = wants_zstd(&req_headers);
    let mut resp = Response::new(Body::from_stream(encode_for_client(body, zstd)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if zstd {
        resp.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    }
    Ok(resp)
}

fn ndjson_page(page: &[Object], filter: &ObjectFilter) -> Bytes {
    let mut out = Vec::new();
    for obj in page {
        if filter
            .metadata_eq
            .iter()
            .all(|(k, v)| obj.metadata.get(k) == Some(v))
        {
            let _ = serde_json::to_writer(&mut out, obj);
            out.push(b'\n');
        }
    }
    Bytes::from(out)
}

async fn create_object(
    State(state): State<AppState>,
    ClientId(client): ClientId,
    Path((bucket, name)): Path<(String, String)>,
    req_headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    check_bucket(&bucket)?;
    check_object(&name)?;
    // A refused or cut-off upload's body is read on (and discarded) for a moment, so the
    // client gets to read the answer.
    let input: ByteStream = Box::pin(stream::DrainOnDrop::new(
        Box::pin(
            body.into_data_stream()
                .map_err(|e| Error::bad_request(format!("upload interrupted: {e}"))),
        ),
        DRAIN_MAX_BYTES,
        DRAIN_MAX_TIME,
    ));
    let upload = wire::parse_upload(&req_headers)?;
    let limits = &state.config.limits;
    let max = limits.max_object();
    check_declared_size(&req_headers, &upload, max)?;
    require(&state, &client, &bucket, rights::WRITE).await?;
    let obj = Object {
        id: uuid::Uuid::new_v4().to_string(),
        site: state.site_id.clone(),
        bucket,
        name,
        hash: upload.hash.clone(),
        status: Status::Upload,
        creation: Utc::now(),
        expires: upload.expires,
        size: upload.size.unwrap_or(0),
        metadata: upload.metadata,
    };
    let mut input = input;
    if upload.zstd {
        if let Some(max) = max {
            input = stream::limit_size(input, stream::zstd_bound(max), "the compressed body");
        }
        input = stream::zstd_decode_bounded(input, limits.zstd_window_log_max());
    }
    if let Some(max) = max {
        input = stream::limit_size(input, max, "the object");
    }
    let stored = objects::store(
        &state,
        obj,
        input,
        Expected {
            size: upload.size,
            hash: upload.hash,
        },
        &WriteOrigin::Client { client_id: client },
    )
    .await?;
    Ok((StatusCode::CREATED, object_headers(&stored), Json(stored)).into_response())
}

/// How much of a refused upload's body is still read (and discarded) so that the client, still
/// sending, reads the answer rather than a connection reset.
const DRAIN_MAX_BYTES: u64 = 8 * 1024 * 1024;
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// 413 before anything is stored when the client declares more than the largest object:
/// `x-clonecloudstore-size`, or `Content-Length` (of the compressed bytes for a zstd body).
fn check_declared_size(
    headers: &HeaderMap,
    upload: &wire::UploadHeaders,
    max: Option<u64>,
) -> Result<()> {
    let Some(max) = max else {
        return Ok(());
    };
    if upload.size.is_some_and(|size| size > max) {
        return Err(stream::too_large(max, "the declared object size"));
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let bound = if upload.zstd {
        stream::zstd_bound(max)
    } else {
        max
    };
    if length.is_some_and(|length| length > bound) {
        return Err(stream::too_large(bound, "the declared body length"));
    }
    Ok(())
}

/// A READY object the client may read, or 404. Bucket, rights and object come from the
/// metadata cache, or from one query when it misses. A copy declared BAD or LOST here is
/// never served (404: a read through the topology goes on to a good copy elsewhere).
pub(crate) async fn readable_object(
    state: &AppState,
    client: &str,
    bucket: &str,
    name: &str,
) -> Result<Object> {
    check_object(name)?;
    check_bucket(bucket)?;
    let view = state.meta.read_view(client, bucket, name).await?;
    live(view.bucket, bucket)?;
    if view.rights & rights::READ == 0 {
        return Err(Error::not_found(format!("bucket {bucket} not found")));
    }
    match view.object {
        Some(obj) if obj.status == Status::Ready && !view.bad_here => Ok(obj),
        // Still 404 (nothing to serve here), but a pulling peer must not take it for a source
        // that moved on: the order waits for a good copy instead of completing without one.
        Some(obj) if obj.status == Status::Ready => Err(Error::not_found(format!(
            "{}: the copy of {bucket}/{name} here is declared bad; it will be repaired",
            objects::INTEGRITY_FAILURE
        ))),
        _ => Err(Error::not_found(format!(
            "object {bucket}/{name} not found"
        ))),
    }
}

async fn get_object(
    State(state): State<AppState>,
    ClientId(client): ClientId,
    OpId(op_id): OpId,
    Path((bucket, name)): Path<(String, String)>,
    req_headers: HeaderMap,
) -> Result<Response> {
    let obj = match readable_object(&state, &client, &bucket, &name).await {
        Ok(obj) => obj,
        Err(e)
            if e.kind == Kind::NotFound && may_read_remotely(&state, &client, &bucket).await? =>
        {
            let target = Target {
                bucket,
                object: Some(name),
            };
            let caller = Caller {
                client_id: &client,
                op_id: &op_id,
            };
            return super::replicator::fetch_through(&state, &target, &caller, None, &req_headers)
                .await;
        }
        Err(e) => return Err(e),
    };
    serve_object(&state, obj, &op_id, &req_headers, Verification::Here).await
}

/// Answers a READY object of this site: its JSON metadata when asked for, else its verified
/// bytes with every object header, both with the replication status. A `Range` asks for part
/// of the bytes: 206 (verified by the blocks it touches, see `objects::open_range`; never
/// compressed, the range is of the stored bytes), or 416 when no byte satisfies it. With
/// `Verification::ByReceiver` (a verifying peer) the bytes go out as stored.
pub(crate) async fn serve_object(
    state: &AppState,
    obj: Object,
    op_id: &str,
    req_headers: &HeaderMap,
    verification: Verification,
) -> Result<Response> {
    let replication =
        crate::engines::replication::object_status(&state.replication, &obj.bucket, &obj.name)
            .await?;
    if wants_json(req_headers) {
        let mut json = serde_json::to_value(&obj).map_err(|e| Error::internal(e.to_string()))?;
        if let Some((overall, sites)) = &replication {
            json["replicationStatus"] = serde_json::json!(overall);
            json["replicationSites"] = serde_json::json!(sites);
        }
        let mut h = object_headers(&obj);
        add_replication_header(&mut h, &replication);
        return Ok((h, Json(json)).into_response());
    }
    let range = wire::byte_range(req_headers, obj.size);
    let mut resp = match range {
        ByteRange::Whole => {
            let payload = objects::read_for(state, &obj, op_id, verification).await?;
            object_response(&obj, payload, wants_zstd(req_headers))
        }
        ByteRange::Part { start, len } => {
            let body = match verification {
                Verification::Here => objects::open_range(state, &obj, start, len, op_id).await?,
                Verification::ByReceiver => {
                    objects::open_range_unverified(state, &obj, start, len).await?
                }
            };
            partial_response(&obj, body, range)
        }
        ByteRange::Unsatisfiable => {
            let value = range
                .content_range(obj.size)
                .and_then(|v| HeaderValue::from_str(&v).ok());
            return Ok(range_not_satisfiable(value));
        }
    };
    add_replication_header(resp.headers_mut(), &replication);
    Ok(resp)
}

/// A 206 carrying part of an object's bytes, with every object header (they describe the
/// whole object) and `Content-Range`.
fn partial_response(obj: &Object, body: ByteStream, range: ByteRange) -> Response {
    let ByteRange::Part { len, .. } = range else {
        unreachable!("partial_response needs a part")
    };
    let mut resp = Response::new(Body::from_stream(body));
    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    let h = resp.headers_mut();
    h.extend(object_headers(obj));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(v) = range
        .content_range(obj.size)
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}

/// 416 in the CCS error form, with `Content-Range` (`bytes */size`, or the value a peer sent).
pub(crate) fn range_not_satisfiable(content_range: Option<HeaderValue>) -> Response {
    let mut resp = Error::new(
        Kind::RangeNotSatisfiable,
        crate::error::Origin::Client,
        "no byte of the requested range is within the object",
    )
    .into_response();
    if let Some(v) = content_range {
        resp.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    resp
}

/// `x-clonecloudstore-replication-status`: REPLICA on a copy, the overall status at the source.
fn add_replication_header(
    h: &mut HeaderMap,
    status: &Option<(String, std::collections::BTreeMap<String, String>)>,
) {
    if let Some(v) = status
        .as_ref()
        .and_then(|(overall, _)| HeaderValue::from_str(overall).ok())
    {
        h.insert(REPLICATION_STATUS, v);
    }
}

/// Whether a read that missed here may be served by another site (CCS `remote.read`): yes when
/// this site does not know the bucket, or knows it and the client may read it.
async fn may_read_remotely(state: &AppState, client: &str, bucket: &str) -> Result<bool> {
    Ok(match state.meta.get_bucket(bucket).await? {
        None => true,
        Some(b) => {
            b.status == Status::Ready
                && state.meta.rights(client, bucket).await? & rights::READ != 0
        }
    })
}

/// A 200 carrying an object's bytes and every object header. A small object read whole
/// leaves as one body of known length.
pub fn object_response(obj: &Object, body: Payload, zstd: bool) -> Response {
    let body = match body {
        Payload::Whole(bytes) if !zstd => Body::from(bytes),
        other => Body::from_stream(encode_for_client(other.into_stream(), zstd)),
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.extend(object_headers(obj));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if zstd {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    } else {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(obj.size));
    }
    resp
}

async fn head_object(
    State(state): State<AppState>,
    ClientId(client): ClientId,
    OpId(op_id): OpId,
    Path((bucket, name)): Path<(String, String)>,
) -> Result<Response> {
    // Invalid names are the client's error (400), not something to look for elsewhere.
    check_bucket(&bucket)?;
    check_object(&name)?;
    let local = match readable_bucket(&state, &client, &bucket).await {
        Ok(_) => object_type(&state, &bucket, &name).await?,
        Err(_) => None,
    };
    Ok(match local {
        Some((kind, Some(obj))) => {
            let mut h = object_headers(&obj);
            h.extend(type_header(kind));
            add_replication_header(
                &mut h,
                &crate::engines::replication::object_status(&state.replication, &bucket, &name)
                    .await?,
            );
            no_content(h)
        }
        Some((kind, None)) => no_content(type_header(kind)),
        None if may_read_remotely(&state, &client, &bucket).await? => {
            let target = Target {
                bucket,
                object: Some(name),
            };
            let caller = Caller {
                client_id: &client,
                op_id: &op_id,
            };
            match state.topology.locate(&target, &caller, None).await? {
                Some(found) => {
                    let kind = if found.kind == "DIRECTORY" {
                        "DIRECTORY"
                    } else {
                        "OBJECT"
                    };
                    let mut h = type_header(kind);
                    h.insert(
                        TARGET_ID,
                        HeaderValue::from_str(&found.site.id)
                            .map_err(|e| Error::internal(e.to_string()))?,
                    );
                    no_content(h)
                }
                None => (StatusCode::NOT_FOUND, type_header("NONE")).into_response(),
            }
        }
        None => (StatusCode::NOT_FOUND, type_header("NONE")).into_response(),
    })
}

/// OBJECT (with the object), DIRECTORY, or None. A copy declared BAD or LOST here is not
/// advertised.
pub async fn object_type(
    state: &AppState,
    bucket: &str,
    name: &str,
) -> Result<Option<(&'static str, Option<Object>)>> {
    if let Some(obj) = state.meta.servable_object(bucket, name).await? {
        if obj.status == Status::Ready {
            return Ok(Some(("OBJECT", Some(obj))));
        }
    }
    let prefix = if name.ends_with('/') {
        name.to_owned()
    } else {
        format!("{name}/")
    };
    Ok(state
        .meta
        .has_prefix(bucket, &prefix)
        .await?
        .then_some(("DIRECTORY", None)))
}

async fn delete_object(
    State(state): State<AppState>,
    ClientId(client): ClientId,
    Path((bucket, name)): Path<(String, String)>,
) -> Result<Response> {
    check_object(&name)?;
    require(&state, &client, &bucket, rights::DELETE).await?;
    objects::delete(
        &state,
        &bucket,
        &name,
        &WriteOrigin::Client { client_id: client },
    )
    .await?;
    Ok(no_content(HeaderMap::new()))
}
