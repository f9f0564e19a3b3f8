//! The scrubber: re-reads every READY object of this site, in (bucket, name) order, at no more
//! than `[scrub] bytes_per_second`, and checks its size and SHA-256 (computing adler32 on the
//! way, for rows that lack it). A mismatch, confirmed by a second read, is declared BAD, which
//! queues its repair. The position is saved, so a restart continues the pass.

use std::time::{Duration, Instant};

use adler2::Adler32;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::healing::{self, Detected};
use super::Catalogue;
use crate::error::Result;
use crate::meta::replication::now_ms;
use crate::meta::{Object, Status};
use crate::model::hash;
use crate::model::replica::{adler32_text, ReplicaState};

/// Objects read from the metadata store at a time.
const BATCH: i64 = 64;
/// Shortest pause between two passes, so an empty store is not polled in a loop.
const MIN_PAUSE: Duration = Duration::from_millis(200);

/// What re-reading a stored object found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Good { adler32: String },
    Bad(String),
}

/// Keeps reading under a byte rate.
pub struct Pacer {
    bytes_per_second: u64,
    started: Instant,
    bytes: u64,
}

impl Pacer {
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second: bytes_per_second.max(1),
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Waits until reading `n` more bytes keeps the average under the rate.
    async fn consume(&mut self, n: u64) {
        self.bytes += n;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_second as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Re-reads a stored object and checks its size and SHA-256. A missing file is a bad copy;
/// other read errors are errors (the next pass tries again).
pub async fn verify_stored(
    state: &Catalogue,
    obj: &Object,
    mut pacer: Option<&mut Pacer>,
) -> Result<Verdict> {
    if state.storage.stat(&obj.bucket, &obj.name).await?.is_none() {
        return Ok(Verdict::Bad("missing from storage".into()));
    }
    let mut stream = state.storage.read(&obj.bucket, &obj.name).await?;
    let (mut sha, mut adler, mut size) = (Sha256::new(), Adler32::new(), 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        sha.update(&chunk);
        adler.write_slice(&chunk);
        size += chunk.len() as u64;
        metrics::counter!("mirrorgate_scrub_bytes_total").increment(chunk.len() as u64);
        if let Some(p) = pacer.as_deref_mut() {
            p.consume(chunk.len() as u64).await;
        }
    }
    let actual = hash::encode(&sha.finalize());
    Ok(if size != obj.size {
        Verdict::Bad(format!(
            "size mismatch: {size} bytes, expected {}",
            obj.size
        ))
    } else if Some(actual.as_str()) != obj.hash.as_deref() {
        Verdict::Bad(format!("hash mismatch: bytes hash {actual}"))
    } else {
        Verdict::Good {
            adler32: adler32_text(adler.checksum()),
        }
    })
}

/// The scrubber loop (returns at once when scrubbing is disabled).
pub async fn scrubber(state: Catalogue) {
    let cfg = state.config.scrub.clone();
    if !cfg.enabled {
        return;
    }
    loop {
        match scrub_pass(&state, cfg.bytes_per_second).await {
            Ok(()) => {}
            Err(e) => tracing::warn!("scrubber: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(cfg.interval_secs).max(MIN_PAUSE)).await;
    }
}

/// Continues the current pass to its end.
async fn scrub_pass(state: &Catalogue, bytes_per_second: u64) -> Result<()> {
    let (mut bucket, mut name, pass, started) = state.meta.scrub_cursor().await?;
    let mut pacer = Pacer::new(bytes_per_second);
    loop {
        // A slice of the pass per renewal of the lease: a node that dies leaves the cursor
        // where its last slice ended, and the next holder continues from there.
        if !state.meta.lead("scrubber").await {
            return Ok(());
        }
        let batch = state
            .meta
            .ready_objects_after(&bucket, &name, BATCH)
            .await?;
        let Some(last) = batch.last() else { break };
        (bucket, name) = (last.bucket.clone(), last.name.clone());
        for obj in &batch {
            scrub_one(state, obj, &mut pacer).await;
        }
        state
            .meta
            .save_scrub_cursor(&bucket, &name, pass, started)
            .await?;
    }
    let seconds = (now_ms() - started).max(0) as f64 / 1000.0;
    metrics::counter!("mirrorgate_scrub_passes_total").increment(1);
    metrics::gauge!("mirrorgate_scrub_last_pass_seconds").set(seconds);
    metrics::gauge!("mirrorgate_scrub_last_pass_end_timestamp_seconds")
        .set(now_ms() as f64 / 1000.0);
    metrics::gauge!("mirrorgate_scrub_pass_objects").set(0.0);
    state
        .meta
        .save_scrub_cursor("", "", pass + 1, now_ms())
        .await?;
    Ok(())
}

async fn scrub_one(state: &Catalogue, obj: &Object, pacer: &mut Pacer) {
    let own = state
        .meta
        .replica(&obj.bucket, &obj.name, &state.site_id)
        .await;
    let own = match own {
        Ok(Some(own)) => Some(own),
        // A READY object without a row (a crash between the two writes): the row comes back.
        Ok(None) => {
            let restored = state.meta.replica_stored(obj, &state.site_id, None).await;
            if let Err(e) = restored {
                return tracing::warn!("scrubber: {e}");
            }
            None
        }
        Err(e) => return tracing::warn!("scrubber: {e}"),
    };
    if own.as_ref().is_some_and(|r| r.state == ReplicaState::Bad) {
        return; // already declared; its repair is queued
    }
    let verdict = verify_stored(state, obj, Some(pacer)).await;
    metrics::counter!("mirrorgate_scrub_objects_total").increment(1);
    metrics::gauge!("mirrorgate_scrub_pass_objects").increment(1.0);
    match verdict {
        Ok(Verdict::Good { adler32 }) => {
            if own.is_none_or(|r| r.adler32.is_none()) {
                let filled = state
                    .meta
                    .fill_adler32(&obj.bucket, &obj.name, &state.site_id, &adler32)
                    .await;
                if let Err(e) = filled {
                    tracing::warn!("scrubber: {e}");
                }
            }
        }
        Ok(Verdict::Bad(why)) => confirm_and_declare(state, obj, &why).await,
        Err(e) => tracing::info!(
            bucket = %obj.bucket,
            object = %obj.name,
            "scrubber could not read the object: {e}"
        ),
    }
}

/// A mismatch may be a race with a delete or a rewrite: read the metadata and the bytes again
/// before declaring the copy bad.
async fn confirm_and_declare(state: &Catalogue, obj: &Object, why: &str) {
    let current = match state.meta.get_object(&obj.bucket, &obj.name).await {
        Ok(Some(o)) if o.status == Status::Ready && o.hash == obj.hash => o,
        _ => return,
    };
    if !matches!(
        verify_stored(state, &current, None).await,
        Ok(Verdict::Bad(_))
    ) {
        return;
    }
    metrics::counter!("mirrorgate_scrub_mismatches_total").increment(1);
    metrics::counter!("mirrorgate_hash_mismatches_total", "source" => "scrub").increment(1);
    healing::declare_detected(state, &obj.bucket, &obj.name, Detected::Scrub, why).await;
}
