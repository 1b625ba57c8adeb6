//! Object-level checksums of multipart uploads, from the parts' checksums.
//!
//! S3 knows two ways to turn per-part "additional checksums" into one for the object:
//!
//! - **COMPOSITE** (every algorithm): the checksum of the concatenated raw part checksums,
//!   written `base64(H(c1 ‖ c2 ‖ … ‖ cN))-N`. It is what the aws CLI and boto3 get when they
//!   upload with their default CRC32.
//! - **FULL_OBJECT** (CRC32, CRC32C, CRC64NVME only): the CRC of the whole object, which is
//!   what a single PUT would have given. CRCs of consecutive pieces combine without the data
//!   ([`crc_combine`]), so the gateway never re-reads a part to compute it.
//!
//! Everything here works on the checksums' base64 text as S3 sends it.

use base64::Engine as _;
use s3s::crypto::{Checksum, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};

use crate::error::{Error, Result};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A checksum algorithm of S3's, by its upper-case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl Algorithm {
    /// Parses an upper- or lower-case name (`CRC32`, `crc64nvme`, ...).
    pub fn parse(name: &str) -> Option<Algorithm> {
        match name.to_ascii_uppercase().as_str() {
            "CRC32" => Some(Algorithm::Crc32),
            "CRC32C" => Some(Algorithm::Crc32c),
            "CRC64NVME" => Some(Algorithm::Crc64Nvme),
            "SHA1" => Some(Algorithm::Sha1),
            "SHA256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    /// The upper-case name S3 uses.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    /// The reflected polynomial and width of a CRC; `None` for the hashes.
    fn crc(self) -> Option<(u64, u32)> {
        match self {
            Algorithm::Crc32 => Some((0xEDB8_8320, 32)),
            Algorithm::Crc32c => Some((0x82F6_3B78, 32)),
            Algorithm::Crc64Nvme => Some((0x9A6C_9329_AC4B_C9B5, 64)),
            Algorithm::Sha1 | Algorithm::Sha256 => None,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Algorithm::Crc32 => Crc32::checksum(data).to_vec(),
            Algorithm::Crc32c => Crc32c::checksum(data).to_vec(),
            Algorithm::Crc64Nvme => Crc64Nvme::checksum(data).to_vec(),
            Algorithm::Sha1 => Sha1::checksum(data).as_ref().to_vec(),
            Algorithm::Sha256 => Sha256::checksum(data).as_ref().to_vec(),
        }
    }

    fn raw_len(self) -> usize {
        match self {
            Algorithm::Crc32 | Algorithm::Crc32c => 4,
            Algorithm::Crc64Nvme => 8,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
        }
    }
}

/// How part checksums make the object's (S3's `x-amz-checksum-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Composite,
    FullObject,
}

impl Kind {
    /// Parses `COMPOSITE` / `FULL_OBJECT`.
    pub fn parse(name: &str) -> Option<Kind> {
        match name.to_ascii_uppercase().as_str() {
            "COMPOSITE" => Some(Kind::Composite),
            "FULL_OBJECT" => Some(Kind::FullObject),
            _ => None,
        }
    }

    /// The name S3 uses.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Composite => "COMPOSITE",
            Kind::FullObject => "FULL_OBJECT",
        }
    }

    /// The kind of a stored object checksum: composite values end in `-N`.
    pub fn of_value(value: &str) -> Kind {
        if value.contains('-') {
            Kind::Composite
        } else {
            Kind::FullObject
        }
    }
}

/// Checks that `algo` may be combined as `kind` (S3 allows FULL_OBJECT for CRCs only).
///
/// # Errors
/// `InvalidArgument` naming the pair.
pub fn check_kind(algo: Algorithm, kind: Kind) -> Result<()> {
    if kind == Kind::FullObject && algo.crc().is_none() {
        return Err(Error::InvalidArgument(format!(
            "checksum type FULL_OBJECT is not supported for {}; use COMPOSITE",
            algo.name()
        )));
    }
    Ok(())
}

fn decode(algo: Algorithm, value: &str) -> Result<Vec<u8>> {
    match B64.decode(value) {
        Ok(raw) if raw.len() == algo.raw_len() => Ok(raw),
        _ => Err(Error::InvalidArgument(format!(
            "x-amz-checksum-{} is not a base64 {}-byte value",
            algo.name().to_ascii_lowercase(),
            algo.raw_len()
        ))),
    }
}

/// The object's checksum from its parts' checksums (base64) and plaintext lengths.
///
/// # Errors
/// `InvalidArgument` for a malformed part checksum or a FULL_OBJECT hash.
pub fn multipart(algo: Algorithm, kind: Kind, parts: &[(&str, u64)]) -> Result<String> {
    check_kind(algo, kind)?;
    match kind {
        Kind::Composite => {
            let mut cat = Vec::with_capacity(parts.len() * algo.raw_len());
            for (value, _) in parts {
                cat.extend(decode(algo, value)?);
            }
            Ok(format!("{}-{}", B64.encode(algo.digest(&cat)), parts.len()))
        }
        Kind::FullObject => {
            let (poly, width) = algo
                .crc()
                .ok_or_else(|| Error::Internal("checked above".into()))?;
            let mut acc: Option<u64> = None;
            for (value, len) in parts {
                let crc = be_u64(&decode(algo, value)?);
                acc = Some(match acc {
                    None => crc,
                    Some(prev) => crc_combine(prev, crc, *len, poly, width),
                });
            }
            let crc = match acc {
                Some(c) => c,
                None => be_u64(&algo.digest(&[])),
            };
            let bytes = crc.to_be_bytes();
            Ok(B64.encode(&bytes[8 - algo.raw_len()..]))
        }
    }
}

fn be_u64(raw: &[u8]) -> u64 {
    raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// CRC of `A ‖ B` from `crc(A)`, `crc(B)` and `len(B)` in bytes, for a reflected CRC with
/// all-ones initial value and final xor (CRC32, CRC32C and CRC64NVME all are). This is
/// zlib's `crc32_combine`, generalised to any width up to 64: it applies `8·len2` zero bits
/// to `crc1` by repeated squaring of the one-zero-bit operator, so the cost is
/// O(width² · log len2), independent of the data.
pub fn crc_combine(crc1: u64, crc2: u64, len2: u64, poly: u64, width: u32) -> u64 {
    if len2 == 0 {
        return crc1;
    }
    let w = width as usize;
    // odd: the operator for one zero bit.
    let mut odd = [0u64; 64];
    odd[0] = poly;
    let mut row = 1u64;
    for slot in odd.iter_mut().take(w).skip(1) {
        *slot = row;
        row <<= 1;
    }
    let mut even = [0u64; 64];
    square(&mut even, &odd, w); // two zero bits
    square(&mut odd, &even, w); // four zero bits
    let mut crc1 = crc1;
    let mut len2 = len2;
    loop {
        // Apply len2's bits one by one, starting with one zero byte (eight bits).
        square(&mut even, &odd, w);
        if len2 & 1 == 1 {
            crc1 = times(&even, crc1);
        }
        len2 >>= 1;
        if len2 == 0 {
            break;
        }
        square(&mut odd, &even, w);
        if len2 & 1 == 1 {
            crc1 = times(&odd, crc1);
        }
        len2 >>= 1;
        if len2 == 0 {
            break;
        }
    }
    crc1 ^ crc2
}

fn times(mat: &[u64; 64], mut vec: u64) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while vec != 0 {
        if vec & 1 == 1 {
            sum ^= mat[i];
        }
        vec >>= 1;
        i += 1;
    }
    sum
}

fn square(out: &mut [u64; 64], mat: &[u64; 64], width: usize) {
    for n in 0..width {
        out[n] = times(mat, mat[n]);
    }
}

/// The running hasher of a write's additional checksums (s3s's implementations of the
/// algorithms; the engine names no other s3s type).
pub type Hasher = s3s::checksum::ChecksumHasher;

/// A hasher of every algorithm in `algorithms` (upper-case names; unknown ones skipped), or
/// none for none.
pub fn hasher(algorithms: &[String]) -> Option<Hasher> {
    if algorithms.is_empty() {
        return None;
    }
    let mut h = s3s::checksum::ChecksumHasher::default();
    for a in algorithms {
        match a.as_str() {
            "CRC32" => h.crc32 = Some(Crc32::default()),
            "CRC32C" => h.crc32c = Some(Crc32c::default()),
            "SHA1" => h.sha1 = Some(Sha1::default()),
            "SHA256" => h.sha256 = Some(Sha256::default()),
            "CRC64NVME" => h.crc64nvme = Some(Crc64Nvme::default()),
            _ => {}
        }
    }
    Some(h)
}

/// The (algorithm, base64) pairs a hasher computed over the whole body.
pub fn finish(h: Hasher) -> Vec<(String, String)> {
    computed_checksums(h.finalize())
}

/// The checksums a hasher computed, as (algorithm, base64) pairs.
fn computed_checksums(c: s3s::dto::Checksum) -> Vec<(String, String)> {
    [
        ("CRC32", c.checksum_crc32),
        ("CRC32C", c.checksum_crc32c),
        ("SHA1", c.checksum_sha1),
        ("SHA256", c.checksum_sha256),
        ("CRC64NVME", c.checksum_crc64nvme),
    ]
    .into_iter()
    .filter_map(|(a, v)| v.map(|v| (a.to_string(), v)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b64(algo: Algorithm, data: &[u8]) -> String {
        B64.encode(algo.digest(data))
    }

    const CRCS: [Algorithm; 3] = [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Crc64Nvme];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Combining the parts' CRCs gives the CRC of the whole, for every CRC S3 knows.
        #[test]
        fn full_object_equals_crc_of_the_whole(
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..6)
        ) {
            let whole: Vec<u8> = pieces.concat();
            for algo in CRCS {
                let sums: Vec<String> = pieces.iter().map(|p| b64(algo, p)).collect();
                let parts: Vec<(&str, u64)> = sums
                    .iter()
                    .zip(&pieces)
                    .map(|(s, p)| (s.as_str(), p.len() as u64))
                    .collect();
                let got = multipart(algo, Kind::FullObject, &parts).unwrap();
                prop_assert_eq!(got, b64(algo, &whole), "{}", algo.name());
            }
        }
    }

    #[test]
    fn composite_is_hash_of_concatenated_part_checksums() {
        let a = vec![1u8; 100];
        let b = vec![2u8; 7];
        for algo in [Algorithm::Crc32, Algorithm::Sha256, Algorithm::Sha1] {
            let (sa, sb) = (b64(algo, &a), b64(algo, &b));
            let mut cat = algo.digest(&a);
            cat.extend(algo.digest(&b));
            let want = format!("{}-2", B64.encode(algo.digest(&cat)));
            let got = multipart(algo, Kind::Composite, &[(&sa, 100), (&sb, 7)]).unwrap();
            assert_eq!(got, want);
        }
    }

    /// A value computed by AWS's documentation example shape: CRC32 of "hello world" parts.
    #[test]
    fn crc32_combine_matches_known_value() {
        // crc32("hello world") = 0x0d4a1185, a well-known value.
        let parts = [
            (b64(Algorithm::Crc32, b"hello "), 6u64),
            (b64(Algorithm::Crc32, b"world"), 5u64),
        ];
        let refs: Vec<(&str, u64)> = parts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        let got = multipart(Algorithm::Crc32, Kind::FullObject, &refs).unwrap();
        assert_eq!(got, B64.encode(0x0d4a_1185u32.to_be_bytes()));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(multipart(Algorithm::Crc32, Kind::Composite, &[("not base64!", 1)]).is_err());
        assert!(multipart(Algorithm::Crc32, Kind::Composite, &[("AAAAAAAA", 1)]).is_err());
        assert!(multipart(Algorithm::Sha256, Kind::FullObject, &[]).is_err());
    }
}
