//! medgate's async engine, in four layers; every path goes downward.
//!
//! - [`runtime`] (top): the whole server as one call ([`runtime::run::run`]), listeners and
//!   the accept loop ([`runtime::server`]), TLS ([`runtime::tls`]), the ops port
//!   ([`runtime::ops`]: health, readiness, metrics).
//! - [`front`]: wire formats only. The S3 mapping ([`front::s3`], s3s), the JSON API
//!   ([`front::api`], axum: admins, patients, peers, the log), the local admin socket
//!   ([`front::admin`]) and backups streamed over it ([`front::backup_socket`]), the replay
//!   cache of peer calls ([`front::replay`]) and the legacy `us` region mapping (`front::region`).
//! - [`engine`]: what a request means. [`engine::record::Engine`] streams a body, seals it
//!   chunk by chunk into one blob of the public store and commits the manifest, wrapped keys
//!   and Merkle leaves to the private store in one transaction, and opens ranges through
//!   the one read pipeline (`engine::read`: lazy chunk jobs over a chunk source, the local
//!   public store or a peer, each chunk checked before it is opened); [`engine::sharing`] (consent
//!   and re-wrapping), [`engine::log`] (the transparency log), [`engine::remote`] (peers),
//!   [`engine::rotate`], [`engine::keyrot`], [`engine::gc`], [`engine::backup`],
//!   [`engine::audit`], [`engine::checksum`]; [`engine::catalog`] is what the fronts read and
//!   change through the engine instead of the store, [`engine::maintenance`] what the admin
//!   socket asks of it.
//! - [`store`] (bottom, above keyring): the private store contract ([`store::private`]: five
//!   row traits, `PrivateStore` their sum, and the typed rows they speak in), its rules
//!   written once ([`store::rules`]) over a small transaction interface ([`store::kv`]), the
//!   sled adapter ([`store::private::sled`]) and an in-memory one ([`store::kv::memory`]);
//!   and the public store ([`store::public`], object_store behind a metrics and timeout
//!   decorator).
//!
//! Beside the layers, usable by all of them and using none: [`error`] (the one error type),
//! [`metrics`] (process-wide counters), [`routes`] (the JSON API's route table, shared by its
//! router and every client of it) and [`now_ms`]. `docs/architecture.md` walks a PUT,
//! a GET and an approval through these modules; `tests/layers.py` checks the rules.
#![forbid(unsafe_code)]

pub mod engine;
pub mod error;
pub mod front;
pub mod metrics;
pub mod routes;
pub mod runtime;
pub mod store;

pub use error::{Error, Result};

/// Milliseconds since the Unix epoch, the time unit of every record we store.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
