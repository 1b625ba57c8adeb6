//! The `PrivateStore` conformance suite.
//!
//! Every function takes a fresh, empty store behind `&dyn PrivateStore` and checks one part
//! of the contract in `gateway::store::private`. Each backend's test file (`private_sled.rs`,
//! `private_memory.rs`, and later PostgreSQL) includes this module with `mod conformance;` and
//! runs the whole list, [`every_test!`], on its own fresh store.
#![allow(dead_code)]

use gateway::store::private::{
    AccessKeyRecord, BlobState, DekStanza, Event, GrantRecord, PartRecord, PatientRecord,
    Precondition, PrivateStore, PutCommit, RequestState, ShareRequestRecord, UploadRecord,
};
use gateway::Error;
use keyring::{BlobId, DataKey, DekId, Hash, Identity, Manifest, Part, SUITE_V1};

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

pub fn stanza() -> DekStanza {
    named(&Identity::generate(), &DataKey::generate())
}

/// A stanza of a DEK wrapped to `who`, stored with its Recipient.
pub fn named(who: &Identity, dek: &DataKey) -> DekStanza {
    let r = who.recipient();
    DekStanza::new(r.clone(), r.wrap_key(dek).expect("wrap")).expect("names its recipient")
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
    let keys = |v: Vec<gateway::store::private::ListedObject>| -> Vec<String> {
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
        v: gateway::store::private::ACCESS_KEY_ROW_V2,
        label_patients: id.ends_with('1'),
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
    assert_eq!(
        (got.v, got.label_patients),
        (gateway::store::private::ACCESS_KEY_ROW_V2, true)
    );
    let other = store.access_key("AK2").await.unwrap().unwrap();
    assert!(!other.label_patients);
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
        stanza: stanza().wrapped().to_bytes(),
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

// ---------------------------------------------------------------------------------------
// Patients, share requests, grants, stanzas and the event record.
// ---------------------------------------------------------------------------------------

fn patient_record(id: &str, registered_ms: u64) -> PatientRecord {
    PatientRecord {
        id: id.into(),
        recipient: Identity::generate().recipient().to_string(),
        registered_ms,
        proof: format!("{registered_ms:0128x}"),
        index_seq: registered_ms + 1,
    }
}

fn sorted_patients(mut v: Vec<PatientRecord>) -> Vec<PatientRecord> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// A pending share request of `patient`.
pub fn request_record(id: &str, patient: &str) -> ShareRequestRecord {
    ShareRequestRecord {
        id: id.into(),
        request: format!("medgate-share-request v1\nid {id}\npatient {patient}\n"),
        patient_id: patient.into(),
        state: RequestState::Pending,
        created_ms: 1_700_000_000_123,
        grant: None,
    }
}

/// A grant answering `request` for `patient`.
pub fn grant_record(id: &str, request: &str, patient: &str) -> GrantRecord {
    GrantRecord {
        id: id.into(),
        grant: format!("medgate-grant v1\nid {id}\nrequest {request}\n"),
        request_id: request.into(),
        patient_id: patient.into(),
        recipient: Identity::generate().recipient().to_string(),
        issued_ms: 1_700_000_000_000,
        expires_ms: 1_800_000_000_000,
        revoked_ms: None,
        records: Vec::new(),
    }
}

fn sorted_requests(mut v: Vec<ShareRequestRecord>) -> Vec<ShareRequestRecord> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

fn sorted_grants(mut v: Vec<GrantRecord>) -> Vec<GrantRecord> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// Stanzas as sorted byte strings: the contract says nothing about their order.
fn stanza_set(v: &[DekStanza]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = v.iter().map(|s| s.wrapped().to_bytes()).collect();
    out.sort();
    out
}

/// Like [`put_object`], with the manifest naming `patient`.
pub async fn put_patient_object(
    store: &dyn PrivateStore,
    bucket: &str,
    key: &str,
    patient: Option<&str>,
) -> Manifest {
    let blob = BlobId::random();
    store.add_pending(blob, gateway::now_ms()).await.unwrap();
    let mut m = manifest_with(&[(blob, 100)], "\"p\"");
    m.patient = patient.map(str::to_string);
    store
        .commit_put(commit(bucket, key, &m, Precondition::None))
        .await
        .unwrap();
    m
}

pub async fn conformance_patients(store: &dyn PrivateStore) {
    assert!(store.list_patients().await.unwrap().is_empty());
    assert_eq!(store.patient("p1").await.unwrap(), None);
    let p2 = patient_record("p2", 20);
    let p1 = patient_record("p1", 10);
    store.put_patient(p2.clone(), false).await.unwrap();
    store.put_patient(p1.clone(), false).await.unwrap();
    assert_eq!(store.patient("p1").await.unwrap(), Some(p1.clone()));
    assert_eq!(store.patient("p2").await.unwrap(), Some(p2.clone()));
    // Ids are exact, not prefixes.
    assert_eq!(store.patient("p").await.unwrap(), None);
    assert_eq!(
        sorted_patients(store.list_patients().await.unwrap()),
        vec![p1.clone(), p2.clone()]
    );

    // Registering an existing id again, without replace, is refused and changes nothing
    // (a key change must say so).
    let p1_new_key = patient_record("p1", 30);
    assert_ne!(p1_new_key.recipient, p1.recipient);
    assert!(matches!(
        store.put_patient(p1_new_key.clone(), false).await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(store.patient("p1").await.unwrap(), Some(p1.clone()));
    // The same record again is refused too: the store does not compare contents.
    assert!(matches!(
        store.put_patient(p1.clone(), false).await,
        Err(Error::InvalidArgument(_))
    ));

    // With replace, the record is overwritten.
    store.put_patient(p1_new_key.clone(), true).await.unwrap();
    assert_eq!(store.patient("p1").await.unwrap(), Some(p1_new_key.clone()));
    assert_eq!(
        sorted_patients(store.list_patients().await.unwrap()),
        vec![p1_new_key, p2]
    );
}

pub async fn conformance_patient_objects(store: &dyn PrivateStore) {
    store.create_bucket("b", 1).await.unwrap();
    store.create_bucket("c", 1).await.unwrap();
    assert!(store.patient_objects("p1").await.unwrap().is_empty());

    let b_x = put_patient_object(store, "b", "x", Some("p1")).await;
    let c_x = put_patient_object(store, "c", "x", Some("p1")).await;
    let b_dir = put_patient_object(store, "b", "dir/scan.dcm", Some("p1")).await;
    // Another patient's, one whose id extends p1's, and an untagged one.
    let b_other = put_patient_object(store, "b", "other", Some("p2")).await;
    put_patient_object(store, "b", "longer", Some("p10")).await;
    put_patient_object(store, "b", "untagged", None).await;
    // Overwritten to belong to someone else: no longer p1's.
    put_patient_object(store, "c", "moved", Some("p1")).await;
    let c_moved = put_patient_object(store, "c", "moved", Some("p2")).await;
    // Overwritten from untagged to p1: now p1's.
    put_patient_object(store, "c", "claimed", None).await;
    let c_claimed = put_patient_object(store, "c", "claimed", Some("p1")).await;
    // Deleted: gone from the answer.
    put_patient_object(store, "b", "deleted", Some("p1")).await;
    store.delete_object("b", "deleted").await.unwrap().unwrap();

    let mut got = store.patient_objects("p1").await.unwrap();
    got.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let want = vec![
        ("b".to_string(), "dir/scan.dcm".to_string(), b_dir),
        ("b".to_string(), "x".to_string(), b_x),
        ("c".to_string(), "claimed".to_string(), c_claimed),
        ("c".to_string(), "x".to_string(), c_x),
    ];
    assert_eq!(got, want);

    let mut got = store.patient_objects("p2").await.unwrap();
    got.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        got,
        vec![
            ("b".to_string(), "other".to_string(), b_other),
            ("c".to_string(), "moved".to_string(), c_moved),
        ]
    );
    assert_eq!(store.patient_objects("p10").await.unwrap().len(), 1);
    assert!(store.patient_objects("p").await.unwrap().is_empty());
    assert!(store.patient_objects("nobody").await.unwrap().is_empty());
    // Untagged objects belong to no patient, not even the empty id.
    assert!(store.patient_objects("").await.unwrap().is_empty());
}

pub async fn conformance_requests_and_grants(store: &dyn PrivateStore) {
    assert!(store.list_requests().await.unwrap().is_empty());
    assert!(store.list_grants().await.unwrap().is_empty());
    assert_eq!(store.request("r1").await.unwrap(), None);
    assert_eq!(store.grant("g1").await.unwrap(), None);

    let r1 = request_record("r1", "p1");
    let r2 = request_record("r2", "p1");
    let r3 = request_record("r3", "p2");
    for r in [&r2, &r1, &r3] {
        store.insert_request(r.clone()).await.unwrap();
    }
    assert_eq!(store.request("r1").await.unwrap(), Some(r1.clone()));
    assert_eq!(
        sorted_requests(store.list_requests().await.unwrap()),
        vec![r1.clone(), r2.clone(), r3.clone()]
    );
    // A duplicate id is refused and does not overwrite the stored request.
    let mut dup = request_record("r1", "p9");
    dup.created_ms = 5;
    assert!(store.insert_request(dup).await.is_err());
    assert_eq!(store.request("r1").await.unwrap(), Some(r1.clone()));
    assert_eq!(store.list_requests().await.unwrap().len(), 3);

    // Approving stores the grant in the same step and links it from the request.
    let g1 = grant_record("g1", "r1", "p1");
    store
        .decide_request("r1", RequestState::Approved, Some(g1.clone()))
        .await
        .unwrap();
    let mut r1_approved = r1.clone();
    r1_approved.state = RequestState::Approved;
    r1_approved.grant = Some("g1".into());
    assert_eq!(
        store.request("r1").await.unwrap(),
        Some(r1_approved.clone())
    );
    assert_eq!(store.grant("g1").await.unwrap(), Some(g1.clone()));
    assert_eq!(store.list_grants().await.unwrap(), vec![g1.clone()]);

    // A decided request cannot be decided again, in either direction, and a refused
    // decision stores no grant.
    assert!(matches!(
        store.decide_request("r1", RequestState::Denied, None).await,
        Err(Error::InvalidArgument(_))
    ));
    let g_late = grant_record("g-late", "r1", "p1");
    assert!(matches!(
        store
            .decide_request("r1", RequestState::Approved, Some(g_late))
            .await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(
        store.request("r1").await.unwrap(),
        Some(r1_approved.clone())
    );
    assert_eq!(store.grant("g-late").await.unwrap(), None);
    assert_eq!(store.list_grants().await.unwrap(), vec![g1.clone()]);

    // Denying: no grant.
    store
        .decide_request("r2", RequestState::Denied, None)
        .await
        .unwrap();
    let mut r2_denied = r2.clone();
    r2_denied.state = RequestState::Denied;
    assert_eq!(store.request("r2").await.unwrap(), Some(r2_denied.clone()));
    assert!(matches!(
        store
            .decide_request(
                "r2",
                RequestState::Approved,
                Some(grant_record("g2", "r2", "p1"))
            )
            .await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(store.request("r2").await.unwrap(), Some(r2_denied.clone()));
    assert_eq!(store.grant("g2").await.unwrap(), None);

    // A request that does not exist cannot be decided, and nothing is stored for it.
    assert!(store
        .decide_request(
            "nope",
            RequestState::Approved,
            Some(grant_record("g-nope", "nope", "p1"))
        )
        .await
        .is_err());
    assert_eq!(store.request("nope").await.unwrap(), None);
    assert_eq!(store.grant("g-nope").await.unwrap(), None);

    // Replay: a grant id already stored is refused even for another pending request, and
    // neither the request nor the stored grant changes.
    let replayed = grant_record("g1", "r3", "p2");
    assert!(store
        .decide_request("r3", RequestState::Approved, Some(replayed))
        .await
        .is_err());
    assert_eq!(store.request("r3").await.unwrap(), Some(r3.clone()));
    assert_eq!(store.grant("g1").await.unwrap(), Some(g1.clone()));
    // The request is still pending: a fresh grant approves it.
    let g3 = grant_record("g3", "r3", "p2");
    store
        .decide_request("r3", RequestState::Approved, Some(g3.clone()))
        .await
        .unwrap();
    let mut r3_approved = r3.clone();
    r3_approved.state = RequestState::Approved;
    r3_approved.grant = Some("g3".into());
    assert_eq!(
        store.request("r3").await.unwrap(),
        Some(r3_approved.clone())
    );
    assert_eq!(
        sorted_grants(store.list_grants().await.unwrap()),
        vec![g1.clone(), g3.clone()]
    );
    assert_eq!(
        sorted_requests(store.list_requests().await.unwrap()),
        vec![r1_approved, r2_denied, r3_approved]
    );

    // update_grant overwrites: re-wrapped records, then a revocation.
    let mut g1_wrapped = g1.clone();
    g1_wrapped.records = vec![
        ("b".into(), "x".into(), "00".repeat(16)),
        ("c".into(), "y/z".into(), "ff".repeat(16)),
    ];
    store.update_grant(g1_wrapped.clone()).await.unwrap();
    assert_eq!(store.grant("g1").await.unwrap(), Some(g1_wrapped.clone()));
    let mut g1_revoked = g1_wrapped;
    g1_revoked.revoked_ms = Some(1_750_000_000_000);
    store.update_grant(g1_revoked.clone()).await.unwrap();
    assert_eq!(store.grant("g1").await.unwrap(), Some(g1_revoked.clone()));
    assert_eq!(store.grant("g3").await.unwrap(), Some(g3.clone()));
    assert_eq!(
        sorted_grants(store.list_grants().await.unwrap()),
        vec![g1_revoked.clone(), g3]
    );
    // An updated grant id is still "stored": it cannot be replayed either.
    store
        .insert_request(request_record("r4", "p1"))
        .await
        .unwrap();
    assert!(store
        .decide_request(
            "r4",
            RequestState::Approved,
            Some(grant_record("g1", "r4", "p1"))
        )
        .await
        .is_err());
    assert_eq!(store.grant("g1").await.unwrap(), Some(g1_revoked));
    assert_eq!(
        store.request("r4").await.unwrap().unwrap().state,
        RequestState::Pending
    );
}

/// Checks the outcome of racing decisions on the pending request `id`: exactly one
/// succeeded, the others were refused as not pending, the request records the winner, and
/// of the grants offered only the winner's is stored. One `(state, grant id, outcome)` per
/// contender.
pub async fn check_one_decision(
    store: &dyn PrivateStore,
    id: &str,
    contenders: &[(RequestState, Option<String>, gateway::Result<()>)],
) {
    let winners: Vec<_> = contenders.iter().filter(|c| c.2.is_ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one decision of {id} must succeed: {:?}",
        contenders.iter().map(|c| &c.2).collect::<Vec<_>>()
    );
    for (_, _, outcome) in contenders {
        if let Err(e) = outcome {
            assert!(
                matches!(e, Error::InvalidArgument(_)),
                "a losing decision fails as not pending, got {e:?}"
            );
        }
    }
    let (state, grant, _) = winners[0];
    let rec = store.request(id).await.unwrap().unwrap();
    assert_eq!(rec.state, *state);
    assert_eq!(rec.grant, *grant);
    for (_, g, outcome) in contenders {
        if let Some(g) = g {
            assert_eq!(
                store.grant(g).await.unwrap().is_some(),
                outcome.is_ok(),
                "grant {g} is stored iff its decision won"
            );
        }
    }
}

/// Two concurrent decisions on one pending request: exactly one wins, and only its grant
/// is stored.
pub async fn conformance_decide_race(store: &dyn PrivateStore) {
    for round in 0..16 {
        let id = format!("race-{round}");
        store
            .insert_request(request_record(&id, "p1"))
            .await
            .unwrap();
        let ga = grant_record(&format!("{id}-a"), &id, "p1");
        // Every fourth round races an approval against a denial.
        let (state_b, gb) = if round % 4 == 3 {
            (RequestState::Denied, None)
        } else {
            (
                RequestState::Approved,
                Some(grant_record(&format!("{id}-b"), &id, "p1")),
            )
        };
        let (ra, rb) = tokio::join!(
            store.decide_request(&id, RequestState::Approved, Some(ga.clone())),
            store.decide_request(&id, state_b, gb.clone()),
        );
        check_one_decision(
            store,
            &id,
            &[
                (RequestState::Approved, Some(ga.id), ra),
                (state_b, gb.map(|g| g.id), rb),
            ],
        )
        .await;
    }
    // Two requests racing to use one grant id: only one gets it.
    store
        .insert_request(request_record("rx", "p1"))
        .await
        .unwrap();
    store
        .insert_request(request_record("ry", "p1"))
        .await
        .unwrap();
    let (rx, ry) = tokio::join!(
        store.decide_request(
            "rx",
            RequestState::Approved,
            Some(grant_record("gxy", "rx", "p1"))
        ),
        store.decide_request(
            "ry",
            RequestState::Approved,
            Some(grant_record("gxy", "ry", "p1"))
        ),
    );
    assert_eq!(
        u8::from(rx.is_ok()) + u8::from(ry.is_ok()),
        1,
        "one grant id approves one request: {rx:?} {ry:?}"
    );
    let (won, lost) = if rx.is_ok() {
        ("rx", "ry")
    } else {
        ("ry", "rx")
    };
    assert_eq!(store.grant("gxy").await.unwrap().unwrap().request_id, won);
    let lost = store.request(lost).await.unwrap().unwrap();
    assert_eq!((lost.state, lost.grant), (RequestState::Pending, None));
}

pub async fn conformance_stanzas(store: &dyn PrivateStore) {
    store.create_bucket("b", 1).await.unwrap();
    let m = put_object(store, "b", "k", "\"e\"").await;
    let dek = m.dek_id;
    let institution = store.stanzas(dek).await.unwrap();
    assert_eq!(institution.len(), 1);

    let alice = Identity::generate();
    let bob = Identity::generate();
    let wrap = |who: &Identity| named(who, &DataKey::generate());
    let (a1, a2, b1) = (wrap(&alice), wrap(&alice), wrap(&bob));
    let (ra, rb) = (alice.recipient(), bob.recipient());
    assert!(a1.is_for(&ra) && a2.is_for(&ra) && !a1.is_for(&rb) && b1.is_for(&rb));
    // A stanza cannot be stored under a Recipient its tag does not name.
    assert!(DekStanza::new(rb.clone(), a1.wrapped().clone()).is_err());

    // Adding to an existing DEK.
    assert!(store
        .add_stanzas(dek, vec![a1.clone(), b1.clone()])
        .await
        .unwrap());
    assert!(store.add_stanzas(dek, vec![a2.clone()]).await.unwrap());
    assert_eq!(
        stanza_set(&store.stanzas(dek).await.unwrap()),
        stanza_set(&[institution[0].clone(), a1.clone(), a2.clone(), b1.clone()])
    );
    // An unknown DEK: false, and no record springs into being.
    let unknown = DekId::random();
    assert!(!store.add_stanzas(unknown, vec![a1.clone()]).await.unwrap());
    assert!(store.stanzas(unknown).await.unwrap().is_empty());

    // Removing by Recipient takes exactly that recipient's stanzas.
    assert_eq!(store.remove_stanzas(dek, &ra).await.unwrap(), 2);
    assert_eq!(
        stanza_set(&store.stanzas(dek).await.unwrap()),
        stanza_set(&[institution[0].clone(), b1.clone()])
    );
    assert_eq!(store.remove_stanzas(dek, &ra).await.unwrap(), 0);
    let nobody = Identity::generate().recipient();
    assert_eq!(store.remove_stanzas(dek, &nobody).await.unwrap(), 0);
    assert_eq!(store.remove_stanzas(unknown, &ra).await.unwrap(), 0);
    assert_eq!(store.stanzas(dek).await.unwrap().len(), 2);
    assert_eq!(store.remove_stanzas(dek, &rb).await.unwrap(), 1);
    assert_eq!(store.stanzas(dek).await.unwrap(), institution);
    // The object is still readable by the institution, and its references are intact:
    // added and removed stanzas do not touch the DEK's reference count.
    assert!(store.add_stanzas(dek, vec![a1.clone()]).await.unwrap());
    assert_eq!(store.delete_object("b", "k").await.unwrap(), Some(m));
    // Crypto-shredding takes the added stanzas with it; the DEK is then gone.
    assert!(store.stanzas(dek).await.unwrap().is_empty());
    assert!(!store.add_stanzas(dek, vec![a2]).await.unwrap());
    assert!(store.stanzas(dek).await.unwrap().is_empty());
    assert_eq!(store.remove_stanzas(dek, &ra).await.unwrap(), 0);
}

/// Events as the caller wrote them: without the fields the store fills in (salt, the
/// patient's sequence number and previous commitment), which are checked on their own.
fn caller_fields(events: Vec<Event>) -> Vec<Event> {
    events
        .into_iter()
        .map(|e| Event {
            salt: String::new(),
            patient_seq: 0,
            patient_prev: String::new(),
            ..e
        })
        .collect()
}

pub async fn conformance_events(store: &dyn PrivateStore) {
    assert!(caller_fields(store.events(0, 10).await.unwrap()).is_empty());
    let inputs = vec![
        Event {
            time_ms: 10,
            kind: "put".into(),
            actor: "AKIA1".into(),
            bucket: Some("b".into()),
            key: Some("k".into()),
            ..Event::default()
        },
        Event {
            time_ms: 11,
            kind: "share-request".into(),
            actor: "peer-hospital".into(),
            patient: Some("p1".into()),
            detail: "request r1\nwith a newline and ünïcode".into(),
            ..Event::default()
        },
        Event {
            // Whatever the caller puts in seq is replaced by the store's.
            seq: u64::MAX - 1,
            time_ms: 12,
            kind: "grant".into(),
            actor: "patient:p1".into(),
            patient: Some("p1".into()),
            grant: Some("g1".into()),
            ..Event::default()
        },
        Event {
            // Time need not increase: order is by seq.
            time_ms: 5,
            kind: "rewrap".into(),
            actor: "admin".into(),
            patient: Some("p1".into()),
            bucket: Some("b".into()),
            key: Some("k".into()),
            grant: Some("g1".into()),
            detail: "1 record".into(),
            ..Event::default()
        },
        Event::default(),
    ];
    let mut want = Vec::new();
    for input in &inputs {
        let seq = store.append_event(input.clone()).await.unwrap();
        let mut e = input.clone();
        e.seq = seq;
        want.push(e);
    }
    let seqs: Vec<u64> = want.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {seqs:?}"
    );
    // The log is dense from 0, one Merkle leaf per entry; each patient's entries are
    // chained by sequence number and previous commitment; every salt is fresh.
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
    assert_eq!(store.log_size().await.unwrap(), 5);
    assert_eq!(store.log_leaves(0, 5).await.unwrap().len(), 5);
    let stored = store.events(0, 100).await.unwrap();
    let chain: Vec<u64> = stored.iter().map(|e| e.patient_seq).collect();
    assert_eq!(chain, [0, 1, 2, 3, 0]);
    assert_eq!(stored[1].patient_prev, "0".repeat(64));
    assert_ne!(stored[2].patient_prev, "0".repeat(64));
    let salts: std::collections::HashSet<&str> = stored.iter().map(|e| e.salt.as_str()).collect();
    assert_eq!(salts.len(), 5);
    assert!(salts.iter().all(|s| s.len() == 64));

    assert_eq!(caller_fields(store.events(0, 100).await.unwrap()), want);
    assert_eq!(
        caller_fields(store.events(seqs[0], 100).await.unwrap()),
        want
    );
    // Limit.
    assert_eq!(caller_fields(store.events(0, 2).await.unwrap()), &want[..2]);
    assert_eq!(caller_fields(store.events(0, 5).await.unwrap()), want);
    assert!(caller_fields(store.events(0, 0).await.unwrap()).is_empty());
    // From is inclusive; a `from` between two seqs starts at the next one.
    assert_eq!(
        caller_fields(store.events(seqs[2], 100).await.unwrap()),
        &want[2..]
    );
    assert_eq!(
        caller_fields(store.events(seqs[1] + 1, 100).await.unwrap()),
        &want[2..]
    );
    assert_eq!(
        caller_fields(store.events(seqs[1], 2).await.unwrap()),
        &want[1..3]
    );
    assert_eq!(
        caller_fields(store.events(seqs[4], 100).await.unwrap()),
        &want[4..]
    );
    assert!(caller_fields(store.events(seqs[4] + 1, 100).await.unwrap()).is_empty());
    assert!(caller_fields(store.events(u64::MAX, 100).await.unwrap()).is_empty());

    // Paging by `last seq + 1` visits every event once, in order.
    let mut seen = Vec::new();
    let mut from = 0;
    loop {
        let page = caller_fields(store.events(from, 2).await.unwrap());
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        from = page.last().unwrap().seq + 1;
        seen.extend(page);
    }
    assert_eq!(seen, want);

    // Appending after reads continues the sequence.
    let later = store
        .append_event(Event {
            time_ms: 99,
            kind: "read".into(),
            actor: "AKIA2".into(),
            ..Event::default()
        })
        .await
        .unwrap();
    assert!(later > seqs[4]);
    let tail = caller_fields(store.events(seqs[4] + 1, 10).await.unwrap());
    assert_eq!(tail.len(), 1);
    assert_eq!((tail[0].seq, tail[0].kind.as_str()), (later, "read"));
}

/// Checks the whole stored log: dense indices from 0, one leaf per entry equal to the
/// leaf hash of its salted commitment, every patient's chain unbroken, every salt fresh,
/// and every stored subtree hash equal to the tree recomputed from the leaves.
async fn check_log(store: &dyn PrivateStore) -> Vec<Event> {
    let size = store.log_size().await.unwrap();
    let events = store.events(0, usize::MAX).await.unwrap();
    assert_eq!(events.len() as u64, size);
    let leaves = store.log_leaves(0, size).await.unwrap();
    let mut heads: std::collections::HashMap<String, (u64, Hash)> = Default::default();
    let mut salts = std::collections::HashSet::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64);
        assert_eq!(e.salt.len(), 64);
        assert!(salts.insert(e.salt.clone()), "salt reused at {i}");
        let c = gateway::engine::log::commitment_of(e).unwrap();
        assert_eq!(leaves[i], keyring::leaf_hash(&c), "leaf {i}");
        match &e.patient {
            Some(p) => {
                let (seq, prev) = heads.get(p).copied().unwrap_or((0, [0u8; 32]));
                assert_eq!(e.patient_seq, seq + 1, "chain of {p} at {i}");
                assert_eq!(e.patient_prev, hex::encode(prev), "chain of {p} at {i}");
                heads.insert(p.clone(), (e.patient_seq, c));
            }
            None => assert_eq!(e.patient_seq, 0),
        }
    }
    let mut level = leaves;
    let mut height = 0u8;
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|p| keyring::merkle::node_hash(&p[0], &p[1]))
            .collect();
        height += 1;
        assert_eq!(
            store
                .log_hashes(height, 0, level.len() as u64)
                .await
                .unwrap(),
            level,
            "subtrees of height {height}"
        );
    }
    events
}

fn event(kind: &str, patient: Option<&str>) -> Event {
    Event {
        time_ms: 7,
        kind: kind.into(),
        actor: "t".into(),
        patient: patient.map(String::from),
        ..Event::default()
    }
}

/// Batches: one call appends many entries with dense indices; two entries of one patient
/// in a batch chain to each other, and chains run on across batches, single appends and
/// logged commits and deletes.
pub async fn conformance_event_batches(store: &dyn PrivateStore) {
    // An empty batch appends nothing and names the next index.
    assert_eq!(store.append_events(Vec::new()).await.unwrap(), 0);
    assert_eq!(store.log_size().await.unwrap(), 0);
    let batch = vec![
        event("read", Some("p1")),
        event("grant", None),
        event("read", Some("p1")),
        event("read", Some("p2")),
        event("rewrap", Some("p1")),
    ];
    assert_eq!(store.append_events(batch.clone()).await.unwrap(), 0);
    let stored = check_log(store).await;
    assert_eq!(caller_fields(stored.clone()).len(), 5);
    let chain: Vec<u64> = stored.iter().map(|e| e.patient_seq).collect();
    assert_eq!(chain, [1, 0, 2, 1, 3]);
    assert_eq!(
        stored[2].patient_prev,
        hex::encode(gateway::engine::log::commitment_of(&stored[0]).unwrap())
    );
    assert_eq!(
        stored[4].patient_prev,
        hex::encode(gateway::engine::log::commitment_of(&stored[2]).unwrap())
    );
    for (i, e) in caller_fields(stored).into_iter().enumerate() {
        assert_eq!(
            e,
            Event {
                seq: i as u64,
                ..batch[i].clone()
            }
        );
    }
    assert_eq!(store.append_events(Vec::new()).await.unwrap(), 5);

    // Writes logged in their commit; a delete's entry takes the removed record's patient.
    store.create_bucket("b", 1).await.unwrap();
    let blob = BlobId::random();
    store.add_pending(blob, gateway::now_ms()).await.unwrap();
    let mut m = manifest_with(&[(blob, 100)], "\"e\"");
    m.patient = Some("p1".into());
    let (old, index) = store
        .commit_put_logged(
            commit("b", "k", &m, Precondition::None),
            Event {
                bucket: Some("b".into()),
                key: Some("k".into()),
                root: Some(hex::encode([1u8; 32])),
                ..event("put", Some("p1"))
            },
        )
        .await
        .unwrap();
    assert_eq!((old, index), (None, 5));
    assert_eq!(store.manifest("b", "k").await.unwrap(), Some(m.clone()));
    assert_eq!(
        store.append_event(event("read", Some("p2"))).await.unwrap(),
        6
    );
    // A commit that fails logs nothing.
    assert!(matches!(
        store
            .commit_put_logged(
                commit("b", "k", &m, Precondition::Absent),
                event("put", Some("p1"))
            )
            .await,
        Err(Error::PreconditionFailed)
    ));
    assert_eq!(store.log_size().await.unwrap(), 7);
    let (gone, index) = store
        .delete_object_logged("b", "k", event("delete", None))
        .await
        .unwrap();
    assert_eq!((gone, index), (Some(m), Some(7)));
    // Deleting nothing logs nothing.
    assert_eq!(
        store
            .delete_object_logged("b", "k", event("delete", None))
            .await
            .unwrap(),
        (None, None)
    );
    // Big batches cross several subtree heights.
    for n in [1usize, 250, 7, 600] {
        let first = store.log_size().await.unwrap();
        let batch: Vec<Event> = (0..n)
            .map(|i| event("read", Some(["p1", "p2", "p3"][i % 3])))
            .collect();
        assert_eq!(store.append_events(batch).await.unwrap(), first);
    }
    let stored = check_log(store).await;
    assert_eq!(stored.len(), 8 + 1 + 250 + 7 + 600);
    assert_eq!(stored[7].kind, "delete");
    assert_eq!(stored[7].patient.as_deref(), Some("p1"));
    assert_eq!(stored[7].patient_seq, 5);
    assert_eq!(stored[8].patient_seq, 6);
    // Reading from the middle of a batch, and paging across batches.
    let page = store.events(300, 10).await.unwrap();
    assert_eq!(page, stored[300..310]);
    let mut seen = Vec::new();
    let mut from = 0;
    loop {
        let page = store.events(from, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        seen.extend(page);
    }
    assert_eq!(seen, stored);
    assert!(store
        .events(stored.len() as u64, 5)
        .await
        .unwrap()
        .is_empty());
}

/// What [`persistence_sharing_write`] stored, for [`persistence_sharing_check`].
pub struct PersistedSharing {
    pub patient: PatientRecord,
    pub request: ShareRequestRecord,
    pub grant: GrantRecord,
    pub events: Vec<Event>,
}

/// Patients, decided requests, grants and events survive a reopen; the event sequence
/// keeps increasing after it.
pub async fn persistence_sharing_write(store: &dyn PrivateStore) -> PersistedSharing {
    let patient = patient_record("p1", 1);
    store.put_patient(patient.clone(), false).await.unwrap();
    let mut request = request_record("r1", "p1");
    store.insert_request(request.clone()).await.unwrap();
    let grant = grant_record("g1", "r1", "p1");
    store
        .decide_request("r1", RequestState::Approved, Some(grant.clone()))
        .await
        .unwrap();
    request.state = RequestState::Approved;
    request.grant = Some("g1".into());
    let mut events = Vec::new();
    for kind in ["share-request", "grant"] {
        let mut e = Event {
            time_ms: 3,
            kind: kind.into(),
            actor: "patient:p1".into(),
            patient: Some("p1".into()),
            ..Event::default()
        };
        e.seq = store.append_event(e.clone()).await.unwrap();
        events.push(e);
    }
    store.flush().await.unwrap();
    PersistedSharing {
        patient,
        request,
        grant,
        events,
    }
}

pub async fn persistence_sharing_check(store: &dyn PrivateStore, p: &PersistedSharing) {
    assert_eq!(store.patient("p1").await.unwrap(), Some(p.patient.clone()));
    assert!(matches!(
        store.put_patient(patient_record("p1", 2), false).await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(store.request("r1").await.unwrap(), Some(p.request.clone()));
    assert_eq!(store.grant("g1").await.unwrap(), Some(p.grant.clone()));
    assert!(matches!(
        store.decide_request("r1", RequestState::Denied, None).await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(caller_fields(store.events(0, 10).await.unwrap()), p.events);
    let next = store.append_event(Event::default()).await.unwrap();
    assert!(
        next > p.events.last().unwrap().seq,
        "sequence numbers are never reused after a reopen"
    );
}

/// Hands every conformance test's name to `$run`, a macro in the adapter's test file that
/// makes one `#[tokio::test]` per name on a fresh store of that adapter: every adapter runs
/// the same list, and a test added here runs on all of them.
macro_rules! every_test {
    ($run:ident) => {
        $run!(
            conformance_buckets,
            conformance_commit_requires_pending,
            conformance_commit_to_missing_bucket,
            conformance_commit_and_overwrite,
            conformance_shared_blob_and_dek,
            conformance_delete_object,
            conformance_preconditions,
            conformance_list_objects,
            conformance_leaves,
            conformance_reap,
            conformance_access_keys,
            conformance_uploads,
            conformance_patients,
            conformance_patient_objects,
            conformance_requests_and_grants,
            conformance_decide_race,
            conformance_stanzas,
            conformance_events,
            conformance_event_batches,
        );
    };
}
pub(crate) use every_test;
