//! The replica rows this site keeps for each write, written where the copies change: a
//! verified write (state A with size, SHA-256 and adler32: in the transaction that makes a new
//! object READY or replaces its version, see `meta::Verified`), a pull in progress
//! (`copying`, C), a deletion (`removed`). Rows for peers' copies are learned from replication
//! (in the transaction that completes an order at the source, see
//! `MetaStore::orders_completed`; `pulled_from` at the replica). A row missed here (a crash in
//! between) is restored by the catalogue's startup reconciliation.

use super::Site;
use crate::meta::Object;
use crate::model::order::{Order, WriteOrigin};

/// The copy here was deleted. A deletion a peer ordered means the object is going away
/// everywhere: what this site learned about other copies goes too.
pub async fn removed(site: &Site, bucket: &str, name: &str, origin: &WriteOrigin) {
    let done = match origin {
        WriteOrigin::Replica { from_site } if *from_site != site.site_id => {
            site.meta.forget_replicas(bucket, name).await
        }
        _ => site.meta.replica_removed(bucket, name, &site.site_id).await,
    };
    if let Err(e) = done {
        tracing::warn!("catalogue: recording the deletion of {bucket}/{name}: {e}");
    }
}

/// A replication order starts pulling a copy here.
pub async fn copying(site: &Site, order: &Order, name: &str) {
    let obj = Object {
        id: String::new(),
        site: site.site_id.clone(),
        bucket: order.bucket_name.clone(),
        name: name.to_owned(),
        hash: order.hash.clone(),
        status: crate::meta::Status::Upload,
        creation: chrono::Utc::now(),
        expires: None,
        size: order.size.unwrap_or(0),
        metadata: Default::default(),
    };
    let done = site.meta.replica_copying(&obj, &site.site_id).await;
    log_failure(done, "recording a copy in progress", &obj);
}

/// A pull ended: a COPYING row it left (no copy was stored) goes.
pub async fn copy_ended(site: &Site, bucket: &str, name: &str) {
    if let Err(e) = site
        .meta
        .replica_copy_failed(bucket, name, &site.site_id)
        .await
    {
        tracing::warn!("catalogue: forgetting the failed copy of {bucket}/{name}: {e}");
    }
}

/// The copy pulled here came from `site`: that site holds the same good bytes.
pub async fn pulled_from(site: &Site, bucket: &str, name: &str, source: &str) {
    let done = site
        .meta
        .learn_copy(bucket, name, source, &site.site_id, (0, None))
        .await;
    if let Err(e) = done {
        tracing::warn!("catalogue: recording {source}'s copy of {bucket}/{name}: {e}");
    }
}

fn log_failure(done: crate::error::Result<()>, what: &str, obj: &Object) {
    if let Err(e) = done {
        // The startup reconciliation repairs a row missed here.
        tracing::warn!("catalogue: {what} {}/{}: {e}", obj.bucket, obj.name);
    }
}
