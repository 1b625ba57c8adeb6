//! medgate's async engine.
//!
//! The gateway turns S3 requests into sealed records: it streams a body through
//! [`record::Engine`], which seals it chunk by chunk into one blob of the public store
//! ([`public`]) and commits the manifest, wrapped keys and Merkle leaves to the private
//! store ([`private`]) in one transaction. [`s3`] is the S3 front (s3s), [`server`] binds
//! it to a listener with graceful shutdown, [`gc`] reclaims blobs nothing references,
//! and [`admin`] is the local admin socket. [`ops`] serves health, readiness and
//! [`metrics`] on the ops port; [`tls`] holds the certificate both ports serve;
//! [`backup`] makes and restores encrypted backups of the private store.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod audit;
pub mod backup;
pub mod checksum;
pub mod error;
pub mod gc;
pub mod keyrot;
pub mod log;
pub mod metrics;
pub mod ops;
pub mod private;
pub mod public;
pub mod record;
mod region;
pub mod remote;
pub mod replay;
pub mod rotate;
pub mod s3;
pub mod server;
pub mod sharing;
pub mod tls;

pub use error::{Error, Result};

/// Milliseconds since the Unix epoch, the time unit of every record we store.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
