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

mod commit;
mod log_tx;
mod open;
mod rows;

use log_tx::*;
pub use open::DekUpgrade;
use open::*;
use rows::*;

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
mod tests;
