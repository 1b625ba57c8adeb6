//! The two big transactions of the sled adapter: committing a write and deleting an object.

use super::*;

impl SledStore {
    /// `commit_put`, appending `entry` to the log in the same transaction if given.
    pub(super) async fn commit(
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
    pub(super) async fn delete(
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
