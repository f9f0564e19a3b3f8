//! Replication definitions and the task engine through the Alfresco API, with real sites.

mod common;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const NO_FANOUT: &str = "[replication]\nenabled = false\nmax_attempts = 3\nbackoff_initial_ms = 100\nbackoff_max_ms = 300\n";

fn api(site: &Site, path: &str) -> String {
    site.url(&format!("/api{path}"))
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn define(site: &Site, body: Value) -> (u16, Value) {
    send(
        reqwest::Client::new()
            .post(api(site, "/replication-definitions"))
            .json(&body),
    )
    .await
}

async fn detail(site: &Site, name: &str) -> Value {
    let (status, v) =
        send(reqwest::Client::new().get(api(site, &format!("/replication-definition/{name}"))))
            .await;
    assert_eq!(status, 200, "{v}");
    v["data"].clone()
}

async fn run(site: &Site, name: &str) -> Value {
    let (status, v) = send(
        reqwest::Client::new()
            .post(api(site, "/running-replication-actions"))
            .form(&[("name", name)]),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["data"].clone()
}

async fn action(site: &Site, id: &str) -> Value {
    let (status, v) =
        send(reqwest::Client::new().get(api(site, &format!("/running-action/{id}")))).await;
    assert_eq!(status, 200, "{v}");
    v["data"].clone()
}

async fn wait_status(site: &Site, name: &str, want: &str) -> Value {
    eventually(
        Duration::from_secs(60),
        &format!("{name} {want}"),
        || async {
            let d = detail(site, name).await;
            (d["status"] == want).then_some(d)
        },
    )
    .await
}

#[tokio::test]
async fn definitions_crud_with_every_error_status() {
    let a = Site::start("site-a", NO_FANOUT);
    let http = reqwest::Client::new();
    // The target must be a site of the topology (B need not be up for a definition).
    let (s, v) = define(&a, json!({"name": "nowhere", "description": "d", "payload": ["bkt/x/"], "targetName": "site-b"})).await;
    assert_eq!(s, 400, "unknown target: {v}");
    assert_eq!(v["status"]["code"], 400, "{v}");
    let r = http
        .post(a.url("/administration/topologies"))
        .json(&json!({"id": "site-b", "uri": "http://127.0.0.1:9", "status": "UP"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (s, v) = define(&a, json!({"name": "job-b", "description": "to b", "payload": ["bkt/x/", "bkt/one.txt"], "targetName": "site-b",
        "schedule": {"start": {"iso8601": "2030-01-01T00:00:00Z"}, "intervalPeriod": "Hour", "intervalCount": 2}})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["status"], "New");
    assert_eq!(v["data"]["payload"][0]["isFolder"], true);
    assert_eq!(v["data"]["payload"][1]["isFolder"], false);
    assert_eq!(v["data"]["schedule"]["intervalPeriod"], "Hour");
    // The definition's own nodeRef, and the seed's trailing-slash paths.
    let node_ref = v["data"]["nodeRef"].as_str().unwrap().to_owned();
    assert!(node_ref.starts_with("workspace://SpacesStore/"), "{v}");
    let (s, listed) = send(http.get(api(&a, "/replication-definitions/"))).await;
    assert_eq!(s, 200, "{listed}");
    assert_eq!(listed["data"][0]["nodeRef"], node_ref.as_str());
    assert_eq!(
        send(http.get(api(&a, "/replication-definition/job-b/")))
            .await
            .0,
        200
    );
    assert_eq!(send(http.get(api(&a, "/running-actions/"))).await.0, 200);
    // A payload entry naming an object by nodeRef (its id) is stored as its bucket/key.
    create_bucket(&a, "bkt").await;
    let r = client()
        .post(a.url("/cloudclonestore/bkt/named.txt"))
        .body("x")
        .send()
        .await
        .unwrap();
    let obj: Value = r.json().await.unwrap();
    let oid = obj["id"].as_str().unwrap();
    let (s, v) = define(&a, json!({"name": "by-ref", "description": "d", "payload": [format!("workspace://SpacesStore/{oid}")], "targetName": "site-b"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["payload"][0]["path"], "/bkt/named.txt", "{v}");
    let (s, v) = define(&a, json!({"name": "bad-ref", "description": "d", "payload": ["workspace://SpacesStore/nope"], "targetName": "site-b"})).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        http.delete(api(&a, "/replication-definition/by-ref/"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        define(&a, json!({"name": "job-a", "description": "to a"}))
            .await
            .0,
        200
    );
    // Missing fields, taken name, bad payload and schedule: 400 in Alfresco's envelope.
    for bad in [
        json!({"description": "x"}),
        json!({"name": "n"}),
        json!({"name": "job-a", "description": "dup"}),
        json!({"name": "n2", "description": "d", "payload": ["nobucket"]}),
        json!({"name": "n3", "description": "d", "schedule": {"intervalPeriod": "Fortnight", "intervalCount": 1}}),
    ] {
        let (s, v) = define(&a, bad.clone()).await;
        assert_eq!(s, 400, "{bad}");
        assert_eq!(v["status"]["code"], 400, "{v}");
    }
    let (s, v) = send(http.get(api(&a, "/replication-definition/nope"))).await;
    assert_eq!((s, v["status"]["code"].clone()), (404, json!(404)));
    // Sorting.
    let names = |v: &Value| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let (_, by_name) = send(http.get(api(&a, "/replication-definitions"))).await;
    assert_eq!(names(&by_name), ["job-a", "job-b"]);
    for sort in ["status", "lastRun", "name"] {
        let (s, v) =
            send(http.get(api(&a, &format!("/replication-definitions?sort={sort}")))).await;
        assert_eq!((s, names(&v).len()), (200, 2), "{sort}");
    }
    assert_eq!(
        send(http.get(api(&a, "/replication-definitions?sort=size")))
            .await
            .0,
        400
    );
    // Update keeps what is not sent, except the schedule, which a PUT without one clears.
    let (s, v) = send(
        http.put(api(&a, "/replication-definition/job-b"))
            .json(&json!({"description": "changed"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["description"], "changed");
    assert_eq!(v["data"]["targetName"], "site-b");
    assert_eq!(v["data"]["schedule"], Value::Null);
    // Rename, rename onto a taken name, unknown name.
    let (s, _) = send(
        http.put(api(&a, "/replication-definition/job-b"))
            .json(&json!({"name": "job-c"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(detail(&a, "job-c").await["description"], "changed");
    assert_eq!(
        send(
            http.put(api(&a, "/replication-definition/job-c"))
                .json(&json!({"name": "job-a"}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        send(
            http.put(api(&a, "/replication-definition/job-b"))
                .json(&json!({"description": "x"}))
        )
        .await
        .0,
        404
    );
    // The same routes answer under /alfresco/service.
    let r = http
        .get(a.url("/alfresco/service/api/replication-definition/job-c"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        http.delete(api(&a, "/replication-definition/job-c"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        http.delete(api(&a, "/replication-definition/job-c"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Running a missing definition, a missing nodeRef.
    assert_eq!(
        send(
            http.post(api(&a, "/running-replication-actions"))
                .form(&[("name", "nope")])
        )
        .await
        .0,
        404
    );
    assert_eq!(
        send(
            http.post(api(&a, "/running-actions"))
                .form(&[("other", "x")])
        )
        .await
        .0,
        400
    );
    assert_eq!(
        send(
            http.post(api(&a, "/running-actions"))
                .form(&[("nodeRef", "workspace://SpacesStore/none")])
        )
        .await
        .0,
        404
    );
    assert_eq!(send(http.get(api(&a, "/running-action/nope"))).await.0, 404);
}

/// A with 200 objects under `pre/` (no automatic fan-out), B already holding the even half.
async fn half_replicated() -> (Site, Site) {
    let (a, b) = (
        Site::start("site-a", NO_FANOUT),
        Site::start("site-b", NO_FANOUT),
    );
    mesh(&[&a, &b]).await;
    create_bucket(&a, "defs").await;
    create_bucket(&b, "defs").await;
    for i in 0..200u64 {
        let key = format!("pre/obj-{i:03}");
        put_object(&a, "defs", &key, data(2000, i)).await;
        if i % 2 == 0 {
            put_object(&b, "defs", &key, data(2000, i)).await;
        }
    }
    put_object(&a, "defs", "other/not-in-payload", data(10, 1)).await;
    (a, b)
}

async fn listing_count(site: &Site, bucket: &str) -> usize {
    client()
        .put(site.url(&format!("/cloudclonestore/{bucket}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .count()
}

#[tokio::test]
async fn a_run_sends_exactly_what_the_target_lacks() {
    let (a, b) = half_replicated().await;
    let (s, v) = define(&a, json!({"name": "half", "description": "d", "payload": ["defs/pre/"], "targetName": "site-b"})).await;
    assert_eq!(s, 200, "{v}");
    let started = run(&a, "half").await;
    assert_eq!(started["actionType"], "replicationActionExecutor");
    let done = wait_status(&a, "half", "Completed").await;
    let task = action(&a, started["taskUuid"].as_str().unwrap()).await;
    assert_eq!(task["result"]["sent"], 100, "{task}");
    assert_eq!(task["result"]["skipped"], 100);
    assert_eq!(task["progress"]["objectsDone"], 200);
    assert_eq!(task["progress"]["objectsTotal"], 200);
    assert_eq!(
        listing_count(&b, "defs").await,
        200,
        "exactly the payload, all of it"
    );
    let http = reqwest::Client::new();
    let local: Value = http
        .get(api(
            &a,
            &format!(
                "/transfer-reports/{}",
                done["transferLocalReport"].as_str().unwrap()
            ),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(local["data"]["summary"]["sent"], 100);
    assert_eq!(local["data"]["summary"]["skipped"], 100);
    let sent: Vec<&str> = local["data"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "sent")
        .map(|e| e["object"].as_str().unwrap())
        .collect();
    assert!(
        sent.iter().all(|k| k[8..].parse::<u64>().unwrap() % 2 == 1),
        "only the odd (missing) half was sent"
    );
    let remote: Value = http
        .get(api(
            &a,
            &format!(
                "/transfer-reports/{}",
                done["transferRemoteReport"].as_str().unwrap()
            ),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(remote["data"]["summary"]["received"], 100);
    // Incremental: a second run sends nothing.
    let again = run(&a, "half").await;
    wait_status(&a, "half", "Completed").await;
    let task = action(&a, again["taskUuid"].as_str().unwrap()).await;
    assert_eq!(
        (
            task["result"]["sent"].clone(),
            task["result"]["skipped"].clone()
        ),
        (json!(0), json!(200))
    );
}

#[tokio::test]
async fn cancel_mid_run_and_restart_mid_run() {
    let (mut a, b) = half_replicated().await;
    let http = reqwest::Client::new();
    // Paused: the run's orders wait, so the run is observably in progress.
    http.post(a.url("/_/backbeat/api/crr/pause/site-b"))
        .send()
        .await
        .unwrap();
    define(&a, json!({"name": "slow", "description": "d", "payload": ["defs/pre/"], "targetName": "site-b"})).await;
    let started = run(&a, "slow").await;
    let id = started["details"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    eventually(Duration::from_secs(20), "listed as running", || async {
        let (_, v) =
            send(http.get(api(&a, "/running-actions?type=replicationActionExecutor"))).await;
        v["data"]
            .as_array()?
            .iter()
            .any(|t| t["status"] == "Running")
            .then_some(())
    })
    .await;
    // Cancel once the run has queued orders (the paused peer keeps them queued): the pages
    // the target already holds are only skipped.
    eventually(
        Duration::from_secs(20),
        "orders queued by the run",
        || async {
            let (_, p) = send(http.get(a.url("/_/backbeat/api/metrics/crr/site-b/pending"))).await;
            (p["pending"]["results"]["count"].as_u64()? > 0).then_some(())
        },
    )
    .await;
    let (_, listed) = send(http.get(api(&a, "/running-replication-actions?name=slow"))).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        http.delete(api(&a, &format!("/running-action/{id}")))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let d = detail(&a, "slow").await;
    assert!(
        d["status"] == "CancelRequested" || d["status"] == "Cancelled",
        "{d}"
    );
    wait_status(&a, "slow", "Cancelled").await;
    let task = action(&a, &id).await;
    let done = task["progress"]["objectsDone"].as_i64().unwrap();
    assert!(done < 200, "partial counts: {task}");
    assert_eq!(task["cancelRequested"], true);
    assert!(
        task["result"]["ordersWithdrawn"].as_u64().unwrap() > 0,
        "the paused run's queued orders are withdrawn: {task}"
    );
    let (_, pending) = send(http.get(a.url("/_/backbeat/api/metrics/crr/site-b/pending"))).await;
    assert_eq!(pending["pending"]["results"]["count"], 0, "{pending}");

    // A restart while a run is in progress: no task stays Running.
    let second = run(&a, "slow").await;
    eventually(Duration::from_secs(20), "second run running", || async {
        (action(&a, second["taskUuid"].as_str().unwrap()).await["status"] == "Running")
            .then_some(())
    })
    .await;
    a.restart();
    let task = action(&a, second["taskUuid"].as_str().unwrap()).await;
    assert_eq!(task["status"], "Failed", "{task}");
    assert!(task["failureMessage"]
        .as_str()
        .unwrap()
        .contains("interrupted"));
    let (_, running) = send(http.get(api(&a, "/running-actions"))).await;
    assert!(running["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] != "Running"));
    drop(b);
}

#[tokio::test]
async fn a_schedule_fires_repeatedly_never_twice_per_due_time() {
    let (a, b) = (
        Site::start("site-a", NO_FANOUT),
        Site::start("site-b", NO_FANOUT),
    );
    mesh(&[&a, &b]).await;
    create_bucket(&a, "sched").await;
    put_object(&a, "sched", "one", data(100, 1)).await;
    let start = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (s, v) = define(&a, json!({"name": "tick", "description": "every 2 s", "payload": ["sched/one"], "targetName": "site-b",
        "schedule": {"start": {"iso8601": start}, "intervalPeriod": "Second", "intervalCount": 2}})).await;
    assert_eq!(s, 200, "{v}");
    let runs = eventually(Duration::from_secs(30), "three scheduled runs", || async {
        let (_, v) = send(reqwest::Client::new().get(api(
            &a,
            "/running-actions?all=true&type=replicationActionExecutor",
        )))
        .await;
        let runs: Vec<Value> = v["data"].as_array()?.clone();
        (runs.len() >= 3).then_some(runs)
    })
    .await;
    let mut due: Vec<&str> = runs
        .iter()
        .filter_map(|r| r["scheduledFor"].as_str())
        .collect();
    let n = due.len();
    due.sort();
    due.dedup();
    assert_eq!(due.len(), n, "one run per due time: {runs:?}");
    converged_at(&b, "sched", "one").await;
}

async fn converged_at(site: &Site, bucket: &str, key: &str) {
    eventually(Duration::from_secs(20), "replicated", || async {
        let r = client()
            .head(site.url(&format!("/replicator/remote/buckets/{bucket}/{key}")))
            .send()
            .await
            .ok()?;
        (r.status() == 204).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_cli_runs_a_definition_and_reports() {
    let (a, b) = (
        Site::start("site-a", NO_FANOUT),
        Site::start("site-b", NO_FANOUT),
    );
    mesh(&[&a, &b]).await;
    create_bucket(&a, "cli").await;
    for i in 0..5 {
        put_object(&a, "cli", &format!("k{i}"), data(500, i)).await;
    }
    define(
        &a,
        json!({"name": "by-cli", "description": "d", "payload": ["cli/"], "targetName": "site-b"}),
    )
    .await;
    // The CLI reads the site's address from its config: point it at the running site.
    let config = std::fs::read_to_string(&a.config_path).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{}\"", a.addr),
    );
    let path = a.dir.join("cli.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mirrorgate"))
        .args(["definitions", "run", "by-cli", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Completed") && stdout.contains("sent 5"),
        "{stdout}"
    );
    assert_eq!(listing_count(&b, "cli").await, 5);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mirrorgate"))
        .args(["definitions", "run", "nope", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
}
