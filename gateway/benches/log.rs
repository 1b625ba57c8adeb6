//! Transparency log figures: appends per second into the sled private store (one
//! transaction each, then one group-commit flush per batch, as the gateway does), and the
//! time to generate and verify inclusion and consistency proofs over the log's leaves.
//!
//! `cargo bench -p medgate-gateway --bench log` (env MEDGATE_BENCH_ENTRIES, default 20000).

use std::time::Instant;

use gateway::private::sled::SledStore;
use gateway::private::{Event, PrivateStore};
use keyring::merkle::ConsistencyProof;
use keyring::InclusionProof;

fn main() {
    let n: u64 = std::env::var("MEDGATE_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), 16 << 20).expect("sled");
        for batch in [1u64, 64, 1024] {
            let start = Instant::now();
            let mut done = 0u64;
            while done < n {
                for i in 0..batch.min(n - done) {
                    store
                        .append_event(Event {
                            kind: "read".into(),
                            actor: "bench".into(),
                            patient: Some(format!("p{}", (done + i) % 100)),
                            bucket: Some("b".into()),
                            key: Some(format!("k{}", done + i)),
                            ..Default::default()
                        })
                        .await
                        .expect("append");
                }
                store.flush().await.expect("flush");
                done += batch.min(n - done);
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "append: {n} entries, flush every {batch:>4}: {:>9.0} entries/s",
                n as f64 / secs
            );
        }
        let size = store.log_size().await.expect("size");
        let leaves = store.log_leaves(0, size).await.expect("leaves");
        let root = keyring::root(&leaves);
        let start = Instant::now();
        let rounds = 1000u64;
        for i in 0..rounds {
            let idx = (i * 7919) % size;
            let p = InclusionProof::generate(&leaves, idx).expect("proof");
            p.verify(&leaves[idx as usize], idx, size, &root)
                .expect("verify");
        }
        let incl = start.elapsed().as_secs_f64() / rounds as f64;
        let old = size / 3;
        let old_root = keyring::root(&leaves[..old as usize]);
        let p = ConsistencyProof::generate(&leaves, old, size).expect("proof");
        let start = Instant::now();
        for _ in 0..rounds {
            p.verify(old, size, &old_root, &root).expect("verify");
        }
        let cons = start.elapsed().as_secs_f64() / rounds as f64;
        let ip = InclusionProof::generate(&leaves, size / 2).expect("proof");
        let start = Instant::now();
        for _ in 0..rounds {
            ip.verify(&leaves[(size / 2) as usize], size / 2, size, &root)
                .expect("verify");
        }
        let iv = start.elapsed().as_secs_f64() / rounds as f64;
        println!("log of {size} leaves:");
        println!("  inclusion proof generate+verify: {:>8.1} µs", incl * 1e6);
        println!("  inclusion proof verify:          {:>8.1} µs", iv * 1e6);
        println!("  consistency proof verify:        {:>8.1} µs", cons * 1e6);
    });
}
