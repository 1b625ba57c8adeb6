//! Records: sealing a body into a blob on the way in, opening byte ranges on the way out.
//!
//! The write path follows DESIGN.md's commit order: a pending row, then the body streamed
//! through fixed-size plaintext chunks, each sealed (STREAM) and hashed into a Merkle leaf
//! while the sealed bytes stream to one public blob; only when the body ended whole and
//! its digest matched does one private-store transaction publish the manifest, and only
//! after a flush is the write acknowledged. Memory is bounded by the chunk size and the
//! public store's part size, never by the object size.
//!
//! The read path fetches only the sealed chunks a range needs, checks each against its
//! leaf before opening it, and checks the first chunk before any header is sent.

use std::sync::Arc;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use keyring::{
    leaf_hash, BlobId, DataKey, DekId, Hash, Identity, Layout, Manifest, Part, PayloadKey,
    Recipient, RootBuilder, WrappedKey,
};
use md5::{Digest, Md5};
use object_store::{PutPayload, WriteMultipart};
use subtle::ConstantTimeEq;

use crate::engine::checksum::{self, Hasher};
use crate::store::private::{
    DekStanza, PartRecord, Precondition, PrivateStore, PutCommit, UploadRecord,
};
use crate::store::public::{blob_path, PublicStore};
use crate::{now_ms, Error, Result};

/// Leaves are written to the private store in batches of this many while a blob uploads.
const LEAF_BATCH: usize = 256;
/// Sealed chunks fetched and opened at once on reads (each is one ranged request).
const READ_CONCURRENCY: usize = 4;
/// Plaintext chunks decrypted ahead of the client on reads.
const READ_AHEAD: usize = 1;
/// Chunks being fetched and opened at once across all reads: with many concurrent
/// GETs (the aws CLI runs 10), this, not the request count, bounds read memory
/// (about 2 MiB a chunk: sealed and plain).
const READ_BUDGET: usize = 12;

/// Writes that may seal at once, across all requests. One write holds up to about 8 MiB
/// (chunks queued for sealing and MD5, the public part being filled, the part in flight),
/// so this bounds the write side near 32 MiB however many parts clients send in
/// parallel. A write waiting for a slot has read nothing of its body: the bytes wait in
/// the socket, not in our memory. With 2 cores busy sealing, more slots would not add
/// throughput.
const WRITE_SLOTS: usize = 4;
/// Chunks being sealed on the blocking pool while the request task reads and hashes
/// the next ones (MD5 of the plaintext runs on the request task, sealing and leaf
/// hashing beside it: two cores busy on one upload).
const SEAL_AHEAD: usize = 3;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Plaintext bytes per sealed chunk.
    pub chunk_size: u32,
    /// Bytes per public-store multipart part; blobs smaller than this go in one PUT.
    /// Each concurrent write holds up to about this much sealed data, so it bounds
    /// memory: 5 MiB (S3's minimum part) for cloud stores, less for a folder.
    pub part_size: usize,
    /// Public-store part uploads in flight per blob.
    pub upload_concurrency: usize,
    /// Records written under these prefixes belong to the named patient.
    pub patient_prefixes: Vec<PatientPrefix>,
    /// Patient indexes each publication tick rewrites at least: the changed ones and randomly
    /// chosen unchanged ones, so the public store cannot tell which patient wrote (all of
    /// them when fewer patients have an index). At least
    /// [`crate::engine::sharing::MIN_INDEX_COVER`]; see [`crate::engine::sharing::Engine::publish_indexes`].
    pub index_cover: usize,
}

/// A bucket prefix whose records belong to one patient (config `[[patient_prefixes]]`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientPrefix {
    pub bucket: String,
    pub prefix: String,
    pub patient: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            chunk_size: keyring::DEFAULT_CHUNK_SIZE,
            part_size: 5 << 20,
            upload_concurrency: 2,
            patient_prefixes: Vec::new(),
            index_cover: crate::engine::sharing::MIN_INDEX_COVER,
        }
    }
}

/// What a PUT carries besides its body.
#[derive(Clone, Debug, Default)]
pub struct PutRequest {
    pub bucket: String,
    pub key: String,
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
    pub metadata: Vec<(String, String)>,
    /// Content-MD5 as sent, decoded.
    pub content_md5: Option<[u8; 16]>,
    /// Announced plaintext length, checked when the body ends.
    pub content_length: Option<u64>,
    pub precondition: Precondition,
    /// Additional checksums (CRC32, CRC32C, SHA1, SHA256, CRC64NVME) to compute on the
    /// plaintext and check.
    pub checksums: ChecksumCheck,
    /// For CreateMultipartUpload: how part checksums combine (`COMPOSITE`, `FULL_OBJECT`).
    pub checksum_type: Option<String>,
}

/// A part named by CompleteMultipartUpload: number, ETag, and the part checksums the
/// client kept from UploadPart (checked against the stored ones).
#[derive(Clone, Debug, Default)]
pub struct ChosenPart {
    pub number: u32,
    pub etag: String,
    pub checksums: Vec<(String, String)>,
}

/// S3 "additional checksums": which to compute over the plaintext, and the values the
/// client announced, in headers or in aws-chunked trailers that arrive after the body.
#[derive(Clone, Debug, Default)]
pub struct ChecksumCheck {
    /// Upper-case algorithm names: CRC32, CRC32C, SHA1, SHA256, CRC64NVME.
    pub algorithms: Vec<String>,
    /// (algorithm, base64 value) known before the body.
    pub expected: Vec<(String, String)>,
    /// Trailers of a streaming body, read once it ended.
    pub trailers: Option<Arc<dyn Trailers>>,
}

/// Checksum values a client sends after the body (aws-chunked trailers): the front that
/// parsed the request implements it over its wire's trailer type.
pub trait Trailers: Send + Sync + std::fmt::Debug {
    /// The (upper-case algorithm, base64 value) pairs the trailers carried, once the body
    /// ended; none before.
    fn checksums(&self) -> Vec<(String, String)>;
}

impl ChecksumCheck {
    fn hasher(&self) -> Option<Hasher> {
        crate::engine::checksum::hasher(&self.algorithms)
    }

    /// Every expected value, the trailers' included.
    fn all_expected(&self) -> Vec<(String, String)> {
        let mut out = self.expected.clone();
        if let Some(t) = &self.trailers {
            out.extend(t.checksums());
        }
        out
    }
}

/// What an UploadPart carries besides its body.
#[derive(Clone, Debug, Default)]
pub struct PartRequest {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub number: u32,
    pub content_length: Option<u64>,
    pub content_md5: Option<[u8; 16]>,
    pub checksums: ChecksumCheck,
}

/// The record engine shared by every request.
pub struct Engine {
    pub public: PublicStore,
    pub private: Arc<dyn PrivateStore>,
    pub(crate) institution: Arc<Identity>,
    pub(crate) institution_recipient: Recipient,
    config: EngineConfig,
    /// Shared by every read; see [`READ_BUDGET`].
    read_budget: Arc<tokio::sync::Semaphore>,
    /// Shared by every write; see [`WRITE_SLOTS`].
    write_slots: Arc<tokio::sync::Semaphore>,
    /// Patients whose published index is behind (see `sharing::Engine::publish_indexes`).
    pub(crate) index_dirty: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Held for a whole publication tick, so two ticks (the timer's and a key change's) never
    /// draw the same patient's next sequence number at once.
    pub(crate) index_tick: tokio::sync::Mutex<()>,
    /// Buckets mounted from peers (set once at start by the server; see [`crate::engine::remote`]).
    pub remote: std::sync::OnceLock<Arc<crate::engine::remote::Remote>>,
    /// Group commit of the log entries that are not writes (see `log`).
    pub(crate) appender: crate::engine::log::Appender,
    /// The institution's previous identities, after `medgate keys rotate`: records not yet
    /// re-wrapped to the current key still open with them (set once at start; see
    /// [`crate::engine::keyrot`]).
    pub previous: std::sync::OnceLock<Vec<Arc<Identity>>>,
}

impl Engine {
    pub fn new(
        public: PublicStore,
        private: Arc<dyn PrivateStore>,
        institution: Arc<Identity>,
        config: EngineConfig,
    ) -> Self {
        let institution_recipient = institution.recipient();
        Engine {
            public,
            appender: crate::engine::log::Appender::new(Arc::clone(&private)),
            private,
            institution,
            institution_recipient,
            config,
            read_budget: Arc::new(tokio::sync::Semaphore::new(READ_BUDGET)),
            write_slots: Arc::new(tokio::sync::Semaphore::new(WRITE_SLOTS)),
            index_dirty: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            index_tick: tokio::sync::Mutex::new(()),
            remote: std::sync::OnceLock::new(),
            previous: std::sync::OnceLock::new(),
        }
    }

    /// The peer link and mount of `bucket`, if it is mounted from a peer.
    pub fn mount(
        &self,
        bucket: &str,
    ) -> Option<(
        Arc<crate::engine::remote::Remote>,
        crate::store::private::MountRecord,
    )> {
        let remote = self.remote.get()?;
        remote.mount(bucket).map(|m| (Arc::clone(remote), m))
    }

    /// Removes an object and logs it in the same transaction. The caller flushes (a batch
    /// delete flushes once).
    ///
    /// # Errors
    /// Store failures.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<Option<Manifest>> {
        // A backup holds off until the manifest and its log entry are both written.
        let _hold = self.private.hold_writes().await;
        let entry = crate::engine::log::write_entry("delete", bucket, key, None);
        let (removed, _) = self
            .private
            .delete_object_logged(bucket, key, entry)
            .await?;
        self.patient_changed(removed.as_ref());
        Ok(removed)
    }

    /// Publishes the transparency log's new tiles and checkpoint, if it grew.
    ///
    /// # Errors
    /// Store failures.
    pub async fn publish_log(&self) -> Result<Option<u64>> {
        crate::engine::log::publish(&*self.private, &self.public, &self.institution).await
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The institution's identity, for sealing access-key secrets.
    pub fn institution(&self) -> &Identity {
        &self.institution
    }

    /// Writes one object from a body stream.
    ///
    /// # Errors
    /// `NoSuchBucket` before reading the body; `BadDigest` or `IncompleteBody` when the
    /// body does not match what was announced (nothing is committed); public or private
    /// store failures. On any error the old version of the key, if any, is untouched.
    pub async fn put<S, E>(&self, req: PutRequest, body: S) -> Result<Manifest>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if self.private.bucket(&req.bucket).await?.is_none() {
            return Err(Error::NoSuchBucket(req.bucket));
        }
        let patient = self
            .record_patient(&req.bucket, &req.key, &req.metadata)
            .await?;
        let dek = DataKey::generate();
        let (part, md5, checksums) = self
            .write_checked(
                &dek,
                body,
                req.content_length,
                req.content_md5,
                &req.checksums,
            )
            .await?;
        let blob = part.blob;
        let mut stanzas = vec![self.own_stanza(&dek)?];
        stanzas.extend(
            self.record_stanzas(&patient, &req.bucket, &req.key, &dek)
                .await?,
        );
        crate::metrics::global()
            .stanza_wraps
            .inc_by(stanzas.len() as u64);
        let manifest = Manifest {
            suite: keyring::SUITE_V1,
            dek_id: DekId::random(),
            size: part.plaintext_len,
            last_modified_ms: now_ms(),
            etag: format!("\"{}\"", hex::encode(md5)),
            content_type: req.content_type,
            headers: req.headers,
            metadata: req.metadata,
            checksums,
            patient: patient.map(|(id, _)| id),
            parts: vec![part],
        };
        manifest.validate()?;
        let (req_bucket, req_key) = (req.bucket.clone(), req.key.clone());
        let commit = PutCommit {
            bucket: req.bucket,
            key: req.key,
            manifest: manifest.clone(),
            stanzas,
            precondition: req.precondition,
            upload: None,
        };
        // A backup holds off until the manifest and its log entry are both written.
        let _hold = self.private.hold_writes().await;
        let entry = crate::engine::log::write_entry("put", &req_bucket, &req_key, Some(&manifest));
        match self.private.commit_put_logged(commit, entry).await {
            Ok((old, _)) => self.patient_changed(old.as_ref()),
            Err(e) => {
                self.forget_blob(blob).await;
                return Err(e);
            }
        }
        self.private.flush().await?;
        self.patient_changed(Some(&manifest));
        Ok(manifest)
    }

    /// Seals `body` into a new pending blob and checks it against the announced length
    /// and Content-MD5. On any failure the blob is orphaned for gc.
    pub(crate) async fn write_checked<S, E>(
        &self,
        dek: &DataKey,
        body: S,
        content_length: Option<u64>,
        content_md5: Option<[u8; 16]>,
        check: &ChecksumCheck,
    ) -> Result<(Part, [u8; 16], Vec<(String, String)>)>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let blob = BlobId::random();
        self.private.add_pending(blob, now_ms()).await?;
        let (part, md5, computed) = match self.write_blob(dek, blob, body, check.hasher()).await {
            Ok(v) => v,
            Err(e) => {
                self.forget_blob(blob).await;
                return Err(e);
            }
        };
        if let Some(expected) = content_length {
            if expected != part.plaintext_len {
                self.forget_blob(blob).await;
                return Err(Error::IncompleteBody {
                    expected,
                    got: part.plaintext_len,
                });
            }
        }
        if let Some(want) = content_md5 {
            if !bool::from(want.ct_eq(&md5)) {
                self.forget_blob(blob).await;
                return Err(Error::BadDigest);
            }
        }
        for (algo, want) in check.all_expected() {
            let got = computed.iter().find(|(a, _)| *a == algo).map(|(_, v)| v);
            match got {
                Some(v) if bool::from(v.as_bytes().ct_eq(want.as_bytes())) => {}
                Some(_) => {
                    self.forget_blob(blob).await;
                    return Err(Error::ChecksumMismatch(algo));
                }
                None => {
                    self.forget_blob(blob).await;
                    return Err(Error::InvalidArgument(format!(
                        "checksum {algo} was sent but not announced"
                    )));
                }
            }
        }
        Ok((part, md5, computed))
    }

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

    fn upload_key(&self, upload: &UploadRecord) -> Result<DataKey> {
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
        chosen: &[ChosenPart],
        object_checksums: &[(String, String)],
        precondition: Precondition,
    ) -> Result<Manifest> {
        const MIN_PART: u64 = 5 << 20;
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
        // A backup holds off until the manifest and its log entry are both written.
        let _hold = self.private.hold_writes().await;
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
                crate::engine::log::write_entry("put", bucket, key, Some(&manifest)),
            )
            .await?;
        self.private.flush().await?;
        self.patient_changed(old.as_ref());
        self.patient_changed(Some(&manifest));
        Ok(manifest)
    }

    /// Aborts an upload and deletes its part blobs (no manifest ever referenced them).
    ///
    /// # Errors
    /// `NoSuchUpload`; store failures.
    pub async fn abort_upload(&self, id: &str, bucket: &str, key: &str) -> Result<()> {
        self.upload(id, bucket, key).await?;
        crate::engine::gc::abort_upload(&self.public, &*self.private, id).await
    }

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
        // A backup holds off until the manifest and its log entry are both written.
        let _hold = self.private.hold_writes().await;
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
                crate::engine::log::write_entry("copy", bucket, key, Some(&manifest)),
            )
            .await?;
        self.private.flush().await?;
        self.patient_changed(old.as_ref());
        self.patient_changed(Some(&manifest));
        Ok(manifest)
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

    /// Best effort after a failed write: the blob is orphaned for gc.
    pub(crate) async fn forget_blob(&self, blob: BlobId) {
        if let Err(e) = self.private.drop_pending(blob).await {
            tracing::warn!(error = %e, blob = %blob.to_hex(), "could not drop pending row");
        }
    }

    /// Streams `body` into a new blob. Returns the blob's part entry and the MD5 of the
    /// plaintext.
    async fn write_blob<S, E>(
        &self,
        dek: &DataKey,
        blob: BlobId,
        mut body: S,
        hasher: Option<Hasher>,
    ) -> Result<(Part, [u8; 16], Vec<(String, String)>)>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let _slot = self
            .write_slots
            .acquire()
            .await
            .map_err(|_| Error::Internal("write slots closed".into()))?;
        let mut w = BlobWriter::new(self, dek, blob, hasher);
        let result = async {
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(|e| Error::Body(e.into()))?;
                w.write(&piece).await?;
            }
            w.finish().await
        }
        .await;
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                w.abort();
                Err(e)
            }
        }
    }

    /// The manifest of an object.
    ///
    /// # Errors
    /// `NoSuchBucket` or `NoSuchKey`.
    pub async fn manifest(&self, bucket: &str, key: &str) -> Result<Manifest> {
        match self.private.manifest(bucket, key).await? {
            Some(m) => Ok(m),
            None => {
                if self.private.bucket(bucket).await?.is_none() {
                    Err(Error::NoSuchBucket(bucket.to_string()))
                } else {
                    Err(Error::NoSuchKey {
                        bucket: bucket.to_string(),
                        key: key.to_string(),
                    })
                }
            }
        }
    }

    fn data_key(&self, manifest: &Manifest, stanzas: &[DekStanza]) -> Result<DataKey> {
        self.institution_key(manifest.dek_id, stanzas)
    }

    /// The DEK opened with the institution's stanza: one stored with the institution's
    /// whole Recipient; failing that, one of unknown recipient (a version 1 stanza the
    /// upgrade could not match) that the institution's identity opens (authenticated trial
    /// decryption: a stanza of another key with the same tag fails and is skipped).
    pub(crate) fn institution_key(&self, dek: DekId, stanzas: &[DekStanza]) -> Result<DataKey> {
        let me = &self.institution_recipient;
        if let Some(s) = stanzas.iter().find(|s| s.is_for(me)) {
            return match self.institution.unwrap_key(s.wrapped()) {
                Some(r) => Ok(r?),
                None => Err(Error::NoStanza(dek.to_hex())),
            };
        }
        // After `medgate keys rotate`, until the re-wrap reaches it: the stanza of a previous
        // institution key, stored with that key's whole Recipient.
        if let Some(previous) = self.previous.get() {
            for p in previous {
                let theirs = p.recipient();
                if let Some(s) = stanzas.iter().find(|s| s.is_for(&theirs)) {
                    if let Some(Ok(k)) = p.unwrap_key(s.wrapped()) {
                        return Ok(k);
                    }
                }
            }
        }
        for s in stanzas.iter().filter(|s| s.recipient().is_none()) {
            if let Some(Ok(k)) = self.unwrap_own(s.wrapped()) {
                return Ok(k);
            }
        }
        Err(Error::NoStanza(dek.to_hex()))
    }

    /// The institution's own stanza of a new DEK, stored with its Recipient.
    pub(crate) fn own_stanza(&self, dek: &DataKey) -> Result<DekStanza> {
        self.named_stanza(&self.institution_recipient, self.institution.wrap_own(dek))
    }

    /// `wrapped`, stored beside the Recipient it was wrapped to.
    pub(crate) fn named_stanza(
        &self,
        recipient: &Recipient,
        wrapped: WrappedKey,
    ) -> Result<DekStanza> {
        DekStanza::new(recipient.clone(), wrapped)
            .map_err(|_| Error::Internal("a stanza was wrapped to another key".into()))
    }

    /// Opens plaintext bytes `start..end` of an object as a stream.
    ///
    /// The first needed chunk is fetched and verified before this returns, so most
    /// tampering surfaces as an error here; a bad later chunk ends the stream with an
    /// error (the connection is cut short of its Content-Length), never wrong bytes.
    /// Up to [`READ_CONCURRENCY`] chunks are fetched and opened at once, in order.
    ///
    /// # Errors
    /// Integrity failures of the first chunk, missing stanzas, store failures.
    pub async fn open(
        self: &Arc<Self>,
        manifest: &Manifest,
        start: u64,
        end: u64,
    ) -> Result<
        impl Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + Sync + Unpin + 'static,
    > {
        let stanzas = self.private.stanzas(manifest.dek_id).await?;
        let dek = self.data_key(manifest, &stanzas)?;
        let mut windows = Vec::new();
        let mut part_start = 0u64;
        for part in &manifest.parts {
            let part_end = part_start + part.plaintext_len;
            if part_end > start && part_start < end {
                let from = start.max(part_start) - part_start;
                let to = end.min(part_end) - part_start;
                // Invariant for Window: from < to. An empty part inside the range
                // contributes no bytes and is skipped.
                if from < to {
                    windows.push(Window {
                        blob: part.blob,
                        layout: Layout::new(part.plaintext_len, part.chunk_size)?,
                        key: Arc::new(PayloadKey::derive(&dek, &part.blob)),
                        from,
                        to,
                    });
                }
            }
            part_start = part_end;
        }
        drop(dek);
        // One line per read says what it costs in the public store; tests assert on it
        // (a 1 MiB range fetches at most 2 chunks of each part it touches).
        let per_part: Vec<u64> = windows.iter().map(Window::chunk_count).collect();
        crate::metrics::global()
            .read_chunks
            .observe(per_part.iter().sum::<u64>() as f64);
        tracing::debug!(
            start,
            end,
            parts = per_part.len(),
            chunks = per_part.iter().sum::<u64>(),
            max_chunks_per_part = per_part.iter().copied().max().unwrap_or(0),
            "read plan"
        );
        let engine = Arc::clone(self);
        let jobs = windows.into_iter().flat_map(Window::chunks);
        let mut chunks = futures::stream::iter(jobs)
            .map(move |job| {
                let engine = Arc::clone(&engine);
                async move { job.read(&engine).await }
            })
            .buffered(READ_CONCURRENCY);
        // Verify the first chunk now so that tampering becomes a clean S3 error.
        let first = match chunks.next().await {
            Some(r) => Some(r?),
            None => None,
        };
        let (mut tx, rx) = mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(READ_AHEAD);
        tokio::spawn(async move {
            if let Some(first) = first {
                if tx.send(Ok(first)).await.is_err() {
                    return;
                }
            }
            while let Some(next) = chunks.next().await {
                match next {
                    Ok(bytes) => {
                        if tx.send(Ok(bytes)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "aborting a GET body: a later chunk failed");
                        let _ = tx
                            .send(Err(std::io::Error::other(
                                "a later chunk could not be read or failed its check",
                            )))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// The plaintext bytes `from..to` of one part; never empty (`from < to`).
struct Window {
    blob: BlobId,
    layout: Layout,
    key: Arc<PayloadKey>,
    from: u64,
    to: u64,
}

impl Window {
    fn chunk_count(&self) -> u64 {
        let range = self.layout.chunks_for_range(self.from, self.to - 1);
        range.end() - range.start() + 1
    }

    /// One job per chunk the window touches, generated lazily (an object may have
    /// millions of chunks).
    fn chunks(self) -> impl Iterator<Item = ChunkJob> {
        let range = self.layout.chunks_for_range(self.from, self.to - 1);
        range.map(move |index| {
            let chunk_start = self.layout.plain_offset(index);
            ChunkJob {
                blob: self.blob,
                layout: self.layout,
                key: Arc::clone(&self.key),
                index,
                lo: self.from.saturating_sub(chunk_start),
                hi: self.to - chunk_start,
            }
        })
    }
}

/// One sealed chunk to fetch, check against its leaf, open and trim to `lo..hi`.
struct ChunkJob {
    blob: BlobId,
    layout: Layout,
    key: Arc<PayloadKey>,
    index: u64,
    lo: u64,
    hi: u64,
}

impl ChunkJob {
    async fn read(self, engine: &Engine) -> Result<Bytes> {
        let ChunkJob {
            blob,
            layout,
            key,
            index,
            lo,
            hi,
        } = self;
        // Invariant: the semaphore is never closed, so acquiring only waits.
        let _permit = engine
            .read_budget
            .acquire()
            .await
            .map_err(|_| Error::Internal("read budget closed".into()))?;
        let sealed_start = layout.sealed_offset(index);
        let sealed_end = sealed_start + layout.sealed_len(index);
        let leaves = engine.private.leaves(blob, index, index).await?;
        let expected = *leaves
            .first()
            .ok_or_else(|| Error::integrity(&blob, index))?;
        let path = blob_path(&blob);
        let sealed = match engine
            .public
            .get_range(&path, sealed_start..sealed_end)
            .await
        {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::integrity(&blob, index))
            }
            // An outage, not an answer: asking again would only double the wait.
            Err(e) if crate::store::public::unreachable(&e) => return Err(Error::Public(e)),
            Err(e) => {
                // Stores report a range past the end differently; a blob shorter than
                // its layout says is tampering, not an outage the client should retry.
                return match engine.public.head(&path).await {
                    Ok(meta) if meta.size < sealed_end => Err(Error::integrity(&blob, index)),
                    Err(object_store::Error::NotFound { .. }) => {
                        Err(Error::integrity(&blob, index))
                    }
                    _ => Err(Error::Public(e)),
                };
            }
        };
        crate::metrics::global().chunks_fetched.inc();
        if sealed.len() as u64 != sealed_end - sealed_start {
            return Err(Error::integrity(&blob, index));
        }
        let last = layout.is_last(index);
        open_chunk(key, blob, index, last, sealed, Some(expected), lo, hi).await
    }
}

/// Opens sealed chunk `index` of `blob` on a blocking thread (after checking its leaf hash
/// when `leaf` is given) and returns its plaintext bytes `lo..hi`. Any mismatch is an
/// integrity error naming the blob and chunk.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn open_chunk(
    key: Arc<PayloadKey>,
    blob: BlobId,
    index: u64,
    last: bool,
    sealed: Bytes,
    leaf: Option<Hash>,
    lo: u64,
    hi: u64,
) -> Result<Bytes> {
    tokio::task::spawn_blocking(move || -> Result<Bytes> {
        if let Some(expected) = leaf {
            let got: Hash = leaf_hash(&sealed);
            if !bool::from(got.ct_eq(&expected)) {
                return Err(Error::integrity(&blob, index));
            }
        }
        let mut buf = sealed.to_vec();
        key.open_in_place(index, last, &mut buf)
            .map_err(|_| Error::integrity(&blob, index))?;
        crate::metrics::global().chunks_opened.inc();
        let hi = hi.min(buf.len() as u64) as usize;
        let lo = (lo as usize).min(hi);
        Ok(Bytes::from(buf).slice(lo..hi))
    })
    .await
    .map_err(|e| Error::Internal(format!("opening task failed: {e}")))?
}

/// MD5 of a blob's plaintext (its S3 ETag), computed on a thread of its own: MD5 is
/// inherently sequential and the slowest hash on the write path, so the request task
/// only hands it chunks and goes on reading the body while sealing runs beside both.
/// The S3 additional checksums the client asked for run on the same lane.
struct Md5Lane {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    done: Option<tokio::task::JoinHandle<LaneDigests>>,
}

type LaneDigests = ([u8; 16], Vec<(String, String)>);

/// Plaintext chunks queued for the MD5 lane (bounds memory at this many chunks).
const MD5_AHEAD: usize = 2;

impl Md5Lane {
    fn start(mut extra: Option<Hasher>) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(MD5_AHEAD);
        let done = tokio::task::spawn_blocking(move || {
            let mut h = Md5::new();
            while let Some(b) = rx.blocking_recv() {
                h.update(&b);
                if let Some(x) = &mut extra {
                    x.update(&b);
                }
            }
            let extra = extra.map(checksum::finish);
            (h.finalize().into(), extra.unwrap_or_default())
        });
        Md5Lane {
            tx: Some(tx),
            done: Some(done),
        }
    }

    /// A lane that hashes nothing, left behind by [`Md5Lane::finish`].
    fn idle() -> Self {
        Md5Lane {
            tx: None,
            done: None,
        }
    }

    async fn push(&mut self, chunk: Bytes) -> Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Internal("MD5 lane used after finish".into()))?;
        tx.send(chunk)
            .await
            .map_err(|_| Error::Internal("MD5 lane stopped".into()))
    }

    async fn finish(mut self) -> Result<LaneDigests> {
        drop(self.tx.take());
        let done = self
            .done
            .take()
            .ok_or_else(|| Error::Internal("MD5 lane finished twice".into()))?;
        done.await
            .map_err(|e| Error::Internal(format!("MD5 task failed: {e}")))
    }
}

/// Where sealed bytes go: held in memory until they exceed one part, then a multipart
/// upload with bounded parts in flight.
enum Sink {
    Buffer(Vec<Bytes>, usize),
    Multipart(WriteMultipart),
}

type Sealing = tokio::task::JoinHandle<keyring::Result<(Vec<u8>, Hash)>>;

/// Seals one blob chunk by chunk.
struct BlobWriter<'a> {
    engine: &'a Engine,
    blob: BlobId,
    key: Arc<PayloadKey>,
    sealing: std::collections::VecDeque<Sealing>,
    chunk_size: usize,
    index: u64,
    plain: Vec<u8>,
    md5: Md5Lane,
    total: u64,
    root: RootBuilder,
    leaves: Vec<Hash>,
    leaves_first: u64,
    sink: Option<Sink>,
}

impl<'a> BlobWriter<'a> {
    fn new(engine: &'a Engine, dek: &DataKey, blob: BlobId, hasher: Option<Hasher>) -> Self {
        let chunk_size = engine.config.chunk_size as usize;
        BlobWriter {
            engine,
            blob,
            key: Arc::new(PayloadKey::derive(dek, &blob)),
            sealing: std::collections::VecDeque::new(),
            chunk_size,
            index: 0,
            plain: Vec::with_capacity(chunk_size + keyring::TAG_LEN),
            md5: Md5Lane::start(hasher),
            total: 0,
            root: RootBuilder::new(),
            leaves: Vec::new(),
            leaves_first: 0,
            sink: Some(Sink::Buffer(Vec::new(), 0)),
        }
    }

    async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        self.total += data.len() as u64;
        while !data.is_empty() {
            // A full chunk is sealed only once a byte beyond it arrives: until then it
            // might be the last one, which is sealed with the last-chunk flag.
            if self.plain.len() == self.chunk_size {
                let next = Vec::with_capacity(self.chunk_size + keyring::TAG_LEN);
                let chunk = std::mem::replace(&mut self.plain, next);
                self.seal(chunk, false).await?;
            }
            let take = (self.chunk_size - self.plain.len()).min(data.len());
            self.plain.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Hands a plaintext chunk to the MD5 lane and queues it for sealing; takes in
    /// finished chunks in order.
    async fn seal(&mut self, chunk: Vec<u8>, last: bool) -> Result<()> {
        let chunk = Bytes::from(chunk);
        self.md5.push(chunk.clone()).await?;
        let key = Arc::clone(&self.key);
        let index = self.index;
        self.index += 1;
        self.sealing.push_back(tokio::task::spawn_blocking(move || {
            let sealed = key.seal(index, last, &chunk)?;
            let leaf = leaf_hash(&sealed);
            Ok((sealed, leaf))
        }));
        while self.sealing.len() > SEAL_AHEAD {
            self.take_sealed().await?;
        }
        Ok(())
    }

    async fn take_sealed(&mut self) -> Result<()> {
        let Some(job) = self.sealing.pop_front() else {
            return Ok(());
        };
        let (chunk, leaf) = job
            .await
            .map_err(|e| Error::Internal(format!("sealing task failed: {e}")))??;
        crate::metrics::global().chunks_sealed.inc();
        self.root.push(leaf);
        self.leaves.push(leaf);
        if self.leaves.len() >= LEAF_BATCH {
            self.flush_leaves().await?;
        }
        self.emit(Bytes::from(chunk)).await
    }

    async fn flush_leaves(&mut self) -> Result<()> {
        if self.leaves.is_empty() {
            return Ok(());
        }
        self.engine
            .private
            .put_leaves(self.blob, self.leaves_first, &self.leaves)
            .await?;
        self.leaves_first += self.leaves.len() as u64;
        self.leaves.clear();
        Ok(())
    }

    async fn emit(&mut self, sealed: Bytes) -> Result<()> {
        let part_size = self.engine.config.part_size;
        match self.sink.take() {
            Some(Sink::Buffer(mut held, size)) if size + sealed.len() <= part_size => {
                let size = size + sealed.len();
                held.push(sealed);
                self.sink = Some(Sink::Buffer(held, size));
            }
            Some(Sink::Buffer(held, _)) => {
                let upload = self
                    .engine
                    .public
                    .put_multipart(&blob_path(&self.blob))
                    .await?;
                let mut mp = WriteMultipart::new_with_chunk_size(upload, part_size);
                for b in held {
                    mp.put(b);
                }
                mp.put(sealed);
                self.sink = Some(Sink::Multipart(mp));
                self.wait().await?;
            }
            Some(Sink::Multipart(mut mp)) => {
                mp.put(sealed);
                self.sink = Some(Sink::Multipart(mp));
                self.wait().await?;
            }
            None => return Err(Error::Internal("blob writer used after finish".into())),
        }
        Ok(())
    }

    async fn wait(&mut self) -> Result<()> {
        if let Some(Sink::Multipart(mp)) = &mut self.sink {
            mp.wait_for_capacity(self.engine.config.upload_concurrency)
                .await?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(Part, [u8; 16], Vec<(String, String)>)> {
        let chunk = std::mem::take(&mut self.plain);
        self.seal(chunk, true).await?;
        while !self.sealing.is_empty() {
            self.take_sealed().await?;
        }
        self.flush_leaves().await?;
        match self.sink.take() {
            Some(Sink::Buffer(held, _)) => {
                let payload: PutPayload = held.into_iter().collect();
                self.engine
                    .public
                    .put(&blob_path(&self.blob), payload)
                    .await?;
            }
            Some(Sink::Multipart(mp)) => {
                mp.finish().await?;
            }
            None => return Err(Error::Internal("blob writer finished twice".into())),
        }
        let root = std::mem::replace(&mut self.root, RootBuilder::new()).finish();
        let (md5, checksums) = std::mem::replace(&mut self.md5, Md5Lane::idle())
            .finish()
            .await?;
        Ok((
            Part {
                blob: self.blob,
                chunk_size: self.chunk_size as u32,
                plaintext_len: self.total,
                root,
            },
            md5,
            checksums,
        ))
    }

    /// Aborts the public multipart upload, if any, in the background: the client's error
    /// need not wait for a store that may be the reason for it.
    fn abort(&mut self) {
        if let Some(Sink::Multipart(mp)) = self.sink.take() {
            tokio::spawn(async move {
                if let Err(e) = mp.abort().await {
                    tracing::warn!(error = %e, "could not abort a multipart upload; gc will retry");
                }
            });
        }
    }
}

/// The object-level checksum of a completed upload, from its parts' (see [`checksum`]),
/// checked against the one the client sent with CompleteMultipartUpload, if any.
fn object_checksum(
    upload: &UploadRecord,
    chosen: &[ChosenPart],
    uploaded: &std::collections::BTreeMap<u32, PartRecord>,
    sent: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    let Some(name) = &upload.checksum_algorithm else {
        if let Some((algo, _)) = sent.first() {
            return Err(Error::InvalidArgument(format!(
                "x-amz-checksum-{} was sent but the upload was created without a checksum algorithm",
                algo.to_ascii_lowercase()
            )));
        }
        return Ok(Vec::new());
    };
    let algo = checksum::Algorithm::parse(name)
        .ok_or_else(|| Error::Corrupt(format!("upload checksum algorithm {name}")))?;
    let kind = upload
        .checksum_type
        .as_deref()
        .and_then(checksum::Kind::parse)
        .unwrap_or(checksum::Kind::Composite);
    let mut parts = Vec::with_capacity(chosen.len());
    for c in chosen {
        let rec = uploaded
            .get(&c.number)
            .ok_or(Error::InvalidPart(c.number))?;
        let value = rec
            .checksums
            .iter()
            .find(|(a, _)| a == name)
            .map(|(_, v)| v.as_str())
            .ok_or(Error::InvalidPart(c.number))?;
        parts.push((value, rec.plaintext_len));
    }
    let value = checksum::multipart(algo, kind, &parts)?;
    for (a, v) in sent {
        if a != name {
            return Err(Error::InvalidArgument(format!(
                "x-amz-checksum-{} does not match the upload's algorithm {name}",
                a.to_ascii_lowercase()
            )));
        }
        // A composite value may be sent with or without its -N suffix.
        let bare = value.split('-').next().unwrap_or(&value);
        if v != &value && v != bare {
            return Err(Error::ChecksumMismatch(name.clone()));
        }
    }
    Ok(vec![(name.clone(), value)])
}
