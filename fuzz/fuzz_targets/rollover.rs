//! Institution key rollovers (plain and signed), binary and text forms.
//!
//! Decode only: what decodes must re-encode to exactly the input; the signed form is also
//! verified against the key it names (must not panic, whatever it answers).
#![no_main]

use fuzzkit::{round_trip, text_round_trip};
use keyring::rollover::{Rollover, SignedRollover};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = round_trip(data, Rollover::decode, Rollover::encode);
    let _ = text_round_trip(data, true, Rollover::from_text, Rollover::to_text);
    if let Some(s) = round_trip(data, SignedRollover::decode, SignedRollover::encode) {
        let _ = s.verify(&s.rollover.old);
    }
    let _ = text_round_trip(
        data,
        true,
        SignedRollover::from_text,
        SignedRollover::to_text,
    );
});
