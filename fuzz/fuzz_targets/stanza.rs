//! Stanzas of every kind (0x01 X25519, 0x03 own, 0x04 X25519 batch): parse, re-encode, and try
//! to unwrap with the identity the stanza vectors are made for (a tag match runs the kind's
//! key agreement and AEAD on attacker bytes; refusing is fine, panicking is not).
#![no_main]

use std::sync::OnceLock;

use fuzzkit::{fixed_identity, round_trip};
use keyring::{Identity, WrappedKey};
use libfuzzer_sys::fuzz_target;

fn identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| fixed_identity(0x01))
}

fuzz_target!(|data: &[u8]| {
    if let Some(stanza) = round_trip(data, WrappedKey::from_bytes, WrappedKey::to_bytes) {
        let _ = identity().unwrap_key(&stanza);
    }
});
