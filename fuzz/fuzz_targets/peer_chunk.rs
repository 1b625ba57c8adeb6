//! A sealed chunk as a peer's blob endpoint serves it: index, leaf, inclusion proof, sealed
//! bytes. Decode, re-encode; then verify against the index it claims and sizes and a root
//! taken from its own bytes (the check must refuse, never panic, on any of them).
#![no_main]

use fuzzkit::round_trip;
use keyring::{ChunkAnswer, Hash};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(c) = round_trip(data, ChunkAnswer::decode, ChunkAnswer::encode) else {
        return;
    };
    assert!(c.proof.len() <= 64, "a proof of {} hashes", c.proof.len());
    // The leaf as root: a one-chunk blob whose chunk is this one, if the leaf is its hash.
    let root: Hash = c.leaf;
    let one = c.verify(c.index, 1, &root);
    if one.is_ok() {
        assert_eq!(c.index, 0);
        assert!(c.proof.is_empty());
        assert_eq!(keyring::leaf_hash(&c.sealed), c.leaf);
    }
    for count in [c.index.wrapping_add(1), c.index.saturating_mul(2), u64::MAX] {
        let _ = c.verify(c.index, count, &root);
    }
});
