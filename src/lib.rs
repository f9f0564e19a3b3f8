//! mirrorgate: a multi-site object replication proxy.
//!
//! `run` wires the application: config -> stores -> services -> router -> server.

pub mod app;
pub mod catalogue;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod definitions;
pub mod dr;
pub mod error;
pub mod hash;
pub mod http;
pub mod meta;
pub mod replication;
pub mod storage;
pub mod tasks;
pub mod topology;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;

pub use config::Config;

/// Serves one site until `shutdown` resolves, then drains in-flight requests.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    http::metrics::handle();
    let listen = config.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let tls = http::tls::acceptor(&config.tls)?;
    let public_url = if config.site.public_url.is_empty() {
        format!("{}://{addr}", if tls.is_some() { "https" } else { "http" })
    } else {
        config.site.public_url.clone()
    };
    let options = http::server::ServeOptions {
        tls,
        max_header_bytes: config.limits.max_header_bytes,
        drain_timeout: Duration::from_secs(config.limits.drain_timeout_secs),
        limits: config.limits.clone(),
    };
    let state = app::AppState::open(config, public_url).await?;
    let router = state.router();
    replication::start(&state);
    state.tasks.recover(&state).await?;
    tokio::spawn(definitions::scheduler::run(state.clone()));
    tracing::info!(site = %state.site_id, url = %state.public_url, "listening on {addr}");
    http::server::serve(listener, router, options, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}
