//! The hashes an incoming object needs besides its whole SHA-256 (which stays on the receiving
//! task, it decides whether the bytes are committed): the SHA-256 of each block and the adler32
//! for Rucio. Hashing them in the same loop made every upload hash each byte twice on one
//! thread; here they run on a blocking thread fed through a bounded channel (the `Bytes` are
//! shared, not copied), in parallel with the receive, and are joined before the commit.
//! An object known to fit in one block needs no block hashing at all: its one block digest
//! is the object's SHA-256.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::core::uploads::UploadProgress;
use crate::error::{Error, Result};
use crate::model::blocks::{BlockHasher, BlockHashes};

/// Chunks queued for the hashing thread. Memory: this many chunks (hyper hands out frames of
/// at most about 408 KiB, storage reads are 256 KiB: at most about 3 MiB an upload).
const SIDE_DEPTH: usize = 8;

/// What [`SideHashes::finish`] returns.
pub struct SideDigests {
    pub blocks: BlockHashes,
    pub adler32: u32,
}

/// Block hashes and adler32 of a stream, fed chunk by chunk (see the module comment).
pub enum SideHashes {
    /// At most one block: only adler32, inline (cheap, and no thread for a small object).
    OneBlock {
        block_size: u64,
        seen: u64,
        adler: adler2::Adler32,
    },
    /// Larger or of unknown size: a blocking thread hashes what it is sent.
    Worker {
        tx: mpsc::Sender<Bytes>,
        done: JoinHandle<SideDigests>,
    },
}

impl SideHashes {
    /// `size_hint`: the size the sender declared, if any (a larger body fails the upload);
    /// `publish`: an upload in progress whose completed blocks peers may pull already.
    pub fn new(
        block_size: u64,
        size_hint: Option<u64>,
        publish: Option<Arc<UploadProgress>>,
    ) -> Self {
        let block_size = block_size.max(1);
        if size_hint.is_some_and(|size| size <= block_size) {
            return Self::OneBlock {
                block_size,
                seen: 0,
                adler: adler2::Adler32::new(),
            };
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(SIDE_DEPTH);
        let done = tokio::task::spawn_blocking(move || {
            let mut blocks = BlockHasher::new(block_size);
            let mut adler = adler2::Adler32::new();
            while let Some(chunk) = rx.blocking_recv() {
                blocks.update(&chunk);
                adler.write_slice(&chunk);
                if let Some(upload) = &publish {
                    upload.publish(blocks.completed());
                }
            }
            SideDigests {
                blocks: blocks.finish(),
                adler32: adler.checksum(),
            }
        });
        Self::Worker { tx, done }
    }

    /// Takes one chunk (waits when the hashing thread is [`SIDE_DEPTH`] chunks behind).
    pub async fn update(&mut self, chunk: &Bytes) -> Result<()> {
        match self {
            Self::OneBlock { seen, adler, .. } => {
                *seen += chunk.len() as u64;
                adler.write_slice(chunk);
                Ok(())
            }
            Self::Worker { tx, .. } => tx
                .send(chunk.clone())
                .await
                .map_err(|_| Error::internal("the block hashing thread stopped")),
        }
    }

    /// The block hashes and adler32 of everything fed; `sha256` is the whole object's digest
    /// (the one block's digest when the object fits in one).
    pub async fn finish(self, sha256: [u8; 32]) -> Result<SideDigests> {
        match self {
            Self::OneBlock {
                block_size,
                seen,
                adler,
            } => {
                if seen > block_size {
                    return Err(Error::internal("a one-block object grew past its block"));
                }
                let digests = if seen == 0 { vec![] } else { vec![sha256] };
                Ok(SideDigests {
                    blocks: BlockHashes {
                        block_size,
                        digests,
                    },
                    adler32: adler.checksum(),
                })
            }
            Self::Worker { tx, done } => {
                drop(tx);
                done.await
                    .map_err(|e| Error::internal(format!("block hashing: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn inline(block_size: u64, data: &[u8]) -> BlockHashes {
        let mut h = BlockHasher::new(block_size);
        h.update(data);
        h.finish()
    }

    async fn side(block_size: u64, hint: Option<u64>, data: &[u8]) -> SideDigests {
        let mut side = SideHashes::new(block_size, hint, None);
        for piece in data.chunks(700) {
            side.update(&Bytes::copy_from_slice(piece)).await.unwrap();
        }
        side.finish(Sha256::digest(data).into()).await.unwrap()
    }

    #[tokio::test]
    async fn side_hashes_match_the_inline_ones_in_both_modes() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let adler = {
            let mut a = adler2::Adler32::new();
            a.write_slice(&data);
            a.checksum()
        };
        for (block_size, hint) in [(4096, None), (4096, Some(10_000)), (10_000, Some(10_000))] {
            let got = side(block_size, hint, &data).await;
            assert_eq!(
                got.blocks,
                inline(block_size, &data),
                "{block_size} {hint:?}"
            );
            assert_eq!(got.adler32, adler);
        }
        // One block: its digest is the object's, and an empty object has no block.
        assert_eq!(
            side(10_000, Some(10_000), &data).await.blocks.digests.len(),
            1
        );
        assert!(side(4096, Some(0), &[]).await.blocks.digests.is_empty());
        assert!(side(4096, None, &[]).await.blocks.digests.is_empty());
    }
}
