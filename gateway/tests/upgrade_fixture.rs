//! The upgrade fixture's private store (`tests/fixtures/upgrade-e15ed43`, written by main
//! e15ed43, whose DEK records are version 1): opened and upgraded, every DEK record is
//! version 2 and every stanza names the Recipient that really opens it.

use std::path::{Path, PathBuf};

use gateway::store::private::sled::{DekUpgrade, SledStore};
use gateway::store::private::PrivateStore;
use keyring::{Identity, Recipient};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/upgrade-e15ed43")
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
