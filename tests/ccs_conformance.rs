//! CCS replicator API as the seed (clonecloudstore-replicator-api) lists it: `fullCheck` on
//! every HEAD that has it, 410 for a deleted bucket, 409 for a bucket CREATE order of an
//! existing bucket and per-order answers of `/orders/multiple`, and no status the seed does not
//! list (no 502) when a pinned site is unreachable or the only copy is corrupt.

mod common;
use common::*;

use reqwest::Response;

const TYPE: &str = "x-clonecloudstore-type";
const TARGET_ID: &str = "x-clonecloudstore-target-id";
const ERROR: &str = "x-clonecloudstore-error";
const BUCKET: &str = "shared";

/// Replication off: a copy exists only where the test writes it.
const SITE_EXTRA: &str = "[replication]\nenabled = false\n[topology]\npeer_timeout_ms = 3000\n";

/// HEAD `url`: (status, type).
async fn head(url: String) -> (u16, String) {
    let r = client().head(url).send().await.unwrap();
    (
        r.status().as_u16(),
        header(&r, TYPE).unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn full_check_reads_the_storage_on_every_head() {
    let sites = meshed_sites(&["site-a", "site-b"], SITE_EXTRA).await;
    let (a, b) = (&sites[0], &sites[1]);
    create_bucket(a, BUCKET).await;
    let body = data(100_000, 7);
    put_object(a, BUCKET, "obj.bin", body.clone()).await;
    let key = format!("{BUCKET}/obj.bin");

    for q in ["", "?fullCheck=true", "?fullCheck=True"] {
        assert_eq!(
            head(remote(a, &format!("{key}{q}"))).await,
            (204, "OBJECT".into())
        );
        assert_eq!(
            head(local(b, &format!("{key}{q}"))).await,
            (204, "OBJECT".into())
        );
    }

    // A truncated copy: metadata alone still says OBJECT, a full check does not.
    let file = object_file(a, BUCKET, "obj.bin");
    std::fs::write(&file, &body[..50_000]).unwrap();
    assert_eq!(head(remote(a, &key)).await, (204, "OBJECT".into()));
    assert_eq!(
        head(remote(a, &format!("{key}?fullCheck=true"))).await,
        (404, "NONE".into())
    );
    assert_eq!(
        head(local(b, &format!("{key}?fullCheck=True"))).await,
        (404, "NONE".into()),
        "local HEAD with fullCheck through the topology"
    );

    // A copy of the right size with a wrong byte fails the full check too.
    let mut bad = body.clone();
    bad[10] ^= 0xff;
    std::fs::write(&file, &bad).unwrap();
    assert_eq!(
        head(remote(a, &format!("{key}?fullCheck=true"))).await,
        (404, "NONE".into())
    );

    // The bucket: its storage gone, only a full check notices.
    std::fs::remove_dir_all(a.dir.join("objects").join(BUCKET)).unwrap();
    assert_eq!(head(remote(a, BUCKET)).await, (204, "BUCKET".into()));
    assert_eq!(
        head(remote(a, &format!("{BUCKET}?fullCheck=true"))).await,
        (404, "NONE".into())
    );
    assert_eq!(head(local(b, BUCKET)).await, (204, "BUCKET".into()));
    assert_eq!(
        head(local(b, &format!("{BUCKET}?fullCheck=true"))).await,
        (404, "NONE".into()),
        "local bucket HEAD with fullCheck"
    );
}

#[tokio::test]
async fn a_deleted_bucket_answers_410_through_the_topology() {
    let sites = meshed_sites(&["site-a", "site-b"], "").await;
    let (a, b) = (&sites[0], &sites[1]);
    create_bucket(a, "gone-bucket").await;
    eventually(
        std::time::Duration::from_secs(20),
        "bucket on b",
        || async {
            let r = client().get(remote(b, "gone-bucket")).send().await.unwrap();
            (r.status() == 200).then_some(())
        },
    )
    .await;
    let r = client()
        .delete(a.url("/cloudclonestore/gone-bucket"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    eventually(
        std::time::Duration::from_secs(20),
        "deleted on b",
        || async {
            let r = client().get(remote(b, "gone-bucket")).send().await.unwrap();
            (r.status() == 410).then_some(())
        },
    )
    .await;
    for site in [a, b] {
        let r = client()
            .get(local(site, "gone-bucket"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 410, "at {}: {:?}", site.id, header(&r, ERROR));
        assert!(header(&r, ERROR).unwrap_or("").contains("deleted"));
    }
    let r = client().get(local(a, "never-there")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// The lookup itself tells "deleted" from "never existed": a site that never held a bucket
/// deleted elsewhere answers 410 for it, 404 for a name no site knows.
#[tokio::test]
async fn a_site_that_never_held_a_deleted_bucket_answers_410() {
    let sites = meshed_sites(&["site-a", "site-b"], "").await;
    let (a, b) = (&sites[0], &sites[1]);
    create_bucket(a, "gone-elsewhere").await;
    bucket_arrives(b, "gone-elsewhere").await;
    let r = client()
        .delete(a.url("/cloudclonestore/gone-elsewhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    eventually(
        std::time::Duration::from_secs(20),
        "deleted on b",
        || async {
            let r = client()
                .get(remote(b, "gone-elsewhere"))
                .send()
                .await
                .unwrap();
            (r.status() == 410).then_some(())
        },
    )
    .await;
    // C joins afterwards: it never held the bucket, its peers know it is deleted.
    let c = Site::start("site-c", "");
    mesh(&[a, b, &c]).await;
    let r = client()
        .get(local(&c, "gone-elsewhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410, "{:?}", header(&r, ERROR));
    assert!(header(&r, ERROR).unwrap_or("").contains("deleted"));
    let r = client().get(local(&c, "never-there")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// A topology entry whose address refuses connections.
async fn add_dead_peer(site: &Site, id: &str) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = reqwest::Client::new()
        .post(site.url("/administration/topologies"))
        .json(&serde_json::json!({"id": id, "name": id, "uri": format!("http://127.0.0.1:{port}"), "status": "UP"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn peers_failing_never_answer_502() {
    let sites = meshed_sites(&["site-a", "site-b"], SITE_EXTRA).await;
    let (a, b) = (&sites[0], &sites[1]);
    add_dead_peer(b, "site-dead").await;
    create_bucket(a, BUCKET).await;
    let body = data(20_000, 9);
    put_object(a, BUCKET, "obj.bin", body.clone()).await;
    let key = format!("{BUCKET}/obj.bin");

    // Pinned to an unreachable site: 500 (listed by CCS), saying so.
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let r = client()
            .request(method.clone(), local(b, &key))
            .header(TARGET_ID, "site-dead")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500, "{method} pinned to a dead site");
        let msg = header(&r, ERROR).unwrap_or("").to_owned();
        assert!(
            msg.contains("site-dead") && msg.contains("unreachable"),
            "{msg}"
        );
    }

    // The only copy is corrupt: 500, and the message says it is corrupt.
    let mut bad = body.clone();
    bad[100] ^= 0xff;
    std::fs::write(object_file(a, BUCKET, "obj.bin"), &bad).unwrap();
    let r = client().get(local(b, &key)).send().await.unwrap();
    assert_eq!(r.status(), 500, "corrupt sole copy");
    let msg = header(&r, ERROR).unwrap_or("").to_owned();
    assert!(msg.contains("corrupt"), "{msg}");
    assert!(!msg.contains("unreachable"), "{msg}");
    // The accessor reading remotely answers the same way.
    let r = client()
        .get(b.url(&format!("/cloudclonestore/{key}")))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 502);
}

fn bucket_order(op_id: &str, bucket: &str, action: &str) -> serde_json::Value {
    serde_json::json!({
        "opId": op_id, "fromSite": "site-a", "toSite": "site-b", "clientId": CLIENT,
        "bucketName": bucket, "action": action,
    })
}

async fn post_orders(site: &Site, path: &str, body: serde_json::Value) -> Response {
    client()
        .post(site.url(&format!("/replicator/remote/{path}")))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn orders_answer_409_for_an_existing_bucket_and_per_order_in_a_batch() {
    let sites = meshed_sites(&["site-a", "site-b"], SITE_EXTRA).await;
    let b = &sites[1];
    create_bucket(b, "exists-here").await;
    create_bucket(b, "exists-too").await;

    // Single order: 409 for an existing bucket, 400 for an invalid order, 201 otherwise.
    let r = post_orders(b, "orders", bucket_order("op-1", "exists-here", "CREATE")).await;
    assert_eq!(r.status(), 409);
    assert!(header(&r, ERROR).unwrap_or("").contains("already exists"));
    let mut invalid = bucket_order("op-2", "new-bucket", "CREATE");
    invalid["toSite"] = "site-z".into();
    assert_eq!(
        post_orders(b, "orders", invalid.clone()).await.status(),
        400
    );
    let r = post_orders(b, "orders", bucket_order("op-3", "new-bucket", "CREATE")).await;
    assert_eq!(r.status(), 201);
    eventually(
        std::time::Duration::from_secs(20),
        "new-bucket on b",
        || async {
            let r = client().get(remote(b, "new-bucket")).send().await.unwrap();
            (r.status() == 200).then_some(())
        },
    )
    .await;
    // The same order sent again (a lost acknowledgement) is no conflict.
    let r = post_orders(b, "orders", bucket_order("op-3", "new-bucket", "CREATE")).await;
    assert_eq!(r.status(), 201);

    // A batch: the valid orders are stored, the others reported one by one.
    let batch = serde_json::json!([
        bucket_order("m-1", "multi-bucket", "CREATE"),
        invalid,
        bucket_order("m-3", "exists-here", "CREATE"),
        42,
        bucket_order("m-5", "exists-too", "DELETE"),
        bucket_order("m-6", "exists-too", "CREATE"),
    ]);
    let r = post_orders(b, "orders/multiple", batch).await;
    assert_eq!(r.status(), 201);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["received"], 3, "{answer}");
    let rejected: Vec<(u64, String, u64)> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
            (
                r["index"].as_u64().unwrap(),
                r["opId"].as_str().unwrap().to_owned(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        vec![
            (1, "op-2".to_owned(), 400),
            (2, "m-3".to_owned(), 409),
            (3, "".to_owned(), 400)
        ]
    );
    eventually(
        std::time::Duration::from_secs(20),
        "multi-bucket on b",
        || async {
            let r = client()
                .get(remote(b, "multi-bucket"))
                .send()
                .await
                .unwrap();
            (r.status() == 200).then_some(())
        },
    )
    .await;
}

/// Two sites that created the same bucket: each one's CREATE order meets a 409 at the other,
/// which completes the order (the bucket is there) instead of failing or resending it.
#[tokio::test]
async fn a_bucket_created_at_both_sites_replicates_without_failures() {
    let sites = meshed_sites(&["site-a", "site-b"], "").await;
    let (a, b) = (&sites[0], &sites[1]);
    // A's order waits behind a pause until B has its own bucket: the CREATE order then meets
    // an existing bucket whatever the machine's load.
    let backbeat = |site: &Site, what: &str| {
        let url = site.url(&format!("/_/backbeat/api/crr/{what}/site-b"));
        async move {
            reqwest::Client::new()
                .post(url)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(backbeat(a, "pause").await, 200);
    create_bucket(a, "twin").await;
    create_bucket(b, "twin").await;
    assert_eq!(backbeat(a, "resume").await, 200);
    for site in [a, b] {
        eventually(
            std::time::Duration::from_secs(20),
            "outbox drained",
            || async {
                (site.metric("mirrorgate_replication_pending_orders").await == 0.0).then_some(())
            },
        )
        .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for site in [a, b] {
        assert_eq!(
            site.metric("mirrorgate_replication_failures_total").await,
            0.0,
            "failures at {}",
            site.id
        );
        assert_eq!(
            site.metric("mirrorgate_replication_pending_orders").await,
            0.0
        );
    }
    assert!(
        [a, b]
            .iter()
            .any(|s| s.log_text().contains("peer has the bucket already")),
        "a CREATE order met the existing bucket"
    );
}
