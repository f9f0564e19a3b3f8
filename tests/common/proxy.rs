//! A TCP proxy for tests: forwards 127.0.0.1 connections to a site, and can throttle what
//! comes back or cut a connection once after a number of bytes (a network cut mid-transfer).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Controls {
    /// A connection whose answer passes this many bytes is cut, once (0: never).
    cut_after: AtomicU64,
    armed: AtomicBool,
    /// Answers flow at about this many bytes per second (0: unlimited).
    bytes_per_second: AtomicU64,
    /// Connections cut so far.
    cuts: AtomicUsize,
}

pub struct Proxy {
    pub url: String,
    controls: Arc<Controls>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1 port 0 and forwards to `target` (`host:port`).
    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let controls = Arc::new(Controls::default());
        let (target, shared) = (target.to_owned(), controls.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (target, controls) = (target.clone(), shared.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&target).await {
                        forward(client, server, &controls).await;
                    }
                });
            }
        });
        Proxy {
            url,
            controls,
            task,
        }
    }

    /// The next connection whose answer passes `bytes` bytes is cut there.
    pub fn cut_once_after(&self, bytes: u64) {
        self.controls.cut_after.store(bytes, Ordering::SeqCst);
        self.controls.armed.store(true, Ordering::SeqCst);
    }

    /// Answers flow at about `bytes_per_second` (0: unlimited).
    pub fn throttle(&self, bytes_per_second: u64) {
        self.controls
            .bytes_per_second
            .store(bytes_per_second, Ordering::SeqCst);
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.controls.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(client: TcpStream, server: TcpStream, controls: &Controls) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    let mut passed = 0u64;
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let limit = controls.cut_after.load(Ordering::SeqCst);
        if controls.armed.load(Ordering::SeqCst)
            && passed + n as u64 > limit
            && controls.armed.swap(false, Ordering::SeqCst)
        {
            let keep = limit.saturating_sub(passed) as usize;
            let _ = client_write.write_all(&buf[..keep]).await;
            controls.cuts.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
        passed += n as u64;
        let rate = controls.bytes_per_second.load(Ordering::SeqCst);
        if rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
    }
    upstream.abort();
}
