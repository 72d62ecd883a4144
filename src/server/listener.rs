//! Accepting connections: TLS handshake with a deadline, HTTP/1.1 or HTTP/2
//! (ALPN), per-connection idle and header-read timeouts, a cap on open
//! connections, retiring connections by age, and a shutdown that never
//! closes a kept-alive connection under a client that may be sending on it.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderValue, Request, Version, header};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::metrics::{Metrics, ProtocolLabel, RetireLabel};
use crate::telemetry::Raised;

#[derive(Clone, Debug)]
pub struct ConnLimits {
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub http2: bool,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 flow-control window of one stream: what a client may send on
    /// a stream the server has not read yet (one waiting for memory).
    pub stream_window: u32,
    /// HTTP/2 window of a connection, shared by its streams.
    pub connection_window: u32,
    /// Retire a connection this long after it opened (±10 % jitter), so
    /// clients that pool connections (the apiserver) re-open them and a
    /// per-connection balancer spreads them over every replica. `None`:
    /// never.
    pub max_age: Option<Duration>,
    /// How long a connection retired by age may go on finishing requests
    /// before it is closed under them.
    pub max_age_grace: Duration,
    /// Once the listener has closed, a retired HTTP/1.1 connection with
    /// nothing in flight is closed after this long without traffic.
    pub quiet_close: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            // Longer than the apiserver's own 90 s idle timeout, so it is
            // the apiserver that closes idle connections, not us mid-reuse.
            idle_timeout: Duration::from_secs(120),
            max_connections: 1024,
            http2: true,
            max_concurrent_streams: 250,
            // Small per stream, so streams queued for memory cannot fill the
            // connection's window and stall the one being read (hyper's
            // default gives a single stream the whole 1 MiB).
            stream_window: 64 << 10,
            connection_window: 1 << 20,
            max_age: None,
            max_age_grace: Duration::from_secs(30),
            quiet_close: Duration::from_secs(1),
        }
    }
}

/// The server's shutdown, in two steps.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Readiness is off: every connection, open or new, is told to leave
    /// (HTTP/2 GOAWAY; HTTP/1.1 `Connection: close` on its next response).
    pub retire: CancellationToken,
    /// The listener closes; told connections finish what they have in
    /// flight, and idle HTTP/1.1 ones close once quiet.
    pub close: CancellationToken,
}

impl Shutdown {
    /// Both steps at once (tests, and callers without a delay).
    pub fn now(&self) {
        self.retire.cancel();
        self.close.cancel();
    }
}

/// Serve `router` over TLS until `shutdown.close` is cancelled. Connection
/// tasks are spawned on `tracker` so the caller can wait for them to drain.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    tracker: TaskTracker,
) {
    let conns = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.close.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(ok) => ok,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = limits.max_connections, "connection limit reached; closing new connection");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        let metrics = metrics.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let _closed = super::memory::CloseCounter;
            let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
            if let Ok(false) = tokio::time::timeout_at(deadline, starts_like_tls(&tcp)).await {
                refuse_plaintext(tcp, peer).await;
                return;
            }
            let tls = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let alpn = match tls.get_ref().1.alpn_protocol() {
                Some(b"h2") => Alpn::H2,
                Some(b"http/1.1") => Alpn::Http1,
                _ => Alpn::None,
            };
            let h2 = alpn == Alpn::H2;
            metrics
                .connections
                .get_or_create(&ProtocolLabel {
                    protocol: if h2 { "h2" } else { "http/1.1" }.to_owned(),
                })
                .inc();
            let _open = Raised::new(metrics.connections_open.clone());
            serve_connection(tls, alpn, router, &limits, &metrics, shutdown).await;
        });
    }
}

/// What ALPN settled on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alpn {
    H2,
    Http1,
    /// The client offered nothing: HTTP/1.1, or h2 with prior knowledge.
    None,
}

/// A TLS connection opens with a handshake record (0x16). Anything else is
/// a client speaking plaintext (or garbage) to the TLS port.
async fn starts_like_tls(tcp: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1) => first[0] == 0x16,
        // Closed or failed: let the TLS accept report it.
        _ => true,
    }
}

/// Say why, as Go's net/http does, instead of a bare TLS alert that a
/// plaintext client cannot read; then close.
async fn refuse_plaintext(mut tcp: tokio::net::TcpStream, peer: std::net::SocketAddr) {
    use tokio::io::AsyncWriteExt;
    tracing::debug!(%peer, "plaintext request on the TLS port");
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tcp.write_all(
            b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        ),
    )
    .await;
    let _ = tcp.shutdown().await;
    // Drain what the client already sent, briefly: closing a socket with
    // unread data sends RST, which can destroy the answer in flight.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        use tokio::io::AsyncReadExt;
        let mut left = 64 * 1024usize;
        while left > 0 {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// What a connection's task and its requests share.
#[derive(Default)]
struct ConnState {
    /// The client has been told to leave: HTTP/1.1 responses carry
    /// `Connection: close`.
    retiring: AtomicBool,
    /// A request arrived over HTTP/2 (h2 without ALPN, by preface).
    saw_h2: AtomicBool,
    in_flight: AtomicUsize,
}

/// A request on a connection, counted while its handler runs.
struct Busy(Arc<ConnState>);

impl Busy {
    fn enter(state: Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router behind a connection: marks the connection busy, and once
/// the connection is retiring, asks an HTTP/1.1 client to close it. A
/// client told in a response never sends on the connection again, so
/// closing it cannot race a request (closing an idle kept-alive
/// connection can: the client may be writing the next request to it).
fn connection_service(
    router: Router,
    state: Arc<ConnState>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl Future<Output = Result<Response, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let h1 = req.version() < Version::HTTP_2;
        if !h1 {
            state.saw_h2.store(true, Ordering::Relaxed);
        }
        let busy = Busy::enter(state.clone());
        let answer = router.clone().oneshot(req);
        async move {
            let Ok(mut resp) = answer.await;
            if h1 && busy.0.retiring.load(Ordering::Acquire) {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            drop(busy);
            Ok(resp)
        }
    })
}

/// `age` moved by up to ±10 %, so connections opened together (a replica
/// that just started, a client that just reconnected) do not all retire
/// together.
fn jittered(age: Duration) -> Duration {
    use std::hash::BuildHasher;
    let r = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    // r / 2^64 in [0, 1), mapped to [0.9, 1.1).
    let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
    age.mul_f64(0.9 + 0.2 * unit)
}

async fn sleep_until_or_never(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn serve_connection<S>(
    io: S,
    alpn: Alpn,
    router: Router,
    limits: &ConnLimits,
    metrics: &Metrics,
    shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let left = Arc::new(std::sync::Mutex::new(None));
    let io = TokioIo::new(Tracked {
        inner: Some(io),
        activity: activity.clone(),
        left: left.clone(),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_stream_window_size(limits.stream_window)
        .initial_connection_window_size(limits.connection_window)
        // Rapid reset (CVE-2023-44487): bound resets that were never accepted.
        .max_pending_accept_reset_streams(Some(64))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    // The protocol ALPN chose, stated up front: a connection told to leave
    // while its protocol is still being sniffed would be dropped without a
    // GOAWAY; a declared h2 one finishes its handshake, then gets it.
    match alpn {
        Alpn::H2 => builder = builder.http2_only(),
        Alpn::Http1 => builder = builder.http1_only(),
        Alpn::None if !limits.http2 => builder = builder.http1_only(),
        Alpn::None => {}
    }
    let state = Arc::new(ConnState::default());
    // In a block, so hyper's connection (and with it the IO wrapper, which
    // hands the stream back) is gone before the lingering close.
    {
        let conn = builder.serve_connection(io, connection_service(router, state.clone()));
        tokio::pin!(conn);

        let now = tokio::time::Instant::now();
        let aged_at = limits.max_age.map(|age| now + jittered(age));
        // Set once the connection is retired by age.
        let mut force_at: Option<tokio::time::Instant> = None;
        let mut told = false;
        let mut closing = false;
        let mut draining = false;
        loop {
            let event = tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "connection ended with error");
                    }
                    break;
                }
                _ = shutdown.retire.cancelled(), if !told => Event::Retire("shutdown"),
                _ = sleep_until_or_never(aged_at), if !told && aged_at.is_some() => Event::Retire("age"),
                _ = shutdown.close.cancelled(), if !closing => Event::ListenerClosed,
                // Told, listener closed, and quiet: the client had its chance to
                // see the close; an idle HTTP/1.1 connection is closed now, a
                // busy one after its response.
                _ = activity.idle_for(limits.quiet_close), if closing && !draining => Event::Close,
                _ = activity.idle_for(limits.idle_timeout), if !draining => Event::Close,
                _ = sleep_until_or_never(force_at), if force_at.is_some() => Event::GraceOver,
            };
            match event {
                Event::Retire(_) | Event::ListenerClosed if !told => {
                    let reason = if let Event::Retire(r) = event {
                        r
                    } else {
                        "shutdown"
                    };
                    told = true;
                    state.retiring.store(true, Ordering::Release);
                    metrics
                        .connections_retired
                        .get_or_create(&RetireLabel {
                            reason: reason.to_owned(),
                        })
                        .inc();
                    // h2: GOAWAY now, in-flight streams finish. HTTP/1.1: the
                    // next response carries `Connection: close`.
                    if alpn == Alpn::H2 || state.saw_h2.load(Ordering::Relaxed) {
                        conn.as_mut().graceful_shutdown();
                        draining = true;
                    }
                    if reason == "age" {
                        force_at = Some(tokio::time::Instant::now() + limits.max_age_grace);
                    }
                    closing |= matches!(event, Event::ListenerClosed);
                }
                Event::Retire(_) => {}
                Event::ListenerClosed => closing = true,
                Event::Close => {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
                Event::GraceOver => {
                    force_at = None;
                    // An idle HTTP/1.1 connection is left to its client (or the
                    // idle timeout): closing it could race the client's next
                    // request. Only work that overran the grace is cut.
                    if state.in_flight.load(Ordering::Acquire) > 0 || draining {
                        metrics.connections_forced.inc();
                        tracing::warn!(grace = ?limits.max_age_grace, "connection retired by age still busy after the grace; closing it");
                        break;
                    }
                }
            }
        }
    }
    let stream = left.lock().ok().and_then(|mut l| l.take());
    if let Some(stream) = stream {
        linger(stream, LINGER).await;
    }
}

/// How long a closing connection waits for its client to close too (Go's
/// HTTP/2 server waits 1 s after its last GOAWAY).
const LINGER: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
enum Event {
    Retire(&'static str),
    ListenerClosed,
    Close,
    GraceOver,
}

/// Last time bytes moved on a connection.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let due = last + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// An IO wrapper that records activity, and when hyper drops it hands the
/// stream back (`left`) for a lingering close.
struct Tracked<S> {
    inner: Option<S>,
    activity: Arc<Activity>,
    left: Arc<std::sync::Mutex<Option<S>>>,
}

impl<S> Tracked<S> {
    fn inner(&mut self) -> io::Result<Pin<&mut S>>
    where
        S: Unpin,
    {
        match self.inner.as_mut() {
            Some(s) => Ok(Pin::new(s)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl<S> Drop for Tracked<S> {
    fn drop(&mut self) {
        if let (Some(s), Ok(mut left)) = (self.inner.take(), self.left.lock()) {
            *left = Some(s);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = this.inner()?.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = this.inner()?.poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner()?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner()?.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = this.inner()?.poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }
}

/// Close the way Go's servers do: send our close (TLS close_notify, FIN),
/// then read and discard until the client closes too, for at most
/// `limit`. Closing a socket with unread bytes in it sends a reset, and a
/// reset can destroy answers (and the GOAWAY) the client has not read yet;
/// a client that sent a request after our GOAWAY must get to read that
/// GOAWAY, which tells it the request was never processed.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, limit: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(limit, async {
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        while let Ok(1..) = stream.read(&mut sink).await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_jittered_within_ten_percent_and_spread() {
        let age = Duration::from_secs(120);
        let ages: Vec<Duration> = (0..1000).map(|_| jittered(age)).collect();
        for a in &ages {
            assert!(
                *a >= age.mul_f64(0.9) && *a < age.mul_f64(1.1),
                "{a:?} outside ±10 % of {age:?}"
            );
        }
        let (lo, hi) = (
            ages.iter().min().copied().unwrap_or_default(),
            ages.iter().max().copied().unwrap_or_default(),
        );
        // Spread over most of the range, not clustered.
        assert!(hi - lo > Duration::from_secs(18), "{lo:?}..{hi:?}");
    }
}
