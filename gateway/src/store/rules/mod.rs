//! The private store's rules, written once over [`Kv`]: [`KvStore`] implements every row
//! trait of [`crate::store::private`] (hence `PrivateStore`) for any adapter.
//!
//! What lives here and nowhere else: reference counts of blobs and data keys, write
//! preconditions, pending and orphan bookkeeping, multipart parts (`uploads.rs`), the log
//! append with its per-patient chain and tiles (`log.rs`), the commit and backup gates and
//! group commit (`admin.rs`), the on-open upgrades that only need rows (`upgrade.rs`). The
//! row keys and encodings (`rows.rs`, `log::EventBlock`) are the store's format: an adapter
//! stores the bytes it is given.
//!
//! # Tables and keys
//! | table         | key                                   | value                         |
//! |---------------|---------------------------------------|-------------------------------|
//! | `buckets`     | bucket name                           | JSON `BucketRow` (`v` = 1)    |
//! | `objects`     | bucket ‖ 0x00 ‖ object key            | `keyring::Manifest` encoding  |
//! | `patient_objects` | patient ‖ 0x00 ‖ bucket ‖ 0x00 ‖ key | empty                     |
//! | `leaves`      | blob id (16) ‖ chunk index (u64 BE)   | leaf hash (32)                |
//! | `blobs`       | blob id (16)                          | reference count (u64 BE)      |
//! | `pending`     | blob id (16)                          | created, unix ms (u64 BE)     |
//! | `orphans`     | blob id (16)                          | orphaned at, unix ms (u64 BE) |
//! | `deks`        | DEK id (16)                           | `keyring::dek_record::DekRecord` v2 encoding |
//! | `dek_refs`    | DEK id (16) ‖ bucket ‖ 0x00 ‖ key     | empty                         |
//! | `access_keys` | access key id                         | JSON `AccessKeyRecord`        |
//! | `uploads`     | upload id                             | JSON `UploadRecord`           |
//! | `parts`       | upload id ‖ 0x00 ‖ part number (u32 BE)| JSON `PartRecord`            |
//! | `part_blobs`  | blob id (16)                          | upload id                     |
//! | `patients`    | patient id                            | JSON `PatientRecord`          |
//! | `requests`    | request id (hex)                      | JSON `ShareRequestRecord`     |
//! | `grants`      | grant id (hex)                        | JSON `GrantRecord`            |
//! | `mounts`      | local bucket                          | JSON `MountRecord`            |
//! | `backup_meta` | `last_backup_ms`; `restored_index_seqs` | last backup, unix ms (u64 BE); 0x01 until a restored store's index numbers caught up |
//! | `events`      | first log index (u64 BE)              | [`log::EventBlock`] encoding  |
//! | `log_tiles`   | tile level (u8) ‖ tile index (u64 BE) | its hashes (32 each, ≤ 256)   |
//! | `log_meta`    | `size`; `tiles`; `patient_objects`; `dek_records_v2` | log size (u64 BE); 0x01; 0x01; 0x01 |
//! | `patient_heads`| patient id                           | seq (u64 BE) ‖ commitment (32)|
//! | `checkpoints` | tree size (u64 BE)                    | signed note text              |
//! | `peer_keys`   | peer name                             | its Recipient after a verified key rollover (text) |
//!
//! `log_tiles` holds the log's Merkle tree as C2SP tlog-tiles (`keyring::tiles`): tile `N`
//! of level `L` holds the roots of the complete subtrees of `256^L` leaves
//! `N·256..N·256 + width` (level 0: the leaves), the rightmost tile of each level partial.
//! An append rewrites only the tiles it changes (`tiles_for_append`), in its own
//! transaction, so a batch costs a few row writes beside one row per entry; any complete
//! subtree root is one row read and at most 127 hashes, so a proof is O(log n) reads.
//! `log_meta/tiles` marks a store in this layout; an older sled store (a `log_leaves` row
//! per leaf) is converted by the sled adapter at open.
//!
//! `patient_objects` indexes `objects` by the manifest's patient, written in the same
//! transactions as `objects`, so a patient's records (approvals, rotation, indexes) are a
//! prefix scan, not a scan of every manifest; `log_meta/patient_objects` marks a store that has
//! it, and an older one is indexed at open ([`KvStore::new`]).
//!
//! `deks` rows store each stanza beside the whole Recipient it is wrapped to (DEK record
//! version 2), so a recipient's stanzas are found and removed by comparing whole keys in
//! constant time, never by the stanza's 4-byte tag. Rows written before (version 1: stanzas
//! alone) are upgraded by [`KvStore::upgrade_dek_records`], which the binary runs each time
//! it opens the store, before anything else uses it; `log_meta/dek_records_v2` marks a store
//! whose rows it has upgraded. Until then version 1 rows stay readable (their stanzas have no
//! recipient, so nobody's lookup or removal matches them; the institution still opens its own).
//!
//! Bucket names never contain 0x00, so `bucket ‖ 0x00` is an exact prefix of that
//! bucket's keys, and byte order is S3's listing order (UTF-8 binary).

mod admin;
mod consent;
pub mod log;
mod objects;
pub(crate) mod rows;
mod upgrade;
mod uploads;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub(crate) use admin::LAST_BACKUP_KEY;
pub use admin::RESTORED_KEY;
pub use upgrade::DekUpgrade;

use crate::store::kv::Kv;
use crate::Result;

/// The private store over any [`Kv`]: the rules, the commit and backup gates, group
/// commit. `store::private::sled::SledStore` is `KvStore<SledKv>`.
pub struct KvStore<K> {
    kv: K,
    /// Group commit state (see `flush`): tickets handed out, tickets known durable,
    /// and one flush at a time.
    flush_tickets: AtomicU64,
    flushed_through: AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
    /// The commit gate: every write holds it shared; a backup's export holds it
    /// exclusive while it copies every table, so the copy is one point in time.
    gate: tokio::sync::RwLock<()>,
    /// Held shared by engine operations across a write and its log entry
    /// (`hold_writes`); the export takes it exclusive before `gate`, in that order.
    ops_gate: Arc<tokio::sync::RwLock<()>>,
}

impl<K: Kv> KvStore<K> {
    /// The store over `kv`, with the row upgrades every store gets at open applied (the
    /// patient index of a store made before it existed).
    ///
    /// # Errors
    /// Rows that do not decode; adapter failures.
    pub fn new(kv: K) -> Result<Self> {
        KvStore {
            kv,
            flush_tickets: AtomicU64::new(0),
            flushed_through: AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            gate: tokio::sync::RwLock::new(()),
            ops_gate: Arc::new(tokio::sync::RwLock::new(())),
        }
        .with_patient_index()
    }

    /// The adapter underneath, for tests only: its `Kv` methods and its own fields (sled's
    /// trees) read and write rows around every rule above (reference counts, the log chain,
    /// the gates), so only test code calls it, to plant or inspect raw rows.
    /// `tests/layers.py` refuses it outside tests and `store/` (rule 6). There is no other
    /// way from a `KvStore` to its adapter (no `Deref`).
    #[doc(hidden)]
    pub fn raw_kv(&self) -> &K {
        &self.kv
    }
}

#[cfg(test)]
mod tests;
