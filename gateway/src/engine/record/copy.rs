//! CopyObject and UploadPartCopy: a new manifest over the same blobs and data key.

use super::*;

impl Engine {
    /// Copies an object in O(1): the new manifest references the same blobs and the
    /// same DEK (reference-counted in the private store, so deleting either copy keeps
    /// the other readable, and rotation or shredding of the DEK reaches both).
    /// `replace` carries new content type, headers and metadata (`REPLACE`); `None` keeps
    /// the source's (`COPY`).
    ///
    /// # Errors
    /// `NoSuchBucket`, `NoSuchKey` for the source; `Reaped` if the source was deleted and
    /// collected meanwhile; store failures.
    pub async fn copy(
        &self,
        source: &Manifest,
        bucket: &str,
        key: &str,
        replace: Option<PutRequest>,
        actor: &str,
    ) -> Result<Manifest> {
        let mut manifest = source.clone();
        manifest.last_modified_ms = now_ms();
        if let Some(r) = replace {
            // A copy shares its source's DEK and stanzas, so it stays the source
            // patient's record: REPLACE may not move it to another patient.
            let named = r
                .metadata
                .iter()
                .find(|(k, _)| k == crate::engine::sharing::PATIENT_META)
                .map(|(_, v)| v.as_str());
            if named.is_some() && named != source.patient.as_deref() {
                return Err(Error::InvalidArgument(
                    "a copy belongs to its source's patient; upload the record again to assign it to another"
                        .into(),
                ));
            }
            manifest.content_type = r.content_type;
            manifest.headers = r.headers;
            manifest.metadata = r.metadata;
        }
        // Nor may its destination: a prefix mapped to another patient refuses it.
        let dest = self
            .record_patient(bucket, key, &[])
            .await?
            .map(|(id, _)| id);
        if dest.is_some() && dest != source.patient {
            return Err(Error::InvalidArgument(format!(
                "{bucket}/{key} is under the prefix of another patient than the source's; upload the record again instead"
            )));
        }
        if let Some(p) = &source.patient {
            manifest
                .metadata
                .retain(|(k, _)| k != crate::engine::sharing::PATIENT_META);
            manifest
                .metadata
                .push((crate::engine::sharing::PATIENT_META.to_string(), p.clone()));
            manifest.metadata.sort();
        }
        // A backup holds off until every write and log entry below is made; the answer
        // waits until they are durable.
        self.durable(async {
            let (old, _) = self
                .private
                .commit_put_logged(
                    PutCommit {
                        bucket: bucket.to_string(),
                        key: key.to_string(),
                        manifest: manifest.clone(),
                        stanzas: Vec::new(),
                        precondition: Precondition::None,
                        upload: None,
                    },
                    crate::engine::log::write_entry(
                        crate::store::private::EventKind::Copy,
                        actor,
                        bucket,
                        key,
                        Some(&manifest),
                    ),
                )
                .await?;
            self.patient_changed(old.as_ref());
            self.patient_changed(Some(&manifest));
            Ok(manifest)
        })
        .await
    }

    /// UploadPartCopy follows CopyObject's rule: data copied from a record stays its
    /// patient's, so a part copied from `source` may only go into an upload whose record
    /// belongs to the same patient (or, for a source of no patient, to none).
    ///
    /// # Errors
    /// `NoSuchUpload`; `InvalidArgument` naming the rule.
    pub async fn check_part_copy(
        &self,
        source: &Manifest,
        upload_id: &str,
        bucket: &str,
        key: &str,
    ) -> Result<()> {
        let upload = self.upload(upload_id, bucket, key).await?;
        let dest = self.labelled_patient(bucket, key, &upload.metadata)?;
        if dest != source.patient {
            return Err(Error::InvalidArgument(
                "a copy belongs to its source's patient: UploadPartCopy may only copy into an upload of the same patient's record (or, from a record of no patient, of none); upload the data again instead"
                    .into(),
            ));
        }
        Ok(())
    }
}
