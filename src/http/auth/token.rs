//! The built-in token issuer, Acronis style: `POST /api/2/idp/token`, OAuth2 client_credentials
//! grant (RFC 6749 §4.4) for the `[[auth.clients]]`, HS256-signed with `[auth] jwt_secret`.
//! Errors in the RFC 6749 §5.2 shape `{"error","error_description"}`.

use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::header::{AUTHORIZATION, CACHE_CONTROL, PRAGMA, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{peer_ip, Auth};
use crate::config::{AuthClient, AuthConfig};
use crate::http::ratelimit::retry_after_secs;

pub const TOKEN_PATH: &str = "/api/2/idp/token";

/// Largest token request body we read.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// A client with digests of its id and secret, compared in constant time.
struct KnownClient {
    client: AuthClient,
    id_digest: [u8; 32],
    secret_digest: [u8; 32],
}

pub struct Issuer {
    key: Option<EncodingKey>,
    clients: Vec<KnownClient>,
    lifetime_secs: u64,
    issuer: Option<String>,
    audience: Option<String>,
}

#[derive(Deserialize, Default)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

#[derive(Serialize)]
struct IssuedClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    scope: String,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// An RFC 6749 §5.2 error.
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
        }
    }
    fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    fn invalid_client() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        )
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        let mut response = (self.status, no_store(), Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="mirrorgate""#),
            );
        }
        response
    }
}

/// Token responses must not be cached (RFC 6749 §5.1).
fn no_store() -> [(http::HeaderName, HeaderValue); 2] {
    [
        (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Issuer {
    pub fn from_config(config: &AuthConfig) -> Self {
        let clients = config
            .clients
            .iter()
            .map(|c| KnownClient {
                id_digest: sha256(c.id.as_bytes()),
                secret_digest: sha256(c.secret.as_bytes()),
                client: c.clone(),
            })
            .collect();
        Self {
            key: config
                .jwt_secret
                .as_ref()
                .map(|s| EncodingKey::from_secret(s.as_bytes())),
            clients,
            lifetime_secs: config.token_lifetime_secs,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        }
    }

    /// The client whose id and secret match, comparing digests in constant time and looking at
    /// every client, so timing tells nothing about which part was wrong.
    pub(super) fn authenticate(&self, id: &str, secret: &str) -> Option<&AuthClient> {
        let (id, secret) = (sha256(id.as_bytes()), sha256(secret.as_bytes()));
        let mut found = None;
        for known in &self.clients {
            let matches = known.id_digest.ct_eq(&id) & known.secret_digest.ct_eq(&secret);
            if bool::from(matches) {
                found = Some(&known.client);
            }
        }
        found
    }

    fn issue(&self, form: &TokenForm, headers: &HeaderMap) -> Result<Response, OAuthError> {
        match form.grant_type.as_deref() {
            Some("client_credentials") => {}
            Some(other) => {
                return Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    format!("grant_type {other:?} is not supported: use client_credentials"),
                ))
            }
            None => return Err(OAuthError::invalid_request("grant_type is required")),
        }
        let (id, secret) = presented_credentials(form, headers)?;
        let client = self
            .authenticate(&id, &secret)
            .ok_or_else(OAuthError::invalid_client)?;
        let scopes = granted_scopes(client, form.scope.as_deref())?;
        self.sign(client, scopes)
    }

    fn sign(&self, client: &AuthClient, scopes: Vec<String>) -> Result<Response, OAuthError> {
        if !self.can_sign() {
            return Err(OAuthError::invalid_client());
        }
        let scope = scopes.join(" ");
        let minted = self.mint(&client.id, scopes).map_err(|why| {
            OAuthError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", why)
        })?;
        tracing::info!(client = %client.id, scope = %scope, "issued an access token");
        let body = json!({
            "access_token": minted.token,
            "token_type": "bearer",
            "expires_in": self.lifetime_secs,
            "expires_on": minted.expires_at,
            "scope": scope,
        });
        Ok((no_store(), Json(body)).into_response())
    }

    /// A signed token for `sub` with these scopes (also what Rucio's `/auth/userpass` hands out).
    /// Fails only when no signing key is configured or signing fails (the reason as text).
    pub(super) fn mint(&self, sub: &str, scopes: Vec<String>) -> Result<Minted, String> {
        let key = self
            .key
            .as_ref()
            .ok_or("no [auth] jwt_secret: this site issues no tokens")?;
        let iat = get_current_timestamp();
        let exp = iat + self.lifetime_secs;
        let claims = IssuedClaims {
            sub,
            iat,
            exp,
            scope: scopes.join(" "),
            jti: uuid::Uuid::new_v4().to_string(),
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        let token = encode(&Header::default(), &claims, key)
            .map_err(|e| format!("cannot sign the token: {e}"))?;
        Ok(Minted {
            token,
            expires_at: exp,
        })
    }

    /// Whether a signing key is configured.
    pub(super) fn can_sign(&self) -> bool {
        self.key.is_some()
    }

    /// How long an issued token lives.
    pub(super) fn lifetime_secs(&self) -> u64 {
        self.lifetime_secs
    }
}

/// A freshly signed token and its expiry (seconds since the epoch).
pub(super) struct Minted {
    pub token: String,
    pub expires_at: u64,
}

/// Client id and secret from HTTP Basic or the form, never both (RFC 6749 §2.3.1).
fn presented_credentials(
    form: &TokenForm,
    headers: &HeaderMap,
) -> Result<(String, String), OAuthError> {
    let basic = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, encoded)| encoded.trim());
    match (basic, &form.client_id, &form.client_secret) {
        (Some(_), _, Some(_)) => Err(OAuthError::invalid_request(
            "use one client authentication method: HTTP Basic or client_secret, not both",
        )),
        (Some(encoded), _, None) => decode_basic(encoded).ok_or_else(OAuthError::invalid_client),
        (None, Some(id), Some(secret)) => Ok((id.clone(), secret.clone())),
        (None, _, _) => Err(OAuthError::invalid_client()),
    }
}

fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let bytes = data_encoding::BASE64.decode(encoded.as_bytes()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// The requested scopes, each of which the client must hold; all of its scopes when none is
/// asked for.
fn granted_scopes(client: &AuthClient, requested: Option<&str>) -> Result<Vec<String>, OAuthError> {
    let requested: Vec<&str> = requested.unwrap_or("").split_whitespace().collect();
    if requested.is_empty() {
        return Ok(client.scopes.clone());
    }
    let mut granted: Vec<String> = Vec::new();
    for scope in requested {
        if !client.scopes.iter().any(|s| s == scope) {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                format!("scope {scope:?} is not granted to client {:?}", client.id),
            ));
        }
        if !granted.iter().any(|s| s == scope) {
            granted.push(scope.to_owned());
        }
    }
    Ok(granted)
}

/// `POST /api/2/idp/token`. Rate limited per peer address (per claimed client id when the
/// address is unknown) to slow down secret guessing.
pub async fn issue_token(State(auth): State<Arc<Auth>>, request: Request) -> Response {
    let peer = peer_ip(&request);
    let (parts, body) = request.into_parts();
    let form = match to_bytes(body, MAX_FORM_BYTES).await {
        Ok(bytes) => serde_urlencoded::from_bytes::<TokenForm>(&bytes)
            .map_err(|e| OAuthError::invalid_request(format!("not a form body: {e}"))),
        Err(_) => Err(OAuthError::invalid_request("the request body is too large")),
    };
    let form = match form {
        Ok(form) => form,
        Err(e) => return e.into_response(),
    };
    let limit_key = match (peer, &form.client_id) {
        (Some(ip), _) => format!("token:ip:{ip}"),
        (None, Some(id)) => format!("token:client:{id}"),
        (None, None) => "token:anonymous".to_owned(),
    };
    if let Err(wait) = auth.limits.check(&limit_key) {
        return too_many(retry_after_secs(wait));
    }
    match auth.issuer.issue(&form, &parts.headers) {
        Ok(response) => response,
        Err(e) => {
            tracing::info!(error = e.error, "token request refused: {}", e.description);
            e.into_response()
        }
    }
}

fn too_many(retry_after: u64) -> Response {
    let mut response = OAuthError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        format!("too many token requests: retry after {retry_after} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> Issuer {
        Issuer::from_config(&AuthConfig {
            jwt_secret: Some("s".into()),
            clients: vec![AuthClient {
                id: "ops".into(),
                secret: "pw".into(),
                scopes: vec!["a".into(), "b".into()],
            }],
            ..AuthConfig::default()
        })
    }

    #[test]
    fn only_the_exact_id_and_secret_authenticate() {
        let issuer = issuer();
        assert!(issuer.authenticate("ops", "pw").is_some());
        assert!(issuer.authenticate("ops", "pw2").is_none());
        assert!(issuer.authenticate("op", "pw").is_none());
    }

    #[test]
    fn scopes_narrow_but_never_widen() {
        let issuer = issuer();
        let client = &issuer.clients[0].client;
        assert_eq!(granted_scopes(client, None).unwrap(), ["a", "b"]);
        assert_eq!(granted_scopes(client, Some("b b")).unwrap(), ["b"]);
        let err = granted_scopes(client, Some("a c")).unwrap_err();
        assert_eq!(err.error, "invalid_scope");
    }

    #[test]
    fn basic_credentials_decode() {
        let encoded = data_encoding::BASE64.encode(b"ops:p:w");
        assert_eq!(
            decode_basic(&encoded),
            Some(("ops".to_owned(), "p:w".to_owned()))
        );
        assert_eq!(decode_basic("!!"), None);
    }
}
