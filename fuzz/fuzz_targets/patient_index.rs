//! The patient index body (the plaintext inside a sealed index, which `patient pull` decodes
//! after the AEAD opens), v1 and v2 (sequence number inside, zero padding to the size
//! bucket): decode, re-encode (padding included), and decode each record's manifest. The
//! sealed outer layer is checked by its signature before anything is parsed, so a fuzzer
//! cannot get past it; `keyring::fuzzing` gives the body decoders directly.
#![no_main]

use fuzzkit::round_trip;
use keyring::fuzzing::{patient_index_decode_body, patient_index_encode_body};
use keyring::patient_index::INDEX_V1;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let version = data.first().copied().unwrap_or(0);
    let Some((index, _patient_key_id)) = round_trip(
        data,
        |b| patient_index_decode_body(b, 7),
        |(index, id)| patient_index_encode_body(index, *id, version, data.len()),
    ) else {
        return;
    };
    if version == INDEX_V1 {
        assert_eq!(index.seq, 7);
    }
    for r in &index.records {
        let _ = r.decode_manifest();
    }
});
