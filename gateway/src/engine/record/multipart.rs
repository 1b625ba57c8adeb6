//! Multipart uploads: create, upload a part, complete (one manifest over the parts' blobs,
//! the object checksum from the parts'), abort.

use super::*;

impl Engine {
    /// Starts a multipart upload: draws its DEK and wraps it for the institution.
    ///
    /// # Errors
    /// `NoSuchBucket`; store failures.
    pub async fn create_upload(&self, req: PutRequest) -> Result<String> {
        if self.private.bucket(&req.bucket).await?.is_none() {
            return Err(Error::NoSuchBucket(req.bucket));
        }
        self.record_patient(&req.bucket, &req.key, &req.metadata)
            .await?;
        let algorithm = match req.checksums.algorithms.first() {
            Some(name) => Some(checksum::Algorithm::parse(name).ok_or_else(|| {
                Error::InvalidArgument(format!("unknown checksum algorithm {name}"))
            })?),
            None => None,
        };
        let kind = match (&req.checksum_type, algorithm) {
            (Some(t), Some(a)) => {
                let k = checksum::Kind::parse(t)
                    .ok_or_else(|| Error::InvalidArgument(format!("unknown checksum type {t}")))?;
                checksum::check_kind(a, k)?;
                Some(k)
            }
            (Some(_), None) => {
                return Err(Error::InvalidArgument(
                    "x-amz-checksum-type needs x-amz-checksum-algorithm".into(),
                ))
            }
            // S3's defaults: CRC64NVME combines as a full-object CRC, the rest composite.
            (None, Some(checksum::Algorithm::Crc64Nvme)) => Some(checksum::Kind::FullObject),
            (None, Some(_)) => Some(checksum::Kind::Composite),
            (None, None) => None,
        };
        let dek = DataKey::generate();
        let stanza = self.institution.wrap_own(&dek);
        crate::metrics::global().stanza_wraps.inc();
        let id = hex::encode(rand::random::<[u8; 16]>());
        let now = now_ms();
        self.private
            .create_upload(
                &id,
                UploadRecord {
                    bucket: req.bucket,
                    key: req.key,
                    created_ms: now,
                    touched_ms: now,
                    dek_id: DekId::random(),
                    stanza: stanza.to_bytes(),
                    content_type: req.content_type,
                    headers: req.headers,
                    metadata: req.metadata,
                    checksum_algorithm: algorithm.map(|a| a.name().to_string()),
                    checksum_type: kind.map(|k| k.name().to_string()),
                },
            )
            .await?;
        self.private.flush().await?;
        Ok(id)
    }

    /// The upload `id`, checked against the bucket and key the request names.
    ///
    /// # Errors
    /// `NoSuchUpload` when it does not exist or belongs to another key.
    pub async fn upload(&self, id: &str, bucket: &str, key: &str) -> Result<UploadRecord> {
        match self.private.upload(id).await? {
            Some(u) if u.bucket == bucket && u.key == key => Ok(u),
            _ => Err(Error::NoSuchUpload(id.to_string())),
        }
    }

    pub(super) fn upload_key(&self, upload: &UploadRecord) -> Result<DataKey> {
        let stanza = WrappedKey::from_bytes(&upload.stanza)?;
        match self.unwrap_own(&stanza) {
            Some(r) => Ok(r?),
            None => Err(Error::NoStanza(upload.dek_id.to_hex())),
        }
    }

    /// Uploads one part: its own blob, sealed under the upload's DEK with a fresh blob
    /// id (so a client's retry of the same part never reuses a key and nonce). Returns
    /// the part's ETag (quoted MD5) and its additional checksums (always including the
    /// upload's algorithm, if it has one).
    ///
    /// # Errors
    /// `NoSuchUpload`, `InvalidArgument` for a part number outside 1..=10000, digest and
    /// length mismatches, store failures.
    pub async fn upload_part<S, E>(
        &self,
        req: PartRequest,
        body: S,
    ) -> Result<(String, Vec<(String, String)>)>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let PartRequest {
            upload_id: id,
            bucket,
            key,
            number,
            content_length,
            content_md5,
            mut checksums,
        } = req;
        let id = id.as_str();
        if !(1..=10_000).contains(&number) {
            return Err(Error::InvalidArgument(
                "part numbers run from 1 to 10000".into(),
            ));
        }
        let upload = self.upload(id, &bucket, &key).await?;
        let dek = self.upload_key(&upload)?;
        if let Some(algo) = &upload.checksum_algorithm {
            if !checksums.algorithms.contains(algo) {
                checksums.algorithms.push(algo.clone());
            }
        }
        let (part, md5, computed) = self
            .write_checked(&dek, body, content_length, content_md5, &checksums)
            .await?;
        let blob = part.blob;
        let record = PartRecord {
            blob,
            chunk_size: part.chunk_size,
            plaintext_len: part.plaintext_len,
            root: part.root,
            md5: hex::encode(md5),
            created_ms: now_ms(),
            checksums: computed.clone(),
        };
        if let Err(e) = self.private.put_part(id, number, record).await {
            self.forget_blob(blob).await;
            return Err(e);
        }
        self.private.flush().await?;
        Ok((format!("\"{}\"", hex::encode(md5)), computed))
    }

    /// Completes an upload from the parts the client names, in one commit.
    ///
    /// # Errors
    /// `InvalidPartOrder`, `InvalidPart`, `EntityTooSmall` (all but the last part must
    /// be at least 5 MiB), `NoSuchUpload`, `PreconditionFailed`, store failures.
    pub async fn complete_upload(
        &self,
        id: &str,
        bucket: &str,
        key: &str,
        completion: Completion<'_>,
    ) -> Result<Manifest> {
        const MIN_PART: u64 = 5 << 20;
        let Completion {
            parts: chosen,
            object_checksums,
            precondition,
            actor,
        } = completion;
        let upload = self.upload(id, bucket, key).await?;
        if chosen.is_empty() {
            return Err(Error::InvalidArgument(
                "CompleteMultipartUpload needs at least one part".into(),
            ));
        }
        if chosen.windows(2).any(|w| w[0].number >= w[1].number) {
            return Err(Error::InvalidPartOrder);
        }
        let uploaded: std::collections::BTreeMap<u32, PartRecord> =
            self.private.parts(id).await?.into_iter().collect();
        let mut parts = Vec::with_capacity(chosen.len());
        let mut md5s = Vec::with_capacity(chosen.len() * 16);
        for (i, c) in chosen.iter().enumerate() {
            let number = &c.number;
            let rec = uploaded.get(number).ok_or(Error::InvalidPart(*number))?;
            if c.etag.trim_matches('"') != rec.md5 {
                return Err(Error::InvalidPart(*number));
            }
            // A part checksum the client kept must be the one the part was stored with.
            for (algo, value) in &c.checksums {
                let stored = rec.checksums.iter().find(|(a, _)| a == algo);
                if stored.is_none_or(|(_, v)| v != value) {
                    return Err(Error::InvalidPart(*number));
                }
            }
            if i + 1 < chosen.len() && rec.plaintext_len < MIN_PART {
                return Err(Error::EntityTooSmall {
                    number: *number,
                    size: rec.plaintext_len,
                });
            }
            md5s.extend(hex::decode(&rec.md5).map_err(|_| Error::Corrupt("part md5".into()))?);
            parts.push(Part {
                blob: rec.blob,
                chunk_size: rec.chunk_size,
                plaintext_len: rec.plaintext_len,
                root: rec.root,
            });
        }
        let etag = format!("\"{}-{}\"", hex::encode(Md5::digest(&md5s)), chosen.len());
        let checksums = object_checksum(&upload, chosen, &uploaded, object_checksums)?;
        let manifest = Manifest {
            suite: keyring::SUITE_V1,
            dek_id: upload.dek_id,
            size: parts.iter().map(|p| p.plaintext_len).sum(),
            last_modified_ms: now_ms(),
            etag,
            content_type: upload.content_type.clone(),
            headers: upload.headers.clone(),
            metadata: upload.metadata.clone(),
            checksums,
            patient: None,
            parts,
        };
        let patient = self.record_patient(bucket, key, &manifest.metadata).await?;
        let mut stanzas = vec![self.named_stanza(
            &self.institution_recipient,
            WrappedKey::from_bytes(&upload.stanza)?,
        )?];
        if patient.is_some() {
            let dek = self.upload_key(&upload)?;
            stanzas.extend(self.record_stanzas(&patient, bucket, key, &dek).await?);
            // The first stanza was wrapped (and counted) when the upload was created.
            crate::metrics::global()
                .stanza_wraps
                .inc_by(stanzas.len() as u64 - 1);
        }
        let manifest = Manifest {
            patient: patient.map(|(id, _)| id),
            ..manifest
        };
        manifest.validate()?;
        // A backup holds off until every write and log entry below is made; the answer
        // waits until they are durable.
        self.durable(async {
            let (old, _) = self
                .private
                .commit_put_logged(
                    PutCommit {
                        bucket: upload.bucket,
                        key: upload.key,
                        manifest: manifest.clone(),
                        stanzas,
                        precondition,
                        upload: Some(id.to_string()),
                    },
                    crate::engine::log::write_entry(
                        crate::store::private::EventKind::Put,
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

    /// Aborts an upload and deletes its part blobs (no manifest ever referenced them).
    ///
    /// # Errors
    /// `NoSuchUpload`; store failures.
    pub async fn abort_upload(&self, id: &str, bucket: &str, key: &str) -> Result<()> {
        self.upload(id, bucket, key).await?;
        crate::engine::gc::abort_upload(&self.public, &*self.private, id).await
    }
}
