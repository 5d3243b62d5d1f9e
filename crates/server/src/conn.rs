//! The accept loop: every connection is served by hyper's HTTP/1 machinery under limits that keep
//! misbehaving clients from holding the process's sockets or decoding slots.
//!
//! - **Header timeout**: once the first byte of a request arrives, its whole head (request line
//!   and headers) must arrive within `header_timeout`, or the connection is closed.
//! - **Body timeout**: once the head is in, the whole body must arrive within `body_timeout`;
//!   a handler reading a slower body gets [`BodyTimedOut`] (answered 408 `request_timeout`) and
//!   the connection is closed after the answer.
//! - **Idle timeout**: a connection with no request in progress and no byte of a new one — before
//!   its first request or between keep-alive requests — is closed after `idle_timeout`.
//! - **Connection cap**: beyond `max_connections` open connections a new one gets a minimal
//!   `503` with an OpenAI-shaped JSON error (`too_many_connections`) and is closed.
//!
//! hyper's own `header_read_timeout` is not used: hyper runs it whenever it waits for a request
//! head, including while a keep-alive connection is idle, so it cannot tell a slow header from an
//! idle connection. The watchdog here tracks the connection's phase itself (bytes read with no
//! request in progress start the header clock; a request in progress stops both clocks).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::metrics::ConnCounters;

/// Limits on every connection (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Time to receive a request's head, from its first byte.
    pub header_timeout: Duration,
    /// Time to receive a request's body, from the end of its head.
    pub body_timeout: Duration,
    /// Time a connection may stay open with no request in progress.
    pub idle_timeout: Duration,
    /// Connections served at once; more are refused with 503.
    pub max_connections: usize,
}

/// File descriptors kept free besides the served connections: the model file, logs, the
/// runtime's own descriptors and connections being refused.
pub const RESERVED_FDS: u64 = 128;

/// The default connection cap when the open-file limit allows it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Refusals being written at once; beyond it a connection over the cap is closed without an
/// answer, so a flood cannot turn refusals into the descriptor leak the cap prevents.
const REFUSALS_IN_FLIGHT: usize = 32;

/// How long a refusal may take to write and to let the client's request bytes drain.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Raises the soft `RLIMIT_NOFILE` towards the hard limit (at most 1 Mi) and returns the soft
/// limit then in force, or `None` where it cannot be read.
// `rlim_t` is u64 on Linux but not on every unix: the casts are needed there.
#[allow(clippy::unnecessary_cast)]
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        let want = (lim.rlim_max as u64).min(1 << 20);
        if (lim.rlim_cur as u64) < want {
            let raised = libc::rlimit {
                rlim_cur: want as libc::rlim_t,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: setrlimit only reads the struct.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                return Some(want);
            }
        }
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The connection cap: `requested` if the open-file limit `nofile` leaves room for it (plus
/// [`RESERVED_FDS`]), else an error saying what to change; without a request, the default
/// bounded by the limit.
pub fn connection_cap(requested: Option<usize>, nofile: Option<u64>) -> Result<usize, String> {
    let room = nofile.map(|n| n.saturating_sub(RESERVED_FDS));
    match (requested, room) {
        (Some(0), _) => Err("--max-connections must be at least 1".into()),
        (Some(n), Some(room)) if n as u64 > room => Err(format!(
            "--max-connections {n} needs {} open files but the limit is {} (RLIMIT_NOFILE, \
             {RESERVED_FDS} kept for the server itself): raise `ulimit -n` or lower \
             --max-connections to at most {room}",
            n as u64 + RESERVED_FDS,
            nofile.unwrap_or(0)
        )),
        (Some(n), _) => Ok(n),
        (None, Some(0)) => Err(format!(
            "the open-file limit ({}) leaves no room for connections: raise `ulimit -n`",
            nofile.unwrap_or(0)
        )),
        (None, Some(room)) => Ok(DEFAULT_MAX_CONNECTIONS.min(room as usize)),
        (None, None) => Ok(DEFAULT_MAX_CONNECTIONS),
    }
}

/// The error a request body's reader gets when the body did not arrive within the body timeout.
#[derive(Debug)]
pub struct BodyTimedOut(pub Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} s (--body-timeout)",
            self.0.as_secs_f64()
        )
    }
}

impl std::error::Error for BodyTimedOut {}

/// Whether `err` or an error it wraps is a [`BodyTimedOut`].
pub fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(err), |e| e.source()).any(|e| e.is::<BodyTimedOut>())
}

/// Serves `router` on `listener` under `limits` until `shutdown` resolves, then stops
/// accepting, lets every open connection finish its request in progress (idle ones close at
/// once) and returns when all are closed.
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    counters: Arc<ConnCounters>,
    shutdown: impl Future<Output = ()>,
) {
    counters
        .max
        .store(limits.max_connections as u64, Ordering::Relaxed);
    let (stop_tx, stop_rx) = watch::channel(false);
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    let mut last_refusal_log: Option<Instant> = None;
    let mut last_accept_error_log: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                if !is_connection_error(&e) {
                    // Out of descriptors (EMFILE/ENFILE) or memory: wait for connections to
                    // close rather than spinning on accept.
                    if last_accept_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                        tracing::warn!("cannot accept a connection: {e}");
                        last_accept_error_log = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        if counters.open.load(Ordering::SeqCst) >= limits.max_connections as u64 {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                tracing::warn!(
                    "refusing connections: {} open (--max-connections)",
                    limits.max_connections
                );
                last_refusal_log = Some(Instant::now());
            }
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream, limits.max_connections).await;
                    drop(permit);
                });
            }
            continue;
        }
        counters.open.fetch_add(1, Ordering::SeqCst);
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let open = OpenGuard(counters.clone());
        tokio::spawn(serve_one(
            stream,
            router.clone(),
            limits,
            counters.clone(),
            stop_rx.clone(),
            open,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    // Every connection task holds a receiver: this returns once the last one has ended.
    stop_tx.closed().await;
}

/// Errors of one incoming connection (it went away before it was accepted), not of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The answer to a connection over the cap, in the OpenAI error shape.
pub fn refusal_response(max_connections: usize) -> String {
    let body = serde_json::json!({"error": {
        "message": format!(
            "the server has too many open connections ({max_connections}, --max-connections); retry later"
        ),
        "type": "server_error",
        "param": null,
        "code": "too_many_connections",
    }})
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Writes the refusal, then reads (and drops) what the client sends for a moment before
/// closing: closing with its request unread would reset the connection, and the client could
/// lose the answer.
async fn refuse(stream: TcpStream, max_connections: usize) {
    let answer = refusal_response(max_connections);
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        let mut left = answer.as_bytes();
        while !left.is_empty() {
            if stream.writable().await.is_err() {
                return;
            }
            match stream.try_write(left) {
                Ok(n) => left = &left[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        shutdown_write(&stream);
        let mut sink = [0u8; 4096];
        let mut budget = 64usize << 10;
        while budget > 0 {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut sink) {
                Ok(0) => return,
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

/// Sends FIN after the refusal so the client sees the end of the answer at once.
fn shutdown_write(stream: &TcpStream) {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is owned by `stream`, which outlives the call.
        unsafe {
            libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR);
        }
    }
    #[cfg(not(unix))]
    let _ = stream;
}

/// Counts a served connection as open until dropped.
struct OpenGuard(Arc<ConnCounters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a connection is doing, for its watchdog.
struct Phase {
    /// Requests whose head is in and whose answer is not fully written.
    in_flight: usize,
    /// When the connection last became idle (opened, or its last answer ended).
    idle_since: Instant,
    /// When the first byte of a request head arrived, while that head is incomplete.
    head_since: Option<Instant>,
}

/// Which timeout closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    Header,
    Idle,
}

struct Activity {
    phase: Mutex<Phase>,
    /// Wakes the watchdog when the phase changes (its deadline may have moved earlier).
    changed: Notify,
}

impl Activity {
    fn lock(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deadline(&self, limits: &ConnLimits) -> Option<(Instant, Expiry)> {
        let p = self.lock();
        if p.in_flight > 0 {
            return None;
        }
        Some(match p.head_since {
            Some(t) => (t + limits.header_timeout, Expiry::Header),
            None => (p.idle_since + limits.idle_timeout, Expiry::Idle),
        })
    }

    /// Bytes arrived: with no request in progress they start a request head.
    fn bytes_read(&self) {
        let mut p = self.lock();
        if p.in_flight == 0 && p.head_since.is_none() {
            p.head_since = Some(Instant::now());
            drop(p);
            self.changed.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        {
            let mut p = self.lock();
            p.in_flight += 1;
            p.head_since = None;
        }
        self.changed.notify_one();
        InFlight(self.clone())
    }
}

/// A request in progress on its connection; dropped when its answer has been written (or
/// abandoned).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut p = self.0.lock();
            p.in_flight = p.in_flight.saturating_sub(1);
            if p.in_flight == 0 {
                p.idle_since = Instant::now();
            }
        }
        self.0.changed.notify_one();
    }
}

/// Serves one connection until it closes, a timeout expires, or shutdown has let it finish.
async fn serve_one(
    stream: TcpStream,
    router: Router,
    limits: ConnLimits,
    counters: Arc<ConnCounters>,
    mut stop: watch::Receiver<bool>,
    _open: OpenGuard,
) {
    let activity = Arc::new(Activity {
        phase: Mutex::new(Phase {
            in_flight: 0,
            idle_since: Instant::now(),
            head_since: None,
        }),
        changed: Notify::new(),
    });
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        activity: activity.clone(),
    });
    let svc_activity = activity.clone();
    let svc_counters = counters.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let in_flight = svc_activity.request_started();
        let router = router.clone();
        let body_timeout = limits.body_timeout;
        let counters = svc_counters.clone();
        async move {
            let req = req.map(|b| Body::new(DeadlineBody::new(b, body_timeout, counters)));
            let resp = router.oneshot(req).await?;
            Ok::<_, std::convert::Infallible>(resp.map(|inner| TrackedBody {
                inner,
                _in_flight: in_flight,
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = *stop.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let deadline = activity.deadline(&limits);
        let expiry = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            _ = activity.changed.notified() => {}
            _ = expiry => {
                if let Some((at, which)) = activity.deadline(&limits) {
                    if at <= Instant::now() {
                        let counter = match which {
                            Expiry::Header => &counters.header_timeouts,
                            Expiry::Idle => &counters.idle_timeouts,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("closing a connection: {which:?} timeout");
                        return; // dropping the connection closes the socket
                    }
                }
            }
            r = stop.changed(), if !draining => {
                draining = true;
                if r.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The socket, telling the watchdog when bytes arrive.
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_read();
        }
        r
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A request body that fails with [`BodyTimedOut`] once its deadline has passed.
struct DeadlineBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    counters: Arc<ConnCounters>,
    expired: bool,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration, counters: Arc<ConnCounters>) -> DeadlineBody {
        DeadlineBody {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            counters,
            expired: false,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.timeout)))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|r| r.map_err(Into::into))),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.expired = true;
                    this.counters.body_timeouts.fetch_add(1, Ordering::Relaxed);
                    Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.timeout)))))
                } else {
                    Poll::Pending
                }
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

/// A response body that keeps its request counted as in progress until it is dropped.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
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
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;
    use std::time::Instant as StdInstant;

    fn limits(max_connections: usize) -> ConnLimits {
        ConnLimits {
            header_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(400),
            idle_timeout: Duration::from_millis(600),
            max_connections,
        }
    }

    type BodyResult = Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>;

    async fn echo(body: BodyResult) -> (StatusCode, Vec<u8>) {
        match body {
            Ok(b) => (StatusCode::OK, b.to_vec()),
            Err(e) if is_body_timeout(&e) => (StatusCode::REQUEST_TIMEOUT, e.to_string().into()),
            Err(e) => (StatusCode::BAD_REQUEST, e.to_string().into()),
        }
    }

    fn app() -> Router {
        Router::new()
            .route("/", get(|| async { "ok" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                    "slow ok"
                }),
            )
            .route("/echo", post(echo))
    }

    struct Server {
        port: u16,
        counters: Arc<ConnCounters>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        done: tokio::task::JoinHandle<()>,
    }

    async fn start(limits: ConnLimits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let counters = Arc::new(ConnCounters::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(serve_connections(
            listener,
            app(),
            limits,
            counters.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        Server {
            port,
            counters,
            stop: Some(tx),
            done,
        }
    }

    /// Runs blocking client code beside the server.
    async fn client<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(f)
            .await
            .expect("client panicked")
    }

    fn connect(port: u16) -> StdStream {
        let s = StdStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s
    }

    /// Reads until the server closes; returns what came and how long the close took.
    fn read_to_close(s: &mut StdStream) -> (String, Duration) {
        let t0 = StdInstant::now();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    panic!("the server did not close the connection within 5 s")
                }
                Err(_) => break, // reset
            }
        }
        (String::from_utf8_lossy(&out).into_owned(), t0.elapsed())
    }

    fn request(s: &mut StdStream, raw: &[u8], ends_with: &str) -> String {
        s.write_all(raw).expect("write");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&out).ends_with(ends_with) {
            let n = s.read(&mut buf).expect("an answer within 5 s");
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_close_after_the_idle_timeout() {
        let srv = start(limits(10)).await;
        let port = srv.port;
        let (fresh_lived, used_lived) = client(move || {
            // Never sends a byte.
            let t_fresh = StdInstant::now();
            let mut fresh = connect(port);
            // One request, then silence: the idle clock restarts after the answer.
            let mut used = connect(port);
            std::thread::sleep(Duration::from_millis(400));
            request(&mut used, GET, "ok");
            let t_used = StdInstant::now();
            let (got, _) = read_to_close(&mut fresh);
            assert_eq!(got, "");
            let fresh_lived = t_fresh.elapsed();
            read_to_close(&mut used);
            (fresh_lived, t_used.elapsed())
        })
        .await;
        assert!(fresh_lived >= Duration::from_millis(550), "{fresh_lived:?}");
        assert!(fresh_lived < Duration::from_millis(900), "{fresh_lived:?}");
        assert!(used_lived >= Duration::from_millis(550), "{used_lived:?}");
        assert_eq!(srv.counters.idle_timeouts.load(Ordering::Relaxed), 2);
        assert_eq!(srv.counters.header_timeouts.load(Ordering::Relaxed), 0);
        // The count drops when the connection's task ends, just after the socket closes.
        let t0 = Instant::now();
        while srv.counters.open.load(Ordering::SeqCst) != 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "a connection stays counted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trickled_header_is_cut_at_the_header_timeout() {
        let srv = start(ConnLimits {
            idle_timeout: Duration::from_secs(30),
            ..limits(10)
        })
        .await;
        let port = srv.port;
        let (got, lived) = client(move || {
            let mut s = connect(port);
            let t0 = StdInstant::now();
            for b in GET {
                if s.write_all(&[*b]).is_err() || t0.elapsed() > Duration::from_secs(2) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let (got, _) = read_to_close(&mut s);
            (got, t0.elapsed())
        })
        .await;
        assert_eq!(got, "", "a trickled head was answered");
        assert!(lived >= Duration::from_millis(300), "{lived:?}");
        assert!(lived < Duration::from_secs(2), "{lived:?}");
        assert_eq!(srv.counters.header_timeouts.load(Ordering::Relaxed), 1);
        assert_eq!(srv.counters.idle_timeouts.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_body_gets_408_and_a_request_in_progress_is_not_timed_out() {
        let srv = start(limits(10)).await;
        let port = srv.port;
        let (got, waited) = client(move || {
            let mut s = connect(port);
            s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
                .expect("write");
            read_to_close(&mut s)
        })
        .await;
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(got.contains("--body-timeout"), "{got}");
        assert!(waited >= Duration::from_millis(350), "{waited:?}");
        assert_eq!(srv.counters.body_timeouts.load(Ordering::Relaxed), 1);
        client(move || {
            // A handler slower than every timeout still answers: no clock runs while it works.
            let mut s = connect(port);
            let got = request(&mut s, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", "slow ok");
            assert!(got.starts_with("HTTP/1.1 200"), "{got}");
            // A whole body in time is echoed, on the same keep-alive connection.
            request(
                &mut s,
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
                "hello",
            );
        })
        .await;
        assert_eq!(srv.counters.body_timeouts.load(Ordering::Relaxed), 1);
        assert_eq!(srv.counters.idle_timeouts.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_over_the_cap_are_refused_with_503() {
        let srv = start(limits(2)).await;
        let port = srv.port;
        let counters = srv.counters.clone();
        client(move || {
            let mut a = connect(port);
            request(&mut a, GET, "ok");
            let mut b = connect(port);
            request(&mut b, GET, "ok");
            let mut c = connect(port);
            c.write_all(GET).expect("write");
            let (got, _) = read_to_close(&mut c);
            assert!(got.starts_with("HTTP/1.1 503"), "{got}");
            let body = got.split("\r\n\r\n").nth(1).expect("a body");
            let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
            assert_eq!(v["error"]["code"], "too_many_connections");
            assert_eq!(counters.refused.load(Ordering::Relaxed), 1);
            assert_eq!(counters.open.load(Ordering::SeqCst), 2);
            drop(a);
            drop(b);
            std::thread::sleep(Duration::from_millis(100));
            let mut d = connect(port);
            let got = request(&mut d, GET, "ok");
            assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        })
        .await;
        assert_eq!(srv.counters.accepted.load(Ordering::Relaxed), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_lets_a_request_in_progress_finish() {
        let mut srv = start(limits(10)).await;
        let port = srv.port;
        let stop = srv.stop.take().expect("a stop sender");
        let got = client(move || {
            let mut s = connect(port);
            s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            std::thread::sleep(Duration::from_millis(100));
            let _ = stop.send(());
            read_to_close(&mut s).0
        })
        .await;
        assert!(
            got.starts_with("HTTP/1.1 200") && got.ends_with("slow ok"),
            "{got}"
        );
        tokio::time::timeout(Duration::from_secs(5), srv.done)
            .await
            .expect("serve_connections returns once the connection is done")
            .expect("no panic");
        assert!(StdStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn the_cap_respects_the_open_file_limit() {
        assert_eq!(connection_cap(None, None), Ok(DEFAULT_MAX_CONNECTIONS));
        assert_eq!(
            connection_cap(None, Some(1024)),
            Ok(1024 - RESERVED_FDS as usize)
        );
        assert_eq!(
            connection_cap(None, Some(1 << 20)),
            Ok(DEFAULT_MAX_CONNECTIONS)
        );
        assert_eq!(connection_cap(Some(500), Some(1024)), Ok(500));
        let e = connection_cap(Some(5000), Some(1024)).expect_err("over the limit");
        assert!(
            e.contains("ulimit -n") && e.contains("--max-connections"),
            "{e}"
        );
        assert!(connection_cap(Some(0), None).is_err());
        assert!(connection_cap(None, Some(RESERVED_FDS)).is_err());
    }
}
