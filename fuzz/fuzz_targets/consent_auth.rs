//! Patient auth: challenges, tokens and signed tokens.
//!
//! Each form is tried on the same input: the binary encoding (decode, re-encode) and the
//! text form (unpadded base64url: parse, print back the trimmed input).
#![no_main]

use fuzzkit::{round_trip, text_round_trip};
use keyring::consent::{AuthChallenge, AuthToken, SignedAuth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = round_trip(data, AuthChallenge::decode, AuthChallenge::encode);
    let _ = text_round_trip(data, true, AuthChallenge::from_text, AuthChallenge::to_text);
    let _ = round_trip(data, AuthToken::decode, AuthToken::encode);
    let _ = text_round_trip(data, true, AuthToken::from_text, AuthToken::to_text);
    let _ = round_trip(data, SignedAuth::decode, SignedAuth::encode);
    let _ = text_round_trip(data, true, SignedAuth::from_text, SignedAuth::to_text);
});
