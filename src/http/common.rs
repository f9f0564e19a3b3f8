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

/// The error envelope of a path's API family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    Ccs,
    Backbeat,
    Rucio,
    Alfresco,
    Dr,
}

/// Which envelope errors on `path` use (the token endpoint keeps its OAuth2 errors: CCS here).
pub fn envelope_of(path: &str) -> Envelope {
    match family_of(path).0 {
        "backbeat" => Envelope::Backbeat,
        "rucio" => Envelope::Rucio,
        "control" if path == "/api/dr/v2" || path.starts_with("/api/dr/") => Envelope::Dr,
        "control" if path.starts_with("/api/2/idp/") => Envelope::Ccs,
        "control" => Envelope::Alfresco,
        _ => Envelope::Ccs,
    }
}

/// An error raised outside any handler (an extractor's rejection, an unknown route, a method
/// the route does not have) in the envelope and content type of `envelope`'s family.
pub fn family_error(envelope: Envelope, status: StatusCode, message: &str) -> Response {
    let code = status.as_u16();
    let mut response = match envelope {
        Envelope::Ccs => {
            let body = serde_json::json!({ "status": code, "message": message });
            (status, axum::Json(body)).into_response()
        }
        Envelope::Backbeat => {
            let name = match code {
                400 => "InvalidQueryParameter",
                404 => "RouteNotFound",
                405 => "MethodNotAllowed",
                406 => "NotAcceptable",
                413 => "EntityTooLarge",
                415 => "InvalidArgument",
                _ => "InvalidRequest",
            };
            let mut body = serde_json::json!({ "code": code, "description": message });
            body[name] = serde_json::Value::Bool(true);
            (status, axum::Json(body)).into_response()
        }
        Envelope::Rucio => {
            let class = match code {
                400 => "ValueError",
                404 => "NotFound",
                405 => "MethodNotAllowed",
                406 => "UnsupportedRequestedContentType",
                _ => "RucioException",
            };
            let body = serde_json::json!({ "ExceptionClass": class, "ExceptionMessage": message });
            let mut response = (status, body.to_string()).into_response();
            let h = response.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert("exceptionclass", HeaderValue::from_static(class));
            let short: String = message
                .replace(['\n', '\r'], " ")
                .chars()
                .take(125)
                .collect();
            h.insert("exceptionmessage", text_header(&short));
            response
        }
        Envelope::Alfresco => {
            let key = match code {
                400 => "framework.exception.InvalidArgument",
                404 => "framework.exception.EntityNotFound",
                405 => "framework.exception.UnsupportedResourceOperation",
                _ => "framework.exception.ApiDefault",
            };
            let body = serde_json::json!({ "error": {
                "errorKey": key, "statusCode": code, "briefSummary": message,
                "stackTrace": "For security reasons the stack trace is no longer displayed, but \
                               the property is kept for previous versions",
                "descriptionURL": "https://api-explorer.alfresco.com",
            }});
            (status, axum::Json(body)).into_response()
        }
        Envelope::Dr => {
            let name = match code {
                400 => "BadRequest",
                404 => "NotFound",
                405 => "MethodNotAllowed",
                406 => "NotAcceptable",
                _ => "BadRequest",
            };
            let body = serde_json::json!({ "error": {
                "code": name, "message": message, "context": {},
                "debug": { "msg": message }, "domain": "DisasterRecovery",
            }});
            (status, axum::Json(body)).into_response()
        }
    };
    response.headers_mut().insert(ERROR, text_header(message));
    response
}

/// Whether a client error came from outside the handlers (axum's extractor rejections are
/// `text/plain`, its 405 has no body): such answers get the family's envelope.
fn is_bare_rejection(method: &http::Method, response: &Response) -> bool {
    if !response.status().is_client_error()
        || *method == http::Method::HEAD
        || response.headers().contains_key(&ERROR)
    {
        return false;
    }
    match response.headers().get(http::header::CONTENT_TYPE) {
        None => true,
        Some(ct) => ct.to_str().is_ok_and(|ct| ct.starts_with("text/plain")),
    }
}

/// Re-renders a bare rejection in the family's envelope, keeping its status and other headers.
async fn envelope_rejection(method: &http::Method, path: &str, response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = match (text.is_empty(), parts.status) {
        (false, _) => text,
        (true, StatusCode::METHOD_NOT_ALLOWED) => {
            format!("method {method} is not allowed on {path}")
        }
        (true, status) => format!(
            "{} {method} {path}",
            status.canonical_reason().unwrap_or("error")
        ),
    };
    let mut out = family_error(envelope_of(path), parts.status, &message);
    for (name, value) in &parts.headers {
        if name != http::header::CONTENT_TYPE
            && name != http::header::CONTENT_LENGTH
            && !out.headers().contains_key(name)
        {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
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
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let mut resp = next.run(req).instrument(span).await;
    if is_bare_rejection(&method, &resp) {
        resp = envelope_rejection(&method, &path, resp).await;
    }
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

/// A query boolean as Java and Python clients send it: `true`/`false` in any case (also `1`/`0`).
pub fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    use serde::de::Error as _;
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(D::Error::custom(format!(
            "{text:?} is not a boolean: use true or false"
        ))),
    }
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
        if let Some(secs) = self.retry_after {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        let body = serde_json::json!({ "status": status.as_u16(), "message": self.message });
        (status, headers, axum::Json(body)).into_response()
    }
}

/// Fallback for unknown routes, in the envelope of the path's family.
pub async fn no_route(req: Request) -> Response {
    let message = format!("no route for {} {}", req.method(), req.uri().path());
    match envelope_of(req.uri().path()) {
        Envelope::Ccs => Error::not_found(message).into_response(),
        envelope => family_error(envelope, StatusCode::NOT_FOUND, &message),
    }
}

/// 204 with the given headers.
pub fn no_content(headers: HeaderMap) -> Response {
    (StatusCode::NO_CONTENT, headers).into_response()
}
