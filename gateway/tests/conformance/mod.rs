//! The `PrivateStore` conformance suite.
//!
//! Every function takes a fresh, empty store behind `&dyn PrivateStore` and checks one part
//! of the contract in `gateway::private`. Each backend's test file (`private_sled.rs`, and
//! later PostgreSQL) includes this module with `mod conformance;` and calls every function on
//! its own fresh store.
#![allow(dead_code)]

use gateway::private::{
    AccessKeyRecord, BlobState, PartRecord, Precondition, PrivateStore, PutCommit, UploadRecord,
};
use gateway::Error;
use keyring::{BlobId, DataKey, DekId, Hash, Identity, Manifest, Part, WrappedKey, SUITE_V1};

/// A valid manifest over fresh parts of the given plaintext lengths (chunk size 64).
pub fn manifest_with(parts: &[(BlobId, u64)], etag: &str) -> Manifest {
    Manifest {
        suite: SUITE_V1,
        dek_id: DekId::random(),
        size: parts.iter().map(|(_, n)| n).sum(),
        last_modified_ms: 1_700_000_000_000,
        etag: etag.to_string(),
        content_type: Some("application/octet-stream".into()),
        headers: Vec::new(),
        metadata: vec![("patient-hint".into(), "none".into())],
        checksums: Vec::new(),
        patient: None,
        parts: parts
            .iter()
            .map(|&(blob, plaintext_len)| Part {
                blob,
                chunk_size: 64,
                plaintext_len,
                root: [7u8; 32],
            })
            .collect(),
    }
}

pub fn stanza() -> WrappedKey {
    Identity::generate()
        .recipient()
        .wrap_key(&DataKey::generate())
        .expect("wrap")
}

fn commit(bucket: &str, key: &str, manifest: &Manifest, precondition: Precondition) -> PutCommit {
    PutCommit {
        bucket: bucket.into(),
        key: key.into(),
        manifest: manifest.clone(),
        stanzas: vec![stanza()],
        precondition,
        upload: None,
    }
}

/// Writes a fresh object the way the engine does: pending row, then commit. Returns its
/// manifest.
pub async fn put_object(store: &dyn PrivateStore, bucket: &str, key: &str, etag: &str) -> Manifest {
    let blob = BlobId::random();
    store.add_pending(blob, gateway::now_ms()).await.unwrap();
    let m = manifest_with(&[(blob, 100)], etag);
    store
        .commit_put(commit(bucket, key, &m, Precondition::None))
        .await
        .unwrap();
    m
}

pub async fn conformance_buckets(store: &dyn PrivateStore) {
    assert!(store.list_buckets().await.unwrap().is_empty());
    assert_eq!(store.bucket("b1").await.unwrap(), None);
    store.create_bucket("b2", 20).await.unwrap();
    store.create_bucket("b1", 10).await.unwrap();
    assert!(matches!(
        store.create_bucket("b1", 30).await,
        Err(Error::BucketExists(name)) if name == "b1"
    ));
    // The failed create did not overwrite the first one.
    let b1 = store.bucket("b1").await.unwrap().unwrap();
    assert_eq!((b1.name.as_str(), b1.created_ms), ("b1", 10));
    let names: Vec<_> = store
        .list_buckets()
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.name, b.created_ms))
        .collect();
    assert_eq!(names, vec![("b1".to_string(), 10), ("b2".to_string(), 20)]);

    assert!(matches!(
        store.delete_bucket("missing").await,
        Err(Error::NoSuchBucket(name)) if name == "missing"
    ));

    put_object(store, "b1", "k", "\"e\"").await;
    assert!(matches!(
        store.delete_bucket("b1").await,
        Err(Error::BucketNotEmpty(name)) if name == "b1"
    ));
    // Overwriting does not count twice: one delete empties the bucket.
    put_object(store, "b1", "k", "\"e2\"").await;
    assert!(store.delete_object("b1", "k").await.unwrap().is_some());
    store.delete_bucket("b1").await.unwrap();
    assert_eq!(store.bucket("b1").await.unwrap(), None);
    let names: Vec<_> = store
        .list_buckets()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, vec!["b2".to_string()]);
    // The name is free again.
    store.create_bucket("b1", 40).await.unwrap();
    assert_eq!(store.bucket("b1").await.unwrap().unwrap().created_ms, 40);
}

pub async fn conformance_commit_requires_pending(store: &dyn PrivateStore) {
    store.create_bucket("b", 1).await.unwrap();
    let blob = BlobId::random();
    let m = manifest_with(&[(blob, 10)], "\"x\"");
    assert!(matches!(
        store
            .commit_put(commit("b", "k", &m, Precondition::None))
            .await,
        Err(Error::Reaped)
    ));
    assert_eq!(store.manifest("b", "k").await.unwrap(), None);
    assert_eq!(store.blob_state(blob).await.unwrap(), BlobState::Unknown);
    assert!(store.stanzas(m.dek_id).await.unwrap().is_empty());
    // The failed commit did not count an object in the bucket.
    store.delete_bucket("b").await.unwrap();
}

pub async fn conformance_commit_to_missing_bucket(store: &dyn PrivateStore) {
    let blob = BlobId::random();
    store.add_pending(blob, 5).await.unwrap();
    let m = manifest_with(&[(blob, 10)], "\"x\"");
    assert!(matches!(
        store.commit_put(commit("nope", "k", &m, Precondition::None)).await,
        Err(Error::NoSuchBucket(b)) if b == "nope"
    ));
    // Nothing moved: the blob is still pending.
    assert_eq!(
        store.blob_state(blob).await.unwrap(),
        BlobState::Pending { created_ms: 5 }
    );
}

pub async fn conformance_commit_and_overwrite(store: &dyn PrivateStore) {
    store.create_bucket("b", 1).await.unwrap();
    let blob1 = BlobId::random();
    store.add_pending(blob1, 100).await.unwrap();
    assert_eq!(
        store.blob_state(blob1).await.unwrap(),
        BlobState::Pending { created_ms: 100 }
    );
    assert_eq!(store.pending().await.unwrap(), vec![(blob1, 100)]);
    let m1 = manifest_with(&[(blob1, 100)], "\"one\"");
    let s1 = stanza();
    let old = store
        .commit_put(PutCommit {
            bucket: "b".into(),
            key: "k".into(),
            manifest: m1.clone(),
            stanzas: vec![s1.clone()],
            precondition: Precondition::None,
            upload: None,
        })
        .await
        .unwrap();
    assert_eq!(old, None);
    store.flush().await.unwrap();
    assert_eq!(store.manifest("b", "k").await.unwrap(), Some(m1.clone()));
    assert_eq!(
        store.blob_state(blob1).await.unwrap(),
        BlobState::Referenced(1)
    );
    assert!(store.pending().await.unwrap().is_empty());
    assert_eq!(store.stanzas(m1.dek_id).await.unwrap(), vec![s1]);

    // Overwrite: the old blob becomes an orphan, the old DEK record goes away.
    let blob2 = BlobId::random();
    store.add_pending(blob2, 200).await.unwrap();
    let m2 = manifest_with(&[(blob2, 50)], "\"two\"");
    let s2 = stanza();
    let before = gateway::now_ms();
    let old = store
        .commit_put(PutCommit {
            bucket: "b".into(),
            key: "k".into(),
            manifest: m2.clone(),
            stanzas: vec![s2.clone()],
            precondition: Precondition::None,
            upload: None,
        })
        .await
        .unwrap();
    let after = gateway::now_ms();
    assert_eq!(old, Some(m1.clone()));
    assert_eq!(store.manifest("b", "k").await.unwrap(), Some(m2.clone()));
    assert_eq!(
        store.blob_state(blob2).await.unwrap(),
        BlobState::Referenced(1)
    );
    match store.blob_state(blob1).await.unwrap() {
        BlobState::Orphan { since_ms } => assert!(
            (before..=after).contains(&since_ms),
            "orphaned at {since_ms}, outside {before}..={after}"
        ),
        other => panic!("old blob should be an orphan, is {other:?}"),
    }
    assert!(store.stanzas(m1.dek_id).await.unwrap().is_empty());
    assert_eq!(store.stanzas(m2.dek_id).await.unwrap(), vec![s2]);
    let listed = store.list_objects("b", "", "", 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, "k");
    assert_eq!(listed[0].manifest, m2);
}

/// A copy shares the DEK and the blob: both stay until the last reference goes.
pub async fn conformance_shared_blob_and_dek(store: &dyn PrivateStore) {
    store.create_bucket("b", 1).await.unwrap();
    let m = put_object(store, "b", "orig", "\"o\"").await;
    let blob = m.parts[0].blob;
    let s_orig = store.stanzas(m.dek_id).await.unwrap();
    assert_eq!(s_orig.len(), 1);
    let extra = stanza();
    // A copy: same manifest (same DEK, same blob), an added stanza, no pending row needed.
    store
        .commit_put(PutCommit {
            bucket: "b".into(),
            key: "copy".into(),
            manifest: m.clone(),
            stanzas: vec![s_orig[0].clone(), extra.clone()],
            precondition: Precondition::None,
            upload: None,
        })
        .await
        .unwrap();
    assert_eq!(
        store.blob_state(blob).await.unwrap(),
        BlobState::Referenced(2)
    );
    assert_eq!(
        store.stanzas(m.dek_id).await.unwrap(),
        vec![s_orig[0].clone(), extra.clone()]
    );
    assert_eq!(
        store.delete_object("b", "orig").await.unwrap(),
        Some(m.clone())
    );
    assert_eq!(
        store.blob_state(blob).await.unwrap(),
        BlobState::Referenced(1)
    );
    assert_eq!(store.stanzas(m.dek_id).await.unwrap().len(), 2);
    assert_eq!(
        store.delete_object("b", "copy").await.unwrap(),
        Some(m.clone())
    );
    assert!(matches!(
        store.blob_state(blob).await.unwrap(),
        BlobState::Orphan { .. }
    ));
    assert!(store.stanzas(m.dek_id).await.unwrap().is_empty());
    store.delete_bucket("b").await.unwrap();
}

pub async fn conformance_delete_object(store: &dyn PrivateStore) {
    store.create_bucket("b", 1).await.unwrap();
    let m = put_object(store, "b", "k", "\"e\"").await;
    let blob = m.parts[0].blob;
    assert_eq!(store.stanzas(m.dek_id).await.unwrap().len(), 1);
    assert_eq!(
        store.delete_object("b", "k").await.unwrap(),
        Some(m.clone())
    );
    store.flush().await.unwrap();
    assert_eq!(store.manifest("b", "k").await.unwrap(), None);
    assert!(matches!(
        store.blob_state(blob).await.unwrap(),
        BlobState::Orphan { .. }
    ));
    // Crypto-shredding: no stanza of the deleted object's DEK is left.
    assert!(store.stanzas(m.dek_id).await.unwrap().is_empty());
    assert!(store
        .list_objects("b", "", "", 10)
        .await
        .unwrap()
        .is_empty());
    // Deleting again, or a key that never existed, is not an error.
    assert_eq!(store.delete_object("b", "k").await.unwrap(), None);
    assert_eq!(store.delete_object("b", "never").await.unwrap(), None);
    assert!(matches!(
        store.delete_object("missing", "k").await,
        Err(Error::NoSuchBucket(b)) if b == "missing"
    ));
}

pub async fn conformance_preconditions(store: &dyn PrivateStore) {
    store.create_bucket("b", 1).await.unwrap();
    let fresh = |etag: &str| {
        let blob = BlobId::random();
        (blob, manifest_with(&[(blob, 1)], etag))
    };

    // If-Match on a missing key fails.
    let (blob, m) = fresh("\"a\"");
    store.add_pending(blob, 1).await.unwrap();
    assert!(matches!(
        store
            .commit_put(commit("b", "k", &m, Precondition::ETag("\"a\"".into())))
            .await,
        Err(Error::PreconditionFailed)
    ));
    // A failed commit leaves the pending row alone (the engine drops it).
    assert_eq!(
        store.blob_state(blob).await.unwrap(),
        BlobState::Pending { created_ms: 1 }
    );
    // If-None-Match: * on a missing key succeeds.
    store
        .commit_put(commit("b", "k", &m, Precondition::Absent))
        .await
        .unwrap();

    // If-None-Match: * on an existing key fails, and changes nothing.
    let (blob2, m2) = fresh("\"b\"");
    store.add_pending(blob2, 2).await.unwrap();
    assert!(matches!(
        store
            .commit_put(commit("b", "k", &m2, Precondition::Absent))
            .await,
        Err(Error::PreconditionFailed)
    ));
    assert_eq!(store.manifest("b", "k").await.unwrap(), Some(m.clone()));
    assert_eq!(
        store.blob_state(blob).await.unwrap(),
        BlobState::Referenced(1)
    );
    assert!(store.stanzas(m2.dek_id).await.unwrap().is_empty());

    // If-Match with the wrong ETag fails; with the right one succeeds.
    assert!(matches!(
        store
            .commit_put(commit("b", "k", &m2, Precondition::ETag("\"zzz\"".into())))
            .await,
        Err(Error::PreconditionFailed)
    ));
    assert_eq!(store.manifest("b", "k").await.unwrap(), Some(m.clone()));
    let old = store
        .commit_put(commit("b", "k", &m2, Precondition::ETag("\"a\"".into())))
        .await
        .unwrap();
    assert_eq!(old, Some(m));
    assert_eq!(store.manifest("b", "k").await.unwrap(), Some(m2));
}

/// Keys sorted in UTF-8 byte order, which differs from UTF-16 order for U+FFFF vs 😀.
pub const LIST_KEYS: &[&str] = &[
    "a", "a/b", "a/c", "ab", "b", "z", "é", "éa", "\u{FFFF}", "😀", "😀/x",
];

pub async fn conformance_list_objects(store: &dyn PrivateStore) {
    store.create_bucket("b", 1).await.unwrap();
    // A neighbouring bucket whose name extends "b" must never leak into b's listing.
    store.create_bucket("bb", 1).await.unwrap();
    put_object(store, "bb", "a", "\"x\"").await;
    // Insert in a scrambled order.
    let mut order: Vec<&str> = LIST_KEYS.to_vec();
    order.reverse();
    order.swap(0, 5);
    for k in &order {
        put_object(store, "b", k, "\"e\"").await;
    }
    let mut expected: Vec<&str> = LIST_KEYS.to_vec();
    expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(expected, LIST_KEYS, "the fixture is in byte order");
    let keys = |v: Vec<gateway::private::ListedObject>| -> Vec<String> {
        v.into_iter().map(|o| o.key).collect()
    };

    assert_eq!(
        keys(store.list_objects("b", "", "", 100).await.unwrap()),
        LIST_KEYS
    );
    // Limit.
    assert_eq!(
        keys(store.list_objects("b", "", "", 3).await.unwrap()),
        &LIST_KEYS[..3]
    );
    assert!(store.list_objects("b", "", "", 0).await.unwrap().is_empty());
    // Strictly after.
    assert_eq!(
        keys(store.list_objects("b", "", "ab", 100).await.unwrap()),
        &LIST_KEYS[4..]
    );
    // `after` need not be a key.
    assert_eq!(
        keys(store.list_objects("b", "", "aa", 100).await.unwrap()),
        &LIST_KEYS[3..]
    );
    assert_eq!(
        keys(store.list_objects("b", "", "\u{FFFF}", 100).await.unwrap()),
        vec!["😀", "😀/x"]
    );
    // Prefix.
    assert_eq!(
        keys(store.list_objects("b", "a", "", 100).await.unwrap()),
        vec!["a", "a/b", "a/c", "ab"]
    );
    assert_eq!(
        keys(store.list_objects("b", "a/", "", 100).await.unwrap()),
        vec!["a/b", "a/c"]
    );
    assert_eq!(
        keys(store.list_objects("b", "é", "", 100).await.unwrap()),
        vec!["é", "éa"]
    );
    assert_eq!(
        keys(store.list_objects("b", "😀", "", 100).await.unwrap()),
        vec!["😀", "😀/x"]
    );
    assert!(store
        .list_objects("b", "q", "", 100)
        .await
        .unwrap()
        .is_empty());
    // Prefix and after together: after before the prefix, inside it, beyond it.
    assert_eq!(
        keys(store.list_objects("b", "a/", "", 100).await.unwrap()),
        keys(store.list_objects("b", "a/", "0", 100).await.unwrap())
    );
    assert_eq!(
        keys(store.list_objects("b", "a", "a/b", 100).await.unwrap()),
        vec!["a/c", "ab"]
    );
    assert!(store
        .list_objects("b", "a", "b", 100)
        .await
        .unwrap()
        .is_empty());
    // Paging with limit 2 visits every key once, in order.
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = keys(store.list_objects("b", "", &after, 2).await.unwrap());
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().unwrap().clone();
        seen.extend(page);
    }
    assert_eq!(seen, LIST_KEYS);
    // Other buckets.
    assert_eq!(
        keys(store.list_objects("bb", "", "", 100).await.unwrap()),
        vec!["a"]
    );
    assert!(store
        .list_objects("nobucket", "", "", 100)
        .await
        .unwrap()
        .is_empty());
}

pub async fn conformance_leaves(store: &dyn PrivateStore) {
    let blob = BlobId::random();
    let other = BlobId::random();
    let leaf = |i: u8| -> Hash { [i; 32] };
    let all: Vec<Hash> = (0..10).map(leaf).collect();
    store.put_leaves(blob, 0, &all[..4]).await.unwrap();
    store.put_leaves(blob, 4, &all[4..]).await.unwrap();
    store.put_leaves(other, 0, &[[0xee; 32]; 3]).await.unwrap();
    assert_eq!(store.leaves(blob, 0, 9).await.unwrap(), all);
    assert_eq!(store.leaves(blob, 3, 6).await.unwrap(), &all[3..=6]);
    assert_eq!(store.leaves(blob, 9, 9).await.unwrap(), vec![leaf(9)]);
    assert_eq!(
        store.leaves(other, 0, 2).await.unwrap(),
        vec![[0xee; 32]; 3]
    );
    // Past the end, or a blob without leaves: an error, never a short vector.
    assert!(store.leaves(blob, 8, 10).await.is_err());
    assert!(store.leaves(blob, 10, 10).await.is_err());
    assert!(store.leaves(BlobId::random(), 0, 0).await.is_err());
    // A gap in the middle is an error too.
    let gappy = BlobId::random();
    store.put_leaves(gappy, 0, &all[..2]).await.unwrap();
    store.put_leaves(gappy, 3, &all[3..5]).await.unwrap();
    assert!(store.leaves(gappy, 0, 4).await.is_err());
    assert_eq!(store.leaves(gappy, 3, 4).await.unwrap(), &all[3..5]);
}

pub async fn conformance_reap(store: &dyn PrivateStore) {
    store.create_bucket("b", 1).await.unwrap();
    // A pending blob is reaped only once its row is at or before the cutoff.
    let pending = BlobId::random();
    store.add_pending(pending, 1_000).await.unwrap();
    store
        .put_leaves(pending, 0, &[[1; 32], [2; 32]])
        .await
        .unwrap();
    assert!(!store.reap_blob(pending, 999).await.unwrap());
    assert_eq!(
        store.blob_state(pending).await.unwrap(),
        BlobState::Pending { created_ms: 1_000 }
    );
    assert_eq!(store.leaves(pending, 0, 1).await.unwrap().len(), 2);
    assert!(store.reap_blob(pending, 1_000).await.unwrap());
    assert_eq!(store.blob_state(pending).await.unwrap(), BlobState::Unknown);
    assert!(store.pending().await.unwrap().is_empty());
    assert!(
        store.leaves(pending, 0, 0).await.is_err(),
        "leaves go with it"
    );
    // Its commit now fails.
    let m = manifest_with(&[(pending, 10)], "\"p\"");
    assert!(matches!(
        store
            .commit_put(commit("b", "k", &m, Precondition::None))
            .await,
        Err(Error::Reaped)
    ));
    assert_eq!(store.manifest("b", "k").await.unwrap(), None);

    // A referenced blob is never reaped, whatever the cutoff.
    let live = put_object(store, "b", "live", "\"l\"").await;
    let live_blob = live.parts[0].blob;
    store.put_leaves(live_blob, 0, &[[3; 32]]).await.unwrap();
    assert!(!store.reap_blob(live_blob, u64::MAX).await.unwrap());
    assert_eq!(
        store.blob_state(live_blob).await.unwrap(),
        BlobState::Referenced(1)
    );
    assert_eq!(store.leaves(live_blob, 0, 0).await.unwrap(), vec![[3; 32]]);

    // An orphan: kept while younger than the cutoff, reaped after.
    store.delete_object("b", "live").await.unwrap();
    let BlobState::Orphan { since_ms } = store.blob_state(live_blob).await.unwrap() else {
        panic!("expected an orphan");
    };
    assert!(!store.reap_blob(live_blob, since_ms - 1).await.unwrap());
    assert!(matches!(
        store.blob_state(live_blob).await.unwrap(),
        BlobState::Orphan { .. }
    ));
    assert!(store.reap_blob(live_blob, since_ms).await.unwrap());
    assert_eq!(
        store.blob_state(live_blob).await.unwrap(),
        BlobState::Unknown
    );
    assert!(store.leaves(live_blob, 0, 0).await.is_err());

    // A dropped pending row becomes an orphan that gc can reap.
    let dropped = BlobId::random();
    store.add_pending(dropped, 5).await.unwrap();
    store.drop_pending(dropped).await.unwrap();
    assert!(store.pending().await.unwrap().is_empty());
    assert!(matches!(
        store.blob_state(dropped).await.unwrap(),
        BlobState::Orphan { .. }
    ));
    assert!(store.reap_blob(dropped, u64::MAX).await.unwrap());
    assert_eq!(store.blob_state(dropped).await.unwrap(), BlobState::Unknown);
    // A blob nobody knows is reapable (gc found it in the public store only).
    assert!(store.reap_blob(BlobId::random(), 0).await.unwrap());
}

fn access_key(id: &str, buckets: &[&str]) -> AccessKeyRecord {
    AccessKeyRecord {
        id: id.into(),
        sealed_secret: id.as_bytes().iter().rev().copied().collect(),
        buckets: buckets.iter().map(|b| b.to_string()).collect(),
        created_ms: 42,
    }
}

pub async fn conformance_access_keys(store: &dyn PrivateStore) {
    assert!(store.list_access_keys().await.unwrap().is_empty());
    assert!(store.access_key("AK1").await.unwrap().is_none());
    store.put_access_key(access_key("AK2", &[])).await.unwrap();
    store
        .put_access_key(access_key("AK1", &["b1", "b2"]))
        .await
        .unwrap();
    let got = store.access_key("AK1").await.unwrap().unwrap();
    assert_eq!(got.id, "AK1");
    assert_eq!(got.sealed_secret, b"1KA");
    assert_eq!(got.buckets, vec!["b1", "b2"]);
    assert_eq!(got.created_ms, 42);
    let mut ids: Vec<_> = store
        .list_access_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["AK1", "AK2"]);
    // Put replaces.
    store
        .put_access_key(access_key("AK1", &["b3"]))
        .await
        .unwrap();
    assert_eq!(
        store.access_key("AK1").await.unwrap().unwrap().buckets,
        vec!["b3"]
    );
    assert!(store.delete_access_key("AK1").await.unwrap());
    assert!(!store.delete_access_key("AK1").await.unwrap());
    assert!(store.access_key("AK1").await.unwrap().is_none());
    let ids: Vec<_> = store
        .list_access_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, vec!["AK2"]);
}

/// What [`persistence_write`] stored, for [`persistence_check`] after a reopen.
pub struct Persisted {
    pub manifest: Manifest,
    pub orphan: BlobId,
    pub pending: BlobId,
}

/// First half of the persistence check: write, flush. The backend test then closes and
/// reopens the store and calls [`persistence_check`].
pub async fn persistence_write(store: &dyn PrivateStore) -> Persisted {
    store.create_bucket("keep", 7).await.unwrap();
    let first = put_object(store, "keep", "k", "\"1\"").await;
    let manifest = put_object(store, "keep", "k", "\"2\"").await;
    store
        .put_leaves(manifest.parts[0].blob, 0, &[[9; 32], [8; 32]])
        .await
        .unwrap();
    let pending = BlobId::random();
    store.add_pending(pending, 77).await.unwrap();
    store
        .put_access_key(access_key("AKP", &["keep"]))
        .await
        .unwrap();
    store.flush().await.unwrap();
    Persisted {
        manifest,
        orphan: first.parts[0].blob,
        pending,
    }
}

pub async fn persistence_check(store: &dyn PrivateStore, p: &Persisted) {
    assert_eq!(store.bucket("keep").await.unwrap().unwrap().created_ms, 7);
    assert_eq!(
        store.manifest("keep", "k").await.unwrap(),
        Some(p.manifest.clone())
    );
    assert_eq!(store.stanzas(p.manifest.dek_id).await.unwrap().len(), 1);
    assert_eq!(
        store.leaves(p.manifest.parts[0].blob, 0, 1).await.unwrap(),
        vec![[9; 32], [8; 32]]
    );
    assert_eq!(
        store.blob_state(p.manifest.parts[0].blob).await.unwrap(),
        BlobState::Referenced(1)
    );
    assert!(matches!(
        store.blob_state(p.orphan).await.unwrap(),
        BlobState::Orphan { .. }
    ));
    assert_eq!(store.pending().await.unwrap(), vec![(p.pending, 77)]);
    assert_eq!(
        store.access_key("AKP").await.unwrap().unwrap().buckets,
        vec!["keep"]
    );
    assert!(matches!(
        store.delete_bucket("keep").await,
        Err(Error::BucketNotEmpty(_))
    ));
}

fn part_record(blob: BlobId, len: u64) -> PartRecord {
    PartRecord {
        blob,
        chunk_size: 64,
        plaintext_len: len,
        root: [9u8; 32],
        md5: "00".repeat(16),
        created_ms: 1,
        checksums: vec![("CRC32".into(), "AAAAAA==".into())],
    }
}

pub async fn conformance_uploads(store: &dyn PrivateStore) {
    store.create_bucket("mp", 1).await.unwrap();
    let rec = UploadRecord {
        bucket: "mp".into(),
        key: "big".into(),
        created_ms: 5,
        touched_ms: 5,
        dek_id: DekId::random(),
        stanza: stanza().to_bytes(),
        content_type: Some("application/dicom".into()),
        headers: Vec::new(),
        metadata: vec![("k".into(), "v".into())],
        checksum_algorithm: Some("CRC32".into()),
        checksum_type: Some("COMPOSITE".into()),
    };
    store.create_upload("u1", rec.clone()).await.unwrap();
    assert_eq!(store.upload("u1").await.unwrap(), Some(rec.clone()));
    assert!(matches!(
        store
            .put_part("nope", 1, part_record(BlobId::random(), 1))
            .await,
        Err(Error::NoSuchUpload(_))
    ));

    let (a, b, b2, c) = (
        BlobId::random(),
        BlobId::random(),
        BlobId::random(),
        BlobId::random(),
    );
    for blob in [a, b, b2, c] {
        store.add_pending(blob, 10).await.unwrap();
    }
    store.put_part("u1", 2, part_record(b, 64)).await.unwrap();
    store.put_part("u1", 1, part_record(a, 64)).await.unwrap();
    store.put_part("u1", 3, part_record(c, 10)).await.unwrap();
    // A part uploaded again replaces the earlier one, whose blob becomes an orphan.
    store.put_part("u1", 2, part_record(b2, 64)).await.unwrap();
    assert!(matches!(
        store.blob_state(b).await.unwrap(),
        BlobState::Orphan { .. }
    ));
    let parts = store.parts("u1").await.unwrap();
    assert_eq!(
        parts.iter().map(|(n, p)| (*n, p.blob)).collect::<Vec<_>>(),
        vec![(1, a), (2, b2), (3, c)]
    );
    // A part of a live upload is as young as the upload's last activity.
    let touched = store.upload("u1").await.unwrap().unwrap().touched_ms;
    assert!(touched > 5);
    assert_eq!(
        store.blob_state(a).await.unwrap(),
        BlobState::Pending {
            created_ms: touched
        }
    );
    let listed = store.list_uploads("mp").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, "u1");
    assert!(store.list_uploads("other").await.unwrap().is_empty());

    // Completing with parts 1 and 2 only: part 3 becomes an orphan, the upload is gone.
    let m = manifest_with(&[(a, 64), (b2, 64)], "\"x-2\"");
    let mut done = commit("mp", "big", &m, Precondition::None);
    done.upload = Some("u1".into());
    store.commit_put(done.clone()).await.unwrap();
    assert_eq!(store.blob_state(a).await.unwrap(), BlobState::Referenced(1));
    assert_eq!(
        store.blob_state(b2).await.unwrap(),
        BlobState::Referenced(1)
    );
    assert!(matches!(
        store.blob_state(c).await.unwrap(),
        BlobState::Orphan { .. }
    ));
    assert_eq!(store.upload("u1").await.unwrap(), None);
    assert!(store.parts("u1").await.unwrap().is_empty());
    assert_eq!(store.manifest("mp", "big").await.unwrap(), Some(m));
    // Completing twice fails cleanly.
    assert!(matches!(
        store.commit_put(done).await,
        Err(Error::NoSuchUpload(_))
    ));

    // Abort: the upload and its parts go, their blobs become orphans.
    store.create_upload("u2", rec).await.unwrap();
    let d = BlobId::random();
    store.add_pending(d, 10).await.unwrap();
    store.put_part("u2", 1, part_record(d, 64)).await.unwrap();
    let aborted = store.abort_upload("u2").await.unwrap();
    assert_eq!(aborted.len(), 1);
    assert!(matches!(
        store.blob_state(d).await.unwrap(),
        BlobState::Orphan { .. }
    ));
    assert_eq!(store.upload("u2").await.unwrap(), None);
    assert!(matches!(
        store.abort_upload("u2").await,
        Err(Error::NoSuchUpload(_))
    ));
}
