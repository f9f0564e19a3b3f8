//! A site of several nodes: `mirrorgate serve` processes with one `[site] id`, one PostgreSQL
//! metadata database (a throw-away cluster, tests/common/postgres.rs) and one S3 backend (the
//! shared test S3 server), next to a site on the embedded SQLite. Skipped only when PostgreSQL
//! is not installed outside CI (under CI=true its absence fails the run).

mod common;
#[path = "common/postgres.rs"]
mod postgres;
#[path = "common/s3server.rs"]
mod s3server;

use std::time::{Duration, Instant};

use common::*;
use postgres::Postgres;
use serde_json::{json, Value};

/// Short leases, so that a node's death is noticed within seconds; a cache TTL far beyond
/// the tests, so that only notifications can make a node see another node's writes.
const NODE_EXTRA: &str = "[metadata]\ncache_ttl_ms = 600000\n";
const LEASE_MS: u64 = 2_000;
const FAST_RETRIES: &str =
    "[replication]\nmax_attempts = 50\nbackoff_initial_ms = 100\nbackoff_max_ms = 500\n";

/// Site A (nodes on PostgreSQL and shared S3) and what it runs on.
struct SiteA {
    pg: Postgres,
    url: String,
    _s3: s3server::S3Server,
    s3_url: String,
    root: tempfile::TempDir,
}

impl SiteA {
    async fn new() -> Option<SiteA> {
        let pg = Postgres::start()?;
        let url = pg.database().await;
        let root = tempfile::tempdir().unwrap();
        let s3 = s3server::S3Server::start(&root.path().join("s3")).await;
        let s3_url = format!("http://{}", s3.addr);
        Some(SiteA {
            pg,
            url,
            _s3: s3,
            s3_url,
            root,
        })
    }

    /// Starts node `node` of site-a.
    fn node(&self, node: &str) -> Site {
        let dir = self.root.path().join(node);
        let config = format!(
            "[site]\nid = \"site-a\"\nnode_id = \"{node}\"\nlease_ms = {LEASE_MS}\n\
             listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}{NODE_EXTRA}url = \"{}\"\n{FAST_RETRIES}",
            dir.display(),
            s3server::s3_storage_config(&self.s3_url, "mg-a-"),
            self.url
        );
        tokio::task::block_in_place(|| Site::spawn_with("site-a", &dir, &config))
    }
}

/// `site`'s answer to a GET of `bucket/key`: status and body.
async fn get(site: &Site, bucket: &str, key: &str) -> (u16, Vec<u8>) {
    let r = client()
        .get(site.url(&format!("/cloudclonestore/{bucket}/{key}")))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

/// Waits until `site` answers `want` for `bucket/key`, and answers how long it took.
async fn until_status(site: &Site, bucket: &str, key: &str, want: u16) -> Duration {
    let t0 = Instant::now();
    eventually(
        Duration::from_secs(10),
        &format!("{key}: {want}"),
        || async { (get(site, bucket, key).await.0 == want).then_some(()) },
    )
    .await;
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_one_node_are_read_and_deleted_through_the_other() {
    let Some(a) = SiteA::new().await else { return };
    let (a1, a2) = (a.node("a1"), a.node("a2"));
    // No peer yet: a name deleted here is not found elsewhere either.
    create_bucket(&a1, "shared").await;
    let body = data(1024, 7);
    put_object(&a1, "shared", "k1", body.clone()).await;
    assert_eq!(get(&a2, "shared", "k1").await, (200, body.clone()));
    let head = client()
        .head(a2.url("/cloudclonestore/shared/k1"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 204);

    // a1 has the object cached; a delete through a2 reaches a1's cache by notification
    // (the cache TTL is ten minutes).
    assert_eq!(get(&a1, "shared", "k1").await.0, 200);
    let r = client()
        .delete(a2.url("/cloudclonestore/shared/k1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let stale_for = until_status(&a1, "shared", "k1", 404).await;
    assert!(
        stale_for < Duration::from_secs(2),
        "stale for {stale_for:?}"
    );

    // And the other way round, with a new version of the name written through a2.
    let v2 = data(1024, 8);
    put_object(&a2, "shared", "k1", v2.clone()).await;
    eventually(Duration::from_secs(2), "a1 sees a2's write", || async {
        (get(&a1, "shared", "k1").await == (200, v2.clone())).then_some(())
    })
    .await;
    // Replication from site-a (two nodes on PostgreSQL) to site-b (SQLite). The topology is
    // in the shared database: the peer added through a1 is a2's peer too.
    let b = Site::start("site-b", FAST_RETRIES);
    add_peer(&a1, &b).await;
    add_peer(&b, &a2).await;
    create_bucket(&a1, "fanned").await;
    let v3 = data(1024, 9);
    put_object(&a2, "fanned", "k2", v3.clone()).await;
    object_arrives(&b, "fanned", "k2").await;
    assert_eq!(get(&b, "fanned", "k2").await, (200, v3));
    let r = client()
        .delete(a1.url("/cloudclonestore/fanned/k2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    until_status(&b, "fanned", "k2", 404).await;
    drop(a.pg);
}

/// Orders still owed to site-b, as node `a` reports them.
async fn backlog(a: &Site) -> u64 {
    let r = client()
        .get(a.url("/_/backbeat/api/metrics/crr/site-b/pending"))
        .send()
        .await
        .unwrap();
    let pending: Value = r.json().await.unwrap();
    pending["pending"]["results"]["count"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_replication_leaves_its_work_to_another() {
    let Some(a) = SiteA::new().await else { return };
    let (mut a1, a2) = (a.node("a1"), a.node("a2"));
    let b = Site::start("site-b", FAST_RETRIES);
    add_peer(&a1, &b).await;
    add_peer(&b, &a2).await; // site-b pulls through a2, the node that stays
    create_bucket(&a1, "many").await;
    let bodies: Vec<Vec<u8>> = (0..40).map(|i| data(64 * 1024, 100 + i)).collect();
    for (i, body) in bodies.iter().enumerate() {
        put_object(&a1, "many", &format!("o{i}"), body.clone()).await;
    }
    // Mid-replication: orders queued or in flight, a1 holding leases.
    a1.kill9();
    for (i, body) in bodies.iter().enumerate() {
        object_arrives(&b, "many", &format!("o{i}")).await;
        let (status, got) = get(&b, "many", &format!("o{i}")).await;
        assert_eq!((status, got.len()), (200, body.len()));
        assert!(got == *body, "o{i} differs at site-b");
    }
    eventually(Duration::from_secs(30), "outbox drained", || async {
        (backlog(&a2).await == 0).then_some(())
    })
    .await;
    // Nothing duplicated: site-b lists each object once.
    let r = client()
        .put(b.url("/cloudclonestore/many"))
        .send()
        .await
        .unwrap();
    let listing = r.text().await.unwrap();
    for i in 0..40 {
        let name = format!("\"o{i}\"");
        assert!(listing.matches(&name).count() <= 1, "o{i} twice: {listing}");
    }
}

fn api(site: &Site, path: &str) -> String {
    site.url(&format!("/api{path}"))
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn task(site: &Site, id: &str) -> Value {
    let (status, v) = send(client().get(api(site, &format!("/running-action/{id}")))).await;
    assert_eq!(status, 200, "{v}");
    v["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_task_leaves_the_task_to_another() {
    let Some(a) = SiteA::new().await else { return };
    let (mut a1, a2) = (a.node("a1"), a.node("a2"));
    let b = Site::start("site-b", FAST_RETRIES);
    add_peer(&a1, &b).await;
    add_peer(&b, &a2).await;
    create_bucket(&a1, "defs").await;
    // Replication paused towards site-b: the run's orders wait, the run stays Running.
    let http = client();
    http.post(a1.url("/_/backbeat/api/crr/pause/site-b"))
        .send()
        .await
        .unwrap();
    for i in 0..20 {
        put_object(&a1, "defs", &format!("p/o{i}"), data(10_000, 300 + i)).await;
    }
    let (s, v) = send(http.post(api(&a1, "/replication-definitions")).json(
        &json!({"name": "move", "description": "d", "payload": ["defs/p/"], "targetName": "site-b"}),
    ))
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = send(
        http.post(api(&a1, "/running-replication-actions"))
            .form(&[("name", "move")]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let id = v["data"]["details"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    eventually(Duration::from_secs(20), "running on a1", || async {
        (task(&a2, &id).await["status"] == "Running").then_some(())
    })
    .await;
    a1.kill9();
    http.post(a2.url("/_/backbeat/api/crr/resume/site-b"))
        .send()
        .await
        .unwrap();
    let done = eventually(Duration::from_secs(60), "completed by a2", || async {
        let t = task(&a2, &id).await;
        (t["status"] == "Completed").then_some(t)
    })
    .await;
    assert_eq!(done["progress"]["objectsTotal"], 20, "{done}");
    for i in 0..20 {
        object_arrives(&b, "defs", &format!("p/o{i}")).await;
    }
    assert!(
        a2.log_text()
            .contains("running again a task whose node stopped"),
        "a2 took the task over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_due_time_across_nodes() {
    let Some(a) = SiteA::new().await else { return };
    let (a1, a2) = (a.node("a1"), a.node("a2"));
    let b = Site::start("site-b", FAST_RETRIES);
    add_peer(&a1, &b).await;
    add_peer(&b, &a2).await;
    create_bucket(&a1, "sched").await;
    put_object(&a1, "sched", "one", data(100, 1)).await;
    let start = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (s, v) = send(client().post(api(&a2, "/replication-definitions")).json(&json!({
        "name": "tick", "description": "every second", "payload": ["sched/one"], "targetName": "site-b",
        "schedule": {"start": {"iso8601": start}, "intervalPeriod": "Second", "intervalCount": 1}})))
    .await;
    assert_eq!(s, 200, "{v}");
    let runs = eventually(Duration::from_secs(30), "six scheduled runs", || async {
        let (_, v) = send(client().get(api(
            &a1,
            "/running-actions?all=true&type=replicationActionExecutor",
        )))
        .await;
        let runs: Vec<Value> = v["data"].as_array()?.clone();
        (runs.len() >= 6).then_some(runs)
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
    object_arrives(&b, "sched", "one").await;
}

mod store {
    //! The metadata store itself on PostgreSQL: the queries whose SQL differs or is assembled
    //! (filters, failed operations, aggregates), leases and claims between two nodes.
    use mirrorgate::meta::{Bucket, MetaStore, Object, ObjectFilter, Status, Verified};
    use mirrorgate::model::order::{Action, Order};

    use super::Postgres;

    fn bucket(name: &str) -> Bucket {
        Bucket {
            name: name.into(),
            id: name.into(),
            client_id: "c".into(),
            site: "site-a".into(),
            creation: chrono::Utc::now(),
            expires: None,
            status: Status::Ready,
        }
    }

    fn object(bucket: &str, name: &str) -> Object {
        Object {
            id: uuid::Uuid::new_v4().to_string(),
            site: "site-a".into(),
            bucket: bucket.into(),
            name: name.into(),
            hash: None,
            status: Status::Upload,
            creation: chrono::Utc::now(),
            expires: None,
            size: 0,
            metadata: Default::default(),
        }
    }

    fn order(bucket: &str, name: &str) -> Order {
        Order {
            op_id: uuid::Uuid::new_v4().to_string(),
            from_site: "site-a".into(),
            to_site: "site-b".into(),
            client_id: "c".into(),
            bucket_name: bucket.into(),
            object_name: Some(name.into()),
            size: Some(3),
            hash: Some("h".into()),
            action: Action::Create,
            version_time: None,
        }
    }

    /// The inbox claim's rules: an order waits for every earlier open order of its object, a
    /// bucket order (no object) for every earlier open order of its bucket, and every later
    /// order of the bucket waits for an open bucket order. The status query answers a list.
    async fn claims_keep_object_and_bucket_order(store: &MetaStore) {
        let received = |bucket: &str, name: Option<&str>| Order {
            from_site: "site-b".into(),
            to_site: "site-a".into(),
            object_name: name.map(str::to_owned),
            ..order(bucket, "unused")
        };
        let (x1, y, x2) = (
            received("b1", Some("x")),
            received("b1", Some("y")),
            received("b1", Some("x")),
        );
        let (whole, z, other) = (
            received("b1", None),
            received("b1", Some("z")),
            received("b2", Some("x")),
        );
        let all = [&x1, &y, &x2, &whole, &z, &other].map(|o| o.clone());
        store.receive_orders(&all).await.unwrap();
        let claim = || async {
            let rows = store.claim_inbox_batch("site-a", 60_000, 10).await.unwrap();
            rows.into_iter()
                .map(|r| (r.order.op_id, r.seq))
                .collect::<Vec<_>>()
        };
        let ids = |rows: &[(String, i64)]| rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
        let first = claim().await;
        assert_eq!(ids(&first), [&x1, &y, &other].map(|o| o.op_id.clone()));
        assert!(
            claim().await.is_empty(),
            "x2 waits for x1, the bucket order for all"
        );
        store.inbox_done(first[0].1).await.unwrap();
        let second = claim().await;
        assert_eq!(ids(&second), [x2.op_id.as_str()]);
        store.inbox_done(first[1].1).await.unwrap();
        assert!(claim().await.is_empty(), "the bucket order waits for x2");
        store.inbox_done(second[0].1).await.unwrap();
        let third = claim().await;
        assert_eq!(
            ids(&third),
            [whole.op_id.as_str()],
            "z waits for the bucket order"
        );
        store.inbox_done(third[0].1).await.unwrap();
        assert_eq!(ids(&claim().await), [z.op_id.as_str()]);

        let asked = [
            x1.op_id.clone(),
            "nobody".into(),
            x1.op_id.clone(),
            z.op_id.clone(),
        ];
        let statuses = store.order_statuses(&asked, Some("site-b")).await.unwrap();
        let got: Vec<_> = statuses
            .iter()
            .map(|s| (s.op_id.as_str(), s.status.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (x1.op_id.as_str(), "DONE"),
                ("nobody", "UNKNOWN"),
                (x1.op_id.as_str(), "DONE"),
                (z.op_id.as_str(), "PROCESSING"),
            ]
        );
        let foreign = store
            .order_statuses(&asked[..1], Some("site-c"))
            .await
            .unwrap();
        assert_eq!(
            foreign[0].status, "UNKNOWN",
            "a peer learns only of its own orders"
        );
        assert!(store.order_statuses(&[], None).await.unwrap().is_empty());

        // Sent and completed in batches, two orders of one name among them.
        let sent = [
            order("b3", "same"),
            order("b3", "same"),
            order("b3", "other"),
        ];
        store.queue_orders(&sent).await.unwrap();
        let rows = store.queued_orders("site-a", "site-b", 10).await.unwrap();
        assert_eq!(rows.len(), 3);
        store.mark_sent(&rows, 0).await.unwrap();
        let due = store.sent_orders_due("site-a", "site-b", 10).await.unwrap();
        assert_eq!(due.len(), 3, "all SENT and due");
        let status = |name: &'static str| async move {
            let at = store.replication_status("b3", name).await.unwrap();
            at.get("site-b").cloned().unwrap_or_default()
        };
        assert_eq!(status("same").await, "PROCESSING");
        store.postpone_check(&[rows[0].seq], 60_000).await.unwrap();
        let due = store.sent_orders_due("site-a", "site-b", 10).await.unwrap();
        assert_eq!(due.len(), 2, "one postponed");
        store.orders_completed(&rows).await.unwrap();
        assert!(store
            .queued_orders("site-a", "site-b", 10)
            .await
            .unwrap()
            .is_empty());
        assert!(store
            .sent_orders_due("site-a", "site-b", 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(status("same").await, "COMPLETED");
        assert_eq!(status("other").await, "COMPLETED");
        // The peer's copies entered the catalogue with the completion; a DELETE's takes it out.
        let copy = store.replica("b3", "other", "site-b").await.unwrap();
        assert_eq!(
            copy.map(|c| c.bytes),
            Some(3),
            "catalogued with the completion"
        );
        let delete = Order {
            action: Action::Delete,
            ..order("b3", "other")
        };
        store.queue_orders(&[delete]).await.unwrap();
        let rows = store.queued_orders("site-a", "site-b", 10).await.unwrap();
        store.orders_completed(&rows).await.unwrap();
        assert!(store
            .replica("b3", "other", "site-b")
            .await
            .unwrap()
            .is_none());
        assert!(store
            .replica("b3", "same", "site-b")
            .await
            .unwrap()
            .is_some());
        let completed = store
            .event_totals(Some("site-b"), "COMPLETED", 0)
            .await
            .unwrap();
        assert_eq!(
            (completed.count, completed.bytes),
            (4, 12),
            "one event per order, the DELETE's too"
        );
        let everywhere = store.event_totals(None, "COMPLETED", 0).await.unwrap();
        assert_eq!(everywhere.count, 4);
        let later = chrono::Utc::now().timestamp_millis() + 2_000;
        let none_yet = store.event_totals(None, "COMPLETED", later).await.unwrap();
        assert_eq!((none_yet.count, none_yet.bytes), (0, 0));
    }

    #[tokio::test]
    async fn inbox_claims_keep_object_and_bucket_order_on_sqlite_and_postgresql() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/meta.db", dir.path().display());
        claims_keep_object_and_bucket_order(&MetaStore::open(&url).await.unwrap()).await;
        let Some(pg) = Postgres::start() else { return };
        let url = pg.database().await;
        claims_keep_object_and_bucket_order(&MetaStore::open(&url).await.unwrap()).await;
    }

    async fn two_nodes(pg: &Postgres) -> (MetaStore, MetaStore) {
        let url = pg.database().await;
        let n1 = MetaStore::open(&url).await.unwrap().with_node("n1", 60_000);
        let n2 = MetaStore::open(&url).await.unwrap().with_node("n2", 60_000);
        (n1, n2)
    }

    #[tokio::test]
    async fn queries_leases_and_claims_on_postgresql() {
        let Some(pg) = Postgres::start() else { return };
        let (n1, n2) = two_nodes(&pg).await;
        n1.create_bucket(&bucket("b1"), &[]).await.unwrap();
        let blocks = mirrorgate::model::blocks::BlockHashes {
            block_size: 4,
            digests: vec![[7; 32]],
        };
        for name in ["a/1", "a/2", "b/1"] {
            let o = object("b1", name);
            n1.begin_upload(&o).await.unwrap();
            let verified = Verified {
                size: 3,
                sha256: "h",
                adler32: "a",
                blocks: &blocks,
            };
            n1.finish_upload(&o, &verified, None, &[order("b1", name)])
                .await
                .unwrap();
        }
        // The block hashes were recorded in the transaction that made the upload READY.
        assert_eq!(n2.blocks_of("b1", "a/1", "h").await.unwrap(), Some(blocks));
        // A filtered listing (assembled query, numbered placeholders).
        let filter = ObjectFilter {
            name_prefix: Some("a/".into()),
            size_gt: Some(1),
            ..ObjectFilter::default()
        };
        let listed = n2.list_objects("b1", &filter, None, 10).await.unwrap();
        assert_eq!(
            listed.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
            ["a/1", "a/2"]
        );
        // Aggregates (SUM is NUMERIC on PostgreSQL, read back as BIGINT).
        let (totals, oldest) = n2.pending_totals(Some("site-b")).await.unwrap();
        assert_eq!((totals.count, totals.bytes), (3, 9));
        assert!(oldest.is_some());
        // A failed operation, failed again (a new id from the sequence), then retried.
        let rows = n1.queued_orders("site-a", "site-b", 10).await.unwrap();
        assert_eq!(rows.len(), 3);
        n1.order_failed(&rows[0], 5, "refused").await.unwrap();
        n1.queue_orders(&[rows[0].order.clone()]).await.unwrap();
        let again = n1.queued_orders("site-a", "site-b", 10).await.unwrap();
        let requeued = again.iter().find(|r| r.order.op_id == rows[0].order.op_id);
        n1.order_failed(requeued.unwrap(), 5, "refused again")
            .await
            .unwrap();
        let (failed, _) = n2.list_failed("site-a", "site-b", None, 10).await.unwrap();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].error.as_deref(), Some("refused again"));
        let reasons = n2.failure_reasons("site-b", 5).await.unwrap();
        assert_eq!(reasons[0].count, 1);
        let name = failed[0].order.object_name.clone().unwrap();
        let retried = n2
            .retry_failed("site-a", "b1", &name, "", "site-b")
            .await
            .unwrap();
        assert_eq!(retried.len(), 1);
        let failed_events = n2.event_totals(None, "FAILED", 0).await.unwrap();
        assert_eq!(failed_events.count, 2);

        // One holder per lease; another node gets it once it is given up.
        assert!(n1.hold_lease("singleton", 60_000).await.unwrap());
        assert!(!n2.hold_lease("singleton", 60_000).await.unwrap());
        assert!(n1.hold_lease("singleton", 60_000).await.unwrap(), "renewed");
        assert_eq!(
            n2.lease_holder("singleton").await.unwrap().as_deref(),
            Some("n1")
        );
        n1.release_lease("singleton").await.unwrap();
        assert!(n2.hold_lease("singleton", 60_000).await.unwrap());

        // Received orders: two nodes claiming at once never get the same one.
        let received: Vec<Order> = (0..20)
            .map(|i| Order {
                from_site: "site-b".into(),
                to_site: "site-a".into(),
                ..order("b1", &format!("in/{i}"))
            })
            .collect();
        n1.receive_orders(&received).await.unwrap();
        let claim = |store: MetaStore| async move {
            let mut seqs = Vec::new();
            while let Some(row) = store.claim_inbox("site-a", 60_000).await.unwrap() {
                seqs.push(row.seq);
            }
            seqs
        };
        let (a, b) = tokio::join!(claim(n1.clone()), claim(n2.clone()));
        let mut all: Vec<i64> = a.iter().chain(&b).copied().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), a.len() + b.len(), "claimed twice");
        assert_eq!(all.len(), 20);
    }
}
