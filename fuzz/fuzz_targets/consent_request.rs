//! Share requests, plain and signed by the requester.
//!
//! Each form is tried on the same input: the binary encoding (decode, re-encode) and the
//! text form (unpadded base64url: parse, print back the trimmed input).
#![no_main]

use fuzzkit::{round_trip, text_round_trip};
use keyring::consent::{ShareRequest, SignedRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = round_trip(data, ShareRequest::decode, ShareRequest::encode);
    let _ = text_round_trip(data, true, ShareRequest::from_text, ShareRequest::to_text);
    let _ = round_trip(data, SignedRequest::decode, SignedRequest::encode);
    let _ = text_round_trip(data, true, SignedRequest::from_text, SignedRequest::to_text);
});
