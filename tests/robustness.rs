//! Robustness: bad input answered with clear 4xx errors and nothing half-written left visible,
//! uploads cut short (by the client or by kill -9), and a graceful drain on SIGTERM.

mod common;
use common::*;

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BUCKET: &str = "bucket-1";
const ALL_STATUSES: &str =
    r#"["UNKNOWN","UPLOAD","READY","ERR_UPL","DELETING","DELETED","ERR_DEL"]"#;
const UPLOAD_MISMATCHES: &str = "mirrorgate_hash_mismatches_total{source=\"upload\"}";
const WAIT: Duration = Duration::from_secs(10);

fn object_url(site: &Site, key: &str) -> String {
    site.url(&format!("/cloudclonestore/{BUCKET}/{key}"))
}

fn tmp_files(site: &Site) -> Vec<std::fs::Metadata> {
    std::fs::read_dir(site.dir.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap())
        .collect()
}

async fn head_type(site: &Site, key: &str) -> String {
    let r = client().head(object_url(site, key)).send().await.unwrap();
    r.headers()["x-clonecloudstore-type"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Every object row of the bucket whatever its status, as (name, status).
async fn all_rows(site: &Site) -> Vec<(String, String)> {
    let r = client()
        .put(site.url(&format!("/cloudclonestore/{BUCKET}")))
        .header("x-clonecloudstore-statuses", ALL_STATUSES)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text()
        .await
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["name"].as_str().unwrap().into(),
                v["status"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// Sends an upload's head over raw TCP, promising `declared` bytes, then `sent` bytes of body.
async fn partial_upload(site: &Site, key: &str, declared: usize, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(&site.addr).await.unwrap();
    let head = format!(
        "POST /cloudclonestore/{BUCKET}/{key} HTTP/1.1\r\nhost: {}\r\nx-clonecloudstore-client-id: {CLIENT}\r\ncontent-length: {declared}\r\n\r\n",
        site.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&data(sent, 3)).await.unwrap();
    s
}

/// Waits until the server has registered the upload and staged some bytes in its tmp dir.
async fn wait_upload_in_progress(site: &Site, key: &str) {
    eventually(WAIT, "upload staged in tmp", || async {
        let staged = tmp_files(site).iter().any(|m| m.len() > 0);
        let registered = all_rows(site)
            .await
            .contains(&(key.into(), "UPLOAD".into()));
        (staged && registered).then_some(())
    })
    .await;
}

/// The interrupted upload has left nothing: no row, no temporary, the name is free.
async fn assert_forgotten(site: &Site, key: &str) {
    eventually(WAIT, "interrupted upload forgotten", || async {
        let gone = !all_rows(site).await.iter().any(|(n, _)| n == key);
        (gone && tmp_files(site).is_empty()).then_some(())
    })
    .await;
    assert_eq!(head_type(site, key).await, "NONE");
    let again = client()
        .post(object_url(site, key))
        .body("fresh")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 201, "the name is free again");
    let got = client().get(object_url(site, key)).send().await.unwrap();
    assert_eq!(got.text().await.unwrap(), "fresh");
}

struct BadRequest {
    what: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
}

fn bad(
    what: &'static str,
    path: &str,
    headers: &[(&'static str, &str)],
    body: &[u8],
    status: u16,
) -> BadRequest {
    BadRequest {
        what,
        method: Method::POST,
        path: format!("/cloudclonestore/{path}"),
        headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        body: body.to_vec(),
        status,
    }
}

fn bad_requests() -> Vec<BadRequest> {
    let body = b"0123456789";
    let other_hash = ccs_hash(b"something else");
    let long_name = format!("{BUCKET}/{}", "a".repeat(1025));
    let long_bucket = "b".repeat(64);
    let mut cases = vec![
        bad("bucket name too short", "ab", &[], b"", 400),
        bad("bucket name upper case", "Bucket-2", &[], b"", 400),
        bad("bucket name underscore", "bucket_2", &[], b"", 400),
        bad("bucket name too long", &long_bucket, &[], b"", 400),
        bad(
            "object name with space",
            &format!("{BUCKET}/sp%20ace"),
            &[],
            body,
            400,
        ),
        bad(
            "object name non-ASCII",
            &format!("{BUCKET}/%C3%A9t%C3%A9"),
            &[],
            body,
            400,
        ),
        bad(
            "object name with NUL",
            &format!("{BUCKET}/a%00b"),
            &[],
            body,
            400,
        ),
        bad("object name too long", &long_name, &[], body, 400),
        bad("object in invalid bucket", "BAD/obj", &[], body, 400),
        bad(
            "metadata not JSON",
            &format!("{BUCKET}/obj"),
            &[("x-clonecloudstore-metadata", "{oops")],
            body,
            400,
        ),
        bad(
            "metadata not strings",
            &format!("{BUCKET}/obj"),
            &[("x-clonecloudstore-metadata", r#"{"k":1}"#)],
            body,
            400,
        ),
        bad(
            "metadata bad key",
            &format!("{BUCKET}/obj"),
            &[("x-clonecloudstore-metadata", r#"{"1k":"v"}"#)],
            body,
            400,
        ),
        bad(
            "expires not a date",
            &format!("{BUCKET}/obj"),
            &[("x-clonecloudstore-expires", "next week")],
            body,
            400,
        ),
        bad(
            "size negative",
            &format!("{BUCKET}/obj"),
            &[("x-clonecloudstore-size", "-1")],
            body,
            400,
        ),
        bad(
            "size not a number",
            &format!("{BUCKET}/obj"),
            &[("x-clonecloudstore-size", "ten")],
            body,
            400,
        ),
        bad(
            "size smaller than body",
            &format!("{BUCKET}/obj"),
            &[("x-clonecloudstore-size", "5")],
            body,
            400,
        ),
        bad(
            "size larger than body",
            &format!("{BUCKET}/obj"),
            &[("x-clonecloudstore-size", "11")],
            body,
            400,
        ),
        bad(
            "hash malformed",
            &format!("{BUCKET}/obj"),
            &[("x-clonecloudstore-hash", "abc")],
            body,
            400,
        ),
        bad(
            "hash of other content",
            &format!("{BUCKET}/obj"),
            &[("x-clonecloudstore-hash", &other_hash)],
            body,
            400,
        ),
        bad(
            "unsupported encoding",
            &format!("{BUCKET}/obj"),
            &[("content-encoding", "gzip")],
            body,
            400,
        ),
        bad(
            "missing client id",
            &format!("{BUCKET}/obj"),
            &[("x-clonecloudstore-client-id", "")],
            body,
            400,
        ),
    ];
    for path in ["/nowhere", "/cloudclonestorex", "/administration/unknown"] {
        cases.push(on(Method::GET, "unknown route", path, 404));
    }
    for method in [Method::GET, Method::HEAD, Method::DELETE] {
        for path in [
            "/cloudclonestore/BAD/obj",
            "/cloudclonestore/bucket-1/sp%20ace",
        ] {
            cases.push(on(
                method.clone(),
                "invalid name on a read or delete",
                path,
                400,
            ));
        }
    }
    cases
}

fn on(method: Method, what: &'static str, path: &str, status: u16) -> BadRequest {
    BadRequest {
        what,
        method,
        path: path.into(),
        headers: vec![],
        body: vec![],
        status,
    }
}

async fn send_bad(site: &Site, case: &BadRequest) -> Response {
    let mut req = client()
        .request(case.method.clone(), site.url(&case.path))
        .body(case.body.clone());
    for (k, v) in &case.headers {
        req = req.header(*k, v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn bad_input_is_refused_and_leaves_nothing() {
    let site = Site::start("site-a", "");
    create_bucket(&site, BUCKET).await;
    put_object(&site, BUCKET, "keep", b"kept".to_vec()).await;
    let mismatches = site.metric(UPLOAD_MISMATCHES).await;
    for case in bad_requests() {
        let r = send_bad(&site, &case).await;
        assert_eq!(r.status().as_u16(), case.status, "{}", case.what);
        let error = r.headers().get("x-clonecloudstore-error");
        assert!(
            error.is_some_and(|e| !e.is_empty()),
            "{}: no error header",
            case.what
        );
        assert!(
            r.headers().contains_key("x-clonecloudstore-module"),
            "{}",
            case.what
        );
    }
    assert!(
        site.metric(UPLOAD_MISMATCHES).await > mismatches,
        "hash mismatch counted"
    );

    // Nothing half-written is visible, and the server still serves.
    assert_eq!(
        all_rows(&site).await,
        [("keep".to_string(), "READY".to_string())]
    );
    assert_eq!(head_type(&site, "obj").await, "NONE");
    assert!(tmp_files(&site).is_empty());
    let buckets: Vec<Value> = client()
        .get(site.url("/cloudclonestore"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(buckets.len(), 1, "no bucket was created by bad requests");
    let kept = client()
        .get(object_url(&site, "keep"))
        .send()
        .await
        .unwrap();
    assert_eq!(kept.text().await.unwrap(), "kept");
    // A correct upload of the name the bad ones used works.
    put_object(&site, BUCKET, "obj", b"0123456789".to_vec()).await;
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let site = Site::start("site-a", "");
    let big = "x".repeat(100 * 1024);
    let r = client()
        .get(site.url("/cloudclonestore"))
        .header("x-padding", big)
        .send()
        .await;
    // The server may close before the client has written everything; it must never accept it.
    if let Ok(r) = r {
        assert_eq!(r.status(), 431);
    }
    assert_eq!(raw_request_status(&site, &"y".repeat(70 * 1024)).await, 431);
    let health = reqwest::get(site.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200, "the server keeps serving");
}

/// GET with one padding header over raw TCP; answers the reply's status.
async fn raw_request_status(site: &Site, padding: &str) -> u16 {
    let mut s = TcpStream::connect(&site.addr).await.unwrap();
    let req = format!(
        "GET /cloudclonestore HTTP/1.1\r\nhost: x\r\nx-clonecloudstore-client-id: {CLIENT}\r\nx-padding: {padding}\r\n\r\n"
    );
    let _ = s.write_all(req.as_bytes()).await;
    read_status(&mut s).await
}

#[tokio::test]
async fn an_upload_in_progress_blocks_its_name_until_cut_short() {
    let site = Site::start("site-a", "");
    create_bucket(&site, BUCKET).await;
    let socket = partial_upload(&site, "busy", 8 << 20, 2 << 20).await;
    wait_upload_in_progress(&site, "busy").await;

    let second = client()
        .post(object_url(&site, "busy"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 406, "object already in creation");
    assert!(second.headers().contains_key("x-clonecloudstore-error"));
    let delete = client()
        .delete(object_url(&site, "busy"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 409, "an upload cannot be deleted");
    let get = client()
        .get(object_url(&site, "busy"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 404, "an unfinished object cannot be read");
    assert_eq!(head_type(&site, "busy").await, "NONE");
    let listed = client()
        .put(site.url(&format!("/cloudclonestore/{BUCKET}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.text().await.unwrap(),
        "",
        "default listing shows READY objects only"
    );

    drop(socket); // the client goes away mid-body
    assert_forgotten(&site, "busy").await;
}

#[tokio::test]
async fn truncated_uploads_leave_nothing() {
    let site = Site::start("site-a", "");
    create_bucket(&site, BUCKET).await;

    let socket = partial_upload(&site, "cut", 4 << 20, (2 << 20) + 77).await;
    wait_upload_in_progress(&site, "cut").await;
    drop(socket);
    assert_forgotten(&site, "cut").await;

    // Same with a chunked body cut inside a chunk.
    let mut s = TcpStream::connect(&site.addr).await.unwrap();
    let head = format!(
        "POST /cloudclonestore/{BUCKET}/chunked HTTP/1.1\r\nhost: x\r\nx-clonecloudstore-client-id: {CLIENT}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..3 {
        s.write_all(format!("{:x}\r\n", 1 << 20).as_bytes())
            .await
            .unwrap();
        s.write_all(&data(1 << 20, 5)).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s.write_all(b"100000\r\npartial").await.unwrap();
    wait_upload_in_progress(&site, "chunked").await;
    drop(s);
    assert_forgotten(&site, "chunked").await;
}

#[tokio::test]
async fn restart_after_kill9_keeps_ready_objects_and_forgets_unfinished_ones() {
    let mut site = Site::start("site-a", "");
    create_bucket(&site, BUCKET).await;
    let objects: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("dir/obj-{i}"), data(300_000 + i, i as u64)))
        .collect();
    for (key, body) in &objects {
        put_object(&site, BUCKET, key, body.clone()).await;
    }
    put_object(&site, BUCKET, "deleted", b"bye".to_vec()).await;
    let r = client()
        .delete(object_url(&site, "deleted"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let socket = partial_upload(&site, "unfinished", 16 << 20, 3 << 20).await;
    wait_upload_in_progress(&site, "unfinished").await;
    site.restart(); // kill -9 mid-body, then start again on the same data
    drop(socket);

    for (key, body) in &objects {
        let got = client().get(object_url(&site, key)).send().await.unwrap();
        assert_eq!(got.status(), 200, "{key} survives");
        assert_eq!(got.bytes().await.unwrap(), &body[..], "{key} intact");
    }
    assert_eq!(head_type(&site, "deleted").await, "NONE");
    assert!(tmp_files(&site).is_empty(), "temporaries swept at startup");
    let rows = all_rows(&site).await;
    assert!(
        !rows.iter().any(|(n, _)| n == "unfinished"),
        "unfinished upload forgotten: {rows:?}"
    );
    assert_forgotten(&site, "unfinished").await;
}

/// Reads an HTTP/1.1 reply off a raw socket until the server closes it; answers the status.
async fn read_status(socket: &mut TcpStream) -> u16 {
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(WAIT, socket.read_to_end(&mut reply)).await;
    let text = String::from_utf8_lossy(&reply);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn sigterm_drains_streams_in_flight() {
    let site = Site::start("site-a", "");
    create_bucket(&site, BUCKET).await;
    let body = data(64 << 20, 9);
    put_object(&site, BUCKET, "big", body.clone()).await;
    let (addr, log) = (site.addr.clone(), site.log.clone());

    // A download that has started, and an upload whose body is half sent.
    let r = client().get(object_url(&site, "big")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut hasher = Sha256::new();
    let mut received = 0usize;
    let first = stream.next().await.unwrap().unwrap();
    hasher.update(&first);
    received += first.len();
    let (declared, sent) = (4 << 20, 2 << 20);
    let mut upload = partial_upload(&site, "late", declared, sent).await;
    wait_upload_in_progress(&site, "late").await;

    let mut site = site;
    let exit = tokio::task::spawn_blocking(move || {
        let status = site.terminate();
        (site, status)
    });
    // The server stops accepting while our streams are still open.
    eventually(WAIT, "shutdown started", || async {
        let draining = log.lock().unwrap().contains("shutting down");
        let refused = TcpStream::connect(&addr).await.is_err();
        (draining && refused).then_some(())
    })
    .await;
    assert!(received < body.len(), "the download is still in flight");
    assert!(!exit.is_finished(), "the process waits for its streams");

    upload.write_all(&data(declared, 3)[sent..]).await.unwrap();
    assert_eq!(
        read_status(&mut upload).await,
        201,
        "the upload completes during the drain"
    );
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("the download completes during the drain");
        hasher.update(&chunk);
        received += chunk.len();
    }
    assert_eq!(received, body.len());
    assert_eq!(
        mirrorgate::model::hash::encode(&hasher.finalize()),
        ccs_hash(&body)
    );
    let (mut site, status) = tokio::time::timeout(WAIT, exit)
        .await
        .expect("the process exits")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");

    // The upload finished during the drain is there after a restart.
    site.restart();
    let late = client()
        .get(object_url(&site, "late"))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 200);
    assert_eq!(late.bytes().await.unwrap(), data(declared, 3));
}
