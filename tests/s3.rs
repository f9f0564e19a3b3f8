//! S3 storage backend, end to end: real mirrorgate processes whose storage is a real S3 server
//! (s3s + s3s-fs, SigV4 with access keys) started in the test on 127.0.0.1 port 0.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation};
use bytes::{Bytes, BytesMut};
use common::*;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "common/s3server.rs"]
mod s3server;
use s3server::{ACCESS_KEY, SECRET_KEY};

const PREFIX: &str = "mg-";
const MIB: usize = 1024 * 1024;

// ---- an S3 server in the test process ------------------------------------------------------

/// The shared test S3 server (`tests/common/s3server.rs`) with its own temporary root.
struct S3Server {
    inner: s3server::S3Server,
    root: tempfile::TempDir,
}

impl S3Server {
    async fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        let inner = s3server::S3Server::start(root.path()).await;
        S3Server { inner, root }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Stops serving at once: the listener and every open connection are dropped.
    fn stop(&self) {
        self.inner.stop();
    }

    /// An S3 client as any tool would use it (not mirrorgate's).
    fn client(&self) -> aws_sdk_s3::Client {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version_latest()
            .http_client(http)
            .endpoint_url(self.endpoint())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Keys of a backend bucket, as S3 lists them.
    async fn keys(&self, bucket: &str) -> Vec<String> {
        let out = self
            .client()
            .list_objects_v2()
            .bucket(format!("{PREFIX}{bucket}"))
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    async fn user_metadata(
        &self,
        bucket: &str,
        key: &str,
    ) -> std::collections::HashMap<String, String> {
        let out = self
            .client()
            .head_object()
            .bucket(format!("{PREFIX}{bucket}"))
            .key(key)
            .send()
            .await
            .unwrap();
        out.metadata().cloned().unwrap_or_default()
    }

    /// s3s-fs implements no ListMultipartUploads: its multipart state is `.upload-<id>.json`
    /// and `.upload_id-<id>.part-<n>` files at the root, which is what this lists.
    fn pending_uploads(&self) -> Vec<String> {
        names_in(self.root.path())
            .into_iter()
            .filter(|n| n.starts_with(".upload"))
            .collect()
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

// ---- mirrorgate sites on S3 ----------------------------------------------------------------

struct S3Site {
    site: Site,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for S3Site {
    type Target = Site;
    fn deref(&self) -> &Site {
        &self.site
    }
}

/// A site config on S3; without `secret` the keys are left to the AWS credential chain.
fn s3_config(id: &str, dir: &Path, endpoint: &str, secret: Option<&str>) -> String {
    let keys = secret
        .map(|s| format!("access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{s}\"\n"))
        .unwrap_or_default();
    format!(
        "[site]\nid = \"{id}\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\
         [storage]\nbackend = \"s3\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n{keys}\
         force_path_style = true\nbucket_prefix = \"{PREFIX}\"\n\
         [replication]\nenabled = false\n",
        dir.display()
    )
}

fn start_s3_site(id: &str, s3: &S3Server) -> S3Site {
    start_s3_site_with_secret(id, s3, SECRET_KEY)
}

fn start_s3_site_with_secret(id: &str, s3: &S3Server, secret: &str) -> S3Site {
    let dir = tempfile::tempdir().unwrap();
    let config = s3_config(id, dir.path(), &s3.endpoint(), Some(secret));
    // The S3 server runs on this runtime: let it serve while the site starts.
    let site = tokio::task::block_in_place(|| Site::spawn_with(id, dir.path(), &config));
    S3Site { site, _dir: dir }
}

fn object_url(site: &Site, bucket: &str, key: &str) -> String {
    site.url(&format!("/cloudclonestore/{bucket}/{key}"))
}

async fn get_bytes(
    site: &Site,
    bucket: &str,
    key: &str,
) -> (reqwest::StatusCode, Option<String>, Vec<u8>) {
    let r = client()
        .get(object_url(site, bucket, key))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let hash = r
        .headers()
        .get("x-clonecloudstore-hash")
        .map(|h| h.to_str().unwrap().to_owned());
    (status, hash, r.bytes().await.unwrap_or_default().to_vec())
}

async fn put_with_size(site: &Site, bucket: &str, key: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(object_url(site, bucket, key))
        .header("x-clonecloudstore-size", body.len())
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A body of unknown size (chunked), in 64 KiB chunks.
fn chunked(data: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<std::io::Result<Bytes>> = data
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

/// `len` MiB of generated data (1 MiB blocks, each stamped with its index) and its CCS hash.
fn generated(len_mib: usize) -> (impl futures::Stream<Item = std::io::Result<Bytes>>, String) {
    let block = Bytes::from(data(MIB, 7));
    let stamp = move |i: usize| {
        let mut b = BytesMut::from(&block[..]);
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        b.freeze()
    };
    let mut hasher = Sha256::new();
    for i in 0..len_mib {
        hasher.update(stamp(i));
    }
    let hash = mirrorgate::model::hash::encode(&hasher.finalize());
    let stream = futures::stream::iter(0..len_mib).map(move |i| Ok(stamp(i)));
    (stream, hash)
}

// ---- tests --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backed_site_serves_every_operation() {
    let s3 = S3Server::start().await;
    let site = start_s3_site("s3-site", &s3);
    create_bucket(&site, "photos").await;
    assert!(
        s3.keys("photos").await.is_empty(),
        "backend bucket created empty"
    );

    // Small, unknown size: buffered, one PutObject with the hash.
    let small = data(100 * 1024, 1);
    put_object(&site, "photos", "docs/small.txt", small.clone()).await;
    // Small, known size: streamed to a staging key, then copied into place.
    let known = data(3 * MIB + 17, 2);
    assert_eq!(
        put_with_size(&site, "photos", "docs/known.bin", known.clone())
            .await
            .status(),
        201
    );
    // Larger than a part, unknown size: multipart, then the hash is recorded by a self-copy.
    let multi = data(20 * MIB + 5, 3);
    let r = client()
        .post(object_url(&site, "photos", "video.bin"))
        .body(chunked(multi.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    // Empty object.
    assert_eq!(
        put_with_size(&site, "photos", "docs/empty", Vec::new())
            .await
            .status(),
        201
    );

    for (key, bytes) in [
        ("docs/small.txt", &small),
        ("docs/known.bin", &known),
        ("video.bin", &multi),
        ("docs/empty", &Vec::new()),
    ] {
        let (status, hash, body) = get_bytes(&site, "photos", key).await;
        assert_eq!(status, 200, "GET {key}");
        assert_eq!(
            hash.as_deref(),
            Some(ccs_hash(bytes).as_str()),
            "hash of {key}"
        );
        assert!(body == *bytes, "bytes of {key}");
        let meta = s3.user_metadata("photos", key).await;
        assert_eq!(
            meta.get("mirrorgate-sha256"),
            Some(&ccs_hash(bytes)),
            "S3 metadata of {key}"
        );
    }
    let mut keys = s3.keys("photos").await;
    keys.sort();
    assert_eq!(
        keys,
        [
            "docs/empty",
            "docs/known.bin",
            "docs/small.txt",
            "video.bin"
        ],
        "no staging leftovers"
    );

    // HEAD (CCS answers 204 with the object headers).
    let r = client()
        .head(object_url(&site, "photos", "video.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["x-clonecloudstore-hash"],
        ccs_hash(&multi).as_str()
    );
    assert_eq!(
        r.headers()["x-clonecloudstore-size"],
        multi.len().to_string().as_str()
    );

    // Listing with a prefix.
    let r = client()
        .put(site.url("/cloudclonestore/photos"))
        .header("x-clonecloudstore-nameprefix", "docs/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let listed: Vec<String> = r
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(listed, ["docs/empty", "docs/known.bin", "docs/small.txt"]);

    // A hash mismatch keeps nothing, on either write path.
    for (key, size) in [("bad-small", 1000), ("bad-large", 9 * MIB)] {
        let r = client()
            .post(object_url(&site, "photos", key))
            .header("x-clonecloudstore-size", size)
            .header("x-clonecloudstore-hash", ccs_hash(b"something else"))
            .body(data(size, 4))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{key}");
    }
    eventually(
        Duration::from_secs(10),
        "mismatched uploads cleaned up",
        || async {
            (s3.keys("photos").await.len() == 4 && s3.pending_uploads().is_empty()).then_some(())
        },
    )
    .await;

    // DELETE.
    let r = client()
        .delete(object_url(&site, "photos", "video.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(!s3.keys("photos").await.contains(&"video.bin".to_owned()));
    let (status, _, _) = get_bytes(&site, "photos", "video.bin").await;
    assert!(status == 404 || status == 410, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_streams_with_bounded_memory() {
    const SIZE_MIB: usize = 1024;
    // Parts of 8 MiB, 3 uploading + 1 filling = 32 MiB of part buffers; the rest of the
    // allowance covers HTTP buffers and allocator slack.
    const MAX_GROWTH_KIB: u64 = 150 * 1024;
    let s3 = S3Server::start().await;
    let site = start_s3_site("s3-big", &s3);
    create_bucket(&site, "big").await;
    let baseline = site.rss_kib();

    let (stream, hash) = generated(SIZE_MIB);
    let pid = site.pid();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            let rss = rss_kib(pid);
            peak = peak.max(rss);
            tokio::time::sleep(Duration::from_millis(50)).await;
            if rss == 0 {
                return peak;
            }
        }
    });
    let started = Instant::now();
    let r = client()
        .post(object_url(&site, "big", "one-gib"))
        .header("x-clonecloudstore-size", SIZE_MIB * MIB)
        .header("x-clonecloudstore-hash", &hash)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let upload_time = started.elapsed();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let after = site.rss_kib();
    sampler.abort();
    let peak = site.peak_rss_kib().max(after);
    eprintln!(
        "1 GiB upload in {upload_time:?}: RSS baseline {baseline} KiB, peak {peak} KiB, growth {} KiB",
        peak.saturating_sub(baseline)
    );
    assert!(
        peak.saturating_sub(baseline) < MAX_GROWTH_KIB,
        "resident memory grew by {} KiB",
        peak - baseline
    );

    // The bytes are whole: HEAD agrees, and a full read verifies size and hash on the way.
    let r = client()
        .head(object_url(&site, "big", "one-gib"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-clonecloudstore-hash"], hash.as_str());
    assert_eq!(
        s3.user_metadata("big", "one-gib")
            .await
            .get("mirrorgate-sha256"),
        Some(&hash)
    );
    let r = client()
        .get(object_url(&site, "big", "one-gib"))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let mut hasher = Sha256::new();
    while let Some(chunk) = body.next().await {
        hasher.update(chunk.unwrap());
    }
    assert_eq!(mirrorgate::model::hash::encode(&hasher.finalize()), hash);
}

/// Sends a request head and `sent` bytes of a `declared`-byte body, then closes the socket.
async fn upload_and_vanish(
    site: &Site,
    key: &str,
    declared: usize,
    sent: usize,
    wait: impl std::future::Future<Output = ()>,
) {
    let mut tcp = tokio::net::TcpStream::connect(&site.addr).await.unwrap();
    let head = format!(
        "POST /cloudclonestore/uploads/{key} HTTP/1.1\r\nhost: {}\r\nx-clonecloudstore-client-id: {CLIENT}\r\n\
         x-clonecloudstore-size: {declared}\r\ncontent-length: {declared}\r\n\r\n",
        site.addr
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&data(sent, 9)).await.unwrap();
    wait.await;
    drop(tcp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_mid_body_leaves_nothing_in_s3() {
    let s3 = S3Server::start().await;
    let site = start_s3_site("s3-abort", &s3);
    create_bucket(&site, "uploads").await;

    // Multipart: wait until S3 holds parts of the upload, then vanish.
    let s3_ref = &s3;
    upload_and_vanish(&site, "large", 64 * MIB, 40 * MIB, async {
        eventually(
            Duration::from_secs(20),
            "multipart upload started",
            || async {
                s3_ref
                    .pending_uploads()
                    .iter()
                    .any(|n| n.contains(".part-"))
                    .then_some(())
            },
        )
        .await;
    })
    .await;
    // Staged single PutObject: vanish with a quarter of it sent.
    upload_and_vanish(
        &site,
        "small",
        4 * MIB,
        MIB,
        tokio::time::sleep(Duration::from_millis(300)),
    )
    .await;

    eventually(
        Duration::from_secs(20),
        "aborted uploads cleaned up",
        || async {
            (s3.pending_uploads().is_empty() && s3.keys("uploads").await.is_empty()).then_some(())
        },
    )
    .await;
    for key in ["large", "small"] {
        let (status, _, _) = get_bytes(&site, "uploads", key).await;
        assert_eq!(status, 404, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_and_s3_sites_serve_their_own_objects_and_read_through_each_other() {
    let s3 = S3Server::start().await;
    let on_s3 = start_s3_site("site-s3", &s3);
    let on_fs =
        tokio::task::block_in_place(|| Site::start("site-fs", "[replication]\nenabled = false\n"));
    mesh(&[&on_fs, &on_s3]).await;
    create_bucket(&on_fs, "fs-bucket").await;
    create_bucket(&on_s3, "s3-bucket").await;
    let fs_bytes = data(2 * MIB + 3, 11);
    let s3_bytes = data(10 * MIB + 7, 12);
    put_object(&on_fs, "fs-bucket", "a/one", fs_bytes.clone()).await;
    put_object(&on_s3, "s3-bucket", "b/two", s3_bytes.clone()).await;

    for (site, bucket, key, bytes) in [
        (&on_fs as &Site, "fs-bucket", "a/one", &fs_bytes),
        (&on_s3, "s3-bucket", "b/two", &s3_bytes),
    ] {
        let (status, hash, body) = get_bytes(site, bucket, key).await;
        assert_eq!(status, 200, "{} serves {bucket}/{key}", site.id);
        assert_eq!(hash.as_deref(), Some(ccs_hash(bytes).as_str()));
        assert!(body == *bytes);
    }

    // Read-through: each site streams the other's object (fs <- s3 and s3 <- fs).
    for (reader, holder, bucket, key, bytes) in [
        (
            &on_fs as &Site,
            &on_s3 as &Site,
            "s3-bucket",
            "b/two",
            &s3_bytes,
        ),
        (&on_s3, &on_fs, "fs-bucket", "a/one", &fs_bytes),
    ] {
        let r = client()
            .get(reader.url(&format!("/replicator/local/buckets/{bucket}/{key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "{} reads {bucket}/{key} through {}",
            reader.id,
            holder.id
        );
        assert_eq!(
            r.headers()["x-clonecloudstore-target-id"],
            holder.id.as_str()
        );
        assert!(r.bytes().await.unwrap() == bytes.as_slice());
    }
}

async fn put_directly(s3: &S3Server, bucket: &str, key: &str, body: &[u8], sha_key: Option<&str>) {
    let mut put = s3
        .client()
        .put_object()
        .bucket(format!("{PREFIX}{bucket}"))
        .key(key)
        .body(Bytes::copy_from_slice(body).into());
    if let Some(meta_key) = sha_key {
        put = put.metadata(meta_key, ccs_hash(body));
    }
    put.send().await.unwrap();
}

fn run_import(config: &Path, bucket: &str, env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mirrorgate"))
        .args(["import", "--config"])
        .arg(config)
        .args(["--bucket", bucket, "--client-id", CLIENT])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "import failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_registers_an_existing_bucket_and_is_harmless_to_rerun() {
    let s3 = S3Server::start().await;
    let admin = s3.client();
    admin
        .create_bucket()
        .bucket(format!("{PREFIX}legacy"))
        .send()
        .await
        .unwrap();
    let objects: Vec<(String, Vec<u8>, Option<&str>)> = vec![
        (
            "with-our-hash.txt".into(),
            data(5000, 21),
            Some("mirrorgate-sha256"),
        ),
        (
            "nested/ccs-hash.bin".into(),
            data(70_000, 22),
            Some("sha256"),
        ),
        (
            "nested/deeper/no-hash.bin".into(),
            data(3 * MIB + 1, 23),
            None,
        ),
        ("empty".into(), Vec::new(), None),
    ];
    for (key, body, sha_key) in &objects {
        put_directly(&s3, "legacy", key, body, *sha_key).await;
    }
    // Enough plain objects for the backend listing to take several pages.
    let many = 1005;
    let mut puts = futures::stream::iter(0..many)
        .map(|i| {
            let s3 = &s3;
            async move {
                put_directly(
                    s3,
                    "legacy",
                    &format!("many/{i:05}"),
                    format!("object {i}").as_bytes(),
                    None,
                )
                .await
            }
        })
        .buffer_unordered(16);
    while puts.next().await.is_some() {}
    put_directly(&s3, "legacy", "not a ccs name", b"x", None).await;

    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("mirrorgate.toml");
    std::fs::write(
        &config_path,
        s3_config("site-import", dir.path(), &s3.endpoint(), Some(SECRET_KEY)),
    )
    .unwrap();
    let first = tokio::task::block_in_place(|| run_import(&config_path, "legacy", &[]));
    eprintln!("first import: {first}");
    assert!(
        first.contains(&format!("registered {} objects", many + 4)),
        "{first}"
    );
    assert!(
        first.contains(&format!("{} hashed by reading them", many + 2)),
        "{first}"
    );
    assert!(first.contains("1 invalid names"), "{first}");

    let site = tokio::task::block_in_place(|| {
        Site::spawn_with(
            "site-import",
            dir.path(),
            &std::fs::read_to_string(&config_path).unwrap(),
        )
    });
    for (key, body, _) in &objects {
        let (status, hash, got) = get_bytes(&site, "legacy", key).await;
        assert_eq!(status, 200, "{key}");
        assert_eq!(hash.as_deref(), Some(ccs_hash(body).as_str()), "{key}");
        assert!(got == *body, "{key}");
    }
    let (status, _, got) = get_bytes(&site, "legacy", "many/01004").await;
    assert_eq!(
        (status.as_u16(), got.as_slice()),
        (200, b"object 1004".as_slice())
    );

    // Again, with one new object: only that one is registered. This time the credentials come
    // from the standard AWS environment instead of the config.
    put_directly(&s3, "legacy", "late.txt", b"late", None).await;
    let env_config = dir.path().join("from-env.toml");
    std::fs::write(
        &env_config,
        s3_config("site-import", dir.path(), &s3.endpoint(), None),
    )
    .unwrap();
    let env = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ];
    let second = tokio::task::block_in_place(|| run_import(&env_config, "legacy", &env));
    assert!(second.contains("registered 1 objects"), "{second}");
    assert!(
        second.contains(&format!("{} already registered", many + 4)),
        "{second}"
    );
    let (status, _, got) = get_bytes(&site, "legacy", "late.txt").await;
    assert_eq!((status.as_u16(), got.as_slice()), (200, b"late".as_slice()));
}

/// `mirrorgate import` into a running site: the objects are in its replica catalogue at once
/// (no restart), and one whose bytes do not match the hash it was imported with is declared BAD
/// when it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_into_a_running_site_is_catalogued_at_once() {
    let s3 = S3Server::start().await;
    s3.client()
        .create_bucket()
        .bucket(format!("{PREFIX}live"))
        .send()
        .await
        .unwrap();
    let site = start_s3_site("site-live", &s3);
    let good = data(40_000, 41);
    put_directly(&s3, "live", "good.bin", &good, None).await;
    // Imported with the hash its metadata claims, which is not the hash of its bytes.
    let liar = data(40_000, 42);
    s3.client()
        .put_object()
        .bucket(format!("{PREFIX}live"))
        .key("liar.bin")
        .metadata("mirrorgate-sha256", ccs_hash(b"other bytes"))
        .body(Bytes::copy_from_slice(&liar).into())
        .send()
        .await
        .unwrap();
    let out = tokio::task::block_in_place(|| run_import(&site.config_path, "live", &[]));
    assert!(out.contains("registered 2 objects"), "{out}");

    for key in ["good.bin", "liar.bin"] {
        let r = client()
            .get(site.url(&format!("/replicas/live/{key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{key} is in the catalogue");
        let line: serde_json::Value =
            serde_json::from_str(r.text().await.unwrap().lines().next().unwrap()).unwrap();
        assert!(line["rses"]["site-live"].is_array(), "{line}");
    }
    let (status, _, got) = get_bytes(&site, "live", "good.bin").await;
    assert_eq!((status.as_u16(), got == good), (200, true));

    // Reading the liar finds the mismatch, and the copy is declared BAD (then LOST: no other).
    let (_, _, got) = get_bytes(&site, "live", "liar.bin").await;
    assert!(got != liar, "never served as verified");
    eventually(Duration::from_secs(20), "liar.bin declared", || async {
        let text = client()
            .get(site.url("/replicas/bad/states?rse=site-live"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| {
                r["name"] == "liar.bin"
                    && r["reason"]
                        .as_str()
                        .is_some_and(|w| w.starts_with("read: "))
            })
    })
    .await;
}

/// Sends a large body over raw TCP and returns the response status line (if any came back).
async fn upload_while(
    site: &Site,
    key: &str,
    size: usize,
    on_first_parts: impl std::future::Future<Output = ()>,
) -> String {
    let tcp = tokio::net::TcpStream::connect(&site.addr).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let head = format!(
        "POST /cloudclonestore/outage/{key} HTTP/1.1\r\nhost: {}\r\nx-clonecloudstore-client-id: {CLIENT}\r\n\
         x-clonecloudstore-size: {size}\r\ncontent-length: {size}\r\n\r\n",
        site.addr
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        let block = data(MIB, 5);
        for _ in 0..size / MIB {
            if wr.write_all(&block).await.is_err() {
                return;
            }
        }
    });
    on_first_parts.await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = [0u8; 4096];
        while !response.windows(2).any(|w| w == b"\r\n") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    writer.abort();
    assert!(read.is_ok(), "no answer within 60 s");
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_mid_upload_fails_cleanly() {
    let s3 = S3Server::start().await;
    let site = start_s3_site("s3-outage", &s3);
    create_bucket(&site, "outage").await;
    let s3_ref = &s3;
    let status = upload_while(&site, "doomed", 256 * MIB, async {
        eventually(Duration::from_secs(20), "parts reach S3", || async {
            s3_ref
                .pending_uploads()
                .iter()
                .any(|n| n.contains(".part-"))
                .then_some(())
        })
        .await;
        s3_ref.stop();
    })
    .await;
    assert!(
        status.starts_with("HTTP/1.1 5"),
        "expected a 5xx, got {status:?}"
    );
    let (status, _, _) = get_bytes(&site, "outage", "doomed").await;
    assert_eq!(status, 404, "no READY object after the outage");
    let log = site.log_text();
    assert!(
        log.contains("S3"),
        "the log names the storage failure:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_give_a_clear_storage_error() {
    let s3 = S3Server::start().await;
    let site = start_s3_site_with_secret("s3-badkey", &s3, "not-the-secret");
    let r = client()
        .post(site.url("/cloudclonestore/nope"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    let error = r
        .headers()
        .get("x-clonecloudstore-error")
        .map(|h| h.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        ["SignatureDoesNotMatch", "AccessDenied"]
            .iter()
            .any(|code| error.contains(code)),
        "{error}"
    );
    assert!(error.contains("credentials"), "{error}");
}

/// Byte ranges on the S3 backend are ranged `GetObject`s: 206 with the right bytes, 416
/// beyond the end; a small object's whole read is verified as on fs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_are_served_from_s3() {
    let s3 = S3Server::start().await;
    let site = start_s3_site("s3-site", &s3);
    create_bucket(&site, "ranges").await;
    let body = data(MIB + 333, 9);
    put_object(&site, "ranges", "obj", body.clone()).await;
    let url = object_url(&site, "ranges", "obj");
    let size = body.len();
    for (range, start, len) in [
        ("bytes=0-9".to_string(), 0, 10),
        (format!("bytes={}-", size - 1000), size - 1000, 1000),
        ("bytes=-4096".to_string(), size - 4096, 4096),
        (
            format!("bytes=500000-{}", size * 2),
            500_000,
            size - 500_000,
        ),
    ] {
        let r = client()
            .get(&url)
            .header("range", &range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            r.headers()["content-range"].to_str().unwrap(),
            format!("bytes {start}-{}/{size}", start + len - 1)
        );
        assert_eq!(
            &r.bytes().await.unwrap()[..],
            &body[start..start + len],
            "{range}"
        );
    }
    let r = client()
        .get(&url)
        .header("range", format!("bytes={size}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes */{size}")
    );
    let small = data(1000, 10);
    put_object(&site, "ranges", "small", small.clone()).await;
    let (status, _, got) = get_bytes(&site, "ranges", "small").await;
    assert_eq!((status.as_u16(), got), (200, small));
}
