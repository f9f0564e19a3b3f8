//! The CCS accessor API (`/cloudclonestore`) and the administration API
//! (`/administration/topologies`, `/administration/ownerships`): every route, its success and
//! error statuses, and the common headers.

mod common;
use common::*;

use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

const OP_ID: &str = "x-clonecloudstore-op-id";
const MODULE: &str = "x-clonecloudstore-module";
const ERROR: &str = "x-clonecloudstore-error";
const TYPE: &str = "x-clonecloudstore-type";
const OTHER: &str = "client-2";

/// Listing filter headers.
type Filter = Vec<(&'static str, String)>;

fn ccs(site: &Site, path: &str) -> String {
    site.url(&format!("/cloudclonestore{path}"))
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Asserts a CCS error: the status, the error header, and the common headers.
fn assert_error(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status().as_u16(), status, "{what}");
    assert!(
        header(r, ERROR).is_some_and(|e| !e.is_empty()),
        "{what}: x-clonecloudstore-error missing"
    );
    assert!(header(r, OP_ID).is_some(), "{what}: op-id missing");
    assert!(header(r, MODULE).is_some(), "{what}: module missing");
}

/// Sends a request; every answer, success or error, carries an op-id and the module.
async fn send(client: &reqwest::Client, method: Method, url: String) -> Response {
    let what = format!("{method} {url}");
    let r = client.request(method, url).send().await.unwrap();
    assert!(
        header(&r, OP_ID).is_some_and(|v| !v.is_empty()),
        "{what}: op-id"
    );
    assert!(header(&r, MODULE).is_some(), "{what}: module");
    r
}

async fn head_type(client: &reqwest::Client, url: String) -> (u16, String) {
    let r = client.head(url).send().await.unwrap();
    let kind = header(&r, TYPE).unwrap_or("").to_owned();
    (r.status().as_u16(), kind)
}

/// Names listed by `PUT /cloudclonestore/{bucket}` with the given filter headers.
async fn list_names(site: &Site, bucket: &str, filter: &[(&str, String)]) -> Vec<String> {
    let mut req = client().put(ccs(site, &format!("/{bucket}")));
    for (k, v) in filter {
        req = req.header(*k, v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "listing with {filter:?}");
    assert_eq!(header(&r, "content-type"), Some("application/octet-stream"));
    ndjson_names(&r.bytes().await.unwrap())
}

fn ndjson_names(body: &[u8]) -> Vec<String> {
    std::str::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["name"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn upload(
    site: &Site,
    bucket: &str,
    key: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> Response {
    let mut req = client()
        .post(ccs(site, &format!("/{bucket}/{key}")))
        .body(body.to_vec());
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn common_headers_on_every_answer() {
    let site = Site::start("site-a", "");
    let c = client();
    let echoed = c
        .get(ccs(&site, ""))
        .header(OP_ID, "my-op-1")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.status(), 200);
    assert_eq!(header(&echoed, OP_ID), Some("my-op-1"));
    assert_eq!(header(&echoed, MODULE), Some("ACCESSOR"));
    assert!(header(&echoed, ERROR).is_none());

    let failed = c
        .get(ccs(&site, "/no-such-bucket"))
        .header(OP_ID, "my-op-2")
        .send()
        .await
        .unwrap();
    assert_error(&failed, 404, "missing bucket");
    assert_eq!(header(&failed, OP_ID), Some("my-op-2"));

    let first = send(&c, Method::GET, ccs(&site, "")).await;
    let second = send(&c, Method::GET, ccs(&site, "")).await;
    let (a, b) = (
        header(&first, OP_ID).unwrap(),
        header(&second, OP_ID).unwrap(),
    );
    assert!(
        !a.is_empty() && a != b,
        "generated op-ids must be fresh: {a} {b}"
    );

    let admin = send(&c, Method::GET, site.url("/administration/topologies")).await;
    assert_eq!(header(&admin, MODULE), Some("ADMINISTRATION"));
    assert!(header(&admin, OP_ID).is_some());

    let unknown = send(&c, Method::GET, site.url("/no/such/route")).await;
    assert_error(&unknown, 404, "unknown route");
    let wrong_method = send(&c, Method::PATCH, ccs(&site, "/bucket-1")).await;
    assert_error(&wrong_method, 405, "method not allowed");

    // An op-id that cannot be one (too long) is replaced by a generated one.
    let long = "x".repeat(500);
    let replaced = c
        .get(ccs(&site, ""))
        .header(OP_ID, &long)
        .send()
        .await
        .unwrap();
    assert!(header(&replaced, OP_ID).is_some_and(|v| !v.is_empty() && v != long));
}

#[tokio::test]
async fn every_accessor_route_requires_a_client_id() {
    let site = Site::start("site-a", "");
    create_bucket(&site, "bucket-1").await;
    put_object(&site, "bucket-1", "obj", b"x".to_vec()).await;
    let anonymous = reqwest::Client::new();
    let routes = [
        (Method::GET, ""),
        (Method::POST, "/bucket-2"),
        (Method::GET, "/bucket-1"),
        (Method::HEAD, "/bucket-1"),
        (Method::PUT, "/bucket-1"),
        (Method::DELETE, "/bucket-1"),
        (Method::POST, "/bucket-1/new"),
        (Method::GET, "/bucket-1/obj"),
        (Method::HEAD, "/bucket-1/obj"),
        (Method::DELETE, "/bucket-1/obj"),
    ];
    for (method, path) in routes {
        let what = format!("{method} {path} without client id");
        let r = anonymous
            .request(method.clone(), ccs(&site, path))
            .header(OP_ID, "anon-op")
            .send()
            .await
            .unwrap();
        assert_error(&r, 400, &what);
        assert_eq!(header(&r, OP_ID), Some("anon-op"), "{what}");
        assert_eq!(header(&r, MODULE), Some("ACCESSOR"), "{what}");
    }
    // Nothing happened: the object and bucket are intact, bucket-2 was not created.
    assert_eq!(
        head_type(&client(), ccs(&site, "/bucket-1/obj")).await.1,
        "OBJECT"
    );
    assert_eq!(head_type(&client(), ccs(&site, "/bucket-2")).await.0, 404);
}

#[tokio::test]
async fn bucket_lifecycle() {
    let site = Site::start("site-a", "");
    let c = client();
    let created = send(&c, Method::POST, ccs(&site, "/bucket-1")).await;
    assert_eq!(created.status(), 201);
    let b: Value = created.json().await.unwrap();
    assert_eq!(b["name"], "bucket-1");
    assert_eq!(b["clientId"], CLIENT);
    assert_eq!(b["site"], "site-a");
    assert_eq!(b["status"], "READY");
    assert!(b["creation"].as_str().is_some_and(|s| s.ends_with('Z')));

    assert_error(
        &send(&c, Method::POST, ccs(&site, "/bucket-1")).await,
        409,
        "bucket exists",
    );
    let other = client_as(OTHER);
    assert_error(
        &send(&other, Method::POST, ccs(&site, "/bucket-1")).await,
        409,
        "exists for another client",
    );
    assert_error(
        &send(&c, Method::POST, ccs(&site, "/Bad_Name")).await,
        400,
        "invalid name",
    );
    assert_error(
        &send(&c, Method::GET, ccs(&site, "/bucket-9")).await,
        404,
        "missing bucket",
    );

    let got = send(&c, Method::GET, ccs(&site, "/bucket-1")).await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.json::<Value>().await.unwrap()["name"], "bucket-1");
    assert_eq!(
        head_type(&c, ccs(&site, "/bucket-1")).await,
        (204, "BUCKET".into())
    );
    assert_eq!(
        head_type(&c, ccs(&site, "/bucket-9")).await,
        (404, "NONE".into())
    );
    assert_eq!(bucket_names(&c, &site).await, ["bucket-1"]);
    assert!(
        bucket_names(&other, &site).await.is_empty(),
        "other client sees no bucket"
    );

    put_object(&site, "bucket-1", "obj", b"data".to_vec()).await;
    assert_error(
        &send(&c, Method::DELETE, ccs(&site, "/bucket-1")).await,
        406,
        "bucket not empty",
    );
    assert_eq!(
        send(&c, Method::DELETE, ccs(&site, "/bucket-1/obj"))
            .await
            .status(),
        204
    );
    assert_eq!(
        send(&c, Method::DELETE, ccs(&site, "/bucket-1"))
            .await
            .status(),
        204
    );

    assert_error(
        &send(&c, Method::GET, ccs(&site, "/bucket-1")).await,
        410,
        "deleted bucket",
    );
    assert_error(
        &send(&c, Method::DELETE, ccs(&site, "/bucket-1")).await,
        410,
        "deleted twice",
    );
    assert_error(
        &send(&c, Method::PUT, ccs(&site, "/bucket-1")).await,
        410,
        "list deleted bucket",
    );
    assert_error(
        &upload(&site, "bucket-1", "obj", b"x", &[]).await,
        410,
        "write into deleted bucket",
    );
    assert_eq!(head_type(&c, ccs(&site, "/bucket-1")).await.1, "NONE");
    assert!(bucket_names(&c, &site).await.is_empty());

    // A deleted bucket's name can be used again, and starts empty.
    assert_eq!(
        send(&c, Method::POST, ccs(&site, "/bucket-1"))
            .await
            .status(),
        201
    );
    assert!(list_names(&site, "bucket-1", &[]).await.is_empty());
}

async fn bucket_names(c: &reqwest::Client, site: &Site) -> Vec<String> {
    let r = send(c, Method::GET, ccs(site, "")).await;
    assert_eq!(r.status(), 200);
    let v: Vec<Value> = r.json().await.unwrap();
    v.iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn object_lifecycle_and_headers() {
    let site = Site::start("site-a", "");
    create_bucket(&site, "bucket-1").await;
    let c = client();
    let body = data(100_000, 1);
    let hash = ccs_hash(&body);
    let url = ccs(&site, "/bucket-1/dir/sub/file.bin");
    let created = upload(
        &site,
        "bucket-1",
        "dir/sub/file.bin",
        &body,
        &[
            ("x-clonecloudstore-size", "100000"),
            ("x-clonecloudstore-hash", &hash),
            (
                "x-clonecloudstore-metadata",
                r#"{"owner":"alice","note":"été"}"#,
            ),
            ("x-clonecloudstore-expires", "2040-01-02T03:04:05.678Z"),
        ],
    )
    .await;
    assert_eq!(created.status(), 201);
    let obj: Value = created.json().await.unwrap();
    assert_eq!(obj["name"], "dir/sub/file.bin");
    assert_eq!(obj["bucket"], "bucket-1");
    assert_eq!(obj["size"], 100_000);
    assert_eq!(obj["hash"], hash.as_str());
    assert_eq!(obj["status"], "READY");
    assert_eq!(obj["site"], "site-a");
    assert_eq!(obj["metadata"], json!({"owner": "alice", "note": "été"}));
    assert_eq!(obj["expires"], "2040-01-02T03:04:05.678Z");

    assert_error(
        &upload(&site, "bucket-1", "dir/sub/file.bin", b"again", &[]).await,
        409,
        "object exists",
    );
    assert_error(
        &upload(&site, "bucket-9", "x", b"x", &[]).await,
        404,
        "missing bucket",
    );

    let got = c.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_object_headers(&got, &obj);
    assert_eq!(got.content_length(), Some(100_000));
    assert_eq!(
        header(&got, "content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(&got.bytes().await.unwrap()[..], &body[..]);

    let meta = c
        .get(&url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(meta.status(), 200);
    assert!(header(&meta, "content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(meta.json::<Value>().await.unwrap(), obj);

    let head = c.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 204);
    assert_eq!(header(&head, TYPE), Some("OBJECT"));
    assert_object_headers(&head, &obj);
    for dir in ["/bucket-1/dir", "/bucket-1/dir/", "/bucket-1/dir/sub"] {
        assert_eq!(
            head_type(&c, ccs(&site, dir)).await,
            (204, "DIRECTORY".into()),
            "{dir}"
        );
    }
    for none in ["/bucket-1/di", "/bucket-1/dir/sub/file", "/bucket-9/x"] {
        assert_eq!(
            head_type(&c, ccs(&site, none)).await,
            (404, "NONE".into()),
            "{none}"
        );
    }
    assert_error(
        &send(&c, Method::GET, ccs(&site, "/bucket-1/missing")).await,
        404,
        "missing object",
    );

    assert_eq!(send(&c, Method::DELETE, url.clone()).await.status(), 204);
    assert_error(
        &send(&c, Method::GET, url.clone()).await,
        404,
        "deleted object",
    );
    assert_eq!(head_type(&c, url.clone()).await, (404, "NONE".into()));
    assert_error(
        &send(&c, Method::DELETE, url.clone()).await,
        410,
        "deleted twice",
    );
    assert_error(
        &send(&c, Method::DELETE, ccs(&site, "/bucket-1/missing")).await,
        404,
        "delete missing",
    );
    assert!(list_names(&site, "bucket-1", &[]).await.is_empty());

    // The name is free again once deleted.
    assert_eq!(
        upload(&site, "bucket-1", "dir/sub/file.bin", b"v2", &[])
            .await
            .status(),
        201
    );
    assert_eq!(
        &c.get(&url).send().await.unwrap().bytes().await.unwrap()[..],
        b"v2"
    );
}

/// Every `x-clonecloudstore-*` object header matches the object's JSON.
fn assert_object_headers(r: &Response, obj: &Value) {
    for field in [
        "id", "site", "bucket", "name", "hash", "status", "creation", "expires",
    ] {
        assert_eq!(
            header(r, &format!("x-clonecloudstore-{field}")),
            obj[field].as_str(),
            "header {field}"
        );
    }
    assert_eq!(
        header(r, "x-clonecloudstore-size"),
        Some(obj["size"].to_string().as_str())
    );
    let metadata: Value =
        serde_json::from_str(header(r, "x-clonecloudstore-metadata").unwrap()).unwrap();
    assert_eq!(metadata, obj["metadata"]);
}

#[tokio::test]
async fn listing_filters() {
    let site = Site::start("site-a", "");
    create_bucket(&site, "bucket-1").await;
    let first = upload(
        &site,
        "bucket-1",
        "a/1",
        &[1; 10],
        &[
            ("x-clonecloudstore-metadata", r#"{"k":"v1","x":"y"}"#),
            ("x-clonecloudstore-expires", "2040-01-01T00:00:00Z"),
        ],
    )
    .await;
    let first_creation = creation_ms(first).await;
    // Creation times are in milliseconds: make sure the next objects are strictly later.
    eventually(
        std::time::Duration::from_secs(2),
        "clock moves on",
        || async { (chrono::Utc::now().timestamp_millis() > first_creation + 2).then_some(()) },
    )
    .await;
    let second = upload(
        &site,
        "bucket-1",
        "a/2",
        &[2; 20],
        &[
            ("x-clonecloudstore-metadata", r#"{"k":"v2"}"#),
            ("x-clonecloudstore-expires", "2041-01-01T00:00:00Z"),
        ],
    )
    .await;
    let second_creation = creation_ms(second).await;
    assert_eq!(
        upload(&site, "bucket-1", "b/3", &[3; 30], &[])
            .await
            .status(),
        201
    );
    put_object(&site, "bucket-1", "b/gone", vec![4; 40]).await;
    let del = client()
        .delete(ccs(&site, "/bucket-1/b/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);

    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let cases: Vec<(Filter, Vec<&str>)> = vec![
        (vec![], vec!["a/1", "a/2", "b/3"]),
        (
            vec![("x-clonecloudstore-namePrefix", "a/".into())],
            vec!["a/1", "a/2"],
        ),
        (vec![("x-clonecloudstore-sizeLT", "20".into())], vec!["a/1"]),
        (
            vec![("x-clonecloudstore-sizeGT", "10".into())],
            vec!["a/2", "b/3"],
        ),
        (
            vec![("x-clonecloudstore-metadataEq", r#"{"k":"v2"}"#.into())],
            vec!["a/2"],
        ),
        (
            vec![(
                "x-clonecloudstore-metadataEq",
                r#"{"k":"v1","x":"y"}"#.into(),
            )],
            vec!["a/1"],
        ),
        (
            vec![(
                "x-clonecloudstore-expiresBefore",
                "2040-06-01T00:00:00Z".into(),
            )],
            vec!["a/1"],
        ),
        (
            vec![(
                "x-clonecloudstore-expiresAfter",
                "2040-06-01T00:00:00Z".into(),
            )],
            vec!["a/2"],
        ),
        (
            vec![("x-clonecloudstore-creationBefore", time(first_creation + 1))],
            vec!["a/1"],
        ),
        (
            vec![("x-clonecloudstore-creationAfter", time(second_creation - 1))],
            vec!["a/2", "b/3"],
        ),
        (
            vec![("x-clonecloudstore-statuses", r#"["DELETED"]"#.into())],
            vec!["b/gone"],
        ),
        (
            vec![(
                "x-clonecloudstore-statuses",
                r#"["READY","DELETED"]"#.into(),
            )],
            vec!["a/1", "a/2", "b/3", "b/gone"],
        ),
        (
            vec![("x-clonecloudstore-statuses", r#"["UPLOAD"]"#.into())],
            vec![],
        ),
        (
            vec![
                ("x-clonecloudstore-namePrefix", "a/".into()),
                ("x-clonecloudstore-sizeGT", "15".into()),
            ],
            vec!["a/2"],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            list_names(&site, "bucket-1", &filter).await,
            expected,
            "filter {filter:?}"
        );
    }
    for bad in [
        ("x-clonecloudstore-sizeLT", "many"),
        ("x-clonecloudstore-creationBefore", "yesterday"),
        ("x-clonecloudstore-statuses", r#"["SLEEPING"]"#),
        ("x-clonecloudstore-metadataEq", "not json"),
    ] {
        let r = client()
            .put(ccs(&site, "/bucket-1"))
            .header(bad.0, bad.1)
            .send()
            .await
            .unwrap();
        assert_error(&r, 400, &format!("bad filter {bad:?}"));
    }
    assert_error(
        &send(&client(), Method::PUT, ccs(&site, "/bucket-9")).await,
        404,
        "list missing bucket",
    );
}

async fn creation_ms(r: Response) -> i64 {
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    chrono::DateTime::parse_from_rfc3339(v["creation"].as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// Uploads one object per name (its name as content), `parallel` uploads at a time.
async fn upload_in_parallel(site: &Site, names: &[String], parallel: usize) {
    let uploads = names
        .chunks(names.len().div_ceil(parallel))
        .map(|batch| async move {
            for name in batch {
                put_object(site, "bucket-1", name, name.as_bytes().to_vec()).await;
            }
        });
    futures::future::join_all(uploads).await;
}

#[tokio::test]
async fn concurrent_uploads_all_succeed() {
    let site = Site::start("site-a", "");
    create_bucket(&site, "bucket-1").await;
    let names: Vec<String> = (0..160).map(|i| format!("c/{i:03}")).collect();
    upload_in_parallel(&site, &names, 16).await;
    assert_eq!(list_names(&site, "bucket-1", &[]).await, names);
}

#[tokio::test]
async fn listing_pages_and_zstd() {
    let site = Site::start("site-a", "");
    create_bucket(&site, "bucket-1").await;
    // More objects than one metadata page (1000).
    let names: Vec<String> = (0..1010).map(|i| format!("obj-{i:05}")).collect();
    upload_in_parallel(&site, &names, 8).await;
    assert_eq!(list_names(&site, "bucket-1", &[]).await, names);

    let r = client()
        .put(ccs(&site, "/bucket-1"))
        .header("accept-encoding", "zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-encoding"), Some("zstd"));
    let compressed = r.bytes().await.unwrap();
    let plain = zstd::decode_all(&compressed[..]).unwrap();
    assert!(compressed.len() < plain.len());
    assert_eq!(ndjson_names(&plain), names);
}

#[tokio::test]
async fn ownership_rights_on_the_data_plane() {
    let site = Site::start("site-a", "");
    create_bucket(&site, "bucket-1").await;
    put_object(&site, "bucket-1", "obj", b"owned".to_vec()).await;
    let other = client_as(OTHER);
    let obj_url = ccs(&site, "/bucket-1/obj");

    // No grant: reads answer 404 (the bucket does not exist for this client), writes 403.
    assert_error(
        &send(&other, Method::GET, ccs(&site, "/bucket-1")).await,
        404,
        "get bucket without READ",
    );
    assert_eq!(
        head_type(&other, ccs(&site, "/bucket-1")).await,
        (404, "NONE".into())
    );
    assert_error(
        &send(&other, Method::GET, obj_url.clone()).await,
        404,
        "get object without READ",
    );
    assert_eq!(
        head_type(&other, obj_url.clone()).await,
        (404, "NONE".into())
    );
    assert_error(
        &write_as(&other, &site, "new").await,
        403,
        "write without WRITE",
    );
    assert_error(
        &send(&other, Method::DELETE, obj_url.clone()).await,
        403,
        "delete without DELETE",
    );
    assert_error(
        &send(&other, Method::DELETE, ccs(&site, "/bucket-1")).await,
        403,
        "delete bucket",
    );
    assert_error(
        &send(&other, Method::PUT, ccs(&site, "/bucket-1")).await,
        403,
        "list without READ",
    );

    grant(&site, Method::POST, OTHER, "READ", 201, "READ").await;
    assert_eq!(
        send(&other, Method::GET, obj_url.clone())
            .await
            .text()
            .await
            .unwrap(),
        "owned"
    );
    assert_eq!(
        head_type(&other, obj_url.clone()).await,
        (204, "OBJECT".into())
    );
    assert_eq!(
        send(&other, Method::PUT, ccs(&site, "/bucket-1"))
            .await
            .status(),
        200
    );
    assert_eq!(bucket_names(&other, &site).await, ["bucket-1"]);
    assert_error(
        &write_as(&other, &site, "new").await,
        403,
        "READ only cannot write",
    );
    assert_error(
        &send(&other, Method::DELETE, obj_url.clone()).await,
        403,
        "READ only cannot delete",
    );

    // PUT replaces the grant: WRITE alone writes but cannot read.
    grant(&site, Method::PUT, OTHER, "WRITE", 202, "WRITE").await;
    assert_eq!(write_as(&other, &site, "new").await.status(), 201);
    assert_error(
        &send(&other, Method::GET, ccs(&site, "/bucket-1/new")).await,
        404,
        "WRITE only cannot read",
    );
    assert!(bucket_names(&other, &site).await.is_empty());

    // POST adds to the grant.
    grant(&site, Method::POST, OTHER, "DELETE", 201, "DELETE_WRITE").await;
    assert_eq!(
        send(&other, Method::DELETE, ccs(&site, "/bucket-1/new"))
            .await
            .status(),
        204
    );
    assert_eq!(
        head_type(&client(), ccs(&site, "/bucket-1/new")).await.1,
        "NONE"
    );
}

async fn write_as(c: &reqwest::Client, site: &Site, key: &str) -> Response {
    c.post(ccs(site, &format!("/bucket-1/{key}")))
        .body("written")
        .send()
        .await
        .unwrap()
}

/// Grants (POST adds, PUT replaces) `ownership` on bucket-1 and checks the answer.
async fn grant(
    site: &Site,
    method: Method,
    client_id: &str,
    ownership: &str,
    status: u16,
    result: &str,
) {
    let url = site.url(&format!(
        "/administration/ownerships/{client_id}/bucket-1/{ownership}"
    ));
    let r = send(&reqwest::Client::new(), method, url).await;
    assert_eq!(r.status().as_u16(), status, "grant {ownership}");
    assert_eq!(header(&r, MODULE), Some("ADMINISTRATION"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"client": client_id, "bucket": "bucket-1", "ownership": result})
    );
}

#[tokio::test]
async fn ownership_administration() {
    let site = Site::start("site-a", "");
    create_bucket(&site, "bucket-1").await;
    create_bucket(&site, "bucket-2").await;
    let admin = reqwest::Client::new();
    let url = |p: &str| site.url(&format!("/administration/ownerships{p}"));

    grant(&site, Method::POST, OTHER, "READ_WRITE", 201, "READ_WRITE").await;
    let r = send(
        &admin,
        Method::POST,
        url(&format!("/{OTHER}/bucket-2/READ")),
    )
    .await;
    assert_eq!(r.status(), 201);
    let got = send(&admin, Method::GET, url(&format!("/{OTHER}/bucket-1"))).await;
    assert_eq!(
        got.json::<Value>().await.unwrap()["ownership"],
        "READ_WRITE"
    );
    let all: Vec<Value> = send(&admin, Method::GET, url(&format!("/{OTHER}")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let writable: Vec<Value> = send(
        &admin,
        Method::GET,
        url(&format!("/{OTHER}?ownership=WRITE")),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        writable,
        vec![json!({"client": OTHER, "bucket": "bucket-1", "ownership": "READ_WRITE"})]
    );
    let owner: Value = send(&admin, Method::GET, url(&format!("/{CLIENT}/bucket-1")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(owner["ownership"], "OWNER");

    assert_error(
        &send(
            &admin,
            Method::POST,
            url(&format!("/{OTHER}/bucket-1/SUPERUSER")),
        )
        .await,
        400,
        "bad right",
    );
    assert_error(
        &send(
            &admin,
            Method::POST,
            url(&format!("/{OTHER}/bucket-9/READ")),
        )
        .await,
        404,
        "missing bucket",
    );
    assert_error(
        &send(&admin, Method::PUT, url("/nobody/bucket-1/READ")).await,
        404,
        "update missing grant",
    );
    assert_error(
        &send(&admin, Method::GET, url("/nobody/bucket-1")).await,
        404,
        "missing grant",
    );

    assert_eq!(
        send(&admin, Method::DELETE, url(&format!("/{OTHER}/bucket-1")))
            .await
            .status(),
        204
    );
    assert_error(
        &send(&admin, Method::DELETE, url(&format!("/{OTHER}/bucket-1"))).await,
        404,
        "revoked twice",
    );
    assert_eq!(
        send(&client_as(OTHER), Method::GET, ccs(&site, "/bucket-1"))
            .await
            .status(),
        404
    );

    // Revoking a whole bucket keeps its owner.
    assert_eq!(
        send(&admin, Method::DELETE, url("/bucket-2"))
            .await
            .status(),
        204
    );
    assert_error(
        &send(&admin, Method::GET, url(&format!("/{OTHER}/bucket-2"))).await,
        404,
        "revoked by bucket",
    );
    assert_eq!(
        send(&client(), Method::GET, ccs(&site, "/bucket-2"))
            .await
            .status(),
        200
    );
    assert_error(
        &send(&admin, Method::DELETE, url("/bucket-9")).await,
        404,
        "revoke missing bucket",
    );
}

#[tokio::test]
async fn topology_administration() {
    let site = Site::start("site-a", "");
    let admin = reqwest::Client::new();
    let url = |p: &str| site.url(&format!("/administration/topologies{p}"));
    let peer =
        json!({"id": "site-b", "name": "Site B", "uri": "http://127.0.0.1:9", "status": "UP"});

    let r = admin.post(url("")).json(&peer).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, MODULE), Some("ADMINISTRATION"));
    assert_eq!(r.json::<Value>().await.unwrap(), peer);
    assert_eq!(
        send(&admin, Method::GET, url("/site-b"))
            .await
            .json::<Value>()
            .await
            .unwrap(),
        peer
    );
    assert_eq!(topology_ids(&admin, url("")).await, ["site-b"]);

    let down =
        json!({"id": "site-b", "name": "Site B", "uri": "http://127.0.0.1:10", "status": "DOWN"});
    let r = admin.put(url("")).json(&down).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        send(&admin, Method::GET, url("/site-b"))
            .await
            .json::<Value>()
            .await
            .unwrap(),
        down
    );
    assert_eq!(topology_ids(&admin, url("?status=DOWN")).await, ["site-b"]);
    assert!(topology_ids(&admin, url("?status=UP")).await.is_empty());

    assert_eq!(
        send(&admin, Method::DELETE, url("/site-b")).await.status(),
        204
    );
    let deleted: Value = send(&admin, Method::GET, url("/site-b"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(deleted["status"], "DELETED");

    assert_error(
        &send(&admin, Method::GET, url("/site-z")).await,
        404,
        "missing site",
    );
    assert_error(
        &send(&admin, Method::DELETE, url("/site-z")).await,
        404,
        "delete missing site",
    );
    let missing = json!({"id": "site-z", "uri": "http://127.0.0.1:9"});
    assert_error(
        &admin.put(url("")).json(&missing).send().await.unwrap(),
        404,
        "update missing site",
    );
    let bad_uri = json!({"id": "site-c", "uri": "ftp://nowhere"});
    assert_error(
        &admin.post(url("")).json(&bad_uri).send().await.unwrap(),
        400,
        "bad uri",
    );
    let no_id = json!({"id": " ", "uri": "http://127.0.0.1:9"});
    assert_error(
        &admin.post(url("")).json(&no_id).send().await.unwrap(),
        400,
        "empty id",
    );
    let garbage = admin.post(url("")).body("{not json").send().await.unwrap();
    assert_error(&garbage, 400, "malformed JSON");
    assert_error(
        &send(&admin, Method::GET, url("?status=SIDEWAYS")).await,
        400,
        "bad status",
    );
    assert_eq!(
        topology_ids(&admin, url("")).await,
        ["site-b"],
        "no bad site was added"
    );
}

async fn topology_ids(c: &reqwest::Client, url: String) -> Vec<String> {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Vec<Value> = r.json().await.unwrap();
    v.iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}
