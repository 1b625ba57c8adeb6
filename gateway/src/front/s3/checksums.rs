//! S3 "additional checksums" on the wire: which a request asks for (headers, trailers) and
//! the stored values a GET or HEAD shows; the algorithms themselves are in
//! `crate::engine::checksum`.

use super::*;

pub(super) const CHECKSUM_ALGORITHMS: [&str; 5] =
    ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"];

/// The aws-chunked trailers of a streaming body, as the engine reads them.
#[derive(Debug)]
pub(super) struct S3Trailers(s3s::TrailingHeaders);

impl Trailers for S3Trailers {
    fn checksums(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.0.read(|headers| {
            for (name, value) in headers {
                let Some(algo) = name.as_str().strip_prefix("x-amz-checksum-") else {
                    continue;
                };
                if let Ok(v) = value.to_str() {
                    out.push((algo.to_ascii_uppercase(), v.to_string()));
                }
            }
        });
        out
    }
}

/// The additional checksums a write asks for: values in `x-amz-checksum-*` headers,
/// the algorithm named by `x-amz-sdk-checksum-algorithm`, and the ones announced in
/// `x-amz-trailer` (their values arrive after an aws-chunked body).
pub(super) fn checksum_check(
    headers: &hyper::HeaderMap,
    trailers: Option<s3s::TrailingHeaders>,
    algorithm: Option<&ChecksumAlgorithm>,
    values: [&Option<String>; 5],
) -> ChecksumCheck {
    let mut check = ChecksumCheck {
        trailers: trailers.map(|t| Arc::new(S3Trailers(t)) as Arc<dyn Trailers>),
        ..Default::default()
    };
    for (name, value) in CHECKSUM_ALGORITHMS.iter().zip(values) {
        if let Some(v) = value {
            check.algorithms.push(name.to_string());
            check.expected.push((name.to_string(), v.clone()));
        }
    }
    if let Some(a) = algorithm {
        check.algorithms.push(a.as_str().to_ascii_uppercase());
    }
    for t in headers.get_all("x-amz-trailer") {
        for name in t.to_str().unwrap_or_default().split(',') {
            if let Some(a) = name.trim().strip_prefix("x-amz-checksum-") {
                check.algorithms.push(a.to_ascii_uppercase());
            }
        }
    }
    check.algorithms.sort();
    check.algorithms.dedup();
    check
}

/// A stored checksum, for a GET or HEAD of the whole object with
/// `x-amz-checksum-mode: ENABLED`.
pub(super) fn stored_checksum(m: &keyring::Manifest, enabled: bool, algo: &str) -> Option<String> {
    if !enabled {
        return None;
    }
    m.checksums
        .iter()
        .find(|(a, _)| a == algo)
        .map(|(_, v)| v.clone())
}

/// The `x-amz-checksum-type` of a stored checksum: composite values end in `-N`.
pub(super) fn stored_checksum_type(m: &keyring::Manifest, enabled: bool) -> Option<ChecksumType> {
    if !enabled {
        return None;
    }
    m.checksums
        .first()
        .map(|(_, v)| ChecksumType::from_static(crate::engine::checksum::Kind::of_value(v).name()))
}

/// An s3s output struct with its five `checksum_*` fields filled from `value(algorithm)`
/// (for example `|a| stored_checksum(&m, sums, a)`) and the other fields as written:
/// `with_checksums!(HeadObjectOutput { e_tag: ..., ..Default::default() }, value)`.
macro_rules! with_checksums {
    ($ty:ident { $($fields:tt)* }, $value:expr) => {{
        let value = $value;
        $ty {
            checksum_crc32: value("CRC32"),
            checksum_crc32c: value("CRC32C"),
            checksum_sha1: value("SHA1"),
            checksum_sha256: value("SHA256"),
            checksum_crc64nvme: value("CRC64NVME"),
            $($fields)*
        }
    }};
}
pub(super) use with_checksums;

pub(super) fn part_checksum(sums: &[(String, String)], algo: &str) -> Option<String> {
    sums.iter().find(|(a, _)| a == algo).map(|(_, v)| v.clone())
}

/// (algorithm, value) pairs from the five checksum fields of an S3 input, in
/// [`CHECKSUM_ALGORITHMS`] order.
pub(super) fn named_checksums(values: [&Option<String>; 5]) -> Vec<(String, String)> {
    CHECKSUM_ALGORITHMS
        .iter()
        .zip(values)
        .filter_map(|(name, v)| v.as_ref().map(|v| (name.to_string(), v.clone())))
        .collect()
}

pub(super) fn checksum_mode_enabled(mode: &Option<ChecksumMode>) -> bool {
    mode.as_ref()
        .is_some_and(|c| c.as_str() == ChecksumMode::ENABLED)
}
