//! The fault campaign (issue #17): three sites as real processes (two on fs, one on S3), every
//! link between them and the S3 backend behind a fault-injecting proxy, a mixed workload from
//! several clients, faults at random times from a seed, a history of what every client was
//! told, and a checker that runs once the faults stop and the mesh settled.
//!
//! One run is `run(&Plan)`; the same seed replays the same fault schedule and the same client
//! choices (timings, and so interleavings, still vary).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::Row;

use crate::common::{ccs_hash, data, site_config, Site, CLIENT};
use crate::faultproxy::{Fault, Proxy};
use crate::s3server::{s3_storage_config, S3Server};

const IDS: [&str; 3] = ["site-a", "site-b", "site-c"];
/// The S3-backed site (index into IDS).
const S3_SITE: usize = 1;
const BUCKET: &str = "camp";
const S3_PREFIX: &str = "mg-";
const KEYS_PER_CLIENT: usize = 8;

/// What one run does.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    pub writers: usize,
    pub load: Duration,
    /// Bound on each wait for the mesh to settle.
    pub settle: Duration,
    /// Delete a version at any site holding it (DELETE orders then overtake CREATE orders at
    /// third sites); otherwise at the site that wrote it.
    pub delete_anywhere: bool,
}

/// What one run found.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub acknowledged: u64,
    pub not_applied: u64,
    pub unknown: u64,
    pub reads: u64,
    pub faults: BTreeMap<&'static str, u32>,
    pub failed_before_retry: usize,
    /// DELETE orders refused for naming another version than the peer's (none since orders
    /// carry their version's creation; each is also a violation).
    pub refused_deletes: usize,
    /// Runs of the replication definition started during the faults.
    pub definition_runs: u32,
    pub violations: Vec<String>,
    pub elapsed: Duration,
}

impl Report {
    pub fn line(&self) -> String {
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "seed={} acked={} not_applied={} unknown={} reads={} faults[{}] failed_before_retry={} refused_deletes={} definition_runs={} violations={} in {:.1}s",
            self.seed,
            self.acknowledged,
            self.not_applied,
            self.unknown,
            self.reads,
            faults.join(" "),
            self.failed_before_retry,
            self.refused_deletes,
            self.definition_runs,
            self.violations.len(),
            self.elapsed.as_secs_f64()
        )
    }
}

// ---- history --------------------------------------------------------------------------------

/// A name's state at a site: absent, or READY with this hash (buckets: "" when present).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Absent,
    Present(String),
}

/// What the client was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// 2xx: the operation happened.
    Ack,
    /// Refused (4xx) or never sent (connection refused): it did not happen.
    NotApplied,
    /// Timeout, reset, 5xx: it may or may not have happened.
    Unknown,
}

#[derive(Default)]
struct NameHistory {
    /// What the client was told, with when it was answered (from the campaign's start).
    ops: Vec<(State, Outcome, Duration)>,
    /// Written at two partitioned sites: the version the documented rule makes win.
    conflict_winner: Option<State>,
}

impl NameHistory {
    /// The states the name may end in: the last acknowledged one, or any unknown one after it.
    fn allowed(&self) -> BTreeSet<State> {
        let mut allowed = BTreeSet::from([State::Absent]);
        for (state, outcome, _) in &self.ops {
            match outcome {
                Outcome::Ack => allowed = BTreeSet::from([state.clone()]),
                Outcome::Unknown => {
                    allowed.insert(state.clone());
                }
                Outcome::NotApplied => {}
            }
        }
        allowed
    }

    /// How long ago the last operation of unknown outcome was answered, if there is one.
    fn since_unknown(&self, now: Duration) -> Option<Duration> {
        self.ops
            .iter()
            .rev()
            .find(|op| op.1 == Outcome::Unknown)
            .map(|op| now.saturating_sub(op.2))
    }

    /// The operations, for a violation's report.
    fn told(&self) -> String {
        let ops: Vec<String> = self
            .ops
            .iter()
            .map(|(state, outcome, at)| {
                format!("{outcome:?} {state:?} at {:.2}s", at.as_secs_f64())
            })
            .collect();
        ops.join(", ")
    }
}

#[derive(Default)]
struct History {
    objects: BTreeMap<(String, String), NameHistory>,
    buckets: BTreeMap<String, NameHistory>,
    /// Every version ever written per name, to judge what reads returned.
    written: BTreeMap<(String, String), HashSet<String>>,
    acknowledged: u64,
    not_applied: u64,
    unknown: u64,
    reads: u64,
    violations: Vec<String>,
    /// When the run began: operations are timed from it.
    began: Option<Instant>,
}

impl History {
    fn now(&self) -> Duration {
        self.began.map_or(Duration::ZERO, |b| b.elapsed())
    }

    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ack => self.acknowledged += 1,
            Outcome::NotApplied => self.not_applied += 1,
            Outcome::Unknown => self.unknown += 1,
        }
    }

    fn object(&mut self, bucket: &str, key: &str, state: State, outcome: Outcome) {
        if let State::Present(h) = &state {
            self.written
                .entry((bucket.into(), key.into()))
                .or_default()
                .insert(h.clone());
        }
        self.count(outcome);
        let at = self.now();
        self.objects
            .entry((bucket.into(), key.into()))
            .or_default()
            .ops
            .push((state, outcome, at));
    }

    fn bucket(&mut self, bucket: &str, state: State, outcome: Outcome) {
        self.count(outcome);
        let at = self.now();
        self.buckets
            .entry(bucket.into())
            .or_default()
            .ops
            .push((state, outcome, at));
    }
}

type Shared = Arc<Mutex<History>>;

fn outcome_of(r: &reqwest::Result<reqwest::Response>) -> Outcome {
    match r {
        Ok(resp) if resp.status().is_success() => Outcome::Ack,
        Ok(resp) if resp.status().is_client_error() => Outcome::NotApplied,
        Ok(_) => Outcome::Unknown,
        Err(e) if e.is_connect() => Outcome::NotApplied,
        Err(_) => Outcome::Unknown,
    }
}

// ---- the mesh -------------------------------------------------------------------------------

struct Mesh {
    /// Client-facing URLs (stable across restarts: a site restarts on its port).
    urls: Vec<String>,
    /// `links[from][to]`: the proxy `from` reaches `to` through.
    links: Vec<Vec<Option<Proxy>>>,
    s3_link: Proxy,
    s3_root: PathBuf,
    _s3: S3Server,
}

impl Mesh {
    fn every_link(&self) -> impl Iterator<Item = &Proxy> {
        self.links.iter().flatten().flatten()
    }

    fn link(&self, from: usize, to: usize) -> &Proxy {
        self.links[from][to].as_ref().expect("no link to itself")
    }
}

fn common_config() -> &'static str {
    "[replication]\nworkers = 4\nbackoff_initial_ms = 100\nbackoff_max_ms = 1000\n\
     peer_stall_timeout_secs = 3\n[topology]\npeer_timeout_ms = 1000\n\
     [limits]\ndrain_timeout_secs = 3\n"
}

fn config_of(index: usize, dir: &Path, s3_endpoint: &str) -> String {
    let id = IDS[index];
    if index == S3_SITE {
        // S3 calls bounded at 5 s an attempt (30 s by default), so a call that S3 holds ends
        // within the settling time.
        format!(
            "[site]\nid = \"{id}\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}{}{}",
            dir.display(),
            s3_storage_config(s3_endpoint, S3_PREFIX),
            "s3_attempt_timeout_secs = 5\n",
            common_config()
        )
    } else {
        site_config(id, dir, common_config())
    }
}

async fn start_mesh(root: &Path) -> (Mesh, Vec<Site>) {
    let s3_root = root.join("s3");
    std::fs::create_dir_all(&s3_root).unwrap();
    let s3 = S3Server::start(&s3_root).await;
    let s3_link = Proxy::start(s3.addr).await;
    let sites: Vec<Site> = (0..IDS.len())
        .map(|i| {
            let dir = root.join(IDS[i]);
            let config = config_of(i, &dir, &s3_link.url());
            tokio::task::block_in_place(|| Site::spawn_with(IDS[i], &dir, &config))
        })
        .collect();
    let mut links = Vec::new();
    for from in 0..sites.len() {
        let mut row = Vec::new();
        for (to, peer) in sites.iter().enumerate() {
            if from == to {
                row.push(None);
                continue;
            }
            let proxy = Proxy::start(peer.addr.parse().unwrap()).await;
            let r = reqwest::Client::new()
                .post(sites[from].url("/administration/topologies"))
                .json(&serde_json::json!({"id": peer.id, "name": peer.id, "uri": proxy.url(), "status": "UP"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "topology of {}", sites[from].id);
            row.push(Some(proxy));
        }
        links.push(row);
    }
    let mesh = Mesh {
        urls: sites.iter().map(|s| s.url.clone()).collect(),
        links,
        s3_link,
        s3_root,
        _s3: s3,
    };
    (mesh, sites)
}

fn http() -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-clonecloudstore-client-id", CLIENT.parse().unwrap());
    reqwest::Client::builder()
        .default_headers(h)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn object_url(base: &str, bucket: &str, key: &str) -> String {
    format!("{base}/cloudclonestore/{bucket}/{key}")
}

// ---- the workload ---------------------------------------------------------------------------

/// Uploads a new version of `bucket/key` at `base` (zstd-compressed on the wire or not).
async fn put_version(
    http: &reqwest::Client,
    history: &Shared,
    base: &str,
    bucket: &str,
    key: &str,
    rng: &mut StdRng,
) -> Outcome {
    let len = if rng.gen_bool(0.1) {
        rng.gen_range(200_000..600_000)
    } else {
        rng.gen_range(100..64_000)
    };
    let body = data(len, rng.gen());
    let hash = ccs_hash(&body);
    let mut req = http.post(object_url(base, bucket, key));
    req = if rng.gen_bool(0.25) {
        req.header("content-encoding", "zstd")
            .body(zstd::encode_all(&body[..], 3).unwrap())
    } else {
        req.body(body)
    };
    let outcome = outcome_of(&req.send().await);
    history
        .lock()
        .unwrap()
        .object(bucket, key, State::Present(hash), outcome);
    outcome
}

/// The version `base` holds itself (not served through the topology), if any; a site that
/// does not answer counts as holding none.
async fn local_version(http: &reqwest::Client, base: &str, bucket: &str, key: &str) -> State {
    observed_version(http, base, bucket, key)
        .await
        .unwrap_or(State::Absent)
}

/// [`local_version`], or None when `base` gave no clear answer (down, an error status): a
/// site that does not answer may hold a version all the same.
async fn observed_version(
    http: &reqwest::Client,
    base: &str,
    bucket: &str,
    key: &str,
) -> Option<State> {
    let r = http.head(object_url(base, bucket, key)).send().await.ok()?;
    let local = r.headers().get("x-clonecloudstore-target-id").is_none();
    match (
        r.status().as_u16(),
        r.headers().get("x-clonecloudstore-hash"),
    ) {
        (200 | 204, Some(h)) if local => {
            Some(State::Present(h.to_str().unwrap_or_default().to_owned()))
        }
        (200 | 204, _) | (404, _) => Some(State::Absent),
        _ => None,
    }
}

/// Deletes `bucket/key` at `base` if `base` holds exactly `version` (so the delete is of the
/// version the client believes current, whatever replication still has in flight).
async fn delete_version(
    http: &reqwest::Client,
    history: &Shared,
    base: &str,
    bucket: &str,
    key: &str,
    version: &State,
) {
    if &local_version(http, base, bucket, key).await != version {
        return;
    }
    let outcome = outcome_of(&http.delete(object_url(base, bucket, key)).send().await);
    history
        .lock()
        .unwrap()
        .object(bucket, key, State::Absent, outcome);
}

/// Reads `bucket/key` at `base`; a 200 must carry bytes of a version that was written.
async fn read_check(http: &reqwest::Client, history: &Shared, base: &str, bucket: &str, key: &str) {
    let Ok(r) = http.get(object_url(base, bucket, key)).send().await else {
        return;
    };
    if r.status() != 200 {
        return;
    }
    let announced = r
        .headers()
        .get("x-clonecloudstore-hash")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let Ok(body) = r.bytes().await else {
        return; // a transfer cut in the middle is an error, not a wrong answer
    };
    let got = ccs_hash(&body);
    let mut h = history.lock().unwrap();
    h.reads += 1;
    let known = h
        .written
        .get(&(bucket.to_owned(), key.to_owned()))
        .is_some_and(|w| w.contains(&got));
    if !known || announced.as_deref().is_some_and(|a| a != got) {
        h.violations.push(format!(
            "read {bucket}/{key} at {base}: 200 with bytes {got} (announced {announced:?}) that no write produced"
        ));
    }
}

/// One writer: its own names, one operation at a time, at random sites.
async fn writer(
    index: usize,
    plan: Plan,
    urls: Vec<String>,
    history: Shared,
    stop: Arc<AtomicBool>,
) {
    let http = http();
    let mut rng = StdRng::seed_from_u64(plan.seed ^ (0x9e37_79b9 * (index as u64 + 1)));
    // Where each name's current version was written.
    let mut written_at: BTreeMap<String, String> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w{index}/k{}", rng.gen_range(0..KEYS_PER_CLIENT));
        let mut base = urls[rng.gen_range(0..urls.len())].clone();
        let allowed = history
            .lock()
            .unwrap()
            .objects
            .get(&(BUCKET.to_owned(), key.clone()))
            .map(NameHistory::allowed)
            .unwrap_or_else(|| BTreeSet::from([State::Absent]));
        let certain = (allowed.len() == 1).then(|| allowed.iter().next().unwrap().clone());
        match certain {
            Some(State::Absent) => {
                if put_version(&http, &history, &base, BUCKET, &key, &mut rng).await
                    != Outcome::NotApplied
                {
                    written_at.insert(key.clone(), base.clone());
                }
            }
            Some(version) if rng.gen_bool(0.5) => {
                if !plan.delete_anywhere {
                    if let Some(origin) = written_at.get(&key) {
                        base = origin.clone();
                    }
                }
                delete_version(&http, &history, &base, BUCKET, &key, &version).await
            }
            Some(_) => read_check(&http, &history, &base, BUCKET, &key).await,
            None => settle_name(&http, &history, &urls, &key, &allowed).await,
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(10..80))).await;
    }
}

/// How long after an unknown outcome its name may be settled: past the client's timeout, a
/// killed site's restart and the end of the request's handler at its site.
const SETTLE_AFTER: Duration = Duration::from_secs(8);

/// After an unknown outcome: once every site answers with the same allowed state, long
/// enough after that outcome for the operation to have ended at its site (a request whose
/// client gave up, or whose site was killed and restarted, may still commit), that is the
/// name's state (recorded as acknowledged by the sites themselves).
async fn settle_name(
    http: &reqwest::Client,
    history: &Shared,
    urls: &[String],
    key: &str,
    allowed: &BTreeSet<State>,
) {
    let name = (BUCKET.to_owned(), key.to_owned());
    let since = {
        let h = history.lock().unwrap();
        let now = h.now();
        h.objects.get(&name).and_then(|n| n.since_unknown(now))
    };
    // Every site must answer: one that does not may hold a version all the same.
    let mut seen = Some(BTreeSet::new());
    if since.is_none_or(|s| s >= SETTLE_AFTER) {
        for base in urls {
            let state = observed_version(http, base, BUCKET, key).await;
            seen = seen.zip(state).map(|(mut set, state)| {
                set.insert(state);
                set
            });
        }
    } else {
        seen = None;
    }
    let settled = seen.filter(|s| s.len() == 1 && allowed.contains(s.first().unwrap()));
    if let Some(state) = settled.and_then(|s| s.into_iter().next()) {
        let mut h = history.lock().unwrap();
        let at = h.now();
        let name = h.objects.entry(name).or_default();
        name.ops.push((state, Outcome::Ack, at));
    } else {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Bucket life cycles: create at one site, two objects, delete them, delete the bucket.
async fn bucket_cycles(plan: Plan, urls: Vec<String>, history: Shared, stop: Arc<AtomicBool>) {
    let http = http();
    let mut rng = StdRng::seed_from_u64(plan.seed ^ 0xb0c4e7);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let bucket = format!("cyc-{}-{n}", plan.seed % 100_000);
        let base = urls[rng.gen_range(0..urls.len())].clone();
        let created = outcome_of(
            &http
                .post(format!("{base}/cloudclonestore/{bucket}"))
                .send()
                .await,
        );
        history
            .lock()
            .unwrap()
            .bucket(&bucket, State::Present(String::new()), created);
        if created != Outcome::Ack {
            continue;
        }
        let mut held = Vec::new();
        for k in ["one", "two"] {
            if put_version(&http, &history, &base, &bucket, k, &mut rng).await == Outcome::Ack {
                held.push(k);
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..500))).await;
        let mut emptied = true;
        for k in held {
            let version = local_version(&http, &base, &bucket, k).await;
            delete_version(&http, &history, &base, &bucket, k, &version).await;
            emptied &= local_version(&http, &base, &bucket, k).await == State::Absent;
        }
        if emptied && rng.gen_bool(0.8) {
            let deleted = outcome_of(
                &http
                    .delete(format!("{base}/cloudclonestore/{bucket}"))
                    .send()
                    .await,
            );
            history
                .lock()
                .unwrap()
                .bucket(&bucket, State::Absent, deleted);
        }
    }
}

// ---- a replication definition ---------------------------------------------------------------

/// The definition the campaign runs: objects under `camp/def/` written at site `at`, sent to
/// site `target` by the Alfresco definition `campaign` (defined at `at`).
#[derive(Clone, Copy)]
struct Definition {
    at: usize,
    target: usize,
}

const DEFINITION: &str = "campaign";
const DEFINITION_OBJECTS: usize = 4;

impl Definition {
    fn of(plan: &Plan) -> Definition {
        let mut rng = StdRng::seed_from_u64(plan.seed ^ 0xdef1);
        let at = rng.gen_range(0..IDS.len());
        Definition {
            at,
            target: (at + rng.gen_range(1..IDS.len())) % IDS.len(),
        }
    }
}

/// Writes the definition's objects, defines it, and runs it every 0.5-2 s while the faults
/// go on (a site killed under a run fails it; every run must still end). Returns how many
/// runs started.
async fn definition_runs(
    plan: Plan,
    urls: Vec<String>,
    history: Shared,
    stop: Arc<AtomicBool>,
) -> u32 {
    let http = http();
    let def = Definition::of(&plan);
    let base = &urls[def.at];
    let mut rng = StdRng::seed_from_u64(plan.seed ^ 0xdef2);
    let mut written = 0;
    while written < DEFINITION_OBJECTS && !stop.load(Ordering::Relaxed) {
        let key = format!("def/k{written}");
        if put_version(&http, &history, base, BUCKET, &key, &mut rng).await == Outcome::Ack {
            written += 1;
        } else if local_version(&http, base, BUCKET, &key).await != State::Absent {
            written += 1; // an unknown outcome that happened
        }
    }
    let definition = serde_json::json!({
        "name": DEFINITION, "description": "fault campaign", "payload": [format!("{BUCKET}/def/")],
        "targetName": IDS[def.target],
    });
    let mut defined = false;
    let mut runs = 0;
    while !stop.load(Ordering::Relaxed) {
        if !defined {
            let r = http
                .post(format!("{base}/api/replication-definitions"))
                .json(&definition)
                .send()
                .await;
            defined = matches!(r, Ok(r) if r.status().is_success() || r.status() == 409);
        } else if start_definition_run(&http, base).await.is_some() {
            runs += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..2000))).await;
    }
    runs
}

/// Starts a run of the definition at `base`; its task id.
async fn start_definition_run(http: &reqwest::Client, base: &str) -> Option<String> {
    let r = http
        .post(format!("{base}/api/running-replication-actions"))
        .form(&[("name", DEFINITION)])
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    v["data"]["taskUuid"].as_str().map(str::to_owned)
}

/// After the faults: one more run completes, nothing failed, and the target holds every
/// object of the definition (the history requires them at every site as well).
async fn check_definition(plan: &Plan, urls: &[String], v: &mut Vec<String>) {
    let http = http();
    let def = Definition::of(plan);
    let base = &urls[def.at];
    let Some(task) = start_definition_run(&http, base).await else {
        v.push("the replication definition did not run after the faults".to_owned());
        return;
    };
    let ended = crate::common::eventually(
        Duration::from_secs(60),
        "the definition run ended",
        || async {
            let r = http
                .get(format!("{base}/api/running-action/{task}"))
                .send()
                .await
                .ok()?;
            let a: serde_json::Value = r.json().await.ok()?;
            let status = a["data"]["status"].as_str()?.to_owned();
            matches!(status.as_str(), "Completed" | "Failed" | "Cancelled")
                .then_some(a["data"].clone())
        },
    )
    .await;
    if ended["status"] != "Completed" || ended["result"]["failed"].as_u64().unwrap_or(0) > 0 {
        v.push(format!(
            "the definition run after the faults did not complete: {ended}"
        ));
    }
    let target = &urls[def.target];
    for i in 0..DEFINITION_OBJECTS {
        let key = format!("def/k{i}");
        if local_version(&http, target, BUCKET, &key).await == State::Absent
            && local_version(&http, base, BUCKET, &key).await != State::Absent
        {
            v.push(format!(
                "{BUCKET}/{key}: in the definition, missing at its target {}",
                IDS[def.target]
            ));
        }
    }
}

// ---- Backbeat -------------------------------------------------------------------------------

/// The failed entries `base` lists for `peer` (every page).
async fn failed_entries(base: &str, peer: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut marker = String::new();
    for _ in 0..100 {
        let Ok(r) = reqwest::get(format!(
            "{base}/_/backbeat/api/crr/failed?sitename={peer}{marker}"
        ))
        .await
        else {
            return out;
        };
        let Ok(page) = r.json::<serde_json::Value>().await else {
            return out;
        };
        if let Some(v) = page["Versions"].as_array() {
            out.extend(v.iter().cloned());
        }
        match page["NextMarker"].as_i64() {
            Some(m) if page["IsTruncated"] == true => marker = format!("&marker={m}"),
            _ => return out,
        }
    }
    out
}

/// Retries every failed operation at every site (a Backbeat retry pass); how many there were.
async fn retry_pass(urls: &[String]) -> usize {
    let mut total = 0;
    for (i, base) in urls.iter().enumerate() {
        for (j, peer) in IDS.iter().enumerate() {
            if i == j {
                continue;
            }
            let entries = failed_entries(base, peer).await;
            if entries.is_empty() {
                continue;
            }
            total += entries.len();
            let retry: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| {
                    serde_json::json!({"Bucket": e["Bucket"], "Key": e["Key"],
                        "VersionId": e["VersionId"], "StorageClass": peer})
                })
                .collect();
            let _ = reqwest::Client::new()
                .post(format!("{base}/_/backbeat/api/crr/failed"))
                .json(&retry)
                .send()
                .await;
        }
    }
    total
}

async fn backbeat_retries(urls: Vec<String>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        retry_pass(&urls).await;
    }
}

// ---- faults ---------------------------------------------------------------------------------

const FAULT_KINDS: [(&str, u32); 10] = [
    ("kill9", 20),
    ("sigterm", 8),
    ("link_drop", 12),
    ("link_delay", 8),
    ("link_reset", 12),
    ("oneway_partition", 10),
    ("s3_outage", 7),
    ("s3_slow", 6),
    ("partitioned_conflict", 6),
    ("s3_reset", 4),
];

fn pick_kind(rng: &mut StdRng) -> &'static str {
    let total: u32 = FAULT_KINDS.iter().map(|(_, w)| w).sum();
    let mut x = rng.gen_range(0..total);
    for (kind, w) in FAULT_KINDS {
        if x < w {
            return kind;
        }
        x -= w;
    }
    unreachable!()
}

fn secs(rng: &mut StdRng, from: f64, to: f64) -> Duration {
    Duration::from_secs_f64(rng.gen_range(from..to))
}

/// Injects faults one after another until `until`, each healed before the next.
async fn inject(
    plan: &Plan,
    mesh: &Mesh,
    sites: &mut [Site],
    history: &Shared,
    until: Instant,
) -> BTreeMap<&'static str, u32> {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let mut counts = BTreeMap::new();
    let mut conflicts = 0;
    while Instant::now() < until {
        tokio::time::sleep(secs(&mut rng, 0.1, 0.6)).await;
        let kind = pick_kind(&mut rng);
        *counts.entry(kind).or_insert(0) += 1;
        let from = rng.gen_range(0..IDS.len());
        let to = (from + rng.gen_range(1..IDS.len())) % IDS.len();
        let hold = secs(&mut rng, 0.3, 2.0);
        match kind {
            "kill9" => {
                sites[from].kill9();
                tokio::time::sleep(hold).await;
                tokio::task::block_in_place(|| sites[from].restart());
            }
            "sigterm" => {
                tokio::task::block_in_place(|| sites[from].terminate());
                tokio::time::sleep(hold / 2).await;
                tokio::task::block_in_place(|| sites[from].restart());
            }
            "link_drop" => hold_fault(mesh.link(from, to), Fault::Drop, hold).await,
            "link_delay" => {
                let d = Duration::from_millis(rng.gen_range(50..400));
                hold_fault(mesh.link(from, to), Fault::Delay(d), hold).await
            }
            "link_reset" => {
                let n = rng.gen_range(500..300_000);
                hold_fault(mesh.link(from, to), Fault::ResetAfter(n), hold).await
            }
            "oneway_partition" => {
                let f = if rng.gen_bool(0.5) {
                    Fault::BlockReplies
                } else {
                    Fault::BlockRequests
                };
                hold_fault(mesh.link(from, to), f, hold).await
            }
            "s3_outage" => hold_fault(&mesh.s3_link, Fault::Drop, hold).await,
            "s3_slow" => {
                let d = Duration::from_millis(rng.gen_range(100..500));
                hold_fault(&mesh.s3_link, Fault::Delay(d), hold).await
            }
            "s3_reset" => {
                let n = rng.gen_range(1_000..200_000);
                hold_fault(&mesh.s3_link, Fault::ResetAfter(n), hold).await
            }
            "partitioned_conflict" => {
                conflicts += 1;
                let key = format!("conflict/{}-{conflicts}", plan.seed);
                partitioned_conflict(mesh, history, (from, to), &key, hold, &mut rng).await
            }
            _ => unreachable!(),
        }
    }
    counts
}

async fn hold_fault(link: &Proxy, fault: Fault, hold: Duration) {
    link.set(fault);
    tokio::time::sleep(hold).await;
    link.heal();
}

/// Cuts `a` and `b` from each other, writes the same new name at both (`b` second), heals.
/// Both acknowledged: by the rule (latest creation, then site id) `b`'s version must win.
async fn partitioned_conflict(
    mesh: &Mesh,
    history: &Shared,
    (a, b): (usize, usize),
    key: &str,
    hold: Duration,
    rng: &mut StdRng,
) {
    for (x, y) in [(a, b), (b, a)] {
        mesh.link(x, y).set(Fault::Drop);
    }
    let http = http();
    let first = put_version(&http, history, &mesh.urls[a], BUCKET, key, rng).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = put_version(&http, history, &mesh.urls[b], BUCKET, key, rng).await;
    if first == Outcome::Ack && second == Outcome::Ack {
        let mut h = history.lock().unwrap();
        let name = h.objects.get_mut(&(BUCKET.into(), key.into())).unwrap();
        name.conflict_winner = Some(name.ops[1].0.clone());
        // Both versions are acknowledged; the rule, not the order of the history, decides.
        name.ops.retain(|_| false);
    }
    tokio::time::sleep(hold).await;
    for (x, y) in [(a, b), (b, a)] {
        mesh.link(x, y).heal();
    }
}

// ---- settling and checking ------------------------------------------------------------------

/// Work not finished at `base`, None if it does not answer: orders not yet delivered
/// (Backbeat's pending count) and objects between two states (an upload or a delete under way,
/// from the operator status). A delete whose S3 call hangs is under way until that call's
/// attempts time out; checked earlier, the site looked stuck in DELETING (long profile, seed
/// 5071).
async fn unfinished(base: &str) -> Option<i64> {
    let get = |path: String| async move {
        let v: serde_json::Value = reqwest::get(path).await.ok()?.json().await.ok()?;
        Some(v)
    };
    let backlog = get(format!("{base}/_/backbeat/api/metrics/crr/all/pending")).await?;
    let status = get(format!("{base}/api/status")).await?;
    let objects = &status["objects"];
    Some(
        backlog["pending"]["results"]["count"].as_i64()?
            + objects["uploading"].as_i64()?
            + objects["deleting"].as_i64()?,
    )
}

/// Waits (bounded) until no site has work unfinished; whether it got there.
async fn settle(urls: &[String], bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    let mut quiet = 0;
    while Instant::now() < deadline {
        let mut all = 0;
        for base in urls {
            all += unfinished(base).await.unwrap_or(1);
        }
        quiet = if all == 0 { quiet + 1 } else { 0 };
        if quiet >= 3 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// What one site's metadata store says, read after it stopped.
struct SiteRows {
    objects: BTreeMap<(String, String), (String, Option<String>)>,
    buckets: BTreeMap<String, String>,
    outbox: Vec<String>,
    inbox_open: Vec<String>,
    failed: Vec<String>,
    tasks_open: Vec<String>,
}

async fn read_rows(dir: &Path) -> SiteRows {
    let url = format!("sqlite://{}?mode=ro", dir.join("meta.db").display());
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let objects = sqlx::query("SELECT bucket, name, status, hash FROM objects")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                (r.get("bucket"), r.get("name")),
                (r.get("status"), r.get("hash")),
            )
        })
        .collect();
    let buckets = sqlx::query("SELECT name, status FROM buckets")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("name"), r.get("status")))
        .collect();
    let texts = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(sql)
                .fetch_all(&pool)
                .await
                .map(|rows| rows.iter().map(|r| r.get::<String, _>(0)).collect())
                .unwrap_or_default()
        }
    };
    let rows = SiteRows {
        objects,
        buckets,
        outbox: texts("SELECT to_site || ' ' || action || ' ' || bucket || '/' || coalesce(object, '') || ' ' || state || ' ' || coalesce(last_error, '') FROM outbox").await,
        inbox_open: texts("SELECT from_site || ' ' || action || ' ' || bucket || '/' || coalesce(object, '') || ' ' || state || ' ' || coalesce(last_error, '') FROM inbox WHERE state IN ('PENDING', 'PROCESSING')").await,
        failed: texts("SELECT site || ' ' || action || ' ' || bucket || '/' || object || ' ' || coalesce(error, '') FROM failed_ops").await,
        tasks_open: texts("SELECT kind || ' ' || status FROM tasks WHERE status IN ('New', 'Pending', 'Running', 'CancelRequested')").await,
    };
    pool.close().await;
    rows
}

/// Stored files of a site, as (bucket, file path) for fs or (bucket, key) for S3.
fn stored_files(index: usize, dir: &Path, s3_root: &Path) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let (root, prefix) = if index == S3_SITE {
        (s3_root.to_path_buf(), S3_PREFIX)
    } else {
        (dir.join("objects"), "")
    };
    let Ok(buckets) = std::fs::read_dir(&root) else {
        return out;
    };
    for b in buckets.flatten() {
        let name = b.file_name().to_string_lossy().into_owned();
        let Some(bucket) = name.strip_prefix(prefix) else {
            continue;
        };
        if !b.path().is_dir() || name.starts_with('.') {
            continue;
        }
        for file in walk(&b.path()) {
            let rel = file
                .strip_prefix(b.path())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.starts_with("~mirrorgate-staging/") {
                continue; // a staged S3 write whose cleanup failed: the storage sweep removes it
            }
            out.insert((bucket.to_owned(), rel));
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Where a READY object's bytes live at a site, relative to its bucket's directory.
fn stored_name(index: usize, dir: &Path, bucket: &str, key: &str) -> String {
    if index == S3_SITE {
        return key.to_owned();
    }
    let objects = dir.join("objects");
    let path = mirrorgate::storage::fs::FsStorage::object_path(&objects, bucket, key);
    path.strip_prefix(objects.join(bucket))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn stored_path(index: usize, dir: &Path, s3_root: &Path, bucket: &str, key: &str) -> PathBuf {
    if index == S3_SITE {
        s3_root.join(format!("{S3_PREFIX}{bucket}")).join(key)
    } else {
        mirrorgate::storage::fs::FsStorage::object_path(&dir.join("objects"), bucket, key)
    }
}

fn state_at(rows: &SiteRows, bucket: &str, key: &str) -> State {
    match rows.objects.get(&(bucket.to_owned(), key.to_owned())) {
        Some((status, Some(hash))) if status == "READY" => State::Present(hash.clone()),
        _ => State::Absent,
    }
}

fn check_site(index: usize, dir: &Path, s3_root: &Path, rows: &SiteRows, v: &mut Vec<String>) {
    let id = IDS[index];
    for ((bucket, key), (status, _)) in &rows.objects {
        if matches!(status.as_str(), "UPLOAD" | "DELETING" | "UNKNOWN") {
            v.push(format!("{id}: {bucket}/{key} stuck in {status}"));
        }
    }
    for (bucket, status) in &rows.buckets {
        if matches!(status.as_str(), "UPLOAD" | "DELETING" | "UNKNOWN") {
            v.push(format!("{id}: bucket {bucket} stuck in {status}"));
        }
    }
    // A DELETE order naming another version than held compares creations now (superseded or
    // deleting the older one): a refused one (counted apart too) is a violation like any.
    for (what, list) in [
        ("undelivered order", &rows.outbox),
        ("order not applied", &rows.inbox_open),
        ("failed operation after the retry pass", &rows.failed),
        ("task not ended", &rows.tasks_open),
    ] {
        for item in list.iter().take(5) {
            v.push(format!("{id}: {what}: {item}"));
        }
    }
    let files = stored_files(index, dir, s3_root);
    let mut expected = BTreeSet::new();
    for ((bucket, key), (status, hash)) in &rows.objects {
        if status != "READY" {
            continue;
        }
        expected.insert((bucket.clone(), stored_name(index, dir, bucket, key)));
        let path = stored_path(index, dir, s3_root, bucket, key);
        match std::fs::read(&path) {
            Ok(bytes) if Some(ccs_hash(&bytes)) == *hash => {}
            Ok(_) => v.push(format!(
                "{id}: {bucket}/{key} READY but its file has other bytes"
            )),
            Err(_) => v.push(format!("{id}: {bucket}/{key} READY without its file")),
        }
    }
    for orphan in files.difference(&expected).take(5) {
        v.push(format!(
            "{id}: file without a READY row: {}/{}",
            orphan.0, orphan.1
        ));
    }
}

fn refused_version(failed: &str) -> bool {
    failed.contains(" DELETE ") && failed.contains("refused:") && failed.contains("another version")
}

fn check_history(history: &History, rows: &[SiteRows], v: &mut Vec<String>) {
    for ((bucket, key), name) in &history.objects {
        let states: Vec<State> = rows.iter().map(|r| state_at(r, bucket, key)).collect();
        let agree = states.iter().all(|s| s == &states[0]);
        if let Some(winner) = &name.conflict_winner {
            if !agree || &states[0] != winner {
                v.push(format!(
                    "{bucket}/{key}: partitioned writes must end with the later one everywhere ({winner:?}), sites hold {states:?}"
                ));
            }
            continue;
        }
        let allowed = name.allowed();
        if !agree || !allowed.contains(&states[0]) {
            v.push(format!(
                "{bucket}/{key}: sites hold {states:?}, the history allows {allowed:?} (told: {})",
                name.told()
            ));
        }
    }
    for (bucket, name) in &history.buckets {
        let states: Vec<State> = rows
            .iter()
            .map(|r| match r.buckets.get(bucket) {
                Some(s) if s == "READY" => State::Present(String::new()),
                _ => State::Absent,
            })
            .collect();
        let allowed = name.allowed();
        if !states.iter().all(|s| s == &states[0]) || !allowed.contains(&states[0]) {
            v.push(format!(
                "bucket {bucket}: sites hold {states:?}, the history allows {allowed:?}"
            ));
        }
    }
}

// ---- one run --------------------------------------------------------------------------------

pub async fn run(plan: &Plan) -> Report {
    let started = Instant::now();
    println!(
        "fault campaign: seed {} (replay with MIRRORGATE_FAULT_SEED={})",
        plan.seed, plan.seed
    );
    let root = tempfile::tempdir().unwrap();
    let (mesh, mut sites) = start_mesh(root.path()).await;
    let history: Shared = Arc::new(Mutex::new(History {
        began: Some(Instant::now()),
        ..History::default()
    }));
    let http = http();
    let r = http
        .post(format!("{}/cloudclonestore/{BUCKET}", mesh.urls[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for base in &mesh.urls {
        crate::common::eventually(Duration::from_secs(30), "the bucket everywhere", || async {
            let r = http
                .head(format!("{base}/replicator/remote/buckets/{BUCKET}"))
                .send()
                .await
                .ok()?;
            (r.status() == 204).then_some(())
        })
        .await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for w in 0..plan.writers {
        load.spawn(writer(
            w,
            plan.clone(),
            mesh.urls.clone(),
            history.clone(),
            stop.clone(),
        ));
    }
    load.spawn(bucket_cycles(
        plan.clone(),
        mesh.urls.clone(),
        history.clone(),
        stop.clone(),
    ));
    load.spawn(backbeat_retries(mesh.urls.clone(), stop.clone()));
    let definition = tokio::spawn(definition_runs(
        plan.clone(),
        mesh.urls.clone(),
        history.clone(),
        stop.clone(),
    ));
    let faults = inject(
        plan,
        &mesh,
        &mut sites,
        &history,
        Instant::now() + plan.load,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    let definition_runs = definition.await.unwrap_or(0);
    for link in mesh.every_link().chain([&mesh.s3_link]) {
        link.heal();
    }

    let mut report = Report {
        seed: plan.seed,
        faults,
        definition_runs,
        ..Report::default()
    };
    let mut violations = Vec::new();
    if !settle(&mesh.urls, plan.settle).await {
        violations.push(format!(
            "orders still pending {:?} after the faults stopped",
            plan.settle
        ));
    }
    report.failed_before_retry = retry_pass(&mesh.urls).await;
    if report.failed_before_retry > 0 && !settle(&mesh.urls, plan.settle).await {
        violations.push("orders still pending after the retry pass".to_owned());
    }
    check_definition(plan, &mesh.urls, &mut violations).await;
    if !settle(&mesh.urls, plan.settle).await {
        violations.push("orders of the last definition run still pending".to_owned());
    }
    for site in sites.iter_mut() {
        tokio::task::block_in_place(|| site.terminate());
    }
    let mut rows = Vec::new();
    for (i, site) in sites.iter().enumerate() {
        let r = read_rows(&site.dir).await;
        check_site(i, &site.dir, &mesh.s3_root, &r, &mut violations);
        report.refused_deletes += r.failed.iter().filter(|f| refused_version(f)).count();
        rows.push(r);
    }
    let h = history.lock().unwrap();
    check_history(&h, &rows, &mut violations);
    violations.extend(h.violations.iter().cloned());
    report.acknowledged = h.acknowledged;
    report.not_applied = h.not_applied;
    report.unknown = h.unknown;
    report.reads = h.reads;
    report.violations = violations;
    report.elapsed = started.elapsed();
    println!("{}", report.line());
    for v in &report.violations {
        println!("  VIOLATION {v}");
    }
    if !report.violations.is_empty() {
        let dir = std::env::temp_dir().join(format!("mirrorgate-faults/seed-{}", plan.seed));
        std::fs::create_dir_all(&dir).unwrap();
        for site in &sites {
            std::fs::write(dir.join(format!("{}.log", site.id)), site.log_text()).unwrap();
        }
        println!("  site logs in {}", dir.display());
    }
    report
}

/// Runs `plans` one after another and prints a table: runs, operations, faults by kind,
/// violations.
pub fn table(reports: &[Report]) -> String {
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    for r in reports {
        for (k, n) in &r.faults {
            *faults.entry(k).or_insert(0) += n;
        }
    }
    let total_faults: u32 = faults.values().sum();
    let mut out = String::new();
    out.push_str("| runs | ops acknowledged | ops unknown | reads checked | faults | failed before the retry pass | refused deletes | definition runs | violations |\n|---|---|---|---|---|---|---|---|---|\n");
    out.push_str(&format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n\n| fault | injected |\n|---|---|\n",
        reports.len(),
        reports.iter().map(|r| r.acknowledged).sum::<u64>(),
        reports.iter().map(|r| r.unknown).sum::<u64>(),
        reports.iter().map(|r| r.reads).sum::<u64>(),
        total_faults,
        reports.iter().map(|r| r.failed_before_retry).sum::<usize>(),
        reports.iter().map(|r| r.refused_deletes).sum::<usize>(),
        reports.iter().map(|r| r.definition_runs).sum::<u32>(),
        reports.iter().map(|r| r.violations.len()).sum::<usize>(),
    ));
    for (k, n) in faults {
        out.push_str(&format!("| {k} | {n} |\n"));
    }
    out
}
