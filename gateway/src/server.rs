//! Binds the S3 front to a listener: one task per connection, TCP_NODELAY, a request id
//! and a log line per request, and graceful shutdown that lets in-flight requests finish
//! within a bounded wait.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;

use crate::record::Engine;
use crate::s3::{Front, KeyAccess, KeyAuth};

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

/// Serves S3 on `listener` until `shutdown` resolves, then waits at most `grace` for
/// in-flight requests.
///
/// # Errors
/// Only an accept loop failure that is not per-connection.
pub async fn serve(
    listener: TcpListener,
    service: S3Service,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let builder = ConnBuilder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(v) => v,
                Err(e) => {
                    // Per-connection failures (e.g. the peer reset before accept) must not
                    // stop the server.
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let svc = service.clone();
        let handler = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let svc = svc.clone();
            async move {
                let id = request_id();
                let method = req.method().clone();
                let path = req.uri().path().to_string();
                let t0 = Instant::now();
                let result = svc.call(req.map(s3s::Body::from)).await;
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                match result {
                    Ok(mut resp) => {
                        let status = resp.status().as_u16();
                        if let Ok(v) = hyper::header::HeaderValue::from_str(&id) {
                            resp.headers_mut().insert("x-amz-request-id", v);
                        }
                        // 404, 304 and 412 are how clients probe (HEAD before PUT,
                        // conditional GETs): normal flow, not failures worth a warning.
                        let probe = matches!(status, 304 | 404 | 412);
                        if status >= 400 && !probe {
                            tracing::warn!(request_id = %id, %method, %path, status, ms, "request failed");
                        } else {
                            tracing::debug!(request_id = %id, %method, %path, status, ms, "request");
                        }
                        Ok(resp)
                    }
                    Err(e) => {
                        tracing::warn!(request_id = %id, %method, %path, ms, error = ?e, "request error");
                        Err(e)
                    }
                }
            }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), handler);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "shutdown grace elapsed; dropping open connections"),
    }
    Ok(())
}
