//! The record engine and gc over an in-memory public store and a sled private store.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use gateway::engine::gc;
use gateway::engine::record::{Engine, EngineConfig, PutRequest};
use gateway::store::private::sled::SledStore;
use gateway::store::private::{prelude::*, BlobState, Precondition, PutCommit};
use gateway::store::public::PublicStore;
use gateway::Error;
use keyring::{leaf_hash, BlobId, Identity, Layout, Manifest};
use md5::{Digest, Md5};
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, PutPayload};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const BUCKET: &str = "records";

/// One private store (sled is slow-ish to open), one institution; a public store per test.
struct Env {
    _dir: tempfile::TempDir,
    private: Arc<SledStore>,
    institution: Arc<Identity>,
}

impl Env {
    async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let private = Arc::new(SledStore::open(dir.path(), 4 << 20).unwrap());
        private.create_bucket(BUCKET, 1).await.unwrap();
        Env {
            _dir: dir,
            private,
            institution: Arc::new(Identity::generate()),
        }
    }

    fn engine(&self, public: &PublicStore, chunk_size: u32, part_size: usize) -> Arc<Engine> {
        Arc::new(Engine::new(
            Arc::clone(public),
            self.private.clone() as Arc<dyn PrivateStore>,
            Arc::clone(&self.institution),
            EngineConfig {
                chunk_size,
                part_size,
                upload_concurrency: 2,
                ..Default::default()
            },
        ))
    }
}

fn memory() -> PublicStore {
    Arc::new(InMemory::new())
}

fn req(key: &str) -> PutRequest {
    PutRequest {
        bucket: BUCKET.into(),
        key: key.into(),
        ..Default::default()
    }
}

fn body(pieces: Vec<Vec<u8>>) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    futures::stream::iter(
        pieces
            .into_iter()
            .map(|p| Ok::<Bytes, std::io::Error>(Bytes::from(p))),
    )
}

/// Deterministic pseudo-random bytes.
fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(12345);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

fn split(bytes: &[u8], piece: usize) -> Vec<Vec<u8>> {
    bytes.chunks(piece.max(1)).map(<[u8]>::to_vec).collect()
}

async fn put(engine: &Engine, key: &str, bytes: &[u8]) -> Manifest {
    engine
        .put(req(key), body(split(bytes, 37)))
        .await
        .expect("put")
}

/// Everything `open` streams, or the first error (the stream's or `open`'s).
async fn read(engine: &Arc<Engine>, m: &Manifest, start: u64, end: u64) -> Result<Vec<u8>, String> {
    let stream = engine
        .open(m, start, end)
        .await
        .map_err(|e| format!("open: {e:?}"))?;
    let pieces: Vec<Bytes> = stream
        .try_collect()
        .await
        .map_err(|e| format!("stream: {e}"))?;
    Ok(pieces.concat())
}

/// The `Ok` bytes a stream yields before its first error, and whether it hit one.
async fn read_until_error(engine: &Arc<Engine>, m: &Manifest) -> (Vec<u8>, bool) {
    let mut stream = Box::pin(
        engine
            .open(m, 0, m.size)
            .await
            .expect("first chunk is fine"),
    );
    let mut got = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => got.extend_from_slice(&b),
            Err(_) => {
                // Nothing follows an error.
                assert!(stream.next().await.is_none());
                return (got, true);
            }
        }
    }
    (got, false)
}

async fn listing(public: &PublicStore) -> Vec<ObjectMeta> {
    let mut all: Vec<ObjectMeta> = public.list(None).try_collect().await.unwrap();
    all.sort_by(|a, b| a.location.cmp(&b.location));
    all
}

fn path(blob: &BlobId) -> StorePath {
    StorePath::from(blob.public_path())
}

async fn get_blob(public: &PublicStore, blob: &BlobId) -> Vec<u8> {
    public
        .get(&path(blob))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

async fn put_blob(public: &PublicStore, blob: &BlobId, bytes: Vec<u8>) {
    public
        .put(&path(blob), PutPayload::from(bytes))
        .await
        .unwrap();
}

async fn flip(public: &PublicStore, blob: &BlobId, offset: usize) {
    let mut bytes = get_blob(public, blob).await;
    bytes[offset] ^= 0x01;
    put_blob(public, blob, bytes).await;
}

fn quoted_md5(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(bytes)))
}

// ---------------------------------------------------------------------------------------
// Round trip (property)

#[derive(Debug, Clone)]
struct Case {
    body: Vec<u8>,
    cuts: Vec<Index>,
    chunk_size: u32,
    part_size: usize,
    ranges: Vec<(Index, Index)>,
    announce: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(any::<u8>(), 0..2000),
        prop::collection::vec(any::<Index>(), 0..8),
        1u32..=100,
        // Whole-blob PUT, or a multipart upload with tiny parts (InMemory takes any size).
        prop_oneof![Just(5usize << 20), 16usize..600],
        prop::collection::vec((any::<Index>(), any::<Index>()), 1..4),
        any::<bool>(),
    )
        .prop_map(
            |(body, cuts, chunk_size, part_size, ranges, announce)| Case {
                body,
                cuts,
                chunk_size,
                part_size,
                ranges,
                announce,
            },
        )
}

async fn round_trip(env: &Env, key: &str, c: Case) -> Result<(), TestCaseError> {
    let public = memory();
    let engine = env.engine(&public, c.chunk_size, c.part_size);
    let len = c.body.len();
    let mut cuts: Vec<usize> = c.cuts.iter().map(|i| i.index(len + 1)).collect();
    cuts.push(0);
    cuts.push(len);
    cuts.sort_unstable();
    // Empty pieces included: a body stream may yield them.
    let pieces: Vec<Vec<u8>> = cuts
        .windows(2)
        .map(|w| c.body[w[0]..w[1]].to_vec())
        .collect();
    let mut request = req(key);
    if c.announce {
        request.content_length = Some(len as u64);
        request.content_md5 = Some(Md5::digest(&c.body).into());
    }
    let m = engine.put(request, body(pieces)).await.expect("put");
    prop_assert_eq!(m.size, len as u64);
    prop_assert_eq!(&m.etag, &quoted_md5(&c.body));
    prop_assert_eq!(m.parts.len(), 1);
    prop_assert_eq!(m.parts[0].chunk_size, c.chunk_size);
    prop_assert_eq!(
        env.private.manifest(BUCKET, key).await.unwrap(),
        Some(m.clone())
    );
    let blob = m.parts[0].blob;
    prop_assert_eq!(
        env.private.blob_state(blob).await.unwrap(),
        BlobState::Referenced(1)
    );

    // Exactly one blob, at its canonical path, of the sealed size.
    let layout = Layout::new(len as u64, c.chunk_size).unwrap();
    let objects = listing(&public).await;
    prop_assert_eq!(objects.len(), 1);
    prop_assert_eq!(objects[0].location.to_string(), blob.public_path());
    prop_assert_eq!(objects[0].size, layout.sealed_total());
    let sealed = get_blob(&public, &blob).await;
    prop_assert_eq!(sealed.len() as u64, layout.sealed_total());

    // The leaves in the private store are the hashes of the sealed chunks, and the root
    // covers them.
    let leaves = env
        .private
        .leaves(blob, 0, layout.chunk_count() - 1)
        .await
        .unwrap();
    for (i, leaf) in leaves.iter().enumerate() {
        let i = i as u64;
        let off = layout.sealed_offset(i) as usize;
        let chunk = &sealed[off..off + layout.sealed_len(i) as usize];
        prop_assert_eq!(&leaf_hash(chunk), leaf);
    }
    prop_assert_eq!(keyring::root(&leaves), m.parts[0].root);

    // No plaintext in the public store.
    if len >= 32 {
        let windows: HashSet<&[u8]> = sealed.windows(32).collect();
        for w in c.body.windows(32) {
            prop_assert!(!windows.contains(w), "a 32-byte plaintext window is public");
        }
    }

    // Ranges.
    prop_assert_eq!(
        read(&engine, &m, 0, len as u64).await.unwrap(),
        c.body.clone()
    );
    for (a, b) in &c.ranges {
        let (a, b) = (a.index(len + 1), b.index(len + 1));
        let (start, end) = (a.min(b), a.max(b));
        let got = read(&engine, &m, start as u64, end as u64).await.unwrap();
        prop_assert_eq!(&got[..], &c.body[start..end], "range {}..{}", start, end);
    }
    Ok(())
}

#[test]
fn prop_round_trip() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let env = rt.block_on(Env::new());
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let n = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&case(), |c| {
            let n = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rt.block_on(round_trip(&env, &format!("case/{n}"), c))
        })
        .unwrap();
}

#[tokio::test]
async fn empty_body_round_trips() {
    let env = Env::new().await;
    let public = memory();
    let engine = env.engine(&public, 64, 5 << 20);
    let m = put(&engine, "empty", b"").await;
    assert_eq!(m.size, 0);
    assert_eq!(m.etag, quoted_md5(b""));
    let blobs = listing(&public).await;
    assert_eq!(blobs.len(), 1);
    assert_eq!(blobs[0].size, 16, "one empty sealed chunk: just the tag");
    assert_eq!(read(&engine, &m, 0, 0).await.unwrap(), b"");
}

#[tokio::test]
async fn put_to_missing_bucket_is_no_such_bucket() {
    let env = Env::new().await;
    let public = memory();
    let engine = env.engine(&public, 64, 5 << 20);
    let mut r = req("k");
    r.bucket = "absent".into();
    let err = engine
        .put(r, body(vec![b"hello".to_vec()]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NoSuchBucket(ref b) if b == "absent"),
        "{err:?}"
    );
    assert!(listing(&public).await.is_empty());
    assert!(env.private.pending().await.unwrap().is_empty());
    assert!(matches!(
        engine.manifest("absent", "k").await,
        Err(Error::NoSuchBucket(_))
    ));
    assert!(matches!(
        engine.manifest(BUCKET, "k").await,
        Err(Error::NoSuchKey { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Failed writes leave the old object

/// The one blob of `public` that `keep` does not reference.
async fn the_other_blob(public: &PublicStore, keep: &Manifest) -> Option<BlobId> {
    let others: Vec<BlobId> = listing(public)
        .await
        .iter()
        .filter_map(|o| BlobId::from_public_path(o.location.as_ref()))
        .filter(|b| *b != keep.parts[0].blob)
        .collect();
    assert!(others.len() <= 1, "{others:?}");
    others.first().copied()
}

#[tokio::test]
async fn bad_digest_keeps_the_old_object() {
    let env = Env::new().await;
    for part_size in [5 << 20, 100] {
        let public = memory();
        let engine = env.engine(&public, 64, part_size);
        let key = format!("md5/{part_size}");
        let v1 = data(500, 1);
        let m1 = put(&engine, &key, &v1).await;
        let v2 = data(700, 2);
        let mut r = req(&key);
        r.content_md5 = Some(Md5::digest(b"something else").into());
        let err = engine.put(r, body(split(&v2, 50))).await.unwrap_err();
        assert!(matches!(err, Error::BadDigest), "{err:?}");
        assert_eq!(engine.manifest(BUCKET, &key).await.unwrap(), m1);
        assert_eq!(read(&engine, &m1, 0, 500).await.unwrap(), v1);
        assert!(env.private.pending().await.unwrap().is_empty());
        // The rejected blob is an orphan for gc, not referenced.
        if let Some(b) = the_other_blob(&public, &m1).await {
            assert!(matches!(
                env.private.blob_state(b).await.unwrap(),
                BlobState::Orphan { .. }
            ));
        }
        // The right digest is accepted.
        let mut r = req(&key);
        r.content_md5 = Some(Md5::digest(&v2).into());
        let m2 = engine.put(r, body(split(&v2, 50))).await.unwrap();
        assert_eq!(read(&engine, &m2, 0, 700).await.unwrap(), v2);
    }
}

#[tokio::test]
async fn content_length_mismatch_is_incomplete_body() {
    let env = Env::new().await;
    let public = memory();
    let engine = env.engine(&public, 64, 5 << 20);
    let v1 = data(300, 3);
    let m1 = put(&engine, "len", &v1).await;
    for announced in [299u64, 301, 0, 10_000] {
        let mut r = req("len");
        r.content_length = Some(announced);
        let err = engine
            .put(r, body(split(&data(300, 4), 64)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::IncompleteBody { expected, got: 300 } if expected == announced),
            "{err:?}"
        );
        assert_eq!(engine.manifest(BUCKET, "len").await.unwrap(), m1);
    }
    assert_eq!(read(&engine, &m1, 0, 300).await.unwrap(), v1);
    assert!(env.private.pending().await.unwrap().is_empty());
}

#[tokio::test]
async fn body_error_midway_commits_nothing() {
    let env = Env::new().await;
    for part_size in [5 << 20, 100] {
        let public = memory();
        let engine = env.engine(&public, 64, part_size);
        let key = format!("broken/{part_size}");
        let v1 = data(400, 5);
        let m1 = put(&engine, &key, &v1).await;
        let pieces: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from(data(300, 6))),
            Ok(Bytes::from(data(300, 7))),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "client went away",
            )),
            Ok(Bytes::from(data(300, 8))),
        ];
        let err = engine
            .put(req(&key), futures::stream::iter(pieces))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Body(_)), "{err:?}");
        assert_eq!(engine.manifest(BUCKET, &key).await.unwrap(), m1);
        assert_eq!(read(&engine, &m1, 0, 400).await.unwrap(), v1);
        assert!(
            env.private.pending().await.unwrap().is_empty(),
            "pending row dropped"
        );
        // The partial blob never completed: whole-blob PUTs had not started, multipart
        // uploads were aborted.
        assert_eq!(the_other_blob(&public, &m1).await, None);
        // A fresh key that fails leaves no object at all.
        let err = engine
            .put(
                req(&format!("{key}/new")),
                futures::stream::iter(vec![Err::<Bytes, _>(std::io::Error::other("boom"))]),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Body(_)), "{err:?}");
        assert!(matches!(
            engine.manifest(BUCKET, &format!("{key}/new")).await,
            Err(Error::NoSuchKey { .. })
        ));
    }
}

#[tokio::test]
async fn failed_precondition_keeps_the_old_object() {
    let env = Env::new().await;
    let public = memory();
    let engine = env.engine(&public, 64, 5 << 20);
    let v1 = data(100, 9);
    let m1 = put(&engine, "pre", &v1).await;
    let mut r = req("pre");
    r.precondition = Precondition::Absent;
    let err = engine.put(r, body(vec![data(10, 1)])).await.unwrap_err();
    assert!(matches!(err, Error::PreconditionFailed), "{err:?}");
    assert_eq!(engine.manifest(BUCKET, "pre").await.unwrap(), m1);
    assert!(env.private.pending().await.unwrap().is_empty());
    let mut r = req("pre");
    r.precondition = Precondition::ETag(m1.etag.clone());
    let v2 = data(10, 2);
    let m2 = engine.put(r, body(vec![v2.clone()])).await.unwrap();
    assert_eq!(read(&engine, &m2, 0, 10).await.unwrap(), v2);
}

// ---------------------------------------------------------------------------------------
// Tampering

const CHUNK: u32 = 64;
const SEALED_CHUNK: usize = CHUNK as usize + 16;

#[tokio::test]
async fn tampered_first_chunk_fails_before_any_byte() {
    let env = Env::new().await;
    let public = memory();
    let engine = env.engine(&public, CHUNK, 5 << 20);
    let v = data(640, 10);
    let m = put(&engine, "t1", &v).await;
    let blob = m.parts[0].blob;
    // A ciphertext byte, then a tag byte of chunk 0.
    for offset in [3, SEALED_CHUNK - 1] {
        flip(&public, &blob, offset).await;
        let err = engine.open(&m, 0, 640).await.err().expect("must fail");
        assert!(
            matches!(err, Error::Integrity { chunk: 0, ref blob } if *blob == m.parts[0].blob.to_hex()),
            "{err:?}"
        );
        // A range in chunk 0 only.
        assert!(matches!(
            engine.open(&m, 10, 20).await.err(),
            Some(Error::Integrity { chunk: 0, .. })
        ));
        flip(&public, &blob, offset).await;
        assert_eq!(read(&engine, &m, 0, 640).await.unwrap(), v);
    }
    // A range that does not touch the bad chunk still reads.
    flip(&public, &blob, 3).await;
    assert_eq!(read(&engine, &m, 64, 640).await.unwrap(), &v[64..]);
}

#[tokio::test]
async fn tampered_late_chunk_cuts_the_stream_short() {
    let env = Env::new().await;
    let public = memory();
    let engine = env.engine(&public, CHUNK, 5 << 20);
    let v = data(640, 11);
    let m = put(&engine, "t2", &v).await;
    let blob = m.parts[0].blob;
    for chunk in [4usize, 8, 9] {
        flip(&public, &blob, chunk * SEALED_CHUNK + 5).await;
        let (got, failed) = read_until_error(&engine, &m).await;
        assert!(failed, "chunk {chunk}: the stream must end with an error");
        assert!(
            got.len() <= chunk * CHUNK as usize,
            "chunk {chunk}: {} bytes",
            got.len()
        );
        assert_eq!(&got[..], &v[..got.len()], "never wrong bytes");
        // Starting in the bad chunk: a clean error up front.
        assert!(matches!(
            engine.open(&m, (chunk * 64) as u64, 640).await.err(),
            Some(Error::Integrity { chunk: c, .. }) if c == chunk as u64
        ));
        flip(&public, &blob, chunk * SEALED_CHUNK + 5).await;
    }
    assert_eq!(read(&engine, &m, 0, 640).await.unwrap(), v);
}

#[tokio::test]
async fn truncated_or_missing_blob_errors() {
    let env = Env::new().await;
    let public = memory();
    let engine = env.engine(&public, CHUNK, 5 << 20);
    let v = data(640, 12);
    let m = put(&engine, "t3", &v).await;
    let blob = m.parts[0].blob;
    let sealed = get_blob(&public, &blob).await;
    // Last chunk cut short by one byte.
    put_blob(&public, &blob, sealed[..sealed.len() - 1].to_vec()).await;
    let (got, failed) = read_until_error(&engine, &m).await;
    assert!(failed);
    assert_eq!(&got[..], &v[..got.len()]);
    assert!(engine.open(&m, 600, 640).await.is_err());
    // An extra byte appended is harmless: every chunk still checks out.
    let mut longer = sealed.clone();
    longer.push(0);
    put_blob(&public, &blob, longer).await;
    assert_eq!(read(&engine, &m, 0, 640).await.unwrap(), v);
    // Gone altogether.
    public.delete(&path(&blob)).await.unwrap();
    assert!(matches!(
        engine.open(&m, 0, 640).await.err(),
        Some(Error::Integrity { chunk: 0, .. })
    ));
}

/// A public blob cut short before a chunk starts is tampering like any other: an integrity
/// failure (S3 InternalError), not a public-store outage (503, which clients retry).
#[tokio::test]
async fn blob_truncated_before_a_chunk_is_an_integrity_error() {
    let env = Env::new().await;
    let public = memory();
    let engine = env.engine(&public, CHUNK, 5 << 20);
    let v = data(640, 16);
    let m = put(&engine, "t4", &v).await;
    let blob = m.parts[0].blob;
    let sealed = get_blob(&public, &blob).await;
    put_blob(&public, &blob, sealed[..100].to_vec()).await;
    let err = engine.open(&m, 600, 640).await.err().expect("must fail");
    assert!(matches!(err, Error::Integrity { chunk: 9, .. }), "{err:?}");
}

#[tokio::test]
async fn swapped_blobs_do_not_open() {
    let env = Env::new().await;
    let public = memory();
    let engine = env.engine(&public, CHUNK, 5 << 20);
    let (va, vb) = (data(640, 13), data(640, 14));
    let ma = put(&engine, "sa", &va).await;
    let mb = put(&engine, "sb", &vb).await;
    let (ba, bb) = (ma.parts[0].blob, mb.parts[0].blob);
    let (sa, sb) = (get_blob(&public, &ba).await, get_blob(&public, &bb).await);
    put_blob(&public, &ba, sb.clone()).await;
    put_blob(&public, &bb, sa.clone()).await;
    for m in [&ma, &mb] {
        assert!(matches!(
            engine.open(m, 0, 640).await.err(),
            Some(Error::Integrity { chunk: 0, .. })
        ));
        assert!(matches!(
            engine.open(m, 500, 640).await.err(),
            Some(Error::Integrity { chunk: 7, .. })
        ));
    }
    // Swapping one chunk between two blobs of the same layout.
    put_blob(&public, &ba, sa.clone()).await;
    let mut mixed = sb.clone();
    mixed[SEALED_CHUNK * 6..SEALED_CHUNK * 7]
        .copy_from_slice(&sa[SEALED_CHUNK * 6..SEALED_CHUNK * 7]);
    put_blob(&public, &bb, mixed).await;
    let (got, failed) = read_until_error(&engine, &mb).await;
    assert!(failed);
    assert_eq!(&got[..], &vb[..got.len()]);
    // Reordering two chunks inside one blob.
    let mut reordered = sa.clone();
    reordered[..SEALED_CHUNK].copy_from_slice(&sa[SEALED_CHUNK..2 * SEALED_CHUNK]);
    reordered[SEALED_CHUNK..2 * SEALED_CHUNK].copy_from_slice(&sa[..SEALED_CHUNK]);
    put_blob(&public, &ba, reordered).await;
    assert!(engine.open(&ma, 0, 640).await.is_err());
    // Swapping with a blob of another size.
    let vc = data(200, 15);
    let mc = put(&engine, "sc", &vc).await;
    let sc = get_blob(&public, &mc.parts[0].blob).await;
    put_blob(&public, &ba, sc.clone()).await;
    put_blob(&public, &mc.parts[0].blob, sa.clone()).await;
    assert!(engine.open(&ma, 0, 640).await.is_err());
    assert!(engine.open(&ma, 600, 640).await.is_err());
    assert!(engine.open(&mc, 0, 200).await.is_err());
}

// ---------------------------------------------------------------------------------------
// gc

fn reclaimed(report: &gc::GcReport) -> HashSet<BlobId> {
    report.reclaimable.iter().map(|(b, _)| *b).collect()
}

#[tokio::test]
async fn gc_reports_then_deletes_exactly_the_orphans() {
    let env = Env::new().await;
    let public = memory();
    let engine = env.engine(&public, CHUNK, 5 << 20);
    let a1 = put(&engine, "gc/a", &data(300, 20)).await;
    let va2 = data(200, 21);
    let a2 = put(&engine, "gc/a", &va2).await;
    let b = put(&engine, "gc/b", &data(100, 22)).await;
    let vc = data(130, 23);
    let c = put(&engine, "gc/c", &vc).await;
    engine
        .private_store()
        .delete_object(BUCKET, "gc/b")
        .await
        .unwrap();
    // Something under v1/b/ that is not a blob of ours.
    public
        .put(
            &StorePath::from("v1/b/zz/not-a-blob"),
            PutPayload::from(vec![1u8]),
        )
        .await
        .unwrap();
    let orphans: HashSet<BlobId> = [a1.parts[0].blob, b.parts[0].blob].into();
    let size_of = |m: &Manifest| m.parts[0].layout().unwrap().sealed_total();

    let dry = gc::run(&public, None, env.private.as_ref(), Duration::ZERO, false)
        .await
        .unwrap();
    assert!(!dry.applied);
    assert_eq!(dry.scanned, 5);
    assert_eq!(dry.live, 2);
    assert_eq!(dry.foreign, 1);
    assert_eq!(dry.young, 0);
    assert_eq!(reclaimed(&dry), orphans);
    assert_eq!(dry.reclaimable_bytes(), size_of(&a1) + size_of(&b));
    assert_eq!(listing(&public).await.len(), 5, "a dry run deletes nothing");
    assert!(matches!(
        env.private.blob_state(a1.parts[0].blob).await.unwrap(),
        BlobState::Orphan { .. }
    ));

    let applied = gc::run(&public, None, env.private.as_ref(), Duration::ZERO, true)
        .await
        .unwrap();
    assert!(applied.applied);
    assert_eq!(reclaimed(&applied), orphans);
    assert_eq!(applied.live, 2);
    let left: HashSet<String> = listing(&public)
        .await
        .into_iter()
        .map(|o| o.location.to_string())
        .collect();
    let expected: HashSet<String> = [
        a2.parts[0].blob.public_path(),
        c.parts[0].blob.public_path(),
        "v1/b/zz/not-a-blob".to_string(),
    ]
    .into();
    assert_eq!(left, expected);
    for blob in &orphans {
        assert_eq!(
            env.private.blob_state(*blob).await.unwrap(),
            BlobState::Unknown
        );
        assert!(env.private.leaves(*blob, 0, 0).await.is_err());
    }
    assert_eq!(read(&engine, &a2, 0, 200).await.unwrap(), va2);
    assert_eq!(read(&engine, &c, 0, 130).await.unwrap(), vc);

    let again = gc::run(&public, None, env.private.as_ref(), Duration::ZERO, true)
        .await
        .unwrap();
    assert!(again.reclaimable.is_empty());
    assert_eq!((again.scanned, again.live, again.foreign), (3, 2, 1));
}

#[tokio::test]
async fn gc_keeps_what_is_younger_than_grace() {
    let env = Env::new().await;
    let public = memory();
    let engine = env.engine(&public, CHUNK, 5 << 20);
    // An upload in flight: pending row and blob, both fresh.
    let uploading = BlobId::random();
    env.private
        .add_pending(uploading, gateway::now_ms())
        .await
        .unwrap();
    put_blob(&public, &uploading, vec![0; 80]).await;
    // A pending row whose blob has not reached the public store yet.
    let starting = BlobId::random();
    env.private
        .add_pending(starting, gateway::now_ms())
        .await
        .unwrap();
    // A fresh orphan.
    let old = put(&engine, "young", &data(10, 1)).await;
    put(&engine, "young", &data(10, 2)).await;

    let hour = Duration::from_secs(3600);
    let report = gc::run(&public, None, env.private.as_ref(), hour, true)
        .await
        .unwrap();
    assert_eq!(report.young, 2);
    assert_eq!(report.live, 1);
    assert!(report.reclaimable.is_empty());
    assert_eq!(report.stale_pending, 0);
    assert_eq!(listing(&public).await.len(), 3);
    let mut pending = env.private.pending().await.unwrap();
    pending.sort();
    let mut want = vec![uploading, starting];
    want.sort();
    assert_eq!(
        pending.into_iter().map(|(b, _)| b).collect::<Vec<_>>(),
        want
    );

    // Once the grace period is over they go.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = gc::run(&public, None, env.private.as_ref(), Duration::ZERO, true)
        .await
        .unwrap();
    assert_eq!(reclaimed(&report), [uploading, old.parts[0].blob].into());
    assert_eq!(report.stale_pending, 1);
    assert!(env.private.pending().await.unwrap().is_empty());
    assert_eq!(listing(&public).await.len(), 1);
}

#[tokio::test]
async fn commit_after_reap_fails_with_reaped() {
    let env = Env::new().await;
    let public = memory();
    // Store level: a pending blob reaped by gc can no longer be committed.
    let blob = BlobId::random();
    env.private.add_pending(blob, 1).await.unwrap();
    put_blob(&public, &blob, vec![0; 80]).await;
    let report = gc::run(&public, None, env.private.as_ref(), Duration::ZERO, true)
        .await
        .unwrap();
    assert_eq!(reclaimed(&report), [blob].into());
    assert!(listing(&public).await.is_empty());
    let mut manifest = Manifest {
        suite: keyring::SUITE_V1,
        dek_id: keyring::DekId::random(),
        size: 64,
        last_modified_ms: 0,
        etag: "\"x\"".into(),
        content_type: None,
        headers: Vec::new(),
        metadata: Vec::new(),
        checksums: Vec::new(),
        patient: None,
        parts: Vec::new(),
    };
    manifest.parts.push(keyring::Part {
        blob,
        chunk_size: 64,
        plaintext_len: 64,
        root: [0; 32],
    });
    let err = env
        .private
        .commit_put(PutCommit {
            bucket: BUCKET.into(),
            key: "reaped".into(),
            manifest,
            stanzas: Vec::new(),
            precondition: Precondition::None,
            upload: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Reaped), "{err:?}");
    assert!(env
        .private
        .manifest(BUCKET, "reaped")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn engine_put_racing_gc_fails_with_reaped() {
    let env = Env::new().await;
    let public = memory();
    let engine = env.engine(&public, CHUNK, 5 << 20);
    let v1 = data(100, 30);
    let m1 = put(&engine, "race", &v1).await;
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, std::io::Error>>();
    tx.unbounded_send(Ok(Bytes::from(data(100, 31)))).unwrap();
    let writer = engine.put(req("race"), rx);
    let gc_pass = async {
        // Let the writer record its pending row and read the first piece.
        while env.private.pending().await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let report = gc::run(&public, None, env.private.as_ref(), Duration::ZERO, true)
            .await
            .unwrap();
        assert_eq!(report.stale_pending, 1, "{report:?}");
        tx.unbounded_send(Ok(Bytes::from(data(100, 32)))).unwrap();
        drop(tx);
    };
    let (result, ()) = tokio::join!(writer, gc_pass);
    assert!(matches!(result, Err(Error::Reaped)), "{result:?}");
    assert_eq!(engine.manifest(BUCKET, "race").await.unwrap(), m1);
    assert_eq!(read(&engine, &m1, 0, 100).await.unwrap(), v1);
    // The blob it uploaded anyway is collected by the next pass.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = gc::run(&public, None, env.private.as_ref(), Duration::ZERO, true)
        .await
        .unwrap();
    assert_eq!(report.reclaimable.len(), 1);
    assert_eq!(
        listing(&public).await[0].location.as_ref(),
        m1.parts[0].blob.public_path()
    );
}
