//! The upgrade fixtures' private stores. `tests/fixtures/upgrade-e15ed43` (written by main
//! e15ed43, whose DEK records are version 1): opened and upgraded, every DEK record is version 2
//! and every stanza names the Recipient that really opens it. `tests/fixtures/upgrade-2e5dec1`
//! (written by main 2e5dec1, DEK records version 2, a key rollover whose re-wrap is pending):
//! nothing to upgrade, and every stanza names the key that opens it, the previous institution
//! key for the records written before the rollover, the new one for those after.

use std::path::{Path, PathBuf};

use gateway::store::private::prelude::*;
use gateway::store::private::sled::{DekUpgrade, SledStore};
use keyring::{Identity, Recipient};

fn fixture() -> PathBuf {
    fixture_of("e15ed43")
}

fn fixture_of(commit: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/fixtures/upgrade-{commit}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn identity(path: &Path) -> Identity {
    keyring::idfile::decode(&std::fs::read_to_string(path).unwrap(), None).unwrap()
}

#[tokio::test]
async fn fixture_dek_records_are_upgraded_to_v2_with_their_recipients() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
            .unwrap();
    let institution = identity(&fixture().join("data/institution.key"));
    let patient = identity(&fixture().join("patient.key"));
    let reader = identity(&fixture().join("reader.key"));
    assert_eq!(
        institution.recipient().to_string(),
        expected["institution"].as_str().unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture().join("data/private"), dir.path());
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();

    // Every object of both buckets, and its DEK.
    let mut objects = Vec::new();
    for bucket in ["radiology", "labs"] {
        for o in store.list_objects(bucket, "", "", 1000).await.unwrap() {
            objects.push((format!("{bucket}/{}", o.key), o.manifest));
        }
    }
    assert_eq!(
        objects.len(),
        expected["records"].as_object().unwrap().len()
    );
    // As written by e15ed43: version 1, no stanza knows its recipient.
    for (_, m) in &objects {
        let stanzas = store.stanzas(m.dek_id).await.unwrap();
        assert!(!stanzas.is_empty());
        assert!(stanzas.iter().all(|s| s.recipient().is_none()));
    }

    let report = store
        .upgrade_dek_records(&institution.recipient(), &[])
        .unwrap();
    assert_eq!(report.unknown, 0, "{report:?}");
    assert!(report.rows > 0 && report.stanzas > 0, "{report:?}");
    assert_eq!(
        store
            .upgrade_dek_records(&institution.recipient(), &[])
            .unwrap(),
        DekUpgrade::default(),
        "the upgrade runs once"
    );

    let patient_records: Vec<&str> = expected["patient"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let who: [(&Identity, Recipient); 3] = [
        (&institution, institution.recipient()),
        (&patient, patient.recipient()),
        (&reader, reader.recipient()),
    ];
    let mut reader_stanzas = 0;
    for (name, m) in &objects {
        let stanzas = store.stanzas(m.dek_id).await.unwrap();
        for s in &stanzas {
            let r = s.recipient().expect("every stanza names its recipient");
            let (id, _) = who
                .iter()
                .find(|(_, k)| k.ct_eq(r))
                .unwrap_or_else(|| panic!("{name}: a stanza for an unexpected key {r}"));
            assert!(
                matches!(id.unwrap_key(s.wrapped()), Some(Ok(_))),
                "{name}: the stanza said to be {r}'s does not open with its key"
            );
            if r.ct_eq(&reader.recipient()) {
                reader_stanzas += 1;
            }
        }
        assert!(stanzas.iter().any(|s| s.is_for(&institution.recipient())));
        assert_eq!(
            stanzas.iter().any(|s| s.is_for(&patient.recipient())),
            patient_records.contains(&name.as_str()),
            "{name}: the patient's stanza"
        );
    }
    // The grant in force re-wrapped the patient's radiology records for the reader.
    assert!(reader_stanzas > 0);
    drop(store);

    // Reopened, the rows stay version 2 (the mark holds) and read the same.
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    for (_, m) in &objects {
        assert!(store
            .stanzas(m.dek_id)
            .await
            .unwrap()
            .iter()
            .all(|s| s.recipient().is_some()));
    }
}

#[tokio::test]
async fn fixture_2e5dec1_dek_records_name_the_key_before_or_after_the_rollover() {
    let dir_2e5dec1 = fixture_of("2e5dec1");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir_2e5dec1.join("expected.json")).unwrap())
            .unwrap();
    let new = identity(&dir_2e5dec1.join("data/institution.key"));
    let previous = identity(
        &dir_2e5dec1
            .join("data")
            .join(expected["previous_identity_file"].as_str().unwrap()),
    );
    let patient = identity(&dir_2e5dec1.join("patient.key"));
    let reader = identity(&dir_2e5dec1.join("reader.key"));
    assert_eq!(
        new.recipient().to_string(),
        expected["institution"].as_str().unwrap()
    );
    assert_eq!(
        previous.recipient().to_string(),
        expected["institution_before_rotation"].as_str().unwrap()
    );
    let before = strings(&expected["records_before_rotation"]);
    let patient_records = strings(&expected["patient"]["records"]);
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&dir_2e5dec1.join("data/private"), dir.path());
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    // Version 2 already: the upgrade has nothing to do, under either key.
    for r in [new.recipient(), previous.recipient()] {
        assert_eq!(
            store.upgrade_dek_records(&r, &[]).unwrap(),
            DekUpgrade::default()
        );
    }

    let mut objects = Vec::new();
    for bucket in ["radiology", "labs"] {
        for o in store.list_objects(bucket, "", "", 1000).await.unwrap() {
            objects.push((format!("{bucket}/{}", o.key), o.manifest));
        }
    }
    assert_eq!(
        objects.len(),
        expected["records"].as_object().unwrap().len()
    );
    let who: [(&Identity, Recipient); 4] = [
        (&new, new.recipient()),
        (&previous, previous.recipient()),
        (&patient, patient.recipient()),
        (&reader, reader.recipient()),
    ];
    let mut reader_stanzas = 0;
    for (name, m) in &objects {
        let stanzas = store.stanzas(m.dek_id).await.unwrap();
        for s in &stanzas {
            let r = s.recipient().expect("every v2 stanza names its recipient");
            let (id, _) = who
                .iter()
                .find(|(_, k)| k.ct_eq(r))
                .unwrap_or_else(|| panic!("{name}: a stanza for an unexpected key {r}"));
            assert!(
                matches!(id.unwrap_key(s.wrapped()), Some(Ok(_))),
                "{name}: the stanza said to be {r}'s does not open with its key"
            );
            if r.ct_eq(&reader.recipient()) {
                reader_stanzas += 1;
            }
        }
        // The re-wrap is pending: a record written before the rollover has the previous
        // key's stanza only, one written after it the new key's only.
        let written_before = before.contains(name);
        assert_eq!(
            stanzas.iter().any(|s| s.is_for(&previous.recipient())),
            written_before,
            "{name}: the previous institution key's stanza"
        );
        assert_eq!(
            stanzas.iter().any(|s| s.is_for(&new.recipient())),
            !written_before,
            "{name}: the new institution key's stanza"
        );
        assert_eq!(
            stanzas.iter().any(|s| s.is_for(&patient.recipient())),
            patient_records.contains(name),
            "{name}: the patient's stanza"
        );
    }
    // The grant in force wrapped the scan's data key (shared by its copy) for the reader.
    assert!(reader_stanzas > 0);
}

/// Every log row of both fixtures (written by e15ed43 and 2e5dec1) decodes into typed rows:
/// each kind is one `EventKind` knows and each actor the form its writer meant, and every
/// row encodes back to its stored bytes, byte for byte, as do the log entries (their
/// commitments match the stored leaves: `verify` finds nothing).
#[tokio::test]
async fn fixture_log_rows_decode_typed_and_encode_to_the_same_bytes() {
    use gateway::store::private::{Actor, Event, EventKind};
    use gateway::store::rules::log::EventBlock;
    for commit in ["e15ed43", "2e5dec1"] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixture_of(commit).join("data/private"), dir.path());
        let mut events: Vec<Event> = Vec::new();
        {
            let db = sled::open(dir.path()).unwrap();
            let tree = db.open_tree("events").unwrap();
            assert!(!tree.is_empty(), "{commit}: no log rows");
            for item in tree.iter() {
                let (_, row) = item.unwrap();
                let decoded = EventBlock::decode(&row).unwrap();
                // The row again, from the typed events.
                let again = if row.first() == Some(&b'{') {
                    assert_eq!(decoded.len(), 1);
                    serde_json::to_vec(&decoded[0]).unwrap()
                } else {
                    let mut b = vec![1u8];
                    b.extend_from_slice(&(decoded.len() as u32).to_be_bytes());
                    for e in &decoded {
                        let json = serde_json::to_vec(e).unwrap();
                        b.extend_from_slice(&(json.len() as u32).to_be_bytes());
                        b.extend_from_slice(&json);
                    }
                    b
                };
                assert_eq!(
                    again,
                    row.to_vec(),
                    "{commit}: a row re-encodes differently"
                );
                events.extend(decoded);
            }
        }
        let mut kinds = std::collections::BTreeSet::new();
        for e in &events {
            assert!(e.kind.is_known(), "{commit}: kind {}", e.kind);
            kinds.insert(e.kind.as_str().to_string());
            let want = match &e.kind {
                EventKind::Put | EventKind::Copy => Actor::S3,
                EventKind::PatientRegister | EventKind::ShareRequest | EventKind::KeyRollover => {
                    Actor::Admin
                }
                EventKind::Grant | EventKind::Revocation => {
                    Actor::Patient(e.patient.clone().unwrap())
                }
                EventKind::Rewrap => Actor::Gateway,
                other => panic!("{commit}: unexpected kind {other}"),
            };
            assert_eq!(e.actor, want, "{commit}: entry {}", e.seq);
            let entry = gateway::store::private::entry_of(e).unwrap();
            assert_eq!(entry.kind, e.kind.as_str());
            assert_eq!(entry.actor, e.actor.to_string());
            assert_eq!(entry.root, e.root_hash().unwrap());
        }
        for k in [
            "put",
            "copy",
            "patient-register",
            "share-request",
            "grant",
            "rewrap",
        ] {
            assert!(kinds.contains(k), "{commit}: no {k} entry in {kinds:?}");
        }
        // Through the store, the same events.
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.events(0, 10_000).await.unwrap(), events);
    }
}
