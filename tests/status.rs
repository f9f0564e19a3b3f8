//! The operator's status view on a three-site mesh with a paused peer and a peer that is away:
//! `GET /api/status`, the Prometheus gauges and `mirrorgate status` say the same thing, and
//! all three clear once the peer is back and its failed operations are retried.

mod common;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Fast retries; orders fail for good once 3 s old; a fast liveness probe.
const FAST: &str = "[replication]\nworkers = 4\nmax_attempts = 3\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\nmax_order_age_secs = 3\n[topology]\nprobe_interval_ms = 200\n";

async fn status(site: &Site) -> Value {
    let r = reqwest::get(site.url("/api/status?behind_secs=1"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn peer<'a>(view: &'a Value, id: &str) -> &'a Value {
    view["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {view}"))
}

/// `mirrorgate status --url ... --behind-secs 1`: its exit code and what it printed.
fn cli(site: &Site) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mirrorgate"))
        .args(["status", "--url", &site.url, "--behind-secs", "1"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn backbeat(site: &Site, method: reqwest::Method, path: &str, body: Value) -> u16 {
    reqwest::Client::new()
        .request(method, site.url(&format!("/_/backbeat/api/{path}")))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Three sites; A's replication to C paused, B killed; three objects written at A, whose
/// orders to B end as failed operations and wait behind the pause for C. Answers the sites and
/// A's status once B's three failures show.
async fn a_paused_peer_and_a_peer_that_is_away() -> (Site, Site, Site, Value) {
    let sites = meshed_sites(&["site-a", "site-b", "site-c"], FAST).await;
    let (a, mut b, c) = {
        let mut it = sites.into_iter();
        (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
    };
    create_bucket(&a, "watched").await;
    bucket_arrives(&b, "watched").await;
    bucket_arrives(&c, "watched").await;
    let pause = backbeat(&a, reqwest::Method::POST, "crr/pause/site-c", json!({})).await;
    assert_eq!(pause, 200);
    b.kill9();
    for i in 0..3 {
        put_object(&a, "watched", &format!("k{i}"), data(2000, i)).await;
    }
    let view = eventually(Duration::from_secs(60), "failures towards B", || async {
        let v = status(&a).await;
        let b = peer(&v, "site-b");
        (b["failures"]["total"] == 3 && b["reachable"] == false).then_some(v)
    })
    .await;
    (a, b, c, view)
}

/// B back, its failed operations retried (through `retry`), C resumed.
async fn back_to_normal(a: &Site, b: &mut Site, retry: impl std::future::Future<Output = ()>) {
    b.restart();
    retry.await;
    let resume = backbeat(a, reqwest::Method::POST, "crr/resume/site-c", json!({})).await;
    assert_eq!(resume, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_metrics_and_cli_agree_on_a_paused_peer_and_a_peer_that_is_away() {
    let (a, mut b, _c, view) = a_paused_peer_and_a_peer_that_is_away().await;
    let (pb, pc) = (peer(&view, "site-b"), peer(&view, "site-c"));
    let reason = &pb["failures"]["byReason"][0];
    assert_eq!(reason["count"], 3, "{pb}");
    assert!(!reason["reason"].as_str().unwrap().is_empty(), "{pb}");
    assert_eq!(reason["examples"][0][0], "watched", "{pb}");
    assert_eq!(pc["paused"], true, "{pc}");
    assert_eq!(pc["reachable"], true, "{pc}");
    let backlog = pc["backlog"]["objects"].as_i64().unwrap();
    assert!(backlog >= 3, "{pc}");
    assert!(pc["backlog"]["bytes"].as_i64().unwrap() >= 6000, "{pc}");
    assert!(pc["lastContactAt"].is_i64(), "{pc}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let view = status(&a).await;
    assert_eq!(peer(&view, "site-c")["behind"], true, "{view}");
    assert!(view["worst"].is_string(), "{view}");

    // The same figures as Prometheus gauges.
    let failed = a
        .metric("mirrorgate_replication_failed_operations{peer=\"site-b\"}")
        .await;
    assert_eq!(failed, 3.0);
    assert_eq!(
        a.metric("mirrorgate_peer_reachable{peer=\"site-b\"}").await,
        0.0
    );
    assert_eq!(
        a.metric("mirrorgate_peer_reachable{peer=\"site-c\"}").await,
        1.0
    );

    // The command: a table with both peers, C paused with its backlog, B's failure reason,
    // and exit status 2 because C is behind.
    let (code, out) = cli(&a);
    eprintln!("mirrorgate status --behind-secs 1:\n{out}");
    assert_eq!(code, Some(2), "{out}");
    let row = |id: &str| {
        out.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no row for {id}: {out}"))
            .to_owned()
    };
    assert!(row("site-c").contains("PAUSE"), "{out}");
    let c_backlog = peer(&view, "site-c")["backlog"]["objects"].to_string();
    assert!(
        row("site-c").split_whitespace().any(|w| w == c_backlog),
        "{out}"
    );
    assert!(row("site-b").contains(" no "), "{out}");
    let why = reason["reason"].as_str().unwrap();
    assert!(
        out.contains(&format!("failed towards site-b: 3 x {why:?}")),
        "{out}"
    );

    // Back to normal: B returns, its failed operations are retried, C resumes.
    let entries: Vec<Value> = (0..3)
        .map(|i| json!({"Bucket": "watched", "Key": format!("k{i}"), "StorageClass": "site-b"}))
        .collect();
    let retry = async {
        let retried = backbeat(&a, reqwest::Method::POST, "crr/failed", json!(entries)).await;
        assert_eq!(retried, 200);
    };
    back_to_normal(&a, &mut b, retry).await;
    let mut last = Value::Null;
    for _ in 0..240 {
        last = status(&a).await;
        let clean = last["peers"].as_array().unwrap().iter().all(|p| {
            p["backlog"]["objects"] == 0 && p["failures"]["total"] == 0 && p["reachable"] == true
        });
        if clean && last["worst"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(last["worst"].is_null(), "never clean: {last}");
    let (code, out) = cli(&a);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("worst: all peers are in step"), "{out}");
}

/// The console in a real browser (headless chromium) shows what the JSON and the command say:
/// the backlog of the paused peer, the failure reason; its retry button empties the list.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_shows_the_mesh_and_its_retry_empties_the_failed_list() {
    let (a, mut b, _c, view) = a_paused_peer_and_a_peer_that_is_away().await;
    let browser = common::browser::Browser::start().await;
    browser.goto(&a.url("/console")).await;
    let backlog = peer(&view, "site-c")["backlog"]["objects"].to_string();
    let cell = r#"#peers tr[data-peer="site-c"] .backlog"#;
    eventually(
        Duration::from_secs(20),
        "the console's peer table",
        || async { (browser.text(cell).await? == backlog).then_some(()) },
    )
    .await;
    let status_cell = r#"#peers tr[data-peer="site-c"] .status"#;
    assert_eq!(browser.text(status_cell).await.unwrap(), "PAUSED");
    let (_, out) = cli(&a);
    let row = out
        .lines()
        .find(|l| l.starts_with("site-c"))
        .unwrap()
        .to_owned();
    assert!(
        row.split_whitespace().any(|w| w == backlog),
        "the command agrees: {out}"
    );
    let reason = peer(&view, "site-b")["failures"]["byReason"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(Duration::from_secs(20), "B's failures listed", || async {
        let reasons = browser.text("#failed-reasons").await?;
        let rows = browser.count("#failed-list tbody tr").await;
        (reasons.contains(&reason) && rows == 3).then_some(())
    })
    .await;
    assert!(browser.text("#worst").await.unwrap().contains("site-"));
    if let Ok(path) = std::env::var("MIRRORGATE_CONSOLE_SCREENSHOT") {
        std::fs::write(path, browser.screenshot().await).unwrap();
    }

    let retry = browser.click("#retry-page");
    back_to_normal(&a, &mut b, retry).await;
    eventually(Duration::from_secs(60), "an empty failed list", || async {
        let empty = browser
            .eval(
                "return !document.querySelector(arguments[0]).hidden;",
                "#failed-empty",
            )
            .await;
        let failed = browser
            .text(r#"#peers tr[data-peer="site-b"] .failed"#)
            .await?;
        (empty == true && failed == "0").then_some(())
    })
    .await;
    object_arrives(&b, "watched", "k2").await;
    browser.quit().await;
}

/// The console stays usable at scale: 50 peers and 10,000 failed operations (written straight
/// into the site's metadata, as if they had piled up) show as counts, and the failed list pages
/// through them 100 at a time.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_pages_10000_failed_operations_across_50_peers() {
    let a = Site::start("site-a", "");
    for i in 0..50 {
        let peer = json!({"id": format!("peer-{i:02}"), "name": "p", "uri": "http://127.0.0.1:9", "status": "UP"});
        let r = client()
            .post(a.url("/administration/topologies"))
            .json(&peer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let url = format!("sqlite://{}", a.dir.join("meta.db").display());
    let db = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    for n in 0..10_000 {
        sqlx::query(
            "INSERT INTO failed_ops (op_id, site, client_id, bucket, object, version_id, size, hash, action, attempts, error, failed_at, modified)
             VALUES ($1, $2, 'c', 'b', $3, 'v', 10, 'h', 'CREATE', 3, 'peer unreachable', $4, $4)",
        )
        .bind(format!("op-{n}"))
        .bind(format!("peer-{:02}", n % 50))
        .bind(format!("k{n:05}"))
        .bind(1_700_000_000_000_i64 + n)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    db.close().await;

    let view = status(&a).await;
    let peers = view["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 50);
    let total: i64 = peers
        .iter()
        .map(|p| p["failures"]["total"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 10_000);

    let browser = common::browser::Browser::start().await;
    browser.goto(&a.url("/console")).await;
    // Twice this did not show within 30 s (once under load, once not; 2 s is usual): a
    // failure now says what the page showed, and what error it displayed.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows = browser.count("#peers tbody tr").await;
        let nodes = browser.count("#graph circle").await;
        let listed = browser.count("#failed-list tbody tr").await;
        if rows == 50 && nodes == 51 && listed == 100 {
            break;
        }
        if std::time::Instant::now() > deadline {
            let error = browser.text("#error").await.unwrap_or_default();
            panic!(
                "50 peers and a full page: {rows} peer rows, {nodes} nodes, {listed} failed rows; \
                 the console's error: {error:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = browser
        .text("#failed-list tbody tr td:nth-child(2)")
        .await
        .unwrap();
    browser.click("#failed-next").await;
    let second = eventually(Duration::from_secs(30), "the second page", || async {
        let key = browser
            .text("#failed-list tbody tr td:nth-child(2)")
            .await?;
        (key != first && browser.count("#failed-list tbody tr").await == 100).then_some(key)
    })
    .await;
    browser.click("#failed-prev").await;
    eventually(
        Duration::from_secs(20),
        "back to the first page",
        || async {
            let key = browser
                .text("#failed-list tbody tr td:nth-child(2)")
                .await?;
            (key == first).then_some(())
        },
    )
    .await;
    assert_ne!(first, second);
    browser.quit().await;
}
