//! The ops port: `/healthz`, `/readyz` and `/metrics` for container probes, load
//! balancers and Prometheus, and [`probe`], the one-request HTTP(S) client behind
//! `medgate healthcheck` (the container image has no shell or curl).
//!
//! | path       | answers                                                              |
//! | `/healthz` | 200 `ok` while the process serves requests at all                    |
//! | `/readyz`  | 200 `ready` when both stores answer a cheap request within [`READY_TIMEOUT`], else 503 and the reason |
//! | `/metrics` | 200, the [`crate::metrics`] registry in the OpenMetrics text format  |
//!
//! Nothing here reads or reveals records, keys or names; the port serves TLS when the
//! S3 port does.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use object_store::path::Path as StorePath;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::runtime::tls::Tls;
use crate::store::private::PrivateStore;
use crate::store::public::PublicStore;
use crate::{Error, Result};

/// How long each store has to answer a readiness check.
pub const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// The bucket name the private store is asked about. No S3 bucket can have it (names
/// are lower case), so the answer is always "none": the point is that one comes.
const PROBE_BUCKET: &str = "MEDGATE-READYZ";

/// The public store path asked about: inside the blob folder (what the gateway reads and
/// writes), and never a blob's name, so the answer is "not found".
fn probe_path() -> StorePath {
    StorePath::from("v1/b/readyz")
}

/// What `/readyz` checks.
pub struct Readiness {
    pub private: Arc<dyn PrivateStore>,
    pub public: PublicStore,
    /// What is known to be wrong with the public store's configuration (e.g. an S3 store
    /// without credentials), said instead of the store client's own error.
    pub public_hint: Option<String>,
}

impl Readiness {
    /// Asks both stores a cheap question at once.
    ///
    /// # Errors
    /// Why the gateway is not ready, in plain text for the 503 body.
    pub async fn check(&self) -> std::result::Result<(), String> {
        let private = tokio::time::timeout(READY_TIMEOUT, self.private.bucket(PROBE_BUCKET));
        let probe = probe_path();
        let public = tokio::time::timeout(READY_TIMEOUT, self.public.head(&probe));
        let (private, public) = tokio::join!(private, public);
        let secs = READY_TIMEOUT.as_secs();
        let mut reasons = Vec::new();
        match private {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => reasons.push(format!("private store: {e}")),
            Err(_) => reasons.push(format!("private store: no answer within {secs} s")),
        }
        match public {
            Ok(Ok(_)) | Ok(Err(object_store::Error::NotFound { .. })) => {}
            Ok(Err(e)) => reasons.push(match &self.public_hint {
                Some(hint) => format!("public store: {hint} (the store said: {e})"),
                None => format!("public store unreachable: {e}"),
            }),
            Err(_) => reasons.push(match &self.public_hint {
                Some(hint) => format!("public store: {hint} (no answer within {secs} s)"),
                None => format!("public store: no answer within {secs} s"),
            }),
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("\n"))
        }
    }
}

/// Serves the ops endpoints on `listener` (over TLS when `tls` is set) until
/// `shutdown` resolves.
///
/// # Errors
/// Only an accept loop failure that is not per-connection.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    readiness: Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()>,
    limits: crate::runtime::server::ConnLimits,
) -> std::io::Result<()> {
    let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
        let readiness = Arc::clone(&readiness);
        async move { Ok::<_, Infallible>(answer(&readiness, &req).await) }
    });
    crate::runtime::server::accept_loop(
        listener,
        tls,
        handler,
        shutdown,
        Duration::from_secs(1),
        limits,
    )
    .await
}

async fn answer(readiness: &Readiness, req: &Request<Incoming>) -> Response<s3s::Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match readiness.check().await {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => {
                tracing::info!(reason = %why, "not ready");
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                )
            }
        },
        "/metrics" => {
            let mut resp = Response::new(s3s::Body::from(crate::metrics::global().encode()));
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            resp
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<s3s::Body> {
    let mut resp = Response::new(s3s::Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The most of a response [`probe`] reads.
const PROBE_MAX_BYTES: u64 = 1 << 20;

/// GETs `url` (`http://` or `https://`) with one HTTP/1.0 request and returns the status
/// code and body. For `https`, the server certificate is verified against the PEM CA
/// bundle `ca` when given.
///
/// # Security
/// Without `ca`, an `https` server's certificate is not verified (as a kubelet's HTTPS
/// probe does not): the probe sends nothing secret and only learns a status, and a
/// container's own certificate rarely names the loopback address it probes. Pass `ca`
/// when the answer matters beyond liveness.
///
/// # Errors
/// A malformed URL or CA bundle, a connection or TLS failure, no complete answer within
/// `timeout`, or a reply that is not HTTP.
pub async fn probe(url: &str, ca: Option<&Path>, timeout: Duration) -> Result<(u16, String)> {
    let parsed =
        url::Url::parse(url).map_err(|e| Error::InvalidArgument(format!("URL {url:?}: {e}")))?;
    let https = match parsed.scheme() {
        "http" => false,
        "https" => true,
        other => {
            return Err(Error::InvalidArgument(format!(
                "URL {url:?}: scheme {other} is not http or https"
            )))
        }
    };
    let host = parsed
        .host()
        .ok_or_else(|| Error::InvalidArgument(format!("URL {url:?} has no host")))?
        .to_owned();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| Error::InvalidArgument(format!("URL {url:?} has no port")))?;
    let mut target = parsed.path().to_string();
    if let Some(q) = parsed.query() {
        target.push('?');
        target.push_str(q);
    }
    let host_header = match parsed.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let request = format!(
        "GET {target} HTTP/1.0\r\nHost: {host_header}\r\nUser-Agent: medgate-healthcheck\r\nConnection: close\r\n\r\n"
    );
    let connector = if https {
        Some(tls_connector(ca)?)
    } else {
        None
    };
    let talk = async {
        let addr = match &host {
            url::Host::Domain(d) => format!("{d}:{port}"),
            url::Host::Ipv4(ip) => format!("{ip}:{port}"),
            url::Host::Ipv6(ip) => format!("[{ip}]:{port}"),
        };
        let tcp = tokio::net::TcpStream::connect(&addr).await?;
        let mut reply = Vec::new();
        match connector {
            None => exchange(tcp, &request, &mut reply).await?,
            Some(connector) => {
                let name = match &host {
                    url::Host::Domain(d) => ServerName::try_from(d.clone()).map_err(|e| {
                        Error::InvalidArgument(format!("URL {url:?}: host name: {e}"))
                    })?,
                    url::Host::Ipv4(ip) => ServerName::IpAddress(std::net::IpAddr::V4(*ip).into()),
                    url::Host::Ipv6(ip) => ServerName::IpAddress(std::net::IpAddr::V6(*ip).into()),
                };
                let stream = connector.connect(name, tcp).await.map_err(|e| Error::Tls {
                    what: format!("TLS handshake with {addr} failed"),
                    source: Box::new(e),
                })?;
                exchange(stream, &request, &mut reply).await?;
            }
        }
        Ok::<_, Error>(reply)
    };
    let reply = tokio::time::timeout(timeout, talk).await.map_err(|_| {
        Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from {url} within {} s", timeout.as_secs()),
        ))
    })??;
    parse_reply(&reply)
}

async fn exchange<S>(mut stream: S, request: &str, reply: &mut Vec<u8>) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let read = (&mut stream).take(PROBE_MAX_BYTES).read_to_end(reply).await;
    match read {
        Ok(_) => Ok(()),
        // A TLS peer that closes without close_notify still sent a whole HTTP/1.0 reply.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !reply.is_empty() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The status code and body of an HTTP/1.x reply.
fn parse_reply(reply: &[u8]) -> Result<(u16, String)> {
    let not_http = || Error::InvalidArgument("the server's reply is not HTTP".into());
    let text = String::from_utf8_lossy(reply);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().ok_or_else(not_http)?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next().ok_or_else(not_http)?;
    if !version.starts_with("HTTP/1.") {
        return Err(not_http());
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(not_http)?;
    Ok((status, body.to_string()))
}

fn tls_connector(ca: Option<&Path>) -> Result<tokio_rustls::TlsConnector> {
    let provider = crate::runtime::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls {
            what: "no usable TLS protocol version".into(),
            source: Box::new(e),
        })?;
    let config = match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| Error::Tls {
                    what: format!("cannot read the CA bundle {}", path.display()),
                    source: Box::new(e),
                })?;
            let mut roots = rustls::RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::Tls {
                    what: format!("no usable CA certificate in {}", path.display()),
                    source: Box::new(std::io::Error::from(std::io::ErrorKind::InvalidData)),
                });
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth(),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Accepts any server certificate, but still checks the handshake signatures: see the
/// `# Security` note of [`probe`].
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let (status, body) = parse_reply(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nnot ready: x\n",
        )
        .unwrap();
        assert_eq!(status, 503);
        assert_eq!(body, "not ready: x\n");
        assert!(parse_reply(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_reply(b"").is_err());
    }

    #[tokio::test]
    async fn probe_reads_a_plain_http_answer_and_fails_on_a_closed_port() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /healthz HTTP/1.0\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                .await
                .unwrap();
        });
        let (status, body) = probe(
            &format!("http://{addr}/healthz"),
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        server.await.unwrap();
        assert!(probe(
            &format!("http://{addr}/healthz"),
            None,
            Duration::from_secs(5)
        )
        .await
        .is_err());
        assert!(probe("ftp://127.0.0.1/x", None, Duration::from_secs(1))
            .await
            .is_err());
    }
}
