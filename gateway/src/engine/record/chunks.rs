//! The read side of a record: windows of a range over a part, the chunk jobs that fetch,
//! check and open sealed chunks, and [`open_chunk`].

use super::*;

/// The plaintext bytes `from..to` of one part; never empty (`from < to`).
pub(super) struct Window {
    pub(super) blob: BlobId,
    pub(super) layout: Layout,
    pub(super) key: Arc<PayloadKey>,
    pub(super) from: u64,
    pub(super) to: u64,
}

impl Window {
    pub(super) fn chunk_count(&self) -> u64 {
        let range = self.layout.chunks_for_range(self.from, self.to - 1);
        range.end() - range.start() + 1
    }

    /// One job per chunk the window touches, generated lazily (an object may have
    /// millions of chunks).
    pub(super) fn chunks(self) -> impl Iterator<Item = ChunkJob> {
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
pub(super) struct ChunkJob {
    pub(super) blob: BlobId,
    pub(super) layout: Layout,
    pub(super) key: Arc<PayloadKey>,
    pub(super) index: u64,
    pub(super) lo: u64,
    pub(super) hi: u64,
}

impl ChunkJob {
    pub(super) async fn read(self, engine: &Engine) -> Result<Bytes> {
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
