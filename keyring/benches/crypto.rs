//! Throughput of the hot paths: sealing and opening 1 MiB chunks, hashing them into the Merkle
//! index, and wrapping / unwrapping a DEK (the cost of a re-wrap on share or rotation).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keyring::{leaf_hash, BlobId, DataKey, Identity, PayloadKey, DEFAULT_CHUNK_SIZE};
use std::hint::black_box;

fn chunks(c: &mut Criterion) {
    let key = PayloadKey::derive(&DataKey::generate(), &BlobId::random());
    let plain = vec![0x5au8; DEFAULT_CHUNK_SIZE as usize];
    let sealed = key.seal(0, false, &plain).expect("seal");

    let mut g = c.benchmark_group("chunk_1MiB");
    g.throughput(Throughput::Bytes(u64::from(DEFAULT_CHUNK_SIZE)));
    g.bench_function("seal_in_place", |b| {
        let mut buf = Vec::with_capacity(plain.len() + keyring::TAG_LEN);
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(&plain);
            key.seal_in_place(black_box(7), false, &mut buf)
                .expect("seal");
        })
    });
    g.bench_function("open_in_place", |b| {
        let mut buf = Vec::with_capacity(sealed.len());
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(&sealed);
            key.open_in_place(black_box(0), false, &mut buf)
                .expect("open");
        })
    });
    g.bench_function("leaf_hash", |b| b.iter(|| leaf_hash(black_box(&sealed))));
    g.finish();
}

fn stanzas(c: &mut Criterion) {
    let id = Identity::generate();
    let recipient = id.recipient();
    let dek = DataKey::generate();
    let stanza = recipient.wrap_key(&dek).expect("wrap");

    let mut g = c.benchmark_group("stanza");
    g.bench_function("wrap", |b| {
        b.iter(|| recipient.wrap_key(black_box(&dek)).expect("wrap"))
    });
    g.bench_function("unwrap", |b| {
        b.iter(|| {
            id.unwrap_key(black_box(&stanza))
                .expect("ours")
                .expect("opens")
        })
    });
    g.finish();
}

criterion_group!(benches, chunks, stanzas);
criterion_main!(benches);
