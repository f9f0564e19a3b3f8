//! The application: configuration, stores and services, shared by every handler as
//! [`AppState`], and the router that puts the API families together.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;

use crate::catalogue::CatalogueService;
use crate::config::Config;
use crate::meta::{MetaStore, Topology, TopologyStatus};
use crate::replication::ReplicationService;
use crate::storage::DynStorage;
use crate::tasks::TaskEngine;
use crate::topology::TopologyService;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub site_id: String,
    /// How peers reach this site (config, or derived from the bound address).
    pub public_url: String,
    pub meta: MetaStore,
    pub storage: DynStorage,
    pub topology: TopologyService,
    pub replication: ReplicationService,
    pub catalogue: CatalogueService,
    pub tasks: TaskEngine,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Opens the stores, cleans up after a crash, and seeds the topology from the config.
    pub async fn open(config: Config, public_url: String) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.site.data_dir)?;
        let meta = MetaStore::open(&config.metadata_url()).await?;
        let storage = crate::storage::open(&config).await?;
        let connect_timeout = Duration::from_millis(config.topology.peer_timeout_ms);
        let client = crate::http::tls::peer_client(&config.tls, connect_timeout)?;
        let topology = TopologyService::new(
            config.site.id.clone(),
            config.topology.clone(),
            meta.clone(),
            client,
        );
        let state = AppState(Arc::new(Inner {
            site_id: config.site.id.clone(),
            public_url,
            meta,
            storage,
            topology,
            replication: ReplicationService::default(),
            catalogue: CatalogueService::default(),
            tasks: TaskEngine::default(),
            config,
        }));
        state.recover().await?;
        state.tasks.register(
            crate::definitions::RUN_KIND,
            Arc::new(crate::definitions::run::DefinitionRun),
        );
        crate::dr::actions::register(&state);
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
        crate::catalogue::recover(&state).await?;
        crate::catalogue::start(&state);
        Ok(state)
    }

    /// Startup sweep: temporaries and uploads that a crash interrupted are removed.
    async fn recover(&self) -> anyhow::Result<()> {
        let temporaries = self.storage.sweep().await?;
        let uploads = self.meta.sweep_uploads().await?;
        let reclaimed = self.meta.reset_inbox_claims().await?;
        if reclaimed > 0 {
            tracing::info!(
                orders = reclaimed,
                "orders interrupted by the last stop are queued again"
            );
        }
        for (bucket, name) in &uploads {
            self.storage.delete(bucket, name).await?;
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

    /// Called when the administration API changes the topology.
    pub fn topology_changed(&self) {
        self.topology.peers_changed();
    }

    pub fn router(&self) -> Router {
        let auth = crate::http::auth::Auth::from_config(&self.config);
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/metrics", get(crate::http::metrics::render))
            .merge(crate::dataplane::accessor::routes())
            .merge(crate::dataplane::replicator::routes())
            .merge(crate::replication::routes::routes())
            .merge(crate::control::admin::routes())
            .merge(crate::control::backbeat::routes())
            .merge(crate::control::rucio::routes())
            .merge(crate::catalogue::view::routes())
            .merge(crate::control::alfresco::routes())
            .merge(crate::control::dr::routes())
            .merge(crate::http::auth::routes(&auth))
            .fallback(crate::http::common::no_route)
            .layer(crate::http::auth::layer(&auth))
            .layer(axum::middleware::from_fn(
                crate::http::common::common_protocol,
            ))
            .with_state(self.clone())
    }
}
