//! DEK records (`deks` rows of the private store, which a backup file carries and a restore
//! writes back): decode either version, re-encode it in its own version, and check that every
//! stanza said to be a Recipient's names it.
#![no_main]

use fuzzkit::round_trip;
use keyring::dek_record::{DekRecord, DEK_RECORD_V1};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let v1 = DekRecord::version_of(data) == Some(DEK_RECORD_V1);
    let encode = |r: &DekRecord| if v1 { r.encode_v1() } else { r.encode() };
    let Some(rec) = round_trip(data, DekRecord::decode, encode) else {
        return;
    };
    for s in &rec.stanzas {
        if let Some(r) = s.recipient() {
            assert_eq!(r.tag(), s.wrapped().recipient_tag());
            assert!(s.is_for(r));
        }
    }
});
