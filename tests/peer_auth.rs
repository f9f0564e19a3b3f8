//! The trust boundary, with real sites on 127.0.0.1: peers authenticate on every
//! `/replicator/remote/**` route, orders come only from their authenticated sender, sites mint
//! their own peer tokens, data-plane tokens with `[auth] data_plane`, the secrets policy, and
//! the administration API's topology validation.

mod common;
use std::time::Duration;

use common::*;
use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use reqwest::{Method, Response};
use serde_json::{json, Value};

const SECRET: &str = "peer-auth-test-secret-0123456789abcdef";

/// Auth on (explicitly: the listener is loopback) with the shared secret.
fn auth_on(extra: &str) -> String {
    format!(
        "[auth]\nenabled = true\njwt_secret = \"{SECRET}\"\n{extra}\n\
         [replication]\nworkers = 2\nmax_attempts = 3\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\n"
    )
}

fn mint(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn token(sub: &str, scope: &str) -> String {
    let now = get_current_timestamp();
    mint(json!({"sub": sub, "scope": scope, "iat": now, "exp": now + 300}))
}

fn peer_token(site: &str) -> String {
    token(site, "mirrorgate::peer")
}

fn admin_token() -> String {
    token("ops", "mirrorgate::admin")
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// Registers `id` at `uri` in `site`'s topology (with an admin token: harmless with auth off).
async fn register(site: &Site, id: &str, uri: &str) {
    let r = http()
        .post(site.url("/administration/topologies"))
        .bearer_auth(admin_token())
        .json(&json!({"id": id, "name": id, "uri": uri, "status": "UP"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "register {id}: {:?}", r.text().await);
}

fn order(op_id: &str, from: &str, to: &str) -> Value {
    json!({
        "opId": op_id, "fromSite": from, "toSite": to, "clientId": CLIENT,
        "bucketName": "orders", "objectName": "k", "action": "DELETE"
    })
}

async fn send(site: &Site, path: &str, token: Option<&str>, body: &Value) -> Response {
    let mut r = http().post(site.url(path)).json(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

async fn status_of(site: &Site, token: Option<&str>, op_id: &str) -> String {
    let r = send(
        site,
        "/replicator/remote/orders/status",
        token,
        &json!([op_id]),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body[0]["status"].as_str().unwrap().to_owned()
}

fn ccs_error(r: &Response) -> String {
    r.headers()
        .get("x-clonecloudstore-error")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn peer_routes_need_a_peer_credential_when_auth_is_on() {
    let a = Site::start("site-a", &auth_on(""));
    register(&a, "site-b", "http://127.0.0.1:9").await;
    let routes: &[(Method, &str)] = &[
        (Method::HEAD, "/replicator/remote/buckets/bkt"),
        (Method::GET, "/replicator/remote/buckets/bkt/obj"),
        (Method::GET, "/replicator/remote/inventory"),
        (Method::POST, "/replicator/remote/orders"),
        (Method::POST, "/replicator/remote/orders/multiple"),
        (Method::POST, "/replicator/remote/orders/status"),
        (Method::POST, "/replicator/remote/catalogue/replicas"),
        (Method::POST, "/replicator/remote/catalogue/bad_replicas"),
        (Method::POST, "/replicator/remote/reports"),
        (Method::GET, "/replicator/remote/blocks/bkt/obj"),
        (Method::POST, "/replicator/remote/prefetch"),
        (Method::GET, "/replicator/remote/uploads/u1"),
        (Method::GET, "/replicator/remote/uploads/u1/blocks/0"),
    ];
    let expired = {
        let now = get_current_timestamp();
        mint(json!({"sub": "site-b", "scope": "mirrorgate::peer", "exp": now - 120}))
    };
    let cases: Vec<(Option<String>, u16, &str)> = vec![
        (None, 401, "no token"),
        (Some("garbage".into()), 401, "not a JWT"),
        (Some(expired), 401, "expired (beyond the 5 s leeway)"),
        (
            Some(token("site-b", "mirrorgate::admin")),
            403,
            "no peer scope",
        ),
        (
            Some(peer_token("site-z")),
            403,
            "not a site of the topology",
        ),
        (Some(peer_token("site-a")), 403, "the site itself"),
    ];
    for (method, path) in routes {
        for (token, want, why) in &cases {
            let mut r = client()
                .request(method.clone(), a.url(path))
                .header("content-type", "application/json")
                .body("[]");
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let r = r.send().await.unwrap();
            assert_eq!(r.status().as_u16(), *want, "{method} {path}: {why}");
            assert!(
                !ccs_error(&r).is_empty(),
                "{method} {path}: CCS error header"
            );
            assert_eq!(r.headers()["x-clonecloudstore-module"], "REPLICATOR");
            if *want == 401 {
                assert_eq!(r.headers()["www-authenticate"], "Bearer");
            }
        }
        // A peer token of a site of the topology passes the guard.
        let r = client()
            .request(method.clone(), a.url(path))
            .header("content-type", "application/json")
            .body("[]")
            .bearer_auth(peer_token("site-b"))
            .send()
            .await
            .unwrap();
        assert!(
            !matches!(r.status().as_u16(), 401 | 403),
            "{method} {path}: {}",
            r.status()
        );
    }
}

#[tokio::test]
async fn orders_come_only_from_their_authenticated_site() {
    let a = Site::start("site-a", &auth_on(""));
    register(&a, "site-b", "http://127.0.0.1:9").await;
    register(&a, "site-c", "http://127.0.0.1:9").await;
    let (b, c) = (peer_token("site-b"), peer_token("site-c"));

    // site-c sending an order as site-b: 403, nothing stored.
    let r = send(
        &a,
        "/replicator/remote/orders",
        Some(&c),
        &order("op-forged", "site-b", "site-a"),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(ccs_error(&r).contains("site-b"), "{}", ccs_error(&r));
    assert_eq!(status_of(&a, Some(&b), "op-forged").await, "UNKNOWN");

    // One forged order in a batch refuses the whole batch.
    let batch = json!([
        order("op-c1", "site-c", "site-a"),
        order("op-c2", "site-b", "site-a")
    ]);
    let r = send(&a, "/replicator/remote/orders/multiple", Some(&c), &batch).await;
    assert_eq!(r.status(), 403);
    assert_eq!(status_of(&a, Some(&c), "op-c1").await, "UNKNOWN");

    // Its own order is accepted; the status is told to its sender only.
    let r = send(
        &a,
        "/replicator/remote/orders",
        Some(&c),
        &order("op-c3", "site-c", "site-a"),
    )
    .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_ne!(status_of(&a, Some(&c), "op-c3").await, "UNKNOWN");
    assert_eq!(status_of(&a, Some(&b), "op-c3").await, "UNKNOWN");
}

#[tokio::test]
async fn orders_from_outside_the_topology_are_refused_even_with_auth_off() {
    // The loopback development default: no credential needed, but fromSite is checked.
    let a = Site::start("site-a", "");
    register(&a, "site-b", "http://127.0.0.1:9").await;
    let r = send(
        &a,
        "/replicator/remote/orders",
        None,
        &order("op-z", "site-z", "site-a"),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(ccs_error(&r).contains("site-z"), "{}", ccs_error(&r));
    assert_eq!(status_of(&a, None, "op-z").await, "UNKNOWN");
    let r = send(
        &a,
        "/replicator/remote/orders",
        None,
        &order("op-b", "site-b", "site-a"),
    )
    .await;
    assert_eq!(r.status(), 201);
    // A DELETED site no longer sends orders.
    let r = http()
        .delete(a.url("/administration/topologies/site-b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = send(
        &a,
        "/replicator/remote/orders",
        None,
        &order("op-b2", "site-b", "site-a"),
    )
    .await;
    assert_eq!(r.status(), 403);
}

/// Registers each site in the other's topology with an admin token.
async fn mesh_with_auth(sites: &[&Site]) {
    for x in sites {
        for y in sites {
            if x.id != y.id {
                register(x, &y.id, &y.url).await;
            }
        }
    }
}

#[tokio::test]
async fn sites_sharing_a_secret_replicate_with_auth_on() {
    let (a, b) = (
        Site::start("site-a", &auth_on("")),
        Site::start("site-b", &auth_on("")),
    );
    mesh_with_auth(&[&a, &b]).await;
    create_bucket(&a, "shared").await;
    let body = data(300_000, 3);
    put_object(&a, "shared", "obj", body.clone()).await;
    let got = eventually(
        Duration::from_secs(60),
        "obj replicated to site-b",
        || async {
            let r = client()
                .get(b.url("/cloudclonestore/shared/obj"))
                .send()
                .await
                .ok()?;
            if r.status() != 200 || r.headers().contains_key("x-clonecloudstore-target-id") {
                return None;
            }
            Some(r.bytes().await.ok()?.to_vec())
        },
    )
    .await;
    assert_eq!(got, body);
    // Read through the topology from b (HEAD + GET at a with b's peer token), or from b's
    // copy if replication was faster: either way b's calls to a passed a's guard.
    put_object(&a, "shared", "only-at-a", b"x".repeat(10)).await;
    let r = client()
        .get(b.url("/replicator/local/buckets/shared/only-at-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        !a.log_text().contains("peer routes need"),
        "a refused one of b's calls:\n{}",
        a.log_text()
    );
}

#[tokio::test]
async fn data_plane_tokens_name_the_client() {
    let a = Site::start("site-a", &auth_on("data_plane = true"));
    let now = get_current_timestamp();
    let as_client = mint(json!({"sub": CLIENT, "iat": now, "exp": now + 300}));
    let via_claim = mint(json!({"sub": "svc", "client_id": CLIENT, "exp": now + 300}));

    // No token: 401, whether or not the header is sent.
    let r = client()
        .post(a.url("/cloudclonestore/dpl"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-clonecloudstore-module"], "ACCESSOR");
    let r = http()
        .get(a.url("/replicator/local/buckets/dpl"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A header that disagrees with the token: 403.
    let r = client_as("client-2")
        .post(a.url("/cloudclonestore/dpl"))
        .bearer_auth(&as_client)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(ccs_error(&r).contains("client-2"), "{}", ccs_error(&r));

    // The matching header, or none at all: the token's client.
    let r = client()
        .post(a.url("/cloudclonestore/dpl"))
        .bearer_auth(&as_client)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http()
        .post(a.url("/cloudclonestore/dpl/k"))
        .bearer_auth(&via_claim)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "client_id claim is {CLIENT}, the owner");
    let r = http()
        .get(a.url("/cloudclonestore/dpl/k"))
        .bearer_auth(&as_client)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello");
    // Another client's token is another client (CCS ownership decides what it may do).
    let other = mint(json!({"sub": "client-2", "exp": now + 300}));
    let r = http()
        .get(a.url("/cloudclonestore/dpl/k"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 403 | 404), "{}", r.status());
    // Health and metrics stay public.
    let r = http().get(a.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn a_guessable_secret_on_a_public_listener_refuses_to_start() {
    // The check runs when the config is loaded, before anything binds: 0.0.0.0 is never
    // listened on here.
    for secret in ["change-me", "too-short-0123456789"] {
        let config = format!(
            "[site]\nid = \"site-a\"\nlisten = \"0.0.0.0:0\"\ndata_dir = \"/nonexistent/mg\"\n\
             [auth]\njwt_secret = \"{secret}\"\n"
        );
        let stderr = refuses_to_start(&config);
        assert!(stderr.contains("[auth] jwt_secret"), "{stderr}");
    }
}

#[tokio::test]
async fn the_topology_api_validates_ids_and_urls() {
    let a = Site::start("site-a", "");
    let bad = [
        (
            json!({"id": "bad id", "uri": "http://127.0.0.1:9"}),
            "space in the id",
        ),
        (
            json!({"id": "-b", "uri": "http://127.0.0.1:9"}),
            "leading dash",
        ),
        (json!({"id": "a/b", "uri": "http://127.0.0.1:9"}), "slash"),
        (json!({"id": "", "uri": "http://127.0.0.1:9"}), "empty"),
        (
            json!({"id": "site-a", "uri": "http://127.0.0.1:9"}),
            "own id",
        ),
        (json!({"id": "site-b", "uri": "not a url"}), "not a URL"),
        (json!({"id": "site-b", "uri": "ftp://host/x"}), "not http"),
        (json!({"id": "site-b", "uri": "http://"}), "no host"),
        (
            json!({"id": "site-b", "uri": "http://u:p@host"}),
            "credentials",
        ),
        (json!({"id": "site-b", "uri": "mailto:x@y"}), "not a base"),
    ];
    for method in [Method::POST, Method::PUT] {
        for (body, why) in &bad {
            let mut body = body.clone();
            body["status"] = json!("UP");
            body["name"] = json!("x");
            let r = http()
                .request(method.clone(), a.url("/administration/topologies"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{method} {why}");
            assert!(!ccs_error(&r).is_empty(), "{why}: CCS envelope");
        }
    }
    register(&a, "site-b.dc1_x", "https://b.example:8443/base").await;
}

/// A CA, and certificates it issues for 127.0.0.1 plus extra names.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "peer-auth test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    /// `[tls]` of a site whose certificate (server and client) names `names`.
    fn site_tls(&self, file: &str, names: &[&str]) -> String {
        let mut sans = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        sans.extend(names.iter().map(|n| n.to_string()));
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, file);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (c, k) = (
            self.dir.path().join(format!("{file}.pem")),
            self.dir.path().join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        let ca = self.dir.path().join("ca.pem");
        format!(
            "[tls]\ncert_file = \"{0}\"\nkey_file = \"{1}\"\nca_file = \"{2}\"\nclient_auth = true\n\
             client_cert_file = \"{0}\"\nclient_key_file = \"{1}\"\n",
            c.display(),
            k.display(),
            ca.display()
        )
    }

    /// An https client trusting the CA, presenting the certificate of `file`.
    fn client(&self, file: &str) -> reqwest::Client {
        let mut pem = std::fs::read(self.dir.path().join(format!("{file}.pem"))).unwrap();
        pem.extend(std::fs::read(self.dir.path().join(format!("{file}.key"))).unwrap());
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca.pem().as_bytes()).unwrap())
            .identity(reqwest::Identity::from_pem(&pem).unwrap())
            .build()
            .unwrap()
    }
}

#[tokio::test]
async fn without_a_shared_secret_peers_authenticate_with_certificates() {
    // Auth on with only a foreign public key: sites cannot mint peer tokens, their client
    // certificates (naming their site ids) are their credential.
    let pki = Pki::new();
    let signer = rcgen::KeyPair::generate().unwrap();
    let public = pki.dir.path().join("issuer.pub.pem");
    std::fs::write(&public, signer.public_key_pem()).unwrap();
    let auth = format!(
        "[auth]\nenabled = true\npublic_key_files = [\"{}\"]\n\
         [replication]\nworkers = 2\nmax_attempts = 3\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\n",
        public.display()
    );
    let a = Site::start(
        "site-a",
        &format!("{auth}{}", pki.site_tls("a", &["site-a"])),
    );
    let b = Site::start(
        "site-b",
        &format!("{auth}{}", pki.site_tls("b", &["site-b"])),
    );
    let now = get_current_timestamp();
    let admin = encode(
        &Header::new(jsonwebtoken::Algorithm::ES256),
        &json!({"sub": "ops", "scope": "mirrorgate::admin", "exp": now + 300}),
        &EncodingKey::from_ec_pem(signer.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    pki.site_tls("ops", &[]); // a client certificate that names no site
    let http = pki.client("ops");
    for (x, y) in [(&a, &b), (&b, &a)] {
        let r = http
            .post(x.url("/administration/topologies"))
            .bearer_auth(&admin)
            .json(&json!({"id": y.id, "name": y.id, "uri": y.url, "status": "UP"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    // A certificate that names no site is no peer credential.
    let r = http
        .head(a.url("/replicator/remote/buckets/tls-bkt"))
        .header("x-clonecloudstore-client-id", CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // b's certificate is.
    let r = pki
        .client("b")
        .head(a.url("/replicator/remote/buckets/tls-bkt"))
        .header("x-clonecloudstore-client-id", CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let r = http
        .post(a.url("/cloudclonestore/tls-bkt"))
        .header("x-clonecloudstore-client-id", CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(a.url("/cloudclonestore/tls-bkt/obj"))
        .header("x-clonecloudstore-client-id", CLIENT)
        .body("over mtls")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    eventually(Duration::from_secs(60), "obj at site-b", || async {
        let r = http
            .get(b.url("/cloudclonestore/tls-bkt/obj"))
            .header("x-clonecloudstore-client-id", CLIENT)
            .send()
            .await
            .ok()?;
        (r.status() == 200 && !r.headers().contains_key("x-clonecloudstore-target-id"))
            .then_some(())
    })
    .await;
}

/// A prefetch hint speaks for the site whose upload it announces: only that site may send it.
#[tokio::test]
async fn prefetch_hints_come_only_from_their_authenticated_site() {
    let a = Site::start("site-a", &auth_on(""));
    register(&a, "site-b", "http://127.0.0.1:9").await;
    register(&a, "site-c", "http://127.0.0.1:9").await;
    let hint = json!({"site": "site-b", "upload": "u1", "bucket": "bkt", "name": "obj"});
    let r = send(
        &a,
        "/replicator/remote/prefetch",
        Some(&peer_token("site-c")),
        &hint,
    )
    .await;
    assert_eq!(r.status(), 403, "site-c announcing site-b's upload");
    let r = send(
        &a,
        "/replicator/remote/prefetch",
        Some(&peer_token("site-b")),
        &hint,
    )
    .await;
    assert_eq!(r.status(), 202, "site-b announcing its own upload");
    // An upload this site does not run: 404 to any peer.
    let r = client()
        .get(a.url("/replicator/remote/uploads/u1"))
        .bearer_auth(peer_token("site-b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
