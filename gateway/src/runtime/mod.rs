//! The runtime layer, the top: listeners, TLS, the ops port, and the composition of a
//! whole gateway from its configuration.
//!
//! [`server`] binds the S3 front with connection limits and graceful shutdown; [`tls`] the
//! certificate both ports serve; [`ops`] health, readiness and `/metrics`; [`run`] composes a
//! whole gateway (engine, background tasks, listeners) and serves until shutdown.

pub mod ops;
pub mod run;
pub mod server;
pub mod tls;
