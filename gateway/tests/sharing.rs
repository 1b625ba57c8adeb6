//! Consent on the engine: every forged, altered, replayed, expired or out-of-scope grant
//! is refused, and nothing is re-wrapped without the patient's valid signature.

use std::sync::Arc;

use bytes::Bytes;
use gateway::engine::record::{Engine, EngineConfig, PutRequest};
use gateway::engine::sharing::{grant_for, registration_for, PATIENT_META};
use gateway::store::private::prelude::*;
use gateway::store::private::sled::SledStore;
use gateway::store::public::PublicStore;
use gateway::Error;
use keyring::consent::{Grant, Records, Revocation, Scope, ShareRequest, SignedGrant};
use keyring::{Identity, Manifest, Recipient};
use object_store::memory::InMemory;

struct Env {
    _dir: tempfile::TempDir,
    engine: Engine,
    public: PublicStore,
    private: Arc<SledStore>,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let private = Arc::new(SledStore::open(dir.path(), 4 << 20).unwrap());
    private.create_bucket("ehr", 1).await.unwrap();
    let public: PublicStore = Arc::new(InMemory::new());
    let engine = Engine::new(
        Arc::clone(&public),
        private.clone() as Arc<dyn PrivateStore>,
        Arc::new(Identity::generate()),
        EngineConfig {
            chunk_size: 4096,
            part_size: 1 << 20,
            upload_concurrency: 2,
            ..Default::default()
        },
    );
    Env {
        _dir: dir,
        engine,
        public,
        private,
    }
}

fn institution(e: &Env) -> Recipient {
    e.engine.institution().recipient()
}

async fn register(e: &Env, id: &str) -> Identity {
    let me = Identity::generate();
    let proof = registration_for(&me, &institution(e), id);
    e.engine
        .register_patient(id, &me.recipient().to_string(), &proof, "test")
        .await
        .unwrap();
    me
}

async fn put(e: &Env, key: &str, patient: Option<&str>, bytes: &[u8]) -> Manifest {
    let metadata = patient
        .map(|p| vec![(PATIENT_META.to_string(), p.to_string())])
        .unwrap_or_default();
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::copy_from_slice(bytes))]);
    e.engine
        .put(
            PutRequest {
                bucket: "ehr".into(),
                key: key.into(),
                metadata,
                ..Default::default()
            },
            body,
        )
        .await
        .unwrap()
}

fn share_request(e: &Env, patient: &str, recipient: &Recipient, records: Records) -> ShareRequest {
    let now = gateway::now_ms();
    ShareRequest {
        institution: institution(e).fingerprint(),
        patient_id: patient.into(),
        scope: Scope {
            records,
            include_future: false,
        },
        recipient: recipient.clone(),
        requester: "cardiology".into(),
        purpose_text: "second opinion".into(),
        purpose_code: "TREAT".into(),
        created_ms: now,
        expires_ms: now + 3_600_000,
        nonce: rand::random(),
    }
}

async fn submit(e: &Env, req: &ShareRequest) -> String {
    e.engine
        .create_request(&req.to_text(), "test")
        .await
        .unwrap()
        .id
}

/// Whether `who` can unwrap the DEK of the record at `key`.
async fn can_read(e: &Env, key: &str, who: &Identity) -> bool {
    let m = e.private.manifest("ehr", key).await.unwrap().unwrap();
    e.private
        .stanzas(m.dek_id)
        .await
        .unwrap()
        .iter()
        .any(|s| matches!(who.unwrap_key(s.wrapped()), Some(Ok(_))))
}

fn refused(r: Result<impl std::fmt::Debug, Error>, why: &str) {
    match r {
        Err(Error::GrantRefused(m)) => assert!(m.contains(why), "{why:?} not in {m:?}"),
        other => panic!("expected a refusal ({why}), got {other:?}"),
    }
}

#[tokio::test]
async fn records_get_the_patients_stanza_and_unknown_patients_are_refused() {
    let e = env().await;
    let alice = register(&e, "alice").await;
    put(&e, "a/1", Some("alice"), b"one").await;
    assert!(can_read(&e, "a/1", &alice).await);
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]);
    let r = e
        .engine
        .put(
            PutRequest {
                bucket: "ehr".into(),
                key: "z".into(),
                metadata: vec![(PATIENT_META.into(), "nobody".into())],
                ..Default::default()
            },
            body,
        )
        .await;
    assert!(matches!(r, Err(Error::UnknownPatient(_))), "{r:?}");
    assert!(e.private.manifest("ehr", "z").await.unwrap().is_none());
    // A registration proof for another id or institution is refused.
    let other = Identity::generate();
    let proof = registration_for(&other, &institution(&e), "bob");
    let r = e
        .engine
        .register_patient("mallory", &other.recipient().to_string(), &proof, "t")
        .await;
    assert!(matches!(r, Err(Error::InvalidArgument(_))));
}

#[tokio::test]
async fn grants_are_checked_before_anything_is_rewrapped() {
    let e = env().await;
    let alice = register(&e, "alice").await;
    let _bob = register(&e, "bob").await;
    let reader = Identity::generate();
    put(&e, "alice/1", Some("alice"), b"one").await;
    put(&e, "alice/2", Some("alice"), b"two").await;
    put(&e, "alice/bob", Some("bob"), b"bob's").await;
    put(&e, "other/3", Some("alice"), b"three").await;
    let records = Records::Prefix {
        bucket: "ehr".into(),
        prefix: "alice/".into(),
    };
    let req = share_request(&e, "alice", &reader.recipient(), records.clone());
    let id = submit(&e, &req).await;

    // Signed by a key that is not alice's.
    let mallory = Identity::generate();
    let forged = Grant::for_request(&req, &mallory.recipient(), gateway::now_ms()).sign(&mallory);
    refused(
        e.engine.approve(&id, &forged.to_text()).await,
        "bad signature",
    );
    // Alice's key id, mallory's signature.
    let mut g = Grant::for_request(&req, &alice.recipient(), gateway::now_ms());
    let forged = g.sign(&mallory);
    refused(
        e.engine.approve(&id, &forged.to_text()).await,
        "bad signature",
    );
    // A scope edited after signing.
    let signed = g.sign(&alice);
    let edited = SignedGrant {
        grant: Grant {
            scope: Scope {
                records: Records::Patient,
                include_future: false,
            },
            ..signed.grant.clone()
        },
        signature: signed.signature,
    };
    refused(
        e.engine.approve(&id, &edited.to_text()).await,
        "bad signature",
    );
    // Validly signed, but wider than the request.
    g.scope.records = Records::Patient;
    refused(
        e.engine.approve(&id, &g.sign(&alice).to_text()).await,
        "scope",
    );
    // Validly signed for another request.
    let req2 = share_request(&e, "alice", &reader.recipient(), records.clone());
    let for_other = grant_for(&alice, &req2);
    refused(e.engine.approve(&id, &for_other).await, "request");
    // Expired before it is used.
    let mut late = Grant::for_request(&req, &alice.recipient(), 1);
    late.expires_ms = gateway::now_ms() - 1;
    refused(
        e.engine.approve(&id, &late.sign(&alice).to_text()).await,
        "expired",
    );
    for key in ["alice/1", "alice/2", "alice/bob", "other/3"] {
        assert!(
            !can_read(&e, key, &reader).await,
            "{key} re-wrapped by a bad grant"
        );
    }

    // The real thing: only alice's records under the prefix.
    let good = grant_for(&alice, &req);
    let report = e.engine.approve(&id, &good).await.unwrap();
    assert_eq!(report.rewrapped, 2);
    assert!(can_read(&e, "alice/1", &reader).await);
    assert!(can_read(&e, "alice/2", &reader).await);
    assert!(
        !can_read(&e, "alice/bob", &reader).await,
        "another patient's record"
    );
    assert!(
        !can_read(&e, "other/3", &reader).await,
        "outside the prefix"
    );
    let (m, stanza) = e
        .engine
        .exchange(&report.grant_id, "ehr", "alice/1", "t")
        .await
        .unwrap();
    let dek = reader.unwrap_key(&stanza).unwrap().unwrap();
    let mut out = Vec::new();
    gateway::engine::sharing::read_record(&e.public, &m, &dek, &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"one");
    refused(
        e.engine
            .exchange(&report.grant_id, "ehr", "alice/bob", "t")
            .await,
        "not covered",
    );

    // Replays: the same grant, and the request approved again.
    refused(e.engine.approve(&id, &good).await, "already");
    refused(
        e.engine.approve(&id, &grant_for(&alice, &req)).await,
        "already",
    );

    // Revocation by someone else is refused; by alice it removes the stanzas.
    let signed = SignedGrant::from_text(&good).unwrap();
    let bad_rev = Revocation::for_grant(&signed, 1).sign(&mallory);
    refused(e.engine.revoke(&bad_rev.to_text()).await, "bad signature");
    assert!(can_read(&e, "alice/1", &reader).await);
    let rev = Revocation::for_grant(&signed, 1).sign(&alice);
    assert_eq!(e.engine.revoke(&rev.to_text()).await.unwrap(), 2);
    assert!(!can_read(&e, "alice/1", &reader).await);
    assert!(
        can_read(&e, "alice/1", &alice).await,
        "the patient keeps her key"
    );
    refused(
        e.engine
            .exchange(&report.grant_id, "ehr", "alice/1", "t")
            .await,
        "revoked",
    );
    let kinds: Vec<String> = e
        .private
        .events(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|ev| ev.kind)
        .collect();
    for k in ["grant-refused", "grant", "rewrap", "read", "revocation"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
}

#[tokio::test]
async fn future_records_and_expiry() {
    let e = env().await;
    let alice = register(&e, "alice").await;
    let reader = Identity::generate();
    let mut req = share_request(&e, "alice", &reader.recipient(), Records::Patient);
    req.scope.include_future = true;
    req.expires_ms = gateway::now_ms() + 1500;
    let id = submit(&e, &req).await;
    let report = e
        .engine
        .approve(&id, &grant_for(&alice, &req))
        .await
        .unwrap();
    assert_eq!(report.rewrapped, 0);
    put(&e, "later", Some("alice"), b"new").await;
    assert!(
        can_read(&e, "later", &reader).await,
        "include_future covers new records"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    refused(
        e.engine
            .exchange(&report.grant_id, "ehr", "later", "t")
            .await,
        "expired",
    );
    assert_eq!(e.engine.expire_grants().await.unwrap(), 1);
    assert!(!can_read(&e, "later", &reader).await);
    put(&e, "after", Some("alice"), b"newer").await;
    assert!(
        !can_read(&e, "after", &reader).await,
        "an ended grant covers nothing new"
    );
}

#[tokio::test]
async fn key_change_needs_the_old_key_and_moves_every_record() {
    use keyring::consent::KeyChange;
    let e = env().await;
    let old = register(&e, "erin").await;
    put(&e, "erin/1", Some("erin"), b"one").await;
    put(&e, "erin/2", Some("erin"), b"two").await;
    let new = Identity::generate();
    let inst = institution(&e).fingerprint();
    // Signed by someone else's key: refused, nothing changes.
    let mallory = Identity::generate();
    let forged = KeyChange::new(
        inst,
        "erin",
        &mallory.recipient(),
        &new.recipient(),
        gateway::now_ms(),
    )
    .sign(&mallory, &new)
    .unwrap();
    refused(
        e.engine.change_patient_key(&forged.to_text()).await,
        "key change",
    );
    assert!(can_read(&e, "erin/1", &old).await);
    // A stale change (older than 10 minutes) is refused: no replay later.
    let stale = KeyChange::new(inst, "erin", &old.recipient(), &new.recipient(), 1)
        .sign(&old, &new)
        .unwrap();
    refused(
        e.engine.change_patient_key(&stale.to_text()).await,
        "key change",
    );
    let change = KeyChange::new(
        inst,
        "erin",
        &old.recipient(),
        &new.recipient(),
        gateway::now_ms(),
    )
    .sign(&old, &new)
    .unwrap();
    assert_eq!(
        e.engine
            .change_patient_key(&change.to_text())
            .await
            .unwrap(),
        2
    );
    for k in ["erin/1", "erin/2"] {
        assert!(can_read(&e, k, &new).await);
        assert!(
            !can_read(&e, k, &old).await,
            "the old key must stop opening {k}"
        );
    }
    // The same change again no longer verifies against the key on file.
    refused(
        e.engine.change_patient_key(&change.to_text()).await,
        "key change",
    );
    put(&e, "erin/3", Some("erin"), b"three").await;
    assert!(can_read(&e, "erin/3", &new).await && !can_read(&e, "erin/3", &old).await);
}

#[tokio::test]
async fn prefixes_mapped_to_a_patient() {
    let dir = tempfile::tempdir().unwrap();
    let private = Arc::new(SledStore::open(dir.path(), 4 << 20).unwrap());
    private.create_bucket("ehr", 1).await.unwrap();
    let public: PublicStore = Arc::new(InMemory::new());
    let engine = Engine::new(
        Arc::clone(&public),
        private.clone() as Arc<dyn PrivateStore>,
        Arc::new(Identity::generate()),
        EngineConfig {
            patient_prefixes: vec![gateway::engine::record::PatientPrefix {
                bucket: "ehr".into(),
                prefix: "frank/".into(),
                patient: "frank".into(),
            }],
            ..Default::default()
        },
    );
    let e = Env {
        _dir: dir,
        engine,
        public,
        private,
    };
    let frank = register(&e, "frank").await;
    let _gina = register(&e, "gina").await;
    let m = put(&e, "frank/labs.json", None, b"{}").await;
    assert_eq!(m.patient.as_deref(), Some("frank"));
    assert!(can_read(&e, "frank/labs.json", &frank).await);
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]);
    let r = e
        .engine
        .put(
            PutRequest {
                bucket: "ehr".into(),
                key: "frank/other".into(),
                metadata: vec![(PATIENT_META.into(), "gina".into())],
                ..Default::default()
            },
            body,
        )
        .await;
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    let m = put(&e, "elsewhere", None, b"x").await;
    assert_eq!(m.patient, None);
    // A copy may not move a record into (or out of) a patient's prefix.
    let r = e
        .engine
        .copy(&m, "ehr", "frank/copied", None, "AKTEST")
        .await;
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
}

/// The stanza kinds the engine writes: the institution's own (symmetric) stanza on every record,
/// an X25519 stanza for the patient (the kind the patient index carries), and batch stanzas
/// sharing one ephemeral key for the records one approval re-wraps.
#[tokio::test]
async fn stanza_kinds_written_by_puts_and_approvals() {
    use keyring::stanza::{STANZA_BATCH, STANZA_OWN, STANZA_V1};
    let e = env().await;
    let alice = register(&e, "alice").await;
    let reader = Identity::generate();
    for i in 0..3 {
        put(&e, &format!("alice/{i}"), Some("alice"), b"record").await;
    }
    let req = share_request(&e, "alice", &reader.recipient(), Records::Patient);
    let id = submit(&e, &req).await;
    let grant = grant_for(&alice, &req);
    assert_eq!(e.engine.approve(&id, &grant).await.unwrap().rewrapped, 3);
    let mut ephemerals = std::collections::HashSet::new();
    for i in 0..3 {
        let m = e
            .private
            .manifest("ehr", &format!("alice/{i}"))
            .await
            .unwrap()
            .unwrap();
        let stanzas = e.private.stanzas(m.dek_id).await.unwrap();
        let kind_of = |who: &Identity| {
            stanzas
                .iter()
                .find(|s| s.is_for(&who.recipient()))
                .map(|s| s.wrapped().kind())
        };
        assert_eq!(kind_of(e.engine.institution()), Some(STANZA_OWN));
        assert_eq!(kind_of(&alice), Some(STANZA_V1));
        assert_eq!(kind_of(&reader), Some(STANZA_BATCH));
        for who in [e.engine.institution(), &alice, &reader] {
            assert!(can_read(&e, &format!("alice/{i}"), who).await);
        }
        let batch = stanzas
            .iter()
            .find(|s| s.wrapped().kind() == STANZA_BATCH)
            .unwrap();
        ephemerals.insert(batch.wrapped().as_bytes()[5..37].to_vec());
    }
    assert_eq!(ephemerals.len(), 1, "one approval, one ephemeral key");
}

/// How many stanzas of `who` the record at `key` holds.
async fn stanzas_of(e: &Env, key: &str, who: &Identity) -> usize {
    let m = e.private.manifest("ehr", key).await.unwrap().unwrap();
    e.private
        .stanzas(m.dek_id)
        .await
        .unwrap()
        .iter()
        .filter(|s| matches!(who.unwrap_key(s.wrapped()), Some(Ok(_))))
        .count()
}

#[tokio::test]
async fn revoking_a_wide_grant_keeps_only_what_a_narrow_one_covers() {
    let e = env().await;
    let alice = register(&e, "alice").await;
    let reader = Identity::generate();
    for k in ["scans/1", "scans/2", "notes/1", "notes/2", "labs/1"] {
        put(&e, k, Some("alice"), k.as_bytes()).await;
    }
    let approve = |records: Records| {
        let e = &e;
        let alice = &alice;
        let reader = &reader;
        async move {
            let req = share_request(e, "alice", &reader.recipient(), records);
            let id = submit(e, &req).await;
            let report = e
                .engine
                .approve(&id, &grant_for(alice, &req))
                .await
                .unwrap();
            (report, req)
        }
    };
    let (narrow, _) = approve(Records::Prefix {
        bucket: "ehr".into(),
        prefix: "scans/".into(),
    })
    .await;
    assert_eq!(narrow.rewrapped, 2);
    let (wide, _) = approve(Records::Patient).await;
    assert_eq!(wide.rewrapped, 5);
    // A record copied out of the narrow scope shares its data key: it keeps the key too.
    let source = e.private.manifest("ehr", "scans/1").await.unwrap().unwrap();
    e.engine
        .copy(&source, "ehr", "copies/scan-1", None, "AKTEST")
        .await
        .unwrap();

    let wide_grant = e.private.grant(&wide.grant_id).await.unwrap().unwrap();
    let signed = SignedGrant::from_text(&wide_grant.grant).unwrap();
    let rev = Revocation::for_grant(&signed, 1).sign(&alice);
    // scans/* had two stanzas (one per grant), the three others one each: only the three
    // records no grant in force covers lose theirs, and the count says so.
    assert_eq!(e.engine.revoke(&rev.to_text()).await.unwrap(), 3);
    for k in ["notes/1", "notes/2", "labs/1"] {
        assert_eq!(stanzas_of(&e, k, &reader).await, 0, "{k} still wrapped");
        assert!(can_read(&e, k, &alice).await, "the patient keeps {k}");
    }
    for k in ["scans/1", "scans/2", "copies/scan-1"] {
        assert!(
            can_read(&e, k, &reader).await,
            "{k} lost its narrow grant's key"
        );
    }
    assert!(e
        .engine
        .exchange(&narrow.grant_id, "ehr", "scans/2", "t")
        .await
        .is_ok());

    // Revoking the narrow grant too leaves the reader nothing: scans/1 and scans/2 each
    // held one stanza per grant (copies/scan-1 shares scans/1's).
    let narrow_grant = e.private.grant(&narrow.grant_id).await.unwrap().unwrap();
    let signed = SignedGrant::from_text(&narrow_grant.grant).unwrap();
    let rev = Revocation::for_grant(&signed, 1).sign(&alice);
    assert_eq!(e.engine.revoke(&rev.to_text()).await.unwrap(), 4);
    for k in ["scans/1", "scans/2", "copies/scan-1", "notes/1"] {
        assert!(!can_read(&e, k, &reader).await, "{k} still readable");
    }
}

/// A backup's bytes, kept in memory.
struct Kept(Vec<u8>);

#[async_trait::async_trait]
impl gateway::engine::backup::BackupSink for Kept {
    async fn write(&mut self, bytes: &[u8]) -> gateway::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
    async fn progress(&mut self, _: u64, _: u64) -> gateway::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_restored_store_continues_past_published_index_numbers() {
    use keyring::patient_index::{index_name, PatientIndex};
    let e = env().await;
    let alice = register(&e, "alice").await;
    let inst = e.engine.institution().clone();
    let name = object_store::path::Path::from(index_name(&inst, &alice.recipient()).unwrap());
    async fn published(e: &Env, name: &object_store::path::Path, inst: &Identity) -> u64 {
        let bytes = e.public.get(name).await.unwrap().bytes().await.unwrap();
        PatientIndex::published_seq(&bytes, inst).unwrap()
    }
    async fn publish(e: &Env, k: &str) {
        put(e, k, Some("alice"), k.as_bytes()).await;
        e.engine.publish_indexes().await.unwrap();
    }
    publish(&e, "a/1").await;
    assert_eq!(published(&e, &name, &inst).await, 1);

    let recovery = Identity::generate();
    let mut kept = Kept(Vec::new());
    gateway::engine::backup::write_backup(
        &*e.private,
        Vec::new(),
        &recovery.recipient(),
        &inst,
        &mut kept,
    )
    .await
    .unwrap();
    publish(&e, "a/2").await;
    publish(&e, "a/3").await;
    assert_eq!(published(&e, &name, &inst).await, 3);
    // alice has seen index 3.
    let bytes = e.public.get(&name).await.unwrap().bytes().await.unwrap();
    PatientIndex::open(&bytes, &alice, &inst.recipient(), 3).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let expected = gateway::engine::backup::ExpectedSigner {
        institution: &inst.recipient(),
        allow_unsigned: false,
    };
    gateway::engine::backup::restore(
        &mut kept.0.as_slice(),
        &recovery,
        expected,
        dir.path(),
        &mut |_| {},
    )
    .unwrap();
    let private = Arc::new(SledStore::open(&dir.path().join("private"), 4 << 20).unwrap());
    assert!(private.restored_pending().await.unwrap());
    let restored = Engine::new(
        Arc::clone(&e.public),
        private.clone() as Arc<dyn PrivateStore>,
        Arc::new(inst.clone()),
        EngineConfig::default(),
    );
    // The first publication brings alice's number past 3 and republishes her index.
    assert_eq!(restored.publish_indexes().await.unwrap(), 1);
    assert!(!private.restored_pending().await.unwrap());
    assert_eq!(published(&e, &name, &inst).await, 4);
    let bytes = e.public.get(&name).await.unwrap().bytes().await.unwrap();
    let index = PatientIndex::open(&bytes, &alice, &inst.recipient(), 3).unwrap();
    assert_eq!(index.records.len(), 1, "the backup's one record");
    // Later publications go on from there; nothing else is pending.
    assert_eq!(restored.publish_indexes().await.unwrap(), 0);
}

/// Two identities whose Recipients share the 4-byte stanza tag: a birthday search over
/// seeded random identities (about 2^16 tries, a few seconds).
fn colliding_identities() -> (Identity, Identity) {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7461_6763_6f6c_6c69);
    let mut seen: std::collections::HashMap<[u8; 4], [u8; 64]> = std::collections::HashMap::new();
    loop {
        let mut secret = [0u8; 64];
        rng.fill_bytes(&mut secret);
        let id = Identity::from_bytes(&secret).unwrap();
        let tag = id.recipient().tag();
        match seen.get(&tag) {
            Some(other) if other != &secret => return (Identity::from_bytes(other).unwrap(), id),
            _ => {
                seen.insert(tag, secret);
            }
        }
    }
}

/// Issue 13 item 14: two grant recipients whose keys share the stanza's 4-byte tag. Each
/// reads with its own stanza (lookup by whole Recipient), and revoking one's grant keeps
/// the other's stanza (removal by whole Recipient; removal by tag took both).
#[tokio::test]
async fn recipients_sharing_a_tag_keep_their_own_stanzas() {
    let e = env().await;
    let alice = register(&e, "alice").await;
    let (first, second) = colliding_identities();
    assert_eq!(first.recipient().tag(), second.recipient().tag());
    assert!(!first.recipient().ct_eq(&second.recipient()));
    put(&e, "scans/1", Some("alice"), b"the scan").await;
    let mut grants = Vec::new();
    // `second` is granted first, so its stanza comes first in the record.
    for who in [&second, &first] {
        let req = share_request(&e, "alice", &who.recipient(), Records::Patient);
        let id = submit(&e, &req).await;
        let report = e
            .engine
            .approve(&id, &grant_for(&alice, &req))
            .await
            .unwrap();
        assert_eq!(report.rewrapped, 1);
        grants.push(report.grant_id);
    }
    let (second_grant, first_grant) = (grants[0].clone(), grants[1].clone());
    // Legitimate flow: each reader gets the stanza wrapped to it and opens it.
    for (grant, who) in [(&first_grant, &first), (&second_grant, &second)] {
        let (_, stanza) = e
            .engine
            .exchange(grant, "ehr", "scans/1", "t")
            .await
            .unwrap();
        assert!(
            matches!(who.unwrap_key(&stanza), Some(Ok(_))),
            "the exchange handed out another recipient's stanza"
        );
    }
    // Revoke `first`: its stanza goes, `second`'s stays and still opens.
    let rec = e.private.grant(&first_grant).await.unwrap().unwrap();
    let rev = Revocation::for_grant(&SignedGrant::from_text(&rec.grant).unwrap(), 1).sign(&alice);
    assert_eq!(e.engine.revoke(&rev.to_text()).await.unwrap(), 1);
    assert_eq!(stanzas_of(&e, "scans/1", &first).await, 0);
    assert_eq!(stanzas_of(&e, "scans/1", &second).await, 1);
    let (_, stanza) = e
        .engine
        .exchange(&second_grant, "ehr", "scans/1", "t")
        .await
        .unwrap();
    assert!(matches!(second.unwrap_key(&stanza), Some(Ok(_))));
    assert!(e
        .engine
        .exchange(&first_grant, "ehr", "scans/1", "t")
        .await
        .is_err());
    assert!(can_read(&e, "scans/1", &alice).await);
}

/// Every patient index in the public store: name → bytes.
async fn indexes(e: &Env) -> std::collections::BTreeMap<String, Bytes> {
    use futures::TryStreamExt;
    let prefix = object_store::path::Path::from("v1/p");
    let metas: Vec<_> = e.public.list(Some(&prefix)).try_collect().await.unwrap();
    let mut out = std::collections::BTreeMap::new();
    for m in metas {
        let bytes = e
            .public
            .get(&m.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.insert(m.location.to_string(), bytes);
    }
    out
}

#[tokio::test]
async fn a_publication_tick_hides_which_patient_changed() {
    use keyring::patient_index::{index_name, is_sealed_len, PatientIndex, INDEX_V2};
    let e = env().await;
    let inst = e.engine.institution().clone();
    let mut patients = Vec::new();
    let join = |patients: &mut Vec<(String, Identity)>, me: Identity, id: String| {
        patients.push((id, me));
    };
    // Fewer than 32 patients with an index: a tick rewrites all of them.
    for i in 0..5 {
        let id = format!("p{i:02}");
        let me = register(&e, &id).await;
        put(&e, &format!("{id}/1"), Some(&id), b"first").await;
        join(&mut patients, me, id);
    }
    assert_eq!(e.engine.publish_indexes().await.unwrap(), 5);
    let before = indexes(&e).await;
    put(&e, "p03/2", Some("p03"), b"second").await;
    assert_eq!(e.engine.publish_indexes().await.unwrap(), 5);
    let after = indexes(&e).await;
    assert_eq!(after.len(), 5);
    assert!(
        after.iter().all(|(n, b)| before[n] != b),
        "every index is new bytes"
    );

    // 40 patients: a tick with one change rewrites 32, the changed one among them.
    for i in 5..40 {
        let id = format!("p{i:02}");
        let me = register(&e, &id).await;
        put(&e, &format!("{id}/1"), Some(&id), b"first").await;
        join(&mut patients, me, id);
    }
    assert_eq!(e.engine.publish_indexes().await.unwrap(), 35);
    // No change, no tick: nothing is written.
    assert_eq!(e.engine.publish_indexes().await.unwrap(), 0);
    let mut rewritten_ever = std::collections::BTreeSet::new();
    for round in 0..4 {
        let before = indexes(&e).await;
        assert_eq!(before.len(), 40);
        let (id, me) = &patients[17];
        put(&e, &format!("{id}/round-{round}"), Some(id), b"more").await;
        assert_eq!(e.engine.publish_indexes().await.unwrap(), 32);
        let after = indexes(&e).await;
        let rewritten: Vec<&String> = after
            .iter()
            .filter(|(n, b)| before[n.as_str()] != **b)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(rewritten.len(), 32, "round {round}");
        let mine = index_name(&inst, &me.recipient()).unwrap();
        assert!(
            rewritten.contains(&&mine),
            "the changed index is in the tick"
        );
        rewritten_ever.extend(rewritten.into_iter().cloned());
        for (name, bytes) in &after {
            assert_eq!(bytes[0], INDEX_V2, "{name}");
            assert!(is_sealed_len(bytes.len()), "{name}: {} bytes", bytes.len());
            // The size tells nothing here: one to five records, one bucket.
            assert_eq!(bytes.len(), 4096, "{name}");
        }
        let index = PatientIndex::open(&after[&mine], me, &inst.recipient(), 0).unwrap();
        assert_eq!(index.records.len(), 2 + round);
    }
    // The cover is drawn afresh each tick.
    assert!(rewritten_ever.len() > 32, "{}", rewritten_ever.len());
    // Unchanged patients' rewritten indexes are fresh versions of the same content, and the
    // institution reads every number back.
    for (id, me) in &patients {
        let name = index_name(&inst, &me.recipient()).unwrap();
        let bytes = &indexes(&e).await[&name];
        let seq = PatientIndex::published_seq(bytes, &inst).unwrap();
        let index = PatientIndex::open(bytes, me, &inst.recipient(), seq).unwrap();
        assert_eq!(index.seq, seq);
        assert_eq!(&index.patient_id, id);
        let rec = e.private.patient(id).await.unwrap().unwrap();
        assert_eq!(rec.index_seq, seq, "{id}");
    }
}

/// A patient's (or a recipient's) read with only the manifest and the DEK goes through the
/// read pipeline's blob source: every chunk of every part, an empty record's one chunk
/// included, is checked and opened; a blob that does not rebuild its root, or a key that
/// does not open it, is an integrity error and nothing reaches the output.
#[tokio::test]
async fn read_record_checks_every_part_before_its_plaintext() {
    let e = env().await;
    let alice = register(&e, "alice").await;
    let dek_of = |m: Manifest| {
        let e = &e;
        let alice = &alice;
        async move {
            let stanzas = e.private.stanzas(m.dek_id).await.unwrap();
            stanzas
                .iter()
                .find_map(|s| alice.unwrap_key(s.wrapped()).and_then(Result::ok))
                .expect("alice's stanza")
        }
    };
    // Three chunks of 4096 and a short last one.
    let body: Vec<u8> = (0..13_000u32).map(|i| (i % 251) as u8).collect();
    let big = put(&e, "alice/big", Some("alice"), &body).await;
    let empty = put(&e, "alice/empty", Some("alice"), b"").await;
    let big_dek = dek_of(big.clone()).await;
    let empty_dek = dek_of(empty.clone()).await;

    let mut out = Vec::new();
    let n = gateway::engine::sharing::read_record(&e.public, &big, &big_dek, &mut out)
        .await
        .unwrap();
    assert_eq!((n, out.as_slice()), (13_000, body.as_slice()));
    let mut out = Vec::new();
    let n = gateway::engine::sharing::read_record(&e.public, &empty, &empty_dek, &mut out)
        .await
        .unwrap();
    assert_eq!((n, out.len()), (0, 0));

    // Another record's key: the root holds, the first chunk does not open.
    for (m, dek) in [(&big, &empty_dek), (&empty, &big_dek)] {
        let mut out = Vec::new();
        let r = gateway::engine::sharing::read_record(&e.public, m, dek, &mut out).await;
        assert!(matches!(r, Err(Error::Integrity { chunk: 0, .. })), "{r:?}");
        assert!(out.is_empty());
    }

    // One flipped bit in the last chunk: the part's root fails before any plaintext.
    let path = gateway::store::public::blob_path(&big.parts[0].blob);
    let mut sealed = e
        .public
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    e.public.put(&path, sealed.into()).await.unwrap();
    let mut out = Vec::new();
    let r = gateway::engine::sharing::read_record(&e.public, &big, &big_dek, &mut out).await;
    assert!(matches!(r, Err(Error::Integrity { .. })), "{r:?}");
    assert!(out.is_empty(), "plaintext before the part verified");
}
