//! mirrorgate: a multi-site object replication proxy.
//!
//! `run` wires the application: config -> stores -> services -> router -> server.

pub mod api;
pub mod cli;
pub mod config;
pub mod core;
pub mod engines;
pub mod error;
pub mod http;
pub mod meta;
pub mod model;
pub mod router;
pub mod state;
pub mod storage;
pub mod tls;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;

pub use config::Config;

/// Serves one site until `shutdown` resolves, then drains in-flight requests.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    http::metrics::handle();
    if config.auth_enabled() {
        // Key files are read now so that a bad one stops the start, naming the file.
        http::auth::Verifier::from_config(&config.auth)?;
    }
    let listen = config.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let tls = tls::acceptor(&config.tls)?;
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
    let state = state::AppState::open(config, public_url).await?;
    let router = router::router(&state);
    state.start().await?;
    api::status::publish_periodically(state.clone());
    tracing::info!(site = %state.site_id, url = %state.public_url, "listening on {addr}");
    http::server::serve(listener, router, options, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}
