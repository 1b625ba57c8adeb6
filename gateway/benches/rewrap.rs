//! Re-wrap figures: how fast a patient's approval shares their records, and that the cost
//! does not depend on record size (sharing re-wraps one key per record; it never reads or
//! re-encrypts a blob).
//!
//! For each size, 10,000 records of one patient are committed straight into a sled private
//! store (manifests that say 1 KiB and 10 GiB; no blob exists, and none is needed), then a
//! share request for all of them is approved with the patient's signed grant and timed:
//! per record the institution's own stanza opened (symmetric, as the gateway writes it on
//! every PUT), a batch stanza wrapped for the recipient (one X25519 operation per approval, a
//! hash and an AEAD per record), the stanza written, and a `rewrap` log entry; at the end the
//! grant record, the log entries (batched) and one flush. The approval runs as one task, so
//! the figure is per core.
//!
//! Printed beside it, measured in the same run: the crypto alone, and the crypto of the first
//! design (an X25519 stanza opened and a fresh-ephemeral X25519 stanza made per record), which
//! capped approvals near 6,000/s on this machine.
//!
//! `cargo bench -p medgate-gateway --bench rewrap` (env MEDGATE_BENCH_RECORDS, default 10000).

use std::sync::Arc;
use std::time::Instant;

use gateway::engine::record::{Engine, EngineConfig};
use gateway::engine::sharing::{grant_for, registration_for};
use gateway::store::private::sled::SledStore;
use gateway::store::private::{prelude::*, DekStanza, Precondition, PutCommit};
use gateway::store::public::PublicStore;
use keyring::consent::{Records, Scope, ShareRequest};
use keyring::{BlobId, DataKey, DekId, Identity, Manifest, Part, SUITE_V1};

const PATIENT: &str = "p-bench";

/// CPU seconds this process has used (user + system, every thread), from /proc/self/stat;
/// `None` where that file does not exist.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // Linux reports in clock ticks of USER_HZ, which is 100 on every supported platform.
    Some((utime + stime) / 100.0)
}

async fn run(records: u64, size: u64) -> (f64, f64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn PrivateStore> =
        Arc::new(SledStore::open(&dir.path().join("private"), 64 << 20).expect("sled"));
    let public: PublicStore = Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("folder"),
    );
    let institution = Arc::new(Identity::generate());
    let engine = Engine::new(
        public,
        Arc::clone(&store),
        Arc::clone(&institution),
        EngineConfig::default(),
    );
    let patient = Identity::generate();
    engine
        .register_patient(
            PATIENT,
            &patient.recipient().to_string(),
            &registration_for(&patient, &institution.recipient(), PATIENT),
            "bench",
        )
        .await
        .expect("register");
    store.create_bucket("pacs", 0).await.expect("bucket");
    let chunk = 1u32 << 20;
    for i in 0..records {
        let dek = DataKey::generate();
        let blob = BlobId::random();
        // The commit protocol: a blob is pending before its manifest commits.
        store
            .add_pending(blob, gateway::now_ms())
            .await
            .expect("pending");
        let manifest = Manifest {
            suite: SUITE_V1,
            dek_id: DekId::random(),
            size,
            last_modified_ms: 1_700_000_000_000,
            etag: format!("\"{i:032x}\""),
            content_type: Some("application/dicom".into()),
            headers: Vec::new(),
            metadata: vec![("medgate-patient".into(), PATIENT.into())],
            checksums: Vec::new(),
            patient: Some(PATIENT.into()),
            parts: vec![Part {
                blob,
                chunk_size: chunk,
                plaintext_len: size,
                root: [7u8; 32],
            }],
        };
        store
            .commit_put(PutCommit {
                bucket: "pacs".into(),
                key: format!("{PATIENT}/study-{i:05}.dcm"),
                stanzas: vec![
                    DekStanza::new(institution.recipient(), institution.wrap_own(&dek))
                        .expect("own stanza"),
                    DekStanza::new(
                        patient.recipient(),
                        patient.recipient().wrap_key(&dek).expect("wrap"),
                    )
                    .expect("patient stanza"),
                ],
                manifest,
                precondition: Precondition::None,
                upload: None,
            })
            .await
            .expect("commit");
    }
    store.flush().await.expect("flush");

    let reader = Identity::generate();
    let now = gateway::now_ms();
    let request = ShareRequest {
        institution: institution.recipient().fingerprint(),
        patient_id: PATIENT.into(),
        scope: Scope {
            records: Records::Patient,
            include_future: false,
        },
        recipient: reader.recipient(),
        requester: "bench".into(),
        purpose_text: "re-wrap bench".into(),
        purpose_code: "TREAT".into(),
        created_ms: now,
        expires_ms: now + 3_600_000,
        nonce: rand::random(),
    };
    let rec = engine
        .create_request(&request.to_text(), "bench")
        .await
        .expect("request");
    let grant = grant_for(&patient, &request);
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let report = engine.approve(&rec.id, &grant).await.expect("approve");
    let secs = start.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    assert_eq!(report.rewrapped, records, "every record is re-wrapped");
    (secs, cpu, report.rewrapped)
}

fn main() {
    let records: u64 = std::env::var("MEDGATE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("re-wrap on approval, {records} records of one patient, one approving task:");
    let mut rates = Vec::new();
    for (label, size) in [("1 KiB", 1u64 << 10), ("10 GiB", 10u64 << 30)] {
        let (secs, cpu, n) = rt.block_on(run(records, size));
        let rate = n as f64 / secs;
        rates.push(rate);
        println!(
            "  records of {label:>6}: {n} re-wrapped in {secs:.2} s = {rate:>8.0} re-wraps/s \
             (incl. stanza writes, log entries, one flush); CPU {cpu:.2} s in all threads = \
             {:.0} re-wraps per CPU-second",
            n as f64 / cpu
        );
    }
    println!(
        "  ratio 10 GiB / 1 KiB: {:.2} (cost independent of record size)",
        rates[1] / rates[0]
    );
    // The floor: the crypto each re-wrap needs, alone, on this core; and the first design's.
    let institution = Identity::generate();
    let reader = Identity::generate().recipient();
    let n = 5000;
    let own: Vec<_> = (0..n)
        .map(|_| institution.wrap_own(&DataKey::generate()))
        .collect();
    let start = Instant::now();
    let wrapper = reader.batch_wrapper().expect("batch");
    for s in &own {
        let dek = institution.unwrap_key(s).expect("ours").expect("opens");
        std::hint::black_box(wrapper.wrap(&dek));
    }
    let crypto = n as f64 / start.elapsed().as_secs_f64();
    let x25519: Vec<_> = (0..n / 5)
        .map(|_| {
            institution
                .recipient()
                .wrap_key(&DataKey::generate())
                .expect("wrap")
        })
        .collect();
    let start = Instant::now();
    for s in &x25519 {
        let dek = institution.unwrap_key(s).expect("ours").expect("opens");
        std::hint::black_box(reader.wrap_key(&dek).expect("wrap"));
    }
    let first = x25519.len() as f64 / start.elapsed().as_secs_f64();
    println!(
        "  crypto alone (open the own stanza + batch-wrap for the recipient): {crypto:.0}/s; \
         the store and log work take {:.0}% of an approval's time",
        100.0 * (1.0 - rates[0] / crypto)
    );
    println!(
        "  the first design's crypto alone (X25519 open + fresh-ephemeral X25519 wrap per \
         record): {first:.0}/s, a ceiling {:.1}x below this approval's rate",
        rates[0] / first
    );
}
