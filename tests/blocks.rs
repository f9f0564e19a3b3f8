//! Block hashes and one SHA-256 per hop, with real sites on 127.0.0.1: a verifying peer pulls
//! bytes the holder does not hash and reports a mismatch back (the holder re-checks and
//! repairs), range reads are verified by the blocks they touch, and large pulls go by ranges
//! and resume from their verified blocks.

mod common;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Small blocks keep the tests fast: 64 KiB.
const BLOCK: usize = 65_536;
const FAST: &str = "[replication]\nworkers = 2\nmax_attempts = 3\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\n[rucio]\nbackground_interval_ms = 150\n[scrub]\nenabled = false\n";

/// `extra` with small blocks (the site config ends inside its `[storage]` table).
fn with_blocks(extra: &str) -> String {
    format!("block_size_bytes = {BLOCK}\n{extra}")
}

fn flip(site: &Site, bucket: &str, key: &str, at: usize) {
    let file = object_file(site, bucket, key);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[at] ^= 0x5a;
    std::fs::write(&file, bytes).unwrap();
}

fn file_is(site: &Site, bucket: &str, key: &str, want: &[u8]) -> bool {
    std::fs::read(object_file(site, bucket, key)).is_ok_and(|b| b == want)
}

/// The declarations of `rse`'s copy of `key` in `state`, asked at `site`.
async fn declared(site: &Site, rse: &str, key: &str, state: &str) -> Value {
    eventually(
        Duration::from_secs(45),
        &format!("{state} declaration of {key} at {rse}"),
        || async {
            let text = reqwest::get(site.url(&format!("/replicas/bad/states?rse={rse}")))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|r| r["name"] == key && r["state"] == state)
        },
    )
    .await
}

/// Whether a GET delivered exactly `want` (a failed stream is a broken or short body).
async fn got_exactly(r: reqwest::Response, want: &[u8]) -> bool {
    matches!(r.bytes().await, Ok(b) if b.as_ref() == want)
}

async fn holds(site: &Site, bucket: &str, key: &str) -> bool {
    let r = client()
        .head(remote(site, &format!("{bucket}/{key}")))
        .send()
        .await
        .unwrap();
    r.status() == 204
}

// ---- one SHA-256 per hop -----------------------------------------------------------------

#[tokio::test]
async fn a_pull_of_a_corrupt_copy_is_reported_to_its_holder() {
    let (a, b) = (Site::start("site-a", FAST), Site::start("site-b", FAST));
    mesh(&[&a, &b]).await;
    create_bucket(&a, "hop").await;
    bucket_arrives(&b, "hop").await;
    let http = reqwest::Client::new();
    let paused = http.post(a.url("/_/backbeat/api/crr/pause")).send();
    assert_eq!(paused.await.unwrap().status(), 200);
    let body = data(700_000, 1);
    put_object(&a, "hop", "obj", body.clone()).await;
    flip(&a, "hop", "obj", 400_000);
    let resumed = http.post(a.url("/_/backbeat/api/crr/resume")).send();
    assert_eq!(resumed.await.unwrap().status(), 200);

    // B's verification fails, B reports to A, A re-reads its copy: BAD, and with no good copy
    // anywhere, LOST.
    let row = declared(&a, "site-a", "obj", "LOST").await;
    assert!(
        row["reason"].as_str().unwrap().contains("suspicious"),
        "{row}"
    );
    assert!(b.metric("mirrorgate_corruption_reports_sent_total").await >= 1.0);
    assert!(
        a.metric("mirrorgate_corruption_reports_received_total")
            .await
            >= 1.0
    );
    assert!(
        !holds(&b, "hop", "obj").await,
        "a corrupt pull is never kept"
    );
    // A served the bytes without hashing them: only its re-read found the mismatch.
    let served = "mirrorgate_hash_mismatches_total{source=\"storage\"}";
    assert_eq!(a.metric(served).await, 0.0);
    assert!(
        a.metric("mirrorgate_hash_mismatches_total{source=\"reverify\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_corrupt_small_copy_read_through_is_a_clean_error_reported_to_its_holder() {
    let (a, b) = (Site::start("site-a", FAST), Site::start("site-b", FAST));
    mesh(&[&a, &b]).await;
    create_bucket(&a, "hop").await;
    bucket_arrives(&b, "hop").await;
    let http = reqwest::Client::new();
    let paused = http.post(a.url("/_/backbeat/api/crr/pause")).send();
    assert_eq!(paused.await.unwrap().status(), 200);
    let body = data(5_000, 5);
    put_object(&a, "hop", "small", body.clone()).await;
    flip(&a, "hop", "small", 2_000);

    // A sends the small body unhashed; B reads it whole and checks it before answering: a
    // clean error, never a 200, and A hears of it.
    let r = client().get(local(&b, "hop/small")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let said = header(&r, "x-clonecloudstore-error")
        .unwrap_or("")
        .to_owned();
    assert!(said.contains("corrupt"), "{said}");
    let row = declared(&a, "site-a", "small", "LOST").await;
    assert!(
        row["reason"].as_str().unwrap().contains("suspicious"),
        "{row}"
    );
    assert!(b.metric("mirrorgate_corruption_reports_sent_total").await >= 1.0);
    // A served it without hashing it: only its re-read found the mismatch.
    let served = "mirrorgate_hash_mismatches_total{source=\"storage\"}";
    assert_eq!(a.metric(served).await, 0.0);
    assert!(
        a.metric("mirrorgate_hash_mismatches_total{source=\"reverify\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_read_through_of_a_corrupt_copy_gets_it_repaired() {
    let sites = meshed_sites(&["site-a", "site-b", "site-c"], FAST).await;
    let (a, b, c) = (&sites[0], &sites[1], &sites[2]);
    create_bucket(a, "hop").await;
    let body = data(700_000, 2);
    put_object(a, "hop", "obj", body.clone()).await;
    for site in [b, c] {
        eventually(Duration::from_secs(30), "replicated", || async {
            holds(site, "hop", "obj").await.then_some(())
        })
        .await;
    }
    flip(c, "hop", "obj", 100);
    // B reads through C (pinned): C streams its bytes unhashed, B's check fails, the client
    // never gets a complete body, and C hears of it.
    let r = client()
        .get(local(b, "hop/obj"))
        .header("x-clonecloudstore-target-id", "site-c")
        .send()
        .await
        .unwrap();
    assert!(!got_exactly(r, &body).await);
    declared(c, "site-c", "obj", "RECOVERED").await;
    assert!(file_is(c, "hop", "obj", &body));
    // A good object through two hops (B relays C's copy), whole and small.
    let r = client()
        .get(local(b, "hop/obj"))
        .header("x-clonecloudstore-target-id", "site-c")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(got_exactly(r, &body).await);
    let small = data(5_000, 3);
    put_object(c, "hop", "small", small.clone()).await;
    let r = client()
        .get(local(b, "hop/small"))
        .header("x-clonecloudstore-target-id", "site-c")
        .send()
        .await
        .unwrap();
    assert!(got_exactly(r, &small).await);
}

#[tokio::test]
async fn a_client_cannot_ask_its_site_to_skip_verification() {
    let a = Site::start("site-a", FAST);
    create_bucket(&a, "hop").await;
    let body = data(700_000, 4);
    put_object(&a, "hop", "obj", body.clone()).await;
    flip(&a, "hop", "obj", 500_000);
    let r = client()
        .get(a.url("/cloudclonestore/hop/obj"))
        .header("x-mirrorgate-verify", "receiver")
        .send()
        .await
        .unwrap();
    let mut flipped = body.clone();
    flipped[500_000] ^= 0x5a;
    assert!(!got_exactly(r, &flipped).await, "the accessor verifies");
    let served = "mirrorgate_hash_mismatches_total{source=\"storage\"}";
    assert!(a.metric(served).await >= 1.0);
}

// ---- verified ranges -----------------------------------------------------------------------

async fn range(url: &str, spec: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("range", spec)
        .send()
        .await
        .unwrap()
}

/// 206 with exactly `body[start..start + len]`.
async fn assert_range(url: &str, spec: &str, body: &[u8], start: usize, len: usize) {
    let r = range(url, spec).await;
    assert_eq!(r.status(), 206, "{spec} on {url}");
    let size = body.len();
    assert_eq!(
        header(&r, "content-range"),
        Some(format!("bytes {start}-{}/{size}", start + len - 1).as_str()),
        "{spec}"
    );
    assert!(
        got_exactly(r, &body[start..start + len]).await,
        "{spec} on {url}"
    );
}

#[tokio::test]
async fn ranges_are_verified_by_the_blocks_they_touch() {
    let extra = with_blocks("[replication]\nenabled = false\n[scrub]\nenabled = false\n[rucio]\nbackground_interval_ms = 150\n");
    let (a, b) = (Site::start("site-a", &extra), Site::start("site-b", &extra));
    mesh(&[&a, &b]).await;
    create_bucket(&b, "rng").await;
    // Five blocks, the last one short.
    let size = 4 * BLOCK + 37_856;
    let body = data(size, 5);
    put_object(&b, "rng", "obj", body.clone()).await;
    let urls = [
        b.url("/cloudclonestore/rng/obj"),
        remote(&b, "rng/obj"),
        local(&a, "rng/obj"),
    ];
    let cases: Vec<(String, usize, usize)> = vec![
        ("bytes=0-99".into(), 0, 100),
        (format!("bytes={}-{}", BLOCK - 1, BLOCK), BLOCK - 1, 2),
        (format!("bytes={BLOCK}-{}", 2 * BLOCK - 1), BLOCK, BLOCK),
        (
            format!("bytes=1000-{}", 3 * BLOCK + 5),
            1000,
            3 * BLOCK + 5 - 999,
        ),
        (
            format!("bytes={}-", 4 * BLOCK + 10),
            4 * BLOCK + 10,
            size - 4 * BLOCK - 10,
        ),
        (format!("bytes={}-", BLOCK + 3), BLOCK + 3, size - BLOCK - 3),
        ("bytes=-100".into(), size - 100, 100),
        ("bytes=-40000".into(), size - 40_000, 40_000),
        (format!("bytes=0-{}", size + 10), 0, size),
    ];
    for url in &urls {
        for (spec, start, len) in &cases {
            assert_range(url, spec, &body, *start, *len).await;
        }
        let r = range(url, &format!("bytes={size}-")).await;
        assert_eq!(r.status(), 416, "{url}");
        assert_eq!(
            header(&r, "content-range"),
            Some(format!("bytes */{size}").as_str())
        );
    }

    // Corrupt block 2: ranges that touch it fail before it completes, the others still serve.
    flip(&b, "rng", "obj", 2 * BLOCK + 100);
    let clear = [
        ("bytes=0-1000".to_string(), 0, 1001),
        (format!("bytes={}-", 3 * BLOCK), 3 * BLOCK, size - 3 * BLOCK),
        (format!("bytes={}-{}", BLOCK, 2 * BLOCK - 1), BLOCK, BLOCK),
    ];
    for url in &urls {
        for (spec, start, len) in &clear {
            assert_range(url, spec, &body, *start, *len).await;
        }
    }
    let mut corrupt = body.clone();
    corrupt[2 * BLOCK + 100] ^= 0x5a;
    for url in &urls {
        for (from, to) in [(2 * BLOCK + 50, 2 * BLOCK + 200), (BLOCK, 3 * BLOCK)] {
            // A failure before the first byte may even cut the response head.
            let r = client()
                .get(url)
                .header("range", format!("bytes={from}-{to}"))
                .send()
                .await;
            let complete = match r {
                Ok(r) => got_exactly(r, &corrupt[from..=to]).await,
                Err(_) => false,
            };
            assert!(
                !complete,
                "{from}-{to} on {url}: the bad block never completes"
            );
        }
    }
    // The copy is reported like a corrupt object (no good copy elsewhere: LOST).
    declared(&b, "site-b", "obj", "LOST").await;
    let served = "mirrorgate_hash_mismatches_total{source=\"storage\"}";
    assert!(b.metric(served).await >= 1.0);
}

/// A replica replaced by a newer version (the conflict rule's replace path) has that version's
/// blocks, recorded with its row: a corrupt block of the new bytes fails the ranges touching it.
#[tokio::test]
async fn a_replaced_replica_has_the_blocks_of_its_new_version() {
    let a = Site::start("site-a", &with_blocks(FAST));
    let quiet = "[replication]\nenabled = false\n[scrub]\nenabled = false\n";
    let b = Site::start("site-b", &with_blocks(quiet));
    mesh(&[&a, &b]).await;
    create_bucket(&a, "upd").await;
    bucket_arrives(&b, "upd").await;
    // B holds an older version of its own (B sends nothing); A's newer one replaces it.
    let (old, new) = (data(2 * BLOCK, 7), data(3 * BLOCK + 999, 8));
    put_object(&b, "upd", "obj", old).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    put_object(&a, "upd", "obj", new.clone()).await;
    eventually(
        Duration::from_secs(60),
        "the newer version at B",
        || async { file_is(&b, "upd", "obj", &new).then_some(()) },
    )
    .await;
    let url = remote(&b, "upd/obj");
    eventually(Duration::from_secs(10), "the new row at B", || async {
        let r = range(&url, "bytes=0-99").await;
        (r.status() == 206 && got_exactly(r, &new[..100]).await).then_some(())
    })
    .await;
    // B's catalogue names the new version for its copy (written with the row).
    let meta = format!("sqlite://{}", b.dir.join("meta.db").display());
    let pool = sqlx::SqlitePool::connect(&meta).await.unwrap();
    let (state, bytes, same_hash): (String, i64, bool) = sqlx::query_as(
        "SELECT r.state, r.bytes, r.sha256 = o.hash FROM replicas r JOIN objects o
         ON o.bucket = r.bucket AND o.name = r.name WHERE r.bucket = 'upd' AND r.name = 'obj'
         AND r.site = 'site-b'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (state.as_str(), bytes, same_hash),
        ("A", new.len() as i64, true)
    );
    flip(&b, "upd", "obj", 2 * BLOCK + 100);
    assert_range(&url, "bytes=0-1000", &new, 0, 1001).await;
    let mut corrupt = new.clone();
    corrupt[2 * BLOCK + 100] ^= 0x5a;
    let (from, to) = (2 * BLOCK + 50, 2 * BLOCK + 200);
    let served = match client()
        .get(&url)
        .header("range", format!("bytes={from}-{to}"))
        .send()
        .await
    {
        Ok(r) => got_exactly(r, &corrupt[from..=to]).await,
        Err(_) => false,
    };
    assert!(
        !served,
        "the corrupt block of the new version never completes"
    );
}

#[tokio::test]
async fn objects_without_blocks_serve_ranges_as_before() {
    let a = Site::start("site-a", &with_blocks("[replication]\nenabled = false\n"));
    create_bucket(&a, "old").await;
    let body = data(3 * BLOCK, 6);
    put_object(&a, "old", "obj", body.clone()).await;
    // As if written before block hashes were recorded.
    let url = format!("sqlite://{}", a.dir.join("meta.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let gone = sqlx::query("DELETE FROM object_blocks WHERE bucket = 'old'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(gone.rows_affected(), 1);
    pool.close().await;
    let url = a.url("/cloudclonestore/old/obj");
    assert_range(
        &url,
        &format!("bytes={}-{}", BLOCK - 5, BLOCK + 5),
        &body,
        BLOCK - 5,
        11,
    )
    .await;
    assert_range(&url, "bytes=-10", &body, 3 * BLOCK - 10, 10).await;
}

// ---- parallel, resumable pulls -------------------------------------------------------------

/// Objects of 256 KiB and more are pulled by ranges, `streams` at once; `overlap`: while
/// they are uploaded.
fn ranged_config(streams: usize, overlap: bool) -> String {
    with_blocks(&format!(
        "[replication]\nworkers = 2\nmax_attempts = 100\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\n\
         ranged_pull_min_bytes = 262144\npull_streams = {streams}\noverlap_uploads = {overlap}\n\
         [rucio]\nbackground_interval_ms = 150\n[scrub]\nenabled = false\n"
    ))
}

/// A (the source) and B (the receiver); B reaches A only through a proxy. Pulls start once
/// the upload committed (the overlap has its own tests below).
async fn pair_through_proxy(streams: usize) -> (Site, Site, proxy::Proxy) {
    pair_of(&ranged_config(streams, false)).await
}

async fn pair_of(config: &str) -> (Site, Site, proxy::Proxy) {
    let (a, b) = (Site::start("site-a", config), Site::start("site-b", config));
    let proxy = proxy::Proxy::start(&a.addr).await;
    add_peer(&a, &b).await;
    let r = reqwest::Client::new()
        .post(b.url("/administration/topologies"))
        .json(&serde_json::json!({"id": "site-a", "name": "site-a", "uri": proxy.url, "status": "UP"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    (a, b, proxy)
}

/// Blocks recorded verified in B's staging (0 when nothing is staged).
fn staged_blocks(site: &Site) -> usize {
    let Ok(dir) = std::fs::read_dir(site.dir.join("staging")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "blocks"))
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .map(|m| (m.len().saturating_sub(8) / 4) as usize)
        .sum()
}

fn staging_is_empty(site: &Site) -> bool {
    std::fs::read_dir(site.dir.join("staging")).map_or(true, |mut d| d.next().is_none())
}

async fn arrives(site: &Site, bucket: &str, key: &str, body: &[u8]) {
    eventually(Duration::from_secs(90), "the replica", || async {
        holds(site, bucket, key).await.then_some(())
    })
    .await;
    assert!(file_is(site, bucket, key, body));
}

#[tokio::test]
async fn a_cut_pull_resumes_from_its_verified_blocks() {
    let (a, b, proxy) = pair_through_proxy(4).await;
    create_bucket(&a, "big").await;
    bucket_arrives(&b, "big").await;
    let size = 64 * BLOCK;
    let body = data(size, 7);
    proxy.cut_once_after(600_000);
    put_object(&a, "big", "obj", body.clone()).await;
    arrives(&b, "big", "obj", &body).await;
    assert_eq!(proxy.cuts(), 1, "the pull was cut");
    let resumed = b.metric("mirrorgate_pull_resumed_bytes_total").await;
    assert!(
        resumed <= BLOCK as f64,
        "at most one block again: {resumed}"
    );
    assert_eq!(
        b.metric("mirrorgate_pull_block_bytes_total").await,
        size as f64,
        "every block verified once"
    );
    // The staging file itself became the copy: written once, not streamed into the store.
    assert_eq!(
        b.metric("mirrorgate_pull_adopted_bytes_total").await,
        size as f64,
        "the staged file adopted in place"
    );
    assert!(
        b.metric("mirrorgate_bytes_in_total").await < size as f64,
        "the staged bytes were not written a second time"
    );
    // The staging file goes right after the store that made the object visible.
    eventually(Duration::from_secs(10), "staging emptied", || async {
        staging_is_empty(&b).then_some(())
    })
    .await;
}

/// A pull of `big/obj` (`BLOCKS` blocks, one stream) with B killed once 8 blocks are staged.
/// Returns the sites (B down), the proxy (throttled) and the blocks B had recorded.
async fn receiver_killed_mid_pull(body: &[u8]) -> (Site, Site, proxy::Proxy, usize) {
    let (a, mut b, proxy) = pair_through_proxy(1).await;
    create_bucket(&a, "big").await;
    bucket_arrives(&b, "big").await;
    proxy.throttle(1_000_000);
    put_object(&a, "big", "obj", body.to_vec()).await;
    eventually(Duration::from_secs(60), "8 blocks staged at B", || async {
        (staged_blocks(&b) >= 8).then_some(())
    })
    .await;
    b.kill9();
    let verified = staged_blocks(&b);
    assert!(verified < BLOCKS, "killed mid-pull");
    (a, b, proxy, verified)
}

const BLOCKS: usize = 64;

#[tokio::test]
async fn a_killed_receiver_resumes_from_its_verified_blocks() {
    let (blocks, body) = (BLOCKS, data(BLOCKS * BLOCK, 8));
    let (_a, mut b, proxy, verified) = receiver_killed_mid_pull(&body).await;
    proxy.throttle(0);
    b.restart();
    arrives(&b, "big", "obj", &body).await;
    // The restarted receiver fetched only the blocks it had not verified before the kill.
    assert_eq!(
        b.metric("mirrorgate_pull_block_bytes_total").await,
        ((blocks - verified) * BLOCK) as f64
    );
    // The staging file goes right after the store that made the object visible.
    eventually(Duration::from_secs(10), "staging emptied", || async {
        staging_is_empty(&b).then_some(())
    })
    .await;
}

/// The staging is not synced block by block: a block on record that a crash of the machine lost
/// (its bytes zeroed here while the receiver is down) is found on resume and fetched again.
#[tokio::test]
async fn a_staged_block_a_crash_lost_is_fetched_again() {
    let (blocks, body) = (BLOCKS, data(BLOCKS * BLOCK, 10));
    let (_a, mut b, proxy, verified) = receiver_killed_mid_pull(&body).await;
    let part = std::fs::read_dir(b.dir.join("staging"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "part"))
        .expect("a staging file");
    let file = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &vec![0u8; BLOCK], BLOCK as u64).unwrap();
    drop(file);
    proxy.throttle(0);
    b.restart();
    arrives(&b, "big", "obj", &body).await;
    assert_eq!(
        b.metric("mirrorgate_pull_block_bytes_total").await,
        ((blocks - verified + 1) * BLOCK) as f64,
        "the blocks not on record, and the lost one"
    );
    // Not a corrupt copy anywhere: the lost block was the receiver's, found before it was used.
    assert_eq!(
        b.metric("mirrorgate_corruption_reports_sent_total").await,
        0.0
    );
    // The catalogue's adler32, combined from the blocks', is the whole object's.
    let r = client()
        .get(b.url("/replicas/big/obj"))
        .send()
        .await
        .unwrap();
    let line: Value =
        serde_json::from_str(r.text().await.unwrap().lines().next().unwrap()).unwrap();
    let mut adler = adler2::Adler32::new();
    adler.write_slice(&body);
    assert_eq!(
        line["adler32"],
        format!("{:08x}", adler.checksum()),
        "{line}"
    );
}

#[tokio::test]
async fn a_pull_resumes_after_its_source_restarts() {
    let (mut a, b, proxy) = pair_through_proxy(1).await;
    create_bucket(&a, "big").await;
    bucket_arrives(&b, "big").await;
    let blocks = 64;
    let body = data(blocks * BLOCK, 9);
    proxy.throttle(1_000_000);
    put_object(&a, "big", "obj", body.clone()).await;
    eventually(Duration::from_secs(60), "8 blocks staged at B", || async {
        (staged_blocks(&b) >= 8).then_some(())
    })
    .await;
    a.restart();
    proxy.throttle(0);
    arrives(&b, "big", "obj", &body).await;
    // Each block was verified once over both attempts; the block in flight at most travelled
    // twice.
    assert_eq!(
        b.metric("mirrorgate_pull_block_bytes_total").await,
        (blocks * BLOCK) as f64
    );
    let resumed = b.metric("mirrorgate_pull_resumed_bytes_total").await;
    assert!(resumed <= BLOCK as f64, "{resumed}");
    // The staging file goes right after the store that made the object visible.
    eventually(Duration::from_secs(10), "staging emptied", || async {
        staging_is_empty(&b).then_some(())
    })
    .await;
}

// ---- replication overlapped with the upload --------------------------------------------------

/// An upload of `size` bytes to `site` whose body is sent as `body_tx` feeds it (size declared).
fn upload_fed(
    site: &Site,
    bucket: &str,
    key: &str,
    size: usize,
) -> (
    tokio::sync::mpsc::Sender<Vec<u8>>,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let piece = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(bytes::Bytes::from(piece)), rx))
    });
    let request = client()
        .post(site.url(&format!("/cloudclonestore/{bucket}/{key}")))
        .header("x-clonecloudstore-size", size.to_string())
        .body(reqwest::Body::wrap_stream(stream));
    (tx, tokio::spawn(request.send()))
}

async fn feed(tx: &tokio::sync::mpsc::Sender<Vec<u8>>, bytes: &[u8]) {
    for piece in bytes.chunks(BLOCK / 2) {
        tx.send(piece.to_vec()).await.unwrap();
    }
}

fn prefetch_staged(site: &Site) -> bool {
    std::fs::read_dir(site.dir.join("staging")).is_ok_and(|d| {
        d.filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("pf-"))
    })
}

/// What [`half_uploaded`] returns: A, B, the proxy B reaches A through, the rest of the
/// upload's body to feed, the upload.
type HalfUploaded = (
    Site,
    Site,
    proxy::Proxy,
    tokio::sync::mpsc::Sender<Vec<u8>>,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
);

/// Sites A and B with overlapped pulls, and the first half of `body` uploaded to A as `big/obj`
/// (its size declared) once B prefetched `blocks` blocks of it; the upload waits for the rest.
async fn half_uploaded(body: &[u8], blocks: usize) -> HalfUploaded {
    let (a, b, proxy) = pair_of(&ranged_config(2, true)).await;
    create_bucket(&a, "big").await;
    bucket_arrives(&b, "big").await;
    let (tx, upload) = upload_fed(&a, "big", "obj", body.len());
    feed(&tx, &body[..body.len() / 2]).await;
    eventually(Duration::from_secs(30), "B prefetching", || async {
        let got = b.metric("mirrorgate_prefetch_block_bytes_total").await;
        (got >= (blocks * BLOCK) as f64).then_some(())
    })
    .await;
    (a, b, proxy, tx, upload)
}

/// B pulls the completed blocks of a large upload at A while A still receives it; the order
/// then pulls only the blocks B does not hold yet.
#[tokio::test]
async fn a_large_upload_is_replicated_while_it_is_written() {
    let (size, body) = (64 * BLOCK, data(64 * BLOCK, 11));
    // Half the upload is at A, not committed: B follows it already.
    let (_a, b, _proxy, tx, upload) = half_uploaded(&body, 16).await;
    assert!(
        prefetch_staged(&b),
        "staged under the upload, not a version"
    );
    let r = client()
        .head(b.url("/cloudclonestore/big/obj"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no copy before the source commits");
    feed(&tx, &body[size / 2..]).await;
    drop(tx);
    assert_eq!(upload.await.unwrap().unwrap().status(), 201);
    arrives(&b, "big", "obj", &body).await;
    let prefetched = b.metric("mirrorgate_prefetch_block_bytes_total").await;
    assert_eq!(
        b.metric("mirrorgate_prefetch_ended_total{how=\"handed_over\"}")
            .await,
        1.0
    );
    // The order's pull fetched only what the prefetch had not: every block travelled once.
    assert_eq!(
        b.metric("mirrorgate_pull_block_bytes_total").await,
        size as f64 - prefetched,
        "prefetched {prefetched}"
    );
    assert_eq!(
        b.metric("mirrorgate_pull_adopted_bytes_total").await,
        size as f64
    );
    eventually(Duration::from_secs(10), "staging emptied", || async {
        staging_is_empty(&b).then_some(())
    })
    .await;
}

/// A source killed mid-upload never commits it: the receiver that followed the upload drops
/// what it staged once the restarted source no longer knows the upload, and holds no copy.
#[tokio::test]
async fn a_source_killed_mid_upload_leaves_no_copy_at_the_receiver() {
    let body = data(64 * BLOCK, 12);
    let (mut a, b, _proxy, tx, upload) = half_uploaded(&body, 8).await;
    a.restart();
    drop(tx);
    assert!(upload.await.unwrap().is_err(), "the upload died with A");
    eventually(Duration::from_secs(30), "the prefetch dropped", || async {
        let dropped = b
            .metric("mirrorgate_prefetch_ended_total{how=\"abandoned\"}")
            .await;
        (dropped == 1.0 && staging_is_empty(&b)).then_some(())
    })
    .await;
    for site in [&a, &b] {
        let r = client()
            .head(site.url("/cloudclonestore/big/obj"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{}: no object", site.id);
    }
}
