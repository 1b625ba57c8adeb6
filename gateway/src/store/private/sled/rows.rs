//! Row keys and encodings of the sled adapter, and the reference-count and pending-blob
//! rules its transactions share.

use super::*;

#[derive(Serialize, Deserialize)]
pub(super) struct BucketRow {
    pub(super) v: u8,
    pub(super) created_ms: u64,
    pub(super) objects: u64,
}

/// Decodes a `deks` row (either version; see [`keyring::dek_record`]).
pub(super) fn decode_dek(v: &[u8]) -> Result<DekRecord> {
    DekRecord::decode(v).map_err(|_| Error::Corrupt("DEK record".into()))
}

pub(super) fn split_u64(b: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = b.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*head), rest))
}
pub(super) fn split_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), rest))
}

pub(super) fn read_u64(v: &[u8]) -> Result<u64> {
    split_u64(v)
        .map(|(n, _)| n)
        .ok_or_else(|| Error::Corrupt("counter".into()))
}

pub(super) fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    nul_joined(bucket.as_bytes(), key.as_bytes())
}

/// `patient ‖ 0x00 ‖ object key` (the object key being `bucket ‖ 0x00 ‖ key`).
pub(super) fn patient_object_key(patient: &str, okey: &[u8]) -> Vec<u8> {
    nul_joined(patient.as_bytes(), okey)
}

/// `a ‖ 0x00 ‖ b`.
pub(super) fn nul_joined(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + b.len());
    k.extend_from_slice(a);
    k.push(0);
    k.extend_from_slice(b);
    k
}

pub(super) fn dek_ref_key(dek: &DekId, bucket: &str, key: &str) -> Vec<u8> {
    let mut k = dek.0.to_vec();
    k.extend_from_slice(&object_key(bucket, key));
    k
}

pub(super) fn part_key(upload: &str, number: u32) -> Vec<u8> {
    nul_joined(upload.as_bytes(), &number.to_be_bytes())
}

pub(super) fn decode_json<T: serde::de::DeserializeOwned>(v: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(v).map_err(|_| Error::Corrupt(what.to_string()))
}

pub(super) fn leaf_key(blob: &BlobId, index: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&blob.0);
    k[16..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The trees that count references, as seen inside one transaction.
pub(super) struct RefTrees<'a> {
    pub(super) blobs: &'a TransactionalTree,
    pub(super) orphans: &'a TransactionalTree,
    pub(super) deks: &'a TransactionalTree,
    pub(super) dek_refs: &'a TransactionalTree,
}

pub(super) type TxResult<T> = std::result::Result<T, ConflictableTransactionError<Error>>;

pub(super) fn abort<T>(e: Error) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

pub(super) fn tx_err(e: TransactionError<Error>) -> Error {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => Error::from(e),
    }
}

pub(super) fn decode_bucket(v: &[u8]) -> Result<BucketRow> {
    serde_json::from_slice(v).map_err(|_| Error::Corrupt("bucket row".into()))
}

pub(super) fn encode_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(e.to_string()))
}

/// Releases one reference to each blob of `old`, recording blobs that drop to zero as
/// orphans, and one reference to its DEK (removing the DEK record, and with it every
/// stanza, when none is left: that is crypto-shredding).
pub(super) fn release(
    old: &Manifest,
    bucket: &str,
    key: &str,
    now: u64,
    t: &RefTrees<'_>,
) -> TxResult<()> {
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
pub(super) fn orphan_if_pending(
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
pub(super) fn json_rows<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    what: &str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (_, v) = item?;
        out.push(decode_json(&v, what)?);
    }
    Ok(out)
}

pub(super) fn blob_rows(tree: &sled::Tree) -> Result<Vec<(BlobId, u64)>> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (k, v) = item?;
        let id = <[u8; 16]>::try_from(&k[..]).map_err(|_| Error::Corrupt("blob row".into()))?;
        out.push((BlobId(id), read_u64(&v)?));
    }
    Ok(out)
}
