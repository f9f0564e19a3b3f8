//! Topology lookup: which site holds a bucket or object. The UP peers are asked in parallel
//! (`HEAD /replicator/remote/...`), the first positive answer wins. A peer that is down, slow
//! or erroring never aborts the search: each has its own timeout, and a peer that keeps failing
//! is skipped for a while, then tried again. Positive answers are cached; negative ones only
//! briefly, and only when every asked peer answered cleanly.
//!
//! Bounded under hostile clients: the cache holds at most `[topology] cache_max_entries`
//! answers (when full, expired entries go first, then the ones closest to expiry; a sweep
//! drops expired ones every few seconds), and each client may cause only
//! `miss_rate_per_second` (burst `miss_burst`) lookups that ask the peers. Beyond that the
//! lookup fails with 429 and `Retry-After` before any peer is asked, so unknown names cannot
//! make the site flood its peers with HEADs.

mod peer;
pub mod probe;

pub use peer::{Credentials, PeerClient, SCOPE_ADMIN, SCOPE_PEER};

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures::stream::{FuturesUnordered, StreamExt};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::TopologyConfig;
use crate::core::wire::{CLIENT_ID, OP_ID, TYPE};
use crate::error::{Error, Kind, Result};
use crate::meta::{MetaStore, Topology, TopologyStatus};

/// What a lookup is about: a bucket, or an object (or directory) in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub bucket: String,
    pub object: Option<String>,
}

impl Target {
    /// Path of this target under `/replicator/remote/buckets`.
    pub fn remote_path(&self) -> String {
        match &self.object {
            Some(o) => format!("/replicator/remote/buckets/{}/{o}", self.bucket),
            None => format!("/replicator/remote/buckets/{}", self.bucket),
        }
    }
}

/// A positive answer: the site and the `x-clonecloudstore-type` it answered.
#[derive(Debug, Clone)]
pub struct Located {
    pub site: Topology,
    pub kind: String,
}

#[derive(Clone)]
enum Cached {
    Found(Located),
    Missing,
}

struct CacheEntry {
    value: Cached,
    until: Instant,
}

#[derive(Default)]
struct PeerHealth {
    consecutive_failures: u32,
    skip_until: Option<Instant>,
    /// Wall-clock times of the last call (or probe) that succeeded and that failed (for the
    /// operator's status view).
    last_ok_ms: Option<i64>,
    last_failure_ms: Option<i64>,
}

/// What this site last heard from a peer.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Contact {
    /// When a call to the peer last succeeded (ms since the epoch), if ever since start.
    pub last_ok_ms: Option<i64>,
    /// Calls that failed since the last success.
    pub consecutive_failures: u32,
    /// When a call to the peer last failed.
    pub last_failure_ms: Option<i64>,
    /// Whether calls to the peer are being skipped after repeated failures.
    pub skipped: bool,
}

impl Contact {
    /// The peer answered more recently than it failed.
    pub fn answering(&self) -> bool {
        match (self.last_ok_ms, self.last_failure_ms) {
            (_, None) => true,
            (Some(ok), Some(failed)) => ok >= failed,
            (None, Some(_)) => false,
        }
    }
}

/// Who the caller is, forwarded to the peer.
pub struct Caller<'a> {
    pub client_id: &'a str,
    pub op_id: &'a str,
}

pub struct TopologyService {
    self_id: String,
    config: TopologyConfig,
    meta: MetaStore,
    client: reqwest::Client,
    /// This site's peer credential (see `peer`).
    credentials: Credentials,
    cache: DashMap<Target, CacheEntry>,
    /// Held while inserting into the cache, so its size never exceeds the bound.
    inserting: Mutex<()>,
    /// Per-client limit of lookups that ask the peers (None: off).
    misses: Option<DefaultKeyedRateLimiter<String>>,
    miss_checks: AtomicU64,
    health: DashMap<String, PeerHealth>,
    peers: RwLock<Option<PeerList>>,
}

/// The peers, when they were read and the metadata cache's topology epoch then.
type PeerList = (Instant, u64, Arc<Vec<Topology>>);

/// How long the list of peers is reused before it is read again from the metadata store.
const PEERS_REFRESH: Duration = Duration::from_secs(5);

/// How often [`sweep`] drops expired cache entries and idle rate-limit keys.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Idle rate-limit keys are also dropped every this many checks, so a client rotating its id
/// cannot grow the key map between sweeps.
const MISS_KEYS_SWEEP_EVERY: u64 = 4096;

/// Runs for the life of the service: drops expired cache entries and idle rate-limit keys
/// every [`SWEEP_INTERVAL`]. Ends when the service is dropped.
pub async fn sweep(service: std::sync::Weak<TopologyService>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        service.sweep_expired();
    }
}

impl TopologyService {
    pub fn new(
        self_id: String,
        config: TopologyConfig,
        meta: MetaStore,
        client: reqwest::Client,
    ) -> Self {
        Self {
            self_id,
            misses: NonZeroU32::new(config.miss_rate_per_second).map(|rate| {
                let burst = NonZeroU32::new(config.miss_burst).unwrap_or(rate);
                RateLimiter::dashmap(Quota::per_second(rate).allow_burst(burst))
            }),
            config,
            meta,
            client,
            credentials: Credentials::none(),
            cache: DashMap::new(),
            inserting: Mutex::new(()),
            miss_checks: AtomicU64::new(0),
            health: DashMap::new(),
            peers: RwLock::new(None),
        }
    }

    /// How many answers the cache holds.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    fn report_cache_size(&self) {
        metrics::gauge!("mirrorgate_topology_cache_entries").set(self.cache.len() as f64);
    }

    /// Drops expired cache entries and idle rate-limit keys.
    pub fn sweep_expired(&self) {
        let now = Instant::now();
        self.cache.retain(|_, e| e.until > now);
        if let Some(limiter) = &self.misses {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.report_cache_size();
    }

    /// Takes one miss from the client's budget, or says how long until one is available.
    fn check_miss_budget(&self, client_id: &str) -> Result<()> {
        let Some(limiter) = &self.misses else {
            return Ok(());
        };
        let checks = self.miss_checks.fetch_add(1, Ordering::Relaxed);
        if checks % MISS_KEYS_SWEEP_EVERY == MISS_KEYS_SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter
            .check_key(&client_id.to_owned())
            .map_err(|not_until| {
                metrics::counter!("mirrorgate_topology_lookups_limited_total").increment(1);
                let wait = not_until.wait_time_from(limiter.clock().now());
                let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).clamp(1, 3600);
                Error::too_many_requests(
                    format!(
                        "too many lookups of names this site does not know from client \
                         {client_id:?}: retry after {secs} s"
                    ),
                    secs,
                )
            })
    }

    pub fn peer_timeout(&self) -> Duration {
        Duration::from_millis(self.config.peer_timeout_ms)
    }

    /// Forget the cached peer list (the administration API changed it), and every cached
    /// answer with it: a site that left may be cached as a holder, one that joined may hold
    /// what is cached as found nowhere.
    pub fn peers_changed(&self) {
        *self.peers.write().expect("peers lock") = None;
        self.cache.clear();
        self.report_cache_size();
    }

    /// Drop what the cache knows about a bucket or object (a write or an order touched it).
    pub fn invalidate(&self, bucket: &str, object: Option<&str>) {
        self.cache.remove(&Target {
            bucket: bucket.to_owned(),
            object: object.map(str::to_owned),
        });
        if object.is_none() {
            self.cache.retain(|k, _| k.bucket != bucket);
        }
        self.report_cache_size();
    }

    /// The UP peers, this site excluded: the ones asked in lookups.
    pub async fn up_peers(&self) -> Result<Arc<Vec<Topology>>> {
        self.peers_where(|t| t.status == TopologyStatus::Up).await
    }

    /// The peers that get replication orders: UP ones, and DOWN ones, whose orders wait until
    /// they are UP again (a failed-over primary still receives what changed meanwhile).
    pub async fn replication_peers(&self) -> Result<Arc<Vec<Topology>>> {
        self.peers_where(|t| matches!(t.status, TopologyStatus::Up | TopologyStatus::Down))
            .await
    }

    async fn peers_where(&self, keep: impl Fn(&Topology) -> bool) -> Result<Arc<Vec<Topology>>> {
        let all = self.all_peers().await?;
        Ok(Arc::new(all.iter().filter(|t| keep(t)).cloned().collect()))
    }

    /// Every peer of the topology, this site excluded, cached for a few seconds.
    async fn all_peers(&self) -> Result<Arc<Vec<Topology>>> {
        // A change through another node of the site shows as a new epoch (notification).
        let epoch = self.meta.cache().topology_epoch();
        if let Some((at, seen, peers)) = self.peers.read().expect("peers lock").as_ref() {
            if at.elapsed() < PEERS_REFRESH && *seen == epoch {
                return Ok(peers.clone());
            }
        }
        let peers: Vec<Topology> = self
            .meta
            .list_topologies(None)
            .await?
            .into_iter()
            .filter(|t| t.id != self.self_id)
            .collect();
        let peers = Arc::new(peers);
        *self.peers.write().expect("peers lock") = Some((Instant::now(), epoch, peers.clone()));
        Ok(peers)
    }

    /// A peer by id, whatever its status (for pinned lookups and replication).
    pub async fn peer(&self, id: &str) -> Result<Topology> {
        self.meta
            .get_topology(id)
            .await?
            .filter(|t| t.status != TopologyStatus::Deleted)
            .ok_or_else(|| Error::not_found(format!("site {id} is not in the topology")))
    }

    /// Finds a site holding the target. `pinned` restricts the search to that site.
    pub async fn locate(
        &self,
        target: &Target,
        caller: &Caller<'_>,
        pinned: Option<&str>,
    ) -> Result<Option<Located>> {
        self.locate_checked(target, caller, pinned, false).await
    }

    /// Like [`Self::locate`]; with `full_check` the peers are asked with `fullCheck=true` (they
    /// look at their storage, not only at their metadata) and no cached answer is trusted.
    pub async fn locate_checked(
        &self,
        target: &Target,
        caller: &Caller<'_>,
        pinned: Option<&str>,
        full_check: bool,
    ) -> Result<Option<Located>> {
        if let Some(site) = pinned {
            let peer = self.peer(site).await?;
            return self.ask(&peer, target, caller, full_check).await;
        }
        if !full_check {
            if let Some(hit) = self.cached(target) {
                metrics::counter!("mirrorgate_topology_cache_total", "result" => "hit")
                    .increment(1);
                return Ok(hit);
            }
        }
        metrics::counter!("mirrorgate_topology_cache_total", "result" => "miss").increment(1);
        let peers = self.up_peers().await?;
        let mut asked = FuturesUnordered::new();
        let mut skipped = 0;
        for peer in peers.iter() {
            if self.is_skipped(&peer.id) {
                skipped += 1;
                continue;
            }
            if asked.is_empty() {
                // Only lookups that send HEADs to peers count against the client's budget.
                self.check_miss_budget(caller.client_id)?;
            }
            asked.push(self.ask(peer, target, caller, full_check));
        }
        let mut clean = skipped == 0;
        while let Some(answer) = asked.next().await {
            match answer {
                Ok(Some(found)) => {
                    metrics::counter!("mirrorgate_topology_lookups_total", "result" => "found")
                        .increment(1);
                    self.remember(
                        target,
                        Cached::Found(found.clone()),
                        self.config.positive_ttl_ms,
                    );
                    return Ok(Some(found));
                }
                Ok(None) => {}
                Err(_) => clean = false,
            }
        }
        metrics::counter!("mirrorgate_topology_lookups_total", "result" => "not_found")
            .increment(1);
        if clean && !full_check {
            self.remember(target, Cached::Missing, self.config.negative_ttl_ms);
        }
        Ok(None)
    }

    /// After a lookup found `bucket` nowhere: whether an UP peer knows it as deleted (410 to
    /// `GET /replicator/remote/buckets/{bucket}`, the route whose answers include 410), so the
    /// caller can tell "deleted" (410) from "never existed" (404) even when this site never
    /// held the bucket. Asks the peers in parallel and costs the client one lookup of its
    /// budget; with none left it answers false (404) without asking.
    pub async fn deleted_at_a_peer(&self, bucket: &str, caller: &Caller<'_>) -> bool {
        let Ok(peers) = self.up_peers().await else {
            return false;
        };
        if peers.is_empty() || self.check_miss_budget(caller.client_id).is_err() {
            return false;
        }
        let target = Target {
            bucket: bucket.to_owned(),
            object: None,
        };
        let mut asked: FuturesUnordered<_> = peers
            .iter()
            .filter(|p| !self.is_skipped(&p.id))
            .map(|peer| {
                let url = format!("{}{}", peer.uri.trim_end_matches('/'), target.remote_path());
                self.peer_request(reqwest::Method::GET, url)
                    .header(CLIENT_ID, caller.client_id)
                    .header(OP_ID, caller.op_id)
                    .timeout(self.peer_timeout())
                    .send()
            })
            .collect();
        while let Some(answer) = asked.next().await {
            if matches!(answer, Ok(r) if r.status() == http::StatusCode::GONE) {
                return true;
            }
        }
        false
    }

    fn cached(&self, target: &Target) -> Option<Option<Located>> {
        let entry = self.cache.get(target)?;
        if entry.until < Instant::now() {
            drop(entry);
            self.cache.remove(target);
            return None;
        }
        Some(match &entry.value {
            Cached::Found(l) => Some(l.clone()),
            Cached::Missing => None,
        })
    }

    fn remember(&self, target: &Target, value: Cached, ttl_ms: u64) {
        let max = self.config.cache_max_entries;
        if ttl_ms == 0 || max == 0 {
            return;
        }
        let until = Instant::now() + Duration::from_millis(ttl_ms);
        {
            let _inserting = self.inserting.lock().unwrap_or_else(|e| e.into_inner());
            if self.cache.len() >= max && !self.cache.contains_key(target) {
                self.make_room(max);
            }
            self.cache
                .insert(target.clone(), CacheEntry { value, until });
        }
        self.report_cache_size();
    }

    /// Frees at least one slot in a full cache: expired entries first; if none, about a
    /// sixteenth of the entries, those closest to expiry (so the cost is paid once per batch,
    /// not on every insert).
    fn make_room(&self, max: usize) {
        let now = Instant::now();
        self.cache.retain(|_, e| e.until > now);
        if self.cache.len() < max {
            return;
        }
        let mut by_expiry: Vec<(Instant, Target)> = self
            .cache
            .iter()
            .map(|e| (e.value().until, e.key().clone()))
            .collect();
        let batch = (max / 16).max(1).min(by_expiry.len());
        if batch < by_expiry.len() {
            by_expiry.select_nth_unstable_by_key(batch, |(until, _)| *until);
        }
        for (_, key) in by_expiry.into_iter().take(batch) {
            self.cache.remove(&key);
        }
        metrics::counter!("mirrorgate_topology_cache_evictions_total").increment(batch as u64);
    }

    fn is_skipped(&self, peer: &str) -> bool {
        self.health
            .get(peer)
            .and_then(|h| h.skip_until)
            .is_some_and(|until| until > Instant::now())
    }

    /// What this site last heard from `peer`.
    pub fn contact(&self, peer: &str) -> Contact {
        self.health
            .get(peer)
            .map(|h| Contact {
                last_ok_ms: h.last_ok_ms,
                last_failure_ms: h.last_failure_ms,
                consecutive_failures: h.consecutive_failures,
                skipped: h.skip_until.is_some_and(|until| until > Instant::now()),
            })
            .unwrap_or_default()
    }

    /// Notes that `peer` answered a liveness probe (last contact only: the failure counters
    /// belong to real calls).
    pub fn seen(&self, peer: &str) {
        self.health.entry(peer.to_owned()).or_default().last_ok_ms =
            Some(crate::meta::replication::now_ms());
    }

    /// Records the outcome of a call to a peer (for skipping peers that keep failing).
    pub fn record(&self, peer: &str, ok: bool, started: Instant) {
        metrics::histogram!("mirrorgate_peer_request_duration_seconds", "peer" => peer.to_owned())
            .record(started.elapsed().as_secs_f64());
        let mut h = self.health.entry(peer.to_owned()).or_default();
        if ok {
            h.consecutive_failures = 0;
            h.skip_until = None;
            h.last_ok_ms = Some(crate::meta::replication::now_ms());
        } else {
            metrics::counter!("mirrorgate_peer_errors_total", "peer" => peer.to_owned())
                .increment(1);
            h.consecutive_failures += 1;
            h.last_failure_ms = Some(crate::meta::replication::now_ms());
            if h.consecutive_failures >= self.config.peer_failure_threshold {
                h.skip_until =
                    Some(Instant::now() + Duration::from_millis(self.config.peer_backoff_ms));
                tracing::warn!(
                    peer,
                    failures = h.consecutive_failures,
                    "peer keeps failing: skipped for a while"
                );
            }
            let newly_failing = h.consecutive_failures == 1;
            drop(h);
            if newly_failing {
                self.forget_site(peer);
            }
        }
    }

    /// Drops every cached location at a site that just failed, so no later lookup is sent
    /// to it from the cache. Done once per failure episode: a failing site answers no
    /// lookup positively, so nothing new gets cached at it meanwhile.
    fn forget_site(&self, peer: &str) {
        self.cache
            .retain(|_, e| !matches!(&e.value, Cached::Found(l) if l.site.id == peer));
    }

    /// Asks one peer whether it holds the target: Some on 204 with a positive type, None on
    /// 404, Err on anything else (timeout, connection error, 5xx).
    async fn ask(
        &self,
        peer: &Topology,
        target: &Target,
        caller: &Caller<'_>,
        full_check: bool,
    ) -> Result<Option<Located>> {
        let started = Instant::now();
        let mut url = format!("{}{}", peer.uri.trim_end_matches('/'), target.remote_path());
        if full_check {
            url.push_str("?fullCheck=true");
        }
        let sent = self
            .peer_request(reqwest::Method::HEAD, &url)
            .header(CLIENT_ID, caller.client_id)
            .header(OP_ID, caller.op_id)
            .timeout(self.peer_timeout())
            .send()
            .await;
        let answer = match sent {
            Ok(resp) if resp.status().is_success() => {
                let kind = resp
                    .headers()
                    .get(TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                if matches!(kind.as_str(), "OBJECT" | "BUCKET" | "DIRECTORY") {
                    Ok(Some(Located {
                        site: peer.clone(),
                        kind,
                    }))
                } else {
                    Ok(None)
                }
            }
            Ok(resp)
                if resp.status() == http::StatusCode::NOT_FOUND
                    || resp.status() == http::StatusCode::GONE =>
            {
                Ok(None)
            }
            Ok(resp) if resp.status().is_client_error() => Ok(None),
            Ok(resp) => Err(Error::upstream(
                Kind::BadGateway,
                format!("site {} answered {}", peer.id, resp.status()),
            )),
            Err(e) => Err(Error::upstream(
                Kind::BadGateway,
                format!("site {} unreachable: {e}", peer.id),
            )),
        };
        self.record(&peer.id, answer.is_ok(), started);
        if let Err(e) = &answer {
            tracing::info!(peer = %peer.id, "lookup: {e}");
        }
        answer
    }
}
