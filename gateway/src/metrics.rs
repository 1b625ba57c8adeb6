//! The process's Prometheus metrics: one registry, created on first use, that the S3
//! front, the record engine and the public store count into and the ops port's
//! `/metrics` encodes (OpenMetrics text).
//!
//! Metrics are process-wide statics rather than fields of [`crate::engine::record::Engine`]:
//! the counters sit deep in the engine's hot paths (one increment per chunk), and a
//! global keeps those call sites to one line each. Labels are bounded: S3 operation
//! names come from s3s's fixed list, statuses from HTTP, public store operations from
//! [`crate::store::public::Observed`]. Nothing secret, and no bucket or key name, is a label.

use std::pin::Pin;
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An S3 request's operation (s3s's name, e.g. `PutObject`) and HTTP status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub op: String,
    pub status: u16,
}

/// An S3 operation alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
}

/// A public store (object_store) operation: `get`, `put`, `head`, `list`, …
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOpLabels {
    pub op: &'static str,
}

/// How a TLS certificate reload ended: `ok` or `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// Every metric medgate exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    /// `medgate_s3_requests_total{op,status}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `medgate_s3_request_duration_seconds{op}`: from the request's arrival until its
    /// response body was sent (or abandoned).
    pub request_duration: Family<OpLabels, Histogram>,
    /// `medgate_s3_received_bytes_total`: request body bytes as read from the wire.
    pub received_bytes: Counter,
    /// `medgate_s3_sent_bytes_total`: response body bytes handed to the connection.
    pub sent_bytes: Counter,
    /// `medgate_chunks_sealed_total`.
    pub chunks_sealed: Counter,
    /// `medgate_chunks_opened_total`: sealed chunks whose leaf and tag checked out.
    pub chunks_opened: Counter,
    /// `medgate_chunks_fetched_total`: sealed chunks read from the public store.
    pub chunks_fetched: Counter,
    /// `medgate_read_chunks`: chunks a read (whole object or range) needs.
    pub read_chunks: Histogram,
    /// `medgate_integrity_failures_total`: chunks or blobs that failed their check.
    pub integrity_failures: Counter,
    /// `medgate_stanza_wraps_total`: data keys wrapped to a Recipient.
    pub stanza_wraps: Counter,
    /// `medgate_public_store_requests_total{op}`.
    pub public_requests: Family<StoreOpLabels, Counter>,
    /// `medgate_public_store_errors_total{op}`: failures other than "not found" and
    /// failed preconditions, which are answers, not faults.
    pub public_errors: Family<StoreOpLabels, Counter>,
    /// `medgate_public_store_timeouts_total{op}`: operations cut off at the operation
    /// deadline (also counted as errors).
    pub public_timeouts: Family<StoreOpLabels, Counter>,
    /// `medgate_public_store_retries_total`: requests object_store retried (the binary
    /// counts its "backing off" log events; object_store has no other hook).
    pub public_retries: Counter,
    /// `medgate_tls_reloads_total{outcome}`.
    pub tls_reloads: Family<OutcomeLabels, Counter>,
    /// Unix time of the last successful backup (0: none recorded).
    pub last_backup: Gauge,
    /// `medgate_log_size`: entries in the transparency log, as of the last publication.
    pub log_size: Gauge,
}

fn duration_histogram() -> Histogram {
    // 1 ms … ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("medgate");
        let mut m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(duration_histogram),
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
            chunks_sealed: Counter::default(),
            chunks_opened: Counter::default(),
            chunks_fetched: Counter::default(),
            read_chunks: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            integrity_failures: Counter::default(),
            stanza_wraps: Counter::default(),
            public_requests: Family::default(),
            public_errors: Family::default(),
            public_timeouts: Family::default(),
            public_retries: Counter::default(),
            tls_reloads: Family::default(),
            last_backup: Gauge::default(),
            log_size: Gauge::default(),
        };
        registry.register(
            "s3_requests",
            "S3 requests by operation and HTTP status",
            m.requests.clone(),
        );
        registry.register(
            "s3_request_duration_seconds",
            "S3 request latency until the response body was sent",
            m.request_duration.clone(),
        );
        registry.register(
            "s3_received_bytes",
            "Request body bytes received on the S3 port",
            m.received_bytes.clone(),
        );
        registry.register(
            "s3_sent_bytes",
            "Response body bytes sent on the S3 port",
            m.sent_bytes.clone(),
        );
        registry.register(
            "chunks_sealed",
            "Plaintext chunks sealed",
            m.chunks_sealed.clone(),
        );
        registry.register(
            "chunks_opened",
            "Sealed chunks verified and opened",
            m.chunks_opened.clone(),
        );
        registry.register(
            "chunks_fetched",
            "Sealed chunks fetched from the public store",
            m.chunks_fetched.clone(),
        );
        registry.register(
            "read_chunks",
            "Sealed chunks one read (whole object or range) fetches",
            m.read_chunks.clone(),
        );
        registry.register(
            "integrity_failures",
            "Chunks or blobs that failed their integrity check",
            m.integrity_failures.clone(),
        );
        registry.register(
            "stanza_wraps",
            "Data keys wrapped to a recipient",
            m.stanza_wraps.clone(),
        );
        registry.register(
            "public_store_requests",
            "Public store requests by operation",
            m.public_requests.clone(),
        );
        registry.register(
            "public_store_errors",
            "Public store requests that failed, by operation",
            m.public_errors.clone(),
        );
        registry.register(
            "public_store_timeouts",
            "Public store operations cut off at the operation deadline, by operation",
            m.public_timeouts.clone(),
        );
        registry.register(
            "public_store_retries",
            "Public store requests retried after a transient failure",
            m.public_retries.clone(),
        );
        registry.register(
            "tls_reloads",
            "TLS certificate reloads (SIGHUP) by outcome",
            m.tls_reloads.clone(),
        );
        registry.register(
            "log_size",
            "Entries in the transparency log, as of its last publication (every second)",
            m.log_size.clone(),
        );
        registry.register(
            "last_backup_timestamp_seconds",
            "Unix time of the last successful `medgate backup` (0: none recorded)",
            m.last_backup.clone(),
        );
        m.registry = registry;
        m
    }

    /// The metrics in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would be a bug in the encoder.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        out
    }

    /// Counts one finished request to the public store.
    pub fn public_request<T>(&self, op: &'static str, result: &object_store::Result<T>) {
        self.public_requests
            .get_or_create(&StoreOpLabels { op })
            .inc();
        if let Err(e) = result {
            self.public_failure(op, e);
        }
    }

    /// Counts a failure of a public store request (one already counted, or one page of
    /// a listing), unless it is an answer rather than a fault.
    pub fn public_failure(&self, op: &'static str, e: &object_store::Error) {
        if is_fault(e) {
            self.public_errors
                .get_or_create(&StoreOpLabels { op })
                .inc();
        }
    }
}

/// Whether a public store error is a fault rather than an answer ("no such blob",
/// "precondition failed"), which callers expect and handle.
fn is_fault(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotModified { .. }
    )
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

/// Where the S3 layer learns a request's operation: the server puts an empty slot in
/// the request's extensions, and the access check (the first place s3s names the
/// operation) fills it.
#[derive(Clone, Default)]
pub struct OperationSlot(Arc<OnceLock<String>>);

impl OperationSlot {
    /// Records the operation (the first call wins).
    pub fn set(&self, op: &str) {
        let _ = self.0.set(op.to_string());
    }

    /// The operation, or `unknown` for a request s3s rejected before naming it (bad
    /// signature, unroutable path).
    pub fn name(&self) -> String {
        self.0.get().cloned().unwrap_or_else(|| "unknown".into())
    }
}

/// A request body that counts the bytes read from it into
/// `medgate_s3_received_bytes_total`.
pub struct ReceivedBody<B> {
    inner: B,
}

impl<B> ReceivedBody<B> {
    pub fn new(inner: B) -> Self {
        ReceivedBody { inner }
    }
}

impl<B> hyper::body::Body for ReceivedBody<B>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                global().received_bytes.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that counts the bytes sent into `medgate_s3_sent_bytes_total` and,
/// when the connection is done with it (sent in full or abandoned), observes the
/// request's latency.
pub struct SentBody<B> {
    inner: B,
    op: String,
    started: Instant,
}

impl<B> SentBody<B> {
    pub fn new(inner: B, op: String, started: Instant) -> Self {
        SentBody { inner, op, started }
    }
}

impl<B> Drop for SentBody<B> {
    fn drop(&mut self) {
        global()
            .request_duration
            .get_or_create(&OpLabels {
                op: std::mem::take(&mut self.op),
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl<B> hyper::body::Body for SentBody<B>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                global().sent_bytes.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_family_with_its_prefix() {
        let m = global();
        m.chunks_sealed.inc();
        m.requests
            .get_or_create(&RequestLabels {
                op: "PutObject".into(),
                status: 200,
            })
            .inc();
        m.request_duration
            .get_or_create(&OpLabels {
                op: "PutObject".into(),
            })
            .observe(0.01);
        let text = m.encode();
        assert!(text.contains("medgate_chunks_sealed_total "), "{text}");
        assert!(
            text.contains(r#"medgate_s3_requests_total{op="PutObject",status="200"}"#),
            "{text}"
        );
        assert!(text.contains("# TYPE medgate_s3_request_duration_seconds histogram"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn not_found_is_an_answer_not_a_fault() {
        let nf = object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        };
        assert!(!is_fault(&nf));
        let other = object_store::Error::Generic {
            store: "S3",
            source: "connection refused".into(),
        };
        assert!(is_fault(&other));
    }

    #[test]
    fn operation_slot_defaults_to_unknown_and_keeps_the_first_name() {
        let slot = OperationSlot::default();
        assert_eq!(slot.name(), "unknown");
        slot.set("GetObject");
        slot.clone().set("PutObject");
        assert_eq!(slot.name(), "GetObject");
    }
}
