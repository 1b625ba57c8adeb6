//! The read pipeline: every read of a record's plaintext goes through [`stream`].
//!
//! A read is a manifest, the record's data key and a byte range. [`windows`] cuts the range
//! into one [`Window`] per part it touches (a few per object, never one per chunk); each
//! window yields its [`ChunkJob`]s lazily, so an object of millions of chunks never becomes
//! a list of them. A [`ChunkSource`] fetches one sealed chunk together with the leaf it
//! must hash to: this gateway's public store with the leaf kept in the private store
//! ([`ChunkSource::Local`]), or a peer's blob endpoint with a leaf proven against the root
//! of the manifest the peer signed ([`ChunkSource::Peer`]). Every chunk, whatever its
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
//! peer source. `Engine::peer_chunk`, which serves the peer source at the other end,
//! fetches with [`sealed_range`] like the local source.

use std::sync::Arc;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use keyring::{leaf_hash, BlobId, DataKey, Hash, Layout, Manifest, PayloadKey};
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

/// The plaintext bytes `from..to` of one part; never empty (`from < to`).
pub(crate) struct Window {
    blob: BlobId,
    /// The part's Merkle root, from the manifest.
    root: Hash,
    layout: Layout,
    key: Arc<PayloadKey>,
    from: u64,
    to: u64,
}

impl Window {
    /// How many chunks the window touches.
    pub(crate) fn chunk_count(&self) -> u64 {
        let range = self.layout.chunks_for_range(self.from, self.to - 1);
        range.end() - range.start() + 1
    }

    /// One job per chunk the window touches, generated lazily.
    fn jobs(self) -> impl Iterator<Item = ChunkJob> {
        let range = self.layout.chunks_for_range(self.from, self.to - 1);
        range.map(move |index| {
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
            match Layout::new(part.plaintext_len, part.chunk_size) {
                Err(e) => out.push(Err(e.into())),
                // An empty part inside the range contributes no bytes.
                Ok(_) if from >= to => {}
                Ok(layout) => out.push(Ok(Window {
                    blob: part.blob,
                    root: part.root,
                    layout,
                    key: Arc::new(PayloadKey::derive(dek, &part.blob)),
                    from,
                    to,
                })),
            }
        }
        part_start = part_end;
    }
    out
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
            ChunkSource::Peer { .. } => None,
        };
        let (sealed, leaf) = match self {
            ChunkSource::Local(engine) => engine.sealed_chunk(&job).await?,
            ChunkSource::Peer { remote, session } => remote.sealed_chunk(session, &job).await?,
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
    let jobs = jobs(windows);
    let source = Arc::new(source);
    let mut chunks = futures::stream::iter(jobs)
        .map(move |job| {
            let source = Arc::clone(&source);
            async move { source.read(job?).await }
        })
        .buffered(ahead.concurrency);
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
