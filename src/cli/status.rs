//! `mirrorgate status [--config FILE | --url URL] [--watch] [--behind-secs N]`: the operator's
//! status view (`GET /api/status`) in the terminal, the worst problem first. Exits 2 when a peer
//! is behind (its oldest pending order is older than the threshold), so scripts can use it as
//! a check.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use super::{site_url, token};
use crate::config::Config;

const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Where the view comes from and how to ask for it.
pub struct Source {
    base: String,
    http: reqwest::Client,
    bearer: Option<String>,
}

impl Source {
    /// The site a config file describes (its token client when auth is on).
    pub async fn from_config(config: &Config) -> anyhow::Result<Self> {
        let base = site_url(config);
        let http =
            crate::tls::peer_client(&config.tls, Duration::from_secs(5), Duration::from_secs(30))?;
        let bearer = token(&http, &base, config).await?;
        Ok(Self { base, http, bearer })
    }

    /// A site by URL; a bearer token may come from `MIRRORGATE_TOKEN`.
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let bearer = std::env::var("MIRRORGATE_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            http,
            bearer,
        })
    }

    async fn fetch(&self, behind_secs: Option<u64>) -> anyhow::Result<Value> {
        let mut req = self.http.get(format!("{}/api/status", self.base));
        if let Some(secs) = behind_secs {
            req = req.query(&[("behind_secs", secs)]);
        }
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach the site at {}: is `mirrorgate serve` running?",
                self.base
            )
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("the site answered {status}: {body}");
        }
        Ok(body)
    }
}

/// Prints the view (once, or every two seconds with `watch`); answers whether every peer is
/// within the threshold.
pub async fn run(source: &Source, watch: bool, behind_secs: Option<u64>) -> anyhow::Result<bool> {
    loop {
        let view = source.fetch(behind_secs).await?;
        let text = render(&view);
        if watch {
            print!("\x1b[2J\x1b[H{text}");
        } else {
            print!("{text}");
        }
        let healthy = !any_behind(&view);
        if !watch {
            return Ok(healthy);
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

pub fn any_behind(view: &Value) -> bool {
    peers(view)
        .iter()
        .any(|p| p["behind"].as_bool() == Some(true))
}

fn peers(view: &Value) -> &[Value] {
    view["peers"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The view as text: a headline, a table of peers (worst first), then failures, tasks, DR
/// servers and copies.
pub fn render(view: &Value) -> String {
    let mut out = String::new();
    let site = &view["site"];
    let now = site["now"].as_i64().unwrap_or(0);
    let _ = writeln!(out, "site {} ({})", text(&site["id"]), text(&site["url"]));
    let worst = view["worst"].as_str().unwrap_or("all peers are in step");
    let _ = writeln!(out, "worst: {worst}\n");
    let _ = writeln!(
        out,
        "{:<16} {:<5} {:<5} {:<12} {:>9} {:>10} {:>9} {:>11} {:>7}  PROBLEM",
        "PEER", "STATE", "REACH", "LAST SEEN", "BACKLOG", "BYTES", "OLDEST", "RATE(5m)", "FAILED",
    );
    for p in peers(view) {
        let _ = writeln!(
            out,
            "{:<16} {:<5} {:<5} {:<12} {:>9} {:>10} {:>9} {:>11} {:>7}  {}",
            text(&p["id"]),
            if p["paused"].as_bool() == Some(true) {
                "PAUSE".to_owned()
            } else {
                text(&p["status"])
            },
            if p["reachable"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            ago(now, p["lastContactAt"].as_i64()),
            p["backlog"]["objects"].as_i64().unwrap_or(0),
            bytes(p["backlog"]["bytes"].as_f64().unwrap_or(0.0)),
            p["backlog"]["oldestPendingAgeSecs"]
                .as_i64()
                .map_or("-".into(), |s| format!("{s} s")),
            format!(
                "{}/s",
                bytes(p["throughput"]["bytesPerSec"].as_f64().unwrap_or(0.0))
            ),
            p["failures"]["total"].as_i64().unwrap_or(0),
            p["problem"].as_str().unwrap_or("ok"),
        );
    }
    for p in peers(view) {
        for r in p["failures"]["byReason"].as_array().into_iter().flatten() {
            let examples: Vec<String> = r["examples"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| format!("{}/{} ({})", text(&e[0]), text(&e[1]), text(&e[2])))
                .collect();
            let _ = writeln!(
                out,
                "\nfailed towards {}: {} x {:?}: {}",
                text(&p["id"]),
                r["count"],
                text(&r["reason"]),
                examples.join(", ")
            );
        }
    }
    render_tasks(&mut out, view);
    render_dr(&mut out, view);
    let c = &view["copies"];
    let _ = writeln!(
        out,
        "\ncopies: {} repairs in flight, {} suspicious and {} lost in the last day; scrubber pass {}",
        c["repairsInFlight"], c["suspiciousLastDay"], c["lostLastDay"], view["scrubber"]["pass"]
    );
    let o = &view["objects"];
    let _ = writeln!(
        out,
        "objects: {} uploads and {} deletes under way",
        o["uploading"], o["deleting"]
    );
    out
}

fn render_tasks(out: &mut String, view: &Value) {
    let tasks = view["tasks"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if tasks.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nTASK                                 TYPE                      STATUS     PROGRESS"
    );
    for t in tasks {
        let p = &t["progress"];
        let _ = writeln!(
            out,
            "{:<36} {:<25} {:<10} {}/{} objects",
            text(&t["uuid"]),
            text(&t["type"]),
            text(&t["status"]),
            p["objectsDone"],
            p["objectsTotal"]
        );
    }
}

fn render_dr(out: &mut String, view: &Value) {
    let servers = view["dr"]["servers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if servers.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nDR SERVER (primary -> recovery)      STATUS            RPO"
    );
    for s in servers {
        let rpo = match s["rpo"]["status"].as_str() {
            Some(status) => format!(
                "{status} (lag {} s)",
                s["rpo"]["lag_seconds"].as_i64().unwrap_or(0)
            ),
            None => "-".into(),
        };
        let pair = format!("{} -> {}", text(&s["primary"]), text(&s["recovery"]));
        let _ = writeln!(out, "{pair:<36} {:<17} {rpo}", text(&s["status"]));
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn ago(now: i64, at: Option<i64>) -> String {
    match at {
        None => "never".into(),
        Some(at) => {
            let secs = (now - at).max(0) / 1000;
            match secs {
                s if s < 120 => format!("{s} s ago"),
                s if s < 7200 => format!("{} min ago", s / 60),
                s => format!("{} h ago", s / 3600),
            }
        }
    }
}

fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
