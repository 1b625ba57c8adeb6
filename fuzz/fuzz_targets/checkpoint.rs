//! Signed notes, checkpoints, cosignature lines and vkeys (C2SP signed-note, tlog-checkpoint,
//! tlog-cosignature): what parses prints back byte for byte. Signatures are not checked: the
//! parsers are what is fuzzed.
#![no_main]

use fuzzkit::text_round_trip;
use keyring::{Checkpoint, NoteVerifier, SignedNote};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(note) = text_round_trip(data, false, SignedNote::parse, SignedNote::to_string) {
        if let Ok(c) = note.checkpoint() {
            assert_eq!(c.body(), note.text());
            c.check().expect("a parsed checkpoint is well-formed");
        }
    }
    let _ = text_round_trip(data, false, Checkpoint::parse_body, Checkpoint::body);
    // A vkey's key id is hex, read in either case (as Go's note package does) and printed in
    // lowercase; the rest prints back exactly.
    let _ = text_round_trip(data, false, NoteVerifier::from_vkey, |v| {
        let printed = v.to_string();
        let text = std::str::from_utf8(data).expect("parsed, so UTF-8");
        let mut fields = text.splitn(3, '+');
        match (fields.next(), fields.next(), fields.next()) {
            (Some(name), Some(id), Some(key)) if printed.eq_ignore_ascii_case(text) => {
                assert_eq!(printed, format!("{name}+{}+{key}", id.to_ascii_lowercase()));
                text.to_owned()
            }
            _ => printed,
        }
    });
});
