//! Every client error of every family in that family's envelope and content type, including
//! those raised before a handler runs: query and path extraction failures, duplicate query
//! keys, unknown routes and methods a route does not have.

mod common;
use common::*;
use serde_json::Value;

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    json: Value,
}

async fn send(method: reqwest::Method, site: &Site, path: &str) -> Answer {
    let r = client()
        .request(method, site.url(path))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text:?} {headers:?}"));
    Answer {
        status,
        headers,
        json,
    }
}

fn content_type(a: &Answer) -> &str {
    a.headers["content-type"].to_str().unwrap()
}

async fn rucio(site: &Site, path: &str, status: u16, class: &str) {
    let a = send(reqwest::Method::GET, site, path).await;
    assert_eq!(a.status, status, "{path}: {}", a.json);
    assert_eq!(a.json["ExceptionClass"], class, "{path}");
    assert!(a.json["ExceptionMessage"].is_string());
    assert_eq!(a.headers["exceptionclass"], class);
    assert_eq!(content_type(&a), "application/octet-stream");
}

async fn backbeat(site: &Site, method: reqwest::Method, path: &str, status: u16, name: &str) {
    let a = send(method, site, path).await;
    assert_eq!(a.status, status, "{path}: {}", a.json);
    assert_eq!(a.json["code"], status, "{path}");
    assert_eq!(a.json[name], true, "{path}: {}", a.json);
    assert!(a.json["description"].is_string());
    assert!(content_type(&a).starts_with("application/json"));
}

async fn ccs(site: &Site, path: &str, status: u16, says: &str) {
    let a = send(reqwest::Method::GET, site, path).await;
    assert_eq!(a.status, status, "{path}: {}", a.json);
    assert_eq!(a.json["status"], status);
    let message = a.json["message"].as_str().unwrap();
    assert!(message.contains(says), "{path}: {message}");
    assert!(a.headers.contains_key("x-clonecloudstore-error"));
    assert!(content_type(&a).starts_with("application/json"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rejections_before_handlers_use_the_family_envelope() {
    let site = Site::start("site-a", "");

    // Rucio: a query that does not parse, a duplicate key, an unknown DID route.
    rucio(&site, "/replicas/b/o?limit=abc", 400, "ValueError").await;
    rucio(&site, "/rses/?expression=a&expression=b", 400, "ValueError").await;
    let a = send(reqwest::Method::PATCH, &site, "/rses/").await;
    assert_eq!(a.status, 405);
    assert_eq!(a.json["ExceptionClass"], "MethodNotAllowed");

    // Backbeat: bad or duplicate query keys, unknown routes, wrong methods.
    let get = reqwest::Method::GET;
    let failed = "/_/backbeat/api/crr/failed?sitename=a&sitename=b";
    backbeat(&site, get.clone(), failed, 400, "InvalidQueryParameter").await;
    backbeat(
        &site,
        get.clone(),
        "/_/backbeat/api/nope",
        404,
        "RouteNotFound",
    )
    .await;
    let status = "/_/backbeat/api/crr/status";
    backbeat(
        &site,
        reqwest::Method::DELETE,
        status,
        405,
        "MethodNotAllowed",
    )
    .await;

    // CCS: duplicate keys on the administration API, a method a route does not have.
    let dup = "/administration/topologies?status=UP&status=DOWN";
    ccs(&site, dup, 400, "status").await;
    let a = send(reqwest::Method::PATCH, &site, "/cloudclonestore/b").await;
    assert_eq!(a.status, 405);
    assert_eq!(a.json["status"], 405);

    // Alfresco and Acronis DR.
    let a = send(
        get.clone(),
        &site,
        "/api/replication-definitions?sort=a&sort=b",
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.json);
    assert_eq!(a.json["error"]["statusCode"], 400);
    assert!(a.json["error"]["briefSummary"].is_string());
    // An unknown path under /api/ is Alfresco's, in Alfresco's envelope.
    let a = send(get.clone(), &site, "/api/nope").await;
    assert_eq!(a.status, 404, "{}", a.json);
    assert_eq!(a.json["error"]["statusCode"], 404);
    assert!(a.json["error"]["briefSummary"].is_string());
    let a = send(get, &site, "/api/dr/v2/nope").await;
    assert_eq!(a.status, 404, "{}", a.json);
    assert_eq!(a.json["error"]["domain"], "DisasterRecovery");
}

/// Java clients send `fullCheck=True`: booleans are case-insensitive; anything else is a 400
/// in the CCS envelope.
#[tokio::test(flavor = "multi_thread")]
async fn ccs_booleans_are_case_insensitive() {
    let site = Site::start("site-a", "");
    create_bucket(&site, "bkt").await;
    put_object(&site, "bkt", "o", b"hello".to_vec()).await;
    for value in ["True", "TRUE", "true", "False", "1"] {
        let r = client()
            .head(site.url(&format!(
                "/replicator/remote/buckets/bkt/o?fullCheck={value}"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "fullCheck={value}");
    }
    let r = client()
        .head(site.url("/replicator/remote/buckets/bkt/o?fullCheck=maybe"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    ccs(
        &site,
        "/replicator/remote/inventory?limit=abc",
        400,
        "limit",
    )
    .await;
}
