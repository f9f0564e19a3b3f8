//! Bounds under hostile or broken clients (`[limits]`): silent and idle connections are closed,
//! trickling uploads are aborted, connections beyond `max_connections` are refused at once
//! without locking `/healthz` out for good, and HTTP/2 heads over `max_header_bytes` get 431.
//! Every client talks to 127.0.0.1 and every wait is bounded.

mod common;
use common::*;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BUCKET: &str = "bucket-1";
const WAIT: Duration = Duration::from_secs(10);

/// Reads until the server closes (EOF or reset) or `limit` passes; answers what was read and
/// whether the connection ended.
async fn read_until_closed(socket: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Err(_) => return (reply, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (reply, true),
            Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
        }
    }
}

fn status_of(reply: &[u8]) -> u16 {
    String::from_utf8_lossy(reply)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A client that opens no pooled connection: every request is on a fresh connection.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let site = Site::start(
        "site-a",
        "[limits]\nheader_read_timeout_ms = 1000\nidle_timeout_secs = 30\n",
    );
    let start = Instant::now();
    let mut silent = TcpStream::connect(&site.addr).await.unwrap();
    let (reply, closed) = read_until_closed(&mut silent, WAIT).await;
    let elapsed = start.elapsed();
    assert!(closed, "a connection sending nothing is closed");
    assert!(reply.is_empty(), "nothing is answered to it");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(8),
        "closed after the header timeout, not before: {elapsed:?}"
    );

    // A partial request head is cut the same way.
    let start = Instant::now();
    let mut partial = TcpStream::connect(&site.addr).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut partial, WAIT).await;
    assert!(closed && start.elapsed() < Duration::from_secs(8));

    let health = fresh_client().get(site.url("/healthz")).send().await;
    assert_eq!(health.unwrap().status(), 200, "the server keeps serving");
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_after_the_header_timeout() {
    let certs = tempfile::tempdir().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert_file, key_file) = (certs.path().join("c.pem"), certs.path().join("k.pem"));
    std::fs::write(&cert_file, key.cert.pem()).unwrap();
    std::fs::write(&key_file, key.key_pair.serialize_pem()).unwrap();
    let site = Site::start(
        "site-a",
        &format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n[limits]\nheader_read_timeout_ms = 1000\n",
            cert_file.display(),
            key_file.display()
        ),
    );
    assert!(site.url.starts_with("https://"));
    let start = Instant::now();
    let mut stalled = TcpStream::connect(&site.addr).await.unwrap();
    // The first bytes of a TLS record header, then nothing.
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let (_, closed) = read_until_closed(&mut stalled, WAIT).await;
    let elapsed = start.elapsed();
    assert!(closed, "a stalled TLS handshake is cut");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(8),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_silent_http2_connection_is_closed_after_the_header_timeout() {
    let site = Site::start(
        "site-a",
        "[limits]\nheader_read_timeout_ms = 1000\nidle_timeout_secs = 30\n",
    );
    let start = Instant::now();
    let mut socket = TcpStream::connect(&site.addr).await.unwrap();
    // The HTTP/2 preface and an empty SETTINGS frame, then no request.
    socket
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let (reply, closed) = read_until_closed(&mut socket, WAIT).await;
    let elapsed = start.elapsed();
    assert!(closed, "an HTTP/2 connection without a request is closed");
    assert!(
        !reply.is_empty(),
        "the server spoke HTTP/2 (SETTINGS, GOAWAY)"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(8),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let site = Site::start(
        "site-a",
        "[limits]\nheader_read_timeout_ms = 5000\nidle_timeout_secs = 1\n",
    );
    let mut socket = TcpStream::connect(&site.addr).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, socket.read(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(status_of(&buf[..n]), 200);
    let start = Instant::now();
    let (_, closed) = read_until_closed(&mut socket, WAIT).await;
    let elapsed = start.elapsed();
    assert!(closed, "the idle keep-alive connection is closed");
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(4),
        "closed after the idle timeout (1 s), before the header timeout (5 s): {elapsed:?}"
    );
}

#[tokio::test]
async fn a_trickling_upload_is_aborted_and_leaves_nothing() {
    let site = Site::start(
        "site-a",
        "[limits]\nmin_body_rate_bytes_per_sec = 2000\nbody_rate_grace_secs = 1\n",
    );
    create_bucket(&site, BUCKET).await;
    // An upload at full speed is unaffected.
    put_object(&site, BUCKET, "fast", data(1 << 20, 1)).await;

    let mut socket = TcpStream::connect(&site.addr).await.unwrap();
    let head = format!(
        "POST /cloudclonestore/{BUCKET}/slow HTTP/1.1\r\nhost: {}\r\nx-clonecloudstore-client-id: {CLIENT}\r\ncontent-length: 100000\r\n\r\n",
        site.addr
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = socket.into_split();
    // 20 bytes every 100 ms: 200 B/s, a tenth of the minimum.
    let writer = tokio::spawn(async move {
        let chunk = data(20, 7);
        for _ in 0..150 {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let start = Instant::now();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    writer.abort();
    assert!(read.is_ok(), "the trickling upload is cut within {WAIT:?}");
    assert!(start.elapsed() < Duration::from_secs(8));
    let status = status_of(&reply);
    eprintln!(
        "TRICKLE STATUS {status} {:?}",
        String::from_utf8_lossy(&reply)
    );
    assert_ne!(status, 201, "the trickling upload did not succeed");

    assert!(
        site.metric("mirrorgate_slow_bodies_total").await >= 1.0,
        "cut by the body rate bound"
    );

    let url = site.url(&format!("/cloudclonestore/{BUCKET}/slow"));
    eventually(WAIT, "aborted upload not visible", || async {
        let r = client().get(&url).send().await.unwrap();
        (r.status() == 404).then_some(())
    })
    .await;
    let fast = client()
        .get(site.url(&format!("/cloudclonestore/{BUCKET}/fast")))
        .send()
        .await
        .unwrap();
    assert_eq!(fast.status(), 200);
    assert_eq!(fast.bytes().await.unwrap().len(), 1 << 20);
}

#[tokio::test]
async fn an_upload_above_the_minimum_rate_succeeds() {
    let site = Site::start(
        "site-a",
        "[limits]\nmin_body_rate_bytes_per_sec = 2000\nbody_rate_grace_secs = 1\n",
    );
    create_bucket(&site, BUCKET).await;
    // 1000 bytes every 100 ms (10 kB/s) for 2.5 s: slow, but five times the minimum.
    let chunks = futures::stream::unfold(0u32, |i| async move {
        if i == 25 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok::<_, std::io::Error>(data(1000, u64::from(i))), i + 1))
    });
    let r = tokio::time::timeout(
        WAIT,
        client()
            .post(site.url(&format!("/cloudclonestore/{BUCKET}/steady")))
            .header("content-length", "25000")
            .body(reqwest::Body::wrap_stream(chunks))
            .send(),
    )
    .await
    .expect("bounded")
    .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(site.metric("mirrorgate_slow_bodies_total").await, 0.0);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_until_idle_ones_are_cut() {
    let site = Site::start(
        "site-a",
        "[limits]\nmax_connections = 8\nheader_read_timeout_ms = 1500\nidle_timeout_secs = 1\n",
    );
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(&site.addr).await.unwrap());
    }
    // Give the accept loop time to take all eight (well within the header timeout).
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now();
    let mut ninth = TcpStream::connect(&site.addr).await.unwrap();
    let _ = ninth
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let (reply, closed) = read_until_closed(&mut ninth, Duration::from_secs(1)).await;
    assert!(closed, "the ninth connection is closed at once");
    assert!(start.elapsed() < Duration::from_secs(1));
    let status = status_of(&reply);
    assert!(
        status == 503 || reply.is_empty(),
        "refused: {}",
        String::from_utf8_lossy(&reply)
    );

    // The eight silent connections are cut by the header timeout; /healthz answers again.
    eventually(WAIT, "healthz on a fresh connection", || async {
        match fresh_client().get(site.url("/healthz")).send().await {
            Ok(r) if r.status() == 200 => Some(()),
            _ => None,
        }
    })
    .await;
    for mut socket in idle {
        let (_, closed) = read_until_closed(&mut socket, WAIT).await;
        assert!(closed, "idle connections were cut");
    }
    assert!(site.metric("mirrorgate_connections_refused_total").await >= 1.0);
    assert!(site.metric("mirrorgate_connections_open").await >= 1.0);
}

#[tokio::test]
async fn an_http2_head_over_the_limit_gets_431() {
    let site = Site::start("site-a", "[limits]\nmax_header_bytes = 16384\n");
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-clonecloudstore-client-id", CLIENT.parse().unwrap());
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .default_headers(h)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let ok = h2.get(site.url("/cloudclonestore")).send().await.unwrap();
    assert_eq!(ok.version(), reqwest::Version::HTTP_2);
    assert_eq!(ok.status(), 200);

    let r = h2
        .get(site.url("/cloudclonestore"))
        .header("x-clonecloudstore-op-id", "op-431")
        .header("x-padding", "x".repeat(40 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert!(header("x-clonecloudstore-error").is_some_and(|e| !e.is_empty()));
    assert_eq!(header("x-clonecloudstore-op-id").as_deref(), Some("op-431"));
    assert_eq!(
        header("x-clonecloudstore-module").as_deref(),
        Some("ACCESSOR")
    );

    // Just under the limit passes; the connection is still usable.
    let under = h2
        .get(site.url("/cloudclonestore"))
        .header("x-padding", "x".repeat(12 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(under.status(), 200);

    // Far beyond the limit: never accepted (h2 itself refuses), and the server keeps serving.
    let huge = h2
        .get(site.url("/cloudclonestore"))
        .header("x-padding", "x".repeat(200 * 1024))
        .send()
        .await;
    if let Ok(r) = huge {
        assert!(!r.status().is_success(), "a huge head is refused");
    }
    let health = fresh_client().get(site.url("/healthz")).send().await;
    assert_eq!(health.unwrap().status(), 200);
}
