//! `mirrorgate import`: registers the objects already in a backend bucket (as CCS
//! `importFromExistingBucket`), so mirrorgate serves them. Each object is recorded READY with
//! its size and SHA-256, taken from our user metadata when the object has it and computed by
//! streaming the object otherwise (the object itself is left untouched). Objects already known
//! are skipped, so running it again is harmless.

use std::fmt;
use std::time::Duration;

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::core::digest::SideHashes;
use crate::model::blocks::BlockHashes;

use crate::config::Config;
use crate::error::Result;
use crate::meta::{Bucket, MetaStore, Object, Status, TopologyStatus};
use crate::model::names::{check_bucket, check_object};
use crate::model::order::{Action, Order};
use crate::storage::{DynStorage, StoredObject};

/// Objects examined at the same time (hashing streams run in parallel).
const CONCURRENCY: usize = 4;

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// Newly registered objects and their bytes.
    pub registered: u64,
    pub bytes: u64,
    /// Of those, how many had no hash in their metadata and were read to compute it.
    pub hashed: u64,
    /// Already known to mirrorgate.
    pub skipped: u64,
    /// Keys that are not valid CCS object names (and our own staging keys).
    pub invalid: u64,
    /// Listed but gone by the time they were examined.
    pub vanished: u64,
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "registered {} objects ({} bytes, {} hashed by reading them), {} already registered, {} invalid names, {} vanished",
            self.registered, self.bytes, self.hashed, self.skipped, self.invalid, self.vanished
        )
    }
}

enum Outcome {
    Registered { size: u64, hashed: bool },
    Skipped,
    Invalid,
    Vanished,
}

impl ImportSummary {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Registered { size, hashed } => {
                self.registered += 1;
                self.bytes += size;
                self.hashed += u64::from(hashed);
            }
            Outcome::Skipped => self.skipped += 1,
            Outcome::Invalid => self.invalid += 1,
            Outcome::Vanished => self.vanished += 1,
        }
    }
}

/// Imports backend bucket `bucket` of the configured storage; the mirrorgate bucket is created
/// (owned by `client_id`) when missing.
pub async fn import_bucket(
    config: &Config,
    bucket: &str,
    client_id: &str,
) -> anyhow::Result<ImportSummary> {
    check_bucket(bucket)?;
    let meta = MetaStore::open(&config.metadata_url()).await?;
    let storage = crate::storage::open(config).await?;
    // Listing first: a missing backend bucket is an error, not an empty import.
    let mut page = storage.list(bucket, "", None).await?;
    ensure_bucket(&meta, &storage, bucket, client_id, &config.site.id).await?;
    let owner = meta
        .get_bucket(bucket)
        .await?
        .map(|b| b.client_id)
        .unwrap_or_else(|| client_id.to_owned());
    let peers = if config.replication.enabled {
        meta.list_topologies(Some(TopologyStatus::Up))
            .await?
            .into_iter()
            .map(|t| t.id)
            .filter(|id| *id != config.site.id)
            .collect()
    } else {
        Vec::new()
    };
    let importer = Importer {
        meta: &meta,
        storage: &storage,
        bucket,
        site: &config.site.id,
        block_size: config.storage.block_size_bytes,
        owner,
        peers,
    };
    let progress = progress_bar();
    let mut summary = ImportSummary::default();
    loop {
        progress.inc_length(page.objects.len() as u64);
        let mut outcomes = futures::stream::iter(page.objects)
            .map(|listed| importer.import_one(listed))
            .buffer_unordered(CONCURRENCY);
        while let Some(outcome) = outcomes.try_next().await? {
            summary.add(outcome);
            progress.inc(1);
        }
        let Some(next) = page.next else { break };
        page = storage.list(bucket, "", Some(&next)).await?;
    }
    progress.finish_and_clear();
    Ok(summary)
}

/// Creates the mirrorgate bucket unless a live one exists (its owner is then kept).
async fn ensure_bucket(
    meta: &MetaStore,
    storage: &DynStorage,
    bucket: &str,
    client_id: &str,
    site: &str,
) -> Result<()> {
    if let Some(existing) = meta.get_bucket(bucket).await? {
        if existing.status != Status::Deleted {
            return Ok(());
        }
    }
    storage.create_bucket(bucket).await?;
    meta.create_bucket(
        &Bucket {
            id: bucket.to_owned(),
            name: bucket.to_owned(),
            client_id: client_id.to_owned(),
            site: site.to_owned(),
            creation: Utc::now(),
            expires: None,
            status: Status::Ready,
        },
        &[],
    )
    .await
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] {bar:40} {pos}/{len} objects")
            .expect("valid progress template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

struct Importer<'a> {
    meta: &'a MetaStore,
    storage: &'a DynStorage,
    bucket: &'a str,
    site: &'a str,
    block_size: u64,
    /// The bucket's owner and the peers its objects replicate to.
    owner: String,
    peers: Vec<String>,
}

impl Importer<'_> {
    async fn import_one(&self, listed: StoredObject) -> Result<Outcome> {
        if check_object(&listed.key).is_err() {
            tracing::warn!(key = %listed.key, "not imported: not a valid CCS object name");
            return Ok(Outcome::Invalid);
        }
        if self.already_known(&listed.key).await? {
            return Ok(Outcome::Skipped);
        }
        let Some(stored) = self.storage.describe(self.bucket, &listed.key).await? else {
            return Ok(Outcome::Vanished);
        };
        // Block hashes need the bytes: an object whose hash the backend keeps is registered
        // without them (its range reads are not verified by blocks).
        let (hash, blocks) = match stored.hash {
            Some(hash) => (hash, None),
            None => {
                let (hash, blocks) = self.hash_by_reading(&stored).await?;
                (hash, Some(blocks))
            }
        };
        let hashed = blocks.is_some();
        let obj = Object {
            id: uuid::Uuid::new_v4().to_string(),
            site: self.site.to_owned(),
            bucket: self.bucket.to_owned(),
            name: stored.key,
            hash: Some(hash),
            status: Status::Ready,
            creation: Utc::now(),
            expires: None,
            size: stored.size,
            metadata: Default::default(),
        };
        let orders = self.orders_for(&obj);
        let registered = self.meta.register_ready_object(&obj, &orders).await?;
        if let (true, Some(blocks), Some(hash)) = (registered, &blocks, &obj.hash) {
            self.meta
                .put_blocks(&obj.bucket, &obj.name, hash, blocks)
                .await?;
        }
        Ok(if registered {
            Outcome::Registered {
                size: obj.size,
                hashed,
            }
        } else {
            Outcome::Skipped
        })
    }

    /// One CREATE order per UP peer, as a client write at this site would queue.
    fn orders_for(&self, obj: &Object) -> Vec<Order> {
        let op_id = uuid::Uuid::new_v4().to_string();
        self.peers
            .iter()
            .map(|peer| Order {
                op_id: op_id.clone(),
                from_site: self.site.to_owned(),
                to_site: peer.clone(),
                client_id: self.owner.clone(),
                bucket_name: obj.bucket.clone(),
                object_name: Some(obj.name.clone()),
                size: Some(obj.size),
                hash: obj.hash.clone(),
                action: Action::Create,
                version_time: Some(obj.creation.timestamp_millis()),
            })
            .collect()
    }

    /// Known objects are skipped before their bytes are read (deleted or failed rows are not
    /// "known": the object is back in storage).
    async fn already_known(&self, key: &str) -> Result<bool> {
        let existing = self.meta.get_object(self.bucket, key).await?;
        Ok(existing.is_some_and(|o| !matches!(o.status, Status::Deleted | Status::ErrUpl)))
    }

    /// The object's SHA-256 and its block hashes, in one pass over its bytes.
    async fn hash_by_reading(&self, stored: &StoredObject) -> Result<(String, BlockHashes)> {
        let mut body = self.storage.read(self.bucket, &stored.key).await?;
        let mut hasher = Sha256::new();
        let mut side = SideHashes::new(self.block_size, Some(stored.size), None);
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            if size > stored.size {
                break;
            }
            hasher.update(&chunk);
            side.update(&chunk).await?;
        }
        if size != stored.size {
            return Err(crate::error::Error::storage(format!(
                "{}/{} changed while it was imported ({} bytes listed, {size} read)",
                self.bucket, stored.key, stored.size
            )));
        }
        let digest: [u8; 32] = hasher.finalize().into();
        let blocks = side.finish(digest).await?.blocks;
        Ok((crate::model::hash::encode(&digest), blocks))
    }
}
