//! Listings of the S3 front: ListObjectsV2, ListObjects, ListObjectVersions, their pages,
//! continuation tokens and key encoding.

use super::*;

/// One page of a key listing, shared by ListObjects, ListObjectsV2 and
/// ListObjectVersions.
/// One key of a listing: from this gateway's own records or from a peer's share.
pub(super) struct Listed {
    pub(super) key: String,
    pub(super) size: u64,
    pub(super) etag: String,
    pub(super) last_modified_ms: u64,
}

impl From<ListedObject> for Listed {
    fn from(o: ListedObject) -> Self {
        Listed {
            key: o.key,
            size: o.manifest.size,
            etag: o.manifest.etag,
            last_modified_ms: o.manifest.last_modified_ms,
        }
    }
}

pub(super) struct ListPage {
    pub(super) objects: Vec<Listed>,
    pub(super) prefixes: Vec<String>,
    pub(super) truncated: bool,
    /// Where the next page starts (exclusive): the last key, or past the last common
    /// prefix.
    pub(super) resume_after: String,
    pub(super) max_keys: usize,
}

impl ListPage {
    fn objects(&self, enc: impl Fn(String) -> String) -> Vec<Object> {
        self.objects
            .iter()
            .map(|o| Object {
                key: Some(enc(o.key.clone())),
                size: Some(i64::try_from(o.size).unwrap_or(i64::MAX)),
                e_tag: Some(etag(&o.etag)),
                last_modified: Some(timestamp(o.last_modified_ms)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect()
    }

    fn common_prefixes(&self, enc: impl Fn(String) -> String) -> Vec<CommonPrefix> {
        self.prefixes
            .iter()
            .map(|p| CommonPrefix {
                prefix: Some(enc(p.clone())),
            })
            .collect()
    }
}

/// `encoding-type=url` turns every name in a listing into its %-escaped form.
pub(super) fn encoder(encoding: &Option<EncodingType>) -> impl Fn(String) -> String + Copy {
    let url = encoding
        .as_ref()
        .is_some_and(|e| e.as_str() == EncodingType::URL);
    move |s: String| if url { url_encode(&s) } else { s }
}

/// S3's `encoding-type=url`: every byte outside the unreserved set is %XX-escaped
/// (the aws CLI and boto3 always ask for it and decode what they get).
pub(super) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn encode_token(after: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(after.as_bytes())
}

pub(super) fn decode_token(token: &str) -> S3Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "The continuation token provided is incorrect"
            )
        })
}

pub(super) async fn list_objects_v2(
    front: &Front,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let input = req.input;
    let after = match (&input.continuation_token, &input.start_after) {
        (Some(t), _) => decode_token(t)?,
        (None, Some(s)) => s.clone(),
        (None, None) => String::new(),
    };
    let page = front
        .list_page(
            &input.bucket,
            &input.prefix,
            &input.delimiter,
            after,
            input.max_keys,
        )
        .await?;
    let enc = encoder(&input.encoding_type);
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: input.prefix.map(enc),
        delimiter: input.delimiter.map(enc),
        max_keys: Some(page.max_keys as i32),
        key_count: Some((page.objects.len() + page.prefixes.len()) as i32),
        continuation_token: input.continuation_token,
        start_after: input.start_after.map(enc),
        is_truncated: Some(page.truncated),
        next_continuation_token: page.truncated.then(|| encode_token(&page.resume_after)),
        contents: Some(page.objects(enc)),
        common_prefixes: Some(page.common_prefixes(enc)),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

pub(super) async fn list_objects(
    front: &Front,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let input = req.input;
    let after = input.marker.clone().unwrap_or_default();
    let page = front
        .list_page(
            &input.bucket,
            &input.prefix,
            &input.delimiter,
            after,
            input.max_keys,
        )
        .await?;
    let enc = encoder(&input.encoding_type);
    // S3 returns NextMarker only with a delimiter; clients otherwise resume after the
    // last key. Ours is the exact resume point (past a whole common prefix).
    let next_marker =
        (page.truncated && input.delimiter.is_some()).then(|| enc(page.resume_after.clone()));
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(input.bucket),
        prefix: input.prefix.map(enc),
        delimiter: input.delimiter.map(enc),
        marker: input.marker.map(enc),
        max_keys: Some(page.max_keys as i32),
        is_truncated: Some(page.truncated),
        next_marker,
        contents: Some(page.objects(enc)),
        common_prefixes: Some(page.common_prefixes(enc)),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

/// This gateway keeps one version per key; tools that always list versions get each
/// object once, with version id `null`.
pub(super) async fn list_object_versions(
    front: &Front,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let input = req.input;
    let after = input.key_marker.clone().unwrap_or_default();
    let page = front
        .list_page(
            &input.bucket,
            &input.prefix,
            &input.delimiter,
            after,
            input.max_keys,
        )
        .await?;
    let enc = encoder(&input.encoding_type);
    let versions = page
        .objects
        .iter()
        .map(|o| ObjectVersion {
            key: Some(enc(o.key.clone())),
            version_id: Some("null".into()),
            is_latest: Some(true),
            size: Some(i64::try_from(o.size).unwrap_or(i64::MAX)),
            e_tag: Some(etag(&o.etag)),
            last_modified: Some(timestamp(o.last_modified_ms)),
            storage_class: Some(ObjectVersionStorageClass::from_static(
                ObjectVersionStorageClass::STANDARD,
            )),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListObjectVersionsOutput {
        name: Some(input.bucket),
        prefix: input.prefix.map(enc),
        delimiter: input.delimiter.map(enc),
        key_marker: input.key_marker.map(enc),
        max_keys: Some(page.max_keys as i32),
        is_truncated: Some(page.truncated),
        next_key_marker: page.truncated.then(|| enc(page.resume_after.clone())),
        next_version_id_marker: page.truncated.then(|| "null".to_string()),
        versions: Some(versions),
        common_prefixes: Some(page.common_prefixes(enc)),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}
