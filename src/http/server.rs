//! The accept loop: plain or TLS connections served by hyper-util (HTTP/1.1 and HTTP/2), bounded
//! against hostile or broken clients, with a graceful drain on shutdown.
//!
//! Bounds (keys of `[limits]`):
//! - `max_connections`: a semaphore permit is held for a connection's whole life (TLS handshake
//!   included). When none is left, a new connection is closed at once; on plain HTTP it first
//!   gets a best-effort `HTTP/1.1 503` with `connection: close` (written without waiting, never
//!   read from). `mirrorgate_connections_open` / `mirrorgate_connections_refused_total`.
//! - `header_read_timeout_ms`: the TLS handshake, then the first request (complete HTTP/1.1 head,
//!   or HTTP/2 preface and HEADERS) must each arrive within it, else the connection is closed.
//! - `idle_timeout_secs`: a connection with no request in flight (from the request head until its
//!   response body is finished or dropped) for this long is shut down gracefully (HTTP/1.1 close,
//!   HTTP/2 GOAWAY), and dropped if it has not ended 2 s later. This also bounds every
//!   later HTTP/1.1 head. HTTP/2 peers are pinged at this interval and must answer within the
//!   header timeout, so a dead peer is detected during long streams.
//! - `min_body_rate_bytes_per_sec` over `body_rate_grace_secs`: [`MinRateBody`] wraps every
//!   request body; a body trickling below the rate fails, which aborts the handler's upload.
//! - `max_header_bytes`: HTTP/1.1 heads over it get 431 from hyper. HTTP/2 advertises a larger
//!   `SETTINGS_MAX_HEADER_LIST_SIZE` (so hyper does not reset the stream first) and the head size
//!   as HTTP/2 counts it (name + value + 32 per field, pseudo-headers included) is checked here:
//!   over the limit, 431 with the CCS error headers.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Version};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::config::LimitsConfig;
use crate::http::common;
use crate::http::peer::PeerCertNames;

pub struct ServeOptions {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub max_header_bytes: usize,
    pub drain_timeout: Duration,
    /// The connection bounds (`header_read_timeout_ms`, `idle_timeout_secs`, body rate,
    /// `max_connections`); `max_header_bytes` and the drain timeout are taken from the fields
    /// above.
    pub limits: LimitsConfig,
}

/// How long an idle connection that was asked to close may take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The per-connection bounds, resolved from the config (`None`: disabled).
#[derive(Debug, Clone, Copy)]
struct Bounds {
    header_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    /// (bytes required per window, window)
    body_rate: Option<(u64, Duration)>,
    max_header_bytes: usize,
}

impl Bounds {
    fn new(options: &ServeOptions) -> Self {
        let l = &options.limits;
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        Self {
            header_timeout: nonzero(Duration::from_millis(l.header_read_timeout_ms)),
            idle_timeout: nonzero(Duration::from_secs(l.idle_timeout_secs)),
            body_rate: (l.min_body_rate_bytes_per_sec > 0 && l.body_rate_grace_secs > 0).then(
                || {
                    (
                        l.min_body_rate_bytes_per_sec
                            .saturating_mul(l.body_rate_grace_secs),
                        Duration::from_secs(l.body_rate_grace_secs),
                    )
                },
            ),
            max_header_bytes: options.max_header_bytes,
        }
    }
}

/// Serves until `shutdown` resolves, then stops accepting and waits (up to the drain timeout)
/// for in-flight requests and streams to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let bounds = Bounds::new(&options);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(options.max_header_bytes.max(8192))
        .timer(TokioTimer::new())
        // Head and idle timeouts are enforced per connection by `drive` (hyper's own timer
        // would also cut idle keep-alive connections at the head timeout).
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(h2_header_list_size(options.max_header_bytes))
        .keep_alive_interval(bounds.idle_timeout.map(|d| d.max(Duration::from_secs(1))))
        .keep_alive_timeout(bounds.header_timeout.unwrap_or(Duration::from_secs(20)));
    let slots = match options.limits.max_connections {
        0 => None,
        n => Some(Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)))),
    };
    // Every connection task holds a sender: the drain ends when all of them are dropped.
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let permit = match &slots {
            None => None,
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    refuse(stream, options.tls.is_none());
                    tracing::debug!(%peer, "connection refused: max_connections reached");
                    continue;
                }
            },
        };
        let slot = Slot::new(permit, drain_tx.clone());
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let app = app.clone();
        let stop = stop_rx.clone();
        let tls = options.tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => {
                    let activity = Activity::new();
                    let service = ConnService::new(app, peer, bounds, activity.clone());
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    drive(conn, activity, bounds, stop, peer).await
                }
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    let tls = match bounds.header_timeout {
                        None => handshake.await,
                        Some(t) => match tokio::time::timeout(t, handshake).await {
                            Ok(r) => r,
                            Err(_) => return tracing::info!(%peer, "TLS handshake timed out"),
                        },
                    };
                    let tls = match tls {
                        Ok(tls) => tls,
                        Err(e) => return tracing::info!(%peer, "TLS handshake refused: {e}"),
                    };
                    // The client certificate's names, for the peer check (mTLS).
                    let names = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|cert| PeerCertNames(crate::http::peer::cert_names(cert)));
                    let activity = Activity::new();
                    let mut service = ConnService::new(app, peer, bounds, activity.clone());
                    service.cert_names = names;
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    drive(conn, activity, bounds, stop, peer).await
                }
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    drop(drain_tx);
    if tokio::time::timeout(options.drain_timeout, drain_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
}

/// The HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`: above `max_header_bytes`, so that heads a little
/// over it reach [`ConnService`] and get a CCS 431 (h2 itself answers a bare 431 or drops the
/// connection beyond this).
fn h2_header_list_size(max_header_bytes: usize) -> u32 {
    max_header_bytes
        .saturating_add(64 * 1024)
        .min(u32::MAX as usize) as u32
}

/// A connection beyond `max_connections`: closed at once. Plain HTTP first gets a minimal 503
/// if the socket accepts it without waiting (a fresh socket's send buffer is empty).
fn refuse(stream: TcpStream, plain: bool) {
    metrics::counter!("mirrorgate_connections_refused_total").increment(1);
    if plain {
        let _ = stream.try_write(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nx-clonecloudstore-error: too many connections\r\n\r\n",
        );
    }
    drop(stream);
}

/// One open connection: its `max_connections` permit, its hold on the drain, and the gauge.
struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
    _drain: mpsc::Sender<()>,
}

impl Slot {
    fn new(permit: Option<OwnedSemaphorePermit>, drain: mpsc::Sender<()>) -> Self {
        metrics::gauge!("mirrorgate_connections_open").increment(1.0);
        Self {
            _permit: permit,
            _drain: drain,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("mirrorgate_connections_open").decrement(1.0);
    }
}

/// Request activity of one connection, for the head and idle timeouts.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// When the last request ended, in milliseconds since `start`.
    last_end_ms: AtomicU64,
    /// Woken when a request ends, to move the idle deadline.
    ended: Notify,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_end_ms: AtomicU64::new(0),
            ended: Notify::new(),
        })
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// When the connection, idle now, must close; `None` while a request is in flight or when
    /// the applicable timeout is disabled.
    fn deadline(&self, bounds: &Bounds) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        if self.requests.load(Ordering::SeqCst) == 0 {
            let first = bounds.header_timeout.or(bounds.idle_timeout);
            return first.map(|t| self.start + t);
        }
        let last_end = Duration::from_millis(self.last_end_ms.load(Ordering::SeqCst));
        bounds.idle_timeout.map(|t| self.start + last_end + t)
    }
}

/// A request in flight, from its head until its response body is finished or dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = self.0.start.elapsed().as_millis() as u64;
        self.0.last_end_ms.fetch_max(ms, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.ended.notify_one();
    }
}

/// Runs one connection until it ends, closing it when it idles past its timeouts or when the
/// server shuts down (gracefully: in-flight requests finish, the drain timeout bounds them).
async fn drive<I>(
    conn: auto::UpgradeableConnection<'_, I, ConnService, TokioExecutor>,
    activity: Arc<Activity>,
    bounds: Bounds,
    mut stop: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    tokio::pin!(conn);
    // Set once the connection was asked to close because it idled: then it is dropped if it
    // has not ended after CLOSE_GRACE with nothing in flight.
    let mut closing_since: Option<Instant> = None;
    let mut stopping = false;
    loop {
        // While a request is in flight there is no deadline: its end wakes the loop.
        let wake = match closing_since {
            Some(since) => {
                (activity.in_flight.load(Ordering::SeqCst) == 0).then_some(since + CLOSE_GRACE)
            }
            None => activity.deadline(&bounds),
        };
        let timed = wake.is_some();
        let sleep_to = wake.unwrap_or_else(Instant::now);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                return;
            }
            _ = activity.ended.notified() => {}
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(sleep_to), if timed => {
                let now = Instant::now();
                let idle = activity.in_flight.load(Ordering::SeqCst) == 0;
                match closing_since {
                    Some(since) if idle && now >= since + CLOSE_GRACE => {
                        tracing::debug!(%peer, "idle connection did not close; dropped");
                        return;
                    }
                    Some(_) => {}
                    None => {
                        if activity.deadline(&bounds).is_some_and(|d| now >= d) {
                            let first = activity.requests.load(Ordering::SeqCst) == 0;
                            tracing::debug!(%peer, "closing {} connection", if first { "silent" } else { "idle" });
                            closing_since = Some(now);
                            if !stopping {
                                conn.as_mut().graceful_shutdown();
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The per-connection service: peer address as axum's `ConnectInfo`, the HTTP/2 head size
/// check, the body rate bound, and in-flight tracking for the idle timeout.
#[derive(Clone)]
struct ConnService {
    app: Router,
    peer: std::net::SocketAddr,
    bounds: Bounds,
    activity: Arc<Activity>,
    /// Names of the TLS client certificate, when the client presented one.
    cert_names: Option<PeerCertNames>,
}

impl ConnService {
    fn new(
        app: Router,
        peer: std::net::SocketAddr,
        bounds: Bounds,
        activity: Arc<Activity>,
    ) -> Self {
        Self {
            app,
            peer,
            bounds,
            activity,
            cert_names: None,
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        if req.version() == Version::HTTP_2 && h2_head_size(&req) > self.bounds.max_header_bytes {
            let resp = header_too_large(&req, self.bounds.max_header_bytes);
            return Box::pin(
                async move { Ok(resp.map(|b| Body::new(Tracked::new(b, in_flight)))) },
            );
        }
        let body_rate = self.bounds.body_rate;
        let mut req = req.map(|body| match body_rate {
            Some((min, window)) => Body::new(MinRateBody::new(body, min, window)),
            None => Body::new(body),
        });
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        if let Some(names) = &self.cert_names {
            req.extensions_mut().insert(names.clone());
        }
        let app = self.app.clone();
        Box::pin(async move {
            let resp = app.oneshot(req).await?;
            Ok(resp.map(|b| Body::new(Tracked::new(b, in_flight))))
        })
    }
}

/// Size of a request head as HTTP/2 counts it against `SETTINGS_MAX_HEADER_LIST_SIZE`: name +
/// value + 32 for every field, the pseudo-headers included.
fn h2_head_size<B>(req: &Request<B>) -> usize {
    const ENTRY: usize = 32;
    let uri = req.uri();
    let pseudo = [
        (":method", req.method().as_str().len()),
        (
            ":path",
            uri.path_and_query().map_or(1, |p| p.as_str().len()),
        ),
        (":scheme", uri.scheme_str().map_or(0, str::len)),
        (
            ":authority",
            uri.authority().map_or(0, |a| a.as_str().len()),
        ),
    ]
    .iter()
    .map(|(name, len)| name.len() + len + ENTRY)
    .sum::<usize>();
    pseudo
        + req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + ENTRY)
            .sum::<usize>()
}

/// 431 in the CCS envelope (the router's common protocol is not reached).
fn header_too_large<B>(req: &Request<B>, max: usize) -> Response {
    let message = format!("request head larger than {max} bytes");
    tracing::info!(status = 431, "{message}");
    let (family, module) = common::family_of(req.uri().path());
    let op_id = req
        .headers()
        .get(&common::OP_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("uuid is ASCII")
        });
    metrics::counter!("mirrorgate_requests_total", "family" => family, "status" => "431")
        .increment(1);
    let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    let body = serde_json::json!({ "status": status.as_u16(), "message": message });
    (
        status,
        [
            (common::ERROR, common::text_header(&message)),
            (common::OP_ID, op_id),
            (common::MODULE, HeaderValue::from_static(module)),
        ],
        axum::Json(body),
    )
        .into_response()
}

/// A response body holding its request's [`InFlight`] until it is finished or dropped.
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl Tracked {
    fn new(inner: Body, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails when the client delivers fewer than `min_bytes` during `window`
/// of waiting on it. Only time spent waiting on the client counts (the body is pending): while
/// the handler does not poll (back-pressure from storage) the clock is stopped. Each window
/// that delivered enough starts a new one.
pub struct MinRateBody<B> {
    inner: B,
    min_bytes: u64,
    window: Duration,
    /// Bytes received in the current window.
    bytes: u64,
    /// Time spent waiting on the client in the current window, before `pending_since`.
    waited: Duration,
    /// Since when the body is pending, if it is.
    pending_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> MinRateBody<B> {
    pub fn new(inner: B, min_bytes: u64, window: Duration) -> Self {
        Self {
            inner,
            min_bytes,
            window,
            bytes: 0,
            waited: Duration::ZERO,
            pending_since: None,
            timer: None,
        }
    }

    /// Time waited in the current window as of `now`.
    fn waited_at(&self, now: Instant) -> Duration {
        self.waited + self.pending_since.map_or(Duration::ZERO, |s| now - s)
    }

    /// Closes the window if it is over: an error when it delivered too little.
    fn check(&mut self, now: Instant) -> Result<(), axum::BoxError> {
        if self.waited_at(now) < self.window {
            return Ok(());
        }
        if self.bytes < self.min_bytes {
            metrics::counter!("mirrorgate_slow_bodies_total").increment(1);
            return Err(format!(
                "request body too slow: {} bytes in {} s (minimum {} bytes/s)",
                self.bytes,
                self.window.as_secs(),
                self.min_bytes / self.window.as_secs().max(1)
            )
            .into());
        }
        self.bytes = 0;
        self.waited = Duration::ZERO;
        if self.pending_since.is_some() {
            self.pending_since = Some(now);
        }
        Ok(())
    }
}

impl<B> http_body::Body for MinRateBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let now = Instant::now();
                if let Some(since) = this.pending_since.take() {
                    this.waited += now - since;
                }
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                    None => return Poll::Ready(None),
                };
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if let Err(e) = this.check(now) {
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let now = Instant::now();
                this.pending_since.get_or_insert(now);
                if let Err(e) = this.check(now) {
                    return Poll::Ready(Some(Err(e)));
                }
                let deadline = now + (this.window - this.waited_at(now));
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::SinkExt;
    use http_body_util::{BodyExt, StreamBody};

    type Sender = futures::channel::mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

    fn body(
        window_ms: u64,
        min_bytes: u64,
    ) -> (
        Sender,
        MinRateBody<impl http_body::Body<Data = Bytes, Error = Infallible> + Unpin>,
    ) {
        let (tx, rx) = futures::channel::mpsc::channel(16);
        let body = MinRateBody::new(
            StreamBody::new(rx),
            min_bytes,
            Duration::from_millis(window_ms),
        );
        (tx, body)
    }

    #[tokio::test]
    async fn a_stalled_body_fails_after_the_window() {
        let (mut tx, mut body) = body(200, 1000);
        tx.send(Ok(Frame::data(Bytes::from_static(b"0123456789"))))
            .await
            .unwrap();
        let start = Instant::now();
        assert!(body.frame().await.unwrap().is_ok());
        let err = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the stall is detected without new data")
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("too slow"), "{err}");
        assert!(start.elapsed() >= Duration::from_millis(190));
        drop(tx);
    }

    #[tokio::test]
    async fn time_the_reader_does_not_poll_is_not_counted() {
        let (mut tx, mut body) = body(100, 1000);
        for _ in 0..4 {
            tx.send(Ok(Frame::data(Bytes::from(vec![0u8; 100]))))
                .await
                .unwrap();
        }
        drop(tx);
        let mut total = 0;
        while let Some(frame) = body.frame().await {
            total += frame.unwrap().into_data().unwrap().len();
            // A slow consumer (back-pressure), far longer than the window.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        assert_eq!(total, 400);
    }

    #[tokio::test]
    async fn a_steady_body_passes_window_after_window() {
        let (mut tx, mut body) = body(100, 100);
        let sender = tokio::spawn(async move {
            for _ in 0..10 {
                tx.send(Ok(Frame::data(Bytes::from(vec![0u8; 50]))))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let mut total = 0;
        while let Some(frame) = body.frame().await {
            total += frame.unwrap().into_data().unwrap().len();
        }
        sender.await.unwrap();
        assert_eq!(total, 500);
    }

    #[test]
    fn the_h2_head_size_counts_fields_and_pseudo_headers() {
        let req = Request::builder()
            .uri("http://a/b")
            .header("x-k", "vv")
            .body(())
            .unwrap();
        // :method GET, :path /b, :scheme http, :authority a, x-k vv; 32 per field.
        let expected = (7 + 3) + (5 + 2) + (7 + 4) + (10 + 1) + (3 + 2) + 5 * 32;
        assert_eq!(h2_head_size(&req), expected);
    }
}
