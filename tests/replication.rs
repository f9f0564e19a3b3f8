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
        Duration::from_secs(30),
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
        Duration::from_secs(30),
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
            Duration::from_secs(60),
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
