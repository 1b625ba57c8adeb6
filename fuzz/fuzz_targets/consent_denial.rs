//! Denials, plain and signed by the patient.
//!
//! Each form is tried on the same input: the binary encoding (decode, re-encode) and the
//! text form (unpadded base64url: parse, print back the trimmed input).
#![no_main]

use fuzzkit::{round_trip, text_round_trip};
use keyring::consent::{Denial, SignedDenial};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = round_trip(data, Denial::decode, Denial::encode);
    let _ = text_round_trip(data, true, Denial::from_text, Denial::to_text);
    let _ = round_trip(data, SignedDenial::decode, SignedDenial::encode);
    let _ = text_round_trip(data, true, SignedDenial::from_text, SignedDenial::to_text);
});
