//! The `US` signing region, as S3 treats it: us-east-1.
//!
//! s3cmd's default configuration (`bucket_location = US`, S3's legacy name of us-east-1)
//! signs requests with the credential scope `DATE/US/s3/aws4_request`. s3s accepts only
//! region names of `[a-z0-9-]`, so such a request failed with `invalid region: "US"`.
//! Before s3s sees a header-signed request in region `US`, this checks its signature with
//! the access key's secret exactly as SigV4 defines it and, only when it matches, signs the
//! same canonical request again for `us-east-1` and puts that signature in place. Nothing
//! that does not carry a valid `US` signature is changed, so nothing is accepted that s3s
//! would refuse otherwise. Streaming (aws-chunked) uploads sign every chunk with a chain
//! that starts at the header's signature; s3cmd does not use them, and they are left as
//! they are.

use hmac::{Hmac, Mac};
use hyper::header::{HeaderValue, AUTHORIZATION};
use s3s::auth::S3Auth;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The region name S3 reads as us-east-1.
const LEGACY_US: &str = "US";

/// The parts of an `AWS4-HMAC-SHA256` Authorization header.
struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let mut scope = credential?.split('/');
    let auth = Authorization {
        access_key: scope.next()?,
        date: scope.next()?,
        region: scope.next()?,
        service: scope.next()?,
        signed_headers: signed_headers?,
        signature: signature?,
    };
    (scope.next() == Some("aws4_request") && scope.next().is_none()).then_some(auth)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// SigV4's URI encoding: every byte but the unreserved ones as `%XX`.
fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical request SigV4 signs, for a request whose body hash is in
/// `x-amz-content-sha256`. `None` when a signed header is missing.
fn canonical_request(parts: &hyper::http::request::Parts, signed_headers: &str) -> Option<String> {
    let mut out = String::with_capacity(512);
    out.push_str(parts.method.as_str());
    out.push('\n');
    out.push_str(parts.uri.path());
    out.push('\n');
    let mut query: Vec<(String, String)> = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k)),
                uri_encode(&percent_decode(v)),
            )
        })
        .collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    out.push_str(&query.join("&"));
    out.push('\n');
    for name in signed_headers.split(';') {
        let values: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if values.is_empty() {
            return None;
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(signed_headers);
    out.push('\n');
    out.push_str(parts.headers.get("x-amz-content-sha256")?.to_str().ok()?);
    Some(out)
}

fn signature(
    secret: &str,
    amz_date: &str,
    auth: &Authorization<'_>,
    region: &str,
    hashed: &str,
) -> String {
    let scope = format!("{}/{region}/{}/aws4_request", auth.date, auth.service);
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashed}");
    let mut key = zeroize::Zeroizing::new(format!("AWS4{secret}").into_bytes());
    let k_date = hmac_sha256(&key, auth.date.as_bytes());
    key.iter_mut().for_each(|b| *b = 0);
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, auth.service.as_bytes());
    let k_signing = hmac_sha256(&k_service, b"aws4_request");
    hex::encode(hmac_sha256(&k_signing, to_sign.as_bytes()))
}

/// Re-signs `parts` for us-east-1 when it carries a valid SigV4 header signature for the
/// region `US`; leaves every other request alone.
pub(crate) async fn legacy_us_as_us_east_1(
    parts: &mut hyper::http::request::Parts,
    auth: &dyn S3Auth,
) {
    let Some(value) = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    let Some(a) = parse_authorization(value) else {
        return;
    };
    if a.region != LEGACY_US {
        return;
    }
    let payload = parts
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if payload.is_empty() || payload.starts_with("STREAMING-") {
        return;
    }
    let Some(amz_date) = parts
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    let Some(canonical) = canonical_request(parts, a.signed_headers) else {
        return;
    };
    let Ok(secret) = auth.get_secret_key(a.access_key).await else {
        return;
    };
    let hashed = hex::encode(Sha256::digest(canonical.as_bytes()));
    let expected = signature(secret.expose(), amz_date, &a, LEGACY_US, &hashed);
    if !bool::from(expected.as_bytes().ct_eq(a.signature.as_bytes())) {
        return;
    }
    let resigned = signature(secret.expose(), amz_date, &a, "us-east-1", &hashed);
    let new = format!(
        "AWS4-HMAC-SHA256 Credential={}/{}/us-east-1/{}/aws4_request, SignedHeaders={}, Signature={resigned}",
        a.access_key, a.date, a.service, a.signed_headers
    );
    if let Ok(v) = HeaderValue::from_str(&new) {
        parts.headers.insert(AUTHORIZATION, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's own SigV4 example (GET Object, "Example: GET Object" in the S3 API reference's
    /// "Signature Calculations for the Authorization Header"), computed here for its region
    /// us-east-1: the signature the reference gives.
    #[test]
    fn aws_reference_get_object_signature() {
        let req = hyper::Request::builder()
            .method("GET")
            .uri("/test.txt")
            .header("host", "examplebucket.s3.amazonaws.com")
            .header("range", "bytes=0-9")
            .header(
                "x-amz-content-sha256",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            )
            .header("x-amz-date", "20130524T000000Z")
            .body(())
            .unwrap_or_else(|_| unreachable!());
        let (parts, ()) = req.into_parts();
        let auth = Authorization {
            access_key: "AKIAIOSFODNN7EXAMPLE",
            date: "20130524",
            region: "us-east-1",
            service: "s3",
            signed_headers: "host;range;x-amz-content-sha256;x-amz-date",
            signature: "",
        };
        let canonical = canonical_request(&parts, auth.signed_headers).unwrap_or_default();
        let hashed = hex::encode(Sha256::digest(canonical.as_bytes()));
        assert_eq!(
            signature(
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "20130524T000000Z",
                &auth,
                "us-east-1",
                &hashed
            ),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn authorization_header_parts() {
        let a = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AK/20261207/US/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc",
        );
        let a = a.unwrap_or_else(|| unreachable!("parses"));
        assert_eq!(
            (a.access_key, a.date, a.region, a.service),
            ("AK", "20261207", "US", "s3")
        );
        assert_eq!((a.signed_headers, a.signature), ("host;x-amz-date", "abc"));
        assert!(parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AK/2026/US/s3/x, SignedHeaders=h, Signature=s"
        )
        .is_none());
        assert!(parse_authorization("AWS AK:sig").is_none());
    }

    #[test]
    fn query_is_decoded_then_encoded_and_sorted() {
        assert_eq!(uri_encode("a b/c~"), "a%20b%2Fc~");
        assert_eq!(percent_decode("a%20b%2f"), "a b/");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
