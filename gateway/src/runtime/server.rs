//! Binds the S3 front to a listener: one task per connection, TCP_NODELAY, optional TLS,
//! a request id, a log line and metrics per request, and graceful shutdown that lets
//! in-flight requests finish within a bounded wait. The ops port ([`crate::runtime::ops`]) and the
//! JSON API ([`crate::front::api`]) share the accept loop, and with it the connection limits
//! ([`ConnLimits`]): a deadline for request heads, an idle timeout and a cap on open
//! connections per port, so that slow or idle clients cannot hold the server's sockets.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;

use crate::engine::record::Engine;
use crate::front::s3::{Front, KeyAccess, KeyAuth};
use crate::metrics::{self, OperationSlot, ReceivedBody, RequestLabels, SentBody};
use crate::runtime::tls::Tls;

/// Builds the s3s service over an engine. With `domain` set, virtual-host-style
/// requests (`bucket.DOMAIN`) are understood beside path-style ones.
///
/// # Errors
/// A domain s3s cannot use as a base domain.
pub fn s3_service(engine: Arc<Engine>, domain: Option<&str>) -> crate::Result<S3Service> {
    let mut b = S3ServiceBuilder::new(Front::new(Arc::clone(&engine)));
    b.set_auth(KeyAuth::new(Arc::clone(&engine)));
    b.set_access(KeyAccess::new(engine));
    if let Some(d) = domain {
        b.set_host(DomainHost::new(d)?);
    }
    Ok(b.build())
}

/// Checks a base domain for virtual-host-style requests as [`s3_service`] would.
///
/// # Errors
/// `InvalidArgument` for a name that is not a DNS name.
pub fn check_domain(domain: &str) -> crate::Result<()> {
    DomainHost::new(domain).map(|_| ())
}

/// Virtual-host-style addressing under one base domain: `bucket.DOMAIN[:port]` names a
/// bucket; any other host (`DOMAIN`, `localhost`, an IP) is path style, so turning the
/// option on never breaks path-style clients.
struct DomainHost {
    domain: String,
}

impl DomainHost {
    fn new(domain: &str) -> crate::Result<Self> {
        let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let valid = !d.is_empty()
            && d.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(crate::Error::InvalidArgument(format!(
                "--domain {domain:?} is not a DNS name (e.g. s3.hospital.example)"
            )));
        }
        Ok(DomainHost { domain: d })
    }
}

impl s3s::host::S3Host for DomainHost {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<s3s::host::VirtualHost<'a>> {
        let name = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        let vh = s3s::host::VirtualHost::new(self.domain.as_str());
        let bucket = name
            .strip_suffix(self.domain.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
            .filter(|b| !b.is_empty());
        Ok(match bucket {
            Some(b) => vh.with_bucket(b),
            None => vh,
        })
    }
}

fn request_id() -> String {
    let bytes: [u8; 8] = rand::random();
    hex::encode_upper(bytes)
}

/// Serves S3 on `listener` (over TLS when `tls` is set) until `shutdown` resolves, then
/// waits at most `grace` for in-flight requests. Every request is counted in the metrics
/// by operation and status, with its latency and body bytes.
///
/// # Errors
/// Only an accept loop failure that is not per-connection.
pub async fn serve(
    listener: TcpListener,
    service: S3Service,
    engine: Arc<Engine>,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: ConnLimits,
) -> std::io::Result<()> {
    let keys = Arc::new(KeyAuth::new(engine));
    let handler = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let svc = service.clone();
        let keys = Arc::clone(&keys);
        async move {
            // s3cmd's default `US` signing region is us-east-1 (see `region`).
            let (mut parts, body) = req.into_parts();
            crate::front::region::legacy_us_as_us_east_1(&mut parts, &*keys).await;
            let mut req = hyper::Request::from_parts(parts, body);
            let id = request_id();
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            let t0 = Instant::now();
            // s3s names the operation in its access check; see `OperationSlot`.
            let op = OperationSlot::default();
            req.extensions_mut().insert(op.clone());
            let req = req.map(|b| s3s::Body::http_body(ReceivedBody::new(b)));
            let result = svc.call(req).await;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            let status = match &result {
                Ok(resp) => resp.status().as_u16(),
                // s3s turns every S3 error into a response; this is a failure to make one.
                Err(_) => 500,
            };
            metrics::global()
                .requests
                .get_or_create(&RequestLabels {
                    op: op.name(),
                    status,
                })
                .inc();
            match result {
                Ok(mut resp) => {
                    if let Ok(v) = hyper::header::HeaderValue::from_str(&id) {
                        resp.headers_mut().insert("x-amz-request-id", v);
                    }
                    if status >= 400 {
                        explain_error(&mut resp, &id);
                    }
                    // 404, 304 and 412 are how clients probe (HEAD before PUT,
                    // conditional GETs): normal flow, not failures worth a warning.
                    let probe = matches!(status, 304 | 404 | 412);
                    if status >= 400 && !probe {
                        tracing::warn!(request_id = %id, %method, %path, status, ms, "request failed");
                    } else {
                        tracing::debug!(request_id = %id, %method, %path, status, ms, "request");
                    }
                    Ok(resp.map(|b| SentBody::new(b, op.name(), t0)))
                }
                Err(e) => {
                    tracing::warn!(request_id = %id, %method, %path, ms, error = ?e, "request error");
                    Err(e)
                }
            }
        }
    });
    accept_loop(listener, tls, handler, shutdown, grace, limits).await
}

/// What to say for an S3 error that s3s raised without a message (clients print
/// `Unknown` then): what was wrong and what to check.
fn error_message(code: &str, request_id: &str) -> String {
    match code {
        "SignatureDoesNotMatch" => "The request signature does not match the one calculated \
            with the secret key on file for this access key id: check the secret access key \
            (as `medgate access-key create` printed it, or DATA_DIR/credentials for the first \
            key), and that nothing between the client and the gateway rewrites the request"
            .to_string(),
        "InvalidBucketName" => "The bucket name is not valid: bucket names are 3 to 63 \
            characters of lower-case letters, digits, hyphens and dots, and start and end \
            with a letter or digit (e.g. `pacs-2026`)"
            .to_string(),
        "InvalidAccessKeyId" => "The access key id is not known to this gateway: list the \
            keys with `medgate access-key list`, or create one with `medgate access-key create`"
            .to_string(),
        "AccessDenied" => "Access denied: the access key may not do this (a key limited to \
            named buckets, see `medgate access-key list`)"
            .to_string(),
        "RequestTimeTooSkewed" => "The request time differs from the gateway's clock by \
            more than 15 minutes: check the client machine's clock"
            .to_string(),
        "MethodNotAllowed" => "This method is not allowed on this resource".to_string(),
        "NotImplemented" => "medgate does not implement this S3 operation (README, S3 surface \
            today, lists what it does)"
            .to_string(),
        other => format!(
            "The request failed with {other}; the gateway's log has the details under \
             request id {request_id}"
        ),
    }
}

/// Gives an S3 error body without a `<Message>` one (s3s leaves it out for errors such
/// as SignatureDoesNotMatch and InvalidBucketName).
fn explain_error(resp: &mut hyper::Response<s3s::Body>, request_id: &str) {
    let Some(body) = resp.body().bytes() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return;
    };
    if !text.contains("<Error>") || text.contains("<Message>") {
        return;
    }
    let Some(start) = text.find("<Code>") else {
        return;
    };
    let Some(len) = text[start..].find("</Code>") else {
        return;
    };
    let end = start + len + "</Code>".len();
    let code = &text[start + "<Code>".len()..start + len];
    let message = error_message(code, request_id)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let fixed = format!(
        "{}<Message>{message}</Message>{}",
        &text[..end],
        &text[end..]
    );
    resp.headers_mut().remove(hyper::header::CONTENT_LENGTH);
    *resp.body_mut() = s3s::Body::from(fixed);
}

/// How long a client may take to finish the TLS handshake before its connection is
/// dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one port allows its clients (config `[connections]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// A client has this long, from connecting or from the end of its previous response,
    /// to send a complete request head; then its connection is closed. This is what ends
    /// a slowloris client (headers sent a byte at a time) and an idle keep-alive.
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2 connections
    /// and any that the header deadline does not cover).
    pub idle_timeout: Duration,
    /// Connections open at once on the port. At the cap, a new connection closes the one
    /// idle for longest; with none idle, the new one is refused (closed at once).
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections: 4096,
        }
    }
}

/// One open connection as the accept loop tracks it.
struct Tracked {
    /// Requests whose response has not been fully sent.
    busy: AtomicUsize,
    /// Requests started on it.
    requests: AtomicU64,
    /// When the last request started or ended (ms since the loop's start).
    last_active_ms: AtomicU64,
    /// Told to close (the cap needed its slot).
    close: tokio::sync::Notify,
}

/// The connections of one port.
struct Registry {
    started: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Tracked>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn len(&self) -> usize {
        self.open.lock().map_or(0, |m| m.len())
    }

    fn insert(&self) -> (u64, Arc<Tracked>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let t = Arc::new(Tracked {
            busy: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_active_ms: AtomicU64::new(self.now_ms()),
            close: tokio::sync::Notify::new(),
        });
        if let Ok(mut m) = self.open.lock() {
            m.insert(id, Arc::clone(&t));
        }
        (id, t)
    }

    fn remove(&self, id: u64) {
        if let Ok(mut m) = self.open.lock() {
            m.remove(&id);
        }
    }

    /// Tells the connection idle for longest to close, and stops counting it; false when
    /// none is idle. A scan of the port's connections, done only at the cap.
    fn close_oldest_idle(&self) -> bool {
        let Ok(mut m) = self.open.lock() else {
            return false;
        };
        let oldest = m
            .iter()
            .filter(|(_, t)| t.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, t)| t.last_active_ms.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match oldest.and_then(|id| m.remove(&id)) {
            Some(t) => {
                // `notify_one` keeps a permit, so a task not yet waiting still sees it.
                t.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Marks its connection busy while it lives: made when a request starts, dropped when its
/// response body is done (or abandoned).
struct Busy {
    conn: Arc<Tracked>,
    registry: Arc<Registry>,
}

impl Busy {
    fn enter(conn: &Arc<Tracked>, registry: &Arc<Registry>) -> Busy {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        conn.requests.fetch_add(1, Ordering::Relaxed);
        conn.last_active_ms
            .store(registry.now_ms(), Ordering::Relaxed);
        Busy {
            conn: Arc::clone(conn),
            registry: Arc::clone(registry),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .last_active_ms
            .store(self.registry.now_ms(), Ordering::Relaxed);
        self.conn.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// When an idle connection is to be closed, if it stays idle: `header_timeout` after it
/// opened while it has had no request (no complete head yet), else `idle_timeout` after
/// its last activity. `None` while a request is in flight.
fn idle_deadline(t: &Tracked, limits: &ConnLimits) -> Option<u64> {
    if t.busy.load(Ordering::Acquire) > 0 {
        return None;
    }
    let wait = if t.requests.load(Ordering::Relaxed) == 0 {
        limits.header_timeout
    } else {
        limits.idle_timeout
    };
    let wait = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    Some(
        t.last_active_ms
            .load(Ordering::Relaxed)
            .saturating_add(wait),
    )
}

/// Whether an accept error means this process is out of file descriptors.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    // EMFILE (24) and ENFILE (23) on Linux and the BSDs.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// The accept loop every port shares: one task per connection, TCP_NODELAY, the TLS
/// handshake (when `tls` is set) in the connection's task so that a slow client never
/// holds up the loop, the connection limits of `limits`, and graceful shutdown bounded by
/// `grace`.
///
/// # Errors
/// None today: per-connection failures are logged and the loop goes on.
pub async fn accept_loop<S, B>(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    handler: S,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: ConnLimits,
) -> std::io::Result<()>
where
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let mut builder = ConnBuilder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let registry = Arc::new(Registry {
        started: Instant::now(),
        next_id: AtomicU64::new(0),
        open: Mutex::new(HashMap::new()),
    });
    let max = limits.max_connections.max(1);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(v) => v,
                Err(e) if out_of_descriptors(&e) => {
                    // The connection stays in the backlog: free a descriptor (the idle
                    // connection of longest standing) and pause instead of spinning.
                    tracing::warn!(error = %e, open = registry.len(), "out of file descriptors; closing the oldest idle connection");
                    registry.close_oldest_idle();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(e) => {
                    // Per-connection failures (e.g. the peer reset before accept) must not
                    // stop the server.
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if registry.len() >= max && !registry.close_oldest_idle() {
            tracing::warn!(%peer, max, "connection cap reached and none idle; refusing a connection");
            drop(stream);
            continue;
        }
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let (id, tracked) = registry.insert();
        let registry = Arc::clone(&registry);
        let handler = {
            let handler = handler.clone();
            let tracked = Arc::clone(&tracked);
            let registry = Arc::clone(&registry);
            hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let busy = Busy::enter(&tracked, &registry);
                let fut = handler.call(req);
                async move {
                    let resp = fut.await?;
                    // The connection stays busy until the body is sent or dropped.
                    Ok::<_, S::Error>(resp.map(move |b| {
                        b.map_frame(move |f| {
                            let _ = &busy;
                            f
                        })
                    }))
                }
            })
        };
        // The certificate current at accept: a reload affects later connections only.
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            let served = async {
                match acceptor {
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(stream), handler);
                        watcher.watch(conn.into_owned()).await
                    }
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls_stream)) => {
                                let conn =
                                    builder.serve_connection(TokioIo::new(tls_stream), handler);
                                watcher.watch(conn.into_owned()).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                Ok(())
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                Ok(())
                            }
                        }
                    }
                }
            };
            tokio::pin!(served);
            loop {
                let deadline = idle_deadline(&tracked, &limits);
                let wait = match deadline {
                    Some(at) => Duration::from_millis(at.saturating_sub(registry.now_ms())),
                    None => limits.idle_timeout,
                };
                tokio::select! {
                    result = &mut served => {
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = tracked.close.notified() => {
                        tracing::debug!(%peer, "closing an idle connection for a new one (connection cap)");
                        break;
                    }
                    () = tokio::time::sleep(wait) => {
                        if let Some(at) = idle_deadline(&tracked, &limits) {
                            if registry.now_ms() >= at {
                                tracing::debug!(%peer, "closing a connection: no complete request in time, or idle");
                                break;
                            }
                        }
                    }
                }
            }
            registry.remove(id);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "shutdown grace elapsed; dropping open connections"),
    }
    Ok(())
}

/// Serves the API on `listener` (over TLS when `tls` is set) until `shutdown` resolves.
///
/// # Errors
/// Only an accept loop failure that is not per-connection.
pub async fn serve_api(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<Tls>>,
    state: crate::front::api::ApiState,
    shutdown: impl std::future::Future<Output = ()>,
    limits: crate::runtime::server::ConnLimits,
) -> std::io::Result<()> {
    let service = hyper_util::service::TowerToHyperService::new(crate::front::api::router(state));
    crate::runtime::server::accept_loop(
        listener,
        tls,
        service,
        shutdown,
        std::time::Duration::from_secs(5),
        limits,
    )
    .await
}
