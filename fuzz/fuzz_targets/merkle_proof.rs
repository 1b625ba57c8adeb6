//! RFC 6962 inclusion and consistency proofs as a client receives them: parse, re-encode, and
//! verify against sizes, indices and roots taken from the input (the tree-walking arithmetic
//! must refuse, never panic, on any of them).
//!
//! Input: index u64 ‖ size u64 ‖ root 32 ‖ other root 32 ‖ proof bytes.
#![no_main]

use fuzzkit::round_trip;
use keyring::{ConsistencyProof, Hash, InclusionProof};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, proof)) = data.split_first_chunk::<80>() else {
        return;
    };
    let a = u64::from_be_bytes(head[0..8].try_into().expect("8 bytes"));
    let b = u64::from_be_bytes(head[8..16].try_into().expect("8 bytes"));
    let r1: Hash = head[16..48].try_into().expect("32 bytes");
    let r2: Hash = head[48..80].try_into().expect("32 bytes");
    if let Some(p) = round_trip(proof, InclusionProof::from_bytes, |p| p.as_bytes().to_vec()) {
        assert_eq!(p.hashes().count(), p.len());
        let _ = p.verify(&r1, a, b, &r2);
    }
    if let Some(p) = round_trip(proof, ConsistencyProof::from_bytes, |p| {
        p.as_bytes().to_vec()
    }) {
        assert_eq!(p.hashes().count(), p.len());
        let _ = p.verify(a, b, &r1, &r2);
    }
});
