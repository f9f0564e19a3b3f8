//! Disaster recovery (Acronis DR v2): servers and pagination, test failover, production
//! failover with the primary stopped, failback, busy servers.

mod common;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const FAST: &str =
    "[replication]\nmax_attempts = 200\nbackoff_initial_ms = 100\nbackoff_max_ms = 300\n";

fn uuid5(name: &str) -> String {
    // The same derivation as the server (stable ids for sites, primaries and pairs).
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("mirrorgate:{name}").as_bytes(),
    )
    .to_string()
}

fn recovery_uuid(primary: &str, recovery: &str) -> String {
    uuid5(&format!("recovery:{primary}:{recovery}"))
}

async fn get(site: &Site, path: &str) -> (u16, Value) {
    let r = reqwest::get(site.url(&format!("/api/dr/v2{path}")))
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn action(site: &Site, server: &str, what: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(site.url(&format!("/api/dr/v2/servers/{server}:{what}")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// A DR task through the DR API (found at whichever site runs it).
async fn task(site: &Site, uuid: &str) -> Value {
    let r = reqwest::get(site.url(&format!("/api/dr/v2/tasks/{uuid}")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "task {uuid}");
    r.json().await.unwrap()
}

async fn task_ends(site: &Site, uuid: &str) -> Value {
    eventually(Duration::from_secs(60), "task ends", || async {
        let t = task(site, uuid).await;
        matches!(
            t["status"].as_str(),
            Some("Completed" | "Failed" | "Cancelled")
        )
        .then_some(t)
    })
    .await
}

async fn server_status(site: &Site, uuid: &str) -> String {
    get(site, &format!("/servers/{uuid}")).await.1["status"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn servers_page_forwards_and_backwards_each_exactly_once() {
    let a = Site::start("site-a", "");
    for i in 0..10 {
        let peer = json!({"id": format!("peer-{i:02}"), "uri": format!("http://127.0.0.1:{}", 9 + i), "status": "UP"});
        let r = reqwest::Client::new()
            .post(a.url("/administration/topologies"))
            .json(&peer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    // 11 sites: 11 primaries and 110 recovery pairs.
    let (status, first) = get(&a, "/servers?limit=50").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["paging"]["total"], 121);
    let mut seen: Vec<String> = Vec::new();
    let mut page = first;
    loop {
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["uuid"].as_str().unwrap().to_owned()),
        );
        assert_eq!(
            page["paging"]["count"].as_u64().unwrap() as usize,
            page["items"].as_array().unwrap().len()
        );
        let Some(after) = page["paging"]["cursors"]["after"].as_str() else {
            break;
        };
        page = get(&a, &format!("/servers?after={after}")).await.1;
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (121, 121));
    let mut back: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["uuid"].as_str().unwrap().to_owned())
        .collect();
    while let Some(before) = page["paging"]["cursors"]["before"]
        .as_str()
        .map(str::to_owned)
    {
        page = get(&a, &format!("/servers?before={before}")).await.1;
        let items: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["uuid"].as_str().unwrap().to_owned())
            .collect();
        back.splice(0..0, items);
    }
    assert_eq!(back, seen, "backwards gives the same servers, each once");
    // Filters.
    assert_eq!(
        get(&a, "/servers?type=PRIMARY&limit=50").await.1["paging"]["total"],
        11
    );
    let primary_a = uuid5("primary:site-a");
    let (_, of_a) = get(
        &a,
        &format!("/servers?recovery.resource_id={primary_a}&limit=50"),
    )
    .await;
    assert_eq!(of_a["paging"]["total"], 10);
    assert!(of_a["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["type"] == "RECOVERY"));
    // Invalid requests, in the DR envelope.
    for bad in [
        "/servers?limit=0",
        "/servers?limit=51",
        "/servers?limit=ten",
        "/servers?limit=5&after=x",
        "/servers?after=a&before=b",
        "/servers?after=garbage",
        "/servers?type=OTHER",
        "/servers?recovery.resource_id=a_b",
    ] {
        let (status, v) = get(&a, bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(v["error"]["code"], "BadRequest", "{bad}");
        assert_eq!(v["error"]["domain"], "DisasterRecovery");
    }
    let (status, v) = get(&a, "/servers/00000000-0000-0000-0000-000000000000").await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (404, json!("EntityNotFound"))
    );
    // Sites.
    let (_, sites) = get(&a, "/sites?limit=50").await;
    assert_eq!(sites["paging"]["total"], 11);
    let own = sites["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["default"] == true)
        .unwrap()
        .clone();
    assert_eq!(own["site_id"], "site-a");
    let (status, one) = get(&a, &format!("/sites/{}", own["uuid"].as_str().unwrap())).await;
    assert_eq!((status, one["uuid"].clone()), (200, own["uuid"].clone()));
    // A primary server does not fail over.
    let (status, v) = action(&a, &primary_a, "start_failover_test").await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (409, json!("ServerNotReady"))
    );
}

#[tokio::test]
async fn test_failover_reports_missing_and_corrupt_copies_without_touching_production() {
    let (a, b) = (Site::start("site-a", FAST), Site::start("site-b", FAST));
    mesh(&[&a, &b]).await;
    create_bucket(&a, "dr-test").await;
    for k in ["good", "corrupt"] {
        put_object(&a, "dr-test", k, data(50_000, k.len() as u64)).await;
    }
    let held = |k: &'static str| {
        let b = &b;
        async move {
            let r = client()
                .head(b.url(&format!("/replicator/remote/buckets/dr-test/{k}")))
                .send()
                .await
                .ok()?;
            (r.status() == 204).then_some(())
        }
    };
    eventually(Duration::from_secs(20), "copies at B", || held("good")).await;
    eventually(Duration::from_secs(20), "copies at B", || held("corrupt")).await;
    reqwest::Client::new()
        .post(a.url("/_/backbeat/api/crr/pause/site-b"))
        .send()
        .await
        .unwrap();
    put_object(&a, "dr-test", "missing", data(1000, 3)).await;
    let file = object_file(&b, "dr-test", "corrupt");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[20_000] ^= 1;
    std::fs::write(&file, bytes).unwrap();

    let server = recovery_uuid("site-a", "site-b");
    let (status, started) = action(&a, &server, "start_failover_test").await;
    assert_eq!(status, 202, "{started}");
    let t = task_ends(&a, started["task_uuid"].as_str().unwrap()).await;
    assert_eq!(t["status"], "Failed", "differences fail the test: {t}");
    assert!(
        t["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 missing, 1 corrupt"),
        "{t}"
    );
    assert!(t["created_at"].is_string(), "{t}");
    let r = &t["result"];
    assert_eq!(
        (
            r["missingCount"].clone(),
            r["corruptCount"].clone(),
            r["objectsChecked"].clone()
        ),
        (json!(1), json!(1), json!(3)),
        "{r}"
    );
    assert_eq!(r["missing"][0]["key"], "missing");
    assert_eq!(r["corrupt"][0]["key"], "corrupt");
    assert_eq!(server_status(&a, &server).await, "FAILOVER_TEST");
    let (_, detail) = get(&a, &format!("/servers/{server}")).await;
    assert!(
        detail["_issues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["error"]["code"] == "TestFailoverFoundDifferences"),
        "{detail}"
    );
    assert!(detail["created_at"].is_string(), "{detail}");
    assert!(
        detail["_links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["rel"] == "DR_CLOUD_SERVER_STOP_FAILOVER"),
        "{detail}"
    );
    assert_eq!(
        action(&a, &server, "start_failover_test").await.0,
        409,
        "not from FAILOVER_TEST"
    );
    // Production untouched: every object still reads at A, and A is still UP at B.
    for k in ["good", "corrupt", "missing"] {
        let r = client()
            .get(a.url(&format!("/cloudclonestore/dr-test/{k}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let topo: Value = reqwest::get(b.url("/administration/topologies/site-a"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(topo["status"], "UP");
    let (status, stop) = action(&a, &server, "stop_failover").await;
    assert_eq!(status, 202);
    task_ends(&a, stop["task_uuid"].as_str().unwrap()).await;
    assert_eq!(server_status(&a, &server).await, "STAND_BY");
}

#[tokio::test]
async fn production_failover_and_failback_with_the_primary_stopped() {
    let (mut a, b, c) = (
        Site::start("site-a", FAST),
        Site::start("site-b", FAST),
        Site::start("site-c", FAST),
    );
    mesh(&[&a, &b, &c]).await;
    create_bucket(&a, "prod").await;
    put_object(&a, "prod", "before", data(30_000, 1)).await;
    object_arrives(&b, "prod", "before").await;
    a.kill9();
    let server = recovery_uuid("site-a", "site-b");
    let (status, started) = action(&b, &server, "start_failover_prod").await;
    assert_eq!(status, 202, "{started}");
    task_ends(&b, started["task_uuid"].as_str().unwrap()).await;
    assert_eq!(server_status(&b, &server).await, "FAILOVER_PROD");
    // A is DOWN for B and C: reads and writes keep working at the recovery site.
    let topo: Value = reqwest::get(c.url("/administration/topologies/site-a"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(topo["status"], "DOWN");
    let r = client()
        .get(b.url("/cloudclonestore/prod/before"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), data(30_000, 1));
    put_object(&b, "prod", "during", data(20_000, 2)).await;
    let r = client()
        .get(c.url("/replicator/local/buckets/prod/during"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "C finds the new object without A");

    // Failback while A is still away: the task waits, and the server is busy meanwhile.
    let (status, stop) = action(&b, &server, "stop_failover").await;
    assert_eq!(status, 202, "{stop}");
    let stop_task = stop["task_uuid"].as_str().unwrap().to_owned();
    let (status, busy) = action(&b, &server, "stop_failover").await;
    assert_eq!(
        (status, busy["error"]["code"].clone()),
        (409, json!("ResourceBusy")),
        "{busy}"
    );
    assert_eq!(
        busy["error"]["context"]["task_uuids"][0],
        stop_task.as_str()
    );
    // The primary is away: the failback keeps running, shows what it waits for, never
    // Completed, and the server does not go STAND_BY.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t = task(&b, &stop_task).await;
    assert_eq!(t["status"], "Running", "{t}");
    assert!(t["progress"]["objects_total"].as_i64().unwrap() >= 1, "{t}");
    assert_eq!(t["progress"]["objects_done"], 0, "{t}");
    assert_eq!(server_status(&b, &server).await, "STOPPING_FAILOVER");
    assert_eq!(
        server_status(&c, &server).await,
        "STOPPING_FAILOVER",
        "the same state at C"
    );
    // Cancelling the failback rolls the server back to FAILOVER_PROD (traffic stays at B).
    let r = reqwest::Client::new()
        .post(c.url(&format!("/api/dr/v2/tasks/{stop_task}:cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let t = task_ends(&b, &stop_task).await;
    assert_eq!(t["status"], "Cancelled", "{t}");
    assert_eq!(server_status(&b, &server).await, "FAILOVER_PROD");
    let (status, stop) = action(&c, &server, "stop_failover").await;
    assert_eq!(status, 202, "again, through C: {stop}");
    let stop_task = stop["task_uuid"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(task(&c, &stop_task).await["status"], "Running");
    a.restart();
    let t = task_ends(&b, &stop_task).await;
    assert_eq!(t["status"], "Completed", "{t}");
    assert!(t["result"]["objectsVerified"].as_u64().unwrap() >= 1, "{t}");
    assert_eq!(server_status(&b, &server).await, "STAND_BY");
    let r = client()
        .head(a.url("/replicator/remote/buckets/prod/during"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        204,
        "the write made during the failover reached the primary"
    );
    let topo: Value = reqwest::get(c.url("/administration/topologies/site-a"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(topo["status"], "UP", "traffic back");
}

#[tokio::test]
async fn a_failback_that_cannot_prove_delivery_fails_after_its_deadline() {
    let cfg = format!("{FAST}[dr]\nfailback_deadline_secs = 3\n");
    let (mut a, b) = (Site::start("site-a", &cfg), Site::start("site-b", &cfg));
    mesh(&[&a, &b]).await;
    create_bucket(&a, "deadline").await;
    bucket_arrives(&b, "deadline").await;
    let server = recovery_uuid("site-a", "site-b");
    let (status, started) = action(&b, &server, "start_failover_prod").await;
    assert_eq!(status, 202, "{started}");
    task_ends(&b, started["task_uuid"].as_str().unwrap()).await;
    a.kill9();
    put_object(&b, "deadline", "during", data(5000, 9)).await;
    let (status, stop) = action(&b, &server, "stop_failover").await;
    assert_eq!(status, 202, "{stop}");
    let t = task_ends(&b, stop["task_uuid"].as_str().unwrap()).await;
    assert_eq!(t["status"], "Failed", "{t}");
    let why = t["error"]["message"].as_str().unwrap();
    assert!(
        why.contains("site-a") && why.contains("not proven"),
        "{why}"
    );
    assert_eq!(server_status(&b, &server).await, "FAILOVER_PROD");
}

#[tokio::test]
async fn one_dr_state_per_server_whichever_site_is_asked() {
    let (a, b, c) = (
        Site::start("site-a", FAST),
        Site::start("site-b", FAST),
        Site::start("site-c", FAST),
    );
    mesh(&[&a, &b, &c]).await;
    create_bucket(&a, "one").await;
    for i in 0..40 {
        put_object(&a, "one", &format!("o{i}"), data(20_000, i)).await;
    }
    let server = recovery_uuid("site-a", "site-b");
    let (status, started) = action(&a, &server, "start_failover_test").await;
    assert_eq!(status, 202, "through A: {started}");
    let task_uuid = started["task_uuid"].as_str().unwrap().to_owned();
    let (status, second) = action(&c, &server, "start_failover_test").await;
    assert_eq!(status, 409, "through C: {second}");
    let code = second["error"]["code"].as_str().unwrap();
    assert!(
        code == "ResourceBusy" || code == "ServerNotReady",
        "{second}"
    );
    let t = task_ends(&c, &task_uuid).await;
    assert_eq!(
        t["site_id"], "site-b",
        "the owner (recovery site) runs it: {t}"
    );
    let path = format!("/servers/{server}");
    let views: Vec<Value> = futures::future::join_all([&a, &b, &c].map(|s| {
        let path = path.clone();
        async move { get(s, &path).await.1 }
    }))
    .await;
    for v in &views {
        assert_eq!(v["status"], "FAILOVER_TEST", "{v}");
        assert_eq!(v["task_uuid"], task_uuid.as_str(), "{v}");
        assert_eq!(v["created_at"], views[0]["created_at"], "{v}");
        assert_ne!(
            v["rpo"]["status"], "UNKNOWN",
            "RPO measured from every site: {v}"
        );
    }
    // Busy holds wherever the request arrives: a failback through C, then another through A.
    let (status, stop) = action(&c, &server, "stop_failover").await;
    assert_eq!(status, 202, "{stop}");
    task_ends(&a, stop["task_uuid"].as_str().unwrap()).await;
    for s in [&a, &b, &c] {
        assert_eq!(server_status(s, &server).await, "STAND_BY");
    }
}

/// Orders that ran out of age while the primary was still away end as failed operations; the
/// failback queues them again and completes only once they are delivered and verified.
#[tokio::test]
async fn a_failback_retries_the_failed_operations_of_the_failover() {
    let cfg = format!("{FAST}max_order_age_secs = 2\n");
    let (mut a, b) = (Site::start("site-a", &cfg), Site::start("site-b", &cfg));
    mesh(&[&a, &b]).await;
    create_bucket(&a, "retried").await;
    bucket_arrives(&b, "retried").await;
    a.kill9();
    let server = recovery_uuid("site-a", "site-b");
    let (status, started) = action(&b, &server, "start_failover_prod").await;
    assert_eq!(status, 202, "{started}");
    task_ends(&b, started["task_uuid"].as_str().unwrap()).await;
    put_object(&b, "retried", "during", data(8000, 4)).await;

    // The failback marks A UP while A is still away: the order fails until it is too old and
    // becomes a failed operation, which the failback queues again.
    let (status, stop) = action(&b, &server, "stop_failover").await;
    assert_eq!(status, 202, "{stop}");
    let stop_task = stop["task_uuid"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(task(&b, &stop_task).await["status"], "Running");
    a.restart();
    let t = task_ends(&b, &stop_task).await;
    assert_eq!(t["status"], "Completed", "{t}");
    assert!(
        t["result"]["failedOperationsRetried"].as_u64().unwrap() >= 1,
        "the failed operation was part of the failback: {t}"
    );
    let r = client()
        .head(a.url("/replicator/remote/buckets/retried/during"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "delivered to the primary");
    let failed: Value = reqwest::get(b.url("/_/backbeat/api/crr/failed/retried/during"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(failed["Versions"], json!([]), "{failed}");
    assert_eq!(server_status(&b, &server).await, "STAND_BY");
}

/// DR tasks of one kind wait for that kind's slots; a failback cancelled while Pending ends at
/// once and rolls its server back to a stable status at every site.
#[tokio::test]
async fn a_failback_cancelled_while_pending_leaves_its_server_stable() {
    let cfg = format!("{FAST}[dr]\nmax_concurrent_tasks = 1\n");
    let (mut a, b, c) = (
        Site::start("site-a", &cfg),
        Site::start("site-b", &cfg),
        Site::start("site-c", &cfg),
    );
    mesh(&[&a, &b, &c]).await;
    create_bucket(&a, "slots").await;
    bucket_arrives(&b, "slots").await;
    a.kill9();
    let (from_a, from_c) = (
        recovery_uuid("site-a", "site-b"),
        recovery_uuid("site-c", "site-b"),
    );
    for server in [&from_a, &from_c] {
        let (status, started) = action(&b, server, "start_failover_prod").await;
        assert_eq!(status, 202, "{started}");
        let t = task_ends(&b, started["task_uuid"].as_str().unwrap()).await;
        assert_eq!(t["status"], "Completed", "{t}");
    }
    put_object(&b, "slots", "during", data(6000, 5)).await;

    // A's failback holds B's only failback slot while A is away; C's waits Pending.
    let (status, first) = action(&b, &from_a, "stop_failover").await;
    assert_eq!(status, 202, "{first}");
    let first = first["task_uuid"].as_str().unwrap().to_owned();
    let (status, second) = action(&c, &from_c, "stop_failover").await;
    assert_eq!(status, 202, "through C: {second}");
    let second = second["task_uuid"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(task(&b, &first).await["status"], "Running");
    assert_eq!(task(&b, &second).await["status"], "Pending");

    let r = reqwest::Client::new()
        .post(c.url(&format!("/api/dr/v2/tasks/{second}:cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let t = task_ends(&b, &second).await;
    assert_eq!(t["status"], "Cancelled", "{t}");
    for site in [&b, &c] {
        assert_eq!(
            server_status(site, &from_c).await,
            "FAILOVER_PROD",
            "rolled back, never left STOPPING_FAILOVER"
        );
    }
    a.restart();
    let t = task_ends(&b, &first).await;
    assert_eq!(t["status"], "Completed", "{t}");
    assert_eq!(server_status(&c, &from_a).await, "STAND_BY");
    assert_eq!(server_status(&b, &from_c).await, "FAILOVER_PROD");
}
