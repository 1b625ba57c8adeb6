//! The transparency log and `verify`: activity produces entries whose commitments are the
//! published leaves; each kind of tampering is detected and named.

use std::sync::Arc;

use bytes::Bytes;
use gateway::engine::log::{publish, verify, VerifyReport, CHECKPOINT_PATH};
use gateway::engine::record::{Engine, EngineConfig, PutRequest};
use gateway::store::private::prelude::*;
use gateway::store::private::sled::SledStore;
use gateway::store::public::PublicStore;
use keyring::{Identity, Manifest};
use object_store::path::Path as StorePath;

struct Env {
    dir: tempfile::TempDir,
    public: PublicStore,
    institution: Arc<Identity>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let public: PublicStore =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        std::fs::create_dir_all(dir.path().join("private")).unwrap();
        Env {
            dir,
            public,
            institution: Arc::new(Identity::generate()),
        }
    }

    fn store(&self) -> Arc<SledStore> {
        Arc::new(SledStore::open(&self.dir.path().join("private"), 4 << 20).unwrap())
    }

    fn engine(&self, store: &Arc<SledStore>) -> Engine {
        Engine::new(
            Arc::clone(&self.public),
            store.clone() as Arc<dyn PrivateStore>,
            Arc::clone(&self.institution),
            EngineConfig {
                chunk_size: 1024,
                ..Default::default()
            },
        )
    }

    async fn verify(&self, deep: bool) -> VerifyReport {
        let store = self.store();
        verify(
            &*store,
            &self.public,
            &self.institution.recipient(),
            deep,
            &|_, _, _| {},
        )
        .await
        .unwrap()
    }

    /// Raw access to the sled trees (the store must be closed). sled lets go of its file
    /// lock a moment after the last handle in this process is dropped: retry for a while,
    /// as audit.rs does.
    fn raw(&self) -> sled::Db {
        for _ in 0..100 {
            if let Ok(db) = sled::open(self.dir.path().join("private")) {
                return db;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("cannot open the private store")
    }
}

async fn put(engine: &Engine, key: &str, bytes: &[u8]) -> Manifest {
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::copy_from_slice(bytes))]);
    engine
        .put(
            PutRequest {
                bucket: "b".into(),
                key: key.into(),
                ..Default::default()
            },
            body,
        )
        .await
        .unwrap()
}

/// Three objects, a delete, a copy, published; returns the env with the store closed.
async fn populated() -> Env {
    let env = Env::new();
    let store = env.store();
    store.create_bucket("b", 1).await.unwrap();
    let engine = env.engine(&store);
    put(&engine, "one", &vec![1u8; 5000]).await;
    let two = put(&engine, "two", b"two").await;
    put(&engine, "gone", b"bye").await;
    engine.delete("b", "gone", "AKTEST").await.unwrap();
    engine
        .copy(&two, "b", "two-copy", None, "AKTEST")
        .await
        .unwrap();
    store.flush().await.unwrap();
    assert_eq!(
        publish(&*store, &env.public, &env.institution)
            .await
            .unwrap(),
        Some(5)
    );
    put(&engine, "three", b"three").await;
    assert_eq!(
        publish(&*store, &env.public, &env.institution)
            .await
            .unwrap(),
        Some(6)
    );
    let kinds: Vec<String> = store
        .events(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["put", "put", "put", "delete", "copy", "put"]);
    drop(engine);
    drop(store);
    env
}

fn assert_clean(r: &VerifyReport) {
    assert!(r.problems.is_empty(), "{:#?}", r.problems);
}

fn assert_named(r: &VerifyReport, needle: &str) {
    assert!(
        r.problems.iter().any(|p| p.contains(needle)),
        "{needle:?} not in {:#?}",
        r.problems
    );
}

#[tokio::test]
async fn an_untouched_gateway_verifies_deep() {
    let env = populated().await;
    let r = env.verify(true).await;
    assert_clean(&r);
    assert_eq!(
        (r.log_size, r.checkpoints, r.published_size),
        (6, 2, Some(6))
    );
    assert_eq!((r.objects, r.blobs_rehashed), (4, 4));
    // The published tiles rebuild the checkpoint's root.
    let store = env.store();
    let leaves = store.log_leaves(0, 6).await.unwrap();
    let tile = env
        .public
        .get(&StorePath::from("v1/log/tile/0/000.p/6"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(tile.to_vec(), leaves.concat());
}

#[tokio::test]
async fn a_flipped_blob_byte_is_named_by_deep_verify() {
    let env = populated().await;
    let m = {
        let store = env.store();
        store.manifest("b", "one").await.unwrap().unwrap()
    };
    let path = env
        .dir
        .path()
        .join(gateway::store::public::blob_path(&m.parts[0].blob).as_ref());
    let mut raw = std::fs::read(&path).unwrap();
    raw[3000] ^= 1;
    std::fs::write(&path, raw).unwrap();
    assert_clean(&env.verify(false).await);
    let r = env.verify(true).await;
    assert_named(&r, "object b/one: blob");
    assert_named(&r, "chunk 2 does not match");
}

#[tokio::test]
async fn an_edited_manifest_root_is_named() {
    let env = populated().await;
    {
        let db = env.raw();
        let objects = db.open_tree("objects").unwrap();
        let k = b"b\0two".to_vec();
        let mut m = Manifest::decode(&objects.get(&k).unwrap().unwrap()).unwrap();
        m.parts[0].root[0] ^= 1;
        objects.insert(k, m.encode()).unwrap();
        db.flush().unwrap();
    }
    let r = env.verify(false).await;
    assert_named(&r, "object b/two: manifest root differs");
    assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
}

#[tokio::test]
async fn a_deleted_log_entry_is_named() {
    let env = populated().await;
    {
        let db = env.raw();
        db.open_tree("events")
            .unwrap()
            .remove(2u64.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    assert_named(&env.verify(false).await, "log index 2: entry missing");
}

#[tokio::test]
async fn a_rewritten_log_is_named() {
    // A fork of the same size: entry 1 edited and its leaf recomputed to match.
    let env = populated().await;
    let mut e = env.store().events(1, 1).await.unwrap().remove(0);
    {
        let db = env.raw();
        // Entry 1 was written alone, so its row holds only it; a row of one JSON event is
        // still read. Level-0 tile 0 holds the leaves.
        let events = db.open_tree("events").unwrap();
        let tiles = db.open_tree("log_tiles").unwrap();
        let tile0 = [0u8; 9];
        e.detail = "nothing happened here".into();
        let leaf = keyring::leaf_hash(&gateway::engine::log::commitment_of(&e).unwrap());
        events
            .insert(1u64.to_be_bytes(), serde_json::to_vec(&e).unwrap())
            .unwrap();
        let mut row = tiles.get(tile0).unwrap().unwrap().to_vec();
        row[32..64].copy_from_slice(&leaf);
        tiles.insert(tile0, row).unwrap();
        db.flush().unwrap();
    }
    let r = env.verify(false).await;
    assert_named(&r, "the log was rewritten");
    assert_named(&r, "published checkpoint");
}

#[tokio::test]
async fn an_older_or_badly_signed_published_checkpoint_is_named() {
    let env = populated().await;
    let store = env.store();
    let first = store.checkpoints().await.unwrap()[0].1.clone();
    drop(store);
    env.public
        .put(
            &StorePath::from(CHECKPOINT_PATH),
            first.clone().into_bytes().into(),
        )
        .await
        .unwrap();
    assert_named(&env.verify(false).await, "rolled back");

    let mut bad = first.into_bytes();
    let n = bad.len();
    bad[n - 5] = if bad[n - 5] == b'A' { b'B' } else { b'A' };
    env.public
        .put(&StorePath::from(CHECKPOINT_PATH), bad.into())
        .await
        .unwrap();
    assert_named(
        &env.verify(false).await,
        "published checkpoint: signature does not verify",
    );
}

#[tokio::test]
async fn patient_chains_link_each_patients_entries() {
    let env = Env::new();
    let store = env.store();
    for (i, p) in ["a", "b", "a", "a", "b"].iter().enumerate() {
        store
            .append_event(gateway::store::private::Event {
                kind: "read".into(),
                actor: "t".into(),
                patient: Some((*p).into()),
                time_ms: i as u64,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let events = store.events(0, 10).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.patient_seq).collect();
    assert_eq!(seqs, [1, 1, 2, 3, 2]);
    assert_eq!(
        events[2].patient_prev,
        hex::encode(gateway::engine::log::commitment_of(&events[0]).unwrap())
    );
    drop(store);
    assert_clean(&env.verify(false).await);
}

fn read_event(i: usize) -> gateway::store::private::Event {
    gateway::store::private::Event {
        kind: "read".into(),
        actor: "t".into(),
        patient: Some(format!("p{}", i % 5)),
        time_ms: i as u64,
        ..Default::default()
    }
}

/// Appends `n` entries in batches of varying size; returns the leaves.
async fn grow(store: &SledStore, n: usize) -> Vec<keyring::Hash> {
    let mut done = store.log_size().await.unwrap() as usize;
    let target = done + n;
    let mut step = 1;
    while done < target {
        let k = step.min(target - done);
        store
            .append_events((done..done + k).map(read_event).collect())
            .await
            .unwrap();
        done += k;
        step = step * 3 % 1000 + 1;
    }
    store.log_leaves(0, target as u64).await.unwrap()
}

/// Roots, inclusion and consistency proofs from the stored subtree hashes equal the ones
/// computed from every leaf, for every size up to 520, sizes up to 1100 and sizes around the 65 536
/// boundary (the second tile level); so do the tiles a publication writes.
#[tokio::test]
async fn stored_proofs_and_tiles_equal_naive_ones() {
    use gateway::engine::log::{consistency_proof, inclusion_proof, tiles_between, tree_root};
    use keyring::merkle::ConsistencyProof;
    use keyring::InclusionProof;
    let env = Env::new();
    let store = env.store();
    let leaves = grow(&store, 1100).await;
    for n in (1..=520u64).chain((521..=1100).step_by(23)) {
        let l = &leaves[..n as usize];
        assert_eq!(
            tree_root(&*store, n).await.unwrap(),
            keyring::root(l),
            "{n}"
        );
        for i in [0, n / 3, n / 2, n - 1, (n * 7919) % n] {
            assert_eq!(
                inclusion_proof(&*store, i, n).await.unwrap(),
                InclusionProof::generate(l, i).unwrap(),
                "inclusion {i} of {n}"
            );
        }
        for m in [0, 1, n / 3, n / 2, n - 1, n, (n * 104729) % n] {
            let m = m.min(n);
            assert_eq!(
                consistency_proof(&*store, m, n).await.unwrap(),
                ConsistencyProof::generate(&leaves, m, n).unwrap(),
                "consistency {m} to {n}"
            );
        }
        for old in [
            0,
            n - 1,
            n / 2,
            n.saturating_sub(256),
            n.saturating_sub(300),
        ] {
            assert_eq!(
                tiles_between(&*store, old, n).await.unwrap(),
                keyring::tiles_for(&leaves, old, n).unwrap(),
                "tiles {old} to {n}"
            );
        }
    }
    // Past the end of the log, or an index past the size: refused.
    assert!(tree_root(&*store, 1101).await.is_err());
    assert!(inclusion_proof(&*store, 5, 5).await.is_err());
    assert!(consistency_proof(&*store, 6, 5).await.is_err());

    let leaves = grow(&store, 66_000).await;
    for n in [65_535u64, 65_536, 65_537, 65_792, 67_100] {
        let l = &leaves[..n as usize];
        assert_eq!(tree_root(&*store, n).await.unwrap(), keyring::root(l));
        for i in [0, 1, 300, 65_534, n - 1] {
            assert_eq!(
                inclusion_proof(&*store, i, n).await.unwrap(),
                InclusionProof::generate(l, i).unwrap()
            );
        }
        for m in [1, 256, 1100, 65_535, 65_536, n - 1] {
            let m = m.min(n);
            assert_eq!(
                consistency_proof(&*store, m, n).await.unwrap(),
                ConsistencyProof::generate(&leaves, m, n).unwrap()
            );
        }
        assert_eq!(
            tiles_between(&*store, 1100, n).await.unwrap(),
            keyring::tiles_for(&leaves, 1100, n).unwrap()
        );
    }
}

/// A store whose log kept one row per leaf (before tiles) is converted at open.
#[tokio::test]
async fn a_log_of_leaf_rows_is_converted_to_tiles() {
    let env = Env::new();
    let leaves = {
        let store = env.store();
        grow(&store, 777).await
    };
    {
        let db = env.raw();
        db.drop_tree("log_tiles").unwrap();
        db.open_tree("log_meta").unwrap().remove("tiles").unwrap();
        let rows = db.open_tree("log_leaves").unwrap();
        for (i, leaf) in leaves.iter().enumerate() {
            rows.insert((i as u64).to_be_bytes(), &leaf[..]).unwrap();
        }
        db.flush().unwrap();
    }
    let store = env.store();
    assert_eq!(store.log_leaves(0, 777).await.unwrap(), leaves);
    assert_eq!(
        gateway::engine::log::tree_root(&*store, 777).await.unwrap(),
        keyring::root(&leaves)
    );
    grow(&store, 300).await;
    drop(store);
    assert_clean(&env.verify(false).await);
    assert!(!env
        .raw()
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == b"log_leaves"));
}

/// A tampered stored tile above the leaves (which proofs would be served from) is named.
#[tokio::test]
async fn an_edited_tile_is_named() {
    let env = Env::new();
    {
        let store = env.store();
        grow(&store, 600).await;
    }
    assert_clean(&env.verify(false).await);
    {
        let db = env.raw();
        let tiles = db.open_tree("log_tiles").unwrap();
        let mut k = vec![1u8];
        k.extend_from_slice(&0u64.to_be_bytes());
        let mut row = tiles.get(&k).unwrap().unwrap().to_vec();
        row[40] ^= 1;
        tiles.insert(k, row).unwrap();
        db.flush().unwrap();
    }
    assert_named(
        &env.verify(false).await,
        "log subtree 8/1: stored hash differs",
    );
}

/// Concurrent writes (logged in their commits) and reads (through the group-commit
/// appender) from many tasks: every entry gets its own dense index, each patient's chain
/// holds, and the log verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_and_reads_keep_the_log_dense() {
    let env = Env::new();
    let store = env.store();
    store.create_bucket("b", 1).await.unwrap();
    let engine = Arc::new(env.engine(&store));
    let m = put(&engine, "seed", b"seed").await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let engine = Arc::clone(&engine);
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                put(&engine, &format!("k{t}-{i}"), b"x").await;
            }
            Vec::new()
        }));
    }
    for t in 0..48 {
        let (engine, m) = (Arc::clone(&engine), m.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..20 {
                got.push(
                    engine
                        .log_read("b", "seed", &m, &format!("reader{t}"), format!("{i}"))
                        .await
                        .unwrap(),
                );
            }
            got
        }));
    }
    let mut indices = Vec::new();
    for t in tasks {
        indices.extend(t.await.unwrap());
    }
    indices.sort();
    indices.dedup();
    assert_eq!(indices.len(), 48 * 20);
    assert_eq!(store.log_size().await.unwrap(), 1 + 80 + 960);
    let events = store.events(0, 2000).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "read").count(), 960);
    for i in indices {
        assert_eq!(events[i as usize].kind, "read");
    }
    drop(engine);
    drop(store);
    assert_clean(&env.verify(false).await);
}
