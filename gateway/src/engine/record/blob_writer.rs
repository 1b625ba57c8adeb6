//! The write side of a blob: sealing chunks on worker threads, hashing their leaves,
//! the MD5 and checksum lane, and streaming the sealed bytes to the public store.

use super::*;

/// MD5 of a blob's plaintext (its S3 ETag), computed on a thread of its own: MD5 is
/// inherently sequential and the slowest hash on the write path, so the request task
/// only hands it chunks and goes on reading the body while sealing runs beside both.
/// The S3 additional checksums the client asked for run on the same lane.
pub(super) struct Md5Lane {
    pub(super) tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    pub(super) done: Option<tokio::task::JoinHandle<LaneDigests>>,
}

pub(super) type LaneDigests = ([u8; 16], Vec<(String, String)>);

/// Plaintext chunks queued for the MD5 lane (bounds memory at this many chunks).
pub(super) const MD5_AHEAD: usize = 2;

impl Md5Lane {
    pub(super) fn start(mut extra: Option<Hasher>) -> Self {
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
    pub(super) fn idle() -> Self {
        Md5Lane {
            tx: None,
            done: None,
        }
    }

    pub(super) async fn push(&mut self, chunk: Bytes) -> Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Internal("MD5 lane used after finish".into()))?;
        tx.send(chunk)
            .await
            .map_err(|_| Error::Internal("MD5 lane stopped".into()))
    }

    pub(super) async fn finish(mut self) -> Result<LaneDigests> {
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
pub(super) enum Sink {
    Buffer(Vec<Bytes>, usize),
    Multipart(WriteMultipart),
}

pub(super) type Sealing = tokio::task::JoinHandle<keyring::Result<(Vec<u8>, Hash)>>;

/// Seals one blob chunk by chunk.
pub(super) struct BlobWriter<'a> {
    pub(super) engine: &'a Engine,
    pub(super) blob: BlobId,
    pub(super) key: Arc<PayloadKey>,
    pub(super) sealing: std::collections::VecDeque<Sealing>,
    pub(super) chunk_size: usize,
    pub(super) index: u64,
    pub(super) plain: Vec<u8>,
    pub(super) md5: Md5Lane,
    pub(super) total: u64,
    pub(super) root: RootBuilder,
    pub(super) leaves: Vec<Hash>,
    pub(super) leaves_first: u64,
    pub(super) sink: Option<Sink>,
}

impl<'a> BlobWriter<'a> {
    pub(super) fn new(
        engine: &'a Engine,
        dek: &DataKey,
        blob: BlobId,
        hasher: Option<Hasher>,
    ) -> Self {
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

    pub(super) async fn write(&mut self, mut data: &[u8]) -> Result<()> {
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
    pub(super) async fn seal(&mut self, chunk: Vec<u8>, last: bool) -> Result<()> {
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

    pub(super) async fn take_sealed(&mut self) -> Result<()> {
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

    pub(super) async fn flush_leaves(&mut self) -> Result<()> {
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

    pub(super) async fn emit(&mut self, sealed: Bytes) -> Result<()> {
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

    pub(super) async fn wait(&mut self) -> Result<()> {
        if let Some(Sink::Multipart(mp)) = &mut self.sink {
            mp.wait_for_capacity(self.engine.config.upload_concurrency)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn finish(&mut self) -> Result<(Part, [u8; 16], Vec<(String, String)>)> {
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
    pub(super) fn abort(&mut self) {
        if let Some(Sink::Multipart(mp)) = self.sink.take() {
            tokio::spawn(async move {
                if let Err(e) = mp.abort().await {
                    tracing::warn!(error = %e, "could not abort a multipart upload; gc will retry");
                }
            });
        }
    }
}
