//! Row keys and encodings of the private store (the store's format, whatever the adapter),
//! and the reference-count and pending-blob rules its transactions share.
//!
//! # Row versions
//! Every persisted row either carries its version or has a documented shape from which an
//! older form is recognised (the table of [`crate::store::rules`] names each table's row):
//!
//! | row                                   | versioned by                           | older forms                                 |
//! |---------------------------------------|----------------------------------------|---------------------------------------------|
//! | `buckets` ([`BucketRow`])             | JSON `v` (1)                           | none: `v` = 1 since the first row           |
//! | `objects` (`keyring::Manifest`)       | its encoding's version byte            | keyring reads every version                 |
//! | `deks` (`keyring::dek_record`)        | version byte (v1, v2)                  | v1 read, upgraded at open (`upgrade.rs`)    |
//! | `events` (`log::EventBlock`)          | version byte 0x01                      | a row starting with `{`: one JSON event     |
//! | one event (`private::Event`)          | JSON shape (its docs); kind and actor as the texts of `EventKind`, `Actor` | fields added later read as their defaults |
//! | `access_keys` (`AccessKeyRecord`)     | JSON `v` (1 when absent, 2)            | v1: no `v`, `label_patients` read as true   |
//! | `uploads`, `parts`, `patients`, `requests`, `grants`, `mounts` | JSON shape (each type's docs) | fields added later read as their defaults |
//! | `blobs`, `pending`, `orphans`, `log_meta/size`, `backup_meta/last_backup_ms` | u64 BE, fixed | none                      |
//! | `patient_heads`                       | fixed: seq (u64 BE) ‖ commitment (32)  | none; another length is `Corrupt`           |
//! | `log_tiles`                           | C2SP tlog tile bytes (32 per hash)     | a sled store's `log_leaves`, converted at open |
//! | `checkpoints`, `peer_keys`            | text (signed note; Recipient)          | none                                        |
//! | `leaves`, `dek_refs`, `patient_objects`, `part_blobs`, marks | fixed (hash, empty, id, 0x01) | none                        |

use keyring::dek_record::DekRecord;
use keyring::{BlobId, DekId, Hash, Manifest};
use serde::{Deserialize, Serialize};

use crate::store::kv::{abort, Kv, Table, Tx, TxResult};
use crate::{Error, Result};

/// A `buckets` row (JSON), versioned by its `v` field: `{"v":1,"created_ms":N,"objects":N}`
/// (`objects`: how many objects the bucket holds, so a delete of a non-empty bucket is
/// refused without a scan). Every row ever written is `v` = 1; a later layout takes `v` = 2
/// and keeps reading these.
#[derive(Serialize, Deserialize)]
pub(crate) struct BucketRow {
    pub(crate) v: u8,
    pub(crate) created_ms: u64,
    pub(crate) objects: u64,
}

/// Decodes a `deks` row (either version; see [`keyring::dek_record`]).
pub(crate) fn decode_dek(v: &[u8]) -> Result<DekRecord> {
    DekRecord::decode(v).map_err(|_| Error::Corrupt("DEK record".into()))
}

pub(crate) fn split_u64(b: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = b.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*head), rest))
}
pub(crate) fn split_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), rest))
}

pub(crate) fn read_u64(v: &[u8]) -> Result<u64> {
    split_u64(v)
        .map(|(n, _)| n)
        .ok_or_else(|| Error::Corrupt("counter".into()))
}

pub(crate) fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    nul_joined(bucket.as_bytes(), key.as_bytes())
}

/// `patient ‖ 0x00 ‖ object key` (the object key being `bucket ‖ 0x00 ‖ key`).
pub(crate) fn patient_object_key(patient: &str, okey: &[u8]) -> Vec<u8> {
    nul_joined(patient.as_bytes(), okey)
}

/// `a ‖ 0x00 ‖ b`.
pub(crate) fn nul_joined(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + b.len());
    k.extend_from_slice(a);
    k.push(0);
    k.extend_from_slice(b);
    k
}

pub(crate) fn dek_ref_key(dek: &DekId, bucket: &str, key: &str) -> Vec<u8> {
    let mut k = dek.0.to_vec();
    k.extend_from_slice(&object_key(bucket, key));
    k
}

pub(crate) fn part_key(upload: &str, number: u32) -> Vec<u8> {
    nul_joined(upload.as_bytes(), &number.to_be_bytes())
}

pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(v: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(v).map_err(|_| Error::Corrupt(what.to_string()))
}

pub(crate) fn leaf_key(blob: &BlobId, index: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&blob.0);
    k[16..].copy_from_slice(&index.to_be_bytes());
    k
}

pub(crate) fn decode_bucket(v: &[u8]) -> Result<BucketRow> {
    serde_json::from_slice(v).map_err(|_| Error::Corrupt("bucket row".into()))
}

pub(crate) fn encode_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(e.to_string()))
}

/// `tile level (u8) ‖ tile index (u64 BE)`, the key of a `log_tiles` row.
pub(crate) fn tile_key(level: u8, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = level;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

pub(crate) fn to_hash(v: &[u8], what: &str) -> Result<Hash> {
    <Hash>::try_from(v).map_err(|_| Error::Corrupt(what.into()))
}

/// The `log_meta` key marking a log stored as tiles.
pub(crate) const TILES_MARK: &[u8] = b"tiles";
/// The `log_meta` key marking a store whose `patient_objects` index is built.
pub(crate) const PATIENT_INDEX_MARK: &[u8] = b"patient_objects";
/// The `log_meta` key marking a store whose `deks` rows were upgraded to version 2.
pub(crate) const DEK_V2_MARK: &[u8] = b"dek_records_v2";
/// The `log_meta` key of the log's size.
pub(crate) const LOG_SIZE: &[u8] = b"size";

/// Releases one reference to each blob of `old`, recording blobs that drop to zero as
/// orphans, and one reference to its DEK (removing the DEK record, and with it every
/// stanza, when none is left: that is crypto-shredding). Touches `blobs`, `orphans`, `deks`
/// and `dek_refs`.
pub(crate) fn release(
    tx: &dyn Tx,
    old: &Manifest,
    bucket: &str,
    key: &str,
    now: u64,
) -> TxResult<()> {
    for part in &old.parts {
        let id = part.blob.0;
        let refs = match tx.get(Table::Blobs, &id)? {
            Some(v) => read_u64(&v).or_else(abort)?,
            None => 0,
        };
        if refs <= 1 {
            tx.delete(Table::Blobs, &id)?;
            tx.put(Table::Orphans, &id, &now.to_be_bytes())?;
        } else {
            tx.put(Table::Blobs, &id, &(refs - 1).to_be_bytes())?;
        }
    }
    tx.delete(Table::DekRefs, &dek_ref_key(&old.dek_id, bucket, key))?;
    if let Some(v) = tx.get(Table::Deks, &old.dek_id.0)? {
        let mut rec = decode_dek(&v).or_else(abort)?;
        if rec.refs <= 1 {
            tx.delete(Table::Deks, &old.dek_id.0)?;
        } else {
            rec.refs -= 1;
            tx.put(Table::Deks, &old.dek_id.0, &rec.encode())?;
        }
    }
    Ok(())
}

/// Moves a blob from pending to orphaned (for gc), if it is pending.
pub(crate) fn orphan_if_pending(tx: &dyn Tx, blob: &BlobId, now: u64) -> TxResult<()> {
    if tx.delete(Table::Pending, &blob.0)?.is_some() {
        tx.put(Table::Orphans, &blob.0, &now.to_be_bytes())?;
    }
    Ok(())
}

/// Every row of a table of JSON rows, decoded.
pub(crate) fn json_rows<T: serde::de::DeserializeOwned>(
    kv: &impl Kv,
    table: Table,
    what: &str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for item in kv.range(table, crate::store::kv::prefix(b""))? {
        let (_, v) = item?;
        out.push(decode_json(&v, what)?);
    }
    Ok(out)
}

/// Every row of a table keyed by blob id with a u64 value.
pub(crate) fn blob_rows(kv: &impl Kv, table: Table) -> Result<Vec<(BlobId, u64)>> {
    let mut out = Vec::new();
    for item in kv.range(table, crate::store::kv::prefix(b""))? {
        let (k, v) = item?;
        let id = <[u8; 16]>::try_from(&k[..]).map_err(|_| Error::Corrupt("blob row".into()))?;
        out.push((BlobId(id), read_u64(&v)?));
    }
    Ok(out)
}

/// A JSON row at `key` of `table`, decoded.
pub(crate) fn json_row<T: serde::de::DeserializeOwned>(
    kv: &impl Kv,
    table: Table,
    key: &[u8],
    what: &str,
) -> Result<Option<T>> {
    match kv.get(table, key)? {
        Some(v) => Ok(Some(decode_json(&v, what)?)),
        None => Ok(None),
    }
}
