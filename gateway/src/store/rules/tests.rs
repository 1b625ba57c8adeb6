//! The rules write the same bytes whatever the adapter: one sequence of calls on the sled
//! adapter and on the in-memory one leaves identical rows (timestamps and salts aside).

use super::*;
use crate::store::kv::memory::MemoryKv;
use crate::store::kv::{prefix, Table};
use crate::store::private::prelude::*;
use crate::store::private::sled::SledStore;
use crate::store::private::{
    AccessKeyRecord, DekStanza, Event, GrantRecord, MountRecord, PartRecord, PatientRecord,
    Precondition, PutCommit, RequestState, ShareRequestRecord, UploadRecord,
};
use keyring::{BlobId, DataKey, DekId, Identity, Manifest, Part, SUITE_V1};

struct Script {
    blobs: Vec<BlobId>,
    dek: DekId,
    stanza: DekStanza,
}

fn manifest(s: &Script, blob: BlobId, patient: Option<&str>) -> Manifest {
    Manifest {
        suite: SUITE_V1,
        dek_id: s.dek,
        size: 3,
        last_modified_ms: 7,
        etag: "\"e\"".into(),
        content_type: Some("text/plain".into()),
        headers: Vec::new(),
        metadata: vec![("m".into(), "v".into())],
        checksums: Vec::new(),
        patient: patient.map(Into::into),
        parts: vec![Part {
            blob,
            chunk_size: 64,
            plaintext_len: 3,
            root: [9; 32],
        }],
    }
}

async fn run(store: &dyn PrivateStore, s: &Script) {
    store.create_bucket("b", 1).await.unwrap();
    for b in &s.blobs {
        store.add_pending(*b, 5).await.unwrap();
    }
    store
        .put_leaves(s.blobs[0], 0, &[[1; 32], [2; 32]])
        .await
        .unwrap();
    let writes = [
        ("k", 0, Some("p1")),
        ("k", 1, None),
        ("j", 2, Some("p1")),
        ("i", 4, Some("p1")),
    ];
    for (key, blob, patient) in writes {
        store
            .commit_put(PutCommit {
                bucket: "b".into(),
                key: key.into(),
                manifest: manifest(s, s.blobs[blob], patient),
                stanzas: vec![s.stanza.clone()],
                precondition: Precondition::None,
                upload: None,
            })
            .await
            .unwrap();
    }
    let upload = UploadRecord {
        bucket: "b".into(),
        key: "u".into(),
        created_ms: 1,
        touched_ms: 1,
        dek_id: s.dek,
        stanza: vec![1, 2, 3],
        content_type: None,
        headers: Vec::new(),
        metadata: Vec::new(),
        checksum_algorithm: None,
        checksum_type: None,
    };
    store.create_upload("up", upload).await.unwrap();
    let part = PartRecord {
        blob: s.blobs[3],
        chunk_size: 64,
        plaintext_len: 3,
        root: [4; 32],
        md5: "00".into(),
        created_ms: 1,
        checksums: Vec::new(),
    };
    store.put_part("up", 1, part).await.unwrap();
    store
        .put_patient(
            PatientRecord {
                id: "p1".into(),
                recipient: "r".into(),
                registered_ms: 1,
                proof: "00".into(),
                index_seq: 0,
            },
            false,
        )
        .await
        .unwrap();
    store
        .insert_request(ShareRequestRecord {
            id: "q".into(),
            request: "text".into(),
            patient_id: "p1".into(),
            state: RequestState::Pending,
            created_ms: 1,
            grant: None,
        })
        .await
        .unwrap();
    let grant = GrantRecord {
        id: "g".into(),
        grant: "text".into(),
        request_id: "q".into(),
        patient_id: "p1".into(),
        recipient: "r".into(),
        issued_ms: 1,
        expires_ms: 2,
        revoked_ms: None,
        records: Vec::new(),
    };
    store
        .decide_request("q", RequestState::Approved, Some(grant))
        .await
        .unwrap();
    store
        .put_access_key(AccessKeyRecord {
            id: "AK".into(),
            sealed_secret: vec![1],
            buckets: Vec::new(),
            created_ms: 1,
            v: crate::store::private::ACCESS_KEY_ROW_V2,
            label_patients: false,
        })
        .await
        .unwrap();
    store
        .put_mount(MountRecord {
            bucket: "m".into(),
            peer: "peer".into(),
            request_id: "q".into(),
            grant: None,
            created_ms: 1,
            state: None,
        })
        .await
        .unwrap();
    store.put_checkpoint(1, "note").await.unwrap();
    store.put_peer_key("peer", "r2").await.unwrap();
    let event = Event {
        kind: "put".into(),
        actor: "AK".into(),
        ..Event::default()
    };
    let patient = Event {
        patient: Some("p1".into()),
        ..event.clone()
    };
    store.append_events(vec![event, patient]).await.unwrap();
    store.set_last_backup_ms(9).await.unwrap();
    store.delete_object("b", "j").await.unwrap();
}

fn rows<K: Kv>(store: &KvStore<K>, table: Table) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .raw_kv()
        .range(table, prefix(b""))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[tokio::test]
async fn sled_and_memory_adapters_hold_the_same_rows() {
    let id = Identity::generate();
    let s = Script {
        blobs: (0..5).map(|_| BlobId::random()).collect(),
        dek: DekId::random(),
        stanza: DekStanza::new(id.recipient(), id.wrap_own(&DataKey::generate())).unwrap(),
    };
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path(), 1 << 20).unwrap();
    let memory = KvStore::new(MemoryKv::new()).unwrap();
    run(&sled, &s).await;
    run(&memory, &s).await;
    for table in Table::ALL {
        let (mut a, b) = (rows(&sled, table), rows(&memory, table));
        assert!(!b.is_empty(), "{table:?} is exercised");
        if table == Table::LogMeta {
            // The sled adapter marks its own upgrade of the log to tiles.
            a.retain(|(k, _)| k != b"tiles");
        }
        match table {
            // Timestamps of now (orphaned at, last part) and random salts differ.
            Table::Orphans
            | Table::Uploads
            | Table::Events
            | Table::PatientHeads
            | Table::LogTiles => {
                let keys =
                    |r: &[(Vec<u8>, Vec<u8>)]| r.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
                assert_eq!(keys(&a), keys(&b), "{table:?}");
            }
            _ => assert_eq!(a, b, "{table:?}"),
        }
    }
}

/// The log holds only kinds `EventKind` names: an append of another is refused (nothing
/// written), and a stored row holding one (damage: no version wrote one) reads as `Corrupt`
/// naming it, while the same row with a known kind reads.
#[tokio::test]
async fn the_log_refuses_and_flags_unknown_event_kinds() {
    use crate::store::kv::Tx;
    use crate::store::private::EventKind;
    let store = KvStore::new(MemoryKv::new()).unwrap();
    let good = Event {
        time_ms: 1,
        kind: EventKind::Read,
        actor: "AK".into(),
        ..Event::default()
    };
    let odd = Event {
        kind: EventKind::Other("teleport".into()),
        ..good.clone()
    };
    let err = store.append_event(odd.clone()).await.unwrap_err();
    assert!(
        matches!(&err, crate::Error::InvalidArgument(m) if m.contains("teleport")),
        "{err:?}"
    );
    assert_eq!(store.log_size().await.unwrap(), 0);
    assert_eq!(store.append_event(good).await.unwrap(), 0);
    let row = rows(&store, Table::Events).remove(0).1;
    // The same row with the kind's text replaced by one of the same length.
    let (from, to) = (&b"\"kind\":\"read\""[..], &b"\"kind\":\"tele\""[..]);
    let at = row
        .windows(from.len())
        .position(|w| w == from)
        .expect("the row holds its kind");
    let mut planted = row.clone();
    planted[at..at + to.len()].copy_from_slice(to);
    assert_ne!(planted, row);
    store
        .raw_kv()
        .transact(&[Table::Events], |tx: &dyn Tx| {
            tx.put(Table::Events, &0u64.to_be_bytes(), &planted)
        })
        .unwrap();
    let err = store.events(0, 10).await.unwrap_err();
    assert!(
        matches!(&err, crate::Error::Corrupt(m) if m.contains("unknown kind \"tele\"")),
        "{err:?}"
    );
}
