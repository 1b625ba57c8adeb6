//! What every fuzz target checks, so that a target is only the list of decoders it drives.
//!
//! A decoder may refuse anything, but what it accepts must re-encode to exactly the bytes it
//! read: every medgate format has one encoding per value, and hashes and signatures are taken
//! over encodings. A panic anywhere is a finding too (libFuzzer reports it as a crash).
#![forbid(unsafe_code)]

use std::fmt::Debug;

/// Decodes `data`; if that succeeds, asserts that `encode` gives `data` back. Returns the value.
///
/// # Panics
/// On a round-trip mismatch: that is the finding.
pub fn round_trip<T: Debug, E>(
    data: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<T, E>,
    encode: impl FnOnce(&T) -> Vec<u8>,
) -> Option<T> {
    let value = decode(data).ok()?;
    let again = encode(&value);
    assert!(
        again == data,
        "decoded {value:?} from {} bytes but it re-encodes to {} different bytes",
        data.len(),
        again.len()
    );
    Some(value)
}

/// The text-form counterpart of [`round_trip`]: what `parse` accepts must print back as the
/// input with surrounding whitespace trimmed (`trim`), or exactly (`!trim`).
///
/// # Panics
/// On a mismatch.
pub fn text_round_trip<T: Debug, E>(
    data: &[u8],
    trim: bool,
    parse: impl FnOnce(&str) -> Result<T, E>,
    print: impl FnOnce(&T) -> String,
) -> Option<T> {
    let text = std::str::from_utf8(data).ok()?;
    let value = parse(text).ok()?;
    let printed = print(&value);
    let want = if trim { text.trim() } else { text };
    assert_eq!(printed, want, "parsed {value:?} but it prints differently");
    Some(value)
}

/// A fixed identity (bytes `start`, `start + 1`, …), as the vectors in keyring/testdata use.
pub fn fixed_identity(start: u8) -> keyring::Identity {
    let bytes: [u8; 64] = std::array::from_fn(|i| start.wrapping_add(i as u8));
    keyring::Identity::from_bytes(&bytes).expect("Invariant: 64 bytes make an identity")
}
