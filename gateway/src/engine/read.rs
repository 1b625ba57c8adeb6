//! The read pipeline: every read of a record's plaintext goes through it.
//!
//! A read is a manifest, the record's data key and a byte range. [`windows`] cuts the range
//! into one [`Window`] per part it touches (a few per object, never one per chunk); each
//! window yields its [`ChunkJob`]s lazily, so an object of millions of chunks never becomes
//! a list of them. A [`ChunkSource`] fetches one sealed chunk together with the leaf it
//! must hash to: this gateway's public store with the leaf kept in the private store
//! ([`ChunkSource::Local`]), a peer's blob endpoint with a leaf proven against the root of
//! the manifest the peer signed ([`ChunkSource::Peer`]), or a blob already fetched whole
//! whose leaves rebuilt the part's root ([`ChunkSource::Blob`]). Every chunk, whatever its
//! source, then has its length and leaf hash checked and is opened ([`open_chunk`]) before
//! a byte of it is used, and is trimmed to the range.
//!
//! [`stream`] runs at most [`ReadAhead::concurrency`] jobs at once, in order, and keeps at
//! most [`ReadAhead::queue`] opened chunks waiting for the client, so a read holds a few
//! chunks whatever the object's size. The first chunk is fetched and checked before it
//! returns (tampering, a missing blob or a peer that refuses is a clean error before any
//! header goes out); a later failure ends the body with an I/O error, never wrong bytes.
//!
//! Callers: `Engine::open` (GET and ranged GET, the UploadPartCopy source, rotate's
//! re-encryption) with the local source; `Remote::open` (a mounted bucket's GET) with the
//! peer source; [`read_record`] (a recipient's or a patient's read with only the manifest
//! and the DEK, `sharing::read_record`) with the blob source. `Engine::peer_chunk`, which
//! serves the peer source at the other end, fetches with [`sealed_range`] like the local
//! source. Not yet here: `verify --deep` (`log::rehash_blob`) re-hashes whole blobs
//! against the stored leaves without opening them.

use std::sync::Arc;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use keyring::{leaf_hash, BlobId, DataKey, Hash, Layout, Manifest, Part, PayloadKey};
use subtle::ConstantTimeEq;

use crate::engine::record::Engine;
use crate::engine::remote::{Remote, Session};
use crate::store::public::{blob_path, PublicStore};
use crate::{Error, Result};

/// Where the sealed chunks of a read come from.
pub(crate) enum ChunkSource {
    /// This gateway's public store; each chunk is checked against its leaf kept on
    /// premises, and takes a slot of the engine's read budget while it is fetched and
    /// opened.
    Local(Arc<Engine>),
    /// A peer's blob endpoint (`GET /v1/peer/blob`) for a read session; each chunk comes
    /// with its leaf and an inclusion proof checked against the part's root in the
    /// manifest the peer signed.
    Peer {
        remote: Arc<Remote>,
        session: Arc<Session>,
    },
    /// One part's whole blob, fetched by whoever holds only the manifest and the data key
    /// (a recipient, a patient pulling their records: [`read_record`]), with the leaves
    /// that rebuilt the part's root.
    Blob { sealed: Bytes, leaves: Vec<Hash> },
}

/// How far a read runs ahead of its client.
pub(crate) struct ReadAhead {
    /// Chunks fetched and opened at once (each one request to the source).
    pub(crate) concurrency: usize,
    /// Opened chunks queued for the client.
    pub(crate) queue: usize,
    /// What is logged when a chunk after the first fails.
    pub(crate) warn: &'static str,
    /// The I/O error that then ends the body.
    pub(crate) cut: &'static str,
}

/// Chunks of an already fetched blob opened at once by [`read_record`].
const BLOB_CONCURRENCY: usize = 4;

/// The plaintext bytes `from..to` of one part; never empty (`from < to`), except the whole
/// of an empty part in [`read_record`] (its one chunk, a tag, is still opened).
pub(crate) struct Window {
    blob: BlobId,
    /// The part's Merkle root, from the manifest.
    root: Hash,
    layout: Layout,
    key: Arc<PayloadKey>,
    from: u64,
    to: u64,
    /// The chunks holding `from..to`.
    chunks: std::ops::RangeInclusive<u64>,
}

impl Window {
    /// How many chunks the window touches.
    pub(crate) fn chunk_count(&self) -> u64 {
        self.chunks.end() - self.chunks.start() + 1
    }

    /// One job per chunk the window touches, generated lazily.
    fn jobs(self) -> impl Iterator<Item = ChunkJob> {
        self.chunks.clone().map(move |index| {
            let chunk_start = self.layout.plain_offset(index);
            ChunkJob {
                blob: self.blob,
                root: self.root,
                layout: self.layout,
                key: Arc::clone(&self.key),
                index,
                lo: self.from.saturating_sub(chunk_start),
                hi: self.to - chunk_start,
            }
        })
    }
}

/// The windows of plaintext `start..end` of `manifest`, one per part the range touches
/// with at least one byte; each part's key is derived from `dek` here. A part whose layout
/// is invalid (only a peer's manifest can say so) stands as an error in its place, which
/// the read meets when it reaches that part.
pub(crate) fn windows(
    manifest: &Manifest,
    dek: &DataKey,
    start: u64,
    end: u64,
) -> Vec<Result<Window>> {
    let mut out = Vec::new();
    let mut part_start = 0u64;
    for part in &manifest.parts {
        let part_end = part_start.saturating_add(part.plaintext_len);
        if part_end > start && part_start < end {
            let from = start.max(part_start) - part_start;
            let to = end.min(part_end) - part_start;
            out.extend(window(part, dek, from, to));
        }
        part_start = part_end;
    }
    out
}

/// The window of plaintext `from..to` of `part`: none when it is empty, an error when the
/// part's layout is invalid.
fn window(part: &Part, dek: &DataKey, from: u64, to: u64) -> Option<Result<Window>> {
    match Layout::new(part.plaintext_len, part.chunk_size) {
        Err(e) => Some(Err(e.into())),
        // An empty part inside the range contributes no bytes.
        Ok(_) if from >= to => None,
        Ok(layout) => Some(Ok(Window {
            blob: part.blob,
            root: part.root,
            layout,
            key: Arc::new(PayloadKey::derive(dek, &part.blob)),
            from,
            to,
            chunks: layout.chunks_for_range(from, to - 1),
        })),
    }
}

/// Every chunk of `part`, an empty part's one chunk included.
fn whole_part(part: &Part, layout: Layout, dek: &DataKey) -> Window {
    Window {
        blob: part.blob,
        root: part.root,
        layout,
        key: Arc::new(PayloadKey::derive(dek, &part.blob)),
        from: 0,
        to: part.plaintext_len,
        chunks: 0..=layout.chunk_count() - 1,
    }
}

/// The jobs of `windows`, in order and generated lazily; a window that is an error yields
/// that error where its jobs would be.
pub(crate) fn jobs(
    windows: Vec<Result<Window>>,
) -> impl Iterator<Item = Result<ChunkJob>> + Send + Sync + 'static {
    windows.into_iter().flat_map(|w| {
        let (jobs, err) = match w {
            Ok(w) => (Some(w.jobs()), None),
            Err(e) => (None, Some(e)),
        };
        err.into_iter()
            .map(Err)
            .chain(jobs.into_iter().flatten().map(Ok))
    })
}

/// One sealed chunk to fetch, check against its leaf, open and trim to `lo..hi`.
pub(crate) struct ChunkJob {
    pub(crate) blob: BlobId,
    pub(crate) root: Hash,
    pub(crate) layout: Layout,
    key: Arc<PayloadKey>,
    pub(crate) index: u64,
    /// The plaintext bytes of the chunk the read wants: `lo..hi` (`hi` clamped to the
    /// chunk when it is opened).
    pub(crate) lo: u64,
    pub(crate) hi: u64,
}

impl ChunkSource {
    /// Fetches, checks and opens one chunk.
    async fn read(&self, job: ChunkJob) -> Result<Bytes> {
        let _permit = match self {
            // Invariant: the semaphore is never closed, so acquiring only waits.
            ChunkSource::Local(engine) => Some(
                engine
                    .read_budget
                    .acquire()
                    .await
                    .map_err(|_| Error::Internal("read budget closed".into()))?,
            ),
            ChunkSource::Peer { .. } | ChunkSource::Blob { .. } => None,
        };
        let (sealed, leaf) = match self {
            ChunkSource::Local(engine) => engine.sealed_chunk(&job).await?,
            ChunkSource::Peer { remote, session } => remote.sealed_chunk(session, &job).await?,
            ChunkSource::Blob { sealed, leaves } => {
                let from = job.layout.sealed_offset(job.index);
                let to = from + job.layout.sealed_len(job.index);
                let leaf = usize::try_from(job.index)
                    .ok()
                    .and_then(|i| leaves.get(i))
                    .copied()
                    .ok_or_else(|| Error::integrity(&job.blob, job.index))?;
                let range = usize::try_from(from)
                    .ok()
                    .zip(usize::try_from(to).ok())
                    .filter(|(f, t)| f <= t && *t <= sealed.len())
                    .ok_or_else(|| Error::integrity(&job.blob, job.index))?;
                (sealed.slice(range.0..range.1), leaf)
            }
        };
        if sealed.len() as u64 != job.layout.sealed_len(job.index) {
            return Err(Error::integrity(&job.blob, job.index));
        }
        let last = job.layout.is_last(job.index);
        open_chunk(
            job.key, job.blob, job.index, last, sealed, leaf, job.lo, job.hi,
        )
        .await
    }
}

/// The plaintext chunks of `windows` from `source`, in order, `concurrency` of them
/// fetched and opened at once; jobs are made only as the stream is polled.
fn chunks(
    source: ChunkSource,
    windows: Vec<Result<Window>>,
    concurrency: usize,
) -> impl Stream<Item = Result<Bytes>> + Send + Unpin + 'static {
    let source = Arc::new(source);
    futures::stream::iter(jobs(windows))
        .map(move |job| {
            let source = Arc::clone(&source);
            async move { source.read(job?).await }
        })
        .buffered(concurrency)
}

/// Streams the plaintext of `windows` from `source` (see the module docs). The first chunk
/// is read before this returns.
///
/// # Errors
/// The first chunk's failure (integrity, a missing blob, a store or peer failure), or an
/// invalid window before it.
pub(crate) async fn stream(
    source: ChunkSource,
    windows: Vec<Result<Window>>,
    ahead: ReadAhead,
) -> Result<
    impl Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + Sync + Unpin + 'static,
> {
    let mut chunks = chunks(source, windows, ahead.concurrency);
    // Check the first chunk now so that tampering becomes a clean error.
    let first = match chunks.next().await {
        Some(r) => Some(r?),
        None => None,
    };
    let (mut tx, rx) = mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(ahead.queue);
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
                    tracing::warn!(error = %e, "{}", ahead.warn);
                    let _ = tx.send(Err(std::io::Error::other(ahead.cut))).await;
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// Reads a whole record from the public store with nothing but its manifest and its DEK:
/// what a recipient (or a patient pulling their records) does without the institution's
/// key. Each part's blob is fetched whole, its chunks' leaf hashes must rebuild the part's
/// Merkle root from the manifest, and only then are its chunks opened through the
/// pipeline ([`ChunkSource::Blob`]); the plaintext goes to `out` only after its part
/// verified.
///
/// # Errors
/// `Integrity` for a blob that does not match its root or does not open; public store
/// failures; I/O errors of `out`.
pub(crate) async fn read_record(
    public: &PublicStore,
    manifest: &Manifest,
    dek: &DataKey,
    out: &mut (dyn std::io::Write + Send),
) -> Result<u64> {
    let mut written = 0u64;
    for part in &manifest.parts {
        let layout = Layout::new(part.plaintext_len, part.chunk_size)?;
        let sealed = public.get(&blob_path(&part.blob)).await?.bytes().await?;
        if sealed.len() as u64 != layout.sealed_total() {
            return Err(Error::integrity(&part.blob, 0));
        }
        let mut roots = keyring::RootBuilder::new();
        let mut leaves = Vec::new();
        for i in 0..layout.chunk_count() {
            let (from, len) = (layout.sealed_offset(i), layout.sealed_len(i));
            let leaf = leaf_hash(&sealed[from as usize..(from + len) as usize]);
            roots.push(leaf);
            leaves.push(leaf);
        }
        if !keyring::merkle::hash_eq(&roots.finish(), &part.root) {
            return Err(Error::integrity(&part.blob, 0));
        }
        let source = ChunkSource::Blob { sealed, leaves };
        let whole = vec![Ok(whole_part(part, layout, dek))];
        let mut plain = chunks(source, whole, BLOB_CONCURRENCY);
        while let Some(p) = plain.next().await {
            let p = p?;
            out.write_all(&p)?;
            written += p.len() as u64;
        }
    }
    Ok(written)
}

/// The sealed bytes of chunk `index` of `blob` from the public store (one ranged request);
/// counted in `chunks_fetched` when they arrive.
///
/// # Errors
/// The store's, as it gave them (the caller decides what a missing blob means).
pub(crate) async fn sealed_range(
    public: &PublicStore,
    blob: &BlobId,
    layout: &Layout,
    index: u64,
) -> object_store::Result<Bytes> {
    let start = layout.sealed_offset(index);
    let end = start + layout.sealed_len(index);
    let sealed = public.get_range(&blob_path(blob), start..end).await?;
    crate::metrics::global().chunks_fetched.inc();
    Ok(sealed)
}

impl Engine {
    /// The local source: the leaf of chunk `job.index` from the private store, then its
    /// sealed bytes from the public store. A missing leaf or blob, or a blob shorter than
    /// its layout, is an integrity error; an unreachable store is a public-store error.
    async fn sealed_chunk(&self, job: &ChunkJob) -> Result<(Bytes, Hash)> {
        let (blob, index) = (job.blob, job.index);
        let leaves = self.private.leaves(blob, index, index).await?;
        let expected = *leaves
            .first()
            .ok_or_else(|| Error::integrity(&blob, index))?;
        match sealed_range(&self.public, &blob, &job.layout, index).await {
            Ok(b) => Ok((b, expected)),
            Err(object_store::Error::NotFound { .. }) => Err(Error::integrity(&blob, index)),
            // An outage, not an answer: asking again would only double the wait.
            Err(e) if crate::store::public::unreachable(&e) => Err(Error::Public(e)),
            Err(e) => {
                // Stores report a range past the end differently; a blob shorter than
                // its layout says is tampering, not an outage the client should retry.
                let sealed_end = job.layout.sealed_offset(index) + job.layout.sealed_len(index);
                match self.public.head(&blob_path(&blob)).await {
                    Ok(meta) if meta.size < sealed_end => Err(Error::integrity(&blob, index)),
                    Err(object_store::Error::NotFound { .. }) => {
                        Err(Error::integrity(&blob, index))
                    }
                    _ => Err(Error::Public(e)),
                }
            }
        }
    }
}

/// Opens sealed chunk `index` of `blob` on a blocking thread, after checking its leaf hash
/// against `leaf`, and returns its plaintext bytes `lo..hi`. Any mismatch is an integrity
/// error naming the blob and chunk.
#[allow(clippy::too_many_arguments)]
async fn open_chunk(
    key: Arc<PayloadKey>,
    blob: BlobId,
    index: u64,
    last: bool,
    sealed: Bytes,
    leaf: Hash,
    lo: u64,
    hi: u64,
) -> Result<Bytes> {
    tokio::task::spawn_blocking(move || -> Result<Bytes> {
        let got: Hash = leaf_hash(&sealed);
        if !bool::from(got.ct_eq(&leaf)) {
            return Err(Error::integrity(&blob, index));
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
