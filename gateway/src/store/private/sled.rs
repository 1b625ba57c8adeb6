//! The embedded private store on sled 0.34.
//!
//! One sled database in `DATA_DIR/private`; sled lets one process open it at a time,
//! which [`SledStore::open`] reports as [`crate::Error::Locked`]-like I/O errors the binary
//! turns into a clear message.
//!
//! # Trees and keys
//! | tree          | key                                   | value                         |
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
//! | `backup_meta` | `last_backup_ms`; `restored_index_seqs` | last backup, unix ms (u64 BE); 0x01 until a restored store's index numbers caught up |
//! | `events`      | first log index (u64 BE)              | [`EventBlock`] encoding       |
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
//! `log_meta/tiles` marks a store in this layout; an older one (a `log_leaves` row per
//! leaf) is converted at open.
//!
//! `patient_objects` indexes `objects` by the manifest's patient, written in the same
//! transactions as `objects`, so a patient's records (approvals, rotation, indexes) are a
//! prefix scan, not a scan of every manifest; `log_meta/patient_objects` marks a store that has
//! it, and an older one is indexed at open.
//!
//! `deks` rows store each stanza beside the whole Recipient it is wrapped to (DEK record
//! version 2), so a recipient's stanzas are found and removed by comparing whole keys in
//! constant time, never by the stanza's 4-byte tag. Rows written before (version 1: stanzas
//! alone) are upgraded by [`SledStore::upgrade_dek_records`], which the binary runs each time
//! it opens the store, before anything else uses it; `log_meta/dek_records_v2` marks a store
//! whose rows it has upgraded. Until then version 1 rows stay readable (their stanzas have no
//! recipient, so nobody's lookup or removal matches them; the institution still opens its own).
//!
//! Bucket names never contain 0x00, so `bucket ‖ 0x00` is an exact prefix of that
//! bucket's keys, and sled's byte order is S3's listing order (UTF-8 binary).

use std::path::Path;

use async_trait::async_trait;
use keyring::dek_record::{DekRecord, DekStanza, DEK_RECORD_V1};
use keyring::tiles::TileId;
use keyring::{BlobId, DekId, Hash, Manifest, Recipient};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::{
    AccessKeyRecord, BlobState, BucketInfo, Event, GrantRecord, ListedObject, MountRecord,
    PartRecord, PatientRecord, Precondition, PrivateStore, PutCommit, RequestState,
    ShareRequestRecord, UploadRecord,
};
use crate::{Error, Result};

/// The sled-backed [`PrivateStore`].
pub struct SledStore {
    db: sled::Db,
    buckets: sled::Tree,
    objects: sled::Tree,
    patient_objects: sled::Tree,
    leaves: sled::Tree,
    blobs: sled::Tree,
    pending: sled::Tree,
    orphans: sled::Tree,
    deks: sled::Tree,
    dek_refs: sled::Tree,
    access_keys: sled::Tree,
    uploads: sled::Tree,
    parts: sled::Tree,
    part_blobs: sled::Tree,
    patients: sled::Tree,
    requests: sled::Tree,
    grants: sled::Tree,
    events: sled::Tree,
    log_tiles: sled::Tree,
    log_meta: sled::Tree,
    patient_heads: sled::Tree,
    checkpoints: sled::Tree,
    /// Group commit state (see `flush`): tickets handed out, tickets known durable,
    /// and one flush at a time.
    flush_tickets: std::sync::atomic::AtomicU64,
    flushed_through: std::sync::atomic::AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
    /// The commit gate: every write holds it shared; a backup's export holds it
    /// exclusive while it copies every tree, so the copy is one point in time.
    gate: tokio::sync::RwLock<()>,
    /// Held shared by engine operations across a write and its log entry
    /// (`hold_writes`); the export takes it exclusive before `gate`, in that order.
    ops_gate: std::sync::Arc<tokio::sync::RwLock<()>>,
}

#[derive(Serialize, Deserialize)]
struct BucketRow {
    v: u8,
    created_ms: u64,
    objects: u64,
}

/// Decodes a `deks` row (either version; see [`keyring::dek_record`]).
fn decode_dek(v: &[u8]) -> Result<DekRecord> {
    DekRecord::decode(v).map_err(|_| Error::Corrupt("DEK record".into()))
}

fn split_u64(b: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = b.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*head), rest))
}
fn split_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), rest))
}

fn read_u64(v: &[u8]) -> Result<u64> {
    split_u64(v)
        .map(|(n, _)| n)
        .ok_or_else(|| Error::Corrupt("counter".into()))
}

fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    nul_joined(bucket.as_bytes(), key.as_bytes())
}

/// `patient ‖ 0x00 ‖ object key` (the object key being `bucket ‖ 0x00 ‖ key`).
fn patient_object_key(patient: &str, okey: &[u8]) -> Vec<u8> {
    nul_joined(patient.as_bytes(), okey)
}

/// `a ‖ 0x00 ‖ b`.
fn nul_joined(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + b.len());
    k.extend_from_slice(a);
    k.push(0);
    k.extend_from_slice(b);
    k
}

fn dek_ref_key(dek: &DekId, bucket: &str, key: &str) -> Vec<u8> {
    let mut k = dek.0.to_vec();
    k.extend_from_slice(&object_key(bucket, key));
    k
}

fn part_key(upload: &str, number: u32) -> Vec<u8> {
    nul_joined(upload.as_bytes(), &number.to_be_bytes())
}

fn decode_json<T: serde::de::DeserializeOwned>(v: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(v).map_err(|_| Error::Corrupt(what.to_string()))
}

fn leaf_key(blob: &BlobId, index: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&blob.0);
    k[16..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The trees that count references, as seen inside one transaction.
struct RefTrees<'a> {
    blobs: &'a TransactionalTree,
    orphans: &'a TransactionalTree,
    deks: &'a TransactionalTree,
    dek_refs: &'a TransactionalTree,
}

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<Error>>;

fn abort<T>(e: Error) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn tx_err(e: TransactionError<Error>) -> Error {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => Error::from(e),
    }
}

fn decode_bucket(v: &[u8]) -> Result<BucketRow> {
    serde_json::from_slice(v).map_err(|_| Error::Corrupt("bucket row".into()))
}

fn encode_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(e.to_string()))
}

/// Releases one reference to each blob of `old`, recording blobs that drop to zero as
/// orphans, and one reference to its DEK (removing the DEK record, and with it every
/// stanza, when none is left: that is crypto-shredding).
fn release(old: &Manifest, bucket: &str, key: &str, now: u64, t: &RefTrees<'_>) -> TxResult<()> {
    let RefTrees {
        blobs,
        orphans,
        deks,
        dek_refs,
    } = t;
    for part in &old.parts {
        let id = part.blob.0;
        let refs = match blobs.get(id)? {
            Some(v) => read_u64(&v).or_else(abort)?,
            None => 0,
        };
        if refs <= 1 {
            blobs.remove(&id)?;
            orphans.insert(&id, &now.to_be_bytes())?;
        } else {
            blobs.insert(&id, &(refs - 1).to_be_bytes())?;
        }
    }
    dek_refs.remove(dek_ref_key(&old.dek_id, bucket, key))?;
    if let Some(v) = deks.get(old.dek_id.0)? {
        let mut rec = decode_dek(&v).or_else(abort)?;
        if rec.refs <= 1 {
            deks.remove(&old.dek_id.0)?;
        } else {
            rec.refs -= 1;
            deks.insert(&old.dek_id.0, rec.encode())?;
        }
    }
    Ok(())
}

/// Moves a blob from pending to orphaned (for gc), if it is pending.
fn orphan_if_pending(
    pending: &TransactionalTree,
    orphans: &TransactionalTree,
    blob: &BlobId,
    now: u64,
) -> TxResult<()> {
    if pending.remove(&blob.0)?.is_some() {
        orphans.insert(&blob.0, &now.to_be_bytes())?;
    }
    Ok(())
}

/// Every row of a tree keyed by blob id with a u64 value.
fn json_rows<T: serde::de::DeserializeOwned>(tree: &sled::Tree, what: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (_, v) = item?;
        out.push(decode_json(&v, what)?);
    }
    Ok(out)
}

fn blob_rows(tree: &sled::Tree) -> Result<Vec<(BlobId, u64)>> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (k, v) = item?;
        let id = <[u8; 16]>::try_from(&k[..]).map_err(|_| Error::Corrupt("blob row".into()))?;
        out.push((BlobId(id), read_u64(&v)?));
    }
    Ok(out)
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    ///
    /// # Errors
    /// An I/O error of kind `WouldBlock` when another process holds the database
    /// (sled allows one at a time), or any sled error.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        // sled releases its file lock a moment after the last handle in this process
        // drops (its flusher thread ends asynchronously), so a store closed and reopened
        // by one process (a restore, tests) may briefly see its own lock: retry for up to
        // a second before reporting the store as locked.
        let mut tries = 0;
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .cache_capacity(cache_bytes)
                .open()
            {
                Ok(db) => break db,
                Err(sled::Error::Io(io))
                    if tries < 50 && io.to_string().contains("could not acquire lock") =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(sled::Error::Io(io)) => return Err(Error::Io(io)),
                Err(other) => return Err(Error::from(other)),
            }
        };
        SledStore {
            buckets: db.open_tree("buckets")?,
            objects: db.open_tree("objects")?,
            patient_objects: db.open_tree("patient_objects")?,
            leaves: db.open_tree("leaves")?,
            blobs: db.open_tree("blobs")?,
            pending: db.open_tree("pending")?,
            orphans: db.open_tree("orphans")?,
            deks: db.open_tree("deks")?,
            dek_refs: db.open_tree("dek_refs")?,
            access_keys: db.open_tree("access_keys")?,
            uploads: db.open_tree("uploads")?,
            parts: db.open_tree("parts")?,
            part_blobs: db.open_tree("part_blobs")?,
            patients: db.open_tree("patients")?,
            requests: db.open_tree("requests")?,
            grants: db.open_tree("grants")?,
            events: db.open_tree("events")?,
            log_tiles: db.open_tree("log_tiles")?,
            log_meta: db.open_tree("log_meta")?,
            patient_heads: db.open_tree("patient_heads")?,
            checkpoints: db.open_tree("checkpoints")?,
            flush_tickets: std::sync::atomic::AtomicU64::new(0),
            flushed_through: std::sync::atomic::AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            gate: tokio::sync::RwLock::new(()),
            ops_gate: std::sync::Arc::new(tokio::sync::RwLock::new(())),
            db,
        }
        .with_log_tiles()?
        .with_patient_index()
    }

    /// Upgrades `deks` rows to DEK record version 2: gives each stanza stored without its
    /// Recipient (version 1 rows, or rows a store that had not been upgraded rewrote) the
    /// Recipient it is wrapped to. Runs once per store (`log_meta/dek_records_v2` marks it
    /// done); the binary calls it every time it opens the store, before serving.
    ///
    /// Candidates are `institution`, `others` (the binary passes the configured peers and the
    /// backup recovery Recipient) and every Recipient the store knows: registered patients
    /// and grant recipients (revoked and expired grants included). A stanza's tag narrows the
    /// candidates; they are then told apart by whole key (one Recipient named twice counts
    /// once). A stanza is given a Recipient only when exactly one candidate names it: its tag
    /// is that Recipient's, and an own stanza (kind 0x03, which only the institution writes)
    /// only ever names the institution. A stanza no candidate names, or that two candidates
    /// with one tag could both own, is kept (never dropped) with the "unknown recipient"
    /// flag: the institution still opens it by trial decryption, but no lookup or removal
    /// by recipient matches it, and rotation replaces it.
    ///
    /// Each row is upgraded in its own transaction (re-read inside it), so a crash leaves
    /// every row whole, and running again changes nothing already upgraded; the mark is set
    /// and the store flushed after the last row. Logged once with the counts.
    ///
    /// # Errors
    /// A row that does not decode (`Corrupt`), a patient or grant row that does not parse,
    /// sled failures.
    pub fn upgrade_dek_records(
        &self,
        institution: &Recipient,
        others: &[Recipient],
    ) -> Result<DekUpgrade> {
        let mut report = DekUpgrade::default();
        if self.log_meta.get(DEK_V2_MARK)?.is_some() {
            return Ok(report);
        }
        let mut candidates: Vec<Recipient> = vec![institution.clone()];
        candidates.extend(others.iter().cloned());
        for p in json_rows::<PatientRecord>(&self.patients, "patient")? {
            candidates.push(parse_recipient(&p.recipient, "patient")?);
        }
        for g in json_rows::<GrantRecord>(&self.grants, "grant")? {
            candidates.push(parse_recipient(&g.recipient, "grant")?);
        }
        let mut seen = std::collections::HashSet::new();
        candidates.retain(|r| seen.insert(r.to_bytes()));
        for item in self.deks.iter() {
            let (k, v) = item?;
            let rec = decode_dek(&v)?;
            if DekRecord::version_of(&v) != Some(DEK_RECORD_V1)
                && rec.stanzas.iter().all(|s| s.recipient().is_some())
            {
                continue;
            }
            let (stanzas, unknown) = self
                .deks
                .transaction(|deks| {
                    let Some(v) = deks.get(&k)? else {
                        return Ok((0, 0));
                    };
                    let mut rec = decode_dek(&v).or_else(abort)?;
                    let (mut named, mut unknown) = (0u64, 0u64);
                    for s in &mut rec.stanzas {
                        if s.recipient().is_some() {
                            continue;
                        }
                        match resolve_stanza(s.wrapped(), institution, &candidates) {
                            Some(r) => {
                                *s = DekStanza::new(r.clone(), s.wrapped().clone())
                                    .map_err(|_| Error::Internal("stanza tag".into()))
                                    .or_else(abort)?;
                                named += 1;
                            }
                            None => unknown += 1,
                        }
                    }
                    deks.insert(&k, rec.encode())?;
                    Ok((named, unknown))
                })
                .map_err(tx_err)?;
            report.rows += 1;
            report.stanzas += stanzas;
            report.unknown += unknown;
        }
        self.log_meta.insert(DEK_V2_MARK, &[1u8][..])?;
        self.db.flush()?;
        if report.rows > 0 {
            tracing::info!(
                rows = report.rows,
                stanzas = report.stanzas,
                unknown_recipient = report.unknown,
                "DEK records upgraded to version 2 (each stanza stored with its Recipient)"
            );
        }
        if report.unknown > 0 {
            tracing::warn!(
                unknown_recipient = report.unknown,
                "stanzas whose recipient no known key names (or two keys with one tag could \
                 both own) are kept with an unknown recipient: no revocation can remove them; \
                 `medgate rotate` replaces them"
            );
        }
        Ok(report)
    }

    /// Indexes every manifest by patient in a store made before `patient_objects` existed.
    fn with_patient_index(self) -> Result<Self> {
        if self.log_meta.get(PATIENT_INDEX_MARK)?.is_some() {
            return Ok(self);
        }
        let mut batch = sled::Batch::default();
        for item in self.objects.iter() {
            let (k, v) = item?;
            let m = Manifest::decode(&v).map_err(|_| Error::Corrupt("manifest".into()))?;
            if let Some(p) = &m.patient {
                batch.insert(patient_object_key(p, &k), &[][..]);
            }
        }
        self.patient_objects.apply_batch(batch)?;
        self.log_meta.insert(PATIENT_INDEX_MARK, &[1u8][..])?;
        self.db.flush()?;
        Ok(self)
    }

    /// Converts a log of one `log_leaves` row per leaf (before tiles) to `log_tiles`.
    fn with_log_tiles(self) -> Result<Self> {
        if self.log_meta.get(TILES_MARK)?.is_some() {
            return Ok(self);
        }
        let old = self.db.open_tree("log_leaves")?;
        let mut leaves = Vec::new();
        for item in old.iter() {
            let (_, v) = item?;
            leaves.push(to_hash(&v, "log leaf")?);
        }
        let mut batch = sled::Batch::default();
        for (path, bytes) in keyring::tiles::tiles_for(&leaves, 0, leaves.len() as u64)? {
            let id = TileId::parse_path(&path)?;
            batch.insert(&tile_key(id.level, id.index)[..], bytes);
        }
        self.log_tiles.apply_batch(batch)?;
        self.log_meta.insert(TILES_MARK, &[1u8][..])?;
        self.db.flush()?;
        drop(old);
        self.db.drop_tree("log_leaves")?;
        self.db.flush()?;
        Ok(self)
    }

    /// Hashes `lo..hi` of tile level `level` (subtree roots of `256^level` leaves).
    fn tile_hashes(&self, level: u8, lo: u64, hi: u64) -> Result<Vec<Hash>> {
        let width = keyring::tiles::TILE_WIDTH;
        let mut out = Vec::with_capacity(hi.saturating_sub(lo) as usize);
        if hi <= lo {
            return Ok(out);
        }
        let mut next = lo;
        for item in self
            .log_tiles
            .range(tile_key(level, lo / width)..=tile_key(level, (hi - 1) / width))
        {
            let (k, v) = item?;
            let start = read_u64(k.get(1..).unwrap_or_default())?
                .checked_mul(width)
                .ok_or_else(|| Error::Corrupt("log tile key".into()))?;
            if start > next || v.len() % 32 != 0 {
                break;
            }
            let end = (start + v.len() as u64 / 32).min(hi);
            for j in next..end {
                // Invariant: start <= j < start + v.len() / 32.
                let at = ((j - start) * 32) as usize;
                out.push(to_hash(&v[at..at + 32], "log tile")?);
            }
            next = next.max(end);
        }
        if next != hi {
            return Err(Error::Corrupt(format!(
                "log tile level {level}: hashes {lo}..{hi} incomplete at {next}"
            )));
        }
        Ok(out)
    }
}

/// The `log_meta` key marking a store whose `deks` rows were upgraded to version 2.
const DEK_V2_MARK: &[u8] = b"dek_records_v2";

/// What [`SledStore::upgrade_dek_records`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DekUpgrade {
    /// Rows rewritten as version 2.
    pub rows: u64,
    /// Stanzas given their Recipient.
    pub stanzas: u64,
    /// Stanzas kept with an unknown recipient.
    pub unknown: u64,
}

fn parse_recipient(text: &str, what: &str) -> Result<Recipient> {
    text.parse()
        .map_err(|_| Error::Corrupt(format!("{what} row: recipient")))
}

/// The one candidate a version 1 stanza names, if exactly one does (see
/// [`SledStore::upgrade_dek_records`]). `candidates` holds distinct whole keys.
fn resolve_stanza<'a>(
    stanza: &keyring::WrappedKey,
    institution: &'a Recipient,
    candidates: &'a [Recipient],
) -> Option<&'a Recipient> {
    let tag = stanza.recipient_tag();
    if stanza.kind() == keyring::stanza::STANZA_OWN {
        return (institution.tag() == tag).then_some(institution);
    }
    let mut named = candidates.iter().filter(|r| r.tag() == tag);
    let first = named.next()?;
    // Candidates are distinct whole keys: a second one with this tag makes it ambiguous.
    named.next().is_none().then_some(first)
}

/// The `log_meta` key marking a log stored as tiles.
const TILES_MARK: &[u8] = b"tiles";
const PATIENT_INDEX_MARK: &[u8] = b"patient_objects";

fn tile_key(level: u8, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = level;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn to_hash(v: &[u8], what: &str) -> Result<Hash> {
    <Hash>::try_from(v).map_err(|_| Error::Corrupt(what.into()))
}

/// The entries one append wrote, in one row keyed by the first one's index, v1:
///
/// | offset | len | field                                      |
/// |--------|-----|--------------------------------------------|
/// | 0      | 1   | version = 0x01                             |
/// | 1      | 4   | entry count n (u32 BE)                     |
/// | 5      | …   | n × (length l (u32 BE) ‖ JSON [`Event`])   |
///
/// A row that starts with `{` is one JSON event (the layout before blocks).
struct EventBlock {
    bytes: Vec<u8>,
}

impl EventBlock {
    const VERSION: u8 = 1;

    fn start(n: usize) -> EventBlock {
        let mut bytes = Vec::with_capacity(5 + n * 400);
        bytes.push(Self::VERSION);
        // Invariant: a batch is far below 2^32 entries (the appender caps it).
        bytes.extend_from_slice(&(n as u32).to_be_bytes());
        EventBlock { bytes }
    }

    fn push(&mut self, e: &Event) -> Result<()> {
        let json = encode_json(e)?;
        let len =
            u32::try_from(json.len()).map_err(|_| Error::Internal("event too long".into()))?;
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(&json);
        Ok(())
    }

    fn decode(v: &[u8]) -> Result<Vec<Event>> {
        if v.first() == Some(&b'{') {
            return Ok(vec![decode_json(v, "event")?]);
        }
        let bad = || Error::Corrupt("event block".into());
        let (&version, rest) = v.split_first().ok_or_else(bad)?;
        if version != Self::VERSION {
            return Err(bad());
        }
        let (n, mut rest) = split_u32(rest).ok_or_else(bad)?;
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let (len, r) = split_u32(rest).ok_or_else(bad)?;
            let len = len as usize;
            let json = r.get(..len).ok_or_else(bad)?;
            out.push(decode_json(json, "event")?);
            rest = &r[len..];
        }
        if !rest.is_empty() {
            return Err(bad());
        }
        Ok(out)
    }
}

/// The log's trees, as seen inside one transaction.
struct LogTx<'a> {
    events: &'a TransactionalTree,
    tiles: &'a TransactionalTree,
    meta: &'a TransactionalTree,
    heads: &'a TransactionalTree,
}

impl LogTx<'_> {
    /// Appends `events` (each with its salt) at the end of the log: see
    /// [`PrivateStore::append_events`]. Returns the first index.
    fn append(&self, events: &[Event], salts: &[[u8; 32]]) -> TxResult<u64> {
        let first = match self.meta.get(b"size")? {
            Some(v) => read_u64(&v).or_else(abort)?,
            None => 0,
        };
        // Patient heads this batch moved, so a patient's second entry chains to its first.
        let mut heads: std::collections::HashMap<String, (u64, Hash)> = Default::default();
        let mut index = first;
        let mut leaves = Vec::with_capacity(events.len());
        let mut block = EventBlock::start(events.len());
        for (event, salt) in events.iter().zip(salts) {
            let mut e = event.clone();
            e.seq = index;
            e.salt = hex::encode(salt);
            match e.patient.clone() {
                Some(p) => {
                    let (prev_seq, prev) = match heads.get(&p) {
                        Some(head) => *head,
                        None => match self.heads.get(p.as_bytes())? {
                            Some(v) if v.len() == 40 => (
                                read_u64(&v).or_else(abort)?,
                                to_hash(&v[8..], "patient log head").or_else(abort)?,
                            ),
                            Some(_) => return abort(Error::Corrupt("patient log head".into())),
                            None => (0, [0u8; 32]),
                        },
                    };
                    e.patient_seq = prev_seq + 1;
                    e.patient_prev = hex::encode(prev);
                    let commitment = super::entry_of(&e).or_else(abort)?.commitment(salt);
                    heads.insert(p, (e.patient_seq, commitment));
                    block.push(&e).or_else(abort)?;
                    leaves.push(keyring::leaf_hash(&commitment));
                }
                None => {
                    e.patient_seq = 0;
                    e.patient_prev = hex::encode([0u8; 32]);
                    let commitment = super::entry_of(&e).or_else(abort)?.commitment(salt);
                    block.push(&e).or_else(abort)?;
                    leaves.push(keyring::leaf_hash(&commitment));
                }
            }
            index += 1;
        }
        if !leaves.is_empty() {
            self.events.insert(&first.to_be_bytes(), block.bytes)?;
        }
        for (p, (seq, commitment)) in heads {
            let mut head = Vec::with_capacity(40);
            head.extend_from_slice(&seq.to_be_bytes());
            head.extend_from_slice(&commitment);
            self.heads.insert(p.as_bytes(), head)?;
        }
        // The tiles the new leaves change, from the old edge tiles.
        let mut failed = None;
        let changed = keyring::tiles::tiles_for_append(first, &leaves, |id| {
            match self.tiles.get(tile_key(id.level, id.index)) {
                Ok(v) => v.map(|v| v.to_vec()),
                Err(e) => {
                    failed = Some(e);
                    None
                }
            }
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        for (path, bytes) in changed.map_err(Error::from).or_else(abort)? {
            let id = TileId::parse_path(&path)
                .map_err(Error::from)
                .or_else(abort)?;
            self.tiles
                .insert(&tile_key(id.level, id.index)[..], bytes)?;
        }
        self.meta.insert(b"size", &index.to_be_bytes()[..])?;
        Ok(first)
    }
}

impl SledStore {
    /// `commit_put`, appending `entry` to the log in the same transaction if given.
    async fn commit(
        &self,
        commit: PutCommit,
        entry: Option<Event>,
    ) -> Result<(Option<Manifest>, Option<u64>)> {
        let _gate = self.gate.read().await;
        let salt: [u8; 32] = rand::random();
        let okey = object_key(&commit.bucket, &commit.key);
        let encoded = commit.manifest.encode();
        let dek = commit.manifest.dek_id;
        let now = crate::now_ms();
        // The parts of the upload being completed, read before the transaction (sled
        // transactions cannot scan); a part added concurrently stays pending and gc
        // reaps it after the grace period.
        let upload_parts = match &commit.upload {
            Some(id) => self.parts(id).await?,
            None => Vec::new(),
        };
        let trees = [
            &self.buckets,
            &self.objects,
            &self.blobs,
            &self.pending,
            &self.orphans,
            &self.deks,
            &self.dek_refs,
            &self.uploads,
            &self.parts,
            &self.part_blobs,
            &self.events,
            &self.log_tiles,
            &self.log_meta,
            &self.patient_heads,
            &self.patient_objects,
        ];
        trees[..]
            .transaction(
                |view| {
                    let [buckets, objects, blobs, pending, orphans, deks, dek_refs, uploads, parts, part_blobs, events, tiles, meta, heads, by_patient] =
                        &view[..]
                    else {
                        return abort(Error::Internal("commit: transaction trees".into()));
                    };
                    if let Some(id) = &commit.upload {
                        if uploads.remove(id.as_bytes())?.is_none() {
                            return abort(Error::NoSuchUpload(id.clone()));
                        }
                        for (number, part) in &upload_parts {
                            parts.remove(part_key(id, *number))?;
                            part_blobs.remove(&part.blob.0)?;
                            let used = commit.manifest.parts.iter().any(|p| p.blob == part.blob);
                            if !used {
                                orphan_if_pending(pending, orphans, &part.blob, now)?;
                            }
                        }
                    }
                    let Some(brow) = buckets.get(commit.bucket.as_bytes())? else {
                        return abort(Error::NoSuchBucket(commit.bucket.clone()));
                    };
                    let mut brow = decode_bucket(&brow).or_else(abort)?;
                    let old = match objects.get(&okey)? {
                        Some(v) => Some(Manifest::decode(&v).or_else(|_| {
                            abort(Error::Corrupt(format!(
                                "manifest of {}/{}",
                                commit.bucket, commit.key
                            )))
                        })?),
                        None => None,
                    };
                    match (&commit.precondition, &old) {
                        (Precondition::Absent, Some(_)) => return abort(Error::PreconditionFailed),
                        (Precondition::ETag(want), Some(m)) if *want != m.etag => {
                            return abort(Error::PreconditionFailed)
                        }
                        (Precondition::ETag(_), None) => return abort(Error::PreconditionFailed),
                        _ => {}
                    }
                    for part in &commit.manifest.parts {
                        let id = part.blob.0;
                        let refs = match blobs.get(id)? {
                            Some(v) => read_u64(&v).or_else(abort)?,
                            None => 0,
                        };
                        if refs == 0 {
                            // A fresh blob must still be pending: if gc reaped it, its bytes
                            // may be gone and committing would point at a missing blob.
                            if pending.remove(&id)?.is_none() {
                                return abort(Error::Reaped);
                            }
                            orphans.remove(&id)?;
                        }
                        blobs.insert(&id, &(refs + 1).to_be_bytes())?;
                    }
                    let mut rec = match deks.get(dek.0)? {
                        Some(v) => decode_dek(&v).or_else(abort)?,
                        None => DekRecord::default(),
                    };
                    rec.refs += 1;
                    for s in &commit.stanzas {
                        if !rec.stanzas.contains(s) {
                            rec.stanzas.push(s.clone());
                        }
                    }
                    deks.insert(&dek.0, rec.encode())?;
                    dek_refs.insert(dek_ref_key(&dek, &commit.bucket, &commit.key), &[][..])?;
                    objects.insert(okey.as_slice(), encoded.as_slice())?;
                    if let Some(p) = old.as_ref().and_then(|m| m.patient.as_deref()) {
                        by_patient.remove(patient_object_key(p, &okey))?;
                    }
                    if let Some(p) = &commit.manifest.patient {
                        by_patient.insert(patient_object_key(p, &okey), &[][..])?;
                    }
                    match &old {
                        Some(m) => release(
                            m,
                            &commit.bucket,
                            &commit.key,
                            now,
                            &RefTrees {
                                blobs,
                                orphans,
                                deks,
                                dek_refs,
                            },
                        )?,
                        None => {
                            brow.objects += 1;
                            buckets.insert(
                                commit.bucket.as_bytes(),
                                encode_json(&brow).or_else(abort)?,
                            )?;
                        }
                    }
                    let index = match &entry {
                        Some(e) => Some(
                            LogTx {
                                events,
                                tiles,
                                meta,
                                heads,
                            }
                            .append(std::slice::from_ref(e), &[salt])?,
                        ),
                        None => None,
                    };
                    Ok((old, index))
                },
            )
            .map_err(tx_err)
    }

    /// `delete_object`, appending `entry` (with the removed manifest's patient) in the
    /// same transaction if given and an object went.
    async fn delete(
        &self,
        bucket: &str,
        key: &str,
        entry: Option<Event>,
    ) -> Result<(Option<Manifest>, Option<u64>)> {
        let _gate = self.gate.read().await;
        let okey = object_key(bucket, key);
        let now = crate::now_ms();
        let salt: [u8; 32] = rand::random();
        (
            &self.buckets,
            &self.objects,
            &self.blobs,
            &self.orphans,
            &self.deks,
            &self.dek_refs,
            &self.events,
            &self.log_tiles,
            &self.log_meta,
            &self.patient_heads,
            &self.patient_objects,
        )
            .transaction(
                |(
                    buckets,
                    objects,
                    blobs,
                    orphans,
                    deks,
                    dek_refs,
                    events,
                    tiles,
                    meta,
                    heads,
                    by_patient,
                )| {
                    let Some(brow) = buckets.get(bucket.as_bytes())? else {
                        return abort(Error::NoSuchBucket(bucket.to_string()));
                    };
                    let Some(v) = objects.remove(okey.as_slice())? else {
                        return Ok((None, None));
                    };
                    let old = Manifest::decode(&v).or_else(|_| {
                        abort(Error::Corrupt(format!("manifest of {bucket}/{key}")))
                    })?;
                    if let Some(p) = &old.patient {
                        by_patient.remove(patient_object_key(p, &okey))?;
                    }
                    release(
                        &old,
                        bucket,
                        key,
                        now,
                        &RefTrees {
                            blobs,
                            orphans,
                            deks,
                            dek_refs,
                        },
                    )?;
                    let mut brow = decode_bucket(&brow).or_else(abort)?;
                    brow.objects = brow.objects.saturating_sub(1);
                    buckets.insert(bucket.as_bytes(), encode_json(&brow).or_else(abort)?)?;
                    let index = match &entry {
                        Some(e) => {
                            let e = Event {
                                patient: old.patient.clone(),
                                ..e.clone()
                            };
                            Some(
                                LogTx {
                                    events,
                                    tiles,
                                    meta,
                                    heads,
                                }
                                .append(std::slice::from_ref(&e), &[salt])?,
                            )
                        }
                        None => None,
                    };
                    Ok((Some(old), index))
                },
            )
            .map_err(tx_err)
    }
}

#[async_trait]
impl PrivateStore for SledStore {
    async fn create_bucket(&self, name: &str, created_ms: u64) -> Result<()> {
        let _gate = self.gate.read().await;
        let row = encode_json(&BucketRow {
            v: 1,
            created_ms,
            objects: 0,
        })?;
        match self
            .buckets
            .compare_and_swap(name.as_bytes(), None as Option<&[u8]>, Some(row))?
        {
            Ok(()) => Ok(()),
            Err(_) => Err(Error::BucketExists(name.to_string())),
        }
    }

    async fn delete_bucket(&self, name: &str) -> Result<()> {
        let _gate = self.gate.read().await;
        self.buckets
            .transaction(|b| {
                let Some(v) = b.get(name.as_bytes())? else {
                    return abort(Error::NoSuchBucket(name.to_string()));
                };
                let row = decode_bucket(&v).or_else(abort)?;
                if row.objects > 0 {
                    return abort(Error::BucketNotEmpty(name.to_string()));
                }
                b.remove(name.as_bytes())?;
                Ok(())
            })
            .map_err(tx_err)
    }

    async fn bucket(&self, name: &str) -> Result<Option<BucketInfo>> {
        let Some(v) = self.buckets.get(name.as_bytes())? else {
            return Ok(None);
        };
        let row = decode_bucket(&v)?;
        Ok(Some(BucketInfo {
            name: name.to_string(),
            created_ms: row.created_ms,
        }))
    }

    async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        let mut out = Vec::new();
        for item in self.buckets.iter() {
            let (k, v) = item?;
            let row = decode_bucket(&v)?;
            let name =
                String::from_utf8(k.to_vec()).map_err(|_| Error::Corrupt("bucket name".into()))?;
            out.push(BucketInfo {
                name,
                created_ms: row.created_ms,
            });
        }
        Ok(out)
    }

    async fn manifest(&self, bucket: &str, key: &str) -> Result<Option<Manifest>> {
        match self.objects.get(object_key(bucket, key))? {
            Some(v) => {
                Ok(Some(Manifest::decode(&v).map_err(|_| {
                    Error::Corrupt(format!("manifest of {bucket}/{key}"))
                })?))
            }
            None => Ok(None),
        }
    }

    async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<ListedObject>> {
        let base = object_key(bucket, "");
        let want = object_key(bucket, prefix);
        let mut start = object_key(bucket, after);
        // Strictly after `after`: the smallest key greater than it is `after ‖ 0x00`.
        start.push(0);
        if start < want {
            start = want.clone();
        }
        let mut out = Vec::new();
        for item in self.objects.range(start..) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            if !k.starts_with(&want) {
                break;
            }
            let key = String::from_utf8(k[base.len()..].to_vec())
                .map_err(|_| Error::Corrupt("object key".into()))?;
            let manifest = Manifest::decode(&v)
                .map_err(|_| Error::Corrupt(format!("manifest of {bucket}/{key}")))?;
            out.push(ListedObject { key, manifest });
        }
        Ok(out)
    }

    async fn add_pending(&self, blob: BlobId, created_ms: u64) -> Result<()> {
        let _gate = self.gate.read().await;
        self.pending.insert(blob.0, &created_ms.to_be_bytes())?;
        Ok(())
    }

    async fn drop_pending(&self, blob: BlobId) -> Result<()> {
        let _gate = self.gate.read().await;
        // The blob may already be in the public store; record it as an orphan so gc
        // reclaims it after the grace period.
        (&self.pending, &self.orphans)
            .transaction(|(pending, orphans)| {
                orphan_if_pending(pending, orphans, &blob, crate::now_ms())
            })
            .map_err(tx_err)
    }

    async fn put_leaves(&self, blob: BlobId, first: u64, leaves: &[Hash]) -> Result<()> {
        let _gate = self.gate.read().await;
        let mut batch = sled::Batch::default();
        for (i, leaf) in leaves.iter().enumerate() {
            batch.insert(&leaf_key(&blob, first + i as u64)[..], &leaf[..]);
        }
        self.leaves.apply_batch(batch)?;
        Ok(())
    }

    async fn leaves(&self, blob: BlobId, first: u64, last: u64) -> Result<Vec<Hash>> {
        let mut out = Vec::new();
        let mut expect = first;
        for item in self
            .leaves
            .range(leaf_key(&blob, first)..=leaf_key(&blob, last))
        {
            let (k, v) = item?;
            let index = k
                .get(16..24)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            let leaf = <Hash>::try_from(&v[..]).ok();
            match (index, leaf) {
                (Some(i), Some(leaf)) if i == expect => out.push(leaf),
                _ => return Err(Error::Corrupt(format!("leaves of blob {}", blob.to_hex()))),
            }
            expect += 1;
        }
        if expect != last + 1 {
            return Err(Error::Corrupt(format!(
                "leaves of blob {} are missing",
                blob.to_hex()
            )));
        }
        Ok(out)
    }

    async fn commit_put(&self, commit: PutCommit) -> Result<Option<Manifest>> {
        Ok(self.commit(commit, None).await?.0)
    }

    async fn commit_put_logged(
        &self,
        commit: PutCommit,
        entry: Event,
    ) -> Result<(Option<Manifest>, u64)> {
        match self.commit(commit, Some(entry)).await? {
            (old, Some(index)) => Ok((old, index)),
            (_, None) => Err(Error::Internal("logged commit without an index".into())),
        }
    }

    async fn delete_object(&self, bucket: &str, key: &str) -> Result<Option<Manifest>> {
        Ok(self.delete(bucket, key, None).await?.0)
    }

    async fn delete_object_logged(
        &self,
        bucket: &str,
        key: &str,
        entry: Event,
    ) -> Result<(Option<Manifest>, Option<u64>)> {
        self.delete(bucket, key, Some(entry)).await
    }

    async fn stanzas(&self, dek: DekId) -> Result<Vec<DekStanza>> {
        match self.deks.get(dek.0)? {
            Some(v) => Ok(decode_dek(&v)?.stanzas),
            None => Ok(Vec::new()),
        }
    }

    async fn blob_state(&self, blob: BlobId) -> Result<BlobState> {
        if let Some(v) = self.blobs.get(blob.0)? {
            return Ok(BlobState::Referenced(read_u64(&v)?));
        }
        if let Some(v) = self.pending.get(blob.0)? {
            let mut created_ms = read_u64(&v)?;
            // A part of a live upload is as young as the upload's last part.
            if let Some(id) = self.part_blobs.get(blob.0)? {
                if let Some(u) = self.uploads.get(&id)? {
                    let rec: UploadRecord = decode_json(&u, "upload")?;
                    created_ms = created_ms.max(rec.touched_ms);
                }
            }
            return Ok(BlobState::Pending { created_ms });
        }
        if let Some(v) = self.orphans.get(blob.0)? {
            return Ok(BlobState::Orphan {
                since_ms: read_u64(&v)?,
            });
        }
        Ok(BlobState::Unknown)
    }

    async fn reap_blob(&self, blob: BlobId, cutoff_ms: u64) -> Result<bool> {
        let _gate = self.gate.read().await;
        let reaped = (&self.blobs, &self.pending, &self.orphans)
            .transaction(|(blobs, pending, orphans)| {
                if blobs.get(blob.0)?.is_some() {
                    return Ok(false);
                }
                for tree in [pending, orphans] {
                    if let Some(v) = tree.get(blob.0)? {
                        if read_u64(&v).or_else(abort)? > cutoff_ms {
                            return Ok(false);
                        }
                    }
                }
                pending.remove(&blob.0)?;
                orphans.remove(&blob.0)?;
                Ok(true)
            })
            .map_err(tx_err)?;
        if reaped {
            let mut batch = sled::Batch::default();
            for item in self.leaves.scan_prefix(blob.0) {
                let (k, _) = item?;
                batch.remove(k);
            }
            self.leaves.apply_batch(batch)?;
        }
        Ok(reaped)
    }

    async fn pending(&self) -> Result<Vec<(BlobId, u64)>> {
        blob_rows(&self.pending)
    }

    async fn orphans(&self) -> Result<Vec<(BlobId, u64)>> {
        blob_rows(&self.orphans)
    }

    async fn create_upload(&self, id: &str, record: UploadRecord) -> Result<()> {
        let _gate = self.gate.read().await;
        self.uploads.insert(id.as_bytes(), encode_json(&record)?)?;
        Ok(())
    }

    async fn upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        match self.uploads.get(id.as_bytes())? {
            Some(v) => Ok(Some(decode_json(&v, "upload")?)),
            None => Ok(None),
        }
    }

    async fn list_uploads(&self, bucket: &str) -> Result<Vec<(String, UploadRecord)>> {
        let mut out = Vec::new();
        for item in self.uploads.iter() {
            let (k, v) = item?;
            let rec: UploadRecord = decode_json(&v, "upload")?;
            if rec.bucket == bucket {
                let id = String::from_utf8(k.to_vec())
                    .map_err(|_| Error::Corrupt("upload id".into()))?;
                out.push((id, rec));
            }
        }
        out.sort_by(|a, b| (&a.1.key, &a.0).cmp(&(&b.1.key, &b.0)));
        Ok(out)
    }

    async fn put_part(&self, id: &str, number: u32, part: PartRecord) -> Result<()> {
        let _gate = self.gate.read().await;
        let encoded = encode_json(&part)?;
        let now = crate::now_ms();
        (
            &self.uploads,
            &self.parts,
            &self.part_blobs,
            &self.pending,
            &self.orphans,
        )
            .transaction(|(uploads, parts, part_blobs, pending, orphans)| {
                let Some(v) = uploads.get(id.as_bytes())? else {
                    return abort(Error::NoSuchUpload(id.to_string()));
                };
                let mut rec: UploadRecord = decode_json(&v, "upload").or_else(abort)?;
                rec.touched_ms = now;
                uploads.insert(id.as_bytes(), encode_json(&rec).or_else(abort)?)?;
                if let Some(old) = parts.insert(part_key(id, number), encoded.as_slice())? {
                    let old: PartRecord = decode_json(&old, "part").or_else(abort)?;
                    part_blobs.remove(&old.blob.0)?;
                    orphan_if_pending(pending, orphans, &old.blob, now)?;
                }
                part_blobs.insert(&part.blob.0, id.as_bytes())?;
                Ok(())
            })
            .map_err(tx_err)
    }

    async fn parts(&self, id: &str) -> Result<Vec<(u32, PartRecord)>> {
        let prefix = nul_joined(id.as_bytes(), b"");
        let mut out = Vec::new();
        for item in self.parts.scan_prefix(&prefix) {
            let (k, v) = item?;
            let number = k
                .get(prefix.len()..)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| Error::Corrupt("part key".into()))?;
            out.push((number, decode_json(&v, "part")?));
        }
        Ok(out)
    }

    async fn abort_upload(&self, id: &str) -> Result<Vec<PartRecord>> {
        let _gate = self.gate.read().await;
        let listed = self.parts(id).await?;
        let now = crate::now_ms();
        (
            &self.uploads,
            &self.parts,
            &self.part_blobs,
            &self.pending,
            &self.orphans,
        )
            .transaction(|(uploads, parts, part_blobs, pending, orphans)| {
                if uploads.remove(id.as_bytes())?.is_none() {
                    return abort(Error::NoSuchUpload(id.to_string()));
                }
                for (number, part) in &listed {
                    parts.remove(part_key(id, *number))?;
                    part_blobs.remove(&part.blob.0)?;
                    orphan_if_pending(pending, orphans, &part.blob, now)?;
                }
                Ok(())
            })
            .map_err(tx_err)?;
        Ok(listed.into_iter().map(|(_, p)| p).collect())
    }

    async fn put_access_key(&self, record: AccessKeyRecord) -> Result<()> {
        let _gate = self.gate.read().await;
        self.access_keys
            .insert(record.id.as_bytes(), encode_json(&record)?)?;
        Ok(())
    }

    async fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>> {
        match self.access_keys.get(id.as_bytes())? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).map_err(|_| Error::Corrupt("access key".into()))?,
            )),
            None => Ok(None),
        }
    }

    async fn list_access_keys(&self) -> Result<Vec<AccessKeyRecord>> {
        let mut out = Vec::new();
        for item in self.access_keys.iter() {
            let (_, v) = item?;
            out.push(serde_json::from_slice(&v).map_err(|_| Error::Corrupt("access key".into()))?);
        }
        Ok(out)
    }

    async fn delete_access_key(&self, id: &str) -> Result<bool> {
        let _gate = self.gate.read().await;
        Ok(self.access_keys.remove(id.as_bytes())?.is_some())
    }

    async fn put_patient(&self, record: PatientRecord, replace: bool) -> Result<()> {
        let _gate = self.gate.read().await;
        let value = encode_json(&record)?;
        if replace {
            self.patients.insert(record.id.as_bytes(), value)?;
            return Ok(());
        }
        match self
            .patients
            .compare_and_swap(record.id.as_bytes(), None as Option<&[u8]>, Some(value))?
        {
            Ok(()) => Ok(()),
            Err(_) => Err(Error::InvalidArgument(format!(
                "patient {:?} is already registered; changing their key needs the old key's signature",
                record.id
            ))),
        }
    }

    async fn patient(&self, id: &str) -> Result<Option<PatientRecord>> {
        match self.patients.get(id.as_bytes())? {
            Some(v) => Ok(Some(decode_json(&v, "patient")?)),
            None => Ok(None),
        }
    }

    async fn list_patients(&self) -> Result<Vec<PatientRecord>> {
        json_rows(&self.patients, "patient")
    }

    async fn patient_objects(&self, patient: &str) -> Result<Vec<(String, String, Manifest)>> {
        let mut out = Vec::new();
        let prefix = patient_object_key(patient, b"");
        for item in self.patient_objects.scan_prefix(&prefix) {
            let (pk, _) = item?;
            let k = &pk[prefix.len()..];
            // A row whose object changed hands in between is skipped: the manifest decides.
            let Some(v) = self.objects.get(k)? else {
                continue;
            };
            let m = Manifest::decode(&v).map_err(|_| Error::Corrupt("manifest".into()))?;
            if m.patient.as_deref() != Some(patient) {
                continue;
            }
            let mut fields = k.splitn(2, |b| *b == 0);
            let bucket = fields.next().unwrap_or_default();
            let key = fields.next().unwrap_or_default();
            out.push((
                String::from_utf8(bucket.to_vec())
                    .map_err(|_| Error::Corrupt("object key".into()))?,
                String::from_utf8(key.to_vec()).map_err(|_| Error::Corrupt("object key".into()))?,
                m,
            ));
        }
        Ok(out)
    }

    async fn insert_request(&self, record: ShareRequestRecord) -> Result<()> {
        let _gate = self.gate.read().await;
        let value = encode_json(&record)?;
        match self.requests.compare_and_swap(
            record.id.as_bytes(),
            None as Option<&[u8]>,
            Some(value),
        )? {
            Ok(()) => Ok(()),
            Err(_) => Err(Error::InvalidArgument(format!(
                "share request {} was already made",
                record.id
            ))),
        }
    }

    async fn request(&self, id: &str) -> Result<Option<ShareRequestRecord>> {
        match self.requests.get(id.as_bytes())? {
            Some(v) => Ok(Some(decode_json(&v, "share request")?)),
            None => Ok(None),
        }
    }

    async fn list_requests(&self) -> Result<Vec<ShareRequestRecord>> {
        json_rows(&self.requests, "share request")
    }

    async fn decide_request(
        &self,
        id: &str,
        state: RequestState,
        grant: Option<GrantRecord>,
    ) -> Result<()> {
        let _gate = self.gate.read().await;
        let grant_row = match &grant {
            Some(g) => Some((g.id.clone(), encode_json(g)?)),
            None => None,
        };
        (&self.requests, &self.grants)
            .transaction(|(requests, grants)| {
                let Some(v) = requests.get(id.as_bytes())? else {
                    return abort(Error::InvalidArgument(format!("no share request {id}")));
                };
                let mut rec: ShareRequestRecord =
                    decode_json(&v, "share request").or_else(abort)?;
                if rec.state != RequestState::Pending {
                    return abort(Error::InvalidArgument(format!(
                        "share request {id} was already decided"
                    )));
                }
                if let Some((gid, row)) = &grant_row {
                    if grants.get(gid.as_bytes())?.is_some() {
                        return abort(Error::InvalidArgument(format!(
                            "grant {gid} was already used"
                        )));
                    }
                    grants.insert(gid.as_bytes(), row.as_slice())?;
                    rec.grant = Some(gid.clone());
                }
                rec.state = state;
                requests.insert(id.as_bytes(), encode_json(&rec).or_else(abort)?)?;
                Ok(())
            })
            .map_err(tx_err)
    }

    async fn grant(&self, id: &str) -> Result<Option<GrantRecord>> {
        match self.grants.get(id.as_bytes())? {
            Some(v) => Ok(Some(decode_json(&v, "grant")?)),
            None => Ok(None),
        }
    }

    async fn put_mount(&self, record: MountRecord) -> Result<()> {
        self.db
            .open_tree("mounts")?
            .insert(record.bucket.as_bytes(), encode_json(&record)?)?;
        Ok(())
    }

    async fn mounts(&self) -> Result<Vec<MountRecord>> {
        json_rows(&self.db.open_tree("mounts")?, "mount")
    }

    async fn list_grants(&self) -> Result<Vec<GrantRecord>> {
        json_rows(&self.grants, "grant")
    }

    async fn update_grant(&self, record: GrantRecord) -> Result<()> {
        let _gate = self.gate.read().await;
        self.grants
            .insert(record.id.as_bytes(), encode_json(&record)?)?;
        Ok(())
    }

    async fn add_stanzas(&self, dek: DekId, stanzas: Vec<DekStanza>) -> Result<bool> {
        let _gate = self.gate.read().await;
        self.deks
            .transaction(|deks| {
                let Some(v) = deks.get(dek.0)? else {
                    return Ok(false);
                };
                let mut rec = decode_dek(&v).or_else(abort)?;
                rec.stanzas.extend(stanzas.iter().cloned());
                deks.insert(&dek.0, rec.encode())?;
                Ok(true)
            })
            .map_err(tx_err)
    }

    async fn add_stanzas_batch(&self, batch: Vec<(DekId, DekStanza)>) -> Result<Vec<bool>> {
        let _gate = self.gate.read().await;
        self.deks
            .transaction(|deks| {
                let mut out = Vec::with_capacity(batch.len());
                for (dek, stanza) in &batch {
                    let Some(v) = deks.get(dek.0)? else {
                        out.push(false);
                        continue;
                    };
                    let mut rec = decode_dek(&v).or_else(abort)?;
                    rec.stanzas.push(stanza.clone());
                    deks.insert(&dek.0, rec.encode())?;
                    out.push(true);
                }
                Ok(out)
            })
            .map_err(tx_err)
    }

    async fn remove_stanzas(&self, dek: DekId, recipient: &Recipient) -> Result<usize> {
        let _gate = self.gate.read().await;
        self.deks
            .transaction(|deks| {
                let Some(v) = deks.get(dek.0)? else {
                    return Ok(0);
                };
                let mut rec = decode_dek(&v).or_else(abort)?;
                let before = rec.stanzas.len();
                rec.stanzas.retain(|s| !s.is_for(recipient));
                let removed = before - rec.stanzas.len();
                if removed > 0 {
                    deks.insert(&dek.0, rec.encode())?;
                }
                Ok(removed)
            })
            .map_err(tx_err)
    }

    async fn append_events(&self, events: Vec<Event>) -> Result<u64> {
        let _gate = self.gate.read().await;
        let salts: Vec<[u8; 32]> = events.iter().map(|_| rand::random()).collect();
        (
            &self.events,
            &self.log_tiles,
            &self.log_meta,
            &self.patient_heads,
        )
            .transaction(|(events_t, tiles, meta, heads)| {
                LogTx {
                    events: events_t,
                    tiles,
                    meta,
                    heads,
                }
                .append(&events, &salts)
            })
            .map_err(tx_err)
    }

    async fn log_size(&self) -> Result<u64> {
        match self.log_meta.get(b"size")? {
            Some(v) => read_u64(&v),
            None => Ok(0),
        }
    }

    async fn log_leaves(&self, from: u64, to: u64) -> Result<Vec<Hash>> {
        self.tile_hashes(0, from, to)
    }

    /// Heights that are multiples of 8 are tile levels; a subtree in between is hashed
    /// from at most 128 hashes of one tile.
    async fn log_hashes(&self, height: u8, from: u64, to: u64) -> Result<Vec<Hash>> {
        if to <= from {
            return Ok(Vec::new());
        }
        let (level, up) = (height / 8, u32::from(height % 8));
        let span = 1u64 << up;
        let base = match (from.checked_mul(span), to.checked_mul(span)) {
            (Some(lo), Some(hi)) => self.tile_hashes(level, lo, hi)?,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "log subtrees {height}/{from}..{to}: beyond any log"
                )))
            }
        };
        Ok(base
            .chunks_exact(span as usize)
            .map(keyring::root)
            .collect())
    }

    async fn put_checkpoint(&self, size: u64, note: &str) -> Result<()> {
        let _gate = self.gate.read().await;
        self.checkpoints
            .insert(size.to_be_bytes(), note.as_bytes())?;
        Ok(())
    }

    async fn checkpoints(&self) -> Result<Vec<(u64, String)>> {
        let mut out = Vec::new();
        for item in self.checkpoints.iter() {
            let (k, v) = item?;
            out.push((
                read_u64(&k)?,
                String::from_utf8(v.to_vec()).map_err(|_| Error::Corrupt("checkpoint".into()))?,
            ));
        }
        Ok(out)
    }

    async fn events(&self, from: u64, limit: usize) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // From the block that holds `from`.
        let start = match self.events.range(..=from.to_be_bytes()).next_back() {
            Some(item) => item?.0,
            None => sled::IVec::from(&from.to_be_bytes()[..]),
        };
        for item in self.events.range(start..) {
            let (_, v) = item?;
            for e in EventBlock::decode(&v)? {
                if e.seq >= from {
                    out.push(e);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Group commit: concurrent callers share one fsync. A caller takes a ticket after
    /// its writes; a flush that starts after the ticket was taken covers them, so a
    /// caller whose ticket is already covered returns without flushing again.
    async fn flush(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        let ticket = self.flush_tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = self.flush_lock.lock().await;
        if self.flushed_through.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let covers = self.flush_tickets.load(Ordering::SeqCst);
        self.db.flush_async().await?;
        self.flushed_through.store(covers, Ordering::SeqCst);
        Ok(())
    }

    async fn export(&self, out: tokio::sync::mpsc::Sender<super::ExportBatch>) -> Result<()> {
        // Exclusive: no engine operation is between a write and its log entry, and no
        // write runs until every tree is copied.
        let _ops = self.ops_gate.write().await;
        let _gate = self.gate.write().await;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || super::sled_backup::export_sled(&db, &out))
            .await
            .map_err(|e| Error::Internal(format!("backup export task: {e}")))?
    }

    async fn hold_writes(&self) -> Option<tokio::sync::OwnedRwLockReadGuard<()>> {
        Some(self.ops_gate.clone().read_owned().await)
    }

    async fn last_backup_ms(&self) -> Result<Option<u64>> {
        super::sled_backup::last_backup_ms(&self.db)
    }

    async fn set_last_backup_ms(&self, ms: u64) -> Result<()> {
        {
            let _gate = self.gate.read().await;
            super::sled_backup::set_last_backup_ms(&self.db, ms)?;
        }
        self.flush().await
    }

    async fn restored_pending(&self) -> Result<bool> {
        super::sled_backup::restored_pending(&self.db)
    }

    async fn clear_restored(&self) -> Result<()> {
        let _gate = self.gate.read().await;
        super::sled_backup::clear_restored(&self.db)
    }

    async fn peer_keys(&self) -> Result<Vec<(String, String)>> {
        let tree = self.db.open_tree(PEER_KEYS)?;
        let mut out = Vec::new();
        for row in tree.iter() {
            let (k, v) = row?;
            let text = |b: &[u8]| {
                String::from_utf8(b.to_vec())
                    .map_err(|_| Error::Corrupt("peer_keys: not UTF-8".into()))
            };
            out.push((text(&k)?, text(&v)?));
        }
        Ok(out)
    }

    async fn put_peer_key(&self, peer: &str, recipient: &str) -> Result<()> {
        {
            let _gate = self.gate.read().await;
            self.db
                .open_tree(PEER_KEYS)?
                .insert(peer.as_bytes(), recipient.as_bytes())?;
        }
        self.flush().await
    }
}

/// The tree of peers re-pinned after a key rollover (peer name -> Recipient text).
const PEER_KEYS: &str = "peer_keys";

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Private(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyring::{DataKey, Identity};

    fn stanza() -> DekStanza {
        let id = Identity::generate();
        named(&id, &DataKey::generate())
    }

    /// Two identities whose Recipients share the 4-byte stanza tag: a birthday search over
    /// seeded random identities (about 2^16 tries).
    pub(crate) fn colliding_identities() -> (Identity, Identity) {
        use rand::{RngCore, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d65_6467_6174_6531);
        let mut seen: std::collections::HashMap<[u8; 4], [u8; 64]> =
            std::collections::HashMap::new();
        loop {
            let mut secret = [0u8; 64];
            rng.fill_bytes(&mut secret);
            let id = Identity::from_bytes(&secret).unwrap();
            let tag = id.recipient().tag();
            match seen.get(&tag) {
                Some(other) if other != &secret => {
                    return (Identity::from_bytes(other).unwrap(), id);
                }
                _ => {
                    seen.insert(tag, secret);
                }
            }
        }
    }

    fn named(id: &Identity, dek: &DataKey) -> DekStanza {
        let r = id.recipient();
        DekStanza::new(r.clone(), r.wrap_key(dek).unwrap()).unwrap()
    }

    async fn put_with(store: &SledStore, key: &str, stanzas: Vec<DekStanza>) -> DekId {
        use crate::store::private::{Precondition, PutCommit};
        use keyring::{Part, SUITE_V1};
        let blob = BlobId::random();
        store.add_pending(blob, crate::now_ms()).await.unwrap();
        let dek_id = DekId::random();
        let manifest = Manifest {
            suite: SUITE_V1,
            dek_id,
            size: 1,
            last_modified_ms: 1,
            etag: "\"e\"".into(),
            content_type: None,
            headers: Vec::new(),
            metadata: Vec::new(),
            checksums: Vec::new(),
            patient: None,
            parts: vec![Part {
                blob,
                chunk_size: 1024,
                plaintext_len: 1,
                root: [1; 32],
            }],
        };
        store
            .commit_put(PutCommit {
                bucket: "b".into(),
                key: key.into(),
                stanzas,
                manifest,
                precondition: Precondition::None,
                upload: None,
            })
            .await
            .unwrap();
        dek_id
    }

    #[test]
    fn dek_rows_that_do_not_decode_are_corrupt() {
        let dek = DataKey::generate();
        let rec = DekRecord {
            refs: 2,
            stanzas: vec![named(&Identity::generate(), &dek)],
        };
        let bytes = rec.encode();
        assert_eq!(decode_dek(&bytes).unwrap(), rec);
        for cut in 0..bytes.len() {
            assert!(matches!(decode_dek(&bytes[..cut]), Err(Error::Corrupt(_))));
        }
        let mut other = bytes.clone();
        other[0] = 3;
        assert!(matches!(decode_dek(&other), Err(Error::Corrupt(_))));
        assert!(matches!(
            decode_dek(&[bytes.as_slice(), &[0]].concat()),
            Err(Error::Corrupt(_))
        ));
    }

    /// Two recipients with one 4-byte tag: removing one's stanza keeps the other's (the old
    /// store removed every stanza with the tag).
    #[tokio::test]
    async fn removal_compares_whole_recipients_not_tags() {
        let (a, b) = colliding_identities();
        assert_eq!(a.recipient().tag(), b.recipient().tag());
        assert!(!a.recipient().ct_eq(&b.recipient()));
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        store.create_bucket("b", 1).await.unwrap();
        let dek = DataKey::generate();
        let inst = Identity::generate();
        let own = DekStanza::new(inst.recipient(), inst.wrap_own(&dek)).unwrap();
        let id = put_with(&store, "k", vec![own, named(&a, &dek), named(&b, &dek)]).await;
        assert_eq!(store.remove_stanzas(id, &a.recipient()).await.unwrap(), 1);
        let left = store.stanzas(id).await.unwrap();
        assert_eq!(left.len(), 2);
        assert!(!left.iter().any(|s| s.is_for(&a.recipient())));
        let bs = left.iter().find(|s| s.is_for(&b.recipient())).unwrap();
        let opened = b.unwrap_key(bs.wrapped()).unwrap().unwrap();
        assert_eq!(opened.expose(), dek.expose());
        // Removing a again removes nothing; b's stanza goes only when b is removed.
        assert_eq!(store.remove_stanzas(id, &a.recipient()).await.unwrap(), 0);
        assert_eq!(store.remove_stanzas(id, &b.recipient()).await.unwrap(), 1);
        assert_eq!(store.stanzas(id).await.unwrap().len(), 1);
    }

    /// Version 1 rows get their Recipients when upgraded: the institution (own stanza), a
    /// registered patient, a grant's recipient, a configured peer; a stanza nobody known
    /// names, and one two known keys with one tag could both own, are kept as unknown. The
    /// upgrade runs once, and again (after a crash before the mark) changes nothing.
    #[tokio::test]
    async fn v1_rows_are_upgraded_with_their_recipients() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        store.create_bucket("b", 1).await.unwrap();
        let (inst, patient, reader, peer, stranger) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let (twin_a, twin_b) = colliding_identities();
        store
            .patients
            .insert(
                b"p-1",
                encode_json(&PatientRecord {
                    id: "p-1".into(),
                    recipient: patient.recipient().to_string(),
                    registered_ms: 1,
                    proof: String::new(),
                    index_seq: 0,
                })
                .unwrap(),
            )
            .unwrap();
        store
            .grants
            .insert(
                b"g-1",
                encode_json(&GrantRecord {
                    id: "g-1".into(),
                    grant: String::new(),
                    request_id: "r".into(),
                    patient_id: "p-1".into(),
                    recipient: reader.recipient().to_string(),
                    issued_ms: 1,
                    expires_ms: 2,
                    revoked_ms: Some(2),
                    records: Vec::new(),
                })
                .unwrap(),
            )
            .unwrap();
        let dek = DataKey::generate();
        let own = DekStanza::new(inst.recipient(), inst.wrap_own(&dek)).unwrap();
        let batch = DekStanza::new(
            reader.recipient(),
            reader.recipient().batch_wrapper().unwrap().wrap(&dek),
        )
        .unwrap();
        let stanzas = vec![
            own,
            named(&patient, &dek),
            batch,
            named(&peer, &dek),
            named(&stranger, &dek),
            named(&twin_a, &dek),
        ];
        let id = put_with(&store, "k", stanzas.clone()).await;
        let plain = put_with(&store, "plain", vec![named(&patient, &dek)]).await;
        // Write the rows as the gateway before version 2 did.
        for d in [id, plain] {
            let rec = decode_dek(&store.deks.get(d.0).unwrap().unwrap()).unwrap();
            store.deks.insert(d.0, rec.encode_v1()).unwrap();
        }
        let v1 = store.stanzas(id).await.unwrap();
        assert!(v1.iter().all(|s| s.recipient().is_none()));

        let others = [peer.recipient(), twin_a.recipient(), twin_b.recipient()];
        let report = store
            .upgrade_dek_records(&inst.recipient(), &others)
            .unwrap();
        assert_eq!(
            report,
            DekUpgrade {
                rows: 2,
                stanzas: 5,
                unknown: 2
            }
        );
        let row = store.deks.get(id.0).unwrap().unwrap();
        assert_eq!(
            DekRecord::version_of(&row),
            Some(keyring::dek_record::DEK_RECORD_V2)
        );
        let got = store.stanzas(id).await.unwrap();
        let want: Vec<Option<Recipient>> = vec![
            Some(inst.recipient()),
            Some(patient.recipient()),
            Some(reader.recipient()),
            Some(peer.recipient()),
            None,
            None,
        ];
        assert_eq!(
            got.iter()
                .map(|s| s.recipient().cloned())
                .collect::<Vec<_>>(),
            want
        );
        for (g, s) in got.iter().zip(&stanzas) {
            assert_eq!(g.wrapped(), s.wrapped());
        }
        assert!(store.stanzas(plain).await.unwrap()[0].is_for(&patient.recipient()));

        // Once: the mark stops a second pass.
        let again = store
            .upgrade_dek_records(&inst.recipient(), &others)
            .unwrap();
        assert_eq!(again, DekUpgrade::default());
        // A crash before the mark: the pass runs again and changes no row's bytes.
        store.log_meta.remove(DEK_V2_MARK).unwrap();
        let after = store
            .upgrade_dek_records(&inst.recipient(), &others)
            .unwrap();
        assert_eq!(after.stanzas, 0);
        assert_eq!(store.deks.get(id.0).unwrap().unwrap(), row);
    }

    /// A backup carries `deks` rows as they are: one taken before the upgrade restores
    /// version 1 rows, which the next open upgrades; one taken after carries version 2 rows
    /// and the mark, so the restored store needs no upgrade.
    #[tokio::test]
    async fn backups_carry_dek_rows_of_either_version() {
        use crate::engine::backup::{restore, write_backup, BackupSink, ExpectedSigner};
        struct Mem(Vec<u8>);
        #[async_trait]
        impl BackupSink for Mem {
            async fn write(&mut self, bytes: &[u8]) -> Result<()> {
                self.0.extend_from_slice(bytes);
                Ok(())
            }
            async fn progress(&mut self, _: u64, _: u64) -> Result<()> {
                Ok(())
            }
        }
        async fn round_trip(store: &SledStore, inst: &Identity) -> (tempfile::TempDir, SledStore) {
            let recovery = Identity::generate();
            let mut sink = Mem(Vec::new());
            write_backup(store, Vec::new(), &recovery.recipient(), inst, &mut sink)
                .await
                .unwrap();
            let dst = tempfile::tempdir().unwrap();
            let expected = ExpectedSigner {
                institution: &inst.recipient(),
                allow_unsigned: false,
            };
            restore(
                &mut sink.0.as_slice(),
                &recovery,
                expected,
                dst.path(),
                &mut |_| {},
            )
            .unwrap();
            let restored = SledStore::open(&dst.path().join("private"), 1 << 20).unwrap();
            (dst, restored)
        }
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        store.create_bucket("b", 1).await.unwrap();
        let (inst, peer) = (Identity::generate(), Identity::generate());
        let dek = DataKey::generate();
        let own = DekStanza::new(inst.recipient(), inst.wrap_own(&dek)).unwrap();
        let id = put_with(&store, "k", vec![own, named(&peer, &dek)]).await;
        let v2 = store.deks.get(id.0).unwrap().unwrap();
        store
            .deks
            .insert(id.0, decode_dek(&v2).unwrap().encode_v1())
            .unwrap();

        // Before: version 1 rows come back, and are upgraded at the next open.
        let (_old_dir, old) = round_trip(&store, &inst).await;
        assert!(old
            .stanzas(id)
            .await
            .unwrap()
            .iter()
            .all(|s| s.recipient().is_none()));
        let report = old
            .upgrade_dek_records(&inst.recipient(), &[peer.recipient()])
            .unwrap();
        assert_eq!((report.rows, report.stanzas, report.unknown), (1, 2, 0));
        assert_eq!(old.deks.get(id.0).unwrap().unwrap(), v2);

        // After: version 2 rows and the mark come back; nothing left to upgrade.
        store
            .upgrade_dek_records(&inst.recipient(), &[peer.recipient()])
            .unwrap();
        let (_new_dir, new) = round_trip(&store, &inst).await;
        assert_eq!(new.deks.get(id.0).unwrap().unwrap(), v2);
        assert_eq!(
            new.upgrade_dek_records(&inst.recipient(), &[]).unwrap(),
            DekUpgrade::default()
        );
        assert!(new.stanzas(id).await.unwrap()[1].is_for(&peer.recipient()));
    }

    #[test]
    fn object_keys_sort_by_bucket_then_key_bytes() {
        // The listing relies on `bucket ‖ 0x00` being an exact prefix and on byte order.
        assert!(object_key("a", "z") < object_key("a", "é"));
        assert!(object_key("a", "\u{FFFF}") < object_key("a", "😀"));
        assert!(!object_key("ab", "").starts_with(&object_key("a", "")));
        assert!(object_key("a", "\u{10FFFF}") < object_key("a0", ""));
        assert_eq!(
            leaf_key(&BlobId([1; 16]), 0x0102)[16..],
            [0, 0, 0, 0, 0, 0, 1, 2]
        );
    }
    /// A body that fails before its blob reaches the public store leaves an orphan row
    /// (and, past `LEAF_BATCH` chunks, leaves) for a blob gc can never list: gc must still
    /// be able to forget them, or every interrupted upload leaks private-store rows.
    #[tokio::test]
    async fn gc_forgets_uploads_that_failed_before_reaching_the_public_store() {
        use std::sync::Arc;

        use bytes::Bytes;

        use futures::StreamExt;

        use crate::engine::record::{Engine, EngineConfig, PutRequest};

        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        store.create_bucket("b", 1).await.unwrap();
        let public: crate::store::public::PublicStore =
            Arc::new(object_store::memory::InMemory::new());
        let engine = Engine::new(
            Arc::clone(&public),
            store.clone() as Arc<dyn PrivateStore>,
            Arc::new(Identity::generate()),
            EngineConfig {
                chunk_size: 1,
                part_size: 5 << 20,
                upload_concurrency: 2,
                ..EngineConfig::default()
            },
        );
        let body = futures::stream::iter(vec![
            Ok(Bytes::from(vec![7u8; 300])),
            Err(std::io::Error::other("client went away")),
        ]);
        let req = PutRequest {
            bucket: "b".into(),
            key: "k".into(),
            ..Default::default()
        };
        assert!(matches!(engine.put(req, body).await, Err(Error::Body(_))));
        assert!(store.pending.is_empty());
        assert!(
            public.list(None).next().await.is_none(),
            "nothing was uploaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let report = crate::engine::gc::run(
            &public,
            None,
            store.as_ref(),
            std::time::Duration::ZERO,
            true,
        )
        .await
        .unwrap();
        assert_eq!(report.scanned, 0);
        assert_eq!(
            store.orphans.len(),
            0,
            "orphan row of a never-uploaded blob leaks"
        );
        assert_eq!(
            store.leaves.len(),
            0,
            "leaves of a never-uploaded blob leak"
        );
    }

    /// `patient_objects` follows puts, overwrites that change the patient, and deletes, and a
    /// store made before it existed is indexed when opened.
    #[tokio::test]
    async fn patient_index_follows_writes_and_is_built_for_older_stores() {
        use crate::store::private::{Precondition, PutCommit};
        use keyring::{BlobId, DekId, Part, SUITE_V1};

        async fn put(store: &SledStore, key: &str, patient: Option<&str>) {
            let blob = BlobId::random();
            store.add_pending(blob, crate::now_ms()).await.unwrap();
            let manifest = Manifest {
                suite: SUITE_V1,
                dek_id: DekId::random(),
                size: 1,
                last_modified_ms: 1,
                etag: "\"e\"".into(),
                content_type: None,
                headers: Vec::new(),
                metadata: Vec::new(),
                checksums: Vec::new(),
                patient: patient.map(Into::into),
                parts: vec![Part {
                    blob,
                    chunk_size: 1024,
                    plaintext_len: 1,
                    root: [1; 32],
                }],
            };
            store
                .commit_put(PutCommit {
                    bucket: "b".into(),
                    key: key.into(),
                    stanzas: vec![stanza()],
                    manifest,
                    precondition: Precondition::None,
                    upload: None,
                })
                .await
                .unwrap();
        }
        async fn keys(store: &SledStore, patient: &str) -> Vec<String> {
            let rows = store.patient_objects(patient).await.unwrap();
            assert!(rows
                .iter()
                .all(|(_, _, m)| m.patient.as_deref() == Some(patient)));
            rows.into_iter().map(|(_, k, _)| k).collect()
        }

        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        store.create_bucket("b", 1).await.unwrap();
        put(&store, "a1", Some("ann")).await;
        put(&store, "a2", Some("ann")).await;
        put(&store, "x", Some("annie")).await;
        put(&store, "n", None).await;
        assert_eq!(keys(&store, "ann").await, ["a1", "a2"]);
        assert_eq!(keys(&store, "annie").await, ["x"]);
        assert!(keys(&store, "an").await.is_empty());
        // An overwrite that changes the patient moves the row; one without a patient drops it.
        put(&store, "a2", Some("annie")).await;
        put(&store, "a1", None).await;
        assert!(keys(&store, "ann").await.is_empty());
        assert_eq!(keys(&store, "annie").await, ["a2", "x"]);
        store.delete_object("b", "x").await.unwrap();
        assert_eq!(keys(&store, "annie").await, ["a2"]);
        assert_eq!(store.patient_objects.len(), 1);

        // A store from before the index: no rows, no mark. Opening it builds the index.
        put(&store, "a3", Some("ann")).await;
        store.patient_objects.clear().unwrap();
        store.log_meta.remove(PATIENT_INDEX_MARK).unwrap();
        store.flush().await.unwrap();
        drop(store);
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(keys(&store, "ann").await, ["a3"]);
        assert_eq!(keys(&store, "annie").await, ["a2"]);
        assert!(store.log_meta.get(PATIENT_INDEX_MARK).unwrap().is_some());
    }
}
