//! Read through the topology (data flow 3): the replicator local routes find an object at
//! another site and stream it, verified; the remote routes answer from a site's own store.
//! Dead, failing and slow peers never hide a copy, negative answers are cached only briefly,
//! and a 1 GiB object crosses two hops in bounded memory.

mod common;
use common::*;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::Response;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const HASH: &str = "x-clonecloudstore-hash";
const TYPE: &str = "x-clonecloudstore-type";
const TARGET_ID: &str = "x-clonecloudstore-target-id";
const BUCKET: &str = "shared";

/// Replication off: a copy exists only where the test writes it. A per-peer timeout long
/// enough that "answered quickly" cannot be the timeout firing.
const SITE_EXTRA: &str = "[replication]\nenabled = false\n[topology]\npeer_timeout_ms = 3000\n";

/// Status and elapsed time of a request.
async fn timed(req: reqwest::RequestBuilder) -> (Response, Duration) {
    let started = Instant::now();
    let r = req.send().await.unwrap();
    (r, started.elapsed())
}

/// GET through `site`'s local route; asserts the bytes, the hash and the site that served them.
async fn assert_read_through(site: &Site, key: &str, body: &[u8], from: &str) {
    let r = client()
        .get(local(site, &format!("{BUCKET}/{key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "read {key} through {}", site.id);
    assert_eq!(header(&r, TARGET_ID), Some(from), "served by");
    assert_eq!(header(&r, HASH), Some(ccs_hash(body).as_str()));
    assert_eq!(&r.bytes().await.unwrap()[..], body, "bytes of {key}");
}

/// HEAD through `site`'s local route: (status, type, target-id).
async fn head_through(
    site: &Site,
    path: &str,
    pinned: Option<&str>,
) -> (u16, String, Option<String>) {
    let mut req = client().head(local(site, path));
    if let Some(target) = pinned {
        req = req.header(TARGET_ID, target);
    }
    let r = req.send().await.unwrap();
    let kind = header(&r, TYPE).unwrap_or("").to_owned();
    (
        r.status().as_u16(),
        kind,
        header(&r, TARGET_ID).map(str::to_owned),
    )
}

#[tokio::test]
async fn a_third_site_reads_through_the_topology() {
    let sites = meshed_sites(&["site-a", "site-b", "site-c"], SITE_EXTRA).await;
    let (a, c) = (&sites[0], &sites[2]);
    create_bucket(a, BUCKET).await;
    let body = data(3 * 1024 * 1024 + 17, 1);
    put_object(a, BUCKET, "dir/obj.bin", body.clone()).await;

    assert_read_through(c, "dir/obj.bin", &body, "site-a").await;
    assert_heads_through(c).await;
    assert_pinned_lookups(c).await;
    assert_zstd_through_two_hops(c, &body).await;
    assert_accessor_reads_remotely(c, &body).await;
}

async fn assert_heads_through(c: &Site) {
    let a = Some("site-a".to_owned());
    assert_eq!(
        head_through(c, BUCKET, None).await,
        (204, "BUCKET".into(), a.clone())
    );
    assert_eq!(
        head_through(c, &format!("{BUCKET}/dir/obj.bin"), None).await,
        (204, "OBJECT".into(), a.clone())
    );
    assert_eq!(
        head_through(c, &format!("{BUCKET}/dir"), None).await,
        (204, "DIRECTORY".into(), a)
    );
    let (status, kind, _) = head_through(c, &format!("{BUCKET}/nowhere.bin"), None).await;
    assert_eq!((status, kind.as_str()), (404, "NONE"));
}

/// A request pinned to a site asks only that site.
async fn assert_pinned_lookups(c: &Site) {
    let path = format!("{BUCKET}/dir/obj.bin");
    assert_eq!(
        head_through(c, &path, Some("site-b")).await.0,
        404,
        "B lacks it"
    );
    let found = head_through(c, &path, Some("site-a")).await;
    assert_eq!(found, (204, "OBJECT".into(), Some("site-a".into())));
    let pinned_get = |site: &str| {
        client()
            .get(local(c, &path))
            .header(TARGET_ID, site.to_owned())
            .send()
    };
    assert_eq!(pinned_get("site-b").await.unwrap().status(), 404);
    assert_eq!(pinned_get("site-a").await.unwrap().status(), 200);
}

/// zstd asked at C: A compresses, C verifies the compressed stream and relays it as is.
async fn assert_zstd_through_two_hops(c: &Site, body: &[u8]) {
    let r = client()
        .get(local(c, &format!("{BUCKET}/dir/obj.bin")))
        .header("accept-encoding", "zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-encoding"), Some("zstd"));
    assert_eq!(header(&r, HASH), Some(ccs_hash(body).as_str()));
    let compressed = r.bytes().await.unwrap();
    assert_eq!(zstd::decode_all(&compressed[..]).unwrap(), body);
}

/// C has no such bucket: the accessor falls back to the topology (CCS remote.read).
async fn assert_accessor_reads_remotely(c: &Site, body: &[u8]) {
    let url = c.url(&format!("/cloudclonestore/{BUCKET}/dir/obj.bin"));
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, TARGET_ID), Some("site-a"));
    assert_eq!(&r.bytes().await.unwrap()[..], body);
}

#[tokio::test]
async fn remote_routes_answer_from_the_sites_own_store() {
    let a = Site::start("site-a", SITE_EXTRA);
    create_bucket(&a, BUCKET).await;
    let body = data(100_000, 2);
    put_object(&a, BUCKET, "dir/obj.bin", body.clone()).await;

    let r = client().get(remote(&a, BUCKET)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let bucket: serde_json::Value = r.json().await.unwrap();
    assert_eq!(bucket["name"], BUCKET);
    assert_remote_head(&a, BUCKET, 204, "BUCKET").await;
    assert_remote_head(&a, "missing-bucket", 404, "NONE").await;
    assert_eq!(
        client()
            .get(remote(&a, "missing-bucket"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let r = client()
        .get(remote(&a, &format!("{BUCKET}/dir/obj.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, HASH), Some(ccs_hash(&body).as_str()));
    assert_eq!(&r.bytes().await.unwrap()[..], &body[..]);
    assert_remote_head(&a, &format!("{BUCKET}/dir/obj.bin"), 204, "OBJECT").await;
    assert_remote_head(&a, &format!("{BUCKET}/dir"), 204, "DIRECTORY").await;
    assert_remote_head(&a, &format!("{BUCKET}/absent.bin"), 404, "NONE").await;
    assert_eq!(
        client()
            .get(remote(&a, &format!("{BUCKET}/absent.bin")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // fullCheck looks at the bytes too: metadata alone no longer convinces it.
    std::fs::remove_file(object_file(&a, BUCKET, "dir/obj.bin")).unwrap();
    assert_remote_head(&a, &format!("{BUCKET}/dir/obj.bin"), 204, "OBJECT").await;
    assert_remote_head(
        &a,
        &format!("{BUCKET}/dir/obj.bin?fullCheck=true"),
        404,
        "NONE",
    )
    .await;
}

async fn assert_remote_head(site: &Site, path: &str, status: u16, kind: &str) {
    let r = client().head(remote(site, path)).send().await.unwrap();
    assert_eq!(r.status(), status, "HEAD remote {path}");
    assert_eq!(header(&r, TYPE), Some(kind), "type of {path}");
}

#[tokio::test]
async fn a_dead_site_is_answered_quickly_and_other_copies_are_found() {
    let mut sites = meshed_sites(&["site-a", "site-b", "site-c"], SITE_EXTRA).await;
    let objects: Vec<(&str, Vec<u8>)> = ["cached.bin", "cached-too.bin", "fresh.bin"]
        .into_iter()
        .zip(3..)
        .map(|(key, seed)| (key, data(50_000, seed)))
        .collect();
    create_bucket(&sites[0], BUCKET).await;
    for (key, body) in &objects {
        put_object(&sites[0], BUCKET, key, body.clone()).await;
    }
    // C learns (and caches) that A holds the first two, then A dies.
    for (key, body) in &objects[..2] {
        assert_read_through(&sites[2], key, body, "site-a").await;
    }
    sites[0].kill9();
    let (b, c) = (&sites[1], &sites[2]);

    // A cached location at a dead site is dropped, and so is every other one at that site
    // once it is seen failing.
    assert_missing_quickly(c, reqwest::Method::GET, "cached.bin").await;
    assert_missing_quickly(c, reqwest::Method::HEAD, "cached-too.bin").await;
    assert_missing_quickly(c, reqwest::Method::GET, "fresh.bin").await;
    assert_missing_quickly(c, reqwest::Method::HEAD, "fresh.bin").await;

    create_bucket(b, BUCKET).await;
    for (key, body) in &objects {
        put_object(b, BUCKET, key, body.clone()).await;
    }
    for (key, body) in &objects {
        assert_read_through(c, key, body, "site-b").await;
    }
}

/// With its only holder dead, the lookup answers 404 well before the 3 s peer timeout.
async fn assert_missing_quickly(c: &Site, method: reqwest::Method, key: &str) {
    let url = local(c, &format!("{BUCKET}/{key}"));
    let (r, took) = timed(client().request(method.clone(), &url)).await;
    assert_eq!(
        r.status(),
        404,
        "{method} {key} with A dead: {:?}",
        r.headers()
    );
    assert!(
        took < Duration::from_secs(1),
        "{method} {key} took {took:?}"
    );
}

/// A fake peer on 127.0.0.1; counts the connections it accepted.
struct FakePeer {
    url: String,
    connections: Arc<AtomicUsize>,
}

/// A peer answering `500` to every request.
async fn failing_peer() -> FakePeer {
    fake_peer(|mut socket| async move {
        let mut buf = [0u8; 4096];
        let _ = socket.read(&mut buf).await;
        let answer =
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let _ = socket.write_all(answer.as_bytes()).await;
    })
    .await
}

/// A peer that accepts and never answers.
async fn silent_peer() -> FakePeer {
    fake_peer(|socket| async move {
        tokio::time::sleep(Duration::from_secs(120)).await;
        drop(socket);
    })
    .await
}

async fn fake_peer<F, Fut>(serve: F) -> FakePeer
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(socket));
        }
    });
    FakePeer { url, connections }
}

async fn add_fake_peer(site: &Site, id: &str, peer: &FakePeer) {
    let r = reqwest::Client::new()
        .post(site.url("/administration/topologies"))
        .json(&serde_json::json!({"id": id, "name": id, "uri": peer.url, "status": "UP"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn failing_and_slow_peers_do_not_hide_a_copy() {
    let sites = meshed_sites(&["site-a", "site-c"], SITE_EXTRA).await;
    let (a, c) = (&sites[0], &sites[1]);
    let (failing, silent) = (failing_peer().await, silent_peer().await);
    add_fake_peer(c, "site-failing", &failing).await;
    add_fake_peer(c, "site-silent", &silent).await;
    create_bucket(a, BUCKET).await;
    let body = data(200_000, 5);
    put_object(a, BUCKET, "obj.bin", body.clone()).await;

    // Found at A long before the silent peer's 3 s timeout, despite the 500.
    let (r, took) = timed(client().get(local(c, &format!("{BUCKET}/obj.bin")))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, TARGET_ID), Some("site-a"));
    assert_eq!(&r.bytes().await.unwrap()[..], &body[..]);
    assert!(took < Duration::from_secs(1), "lookup took {took:?}");
    assert!(
        failing.connections.load(Ordering::SeqCst) >= 1,
        "the failing peer was asked"
    );
    assert!(
        silent.connections.load(Ordering::SeqCst) >= 1,
        "the silent peer was asked"
    );

    // Nowhere: the errors do not turn into a 5xx, the answer is a plain 404.
    let r = client()
        .head(local(c, &format!("{BUCKET}/absent.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_copy_created_after_a_negative_lookup_is_found() {
    let extra = format!("{SITE_EXTRA}negative_ttl_ms = 300\n");
    let sites = meshed_sites(&["site-a", "site-b", "site-c"], &extra).await;
    let (b, c) = (&sites[1], &sites[2]);
    let url = local(c, &format!("{BUCKET}/late.bin"));
    assert_eq!(client().get(&url).send().await.unwrap().status(), 404);

    let body = data(10_000, 6);
    create_bucket(b, BUCKET).await;
    put_object(b, BUCKET, "late.bin", body.clone()).await;
    eventually(
        Duration::from_secs(5),
        "C finds the late copy at B",
        || async {
            let r = client().head(&url).send().await.unwrap();
            (r.status() == 204 && header(&r, TARGET_ID) == Some("site-b")).then_some(())
        },
    )
    .await;

    // The positive answer is cached: the next read is a cache hit.
    const HITS: &str = "mirrorgate_topology_cache_total{result=\"hit\"}";
    let hits_before = c.metric(HITS).await;
    assert_read_through(c, "late.bin", &body, "site-b").await;
    assert!(
        c.metric(HITS).await > hits_before,
        "second read is a cache hit"
    );
}

#[tokio::test]
async fn topology_changes_drop_cached_answers() {
    // Answers would stay cached for a minute: only the topology change can drop them.
    let extra = format!("{SITE_EXTRA}negative_ttl_ms = 60000\n");
    let sites = meshed_sites(&["site-a", "site-b", "site-c"], &extra).await;
    let (a, c) = (&sites[0], &sites[2]);
    let d = Site::start("site-d", &extra);
    create_bucket(a, BUCKET).await;
    let body = data(10_000, 10);
    put_object(a, BUCKET, "obj.bin", body.clone()).await;
    assert_read_through(c, "obj.bin", &body, "site-a").await;

    // A leaves C's topology: the cached location at A goes with it.
    let r = reqwest::Client::new()
        .delete(c.url("/administration/topologies/site-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        head_through(c, &format!("{BUCKET}/obj.bin"), None).await.0,
        404
    );

    // D joins with a copy C had looked for in vain: the cached "nowhere" goes too.
    create_bucket(&d, BUCKET).await;
    put_object(&d, BUCKET, "late.bin", body.clone()).await;
    assert_eq!(
        head_through(c, &format!("{BUCKET}/late.bin"), None).await.0,
        404
    );
    add_peer(c, &d).await;
    let found = head_through(c, &format!("{BUCKET}/late.bin"), None).await;
    assert_eq!(found, (204, "OBJECT".into(), Some("site-d".into())));
}

const GIB: u64 = 1 << 30;
const CHUNK: usize = 1 << 20;

/// A streamed upload body of `size` deterministic bytes, hashed into `hasher` as it is sent.
fn generated_body(size: u64, hasher: Arc<Mutex<Sha256>>) -> reqwest::Body {
    let chunks = size.div_ceil(CHUNK as u64);
    let stream = futures::stream::iter(0..chunks).map(move |i| {
        let len = (size - i * CHUNK as u64).min(CHUNK as u64) as usize;
        let chunk = Bytes::from(data(len, i));
        hasher.lock().unwrap().update(&chunk);
        Ok::<_, std::io::Error>(chunk)
    });
    reqwest::Body::wrap_stream(stream)
}

/// Peak RSS growth (KiB) of some processes, sampled until stopped.
struct RssWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl RssWatch {
    fn start(pids: Vec<u32>) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let baseline: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
            let mut peak = baseline.clone();
            while !flag.load(Ordering::SeqCst) {
                for (p, pid) in peak.iter_mut().zip(&pids) {
                    *p = (*p).max(rss_kib(*pid));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak.iter()
                .zip(&baseline)
                .map(|(p, b)| p.saturating_sub(*b))
                .collect()
        });
        RssWatch { stop, task }
    }

    async fn growth_kib(self) -> Vec<u64> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// Streams a response body into a hasher: (bytes received, CCS hash).
async fn hash_download(resp: Response) -> (u64, String) {
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("download broke");
        received += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (
        received,
        mirrorgate::model::hash::encode(&hasher.finalize()),
    )
}

// Multi-threaded, so the RSS sampler runs while the test task is busy hashing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_crosses_two_hops_in_bounded_memory() {
    let sites = meshed_sites(&["site-a", "site-c"], SITE_EXTRA).await;
    let (a, c) = (&sites[0], &sites[1]);
    create_bucket(a, BUCKET).await;
    let watch = RssWatch::start(vec![a.pid(), c.pid()]);

    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let r = client()
        .post(a.url(&format!("/cloudclonestore/{BUCKET}/big.bin")))
        .body(generated_body(GIB, hasher.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let sent_hash = mirrorgate::model::hash::encode(&hasher.lock().unwrap().clone().finalize());

    let r = client()
        .get(local(c, &format!("{BUCKET}/big.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, TARGET_ID), Some("site-a"));
    assert_eq!(header(&r, HASH), Some(sent_hash.as_str()));
    assert_eq!(hash_download(r).await, (GIB, sent_hash));

    let growth = watch.growth_kib().await;
    eprintln!("RSS growth (KiB) of site-a, site-c: {growth:?}");
    for (site, kib) in ["site-a", "site-c"].iter().zip(growth) {
        assert!(kib < 100 * 1024, "{site} RSS grew by {kib} KiB");
    }
}
