//! The fault campaign (issue #17), short profile: a few fixed seeds of three sites under load
//! while sites are killed and restarted, links cut, slowed, reset and half-partitioned, and the
//! S3 backend goes away; then the checker (see tests/common/campaign.rs).
//!
//! `MIRRORGATE_FAULT_SEED=N` replays one seed. The long profile is `long_profile` (ignored
//! here; `loadtest/faults.sh` runs it).

#[path = "common/campaign.rs"]
mod campaign;
mod common;
#[path = "common/proxy.rs"]
mod proxy;
#[path = "common/s3server.rs"]
mod s3server;

use std::time::Duration;

use campaign::{run, table, Plan, Report};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn plan(seed: u64) -> Plan {
    Plan {
        seed,
        writers: env_u64("MIRRORGATE_FAULT_WRITERS").unwrap_or(4) as usize,
        load: Duration::from_secs(env_u64("MIRRORGATE_FAULT_LOAD_SECS").unwrap_or(12)),
        settle: Duration::from_secs(env_u64("MIRRORGATE_FAULT_SETTLE_SECS").unwrap_or(60)),
    }
}

async fn run_all(seeds: impl Iterator<Item = u64>) -> Vec<Report> {
    let mut reports = Vec::new();
    for seed in seeds {
        reports.push(run(&plan(seed)).await);
    }
    println!("{}", table(&reports));
    reports
}

fn assert_clean(reports: &[Report]) {
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .map(|r| format!("seed {}: {:?}", r.seed, r.violations))
        .collect();
    assert!(bad.is_empty(), "violations:\n{}", bad.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_fault_campaign_loses_nothing() {
    let seeds: Vec<u64> = match env_u64("MIRRORGATE_FAULT_SEED") {
        Some(seed) => vec![seed],
        None => vec![17, 1701, 4242],
    };
    let reports = run_all(seeds.into_iter()).await;
    let faults: u32 = reports.iter().flat_map(|r| r.faults.values()).sum();
    assert!(faults >= 10, "the campaign injected faults ({faults})");
    assert!(reports.iter().all(|r| r.acknowledged > 20), "the load ran");
    assert_clean(&reports);
}

/// `MIRRORGATE_FAULT_RUNS` runs (default 200) from seed `MIRRORGATE_FAULT_SEED_START`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long profile: loadtest/faults.sh"]
async fn long_profile() {
    let runs = env_u64("MIRRORGATE_FAULT_RUNS").unwrap_or(200);
    let start = env_u64("MIRRORGATE_FAULT_SEED_START").unwrap_or(1);
    let reports = run_all(start..start + runs).await;
    assert_clean(&reports);
}
