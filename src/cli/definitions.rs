//! `mirrorgate definitions run NAME --config FILE`: starts a run on the site the config
//! describes (it must be serving), shows a live progress bar until the run ends, then a
//! summary. Exits non-zero unless the run completed.

use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::{site_url, token};
use crate::config::Config;

const POLL: Duration = Duration::from_millis(250);

pub async fn run(config: &Config, name: &str) -> anyhow::Result<()> {
    let base = site_url(config);
    let http =
        crate::tls::peer_client(&config.tls, Duration::from_secs(5), Duration::from_secs(30))?;
    let bearer = token(&http, &base, config).await?;
    let with_auth = |req: reqwest::RequestBuilder| match &bearer {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let resp = with_auth(
        http.post(format!("{base}/api/running-replication-actions"))
            .form(&[("name", name)]),
    )
    .send()
    .await
    .with_context(|| format!("cannot reach the site at {base}: is `mirrorgate serve` running?"))?;
    let status = resp.status();
    let started: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "the run was refused ({status}): {}",
            started["message"].as_str().unwrap_or("no detail")
        );
    }
    let task = started["data"]["taskUuid"]
        .as_str()
        .context("no task in the answer")?
        .to_owned();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} objects {msg}",
        )?
        .progress_chars("=> "),
    );
    let last = loop {
        let v: Value = with_auth(http.get(format!("{base}/api/running-action/{task}")))
            .send()
            .await?
            .json()
            .await?;
        let data = v["data"].clone();
        let p = &data["progress"];
        bar.set_length(p["objectsTotal"].as_u64().unwrap_or(0));
        bar.set_position(p["objectsDone"].as_u64().unwrap_or(0));
        bar.set_message(format!(
            "{} of {} bytes, {}",
            p["bytesDone"],
            p["bytesTotal"],
            data["status"].as_str().unwrap_or("")
        ));
        if matches!(
            data["status"].as_str(),
            Some("Completed" | "Failed" | "Cancelled")
        ) {
            break data;
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish();
    let r = &last["result"];
    println!(
        "run {task} of {name:?}: {} — sent {}, skipped {}, failed {}, {} bytes sent; reports: local {}, remote {}",
        last["status"].as_str().unwrap_or("?"),
        r["sent"], r["skipped"], r["failed"], r["bytesSent"], r["transferLocalReport"], r["transferRemoteReport"]
    );
    match last["status"].as_str() {
        Some("Completed") => Ok(()),
        _ => bail!(
            "the run did not complete: {}",
            last["failureMessage"].as_str().unwrap_or("cancelled")
        ),
    }
}
