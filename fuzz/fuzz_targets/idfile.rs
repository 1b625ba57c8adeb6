//! Identity files and the key texts in them: an identity file without a passphrase (a sealed
//! one stops before argon2, whose cost would bound the run, not the parser), the bech32 identity
//! and recipient texts, and the 64-byte recipient form. Text forms accept either case, so the
//! check is value-level: what parses prints back as the input in the printer's case.
#![no_main]

use fuzzkit::{round_trip, text_round_trip};
use keyring::{idfile, Identity, Recipient};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = round_trip(data, Recipient::from_bytes, |r| r.to_bytes().to_vec());
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = idfile::decode(text, None) {
        let again = idfile::decode(&idfile::encode(&id, None), None)
            .expect("Invariant: an encoded identity file decodes");
        assert!(
            *again.to_bytes() == *id.to_bytes(),
            "identity file round trip"
        );
    }
    let _ = idfile::is_sealed(text);
    if let Ok(id) = Identity::from_bech32(text) {
        assert_eq!(*id.to_bech32(), text.to_uppercase());
    }
    let _ = text_round_trip(
        data,
        false,
        |s| s.parse::<Recipient>(),
        |r| {
            let printed = r.to_string();
            if text.bytes().any(|b| b.is_ascii_uppercase()) {
                printed.to_uppercase()
            } else {
                printed
            }
        },
    );
});
