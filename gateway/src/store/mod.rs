//! The store layer, the bottom of the gateway (above keyring): where bytes are kept.
//!
//! - [`private`]: the on-premises store's contract (`PrivateStore`, the sum of five row
//!   traits) and its rows, typed (the log's `Event` with its `EventKind` and `Actor`,
//!   `private/event.rs`); [`private::sled`] the sled adapter (with `sled_backup.rs`, the
//!   only files that name `sled`).
//! - [`rules`]: that contract implemented once (`KvStore`) over [`kv`], whatever the adapter:
//!   reference counts, preconditions, pending and orphan blobs, multipart parts, the log's
//!   per-patient chain and tiles, the backup gate, group commit; the row encodings and how
//!   each row is versioned (`rules/rows.rs`). The adapter under a `KvStore` is reachable only
//!   through the tests' `#[doc(hidden)]` `KvStore::raw_kv()` (`tests/layers.py` rule 6).
//! - [`kv`]: the transaction interface (`Table`, `Tx`, `Kv`) an adapter implements, and its
//!   contract; [`kv::memory`] the in-memory adapter the conformance suite also runs on.
//! - [`public`]: the untrusted object store (object_store behind a metrics and timeout
//!   decorator).
//!
//! Nothing here imports the engine, a front or the runtime.

pub mod kv;
pub mod private;
pub mod public;
pub mod rules;
