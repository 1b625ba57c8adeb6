//! The backup file: the clear header, and the payload framing (entries) fed to the decoder in
//! pieces the way opened chunks arrive. Every entry read re-encodes to the bytes it came from.
#![no_main]

use keyring::backup::{BackupHeader, EntryDecoder};
use keyring::fuzzing::backup_header_encode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The header: parse the whole input (the payload may follow it), re-encode the header part.
    if let Ok(header) = BackupHeader::parse(data) {
        assert_eq!(&backup_header_encode(&header)[..], &data[..header.len()]);
        let _ = header.sealed_chunk_len();
    }
    // The payload: the first byte picks the piece size, the rest is the payload.
    let Some((&piece, payload)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let mut decoder = EntryDecoder::new();
    let mut reencoded = Vec::new();
    for part in payload.chunks(piece) {
        decoder.push(part);
        loop {
            match decoder.next_entry() {
                Ok(Some(entry)) => entry
                    .encode_into(&mut reencoded)
                    .expect("Invariant: a decoded entry fits its own length fields"),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    assert_eq!(reencoded, &payload[..reencoded.len()]);
    if decoder.finish().is_ok() {
        assert_eq!(reencoded, payload);
    }
});
