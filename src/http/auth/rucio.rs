//! Rucio's authentication endpoints, so that the stock Rucio client (`rucio-clients`) works:
//! `GET /auth/userpass` hands out a token of the built-in issuer (username/password = the id and
//! secret of an `[[auth.clients]]` entry; the token carries that client's scopes) in
//! `X-Rucio-Auth-Token`, with `X-Rucio-Auth-Token-Expires`; `GET /auth/validate` describes the
//! presented token. With control-plane auth off every account gets a token (and every token is
//! accepted). Errors are Rucio's `CannotAuthenticate` (401), so the client's re-authentication
//! loop ends with that message.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{TimeZone, Utc};
use http::header::{CACHE_CONTROL, PRAGMA};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::json;

use super::keys::Principal;
use super::{peer_ip, Auth, RUCIO_TOKEN};
use crate::http::common::{text_header, ERROR};
use crate::http::ratelimit::retry_after_secs;

pub const USERPASS_PATH: &str = "/auth/userpass";
pub const VALIDATE_PATH: &str = "/auth/validate";

const EXPIRES: &str = "x-rucio-auth-token-expires";

/// A Rucio error: the JSON body and the `ExceptionClass`/`ExceptionMessage` headers.
fn rucio_error(status: StatusCode, class: &'static str, message: &str) -> Response {
    let body = json!({ "ExceptionClass": class, "ExceptionMessage": message });
    // Rucio sends its errors as `application/octet-stream`.
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        HeaderName::from_static("exceptionclass"),
        HeaderValue::from_static(class),
    );
    headers.insert(
        HeaderName::from_static("exceptionmessage"),
        text_header(&message.chars().take(125).collect::<String>()),
    );
    headers.insert(ERROR, text_header(message));
    response
}

fn cannot_authenticate(message: &str) -> Response {
    rucio_error(StatusCode::UNAUTHORIZED, "CannotAuthenticate", message)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Datetimes as Rucio writes them in headers (`%a, %d %b %Y %H:%M:%S UTC`).
fn rucio_date(secs: u64) -> String {
    Utc.timestamp_opt(secs as i64, 0)
        .single()
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S UTC")
        .to_string()
}

/// `GET /auth/userpass`.
pub async fn userpass(State(auth): State<Arc<Auth>>, request: Request) -> Response {
    let headers = request.headers();
    let account = header(headers, "x-rucio-account");
    let username = header(headers, "x-rucio-username");
    let password = header(headers, "x-rucio-password");
    let limit_key = match (peer_ip(&request), username) {
        (Some(ip), _) => format!("token:ip:{ip}"),
        (None, Some(user)) => format!("token:client:{user}"),
        (None, None) => "token:anonymous".to_owned(),
    };
    if let Err(wait) = auth.limits.check(&limit_key) {
        let retry_after = retry_after_secs(wait);
        let mut response = rucio_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            &format!("too many authentication requests: retry after {retry_after} s"),
        );
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
        return response;
    }
    let (Some(username), Some(password)) = (username, password) else {
        return cannot_authenticate(
            "Cannot authenticate: X-Rucio-Username and X-Rucio-Password are required",
        );
    };
    let client = auth.issuer.authenticate(username, password);
    let (sub, scopes) = match client {
        Some(client) => (client.id.clone(), client.scopes.clone()),
        None if !auth.enabled => (account.unwrap_or(username).to_owned(), Vec::new()),
        None => {
            tracing::info!(username, "Rucio userpass authentication refused");
            return cannot_authenticate(&format!(
                "Cannot authenticate to account {} with given credentials",
                account.unwrap_or(username)
            ));
        }
    };
    let (token, expires_at) = if auth.issuer.can_sign() {
        match auth.issuer.mint(&sub, scopes) {
            Ok(minted) => (minted.token, minted.expires_at),
            Err(why) => return cannot_authenticate(&why),
        }
    } else if !auth.enabled {
        // No key to sign with, and none needed: auth is off, any token is accepted.
        let expires = jsonwebtoken::get_current_timestamp() + auth.issuer.lifetime_secs();
        (
            format!("mirrorgate-unverified-{}", uuid::Uuid::new_v4()),
            expires,
        )
    } else {
        return cannot_authenticate("no [auth] jwt_secret: this site issues no tokens");
    };
    tracing::info!(account = %sub, "issued a Rucio token");
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(HeaderName::from_static(RUCIO_TOKEN), text_header(&token));
    h.insert(
        HeaderName::from_static(EXPIRES),
        text_header(&rucio_date(expires_at)),
    );
    response
}

/// `GET /auth/validate`: who the presented token speaks for and until when. With auth on the
/// auth layer has already verified it (any valid token will do, no scope is needed).
pub async fn validate(State(auth): State<Arc<Auth>>, request: Request) -> Response {
    let token = header(request.headers(), RUCIO_TOKEN)
        .or_else(|| super::bearer_token(request.headers()).ok());
    let Some(token) = token else {
        return cannot_authenticate("Cannot authenticate: no X-Rucio-Auth-Token");
    };
    let principal = match request.extensions().get::<Principal>() {
        Some(p) => Some(p.clone()),
        None => auth.verifier.verify(token).ok(),
    };
    let account = principal
        .as_ref()
        .and_then(|p| p.subject.clone())
        .or_else(|| header(request.headers(), "x-rucio-account").map(str::to_owned));
    let Some(account) = account else {
        return cannot_authenticate("Cannot authenticate: the token names no account");
    };
    let scopes = principal.map(|p| p.scopes.join(" ")).unwrap_or_default();
    let lifetime = expiry_of(token)
        .map(rucio_date)
        .map(serde_json::Value::String)
        .unwrap_or(serde_json::Value::Null);
    Json(json!({
        "account": account,
        "identity": account,
        "lifetime": lifetime,
        "audience": null,
        "authz_scope": scopes,
    }))
    .into_response()
}

/// The `exp` claim of a JWT (already verified by the caller, or auth is off).
fn expiry_of(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = data_encoding::BASE64URL_NOPAD
        .decode(payload.trim_end_matches('=').as_bytes())
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["exp"].as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_as_rucio_writes_them() {
        assert_eq!(rucio_date(0), "Thu, 01 Jan 1970 00:00:00 UTC");
    }

    #[test]
    fn expiry_is_read_from_the_payload() {
        let payload = data_encoding::BASE64URL_NOPAD.encode(br#"{"exp":42}"#);
        assert_eq!(expiry_of(&format!("h.{payload}.s")), Some(42));
        assert_eq!(expiry_of("opaque"), None);
    }
}
