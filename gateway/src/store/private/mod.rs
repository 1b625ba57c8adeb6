//! The private (on-premises) store: everything that must stay inside the hospital.
//!
//! It holds bucket and object names, manifests, wrapped data keys (stanzas), the Merkle
//! leaves of every blob, blob reference counts, pending uploads and S3 access keys with
//! their secrets sealed under the institution's identity. [`PrivateStore`] is the
//! contract, the sum of five row traits ([`ObjectRows`], [`UploadRows`], [`ConsentRows`],
//! [`LogRows`], [`AdminRows`]); `crate::store::rules::KvStore` implements them once over any
//! `crate::store::kv::Kv`, and [`sled`](self::sled) is the embedded adapter
//! (`SledStore = KvStore<SledKv>`).
//!
//! # Contract
//! - Every method that changes more than one record is atomic: after a crash either all
//!   of its writes are visible or none is.
//! - A successful [`ObjectRows::commit_put`] or [`ObjectRows::delete_object`] is
//!   durable once [`AdminRows::flush`] returns; callers flush before they answer.
//! - Blobs are never deleted here; a blob whose reference count drops to zero is
//!   recorded as an orphan for `gc`.
//! - The transparency log is dense: every append, whether a batch of
//!   [`LogRows::append_events`] or the entry of a logged commit
//!   ([`ObjectRows::commit_put_logged`], [`ObjectRows::delete_object_logged`]), takes
//!   the next indices with no gap, in the transaction that writes the entries and the
//!   Merkle tree hashes they change ([`LogRows::log_hashes`]).

mod event;
pub mod sled;
pub mod sled_backup;

pub use event::{entry_of, Actor, Event, EventKind};

/// The private store's traits, for code that calls them on a concrete store (a
/// `SledStore`) rather than through `dyn PrivateStore`: `use …::private::prelude::*`.
pub mod prelude {
    pub use super::{AdminRows, ConsentRows, LogRows, ObjectRows, PrivateStore, UploadRows};
}

use async_trait::async_trait;
pub use keyring::dek_record::DekStanza;
use keyring::{BlobId, DekId, Hash, Manifest, Recipient};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A bucket as the private store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketInfo {
    pub name: String,
    pub created_ms: u64,
}

/// An S3 access key. The secret is sealed under the institution's vault key; the store
/// never sees it in clear.
///
/// Row (JSON in the `access_keys` tree), by version:
///
/// | field            | since | meaning                                                        |
/// |------------------|-------|----------------------------------------------------------------|
/// | `id`             | v1    | the access key id                                              |
/// | `sealed_secret`  | v1    | `VaultKey::seal` output, bound to `id`                         |
/// | `buckets`        | v1    | buckets the key may use; empty means every bucket              |
/// | `created_ms`     | v1    | creation time                                                  |
/// | `v`              | v2    | row version, 2 (absent in v1 rows)                             |
/// | `label_patients` | v2    | may label records with a patient (absent in v1 rows: read as `true`, the right every key had before v2) |
#[derive(Clone, Serialize, Deserialize)]
pub struct AccessKeyRecord {
    pub id: String,
    /// `VaultKey::seal` output; opened only by the S3 front when it checks a signature.
    pub sealed_secret: Vec<u8>,
    /// Buckets this key may use; empty means every bucket.
    pub buckets: Vec<String>,
    pub created_ms: u64,
    /// Row version: [`ACCESS_KEY_ROW_V1`] when read from a row written before versions.
    #[serde(default = "access_key_row_v1")]
    pub v: u8,
    /// Whether the key may label a record with a patient (`x-amz-meta-medgate-patient`, or
    /// a `[[patient_prefixes]]` match), which adds the record to the patient's index and
    /// to their grants for future records.
    #[serde(default = "access_key_v1_label_right")]
    pub label_patients: bool,
}

/// Version of access-key rows written before the row had a version.
pub const ACCESS_KEY_ROW_V1: u8 = 1;
/// Version of access-key rows written now.
pub const ACCESS_KEY_ROW_V2: u8 = 2;

fn access_key_row_v1() -> u8 {
    ACCESS_KEY_ROW_V1
}

/// Keys that existed before the right did keep it (upgrades change no key's behaviour);
/// the server names them at start.
fn access_key_v1_label_right() -> bool {
    true
}

impl std::fmt::Debug for AccessKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeyRecord")
            .field("id", &self.id)
            .field("buckets", &self.buckets)
            .field("v", &self.v)
            .field("label_patients", &self.label_patients)
            .finish_non_exhaustive()
    }
}

/// What the private store knows about a blob of the public store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobState {
    /// At least one manifest references it.
    Referenced(u64),
    /// A write is (or was, before a crash) uploading it.
    Pending { created_ms: u64 },
    /// Its last reference went away at this time.
    Orphan { since_ms: u64 },
    /// Nothing refers to it (an upload that crashed before its pending row, or a blob
    /// gc already forgot).
    Unknown,
}

/// A write precondition checked inside the commit transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Precondition {
    #[default]
    None,
    /// `If-None-Match: *`: fail if the key exists.
    Absent,
    /// `If-Match: ETAG`: fail unless the current ETag is this one (quoted).
    ETag(String),
}

/// One object write, committed atomically.
#[derive(Clone, Debug)]
pub struct PutCommit {
    pub bucket: String,
    pub key: String,
    pub manifest: Manifest,
    /// Stanzas of the manifest's DEK. For a new DEK these become its record; for a DEK
    /// that already exists (a copy) they are added to it. Each names its Recipient.
    pub stanzas: Vec<DekStanza>,
    pub precondition: Precondition,
    /// The multipart upload this commit completes: it is removed in the same
    /// transaction, and its parts that the manifest does not use become orphans.
    pub upload: Option<String>,
}

/// A multipart upload in progress. Its DEK is drawn at creation and wrapped for the
/// institution; every part is sealed under it with a fresh blob id.
///
/// Row (JSON in `uploads`), unversioned: a field added later reads as its default from an
/// older row (that is how older forms are recognised), and unknown fields are ignored.
///
/// | field                | JSON                        | absent in older rows: read as |
/// |----------------------|-----------------------------|-------------------------------|
/// | `bucket`, `key`      | string                      | (always present)              |
/// | `created_ms`, `touched_ms` | number                | (always present)              |
/// | `dek_id`             | hex (32)                    | (always present)              |
/// | `stanza`             | array of byte numbers       | (always present)              |
/// | `content_type`       | string or null              | (always present)              |
/// | `headers`, `metadata`| array of [name, value]      | (always present)              |
/// | `checksum_algorithm` | string or null              | null                          |
/// | `checksum_type`      | string or null              | null                          |
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub bucket: String,
    pub key: String,
    pub created_ms: u64,
    /// Last part upload; gc aborts uploads idle for longer than the grace period.
    pub touched_ms: u64,
    #[serde(with = "hex_dek")]
    pub dek_id: DekId,
    /// The DEK wrapped for the institution (`WrappedKey` bytes).
    pub stanza: Vec<u8>,
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
    pub metadata: Vec<(String, String)>,
    /// The additional checksum every part carries (CreateMultipartUpload's
    /// `x-amz-checksum-algorithm`, upper case), if the client asked for one.
    #[serde(default)]
    pub checksum_algorithm: Option<String>,
    /// How the parts' checksums make the object's: `COMPOSITE` or `FULL_OBJECT`.
    #[serde(default)]
    pub checksum_type: Option<String>,
}

/// One uploaded part: one blob.
///
/// Row (JSON in `parts`), unversioned like [`UploadRecord`]: `blob` (hex, 32), `chunk_size`,
/// `plaintext_len` (numbers), `root` (hex, 64), `md5` (hex text), `created_ms`, and
/// `checksums` (array of [algorithm, base64]; absent in older rows: read as empty).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    #[serde(with = "hex_blob")]
    pub blob: BlobId,
    pub chunk_size: u32,
    pub plaintext_len: u64,
    #[serde(with = "hex_hash")]
    pub root: Hash,
    /// MD5 of the part's plaintext (its ETag without quotes, hex).
    pub md5: String,
    pub created_ms: u64,
    /// The part's additional checksums over its plaintext: (upper-case algorithm, base64).
    #[serde(default)]
    pub checksums: Vec<(String, String)>,
}

/// A registered patient: the public key the gateway wraps their records' DEKs to and
/// checks their signatures against.
///
/// Row (JSON in `patients`), unversioned (a later field reads as its default from an older
/// row): `id`, `recipient` (Bech32), `registered_ms`, `proof` (hex), and `index_seq`
/// (absent in older rows: read as 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientRecord {
    pub id: String,
    /// The patient's `Recipient` (Bech32 `medgate1...`).
    pub recipient: String,
    pub registered_ms: u64,
    /// The registration proof (hex Ed25519 signature) the patient gave.
    pub proof: String,
    /// Sequence number of the last patient index published (or about to be).
    #[serde(default)]
    pub index_seq: u64,
}

/// Where a share request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestState {
    Pending,
    Approved,
    Denied,
}

/// A share request as the gateway keeps it.
///
/// Row (JSON in `requests`), unversioned: `id` (hex), `request` (text form), `patient_id`,
/// `state` (`"pending"`, `"approved"`, `"denied"`), `created_ms`, and `grant` (hex id or
/// null; absent in older rows: read as null).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareRequestRecord {
    /// Hex of the request's hash.
    pub id: String,
    /// `ShareRequest::to_text`.
    pub request: String,
    pub patient_id: String,
    pub state: RequestState,
    pub created_ms: u64,
    /// The grant that approved it (hex id), once approved.
    #[serde(default)]
    pub grant: Option<String>,
}

/// An accepted grant: what was re-wrapped under it, and whether it still stands.
///
/// Row (JSON in `grants`), unversioned: `id` (hex), `grant` (text form), `request_id`,
/// `patient_id`, `recipient` (Bech32), `issued_ms`, `expires_ms`, then `revoked_ms` (number or
/// null) and `records` (array of [bucket, key, hex DEK id]), both absent in older rows: read
/// as null and empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// Hex of `SignedGrant::id`.
    pub id: String,
    /// `SignedGrant::to_text`.
    pub grant: String,
    pub request_id: String,
    pub patient_id: String,
    /// Who the DEKs were wrapped to (Bech32).
    pub recipient: String,
    pub issued_ms: u64,
    pub expires_ms: u64,
    #[serde(default)]
    pub revoked_ms: Option<u64>,
    /// The records re-wrapped under this grant: (bucket, key, hex DEK id).
    #[serde(default)]
    pub records: Vec<(String, String, String)>,
}

/// A bucket of this gateway that shows records another institution shares with it: reads
/// go to the peer's exchange API under the grant that approved `request_id`.
///
/// Row (JSON in `mounts`), unversioned: `bucket`, `peer`, `request_id`, `grant` (hex id or
/// null; absent: null), `created_ms`; `state` is never stored (skipped when `None`, and
/// always `None` in a row).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// The local bucket name clients read.
    pub bucket: String,
    /// The peer's name in the config's `[[peers]]`.
    pub peer: String,
    /// The share request's id at the peer.
    pub request_id: String,
    /// The grant (hex id) once the patient approved; `None` while pending.
    #[serde(default)]
    pub grant: Option<String>,
    pub created_ms: u64,
    /// Where the share stands at the peer (`pending`, `denied`, `in force`, `revoked`,
    /// `expired`, or why the peer could not say), asked when mounts are listed; never
    /// stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// A page of a key listing.
#[derive(Clone, Debug)]
pub struct ListedObject {
    pub key: String,
    pub manifest: Manifest,
}

/// The private store's interface: the five row traits together. See the module docs for the
/// contract; `crate::store::rules::KvStore` implements every one of them over any
/// [`crate::store::kv::Kv`]. Engine code holds a `&dyn PrivateStore` or an
/// `Arc<dyn PrivateStore>` and calls any of their methods.
pub trait PrivateStore: ObjectRows + UploadRows + ConsentRows + LogRows + AdminRows {}

impl<T: ObjectRows + UploadRows + ConsentRows + LogRows + AdminRows> PrivateStore for T {}

/// Buckets, objects (manifests), blobs and their reference counts, pending and orphan
/// blobs, Merkle leaves: the rows a write, a read, a delete and gc touch.
#[async_trait]
pub trait ObjectRows: Send + Sync + 'static {
    async fn create_bucket(&self, name: &str, created_ms: u64) -> Result<()>;
    async fn delete_bucket(&self, name: &str) -> Result<()>;
    async fn bucket(&self, name: &str) -> Result<Option<BucketInfo>>;
    async fn list_buckets(&self) -> Result<Vec<BucketInfo>>;

    async fn manifest(&self, bucket: &str, key: &str) -> Result<Option<Manifest>>;
    /// Keys of `bucket` that start with `prefix` and sort strictly after `after`, in
    /// byte order, at most `limit` of them.
    async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<ListedObject>>;

    /// Records that a blob upload is starting. Must precede the first byte sent to the
    /// public store, so that a crash leaves a row gc can find.
    async fn add_pending(&self, blob: BlobId, created_ms: u64) -> Result<()>;
    /// Forgets a pending upload that failed (its blob, if any, is left to gc).
    async fn drop_pending(&self, blob: BlobId) -> Result<()>;
    /// Stores leaves `first..first + leaves.len()` of a blob. Leaves of a blob that no
    /// manifest references are harmless and removed by gc.
    async fn put_leaves(&self, blob: BlobId, first: u64, leaves: &[Hash]) -> Result<()>;
    /// Leaves `first..=last` of a blob, in order.
    async fn leaves(&self, blob: BlobId, first: u64, last: u64) -> Result<Vec<Hash>>;

    /// Commits an object: checks the bucket and precondition, moves every part's blob
    /// from pending to referenced (failing with `Error::Reaped` if gc got there first),
    /// writes the manifest and stanzas, and releases the old version's references.
    /// Returns the manifest it replaced.
    async fn commit_put(&self, commit: PutCommit) -> Result<Option<Manifest>>;
    /// [`ObjectRows::commit_put`] that appends `entry` to the log in the same
    /// transaction (as [`LogRows::append_events`] would), so a crash never leaves a
    /// committed write without its log entry. Returns the replaced manifest and the
    /// entry's index.
    async fn commit_put_logged(
        &self,
        commit: PutCommit,
        entry: Event,
    ) -> Result<(Option<Manifest>, u64)>;
    /// Removes an object, releasing its blob and DEK references. Returns what it removed.
    async fn delete_object(&self, bucket: &str, key: &str) -> Result<Option<Manifest>>;
    /// [`ObjectRows::delete_object`] that, if it removed an object, appends `entry` in
    /// the same transaction, its `patient` set to the removed manifest's. Returns what it
    /// removed and the entry's index.
    async fn delete_object_logged(
        &self,
        bucket: &str,
        key: &str,
        entry: Event,
    ) -> Result<(Option<Manifest>, Option<u64>)>;
    /// The stanzas of a DEK, each with the Recipient it is wrapped to (when known).
    async fn stanzas(&self, dek: DekId) -> Result<Vec<DekStanza>>;

    async fn blob_state(&self, blob: BlobId) -> Result<BlobState>;
    /// Atomically forgets a blob that is not referenced and whose pending or orphan row
    /// is older than `cutoff_ms`, with its leaves. Returns false (and changes nothing)
    /// if the blob is referenced or too young; the caller then must not delete it.
    async fn reap_blob(&self, blob: BlobId, cutoff_ms: u64) -> Result<bool>;
    /// Pending uploads, for gc.
    async fn pending(&self) -> Result<Vec<(BlobId, u64)>>;
    /// Orphan rows (blobs whose last reference went, or whose upload failed), for gc.
    async fn orphans(&self) -> Result<Vec<(BlobId, u64)>>;
    /// Every object that belongs to `patient` (manifest's patient field), by bucket and key.
    async fn patient_objects(&self, patient: &str) -> Result<Vec<(String, String, Manifest)>>;
}

/// Multipart uploads and their parts.
#[async_trait]
pub trait UploadRows: Send + Sync + 'static {
    /// Starts a multipart upload.
    async fn create_upload(&self, id: &str, record: UploadRecord) -> Result<()>;
    async fn upload(&self, id: &str) -> Result<Option<UploadRecord>>;
    /// Multipart uploads of a bucket, by key then id.
    async fn list_uploads(&self, bucket: &str) -> Result<Vec<(String, UploadRecord)>>;
    /// Records a part (its blob stays pending until the upload completes). A part
    /// uploaded again under the same number replaces the old one, whose blob becomes an
    /// orphan. Fails with `NoSuchUpload` if the upload is gone.
    async fn put_part(&self, id: &str, number: u32, part: PartRecord) -> Result<()>;
    async fn parts(&self, id: &str) -> Result<Vec<(u32, PartRecord)>>;
    /// Removes an upload and its parts; their blobs become orphans. Returns the parts.
    async fn abort_upload(&self, id: &str) -> Result<Vec<PartRecord>>;
}

/// Patients, share requests, grants, the stanzas (wrapped data keys) a grant adds or a
/// revocation removes, and peers re-pinned after a key rollover.
#[async_trait]
pub trait ConsentRows: Send + Sync + 'static {
    /// Registers a patient; with `replace` false an existing id is an error
    /// (`InvalidArgument`), so a key change must say so.
    async fn put_patient(&self, record: PatientRecord, replace: bool) -> Result<()>;
    async fn patient(&self, id: &str) -> Result<Option<PatientRecord>>;
    async fn list_patients(&self) -> Result<Vec<PatientRecord>>;

    /// Stores a new share request; an id already stored is an error.
    async fn insert_request(&self, record: ShareRequestRecord) -> Result<()>;
    async fn request(&self, id: &str) -> Result<Option<ShareRequestRecord>>;
    async fn list_requests(&self) -> Result<Vec<ShareRequestRecord>>;
    /// Moves a pending request to `state` (and records its grant, inserted in the same
    /// transaction, which fails if that grant id was ever stored: no replay). Fails with
    /// `InvalidArgument` if the request is not pending.
    async fn decide_request(
        &self,
        id: &str,
        state: RequestState,
        grant: Option<GrantRecord>,
    ) -> Result<()>;
    async fn grant(&self, id: &str) -> Result<Option<GrantRecord>>;
    async fn list_grants(&self) -> Result<Vec<GrantRecord>>;
    /// Overwrites an existing grant record (re-wrapped records, revocation).
    async fn update_grant(&self, record: GrantRecord) -> Result<()>;

    /// Adds stanzas to an existing DEK; false if the DEK is gone (its objects deleted).
    async fn add_stanzas(&self, dek: DekId, stanzas: Vec<DekStanza>) -> Result<bool>;
    /// Removes a DEK's stanzas wrapped to `recipient`: those whose stored Recipient is the
    /// same whole key, compared in constant time ([`DekStanza::is_for`]); never by the
    /// 4-byte tag, which other recipients may share. Stanzas of unknown recipient (version 1
    /// rows the upgrade could not match) are kept. Returns how many went.
    async fn remove_stanzas(&self, dek: DekId, recipient: &Recipient) -> Result<usize>;
    /// [`ConsentRows::add_stanzas`] for many data keys at once (one transaction where the
    /// store has them): per entry, whether its DEK exists.
    async fn add_stanzas_batch(&self, batch: Vec<(DekId, DekStanza)>) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(batch.len());
        for (dek, stanza) in batch {
            out.push(self.add_stanzas(dek, vec![stanza]).await?);
        }
        Ok(out)
    }
    /// Peers re-pinned after a verified key rollover: (peer name, its new Recipient text).
    async fn peer_keys(&self) -> Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }
    /// Records that `peer` is now pinned to `recipient` (a verified key rollover), durably.
    async fn put_peer_key(&self, peer: &str, recipient: &str) -> Result<()> {
        let _ = (peer, recipient);
        Err(crate::Error::Internal(
            "this private store cannot record peer key rollovers".into(),
        ))
    }
}

/// The transparency log: entries with their per-patient chain, its Merkle tree (tiles),
/// published checkpoints.
#[async_trait]
pub trait LogRows: Send + Sync + 'static {
    /// Appends events to the log, in order, in one transaction: each gets the next dense
    /// index (its `seq`), a fresh random 32-byte salt, its patient's next sequence number
    /// and previous commitment (an earlier event of the same batch counts), and its
    /// Merkle leaf (the leaf hash of its salted commitment, see `keyring::logentry`); the
    /// tree hashes the batch changes are stored with them. Returns
    /// the index of the first (the log size if `events` is empty). Durable once
    /// [`AdminRows::flush`] returns.
    async fn append_events(&self, events: Vec<Event>) -> Result<u64>;
    /// [`LogRows::append_events`] of one event.
    async fn append_event(&self, event: Event) -> Result<u64> {
        self.append_events(vec![event]).await
    }
    /// The number of entries in the log.
    async fn log_size(&self) -> Result<u64>;
    /// Merkle leaves `from..to` of the log.
    async fn log_leaves(&self, from: u64, to: u64) -> Result<Vec<Hash>>;
    /// Roots of the perfect subtrees of height `height` (`2^height` leaves each) with
    /// indices `from..to`: subtree `i` covers leaves `i·2^height..(i+1)·2^height`. Height 0
    /// gives leaves. Only complete subtrees exist, so `to` is at most
    /// `log_size >> height`; a missing hash is `Corrupt`. Served from stored hashes, not
    /// by hashing the leaves: proofs use it for O(log n) reads.
    async fn log_hashes(&self, height: u8, from: u64, to: u64) -> Result<Vec<Hash>>;
    /// Records a checkpoint this gateway published (signed note text), by tree size.
    async fn put_checkpoint(&self, size: u64, note: &str) -> Result<()>;
    /// Every checkpoint published, by size.
    async fn checkpoints(&self) -> Result<Vec<(u64, String)>>;
    /// Events with `seq >= from`, at most `limit`.
    async fn events(&self, from: u64, limit: usize) -> Result<Vec<Event>>;
}

/// S3 access keys, mounts of peers' shares, durability (`flush`), and the backup gate and
/// marks.
#[async_trait]
pub trait AdminRows: Send + Sync + 'static {
    async fn put_access_key(&self, record: AccessKeyRecord) -> Result<()>;
    async fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>>;
    async fn list_access_keys(&self) -> Result<Vec<AccessKeyRecord>>;
    async fn delete_access_key(&self, id: &str) -> Result<bool>;

    /// Adds or replaces a mount (by bucket).
    async fn put_mount(&self, record: MountRecord) -> Result<()>;
    /// Every mount, by bucket.
    async fn mounts(&self) -> Result<Vec<MountRecord>>;

    /// Makes every completed write durable.
    async fn flush(&self) -> Result<()>;

    /// Sends a consistent copy of every tree to `out` (see [`crate::engine::backup`]): writes wait
    /// while it runs, so the copy is one point in time across trees.
    async fn export(&self, out: tokio::sync::mpsc::Sender<ExportBatch>) -> Result<()> {
        drop(out);
        Err(crate::Error::Internal(
            "this private store cannot export a backup".into(),
        ))
    }
    /// Holds a backup's export off while an engine operation makes writes that must land in
    /// the same backup (a manifest and its log entry); `None` when the store needs no hold.
    async fn hold_writes(&self) -> Option<tokio::sync::OwnedRwLockReadGuard<()>> {
        None
    }
    /// When the last successful backup was taken (Unix ms), if one was recorded.
    async fn last_backup_ms(&self) -> Result<Option<u64>> {
        Ok(None)
    }
    /// Records a successful backup taken at `ms`, durably.
    async fn set_last_backup_ms(&self, ms: u64) -> Result<()> {
        let _ = ms;
        Err(crate::Error::Internal(
            "this private store cannot record backups".into(),
        ))
    }
    /// Whether this store was restored from a backup and its patient index sequence numbers
    /// have not yet been brought past the published ones.
    async fn restored_pending(&self) -> Result<bool> {
        Ok(false)
    }
    /// Clears the mark [`AdminRows::restored_pending`] reads, durably.
    async fn clear_restored(&self) -> Result<()> {
        Ok(())
    }
}

/// Serde adapters: ids and hashes are hex strings in the JSON records.
macro_rules! hex_serde {
    ($name:ident, $ty:ty, $len:expr, $wrap:expr, $unwrap:expr) => {
        mod $name {
            use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

            pub fn serialize<S: Serializer>(v: &$ty, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&hex::encode(($unwrap)(v)))
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let text = String::deserialize(d)?;
                let bytes = hex::decode(&text).map_err(D::Error::custom)?;
                let arr = <[u8; $len]>::try_from(bytes.as_slice())
                    .map_err(|_| D::Error::custom("wrong length"))?;
                Ok(($wrap)(arr))
            }
        }
    };
}

hex_serde!(
    hex_blob,
    keyring::BlobId,
    16,
    keyring::BlobId,
    |v: &keyring::BlobId| v.0
);
hex_serde!(
    hex_dek,
    keyring::DekId,
    16,
    keyring::DekId,
    |v: &keyring::DekId| v.0
);
hex_serde!(hex_hash, keyring::Hash, 32, |a| a, |v: &keyring::Hash| *v);

/// A slice of a store's export: entries (`Entry::Tree` and `Entry::Record` of `keyring::backup`) and how
/// many there are in all, for progress.
#[derive(Debug)]
pub struct ExportBatch {
    pub total: u64,
    pub entries: Vec<keyring::backup::Entry>,
}

/// A 32-byte hash from its hex form, `Corrupt(what)` when it is not one.
pub(crate) fn unhex32(s: &str, what: &str) -> Result<Hash> {
    let v = hex::decode(s).map_err(|_| Error::Corrupt(what.into()))?;
    <[u8; 32]>::try_from(v.as_slice()).map_err(|_| Error::Corrupt(what.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_key_rows_of_v1_keep_the_label_right_and_v2_rows_say_theirs() {
        let v1 = r#"{"id":"AKIAOLD","sealed_secret":[1,2],"buckets":["ehr"],"created_ms":5}"#;
        let r: AccessKeyRecord = serde_json::from_str(v1).unwrap();
        assert_eq!((r.v, r.label_patients), (ACCESS_KEY_ROW_V1, true));
        assert_eq!(r.buckets, vec!["ehr".to_string()]);
        for right in [false, true] {
            let row = AccessKeyRecord {
                label_patients: right,
                v: ACCESS_KEY_ROW_V2,
                ..r.clone()
            };
            let text = serde_json::to_string(&row).unwrap();
            assert!(text.contains(r#""v":2"#), "{text}");
            let back: AccessKeyRecord = serde_json::from_str(&text).unwrap();
            assert_eq!((back.v, back.label_patients), (ACCESS_KEY_ROW_V2, right));
        }
    }
}
