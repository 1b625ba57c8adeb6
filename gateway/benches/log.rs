//! Transparency log figures on the sled private store:
//! - appends per second, every batch made durable (one `append_events` transaction and one
//!   flush per batch), at fixed batch sizes and through the gateway's group-commit
//!   `Appender` with many concurrent writers (as S3 reads and sharing use it), against one
//!   transaction and one flush per entry;
//! - inclusion and consistency proof generation from the stored subtree hashes (and, for
//!   comparison, from every leaf) and verification, once the log holds 100k+ entries.
//!
//! `cargo bench -p medgate-gateway --bench log` (env MEDGATE_BENCH_ENTRIES, default 100000,
//! the entries of each batched run).

use std::sync::Arc;
use std::time::Instant;

use gateway::engine::log::{
    consistency_proof, inclusion_proof, tiles_between, tree_root, Appender,
};
use gateway::store::private::sled::SledStore;
use gateway::store::private::{prelude::*, Event};
use keyring::merkle::ConsistencyProof;
use keyring::InclusionProof;

fn event(i: u64) -> Event {
    Event {
        time_ms: 1_700_000_000_000 + i,
        kind: "read".into(),
        actor: "AKIABENCH".into(),
        patient: Some(format!("p{}", i % 1000)),
        bucket: Some("pacs".into()),
        key: Some(format!("patients/p{}/study-{i}.dcm", i % 1000)),
        detail: "GET bytes 0..524288 of 524288".into(),
        ..Default::default()
    }
}

fn per_sec(n: u64, start: Instant) -> f64 {
    n as f64 / start.elapsed().as_secs_f64()
}

fn micros(start: Instant, rounds: u64) -> f64 {
    start.elapsed().as_secs_f64() * 1e6 / rounds as f64
}

fn main() {
    let n: u64 = std::env::var("MEDGATE_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SledStore::open(dir.path(), 64 << 20).expect("sled"));
        let mut next = 0u64;

        // One transaction and one flush per entry: the figure before batching.
        let single = 2_000;
        let start = Instant::now();
        for _ in 0..single {
            store.append_event(event(next)).await.expect("append");
            store.flush().await.expect("flush");
            next += 1;
        }
        println!(
            "append: {single:>7} entries, 1 transaction + 1 flush each:        {:>9.0} entries/s",
            per_sec(single, start)
        );

        for batch in [256u64, 1024] {
            let start = Instant::now();
            let mut done = 0;
            let mut flushing = std::time::Duration::ZERO;
            while done < n {
                let k = batch.min(n - done);
                store
                    .append_events((next..next + k).map(event).collect())
                    .await
                    .expect("append");
                let f = Instant::now();
                store.flush().await.expect("flush");
                flushing += f.elapsed();
                next += k;
                done += k;
            }
            println!(
                "append: {n:>7} entries, batches of {batch:>4}, 1 flush per batch: {:>9.0} entries/s ({:.0}% of the time flushing)",
                per_sec(n, start),
                100.0 * flushing.as_secs_f64() / start.elapsed().as_secs_f64()
            );
        }

        let appender = Arc::new(Appender::new(
            Arc::clone(&store) as Arc<dyn PrivateStore>
        ));
        for writers in [64u64, 256] {
            let each = n / writers;
            let start = Instant::now();
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let appender = Arc::clone(&appender);
                    let first = next + w * each;
                    tokio::spawn(async move {
                        for i in first..first + each {
                            appender.append(event(i)).await.expect("append");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("writer");
            }
            next += writers * each;
            println!(
                "append: {:>7} entries, {writers:>3} concurrent writers, group commit: {:>9.0} entries/s (each answered when durable)",
                writers * each,
                per_sec(writers * each, start)
            );
        }

        let size = store.log_size().await.expect("size");
        let leaves = store.log_leaves(0, size).await.expect("leaves");
        let root = tree_root(&*store, size).await.expect("root");
        assert_eq!(root, keyring::root(&leaves));
        println!("log of {size} leaves:");
        let rounds = 2000u64;

        let start = Instant::now();
        for _ in 0..rounds {
            tree_root(&*store, size).await.expect("root");
        }
        println!(
            "  tree root from stored hashes:              {:>9.1} µs",
            micros(start, rounds)
        );

        let idx = |i: u64| (i * 7919) % size;
        let start = Instant::now();
        let mut proofs = Vec::with_capacity(rounds as usize);
        for i in 0..rounds {
            proofs.push(inclusion_proof(&*store, idx(i), size).await.expect("proof"));
        }
        println!(
            "  inclusion proof, stored hashes:            {:>9.1} µs",
            micros(start, rounds)
        );
        let start = Instant::now();
        for (i, p) in proofs.iter().enumerate() {
            let i = idx(i as u64);
            p.verify(&leaves[i as usize], i, size, &root).expect("verify");
        }
        println!(
            "  inclusion proof verify:                    {:>9.1} µs",
            micros(start, rounds)
        );
        let naive_rounds = 20;
        let start = Instant::now();
        for i in 0..naive_rounds {
            let all = store.log_leaves(0, size).await.expect("leaves");
            let p = InclusionProof::generate(&all, idx(i)).expect("proof");
            assert_eq!(p, proofs[i as usize]);
        }
        println!(
            "  inclusion proof, naive (all leaves):       {:>9.1} µs",
            micros(start, naive_rounds)
        );

        let olds: Vec<u64> = (0..rounds).map(|i| 1 + (i * 104_729) % (size - 1)).collect();
        let start = Instant::now();
        let mut cproofs = Vec::with_capacity(rounds as usize);
        for &old in &olds {
            cproofs.push(consistency_proof(&*store, old, size).await.expect("proof"));
        }
        println!(
            "  consistency proof, stored hashes:          {:>9.1} µs",
            micros(start, rounds)
        );
        let old_roots: Vec<_> = olds[..100]
            .iter()
            .map(|&old| keyring::root(&leaves[..old as usize]))
            .collect();
        let start = Instant::now();
        for _ in 0..rounds / 100 {
            for (k, old_root) in old_roots.iter().enumerate() {
                cproofs[k]
                    .verify(olds[k], size, old_root, &root)
                    .expect("verify");
            }
        }
        println!(
            "  consistency proof verify:                  {:>9.1} µs",
            micros(start, rounds)
        );
        let start = Instant::now();
        for &old in &olds[..naive_rounds as usize] {
            let all = store.log_leaves(0, size).await.expect("leaves");
            ConsistencyProof::generate(&all, old, size).expect("proof");
        }
        println!(
            "  consistency proof, naive (all leaves):     {:>9.1} µs",
            micros(start, naive_rounds)
        );

        let start = Instant::now();
        let tiles = tiles_between(&*store, size - 1000, size)
            .await
            .expect("tiles");
        println!(
            "  tiles of the last 1000 entries ({} tiles): {:>9.1} µs",
            tiles.len(),
            micros(start, 1)
        );
    });
}
