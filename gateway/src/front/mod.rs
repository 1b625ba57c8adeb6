//! The front layer: wire formats only. Each front parses a request, calls the engine and
//! maps the answer (or the error) back onto its wire.
//!
//! [`s3`] the S3 API (s3s); [`api`] the JSON API (axum) for admins, patients, peers and the
//! log; [`admin`] the local admin socket; [`backup_socket`] backups streamed over it;
//! [`replay`] the single-use cache of peer calls; `region` the legacy `us` region of SigV4.

pub mod admin;
pub mod api;
pub mod backup_socket;
pub(crate) mod region;
pub mod replay;
pub mod s3;
