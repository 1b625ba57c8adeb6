//! Revocations, plain and signed by the patient.
//!
//! Each form is tried on the same input: the binary encoding (decode, re-encode) and the
//! text form (unpadded base64url: parse, print back the trimmed input).
#![no_main]

use fuzzkit::{round_trip, text_round_trip};
use keyring::consent::{Revocation, SignedRevocation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = round_trip(data, Revocation::decode, Revocation::encode);
    let _ = text_round_trip(data, true, Revocation::from_text, Revocation::to_text);
    let _ = round_trip(data, SignedRevocation::decode, SignedRevocation::encode);
    let _ = text_round_trip(
        data,
        true,
        SignedRevocation::from_text,
        SignedRevocation::to_text,
    );
});
