//! Object operations shared by the accessor, the replicator routes and the replication workers:
//! storing a stream (hash and size checked before anything becomes visible) and reading a
//! stored object with verification on the way out.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::Site;
use crate::core::digest::SideHashes;
use crate::core::stream::{self, OnMismatch, VerifyBlocks};
use crate::core::uploads::{InProgress, UploadStart};
use crate::error::{Error, Kind, Origin, Result};
use crate::meta::{Object, Status, Verified, VersionToDelete};
use crate::model::blocks::BlockHashes;
use crate::model::hash;
use crate::model::order::Action;
use crate::model::order::WriteOrigin;
use crate::storage::{ByteStream, ObjectWriter};

/// What the sender says about the bytes it sends.
#[derive(Debug, Default, Clone)]
pub struct Expected {
    pub size: Option<u64>,
    pub hash: Option<String>,
}

/// Undoes an upload if its future is dropped before it finished (client gone): the bytes, if
/// they were committed already, then the UPLOAD row (which keeps other writers of the name
/// out until the bytes are gone).
struct UploadGuard {
    site: Option<Site>,
    obj: Object,
    committed: bool,
    /// A metadata write handed to the group committer (registration or READY): it runs to its
    /// end even if this upload is dropped, so the undo waits for its outcome.
    in_flight: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl UploadGuard {
    fn disarm(mut self) {
        self.site = None;
    }

    /// Runs `write` in its own task and waits for it; if this upload is dropped meanwhile,
    /// the undo learns the write's outcome first.
    async fn settle<F>(&mut self, write: F) -> Result<()>
    where
        F: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        let handle = self.in_flight.insert(tokio::spawn(write));
        let outcome = handle
            .await
            .map_err(|e| Error::internal(format!("metadata write: {e}")));
        self.in_flight = None;
        outcome?
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        if let Some(site) = self.site.take() {
            let (obj, committed) = (self.obj.clone(), self.committed);
            let in_flight = self.in_flight.take();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let wrote = match in_flight {
                        Some(write) => matches!(write.await, Ok(Ok(()))),
                        None => false,
                    };
                    if wrote && committed {
                        return; // marked READY after all: the upload completed
                    }
                    if let Err(e) = forget_upload(&site, &obj, committed).await {
                        tracing::warn!(
                            "could not forget interrupted upload {}/{}: {e}",
                            obj.bucket,
                            obj.name
                        );
                    }
                });
            }
        }
    }
}

/// Removes what an upload that will not complete left: committed bytes first, then its row.
/// The storage delete is tried for a while (a storage that just failed the commit is likely
/// to fail once more): while it fails the row stays UPLOAD, which keeps the name's bytes
/// accounted for.
async fn forget_upload(site: &Site, obj: &Object, committed: bool) -> Result<()> {
    if committed {
        let delete = || site.storage.delete(&obj.bucket, &obj.name);
        let first = Duration::from_millis(250);
        if tokio::time::timeout(FORGET_WAIT, once_storage_answers(first, delete))
            .await
            .is_err()
        {
            let e = Error::storage(format!(
                "the storage did not remove the bytes of the failed upload of {}/{} within {} s",
                obj.bucket,
                obj.name,
                FORGET_WAIT.as_secs()
            ));
            // The storage is away for longer: the row stays UPLOAD until it is back.
            let (site, obj) = (site.clone(), obj.clone());
            tokio::spawn(async move { forget_when_storage_answers(&site, &obj).await });
            return Err(e);
        }
    }
    site.meta
        .cancel_upload(&obj.bucket, &obj.name, &obj.id)
        .await
}

/// How long removing the bytes of an upload that will not complete is tried before the caller
/// is answered; then [`forget_when_storage_answers`] goes on.
const FORGET_WAIT: Duration = Duration::from_secs(8);

/// Removes the bytes of an upload that will not complete once the storage answers again
/// (every 10 s at most), then its row. Left UPLOAD for good, the name could never be written,
/// deleted or replicated to again (long profile, seed 3011).
async fn forget_when_storage_answers(site: &Site, obj: &Object) {
    once_storage_answers(Duration::from_secs(1), || {
        site.storage.delete(&obj.bucket, &obj.name)
    })
    .await;
    match site
        .meta
        .cancel_upload(&obj.bucket, &obj.name, &obj.id)
        .await
    {
        Ok(()) => {
            tracing::info!(bucket = %obj.bucket, object = %obj.name, "an upload that failed is forgotten now that the storage answers")
        }
        Err(e) => {
            tracing::warn!(bucket = %obj.bucket, object = %obj.name, "forgetting a failed upload: {e}")
        }
    }
}

/// Stores an object: registers it UPLOAD (the bucket must be READY, checked in the same
/// step), streams the body to storage while hashing, checks size and hash against what the
/// sender declared, commits the bytes, then marks it READY (compare-and-set on this upload's
/// row). Any failure (or the future being dropped) leaves neither bytes nor metadata behind.
pub async fn store(
    site: &Site,
    obj: Object,
    body: ByteStream,
    expected: Expected,
    origin: &WriteOrigin,
) -> Result<Object> {
    store_incoming(site, obj, Incoming::Stream(body), expected, origin).await
}

/// A file of this site's disk every block of which was checked, as it was written, against the
/// block hashes the source recorded for the version an order names, in the same pass as that
/// version's SHA-256 (by the ranged pull that filled it). Its bytes are that version: they are
/// not hashed again (one SHA-256 per byte per hop).
pub struct VerifiedStaging {
    pub path: PathBuf,
    pub blocks: BlockHashes,
    /// Adler-32 of the whole file, combined from its blocks' (for the catalogue).
    pub adler32: u32,
}

/// [`store`] for bytes already in a file of this site's disk, verified block by block. Its
/// size is checked against the order, then it becomes the object's bytes in place where the
/// storage can adopt it (fs: one rename, no second write); elsewhere it is streamed in once.
pub async fn store_staged(
    site: &Site,
    obj: Object,
    staged: VerifiedStaging,
    expected: Expected,
    origin: &WriteOrigin,
) -> Result<Object> {
    store_incoming(site, obj, Incoming::Staged(staged), expected, origin).await
}

/// Where the bytes of a store come from.
enum Incoming {
    Stream(ByteStream),
    Staged(VerifiedStaging),
}

async fn store_incoming(
    site: &Site,
    mut obj: Object,
    incoming: Incoming,
    expected: Expected,
    origin: &WriteOrigin,
) -> Result<Object> {
    obj.status = Status::Upload;
    let mut guard = UploadGuard {
        site: Some(site.clone()),
        obj: obj.clone(),
        committed: false,
        in_flight: None,
    };
    // A commit that failed may have happened all the same (an S3 CopyObject whose answer was
    // lost): from its first try on, the bytes at the name are this upload's to remove.
    let (s, o) = (site.clone(), obj.clone());
    if let Err(e) = guard
        .settle(async move { s.meta.begin_upload(&o).await })
        .await
    {
        guard.disarm(); // not registered: nothing to undo
        return Err(e);
    }
    let overlap = overlaps_with_peers(site, origin, &expected);
    let received = match incoming {
        Incoming::Stream(body) => {
            let committed = &mut guard.committed;
            receive(site, &obj, body, &expected, committed, overlap).await
        }
        Incoming::Staged(staged) => {
            adopt_staged(site, &obj, staged, &expected, &mut guard.committed).await
        }
    };
    let Received {
        size,
        sha256,
        adler32,
        blocks,
        published,
    } = match received {
        Ok(r) => r,
        Err(e) => return abandon(site, guard, e).await,
    };
    let (s, o, origin_owned, hash) = (site.clone(), obj.clone(), origin.clone(), sha256.clone());
    let committing = async move {
        let verified = Verified {
            size,
            sha256: &hash,
            adler32: &adler32,
            blocks: &blocks,
        };
        commit_upload(&s, &o, &verified, &origin_owned).await
    };
    if let Err(e) = guard.settle(committing).await {
        return abandon(site, guard, e).await;
    }
    guard.disarm();
    if let Some(upload) = published {
        upload.committed(&sha256);
    }
    site.hooks().object_changed(&obj.bucket, Some(&obj.name));
    obj.size = size;
    obj.hash = Some(sha256);
    obj.status = Status::Ready;
    Ok(obj)
}

/// An upload failed: undo it (the guard stays armed meanwhile, so a drop still undoes it).
async fn abandon(site: &Site, guard: UploadGuard, e: Error) -> Result<Object> {
    forget_upload(site, &guard.obj, guard.committed).await?;
    guard.disarm();
    Err(e)
}

/// Marks the upload READY, records its block hashes and queues its orders in the same
/// transaction.
async fn commit_upload(
    site: &Site,
    obj: &Object,
    verified: &Verified<'_>,
    origin: &WriteOrigin,
) -> Result<()> {
    let target = Some((obj.name.as_str(), verified.size, verified.sha256));
    let orders = site
        .orders_for(origin, &obj.bucket, target, Action::Create)
        .await?;
    site.meta
        .finish_upload(obj, verified, replica_source(origin), &orders)
        .await?;
    site.queued(&orders);
    Ok(())
}

fn replica_source(origin: &WriteOrigin) -> Option<&str> {
    match origin {
        WriteOrigin::Replica { from_site } => Some(from_site.as_str()),
        WriteOrigin::Client { .. } => None,
    }
}

/// Replaces a READY object by a new version (an UPDATE order from a peer). The new bytes are
/// verified before they take the old ones' place (staged write, then an atomic commit), and
/// the row changes by compare-and-set on the version it replaces: a pull that fails or does
/// not verify leaves the old version exactly as it was.
pub async fn replace(
    site: &Site,
    current: &Object,
    mut new: Object,
    body: ByteStream,
    expected: Expected,
    origin: &WriteOrigin,
) -> Result<Object> {
    let received = receive(site, &new, body, &expected, &mut false, false).await?;
    new.size = received.size;
    new.hash = Some(received.sha256);
    new.status = Status::Ready;
    let copy = (&received.blocks, received.adler32.as_str());
    if let Err(e) = site
        .meta
        .replace_object(current, &new, replica_source(origin), copy)
        .await
    {
        // Deleted meanwhile: the bytes just written must not outlive their row.
        let row = site.meta.get_object(&new.bucket, &new.name).await?;
        if !matches!(row, Some(o) if o.status == Status::Ready) {
            site.storage.delete(&new.bucket, &new.name).await?;
        }
        return Err(e);
    }
    site.hooks().object_changed(&new.bucket, Some(&new.name));
    Ok(new)
}

/// Deletes an object: READY (or ERR_DEL) becomes DELETING by compare-and-set, so of
/// concurrent deletes exactly one proceeds; then the bytes go, then DELETED with its orders in
/// one transaction. A failure to remove the bytes leaves the object READY.
pub async fn delete(site: &Site, bucket: &str, name: &str, origin: &WriteOrigin) -> Result<()> {
    delete_version(site, bucket, name, None, origin).await
}

/// [`delete`] for a DELETE order naming `version` (when given): another version held here is
/// compared with it (see `meta::check_version_to_delete`).
pub async fn delete_version(
    site: &Site,
    bucket: &str,
    name: &str,
    version: Option<VersionToDelete<'_>>,
    origin: &WriteOrigin,
) -> Result<()> {
    let obj = site.meta.begin_delete(bucket, name, version).await?;
    // Once DELETING, the delete runs to its end even if the caller goes away (a client that
    // disconnects, a timeout): dropped half-way, it left the object DELETING for good.
    let (site, origin) = (site.clone(), origin.clone());
    tokio::spawn(async move { finish_delete(&site, &obj, &origin).await })
        .await
        .map_err(|e| Error::internal(format!("finishing a delete: {e}")))?
}

async fn finish_delete(site: &Site, obj: &Object, origin: &WriteOrigin) -> Result<()> {
    let Err(failed) = site.storage.delete(&obj.bucket, &obj.name).await else {
        return complete_delete(site, obj, origin).await;
    };
    // A failed delete may have happened all the same (a timeout or a reset after the storage
    // carried it out): the storage says which, before the row changes.
    match site.storage.stat(&obj.bucket, &obj.name).await {
        Ok(None) => complete_delete(site, obj, origin).await,
        Ok(Some(_)) => keep_after_failed_delete(site, obj, failed).await,
        Err(_) => {
            // Nobody can tell now: the object stays DELETING (nothing reads or replaces it)
            // until the storage answers, and the caller learns that the outcome is unknown.
            let (site, obj, origin) = (site.clone(), obj.clone(), origin.clone());
            tokio::spawn(async move { settle_unknown_delete(&site, &obj, &origin).await });
            Err(Error::new(
                Kind::Unavailable,
                Origin::Storage,
                format!(
                    "{failed}; whether the object was deleted is settled once the storage answers"
                ),
            ))
        }
    }
}

/// Nothing was deleted (the storage refused, or never got the request): the object is READY
/// again here, as at its peers, and the client, told of the failure, may delete it again.
async fn keep_after_failed_delete(site: &Site, obj: &Object, failed: Error) -> Result<()> {
    site.meta
        .swap_object_status(obj, Status::Deleting, Status::Ready)
        .await?;
    Err(failed)
}

/// Asks the storage, with backoff, whether the bytes of a delete of unknown outcome are
/// still there, then makes the row say the same: READY if they are, deleted (orders queued)
/// if not. A restart meanwhile finishes the delete instead (`finish_interrupted_deletes`).
async fn settle_unknown_delete(site: &Site, obj: &Object, origin: &WriteOrigin) {
    let first = Duration::from_millis(250);
    tokio::time::sleep(first).await; // it did not answer a moment ago
    let held = once_storage_answers(first, || site.storage.stat(&obj.bucket, &obj.name)).await;
    let settled = match held {
        None => complete_delete(site, obj, origin).await,
        Some(_) => site
            .meta
            .swap_object_status(obj, Status::Deleting, Status::Ready)
            .await
            .map(drop),
    };
    match settled {
        Ok(()) => {
            tracing::info!(bucket = %obj.bucket, object = %obj.name, "delete of unknown outcome settled")
        }
        Err(e) => {
            tracing::warn!(bucket = %obj.bucket, object = %obj.name, "settling a delete of unknown outcome: {e}")
        }
    }
}

/// The answer of `ask` once the storage gives one: asked again after `first`, then after
/// twice as long each time, up to every 10 s. For what must happen however long the storage is
/// away (work left half-done by a failed storage call, which a row in a transient state holds).
async fn once_storage_answers<T, F, Fut>(first: Duration, mut ask: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut pause = first;
    loop {
        if let Ok(answer) = ask().await {
            return answer;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// The bytes are gone: the row becomes DELETED with its orders (one transaction).
async fn complete_delete(site: &Site, obj: &Object, origin: &WriteOrigin) -> Result<()> {
    let (bucket, name) = (&obj.bucket, &obj.name);
    // A DELETE order names the version it deletes: a peer holding another one refuses it.
    let version = obj.hash.as_deref().unwrap_or_default();
    let orders = site
        .orders_for(origin, bucket, Some((name, 0, version)), Action::Delete)
        .await?;
    site.meta.finish_delete(obj, &orders).await?;
    site.queued(&orders);
    if let Err(e) = site.meta.forget_blocks(bucket, name).await {
        tracing::warn!(bucket = %bucket, object = %name, "forgetting block hashes: {e}");
    }
    site.hooks().object_changed(bucket, Some(name));
    crate::core::replicas::removed(site, bucket, name, origin).await;
    Ok(())
}

/// Startup: deletes a crash interrupted (left DELETING) are finished, bytes removed and orders
/// queued (on behalf of the bucket's owner: where the delete came from is not recorded).
pub async fn finish_interrupted_deletes(site: &Site) -> Result<usize> {
    let interrupted = site.meta.interrupted_deletes().await?;
    for obj in &interrupted {
        let owner = site.meta.get_bucket(&obj.bucket).await?;
        let client_id = owner.map_or_else(|| site.site_id.clone(), |b| b.client_id);
        finish_delete(site, obj, &WriteOrigin::Client { client_id }).await?;
    }
    Ok(interrupted.len())
}

/// Rewrites the bytes of a READY object (a repair): the new bytes must match its recorded size
/// and hash, and storage keeps the old ones until they did (staged write, then commit).
/// Returns the adler32 of the bytes written.
pub async fn restore(site: &Site, obj: &Object, body: ByteStream) -> Result<String> {
    let expected = Expected {
        size: Some(obj.size),
        hash: obj.hash.clone(),
    };
    let received = receive(site, obj, body, &expected, &mut false, false).await?;
    site.meta
        .put_blocks(&obj.bucket, &obj.name, &received.sha256, &received.blocks)
        .await?;
    Ok(received.adler32)
}

/// How an error about a corrupt stored copy starts (peers read it from
/// `x-clonecloudstore-error`: such a source cannot serve a good copy, another holder may).
pub const INTEGRITY_FAILURE: &str = "integrity failure";

/// What `receive` measured while streaming.
struct Received {
    size: u64,
    sha256: String,
    /// For Rucio clients, which check adler32 (eight hex digits).
    adler32: String,
    /// Not recorded yet: the caller records them with the version.
    blocks: BlockHashes,
    /// The upload as peers saw it while it was received (dropped: abandoned).
    published: Option<InProgress>,
}

/// Whether a store may publish its blocks to peers while it is received (`core::uploads`): a
/// client's write (peers get an order for it), replication on, and not declared too small
/// for a ranged pull.
fn overlaps_with_peers(site: &Site, origin: &WriteOrigin, expected: &Expected) -> bool {
    let cfg = &site.config.replication;
    matches!(origin, WriteOrigin::Client { .. })
        && cfg.enabled
        && cfg.overlap_uploads
        && expected
            .size
            .is_none_or(|size| size >= cfg.ranged_pull_min_bytes.max(1))
}

/// Publishes an upload's blocks when it may overlap with its pulls (see above) and the
/// storage stages it in a file.
fn publish(
    site: &Site,
    obj: &Object,
    writer: &dyn ObjectWriter,
    overlap: bool,
) -> Option<InProgress> {
    let temp = writer.staged_path().filter(|_| overlap)?;
    Some(site.uploads.begin(UploadStart {
        id: &obj.id,
        bucket: &obj.bucket,
        name: &obj.name,
        block_size: site.config.storage.block_size_bytes,
        temp,
    }))
}

/// Streams `body` to storage while hashing, checks it against `expected` and commits it;
/// `commit_tried` is set once the commit was tried (its failure does not say it did nothing).
/// The block hashes come back unrecorded: the caller records them with the version (a new
/// object in the transaction that makes it READY).
async fn receive(
    site: &Site,
    obj: &Object,
    mut body: ByteStream,
    expected: &Expected,
    commit_tried: &mut bool,
    overlap: bool,
) -> Result<Received> {
    let started = Instant::now();
    let mut writer = site
        .storage
        .writer_with_hash(
            &obj.bucket,
            &obj.name,
            expected.size,
            expected.hash.as_deref(),
        )
        .await?;
    let mut hasher = Sha256::new();
    let published = publish(site, obj, writer.as_ref(), overlap);
    let progress = published.as_ref().map(|p| p.progress.clone());
    let mut side = SideHashes::new(
        site.config.storage.block_size_bytes,
        expected.size,
        progress,
    );
    let announce_at = site.config.replication.ranged_pull_min_bytes.max(1);
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk: Bytes = chunk?;
        size += chunk.len() as u64;
        if let Some(limit) = expected.size {
            if size > limit {
                return Err(Error::bad_request(format!(
                    "body is larger than the declared size {limit}"
                )));
            }
        }
        hasher.update(&chunk);
        side.update(&chunk).await?;
        writer.write(chunk).await?;
        // Peers hear of it once it is known to be large (declared, or that much received).
        if let Some(upload) = &published {
            if expected.size.unwrap_or(size) >= announce_at && upload.progress.announce() {
                site.hooks().upload_started(&upload.progress);
            }
        }
    }
    let digest: [u8; 32] = hasher.finalize().into();
    let actual = hash::encode(&digest);
    check_expected(expected, size, &actual)?;
    let side = side.finish(digest).await?;
    *commit_tried = true;
    writer.commit(&actual).await?;
    metrics::counter!("mirrorgate_bytes_in_total").increment(size);
    metrics::histogram!("mirrorgate_stream_duration_seconds", "direction" => "in")
        .record(started.elapsed().as_secs_f64());
    Ok(Received {
        size,
        sha256: actual,
        adler32: crate::model::replica::adler32_text(side.adler32),
        blocks: side.blocks,
        published,
    })
}

/// Takes a verified staging file as an object's bytes: adopted in place by a storage that can
/// (its size checked against the order; its blocks, verified as they arrived, make its
/// SHA-256 the order's); another storage gets the file streamed in once, hashed on the way.
async fn adopt_staged(
    site: &Site,
    obj: &Object,
    staged: VerifiedStaging,
    expected: &Expected,
    commit_tried: &mut bool,
) -> Result<Received> {
    if !site.storage.adopts_files() {
        let body = stream::file_stream(&staged.path).await?;
        return receive(site, obj, body, expected, commit_tried, false).await;
    }
    let Some(sha256) = expected.hash.clone() else {
        return Err(Error::internal(
            "a staged pull for an order naming no version",
        ));
    };
    let size = tokio::fs::metadata(&staged.path).await?.len();
    check_expected(expected, size, &sha256)?;
    *commit_tried = true;
    site.storage
        .adopt(&obj.bucket, &obj.name, &staged.path)
        .await?;
    metrics::counter!("mirrorgate_pull_adopted_bytes_total").increment(size);
    Ok(Received {
        size,
        sha256,
        adler32: crate::model::replica::adler32_text(staged.adler32),
        blocks: staged.blocks,
        published: None,
    })
}

/// The size and hash checks of a write against what the sender declared.
fn check_expected(expected: &Expected, size: u64, actual: &str) -> Result<()> {
    if let Some(declared) = expected.size {
        if declared != size {
            return Err(Error::bad_request(format!(
                "size mismatch: declared {declared} bytes, received {size}"
            )));
        }
    }
    if let Some(declared) = &expected.hash {
        if declared != actual {
            metrics::counter!("mirrorgate_hash_mismatches_total", "source" => "upload")
                .increment(1);
            return Err(Error::bad_request(format!(
                "hash mismatch: declared {declared}, received bytes hash {actual}"
            )));
        }
    }
    Ok(())
}

/// Who checks the bytes of a read against the recorded hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// This site, while it serves them (clients, peers that do not verify).
    Here,
    /// The peer that receives them (it says so in `wire::VERIFY`, on a peer route).
    ByReceiver,
}

/// A READY object's bytes for a complete answer, verified here or not (see [`Verification`]).
/// For a verifying peer nothing is hashed here, small objects included: the peer reads a
/// small body whole and checks it before it answers (a corrupt one is a clean error there,
/// reported back here, see `wire::VERIFY`).
pub async fn read_for(
    site: &Site,
    obj: &Object,
    op_id: &str,
    verification: Verification,
) -> Result<Payload> {
    match verification {
        Verification::ByReceiver if obj.size > SMALL_OBJECT => {
            Ok(Payload::Stream(open_unverified(site, obj).await?))
        }
        Verification::ByReceiver => read_small_unverified(site, obj, op_id).await,
        Verification::Here => read_verified(site, obj, op_id).await,
    }
}

/// Objects of at most this many bytes are read whole, in one step, and verified before any
/// byte is sent (see [`read_verified`]).
pub const SMALL_OBJECT: u64 = 256 * 1024;

/// A READY object's bytes, ready to send.
pub enum Payload {
    /// A small object, read whole and already verified.
    Whole(Bytes),
    /// A larger one, verified while it streams (it fails instead of completing on a mismatch).
    Stream(ByteStream),
}

impl Payload {
    pub fn into_stream(self) -> ByteStream {
        match self {
            Payload::Whole(bytes) => Box::pin(futures::stream::once(async move { Ok(bytes) })),
            Payload::Stream(s) => s,
        }
    }
}

/// What a failed verification of this site's copy does: count it, log it, and declare the
/// copy corrupt (which queues its repair from another site).
fn storage_mismatch(site: &Site, obj: &Object, hash: &str, op_id: &str) -> OnMismatch {
    let (op_id, bucket, name) = (op_id.to_owned(), obj.bucket.clone(), obj.name.clone());
    let expected_hash = hash.to_owned();
    let site = site.clone();
    Box::new(move |what: &str| {
        metrics::counter!("mirrorgate_hash_mismatches_total", "source" => "storage").increment(1);
        tracing::error!(op_id = %op_id, bucket = %bucket, object = %name, "integrity failure, transfer aborted: {what}");
        // The copy here is bad: declare it, which queues its repair from another site.
        site.hooks()
            .copy_corrupt(&bucket, &name, &expected_hash, what);
    })
}

fn recorded_hash(obj: &Object) -> Result<String> {
    obj.hash
        .clone()
        .ok_or_else(|| Error::internal("READY object without a hash"))
}

/// Opens a stored READY object for reading; the stream fails instead of completing when the
/// stored bytes no longer match the recorded size and hash.
pub async fn open_verified(site: &Site, obj: &Object, op_id: &str) -> Result<ByteStream> {
    let raw = site.storage.read(&obj.bucket, &obj.name).await?;
    let hash = recorded_hash(obj)?;
    let on_mismatch = storage_mismatch(site, obj, &hash, op_id);
    let verified = stream::verify_aside(raw, &hash, obj.size, on_mismatch);
    Ok(Box::pin(Metered::new(verified)))
}

/// Reads a stored READY object for a complete answer. One of at most [`SMALL_OBJECT`] bytes is
/// served from the hot-body cache (bytes verified when they were read, for this very hash and
/// size), or read and hashed in one step (one blocking call on fs storage) and checked before anything
/// is sent: a mismatch is an error, handled as [`open_verified`] handles one (counted,
/// logged, the copy declared corrupt). A larger object streams through [`open_verified`].
pub async fn read_verified(site: &Site, obj: &Object, op_id: &str) -> Result<Payload> {
    if obj.size > SMALL_OBJECT {
        return Ok(Payload::Stream(open_verified(site, obj, op_id).await?));
    }
    let started = Instant::now();
    let hash = recorded_hash(obj)?;
    let cache = site.meta.cache();
    if let Some(bytes) = cache.body(&obj.bucket, &obj.name, &hash, obj.size) {
        metrics::counter!("mirrorgate_bytes_out_total").increment(bytes.len() as u64);
        return Ok(Payload::Whole(bytes));
    }
    let ticket = cache.ticket(&obj.bucket);
    let whole = site
        .storage
        .read_whole(&obj.bucket, &obj.name, obj.size, true)
        .await?;
    let read = whole.bytes.len() as u64;
    let problem = size_problem(read, obj.size).or_else(|| {
        let actual = hash::encode(&whole.sha256.unwrap_or_default());
        (actual != hash).then(|| format!("hash mismatch: bytes hash {actual}, expected {hash}"))
    });
    if let Some(what) = problem {
        return Err(corrupt_here(site, obj, &hash, op_id, &what));
    }
    metrics::counter!("mirrorgate_bytes_out_total").increment(read);
    metrics::histogram!("mirrorgate_stream_duration_seconds", "direction" => "out")
        .record(started.elapsed().as_secs_f64());
    cache.put_body(ticket, &obj.bucket, &obj.name, &hash, whole.bytes.clone());
    Ok(Payload::Whole(whole.bytes))
}

/// A small READY object read whole, NOT hashed, for a verifying peer: from the hot-body cache
/// (verified bytes) or in one storage step. Only its size is checked here (free): a copy of
/// another size is a clean error, as in [`read_verified`].
async fn read_small_unverified(site: &Site, obj: &Object, op_id: &str) -> Result<Payload> {
    let hash = recorded_hash(obj)?;
    let bytes = match site
        .meta
        .cache()
        .body(&obj.bucket, &obj.name, &hash, obj.size)
    {
        Some(bytes) => bytes,
        None => {
            let whole = site
                .storage
                .read_whole(&obj.bucket, &obj.name, obj.size, false);
            whole.await?.bytes
        }
    };
    if let Some(what) = size_problem(bytes.len() as u64, obj.size) {
        return Err(corrupt_here(site, obj, &hash, op_id, &what));
    }
    metrics::counter!("mirrorgate_bytes_out_total").increment(bytes.len() as u64);
    Ok(Payload::Whole(bytes))
}

fn size_problem(read: u64, size: u64) -> Option<String> {
    match read.cmp(&size) {
        std::cmp::Ordering::Greater => Some(format!(
            "size mismatch: more than the expected {size} bytes"
        )),
        std::cmp::Ordering::Less => Some(format!("size mismatch: {read} bytes, expected {size}")),
        std::cmp::Ordering::Equal => None,
    }
}

/// This site's copy failed a check: declared corrupt (see [`storage_mismatch`]), and the
/// error a reader gets.
fn corrupt_here(site: &Site, obj: &Object, hash: &str, op_id: &str, what: &str) -> Error {
    storage_mismatch(site, obj, hash, op_id)(what);
    Error::new(
        Kind::Internal,
        Origin::Storage,
        format!("{INTEGRITY_FAILURE}: the copy of {}/{} here is corrupt ({what}); it is declared bad and will be repaired", obj.bucket, obj.name),
    )
}

/// Streams a stored READY object as it is, NOT verified: for a peer that verifies what it
/// receives (one SHA-256 per byte per hop; see `wire::VERIFY`).
pub async fn open_unverified(site: &Site, obj: &Object) -> Result<ByteStream> {
    let raw = site.storage.read(&obj.bucket, &obj.name).await?;
    Ok(Box::pin(Metered::new(raw)))
}

/// Streams `len` bytes of a stored READY object from offset `start` (a range the caller
/// checked against the object's size), verified against the recorded hashes of the blocks
/// it touches: whole blocks are read and hashed, only the asked bytes are sent, and a block
/// that does not match ends the stream with an error before it completes (the copy is then
/// declared corrupt, like a corrupt whole object). Objects written before block hashes were
/// recorded fall back to [`open_range_unverified`].
pub async fn open_range(
    site: &Site,
    obj: &Object,
    start: u64,
    len: u64,
    op_id: &str,
) -> Result<ByteStream> {
    let hash = recorded_hash(obj)?;
    let Some(blocks) = site.meta.blocks_of(&obj.bucket, &obj.name, &hash).await? else {
        return open_range_unverified(site, obj, start, len).await;
    };
    let (first, last) = blocks.touched(start, len);
    let (from, _) = blocks.span(first, obj.size);
    let (_, to) = blocks.span(last, obj.size);
    let raw = site
        .storage
        .read_range(&obj.bucket, &obj.name, from, to - from)
        .await?;
    let on_mismatch = storage_mismatch(site, obj, &hash, op_id);
    let checked = VerifyBlocks::new(raw, blocks, obj.size, start, len, on_mismatch);
    Ok(Box::pin(Metered::new(Box::pin(checked))))
}

/// Streams `len` bytes from offset `start` as stored, NOT verified (a peer that verifies by
/// blocks itself, or an object without recorded blocks). Fails if storage delivers fewer
/// bytes than asked.
pub async fn open_range_unverified(
    site: &Site,
    obj: &Object,
    start: u64,
    len: u64,
) -> Result<ByteStream> {
    let raw = site
        .storage
        .read_range(&obj.bucket, &obj.name, start, len)
        .await?;
    let what = format!("{}/{}", obj.bucket, obj.name);
    let checked = futures::stream::unfold((raw, len, false), move |(mut raw, left, done)| {
        let what = what.clone();
        async move {
            if done {
                return None;
            }
            match raw.next().await {
                Some(Ok(chunk)) => {
                    let left = left.saturating_sub(chunk.len() as u64);
                    Some((Ok(chunk), (raw, left, false)))
                }
                Some(Err(e)) => Some((Err(e), (raw, 0, true))),
                None if left > 0 => Some((
                    Err(Error::storage(format!(
                        "range of {what}: storage ended {left} bytes short"
                    ))),
                    (raw, 0, true),
                )),
                None => None,
            }
        }
    });
    Ok(Box::pin(Metered::new(Box::pin(checked))))
}

/// Optionally compresses an outgoing stream.
pub fn encode_for_client(body: ByteStream, zstd: bool) -> ByteStream {
    if zstd {
        stream::zstd_encode(body)
    } else {
        body
    }
}

/// Counts bytes out and records the stream's duration when it ends or is dropped.
pub struct Metered {
    inner: ByteStream,
    started: Instant,
    bytes: u64,
}

impl Metered {
    pub fn new(inner: ByteStream) -> Self {
        Self {
            inner,
            started: Instant::now(),
            bytes: 0,
        }
    }
}

impl futures::Stream for Metered {
    type Item = Result<Bytes>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        if let std::task::Poll::Ready(Some(Ok(chunk))) = &polled {
            self.bytes += chunk.len() as u64;
        }
        polled
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        metrics::counter!("mirrorgate_bytes_out_total").increment(self.bytes);
        metrics::histogram!("mirrorgate_stream_duration_seconds", "direction" => "out")
            .record(self.started.elapsed().as_secs_f64());
    }
}
