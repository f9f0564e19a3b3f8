//! Bucket operations shared by the accessor and the replication applier: the storage, the
//! row and the orders a change fans out, in that order.

use super::Site;
use crate::error::{Error, Result};
use crate::meta::Bucket;
use crate::model::order::{Action, WriteOrigin};

/// Creates a bucket: storage first, then the row and its orders in one transaction.
pub async fn create(site: &Site, bucket: &Bucket, origin: &WriteOrigin) -> Result<()> {
    site.storage.create_bucket(&bucket.name).await?;
    let orders = site
        .orders_for(origin, &bucket.name, None, Action::Create)
        .await?;
    site.meta.create_bucket(bucket, &orders).await?;
    site.queued(&orders);
    site.hooks().object_changed(&bucket.name, None);
    Ok(())
}

/// Deletes an empty bucket: the row and its orders in one transaction, then storage.
pub async fn delete(site: &Site, name: &str, origin: &WriteOrigin) -> Result<()> {
    if site.meta.bucket_has_objects(name).await? {
        return Err(Error::not_acceptable(format!("bucket {name} is not empty")));
    }
    let orders = site.orders_for(origin, name, None, Action::Delete).await?;
    site.meta.delete_bucket(name, &orders).await?;
    site.queued(&orders);
    site.storage.delete_bucket(name).await?;
    site.hooks().object_changed(name, None);
    Ok(())
}
