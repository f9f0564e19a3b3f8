//! Rucio's replicas API (`/replicas/...`) over the replica catalogue: scope = bucket, name =
//! object key, RSE = site id, the dataset of a bucket = the DID `<bucket>:<bucket>`, PFN = the
//! URL that reads a copy at a site (see `catalogue::pfn`). Listings see every site (this one's
//! rows, and the peers' own, asked live); a change to a copy at another RSE is carried out by
//! that site (the request is forwarded, so its locks hold wherever it arrives). Errors are Rucio's:
//! `{"ExceptionClass","ExceptionMessage"}`, also as headers.

mod declare;
mod dids;
mod list;
mod manage;
mod metalink;

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, MethodRouter};
use axum::Router;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::engines::catalogue::view::SiteInfo;
use crate::error::{Error, Kind};
use crate::model::object::from_millis;
use crate::model::replica::Did;
use crate::state::AppState;

pub const NDJSON: &str = "application/x-json-stream";
pub const METALINK: &str = "application/metalink4+xml";
pub const JSON: &str = "application/json";

/// How long a request forwarded to another RSE may take (it may re-read an object).
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub fn routes() -> Router<AppState> {
    let replicas = || {
        rucio(
            post(manage::register)
                .put(manage::update)
                .delete(manage::remove),
        )
    };
    Router::new()
        .route("/replicas", replicas())
        .route("/replicas/", replicas())
        .route("/replicas/list", rucio(post(list::list)))
        .route("/replicas/dids", rucio(post(list::dids)))
        .route("/replicas/datasets_bulk", rucio(post(list::datasets_bulk)))
        .route("/replicas/rse/{rse}", rucio(get(list::at_rse)))
        .route("/replicas/bad", rucio(post(declare::bad)))
        .route("/replicas/bad/pfns", rucio(post(declare::bad_pfns)))
        .route("/replicas/bad/dids", rucio(post(declare::bad_dids)))
        .route("/replicas/quarantine", rucio(post(declare::quarantine)))
        .route("/replicas/bad/states", rucio(get(declare::bad_states)))
        .route("/replicas/bad/summary", rucio(get(declare::bad_summary)))
        .route(
            "/replicas/suspicious",
            rucio(get(declare::suspicious_list).post(declare::suspicious)),
        )
        .route("/replicas/tombstone", rucio(post(declare::tombstone)))
        .route("/replicas/{scope}/{*name}", rucio(get(list::did)))
        .route("/replicas/{scope}", any(no_such_route))
        .route("/dids/bulkmeta", rucio(post(dids::bulk_meta)))
        .route("/dids/{scope}/", rucio(get(dids::scope_list)))
        .route("/dids/{scope}/{name}", rucio(get(dids::get_did)))
        .route("/dids/{scope}/{name}/meta", rucio(get(dids::meta)))
        .route("/dids/{scope}/{name}/files", rucio(get(dids::files)))
        .route("/rses", rucio(get(dids::list_rses)))
        .route("/rses/", rucio(get(dids::list_rses)))
        .route("/rses/{rse}", rucio(get(dids::get_rse)))
}

/// Other methods on a Rucio route answer 405 in Rucio's envelope.
fn rucio(route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route.fallback(|method: Method| async move {
        RucioError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("method {method} is not allowed on this resource"),
        )
    })
}

async fn no_such_route(method: Method, uri: http::Uri) -> RucioError {
    RucioError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("no route for {method} {}", uri.path()),
    )
}

// ---- errors --------------------------------------------------------------------------------

/// An error in Rucio's envelope. Internal errors ([`Error`]) become one in `From`, the Rucio
/// classes handlers raise on purpose are built with the constructors below; `into_response` is
/// the one place either is rendered.
#[derive(Debug)]
pub struct RucioError {
    status: StatusCode,
    class: String,
    message: String,
}

pub type Result<T> = std::result::Result<T, RucioError>;

impl RucioError {
    pub fn new(status: StatusCode, class: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            class: class.to_owned(),
            message: message.into(),
        }
    }
    fn bad(class: &str, m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, class, m)
    }
    pub fn key_error(key: &str) -> Self {
        Self::bad("KeyError", format!("'{key}' not defined"))
    }
    pub fn value_error(m: impl Into<String>) -> Self {
        Self::bad("ValueError", m)
    }
    pub fn type_error(m: impl Into<String>) -> Self {
        Self::bad("TypeError", m)
    }
    pub fn invalid_object(m: impl Into<String>) -> Self {
        Self::bad("InvalidObject", m)
    }
    pub fn invalid_type(m: impl Into<String>) -> Self {
        Self::bad("InvalidType", m)
    }
    pub fn input_validation(m: impl Into<String>) -> Self {
        Self::bad("InputValidationError", m)
    }
    pub fn not_found(class: &str, m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, class, m)
    }
    pub fn replica_not_found(did: &Did, rse: &str) -> Self {
        Self::not_found(
            "ReplicaNotFound",
            format!("Replica {did} on RSE {rse} could not be found."),
        )
    }
    pub fn duplicate(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Duplicate", m)
    }
    /// A state change the replica's current state does not allow. Rucio's generic handler
    /// answers 500 for it; 409 says better that the request, not the server, is at fault.
    pub fn unsupported(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "UnsupportedOperation", m)
    }
    pub fn locked(did: &Did, rse: &str) -> Self {
        Self::new(
            StatusCode::LOCKED,
            "ReplicaIsLocked",
            format!("Replica {did} on RSE {rse} is locked."),
        )
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ResourceTemporaryUnavailable",
            m,
        )
    }
}

impl From<Error> for RucioError {
    fn from(e: Error) -> Self {
        let class = match e.kind {
            Kind::BadRequest => "InvalidObject",
            Kind::Unauthorized => "CannotAuthenticate",
            Kind::Forbidden => "AccessDenied",
            Kind::NotFound | Kind::Gone => "DataIdentifierNotFound",
            Kind::NotAcceptable => "UnsupportedRequestedContentType",
            Kind::Conflict => "Duplicate",
            Kind::Locked => "ReplicaIsLocked",
            Kind::Unavailable | Kind::BadGateway | Kind::GatewayTimeout => {
                "ResourceTemporaryUnavailable"
            }
            Kind::TooManyRequests => "ResourceTemporaryUnavailable",
            _ => "RucioException",
        };
        let status = match e.kind {
            Kind::Forbidden => StatusCode::UNAUTHORIZED,
            Kind::Gone => StatusCode::NOT_FOUND,
            Kind::BadGateway | Kind::GatewayTimeout => StatusCode::SERVICE_UNAVAILABLE,
            _ => e.status(),
        };
        Self::new(status, class, e.message)
    }
}

impl IntoResponse for RucioError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(class = %self.class, "{}", self.message);
        } else {
            tracing::info!(class = %self.class, status = self.status.as_u16(), "{}", self.message);
        }
        let body = serde_json::json!({
            "ExceptionClass": self.class,
            "ExceptionMessage": self.message,
        });
        let mut resp = (self.status, body.to_string()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(
            "ExceptionClass",
            crate::http::common::text_header(&self.class),
        );
        h.insert("ExceptionMessage", header_message(&self.message));
        h.insert(
            crate::http::common::ERROR,
            crate::http::common::text_header(&self.message),
        );
        resp
    }
}

/// Rucio's `ExceptionMessage` header: one line, at most 125 characters then `...`.
fn header_message(message: &str) -> HeaderValue {
    let line = message.replace(['\n', '\r'], " ");
    let mut short: String = line.chars().take(125).collect();
    if short.len() < line.len() {
        short.push_str("...");
    }
    crate::http::common::text_header(&short)
}

// ---- request parsing ---------------------------------------------------------------------

/// The JSON object body Rucio's `json_parameters` expects.
pub fn json_body(body: &Bytes) -> Result<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(RucioError::type_error("body must be a json dictionary")),
        Err(_) => Err(RucioError::value_error(
            "cannot decode json parameter dictionary",
        )),
    }
}

/// A parameter that must be present (`KeyError` otherwise).
pub fn required<'a>(params: &'a Map<String, Value>, key: &str) -> Result<&'a Value> {
    params.get(key).ok_or_else(|| RucioError::key_error(key))
}

/// A present, non-null parameter.
pub fn present<'a>(params: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    params.get(key).filter(|v| !v.is_null())
}

pub fn required_str<'a>(params: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    required(params, key)?
        .as_str()
        .ok_or_else(|| RucioError::type_error(format!("'{key}' must be a string")))
}

pub fn optional_str<'a>(params: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match present(params, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(RucioError::type_error(format!("'{key}' must be a string"))),
    }
}

pub fn optional_bool(params: &Map<String, Value>, key: &str) -> Result<bool> {
    match present(params, key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(RucioError::type_error(format!(
            "'{key}' must be a boolean type."
        ))),
    }
}

/// A list parameter (absent = empty).
pub fn optional_list<'a>(params: &'a Map<String, Value>, key: &str) -> Result<&'a [Value]> {
    match present(params, key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(RucioError::type_error(format!("'{key}' must be a list"))),
    }
}

pub fn required_list<'a>(params: &'a Map<String, Value>, key: &str) -> Result<&'a [Value]> {
    required(params, key)?;
    optional_list(params, key)
}

/// `{"scope", "name"}` entries.
pub fn parse_dids(items: &[Value]) -> Result<Vec<Did>> {
    items.iter().map(parse_did).collect()
}

pub fn parse_did(item: &Value) -> Result<Did> {
    let text = |key: &str| {
        item.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                RucioError::invalid_object(format!(
                    "Problem validating DIDs: {item} has no string '{key}'"
                ))
            })
    };
    Ok(Did::new(text("scope")?, text("name")?))
}

/// A string list (each entry a string).
pub fn strings(items: &[Value], what: &str) -> Result<Vec<String>> {
    items
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| RucioError::invalid_type(format!("{what} must be strings")))
        })
        .collect()
}

/// Rucio's Accept check: no header accepts everything; otherwise the best offered type with a
/// quality above zero (wildcards count), else 406.
pub fn negotiate(headers: &HeaderMap, offered: &[&'static str]) -> Result<&'static str> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(offered[0]);
    };
    let ranges: Vec<(String, f32)> = accept
        .split(',')
        .filter_map(|part| {
            let mut fields = part.split(';').map(str::trim);
            let range = fields.next()?.to_ascii_lowercase();
            let q = fields
                .find_map(|f| f.strip_prefix("q="))
                .and_then(|q| q.parse().ok())
                .unwrap_or(1.0);
            (!range.is_empty()).then_some((range, q))
        })
        .collect();
    let quality = |offer: &str| {
        let kind = offer.split('/').next().unwrap_or("");
        ranges
            .iter()
            .filter(|(r, _)| r == offer || r == "*/*" || *r == format!("{kind}/*"))
            .map(|(r, q)| (r == offer, *q))
            .max_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal))
            .map(|(_, q)| q)
            .unwrap_or(0.0)
    };
    let mut best: Option<(&'static str, f32)> = None;
    for offer in offered {
        let q = quality(offer);
        if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((offer, q));
        }
    }
    best.map(|(o, _)| o).ok_or_else(|| {
        RucioError::new(
            StatusCode::NOT_ACCEPTABLE,
            "UnsupportedRequestedContentType",
            format!("The requested content type {accept} is not supported. Use {offered:?}."),
        )
    })
}

// ---- responses -----------------------------------------------------------------------------

/// One JSON document per line; an empty listing is an empty 200.
pub fn ndjson(lines: impl IntoIterator<Item = Value>) -> Response {
    let mut body = String::new();
    for line in lines {
        body.push_str(&line.to_string());
        body.push('\n');
    }
    ([(header::CONTENT_TYPE, NDJSON)], body).into_response()
}

/// Rucio answers 201 with the text `Created`.
pub fn created() -> Response {
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "text/plain")],
        "Created",
    )
        .into_response()
}

/// Datetimes as Rucio's JSON encoder writes them (RFC 1123, UTC).
pub fn rfc1123(ms: i64) -> String {
    from_millis(ms)
        .format("%a, %d %b %Y %H:%M:%S UTC")
        .to_string()
}

pub fn rfc1123_opt(ms: Option<i64>) -> Value {
    ms.map(|m| Value::String(rfc1123(m))).unwrap_or(Value::Null)
}

/// Dates as Rucio's endpoints take them (`%Y-%m-%dT%H:%M:%S.%f`, without fraction, a bare day)
/// and as its encoder writes them (RFC 1123), or RFC 3339.
pub fn parse_date(text: &str) -> Result<i64> {
    let t = text.trim();
    let utc = |n: NaiveDateTime| Utc.from_utc_datetime(&n).timestamp_millis();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.timestamp_millis());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, format) {
            return Ok(utc(n));
        }
    }
    let no_zone = t.trim_end_matches(" UTC").trim_end_matches(" GMT");
    if let Ok(n) = NaiveDateTime::parse_from_str(no_zone, "%a, %d %b %Y %H:%M:%S") {
        return Ok(utc(n));
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(utc(d.and_hms_opt(0, 0, 0).unwrap_or_default()));
    }
    Err(RucioError::value_error(format!(
        "time data {text:?} does not match format '%Y-%m-%dT%H:%M:%S.%f'"
    )))
}

/// A stable Rucio-style RSE id (32 hex digits) derived from the site id.
pub fn rse_id(site: &str) -> String {
    Sha256::digest(format!("rse:{site}").as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---- RSEs ----------------------------------------------------------------------------------

pub fn find_site<'a>(sites: &'a [SiteInfo], rse: &str) -> Result<&'a SiteInfo> {
    sites
        .iter()
        .find(|s| s.id == rse)
        .ok_or_else(|| RucioError::not_found("RSENotFound", format!("RSE '{rse}' cannot be found")))
}

/// An RSE expression: a site id, `*` (every site), or a union `a|b`. None selects every site.
pub fn select_sites(sites: &[SiteInfo], expression: Option<&str>) -> Result<Vec<SiteInfo>> {
    let Some(expression) = expression.map(str::trim).filter(|e| !e.is_empty()) else {
        return Ok(sites.to_vec());
    };
    let mut selected: Vec<SiteInfo> = Vec::new();
    for term in expression.split('|').map(str::trim) {
        let matching: Vec<&SiteInfo> = if term == "*" {
            sites.iter().collect()
        } else {
            sites.iter().filter(|s| s.id == term).collect()
        };
        if matching.is_empty() {
            return Err(RucioError::bad(
                "InvalidRSEExpression",
                format!("RSE Expression resulted in an empty set: {term:?} is not an RSE"),
            ));
        }
        for s in matching {
            if !selected.iter().any(|x| x.id == s.id) {
                selected.push(s.clone());
            }
        }
    }
    Ok(selected)
}

/// Forwards a request to the RSE that holds the copies it changes, passing the caller's
/// credentials on; the RSE's answer (or its Rucio error) is the answer.
pub async fn forward(
    state: &AppState,
    site: &SiteInfo,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Response> {
    let url = format!("{}{path}", site.url.trim_end_matches('/'));
    let mut req = state
        .topology
        .forward_request(method, url)
        .json(body)
        .timeout(FORWARD_TIMEOUT);
    for name in [header::AUTHORIZATION.as_str(), "x-rucio-auth-token"] {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v);
        }
    }
    let resp = req
        .send()
        .await
        .map_err(|e| RucioError::unavailable(format!("RSE {} cannot be reached: {e}", site.id)))?;
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| RucioError::unavailable(format!("RSE {} answer broke: {e}", site.id)))?;
    if !status.is_success() {
        return Err(error_from_peer(status, &bytes, &site.id));
    }
    let mut out = (status, bytes).into_response();
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(out)
}

/// A peer's Rucio error, passed on as it is.
fn error_from_peer(status: StatusCode, body: &[u8], site: &str) -> RucioError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let class = parsed["ExceptionClass"]
        .as_str()
        .unwrap_or("RucioException");
    let message = parsed["ExceptionMessage"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("RSE {site} answered {status}"));
    RucioError::new(status, class, message)
}

/// The JSON a forwarded request answered (for answers that are merged).
pub async fn forward_json(
    state: &AppState,
    site: &SiteInfo,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Value> {
    let resp = forward(state, site, Method::POST, path, headers, body).await?;
    let bytes = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024)
        .await
        .map_err(|e| RucioError::unavailable(format!("RSE {}: {e}", site.id)))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| RucioError::unavailable(format!("RSE {} answered no JSON: {e}", site.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn accept_negotiation_follows_rucio() {
        let offered = [NDJSON, METALINK];
        assert_eq!(negotiate(&HeaderMap::new(), &offered).unwrap(), NDJSON);
        assert_eq!(negotiate(&accept("*/*"), &offered).unwrap(), NDJSON);
        assert_eq!(negotiate(&accept(METALINK), &offered).unwrap(), METALINK);
        assert_eq!(
            negotiate(
                &accept("application/metalink4+xml;q=0.9, */*;q=0.1"),
                &offered
            )
            .unwrap(),
            METALINK
        );
        let err = negotiate(&accept("text/html"), &offered).unwrap_err();
        assert_eq!(err.status, StatusCode::NOT_ACCEPTABLE);
        assert_eq!(err.class, "UnsupportedRequestedContentType");
    }

    #[test]
    fn rse_expressions() {
        let sites = vec![
            SiteInfo::new("a", "http://a", true, true),
            SiteInfo::new("b", "http://b", false, true),
            SiteInfo::new("c", "http://c", false, true),
        ];
        let ids = |e: Option<&str>| -> Vec<String> {
            select_sites(&sites, e)
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect()
        };
        assert_eq!(ids(None), ["a", "b", "c"]);
        assert_eq!(ids(Some("*")), ["a", "b", "c"]);
        assert_eq!(ids(Some("c|a")), ["c", "a"]);
        assert_eq!(ids(Some("b")), ["b"]);
        let err = select_sites(&sites, Some("a|zz")).unwrap_err();
        assert_eq!(err.class, "InvalidRSEExpression");
    }

    #[test]
    fn dates_in_rucio_formats() {
        let t = parse_date("2024-05-01T10:20:30.500000").unwrap();
        assert_eq!(rfc1123(t), "Wed, 01 May 2024 10:20:30 UTC");
        assert_eq!(
            parse_date("Wed, 01 May 2024 10:20:30 UTC").unwrap(),
            t - 500
        );
        assert_eq!(parse_date("2024-05-01").unwrap(), t - 37_230_500);
        assert_eq!(parse_date("nope").unwrap_err().class, "ValueError");
    }

    #[test]
    fn rse_ids_are_stable_hex() {
        assert_eq!(rse_id("site-a").len(), 32);
        assert_eq!(rse_id("site-a"), rse_id("site-a"));
        assert_ne!(rse_id("site-a"), rse_id("site-b"));
    }
}
