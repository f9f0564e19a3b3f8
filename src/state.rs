//! [`AppState`]: the object core and the engines, composed once at startup and shared by every
//! API room. Built low to high: the [`Site`] (config, metadata, storage) first, then the
//! engines that take the handles they need, then the hooks that let the core tell the
//! engines about changes. The router is assembled above this, in `crate::router`.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::Config;
use crate::core::{Hooks, Site};
use crate::engines::catalogue::{healing, Catalogue, CatalogueService};
use crate::engines::replication::{Replication, ReplicationService};
use crate::engines::tasks::{JobContext, TaskEngine};
use crate::engines::topology::{Credentials, TopologyService};
use crate::error::Result;
use crate::meta::{MetaStore, Topology, TopologyStatus};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub site: Site,
    pub topology: Arc<TopologyService>,
    pub replication: Replication,
    pub catalogue: Catalogue,
    /// Definitions and disaster recovery run as tasks with these handles.
    pub jobs: JobContext,
    pub tasks: Arc<TaskEngine>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

crate::deref_to_site!(Inner);

impl AppState {
    /// Opens the stores, cleans up after a crash, builds the engines and seeds the topology
    /// from the config. Background work starts with [`AppState::start`].
    pub async fn open(config: Config, public_url: String) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.site.data_dir)?;
        let meta = MetaStore::open_config(&config.metadata_url(), &config.metadata)
            .await?
            .with_local_site(&config.site.id)
            .with_node(&config.site.node_id(), config.site.lease_ms);
        let storage = crate::storage::open(&config).await?;
        let connect_timeout = Duration::from_millis(config.topology.peer_timeout_ms);
        let stall = Duration::from_secs(config.replication.peer_stall_timeout_secs.max(1));
        let client = crate::tls::peer_client(&config.tls, connect_timeout, stall)?;
        let topology = Arc::new(
            TopologyService::new(
                config.site.id.clone(),
                config.topology.clone(),
                meta.clone(),
                client,
            )
            .with_credentials(Credentials::from_config(&config)),
        );
        let site = Site::new(config, public_url, meta.clone(), storage);
        recover(&site).await?;
        let replication = Replication {
            site: site.clone(),
            topology: topology.clone(),
            service: Arc::new(ReplicationService::default()),
        };
        let catalogue = Catalogue {
            site: site.clone(),
            topology: topology.clone(),
            replication: replication.clone(),
            service: Arc::new(CatalogueService::default()),
        };
        let tasks = Arc::new(TaskEngine::new(meta));
        let jobs = JobContext {
            site: site.clone(),
            topology: topology.clone(),
            tasks: tasks.clone(),
        };
        site.set_hooks(Arc::new(EngineHooks {
            topology: topology.clone(),
            replication: replication.clone(),
            catalogue: catalogue.clone(),
        }));
        crate::engines::definitions::register(&jobs);
        crate::engines::dr::actions::register(&jobs);
        let finished = crate::core::objects::finish_interrupted_deletes(&site).await?;
        if finished > 0 {
            tracing::info!(
                objects = finished,
                "deletes interrupted by the last stop are finished"
            );
        }
        let state = AppState(Arc::new(Inner {
            site,
            topology,
            replication,
            catalogue,
            jobs,
            tasks,
        }));
        let settled = state.meta.settle_servers().await?;
        if settled > 0 {
            tracing::info!(
                servers = settled,
                "DR servers left mid-action by the last stop are back to a stable status"
            );
        }
        for peer in &state.config.peers {
            let t = Topology {
                id: peer.id.clone(),
                name: peer.name.clone().unwrap_or_else(|| peer.id.clone()),
                uri: peer.url.clone(),
                status: TopologyStatus::Up,
            };
            state.meta.seed_topology(&t).await?;
        }
        crate::engines::catalogue::recover(&state.catalogue).await?;
        Ok(state)
    }

    /// Starts the background engines: replication, the catalogue's jobs, interrupted tasks,
    /// the definitions scheduler and the topology cache sweep.
    pub async fn start(&self) -> anyhow::Result<()> {
        tokio::spawn(crate::engines::topology::sweep(Arc::downgrade(
            &self.topology,
        )));
        crate::engines::catalogue::start(&self.catalogue);
        crate::engines::replication::start(&self.replication);
        crate::engines::topology::probe::start(self.topology.clone());
        self.tasks.recover().await?;
        tokio::spawn(crate::engines::definitions::scheduler::run(
            self.jobs.clone(),
        ));
        Ok(())
    }

    /// Called when the administration API changes the topology.
    pub fn topology_changed(&self) {
        self.topology.peers_changed();
    }
}

/// Startup sweep: temporaries and uploads that a crash interrupted are removed.
async fn recover(site: &Site) -> anyhow::Result<()> {
    let temporaries = site.storage.sweep().await?;
    let uploads = site.meta.sweep_uploads().await?;
    let reclaimed = site.meta.reset_inbox_claims().await?;
    if reclaimed > 0 {
        tracing::info!(
            orders = reclaimed,
            "orders interrupted by the last stop are queued again"
        );
    }
    for (bucket, name) in &uploads {
        site.storage.delete(bucket, name).await?;
    }
    if temporaries > 0 || !uploads.is_empty() {
        tracing::info!(
            temporaries,
            uploads = uploads.len(),
            "removed what an interrupted run left behind"
        );
    }
    Ok(())
}

/// How the core's changes reach the engines.
struct EngineHooks {
    topology: Arc<TopologyService>,
    replication: Replication,
    catalogue: Catalogue,
}

#[async_trait]
impl Hooks for EngineHooks {
    async fn replication_peers(&self) -> Result<Vec<String>> {
        let peers = self.topology.replication_peers().await?;
        Ok(peers.iter().map(|p| p.id.clone()).collect())
    }

    fn orders_queued(&self) {
        self.replication.service.outbox_ready.notify_one();
    }

    fn object_changed(&self, bucket: &str, name: Option<&str>) {
        self.topology.invalidate(bucket, name);
    }

    fn copy_corrupt(&self, bucket: &str, name: &str, hash: &str, why: &str) {
        healing::declare_detected_later(&self.catalogue, bucket, name, hash, why);
    }

    fn upload_started(&self, upload: &crate::core::uploads::UploadProgress) {
        crate::engines::replication::prefetch::announce(&self.replication, upload);
    }
}
