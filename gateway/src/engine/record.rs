//! Records: sealing a body into a blob on the way in, opening byte ranges on the way out.
//!
//! The write path follows DESIGN.md's commit order: a pending row, then the body streamed
//! through fixed-size plaintext chunks, each sealed (STREAM) and hashed into a Merkle leaf
//! while the sealed bytes stream to one public blob; only when the body ended whole and
//! its digest matched does one private-store transaction publish the manifest, and only
//! after a flush is the write acknowledged. Memory is bounded by the chunk size and the
//! public store's part size, never by the object size.
//!
//! The read path (`open`) unwraps the DEK and hands the range to the read pipeline
//! (`engine::read`, with this gateway's public store as the chunk source): only the sealed
//! chunks a range needs are fetched, each checked against its leaf before it is opened,
//! and the first chunk before any header is sent.
//!
//! Files: this one holds `Engine`, PUT, delete and the read entry point (`open`);
//! `multipart`, `copy` and `blob_writer` (write side) the rest.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use keyring::{
    leaf_hash, BlobId, DataKey, DekId, Hash, Identity, Manifest, Part, PayloadKey, Recipient,
    RootBuilder, WrappedKey,
};
use md5::{Digest, Md5};
use object_store::{PutPayload, WriteMultipart};
use subtle::ConstantTimeEq;

use crate::engine::checksum::{self, Hasher};
use crate::store::private::{
    DekStanza, EventKind, PartRecord, Precondition, PrivateStore, PutCommit, UploadRecord,
};
use crate::store::public::{blob_path, PublicStore};
use crate::{now_ms, Error, Result};

mod blob_writer;
mod copy;
mod multipart;

use crate::engine::read;
use blob_writer::*;

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
    /// Who writes: the access key id, logged as the entry's actor (a PUT's; unused by
    /// CreateMultipartUpload and CopyObject, whose completion and copy name their own).
    pub actor: String,
}

/// What CompleteMultipartUpload names besides the upload: the parts, the object checksums the
/// client sent, the precondition, and who completes it (the access key id, logged as the
/// entry's actor).
pub struct Completion<'a> {
    pub parts: &'a [ChosenPart],
    pub object_checksums: &'a [(String, String)],
    pub precondition: Precondition,
    pub actor: &'a str,
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
    pub(in crate::engine) public: PublicStore,
    /// The fronts reach the store through engine methods (`engine::catalog`); the
    /// integration tests through [`Engine::private_store`].
    pub(in crate::engine) private: Arc<dyn PrivateStore>,
    pub(in crate::engine) institution: Arc<Identity>,
    pub(in crate::engine) institution_recipient: Recipient,
    config: EngineConfig,
    /// Shared by every read; see [`READ_BUDGET`].
    pub(in crate::engine) read_budget: Arc<tokio::sync::Semaphore>,
    /// Shared by every write; see [`WRITE_SLOTS`].
    write_slots: Arc<tokio::sync::Semaphore>,
    /// Patients whose published index is behind (see `sharing::Engine::publish_indexes`).
    pub(in crate::engine) index_dirty: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Held for a whole publication tick, so two ticks (the timer's and a key change's) never
    /// draw the same patient's next sequence number at once.
    pub(in crate::engine) index_tick: tokio::sync::Mutex<()>,
    /// Buckets mounted from peers (set once at start by the server; see [`crate::engine::remote`]).
    pub(in crate::engine) remote: std::sync::OnceLock<Arc<crate::engine::remote::Remote>>,
    /// Group commit of the log entries that are not writes (see `log`).
    pub(in crate::engine) appender: crate::engine::log::Appender,
    /// The institution's previous identities, after `medgate keys rotate`: records not yet
    /// re-wrapped to the current key still open with them (set once at start; see
    /// [`crate::engine::keyrot`]).
    /// Set once by [`Engine::set_previous`].
    pub(in crate::engine) previous: std::sync::OnceLock<Vec<Arc<Identity>>>,
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

    /// Removes an object and logs it in the same transaction; returns once that is durable.
    ///
    /// # Errors
    /// Store failures.
    pub async fn delete(&self, bucket: &str, key: &str, actor: &str) -> Result<Option<Manifest>> {
        self.durable(self.delete_one(bucket, key, actor)).await
    }

    /// DeleteObjects: deletes each of `keys` (one log entry each) and returns once all of
    /// them are durable (one flush for the batch); one result per key, in order.
    ///
    /// # Errors
    /// The final flush failed; a key's own failure is its result.
    pub async fn delete_many(
        &self,
        bucket: &str,
        keys: &[String],
        actor: &str,
    ) -> Result<Vec<Result<Option<Manifest>>>> {
        self.durable(async {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(self.delete_one(bucket, key, actor).await);
            }
            Ok(out)
        })
        .await
    }

    /// One delete and its log entry (the caller holds the gate and flushes).
    async fn delete_one(&self, bucket: &str, key: &str, actor: &str) -> Result<Option<Manifest>> {
        let entry = crate::engine::log::write_entry(EventKind::Delete, actor, bucket, key, None);
        let (removed, _) = self
            .private
            .delete_object_logged(bucket, key, entry)
            .await?;
        self.patient_changed(removed.as_ref());
        Ok(removed)
    }

    /// Runs `write` under the backup gate ([`PrivateStore::hold_writes`]: a backup waits
    /// until every write and log entry of the operation is made) and returns once what it
    /// wrote is durable ([`PrivateStore::flush`]), whether it succeeded or stopped part way
    /// (a refusal's log entry is a write too). Every engine operation that changes the
    /// private store goes through here, so a 200 always follows a flush and no front ever
    /// flushes.
    ///
    /// # Errors
    /// `write`'s error; else a failed flush.
    pub(in crate::engine) async fn durable<T>(
        &self,
        write: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let _hold = self.private.hold_writes().await;
        let out = write.await;
        let flushed = self.private.flush().await;
        let out = out?;
        flushed?;
        Ok(out)
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
        let (req_bucket, req_key, actor) = (req.bucket.clone(), req.key.clone(), req.actor.clone());
        let commit = PutCommit {
            bucket: req.bucket,
            key: req.key,
            manifest: manifest.clone(),
            stanzas,
            precondition: req.precondition,
            upload: None,
        };
        // A backup holds off until every write and log entry below is made; the answer
        // waits until they are durable.
        self.durable(async {
            let entry = crate::engine::log::write_entry(
                EventKind::Put,
                &actor,
                &req_bucket,
                &req_key,
                Some(&manifest),
            );
            match self.private.commit_put_logged(commit, entry).await {
                Ok((old, _)) => self.patient_changed(old.as_ref()),
                Err(e) => {
                    self.forget_blob(blob).await;
                    return Err(e);
                }
            }
            self.patient_changed(Some(&manifest));
            Ok(manifest)
        })
        .await
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
        // This gateway's manifests are its own: an invalid part is an error before any
        // chunk is read.
        let windows = read::windows(manifest, &dek, start, end)
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        drop(dek);
        // One line per read says what it costs in the public store; tests assert on it
        // (a 1 MiB range fetches at most 2 chunks of each part it touches).
        let per_part: Vec<u64> = windows.iter().map(read::Window::chunk_count).collect();
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
        read::stream(
            read::ChunkSource::Local(Arc::clone(self)),
            windows.into_iter().map(Ok).collect(),
            read::ReadAhead {
                concurrency: READ_CONCURRENCY,
                queue: READ_AHEAD,
                warn: "aborting a GET body: a later chunk failed",
                cut: "a later chunk could not be read or failed its check",
            },
        )
        .await
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
