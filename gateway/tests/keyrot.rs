//! Institution key rotation (`gateway::engine::keyrot`): the handover keeps the log's origin and makes
//! the new key sign the next checkpoints; `verify` checks each checkpoint against the key in
//! force at its size; records open with the old key until re-wrapped, and with the new one
//! after; a re-run of either step changes nothing.

use std::sync::Arc;

use bytes::Bytes;
use gateway::engine::keyrot::{handover, key_history, published_rollovers, rewrap};
use gateway::engine::log::{publish, published_checkpoint, verify};
use gateway::engine::record::{Engine, EngineConfig, PutRequest};
use gateway::store::private::prelude::*;
use gateway::store::private::sled::SledStore;
use gateway::store::public::PublicStore;
use keyring::checkpoint::SignedNote;
use keyring::Identity;

fn engine(public: &PublicStore, store: &Arc<SledStore>, id: &Arc<Identity>) -> Arc<Engine> {
    Arc::new(Engine::new(
        Arc::clone(public),
        store.clone() as Arc<dyn PrivateStore>,
        Arc::clone(id),
        EngineConfig {
            chunk_size: 1024,
            ..Default::default()
        },
    ))
}

async fn put(engine: &Engine, key: &str, bytes: &[u8]) {
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
        .unwrap();
}

async fn read(engine: &Arc<Engine>, key: &str) -> Vec<u8> {
    use futures::StreamExt;
    let m = engine.manifest("b", key).await.unwrap();
    let mut s = engine.open(&m, 0, m.size).await.unwrap();
    let mut out = Vec::new();
    while let Some(piece) = s.next().await {
        out.extend_from_slice(&piece.unwrap());
    }
    out
}

fn origin_of(note: &str) -> String {
    SignedNote::parse(note)
        .unwrap()
        .checkpoint()
        .unwrap()
        .origin
}

#[tokio::test]
async fn handover_rewrap_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let public: PublicStore =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    std::fs::create_dir_all(dir.path().join("private")).unwrap();
    let store = Arc::new(SledStore::open(&dir.path().join("private"), 4 << 20).unwrap());
    store.create_bucket("b", 1).await.unwrap();
    let (old, new) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let before = engine(&public, &store, &old);
    put(&before, "one", &vec![7u8; 3000]).await;
    put(&before, "two", b"two").await;
    publish(&*store, &public, &old).await.unwrap();
    let origin = origin_of(&published_checkpoint(&public).await.unwrap());

    let signed = handover(&*store, &public, &old, &new).await.unwrap();
    assert_eq!(signed.rollover.seq, 1);
    assert_eq!(signed.rollover.origin, origin);
    assert!(signed.verify(&old.recipient()).is_ok());
    // Run again (a resumed handover): nothing new.
    let size = store.log_size().await.unwrap();
    handover(&*store, &public, &old, &new).await.unwrap();
    assert_eq!(store.log_size().await.unwrap(), size);
    let chain = published_rollovers(&public).await.unwrap();
    assert_eq!(chain, vec![signed.clone()]);
    let keys = key_history(&chain, &new.recipient()).unwrap();
    assert_eq!(keys.len(), 2);
    assert!(key_history(&chain, &Identity::generate().recipient()).is_err());

    // The checkpoint after the handover: same origin, the new key's signature.
    let note = published_checkpoint(&public).await.unwrap();
    assert_eq!(origin_of(&note), origin);
    assert!(new.recipient().verify_checkpoint(&origin, &note).is_ok());
    assert!(old.recipient().verify_checkpoint(&origin, &note).is_err());

    // Before the re-wrap, records open only with the old key kept beside the new one.
    let after = engine(&public, &store, &new);
    let m = after.manifest("b", "one").await.unwrap();
    assert!(after.open(&m, 0, m.size).await.is_err());
    after.set_previous(vec![Arc::clone(&old)]);
    assert_eq!(read(&after, "one").await, vec![7u8; 3000]);

    let report = rewrap(&*store, &new, &[Arc::clone(&old)], &|_, _, _| {})
        .await
        .unwrap();
    assert_eq!((report.rewrapped, report.skipped), (2, 0));
    let again = rewrap(&*store, &new, &[Arc::clone(&old)], &|_, _, _| {})
        .await
        .unwrap();
    assert_eq!((again.rewrapped, again.skipped), (0, 2));
    // Now the new key alone opens them.
    let only_new = engine(&public, &store, &new);
    assert_eq!(read(&only_new, "two").await, b"two");

    // New writes; the log verifies against the history of keys.
    put(&only_new, "three", b"three").await;
    publish(&*store, &public, &new).await.unwrap();
    let r = verify(&*store, &public, &new.recipient(), true, &|_, _, _| {})
        .await
        .unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert!(r.checkpoints >= 3);
    // Checked against the old key as today's, the chain does not end there.
    let r = verify(&*store, &public, &old.recipient(), false, &|_, _, _| {})
        .await
        .unwrap();
    assert!(!r.problems.is_empty());
}
