//! The object manifest kept in the private store: everything needed to serve an object (S3
//! metadata, which DEK, which blobs, their layouts and Merkle roots) except the sealed bytes.

use crate::chunk::Layout;
use crate::error::{Error, Result};
use crate::key::{BlobId, DekId};
use crate::merkle::Hash;
use crate::wire::{put_len, put_opt_str, put_str, Names, Reader};

/// Version byte of the v1 manifest encoding.
pub const MANIFEST_V1: u8 = 0x01;
/// AEAD suite 1: ChaCha20-Poly1305 STREAM chunks, X25519 + HKDF-SHA256 stanzas.
pub const SUITE_V1: u8 = 0x01;

/// Encoded size of one [`Part`].
const PART_LEN: usize = 16 + 4 + 8 + 32;
/// Smallest encoded (name, value) pair: two empty length-prefixed strings.
const PAIR_MIN_LEN: usize = 4 + 4;

/// One blob of an object: the whole object for a single PUT, one part of a multipart upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The sealed blob in the public store.
    pub blob: BlobId,
    /// Plaintext bytes per chunk in this blob.
    pub chunk_size: u32,
    /// Plaintext length of this blob.
    pub plaintext_len: u64,
    /// RFC 6962 root over `leaf_hash(sealed chunk)` of this blob's chunks.
    pub root: Hash,
}

impl Part {
    /// This part's chunk layout.
    ///
    /// # Errors
    /// As [`Layout::new`].
    pub fn layout(&self) -> Result<Layout> {
        Layout::new(self.plaintext_len, self.chunk_size)
    }
}

/// The manifest of one object version.
///
/// Manifest, v1 (integers big-endian; `str` = u32 byte length ‖ UTF-8 bytes;
/// `opt str` = 0x00, or 0x01 ‖ `str`; `pairs` = u32 count ‖ count × (`str` name ‖ `str` value)):
///
/// | offset | len      | field                                           |
/// |--------|----------|-------------------------------------------------|
/// | 0      | 1        | version = 0x01                                  |
/// | 1      | 1        | suite (0x01 = [`SUITE_V1`])                     |
/// | 2      | 16       | DEK id                                          |
/// | 18     | 8        | size (u64)                                      |
/// | 26     | 8        | last_modified_ms (u64)                          |
/// | 34     | 4 + n    | etag (`str`)                                    |
/// | …      | 1 (+4+n) | content_type (`opt str`)                        |
/// | …      | 4 + …    | headers (`pairs`)                               |
/// | …      | 4 + …    | metadata (`pairs`)                              |
/// | …      | 4 + …    | checksums (`pairs`)                             |
/// | …      | 1 (+4+n) | patient (`opt str`)                             |
/// | …      | 4        | part count (u32)                                |
/// | …      | 60 each  | parts: blob id 16 ‖ chunk_size u32 ‖ plaintext_len u64 ‖ root 32 |
///
/// Nothing may follow the last part. A decoded manifest is valid: its suite is known, every
/// part's layout is valid and the part lengths add up to `size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// AEAD suite of the blobs and stanzas ([`SUITE_V1`]).
    pub suite: u8,
    /// Which DEK seals the blobs; stanzas are stored per DEK id, and copies share one.
    pub dek_id: DekId,
    /// Plaintext size of the whole object.
    pub size: u64,
    /// Unix milliseconds.
    pub last_modified_ms: u64,
    /// ETag as returned to S3 clients, quotes included.
    pub etag: String,
    /// `Content-Type`, if the client gave one.
    pub content_type: Option<String>,
    /// Other stored system headers (cache-control, content-disposition, ...).
    pub headers: Vec<(String, String)>,
    /// `x-amz-meta-*` user metadata, keys without the prefix.
    pub metadata: Vec<(String, String)>,
    /// Stored checksums, e.g. `("CRC32", base64)`.
    pub checksums: Vec<(String, String)>,
    /// The patient this object belongs to, if any.
    pub patient: Option<String>,
    /// One per blob, in plaintext order.
    pub parts: Vec<Part>,
}

impl Manifest {
    /// The v1 encoding (see the byte table on the type).
    ///
    /// Does not validate; [`Manifest::validate`] before storing, or [`Manifest::decode`] will
    /// refuse the result.
    ///
    /// # Panics
    /// If a string is 4 GiB or longer or a list has 2³² entries or more, which no S3 request can
    /// produce.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.parts.len() * PART_LEN);
        out.push(MANIFEST_V1);
        out.push(self.suite);
        out.extend_from_slice(&self.dek_id.0);
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.last_modified_ms.to_be_bytes());
        put_str(&mut out, &self.etag);
        put_opt_str(&mut out, self.content_type.as_deref());
        put_pairs(&mut out, &self.headers);
        put_pairs(&mut out, &self.metadata);
        put_pairs(&mut out, &self.checksums);
        put_opt_str(&mut out, self.patient.as_deref());
        put_len(&mut out, self.parts.len());
        for p in &self.parts {
            out.extend_from_slice(&p.blob.0);
            out.extend_from_slice(&p.chunk_size.to_be_bytes());
            out.extend_from_slice(&p.plaintext_len.to_be_bytes());
            out.extend_from_slice(&p.root);
        }
        out
    }

    /// Parses and validates a manifest.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for a version other than 0x01, [`Error::UnsupportedSuite`]
    /// for an unknown suite, [`Error::Malformed`] for truncation, trailing bytes, invalid UTF-8,
    /// counts that the remaining bytes could not hold, or an invalid part layout or size, and
    /// [`Error::CounterOverflow`] for a part too large to lay out.
    pub fn decode(bytes: &[u8]) -> Result<Manifest> {
        let mut r = Reader::new(bytes, NAMES);
        match r.u8()? {
            MANIFEST_V1 => {}
            v => return Err(Error::UnsupportedVersion(v)),
        }
        let suite = r.u8()?;
        let dek_id = DekId(r.array()?);
        let size = r.u64()?;
        let last_modified_ms = r.u64()?;
        let etag = string(&mut r)?;
        let content_type = opt_string(&mut r)?;
        let headers = pairs(&mut r)?;
        let metadata = pairs(&mut r)?;
        let checksums = pairs(&mut r)?;
        let patient = opt_string(&mut r)?;
        let n = r.count(PART_LEN)?;
        let mut parts = Vec::with_capacity(n);
        for _ in 0..n {
            parts.push(Part {
                blob: BlobId(r.array()?),
                chunk_size: r.u32()?,
                plaintext_len: r.u64()?,
                root: r.array()?,
            });
        }
        r.finish()?;
        let m = Manifest {
            suite,
            dek_id,
            size,
            last_modified_ms,
            etag,
            content_type,
            headers,
            metadata,
            checksums,
            patient,
            parts,
        };
        m.validate()?;
        Ok(m)
    }

    /// Checks what [`Manifest::decode`] guarantees: a known suite, valid part layouts, and part
    /// lengths that add up to `size`.
    ///
    /// # Errors
    /// As [`Manifest::decode`].
    pub fn validate(&self) -> Result<()> {
        if self.suite != SUITE_V1 {
            return Err(Error::UnsupportedSuite(self.suite));
        }
        let mut total = 0u64;
        for p in &self.parts {
            p.layout()?;
            total = total
                .checked_add(p.plaintext_len)
                .ok_or(Error::Malformed("manifest: part lengths overflow"))?;
        }
        if total != self.size {
            return Err(Error::Malformed(
                "manifest: part lengths do not add up to size",
            ));
        }
        Ok(())
    }

    /// The chunk layout of part `part`.
    ///
    /// # Panics
    /// If `part >= self.parts.len()`. A part with `chunk_size == 0` (impossible in a decoded
    /// manifest) gets a layout that behaves as chunk size 1; see [`Layout`].
    pub fn layout(&self, part: usize) -> Layout {
        let p = &self.parts[part];
        Layout {
            plaintext_len: p.plaintext_len,
            chunk_size: p.chunk_size,
        }
    }

    /// Which part holds plaintext byte `plain_offset` of the object, and the offset inside it.
    ///
    /// `None` at or past the end of the object. Empty parts are skipped.
    pub fn part_for_offset(&self, plain_offset: u64) -> Option<(usize, u64)> {
        let mut start = 0u64;
        for (i, p) in self.parts.iter().enumerate() {
            let end = start.checked_add(p.plaintext_len)?;
            if plain_offset < end {
                return Some((i, plain_offset - start));
            }
            start = end;
        }
        None
    }
}

/// The manifest's error messages (they predate the shared [`Names`] and stay as they were).
const NAMES: &Names = &Names {
    truncated: "manifest: truncated",
    trailing: "manifest: trailing bytes",
    utf8: "manifest: invalid UTF-8",
    flag: "manifest: bad option flag",
    text: "manifest: bad text",
    too_many: "manifest: count exceeds input",
};

fn put_pairs(out: &mut Vec<u8>, pairs: &[(String, String)]) {
    put_len(out, pairs.len());
    for (k, v) in pairs {
        put_str(out, k);
        put_str(out, v);
    }
}

/// A manifest `str`: its length is read as a count (a length beyond the input is
/// `too_many`, not `truncated`).
fn string(r: &mut Reader<'_>) -> Result<String> {
    let len = r.count(1)?;
    let bytes = r.take(len)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::Malformed(NAMES.utf8))
}

fn opt_string(r: &mut Reader<'_>) -> Result<Option<String>> {
    if r.flag()? {
        string(r).map(Some)
    } else {
        Ok(None)
    }
}

fn pairs(r: &mut Reader<'_>) -> Result<Vec<(String, String)>> {
    let n = r.count(PAIR_MIN_LEN)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let k = string(r)?;
        let v = string(r)?;
        out.push((k, v));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The manifest pinned by `testdata/manifest_v1_ok.txt`.
    pub(crate) fn sample() -> Manifest {
        Manifest {
            suite: SUITE_V1,
            dek_id: DekId([0x11; 16]),
            size: 5 * 1024 * 1024 + 7,
            last_modified_ms: 1_700_000_000_123,
            etag: "\"9b2cf535f27731c974343645a3985328-2\"".into(),
            content_type: Some("application/dicom".into()),
            headers: vec![
                ("cache-control".into(), "no-store".into()),
                (
                    "content-disposition".into(),
                    "attachment; filename=\"scan.dcm\"".into(),
                ),
            ],
            metadata: vec![("study".into(), "CT thorax – ünïcödé".into())],
            checksums: vec![("CRC32".into(), "AAAAAA==".into())],
            patient: Some("patient-0042".into()),
            parts: vec![
                Part {
                    blob: BlobId([0x22; 16]),
                    chunk_size: 1 << 20,
                    plaintext_len: 5 * 1024 * 1024,
                    root: [0x33; 32],
                },
                Part {
                    blob: BlobId([0x44; 16]),
                    chunk_size: 1 << 20,
                    plaintext_len: 7,
                    root: [0x55; 32],
                },
            ],
        }
    }

    fn arb_string() -> impl Strategy<Value = String> {
        proptest::string::string_regex("(.|\\n){0,12}").expect("valid regex")
    }

    fn arb_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec((arb_string(), arb_string()), 0..4)
    }

    prop_compose! {
        fn arb_part()(blob in any::<[u8; 16]>(), chunk_size in 1u32.., plaintext_len in 0u64..(1 << 40), root in any::<[u8; 32]>()) -> Part {
            Part { blob: BlobId(blob), chunk_size, plaintext_len, root }
        }
    }

    prop_compose! {
        fn arb_manifest()(
            dek in any::<[u8; 16]>(), lm in any::<u64>(), etag in arb_string(),
            content_type in proptest::option::of(arb_string()),
            headers in arb_pairs(), metadata in arb_pairs(), checksums in arb_pairs(),
            patient in proptest::option::of(arb_string()),
            parts in proptest::collection::vec(arb_part(), 0..5),
        ) -> Manifest {
            let size = parts.iter().map(|p| p.plaintext_len).sum();
            Manifest { suite: SUITE_V1, dek_id: DekId(dek), size, last_modified_ms: lm, etag, content_type, headers, metadata, checksums, patient, parts }
        }
    }

    proptest! {
        #[test]
        fn round_trip(m in arb_manifest()) {
            let bytes = m.encode();
            prop_assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        }

        #[test]
        fn every_truncation_fails(m in arb_manifest()) {
            let bytes = m.encode();
            for cut in 0..bytes.len() {
                prop_assert!(Manifest::decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Manifest::decode(&bytes);
            let mut v = vec![MANIFEST_V1, SUITE_V1];
            v.extend(bytes);
            let _ = Manifest::decode(&v);
        }
    }

    #[test]
    fn rejects_bad_inputs() {
        let good = sample().encode();
        let mut bad = good.clone();
        bad[0] = 2;
        assert_eq!(Manifest::decode(&bad), Err(Error::UnsupportedVersion(2)));
        let mut bad = good.clone();
        bad[1] = 9;
        assert_eq!(Manifest::decode(&bad), Err(Error::UnsupportedSuite(9)));
        let mut bad = good.clone();
        bad.push(0);
        assert!(matches!(Manifest::decode(&bad), Err(Error::Malformed(_))));
        assert!(matches!(Manifest::decode(&[]), Err(Error::Malformed(_))));

        // Invalid UTF-8 in the etag (first byte after its length prefix).
        let mut bad = good.clone();
        bad[38] = 0xff;
        assert_eq!(
            Manifest::decode(&bad),
            Err(Error::Malformed("manifest: invalid UTF-8"))
        );

        // A huge header count must be refused before allocating.
        let mut m = sample();
        m.headers.clear();
        m.metadata.clear();
        m.checksums.clear();
        let mut bytes = m.encode();
        let headers_at = 34 + 4 + m.etag.len() + 1 + 4 + "application/dicom".len();
        bytes[headers_at..headers_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            Manifest::decode(&bytes),
            Err(Error::Malformed("manifest: count exceeds input"))
        );

        let mut m = sample();
        m.size += 1;
        assert!(Manifest::decode(&m.encode()).is_err());
        let mut m = sample();
        m.parts[0].chunk_size = 0;
        assert!(Manifest::decode(&m.encode()).is_err());
        let mut m = sample();
        m.content_type = None;
        let mut bytes = m.encode();
        let flag_at = 34 + 4 + m.etag.len();
        bytes[flag_at] = 2;
        assert_eq!(
            Manifest::decode(&bytes),
            Err(Error::Malformed("manifest: bad option flag"))
        );
    }

    #[test]
    fn part_for_offset_walks_parts() {
        let mut m = sample();
        m.parts.insert(
            1,
            Part {
                blob: BlobId([0; 16]),
                chunk_size: 1,
                plaintext_len: 0,
                root: [0; 32],
            },
        );
        let first = 5 * 1024 * 1024;
        assert_eq!(m.part_for_offset(0), Some((0, 0)));
        assert_eq!(m.part_for_offset(first - 1), Some((0, first - 1)));
        assert_eq!(m.part_for_offset(first), Some((2, 0)));
        assert_eq!(m.part_for_offset(first + 6), Some((2, 6)));
        assert_eq!(m.part_for_offset(first + 7), None);
        assert_eq!(m.layout(2).chunk_count(), 1);
    }
}
