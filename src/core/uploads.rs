//! Large uploads in progress whose completed blocks peers may pull before the upload commits,
//! so that replicating a large object overlaps its upload instead of following it.
//!
//! While a client's upload of at least `[replication] ranged_pull_min_bytes` is received, its
//! block digests (from the pass that hashes them anyway, `core::digest`) are published here as
//! each block completes, and the storage's temporary file (fs only) serves the completed
//! blocks. Nothing here is an object: a peer stages what it pulls, keyed by the upload, and
//! only an order, queued when the upload becomes READY, makes a copy of it. An upload that
//! fails or whose process dies is gone from here (a peer then hears 404 and drops its staging).

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;

use crate::error::{Error, Result};
use crate::model::blocks::BlockHashes;

/// How long the outcome of a finished upload stays readable (a following peer polls it).
const OUTCOME_KEPT: Duration = Duration::from_secs(60);

/// What became of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Running,
    /// READY under this SHA-256 (CCS encoding).
    Committed(String),
    Abandoned,
}

/// One upload in progress (see the module comment).
pub struct UploadProgress {
    pub id: String,
    pub bucket: String,
    pub name: String,
    pub block_size: u64,
    temp: PathBuf,
    digests: Mutex<Vec<[u8; 32]>>,
    outcome: Mutex<Outcome>,
    /// Whether peers were told of it (if not, nobody polls its outcome).
    announced: AtomicBool,
}

/// What a peer is told about an upload: the blocks it may pull now and the outcome.
pub struct UploadSnapshot {
    pub ready: BlockHashes,
    pub outcome: Outcome,
}

impl UploadProgress {
    /// Marks the upload announced to peers; true the first time only.
    pub fn announce(&self) -> bool {
        !self.announced.swap(true, Ordering::Relaxed)
    }

    /// Records the digests of the blocks completed so far (the hashing thread calls this with
    /// all of them; only the new ones are copied).
    pub fn publish(&self, completed: &[[u8; 32]]) {
        let mut digests = self.digests.lock().unwrap();
        if completed.len() > digests.len() {
            let known = digests.len();
            digests.extend_from_slice(&completed[known..]);
        }
    }

    /// The blocks both hashed and written to the temporary file (the two run in parallel), and
    /// the outcome. Blocking (a `stat`).
    pub fn snapshot(&self) -> UploadSnapshot {
        let outcome = self.outcome.lock().unwrap().clone();
        let written = std::fs::metadata(&self.temp).map_or(0, |m| m.len());
        let digests = self.digests.lock().unwrap();
        let ready = digests.len().min((written / self.block_size) as usize);
        UploadSnapshot {
            ready: BlockHashes {
                block_size: self.block_size,
                digests: digests[..ready].to_vec(),
            },
            outcome,
        }
    }

    /// Block `index` from the temporary file, if it is complete there and the upload still
    /// running (after its commit the file has moved: the peer pulls the rest as an object).
    /// Blocking.
    pub fn read_block(&self, index: u64) -> Result<Option<Bytes>> {
        if *self.outcome.lock().unwrap() != Outcome::Running
            || index >= self.digests.lock().unwrap().len() as u64
        {
            return Ok(None);
        }
        let Ok(file) = std::fs::File::open(&self.temp) else {
            return Ok(None); // committed or abandoned meanwhile
        };
        let mut block = vec![0u8; self.block_size as usize];
        match file.read_exact_at(&mut block, index * self.block_size) {
            Ok(()) => Ok(Some(Bytes::from(block))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(Error::from(e)),
        }
    }
}

/// The uploads in progress of this process, by upload id (the object row's id).
#[derive(Default)]
pub struct UploadsInProgress {
    map: Arc<DashMap<String, Arc<UploadProgress>>>,
}

/// What [`UploadsInProgress::begin`] needs to know of an upload.
pub struct UploadStart<'a> {
    pub id: &'a str,
    pub bucket: &'a str,
    pub name: &'a str,
    pub block_size: u64,
    /// The storage's temporary file the bytes are written to.
    pub temp: PathBuf,
}

impl UploadsInProgress {
    /// Publishes an upload; the handle ends it (abandoned unless [`InProgress::committed`]).
    pub fn begin(&self, start: UploadStart<'_>) -> InProgress {
        let progress = Arc::new(UploadProgress {
            id: start.id.to_owned(),
            bucket: start.bucket.to_owned(),
            name: start.name.to_owned(),
            block_size: start.block_size.max(1),
            temp: start.temp,
            digests: Mutex::new(Vec::new()),
            outcome: Mutex::new(Outcome::Running),
            announced: AtomicBool::new(false),
        });
        self.map.insert(progress.id.clone(), progress.clone());
        InProgress {
            progress,
            map: self.map.clone(),
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<UploadProgress>> {
        self.map.get(id).map(|p| p.clone())
    }
}

/// A published upload; dropping it without [`InProgress::committed`] marks it abandoned. Either
/// outcome of an upload announced to peers stays readable for [`OUTCOME_KEPT`], then the
/// upload is forgotten.
pub struct InProgress {
    pub progress: Arc<UploadProgress>,
    map: Arc<DashMap<String, Arc<UploadProgress>>>,
}

impl InProgress {
    /// The upload is READY under `hash` (its orders are queued).
    pub fn committed(self, hash: &str) {
        *self.progress.outcome.lock().unwrap() = Outcome::Committed(hash.to_owned());
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        {
            let mut outcome = self.progress.outcome.lock().unwrap();
            if *outcome == Outcome::Running {
                *outcome = Outcome::Abandoned;
            }
        }
        let (map, id) = (self.map.clone(), self.progress.id.clone());
        let runtime = tokio::runtime::Handle::try_current();
        match runtime {
            Ok(runtime) if self.progress.announced.load(Ordering::Relaxed) => {
                runtime.spawn(async move {
                    tokio::time::sleep(OUTCOME_KEPT).await;
                    map.remove(&id);
                });
            }
            _ => {
                map.remove(&id);
            }
        }
    }
}
