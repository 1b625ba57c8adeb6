//! Sealing a blob's chunks (the STREAM construction, as in age) and the arithmetic of where each
//! chunk sits in the plaintext and in the sealed blob.
//!
//! A blob is the concatenation of its sealed chunks and nothing else: no header, no padding
//! between chunks. Its chunk size and plaintext length live in the manifest ([`Layout`]).
//!
//! Each chunk is ChaCha20-Poly1305 under the blob's [`PayloadKey`] with nonce
//!
//! | offset | len | field                                               |
//! |--------|-----|-----------------------------------------------------|
//! | 0      | 11  | chunk index, 88-bit big-endian                       |
//! | 11     | 1   | last-chunk flag: 0x01 for the final chunk, else 0x00 |
//!
//! and no associated data. Binding the index stops reordering; binding the flag stops
//! truncation (a non-final chunk does not open as final, and a stream that lacks its final chunk
//! never yields one); splicing chunks across blobs fails because each blob id gives a different
//! key. Indices are `u64`, so they always fit the 88-bit counter and the counter cannot wrap.
//!
//! # Security
//! A payload key must never seal two different plaintexts at the same (index, flag). The
//! gateway guarantees that by drawing a fresh [`BlobId`] for every blob write.

use std::fmt;
use std::ops::RangeInclusive;

use chacha20poly1305::aead::{Aead, AeadInPlace};
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::key::{BlobId, DataKey};

/// Length of the Poly1305 tag appended to every chunk.
pub const TAG_LEN: usize = 16;
/// Chunk size used for new blobs unless configured otherwise (1 MiB).
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;

const PAYLOAD_INFO: &[u8] = b"medgate/v1/payload";
const TAG_LEN_U64: u64 = TAG_LEN as u64;

/// The key that seals one blob's chunks. Wiped on drop.
pub struct PayloadKey {
    cipher: ChaCha20Poly1305,
}

impl PayloadKey {
    /// HKDF-SHA256(ikm = DEK, salt = blob id, info = "medgate/v1/payload").
    pub fn derive(dek: &DataKey, blob: &BlobId) -> PayloadKey {
        let mut okm = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(&blob.0), dek.expose())
            .expand(PAYLOAD_INFO, okm.as_mut())
            .expect("Invariant: 32 bytes is a valid HKDF-SHA256 output length");
        PayloadKey {
            cipher: ChaCha20Poly1305::new(Key::from_slice(okm.as_ref())),
        }
    }

    /// Seals chunk `index`; the result is `plaintext.len() + TAG_LEN` bytes.
    ///
    /// # Errors
    /// [`Error::Malformed`] if the chunk exceeds ChaCha20-Poly1305's 256 GiB message limit.
    pub fn seal(&self, index: u64, last: bool, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.cipher
            .encrypt(&nonce(index, last), plaintext)
            .map_err(|_| Error::Malformed("chunk: too large to seal"))
    }

    /// Seals chunk `index` in place, appending the tag to `buf`.
    ///
    /// Reserve `TAG_LEN` bytes of spare capacity beforehand to avoid a reallocation.
    ///
    /// # Errors
    /// As [`PayloadKey::seal`].
    pub fn seal_in_place(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<()> {
        self.cipher
            .encrypt_in_place(&nonce(index, last), b"", buf)
            .map_err(|_| Error::Malformed("chunk: too large to seal"))
    }

    /// Opens sealed chunk `index`.
    ///
    /// # Errors
    /// [`Error::Decrypt`] if the tag does not verify for this key, index and flag (tampering,
    /// reordering, truncation, a chunk of another blob, or a chunk shorter than a tag).
    pub fn open(&self, index: u64, last: bool, sealed: &[u8]) -> Result<Vec<u8>> {
        self.cipher
            .decrypt(&nonce(index, last), sealed)
            .map_err(|_| Error::Decrypt)
    }

    /// Opens sealed chunk `index` in place, leaving only the plaintext in `buf`.
    ///
    /// # Errors
    /// As [`PayloadKey::open`]; on error `buf` is left holding unverified bytes, not plaintext.
    pub fn open_in_place(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<()> {
        self.cipher
            .decrypt_in_place(&nonce(index, last), b"", buf)
            .map_err(|_| Error::Decrypt)
    }
}

impl fmt::Debug for PayloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PayloadKey(<redacted>)")
    }
}

/// 88-bit big-endian counter ‖ last flag. A u64 fills the low 8 of the 11 counter bytes, so the
/// top 3 are always zero.
fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::from(n)
}

/// Where each chunk of a blob sits, in plaintext and sealed coordinates.
///
/// Every chunk holds `chunk_size` plaintext bytes except the last, which holds the rest (1 to
/// `chunk_size` bytes, or 0 for an empty object, which is one empty final chunk). Each sealed
/// chunk is its plaintext plus [`TAG_LEN`].
///
/// Index arguments are expected to be `< chunk_count()`. Out-of-range indices do not panic:
/// offsets saturate and lengths are 0. A `Layout` built by struct literal with `chunk_size == 0`
/// (which [`Layout::new`] rejects) is treated as `chunk_size == 1` instead of dividing by zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Plaintext length of the blob.
    pub plaintext_len: u64,
    /// Plaintext bytes per chunk (all but the last chunk).
    pub chunk_size: u32,
}

impl Layout {
    /// A checked layout.
    ///
    /// # Errors
    /// [`Error::Malformed`] for `chunk_size == 0`; [`Error::CounterOverflow`] if the sealed blob
    /// length would not fit in a `u64`.
    pub fn new(plaintext_len: u64, chunk_size: u32) -> Result<Layout> {
        if chunk_size == 0 {
            return Err(Error::Malformed("layout: chunk size must be at least 1"));
        }
        let layout = Layout {
            plaintext_len,
            chunk_size,
        };
        layout
            .chunk_count()
            .checked_mul(TAG_LEN_U64)
            .and_then(|tags| tags.checked_add(plaintext_len))
            .ok_or(Error::CounterOverflow)?;
        Ok(layout)
    }

    fn cs(&self) -> u64 {
        u64::from(self.chunk_size.max(1))
    }

    /// Number of chunks; at least 1 (an empty blob is one empty final chunk).
    pub fn chunk_count(&self) -> u64 {
        self.plaintext_len.div_ceil(self.cs()).max(1)
    }

    /// Whether chunk `i` is the final one (sealed with the last flag).
    pub fn is_last(&self, i: u64) -> bool {
        i == self.chunk_count() - 1
    }

    /// Plaintext offset of chunk `i`.
    pub fn plain_offset(&self, i: u64) -> u64 {
        i.saturating_mul(self.cs()).min(self.plaintext_len)
    }

    /// Plaintext length of chunk `i`.
    pub fn plain_len(&self, i: u64) -> u64 {
        if i >= self.chunk_count() {
            return 0;
        }
        (self.plaintext_len - self.plain_offset(i)).min(self.cs())
    }

    /// Offset of sealed chunk `i` in the blob: `i * (chunk_size + TAG_LEN)`.
    pub fn sealed_offset(&self, i: u64) -> u64 {
        i.min(self.chunk_count())
            .saturating_mul(self.cs() + TAG_LEN_U64)
            .min(self.sealed_total())
    }

    /// Length of sealed chunk `i`: its plaintext length plus [`TAG_LEN`].
    pub fn sealed_len(&self, i: u64) -> u64 {
        if i >= self.chunk_count() {
            return 0;
        }
        self.plain_len(i) + TAG_LEN_U64
    }

    /// Length of the whole sealed blob.
    pub fn sealed_total(&self) -> u64 {
        self.chunk_count()
            .saturating_mul(TAG_LEN_U64)
            .saturating_add(self.plaintext_len)
    }

    /// The chunks holding plaintext bytes `first_byte..=last_byte_inclusive`.
    ///
    /// The caller validates the range against `plaintext_len` first (a range starting past the
    /// end is unsatisfiable, HTTP 416). Bytes past the end are clamped to the final chunk rather
    /// than panicking, and `first_byte > last_byte_inclusive` gives an empty range.
    pub fn chunks_for_range(
        &self,
        first_byte: u64,
        last_byte_inclusive: u64,
    ) -> RangeInclusive<u64> {
        let last_chunk = self.chunk_count() - 1;
        if first_byte > last_byte_inclusive {
            // An inclusive range can only be empty by being reversed.
            return RangeInclusive::new(1, 0);
        }
        let first = (first_byte / self.cs()).min(last_chunk);
        let last = (last_byte_inclusive / self.cs()).min(last_chunk);
        first..=last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(seed: u8, blob: u8) -> PayloadKey {
        PayloadKey::derive(&DataKey::from_bytes([seed; 32]), &BlobId([blob; 16]))
    }

    fn seal_stream(k: &PayloadKey, layout: &Layout, data: &[u8]) -> Vec<Vec<u8>> {
        (0..layout.chunk_count())
            .map(|i| {
                let start = layout.plain_offset(i) as usize;
                let end = start + layout.plain_len(i) as usize;
                k.seal(i, layout.is_last(i), &data[start..end]).unwrap()
            })
            .collect()
    }

    #[test]
    fn nonce_layout() {
        let n = nonce(0x0102_0304_0506_0708, true);
        assert_eq!(n.as_slice(), &[0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 1][..]);
        assert_eq!(nonce(0, false).as_slice(), &[0u8; 12][..]);
    }

    #[test]
    fn empty_object_is_one_empty_last_chunk() {
        let l = Layout::new(0, 4096).unwrap();
        assert_eq!(l.chunk_count(), 1);
        assert!(l.is_last(0));
        assert_eq!(l.plain_len(0), 0);
        assert_eq!(l.sealed_len(0), 16);
        assert_eq!(l.sealed_total(), 16);
        let k = key(1, 1);
        let sealed = k.seal(0, true, b"").unwrap();
        assert_eq!(sealed.len(), TAG_LEN);
        assert_eq!(k.open(0, true, &sealed).unwrap(), b"");
        assert_eq!(k.open(0, false, &sealed), Err(Error::Decrypt));
    }

    #[test]
    fn layout_edges() {
        let l = Layout::new(8192, 4096).unwrap();
        assert_eq!(l.chunk_count(), 2);
        assert_eq!(l.plain_len(1), 4096);
        assert_eq!(l.sealed_offset(1), 4112);
        assert_eq!(l.sealed_total(), 8192 + 32);
        let l = Layout::new(8193, 4096).unwrap();
        assert_eq!(l.chunk_count(), 3);
        assert_eq!(l.plain_len(2), 1);
        assert_eq!(l.chunks_for_range(4095, 4096), 0..=1);
        assert_eq!(l.chunks_for_range(8192, 8192), 2..=2);
        assert_eq!(l.chunks_for_range(0, u64::MAX), 0..=2);
        assert!(l.chunks_for_range(5, 4).is_empty());
        assert_eq!(l.plain_len(3), 0);
        assert_eq!(l.sealed_len(3), 0);
        assert_eq!(l.sealed_offset(99), l.sealed_total());
        assert!(Layout::new(1, 0).is_err());
        assert_eq!(Layout::new(u64::MAX, 1), Err(Error::CounterOverflow));
        assert!(Layout::new(u64::MAX - (1 << 40), u32::MAX).is_ok());
        let zero = Layout {
            plaintext_len: 10,
            chunk_size: 0,
        };
        assert_eq!(zero.chunk_count(), 10);
    }

    #[test]
    fn in_place_matches_copying() {
        let k = key(2, 3);
        let mut buf = b"hello chunk".to_vec();
        k.seal_in_place(5, false, &mut buf).unwrap();
        assert_eq!(buf, k.seal(5, false, b"hello chunk").unwrap());
        k.open_in_place(5, false, &mut buf).unwrap();
        assert_eq!(buf, b"hello chunk");
    }

    #[test]
    fn tampering_fails() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let layout = Layout::new(data.len() as u64, 4096).unwrap();
        let k = key(4, 5);
        let chunks = seal_stream(&k, &layout, &data);
        assert_eq!(chunks.len(), 3);

        let mut flipped = chunks[1].clone();
        flipped[7] ^= 0x01;
        assert_eq!(k.open(1, false, &flipped), Err(Error::Decrypt));
        let mut flipped_tag = chunks[2].clone();
        let n = flipped_tag.len();
        flipped_tag[n - 1] ^= 0x80;
        assert_eq!(k.open(2, true, &flipped_tag), Err(Error::Decrypt));

        // Swapped: chunk 1 at position 0.
        assert_eq!(k.open(0, false, &chunks[1]), Err(Error::Decrypt));
        // Truncated: stream cut after chunk 1, which then claims to be last.
        assert_eq!(k.open(1, true, &chunks[1]), Err(Error::Decrypt));
        // Last flag stripped from the real final chunk.
        assert_eq!(k.open(2, false, &chunks[2]), Err(Error::Decrypt));
        // Spliced from another blob with the same DEK.
        assert_eq!(key(4, 6).open(0, false, &chunks[0]), Err(Error::Decrypt));
        // Shorter than a tag.
        assert_eq!(k.open(0, false, &chunks[0][..15]), Err(Error::Decrypt));
        let mut short = vec![0u8; 3];
        assert_eq!(k.open_in_place(0, false, &mut short), Err(Error::Decrypt));
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", key(1, 1)), "PayloadKey(<redacted>)");
    }

    proptest! {
        #[test]
        fn stream_round_trip(data in proptest::collection::vec(any::<u8>(), 0..3000), cs in 1u32..700) {
            let layout = Layout::new(data.len() as u64, cs).unwrap();
            let k = key(9, 9);
            let chunks = seal_stream(&k, &layout, &data);
            prop_assert_eq!(chunks.len() as u64, layout.chunk_count());
            let mut out = Vec::new();
            let mut sealed_pos = 0u64;
            for (i, c) in chunks.iter().enumerate() {
                let i = i as u64;
                prop_assert_eq!(layout.sealed_offset(i), sealed_pos);
                prop_assert_eq!(layout.sealed_len(i), c.len() as u64);
                sealed_pos += c.len() as u64;
                out.extend(k.open(i, layout.is_last(i), c).unwrap());
            }
            prop_assert_eq!(sealed_pos, layout.sealed_total());
            prop_assert_eq!(out, data);
        }

        #[test]
        fn range_covers_exactly(len in 1u64..5000, cs in 1u32..600, a in any::<u64>(), b in any::<u64>()) {
            let layout = Layout::new(len, cs).unwrap();
            let (first, last) = { let x = a % len; let y = b % len; (x.min(y), x.max(y)) };
            let r = layout.chunks_for_range(first, last);
            let (s, e) = (*r.start(), *r.end());
            prop_assert!(layout.plain_offset(s) <= first);
            prop_assert!(first < layout.plain_offset(s) + layout.plain_len(s));
            prop_assert!(layout.plain_offset(e) <= last);
            prop_assert!(last < layout.plain_offset(e) + layout.plain_len(e));
        }
    }
}
