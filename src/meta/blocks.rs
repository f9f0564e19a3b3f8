//! Block hashes of object versions (see `crate::model::blocks`).

use sqlx::Row;

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
        let (block_size, digests) = (blocks.block_size as i64, blocks.to_hex());
        self.grouped(move |tx| {
            Box::pin(async move {
                let (bucket, name, hash) = row;
                sqlx::query(
                    "INSERT INTO object_blocks (bucket, name, hash, block_size, digests)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (bucket, name) DO UPDATE SET hash = excluded.hash,
                     block_size = excluded.block_size, digests = excluded.digests",
                )
                .bind(bucket)
                .bind(name)
                .bind(hash)
                .bind(block_size)
                .bind(digests)
                .execute(&mut *tx)
                .await?;
                Ok(())
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
