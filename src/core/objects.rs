//! Object operations shared by the accessor, the replicator routes and the replication workers:
//! storing a stream (hash and size checked before anything becomes visible) and reading a
//! stored object with verification on the way out.

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::Site;
use crate::core::stream::{self, Verify};
use crate::error::{Error, Result};
use crate::meta::{Object, Status};
use crate::model::hash;
use crate::model::order::Action;
use crate::model::order::WriteOrigin;
use crate::storage::ByteStream;

/// What the sender says about the bytes it sends.
#[derive(Debug, Default, Clone)]
pub struct Expected {
    pub size: Option<u64>,
    pub hash: Option<String>,
}

/// Removes the UPLOAD row if the upload future is dropped before it finished (client gone).
struct UploadGuard {
    site: Option<Site>,
    bucket: String,
    name: String,
    id: String,
}

impl UploadGuard {
    fn disarm(mut self) {
        self.site = None;
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        if let Some(site) = self.site.take() {
            let (bucket, name, id) = (
                std::mem::take(&mut self.bucket),
                std::mem::take(&mut self.name),
                std::mem::take(&mut self.id),
            );
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = site.meta.cancel_upload(&bucket, &name, &id).await {
                        tracing::warn!("could not forget interrupted upload {bucket}/{name}: {e}");
                    }
                });
            }
        }
    }
}

/// Stores an object: registers it UPLOAD, streams the body to storage while hashing, checks
/// size and hash against what the sender declared, commits the bytes, then marks it READY.
/// Any failure (or the future being dropped) leaves neither bytes nor metadata behind.
pub async fn store(
    site: &Site,
    mut obj: Object,
    body: ByteStream,
    expected: Expected,
    origin: &WriteOrigin,
) -> Result<Object> {
    obj.status = Status::Upload;
    site.meta.begin_upload(&obj).await?;
    let guard = UploadGuard {
        site: Some(site.clone()),
        bucket: obj.bucket.clone(),
        name: obj.name.clone(),
        id: obj.id.clone(),
    };
    let received = receive(site, &obj, body, &expected).await;
    let result = match received {
        Ok(r) => commit_upload(site, &obj, r.size, &r.sha256, origin)
            .await
            .map(|_| r),
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => {
            guard.disarm();
            site.hooks().object_changed(&obj.bucket, Some(&obj.name));
            obj.size = r.size;
            obj.hash = Some(r.sha256);
            obj.status = Status::Ready;
            crate::core::replicas::stored(site, &obj, &r.adler32).await;
            Ok(obj)
        }
        Err(e) => {
            // The guard stays armed while cancelling, so a drop in between still cancels.
            site.meta
                .cancel_upload(&obj.bucket, &obj.name, &obj.id)
                .await?;
            guard.disarm();
            Err(e)
        }
    }
}

/// Marks the upload READY and queues its orders in the same transaction.
async fn commit_upload(
    site: &Site,
    obj: &Object,
    size: u64,
    hash: &str,
    origin: &WriteOrigin,
) -> Result<()> {
    let target = Some((obj.name.as_str(), size, hash));
    let orders = site
        .orders_for(origin, &obj.bucket, target, Action::Create)
        .await?;
    let replica_of = match origin {
        WriteOrigin::Replica { from_site } => Some(from_site.as_str()),
        WriteOrigin::Client { .. } => None,
    };
    site.meta
        .finish_upload(&obj.bucket, &obj.name, size, hash, replica_of, &orders)
        .await?;
    site.queued(&orders);
    Ok(())
}

/// Deletes an object: DELETING, bytes removed, then DELETED with its orders in one
/// transaction. A failure to remove the bytes leaves ERR_DEL.
pub async fn delete(site: &Site, bucket: &str, name: &str, origin: &WriteOrigin) -> Result<()> {
    let obj = site
        .meta
        .get_object(bucket, name)
        .await?
        .ok_or_else(|| Error::not_found(format!("object {bucket}/{name} not found")))?;
    match obj.status {
        Status::Ready | Status::ErrDel => {}
        Status::Deleted => {
            return Err(Error::gone(format!(
                "object {bucket}/{name} is already deleted"
            )))
        }
        other => {
            return Err(Error::conflict(format!(
                "object {bucket}/{name} is {}, it cannot be deleted now",
                other.as_str()
            )))
        }
    }
    site.meta
        .set_object_status(bucket, name, Status::Deleting)
        .await?;
    if let Err(e) = site.storage.delete(bucket, name).await {
        site.meta
            .set_object_status(bucket, name, Status::ErrDel)
            .await?;
        return Err(e);
    }
    let orders = site
        .orders_for(origin, bucket, Some((name, 0, "")), Action::Delete)
        .await?;
    site.meta.finish_delete(bucket, name, &orders).await?;
    site.queued(&orders);
    site.hooks().object_changed(bucket, Some(name));
    crate::core::replicas::removed(site, bucket, name, origin).await;
    Ok(())
}

/// Rewrites the bytes of a READY object (a repair): the new bytes must match its recorded size
/// and hash, and storage keeps the old ones until they did (staged write, then commit).
/// Returns the adler32 of the bytes written.
pub async fn restore(site: &Site, obj: &Object, body: ByteStream) -> Result<String> {
    let expected = Expected {
        size: Some(obj.size),
        hash: obj.hash.clone(),
    };
    Ok(receive(site, obj, body, &expected).await?.adler32)
}

/// What `receive` measured while streaming.
struct Received {
    size: u64,
    sha256: String,
    /// For Rucio clients, which check adler32 (eight hex digits).
    adler32: String,
}

async fn receive(
    site: &Site,
    obj: &Object,
    mut body: ByteStream,
    expected: &Expected,
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
    let mut adler = adler2::Adler32::new();
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
        adler.write_slice(&chunk);
        writer.write(chunk).await?;
    }
    let actual = hash::encode(&hasher.finalize());
    if let Some(declared) = expected.size {
        if declared != size {
            return Err(Error::bad_request(format!(
                "size mismatch: declared {declared} bytes, received {size}"
            )));
        }
    }
    if let Some(declared) = &expected.hash {
        if *declared != actual {
            metrics::counter!("mirrorgate_hash_mismatches_total", "source" => "upload")
                .increment(1);
            return Err(Error::bad_request(format!(
                "hash mismatch: declared {declared}, received bytes hash {actual}"
            )));
        }
    }
    writer.commit(&actual).await?;
    metrics::counter!("mirrorgate_bytes_in_total").increment(size);
    metrics::histogram!("mirrorgate_stream_duration_seconds", "direction" => "in")
        .record(started.elapsed().as_secs_f64());
    Ok(Received {
        size,
        sha256: actual,
        adler32: crate::model::replica::adler32_text(adler.checksum()),
    })
}

/// Opens a stored READY object for reading; the stream fails instead of completing when the
/// stored bytes no longer match the recorded size and hash.
pub async fn open_verified(site: &Site, obj: &Object, op_id: &str) -> Result<ByteStream> {
    let raw = site.storage.read(&obj.bucket, &obj.name).await?;
    let hash = obj
        .hash
        .clone()
        .ok_or_else(|| Error::internal("READY object without a hash"))?;
    let (op_id, bucket, name) = (op_id.to_owned(), obj.bucket.clone(), obj.name.clone());
    let site = site.clone();
    let on_mismatch = Box::new(move |what: &str| {
        metrics::counter!("mirrorgate_hash_mismatches_total", "source" => "storage").increment(1);
        tracing::error!(op_id = %op_id, bucket = %bucket, object = %name, "integrity failure, transfer aborted: {what}");
        // The copy here is bad: declare it, which queues its repair from another site.
        site.hooks().copy_corrupt(&bucket, &name, what);
    });
    Ok(Box::pin(Metered::new(Box::pin(Verify::new(
        raw,
        &hash,
        obj.size,
        on_mismatch,
    )))))
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
