//! Test harness: real `mirrorgate` processes on 127.0.0.1 port 0, each with its own data dir.
//! A site is started from a config text; its address is read from the `listening on` log line.
#![allow(dead_code)]

pub mod proxy;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod browser;

pub const CLIENT: &str = "client-1";

/// One running site.
pub struct Site {
    pub id: String,
    pub url: String,
    pub addr: String,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    child: Option<Child>,
    /// Everything the process wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
    _tmp: Option<tempfile::TempDir>,
}

/// Config of a site on port 0 under `dir`; `extra` is appended (peers, replication, tls...).
pub fn site_config(id: &str, dir: &Path, extra: &str) -> String {
    format!(
        "[site]\nid = \"{id}\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[storage]\nbackend = \"fs\"\n{extra}\n",
        dir.display()
    )
}

impl Site {
    /// Starts a site with the default fs config plus `extra`.
    pub fn start(id: &str, extra: &str) -> Site {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let config = site_config(id, &dir, extra);
        let mut site = Site::spawn_with(id, &dir, &config);
        site._tmp = Some(tmp);
        site
    }

    /// Starts (or restarts) a site from a full config text, data under `dir`.
    pub fn spawn_with(id: &str, dir: &Path, config: &str) -> Site {
        std::fs::create_dir_all(dir).unwrap();
        let config_path = dir.join("mirrorgate.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mirrorgate"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mirrorgate");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(pos) = line.find("listening on ") {
                    let addr = line[pos + 13..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("site {id} did not start:\n{}", log.lock().unwrap());
            }
        };
        let scheme = if config.contains("cert_file") {
            "https"
        } else {
            "http"
        };
        Site {
            id: id.to_string(),
            url: format!("{scheme}://{addr}"),
            addr,
            dir: dir.to_path_buf(),
            config_path,
            child: Some(child),
            log,
            _tmp: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Resident memory of the process in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// Peak resident memory of the process in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe_kill(c.id(), 15);
        c.wait().unwrap()
    }

    /// Starts the same site again after a kill -9: same data dir, config and port, so its peers
    /// reach it at the same URL.
    pub fn restart(&mut self) {
        self.kill9();
        let config = std::fs::read_to_string(&self.config_path).unwrap().replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", self.addr),
        );
        let tmp = self._tmp.take();
        let earlier = self.log_text();
        let mut fresh = Site::spawn_with(&self.id, &self.dir, &config);
        fresh._tmp = tmp;
        // Keep what the earlier lifetimes wrote: a failure is often explained before the restart.
        {
            let mut log = fresh.log.lock().unwrap();
            *log = format!("{earlier}----- restarted -----\n{log}");
        }
        *self = fresh;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Value of a Prometheus series (sum over lines starting with `prefix`).
    pub async fn metric(&self, prefix: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .map(|l| l.to_string())
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// A reqwest client that sends the test client id on every request.
pub fn client() -> reqwest::Client {
    client_as(CLIENT)
}

pub fn client_as(id: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-clonecloudstore-client-id", id.parse().unwrap());
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap()
}

/// Polls `f` until it returns Some or the deadline passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// CCS hash (SHA-256, base32hex lowercase, no padding).
pub fn ccs_hash(data: &[u8]) -> String {
    mirrorgate::model::hash::of(data)
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Path of an object's file under a site's data dir (fs storage layout).
pub fn object_file(site: &Site, bucket: &str, key: &str) -> PathBuf {
    mirrorgate::storage::fs::FsStorage::object_path(&site.dir.join("objects"), bucket, key)
}

/// Creates a bucket as `CLIENT`, asserting 201.
pub async fn create_bucket(site: &Site, bucket: &str) {
    let r = client()
        .post(site.url(&format!("/cloudclonestore/{bucket}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "create bucket {bucket}: {:?}",
        r.text().await
    );
}

/// Uploads an object as `CLIENT`, asserting 201.
pub async fn put_object(site: &Site, bucket: &str, key: &str, body: Vec<u8>) {
    let r = client()
        .post(site.url(&format!("/cloudclonestore/{bucket}/{key}")))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "put {bucket}/{key}: {:?}", r.text().await);
}

/// Registers `peer` in `site`'s topology through the administration API.
pub async fn add_peer(site: &Site, peer: &Site) {
    let r = reqwest::Client::new()
        .post(site.url("/administration/topologies"))
        .json(&serde_json::json!({"id": peer.id, "name": peer.id, "uri": peer.url, "status": "UP"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// Makes every site a peer of every other.
pub async fn mesh(sites: &[&Site]) {
    for a in sites {
        for b in sites {
            if a.id != b.id {
                add_peer(a, b).await;
            }
        }
    }
}

/// Runs `mirrorgate serve` on `config` and expects it to exit with an error before serving.
pub fn refuses_to_start(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirrorgate.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mirrorgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mirrorgate started with {config}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("listening on"), "{stderr}");
    stderr
}

/// Sites `ids` started with `extra`, each knowing all the others.
pub async fn meshed_sites(ids: &[&str], extra: &str) -> Vec<Site> {
    let sites: Vec<Site> = ids.iter().map(|id| Site::start(id, extra)).collect();
    mesh(&sites.iter().collect::<Vec<_>>()).await;
    sites
}

/// URL of a replicator local route (`/replicator/local/buckets/{path}`).
pub fn local(site: &Site, path: &str) -> String {
    site.url(&format!("/replicator/local/buckets/{path}"))
}

/// URL of a replicator remote route (`/replicator/remote/buckets/{path}`).
pub fn remote(site: &Site, path: &str) -> String {
    site.url(&format!("/replicator/remote/buckets/{path}"))
}

pub fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Waits (up to 30 s) until `site` holds `bucket` itself (remote bucket HEAD answers 204).
pub async fn bucket_arrives(site: &Site, bucket: &str) {
    held_at(site, bucket).await
}

/// Waits until `site` holds `bucket/key` (its remote HEAD answers 204).
pub async fn object_arrives(site: &Site, bucket: &str, key: &str) {
    held_at(site, &format!("{bucket}/{key}")).await
}

async fn held_at(site: &Site, path: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("{path} at {}", site.id),
        || async {
            let r = client()
                .head(site.url(&format!("/replicator/remote/buckets/{path}")))
                .send()
                .await
                .ok()?;
            (r.status() == 204).then_some(())
        },
    )
    .await;
}
