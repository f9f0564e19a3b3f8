//! The Rucio replicas API over the real replica catalogue, with three sites on 127.0.0.1:
//! listings by DID, RSE and dataset (NDJSON and metalink), RSE expressions and states,
//! declarations (BAD, SUSPICIOUS, TEMPORARY_UNAVAILABLE), tombstones and locks, deletions, and
//! Rucio's error classes for malformed requests.

mod common;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Fast replication and background jobs; no scrubbing (these tests corrupt nothing).
const SITE: &str = "[replication]\nworkers = 2\nmax_attempts = 3\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\n[scrub]\nenabled = false\n[rucio]\nbackground_interval_ms = 150\n";
const IDS: [&str; 3] = ["site-a", "site-b", "site-c"];

async fn three_sites() -> (Site, Site, Site) {
    let (a, b, c) = (
        Site::start("site-a", SITE),
        Site::start("site-b", SITE),
        Site::start("site-c", SITE),
    );
    mesh(&[&a, &b, &c]).await;
    (a, b, c)
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    fn lines(&self) -> Vec<Value> {
        self.text
            .lines()
            .map(|l| serde_json::from_str(l).expect("NDJSON line"))
            .collect()
    }
    /// Asserts a Rucio error: status, class in the body and in the header.
    fn assert_error(&self, status: u16, class: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.json()["ExceptionClass"], class, "{}", self.text);
        assert!(self.json()["ExceptionMessage"].is_string());
        assert_eq!(self.headers["exceptionclass"], class);
        assert!(self.headers.contains_key("exceptionmessage"));
    }
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let r = req.send().await.unwrap();
    Answer {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        text: r.text().await.unwrap(),
    }
}

async fn get(site: &Site, path: &str) -> Answer {
    send(reqwest::Client::new().get(site.url(path))).await
}

async fn call(site: &Site, method: reqwest::Method, path: &str, body: Value) -> Answer {
    send(
        reqwest::Client::new()
            .request(method, site.url(path))
            .json(&body),
    )
    .await
}

async fn post(site: &Site, path: &str, body: Value) -> Answer {
    call(site, reqwest::Method::POST, path, body).await
}

/// `POST /replicas/list` at `site`; the per-file lines.
async fn list(site: &Site, body: Value) -> Vec<Value> {
    let a = post(site, "/replicas/list", body).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.headers["content-type"], "application/x-json-stream");
    a.lines()
}

fn rses_of(line: &Value) -> Vec<String> {
    let mut r: Vec<String> = line["rses"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    r.sort();
    r
}

fn adler32(data: &[u8]) -> String {
    let mut a = adler2::Adler32::new();
    a.write_slice(data);
    format!("{:08x}", a.checksum())
}

/// Waits until every site holds an AVAILABLE copy of the file.
async fn available_everywhere(site: &Site, bucket: &str, key: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("{bucket}:{key} AVAILABLE at the three sites"),
        || async {
            let a = get(site, &format!("/replicas/{bucket}/{key}")).await;
            let line = a.lines().into_iter().next()?;
            (rses_of(&line) == IDS).then_some(())
        },
    )
    .await;
}

async fn state_at(site: &Site, bucket: &str, key: &str, rse: &str) -> Option<String> {
    let lines = list(
        site,
        json!({"dids": [{"scope": bucket, "name": key}], "all_states": true}),
    )
    .await;
    lines.first()?["states"][rse].as_str().map(str::to_owned)
}

#[tokio::test]
async fn replicas_are_listed_by_did_rse_and_dataset() {
    let (a, b, mut c) = three_sites().await;
    create_bucket(&a, "cat").await;
    let (one, two) = (data(70_000, 1), data(1_234, 2));
    put_object(&a, "cat", "one", one.clone()).await;
    put_object(&a, "cat", "dir/two", two.clone()).await;
    available_everywhere(&c, "cat", "one").await;
    available_everywhere(&c, "cat", "dir/two").await;

    // By DID, from a replica site: size, adler32, one PFN per RSE that reads the copy.
    let a1 = get(&c, "/replicas/cat/one").await;
    assert_eq!(a1.status, 200);
    assert_eq!(a1.headers["content-type"], "application/x-json-stream");
    let line = &a1.lines()[0];
    assert_eq!(line["scope"], "cat");
    assert_eq!(line["name"], "one");
    assert_eq!(line["bytes"], 70_000);
    assert_eq!(line["adler32"], adler32(&one));
    assert_eq!(line["parents"], json!(["cat:cat"]));
    let pfns = line["pfns"].as_object().unwrap();
    assert_eq!(pfns.len(), 3);
    for (pfn, meta) in pfns {
        let rse = meta["rse"].as_str().unwrap();
        assert_eq!(line["rses"][rse][0], pfn.as_str());
        assert_eq!(meta["type"], "DISK");
        let bytes = client()
            .get(pfn)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(bytes.as_ref(), &one[..], "PFN {pfn} reads the copy");
    }

    // Metalink (GET and POST), parsed as XML.
    let r = send(
        reqwest::Client::new()
            .get(c.url("/replicas/cat/dir/two"))
            .header("accept", "application/metalink4+xml"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/metalink4+xml");
    assert_metalink(&r.text, &[("cat:dir/two", &two, 3)]);
    let r = send(
        reqwest::Client::new()
            .post(a.url("/replicas/list"))
            .header("accept", "application/metalink4+xml")
            .json(&json!({"dids": [{"scope": "cat", "name": "one"}, {"scope": "cat", "name": "dir/two"}],
                          "rse_expression": "site-a|site-b"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_metalink(&r.text, &[("cat:one", &one, 2), ("cat:dir/two", &two, 2)]);

    // RSE expressions and closeness.
    let did = json!([{"scope": "cat", "name": "one"}]);
    let only_b = list(&a, json!({"dids": did, "rse_expression": "site-b"})).await;
    assert_eq!(rses_of(&only_b[0]), ["site-b"]);
    let a_or_c = list(&b, json!({"dids": did, "rse_expression": "site-a|site-c"})).await;
    assert_eq!(rses_of(&a_or_c[0]), ["site-a", "site-c"]);
    let every = list(&b, json!({"dids": did, "rse_expression": "*"})).await;
    assert_eq!(rses_of(&every[0]), IDS);
    let near = list(&c, json!({"dids": did, "sort": "closeness"})).await;
    let first = near[0]["pfns"]
        .as_object()
        .unwrap()
        .values()
        .find(|m| m["priority"] == 1)
        .unwrap();
    assert_eq!(first["rse"], "site-c", "closeness puts this site first");

    // all_states: an UNAVAILABLE copy is only listed with all_states.
    let r = call(&a, reqwest::Method::PUT, "/replicas/",
        json!({"rse": "site-b", "files": [{"scope": "cat", "name": "one", "state": "U", "error_message": "disk offline"}]})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let available = list(&c, json!({"dids": did})).await;
    assert_eq!(rses_of(&available[0]), ["site-a", "site-c"]);
    let all = list(&c, json!({"dids": did, "all_states": true})).await;
    assert_eq!(rses_of(&all[0]), IDS);
    assert_eq!(all[0]["states"]["site-b"], "UNAVAILABLE");
    assert_eq!(all[0]["states"]["site-a"], "AVAILABLE");

    // Datasets: the bucket's files, and its replica per RSE.
    let files = list(&b, json!({"dids": [{"scope": "cat", "name": "cat"}]})).await;
    let names: Vec<&str> = files.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["dir/two", "one"]);
    let ds = get(&a, "/replicas/cat/cat/datasets").await;
    assert_eq!(ds.status, 200, "{}", ds.text);
    let ds = ds.lines();
    assert_eq!(ds.len(), 3);
    for line in &ds {
        assert_eq!(line["length"], 2);
        assert_eq!(line["bytes"], 71_234);
        let expected = if line["rse"] == "site-b" { 1 } else { 2 };
        assert_eq!(line["available_length"], expected, "{line}");
    }
    let bulk = post(
        &b,
        "/replicas/datasets_bulk",
        json!({"dids": [{"scope": "cat", "name": "cat"}]}),
    )
    .await;
    assert_eq!(bulk.status, 200, "{}", bulk.text);
    assert_eq!(bulk.lines().len(), 3);

    // By RSE, asked at another site.
    let at_b = get(&c, "/replicas/rse/site-b").await;
    assert_eq!(at_b.status, 200, "{}", at_b.text);
    let at_b = at_b.lines();
    assert_eq!(at_b.len(), 1);
    assert_eq!(at_b[0]["rse"], "site-b");
    assert_eq!(at_b[0]["state"], "UNAVAILABLE");
    assert_eq!(at_b[0]["available_bytes"], 1_234);

    // PFNs back to DIDs.
    let pfn = format!("{}/replicator/remote/buckets/cat/dir/two", b.url);
    let dids = post(
        &a,
        "/replicas/dids",
        json!({"rse": "site-b", "pfns": [pfn]}),
    )
    .await;
    assert_eq!(dids.status, 200, "{}", dids.text);
    assert_eq!(
        dids.lines()[0][&pfn],
        json!({"scope": "cat", "name": "dir/two"})
    );

    // Unknown DIDs and unsupported formats.
    get(&a, "/replicas/cat/nothing")
        .await
        .assert_error(404, "DataIdentifierNotFound");
    let r = send(
        reqwest::Client::new()
            .get(a.url("/replicas/cat/one"))
            .header("accept", "text/html"),
    )
    .await;
    r.assert_error(406, "UnsupportedRequestedContentType");

    // A site that does not answer is represented by what the others learned from replication:
    // the source learns each copy when the peer reports its order done.
    eventually(
        Duration::from_secs(15),
        "outcomes known at the source",
        || async {
            let r = client()
                .head(a.url("/cloudclonestore/cat/one"))
                .send()
                .await
                .ok()?;
            (r.headers().get("x-clonecloudstore-replication-status")? == "COMPLETED").then_some(())
        },
    )
    .await;
    c.kill9();
    let learned = list(&a, json!({"dids": did})).await;
    assert_eq!(rses_of(&learned[0]), ["site-a", "site-c"]);
}

/// Checks a metalink document: each (identity, bytes, url count) in order.
fn assert_metalink(xml: &str, files: &[(&str, &[u8], usize)]) {
    let doc = roxmltree::Document::parse(xml).expect("metalink parses");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "metalink");
    assert_eq!(
        root.tag_name().namespace(),
        Some("urn:ietf:params:xml:ns:metalink")
    );
    let nodes: Vec<_> = root.children().filter(|n| n.has_tag_name("file")).collect();
    assert_eq!(nodes.len(), files.len(), "{xml}");
    for (node, (identity, bytes, urls)) in nodes.iter().zip(files) {
        let child = |tag: &str| {
            node.children()
                .find(|n| n.has_tag_name(tag))
                .and_then(|n| n.text())
                .unwrap_or("")
                .to_owned()
        };
        assert_eq!(child("identity"), *identity);
        assert_eq!(child("size"), bytes.len().to_string());
        let hash = |kind: &str| {
            node.children()
                .find(|n| n.has_tag_name("hash") && n.attribute("type") == Some(kind))
                .and_then(|n| n.text())
                .map(str::to_owned)
        };
        assert_eq!(hash("adler32"), Some(adler32(bytes)));
        let sha = sha2::Sha256::digest(bytes);
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hash("sha-256"), Some(hex));
        let found: Vec<_> = node.children().filter(|n| n.has_tag_name("url")).collect();
        assert_eq!(found.len(), *urls, "{xml}");
        for (i, u) in found.iter().enumerate() {
            assert_eq!(u.attribute("priority"), Some((i + 1).to_string().as_str()));
            assert!(u
                .text()
                .unwrap()
                .contains("/replicator/remote/buckets/cat/"));
        }
    }
}

use sha2::Digest;

#[tokio::test]
async fn declarations_tombstones_and_locks() {
    let (a, b, c) = three_sites().await;
    create_bucket(&a, "decl").await;
    let body = data(20_000, 3);
    for key in ["x", "t", "gone", "kept"] {
        put_object(&a, "decl", key, body.clone()).await;
        available_everywhere(&a, "decl", key).await;
    }
    let pfn = |site: &Site, key: &str| format!("{}/replicator/remote/buckets/decl/{key}", site.url);

    // BAD through A for B's copy: B takes it, repairs it from a good copy, and keeps the history.
    let r = post(
        &a,
        "/replicas/bad",
        json!({"replicas": [pfn(&b, "x"), "http://nowhere/x"], "reason": "operator says so"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({"unknown": ["http://nowhere/x Unknown RSE"]})
    );
    eventually(Duration::from_secs(30), "B's copy recovered", || async {
        let rows = get(&a, "/replicas/bad/states?rse=site-b").await.lines();
        rows.iter()
            .any(|r| {
                r["name"] == "x" && r["state"] == "RECOVERED" && r["reason"] == "operator says so"
            })
            .then_some(())
    })
    .await;
    assert_eq!(
        state_at(&c, "decl", "x", "site-b").await.as_deref(),
        Some("AVAILABLE")
    );
    let r = post(
        &c,
        "/replicas/bad",
        json!({"replicas": [{"scope": "decl", "name": "nope", "rse": "site-a"}]}),
    )
    .await;
    assert_eq!(r.json(), json!({"site-a": ["decl:nope Unknown replica"]}));

    // SUSPICIOUS accumulates; a good copy re-read at the threshold stays AVAILABLE.
    for _ in 0..3 {
        let r = post(
            &b,
            "/replicas/suspicious",
            json!({"pfns": [pfn(&c, "x")], "reason": "slow"}),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json(), json!({}));
    }
    let s = get(&a, "/replicas/suspicious?nattempts=2").await;
    assert_eq!(s.status, 200, "{}", s.text);
    let rows = s.json();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rse"] == "site-c")
        .unwrap();
    assert_eq!(
        (
            row["scope"].as_str(),
            row["name"].as_str(),
            row["cnt"].as_i64()
        ),
        (Some("decl"), Some("x"), Some(3))
    );
    assert_eq!(
        state_at(&a, "decl", "x", "site-c").await.as_deref(),
        Some("AVAILABLE")
    );

    // TEMPORARY_UNAVAILABLE until expires_at, then AVAILABLE again.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string();
    let r = post(&a, "/replicas/bad/pfns", json!({"pfns": [pfn(&c, "t")], "state": "TEMPORARY_UNAVAILABLE", "reason": "maintenance", "expires_at": soon})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json(), json!([]), "nothing left undeclared");
    assert_eq!(
        state_at(&a, "decl", "t", "site-c").await.as_deref(),
        Some("TEMPORARY_UNAVAILABLE")
    );
    let t = get(&c, "/replicas/bad/states?state=T").await.lines();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0]["state"], "TEMPORARY_UNAVAILABLE");
    let again = post(
        &a,
        "/replicas/bad/pfns",
        json!({"pfns": [pfn(&c, "t")], "state": "TEMPORARY_UNAVAILABLE", "expires_at": soon}),
    )
    .await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(
        again.json(),
        json!([format!("{} Already declared", pfn(&c, "t"))])
    );
    eventually(Duration::from_secs(15), "T expired", || async {
        (state_at(&b, "decl", "t", "site-c").await.as_deref() == Some("AVAILABLE")).then_some(())
    })
    .await;
    assert!(get(&c, "/replicas/bad/states?state=T")
        .await
        .lines()
        .is_empty());
    // T only from A or T.
    call(
        &a,
        reqwest::Method::PUT,
        "/replicas",
        json!({"rse": "site-c", "files": [{"scope": "decl", "name": "t", "state": "U"}]}),
    )
    .await;
    call(
        &a,
        reqwest::Method::PUT,
        "/replicas",
        json!({"rse": "site-c", "files": [{"scope": "decl", "name": "t", "state": "T"}]}),
    )
    .await
    .assert_error(409, "UnsupportedOperation");
    let r = call(
        &a,
        reqwest::Method::PUT,
        "/replicas",
        json!({"rse": "site-c", "files": [{"scope": "decl", "name": "t", "state": "AVAILABLE"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Tombstone: the reaper deletes the copy at that RSE only.
    let r = post(
        &a,
        "/replicas/tombstone",
        json!({"replicas": [{"rse": "site-c", "scope": "decl", "name": "gone"}]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    eventually(
        Duration::from_secs(15),
        "tombstoned copy reaped",
        || async {
            let r = client()
                .head(c.url("/replicator/remote/buckets/decl/gone"))
                .send()
                .await
                .ok()?;
            (r.status() == 404).then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "listing without the reaped copy",
        || async {
            let a1 = get(&b, "/replicas/decl/gone").await;
            (rses_of(&a1.lines()[0]) == ["site-a", "site-b"]).then_some(())
        },
    )
    .await;
    post(
        &a,
        "/replicas/tombstone",
        json!({"replicas": [{"rse": "site-c", "scope": "decl", "name": "gone"}]}),
    )
    .await
    .assert_error(404, "ReplicaNotFound");

    // A locked copy refuses tombstones (423) and deletion; unlocked, DELETE goes through an order.
    let r = call(
        &a,
        reqwest::Method::PUT,
        "/replicas/",
        json!({"rse": "site-b", "files": [{"scope": "decl", "name": "kept", "lock_cnt": 1}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    post(
        &c,
        "/replicas/tombstone",
        json!({"replicas": [{"rse": "site-b", "scope": "decl", "name": "kept"}]}),
    )
    .await
    .assert_error(423, "ReplicaIsLocked");
    // The lock holds wherever the DELETE arrives: B itself, or A and C (forwarded to B).
    for site in [&b, &a, &c] {
        call(
            site,
            reqwest::Method::DELETE,
            "/replicas/",
            json!({"rse": "site-b", "files": [{"scope": "decl", "name": "kept"}]}),
        )
        .await
        .assert_error(423, "ReplicaIsLocked");
    }
    assert_eq!(
        client()
            .head(b.url("/replicator/remote/buckets/decl/kept"))
            .send()
            .await
            .unwrap()
            .status(),
        204,
        "the locked copy is still there"
    );
    call(&a, reqwest::Method::PUT, "/replicas/", json!({"rse": "site-b", "files": [{"scope": "decl", "name": "kept", "lock_cnt": 0, "state": "B"}]}))
        .await;
    eventually(
        Duration::from_secs(15),
        "BEING_DELETED copy reaped",
        || async {
            let r = client()
                .head(b.url("/replicator/remote/buckets/decl/kept"))
                .send()
                .await
                .ok()?;
            (r.status() == 404).then_some(())
        },
    )
    .await;
    let r = call(
        &a,
        reqwest::Method::DELETE,
        "/replicas/",
        json!({"rse": "site-c", "files": [{"scope": "decl", "name": "kept"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    eventually(
        Duration::from_secs(15),
        "deleted by site-c (forwarded)",
        || async {
            let r = client()
                .head(c.url("/replicator/remote/buckets/decl/kept"))
                .send()
                .await
                .ok()?;
            (r.status() == 404).then_some(())
        },
    )
    .await;
    eventually(Duration::from_secs(10), "only A's copy left", || async {
        let left = get(&b, "/replicas/decl/kept").await.lines();
        (rses_of(&left[0]) == ["site-a"]).then_some(())
    })
    .await;
    // The object itself is still readable where a copy is left.
    assert_eq!(
        client()
            .get(a.url("/cloudclonestore/decl/kept"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        &body[..]
    );
}

#[tokio::test]
async fn malformed_requests_get_rucio_errors_and_the_server_keeps_serving() {
    let a = Site::start("site-a", SITE);
    create_bucket(&a, "err").await;
    put_object(&a, "err", "f", data(10, 1)).await;
    let pfn = format!("{}/replicator/remote/buckets/err/f", a.url);
    let raw = |method: reqwest::Method, path: &str, body: &'static str| {
        reqwest::Client::new()
            .request(method, a.url(path))
            .header("content-type", "application/json")
            .body(body)
    };
    use reqwest::Method as M;
    send(raw(M::POST, "/replicas/list", "{not json"))
        .await
        .assert_error(400, "ValueError");
    send(raw(M::POST, "/replicas/", "[1, 2]"))
        .await
        .assert_error(400, "TypeError");
    post(&a, "/replicas/", json!({"files": []}))
        .await
        .assert_error(400, "KeyError");
    post(&a, "/replicas/", json!({"rse": "site-a"}))
        .await
        .assert_error(400, "KeyError");
    post(&a, "/replicas/", json!({"rse": "mars", "files": []}))
        .await
        .assert_error(404, "RSENotFound");
    post(
        &a,
        "/replicas/",
        json!({"rse": "site-a", "files": [{"scope": "err", "name": "f"}]}),
    )
    .await
    .assert_error(400, "InvalidObject");
    post(
        &a,
        "/replicas/",
        json!({"rse": "site-a", "files": [{"scope": "err", "name": "f", "bytes": 11}]}),
    )
    .await
    .assert_error(409, "FileConsistencyMismatch");
    post(
        &a,
        "/replicas/",
        json!({"rse": "site-a", "files": [{"scope": "nobucket", "name": "f", "bytes": 1}]}),
    )
    .await
    .assert_error(404, "ScopeNotFound");
    let ok = post(
        &a,
        "/replicas/",
        json!({"rse": "site-a", "files": [{"scope": "err", "name": "f", "bytes": 10}]}),
    )
    .await;
    assert_eq!(
        (ok.status, ok.text.as_str()),
        (201, "Created"),
        "registering an existing copy is skipped"
    );
    call(
        &a,
        M::PUT,
        "/replicas/",
        json!({"rse": "site-a", "files": [{"scope": "err", "name": "zz", "state": "A"}]}),
    )
    .await
    .assert_error(404, "ReplicaNotFound");
    call(
        &a,
        M::PUT,
        "/replicas/",
        json!({"rse": "site-a", "files": [{"scope": "err", "name": "f", "state": "Q"}]}),
    )
    .await
    .assert_error(400, "InvalidObject");
    call(
        &a,
        M::PUT,
        "/replicas/",
        json!({"rse": "site-a", "files": [{"scope": "err", "name": "f", "state": "C"}]}),
    )
    .await
    .assert_error(409, "UnsupportedOperation");
    call(
        &a,
        M::DELETE,
        "/replicas/",
        json!({"rse": "site-a", "files": [{"scope": "err", "name": "zz"}]}),
    )
    .await
    .assert_error(404, "ReplicaNotFound");
    post(&a, "/replicas/list", json!({"dids": [{"scope": "err"}]}))
        .await
        .assert_error(400, "InvalidObject");
    post(
        &a,
        "/replicas/list",
        json!({"dids": [{"scope": "err", "name": "f"}], "rse_expression": "x|"}),
    )
    .await
    .assert_error(400, "InvalidRSEExpression");
    post(&a, "/replicas/datasets_bulk", json!({"dids": []}))
        .await
        .assert_error(400, "ValueError");
    post(&a, "/replicas/datasets_bulk", json!({}))
        .await
        .assert_error(400, "KeyError");
    post(&a, "/replicas/dids", json!({"pfns": [pfn]}))
        .await
        .assert_error(400, "KeyError");
    post(
        &a,
        "/replicas/bad",
        json!({"replicas": [pfn, {"scope": "err", "name": "f", "rse": "site-a"}]}),
    )
    .await
    .assert_error(400, "InvalidType");
    post(
        &a,
        "/replicas/bad",
        json!({"replicas": [{"scope": "err", "name": "f", "rse": "mars"}]}),
    )
    .await
    .assert_error(404, "RSENotFound");
    post(
        &a,
        "/replicas/bad/pfns",
        json!({"pfns": [pfn], "state": "TEMPORARY_UNAVAILABLE"}),
    )
    .await
    .assert_error(400, "InputValidationError");
    post(
        &a,
        "/replicas/bad/pfns",
        json!({"pfns": [pfn], "state": "BAD", "expires_at": "2030-01-01T00:00:00.000000"}),
    )
    .await
    .assert_error(400, "InputValidationError");
    post(
        &a,
        "/replicas/bad/pfns",
        json!({"pfns": [pfn], "state": "GREAT"}),
    )
    .await
    .assert_error(400, "ValueError");
    post(
        &a,
        "/replicas/bad/pfns",
        json!({"pfns": [pfn], "state": "TEMPORARY_UNAVAILABLE", "expires_at": "tomorrow"}),
    )
    .await
    .assert_error(400, "ValueError");
    post(
        &a,
        "/replicas/bad/pfns",
        json!({"pfns": [pfn, pfn], "state": "SUSPICIOUS"}),
    )
    .await
    .assert_error(409, "Duplicate");
    let r = post(
        &a,
        "/replicas/bad/pfns",
        json!({"pfns": ["http://elsewhere/x"], "state": "BAD"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json(), json!(["http://elsewhere/x Unknown RSE"]));
    post(
        &a,
        "/replicas/tombstone",
        json!({"replicas": [{"scope": "err", "name": "f"}]}),
    )
    .await
    .assert_error(400, "KeyError");
    post(
        &a,
        "/replicas/tombstone",
        json!({"replicas": [{"rse": "site-a", "scope": "err", "name": "zz"}]}),
    )
    .await
    .assert_error(404, "ReplicaNotFound");
    get(&a, "/replicas/bad/states?state=NOPE")
        .await
        .assert_error(400, "ValueError");
    get(&a, "/replicas/bad/states?younger_than=yesterday")
        .await
        .assert_error(400, "ValueError");
    get(&a, "/replicas/bad/states?rse=mars")
        .await
        .assert_error(404, "RSENotFound");
    get(&a, "/replicas/bad/summary?from_date=2024-13-45")
        .await
        .assert_error(400, "ValueError");
    get(&a, "/replicas/suspicious?nattempts=many")
        .await
        .assert_error(400, "ValueError");
    get(&a, "/replicas/rse/mars")
        .await
        .assert_error(404, "RSENotFound");
    get(&a, "/replicas/list")
        .await
        .assert_error(405, "MethodNotAllowed");
    send(reqwest::Client::new().patch(a.url("/replicas/")))
        .await
        .assert_error(405, "MethodNotAllowed");
    get(&a, "/replicas/nothing-here")
        .await
        .assert_error(404, "NotFound");
    // BAD through bad/pfns, then again: not declared twice. With no other site the copy is LOST.
    let r = post(
        &a,
        "/replicas/bad/pfns",
        json!({"pfns": [pfn], "state": "BAD", "reason": "test"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    eventually(
        Duration::from_secs(15),
        "LOST without another copy",
        || async {
            let rows = get(&a, "/replicas/bad/states?state=LOST").await.lines();
            (rows.len() == 1).then_some(())
        },
    )
    .await;
    let r = post(
        &a,
        "/replicas/bad/pfns",
        json!({"pfns": [pfn], "state": "BAD"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json(), json!([format!("{pfn} Already declared")]));
    // Still serving.
    assert_eq!(reqwest::get(a.url("/healthz")).await.unwrap().status(), 200);
    let listing = post(
        &a,
        "/replicas/list",
        json!({"dids": [{"scope": "err", "name": "f"}], "all_states": true}),
    )
    .await;
    assert_eq!(listing.status, 200);
    assert_eq!(listing.lines()[0]["states"]["site-a"], "BAD");
}

/// Routes the stock client has beyond the seed: `POST /replicas/bad/dids` declares by DID at an
/// RSE (forwarded there) and answers the files not declared; `POST /replicas/quarantine` is
/// refused in Rucio's envelope; `.../datasets_vp` answers as Rucio without a Virtual Placement
/// service.
#[tokio::test]
async fn bad_dids_quarantine_and_datasets_vp() {
    let (a, b, _c) = three_sites().await;
    create_bucket(&a, "ddd").await;
    let body = data(20_000, 9);
    put_object(&a, "ddd", "x", body.clone()).await;
    available_everywhere(&a, "ddd", "x").await;

    // Asked at A for B's copies: B declares x (and repairs it), reports nope.
    let dids = json!([{"scope": "ddd", "name": "x"}, {"scope": "ddd", "name": "nope"}]);
    let r = post(
        &a,
        "/replicas/bad/dids",
        json!({"dids": dids, "rse": "site-b", "reason": "by did"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.json(), json!(["ddd:nope Unknown replica"]));
    eventually(Duration::from_secs(30), "B's copy declared", || async {
        let rows = get(&b, "/replicas/bad/states?rse=site-b").await.lines();
        rows.iter()
            .any(|r| r["name"] == "x" && r["reason"] == "by did")
            .then_some(())
    })
    .await;
    post(&a, "/replicas/bad/dids", json!({"dids": dids}))
        .await
        .assert_error(400, "KeyError");
    post(
        &a,
        "/replicas/bad/dids",
        json!({"dids": dids, "rse": "mars"}),
    )
    .await
    .assert_error(404, "RSENotFound");

    // Quarantine: nothing to do for an empty list, refused otherwise.
    let replicas = json!([{"path": "/ddd/dark-file"}]);
    let r = post(
        &a,
        "/replicas/quarantine",
        json!({"replicas": [], "rse": "site-a"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    post(
        &a,
        "/replicas/quarantine",
        json!({"replicas": replicas, "rse": "site-a"}),
    )
    .await
    .assert_error(409, "UnsupportedOperation");
    post(
        &a,
        "/replicas/quarantine",
        json!({"replicas": replicas, "rse": "mars"}),
    )
    .await
    .assert_error(404, "RSENotFound");
    get(&a, "/replicas/quarantine")
        .await
        .assert_error(405, "MethodNotAllowed");

    // datasets_vp: no Virtual Placement service, so Rucio's answer is ["other"].
    let r = get(&a, "/replicas/ddd/x/datasets_vp").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/x-json-stream");
    assert_eq!(r.lines(), vec![json!("other")]);
}

/// `POST /replicas/bad/pfns` declares each PFN where it can and answers the list of those it
/// did not (the seed); `GET /replicas/bad/states?list_pfns=true` lists PFNs as Rucio does;
/// `?schemes=` on `POST /replicas/list` filters the PFNs by scheme.
#[tokio::test]
async fn bad_pfns_list_pfns_and_schemes() {
    let (a, b, c) = three_sites().await;
    create_bucket(&a, "pfns").await;
    let body = data(20_000, 10);
    put_object(&a, "pfns", "x", body.clone()).await;
    available_everywhere(&a, "pfns", "x").await;
    let pfn = |site: &Site| format!("{}/replicator/remote/buckets/pfns/x", site.url);
    let unknown = format!("{}/replicator/remote/buckets/pfns/nope", b.url);

    // Asked at A: C's copy is forwarded to C and declared, B's unknown file and a foreign PFN
    // are reported, the request is not refused for them.
    let r = post(
        &a,
        "/replicas/bad/pfns",
        json!({"pfns": [pfn(&c), unknown.clone(), "http://elsewhere/x"], "state": "SUSPICIOUS", "reason": "slow"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/json");
    let mut listed: Vec<String> = serde_json::from_value(r.json()).unwrap();
    listed.sort();
    let mut want = vec![
        "http://elsewhere/x Unknown RSE".to_owned(),
        format!("{unknown} Unknown replica"),
    ];
    want.sort();
    assert_eq!(listed, want);

    // list_pfns: PFN strings. With rse, the declared copy there; without, every copy of the file.
    let at_c = get(
        &a,
        "/replicas/bad/states?state=SUSPICIOUS&rse=site-c&list_pfns=true",
    )
    .await;
    assert_eq!(at_c.status, 200, "{}", at_c.text);
    assert_eq!(at_c.lines(), vec![json!(pfn(&c))]);
    let mut all: Vec<String> = get(&a, "/replicas/bad/states?state=SUSPICIOUS&list_pfns=true")
        .await
        .lines()
        .into_iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    all.sort();
    let mut every = vec![pfn(&a), pfn(&b), pfn(&c)];
    every.sort();
    assert_eq!(all, every);
    let rows = get(&a, "/replicas/bad/states?state=SUSPICIOUS")
        .await
        .lines();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["rse"], "site-c");

    // schemes: as a query parameter of POST /replicas/list too; the body's wins.
    let did = json!({"dids": [{"scope": "pfns", "name": "x"}]});
    let pfns_of = |lines: Vec<Value>| lines[0]["pfns"].as_object().unwrap().len();
    let r = post(&a, "/replicas/list?schemes=https", did.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(pfns_of(r.lines()), 0, "no https copy");
    let r = post(&a, "/replicas/list?schemes=https,http", did.clone()).await;
    assert_eq!(pfns_of(r.lines()), 3);
    let body_wins = json!({"dids": [{"scope": "pfns", "name": "x"}], "schemes": ["http"]});
    let r = post(&a, "/replicas/list?schemes=https", body_wins).await;
    assert_eq!(pfns_of(r.lines()), 3);
}
