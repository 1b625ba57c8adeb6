//! Stanzas of every kind (0x01 X25519, 0x03 own, 0x04 X25519 batch): parse and re-encode, and
//! read the routing fields a reader looks at before trying to unwrap.
#![no_main]

use fuzzkit::round_trip;
use keyring::WrappedKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(stanza) = round_trip(data, WrappedKey::from_bytes, WrappedKey::to_bytes) {
        assert_eq!(stanza.kind(), data[0]);
        assert_eq!(stanza.recipient_tag()[..], data[1..5]);
    }
});
