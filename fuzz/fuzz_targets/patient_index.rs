//! The patient index body (the plaintext inside a sealed index, which `patient pull` decodes
//! after the AEAD opens): decode, re-encode, and decode each record's manifest. The sealed
//! outer layer is checked by its signature before anything is parsed, so a fuzzer cannot get
//! past it; `keyring::fuzzing` gives the body decoder directly.
#![no_main]

use fuzzkit::round_trip;
use keyring::fuzzing::{patient_index_decode_body, patient_index_encode_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((index, patient_key_id)) = round_trip(
        data,
        |b| patient_index_decode_body(b, 7),
        |(index, id)| patient_index_encode_body(index, *id),
    ) else {
        return;
    };
    assert_eq!(index.seq, 7);
    let _ = patient_key_id;
    for r in &index.records {
        let _ = r.decode_manifest();
    }
});
