//! Replication engine: convergence, outages, failed operations and their retry, pause/resume,
//! crash safety and integrity, with three real sites on 127.0.0.1.

mod common;
use std::time::Duration;

use common::*;

/// Fast retries so outages play out in seconds.
const FAST: &str = "[replication]\nworkers = 4\nmax_attempts = 3\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\n";

async fn three_sites(extra: &str) -> (Site, Site, Site) {
    let (a, b, c) = (
        Site::start("site-a", extra),
        Site::start("site-b", extra),
        Site::start("site-c", extra),
    );
    mesh(&[&a, &b, &c]).await;
    (a, b, c)
}

/// The object's bytes at a site, if it is READY there.
async fn read(site: &Site, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let r = client()
        .get(site.url(&format!("/cloudclonestore/{bucket}/{key}")))
        .send()
        .await
        .ok()?;
    if r.status() != 200 || r.headers().get("x-clonecloudstore-site").is_none() {
        return None;
    }
    if r.headers().contains_key("x-clonecloudstore-target-id") {
        return None; // served through the topology, not a local copy
    }
    Some(r.bytes().await.ok()?.to_vec())
}

async fn converged(site: &Site, bucket: &str, key: &str, want: &[u8]) {
    eventually(
        Duration::from_secs(120),
        &format!("{key} at {}", site.id),
        || async {
            read(site, bucket, key)
                .await
                .filter(|got| got == want)
                .map(|_| ())
        },
    )
    .await;
}

async fn gone(site: &Site, bucket: &str, key: &str) {
    eventually(
        Duration::from_secs(120),
        &format!("{key} deleted at {}", site.id),
        || async {
            let r = client()
                .head(site.url(&format!("/cloudclonestore/{bucket}/{key}")))
                .send()
                .await
                .ok()?;
            let t = r
                .headers()
                .get("x-clonecloudstore-type")?
                .to_str()
                .ok()?
                .to_owned();
            let local_none = t == "NONE";
            local_none.then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn writes_and_deletes_reach_every_site() {
    let (a, b, c) = three_sites(FAST).await;
    create_bucket(&a, "rep-1").await;
    let body = data(300_000, 1);
    put_object(&a, "rep-1", "dir/one", body.clone()).await;
    converged(&b, "rep-1", "dir/one", &body).await;
    converged(&c, "rep-1", "dir/one", &body).await;
    // The copy carries the same hash and says it is a replica; the source says COMPLETED.
    let r = client()
        .get(b.url("/cloudclonestore/rep-1/dir/one"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-clonecloudstore-hash"].to_str().unwrap(),
        ccs_hash(&body)
    );
    assert_eq!(
        r.headers()["x-clonecloudstore-replication-status"],
        "REPLICA"
    );
    eventually(
        Duration::from_secs(10),
        "COMPLETED at the source",
        || async {
            let r = client()
                .head(a.url("/cloudclonestore/rep-1/dir/one"))
                .send()
                .await
                .ok()?;
            (r.headers().get("x-clonecloudstore-replication-status")? == "COMPLETED").then_some(())
        },
    )
    .await;
    let r = client()
        .delete(a.url("/cloudclonestore/rep-1/dir/one"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    gone(&b, "rep-1", "dir/one").await;
    gone(&c, "rep-1", "dir/one").await;
}

#[tokio::test]
async fn a_burst_of_500_small_objects_converges() {
    let (a, b, c) = three_sites(FAST).await;
    create_bucket(&a, "burst").await;
    let http = client();
    let puts = (0..500).map(|i| {
        let http = http.clone();
        let url = a.url(&format!("/cloudclonestore/burst/obj-{i:04}"));
        async move {
            let r = http
                .post(url)
                .body(data(1000 + i, i as u64))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
    });
    futures::future::join_all(puts).await;
    for site in [&b, &c] {
        eventually(
            Duration::from_secs(180),
            &format!("500 objects at {}", site.id),
            || async {
                let text = client()
                    .put(site.url("/cloudclonestore/burst"))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                (text.lines().count() == 500).then_some(())
            },
        )
        .await;
    }
    converged(&c, "burst", "obj-0499", &data(1499, 499)).await;
}

/// Whether the site holds a READY copy in its own store (the remote route never looks elsewhere).
async fn holds(site: &Site, bucket: &str, key: &str) -> bool {
    let url = site.url(&format!("/replicator/remote/buckets/{bucket}/{key}"));
    matches!(client().head(url).send().await, Ok(r) if r.status() == 204)
}

async fn backbeat_get(site: &Site, path: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(site.url(&format!("/_/backbeat/api/_/crr/{path}")))
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Every failed entry for a site, following NextMarker.
async fn all_failed(site: &Site, sitename: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut marker = String::new();
    loop {
        let (status, page) =
            backbeat_get(site, &format!("failed?sitename={sitename}{marker}")).await;
        assert_eq!(status, 200, "{page}");
        let versions = page["Versions"].as_array().unwrap();
        assert!(versions.len() <= 100);
        keys.extend(
            versions
                .iter()
                .map(|v| v["Key"].as_str().unwrap().to_owned()),
        );
        if page["IsTruncated"] == true {
            marker = format!("&marker={}", page["NextMarker"]);
        } else {
            return keys;
        }
    }
}

#[tokio::test]
async fn orders_wait_for_a_peer_that_is_down() {
    let slow_retry =
        "[replication]\nmax_attempts = 50\nbackoff_initial_ms = 100\nbackoff_max_ms = 300\n";
    let (a, mut b, c) = three_sites(slow_retry).await;
    create_bucket(&a, "outage").await;
    bucket_arrives(&b, "outage").await;
    b.kill9();
    let body = data(50_000, 7);
    put_object(&a, "outage", "waits", body.clone()).await;
    converged(&c, "outage", "waits", &body).await;
    // The backlog is visible while B is away.
    eventually(
        Duration::from_secs(10),
        "pending order for site-b",
        || async {
            let r = reqwest::get(a.url("/_/backbeat/api/metrics/crr/site-b/pending"))
                .await
                .ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            (v["pending"]["results"]["count"].as_i64()? >= 1).then_some(())
        },
    )
    .await;
    assert!(
        a.metric("mirrorgate_replication_pending_orders{peer=\"site-b\"}")
            .await
            >= 1.0
    );
    b.restart();
    converged(&b, "outage", "waits", &body).await;
}

#[tokio::test]
async fn exhausted_orders_are_listed_paged_and_retried() {
    // A peer that stays down: orders end as failed operations once they are 3 s old.
    let (a, mut b, _c) = three_sites(&format!("{FAST}max_order_age_secs = 3\n")).await;
    create_bucket(&a, "failing").await;
    bucket_arrives(&b, "failing").await;
    b.kill9();
    let http = client();
    let puts = (0..260).map(|i| {
        let (http, url) = (
            http.clone(),
            a.url(&format!("/cloudclonestore/failing/f-{i:03}")),
        );
        async move {
            assert_eq!(
                http.post(url)
                    .body(vec![i as u8; 100])
                    .send()
                    .await
                    .unwrap()
                    .status(),
                201
            )
        }
    });
    futures::future::join_all(puts).await;
    let keys = eventually(Duration::from_secs(180), "260 failed entries", || async {
        let keys = all_failed(&a, "site-b").await;
        (keys.len() >= 260).then_some(keys)
    })
    .await;
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        (keys.len(), unique.len()),
        (260, 260),
        "each failed entry exactly once across pages"
    );
    // The source shows FAILED for B; the per-object route lists it.
    let (status, one) = backbeat_get(&a, "failed/failing/f-007").await;
    assert_eq!(status, 200);
    assert_eq!(one["Versions"][0]["StorageClass"], "site-b");
    let r = client()
        .head(a.url("/cloudclonestore/failing/f-007"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-clonecloudstore-replication-status"],
        "FAILED"
    );

    b.restart();
    for chunk in unique.chunks(100) {
        let body: Vec<_> = chunk
            .iter()
            .map(|k| serde_json::json!({"Bucket": "failing", "Key": k, "StorageClass": "site-b"}))
            .collect();
        let r = reqwest::Client::new()
            .post(a.url("/_/backbeat/api/crr/failed"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let answer: serde_json::Value = r.json().await.unwrap();
        assert_eq!(answer.as_array().unwrap().len(), chunk.len());
        assert!(answer
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["ReplicationStatus"] == "PENDING"));
    }
    assert!(
        all_failed(&a, "site-b").await.is_empty(),
        "retried entries leave the failed list"
    );
    for k in ["f-000", "f-131", "f-259"] {
        let i: usize = k[2..].parse().unwrap();
        converged(&b, "failing", k, &[i as u8; 100]).await;
    }
    eventually(Duration::from_secs(120), "nothing pending", || async {
        let v: serde_json::Value = reqwest::get(a.url("/_/backbeat/api/metrics/crr/all/all"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["pending"]["results"]["count"] == 0
            && v["completions"]["results"]["count"].as_i64()? >= 260)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn backbeat_errors_use_its_envelope() {
    let a = Site::start("site-a", FAST);
    let (status, v) = backbeat_get(&a, "failed?sitename=site-b&marker=abc").await;
    assert_eq!(
        (status, v["InvalidQueryParameter"].clone()),
        (400, serde_json::json!(true))
    );
    let (status, _) = backbeat_get(&a, "failed?sitename=").await;
    assert_eq!(status, 400);
    let post = |body: &'static str| {
        reqwest::Client::new()
            .post(a.url("/_/backbeat/api/_/crr/failed"))
            .body(body)
            .send()
    };
    for bad in [
        "",
        "[]",
        "{}",
        "[1]",
        r#"[{"Bucket":"b","Key":"k"}]"#,
        r#"[{"Bucket":"b","Key":"","StorageClass":"s"}]"#,
    ] {
        let r = post(bad).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["MalformedPOSTRequest"], true, "{bad}");
        assert_eq!(v["code"], 400);
    }
    // Unknown entries are skipped, not errors.
    let r = post(r#"[{"Bucket":"b","Key":"k","StorageClass":"site-b"}]"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!([])
    );
}

#[tokio::test]
async fn paused_peer_gets_nothing_until_resumed() {
    let (a, b, c) = three_sites(FAST).await;
    create_bucket(&a, "paused").await;
    bucket_arrives(&b, "paused").await;
    let http = reqwest::Client::new();
    assert_eq!(
        http.post(a.url("/_/backbeat/api/crr/pause/site-b"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (_, status) = backbeat_get(&a, "status").await;
    assert_eq!(status["site-b"], "disabled");
    assert_eq!(status["site-c"], "enabled");
    for i in 0..5 {
        put_object(&a, "paused", &format!("p{i}"), data(10_000, i)).await;
    }
    converged(&c, "paused", "p4", &data(10_000, 4)).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // C got them; give B every chance to (wrongly) get them too
    assert!(
        !holds(&b, "paused", "p0").await,
        "a paused peer receives nothing"
    );
    assert_eq!(
        http.post(a.url("/_/backbeat/api/crr/resume/site-b"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for i in 0..5 {
        converged(&b, "paused", &format!("p{i}"), &data(10_000, i)).await;
    }
    // A scheduled resume pauses now and reports when it resumes.
    let r = http
        .post(a.url("/_/backbeat/api/crr/resume/site-b/schedule"))
        .json(&serde_json::json!({"hours": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, sched) = backbeat_get(&a, "resume/site-b/schedule").await;
    assert!(sched["site-b"].as_str().unwrap().contains('T'), "{sched}");
}

#[tokio::test]
async fn corrupt_source_bytes_never_become_a_replica() {
    let (a, b, c) = three_sites(FAST).await;
    create_bucket(&a, "corrupt").await;
    bucket_arrives(&b, "corrupt").await;
    bucket_arrives(&c, "corrupt").await;
    let http = reqwest::Client::new();
    http.post(a.url("/_/backbeat/api/crr/pause"))
        .send()
        .await
        .unwrap();
    let body = data(200_000, 9);
    put_object(&a, "corrupt", "bad", body.clone()).await;
    let file = object_file(&a, "corrupt", "bad");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100_000] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    http.post(a.url("/_/backbeat/api/crr/resume"))
        .send()
        .await
        .unwrap();
    eventually(
        Duration::from_secs(180),
        "failure recorded for both peers",
        || async {
            let failed = [
                all_failed(&a, "site-b").await,
                all_failed(&a, "site-c").await,
            ];
            failed
                .iter()
                .all(|f| f.contains(&"bad".to_owned()))
                .then_some(())
        },
    )
    .await;
    assert!(!holds(&b, "corrupt", "bad").await);
    assert!(!holds(&c, "corrupt", "bad").await);
    assert!(a.metric("mirrorgate_hash_mismatches_total").await >= 1.0);
}

#[tokio::test]
async fn kill9_during_replication_loses_nothing_and_doubles_nothing() {
    let (mut a, mut b, c) = three_sites(
        "[replication]\nmax_attempts = 100\nbackoff_initial_ms = 100\nbackoff_max_ms = 500\n",
    )
    .await;
    create_bucket(&a, "crash").await;
    let http = client();
    let mut acknowledged = Vec::new();
    for i in 0..150u64 {
        let r = http
            .post(a.url(&format!("/cloudclonestore/crash/c-{i:03}")))
            .body(data(20_000, i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        acknowledged.push(i);
        if i == 60 {
            b.kill9(); // the receiving side dies mid-stream too
        }
        if i == 100 {
            b.restart();
        }
    }
    a.kill9();
    a.restart();
    for site in [&b, &c] {
        eventually(
            Duration::from_secs(180),
            &format!("150 objects at {}", site.id),
            || async {
                let text = client()
                    .put(site.url("/cloudclonestore/crash"))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                (text.lines().count() == acknowledged.len()).then_some(())
            },
        )
        .await;
        for i in [0u64, 61, 99, 149] {
            converged(site, "crash", &format!("c-{i:03}"), &data(20_000, i)).await;
        }
        assert_eq!(
            std::fs::read_dir(site.dir.join("tmp")).unwrap().count(),
            0,
            "no orphan temporaries"
        );
    }
    eventually(
        Duration::from_secs(120),
        "no order left at the source",
        || async {
            let v: serde_json::Value =
                reqwest::get(a.url("/_/backbeat/api/metrics/crr/all/pending"))
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
            (v["pending"]["results"]["count"] == 0).then_some(())
        },
    )
    .await;
    assert!(all_failed(&a, "site-b").await.is_empty() && all_failed(&a, "site-c").await.is_empty());
}

/// A peer that restarts (or is briefly unreachable) never turns an acknowledged write into a
/// failed operation: transient failures are retried until delivered, whatever `max_attempts`.
#[tokio::test]
async fn a_brief_peer_restart_loses_nothing() {
    let one_attempt =
        "[replication]\nworkers = 4\nmax_attempts = 1\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\n";
    let (a, mut b, _c) = three_sites(one_attempt).await;
    create_bucket(&a, "restart").await;
    bucket_arrives(&b, "restart").await;
    b.kill9();
    for i in 0..20u8 {
        put_object(&a, "restart", &format!("k-{i}"), vec![i; 1000]).await;
    }
    // Several send attempts fail while B is down (one attempt would have been the limit).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    b.restart();
    for i in 0..20u8 {
        converged(&b, "restart", &format!("k-{i}"), &[i; 1000]).await;
    }
    assert!(
        all_failed(&a, "site-b").await.is_empty(),
        "no failed operation for a peer that was only restarting"
    );
}

/// The group committer's writes per transaction at a site, from its metrics.
async fn writes_per_commit(site: &Site) -> f64 {
    let commits = site.metric("mirrorgate_meta_group_commits_total").await;
    let writes = site.metric("mirrorgate_meta_group_writes_total").await;
    assert!(commits > 0.0, "{} made no group commit", site.id);
    writes / commits
}

/// Concurrent writes at A, and the pulls and outcomes they cause at B, share transactions
/// (group commit) at both ends, and every object arrives.
#[tokio::test]
async fn concurrent_writes_share_group_commits_at_both_ends() {
    let (a, b) = (Site::start("site-a", FAST), Site::start("site-b", FAST));
    mesh(&[&a, &b]).await;
    create_bucket(&a, "group").await;
    bucket_arrives(&b, "group").await;
    let http = client();
    let puts = (0..120u64).map(|i| {
        let (http, url) = (
            http.clone(),
            a.url(&format!("/cloudclonestore/group/g-{i:03}")),
        );
        async move {
            let r = http.post(url).body(data(30_000, i)).send().await.unwrap();
            assert_eq!(r.status(), 201);
        }
    });
    futures::future::join_all(puts).await;
    for i in [0u64, 59, 119] {
        converged(&b, "group", &format!("g-{i:03}"), &data(30_000, i)).await;
    }
    eventually(Duration::from_secs(120), "120 objects at B", || async {
        let text = client()
            .put(b.url("/cloudclonestore/group"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (text.lines().count() == 120).then_some(())
    })
    .await;
    for site in [&a, &b] {
        let ratio = writes_per_commit(site).await;
        assert!(ratio >= 1.5, "{}: {ratio:.2} writes per commit", site.id);
    }
}

/// A site killed (-9) while concurrent writes are being group-committed loses none it
/// acknowledged: each is READY with its bytes after the restart, and reaches the peer.
#[tokio::test]
async fn kill9_mid_group_commit_loses_no_acknowledged_write() {
    use futures::StreamExt;
    let (mut a, b) = (Site::start("site-a", FAST), Site::start("site-b", FAST));
    mesh(&[&a, &b]).await;
    create_bucket(&a, "gckill").await;
    bucket_arrives(&b, "gckill").await;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (http, base) = (client(), a.url("/cloudclonestore/gckill"));
    let uploads = {
        let acked = acked.clone();
        futures::stream::iter(0..600u64)
            .map(move |i| {
                let (http, url, acked) = (http.clone(), format!("{base}/k-{i:03}"), acked.clone());
                async move {
                    let sent = http
                        .post(url)
                        .body(data(50_000, i))
                        .timeout(Duration::from_secs(30));
                    if matches!(sent.send().await, Ok(r) if r.status() == 201) {
                        acked.lock().unwrap().push(i);
                    }
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
    };
    let uploading = tokio::spawn(uploads);
    eventually(
        Duration::from_secs(60),
        "50 writes acknowledged",
        || async { (acked.lock().unwrap().len() >= 50).then_some(()) },
    )
    .await;
    a.kill9();
    uploading.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() < 600,
        "A was killed before all writes were acknowledged"
    );
    a.restart();
    for i in &acked {
        let key = format!("k-{i:03}");
        assert_eq!(
            read(&a, "gckill", &key).await,
            Some(data(50_000, *i)),
            "acknowledged {key} lost at A"
        );
    }
    for i in &acked {
        converged(&b, "gckill", &format!("k-{i:03}"), &data(50_000, *i)).await;
    }
}
