//! Registration of objects that already sit in storage (`mirrorgate import`).

use super::{MetaStore, Object};
use crate::error::{Error, Result};
use crate::model::order::Order;

impl MetaStore {
    /// Records an object READY with its size and hash. A name that is taken stays as it is and
    /// answers false, except a row left by a deletion or a failed upload, which is replaced
    /// (the bytes are in storage again). The object's replication orders are queued in the same
    /// transaction, so imported objects replicate like any others.
    pub async fn register_ready_object(&self, obj: &Object, orders: &[Order]) -> Result<bool> {
        let changing = self.changing_object(&obj.bucket, &obj.name, orders);
        let mut tx = self.write_tx().await?;
        let metadata =
            serde_json::to_string(&obj.metadata).map_err(|e| Error::internal(e.to_string()))?;
        let done = sqlx::query(
            "INSERT INTO objects (bucket, name, id, site, hash, status, creation, expires, size, metadata)
             VALUES ($1,$2,$3,$4,$5,'READY',$6,$7,$8,$9)
             ON CONFLICT (bucket, name) DO UPDATE SET id = excluded.id, site = excluded.site,
             hash = excluded.hash, status = excluded.status, creation = excluded.creation,
             expires = excluded.expires, size = excluded.size, metadata = excluded.metadata
             WHERE objects.status IN ('DELETED', 'ERR_UPL')",
        )
        .bind(&obj.bucket)
        .bind(&obj.name)
        .bind(&obj.id)
        .bind(&obj.site)
        .bind(&obj.hash)
        .bind(obj.creation.timestamp_millis())
        .bind(obj.expires.map(|e| e.timestamp_millis()))
        .bind(obj.size as i64)
        .bind(metadata)
        .execute(&mut *tx)
        .await?;
        let registered = done.rows_affected() > 0;
        if registered {
            super::replication::insert_orders(&mut tx, orders).await?;
            catalogue_copy(&mut tx, obj).await?;
        }
        tx.commit().await?;
        changing.done();
        Ok(registered)
    }
}

/// The copy's row in the replica catalogue (site = the importing site), in the same
/// transaction: a serving site lists it at once, and can declare it BAD if its bytes do not
/// match. adler32 is left to the scrubber (the bytes may not have been read).
async fn catalogue_copy(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    obj: &Object,
) -> Result<()> {
    let now = super::replication::now_ms();
    sqlx::query(
        "INSERT INTO replicas (bucket, name, site, state, bytes, sha256, created_at, updated_at)
         VALUES ($1,$2,$3,'A',$4,$5,$6,$6)
         ON CONFLICT (bucket, name, site) DO UPDATE SET state = 'A', bytes = excluded.bytes,
         sha256 = excluded.sha256, adler32 = NULL, tombstone = NULL, error_message = NULL,
         verified_at = NULL, updated_at = excluded.updated_at",
    )
    .bind(&obj.bucket)
    .bind(&obj.name)
    .bind(&obj.site)
    .bind(obj.size as i64)
    .bind(&obj.hash)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Status;

    fn object(name: &str) -> Object {
        Object {
            id: uuid::Uuid::new_v4().to_string(),
            site: "site-a".into(),
            bucket: "b1".into(),
            name: name.into(),
            hash: Some(crate::model::hash::of(b"x")),
            status: Status::Ready,
            creation: chrono::Utc::now(),
            expires: None,
            size: 1,
            metadata: Default::default(),
        }
    }

    #[tokio::test]
    async fn registers_once_and_replaces_only_deleted_rows() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("meta.db").display());
        let meta = MetaStore::open(&url).await.unwrap();
        let obj = object("a/b");
        assert!(meta.register_ready_object(&obj, &[]).await.unwrap());
        assert!(!meta.register_ready_object(&obj, &[]).await.unwrap());
        let stored = meta.get_object("b1", "a/b").await.unwrap().unwrap();
        assert_eq!(stored.status, Status::Ready);
        assert_eq!(stored.hash, obj.hash);
        let copy = meta.replica("b1", "a/b", "site-a").await.unwrap().unwrap();
        assert_eq!(copy.state, crate::model::replica::ReplicaState::Available);
        assert_eq!((copy.bytes, copy.sha256), (1, obj.hash.clone()));
        meta.set_object_status("b1", "a/b", Status::Deleted)
            .await
            .unwrap();
        assert!(meta.register_ready_object(&obj, &[]).await.unwrap());
    }
}
