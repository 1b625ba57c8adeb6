//! PeerAuth between gateways, plain and signed.
//!
//! Each form is tried on the same input: the binary encoding (decode, re-encode) and the
//! text form (unpadded base64url: parse, print back the trimmed input).
#![no_main]

use fuzzkit::{round_trip, text_round_trip};
use keyring::consent::{PeerAuth, SignedPeerAuth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = round_trip(data, PeerAuth::decode, PeerAuth::encode);
    let _ = text_round_trip(data, true, PeerAuth::from_text, PeerAuth::to_text);
    let _ = round_trip(data, SignedPeerAuth::decode, SignedPeerAuth::encode);
    let _ = text_round_trip(
        data,
        true,
        SignedPeerAuth::from_text,
        SignedPeerAuth::to_text,
    );
});
