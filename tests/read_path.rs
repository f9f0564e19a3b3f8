//! The read path: the metadata cache never answers stale after any kind of write (local,
//! replicated, deleted, bucket deleted, rights changed, negative answers), small objects are
//! verified before they are sent (or served from memory as verified when read), HEAD answers from metadata only, byte ranges, and a dead
//! peer's cached locations stop answering for it.

mod common;
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;

const OTHER: &str = "client-2";
const HITS: &str = "mirrorgate_meta_cache_hits_total";

fn ccs(site: &Site, path: &str) -> String {
    site.url(&format!("/cloudclonestore{path}"))
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn get(c: &reqwest::Client, url: &str) -> (u16, Vec<u8>) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

async fn upload(site: &Site, bucket: &str, key: &str, body: Vec<u8>) -> u16 {
    client()
        .post(ccs(site, &format!("/{bucket}/{key}")))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn delete(c: &reqwest::Client, url: &str) -> u16 {
    c.delete(url).send().await.unwrap().status().as_u16()
}

// ---- 1. the metadata cache never answers stale ------------------------------------------

#[tokio::test]
async fn local_writes_and_deletes_are_seen_at_once() {
    let site = Site::start("site-a", "");
    let c = client();
    create_bucket(&site, "bkt").await;
    let url = ccs(&site, "/bkt/obj");

    // Negative answer first (cached), then the upload: the next GET sees it.
    assert_eq!(get(&c, &url).await.0, 404);
    assert_eq!(get(&c, &url).await.0, 404);
    let v1 = data(1000, 1);
    assert_eq!(upload(&site, "bkt", "obj", v1.clone()).await, 201);
    assert_eq!(get(&c, &url).await, (200, v1.clone()));

    // Served from memory now: the hit counter moves.
    let hits = site.metric(HITS).await;
    assert_eq!(get(&c, &url).await, (200, v1.clone()));
    assert!(site.metric(HITS).await > hits, "a repeated GET is a hit");

    // Delete: the cached READY row must not survive it.
    assert_eq!(delete(&c, &url).await, 204);
    let (status, _) = get(&c, &url).await;
    assert!(status == 404 || status == 410, "GET after delete: {status}");
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), 404, "HEAD after delete");

    // A new version under the same name: its bytes and hash, not the old row's.
    let v2 = data(3000, 2);
    assert_eq!(upload(&site, "bkt", "obj", v2.clone()).await, 201);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-clonecloudstore-hash"), Some(ccs_hash(&v2)));
    assert_eq!(r.bytes().await.unwrap().to_vec(), v2);
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(header(&r, "x-clonecloudstore-size"), Some("3000".into()));

    // Bucket deleted: the cached live bucket goes with it.
    assert_eq!(delete(&c, &url).await, 204);
    assert_eq!(get(&c, &ccs(&site, "/bkt")).await.0, 200);
    assert_eq!(delete(&c, &ccs(&site, "/bkt")).await, 204);
    let (status, _) = get(&c, &ccs(&site, "/bkt")).await;
    assert!(
        status == 404 || status == 410,
        "GET bucket after delete: {status}"
    );
    assert_eq!(
        c.head(ccs(&site, "/bkt")).send().await.unwrap().status(),
        404
    );
    let status = upload(&site, "bkt", "other", v1.clone()).await;
    assert!(
        status == 404 || status == 410,
        "upload into a deleted bucket: {status}"
    );
    // ... and re-created: live again at once, empty.
    create_bucket(&site, "bkt").await;
    assert_eq!(get(&c, &ccs(&site, "/bkt")).await.0, 200);
    assert_eq!(get(&c, &url).await.0, 404);
    assert_eq!(upload(&site, "bkt", "obj", v1.clone()).await, 201);
    assert_eq!(get(&c, &url).await, (200, v1));
}

/// Grants and revocations through `/administration/ownerships` change what another client
/// may do at once.
#[tokio::test]
async fn rights_changes_are_seen_at_once() {
    let site = Site::start("site-a", "");
    create_bucket(&site, "bkt").await;
    put_object(&site, "bkt", "obj", b"owned".to_vec()).await;
    let other = client_as(OTHER);
    let admin = reqwest::Client::new();
    let own = |p: &str| site.url(&format!("/administration/ownerships{p}"));
    let obj = ccs(&site, "/bkt/obj");
    let list = ccs(&site, "/bkt");
    let list_status = || async { other.put(&list).send().await.unwrap().status().as_u16() };

    for round in 0..2 {
        // No grant: reads do not see the bucket (404), listing is refused (403).
        assert_eq!(get(&other, &obj).await.0, 404, "round {round}: no grant");
        assert_eq!(list_status().await, 403, "round {round}: list without READ");
        let r = admin
            .post(own(&format!("/{OTHER}/bkt/READ")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(get(&other, &obj).await, (200, b"owned".to_vec()));
        assert_eq!(list_status().await, 200, "round {round}: list with READ");
        // Revoked one way or the other.
        let r = if round == 0 {
            admin.delete(own(&format!("/{OTHER}/bkt"))).send().await
        } else {
            admin.delete(own("/bkt")).send().await
        };
        assert_eq!(r.unwrap().status(), 204);
    }
    assert_eq!(get(&other, &obj).await.0, 404);

    // A grant replaced (PUT) by a WRITE-only one takes READ away at once.
    let r = admin
        .post(own(&format!("/{OTHER}/bkt/READ")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(get(&other, &obj).await.0, 200);
    let r = admin
        .put(own(&format!("/{OTHER}/bkt/WRITE")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(get(&other, &obj).await.0, 404);
    assert_eq!(list_status().await, 403);
}

/// The local copy at B, if B holds one READY (not served through the topology).
async fn local_copy(site: &Site, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let r = client()
        .get(ccs(site, &format!("/{bucket}/{key}")))
        .send()
        .await
        .ok()?;
    if r.status() != 200 || r.headers().contains_key("x-clonecloudstore-target-id") {
        return None;
    }
    Some(r.bytes().await.ok()?.to_vec())
}

#[tokio::test]
async fn replicated_writes_and_deletes_are_seen_at_once() {
    let fast = "[replication]\nworkers = 2\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\n";
    let (a, b) = (Site::start("site-a", fast), Site::start("site-b", fast));
    mesh(&[&a, &b]).await;
    let c = client();
    create_bucket(&a, "rep").await;
    eventually(Duration::from_secs(30), "bucket at B", || async {
        (get(&c, &ccs(&b, "/rep")).await.0 == 200).then_some(())
    })
    .await;
    // B caches "no such object" before the copy arrives.
    let url_b = ccs(&b, "/rep/obj");
    assert_eq!(get(&c, &url_b).await.0, 404);
    assert_eq!(get(&c, &url_b).await.0, 404);

    let body = data(5000, 3);
    put_object(&a, "rep", "obj", body.clone()).await;
    let got = eventually(Duration::from_secs(30), "the copy at B", || async {
        local_copy(&b, "rep", "obj").await
    })
    .await;
    assert_eq!(got, body);
    let r = c.get(&url_b).send().await.unwrap();
    assert_eq!(
        header(&r, "x-clonecloudstore-replication-status").as_deref(),
        Some("REPLICA")
    );

    // The source's replication status changes as the order completes (also cached).
    eventually(Duration::from_secs(30), "COMPLETED at A", || async {
        let r = c.head(ccs(&a, "/rep/obj")).send().await.ok()?;
        (header(&r, "x-clonecloudstore-replication-status")? == "COMPLETED").then_some(())
    })
    .await;

    // Deleted at A: B answers deleted once the order is applied, and stays so.
    assert_eq!(delete(&c, &ccs(&a, "/rep/obj")).await, 204);
    eventually(Duration::from_secs(30), "deleted at B", || async {
        let r = c.head(&url_b).send().await.ok()?;
        (r.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    let (status, _) = get(&c, &url_b).await;
    assert!(
        status == 404 || status == 410,
        "GET at B after delete: {status}"
    );
    assert!(local_copy(&b, "rep", "obj").await.is_none());
}

// ---- 2. small objects in one step, HEAD from metadata -----------------------------------

#[tokio::test]
async fn a_corrupt_small_object_is_never_served_complete() {
    // Without the hot-body cache, which would keep serving the bytes verified at the first
    // read (see the next test).
    let site = Site::start("site-a", "[metadata]\nbody_cache_bytes = 0\n");
    create_bucket(&site, "bkt").await;
    let body = data(1000, 4);
    put_object(&site, "bkt", "small", body.clone()).await;
    let url = ccs(&site, "/bkt/small");
    assert_eq!(get(&client(), &url).await, (200, body.clone()));

    let file = object_file(&site, "bkt", "small");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[500] ^= 0x5a;
    std::fs::write(&file, &bytes).unwrap();
    const MISMATCHES: &str = "mirrorgate_hash_mismatches_total{source=\"storage\"}";
    let before = site.metric(MISMATCHES).await;
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 500, "refused before any byte is sent");
    assert!(header(&r, "x-clonecloudstore-error").is_some());
    assert_ne!(r.bytes().await.unwrap().to_vec(), bytes);
    assert!(
        site.metric(MISMATCHES).await > before,
        "the mismatch is counted"
    );

    // A file grown beyond its recorded size is a mismatch too.
    let mut longer = body.clone();
    longer.extend_from_slice(b"tail");
    std::fs::write(&file, &longer).unwrap();
    let (status, got) = get(&client(), &url).await;
    assert!(
        status != 200 || got != longer,
        "longer file served: {status}"
    );
    assert_ne!(status, 200);
}

#[tokio::test]
async fn a_hot_small_body_is_served_from_memory_as_verified() {
    let site = Site::start("site-a", "");
    let c = client();
    create_bucket(&site, "bkt").await;
    let v1 = data(1000, 11);
    put_object(&site, "bkt", "hot", v1.clone()).await;
    let url = ccs(&site, "/bkt/hot");
    let remote_url = site.url("/replicator/remote/buckets/bkt/hot");
    assert_eq!(get(&c, &url).await, (200, v1.clone()));

    // The file now holds other bytes; memory still holds the verified ones, and serves them
    // on both routes without reading the file.
    let file = object_file(&site, "bkt", "hot");
    let mut other = v1.clone();
    other[10] ^= 0xff;
    std::fs::write(&file, &other).unwrap();
    assert_eq!(get(&c, &url).await, (200, v1.clone()), "accessor route");
    assert_eq!(
        get(&c, &remote_url).await,
        (200, v1.clone()),
        "remote route"
    );

    // Deleted, then written again with other bytes of the same size: the new bytes at once.
    assert_eq!(delete(&c, &url).await, 204);
    let v2 = data(1000, 12);
    assert_eq!(upload(&site, "bkt", "hot", v2.clone()).await, 201);
    assert_eq!(get(&c, &url).await, (200, v2.clone()));
    assert_eq!(get(&c, &remote_url).await, (200, v2));

    // An object above body_cache_max_object is read (and verified) from storage every time.
    let big = data(100_000, 13);
    put_object(&site, "bkt", "big", big.clone()).await;
    let big_url = ccs(&site, "/bkt/big");
    assert_eq!(get(&c, &big_url).await, (200, big.clone()));
    let mut damaged = big.clone();
    damaged[50_000] ^= 0xff;
    std::fs::write(object_file(&site, "bkt", "big"), &damaged).unwrap();
    let (status, got) = get(&c, &big_url).await;
    assert!(status != 200 || got != damaged, "damaged large body served");
    assert_ne!(status, 200);
}

#[tokio::test]
async fn head_answers_from_metadata_only() {
    let site = Site::start("site-a", "");
    create_bucket(&site, "bkt").await;
    let body = data(2000, 5);
    put_object(&site, "bkt", "obj", body.clone()).await;
    std::fs::remove_file(object_file(&site, "bkt", "obj")).unwrap();
    let r = client().head(ccs(&site, "/bkt/obj")).send().await.unwrap();
    assert_eq!(r.status(), 204, "HEAD does not open the file");
    assert_eq!(
        header(&r, "x-clonecloudstore-type").as_deref(),
        Some("OBJECT")
    );
    assert_eq!(
        header(&r, "x-clonecloudstore-size").as_deref(),
        Some("2000")
    );
    let r = client()
        .head(site.url("/replicator/remote/buckets/bkt/obj"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "remote HEAD does not open the file either");
}

// ---- 3. ranges ---------------------------------------------------------------------------

async fn ranged(
    url: &str,
    range: &str,
    zstd: bool,
) -> (u16, Option<String>, Option<String>, Option<String>, Vec<u8>) {
    let mut req = client().get(url).header("range", range);
    if zstd {
        req = req.header("accept-encoding", "zstd");
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let cr = header(&r, "content-range");
    let cl = header(&r, "content-length");
    let ce = header(&r, "content-encoding");
    (status, cr, cl, ce, r.bytes().await.unwrap().to_vec())
}

/// Checks good, open-ended, suffix, clipped, unsatisfiable and multi ranges on one URL.
async fn assert_ranges(url: &str, body: &[u8]) {
    let size = body.len();
    let cases: Vec<(String, usize, usize)> = vec![
        ("bytes=0-99".into(), 0, 100),
        ("bytes=10-10".into(), 10, 1),
        (format!("bytes={}-", size - 300), size - 300, 300),
        ("bytes=-77".into(), size - 77, 77),
        (format!("bytes=5-{}", size + 1000), 5, size - 5),
        (format!("bytes=-{}", size + 5), 0, size),
    ];
    for (range, start, len) in cases {
        for zstd in [false, true] {
            let (status, cr, cl, ce, got) = ranged(url, &range, zstd).await;
            assert_eq!(status, 206, "{range} zstd={zstd} on {url}");
            assert_eq!(
                cr,
                Some(format!("bytes {start}-{}/{size}", start + len - 1)),
                "{range}"
            );
            assert_eq!(cl, Some(len.to_string()), "{range}");
            assert_eq!(ce, None, "a range is never compressed ({range})");
            assert_eq!(got, &body[start..start + len], "{range} zstd={zstd}");
        }
    }
    for range in [
        format!("bytes={size}-"),
        format!("bytes={}-{}", size + 1, size + 9),
        "bytes=-0".into(),
    ] {
        let (status, cr, _, _, _) = ranged(url, &range, false).await;
        assert_eq!(status, 416, "{range} on {url}");
        assert_eq!(cr, Some(format!("bytes */{size}")), "{range}");
    }
    // Several ranges: the whole object, 200.
    let (status, cr, _, _, got) = ranged(url, "bytes=0-1,5-6", false).await;
    assert_eq!((status, cr), (200, None));
    assert_eq!(got, body);
}

#[tokio::test]
async fn range_reads_on_every_get_route() {
    let (a, b) = (
        Site::start("site-a", "[replication]\nenabled = false\n"),
        Site::start("site-b", "[replication]\nenabled = false\n"),
    );
    mesh(&[&a, &b]).await;
    create_bucket(&b, "bkt").await;
    let small = data(10_000, 6);
    let large = data(700_000, 7);
    put_object(&b, "bkt", "small", small.clone()).await;
    put_object(&b, "bkt", "large", large.clone()).await;
    for (key, body) in [("small", &small), ("large", &large)] {
        assert_ranges(&ccs(&b, &format!("/bkt/{key}")), body).await;
        assert_ranges(
            &b.url(&format!("/replicator/remote/buckets/bkt/{key}")),
            body,
        )
        .await;
        // Through the topology: A forwards the range to B.
        assert_ranges(
            &a.url(&format!("/replicator/local/buckets/bkt/{key}")),
            body,
        )
        .await;
    }
    // A whole GET still says ranges are accepted and sends everything.
    let r = client().get(ccs(&b, "/bkt/large")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "accept-ranges").as_deref(), Some("bytes"));
    assert_eq!(r.bytes().await.unwrap().to_vec(), large);
}

// ---- 4. a dead peer's cached locations ---------------------------------------------------

#[tokio::test]
async fn a_cached_location_at_a_dead_site_stops_answering() {
    let (a, mut b) = (
        Site::start("site-a", "[replication]\nenabled = false\n"),
        Site::start("site-b", "[replication]\nenabled = false\n"),
    );
    mesh(&[&a, &b]).await;
    create_bucket(&b, "bkt").await;
    put_object(&b, "bkt", "only-at-b", data(1000, 8)).await;
    let url = a.url("/replicator/local/buckets/bkt/only-at-b");
    for _ in 0..2 {
        let r = client().head(&url).send().await.unwrap();
        assert_eq!(r.status(), 204, "found at B (then cached)");
        assert_eq!(
            header(&r, "x-clonecloudstore-target-id").as_deref(),
            Some("site-b")
        );
    }
    b.kill9();
    let killed = Instant::now();
    eventually(
        Duration::from_millis(2500),
        "HEAD through A says 404",
        || async {
            let r = client().head(&url).send().await.ok()?;
            (r.status() == 404).then_some(())
        },
    )
    .await;
    let took = killed.elapsed();
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    // And it stays so.
    let r = client().head(&url).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
