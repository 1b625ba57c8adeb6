//! A gateway's answer to another's signed peer request (request state, object listing,
//! exchange), unsigned and signed, as the asking gateway receives it.
//!
//! Both forms are tried on the same input: decode, re-encode. The signature is not checked
//! (the fuzzer cannot forge one); what decodes must already be a valid answer, so it is
//! validated again and its context must be the one of its kind.
#![no_main]

use fuzzkit::round_trip;
use keyring::peer::{EXCHANGE_ANSWER_CONTEXT, OBJECTS_ANSWER_CONTEXT, REQUEST_ANSWER_CONTEXT};
use keyring::{AnswerBody, PeerAnswer, SignedPeerAnswer};
use libfuzzer_sys::fuzz_target;

fn check(a: &PeerAnswer) {
    assert_eq!(a.validate(), Ok(()), "decoded an invalid answer: {a:?}");
    let want = match a.body {
        AnswerBody::Request { .. } => REQUEST_ANSWER_CONTEXT,
        AnswerBody::Objects(_) => OBJECTS_ANSWER_CONTEXT,
        AnswerBody::Exchange { .. } => EXCHANGE_ANSWER_CONTEXT,
    };
    assert_eq!(a.context(), want);
}

fuzz_target!(|data: &[u8]| {
    if let Some(a) = round_trip(data, PeerAnswer::decode, PeerAnswer::encode) {
        check(&a);
    }
    if let Some(s) = round_trip(data, SignedPeerAnswer::decode, SignedPeerAnswer::encode) {
        check(&s.answer);
    }
});
