//! The common protocol on every route: `x-clonecloudstore-op-id` echoed or generated,
//! `x-clonecloudstore-module` always, `x-clonecloudstore-error` on every error, request metrics
//! and a tracing span carrying the op-id. Also the CCS rendering of [`Error`].

use std::time::Instant;

use axum::extract::{FromRequestParts, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};
use tracing::Instrument;

use crate::error::Error;
use crate::http::peer::TokenClient;

pub use crate::core::wire::{CLIENT_ID, ERROR, MODULE, OP_ID, TARGET_ID, TYPE};

/// The op-id of the current request (set by [`common_protocol`]).
#[derive(Debug, Clone)]
pub struct OpId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for OpId {
    type Rejection = Error;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        Ok(parts
            .extensions
            .get::<OpId>()
            .cloned()
            .unwrap_or_else(|| OpId(uuid::Uuid::new_v4().to_string())))
    }
}

/// The client of a data route: with `[auth] data_plane = true`, the one the token speaks for
/// (`TokenClient`, set by `crate::api::trust`, which already refused a disagreeing header);
/// otherwise `x-clonecloudstore-client-id`, required.
#[derive(Debug, Clone)]
pub struct ClientId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientId {
    type Rejection = Error;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        if let Some(TokenClient(id)) = parts.extensions.get::<TokenClient>() {
            return Ok(ClientId(id.clone()));
        }
        match parts
            .headers
            .get(&CLIENT_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
        {
            Some(id) if !id.is_empty() => Ok(ClientId(id.to_owned())),
            _ => Err(Error::bad_request(
                "missing header x-clonecloudstore-client-id",
            )),
        }
    }
}

/// Route families, for metrics labels and the module header.
pub fn family_of(path: &str) -> (&'static str, &'static str) {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "cloudclonestore" => ("accessor", "ACCESSOR"),
        "replicator" => ("replicator", "REPLICATOR"),
        "administration" => ("administration", "ADMINISTRATION"),
        "_" => ("backbeat", "REPLICATOR"),
        "replicas" | "dids" | "rses" | "auth" => ("rucio", "REPLICATOR"),
        "api" | "alfresco" => ("control", "ADMINISTRATION"),
        "metrics" | "healthz" => ("ops", "UNKNOWN"),
        _ => ("unknown", "UNKNOWN"),
    }
}

/// Middleware applying the common protocol to every response.
pub async fn common_protocol(mut req: Request, next: Next) -> Response {
    let op_id = req
        .headers()
        .get(&OP_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let (family, module) = family_of(req.uri().path());
    req.extensions_mut().insert(OpId(op_id.clone()));
    let span = tracing::info_span!("request", op_id = %op_id, method = %req.method(), path = %req.uri().path());
    let start = Instant::now();
    let mut resp = next.run(req).instrument(span).await;
    let status = resp.status();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&op_id) {
        headers.insert(OP_ID, v);
    }
    headers.insert(MODULE, HeaderValue::from_static(module));
    if (status.is_client_error() || status.is_server_error()) && !headers.contains_key(&ERROR) {
        let reason = status.canonical_reason().unwrap_or("error");
        headers.insert(ERROR, HeaderValue::from_static(reason));
    }
    metrics::counter!("mirrorgate_requests_total", "family" => family, "status" => status.as_u16().to_string())
        .increment(1);
    metrics::histogram!("mirrorgate_request_duration_seconds", "family" => family)
        .record(start.elapsed().as_secs_f64());
    resp
}

/// A header value carrying free text (non-visible characters replaced).
pub fn text_header(text: &str) -> HeaderValue {
    let clean: String = text
        .chars()
        .take(1024)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("error"))
}

/// CCS envelope: the status, the message in `x-clonecloudstore-error`, and a small JSON body.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(origin = ?self.origin, "{}", self.message);
        } else {
            tracing::info!(origin = ?self.origin, status = status.as_u16(), "{}", self.message);
        }
        let mut headers = HeaderMap::new();
        headers.insert(ERROR, text_header(&self.message));
        let body = serde_json::json!({ "status": status.as_u16(), "message": self.message });
        (status, headers, axum::Json(body)).into_response()
    }
}

/// Fallback for unknown routes.
pub async fn no_route(req: Request) -> Error {
    Error::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// 204 with the given headers.
pub fn no_content(headers: HeaderMap) -> Response {
    (StatusCode::NO_CONTENT, headers).into_response()
}
