//! Control-plane authentication, scopes and rate limits, with real sites on 127.0.0.1: the
//! token endpoint, 401/403/429 in every family's envelope, foreign keys (ES256 PEM and JWKS),
//! the data plane without tokens, and when auth is on.

mod common;
use std::time::Duration;

use common::*;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

/// Auth on (the listener is loopback, so explicitly), generous limits, four clients.
fn auth_config(extra: &str) -> String {
    format!(
        r#"[auth]
enabled = true
jwt_secret = "{SECRET}"
{extra}
[[auth.clients]]
id = "admin"
secret = "admin-pw"
scopes = ["mirrorgate::admin", "dr_service::admin"]
[[auth.clients]]
id = "reader"
secret = "reader-pw"
scopes = ["mirrorgate::read", "protection::readonly"]
[[auth.clients]]
id = "operator"
secret = "operator-pw"
scopes = ["dr::support_operator"]
[[auth.clients]]
id = "nobody"
secret = "nobody-pw"
scopes = ["something::else"]
"#
    )
}

fn auth_site() -> Site {
    Site::start(
        "site-a",
        &auth_config("rate_limit_per_second = 1000\nrate_limit_burst = 1000"),
    )
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn token_request(site: &Site, form: &[(&str, &str)]) -> Response {
    http()
        .post(site.url("/api/2/idp/token"))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// A token from the built-in issuer (all the client's scopes, or `scope`).
async fn token(site: &Site, id: &str, secret: &str, scope: Option<&str>) -> String {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", id),
        ("client_secret", secret),
    ];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    let r = token_request(site, &form).await;
    assert_eq!(r.status(), 200, "token for {id}");
    let body: Value = r.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn call(site: &Site, method: Method, path: &str, token: Option<&str>) -> Response {
    let mut request = http().request(method, site.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn get(site: &Site, path: &str, token: Option<&str>) -> Response {
    call(site, Method::GET, path, token).await
}

async fn post(site: &Site, path: &str, token: Option<&str>) -> Response {
    call(site, Method::POST, path, token).await
}

fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The route answered (the auth layer let the request through).
fn passed(status: StatusCode) -> bool {
    !matches!(status.as_u16(), 401 | 403 | 429)
}

fn claims(scope: &str, exp: u64) -> Value {
    json!({"sub": "someone", "scope": scope, "iat": get_current_timestamp(), "exp": exp})
}

fn hs256(secret: &str, claims: &Value) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

const DR_SERVERS: &str = "/api/dr/v2/servers";
const DR_SERVER: &str = "/api/dr/v2/servers/1f100401-357b-4d04-a0c0-d1206c947473";

#[tokio::test]
async fn token_endpoint_issues_client_credentials_tokens() {
    let site = auth_site();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "admin"),
        ("client_secret", "admin-pw"),
    ];
    let r = token_request(&site, &form).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control"), "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "mirrorgate::admin dr_service::admin");
    let issued = body["access_token"].as_str().unwrap();
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(issued).unwrap();
    assert_eq!(claims["sub"], "admin");
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 3600);

    // HTTP Basic instead of form fields.
    let r = http()
        .post(site.url("/api/2/idp/token"))
        .basic_auth("reader", Some("reader-pw"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "mirrorgate::read protection::readonly");

    // Wrong secret, unknown client: 401 invalid_client.
    for (id, secret) in [("admin", "nope"), ("ghost", "admin-pw")] {
        let r = token_request(
            &site,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", secret),
            ],
        )
        .await;
        assert_eq!(r.status(), 401);
        assert!(header(&r, "www-authenticate").starts_with("Basic"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
    }

    // Other grants: 400 unsupported_grant_type; no grant: 400 invalid_request.
    let r = token_request(
        &site,
        &[
            ("grant_type", "password"),
            ("client_id", "admin"),
            ("client_secret", "admin-pw"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );
    let r = token_request(&site, &[("client_id", "admin")]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");

    // `scope` narrows what is granted, and never widens it.
    let narrow = token(&site, "admin", "admin-pw", Some("mirrorgate::admin")).await;
    assert!(passed(
        get(&site, "/administration/topologies", Some(&narrow))
            .await
            .status()
    ));
    assert_eq!(get(&site, DR_SERVERS, Some(&narrow)).await.status(), 403);
    let r = token_request(
        &site,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "reader"),
            ("client_secret", "reader-pw"),
            ("scope", "mirrorgate::admin"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_scope");
}

#[tokio::test]
async fn every_control_family_answers_401_in_its_envelope() {
    let site = auth_site();

    let r = get(&site, "/administration/topologies", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(&r, "www-authenticate"),
        r#"Bearer realm="mirrorgate""#
    );
    assert!(header(&r, "x-clonecloudstore-error").contains("bearer token"));
    assert!(!header(&r, "x-clonecloudstore-op-id").is_empty());

    let r = get(&site, "/_/backbeat/api/crr/status", None).await;
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate").starts_with("Bearer"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], 401);
    assert_eq!(body["MissingSecurityHeader"], true);

    let r = get(&site, DR_SERVERS, None).await;
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate").starts_with("Bearer"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Unauthorized");
    assert_eq!(body["error"]["context"], json!({}));
    assert_eq!(
        body["error"]["debug"]["msg"],
        "Authorization header is invalid."
    );
    assert_eq!(body["error"]["domain"], "DisasterRecovery");
    // The task and RPO routes are DR reads too: 401 without a token, open to a DR reader.
    let reader = token(&site, "reader", "reader-pw", None).await;
    let task = "/api/dr/v2/tasks/6f1b5b5e-0000-4000-8000-000000000000";
    let rpo = format!("{DR_SERVER}/rpo");
    for path in [task, rpo.as_str()] {
        let r = get(&site, path, None).await;
        assert_eq!(r.status(), 401, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "Unauthorized", "{path}");
        assert_eq!(body["error"]["domain"], "DisasterRecovery", "{path}");
        let r = get(&site, path, Some(&reader)).await;
        assert!(passed(r.status()), "{path}: {}", r.status());
    }

    // The Rucio routes added beyond the seed are operator routes too.
    for path in ["/replicas/bad/dids", "/replicas/quarantine"] {
        let r = post(&site, path, None).await;
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(header(&r, "exceptionclass"), "CannotAuthenticate", "{path}");
    }
    let r = get(&site, "/replicas/rse/site-a", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "exceptionclass"), "CannotAuthenticate");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ExceptionClass"], "CannotAuthenticate");
    assert!(body["ExceptionMessage"].is_string());

    for path in [
        "/api/replication-definitions",
        "/alfresco/service/api/running-actions",
        "/api/status",
    ] {
        let r = get(&site, path, None).await;
        assert_eq!(r.status(), 401, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["statusCode"], 401);
        assert!(body["error"]["errorKey"].is_string());
        assert!(body["error"]["briefSummary"].is_string());
    }

    // Rucio also takes its token in X-Rucio-Auth-Token.
    let r = http()
        .get(site.url("/replicas/rse/site-a"))
        .header("X-Rucio-Auth-Token", &reader)
        .send()
        .await
        .unwrap();
    assert!(passed(r.status()), "{}", r.status());
}

#[tokio::test]
async fn scopes_decide_between_403_and_the_route() {
    let site = auth_site();
    let reader = token(&site, "reader", "reader-pw", None).await;
    let operator = token(&site, "operator", "operator-pw", None).await;
    let admin = token(&site, "admin", "admin-pw", None).await;
    let nobody = token(&site, "nobody", "nobody-pw", None).await;

    // Read scope: reads yes, changes no.
    let r = get(&site, "/administration/topologies", Some(&reader)).await;
    assert_eq!(r.status(), 200);
    let r = get(&site, "/_/backbeat/api/crr/status", Some(&reader)).await;
    assert_eq!(r.status(), 200);
    let r = post(&site, "/_/backbeat/api/crr/pause", Some(&reader)).await;
    assert_eq!(r.status(), 403);
    assert!(header(&r, "www-authenticate").contains("insufficient_scope"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["AccessDenied"], true);
    let r = call(
        &site,
        Method::DELETE,
        "/administration/topologies/site-x",
        Some(&reader),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(!header(&r, "x-clonecloudstore-error").is_empty());

    // Admin scope: changes too.
    let r = post(&site, "/_/backbeat/api/crr/pause", Some(&admin)).await;
    assert_eq!(r.status(), 200);
    let r = post(&site, "/_/backbeat/api/crr/resume", Some(&admin)).await;
    assert_eq!(r.status(), 200);

    // DR, as the seed scopes it.
    assert!(passed(get(&site, DR_SERVERS, Some(&reader)).await.status()));
    assert!(passed(
        get(&site, "/api/dr/v2/sites", Some(&operator))
            .await
            .status()
    ));
    let test = format!("{DR_SERVER}:start_failover_test");
    let prod = format!("{DR_SERVER}:start_failover_prod");
    let stop = format!("{DR_SERVER}:stop_failover");
    let r = post(&site, &test, Some(&reader)).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "MethodNotAllowed");
    assert_eq!(
        body["error"]["debug"]["msg"],
        "This method is not allowed for this user account."
    );
    assert_eq!(body["error"]["domain"], "DisasterRecovery");
    assert!(passed(post(&site, &test, Some(&operator)).await.status()));
    assert!(passed(post(&site, &stop, Some(&operator)).await.status()));
    assert_eq!(post(&site, &prod, Some(&operator)).await.status(), 403);
    assert!(passed(post(&site, &prod, Some(&admin)).await.status()));
    assert_eq!(
        get(&site, "/administration/topologies", Some(&operator))
            .await
            .status(),
        403
    );

    // A token with none of the scopes: 403 in the Rucio and Alfresco envelopes.
    let r = get(&site, "/replicas/rse/site-a", Some(&nobody)).await;
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "exceptionclass"), "AccessDenied");
    let r = get(&site, "/api/replication-definitions", Some(&nobody)).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"]["errorKey"],
        "framework.exception.PermissionDenied"
    );
    assert!(passed(
        get(&site, "/api/replication-definitions", Some(&reader))
            .await
            .status()
    ));
    assert_eq!(get(&site, "/api/status", Some(&reader)).await.status(), 200);
    assert_eq!(get(&site, "/api/status", Some(&nobody)).await.status(), 403);
}

#[tokio::test]
async fn forged_expired_and_malformed_tokens_are_refused() {
    let site = auth_site();
    let later = get_current_timestamp() + 600;
    let forged = hs256("another-secret", &claims("dr_service::admin", later));
    let expired = hs256(
        SECRET,
        &claims("dr_service::admin", get_current_timestamp() - 3600),
    );
    let good = hs256(SECRET, &claims("dr_service::admin", later));

    assert!(passed(get(&site, DR_SERVERS, Some(&good)).await.status()));
    for (token, why) in [
        (forged.as_str(), "signature"),
        (expired.as_str(), "expired"),
        ("not.a.jwt", "well-formed"),
    ] {
        let r = get(&site, DR_SERVERS, Some(token)).await;
        assert_eq!(r.status(), 401, "{why}");
        assert!(header(&r, "www-authenticate").contains(r#"error="invalid_token""#));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "Unauthorized");
        let detail = body["error"]["debug"]["additional"][0].as_str().unwrap();
        assert!(detail.contains(why), "{detail}");
    }
    let r = http()
        .get(site.url("/administration/topologies"))
        .basic_auth("admin", Some("admin-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "Basic is not a bearer token");
}

/// An ECDSA P-256 key pair: (PKCS#8 private PEM, SPKI public PEM).
fn p256_pair() -> (String, String) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    (pair.serialize_pem(), pair.public_key_pem())
}

fn es256(private_pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn es256_tokens_from_a_pem_key_or_a_jwks_with_issuer_and_audience() {
    let keys = tempfile::tempdir().unwrap();
    let (pem_private, pem_public) = p256_pair();
    let (jwks_private, _) = p256_pair();
    let (stranger_private, _) = p256_pair();
    let pem_path = keys.path().join("idp.pem");
    std::fs::write(&pem_path, pem_public).unwrap();
    let mut jwk = Jwk::from_encoding_key(
        &EncodingKey::from_ec_pem(jwks_private.as_bytes()).unwrap(),
        Algorithm::ES256,
    )
    .unwrap();
    jwk.common.key_id = Some("k2".into());
    let jwks_path = keys.path().join("jwks.json");
    let jwks = JwkSet { keys: vec![jwk] };
    std::fs::write(&jwks_path, serde_json::to_vec(&jwks).unwrap()).unwrap();
    let site = Site::start(
        "site-a",
        &format!(
            "[auth]\nenabled = true\npublic_key_files = [\"{}\"]\njwks_file = \"{}\"\n\
             issuer = \"https://idp.test\"\naudience = \"mirrorgate\"\n",
            pem_path.display(),
            jwks_path.display()
        ),
    );
    let exp = get_current_timestamp() + 600;
    let full = json!({"sub": "svc", "iss": "https://idp.test", "aud": "mirrorgate",
                      "exp": exp, "scopes": ["mirrorgate::read"]});
    let path = "/administration/topologies";

    let by_pem = es256(&pem_private, None, &full);
    assert_eq!(get(&site, path, Some(&by_pem)).await.status(), 200);
    let by_jwks = es256(&jwks_private, Some("k2"), &full);
    assert_eq!(get(&site, path, Some(&by_jwks)).await.status(), 200);
    let stranger = es256(&stranger_private, None, &full);
    assert_eq!(get(&site, path, Some(&stranger)).await.status(), 401);

    let mut no_audience = full.clone();
    no_audience.as_object_mut().unwrap().remove("aud");
    let token = es256(&pem_private, None, &no_audience);
    assert_eq!(get(&site, path, Some(&token)).await.status(), 401);
    let mut other_issuer = full.clone();
    other_issuer["iss"] = json!("https://evil.test");
    let token = es256(&pem_private, None, &other_issuer);
    assert_eq!(get(&site, path, Some(&token)).await.status(), 401);
}

#[tokio::test]
async fn the_data_plane_needs_no_token() {
    let site = auth_site();
    assert_eq!(get(&site, "/healthz", None).await.status(), 200);
    assert_eq!(get(&site, "/metrics", None).await.status(), 200);
    create_bucket(&site, "open").await;
    put_object(&site, "open", "k", b"hello".to_vec()).await;
    let r = client()
        .get(site.url("/cloudclonestore/open/k"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello");
    // The peer routes are not the data plane: with auth on they need a peer credential
    // (tests/peer_auth.rs).
    let r = client()
        .get(site.url("/replicator/remote/buckets/open/k"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn bursts_over_the_limit_get_429_with_retry_after() {
    let site = Site::start(
        "site-a",
        &auth_config("rate_limit_per_second = 1\nrate_limit_burst = 2"),
    );
    let admin = token(&site, "admin", "admin-pw", None).await;

    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..4 {
        let r = get(&site, DR_SERVERS, Some(&admin)).await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.unwrap_or_else(|| panic!("no 429 in {statuses:?}"));
    let retry_after: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert_eq!(body["error"]["context"]["retry_after"], retry_after);
    assert_eq!(body["error"]["domain"], "DisasterRecovery");

    // Other families: their own envelope, the same header.
    let r = get(&site, "/_/backbeat/api/crr/status", Some(&admin)).await;
    assert_eq!(r.status(), 429);
    assert!(!header(&r, "retry-after").is_empty());
    assert_eq!(r.json::<Value>().await.unwrap()["TooManyRequests"], true);

    // After the announced wait the client is served again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert!(passed(get(&site, DR_SERVERS, Some(&admin)).await.status()));

    // Guessing secrets at the token endpoint is slowed down too.
    let mut last = StatusCode::OK;
    for _ in 0..5 {
        let r = token_request(
            &site,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "reader"),
                ("client_secret", "guess"),
            ],
        )
        .await;
        last = r.status();
        if last == 429 {
            assert!(!header(&r, "retry-after").is_empty());
            break;
        }
    }
    assert_eq!(last, 429);
}

#[tokio::test]
async fn auth_is_off_on_loopback_unless_enabled() {
    let dev = Site::start("site-a", &format!("[auth]\njwt_secret = \"{SECRET}\"\n"));
    let r = get(&dev, "/administration/topologies", None).await;
    assert_eq!(r.status(), 200);
    assert!(dev.log_text().contains("auth off"), "{}", dev.log_text());

    let on = auth_site();
    let r = get(&on, "/administration/topologies", None).await;
    assert_eq!(r.status(), 401);
    assert!(on.log_text().contains("auth on ([auth] enabled = true)"));
}

#[test]
fn auth_on_without_a_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = refuses_to_start(&site_config(
        "site-a",
        dir.path(),
        "[auth]\nenabled = true\n",
    ));
    assert!(stderr.contains("jwt_secret"), "{stderr}");
}
