//! Bounded under hostile or broken clients: a zstd frame asking for a larger window than the
//! site accepts is refused (400), an upload larger than `[limits] max_object_bytes` is refused
//! (413), declared or discovered, plain or after decompression, and nothing of either is kept;
//! lookups of unknown names are rate-limited per client (429 + Retry-After) without starving
//! other clients, and the topology cache stays within `[topology] cache_max_entries`.

mod common;
use common::*;

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;

const BUCKET: &str = "bounds";
const MIB: usize = 1024 * 1024;

fn object_url(site: &Site, key: &str) -> String {
    site.url(&format!("/cloudclonestore/{BUCKET}/{key}"))
}

/// Asserts that nothing of `key` was kept: GET answers 404, no file, no temporary.
async fn assert_nothing_stored(site: &Site, key: &str) {
    let r = client().get(object_url(site, key)).send().await.unwrap();
    assert_eq!(r.status(), 404, "GET {key} after a refused upload");
    assert!(
        !object_file(site, BUCKET, key).exists(),
        "no bytes of {key} kept"
    );
    let tmp = site.dir.join("tmp");
    // The writer removes its temporary when dropped; give the drop a moment.
    eventually(Duration::from_secs(5), "no temporary left", || async {
        let left = std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
        (left == 0).then_some(())
    })
    .await;
}

/// zstd of `data` in a frame that declares a `2^window_log` window (streaming, size unknown).
fn zstd_with_window(data: &[u8], window_log: u32) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
    enc.window_log(window_log).unwrap();
    enc.long_distance_matching(true).unwrap();
    for part in data.chunks(64 * 1024) {
        enc.write_all(part).unwrap();
    }
    enc.finish().unwrap()
}

/// Whether a decoder limited to `2^window_log_max` refuses the frame (the test's own check
/// that the body really needs the larger window).
fn needs_larger_window(compressed: &[u8], window_log_max: u32) -> bool {
    let mut dec = zstd::stream::read::Decoder::new(compressed).unwrap();
    dec.window_log_max(window_log_max).unwrap();
    std::io::copy(&mut dec, &mut std::io::sink()).is_err()
}

#[tokio::test]
async fn zstd_frame_with_a_window_beyond_the_limit_is_refused() {
    let site = Site::start("site-a", "");
    create_bucket(&site, BUCKET).await;
    // Two copies of 1 MiB of noise 1.5 MiB apart: only a large window finds the repeat.
    let noise = data(MIB, 7);
    let mut body = noise.clone();
    body.extend(data(MIB / 2, 8));
    body.extend(&noise);
    let compressed = zstd_with_window(&body, 27);
    assert!(
        needs_larger_window(&compressed, 23),
        "the frame needs > 8 MiB"
    );
    assert_eq!(zstd::decode_all(&compressed[..]).unwrap(), body);

    let r = client()
        .post(object_url(&site, "wide.bin"))
        .header("content-encoding", "zstd")
        .header("x-clonecloudstore-hash", ccs_hash(&body))
        .body(compressed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "{:?}", r.text().await);
    assert_nothing_stored(&site, "wide.bin").await;

    // The same bytes in a frame with a window within the limit are accepted.
    let fine = zstd_with_window(&body, 22);
    assert!(!needs_larger_window(&fine, 23));
    let r = client()
        .post(object_url(&site, "narrow.bin"))
        .header("content-encoding", "zstd")
        .body(fine)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let back = client()
        .get(object_url(&site, "narrow.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 200);
    assert_eq!(&back.bytes().await.unwrap()[..], &body[..]);
}

/// A site that stores objects of at most 1 MiB.
const SMALL: &str = "[limits]\nmax_object_bytes = 1048576\n";

/// A chunked body (no Content-Length) of `total` bytes.
fn chunked(body: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

/// Status of an upload; a connection closed by the site after its answer counts as that
/// answer only when the answer arrived, so the status must be read.
async fn upload_status(req: reqwest::RequestBuilder) -> u16 {
    let r = req.send().await.expect("the site answers before closing");
    r.status().as_u16()
}

#[tokio::test]
async fn uploads_beyond_max_object_bytes_are_refused_and_leave_nothing() {
    let site = Site::start("site-a", SMALL);
    create_bucket(&site, BUCKET).await;

    // At the limit: accepted.
    put_object(&site, BUCKET, "exact.bin", data(MIB, 1)).await;

    // Declared by Content-Length.
    let over = data(3 * MIB, 2);
    let status = upload_status(
        client()
            .post(object_url(&site, "declared.bin"))
            .body(over.clone()),
    )
    .await;
    assert_eq!(status, 413);
    assert_nothing_stored(&site, "declared.bin").await;

    // Declared by x-clonecloudstore-size, whatever the body.
    let status = upload_status(
        client()
            .post(object_url(&site, "sized.bin"))
            .header("x-clonecloudstore-size", (2 * MIB).to_string())
            .body(data(1000, 3)),
    )
    .await;
    assert_eq!(status, 413);
    assert_nothing_stored(&site, "sized.bin").await;

    // Not declared (chunked): cut off once past the limit.
    let status = upload_status(
        client()
            .post(object_url(&site, "streamed.bin"))
            .body(chunked(over.clone())),
    )
    .await;
    assert_eq!(status, 413);
    assert_nothing_stored(&site, "streamed.bin").await;

    // A small zstd body that decompresses beyond the limit.
    let zeros = vec![0u8; 8 * MIB];
    let bomb = zstd::encode_all(&zeros[..], 3).unwrap();
    assert!(bomb.len() < 64 * 1024);
    let status = upload_status(
        client()
            .post(object_url(&site, "bomb.bin"))
            .header("content-encoding", "zstd")
            .body(bomb.clone()),
    )
    .await;
    assert_eq!(status, 413);
    assert_nothing_stored(&site, "bomb.bin").await;
    let status = upload_status(
        client()
            .post(object_url(&site, "bomb2.bin"))
            .header("content-encoding", "zstd")
            .body(chunked(bomb)),
    )
    .await;
    assert_eq!(status, 413);
    assert_nothing_stored(&site, "bomb2.bin").await;

    // The site still serves what it accepted.
    let r = client()
        .get(object_url(&site, "exact.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), MIB);
}

/// Two meshed sites; B knows nothing, so every lookup at A of an unknown name asks B.
const LOOKUPS: &str = "[replication]\nenabled = false\n[topology]\npeer_timeout_ms = 3000\n\
                       negative_ttl_ms = 60000\ncache_max_entries = 20\n\
                       miss_rate_per_second = 1\nmiss_burst = 5\n";

async fn head_local(site: &Site, client_id: &str, path: &str) -> reqwest::Response {
    client_as(client_id)
        .head(site.url(&format!("/replicator/local/buckets/{path}")))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn unknown_name_lookups_are_limited_per_client_and_the_cache_is_bounded() {
    let a = Site::start("site-a", LOOKUPS);
    let b = Site::start("site-b", LOOKUPS);
    mesh(&[&a, &b]).await;

    // One client asks for many unknown names: beyond its burst, A refuses without asking B.
    let b_before = b.metric("mirrorgate_requests_total").await;
    let mut limited = 0;
    let mut answered = 0;
    for i in 0..40 {
        let r = head_local(&a, "flooder", &format!("nothing/n{i}")).await;
        match r.status().as_u16() {
            404 => answered += 1,
            429 => {
                limited += 1;
                let retry: u64 = r
                    .headers()
                    .get("retry-after")
                    .expect("Retry-After on 429")
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=3600).contains(&retry), "Retry-After {retry}");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(answered >= 5, "the burst is answered ({answered})");
    assert!(limited >= 10, "most of the flood is refused ({limited})");
    let b_asked = b.metric("mirrorgate_requests_total").await - b_before;
    assert!(
        b_asked <= (answered + 2) as f64,
        "B was asked {b_asked} times for {answered} answered lookups"
    );
    assert!(a.metric("mirrorgate_topology_lookups_limited_total").await >= limited as f64);

    // Another client is still answered meanwhile.
    for i in 0..5 {
        let r = head_local(&a, "someone-else", &format!("nothing/other{i}")).await;
        assert_eq!(r.status(), 404, "another client's lookup is answered");
    }
    // A cached answer costs the flooder nothing: the names it got answers for still answer.
    let r = head_local(&a, "flooder", "nothing/n0").await;
    assert_eq!(r.status(), 404, "cache hits are not limited");

    // Many distinct names (each client within its budget): the cache never exceeds its bound.
    for i in 0..120 {
        let r = head_local(&a, &format!("client-{}", i / 4), &format!("many/m{i}")).await;
        assert_eq!(r.status(), 404);
    }
    let entries = a.metric("mirrorgate_topology_cache_entries").await;
    assert!(entries <= 20.0, "cache entries {entries} > 20");
    assert!(entries >= 10.0, "the cache is used ({entries})");
}
