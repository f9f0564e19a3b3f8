mod common;
use common::*;

#[tokio::test]
async fn a_site_starts_serves_and_stops_cleanly() {
    let mut site = Site::start("site-a", "");
    let r = reqwest::get(site.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    create_bucket(&site, "bucket-1").await;
    put_object(&site, "bucket-1", "a/b.txt", b"hello".to_vec()).await;
    let body = client()
        .get(site.url("/cloudclonestore/bucket-1/a/b.txt"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&body[..], b"hello");
    assert!(site.terminate().success());
}
