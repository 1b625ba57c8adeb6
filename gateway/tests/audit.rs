//! A patient's audit (`gateway::engine::audit::check`) against a real gateway's answers: an honest
//! log passes; each way a gateway could lie fails and says how: an entry dropped from its
//! private store (in the middle, or the newest one after an audit saw it), an edited entry,
//! a reordered chain, an older checkpoint served, a checkpoint not signed by the institution.

use std::sync::Arc;

use gateway::engine::audit::{check, AuditState};
use gateway::engine::log::CHECKPOINT_PATH;
use gateway::engine::record::{Engine, EngineConfig};
use gateway::front::api::{entries_for, EntriesAnswer};
use gateway::store::private::sled::SledStore;
use gateway::store::private::{prelude::*, Event};
use gateway::store::public::PublicStore;
use keyring::Identity;
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

    fn engine(&self) -> Engine {
        // sled lets go of its lock a moment after the last handle drops.
        let path = self.dir.path().join("private");
        let mut tries = 0;
        let store = loop {
            match SledStore::open(&path, 4 << 20) {
                Ok(s) => break Arc::new(s),
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("cannot open the private store: {e}"),
            }
        };
        Engine::new(
            Arc::clone(&self.public),
            store as Arc<dyn PrivateStore>,
            Arc::clone(&self.institution),
            EngineConfig::default(),
        )
    }

    fn raw(&self) -> sled::Db {
        for _ in 0..100 {
            if let Ok(db) = sled::open(self.dir.path().join("private")) {
                return db;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("cannot open the private store")
    }

    async fn public_note(&self) -> String {
        let b = self
            .public
            .get(&StorePath::from(CHECKPOINT_PATH))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    async fn answer(&self) -> (EntriesAnswer, String) {
        let engine = self.engine();
        let a = entries_for(&engine, "alice").await.unwrap();
        drop(engine);
        (a, self.public_note().await)
    }
}

async fn event(engine: &Engine, patient: &str, kind: &str, actor: &str) {
    engine
        .private_store()
        .append_event(Event {
            time_ms: gateway::now_ms(),
            kind: kind.into(),
            actor: actor.into(),
            patient: Some(patient.into()),
            bucket: Some("ehr".into()),
            key: Some(format!("{patient}/note.txt")),
            detail: format!("{kind} by {actor}"),
            ..Event::default()
        })
        .await
        .unwrap();
}

/// Alice has 4 entries, interleaved with bob's.
async fn populated() -> Env {
    let env = Env::new();
    let engine = env.engine();
    for (p, k, a) in [
        ("alice", "put", "s3"),
        ("bob", "put", "s3"),
        ("alice", "grant", "patient:alice"),
        ("alice", "read", "peer:hospital-b"),
        ("bob", "read", "s3"),
        ("alice", "read", "peer:hospital-b"),
    ] {
        event(&engine, p, k, a).await;
    }
    engine.private_store().flush().await.unwrap();
    drop(engine);
    env
}

fn audit(
    env: &Env,
    a: &EntriesAnswer,
    note: &str,
    last: Option<&AuditState>,
) -> Result<AuditState, String> {
    let r = check(
        &env.institution.recipient(),
        "alice",
        a,
        note,
        &[],
        last,
        &[],
    );
    r.map(|r| r.state).map_err(|e| e.to_string())
}

#[tokio::test]
async fn an_honest_gateway_passes_and_shows_the_peer_read() {
    let env = populated().await;
    let (a, note) = env.answer().await;
    let r = check(
        &env.institution.recipient(),
        "alice",
        &a,
        &note,
        &[],
        None,
        &[],
    )
    .unwrap();
    assert_eq!(r.entries.len(), 4);
    assert_eq!(
        r.entries.iter().map(|e| e.patient_seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(r
        .entries
        .iter()
        .any(|e| e.kind == "read" && e.actor == "peer:hospital-b"));
    // Bob's entries are not in alice's answer.
    assert!(a
        .entries
        .iter()
        .all(|e| e.event.patient.as_deref() == Some("alice")));
}

#[tokio::test]
async fn an_entry_dropped_from_the_private_store_fails() {
    let env = populated().await;
    let (a, note) = env.answer().await;
    let state = audit(&env, &a, &note, None).unwrap();
    let grant_index = a
        .entries
        .iter()
        .find(|e| e.event.kind == "grant")
        .unwrap()
        .event
        .seq;
    let newest_index = a.entries.last().unwrap().event.seq;

    // The gateway drops alice's grant entry (the middle of her chain).
    {
        let db = env.raw();
        db.open_tree("events")
            .unwrap()
            .remove(grant_index.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let (a, note) = env.answer().await;
    let err = audit(&env, &a, &note, Some(&state)).unwrap_err();
    assert!(err.contains("entry number 2 is missing"), "{err}");

    // A fresh log where the gateway drops alice's newest entry (B's read) after an audit
    // saw it: the chain alone cannot tell, the kept count does.
    let env = populated().await;
    let (a, note) = env.answer().await;
    let state = audit(&env, &a, &note, None).unwrap();
    {
        let db = env.raw();
        db.open_tree("events")
            .unwrap()
            .remove(newest_index.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let (a, note) = env.answer().await;
    let err = audit(&env, &a, &note, Some(&state)).unwrap_err();
    assert!(err.contains("entries were dropped"), "{err}");
}

#[tokio::test]
async fn an_edited_or_reordered_entry_fails() {
    let env = populated().await;
    let (a, note) = env.answer().await;

    let mut edited = a.clone();
    edited.entries[3].event.actor = "s3".into(); // hide who read
    let err = audit(&env, &edited, &note, None).unwrap_err();
    assert!(err.contains("does not match the published log"), "{err}");

    let mut reordered = a.clone();
    let (s1, s2) = (
        reordered.entries[1].event.patient_seq,
        reordered.entries[2].event.patient_seq,
    );
    reordered.entries[1].event.patient_seq = s2;
    reordered.entries[2].event.patient_seq = s1;
    let err = audit(&env, &reordered, &note, None).unwrap_err();
    assert!(err.contains("log index"), "{err}");

    let mut foreign = a.clone();
    foreign.entries[0].event.patient = Some("bob".into());
    let err = audit(&env, &foreign, &note, None).unwrap_err();
    assert!(err.contains("not about you"), "{err}");
}

#[tokio::test]
async fn an_older_or_forged_checkpoint_fails() {
    let env = populated().await;
    let (old, old_note) = env.answer().await;
    let state = audit(&env, &old, &old_note, None).unwrap();
    {
        let engine = env.engine();
        event(&engine, "alice", "read", "peer:hospital-b").await;
        engine.private_store().flush().await.unwrap();
    }
    let (new, new_note) = env.answer().await;
    assert!(new.tree_size > old.tree_size);

    // The gateway serves its older answer while the public store has moved on: the
    // consistency proof it would need is missing.
    let err = audit(&env, &old, &new_note, None).unwrap_err();
    assert!(err.contains("gateway vs public checkpoint"), "{err}");
    // Public store rolled back below what the gateway answered.
    let err = audit(&env, &new, &old_note, None).unwrap_err();
    assert!(err.contains("older than the gateway's answer"), "{err}");
    // Moving on from the last audit needs the consistency proof from its size.
    let err = audit(&env, &new, &new_note, Some(&state)).unwrap_err();
    assert!(err.contains("previous audit vs now"), "{err}");
    let leaves = {
        let engine = env.engine();
        engine
            .private_store()
            .log_leaves(0, new.tree_size)
            .await
            .unwrap()
    };
    let proof: Vec<String> =
        keyring::ConsistencyProof::generate(&leaves, old.tree_size, new.tree_size)
            .unwrap()
            .hashes()
            .map(hex::encode)
            .collect();
    let r = check(
        &env.institution.recipient(),
        "alice",
        &new,
        &new_note,
        &[],
        Some(&state),
        &proof,
    )
    .unwrap();
    assert_eq!(r.state.entries, 5);
    // An answer older than what the patient already saw.
    let seen = AuditState {
        size: new.tree_size,
        root: hex::encode(
            keyring::checkpoint::SignedNote::parse(&new_note)
                .unwrap()
                .checkpoint()
                .unwrap()
                .root,
        ),
        entries: 5,
    };
    let err = audit(&env, &old, &old_note, Some(&seen)).unwrap_err();
    assert!(err.contains("rollback"), "{err}");

    // A checkpoint signed by someone else.
    let mallory = Identity::generate();
    let cp = keyring::checkpoint::SignedNote::parse(&new_note)
        .unwrap()
        .checkpoint()
        .unwrap();
    let forged = mallory
        .sign_checkpoint(
            &gateway::engine::log::origin(&env.institution.recipient()),
            &cp,
        )
        .unwrap();
    let mut bad = new.clone();
    bad.checkpoint = forged.clone();
    let err = audit(&env, &bad, &new_note, None).unwrap_err();
    assert!(
        err.contains("gateway's checkpoint does not verify"),
        "{err}"
    );
    let err = audit(&env, &new, &forged, None).unwrap_err();
    assert!(
        err.contains("public store's checkpoint does not verify"),
        "{err}"
    );
}
