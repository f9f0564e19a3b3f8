//! The fault campaign (issue #17), short profile: a few fixed seeds of three sites under load
//! while sites are killed and restarted, links cut, slowed, reset and half-partitioned, and the
//! S3 backend goes away; then the checker (see tests/common/campaign.rs).
//!
//! `MIRRORGATE_FAULT_SEED=N` replays one seed. The long profile is `long_profile` (ignored
//! here; `loadtest/faults.sh` runs it).

#[path = "common/campaign.rs"]
mod campaign;
mod common;
#[path = "common/faultproxy.rs"]
mod faultproxy;
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
        delete_anywhere: env_u64("MIRRORGATE_FAULT_DELETE_ANYWHERE") != Some(0),
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
    assert!(
        faults as usize >= 5 * reports.len(),
        "the campaign injected faults ({faults})"
    );
    assert!(reports.iter().all(|r| r.acknowledged > 20), "the load ran");
    assert_clean(&reports);
}

/// `MIRRORGATE_FAULT_RUNS` runs (default 200) from seed `MIRRORGATE_FAULT_SEED_START`; no
/// new run starts after `MIRRORGATE_FAULT_BUDGET_SECS` (if set). The table so far is printed
/// every 10 runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long profile: loadtest/faults.sh"]
async fn long_profile() {
    let runs = env_u64("MIRRORGATE_FAULT_RUNS").unwrap_or(200);
    let start = env_u64("MIRRORGATE_FAULT_SEED_START").unwrap_or(1);
    let budget = env_u64("MIRRORGATE_FAULT_BUDGET_SECS").map(Duration::from_secs);
    let began = std::time::Instant::now();
    let mut reports = Vec::new();
    for seed in start..start + runs {
        if budget.is_some_and(|b| began.elapsed() > b) {
            println!("time budget spent after {} runs", reports.len());
            break;
        }
        reports.push(run(&plan(seed)).await);
        if reports.len() % 10 == 0 {
            println!("{}", table(&reports));
        }
    }
    println!("{}", table(&reports));
    assert_clean(&reports);
}

// ---- regressions found by the campaign ------------------------------------------------------

use common::*;
use faultproxy::{Fault, Proxy};

const FAST: &str = "[replication]\nworkers = 4\nbackoff_initial_ms = 100\nbackoff_max_ms = 500\npeer_stall_timeout_secs = 3\n[topology]\npeer_timeout_ms = 1000\n";

/// Two sites, each reaching the other through a proxy: `(a, b, a_to_b, b_to_a)`.
async fn linked_pair() -> (Site, Site, Proxy, Proxy) {
    let (mut sites, mut links) = linked_sites(&["site-a", "site-b"]).await;
    let (b, a) = (sites.pop().unwrap(), sites.pop().unwrap());
    let (b_to_a, a_to_b) = (
        links.remove(&(1, 0)).unwrap(),
        links.remove(&(0, 1)).unwrap(),
    );
    (a, b, a_to_b, b_to_a)
}

/// Sites that reach each other through proxies: the link from site i to site j is `(i, j)`
/// (what i sends to j: its orders, its pulls and reads).
async fn linked_sites(
    ids: &[&str],
) -> (Vec<Site>, std::collections::HashMap<(usize, usize), Proxy>) {
    let sites: Vec<Site> = ids.iter().map(|id| Site::start(id, FAST)).collect();
    let mut links = std::collections::HashMap::new();
    for (i, site) in sites.iter().enumerate() {
        for (j, peer) in sites.iter().enumerate().filter(|(j, _)| *j != i) {
            let link = Proxy::start(peer.addr.parse().unwrap()).await;
            let r = reqwest::Client::new()
                .post(site.url("/administration/topologies"))
                .json(&serde_json::json!({"id": peer.id, "name": peer.id, "uri": link.url(), "status": "UP"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            links.insert((i, j), link);
        }
    }
    (sites, links)
}

/// Waits until `site` owes `peer` no order.
async fn nothing_owed(site: &Site, peer: &str) {
    eventually(
        Duration::from_secs(60),
        "no order owed to the peer",
        || async {
            let v: serde_json::Value =
                reqwest::get(site.url(&format!("/_/backbeat/api/metrics/crr/{peer}/pending")))
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
            (v["pending"]["results"]["count"] == 0).then_some(())
        },
    )
    .await;
}

async fn delete_object(site: &Site, bucket: &str, key: &str) {
    let r = client()
        .delete(site.url(&format!("/cloudclonestore/{bucket}/{key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

/// The ordering anomaly (`DELETE_ANYWHERE=1`, seed 2): version V written at C and deleted at
/// A; B gets A's DELETE before C's CREATE. It held nothing, so the delete did nothing, and
/// then it pulled V from C (which had not deleted it yet) and kept it for good. Now the
/// DELETE leaves a tombstone (version and its creation) and the late CREATE is superseded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_overtakes_its_create_at_a_third_site_holds() {
    let (sites, links) = linked_sites(&["site-a", "site-b", "site-c"]).await;
    let (a, b, c) = (&sites[0], &sites[1], &sites[2]);
    create_bucket(c, "order").await;
    bucket_arrives(a, "order").await;
    bucket_arrives(b, "order").await;
    links[&(2, 1)].set(Fault::Drop); // C's CREATE does not reach B yet
    let v = data(30_000, 7);
    put_object(c, "order", "obj", v.clone()).await;
    eventually(Duration::from_secs(30), "V at A", || async {
        (local_hash(a, "order", "obj").await == Some(ccs_hash(&v))).then_some(())
    })
    .await;
    links[&(0, 2)].set(Fault::Drop); // A's DELETE does not reach C: C keeps V to pull from
    delete_object(a, "order", "obj").await;
    nothing_owed(a, "site-b").await; // B applied the DELETE, holding nothing
    links[&(2, 1)].heal();
    nothing_owed(c, "site-b").await; // B applied the CREATE, C still holding V
    assert_eq!(
        local_hash(b, "order", "obj").await,
        None,
        "V stays deleted at B"
    );
    links[&(0, 2)].heal();
    for site in &sites {
        no_pending(site).await;
        assert_eq!(local_hash(site, "order", "obj").await, None, "{}", site.id);
    }
    assert!(b.metric("mirrorgate_orders_superseded_total").await >= 1.0);
}

/// A DELETE of version V reaching a site that holds a newer version W (written there while
/// the sites could not see each other) is superseded and W stays (it used to be refused and
/// listed as a failed operation that no retry cleared); W then reaches the deleting site,
/// whose tombstone of V does not refuse a newer version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_of_an_older_version_than_held_is_superseded() {
    let (a, b, _a_to_b, b_to_a) = linked_pair().await;
    create_bucket(&a, "newer").await;
    bucket_arrives(&b, "newer").await;
    put_object(&a, "newer", "obj", data(10_000, 8)).await;
    object_arrives(&b, "newer", "obj").await;
    b_to_a.set(Fault::Drop); // B's delete and new version do not reach A yet
    delete_object(&b, "newer", "obj").await;
    let w = data(12_000, 9);
    put_object(&b, "newer", "obj", w.clone()).await;
    delete_object(&a, "newer", "obj").await;
    nothing_owed(&a, "site-b").await;
    assert_eq!(local_hash(&b, "newer", "obj").await, Some(ccs_hash(&w)));
    b_to_a.heal();
    for site in [&a, &b] {
        no_pending(site).await;
    }
    for site in [&a, &b] {
        assert_eq!(
            local_hash(site, "newer", "obj").await,
            Some(ccs_hash(&w)),
            "{}",
            site.id
        );
    }
    assert_eq!(failed_count(&a, "site-b").await, 0, "nothing refused");
}

async fn local_hash(site: &Site, bucket: &str, key: &str) -> Option<String> {
    let r = client()
        .head(site.url(&format!("/cloudclonestore/{bucket}/{key}")))
        .send()
        .await
        .ok()?;
    if r.status() != 204 || r.headers().contains_key("x-clonecloudstore-target-id") {
        return None;
    }
    header(&r, "x-clonecloudstore-hash").map(str::to_owned)
}

async fn failed_count(site: &Site, peer: &str) -> usize {
    let v: serde_json::Value =
        reqwest::get(site.url(&format!("/_/backbeat/api/crr/failed?sitename={peer}")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    v["Versions"].as_array().unwrap().len()
}

async fn no_pending(site: &Site) {
    eventually(Duration::from_secs(60), "no pending order", || async {
        let v: serde_json::Value =
            reqwest::get(site.url("/_/backbeat/api/metrics/crr/all/pending"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
        (v["pending"]["results"]["count"] == 0).then_some(())
    })
    .await;
}

/// The partition rule: one name written at two sites that cannot see each other ends, once
/// they can, with the later write everywhere; the loser is reported (a warning and
/// `mirrorgate_replication_conflicts_total`), not silently lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_writes_of_one_name_end_with_the_later_everywhere() {
    let (a, b, a_to_b, b_to_a) = linked_pair().await;
    create_bucket(&a, "split").await;
    bucket_arrives(&b, "split").await;
    a_to_b.set(Fault::Drop);
    b_to_a.set(Fault::Drop);
    let (early, late) = (data(40_000, 1), data(50_000, 2));
    put_object(&a, "split", "same", early.clone()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    put_object(&b, "split", "same", late.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    a_to_b.heal();
    b_to_a.heal();
    for site in [&a, &b] {
        eventually(
            Duration::from_secs(60),
            "the later write everywhere",
            || async {
                (local_hash(site, "split", "same").await == Some(ccs_hash(&late))).then_some(())
            },
        )
        .await;
        no_pending(site).await;
    }
    // Stays so: the earlier version's order did not overwrite the later one anywhere.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for site in [&a, &b] {
        assert_eq!(
            local_hash(site, "split", "same").await,
            Some(ccs_hash(&late))
        );
    }
    assert_eq!(
        failed_count(&a, "site-b").await + failed_count(&b, "site-a").await,
        0
    );
    let reported = a.metric("mirrorgate_replication_conflicts_total").await
        + b.metric("mirrorgate_replication_conflicts_total").await;
    assert!(reported >= 1.0, "the conflict is counted");
    assert!(
        b.log_text().contains("loses") || a.log_text().contains("loses"),
        "the losing version is named in a warning"
    );
}

/// An object order retried while its bucket's DELETE order is due: the bucket order waits
/// for it (it used to run first, and the late object order re-created the deleted bucket),
/// and an order whose version its source deleted meanwhile completes as superseded instead of
/// becoming a failed operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_object_order_neither_resurrects_its_bucket_nor_fails() {
    let (a, b, _a_to_b, b_to_a) = linked_pair().await;
    b_to_a.set(Fault::Drop); // B cannot pull from A; A's orders still reach B
    create_bucket(&a, "shortlived").await;
    put_object(&a, "shortlived", "obj", data(10_000, 3)).await;
    let r = client()
        .delete(a.url("/cloudclonestore/shortlived/obj"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = client()
        .delete(a.url("/cloudclonestore/shortlived"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    tokio::time::sleep(Duration::from_secs(2)).await; // the pull failed a few times by now
    b_to_a.heal();
    no_pending(&a).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = client()
        .head(b.url("/replicator/remote/buckets/shortlived"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the bucket stays deleted at B");
    assert_eq!(failed_count(&a, "site-b").await, 0, "nothing failed");
}

/// A site on S3 (replication off) that reaches its S3 server through a fault proxy; the
/// temporary directory and the S3 server live as long as the returned values.
async fn s3_site_behind_a_proxy(id: &str) -> (tempfile::TempDir, s3server::S3Server, Proxy, Site) {
    s3_site_behind_a_proxy_with(id, "").await
}

/// [`s3_site_behind_a_proxy`] with `storage` appended to its `[storage]` section.
async fn s3_site_behind_a_proxy_with(
    id: &str,
    storage: &str,
) -> (tempfile::TempDir, s3server::S3Server, Proxy, Site) {
    let root = tempfile::tempdir().unwrap();
    let s3 = s3server::S3Server::start(&root.path().join("s3")).await;
    let link = Proxy::start(s3.addr).await;
    let dir = root.path().join("site");
    let config = format!(
        "[site]\nid = \"{id}\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}{storage}\n[replication]\nenabled = false\n",
        dir.display(),
        s3server::s3_storage_config(&link.url(), "mg-")
    );
    let site = tokio::task::block_in_place(|| Site::spawn_with(id, &dir, &config));
    (root, s3, link, site)
}

/// A delete the storage could not carry out (S3 unreachable) leaves the object READY and
/// readable once S3 answers and says it still holds the bytes (it used to stay ERR_DEL for
/// good: unreadable here, present at the peers, the bytes still in the store); the client,
/// told 5xx, deletes it again once S3 is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_s3_refused_leaves_the_object_ready() {
    let (_root, _s3, link, site) = s3_site_behind_a_proxy("s3-del").await;
    create_bucket(&site, "keep").await;
    let body = data(20_000, 4);
    put_object(&site, "keep", "obj", body.clone()).await;
    link.set(Fault::Drop);
    let r = client()
        .delete(site.url("/cloudclonestore/keep/obj"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    link.heal();
    // S3 did not answer, so whether it deleted is found out once it does: it did not.
    let got = eventually(Duration::from_secs(30), "READY again", || async {
        let r = client()
            .get(site.url("/cloudclonestore/keep/obj"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(r.bytes().await.ok()?)
    })
    .await;
    assert_eq!(got.to_vec(), body);
    let r = client()
        .delete(site.url("/cloudclonestore/keep/obj"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

/// An upload whose commit (S3 PutObject or CopyObject onto the key) was carried out by S3
/// while its answer was lost (seed 212, `cyc-212-24/one`; seed 17): the upload failed, its row went, and the
/// key stayed in S3 for good without a READY row. A commit that failed may have happened: the
/// failed upload removes the bytes at its name too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_whose_commit_answer_is_lost_leaves_no_bytes() {
    let (root, _s3, link, site) = s3_site_behind_a_proxy("s3-lost").await;
    create_bucket(&site, "lost").await;
    // The commit: a PutObject of the whole body or a CopyObject from the staging key, both
    // a PUT on the object's key (path style).
    link.set(Fault::LoseReplyTo("PUT /mg-lost/obj"));
    let r = client()
        .post(site.url("/cloudclonestore/lost/obj"))
        .body(data(20_000, 10))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    link.heal();
    let key = root.path().join("s3").join("mg-lost").join("obj");
    eventually(
        Duration::from_secs(20),
        "no key left without its row",
        || async { (!key.exists()).then_some(()) },
    )
    .await;
    let r = client()
        .head(site.url("/cloudclonestore/lost/obj"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    put_object(&site, "lost", "obj", data(21_000, 11)).await;
}

/// An S3 backend that takes requests and never answers does not hold a delete for good:
/// each attempt gives up after `[storage] s3_attempt_timeout_secs` and the client is told
/// 503. S3 carried the delete out (only its answers were held), so once it answers again the
/// site finds the bytes gone and finishes the delete: never a READY row without its bytes.
/// Without the bound the delete waited forever with the object DELETING, and every later
/// order of its name waited behind it (long profile, seed 2043: "stuck in DELETING").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_backend_that_never_answers_does_not_hold_a_delete() {
    let (root, _s3, link, site) =
        s3_site_behind_a_proxy_with("s3-mute", "s3_attempt_timeout_secs = 1").await;
    create_bucket(&site, "mute").await;
    put_object(&site, "mute", "obj", data(20_000, 12)).await;
    link.set(Fault::BlockReplies);
    let r = client()
        .delete(site.url("/cloudclonestore/mute/obj"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("the delete answers while S3 stays mute");
    assert_eq!(r.status(), 503);
    let key = root.path().join("s3").join("mg-mute").join("obj");
    assert!(!key.exists(), "S3 carried the delete out");
    assert_eq!(
        in_flight(&site).await,
        (0, 1),
        "a delete under way, for the operator"
    );
    link.heal();
    link.cut_all(); // the held connections are not reused
    let r = client()
        .get(site.url("/cloudclonestore/mute/obj"))
        .send()
        .await
        .unwrap();
    assert_ne!(
        r.status(),
        200,
        "never served while its delete is unsettled"
    );
    // Settled as deleted: the name takes a new version.
    writable_again(&site, "mute/obj", data(21_000, 13)).await;
    assert_eq!(in_flight(&site).await, (0, 0));
}

/// Uploads and deletes under way at `site`, from its operator status.
async fn in_flight(site: &Site) -> (i64, i64) {
    let v: serde_json::Value = client()
        .get(site.url("/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let o = &v["objects"];
    (
        o["uploading"].as_i64().unwrap(),
        o["deleting"].as_i64().unwrap(),
    )
}

/// An upload to an S3 backend that stops answering mid-way fails within the attempt bound
/// and leaves nothing behind once S3 is back: no UPLOAD row holding the name for good (long
/// profile, seed 3011: "stuck in UPLOAD", every later order of the name waiting behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_to_a_mute_s3_backend_fails_and_frees_its_name() {
    let (_root, _s3, link, site) =
        s3_site_behind_a_proxy_with("s3-mute-up", "s3_attempt_timeout_secs = 1").await;
    create_bucket(&site, "mute").await;
    link.set(Fault::BlockReplies);
    let r = client()
        .post(site.url("/cloudclonestore/mute/obj"))
        .body(data(300_000, 15))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("the upload answers while S3 stays mute");
    assert!(r.status().is_server_error(), "{}", r.status());
    link.heal();
    link.cut_all();
    writable_again(&site, "mute/obj", data(30_000, 16)).await;
}

/// Waits until a new version of `path` (bucket/key) can be written at `site`: whatever held
/// the name (a delete or an upload of unknown outcome) has settled.
async fn writable_again(site: &Site, path: &str, body: Vec<u8>) {
    eventually(
        Duration::from_secs(40),
        "the name writable again",
        || async {
            let r = client()
                .post(site.url(&format!("/cloudclonestore/{path}")))
                .body(body.clone())
                .send()
                .await
                .ok()?;
            (r.status() == 201).then_some(())
        },
    )
    .await;
}

/// A connection returned to the metadata pool inside a transaction nobody owns (what sqlx
/// leaves when a BEGIN's future is dropped half-way) is closed, not reused: reused, it held
/// the write lock and refused every later BEGIN, and the campaign saw a site stop writing
/// ("attempted to call begin_with at non-zero transaction depth") after a client went away.
#[tokio::test]
async fn a_connection_left_inside_a_transaction_is_not_reused() {
    use sqlx::TransactionManager;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let meta = mirrorgate::meta::MetaStore::open(&url).await.unwrap();
    for _ in 0..3 {
        let mut conn = meta.pool().acquire().await.unwrap();
        sqlx::any::AnyTransactionManager::begin(&mut conn, Some("BEGIN IMMEDIATE".into()))
            .await
            .unwrap();
        drop(conn); // back to the pool, in a transaction, with no Transaction to end it
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..20 {
        let tx = tokio::time::timeout(Duration::from_secs(5), meta.write_tx())
            .await
            .unwrap_or_else(|_| panic!("write transaction {i}: the write lock is held"))
            .unwrap_or_else(|e| panic!("write transaction {i}: {e}"));
        tx.commit().await.unwrap();
    }
}

/// A client that gives up on a DELETE while the storage is slow does not leave the object
/// DELETING: the delete runs to its end (it used to stop where the client left, and the name
/// could never be written or deleted again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_abandoned_by_its_client_still_ends() {
    let (_root, _s3, link, site) = s3_site_behind_a_proxy("s3-gone").await;
    create_bucket(&site, "slow").await;
    put_object(&site, "slow", "obj", data(5_000, 5)).await;
    link.set(Fault::Delay(Duration::from_millis(1500)));
    let gave_up = client()
        .delete(site.url("/cloudclonestore/slow/obj"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client gave up");
    link.heal();
    let again = data(6_000, 6);
    eventually(
        Duration::from_secs(30),
        "the name writable again",
        || async {
            // READY again (the storage failed the delete) or deleted: either way not stuck.
            let _ = client()
                .delete(site.url("/cloudclonestore/slow/obj"))
                .send()
                .await;
            let r = client()
                .post(site.url("/cloudclonestore/slow/obj"))
                .body(again.clone())
                .send()
                .await
                .ok()?;
            (r.status() == 201).then_some(())
        },
    )
    .await;
}
