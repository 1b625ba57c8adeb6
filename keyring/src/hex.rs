//! Minimal lowercase hex, so the library does not need a dependency for 16-byte ids.

use crate::error::{Error, Result};

const DIGITS: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes exactly `N` bytes of hex (either case).
pub(crate) fn decode_array<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return Err(Error::Malformed(what));
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = (nibble(pair[0]), nibble(pair[1]));
        match (hi, lo) {
            (Some(hi), Some(lo)) => *o = (hi << 4) | lo,
            _ => return Err(Error::Malformed(what)),
        }
    }
    Ok(out)
}
