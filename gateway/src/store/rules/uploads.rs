//! Multipart uploads and their parts: [`UploadRows`] over any [`Kv`]. A part's blob stays
//! pending until its upload completes (`objects.rs`, `commit`) or is aborted; a part
//! uploaded again, or left out of the completed object, becomes an orphan for gc.

use async_trait::async_trait;

use super::rows::*;
use super::KvStore;
use crate::store::kv::{abort, prefix, Kv, Table, Tx};
use crate::store::private::{PartRecord, UploadRecord, UploadRows};
use crate::{Error, Result};

/// The tables a part write or an abort touches.
const PART_TABLES: [Table; 5] = [
    Table::Uploads,
    Table::Parts,
    Table::PartBlobs,
    Table::Pending,
    Table::Orphans,
];

#[async_trait]
impl<K: Kv> UploadRows for KvStore<K> {
    async fn create_upload(&self, id: &str, record: UploadRecord) -> Result<()> {
        let _gate = self.gate.read().await;
        self.kv.batch(
            Table::Uploads,
            vec![(id.as_bytes().to_vec(), Some(encode_json(&record)?))],
        )
    }

    async fn upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        json_row(&self.kv, Table::Uploads, id.as_bytes(), "upload")
    }

    async fn list_uploads(&self, bucket: &str) -> Result<Vec<(String, UploadRecord)>> {
        let mut out = Vec::new();
        for item in self.kv.range(Table::Uploads, prefix(b""))? {
            let (k, v) = item?;
            let rec: UploadRecord = decode_json(&v, "upload")?;
            if rec.bucket == bucket {
                let id = String::from_utf8(k).map_err(|_| Error::Corrupt("upload id".into()))?;
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
        self.kv.transact(&PART_TABLES, |tx: &dyn Tx| {
            let Some(v) = tx.get(Table::Uploads, id.as_bytes())? else {
                return abort(Error::NoSuchUpload(id.to_string()));
            };
            let mut rec: UploadRecord = decode_json(&v, "upload").or_else(abort)?;
            rec.touched_ms = now;
            tx.put(
                Table::Uploads,
                id.as_bytes(),
                &encode_json(&rec).or_else(abort)?,
            )?;
            let key = part_key(id, number);
            let old = tx.get(Table::Parts, &key)?;
            tx.put(Table::Parts, &key, &encoded)?;
            if let Some(old) = old {
                let old: PartRecord = decode_json(&old, "part").or_else(abort)?;
                tx.delete(Table::PartBlobs, &old.blob.0)?;
                orphan_if_pending(tx, &old.blob, now)?;
            }
            tx.put(Table::PartBlobs, &part.blob.0, id.as_bytes())?;
            Ok(())
        })
    }

    async fn parts(&self, id: &str) -> Result<Vec<(u32, PartRecord)>> {
        let start = nul_joined(id.as_bytes(), b"");
        let mut out = Vec::new();
        for item in self.kv.range(Table::Parts, prefix(&start))? {
            let (k, v) = item?;
            let number = k
                .get(start.len()..)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| Error::Corrupt("part key".into()))?;
            out.push((number, decode_json(&v, "part")?));
        }
        Ok(out)
    }

    async fn abort_upload(&self, id: &str) -> Result<Vec<PartRecord>> {
        let _gate = self.gate.read().await;
        // Read before the transaction (it cannot scan), removed in it by key.
        let listed = self.parts(id).await?;
        let now = crate::now_ms();
        self.kv.transact(&PART_TABLES, |tx: &dyn Tx| {
            if tx.delete(Table::Uploads, id.as_bytes())?.is_none() {
                return abort(Error::NoSuchUpload(id.to_string()));
            }
            for (number, part) in &listed {
                tx.delete(Table::Parts, &part_key(id, *number))?;
                tx.delete(Table::PartBlobs, &part.blob.0)?;
                orphan_if_pending(tx, &part.blob, now)?;
            }
            Ok(())
        })?;
        Ok(listed.into_iter().map(|(_, p)| p).collect())
    }
}
