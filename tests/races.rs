//! Concurrency on one real site (127.0.0.1): uploads racing bucket deletes, concurrent deletes of
//! one object, deletes racing a re-upload of the same name. Bounded rounds; every test stops
//! within 60 s. Each test collects the broken rounds and reports them together.

mod common;
use std::time::{Duration, Instant};

use common::*;

/// Upper bound of one test.
const BUDGET: Duration = Duration::from_secs(55);

fn http() -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-clonecloudstore-client-id", CLIENT.parse().unwrap());
    reqwest::Client::builder()
        .default_headers(h)
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(16)
        .build()
        .unwrap()
}

/// A site with no peers (nothing replicates, nothing else touches its objects).
fn lone_site() -> Site {
    Site::start("site-a", "")
}

async fn upload(c: &reqwest::Client, site: &Site, bucket: &str, key: &str, body: Vec<u8>) -> u16 {
    c.post(site.url(&format!("/cloudclonestore/{bucket}/{key}")))
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn delete(c: &reqwest::Client, site: &Site, path: &str) -> u16 {
    c.delete(site.url(&format!("/cloudclonestore/{path}")))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// (status, hash header, bytes) of a local GET. A connection the server closed after refusing
/// an upload early may still sit in the pool: a transport error is retried on a fresh one.
async fn get(c: &reqwest::Client, site: &Site, path: &str) -> (u16, Option<String>, Vec<u8>) {
    let url = site.url(&format!("/cloudclonestore/{path}"));
    let r = match c.get(&url).send().await {
        Ok(r) => r,
        Err(_) => match client().get(&url).send().await {
            Ok(r) => r,
            Err(_) => return (0, None, Vec::new()),
        },
    };
    let status = r.status().as_u16();
    let hash = r
        .headers()
        .get("x-clonecloudstore-hash")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (
        status,
        hash,
        r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
    )
}

/// A small delay that varies with the round, so both orders of arrival get exercised.
async fn jitter(round: usize, salt: usize) {
    let ms = ((round * 7 + salt * 3) % 4) as u64;
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

fn is_5xx_or_broken(status: u16) -> bool {
    status == 0 || status >= 500
}

/// Waits up to 2 s for a file to disappear (a delete may still be finishing).
async fn gone_from_disk(file: &std::path::Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while file.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !file.exists()
}

fn report(broken: &[String], rounds: usize) {
    assert!(
        broken.is_empty(),
        "{} broken round(s) of {rounds}:\n  - {}",
        broken.len(),
        broken.join("\n  - ")
    );
}

// ---- 1. object CREATE racing a bucket DELETE --------------------------------------------------

#[tokio::test]
async fn an_upload_racing_a_bucket_delete_never_both_succeed() {
    // contract: a bucket is deleted only when empty; an object answered 201 exists afterwards
    let site = lone_site();
    let c = http();
    let start = Instant::now();
    let mut broken = Vec::new();
    let mut rounds = 0;
    for round in 0..60 {
        if start.elapsed() > BUDGET {
            break;
        }
        rounds += 1;
        let bucket = format!("race-{round:03}");
        create_bucket(&site, &bucket).await;
        let body = data(if round % 2 == 0 { 2_000 } else { 200_000 }, round as u64);
        let (up, del) = tokio::join!(
            async {
                jitter(round, 0).await;
                upload(&c, &site, &bucket, "obj", body.clone()).await
            },
            async {
                jitter(round, 1).await;
                delete(&c, &site, &bucket).await
            },
        );
        let what = format!("round {round}: upload {up}, bucket delete {del}");
        // An upload refused before its body was read may see the connection closed (0).
        if up >= 500 || is_5xx_or_broken(del) {
            broken.push(format!("{what}: a 5xx or a broken connection"));
        }
        if up == 201 && del == 204 {
            broken.push(format!("{what}: both succeeded"));
        }
        if !matches!(up, 0 | 201 | 403 | 404 | 409 | 410) {
            broken.push(format!("{what}: unexpected upload status"));
        }
        if !matches!(del, 204 | 406 | 409) {
            broken.push(format!("{what}: unexpected bucket delete status"));
        }
        if up == 201 {
            let (s, hash, bytes) = get(&c, &site, &format!("{bucket}/obj")).await;
            if s != 200 || bytes != body || hash.as_deref() != Some(ccs_hash(&body).as_str()) {
                broken.push(format!(
                    "{what}: the uploaded object reads {s} ({} bytes)",
                    bytes.len()
                ));
            }
        }
        if del == 204 {
            let (s, _, _) = get(&c, &site, &bucket).await;
            if !matches!(s, 404 | 410) {
                broken.push(format!("{what}: the deleted bucket reads {s}"));
            }
            if !gone_from_disk(&object_file(&site, &bucket, "obj")).await {
                broken.push(format!("{what}: bytes left on disk in a deleted bucket"));
            }
        }
    }
    assert!(rounds >= 10, "only {rounds} rounds ran");
    report(&broken, rounds);
}

// ---- 2. concurrent DELETEs of one object ----------------------------------------------------

#[tokio::test]
async fn concurrent_deletes_of_one_object_succeed_once() {
    // contract: of concurrent DELETEs of one object exactly one answers 204; its bytes are gone
    let site = lone_site();
    let c = http();
    create_bucket(&site, "deletes").await;
    let start = Instant::now();
    let mut broken = Vec::new();
    let mut rounds = 0;
    for round in 0..60 {
        if start.elapsed() > BUDGET {
            break;
        }
        rounds += 1;
        let key = format!("obj-{round:03}");
        let body = data(10_000 + round * 1_000, round as u64);
        put_object(&site, "deletes", &key, body).await;
        let path = format!("deletes/{key}");
        // All at once: the overlap is what is tested.
        let statuses = futures::future::join_all((0..4).map(|_| delete(&c, &site, &path))).await;
        let what = format!("round {round}: DELETE statuses {statuses:?}");
        let ok = statuses.iter().filter(|&&s| s == 204).count();
        if ok != 1 {
            broken.push(format!("{what}: {ok} answered 204"));
        }
        if let Some(s) = statuses
            .iter()
            .find(|&&s| !matches!(s, 204 | 404 | 409 | 410))
        {
            broken.push(format!("{what}: unexpected status {s}"));
        }
        let (s, _, _) = get(&c, &site, &path).await;
        if !matches!(s, 404 | 410) {
            broken.push(format!("{what}: the object reads {s} afterwards"));
        }
        // The bytes go with the 204 (allow a moment for a delete still finishing).
        if !gone_from_disk(&object_file(&site, "deletes", &key)).await {
            broken.push(format!("{what}: the bytes are still on disk"));
        }
    }
    assert!(rounds >= 10, "only {rounds} rounds ran");
    report(&broken, rounds);
}

// ---- 3. a DELETE racing a re-upload of the same name ----------------------------------------

#[tokio::test]
async fn a_delete_racing_a_reupload_never_loses_an_acknowledged_upload() {
    // contract: an upload answered 201 becomes READY (GET 200, same hash) unless a later delete
    // succeeded
    let site = lone_site();
    let c = http();
    create_bucket(&site, "reupload").await;
    let start = Instant::now();
    let mut broken = Vec::new();
    let mut rounds = 0;
    for round in 0..60 {
        if start.elapsed() > BUDGET {
            break;
        }
        rounds += 1;
        let key = format!("obj-{round:03}");
        let path = format!("reupload/{key}");
        let v1 = data(5_000, round as u64);
        let v2 = data(
            if round % 2 == 0 { 3_000 } else { 150_000 },
            1_000 + round as u64,
        );
        put_object(&site, "reupload", &key, v1.clone()).await;

        // The re-upload is retried while the old version is still in the way (as a client that
        // replaces an object does); the delete is sent once.
        let ((up, up_done), (del, del_sent)) = tokio::join!(
            async {
                jitter(round, 0).await;
                let mut last = 0;
                for _ in 0..20 {
                    last = upload(&c, &site, "reupload", &key, v2.clone()).await;
                    // 0: refused before the body was read, the connection closed under it.
                    if !matches!(last, 0 | 406 | 409) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                (last, Instant::now())
            },
            async {
                jitter(round, 1).await;
                let sent = Instant::now();
                (delete(&c, &site, &path).await, sent)
            },
        );
        let what = format!("round {round}: re-upload {up}, delete {del}");
        if is_5xx_or_broken(up) || is_5xx_or_broken(del) {
            broken.push(format!("{what}: a 5xx or a broken connection"));
        }
        if !matches!(up, 201 | 406 | 409) {
            broken.push(format!("{what}: unexpected upload status"));
        }
        if !matches!(del, 204 | 404 | 409 | 410) {
            broken.push(format!("{what}: unexpected delete status"));
        }
        // Uploading over a READY object answers 409 (CCS), so a 201 here means this round's
        // delete came first, unless it was sent after the upload was acknowledged.
        let later_delete = del == 204 && del_sent > up_done;
        let want_v2 = up == 201 && !later_delete;
        let want_gone = del == 204 && up != 201;
        if want_v2 {
            // "becomes READY": allow it a moment.
            let deadline = Instant::now() + Duration::from_secs(3);
            let last = loop {
                let got = get(&c, &site, &path).await;
                if got.0 == 200 || Instant::now() > deadline {
                    break got;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let (s, hash, bytes) = last;
            if s != 200 || hash.as_deref() != Some(ccs_hash(&v2).as_str()) || bytes != v2 {
                broken.push(format!(
                    "{what}: the acknowledged upload reads {s}, hash {hash:?}, {} bytes (want {})",
                    bytes.len(),
                    v2.len()
                ));
            }
            if !object_file(&site, "reupload", &key).exists() {
                broken.push(format!(
                    "{what}: the acknowledged upload has no bytes on disk"
                ));
            }
        } else if want_gone {
            let (s, _, _) = get(&c, &site, &path).await;
            if !matches!(s, 404 | 410) {
                broken.push(format!("{what}: the deleted object reads {s}"));
            }
        } else if up != 201 && del != 204 {
            // Neither happened: the first version is intact.
            let (s, _, bytes) = get(&c, &site, &path).await;
            if s != 200 || bytes != v1 {
                broken.push(format!("{what}: v1 reads {s} ({} bytes)", bytes.len()));
            }
        }
    }
    assert!(rounds >= 10, "only {rounds} rounds ran");
    report(&broken, rounds);
}

// ---- 4. crash windows --------------------------------------------------------------------------

/// A delete interrupted between DELETING and DELETED (a crash) is finished at the next start:
/// the bytes go and the object reads as deleted, instead of staying DELETING (409) for good.
#[tokio::test]
async fn a_delete_left_deleting_by_a_crash_is_finished_at_start() {
    let mut site = lone_site();
    create_bucket(&site, "crash").await;
    put_object(&site, "crash", "k", data(10_000, 3)).await;
    let file = object_file(&site, "crash", "k");
    assert!(file.exists());
    site.kill9();
    // What a crash right after the compare-and-set to DELETING leaves behind.
    let url = format!("sqlite://{}", site.dir.join("meta.db").display());
    let meta = mirrorgate::meta::MetaStore::open(&url).await.unwrap();
    let obj = meta.begin_delete("crash", "k", None).await.unwrap();
    assert_eq!(obj.status, mirrorgate::meta::Status::Ready);
    drop(meta);
    site.restart();
    let c = http();
    let (status, _, _) = get(&c, &site, "crash/k").await;
    assert_eq!(status, 404, "the object is not served");
    // DELETED, not stuck DELETING (which would answer 409).
    assert_eq!(
        delete(&c, &site, "crash/k").await,
        410,
        "the interrupted delete is finished"
    );
    assert!(gone_from_disk(&file).await, "its bytes are removed");
    // The name can be used again.
    assert_eq!(upload(&c, &site, "crash", "k", data(100, 4)).await, 201);
}
