//! Grants, plain and signed by the patient.
//!
//! Each form is tried on the same input: the binary encoding (decode, re-encode) and the
//! text form (unpadded base64url: parse, print back the trimmed input).
#![no_main]

use fuzzkit::{round_trip, text_round_trip};
use keyring::consent::{Grant, SignedGrant};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = round_trip(data, Grant::decode, Grant::encode);
    let _ = text_round_trip(data, true, Grant::from_text, Grant::to_text);
    let _ = round_trip(data, SignedGrant::decode, SignedGrant::encode);
    let _ = text_round_trip(data, true, SignedGrant::from_text, SignedGrant::to_text);
});
