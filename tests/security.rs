//! Attacks against real sites on 127.0.0.1: unauthenticated and spoofed replication orders,
//! orders that would overwrite, re-own or delete what a site holds, the data plane behind tokens,
//! weak secrets on a public listener and hostile topology entries.
//!
//! Each test collects every broken rule before failing, so one run names all of them.

mod common;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The secret shared by every site of a test (>= 32 bytes).
const SECRET: &str = "sectests-shared-secret-0123456789abcdef-0123";
const PEER_SCOPE: &str = "mirrorgate::peer";
/// Fast retries so a received order is applied (or given up) within seconds.
const FAST: &str = "[replication]\nworkers = 2\nmax_attempts = 3\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\n";

/// Broken rules of one test, reported together.
#[derive(Default)]
struct Broken(Vec<String>);

impl Broken {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }
    fn status(&mut self, got: u16, allowed: &[u16], what: &str) {
        self.check(
            allowed.contains(&got),
            format!("{what}: answered {got}, expected one of {allowed:?}"),
        );
    }
    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} broken rule(s):\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

/// Auth on with the shared secret and generous rate limits (the listener is loopback, so
/// `enabled = true` explicitly), plus fast replication retries.
fn auth_extra(more: &str) -> String {
    format!(
        "{FAST}[auth]\nenabled = true\njwt_secret = \"{SECRET}\"\n\
         rate_limit_per_second = 1000\nrate_limit_burst = 1000\n{more}"
    )
}

fn auth_site(id: &str) -> Site {
    Site::start(id, &auth_extra(""))
}

/// An HS256 token signed with `secret`.
fn mint_with(secret: &str, sub: &str, scope: &str, ttl_secs: u64) -> String {
    let now = get_current_timestamp();
    let claims = json!({"sub": sub, "scope": scope, "iat": now, "exp": now + ttl_secs});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// The token a peer mints for itself: sub = its site id, scope mirrorgate::peer, short expiry.
fn peer_token(site_id: &str) -> String {
    mint_with(SECRET, site_id, PEER_SCOPE, 120)
}

fn admin_token() -> String {
    mint_with(SECRET, "sectests-admin", "mirrorgate::admin", 600)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Registers `peer_id` at `uri` in `site`'s topology with an admin token.
async fn register(site: &Site, peer_id: &str, uri: &str) {
    let r = http()
        .post(site.url("/administration/topologies"))
        .bearer_auth(admin_token())
        .json(&json!({"id": peer_id, "name": peer_id, "uri": uri, "status": "UP"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "register {peer_id} at {}", site.id);
}

/// Every site a peer of every other, through the (authenticated) administration API.
async fn auth_mesh(sites: &[&Site]) {
    for a in sites {
        for b in sites {
            if a.id != b.id {
                register(a, &b.id, &b.url).await;
            }
        }
    }
}

/// Two auth-on sites with the same secret, meshed.
async fn auth_pair() -> (Site, Site) {
    let (a, b) = (auth_site("site-a"), auth_site("site-b"));
    auth_mesh(&[&a, &b]).await;
    (a, b)
}

fn op_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A CCS ReplicatorOrder as it travels on the wire.
#[allow(clippy::too_many_arguments)]
fn order(
    op: &str,
    from: &str,
    to: &str,
    client: &str,
    bucket: &str,
    object: Option<&str>,
    size: Option<u64>,
    hash: Option<&str>,
    action: &str,
) -> Value {
    let mut o = json!({"opId": op, "fromSite": from, "toSite": to, "clientId": client,
                       "bucketName": bucket, "action": action});
    if let Some(object) = object {
        o["objectName"] = json!(object);
    }
    if let Some(size) = size {
        o["size"] = json!(size);
    }
    if let Some(hash) = hash {
        o["hash"] = json!(hash);
    }
    o
}

/// Sends a raw request to `site` with an optional bearer token and the test client id.
async fn call(
    site: &Site,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> u16 {
    let mut req = http()
        .request(method, site.url(path))
        .header("x-clonecloudstore-client-id", CLIENT);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn send_order(site: &Site, order: &Value, token: Option<&str>) -> u16 {
    call(
        site,
        Method::POST,
        "/replicator/remote/orders",
        token,
        Some(order.clone()),
    )
    .await
}

/// Waits until `site` has finished with order `op` (DONE, FAILED, UNKNOWN, or at least one
/// attempt made), at most `max`. Asks with `token` (the sender's peer token).
async fn settle(site: &Site, op: &str, token: &str, max: Duration) {
    let deadline = Instant::now() + max;
    // Give the inbox a moment even if the status route cannot tell.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while Instant::now() < deadline {
        let r = http()
            .post(site.url("/replicator/remote/orders/status"))
            .bearer_auth(token)
            .json(&json!([op]))
            .send()
            .await;
        if let Ok(r) = r {
            if r.status() == 200 {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                let row = &v[0];
                let status = row["status"].as_str().unwrap_or("UNKNOWN");
                let attempts = row["attempts"].as_u64().unwrap_or(0);
                if !matches!(status, "PENDING" | "PROCESSING") || attempts >= 1 {
                    // Let a worker that just finished write what it did.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Local state of an object at a site, as a client sees it: (status, hash header, bytes).
/// A copy served through the topology from another site (x-clonecloudstore-target-id) is not
/// a local copy: it counts as 404.
async fn local_object(site: &Site, bucket: &str, key: &str) -> (u16, Option<String>, Vec<u8>) {
    let r = client()
        .get(site.url(&format!("/cloudclonestore/{bucket}/{key}")))
        .send()
        .await
        .unwrap();
    if r.headers().contains_key("x-clonecloudstore-target-id") {
        return (404, None, Vec::new());
    }
    let status = r.status().as_u16();
    let hash = r
        .headers()
        .get("x-clonecloudstore-hash")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    (status, hash, bytes)
}

/// The object is still there with exactly `body`.
async fn check_intact(
    broken: &mut Broken,
    site: &Site,
    bucket: &str,
    key: &str,
    body: &[u8],
    why: &str,
) {
    let (status, hash, bytes) = local_object(site, bucket, key).await;
    broken.check(
        status == 200,
        format!(
            "{why}: {bucket}/{key} at {} answers {status} locally, expected 200",
            site.id
        ),
    );
    if status == 200 {
        broken.check(
            hash.as_deref() == Some(ccs_hash(body).as_str()),
            format!("{why}: hash of {bucket}/{key} changed to {hash:?}"),
        );
        broken.check(
            bytes == body,
            format!("{why}: bytes of {bucket}/{key} changed"),
        );
    }
    broken.check(
        object_file(site, bucket, key).exists(),
        format!("{why}: the file of {bucket}/{key} is gone from disk"),
    );
}

// ---- 1. unauthenticated peers ---------------------------------------------------------------

#[tokio::test]
async fn remote_routes_refuse_requests_without_a_peer_token() {
    // contract: peers authenticate on every /replicator/remote/** route (mirrorgate::peer token)
    let (a, _b) = auth_pair().await;
    create_bucket(&a, "guarded").await;
    let body = data(10_000, 1);
    put_object(&a, "guarded", "obj", body.clone()).await;
    let mut broken = Broken::default();

    let create = order(
        &op_id(),
        "site-b",
        "site-a",
        CLIENT,
        "guarded",
        Some("new"),
        Some(3),
        Some(&ccs_hash(b"abc")),
        "CREATE",
    );
    let forged = mint_with(
        "not-the-shared-secret-0123456789abcdef",
        "site-b",
        PEER_SCOPE,
        120,
    );
    for (token, why) in [
        (None, "no token"),
        (Some(forged.as_str()), "token with another key"),
    ] {
        let requests: Vec<(Method, &str, Option<Value>)> = vec![
            (
                Method::POST,
                "/replicator/remote/orders",
                Some(create.clone()),
            ),
            (
                Method::POST,
                "/replicator/remote/orders/multiple",
                Some(json!([create.clone()])),
            ),
            (
                Method::POST,
                "/replicator/remote/orders/status",
                Some(json!(["x"])),
            ),
            (Method::GET, "/replicator/remote/buckets/guarded", None),
            (Method::HEAD, "/replicator/remote/buckets/guarded", None),
            (Method::GET, "/replicator/remote/buckets/guarded/obj", None),
            (Method::HEAD, "/replicator/remote/buckets/guarded/obj", None),
            (Method::GET, "/replicator/remote/inventory", None),
            (
                Method::POST,
                "/replicator/remote/catalogue/replicas",
                Some(json!({"all": true})),
            ),
            (
                Method::POST,
                "/replicator/remote/catalogue/bad_replicas",
                Some(json!({})),
            ),
        ];
        for (method, path, body) in requests {
            let what = format!("{why}: {method} {path}");
            let got = call(&a, method, path, token, body).await;
            broken.status(got, &[401], &what);
        }
    }

    // contract: an unauthenticated DELETE order deletes nothing
    let op = op_id();
    let delete = order(
        &op,
        "site-b",
        "site-a",
        CLIENT,
        "guarded",
        Some("obj"),
        None,
        None,
        "DELETE",
    );
    let got = send_order(&a, &delete, None).await;
    broken.status(got, &[401], "DELETE order without a token");
    let got = call(
        &a,
        Method::POST,
        "/replicator/remote/orders/multiple",
        None,
        Some(json!([delete])),
    )
    .await;
    broken.status(got, &[401], "DELETE order (multiple) without a token");
    settle(&a, &op, &peer_token("site-b"), Duration::from_secs(5)).await;
    check_intact(
        &mut broken,
        &a,
        "guarded",
        "obj",
        &body,
        "after an unauthenticated DELETE order",
    )
    .await;

    // The bucket DELETE of an empty bucket is refused too.
    create_bucket(&a, "empty-one").await;
    let op = op_id();
    let bucket_delete = order(
        &op,
        "site-b",
        "site-a",
        CLIENT,
        "empty-one",
        None,
        None,
        None,
        "DELETE",
    );
    broken.status(
        send_order(&a, &bucket_delete, None).await,
        &[401],
        "bucket DELETE order without a token",
    );
    settle(&a, &op, &peer_token("site-b"), Duration::from_secs(5)).await;
    let r = client()
        .get(a.url("/cloudclonestore/empty-one"))
        .send()
        .await
        .unwrap();
    broken.status(
        r.status().as_u16(),
        &[200],
        "bucket after an unauthenticated DELETE order",
    );
    broken.assert_none();
}

// ---- 2. spoofed fromSite ----------------------------------------------------------------------

#[tokio::test]
async fn an_order_is_applied_only_from_the_authenticated_peer() {
    // contract: an order is applied only if its fromSite is the authenticated peer
    let (a, b, c) = (
        auth_site("site-a"),
        auth_site("site-b"),
        auth_site("site-c"),
    );
    auth_mesh(&[&a, &b, &c]).await;
    create_bucket(&a, "spoof").await;
    let body = data(5_000, 2);
    put_object(&a, "spoof", "obj", body.clone()).await;
    let mut broken = Broken::default();

    // site-c's token, order claiming to come from site-b: 403.
    let op = op_id();
    let del = |op: &str, from: &str| {
        order(
            op,
            from,
            "site-a",
            CLIENT,
            "spoof",
            Some("obj"),
            None,
            None,
            "DELETE",
        )
    };
    let got = send_order(&a, &del(&op, "site-b"), Some(&peer_token("site-c"))).await;
    broken.status(got, &[403], "site-c's token, fromSite site-b");
    let got = call(
        &a,
        Method::POST,
        "/replicator/remote/orders/multiple",
        Some(&peer_token("site-c")),
        Some(json!([del(&op_id(), "site-c"), del(&op_id(), "site-b")])),
    )
    .await;
    broken.status(
        got,
        &[403],
        "site-c's token, a batch with one order from site-b",
    );
    settle(&a, &op, &peer_token("site-b"), Duration::from_secs(5)).await;
    check_intact(
        &mut broken,
        &a,
        "spoof",
        "obj",
        &body,
        "after a spoofed DELETE order",
    )
    .await;

    // contract: an order from a site that is not in the topology answers 4xx and changes nothing
    for (token_sub, why) in [
        ("site-z", "token of an unknown site"),
        ("site-c", "site-c's token"),
    ] {
        let op = op_id();
        let got = send_order(&a, &del(&op, "site-z"), Some(&peer_token(token_sub))).await;
        broken.status(got, &[400, 403], &format!("fromSite site-z, {why}"));
        settle(&a, &op, &peer_token("site-c"), Duration::from_secs(3)).await;
    }
    let stranger_bucket = order(
        &op_id(),
        "site-z",
        "site-a",
        "mallory",
        "planted",
        None,
        None,
        None,
        "CREATE",
    );
    let got = send_order(&a, &stranger_bucket, Some(&peer_token("site-z"))).await;
    broken.status(
        got,
        &[400, 403],
        "bucket CREATE from a site outside the topology",
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    check_intact(
        &mut broken,
        &a,
        "spoof",
        "obj",
        &body,
        "after orders from site-z",
    )
    .await;
    let r = client_as("mallory")
        .get(a.url("/cloudclonestore/planted"))
        .send()
        .await
        .unwrap();
    broken.status(r.status().as_u16(), &[404], "bucket planted by site-z");

    // A peer token is for peers: a token whose sub is a peer but scope is not mirrorgate::peer.
    let op = op_id();
    let not_peer = mint_with(SECRET, "site-b", "mirrorgate::read", 120);
    let got = send_order(&a, &del(&op, "site-b"), Some(&not_peer)).await;
    broken.status(
        got,
        &[401, 403],
        "sub site-b without the mirrorgate::peer scope",
    );
    settle(&a, &op, &peer_token("site-b"), Duration::from_secs(3)).await;
    check_intact(
        &mut broken,
        &a,
        "spoof",
        "obj",
        &body,
        "after an order without the peer scope",
    )
    .await;
    drop((b, c));
    broken.assert_none();
}

// ---- 3. replication with auth on ----------------------------------------------------------------

#[tokio::test]
async fn replication_works_with_auth_on_and_a_shared_secret() {
    // contract: peers mint their own mirrorgate::peer tokens; no extra configuration
    let (a, b) = auth_pair().await;
    create_bucket(&a, "shared").await;
    let body = data(200_000, 3);
    put_object(&a, "shared", "dir/obj", body.clone()).await;
    eventually(
        Duration::from_secs(45),
        "dir/obj replicated to site-b",
        || async {
            let r = client()
                .get(b.url("/cloudclonestore/shared/dir/obj"))
                .send()
                .await
                .ok()?;
            if r.status() != 200 || r.headers().contains_key("x-clonecloudstore-target-id") {
                return None; // not yet, or served through the topology instead of a local copy
            }
            (r.bytes().await.ok()?.as_ref() == body.as_slice()).then_some(())
        },
    )
    .await;
    assert!(object_file(&b, "shared", "dir/obj").exists());
}

// ---- 4. bucket CREATE orders never change the owner -----------------------------------------

#[tokio::test]
async fn a_bucket_create_order_never_changes_the_owner() {
    // contract: a bucket CREATE order for an existing bucket leaves its owner alone
    let (a, _b) = auth_pair().await;
    create_bucket(&a, "owned").await;
    put_object(&a, "owned", "obj", b"mine".to_vec()).await;
    let mut broken = Broken::default();
    let token = peer_token("site-b");
    for action in ["CREATE", "UPDATE"] {
        let op = op_id();
        let o = order(
            &op, "site-b", "site-a", "mallory", "owned", None, None, None, action,
        );
        let got = send_order(&a, &o, Some(&token)).await;
        broken.status(
            got,
            &[201, 400, 403, 409],
            &format!("bucket {action} order for an existing bucket"),
        );
        settle(&a, &op, &token, Duration::from_secs(5)).await;
    }

    let mallory = client_as("mallory");
    let r = mallory
        .get(a.url("/cloudclonestore/owned"))
        .send()
        .await
        .unwrap();
    broken.status(r.status().as_u16(), &[403, 404], "mallory reads the bucket");
    let r = mallory
        .get(a.url("/cloudclonestore/owned/obj"))
        .send()
        .await
        .unwrap();
    broken.status(r.status().as_u16(), &[403, 404], "mallory reads the object");
    let r = mallory
        .post(a.url("/cloudclonestore/owned/planted"))
        .body("x")
        .send()
        .await
        .unwrap();
    broken.status(
        r.status().as_u16(),
        &[403, 404],
        "mallory writes into the bucket",
    );
    let r = mallory
        .delete(a.url("/cloudclonestore/owned/obj"))
        .send()
        .await
        .unwrap();
    broken.status(
        r.status().as_u16(),
        &[403, 404],
        "mallory deletes the object",
    );
    let r = client()
        .get(a.url("/cloudclonestore/owned"))
        .send()
        .await
        .unwrap();
    broken.status(r.status().as_u16(), &[200], "the owner reads the bucket");
    if r.status() == 200 {
        let v: Value = r.json().await.unwrap();
        broken.check(
            v["clientId"] == CLIENT,
            format!("bucket clientId is now {}", v["clientId"]),
        );
    }
    let ownership = |client: &str| {
        http()
            .get(a.url(&format!("/administration/ownerships/{client}/owned")))
            .bearer_auth(admin_token())
            .send()
    };
    let r = ownership(CLIENT).await.unwrap();
    let owner: Value = r.json().await.unwrap_or(Value::Null);
    broken.check(
        owner["ownership"] == "OWNER",
        format!("{CLIENT}'s ownership: {owner}"),
    );
    let r = ownership("mallory").await.unwrap();
    broken.status(
        r.status().as_u16(),
        &[404],
        "mallory's ownership of the bucket",
    );
    broken.assert_none();
}

// ---- 5. object CREATE with a wrong hash keeps the local copy --------------------------------

#[tokio::test]
async fn an_object_create_order_with_a_wrong_hash_keeps_the_local_copy() {
    // contract: an object order never destroys a good local copy before a verified replacement
    let (a, _b) = auth_pair().await;
    create_bucket(&a, "keep").await;
    let body = data(50_000, 5);
    put_object(&a, "keep", "obj", body.clone()).await;
    let mut broken = Broken::default();
    let token = peer_token("site-b");
    let wrong = data(50_000, 55);
    let op = op_id();
    let o = order(
        &op,
        "site-b",
        "site-a",
        CLIENT,
        "keep",
        Some("obj"),
        Some(wrong.len() as u64),
        Some(&ccs_hash(&wrong)),
        "CREATE",
    );
    let got = send_order(&a, &o, Some(&token)).await;
    broken.status(
        got,
        &[201, 400, 403, 409],
        "object CREATE order with another hash",
    );
    settle(&a, &op, &token, Duration::from_secs(10)).await;
    check_intact(
        &mut broken,
        &a,
        "keep",
        "obj",
        &body,
        "after a CREATE order with a wrong hash",
    )
    .await;
    // Retries (if any) do not eat it later either.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    check_intact(
        &mut broken,
        &a,
        "keep",
        "obj",
        &body,
        "a while after the CREATE order",
    )
    .await;
    broken.assert_none();
}

// ---- 6. a DELETE order for an older version ---------------------------------------------------

#[tokio::test]
async fn a_delete_order_for_an_older_version_is_refused() {
    // contract: a DELETE order names the version it deletes (hash, size); another version stays
    let (a, _b) = auth_pair().await;
    create_bucket(&a, "versions").await;
    let v1 = data(20_000, 6);
    put_object(&a, "versions", "obj", v1.clone()).await;
    let r = client()
        .delete(a.url("/cloudclonestore/versions/obj"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let v2 = data(30_000, 66);
    put_object(&a, "versions", "obj", v2.clone()).await;

    let mut broken = Broken::default();
    let token = peer_token("site-b");
    let op = op_id();
    let stale = order(
        &op,
        "site-b",
        "site-a",
        CLIENT,
        "versions",
        Some("obj"),
        Some(v1.len() as u64),
        Some(&ccs_hash(&v1)),
        "DELETE",
    );
    let got = send_order(&a, &stale, Some(&token)).await;
    broken.status(
        got,
        &[201, 400, 409, 412],
        "DELETE order naming the older version",
    );
    settle(&a, &op, &token, Duration::from_secs(10)).await;
    check_intact(
        &mut broken,
        &a,
        "versions",
        "obj",
        &v2,
        "after a DELETE order for v1",
    )
    .await;

    // The same for a batch.
    let op = op_id();
    let mut stale2 = stale.clone();
    stale2["opId"] = json!(op);
    let got = call(
        &a,
        Method::POST,
        "/replicator/remote/orders/multiple",
        Some(&token),
        Some(json!([stale2])),
    )
    .await;
    broken.status(
        got,
        &[201, 400, 409, 412],
        "DELETE order (multiple) naming the older version",
    );
    settle(&a, &op, &token, Duration::from_secs(10)).await;
    check_intact(
        &mut broken,
        &a,
        "versions",
        "obj",
        &v2,
        "after a batched DELETE order for v1",
    )
    .await;

    // Positive control: a DELETE order naming the current version deletes it.
    let op = op_id();
    let current = order(
        &op,
        "site-b",
        "site-a",
        CLIENT,
        "versions",
        Some("obj"),
        Some(v2.len() as u64),
        Some(&ccs_hash(&v2)),
        "DELETE",
    );
    broken.status(
        send_order(&a, &current, Some(&token)).await,
        &[201],
        "DELETE order naming v2",
    );
    eventually(
        Duration::from_secs(20),
        "v2 deleted by its DELETE order",
        || async {
            let (s, _, _) = local_object(&a, "versions", "obj").await;
            matches!(s, 404 | 410).then_some(())
        },
    )
    .await;
    broken.assert_none();
}

// ---- 7. data plane behind tokens ------------------------------------------------------------

#[tokio::test]
async fn the_data_plane_needs_a_token_naming_the_client() {
    // contract: [auth] data_plane = true: accessor routes need a bearer token; its client is the
    // x-clonecloudstore-client-id
    let site = Site::start(
        "site-a",
        &auth_extra(
            "data_plane = true\n\
             [[auth.clients]]\nid = \"client-1\"\nsecret = \"client-1-pw\"\nscopes = [\"mirrorgate::read\"]\n\
             [[auth.clients]]\nid = \"mallory\"\nsecret = \"mallory-pw\"\nscopes = [\"mirrorgate::read\"]\n",
        ),
    );
    let issued = |id: &'static str, pw: &'static str| {
        let url = site.url("/api/2/idp/token");
        async move {
            let r = http()
                .post(url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", id),
                    ("client_secret", pw),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "token for {id}");
            r.json::<Value>().await.unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let own = issued("client-1", "client-1-pw").await;
    let theirs = issued("mallory", "mallory-pw").await;
    let mut broken = Broken::default();

    // No token: 401 on every accessor route.
    for (method, path) in [
        (Method::GET, "/cloudclonestore"),
        (Method::POST, "/cloudclonestore/dp-bucket"),
        (Method::GET, "/cloudclonestore/dp-bucket"),
        (Method::HEAD, "/cloudclonestore/dp-bucket"),
        (Method::PUT, "/cloudclonestore/dp-bucket"),
        (Method::POST, "/cloudclonestore/dp-bucket/obj"),
        (Method::GET, "/cloudclonestore/dp-bucket/obj"),
        (Method::DELETE, "/cloudclonestore/dp-bucket/obj"),
    ] {
        let got = call(&site, method.clone(), path, None, None).await;
        broken.status(got, &[401], &format!("no token: {method} {path}"));
    }

    // The own token works (positive control).
    let r = client()
        .post(site.url("/cloudclonestore/dp-bucket"))
        .bearer_auth(&own)
        .send()
        .await
        .unwrap();
    broken.status(
        r.status().as_u16(),
        &[201],
        "client-1 creates its bucket with its token",
    );
    let r = client()
        .post(site.url("/cloudclonestore/dp-bucket/obj"))
        .bearer_auth(&own)
        .body("payload")
        .send()
        .await
        .unwrap();
    broken.status(
        r.status().as_u16(),
        &[201],
        "client-1 uploads with its token",
    );

    // Mallory's token with client-1's header: 403.
    for (method, path) in [
        (Method::GET, "/cloudclonestore/dp-bucket"),
        (Method::GET, "/cloudclonestore/dp-bucket/obj"),
        (Method::POST, "/cloudclonestore/dp-bucket/other"),
        (Method::DELETE, "/cloudclonestore/dp-bucket/obj"),
        (Method::POST, "/cloudclonestore/mallory-bucket"),
    ] {
        let got = call(&site, method.clone(), path, Some(&theirs), None).await;
        broken.status(
            got,
            &[403],
            &format!("mallory's token as client-1: {method} {path}"),
        );
    }
    let r = client()
        .get(site.url("/cloudclonestore/dp-bucket/obj"))
        .bearer_auth(&own)
        .send()
        .await
        .unwrap();
    broken.status(
        r.status().as_u16(),
        &[200],
        "client-1 still reads its object",
    );
    broken.assert_none();
}

// ---- 8. weak secrets on a public listener ---------------------------------------------------

/// Runs `mirrorgate serve` with `config` and returns (exit status, stderr) if it exits by itself
/// within 30 s. If it starts listening instead, it is killed at once and None is returned.
/// When user namespaces are available it runs in an empty network namespace, so a build that
/// does start never listens on a real interface.
fn run_expecting_refusal(config: &str) -> Result<(std::process::ExitStatus, String), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirrorgate.toml");
    std::fs::write(&path, config).unwrap();
    let bin = env!("CARGO_BIN_EXE_mirrorgate");
    let isolated = Command::new("unshare")
        .args(["-rn", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut cmd = if isolated {
        let mut c = Command::new("unshare");
        c.args(["-rn", bin]);
        c
    } else {
        Command::new(bin)
    };
    let mut child = cmd
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = String::new();
    loop {
        while let Ok(line) = rx.try_recv() {
            let listening = line.contains("listening on");
            log.push_str(&line);
            log.push('\n');
            if listening {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("it started and listened:\n{log}"));
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(100));
            while let Ok(line) = rx.try_recv() {
                log.push_str(&line);
                log.push('\n');
            }
            return Ok((status, log));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("neither exited nor listened within 30 s:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_public_listener_refuses_a_weak_jwt_secret() {
    // contract: auth on + non-loopback listener + jwt_secret "change-me" or < 32 bytes: refuse
    // to start, exit non-zero, name jwt_secret; the refusal comes before binding
    let mut broken = Broken::default();
    for (secret, why) in [
        ("change-me", "the example secret"),
        ("0123456789", "a 10-byte secret"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = site_config(
            "site-a",
            dir.path(),
            &format!("[auth]\nenabled = true\njwt_secret = \"{secret}\"\n"),
        )
        .replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
        match run_expecting_refusal(&config) {
            Ok((status, log)) => {
                broken.check(!status.success(), format!("{why}: exited with success"));
                broken.check(
                    log.contains("jwt_secret"),
                    format!("{why}: message does not name jwt_secret:\n{log}"),
                );
                broken.check(!log.contains("listening on"), format!("{why}: it listened"));
            }
            Err(e) => broken.check(false, format!("{why}: {e}")),
        }
    }
    broken.assert_none();
}

// ---- 9. hostile topology entries ------------------------------------------------------------

#[tokio::test]
async fn topology_administration_refuses_bad_ids_itself_and_malformed_urls() {
    // contract: a topology entry needs a well-formed id (not this site's) and an http(s) URL
    let site = Site::start("site-a", "");
    let admin = http();
    let url = site.url("/administration/topologies");
    let mut broken = Broken::default();
    let good_uri = "http://127.0.0.1:9";
    let mut bad: Vec<(Value, String)> = Vec::new();
    for id in [
        "a/b", "../etc", "a b", "<script>", "a?b", "a#b", "a%2Fb", "site\nb", "a\\b", "é",
    ] {
        bad.push((
            json!({"id": id, "name": "x", "uri": good_uri, "status": "UP"}),
            format!("id {id:?}"),
        ));
    }
    bad.push((
        json!({"id": "site-a", "name": "me", "uri": good_uri, "status": "UP"}),
        "the site's own id".into(),
    ));
    for uri in [
        "not a url",
        "http://",
        "http://exa mple.com",
        "http://127.0.0.1:99999",
        "ftp://127.0.0.1/",
        "javascript:alert(1)",
        "//127.0.0.1:9",
        "",
    ] {
        bad.push((
            json!({"id": "site-x", "name": "x", "uri": uri, "status": "UP"}),
            format!("uri {uri:?}"),
        ));
    }
    for (body, why) in &bad {
        let r = admin.post(&url).json(body).send().await.unwrap();
        broken.status(
            r.status().as_u16(),
            &[400],
            &format!("POST topology with {why}"),
        );
    }
    // Positive control, then the same checks on update.
    let r = admin
        .post(&url)
        .json(&json!({"id": "site-b", "name": "B", "uri": good_uri, "status": "UP"}))
        .send()
        .await
        .unwrap();
    broken.status(r.status().as_u16(), &[201], "POST a good topology entry");
    let r = admin
        .put(&url)
        .json(&json!({"id": "site-a", "name": "me", "uri": good_uri, "status": "UP"}))
        .send()
        .await
        .unwrap();
    broken.status(
        r.status().as_u16(),
        &[400],
        "PUT topology with the site's own id",
    );
    let r = admin
        .put(&url)
        .json(&json!({"id": "site-b", "name": "B", "uri": "not a url", "status": "UP"}))
        .send()
        .await
        .unwrap();
    broken.status(
        r.status().as_u16(),
        &[400],
        "PUT topology with a malformed uri",
    );

    let r = admin.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let listed: Vec<Value> = r.json().await.unwrap();
    let ids: Vec<&str> = listed.iter().filter_map(|t| t["id"].as_str()).collect();
    broken.check(
        ids == ["site-b"],
        format!("topology holds {ids:?}, expected only site-b"),
    );
    broken.check(
        listed.iter().all(|t| t["uri"] == good_uri),
        format!("an entry's uri changed: {listed:?}"),
    );
    broken.assert_none();
}
