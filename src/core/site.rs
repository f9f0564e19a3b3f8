//! [`Site`]: the low shared state (configuration, metadata store, storage), built first and
//! handed to the core and to every engine.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use crate::config::Config;
use crate::error::Result;
use crate::meta::MetaStore;
use crate::model::order::{Action, Order, WriteOrigin};
use crate::storage::DynStorage;

/// What the engines above want to hear when the core changes an object. Implemented where
/// the engines are composed (`crate::state`), so that the core never imports them.
#[async_trait]
pub trait Hooks: Send + Sync {
    /// The sites a change made here is replicated to.
    async fn replication_peers(&self) -> Result<Vec<String>>;
    /// Orders were committed: wake whoever delivers them.
    fn orders_queued(&self);
    /// An object's (or a bucket's, with no name) location changed: drop cached lookups.
    fn object_changed(&self, bucket: &str, name: Option<&str>);
    /// This site's copy of the version `hash` failed verification while being read.
    fn copy_corrupt(&self, bucket: &str, name: &str, hash: &str, why: &str);
    /// A client's large upload is under way (`core::uploads`): peers may start pulling it.
    fn upload_started(&self, upload: &crate::core::uploads::UploadProgress);
}

/// Lets an engine's context read the site's fields directly (`ctx.meta`, `ctx.site_id`).
#[macro_export]
macro_rules! deref_to_site {
    ($ctx:ty) => {
        impl std::ops::Deref for $ctx {
            type Target = $crate::core::Site;
            fn deref(&self) -> &$crate::core::Site {
                &self.site
            }
        }
    };
}

#[derive(Clone)]
pub struct Site(Arc<SiteInner>);

pub struct SiteInner {
    pub config: Config,
    pub site_id: String,
    /// How peers reach this site (config, or derived from the bound address).
    pub public_url: String,
    pub meta: MetaStore,
    pub storage: DynStorage,
    /// Large uploads in progress, whose completed blocks peers may pull already.
    pub uploads: crate::core::uploads::UploadsInProgress,
    hooks: OnceLock<Arc<dyn Hooks>>,
}

impl Deref for Site {
    type Target = SiteInner;
    fn deref(&self) -> &SiteInner {
        &self.0
    }
}

impl Site {
    pub fn new(config: Config, public_url: String, meta: MetaStore, storage: DynStorage) -> Self {
        Site(Arc::new(SiteInner {
            site_id: config.site.id.clone(),
            public_url,
            meta,
            storage,
            config,
            uploads: Default::default(),
            hooks: OnceLock::new(),
        }))
    }

    /// Connects the engines once they are built (they hold a `Site` themselves).
    pub fn set_hooks(&self, hooks: Arc<dyn Hooks>) {
        if self.hooks.set(hooks).is_err() {
            tracing::error!("the site's hooks were set twice; the first ones stay");
        }
    }

    pub fn hooks(&self) -> &dyn Hooks {
        match self.hooks.get() {
            Some(h) => h.as_ref(),
            None => &NoHooks,
        }
    }

    /// One order per replication peer for a change a client made here (none when replication
    /// is off or the change came from a peer: every site replicates to every other directly).
    pub async fn orders_for(
        &self,
        origin: &WriteOrigin,
        bucket: &str,
        object: Option<(&str, u64, &str)>,
        action: Action,
    ) -> Result<Vec<Order>> {
        let WriteOrigin::Client { client_id } = origin else {
            return Ok(Vec::new());
        };
        if !self.config.replication.enabled {
            return Ok(Vec::new());
        }
        let op_id = uuid::Uuid::new_v4().to_string();
        let peers = self.hooks().replication_peers().await?;
        let carries_bytes = action != Action::Delete;
        Ok(peers
            .into_iter()
            .map(|peer| Order {
                op_id: op_id.clone(),
                from_site: self.site_id.clone(),
                to_site: peer,
                client_id: client_id.clone(),
                bucket_name: bucket.to_owned(),
                object_name: object.map(|o| o.0.to_owned()),
                size: object.filter(|_| carries_bytes).map(|o| o.1),
                // CREATE/UPDATE: the version to pull; DELETE: the version deleted.
                hash: object.map(|o| o.2.to_owned()).filter(|h| !h.is_empty()),
                action,
                // The outbox takes it from the object's row in the transaction that queues it.
                version_time: None,
            })
            .collect())
    }

    /// Call after orders were committed.
    pub fn queued(&self, orders: &[Order]) {
        if !orders.is_empty() {
            self.hooks().orders_queued();
        }
    }
}

/// Before the engines are connected (startup sweeps): nobody to tell.
struct NoHooks;

#[async_trait]
impl Hooks for NoHooks {
    async fn replication_peers(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn orders_queued(&self) {}
    fn object_changed(&self, _: &str, _: Option<&str>) {}
    fn copy_corrupt(&self, _: &str, _: &str, _: &str, _: &str) {}
    fn upload_started(&self, _: &crate::core::uploads::UploadProgress) {}
}
