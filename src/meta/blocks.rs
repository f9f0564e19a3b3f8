//! Block hashes of object versions (see `crate::model::blocks`).

use sqlx::{AnyConnection, Row};

use super::MetaStore;
use crate::error::Result;
use crate::model::blocks::BlockHashes;

impl MetaStore {
    /// Records the block hashes of version `hash` of an object (replacing another version's).
    pub async fn put_blocks(
        &self,
        bucket: &str,
        name: &str,
        hash: &str,
        blocks: &BlockHashes,
    ) -> Result<()> {
        let row = (bucket.to_owned(), name.to_owned(), hash.to_owned());
        let blocks = blocks.clone();
        self.grouped(move |tx| {
            Box::pin(async move {
                let (bucket, name, hash) = row;
                put_blocks_in(tx, (&bucket, &name, &hash), &blocks).await
            })
        })
        .await
    }

    /// The block hashes of version `hash`, None when none were recorded for it.
    pub async fn blocks_of(
        &self,
        bucket: &str,
        name: &str,
        hash: &str,
    ) -> Result<Option<BlockHashes>> {
        let row = sqlx::query(
            "SELECT block_size, digests FROM object_blocks WHERE bucket = $1 AND name = $2 AND hash = $3",
        )
        .bind(bucket)
        .bind(name)
        .bind(hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.and_then(|r| {
            let size: i64 = r.get(0);
            let text: String = r.get(1);
            BlockHashes::from_hex(size as u64, &text)
        }))
    }

    /// Forgets the block hashes of a deleted object.
    pub async fn forget_blocks(&self, bucket: &str, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM object_blocks WHERE bucket = $1 AND name = $2")
            .bind(bucket)
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

/// [`MetaStore::put_blocks`] inside a transaction (also the one that makes an upload READY).
pub(super) async fn put_blocks_in(
    tx: &mut AnyConnection,
    (bucket, name, hash): (&str, &str, &str),
    blocks: &BlockHashes,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO object_blocks (bucket, name, hash, block_size, digests)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (bucket, name) DO UPDATE SET hash = excluded.hash,
         block_size = excluded.block_size, digests = excluded.digests",
    )
    .bind(bucket)
    .bind(name)
    .bind(hash)
    .bind(blocks.block_size as i64)
    .bind(blocks.to_hex())
    .execute(&mut *tx)
    .await?;
    Ok(())
}
