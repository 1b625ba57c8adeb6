//! Buckets, objects, blobs: [`ObjectRows`] over any [`Kv`], with the two big transactions
//! (committing a write, deleting an object).

use async_trait::async_trait;
use keyring::dek_record::{DekRecord, DekStanza};
use keyring::{BlobId, DekId, Hash, Manifest};

use super::log::LogTx;
use super::rows::*;
use super::KvStore;
use crate::store::kv::{abort, prefix, Kv, Table, Tx};
use crate::store::private::UploadRows;
use crate::store::private::{
    BlobState, BucketInfo, Event, ListedObject, ObjectRows, Precondition, PutCommit, UploadRecord,
};
use crate::{Error, Result};

fn decode_manifest(v: &[u8], bucket: &str, key: &str) -> Result<Manifest> {
    Manifest::decode(v).map_err(|_| Error::Corrupt(format!("manifest of {bucket}/{key}")))
}

/// The tables a commit writes.
const COMMIT_TABLES: [Table; 15] = [
    Table::Buckets,
    Table::Objects,
    Table::Blobs,
    Table::Pending,
    Table::Orphans,
    Table::Deks,
    Table::DekRefs,
    Table::Uploads,
    Table::Parts,
    Table::PartBlobs,
    Table::Events,
    Table::LogTiles,
    Table::LogMeta,
    Table::PatientHeads,
    Table::PatientObjects,
];

/// The tables a delete writes.
const DELETE_TABLES: [Table; 11] = [
    Table::Buckets,
    Table::Objects,
    Table::Blobs,
    Table::Orphans,
    Table::Deks,
    Table::DekRefs,
    Table::Events,
    Table::LogTiles,
    Table::LogMeta,
    Table::PatientHeads,
    Table::PatientObjects,
];

impl<K: Kv> KvStore<K> {
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
        // The parts of the upload being completed, read before the transaction (it cannot
        // scan) and re-validated in it by key; a part added concurrently stays pending and
        // gc reaps it after the grace period.
        let upload_parts = match &commit.upload {
            Some(id) => self.parts(id).await?,
            None => Vec::new(),
        };
        self.kv.transact(&COMMIT_TABLES, |tx: &dyn Tx| {
            if let Some(id) = &commit.upload {
                if tx.delete(Table::Uploads, id.as_bytes())?.is_none() {
                    return abort(Error::NoSuchUpload(id.clone()));
                }
                for (number, part) in &upload_parts {
                    tx.delete(Table::Parts, &part_key(id, *number))?;
                    tx.delete(Table::PartBlobs, &part.blob.0)?;
                    let used = commit.manifest.parts.iter().any(|p| p.blob == part.blob);
                    if !used {
                        orphan_if_pending(tx, &part.blob, now)?;
                    }
                }
            }
            let Some(brow) = tx.get(Table::Buckets, commit.bucket.as_bytes())? else {
                return abort(Error::NoSuchBucket(commit.bucket.clone()));
            };
            let mut brow = decode_bucket(&brow).or_else(abort)?;
            let old = match tx.get(Table::Objects, &okey)? {
                Some(v) => Some(decode_manifest(&v, &commit.bucket, &commit.key).or_else(abort)?),
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
                let refs = match tx.get(Table::Blobs, &id)? {
                    Some(v) => read_u64(&v).or_else(abort)?,
                    None => 0,
                };
                if refs == 0 {
                    // A fresh blob must still be pending: if gc reaped it, its bytes
                    // may be gone and committing would point at a missing blob.
                    if tx.delete(Table::Pending, &id)?.is_none() {
                        return abort(Error::Reaped);
                    }
                    tx.delete(Table::Orphans, &id)?;
                }
                tx.put(Table::Blobs, &id, &(refs + 1).to_be_bytes())?;
            }
            let mut rec = match tx.get(Table::Deks, &dek.0)? {
                Some(v) => decode_dek(&v).or_else(abort)?,
                None => DekRecord::default(),
            };
            rec.refs += 1;
            for s in &commit.stanzas {
                if !rec.stanzas.contains(s) {
                    rec.stanzas.push(s.clone());
                }
            }
            tx.put(Table::Deks, &dek.0, &rec.encode())?;
            tx.put(
                Table::DekRefs,
                &dek_ref_key(&dek, &commit.bucket, &commit.key),
                &[],
            )?;
            tx.put(Table::Objects, &okey, &encoded)?;
            if let Some(p) = old.as_ref().and_then(|m| m.patient.as_deref()) {
                tx.delete(Table::PatientObjects, &patient_object_key(p, &okey))?;
            }
            if let Some(p) = &commit.manifest.patient {
                tx.put(Table::PatientObjects, &patient_object_key(p, &okey), &[])?;
            }
            match &old {
                Some(m) => release(tx, m, &commit.bucket, &commit.key, now)?,
                None => {
                    brow.objects += 1;
                    tx.put(
                        Table::Buckets,
                        commit.bucket.as_bytes(),
                        &encode_json(&brow).or_else(abort)?,
                    )?;
                }
            }
            let index = match &entry {
                Some(e) => Some(LogTx(tx).append(std::slice::from_ref(e), &[salt])?),
                None => None,
            };
            Ok((old, index))
        })
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
        self.kv.transact(&DELETE_TABLES, |tx: &dyn Tx| {
            let Some(brow) = tx.get(Table::Buckets, bucket.as_bytes())? else {
                return abort(Error::NoSuchBucket(bucket.to_string()));
            };
            let Some(v) = tx.delete(Table::Objects, &okey)? else {
                return Ok((None, None));
            };
            let old = decode_manifest(&v, bucket, key).or_else(abort)?;
            if let Some(p) = &old.patient {
                tx.delete(Table::PatientObjects, &patient_object_key(p, &okey))?;
            }
            release(tx, &old, bucket, key, now)?;
            let mut brow = decode_bucket(&brow).or_else(abort)?;
            brow.objects = brow.objects.saturating_sub(1);
            tx.put(
                Table::Buckets,
                bucket.as_bytes(),
                &encode_json(&brow).or_else(abort)?,
            )?;
            let index = match &entry {
                Some(e) => {
                    let e = Event {
                        patient: old.patient.clone(),
                        ..e.clone()
                    };
                    Some(LogTx(tx).append(std::slice::from_ref(&e), &[salt])?)
                }
                None => None,
            };
            Ok((Some(old), index))
        })
    }
}

#[async_trait]
impl<K: Kv> ObjectRows for KvStore<K> {
    async fn create_bucket(&self, name: &str, created_ms: u64) -> Result<()> {
        let _gate = self.gate.read().await;
        let row = encode_json(&BucketRow {
            v: 1,
            created_ms,
            objects: 0,
        })?;
        self.kv.transact(&[Table::Buckets], |tx: &dyn Tx| {
            if tx.get(Table::Buckets, name.as_bytes())?.is_some() {
                return abort(Error::BucketExists(name.to_string()));
            }
            tx.put(Table::Buckets, name.as_bytes(), &row)
        })
    }

    async fn delete_bucket(&self, name: &str) -> Result<()> {
        let _gate = self.gate.read().await;
        self.kv.transact(&[Table::Buckets], |tx: &dyn Tx| {
            let Some(v) = tx.get(Table::Buckets, name.as_bytes())? else {
                return abort(Error::NoSuchBucket(name.to_string()));
            };
            let row = decode_bucket(&v).or_else(abort)?;
            if row.objects > 0 {
                return abort(Error::BucketNotEmpty(name.to_string()));
            }
            tx.delete(Table::Buckets, name.as_bytes())?;
            Ok(())
        })
    }

    async fn bucket(&self, name: &str) -> Result<Option<BucketInfo>> {
        let Some(v) = self.kv.get(Table::Buckets, name.as_bytes())? else {
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
        for item in self.kv.range(Table::Buckets, prefix(b""))? {
            let (k, v) = item?;
            let row = decode_bucket(&v)?;
            let name = String::from_utf8(k).map_err(|_| Error::Corrupt("bucket name".into()))?;
            out.push(BucketInfo {
                name,
                created_ms: row.created_ms,
            });
        }
        Ok(out)
    }

    async fn manifest(&self, bucket: &str, key: &str) -> Result<Option<Manifest>> {
        match self.kv.get(Table::Objects, &object_key(bucket, key))? {
            Some(v) => Ok(Some(decode_manifest(&v, bucket, key)?)),
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
        use std::ops::Bound;
        let base = object_key(bucket, "");
        let want = object_key(bucket, prefix);
        let mut start = object_key(bucket, after);
        // Strictly after `after`: the smallest key greater than it is `after ‖ 0x00`.
        start.push(0);
        if start < want {
            start = want.clone();
        }
        let mut out = Vec::new();
        for item in self
            .kv
            .range(Table::Objects, (Bound::Included(start), Bound::Unbounded))?
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            if !k.starts_with(&want) {
                break;
            }
            let key = String::from_utf8(k[base.len()..].to_vec())
                .map_err(|_| Error::Corrupt("object key".into()))?;
            let manifest = decode_manifest(&v, bucket, &key)?;
            out.push(ListedObject { key, manifest });
        }
        Ok(out)
    }

    async fn add_pending(&self, blob: BlobId, created_ms: u64) -> Result<()> {
        let _gate = self.gate.read().await;
        self.kv.batch(
            Table::Pending,
            vec![(blob.0.to_vec(), Some(created_ms.to_be_bytes().to_vec()))],
        )
    }

    async fn drop_pending(&self, blob: BlobId) -> Result<()> {
        let _gate = self.gate.read().await;
        // The blob may already be in the public store; record it as an orphan so gc
        // reclaims it after the grace period.
        let now = crate::now_ms();
        self.kv
            .transact(&[Table::Pending, Table::Orphans], |tx: &dyn Tx| {
                orphan_if_pending(tx, &blob, now)
            })
    }

    async fn put_leaves(&self, blob: BlobId, first: u64, leaves: &[Hash]) -> Result<()> {
        let _gate = self.gate.read().await;
        let writes = leaves
            .iter()
            .enumerate()
            .map(|(i, leaf)| {
                (
                    leaf_key(&blob, first + i as u64).to_vec(),
                    Some(leaf.to_vec()),
                )
            })
            .collect();
        self.kv.batch(Table::Leaves, writes)
    }

    async fn leaves(&self, blob: BlobId, first: u64, last: u64) -> Result<Vec<Hash>> {
        use std::ops::Bound;
        let mut out = Vec::new();
        let mut expect = first;
        let range = (
            Bound::Included(leaf_key(&blob, first).to_vec()),
            Bound::Included(leaf_key(&blob, last).to_vec()),
        );
        for item in self.kv.range(Table::Leaves, range)? {
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
        match self.kv.get(Table::Deks, &dek.0)? {
            Some(v) => Ok(decode_dek(&v)?.stanzas),
            None => Ok(Vec::new()),
        }
    }

    async fn blob_state(&self, blob: BlobId) -> Result<BlobState> {
        if let Some(v) = self.kv.get(Table::Blobs, &blob.0)? {
            return Ok(BlobState::Referenced(read_u64(&v)?));
        }
        if let Some(v) = self.kv.get(Table::Pending, &blob.0)? {
            let mut created_ms = read_u64(&v)?;
            // A part of a live upload is as young as the upload's last part.
            if let Some(id) = self.kv.get(Table::PartBlobs, &blob.0)? {
                if let Some(u) = self.kv.get(Table::Uploads, &id)? {
                    let rec: UploadRecord = decode_json(&u, "upload")?;
                    created_ms = created_ms.max(rec.touched_ms);
                }
            }
            return Ok(BlobState::Pending { created_ms });
        }
        if let Some(v) = self.kv.get(Table::Orphans, &blob.0)? {
            return Ok(BlobState::Orphan {
                since_ms: read_u64(&v)?,
            });
        }
        Ok(BlobState::Unknown)
    }

    async fn reap_blob(&self, blob: BlobId, cutoff_ms: u64) -> Result<bool> {
        let _gate = self.gate.read().await;
        let reaped = self.kv.transact(
            &[Table::Blobs, Table::Pending, Table::Orphans],
            |tx: &dyn Tx| {
                if tx.get(Table::Blobs, &blob.0)?.is_some() {
                    return Ok(false);
                }
                for table in [Table::Pending, Table::Orphans] {
                    if let Some(v) = tx.get(table, &blob.0)? {
                        if read_u64(&v).or_else(abort)? > cutoff_ms {
                            return Ok(false);
                        }
                    }
                }
                tx.delete(Table::Pending, &blob.0)?;
                tx.delete(Table::Orphans, &blob.0)?;
                Ok(true)
            },
        )?;
        if reaped {
            let mut writes = Vec::new();
            for item in self.kv.range(Table::Leaves, prefix(&blob.0))? {
                let (k, _) = item?;
                writes.push((k, None));
            }
            self.kv.batch(Table::Leaves, writes)?;
        }
        Ok(reaped)
    }

    async fn pending(&self) -> Result<Vec<(BlobId, u64)>> {
        blob_rows(&self.kv, Table::Pending)
    }

    async fn orphans(&self) -> Result<Vec<(BlobId, u64)>> {
        blob_rows(&self.kv, Table::Orphans)
    }

    async fn patient_objects(&self, patient: &str) -> Result<Vec<(String, String, Manifest)>> {
        let mut out = Vec::new();
        let start = patient_object_key(patient, b"");
        for item in self.kv.range(Table::PatientObjects, prefix(&start))? {
            let (pk, _) = item?;
            let k = &pk[start.len()..];
            // A row whose object changed hands in between is skipped: the manifest decides.
            let Some(v) = self.kv.get(Table::Objects, k)? else {
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
}
