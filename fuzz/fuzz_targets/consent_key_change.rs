//! Key changes (plain and signed) and registration proofs (64-byte signatures, binary and hex).
//!
//! Each form is tried on the same input: the binary encoding (decode, re-encode) and the
//! text form (unpadded base64url: parse, print back the trimmed input).
#![no_main]

use fuzzkit::{round_trip, text_round_trip};
use keyring::consent::{KeyChange, SignedKeyChange};
use keyring::Signature;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = round_trip(data, KeyChange::decode, KeyChange::encode);
    let _ = text_round_trip(data, true, KeyChange::from_text, KeyChange::to_text);
    let _ = round_trip(data, SignedKeyChange::decode, SignedKeyChange::encode);
    let _ = text_round_trip(
        data,
        true,
        SignedKeyChange::from_text,
        SignedKeyChange::to_text,
    );
    // A registration proof is a bare signature: 64 bytes, or 128 hex digits in text (read in
    // either case, printed in lowercase).
    let _ = round_trip(data, Signature::from_bytes, |s| s.to_bytes().to_vec());
    let _ = text_round_trip(data, false, Signature::from_hex, |s| {
        let printed = s.to_hex();
        let text = std::str::from_utf8(data).expect("parsed, so UTF-8");
        assert!(
            printed.eq_ignore_ascii_case(text),
            "{printed} is not {text}"
        );
        assert!(!printed.bytes().any(|b| b.is_ascii_uppercase()));
        text.to_owned()
    });
});
