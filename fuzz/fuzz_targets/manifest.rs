//! Object manifests (private store rows, and the manifests inside a patient index): decode,
//! re-encode, and walk the layout arithmetic a decoded manifest promises is safe.
#![no_main]

use fuzzkit::round_trip;
use keyring::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(m) = round_trip(data, Manifest::decode, Manifest::encode) else {
        return;
    };
    for i in 0..m.parts.len() {
        let layout = m.layout(i);
        let n = layout.chunk_count();
        let _ = layout.sealed_total();
        let _ = layout.sealed_offset(n - 1) + layout.sealed_len(n - 1);
        let _ = layout.chunks_for_range(0, layout.plaintext_len);
    }
    let _ = m.part_for_offset(m.size.saturating_sub(1));
});
