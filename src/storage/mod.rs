//! Object storage behind a site. The metadata store is the truth about what exists; storage only
//! holds bytes. A write is staged by an [`ObjectWriter`] and becomes visible only on `commit`.

pub mod fs;
pub mod s3;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::error::Result;

/// A stream of object bytes. Errors abort the transfer.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

pub type DynStorage = Arc<dyn Storage>;

/// One stored object as storage sees it (used by import and scrubbing).
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    /// SHA-256 (CCS encoding) when the backend keeps it alongside the bytes.
    pub hash: Option<String>,
}

/// An object read whole in one step, and (when asked for) the SHA-256 of exactly the bytes
/// read, computed in that same step.
#[derive(Debug, Clone)]
pub struct WholeObject {
    pub bytes: Bytes,
    pub sha256: Option<[u8; 32]>,
}

/// One page of a listing; `next` continues it.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<StoredObject>,
    pub next: Option<String>,
}

#[async_trait]
pub trait Storage: Send + Sync {
    /// Prepares the backend for a bucket (idempotent).
    async fn create_bucket(&self, bucket: &str) -> Result<()>;
    /// Removes the backend's bucket (idempotent; the bucket is empty by then).
    async fn delete_bucket(&self, bucket: &str) -> Result<()>;
    /// Whether the backend's bucket is there (fs: its directory; S3: `HeadBucket`). Used by
    /// `fullCheck` HEADs, which look at the storage and not only at the metadata.
    async fn has_bucket(&self, bucket: &str) -> Result<bool>;
    /// Starts a staged write; nothing is visible until `commit`.
    async fn writer(
        &self,
        bucket: &str,
        key: &str,
        size_hint: Option<u64>,
    ) -> Result<Box<dyn ObjectWriter>>;
    /// Like `writer`, knowing the hash the sender declared (the write still fails unless the
    /// bytes match it): a backend that keeps the hash with the object can record it up front.
    async fn writer_with_hash(
        &self,
        bucket: &str,
        key: &str,
        size_hint: Option<u64>,
        _declared_sha256: Option<&str>,
    ) -> Result<Box<dyn ObjectWriter>> {
        self.writer(bucket, key, size_hint).await
    }
    /// Whether [`Storage::adopt`] can take a file of this site's disk as an object's bytes.
    fn adopts_files(&self) -> bool {
        false
    }
    /// Makes the file at `staged` (on this site's disk, already verified by the caller) the
    /// bytes of `bucket/key`, durably, without writing them again: fs moves it into place.
    /// Backends that cannot (see [`Storage::adopts_files`]) refuse.
    async fn adopt(&self, bucket: &str, key: &str, _staged: &std::path::Path) -> Result<()> {
        Err(crate::error::Error::internal(format!(
            "this storage cannot adopt a staged file for {bucket}/{key}"
        )))
    }
    /// Streams an object's bytes, or NotFound.
    async fn read(&self, bucket: &str, key: &str) -> Result<ByteStream>;
    /// Reads a small object whole and, if `hash`, hashes it, in as few steps as the backend
    /// allows (fs: open, stat, read and hash in one blocking call). Reads at most `limit + 1`
    /// bytes, so an object found larger than `limit` comes back cut short (the caller's size
    /// check then fails). Default: drains [`Storage::read`].
    async fn read_whole(
        &self,
        bucket: &str,
        key: &str,
        limit: u64,
        hash: bool,
    ) -> Result<WholeObject> {
        let mut stream = self.read(bucket, key).await?;
        let mut out = Vec::new();
        let mut hasher = hash.then(Sha256::new);
        let cap = limit.saturating_add(1) as usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            let take = chunk.len().min(cap - out.len());
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk[..take]);
            }
            out.extend_from_slice(&chunk[..take]);
            if out.len() >= cap {
                break;
            }
        }
        Ok(WholeObject {
            bytes: Bytes::from(out),
            sha256: hasher.map(|h| h.finalize().into()),
        })
    }
    /// Streams `len` bytes of an object from offset `start` (the caller checked the range
    /// against the object's size). Default: skips through [`Storage::read`].
    async fn read_range(
        &self,
        bucket: &str,
        key: &str,
        start: u64,
        len: u64,
    ) -> Result<ByteStream> {
        let stream = self.read(bucket, key).await?;
        Ok(slice_stream(stream, start, len))
    }
    /// Size of a stored object, None when absent.
    async fn stat(&self, bucket: &str, key: &str) -> Result<Option<u64>>;
    /// Size and, where the backend keeps it, SHA-256 of a stored object; None when absent.
    async fn describe(&self, bucket: &str, key: &str) -> Result<Option<StoredObject>> {
        Ok(self.stat(bucket, key).await?.map(|size| StoredObject {
            key: key.to_owned(),
            size,
            hash: None,
        }))
    }
    /// One page of the objects whose key starts with `prefix`, in key order; `continuation` is
    /// the previous page's `next`. Backends that cannot enumerate keys answer an error.
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        continuation: Option<&str>,
    ) -> Result<ListPage>;
    /// Removes an object (absent is fine).
    async fn delete(&self, bucket: &str, key: &str) -> Result<()>;
    /// Removes what a crash left behind (temporary files, unfinished uploads).
    async fn sweep(&self) -> Result<usize>;
}

/// Bytes `[start, start + len)` of a stream.
pub fn slice_stream(stream: ByteStream, start: u64, len: u64) -> ByteStream {
    let sliced = futures::stream::unfold(
        (stream, start, len),
        |(mut stream, mut skip, mut left)| async move {
            while left > 0 {
                let mut chunk = match stream.next().await? {
                    Ok(c) => c,
                    Err(e) => return Some((Err(e), (stream, 0, 0))),
                };
                if skip >= chunk.len() as u64 {
                    skip -= chunk.len() as u64;
                    continue;
                }
                let from = skip as usize;
                skip = 0;
                let upto = chunk.len().min(from + left.min(usize::MAX as u64) as usize);
                chunk = chunk.slice(from..upto);
                left -= chunk.len() as u64;
                return Some((Ok(chunk), (stream, skip, left)));
            }
            None
        },
    );
    Box::pin(sliced)
}

#[async_trait]
pub trait ObjectWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Makes the bytes durable and visible under the object's key. `sha256` is the verified
    /// hash, for backends that keep it with the object.
    async fn commit(self: Box<Self>, sha256: &str) -> Result<()>;
    /// Throws the staged bytes away. Dropping a writer without commit does the same.
    async fn abort(self: Box<Self>);
    /// The file of this site's disk the bytes are staged in, for a backend that has one (fs):
    /// blocks written there may be read before the commit (`core::uploads`).
    fn staged_path(&self) -> Option<std::path::PathBuf> {
        None
    }
}

/// Builds the configured backend.
pub async fn open(config: &crate::config::Config) -> anyhow::Result<DynStorage> {
    match config.storage.backend.as_str() {
        "fs" => Ok(Arc::new(fs::FsStorage::open(&config.site.data_dir).await?)),
        "s3" => Ok(Arc::new(s3::S3Storage::open(&config.storage).await?)),
        other => anyhow::bail!("storage backend {other:?} is not available in this build"),
    }
}
