//! Replication of a large upload overlapped with the upload itself.
//!
//! Source: when a client's upload here is known to be large (`core::uploads`), every
//! replication peer gets a hint (`POST /replicator/remote/prefetch`, best effort, not durable).
//! The upload's completed blocks, with their digests, are readable meanwhile
//! (`GET /replicator/remote/uploads/{id}` and `.../blocks/{index}`, trust class peer).
//!
//! Receiver: a hint starts a *prefetch* that follows the upload as it grows, checks each block
//! against its digest and writes it into a staging file keyed by the upload (`pf-…`), which is
//! never an object. When the source says the upload is READY under a hash, the staging is handed
//! over to the staging of that version, where the order's ranged pull (queued at the source in
//! the transaction that made the upload READY) finds its blocks: it keeps those whose digest
//! is the final list's and fetches only the rest (the tail). So a copy still exists only
//! through an order for a committed version. An upload the source abandons, or a source that
//! restarts (it forgets its uploads and answers 404), makes the prefetch drop its staging; so
//! does a receiver restart (prefetch stagings are removed at start).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::ranged::Staging;
use super::Replication;
use crate::core::uploads::{Outcome, UploadProgress};
use crate::error::{Error, Result};
use crate::model::blocks::BlockHashes;

/// Prefetches running at once at a receiver (more hints are ignored: the order pulls those).
const MAX_FOLLOWING: usize = 4;
/// How often a prefetch asks the source for new blocks when it has none to fetch.
const POLL: Duration = Duration::from_millis(100);
/// A prefetch that learns nothing new (no block, no answer) for this long gives up.
const IDLE_LIMIT: Duration = Duration::from_secs(300);
/// Blocks of one prefetch in flight at once.
const BLOCKS_AT_ONCE: usize = 2;
/// How long a pull waits for a prefetch of the same object to hand over.
const HANDOVER_WAIT: Duration = Duration::from_secs(30);

/// `POST /replicator/remote/prefetch`: a large upload started at `site`.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct PrefetchHint {
    pub site: String,
    pub upload: String,
    pub bucket: String,
    pub name: String,
}

/// `GET /replicator/remote/uploads/{id}`: the blocks of an upload readable now.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct UploadStatus {
    pub bucket: String,
    pub name: String,
    pub block_size: u64,
    /// Hex, 64 characters a block: the blocks complete in the source's temporary file.
    pub digests: String,
    /// `RUNNING`, `COMMITTED` or `ABANDONED`.
    pub state: String,
    /// The version's SHA-256 once `COMMITTED`.
    pub hash: Option<String>,
}

impl UploadStatus {
    /// What the source answers about one of its uploads (blocking: a `stat`).
    pub fn of(upload: &UploadProgress) -> Self {
        let snapshot = upload.snapshot();
        let (state, hash) = match snapshot.outcome {
            Outcome::Running => ("RUNNING", None),
            Outcome::Committed(hash) => ("COMMITTED", Some(hash)),
            Outcome::Abandoned => ("ABANDONED", None),
        };
        Self {
            bucket: upload.bucket.clone(),
            name: upload.name.clone(),
            block_size: snapshot.ready.block_size,
            digests: snapshot.ready.to_hex(),
            state: state.to_owned(),
            hash,
        }
    }
}

/// Who works on which staging, shared by prefetches and pulls of one process.
#[derive(Default)]
pub(crate) struct Stagings {
    /// Objects (bucket, name) a prefetch follows now.
    following: HashSet<(String, String)>,
    /// Staging files a ranged pull works on (a hand-over never replaces one of them).
    pulling: HashSet<PathBuf>,
    /// Blocks a prefetch of this process verified into a staging it handed over: a pull takes
    /// them without reading them back (no crash of the machine in between: this process ran
    /// throughout). Index -> (digest, Adler-32).
    trusted: HashMap<PathBuf, BTreeMap<u64, ([u8; 32], u32)>>,
}

// ---- source ---------------------------------------------------------------------------------

/// Tells the replication peers (not paused) that a large upload started here (best effort).
pub fn announce(state: &Replication, upload: &UploadProgress) {
    let hint = PrefetchHint {
        site: state.site_id.clone(),
        upload: upload.id.clone(),
        bucket: upload.bucket.clone(),
        name: upload.name.clone(),
    };
    let state = state.clone();
    tokio::spawn(async move {
        let (peers, pauses) = match (
            state.topology.replication_peers().await,
            state.meta.pause_states().await,
        ) {
            (Ok(peers), Ok(pauses)) => (peers, pauses),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("prefetch hint not sent: {e}");
                return;
            }
        };
        for peer in peers.iter() {
            if pauses.get(&peer.id).is_some_and(|(paused, _)| *paused) {
                continue;
            }
            let url = format!(
                "{}/replicator/remote/prefetch",
                peer.uri.trim_end_matches('/')
            );
            let sent = state.topology.client().post(&url).json(&hint);
            match sent.timeout(Duration::from_secs(5)).send().await {
                Ok(r) if r.status().is_success() => {
                    metrics::counter!("mirrorgate_prefetch_hints_sent_total").increment(1)
                }
                Ok(r) => {
                    tracing::debug!(peer = %peer.id, status = %r.status(), "prefetch hint refused")
                }
                Err(e) => tracing::debug!(peer = %peer.id, "prefetch hint not delivered: {e}"),
            }
        }
    });
}

// ---- receiver -------------------------------------------------------------------------------

/// Starts following the upload a hint names, unless as many prefetches run already (or one
/// for the same object). Returns whether it started.
pub fn follow(state: &Replication, hint: PrefetchHint) -> bool {
    let key = (hint.bucket.clone(), hint.name.clone());
    {
        let mut stagings = state.service.stagings.lock().unwrap();
        if stagings.following.len() >= MAX_FOLLOWING || !stagings.following.insert(key.clone()) {
            return false;
        }
    }
    metrics::counter!("mirrorgate_prefetch_started_total").increment(1);
    let state = state.clone();
    tokio::spawn(async move {
        let staging = Staging::prefetch(&state, &hint.site, &hint.upload);
        let ended = Prefetch::new(&state, &hint, &staging).run().await;
        let how = match ended {
            // Committed before any block was readable: nothing to hand over.
            Ok(Some((_, verified))) if verified.is_empty() => "empty",
            Ok(Some((hash, verified))) => hand_over(&state, &hint, &staging, &hash, verified),
            Ok(None) => "abandoned",
            Err(e) => {
                tracing::info!(bucket = %hint.bucket, name = %hint.name, "prefetch ended: {e}");
                "failed"
            }
        };
        if how != "handed_over" {
            staging.discard().await;
        }
        metrics::counter!("mirrorgate_prefetch_ended_total", "how" => how).increment(1);
        state
            .service
            .stagings
            .lock()
            .unwrap()
            .following
            .remove(&key);
        state.service.prefetch_ended.notify_waiters();
    });
    true
}

/// One prefetch: the source's upload followed into a staging file.
struct Prefetch<'a> {
    state: &'a Replication,
    hint: &'a PrefetchHint,
    staging: &'a Staging,
    base: String,
    file: Option<std::sync::Arc<std::fs::File>>,
    block_size: u64,
    verified: BTreeMap<u64, ([u8; 32], u32)>,
}

/// A prefetch's end: the version's hash and the blocks it verified, or None (abandoned).
type Handover = Option<(String, BTreeMap<u64, ([u8; 32], u32)>)>;

impl<'a> Prefetch<'a> {
    fn new(state: &'a Replication, hint: &'a PrefetchHint, staging: &'a Staging) -> Self {
        Self {
            state,
            hint,
            staging,
            base: String::new(),
            file: None,
            block_size: 0,
            verified: BTreeMap::new(),
        }
    }

    async fn run(mut self) -> Result<Handover> {
        let peer = self.state.topology.peer(&self.hint.site).await?;
        self.base = format!(
            "{}/replicator/remote/uploads/{}",
            peer.uri.trim_end_matches('/'),
            self.hint.upload
        );
        let mut last_news = Instant::now();
        loop {
            if last_news.elapsed() > IDLE_LIMIT {
                return Err(Error::internal("the upload made no progress"));
            }
            let status = match self.status().await {
                Ok(Some(status)) => status,
                Ok(None) => return Ok(None), // the source no longer knows it
                Err(e) => {
                    tracing::debug!("prefetch status: {e}");
                    tokio::time::sleep(POLL * 5).await;
                    continue;
                }
            };
            if status.bucket != self.hint.bucket || status.name != self.hint.name {
                return Err(Error::internal("the source names another object"));
            }
            match (status.state.as_str(), status.hash) {
                ("COMMITTED", Some(hash)) => return Ok(Some((hash, self.verified))),
                ("RUNNING", _) => {}
                _ => return Ok(None),
            }
            let Some(ready) = BlockHashes::from_hex(status.block_size, &status.digests) else {
                return Err(Error::internal("an unreadable block list"));
            };
            let fetched = self.fetch_new(&ready).await?;
            if fetched > 0 {
                last_news = Instant::now();
            } else {
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// The source's status of the upload; None when it answers 404 (unknown: abandoned, or
    /// the source restarted).
    async fn status(&self) -> Result<Option<UploadStatus>> {
        let resp = self
            .state
            .topology
            .client()
            .get(&self.base)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| Error::internal(format!("site {}: {e}", self.hint.site)))?;
        match resp.status().as_u16() {
            200 => Ok(Some(resp.json().await.map_err(|e| {
                Error::internal(format!("upload status from {}: {e}", self.hint.site))
            })?)),
            404 => Ok(None),
            s => Err(Error::internal(format!(
                "site {} answered {s}",
                self.hint.site
            ))),
        }
    }

    /// Fetches the ready blocks not verified yet, a few at once; how many it kept.
    async fn fetch_new(&mut self, ready: &BlockHashes) -> Result<usize> {
        if self.file.is_none() {
            self.block_size = ready.block_size;
            let (staging, block_size) = (self.staging.clone(), ready.block_size);
            let file = tokio::task::spawn_blocking(move || staging.open_growing(block_size))
                .await
                .map_err(|e| Error::internal(e.to_string()))??;
            self.file = Some(std::sync::Arc::new(file));
        }
        if ready.block_size != self.block_size {
            return Err(Error::internal("the source changed its block size"));
        }
        let new: Vec<(u64, [u8; 32])> = (0..ready.digests.len() as u64)
            .filter(|i| !self.verified.contains_key(i))
            .map(|i| (i, ready.digests[i as usize]))
            .collect();
        // Once one block is not served, no further one is asked for; those in flight finish
        // (a block fetched is kept: it is on record in the staging).
        let (unserved, this) = (&AtomicBool::new(false), &*self);
        let mut fetches = futures::stream::iter(new)
            .map(|(index, digest)| async move {
                if unserved.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                let fetched = this.fetch_block(index, digest).await;
                if matches!(fetched, Ok(None)) {
                    unserved.store(true, Ordering::Relaxed);
                }
                fetched
            })
            .buffer_unordered(BLOCKS_AT_ONCE);
        let mut got = Vec::new();
        while let Some(block) = fetches.next().await {
            got.extend(block?);
        }
        drop(fetches);
        let kept = got.len();
        self.verified.extend(got);
        Ok(kept)
    }

    /// One block, checked and written at its offset and recorded; None when the source does
    /// not serve it now (the upload ended meanwhile, or the source is unreachable: the
    /// status, asked next, tells which).
    async fn fetch_block(
        &self,
        index: u64,
        digest: [u8; 32],
    ) -> Result<Option<(u64, ([u8; 32], u32))>> {
        let url = format!("{}/blocks/{index}", self.base);
        let request = self.state.topology.client().get(url);
        let fetched = async {
            let resp = request.timeout(Duration::from_secs(60)).send().await?;
            if resp.status() != http::StatusCode::OK {
                return Ok(None);
            }
            resp.bytes().await.map(Some)
        };
        let block: Bytes = match fetched.await {
            Ok(Some(block)) => block,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::debug!(site = %self.hint.site, "prefetch of block {index}: {e}");
                return Ok(None);
            }
        };
        let file = self
            .file
            .clone()
            .ok_or_else(|| Error::internal("no staging file"))?;
        let len = block.len() as u64;
        let at = (index, index * self.block_size);
        let adler = self.staging.keep(file, at, block, Some(digest)).await?;
        let Some(adler) = adler else {
            // Not a copy of the source's yet: the order's pull verifies (and reports) it.
            return Err(Error::internal(format!(
                "block {index} does not match its digest"
            )));
        };
        metrics::counter!("mirrorgate_prefetch_block_bytes_total").increment(len);
        Ok(Some((index, (digest, adler))))
    }
}

/// The upload is READY under `hash`: its staging becomes that version's, for the order's pull
/// (unless a pull of that version runs already, which then keeps its own).
fn hand_over(
    state: &Replication,
    hint: &PrefetchHint,
    staging: &Staging,
    hash: &str,
    verified: BTreeMap<u64, ([u8; 32], u32)>,
) -> &'static str {
    let target = Staging::of(state, &hint.bucket, &hint.name, hash);
    let mut stagings = state.service.stagings.lock().unwrap();
    if stagings.pulling.contains(target.path()) || target.path().exists() {
        return "pull_first";
    }
    if let Err(e) = staging.rename_to(&target) {
        tracing::warn!("handing a prefetch over: {e}");
        return "failed";
    }
    stagings
        .trusted
        .insert(target.path().to_path_buf(), verified);
    "handed_over"
}

/// A ranged pull's claim on its staging file, taken before it opens it: waits (bounded) for a
/// prefetch of the same object to hand over, then keeps hand-overs away until dropped.
pub(crate) struct PullClaim<'a> {
    state: &'a Replication,
    path: PathBuf,
    /// Blocks a prefetch of this process verified into this staging.
    pub trusted: BTreeMap<u64, ([u8; 32], u32)>,
}

impl<'a> PullClaim<'a> {
    pub(crate) async fn take(
        state: &'a Replication,
        bucket: &str,
        name: &str,
        staging: &Staging,
    ) -> PullClaim<'a> {
        let key = (bucket.to_owned(), name.to_owned());
        let until = tokio::time::Instant::now() + HANDOVER_WAIT;
        loop {
            // Registered before the check, so an ending between the two still wakes it.
            let ended = state.service.prefetch_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let following = state
                .service
                .stagings
                .lock()
                .unwrap()
                .following
                .contains(&key);
            if !following || tokio::time::timeout_at(until, ended).await.is_err() {
                break;
            }
        }
        let path = staging.path().to_path_buf();
        let mut stagings = state.service.stagings.lock().unwrap();
        stagings.pulling.insert(path.clone());
        let trusted = stagings.trusted.remove(&path).unwrap_or_default();
        PullClaim {
            state,
            path,
            trusted,
        }
    }
}

impl Drop for PullClaim<'_> {
    fn drop(&mut self) {
        let mut stagings = self.state.service.stagings.lock().unwrap();
        stagings.pulling.remove(&self.path);
    }
}

/// Removes stagings nothing will use: at start (`idle` None) those of prefetches (their
/// uploads are not followed any more: the orders pull those objects); later, any staging no
/// pull or prefetch wrote for `idle` (e.g. one handed over at a node of this site whose order
/// another node applied), and what was known of the blocks of stagings gone.
pub fn sweep(state: &Replication, idle: Option<Duration>) {
    let dir = state.config.site.data_dir.join("staging");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let unused = match idle {
            None => entry
                .file_name()
                .to_string_lossy()
                .starts_with(Staging::PREFETCH),
            Some(idle) => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > idle)),
        };
        if unused {
            tracing::info!(file = %entry.path().display(), "removing an unused staging file");
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let mut stagings = state.service.stagings.lock().unwrap();
    stagings.trusted.retain(|path, _| path.exists());
}
