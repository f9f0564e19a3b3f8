//! Backbeat's CRR API on real sites: failed entries per operation and version, retry of the
//! current version, LastModified, bucket-level entries, schedule / health / Prometheus routes
//! and the family's error envelope.

mod common;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Fast retries, and orders fail for good once 3 s old.
const FAILING: &str = "[replication]\nworkers = 4\nmax_attempts = 3\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\nmax_order_age_secs = 3\n";

async fn two_sites() -> (Site, Site) {
    let (a, b) = (
        Site::start("site-a", FAILING),
        Site::start("site-b", FAILING),
    );
    mesh(&[&a, &b]).await;
    (a, b)
}

async fn bb_get(site: &Site, path: &str) -> (u16, Value) {
    let r = reqwest::get(site.url(&format!("/_/backbeat/api/{path}")))
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn bb_send(site: &Site, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, site.url(&format!("/_/backbeat/api/{path}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The failed entries of one key at `site` (every destination).
async fn entries(site: &Site, bucket: &str, key: &str) -> Vec<Value> {
    let (status, v) = bb_get(site, &format!("crr/failed/{bucket}/{key}")).await;
    assert_eq!(status, 200, "{v}");
    v["Versions"].as_array().unwrap().clone()
}

async fn wait_entries(site: &Site, bucket: &str, key: &str, n: usize) -> Vec<Value> {
    eventually(
        Duration::from_secs(60),
        &format!("{n} failed entries for {key}"),
        || async {
            let e = entries(site, bucket, key).await;
            (e.len() >= n).then_some(e)
        },
    )
    .await
}

/// The object's bytes in `site`'s own store, if READY there.
async fn held(site: &Site, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let url = site.url(&format!("/replicator/remote/buckets/{bucket}/{key}"));
    let r = client().get(url).send().await.ok()?;
    (r.status() == 200).then_some(())?;
    Some(r.bytes().await.ok()?.to_vec())
}

/// (id, creation) of the object at `site`, from the accessor's HEAD.
async fn version_of(site: &Site, bucket: &str, key: &str) -> (String, String) {
    let r = client()
        .head(site.url(&format!("/cloudclonestore/{bucket}/{key}")))
        .send()
        .await
        .unwrap();
    let h = |n: &str| r.headers()[n].to_str().unwrap().to_owned();
    (h("x-clonecloudstore-id"), h("x-clonecloudstore-creation"))
}

fn versions(e: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = e
        .iter()
        .map(|e| e["VersionId"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn retry_without_version_requeues_the_current_version_and_keeps_the_stale_one() {
    let (a, mut b) = two_sites().await;
    create_bucket(&a, "twice").await;
    bucket_arrives(&b, "twice").await;
    b.kill9();
    put_object(&a, "twice", "k", b"old version".to_vec()).await;
    let (old_id, _) = version_of(&a, "twice", "k").await;
    wait_entries(&a, "twice", "k", 1).await;
    // CCS objects are not overwritten: a new version is a delete and a create.
    let r = client()
        .delete(a.url("/cloudclonestore/twice/k"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    put_object(&a, "twice", "k", b"current version".to_vec()).await;
    let (current_id, _) = version_of(&a, "twice", "k").await;
    assert_ne!(old_id, current_id);
    // The old version's CREATE and DELETE, the current version's CREATE.
    let all = wait_entries(&a, "twice", "k", 3).await;
    let mut want = vec![old_id.clone(), old_id.clone(), current_id.clone()];
    want.sort();
    assert_eq!(
        versions(&all),
        want,
        "one entry per failed operation: {all:?}"
    );

    b.restart();
    let (status, answer) = bb_send(
        &a,
        reqwest::Method::POST,
        "crr/failed",
        json!([{"Bucket": "twice", "Key": "k", "StorageClass": "site-b"}]),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let answer = answer.as_array().unwrap();
    assert_eq!(answer.len(), 1, "only the current version: {answer:?}");
    assert_eq!(answer[0]["VersionId"], current_id.as_str());
    assert_eq!(answer[0]["ReplicationStatus"], "PENDING");
    eventually(Duration::from_secs(60), "current version at B", || async {
        (held(&b, "twice", "k").await? == b"current version").then_some(())
    })
    .await;
    // The stale entries were not retried: they are kept (until retried by their VersionId or
    // expired).
    let left = entries(&a, "twice", "k").await;
    assert_eq!(versions(&left), vec![old_id.clone(), old_id], "{left:?}");
}

#[tokio::test]
async fn a_failed_delete_and_a_failed_create_keep_their_own_entries() {
    let (a, mut b) = two_sites().await;
    create_bucket(&a, "churn").await;
    bucket_arrives(&b, "churn").await;
    put_object(&a, "churn", "k", b"first".to_vec()).await;
    eventually(Duration::from_secs(60), "first at B", || async {
        held(&b, "churn", "k").await.map(|_| ())
    })
    .await;
    let (first_id, _) = version_of(&a, "churn", "k").await;
    b.kill9();
    let r = client()
        .delete(a.url("/cloudclonestore/churn/k"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    wait_entries(&a, "churn", "k", 1).await;
    put_object(&a, "churn", "k", b"second".to_vec()).await;
    let (second_id, _) = version_of(&a, "churn", "k").await;
    let both = wait_entries(&a, "churn", "k", 2).await;
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(
        both.iter().any(|e| e["VersionId"] == first_id.as_str()),
        "the DELETE of the first version is still listed: {both:?}"
    );
    assert!(
        both.iter().any(|e| e["VersionId"] == second_id.as_str()),
        "the CREATE of the second version is listed: {both:?}"
    );
    // In the site's full listing too.
    let (_, page) = bb_get(&a, "_/crr/failed?sitename=site-b").await;
    assert_eq!(page["Versions"].as_array().unwrap().len(), 2, "{page}");

    // Retrying one leaves the other.
    b.restart();
    let (status, answer) = bb_send(
        &a,
        reqwest::Method::POST,
        "crr/failed",
        json!([{"Bucket": "churn", "Key": "k", "StorageClass": "site-b"}]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer.as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer[0]["VersionId"], second_id.as_str());
    let left = entries(&a, "churn", "k").await;
    assert_eq!(versions(&left), vec![first_id.clone()], "{left:?}");
    // And it can be retried by its VersionId.
    let (status, answer) = bb_send(
        &a,
        reqwest::Method::POST,
        "crr/failed",
        json!([{"Bucket": "churn", "Key": "k", "VersionId": first_id, "StorageClass": "site-b"}]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer.as_array().unwrap().len(), 1, "{answer}");
}

#[tokio::test]
async fn last_modified_is_the_objects_and_bucket_orders_are_retryable() {
    let (a, mut b) = two_sites().await;
    create_bucket(&a, "dated").await;
    bucket_arrives(&b, "dated").await;
    b.kill9();
    put_object(&a, "dated", "k", b"x".to_vec()).await;
    let (_, creation) = version_of(&a, "dated", "k").await;
    // A failed bucket-level order: the bucket create B never got.
    create_bucket(&a, "late-bucket").await;
    let e = wait_entries(&a, "dated", "k", 1).await;
    assert_eq!(e[0]["LastModified"], creation.as_str(), "{e:?}");
    let bucket_entry = wait_entries(&a, "late-bucket", "*", 1).await;
    assert_eq!(bucket_entry[0]["Key"], "*");
    assert_eq!(bucket_entry[0]["StorageClass"], "site-b");
    let (_, page) = bb_get(&a, "crr/failed?sitename=site-b").await;
    assert!(
        page["Versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["Bucket"] == "late-bucket" && v["Key"] == "*"),
        "{page}"
    );

    b.restart();
    let (status, answer) = bb_send(
        &a,
        reqwest::Method::POST,
        "_/crr/failed",
        json!([
            {"Bucket": "late-bucket", "Key": "*", "StorageClass": "site-b"},
            {"Bucket": "dated", "Key": "k", "StorageClass": "site-b"},
        ]),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let answer = answer.as_array().unwrap();
    assert_eq!(answer.len(), 2, "{answer:?}");
    assert_eq!(answer[1]["LastModified"], creation.as_str());
    bucket_arrives(&b, "late-bucket").await;
    assert!(entries(&a, "late-bucket", "*").await.is_empty());
}

#[tokio::test]
async fn schedule_health_prometheus_routes_and_error_envelope() {
    let (a, _b) = two_sites().await;
    let (status, _) = bb_send(
        &a,
        reqwest::Method::POST,
        "crr/resume/site-b/schedule",
        json!({"hours": 2}),
    )
    .await;
    assert_eq!(status, 200);
    for path in ["crr/resume/site-b", "_/crr/resume/site-b/schedule"] {
        let (status, v) = bb_get(&a, path).await;
        assert_eq!(status, 200);
        assert!(v["site-b"].as_str().unwrap().ends_with('Z'), "{path}: {v}");
    }
    let (status, _) = bb_send(&a, reqwest::Method::DELETE, "crr/resume/site-b", json!({})).await;
    assert_eq!(status, 200);
    let (_, v) = bb_get(&a, "crr/resume/site-b").await;
    assert_eq!(v, json!({"site-b": "none"}));
    let (_, v) = bb_get(&a, "crr/status/site-b").await;
    assert_eq!(
        v,
        json!({"site-b": "disabled"}),
        "still paused, by hand now"
    );
    let (status, _) = bb_send(
        &a,
        reqwest::Method::DELETE,
        "crr/resume/site-b/schedule",
        json!({}),
    )
    .await;
    assert_eq!(status, 200);

    let r = reqwest::get(a.url("/_/healthcheck")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap().is_object());

    for path in [
        "/_/backbeat/api/monitoring/metrics",
        "/_/monitoring/metrics",
    ] {
        let r = reqwest::get(a.url(path)).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        let text = r.text().await.unwrap();
        assert!(text.contains("mirrorgate_"), "{path}: {text}");
    }

    // Errors, 404 and 405 included, in Backbeat's envelope.
    let (status, v) = bb_get(&a, "crr/no-such-route").await;
    assert_eq!(
        (status, &v["RouteNotFound"], &v["code"]),
        (404, &json!(true), &json!(404)),
        "{v}"
    );
    let (status, v) = bb_get(&a, "crr/resume/site-z").await;
    assert_eq!((status, &v["RouteNotFound"]), (404, &json!(true)), "{v}");
    let (status, v) = bb_send(&a, reqwest::Method::PUT, "crr/failed", json!([])).await;
    assert_eq!(
        (status, &v["MethodNotAllowed"], &v["code"]),
        (405, &json!(true), &json!(405)),
        "{v}"
    );
    let (status, v) = bb_send(&a, reqwest::Method::PATCH, "crr/resume/site-b", json!({})).await;
    assert_eq!((status, &v["MethodNotAllowed"]), (405, &json!(true)), "{v}");
}

#[tokio::test]
async fn healthcheck_is_public_and_the_rest_of_backbeat_is_not() {
    let secret = "test-secret-0123456789abcdef-0123456789";
    let a = Site::start(
        "site-a",
        &format!("[auth]\nenabled = true\njwt_secret = \"{secret}\"\n"),
    );
    let r = reqwest::get(a.url("/_/healthcheck")).await.unwrap();
    assert_eq!(r.status(), 200);
    for path in [
        "/_/backbeat/api/monitoring/metrics",
        "/_/backbeat/api/crr/resume/site-b",
        "/_/backbeat/api/crr/failed?sitename=site-b",
    ] {
        let r = reqwest::get(a.url(path)).await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], 401, "{path}: {v}");
    }
}
