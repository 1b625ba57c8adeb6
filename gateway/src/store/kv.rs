//! The key-value interface the private store's rules are written over, and what an adapter
//! (sled today, PostgreSQL later) must provide.
//!
//! The private store is a set of [`Table`]s, each an ordered map from byte keys to byte
//! values. [`crate::store::rules`] writes every rule (reference counts, preconditions,
//! pending and orphan bookkeeping, multipart parts, the log's chaining and tiles, the backup
//! gate) once, over [`Kv`] and [`Tx`]; an adapter only maps these few calls onto its engine
//! (`store::private::sled` onto sled trees, [`memory`] onto `BTreeMap`s for the tests).
//!
//! # The contract an adapter keeps
//! - **Atomicity.** [`Kv::transact`] applies every `put` and `delete` its body made, or none:
//!   after a crash, either all of a transaction's writes are visible or none is. A body that
//!   returns `Err` (an abort) leaves nothing behind. [`Kv::batch`] is atomic too.
//! - **Isolation.** Serializable for the tables a transaction names: the rules read a row,
//!   decide, and write it (a reference count, a request's state, the log size), so two
//!   transactions that touch one row must behave as if one ran after the other. A
//!   transaction reads its own writes. Reads outside a transaction ([`Kv::get`],
//!   [`Kv::range`]) see committed data only and may interleave with commits.
//! - **Retries.** `body` may run more than once (sled re-runs it on a conflict; a
//!   PostgreSQL adapter on a serialization failure), so it is `Fn` and must have no effect
//!   outside the [`Tx`]: randomness and clocks are drawn before the transaction. An adapter
//!   that must retry returns [`TxError::Retry`] from a `Tx` call, which the body passes on
//!   with `?`; only the adapter acts on it.
//! - **Declared tables.** A transaction names its tables up front (sled opens a view per
//!   tree); a `Tx` call on a table not named is an `Internal` error, in every adapter.
//! - **No scans inside a transaction** (sled cannot): a rule that needs a range reads it
//!   before the transaction with [`Kv::range`] and re-validates each row by key inside it
//!   (see how `rules::uploads` completes and aborts an upload).
//! - **Durability.** A committed transaction or batch survives a process crash once
//!   [`Kv::flush`] (or [`Kv::flush_blocking`]) returns after it; the rules decide when to
//!   flush (group commit), never the adapter.
//! - **Order.** Keys compare as bytes; [`Kv::range`] yields rows in ascending key order and
//!   can be walked from either end.
//! - **Export.** [`Kv::export`] sends every table (and any other table the adapter holds)
//!   as `keyring::backup` entries; the rules hold every writer off while it runs.

pub mod memory;

use std::ops::Bound;

use async_trait::async_trait;

use crate::store::private::ExportBatch;
use crate::{Error, Result};

/// Every table of the private store. The names are the sled tree names, which a data dir
/// and a backup carry: they never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Buckets,
    Objects,
    PatientObjects,
    Leaves,
    Blobs,
    Pending,
    Orphans,
    Deks,
    DekRefs,
    AccessKeys,
    Uploads,
    Parts,
    PartBlobs,
    Patients,
    Requests,
    Grants,
    Events,
    LogTiles,
    LogMeta,
    PatientHeads,
    Checkpoints,
    Mounts,
    PeerKeys,
    BackupMeta,
}

impl Table {
    /// Every table, in declaration order.
    pub const ALL: [Table; 24] = [
        Table::Buckets,
        Table::Objects,
        Table::PatientObjects,
        Table::Leaves,
        Table::Blobs,
        Table::Pending,
        Table::Orphans,
        Table::Deks,
        Table::DekRefs,
        Table::AccessKeys,
        Table::Uploads,
        Table::Parts,
        Table::PartBlobs,
        Table::Patients,
        Table::Requests,
        Table::Grants,
        Table::Events,
        Table::LogTiles,
        Table::LogMeta,
        Table::PatientHeads,
        Table::Checkpoints,
        Table::Mounts,
        Table::PeerKeys,
        Table::BackupMeta,
    ];

    /// The table's stored name (a sled tree name).
    pub fn name(self) -> &'static str {
        match self {
            Table::Buckets => "buckets",
            Table::Objects => "objects",
            Table::PatientObjects => "patient_objects",
            Table::Leaves => "leaves",
            Table::Blobs => "blobs",
            Table::Pending => "pending",
            Table::Orphans => "orphans",
            Table::Deks => "deks",
            Table::DekRefs => "dek_refs",
            Table::AccessKeys => "access_keys",
            Table::Uploads => "uploads",
            Table::Parts => "parts",
            Table::PartBlobs => "part_blobs",
            Table::Patients => "patients",
            Table::Requests => "requests",
            Table::Grants => "grants",
            Table::Events => "events",
            Table::LogTiles => "log_tiles",
            Table::LogMeta => "log_meta",
            Table::PatientHeads => "patient_heads",
            Table::Checkpoints => "checkpoints",
            Table::Mounts => "mounts",
            Table::PeerKeys => "peer_keys",
            Table::BackupMeta => "backup_meta",
        }
    }
}

/// Why a transaction body stopped.
#[derive(Debug)]
pub enum TxError {
    /// A rule refused (or a row did not decode, or the adapter failed): the transaction
    /// writes nothing and [`Kv::transact`] returns this error.
    Abort(Error),
    /// The adapter must run the body again (a conflict with a concurrent transaction).
    /// Only an adapter's [`Tx`] returns it; bodies pass it on with `?`.
    Retry,
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError::Abort(e)
    }
}

/// A transaction body's result.
pub type TxResult<T> = std::result::Result<T, TxError>;

/// Aborts a transaction with `e`.
pub fn abort<T>(e: Error) -> TxResult<T> {
    Err(TxError::Abort(e))
}

/// The rows of a [`Kv::range`], ascending by key; walk them from the back with `.rev()`.
pub type Rows<'a> = Box<dyn DoubleEndedIterator<Item = Result<(Vec<u8>, Vec<u8>)>> + Send + 'a>;

/// A key range: `(start, end)` bounds.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Every key that starts with `prefix`.
pub fn prefix(prefix: &[u8]) -> KeyRange {
    // The first key after every key with the prefix: the prefix with its last byte below
    // 0xff incremented and what follows dropped; none if it is all 0xff.
    let mut end = prefix.to_vec();
    let end = loop {
        match end.pop() {
            None => break Bound::Unbounded,
            Some(0xff) => continue,
            Some(b) => {
                end.push(b + 1);
                break Bound::Excluded(end);
            }
        }
    };
    (Bound::Included(prefix.to_vec()), end)
}

/// One atomic unit of reads and writes over the tables a [`Kv::transact`] named.
pub trait Tx {
    /// The row at `key`, as this transaction sees it (its own writes included).
    fn get(&self, table: Table, key: &[u8]) -> TxResult<Option<Vec<u8>>>;
    /// Writes `value` at `key`.
    fn put(&self, table: Table, key: &[u8], value: &[u8]) -> TxResult<()>;
    /// Removes `key`, returning the row it held.
    fn delete(&self, table: Table, key: &[u8]) -> TxResult<Option<Vec<u8>>>;
}

/// An ordered key-value store with transactions: what a private-store adapter implements.
/// See the module docs for the contract.
#[async_trait]
pub trait Kv: Send + Sync + 'static {
    /// Runs `body` in one transaction over `tables`, again on [`TxError::Retry`], and
    /// commits its writes when it returns `Ok`. An abort's error is returned as is.
    fn transact<R>(&self, tables: &[Table], body: impl Fn(&dyn Tx) -> TxResult<R>) -> Result<R>;
    /// The committed row at `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Committed rows in `range`, ascending by key.
    fn range(&self, table: Table, range: KeyRange) -> Result<Rows<'_>>;
    /// Writes (`Some`) and removals (`None`) applied atomically, without reads.
    fn batch(&self, table: Table, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()>;
    /// How many rows `table` holds.
    fn len(&self, table: Table) -> Result<u64>;
    /// Whether `table` holds no row.
    fn is_empty(&self, table: Table) -> Result<bool> {
        Ok(self.len(table)? == 0)
    }
    /// Makes every committed write durable, without blocking the runtime.
    async fn flush(&self) -> Result<()>;
    /// [`Kv::flush`] for synchronous callers (start-up upgrades).
    fn flush_blocking(&self) -> Result<()>;
    /// Sends a copy of every table to `out` (the caller holds writers off).
    async fn export(&self, out: tokio::sync::mpsc::Sender<ExportBatch>) -> Result<()>;
}

/// The `Internal` error of a `Tx` call on a table its transaction did not name.
pub fn undeclared(table: Table) -> TxError {
    TxError::Abort(Error::Internal(format!(
        "table {} is not part of this transaction",
        table.name()
    )))
}
