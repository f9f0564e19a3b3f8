//! A fault-injecting TCP proxy for tests: one listener on 127.0.0.1 port 0 forwarding to one
//! upstream address. Point a site's topology entry for a peer (or a storage endpoint) at it,
//! then cut, slow, reset or half-partition the link while traffic flows.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// What the link does to traffic, from now on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Bytes pass untouched.
    Healthy,
    /// Open connections are cut and new ones closed at once (a dead link or a crashed host).
    Drop,
    /// Each chunk waits this long before it is forwarded (a slow link or a slow server).
    Delay(Duration),
    /// Each connection is reset (RST) once this many bytes crossed it, either way: a transfer
    /// broken in the middle of a body.
    ResetAfter(u64),
    /// Requests reach the upstream but nothing comes back (one-way partition).
    BlockReplies,
    /// Nothing reaches the upstream; the connection stays open (one-way partition).
    BlockRequests,
    /// Requests pass, but a connection whose request carried this text (ASCII, any case)
    /// is reset instead of answered: the upstream did the work, the caller never learns it.
    LoseReplyTo(&'static str),
}

/// Direction of a chunk through the proxy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Request,
    Reply,
}

struct Shared {
    fault: Mutex<Fault>,
    live: Mutex<Vec<AbortHandle>>,
}

impl Shared {
    fn fault(&self) -> Fault {
        *self.fault.lock().unwrap()
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding to `upstream` (which may be down now and come back later).
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::Healthy),
            live: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, upstream, shared.clone()));
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the link's behaviour; `Drop` also cuts every open connection.
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
        if fault == Fault::Drop {
            self.cut_all();
        }
    }

    pub fn heal(&self) {
        self.set(Fault::Healthy);
    }

    /// Cuts every open connection (whatever the fault).
    pub fn cut_all(&self) {
        for conn in self.shared.live.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if shared.fault() == Fault::Drop {
            continue; // dropped: closed at once
        }
        let conn = tokio::spawn(relay(client, upstream, shared.clone()));
        let mut live = shared.live.lock().unwrap();
        live.retain(|c| !c.is_finished());
        live.push(conn.abort_handle());
    }
}

/// One connection: both directions copied chunk by chunk, each chunk subject to the fault.
async fn relay(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // upstream down: the client sees its connection closed
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let crossed = Arc::new(AtomicU64::new(0));
    let doomed = Arc::new(AtomicBool::new(false));
    let requests = pump(
        client_read,
        server_write,
        Way::Request,
        shared.clone(),
        (crossed.clone(), doomed.clone()),
    );
    let replies = pump(
        server_read,
        client_write,
        Way::Reply,
        shared,
        (crossed, doomed),
    );
    // Either side ending (or a reset) ends the connection.
    tokio::select! {
        _ = requests => {},
        _ = replies => {},
    }
}

/// Copies one direction; returns when the source closes, a write fails, or a reset is due.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    way: Way,
    shared: Arc<Shared>,
    (crossed, doomed): (Arc<AtomicU64>, Arc<AtomicBool>),
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        while blocked(shared.fault(), way) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match shared.fault() {
            Fault::Delay(d) => tokio::time::sleep(d).await,
            Fault::ResetAfter(limit) => {
                let before = crossed.fetch_add(n as u64, Ordering::SeqCst);
                if before + n as u64 > limit {
                    let keep = limit.saturating_sub(before) as usize;
                    let _ = to.write_all(&chunk[..keep]).await;
                    reset(&to);
                    return;
                }
            }
            Fault::LoseReplyTo(marker) if way == Way::Request => {
                let text = String::from_utf8_lossy(chunk).to_ascii_lowercase();
                if text.contains(&marker.to_ascii_lowercase()) {
                    doomed.store(true, Ordering::SeqCst);
                }
            }
            _ => {}
        }
        if way == Way::Reply && doomed.load(Ordering::SeqCst) {
            reset(&to);
            return;
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}

fn blocked(fault: Fault, way: Way) -> bool {
    matches!(
        (fault, way),
        (Fault::BlockReplies, Way::Reply) | (Fault::BlockRequests, Way::Request)
    )
}

/// Makes the socket close with RST instead of FIN once the connection's halves are dropped:
/// the peer sees "connection reset" in the middle of a transfer.
#[allow(deprecated)]
fn reset(half: &OwnedWriteHalf) {
    let stream: &TcpStream = half.as_ref();
    let _ = stream.set_linger(Some(Duration::ZERO));
}
