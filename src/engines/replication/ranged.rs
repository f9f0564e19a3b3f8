//! Large objects are pulled as several ranges at once (bounded concurrency), each block
//! checked against the source's block hashes as it arrives and written at its offset in a
//! staging file under `<data_dir>/staging`. The staging file and the list of its verified
//! blocks (`.blocks`) survive a cut connection, a peer restart and a receiver restart: the
//! next attempt fetches only the blocks not verified yet. Neither is synced block by block
//! (what a killed process wrote stays in the page cache); instead the blocks on record are
//! read and checked again when a pull resumes, so a machine crash that lost some of them only
//! makes them travel again. The complete staging file then becomes the copy in place
//! (`objects::store_staged`: size checked against the order, synced and adopted by the
//! storage; no second write, and no second SHA-256: every byte was checked by its block).
//!
//! A staging file belongs to one committed version (its name hashes bucket, name and the
//! order's hash): a source only announces an object once it committed it, so nothing staged
//! here is ever of an upload the source did not finish, and a staging file whose order ended
//! (stored, superseded, failed for good) is removed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::applier::{report_corrupt, Failure};
use super::prefetch::PullClaim;
use super::Replication;
use crate::core::objects::VerifiedStaging;
use crate::core::wire::{CLIENT_ID, HASH, OP_ID, VERIFY, VERIFY_BY_RECEIVER};
use crate::error::Result;
use crate::model::blocks::{self, BlockHashes};
use crate::model::order::Order;
use crate::model::replica::{adler32_concat, adler32_of};
use crate::storage::ByteStream;

/// Retries of a cut range within one attempt (each resumes after its last verified block).
const RANGE_RETRIES: u32 = 8;

/// Where one version's pull is staged.
#[derive(Clone)]
pub(crate) struct Staging {
    file: PathBuf,
    progress: PathBuf,
}

impl Staging {
    /// How the names of prefetch stagings start (`prefetch`).
    pub(crate) const PREFETCH: &'static str = "pf-";

    pub(crate) fn of(state: &Replication, bucket: &str, name: &str, hash: &str) -> Self {
        Self::named(state, "", &format!("{bucket}\0{name}\0{hash}"))
    }

    /// The staging of a prefetch of upload `upload` at `site` (no version yet).
    pub(crate) fn prefetch(state: &Replication, site: &str, upload: &str) -> Self {
        Self::named(state, Self::PREFETCH, &format!("{site}\0{upload}"))
    }

    fn named(state: &Replication, prefix: &str, key: &str) -> Self {
        let key = Sha256::digest(key.as_bytes());
        let stem: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let dir = state.config.site.data_dir.join("staging");
        Self {
            file: dir.join(format!("{prefix}{stem}.part")),
            progress: dir.join(format!("{prefix}{stem}.blocks")),
        }
    }

    /// Starts an empty staging of blocks of `block_size`, of a size not known yet (a prefetch).
    pub(crate) fn open_growing(&self, block_size: u64) -> Result<std::fs::File> {
        self.start(block_size, true)
    }

    /// Makes this staging `target`'s (its block log first: a log without its file is no
    /// record, a file without its log is swept).
    pub(crate) fn rename_to(&self, target: &Staging) -> Result<()> {
        std::fs::rename(&self.progress, &target.progress)?;
        std::fs::rename(&self.file, &target.file)?;
        Ok(())
    }

    /// Opens (or starts) the staging of an object of `size` bytes in blocks of `block_size`,
    /// with the blocks verified so far.
    fn open(&self, size: u64, block_size: u64) -> Result<(std::fs::File, BTreeSet<u64>)> {
        let done = self.verified(block_size).unwrap_or_default();
        let file = self.start(block_size, done.is_empty())?;
        file.set_len(size)?;
        Ok((file, done))
    }

    /// The staging file, read-write; `fresh`: emptied, with a new block log for blocks of
    /// `block_size`.
    fn start(&self, block_size: u64, fresh: bool) -> Result<std::fs::File> {
        if let Some(parent) = self.file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if fresh {
            let mut header = std::fs::File::create(&self.progress)?;
            header.write_all(&block_size.to_le_bytes())?;
            header.sync_all()?;
        }
        Ok(std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(fresh)
            .open(&self.file)?)
    }

    /// The verified blocks on record, None when there is no usable record.
    fn verified(&self, block_size: u64) -> Option<BTreeSet<u64>> {
        let bytes = std::fs::read(&self.progress).ok()?;
        let (head, rest) = bytes.split_at_checked(8)?;
        if u64::from_le_bytes(head.try_into().ok()?) != block_size || !self.file.exists() {
            return None;
        }
        // A torn last entry (crash while appending) is ignored.
        Some(
            rest.chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as u64)
                .collect(),
        )
    }

    /// Records block `index` verified (not synced: see the module's comment).
    fn record(&self, index: u64) -> Result<()> {
        let mut progress = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.progress)?;
        progress.write_all(&(index as u32).to_le_bytes())?;
        Ok(())
    }

    /// Checks a received block against its digest and, if it matches, writes it at its
    /// offset in `file` (this staging's) and records it, in one blocking call. Its Adler-32,
    /// or None when it does not match (nothing written).
    pub(crate) async fn keep(
        &self,
        file: Arc<std::fs::File>,
        (index, offset): (u64, u64),
        block: Bytes,
        digest: Option<[u8; 32]>,
    ) -> Result<Option<u32>> {
        let staging = self.clone();
        tokio::task::spawn_blocking(move || -> Result<Option<u32>> {
            if Some(blocks::digest(&block)) != digest {
                return Ok(None);
            }
            file.write_all_at(&block, offset)?;
            staging.record(index)?;
            Ok(Some(adler32_of(&block)))
        })
        .await
        .map_err(|e| crate::error::Error::internal(e.to_string()))?
    }

    /// The staging file (complete once `pull` returned it).
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.file
    }

    /// The staged bytes, once complete.
    pub(crate) async fn stream(&self) -> Result<ByteStream> {
        crate::core::stream::file_stream(&self.file).await
    }

    /// Removes the staging (the pull ended: stored, superseded, or failed for good).
    pub(crate) async fn discard(&self) {
        let _ = tokio::fs::remove_file(&self.file).await;
        let _ = tokio::fs::remove_file(&self.progress).await;
    }
}

/// Blocks a previous attempt recorded, read back and checked again (a crash of the machine
/// may have lost what it wrote), with their Adler-32: those that still match. Blocks a
/// prefetch of this process verified (`trusted`) are not read again: their digest need only be
/// the version's.
fn recheck(
    file: &std::fs::File,
    recorded: &BTreeSet<u64>,
    trusted: &BTreeMap<u64, ([u8; 32], u32)>,
    blocks: &BlockHashes,
    size: u64,
) -> Result<BTreeMap<u64, u32>> {
    let mut kept = BTreeMap::new();
    let mut buf = Vec::new();
    for &index in recorded {
        let Some(expected) = blocks.digests.get(index as usize) else {
            continue;
        };
        if let Some((digest, adler)) = trusted.get(&index) {
            if digest == expected {
                kept.insert(index, *adler);
            }
            continue;
        }
        let (from, to) = blocks.span(index, size);
        buf.resize((to - from) as usize, 0);
        file.read_exact_at(&mut buf, from)?;
        if blocks::digest(&buf) == *expected {
            kept.insert(index, adler32_of(&buf));
        }
    }
    Ok(kept)
}

/// What the workers of one pull share.
struct Pull<'a> {
    state: &'a Replication,
    order: &'a Order,
    site: &'a str,
    url: String,
    size: u64,
    blocks: BlockHashes,
    staging: &'a Staging,
    file: Arc<std::fs::File>,
    runs: Mutex<VecDeque<(u64, u64)>>,
    /// The verified blocks and their Adler-32.
    verified: Mutex<BTreeMap<u64, u32>>,
    retries: Mutex<u32>,
    failed: Mutex<Option<Failure>>,
}

/// Pulls `name` from `site` by ranges into its staging file, when the object is large enough
/// and the source has its block hashes. Returns the source's object headers and the staging
/// (None: pull it as one stream instead).
pub(crate) async fn pull(
    state: &Replication,
    order: &Order,
    name: &str,
    site: &str,
) -> std::result::Result<Option<(HeaderMap, Staging, VerifiedStaging)>, Failure> {
    let cfg = &state.config.replication;
    let (Some(size), Some(hash)) = (order.size, order.hash.as_deref()) else {
        return Ok(None);
    };
    if size < cfg.ranged_pull_min_bytes.max(1) {
        return Ok(None);
    }
    let base = format!(
        "{}/replicator/remote",
        state.topology.peer(site).await?.uri.trim_end_matches('/')
    );
    let object = format!("{}/{name}", order.bucket_name);
    let Some((headers, blocks)) = source_blocks(state, order, &base, &object, site).await? else {
        return Ok(None);
    };
    let count = blocks.digests.len() as u64;
    if count != size.div_ceil(blocks.block_size) {
        return Ok(None); // a list that does not cover the object: not one to verify by
    }
    if headers.get(HASH).and_then(|v| v.to_str().ok()) != Some(hash) {
        return Err(Failure::Permanent(format!(
            "site {site} holds another version of {object}"
        )));
    }
    let staging = Staging::of(state, &order.bucket_name, name, hash);
    let mut claim = PullClaim::take(state, &order.bucket_name, name, &staging).await;
    let (file, done, blocks) = {
        let (opening, trusted) = (staging.clone(), std::mem::take(&mut claim.trusted));
        tokio::task::spawn_blocking(move || -> Result<_> {
            let (file, recorded) = opening.open(size, blocks.block_size)?;
            let done = recheck(&file, &recorded, &trusted, &blocks, size)?;
            Ok((file, done, blocks))
        })
        .await
        .map_err(|e| Failure::Transient(e.to_string()))??
    };
    let missing: Vec<u64> = (0..count).filter(|i| !done.contains_key(i)).collect();
    if !done.is_empty() {
        tracing::info!(object = %object, verified = done.len(), blocks = count, "resuming a pull from its verified blocks");
    }
    let pull = Pull {
        state,
        order,
        site,
        url: format!("{base}/buckets/{object}"),
        size,
        runs: Mutex::new(split_runs(&missing, cfg.pull_streams.max(1))),
        blocks,
        staging: &staging,
        file: Arc::new(file),
        verified: Mutex::new(done),
        retries: Mutex::new(0),
        failed: Mutex::new(None),
    };
    let workers = (0..cfg.pull_streams.max(1)).map(|_| pull.work());
    futures::future::join_all(workers).await;
    if let Some(failure) = pull.failed.lock().unwrap().take() {
        return Err(failure);
    }
    let verified = pull.verified.into_inner().unwrap();
    if verified.len() as u64 != count {
        return Err(Failure::Transient(format!(
            "{} of {count} blocks of {object} verified",
            verified.len()
        )));
    }
    let adler32 = verified.iter().fold(1, |whole, (&index, &block)| {
        let (from, to) = pull.blocks.span(index, size);
        adler32_concat(whole, block, to - from)
    });
    let path = staging.path().to_path_buf();
    let blocks = pull.blocks;
    let verified = VerifiedStaging {
        path,
        blocks,
        adler32,
    };
    Ok(Some((headers, staging, verified)))
}

/// The source's object headers and block hashes (None: it has none for this version).
async fn source_blocks(
    state: &Replication,
    order: &Order,
    base: &str,
    object: &str,
    site: &str,
) -> std::result::Result<Option<(HeaderMap, BlockHashes)>, Failure> {
    let resp = state
        .topology
        .client()
        .get(format!("{base}/blocks/{object}"))
        .header(CLIENT_ID, &order.client_id)
        .header(OP_ID, &order.op_id)
        .send()
        .await
        .map_err(|e| Failure::Transient(format!("site {site} unreachable: {e}")))?;
    match resp.status().as_u16() {
        200 => {}
        404 | 410 => return Ok(None),
        s => return Err(Failure::Transient(format!("site {site} answered {s}"))),
    }
    let headers = resp.headers().clone();
    let list: BlockList = resp
        .json()
        .await
        .map_err(|e| Failure::Transient(format!("block list from {site}: {e}")))?;
    Ok(BlockHashes::from_hex(list.block_size, &list.digests).map(|b| (headers, b)))
}

/// `GET /replicator/remote/blocks/...` answers this, with the object's headers.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockList {
    pub block_size: u64,
    /// Hex, 64 characters a block.
    pub digests: String,
}

/// The missing blocks as runs of consecutive blocks, about as many as there are streams.
fn split_runs(missing: &[u64], streams: usize) -> VecDeque<(u64, u64)> {
    let per_run = missing.len().div_ceil(streams).max(1);
    let mut runs = VecDeque::new();
    let mut current: Option<(u64, u64)> = None;
    for &i in missing {
        current = match current {
            Some((first, last)) if last + 1 == i && (i - first) < per_run as u64 => {
                Some((first, i))
            }
            Some(run) => {
                runs.push_back(run);
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    runs.extend(current);
    runs
}

impl Pull<'_> {
    /// One stream: takes runs until none is left; a cut run goes back to the queue from its
    /// first unverified block.
    async fn work(&self) {
        loop {
            if self.failed.lock().unwrap().is_some() {
                return;
            }
            let Some(run) = self.runs.lock().unwrap().pop_front() else {
                return;
            };
            let Err((next, failure)) = self.fetch_run(run).await else {
                continue;
            };
            let retry = matches!(failure, Failure::Transient(ref why) if !why.contains("integrity"))
                && {
                    let mut retries = self.retries.lock().unwrap();
                    *retries += 1;
                    *retries <= RANGE_RETRIES
                };
            if retry {
                tracing::info!(site = %self.site, "range cut, resuming from block {next}: {}", failure.message());
                self.runs.lock().unwrap().push_back((next, run.1));
            } else {
                self.failed.lock().unwrap().get_or_insert(failure);
                return;
            }
        }
    }

    /// Fetches blocks `[first, last]`; on failure, the first block not verified yet.
    async fn fetch_run(
        &self,
        (first, last): (u64, u64),
    ) -> std::result::Result<(), (u64, Failure)> {
        let (from, _) = self.blocks.span(first, self.size);
        let (_, to) = self.blocks.span(last, self.size);
        let resp = self
            .state
            .topology
            .client()
            .get(&self.url)
            .header(CLIENT_ID, &self.order.client_id)
            .header(OP_ID, &self.order.op_id)
            .header(http::header::ACCEPT, "application/octet-stream")
            .header(http::header::RANGE, format!("bytes={from}-{}", to - 1))
            .header(VERIFY, VERIFY_BY_RECEIVER)
            .send()
            .await
            .map_err(|e| {
                (
                    first,
                    Failure::Transient(format!("site {} unreachable: {e}", self.site)),
                )
            })?;
        if resp.status() != http::StatusCode::PARTIAL_CONTENT
            || resp.headers().get(HASH).and_then(|v| v.to_str().ok()) != self.order.hash.as_deref()
        {
            let why = format!("site {} answered {} to a range", self.site, resp.status());
            return Err((first, Failure::Transient(why)));
        }
        let mut body = resp.bytes_stream();
        let mut index = first;
        let mut block = BytesMut::new();
        let mut block_len = self.block_len(index);
        while index <= last {
            let chunk = match body.next().await {
                Some(Ok(chunk)) => chunk,
                other => {
                    self.thrown_away(block.len());
                    let why = match other {
                        Some(Err(e)) => format!("stream from site {} broke: {e}", self.site),
                        _ => format!("stream from site {} ended early", self.site),
                    };
                    return Err((index, Failure::Transient(why)));
                }
            };
            let mut chunk = &chunk[..];
            while !chunk.is_empty() && index <= last {
                let take = ((block_len as usize) - block.len()).min(chunk.len());
                block.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                if block.len() as u64 == block_len {
                    self.keep_block(index, block.split().freeze())
                        .await
                        .map_err(|f| (index, f))?;
                    index += 1;
                    block_len = self.block_len(index);
                }
            }
        }
        Ok(())
    }

    fn block_len(&self, index: u64) -> u64 {
        let (from, to) = self.blocks.span(index, self.size);
        to.saturating_sub(from)
    }

    /// Bytes of an unfinished block, received for nothing: they travel again on resume.
    fn thrown_away(&self, bytes: usize) {
        metrics::counter!("mirrorgate_pull_resumed_bytes_total").increment(bytes as u64);
    }

    /// Checks a received block against the source's hash and stages it: hashed, written at
    /// its offset and recorded in one blocking call; a block that does not match is dropped.
    async fn keep_block(&self, index: u64, block: Bytes) -> std::result::Result<(), Failure> {
        let expected = self.blocks.digests.get(index as usize).copied();
        let (file, staging) = (self.file.clone(), self.staging);
        let offset = self.blocks.span(index, self.size).0;
        let len = block.len() as u64;
        let matched = staging
            .keep(file, (index, offset), block, expected)
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
        let Some(adler) = matched else {
            metrics::counter!("mirrorgate_hash_mismatches_total", "source" => "replication")
                .increment(1);
            let why = format!(
                "hash mismatch: block {index} from {} does not match",
                self.site
            );
            let o = self.order;
            let name = o.object_name.as_deref().unwrap_or_default();
            let hash = o.hash.as_deref().unwrap_or_default();
            report_corrupt(self.state, self.site, &o.bucket_name, name, hash, &why);
            return Err(Failure::Transient(format!("integrity: {why}")));
        };
        self.verified.lock().unwrap().insert(index, adler);
        metrics::counter!("mirrorgate_pull_block_bytes_total").increment(len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_blocks_split_into_runs_per_stream() {
        let all: Vec<u64> = (0..10).collect();
        let runs: Vec<_> = split_runs(&all, 4).into_iter().collect();
        assert_eq!(runs, vec![(0, 2), (3, 5), (6, 8), (9, 9)]);
        let holes = [0, 1, 5, 6, 7, 9];
        let runs: Vec<_> = split_runs(&holes, 1).into_iter().collect();
        assert_eq!(runs, vec![(0, 1), (5, 7), (9, 9)]);
        assert!(split_runs(&[], 4).is_empty());
    }
}
