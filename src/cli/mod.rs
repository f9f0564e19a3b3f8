//! Command-line clients of a running site (the `mirrorgate` subcommands other than `serve`).

pub mod definitions;
pub mod status;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::config::Config;

/// The URL the CLI reaches the site at: `public_url`, else the listen address.
pub fn site_url(config: &Config) -> String {
    if config.site.public_url.is_empty() {
        let scheme = if config.tls_enabled() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", config.site.listen)
    } else {
        config.site.public_url.trim_end_matches('/').to_owned()
    }
}

/// A bearer token from the built-in issuer, using the first configured client, when auth is on.
pub async fn token(
    http: &reqwest::Client,
    base: &str,
    config: &Config,
) -> anyhow::Result<Option<String>> {
    if !config.auth_enabled() {
        return Ok(None);
    }
    let client = config
        .auth
        .clients
        .first()
        .context("auth is on: add an [[auth.clients]] entry for the CLI")?;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client.id.as_str()),
        ("client_secret", client.secret.as_str()),
    ];
    let resp = http
        .post(format!("{base}/api/2/idp/token"))
        .form(&form)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("token request refused: {}", resp.status());
    }
    let v: Value = resp.json().await?;
    Ok(v["access_token"].as_str().map(str::to_owned))
}
