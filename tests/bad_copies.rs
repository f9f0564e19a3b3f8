//! A copy this site knows is BAD or LOST is never advertised nor served: its remote HEAD
//! answers 404 instead of 204 OBJECT, its GET never starts a 200, and reads through the
//! topology go on to a good copy at another site (or end in 404). Real sites on 127.0.0.1;
//! the copies are corrupted on disk and declared BAD through the Rucio API.

mod common;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Fast replication and repairs, no scrubber (the declarations come from the API).
const SITE: &str = "[replication]\nworkers = 2\nmax_attempts = 3\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\n[scrub]\nenabled = false\n[rucio]\nbackground_interval_ms = 150\n";
/// Larger than a small object (read whole before answering): a corrupt copy of it would be
/// found only mid-stream, after a 200 was sent.
const SIZE: usize = 3 * 1024 * 1024;
const TARGET_ID: &str = "x-clonecloudstore-target-id";

fn corrupt(site: &Site, bucket: &str, key: &str) {
    let file = object_file(site, bucket, key);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&file, bytes).unwrap();
}

/// Per-RSE states of a file, as `site` lists them.
async fn states(site: &Site, bucket: &str, key: &str) -> Value {
    let r = reqwest::Client::new()
        .post(site.url("/replicas/list"))
        .json(&json!({"dids": [{"scope": bucket, "name": key}], "all_states": true}))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    let line: Value = serde_json::from_str(text.lines().next().unwrap_or("null")).unwrap();
    line["states"].clone()
}

async fn available_at(site: &Site, bucket: &str, key: &str, rses: &[&str]) {
    eventually(Duration::from_secs(30), "copies AVAILABLE", || async {
        let s = states(site, bucket, key).await;
        rses.iter().all(|r| s[r] == "AVAILABLE").then_some(())
    })
    .await;
}

async fn declare_bad(at: &Site, bucket: &str, key: &str, rses: &[&str]) {
    let replicas: Vec<Value> = rses
        .iter()
        .map(|rse| json!({"scope": bucket, "name": key, "rse": rse}))
        .collect();
    let r = reqwest::Client::new()
        .post(at.url("/replicas/bad"))
        .json(&json!({"replicas": replicas, "reason": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({}), "all declared");
}

/// A GET's status and, for a 200, whether the whole body arrived and equals `want`.
async fn get_outcome(req: reqwest::RequestBuilder, want: &[u8]) -> (u16, bool) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let whole = match r.bytes().await {
        Ok(b) => b.as_ref() == want,
        Err(_) => false,
    };
    (status, whole)
}

/// A 200 must carry the whole good body: never a cut or corrupt one.
fn assert_never_cut(what: &str, (status, whole): (u16, bool)) {
    assert!(
        status != 200 || whole,
        "{what}: a 200 with a cut or corrupt body"
    );
}

#[tokio::test]
async fn a_lost_copy_is_neither_advertised_nor_served() {
    let sites = meshed_sites(&["site-a", "site-b"], SITE).await;
    let (a, b) = (&sites[0], &sites[1]);
    create_bucket(a, "lost").await;
    let body = data(SIZE, 31);
    put_object(a, "lost", "obj", body.clone()).await;
    available_at(a, "lost", "obj", &["site-a", "site-b"]).await;
    // A's row is in its metadata cache: the declaration must reach it.
    let warm = client().head(remote(a, "lost/obj")).send().await.unwrap();
    assert_eq!(warm.status(), 204);
    assert_eq!(header(&warm, "x-clonecloudstore-type"), Some("OBJECT"));

    corrupt(a, "lost", "obj");
    corrupt(b, "lost", "obj");
    declare_bad(a, "lost", "obj", &["site-a", "site-b"]).await;

    // At once: A neither advertises nor serves its copy.
    let head = client().head(remote(a, "lost/obj")).send().await.unwrap();
    assert_eq!(head.status(), 404, "remote HEAD of a BAD copy");
    assert_eq!(header(&head, "x-clonecloudstore-type"), Some("NONE"));
    let get = client().get(remote(a, "lost/obj")).send().await.unwrap();
    assert_eq!(get.status(), 404, "remote GET of a BAD copy");

    // No good copy anywhere: both end LOST, and still nothing is served.
    eventually(Duration::from_secs(30), "both copies LOST", || async {
        let r = reqwest::get(a.url("/replicas/bad/states?state=L"))
            .await
            .ok()?;
        let n = r.text().await.ok()?.lines().count();
        (n == 2).then_some(())
    })
    .await;
    for site in [a, b] {
        let head = client()
            .head(remote(site, "lost/obj"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.status(),
            404,
            "{}: remote HEAD of a LOST copy",
            site.id
        );
        let got = get_outcome(client().get(remote(site, "lost/obj")), &body).await;
        assert_eq!(got.0, 404, "{}: remote GET of a LOST copy", site.id);
        // The site's own clients are not served it either.
        let got = get_outcome(client().get(site.url("/cloudclonestore/lost/obj")), &body).await;
        assert_ne!(got.0, 200, "{}: accessor GET of a LOST copy", site.id);
    }

    // A third site reading through the topology finds nothing to serve.
    let c = Site::start("site-c", SITE);
    mesh(&[a, b, &c]).await;
    let head = client().head(local(&c, "lost/obj")).send().await.unwrap();
    assert_eq!(head.status(), 404, "HEAD through the topology");
    let got = get_outcome(client().get(local(&c, "lost/obj")), &body).await;
    assert_eq!(got.0, 404, "GET through the topology");
    let pinned = get_outcome(
        client()
            .get(local(&c, "lost/obj"))
            .header(TARGET_ID, "site-a"),
        &body,
    )
    .await;
    assert_eq!(pinned.0, 404, "GET pinned to the LOST copy");
}

#[tokio::test]
async fn a_copy_declared_bad_stops_being_served_and_reads_fall_through() {
    let sites = meshed_sites(&["site-a", "site-b"], SITE).await;
    let (a, b) = (&sites[0], &sites[1]);
    create_bucket(a, "fall").await;
    let body = data(SIZE, 32);
    put_object(a, "fall", "obj", body.clone()).await;
    available_at(a, "fall", "obj", &["site-a", "site-b"]).await;
    // C joins later: it holds no copy, every read it serves comes from A or B.
    let c = Site::start("site-c", SITE);
    mesh(&[a, b, &c]).await;
    let warm = client().head(remote(a, "fall/obj")).send().await.unwrap();
    assert_eq!(warm.status(), 204);

    corrupt(a, "fall", "obj");
    // Declared at C, which forwards it to A (the copy's RSE).
    declare_bad(&c, "fall", "obj", &["site-a"]).await;

    // From now on A answers 404 until its copy is repaired (from B), then the good bytes.
    let head = client().head(remote(a, "fall/obj")).send().await.unwrap();
    if head.status() == 204 {
        assert_eq!(
            std::fs::read(object_file(a, "fall", "obj")).unwrap(),
            body,
            "A advertises its copy only once it is repaired"
        );
    } else {
        assert_eq!(head.status(), 404);
    }
    assert_never_cut(
        "remote GET at A",
        get_outcome(client().get(remote(a, "fall/obj")), &body).await,
    );
    assert_never_cut(
        "GET through C pinned to A",
        get_outcome(
            client()
                .get(local(&c, "fall/obj"))
                .header(TARGET_ID, "site-a"),
            &body,
        )
        .await,
    );
    // Unpinned reads always get the good copy: B's, or A's once repaired.
    for (what, req) in [
        ("GET through C", client().get(local(&c, "fall/obj"))),
        (
            "accessor GET at A",
            client().get(a.url("/cloudclonestore/fall/obj")),
        ),
    ] {
        assert_eq!(get_outcome(req, &body).await, (200, true), "{what}");
    }

    // Repaired: A serves its own copy again (the repair reached A's cached row).
    eventually(Duration::from_secs(30), "A's copy repaired", || async {
        (states(&c, "fall", "obj").await["site-a"] == "AVAILABLE").then_some(())
    })
    .await;
    assert_eq!(std::fs::read(object_file(a, "fall", "obj")).unwrap(), body);
    let head = client().head(remote(a, "fall/obj")).send().await.unwrap();
    assert_eq!(head.status(), 204);
    assert_eq!(
        get_outcome(client().get(remote(a, "fall/obj")), &body).await,
        (200, true)
    );
}
