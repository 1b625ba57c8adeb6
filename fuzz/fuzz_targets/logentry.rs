//! Transparency log entries: decode and re-encode.
#![no_main]

use fuzzkit::round_trip;
use keyring::logentry::Entry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = round_trip(data, Entry::decode, Entry::encode);
});
