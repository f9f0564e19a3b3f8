//! Filesystem storage: `<data_dir>/objects/<bucket>/<h[0..2]>/<h>` where `h` is the hex SHA-256
//! of the key, so any valid key (with `/`, `..`, 1024 characters) maps to one safe file name.
//! Writes go to `<data_dir>/tmp`, are fsynced, then renamed into place (and the directory
//! fsynced), so a crash never leaves a partial object under its final name.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{ByteStream, ListPage, ObjectWriter, Storage, WholeObject};
use crate::error::{Error, Result};

/// Read size for streaming objects out.
const READ_CHUNK: usize = 256 * 1024;
/// Incoming chunks are gathered up to this size before one blocking write.
const WRITE_BATCH: usize = 1024 * 1024;

pub struct FsStorage {
    objects: PathBuf,
    tmp: PathBuf,
}

impl FsStorage {
    pub async fn open(data_dir: &Path) -> std::io::Result<Self> {
        let objects = data_dir.join("objects");
        let tmp = data_dir.join("tmp");
        tokio::fs::create_dir_all(&objects).await?;
        tokio::fs::create_dir_all(&tmp).await?;
        Ok(Self { objects, tmp })
    }

    /// Where an object's bytes live (public so tests and tools can find a file).
    pub fn object_path(objects_root: &Path, bucket: &str, key: &str) -> PathBuf {
        let h = hex(&Sha256::digest(key.as_bytes()));
        objects_root.join(bucket).join(&h[..2]).join(h)
    }

    fn path(&self, bucket: &str, key: &str) -> PathBuf {
        Self::object_path(&self.objects, bucket, key)
    }
}

impl FsStorage {
    /// Opens an object's file positioned at `start`, off the reactor.
    async fn open_at(&self, bucket: &str, key: &str, start: u64) -> Result<std::fs::File> {
        let path = self.path(bucket, key);
        let what = format!("{bucket}/{key}");
        tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::storage(format!(
                        "object {what} missing from storage"
                    )))
                }
                Err(e) => return Err(e.into()),
            };
            if start > 0 {
                file.seek(std::io::SeekFrom::Start(start))?;
            }
            Ok(file)
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
    }
}

/// Streams up to `len` bytes of `file` from its position, in [`READ_CHUNK`] pieces. Each one is
/// one blocking read straight into the buffer that is then hashed and sent (`tokio::fs::File`
/// reads into a buffer of its own and copies out of it), requested only when the previous one
/// was taken: a stream holds one chunk. Measured (two-hop 64 MiB GET, 64 concurrent streams):
/// 1 MiB chunks were slower and tripled the peak memory, reading one chunk ahead gained
/// nothing clear and cost memory.
fn file_chunks(file: std::fs::File, len: u64) -> ByteStream {
    let chunks = futures::stream::try_unfold((file, len), |(file, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let want = (READ_CHUNK as u64).min(left);
        let (file, chunk) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut file = file;
            // read_to_end fills the spare capacity without zeroing it first.
            let mut chunk = Vec::with_capacity(want as usize);
            (&mut file).take(want).read_to_end(&mut chunk)?;
            Ok((file, chunk))
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
        if chunk.is_empty() {
            return Ok(None);
        }
        let left = left - chunk.len() as u64;
        Ok(Some((Bytes::from(chunk), (file, left))))
    });
    Box::pin(chunks)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[async_trait]
impl Storage for FsStorage {
    async fn create_bucket(&self, bucket: &str) -> Result<()> {
        tokio::fs::create_dir_all(self.objects.join(bucket)).await?;
        Ok(())
    }

    async fn has_bucket(&self, bucket: &str) -> Result<bool> {
        Ok(tokio::fs::metadata(self.objects.join(bucket))
            .await
            .is_ok_and(|m| m.is_dir()))
    }

    async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        match tokio::fs::remove_dir_all(self.objects.join(bucket)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn writer(
        &self,
        bucket: &str,
        key: &str,
        _size_hint: Option<u64>,
    ) -> Result<Box<dyn ObjectWriter>> {
        let temp = self.tmp.join(uuid::Uuid::new_v4().to_string());
        let file = tokio::task::spawn_blocking({
            let temp = temp.clone();
            move || std::fs::File::create_new(temp)
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
        Ok(Box::new(FsWriter {
            file: Some(file),
            temp: Some(temp),
            target: self.path(bucket, key),
            pending: Vec::new(),
            pending_len: 0,
            in_flight: None,
        }))
    }

    fn adopts_files(&self) -> bool {
        true
    }

    /// Moves a staged file (under the same data dir, so the same filesystem) into place the
    /// way a writer commits: the file synced, then renamed, then its directory synced.
    async fn adopt(&self, bucket: &str, key: &str, staged: &Path) -> Result<()> {
        let (staged, target) = (staged.to_path_buf(), self.path(bucket, key));
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::File::open(&staged)?.sync_all()?;
            let dir = target.parent().expect("object path has a parent");
            create_dir_durably(dir)?;
            std::fs::rename(&staged, &target)?;
            std::fs::File::open(dir)?.sync_all()
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
        .map_err(Error::from)
    }

    async fn read(&self, bucket: &str, key: &str) -> Result<ByteStream> {
        Ok(file_chunks(self.open_at(bucket, key, 0).await?, u64::MAX))
    }

    async fn read_whole(
        &self,
        bucket: &str,
        key: &str,
        limit: u64,
        hash: bool,
    ) -> Result<WholeObject> {
        let path = self.path(bucket, key);
        let what = format!("{bucket}/{key}");
        tokio::task::spawn_blocking(move || -> Result<WholeObject> {
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::storage(format!(
                        "object {what} missing from storage"
                    )))
                }
                Err(e) => return Err(e.into()),
            };
            let cap = limit.saturating_add(1);
            let size = file.metadata()?.len().min(cap);
            let mut bytes = Vec::with_capacity(size as usize);
            file.take(cap).read_to_end(&mut bytes)?;
            let sha256 = hash.then(|| Sha256::digest(&bytes).into());
            Ok(WholeObject {
                bytes: Bytes::from(bytes),
                sha256,
            })
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
    }

    async fn read_range(
        &self,
        bucket: &str,
        key: &str,
        start: u64,
        len: u64,
    ) -> Result<ByteStream> {
        Ok(file_chunks(self.open_at(bucket, key, start).await?, len))
    }

    async fn stat(&self, bucket: &str, key: &str) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.path(bucket, key)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path(bucket, key)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn list(
        &self,
        bucket: &str,
        _prefix: &str,
        _continuation: Option<&str>,
    ) -> Result<ListPage> {
        Err(Error::storage(format!(
            "listing bucket {bucket} is not supported by fs storage (files are named by the hash of their key)"
        )))
    }

    async fn sweep(&self) -> Result<usize> {
        let mut removed = 0;
        let mut dir = tokio::fs::read_dir(&self.tmp).await?;
        while let Some(entry) = dir.next_entry().await? {
            tokio::fs::remove_file(entry.path()).await?;
            removed += 1;
        }
        Ok(removed)
    }
}

struct FsWriter {
    file: Option<std::fs::File>,
    temp: Option<PathBuf>,
    target: PathBuf,
    pending: Vec<Bytes>,
    pending_len: usize,
    /// The batch being written; it owns the file meanwhile.
    in_flight: Option<tokio::task::JoinHandle<std::io::Result<std::fs::File>>>,
}

impl FsWriter {
    /// Starts writing the gathered chunks in one blocking call, off the reactor, once the
    /// previous batch is written: one batch is written while the next is received and hashed.
    async fn flush_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunks = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let mut file = self.written().await?;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            for chunk in &chunks {
                file.write_all(chunk)?;
            }
            Ok(file)
        }));
        Ok(())
    }

    /// The file, once the batch being written (if any) is.
    async fn written(&mut self) -> Result<std::fs::File> {
        if let Some(write) = self.in_flight.take() {
            return Ok(write.await.map_err(|e| Error::internal(e.to_string()))??);
        }
        self.file
            .take()
            .ok_or_else(|| Error::internal("writer already closed"))
    }
}

#[async_trait]
impl ObjectWriter for FsWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.pending_len += chunk.len();
        self.pending.push(chunk);
        if self.pending_len >= WRITE_BATCH {
            self.flush_pending().await?;
        }
        Ok(())
    }

    fn staged_path(&self) -> Option<PathBuf> {
        self.temp.clone()
    }

    async fn commit(mut self: Box<Self>, _sha256: &str) -> Result<()> {
        self.flush_pending().await?;
        let file = self.written().await?;
        let temp = self
            .temp
            .take()
            .ok_or_else(|| Error::internal("writer already closed"))?;
        let target = self.target.clone();
        let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            file.sync_all()?;
            drop(file);
            let dir = target.parent().expect("object path has a parent");
            create_dir_durably(dir)?;
            if let Err(e) = std::fs::rename(&temp, &target) {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
            std::fs::File::open(dir)?.sync_all()
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?;
        result.map_err(Error::from)
    }

    async fn abort(mut self: Box<Self>) {
        self.remove_temp();
    }
}

/// Creates `dir` and its missing parents, fsyncing the parent of each directory created so
/// that a power loss cannot drop a directory (and the committed file inside it).
fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        // Created meanwhile by another writer, who may not have fsynced yet: fsync anyway.
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

impl FsWriter {
    fn remove_temp(&mut self) {
        self.file.take();
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        // A dropped, uncommitted writer (client gone, handler cancelled) leaves nothing behind.
        self.remove_temp();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    async fn collect(mut s: ByteStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn staged_write_is_invisible_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsStorage::open(dir.path()).await.unwrap();
        fs.create_bucket("b1").await.unwrap();
        let mut w = fs.writer("b1", "../a/b", None).await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        w.write(Bytes::from_static(b"world")).await.unwrap();
        assert_eq!(fs.stat("b1", "../a/b").await.unwrap(), None);
        w.commit("x").await.unwrap();
        assert_eq!(fs.stat("b1", "../a/b").await.unwrap(), Some(11));
        assert_eq!(
            collect(fs.read("b1", "../a/b").await.unwrap()).await,
            b"hello world"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn dropped_writer_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsStorage::open(dir.path()).await.unwrap();
        let mut w = fs.writer("b1", "k", None).await.unwrap();
        w.write(Bytes::from(vec![1u8; 10])).await.unwrap();
        drop(w);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert_eq!(fs.stat("b1", "k").await.unwrap(), None);
    }
}
