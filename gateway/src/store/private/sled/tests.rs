use super::*;
use crate::store::private::prelude::*;
use crate::store::private::{GrantRecord, PatientRecord};
use crate::store::rules::rows::{
    decode_dek, encode_json, leaf_key, object_key, DEK_V2_MARK, PATIENT_INDEX_MARK,
};
use keyring::dek_record::{DekRecord, DekStanza};
use keyring::{BlobId, DataKey, DekId, Identity, Manifest, Recipient};

fn stanza() -> DekStanza {
    let id = Identity::generate();
    named(&id, &DataKey::generate())
}

/// Two identities whose Recipients share the 4-byte stanza tag: a birthday search over
/// seeded random identities (about 2^16 tries).
pub(crate) fn colliding_identities() -> (Identity, Identity) {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d65_6467_6174_6531);
    let mut seen: std::collections::HashMap<[u8; 4], [u8; 64]> = std::collections::HashMap::new();
    loop {
        let mut secret = [0u8; 64];
        rng.fill_bytes(&mut secret);
        let id = Identity::from_bytes(&secret).unwrap();
        let tag = id.recipient().tag();
        match seen.get(&tag) {
            Some(other) if other != &secret => {
                return (Identity::from_bytes(other).unwrap(), id);
            }
            _ => {
                seen.insert(tag, secret);
            }
        }
    }
}

fn named(id: &Identity, dek: &DataKey) -> DekStanza {
    let r = id.recipient();
    DekStanza::new(r.clone(), r.wrap_key(dek).unwrap()).unwrap()
}

async fn put_with(store: &SledStore, key: &str, stanzas: Vec<DekStanza>) -> DekId {
    use crate::store::private::{Precondition, PutCommit};
    use keyring::{Part, SUITE_V1};
    let blob = BlobId::random();
    store.add_pending(blob, crate::now_ms()).await.unwrap();
    let dek_id = DekId::random();
    let manifest = Manifest {
        suite: SUITE_V1,
        dek_id,
        size: 1,
        last_modified_ms: 1,
        etag: "\"e\"".into(),
        content_type: None,
        headers: Vec::new(),
        metadata: Vec::new(),
        checksums: Vec::new(),
        patient: None,
        parts: vec![Part {
            blob,
            chunk_size: 1024,
            plaintext_len: 1,
            root: [1; 32],
        }],
    };
    store
        .commit_put(PutCommit {
            bucket: "b".into(),
            key: key.into(),
            stanzas,
            manifest,
            precondition: Precondition::None,
            upload: None,
        })
        .await
        .unwrap();
    dek_id
}

#[test]
fn dek_rows_that_do_not_decode_are_corrupt() {
    let dek = DataKey::generate();
    let rec = DekRecord {
        refs: 2,
        stanzas: vec![named(&Identity::generate(), &dek)],
    };
    let bytes = rec.encode();
    assert_eq!(decode_dek(&bytes).unwrap(), rec);
    for cut in 0..bytes.len() {
        assert!(matches!(decode_dek(&bytes[..cut]), Err(Error::Corrupt(_))));
    }
    let mut other = bytes.clone();
    other[0] = 3;
    assert!(matches!(decode_dek(&other), Err(Error::Corrupt(_))));
    assert!(matches!(
        decode_dek(&[bytes.as_slice(), &[0]].concat()),
        Err(Error::Corrupt(_))
    ));
}

/// Two recipients with one 4-byte tag: removing one's stanza keeps the other's (the old
/// store removed every stanza with the tag).
#[tokio::test]
async fn removal_compares_whole_recipients_not_tags() {
    let (a, b) = colliding_identities();
    assert_eq!(a.recipient().tag(), b.recipient().tag());
    assert!(!a.recipient().ct_eq(&b.recipient()));
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    store.create_bucket("b", 1).await.unwrap();
    let dek = DataKey::generate();
    let inst = Identity::generate();
    let own = DekStanza::new(inst.recipient(), inst.wrap_own(&dek)).unwrap();
    let id = put_with(&store, "k", vec![own, named(&a, &dek), named(&b, &dek)]).await;
    assert_eq!(store.remove_stanzas(id, &a.recipient()).await.unwrap(), 1);
    let left = store.stanzas(id).await.unwrap();
    assert_eq!(left.len(), 2);
    assert!(!left.iter().any(|s| s.is_for(&a.recipient())));
    let bs = left.iter().find(|s| s.is_for(&b.recipient())).unwrap();
    let opened = b.unwrap_key(bs.wrapped()).unwrap().unwrap();
    assert_eq!(opened.expose(), dek.expose());
    // Removing a again removes nothing; b's stanza goes only when b is removed.
    assert_eq!(store.remove_stanzas(id, &a.recipient()).await.unwrap(), 0);
    assert_eq!(store.remove_stanzas(id, &b.recipient()).await.unwrap(), 1);
    assert_eq!(store.stanzas(id).await.unwrap().len(), 1);
}

/// Version 1 rows get their Recipients when upgraded: the institution (own stanza), a
/// registered patient, a grant's recipient, a configured peer; a stanza nobody known
/// names, and one two known keys with one tag could both own, are kept as unknown. The
/// upgrade runs once, and again (after a crash before the mark) changes nothing.
#[tokio::test]
async fn v1_rows_are_upgraded_with_their_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    store.create_bucket("b", 1).await.unwrap();
    let (inst, patient, reader, peer, stranger) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let (twin_a, twin_b) = colliding_identities();
    store
        .raw_kv()
        .patients
        .insert(
            b"p-1",
            encode_json(&PatientRecord {
                id: "p-1".into(),
                recipient: patient.recipient().to_string(),
                registered_ms: 1,
                proof: String::new(),
                index_seq: 0,
            })
            .unwrap(),
        )
        .unwrap();
    store
        .raw_kv()
        .grants
        .insert(
            b"g-1",
            encode_json(&GrantRecord {
                id: "g-1".into(),
                grant: String::new(),
                request_id: "r".into(),
                patient_id: "p-1".into(),
                recipient: reader.recipient().to_string(),
                issued_ms: 1,
                expires_ms: 2,
                revoked_ms: Some(2),
                records: Vec::new(),
            })
            .unwrap(),
        )
        .unwrap();
    let dek = DataKey::generate();
    let own = DekStanza::new(inst.recipient(), inst.wrap_own(&dek)).unwrap();
    let batch = DekStanza::new(
        reader.recipient(),
        reader.recipient().batch_wrapper().unwrap().wrap(&dek),
    )
    .unwrap();
    let stanzas = vec![
        own,
        named(&patient, &dek),
        batch,
        named(&peer, &dek),
        named(&stranger, &dek),
        named(&twin_a, &dek),
    ];
    let id = put_with(&store, "k", stanzas.clone()).await;
    let plain = put_with(&store, "plain", vec![named(&patient, &dek)]).await;
    // Write the rows as the gateway before version 2 did.
    for d in [id, plain] {
        let rec = decode_dek(&store.raw_kv().deks.get(d.0).unwrap().unwrap()).unwrap();
        store.raw_kv().deks.insert(d.0, rec.encode_v1()).unwrap();
    }
    let v1 = store.stanzas(id).await.unwrap();
    assert!(v1.iter().all(|s| s.recipient().is_none()));

    let others = [peer.recipient(), twin_a.recipient(), twin_b.recipient()];
    let report = store
        .upgrade_dek_records(&inst.recipient(), &others)
        .unwrap();
    assert_eq!(
        report,
        DekUpgrade {
            rows: 2,
            stanzas: 5,
            unknown: 2
        }
    );
    let row = store.raw_kv().deks.get(id.0).unwrap().unwrap();
    assert_eq!(
        DekRecord::version_of(&row),
        Some(keyring::dek_record::DEK_RECORD_V2)
    );
    let got = store.stanzas(id).await.unwrap();
    let want: Vec<Option<Recipient>> = vec![
        Some(inst.recipient()),
        Some(patient.recipient()),
        Some(reader.recipient()),
        Some(peer.recipient()),
        None,
        None,
    ];
    assert_eq!(
        got.iter()
            .map(|s| s.recipient().cloned())
            .collect::<Vec<_>>(),
        want
    );
    for (g, s) in got.iter().zip(&stanzas) {
        assert_eq!(g.wrapped(), s.wrapped());
    }
    assert!(store.stanzas(plain).await.unwrap()[0].is_for(&patient.recipient()));

    // Once: the mark stops a second pass.
    let again = store
        .upgrade_dek_records(&inst.recipient(), &others)
        .unwrap();
    assert_eq!(again, DekUpgrade::default());
    // A crash before the mark: the pass runs again and changes no row's bytes.
    store.raw_kv().log_meta.remove(DEK_V2_MARK).unwrap();
    let after = store
        .upgrade_dek_records(&inst.recipient(), &others)
        .unwrap();
    assert_eq!(after.stanzas, 0);
    assert_eq!(store.raw_kv().deks.get(id.0).unwrap().unwrap(), row);
}

/// A backup carries `deks` rows as they are: one taken before the upgrade restores
/// version 1 rows, which the next open upgrades; one taken after carries version 2 rows
/// and the mark, so the restored store needs no upgrade.
#[tokio::test]
async fn backups_carry_dek_rows_of_either_version() {
    use crate::engine::backup::{restore, write_backup, BackupSink, ExpectedSigner};
    struct Mem(Vec<u8>);
    #[async_trait]
    impl BackupSink for Mem {
        async fn write(&mut self, bytes: &[u8]) -> Result<()> {
            self.0.extend_from_slice(bytes);
            Ok(())
        }
        async fn progress(&mut self, _: u64, _: u64) -> Result<()> {
            Ok(())
        }
    }
    async fn round_trip(store: &SledStore, inst: &Identity) -> (tempfile::TempDir, SledStore) {
        let recovery = Identity::generate();
        let mut sink = Mem(Vec::new());
        write_backup(store, Vec::new(), &recovery.recipient(), inst, &mut sink)
            .await
            .unwrap();
        let dst = tempfile::tempdir().unwrap();
        let expected = ExpectedSigner {
            institution: &inst.recipient(),
            allow_unsigned: false,
        };
        restore(
            &mut sink.0.as_slice(),
            &recovery,
            expected,
            dst.path(),
            &mut |_| {},
        )
        .unwrap();
        let restored = SledStore::open(&dst.path().join("private"), 1 << 20).unwrap();
        (dst, restored)
    }
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    store.create_bucket("b", 1).await.unwrap();
    let (inst, peer) = (Identity::generate(), Identity::generate());
    let dek = DataKey::generate();
    let own = DekStanza::new(inst.recipient(), inst.wrap_own(&dek)).unwrap();
    let id = put_with(&store, "k", vec![own, named(&peer, &dek)]).await;
    let v2 = store.raw_kv().deks.get(id.0).unwrap().unwrap();
    store
        .raw_kv()
        .deks
        .insert(id.0, decode_dek(&v2).unwrap().encode_v1())
        .unwrap();

    // Before: version 1 rows come back, and are upgraded at the next open.
    let (_old_dir, old) = round_trip(&store, &inst).await;
    assert!(old
        .stanzas(id)
        .await
        .unwrap()
        .iter()
        .all(|s| s.recipient().is_none()));
    let report = old
        .upgrade_dek_records(&inst.recipient(), &[peer.recipient()])
        .unwrap();
    assert_eq!((report.rows, report.stanzas, report.unknown), (1, 2, 0));
    assert_eq!(old.raw_kv().deks.get(id.0).unwrap().unwrap(), v2);

    // After: version 2 rows and the mark come back; nothing left to upgrade.
    store
        .upgrade_dek_records(&inst.recipient(), &[peer.recipient()])
        .unwrap();
    let (_new_dir, new) = round_trip(&store, &inst).await;
    assert_eq!(new.raw_kv().deks.get(id.0).unwrap().unwrap(), v2);
    assert_eq!(
        new.upgrade_dek_records(&inst.recipient(), &[]).unwrap(),
        DekUpgrade::default()
    );
    assert!(new.stanzas(id).await.unwrap()[1].is_for(&peer.recipient()));
}

#[test]
fn object_keys_sort_by_bucket_then_key_bytes() {
    // The listing relies on `bucket ‖ 0x00` being an exact prefix and on byte order.
    assert!(object_key("a", "z") < object_key("a", "é"));
    assert!(object_key("a", "\u{FFFF}") < object_key("a", "😀"));
    assert!(!object_key("ab", "").starts_with(&object_key("a", "")));
    assert!(object_key("a", "\u{10FFFF}") < object_key("a0", ""));
    assert_eq!(
        leaf_key(&BlobId([1; 16]), 0x0102)[16..],
        [0, 0, 0, 0, 0, 0, 1, 2]
    );
}
/// A body that fails before its blob reaches the public store leaves an orphan row
/// (and, past `LEAF_BATCH` chunks, leaves) for a blob gc can never list: gc must still
/// be able to forget them, or every interrupted upload leaks private-store rows.
#[tokio::test]
async fn gc_forgets_uploads_that_failed_before_reaching_the_public_store() {
    use std::sync::Arc;

    use bytes::Bytes;

    use futures::StreamExt;

    use crate::engine::record::{Engine, EngineConfig, PutRequest};

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
    store.create_bucket("b", 1).await.unwrap();
    let public: crate::store::public::PublicStore = Arc::new(object_store::memory::InMemory::new());
    let engine = Engine::new(
        Arc::clone(&public),
        store.clone() as Arc<dyn PrivateStore>,
        Arc::new(Identity::generate()),
        EngineConfig {
            chunk_size: 1,
            part_size: 5 << 20,
            upload_concurrency: 2,
            ..EngineConfig::default()
        },
    );
    let body = futures::stream::iter(vec![
        Ok(Bytes::from(vec![7u8; 300])),
        Err(std::io::Error::other("client went away")),
    ]);
    let req = PutRequest {
        bucket: "b".into(),
        key: "k".into(),
        ..Default::default()
    };
    assert!(matches!(engine.put(req, body).await, Err(Error::Body(_))));
    assert!(store.raw_kv().pending.is_empty());
    assert!(
        public.list(None).next().await.is_none(),
        "nothing was uploaded"
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let report = crate::engine::gc::run(
        &public,
        None,
        store.as_ref(),
        std::time::Duration::ZERO,
        true,
    )
    .await
    .unwrap();
    assert_eq!(report.scanned, 0);
    assert_eq!(
        store.raw_kv().orphans.len(),
        0,
        "orphan row of a never-uploaded blob leaks"
    );
    assert_eq!(
        store.raw_kv().leaves.len(),
        0,
        "leaves of a never-uploaded blob leak"
    );
}

/// `patient_objects` follows puts, overwrites that change the patient, and deletes, and a
/// store made before it existed is indexed when opened.
#[tokio::test]
async fn patient_index_follows_writes_and_is_built_for_older_stores() {
    use crate::store::private::{Precondition, PutCommit};
    use keyring::{BlobId, DekId, Part, SUITE_V1};

    async fn put(store: &SledStore, key: &str, patient: Option<&str>) {
        let blob = BlobId::random();
        store.add_pending(blob, crate::now_ms()).await.unwrap();
        let manifest = Manifest {
            suite: SUITE_V1,
            dek_id: DekId::random(),
            size: 1,
            last_modified_ms: 1,
            etag: "\"e\"".into(),
            content_type: None,
            headers: Vec::new(),
            metadata: Vec::new(),
            checksums: Vec::new(),
            patient: patient.map(Into::into),
            parts: vec![Part {
                blob,
                chunk_size: 1024,
                plaintext_len: 1,
                root: [1; 32],
            }],
        };
        store
            .commit_put(PutCommit {
                bucket: "b".into(),
                key: key.into(),
                stanzas: vec![stanza()],
                manifest,
                precondition: Precondition::None,
                upload: None,
            })
            .await
            .unwrap();
    }
    async fn keys(store: &SledStore, patient: &str) -> Vec<String> {
        let rows = store.patient_objects(patient).await.unwrap();
        assert!(rows
            .iter()
            .all(|(_, _, m)| m.patient.as_deref() == Some(patient)));
        rows.into_iter().map(|(_, k, _)| k).collect()
    }

    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    store.create_bucket("b", 1).await.unwrap();
    put(&store, "a1", Some("ann")).await;
    put(&store, "a2", Some("ann")).await;
    put(&store, "x", Some("annie")).await;
    put(&store, "n", None).await;
    assert_eq!(keys(&store, "ann").await, ["a1", "a2"]);
    assert_eq!(keys(&store, "annie").await, ["x"]);
    assert!(keys(&store, "an").await.is_empty());
    // An overwrite that changes the patient moves the row; one without a patient drops it.
    put(&store, "a2", Some("annie")).await;
    put(&store, "a1", None).await;
    assert!(keys(&store, "ann").await.is_empty());
    assert_eq!(keys(&store, "annie").await, ["a2", "x"]);
    store.delete_object("b", "x").await.unwrap();
    assert_eq!(keys(&store, "annie").await, ["a2"]);
    assert_eq!(store.raw_kv().patient_objects.len(), 1);

    // A store from before the index: no rows, no mark. Opening it builds the index.
    put(&store, "a3", Some("ann")).await;
    store.raw_kv().patient_objects.clear().unwrap();
    store.raw_kv().log_meta.remove(PATIENT_INDEX_MARK).unwrap();
    store.flush().await.unwrap();
    drop(store);
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(keys(&store, "ann").await, ["a3"]);
    assert_eq!(keys(&store, "annie").await, ["a2"]);
    assert!(store
        .raw_kv()
        .log_meta
        .get(PATIENT_INDEX_MARK)
        .unwrap()
        .is_some());
}
