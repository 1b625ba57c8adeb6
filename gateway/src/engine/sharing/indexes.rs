//! Patient indexes: marking the patients whose records changed, and publishing their sealed
//! indexes in ticks that also rewrite randomly chosen unchanged ones (the cover).

use super::*;

/// The fewest patient indexes a publication tick rewrites (when that many patients have one):
/// the changed ones and randomly chosen unchanged ones. Config `[engine] index_cover` may
/// raise it (to the number of patients, say, so that every tick rewrites every index).
pub const MIN_INDEX_COVER: usize = 32;

/// How often the server publishes patient indexes, by default (config `[engine]
/// index_interval`, `--index-interval`, `MEDGATE_INDEX_INTERVAL`). A tick with no changed
/// patient writes nothing; one with changes writes at least [`MIN_INDEX_COVER`] indexes, so
/// the interval bounds the public store requests this costs (at most 32 PUTs every 10 s: about
/// 280,000 a day at the busiest) and how stale an index can be when the gateway stops without
/// its final tick.
pub const DEFAULT_INDEX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Index uploads in flight during a tick.
pub(super) const INDEX_UPLOADS: usize = 8;

/// One sealed index, ready to upload.
pub(super) struct SealedIndex {
    pub(super) patient: String,
    pub(super) changed: bool,
    pub(super) name: object_store::path::Path,
    pub(super) seq: u64,
    pub(super) bytes: Vec<u8>,
}

impl Engine {
    /// Notes that a record of a patient changed, so their published index is behind.
    /// Publication is batched ([`Engine::publish_indexes`]), never one per PUT.
    pub fn patient_changed(&self, manifest: Option<&keyring::Manifest>) {
        if let Some(p) = manifest.and_then(|m| m.patient.clone()) {
            self.mark_index_changed(p);
        }
    }

    pub(super) fn mark_index_changed(&self, patient: String) {
        if let Ok(mut dirty) = self.index_dirty.lock() {
            dirty.insert(patient);
        }
    }

    /// One publication tick. When any patient's records changed since the last tick, this
    /// rewrites their indexes together with randomly chosen unchanged patients' indexes, at
    /// least [`EngineConfig::index_cover`](crate::engine::record::EngineConfig::index_cover) in all
    /// (or every patient's that has one, when fewer do). Every rewrite is a fresh seal (new
    /// index key, new ephemeral key, so new bytes throughout) under the next sequence number,
    /// padded to its size bucket; the uploads go out in random order, several at a time. So the
    /// public store sees a set of at least 32 index files rewritten together, and cannot tell
    /// which of them changed. A tick with no change writes nothing. Returns how many indexes
    /// it published; a changed patient whose publication fails stays marked.
    ///
    /// # Errors
    /// The first failure (the others are retried on the next call).
    pub async fn publish_indexes(&self) -> Result<usize> {
        use rand::seq::SliceRandom;
        let _tick = self.index_tick.lock().await;
        // A restored store publishes nothing until its numbers are past the published ones.
        if self.private.restored_pending().await? {
            self.resume_index_seqs().await?;
        }
        let changed: std::collections::BTreeSet<String> = match self.index_dirty.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => return Err(Error::Internal("index set poisoned".into())),
        };
        if changed.is_empty() {
            return Ok(0);
        }
        let unchanged: Vec<String> = match self.private.list_patients().await {
            Ok(all) => all
                .into_iter()
                .filter(|p| p.index_seq > 0 && !changed.contains(&p.id))
                .map(|p| p.id)
                .collect(),
            Err(e) => {
                self.remark(changed.into_iter());
                return Err(e);
            }
        };
        let cover = self.config().index_cover.saturating_sub(changed.len());
        let mut batch: Vec<(String, bool)> = {
            let mut rng = rand::thread_rng();
            let mut batch: Vec<(String, bool)> = unchanged
                .choose_multiple(&mut rng, cover)
                .map(|p| (p.clone(), false))
                .chain(changed.into_iter().map(|p| (p, true)))
                .collect();
            batch.shuffle(&mut rng);
            batch
        };

        // Seal every index first (each with its next number), make the numbers durable in one
        // flush, and only then upload: a crash can skip a number but never publish two
        // indexes under one.
        let mut first_err = None;
        let mut sealed = Vec::with_capacity(batch.len());
        for (patient, changed) in batch.drain(..) {
            match self.seal_index(&patient).await {
                Ok((name, seq, bytes)) => sealed.push(SealedIndex {
                    patient,
                    changed,
                    name,
                    seq,
                    bytes,
                }),
                Err(e) => {
                    tracing::warn!(patient = %patient, error = %e, "sealing a patient index failed");
                    // A patient who is not registered (any more) has no index to publish.
                    if changed && !matches!(e, Error::UnknownPatient(_)) {
                        self.mark_index_changed(patient);
                    }
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Err(e) = self.private.flush().await {
            self.remark(sealed.into_iter().filter(|s| s.changed).map(|s| s.patient));
            return Err(e);
        }
        let uploads = futures::stream::iter(sealed.into_iter().map(|s| async move {
            let r = self.public.put(&s.name, s.bytes.into()).await;
            (s.patient, s.changed, s.seq, r)
        }))
        .buffer_unordered(INDEX_UPLOADS)
        .collect::<Vec<_>>()
        .await;
        let mut done = 0;
        let mut rewritten = 0;
        for (patient, changed, seq, r) in uploads {
            match r {
                Ok(_) => {
                    done += 1;
                    rewritten += usize::from(!changed);
                    tracing::debug!(patient = %patient, seq, changed, "published a patient index");
                }
                Err(e) => {
                    tracing::warn!(patient = %patient, error = %e, "publishing a patient index failed");
                    if changed {
                        self.mark_index_changed(patient);
                    }
                    first_err.get_or_insert(e.into());
                }
            }
        }
        tracing::debug!(
            published = done,
            unchanged = rewritten,
            "patient index publication tick"
        );
        match first_err {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    pub(super) fn remark(&self, patients: impl Iterator<Item = String>) {
        if let Ok(mut d) = self.index_dirty.lock() {
            d.extend(patients);
        }
    }

    /// After `medgate restore`: brings every patient's index sequence number up to the one
    /// published in the public store (indexes published after the backup was taken carry
    /// higher numbers than the backup knows), and marks those patients for publication, so
    /// the next index each patient sees continues past every number this institution ever
    /// published instead of looking rolled back. Clears the restore mark when done; returns
    /// how many patients' numbers moved.
    ///
    /// # Errors
    /// Store failures (the mark stays and the next call tries again). A file at a patient's
    /// index name that does not verify is ignored (logged): the cloud cannot move numbers.
    pub async fn resume_index_seqs(&self) -> Result<usize> {
        use keyring::patient_index::{index_name, PatientIndex};
        let mut moved = 0;
        for mut rec in self.private.list_patients().await? {
            let key: Recipient = rec
                .recipient
                .parse()
                .map_err(|_| Error::Corrupt(format!("key of patient {}", rec.id)))?;
            let name = object_store::path::Path::from(index_name(&self.institution, &key)?);
            let bytes = match self.public.get(&name).await {
                Ok(got) => got.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            match PatientIndex::published_seq(&bytes, &self.institution) {
                Ok(seq) if seq > rec.index_seq => {
                    tracing::info!(
                        patient = %rec.id,
                        from = rec.index_seq,
                        to = seq,
                        "restored store: index sequence number brought past the published one"
                    );
                    rec.index_seq = seq;
                    let id = rec.id.clone();
                    self.private.put_patient(rec, true).await?;
                    self.mark_index_changed(id);
                    moved += 1;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    patient = %rec.id,
                    error = %e,
                    "the published index does not verify; ignored"
                ),
            }
        }
        self.private.flush().await?;
        self.private.clear_restored().await?;
        Ok(moved)
    }

    /// Publishes `patient`'s index at once, as a tick of its own (see
    /// [`Engine::publish_indexes`]: together with at least 31 other patients' indexes).
    ///
    /// # Errors
    /// `UnknownPatient`; store failures.
    pub async fn publish_index(&self, patient: &str) -> Result<()> {
        if self.private.patient(patient).await?.is_none() {
            return Err(Error::UnknownPatient(patient.to_string()));
        }
        self.mark_index_changed(patient.to_string());
        self.publish_indexes().await.map(|_| ())
    }

    /// Seals and signs `patient`'s index (v2, padded to its size bucket) with the next
    /// sequence number, which it stores (the caller flushes before uploading); returns the
    /// index's `v1/p/` name, the number and the sealed bytes.
    ///
    /// # Errors
    /// `UnknownPatient`; store failures.
    pub(super) async fn seal_index(
        &self,
        patient: &str,
    ) -> Result<(object_store::path::Path, u64, Vec<u8>)> {
        use keyring::patient_index::{index_name, IndexRecord, PatientIndex};
        let mut rec = self
            .private
            .patient(patient)
            .await?
            .ok_or_else(|| Error::UnknownPatient(patient.to_string()))?;
        let key: Recipient = rec
            .recipient
            .parse()
            .map_err(|_| Error::Corrupt(format!("key of patient {patient}")))?;
        let mut records = Vec::new();
        for (bucket, object_key, m) in self.private.patient_objects(patient).await? {
            let stanza = self
                .private
                .stanzas(m.dek_id)
                .await?
                .into_iter()
                .find(|s| s.is_for(&key))
                .map(DekStanza::into_wrapped);
            // A record without the patient's stanza (e.g. shredded) is left out.
            if let Some(stanza) = stanza {
                records.push(IndexRecord {
                    bucket,
                    key: object_key,
                    manifest: m.encode(),
                    stanza,
                });
            }
        }
        rec.index_seq += 1;
        let seq = rec.index_seq;
        self.private.put_patient(rec, true).await?;
        let index = PatientIndex {
            institution: self.institution_recipient.clone(),
            patient_id: patient.to_string(),
            seq,
            created_ms: now_ms(),
            records,
        };
        let sealed = index.seal(&self.institution, &key)?;
        let name = index_name(&self.institution, &key)?;
        Ok((object_store::path::Path::from(name), seq, sealed))
    }
}
