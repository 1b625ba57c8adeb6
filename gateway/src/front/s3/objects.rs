//! Object operations of the S3 front: PUT, GET, HEAD, DELETE (one and many), CopyObject,
//! the object ACL, and the request parsing they share (Content-MD5, preconditions, stored
//! headers, conditional reads and copies).

use super::*;

pub(super) fn parse_md5(header: Option<&str>) -> S3Result<Option<[u8; 16]>> {
    let Some(s) = header else { return Ok(None) };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not valid base64"))?;
    let md5 = <[u8; 16]>::try_from(raw.as_slice())
        .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not 16 bytes"))?;
    Ok(Some(md5))
}

/// The system headers a manifest keeps, in a fixed order. The canned ACL and the
/// tagging header are kept as sent (ACL reads answer the owner's FULL_CONTROL: there is
/// no other account to grant to).
pub(super) fn stored_headers(
    values: [&Option<String>; 4],
    acl: Option<&str>,
    tagging: Option<&str>,
) -> Vec<(String, String)> {
    const NAMES: [&str; 4] = [
        "cache-control",
        "content-disposition",
        "content-encoding",
        "content-language",
    ];
    let mut out: Vec<(String, String)> = NAMES
        .iter()
        .zip(values)
        .filter_map(|(n, v)| v.as_ref().map(|v| (n.to_string(), v.clone())))
        .collect();
    if let Some(a) = acl {
        out.push(("x-amz-acl".into(), a.to_string()));
    }
    if let Some(t) = tagging {
        out.push(("x-amz-tagging".into(), t.to_string()));
    }
    out
}

pub(super) fn sorted_metadata(meta: Option<Metadata>) -> Vec<(String, String)> {
    let mut meta: Vec<(String, String)> = meta.unwrap_or_default().into_iter().collect();
    meta.sort();
    meta
}

/// ACL grants name other AWS accounts; this gateway has none to enforce them for, so it
/// refuses them rather than ignore them silently.
pub(super) fn refuse_grants(grants: [&Option<String>; 4]) -> S3Result<()> {
    if grants.iter().any(|g| g.is_some()) {
        return Err(s3_error!(
            NotImplemented,
            "ACL grants cannot be enforced by this gateway"
        ));
    }
    Ok(())
}

pub(super) fn write_precondition(
    if_none_match: &Option<ETagCondition>,
    if_match: &Option<ETagCondition>,
) -> S3Result<Precondition> {
    Ok(match (if_none_match, if_match) {
        (Some(c), _) if c.is_any() => Precondition::Absent,
        (Some(_), _) => {
            return Err(s3_error!(
                NotImplemented,
                "If-None-Match on writes supports only '*'"
            ))
        }
        (None, Some(c)) => match c.as_etag() {
            Some(t) => Precondition::ETag(format!("\"{}\"", t.value())),
            None => Precondition::None,
        },
        (None, None) => Precondition::None,
    })
}

/// The bucket and key a copy reads from.
pub(super) fn copy_source(src: &CopySource) -> S3Result<(String, String)> {
    match src {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => {
            if version_id.as_deref().is_some_and(|v| v != "null") {
                return Err(s3_error!(
                    NoSuchVersion,
                    "this gateway keeps one version per key (version id null)"
                ));
            }
            Ok((bucket.to_string(), key.to_string()))
        }
        _ => Err(s3_error!(
            NotImplemented,
            "copy sources other than bucket/key are not supported"
        )),
    }
}

/// GET and HEAD preconditions, in RFC 9110 §13.2.2 order: If-Match, else
/// If-Unmodified-Since (412 when false); then If-None-Match, else If-Modified-Since (304
/// when false). HTTP dates have whole seconds, so times compare at that precision.
pub(super) fn check_read_conditions(
    m: &keyring::Manifest,
    if_match: &Option<ETagCondition>,
    if_none_match: &Option<ETagCondition>,
    if_modified_since: &Option<Timestamp>,
    if_unmodified_since: &Option<Timestamp>,
) -> S3Result<()> {
    let modified = i64::try_from(m.last_modified_ms / 1000).unwrap_or(i64::MAX);
    let secs = |t: &Timestamp| time::OffsetDateTime::from(t.clone()).unix_timestamp();
    match (if_match, if_unmodified_since) {
        (Some(c), _) if !etag_matches(c, &m.etag) => {
            return Err(to_s3_error(Error::PreconditionFailed))
        }
        (None, Some(t)) if modified > secs(t) => {
            return Err(to_s3_error(Error::PreconditionFailed))
        }
        _ => {}
    }
    let not_modified = match (if_none_match, if_modified_since) {
        (Some(c), _) => etag_matches(c, &m.etag),
        (None, Some(t)) => modified <= secs(t),
        (None, None) => false,
    };
    if not_modified {
        return Err(S3Error::new(S3ErrorCode::NotModified));
    }
    Ok(())
}

/// `x-amz-copy-source-if-*`: every failing condition is a 412 (S3 does not answer 304
/// for copies). Times compare at whole seconds, as HTTP dates carry.
pub(super) fn check_copy_conditions(
    src: &keyring::Manifest,
    if_match: &Option<ETagCondition>,
    if_none_match: &Option<ETagCondition>,
    if_modified_since: &Option<Timestamp>,
    if_unmodified_since: &Option<Timestamp>,
) -> S3Result<()> {
    let modified = i64::try_from(src.last_modified_ms / 1000).unwrap_or(i64::MAX);
    let secs = |t: &Timestamp| time::OffsetDateTime::from(t.clone()).unix_timestamp();
    let failed = if_match
        .as_ref()
        .is_some_and(|c| !etag_matches(c, &src.etag))
        || if_none_match
            .as_ref()
            .is_some_and(|c| etag_matches(c, &src.etag))
        || if_modified_since
            .as_ref()
            .is_some_and(|t| modified <= secs(t))
        || if_unmodified_since
            .as_ref()
            .is_some_and(|t| modified > secs(t));
    if failed {
        return Err(to_s3_error(Error::PreconditionFailed));
    }
    Ok(())
}

pub(super) fn etag_matches(cond: &ETagCondition, quoted: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(t) => t.value() == quoted.trim_matches('"'),
    }
}

pub(super) async fn put_object(
    front: &Front,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let input = req.input;
    front.refuse_mounted(&input.bucket)?;
    refuse_grants([
        &input.grant_full_control,
        &input.grant_read,
        &input.grant_read_acp,
        &input.grant_write_acp,
    ])?;
    let content_md5 = parse_md5(input.content_md5.as_deref())?;
    let precondition = write_precondition(&input.if_none_match, &input.if_match)?;
    let put = PutRequest {
        actor: access_key_of(&req.credentials),
        checksums: checksum_check(
            &req.headers,
            req.trailing_headers.clone(),
            input.checksum_algorithm.as_ref(),
            [
                &input.checksum_crc32,
                &input.checksum_crc32c,
                &input.checksum_sha1,
                &input.checksum_sha256,
                &input.checksum_crc64nvme,
            ],
        ),
        headers: stored_headers(
            [
                &input.cache_control,
                &input.content_disposition,
                &input.content_encoding,
                &input.content_language,
            ],
            input.acl.as_ref().map(|a| a.as_str()),
            input.tagging.as_deref(),
        ),
        metadata: sorted_metadata(input.metadata),
        bucket: input.bucket,
        key: input.key,
        content_type: input.content_type,
        content_md5,
        content_length: input.content_length.and_then(|n| u64::try_from(n).ok()),
        precondition,
        checksum_type: None,
    };
    let labelled = front
        .engine
        .labelled_patient(&put.bucket, &put.key, &put.metadata)
        .map_err(to_s3_error)?
        .is_some();
    front
        .require_label_right(&req.credentials, labelled)
        .await?;
    let manifest = match input.body {
        Some(body) => front.engine.put(put, body).await,
        None => {
            let empty = futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>();
            front.engine.put(put, empty).await
        }
    }
    .map_err(to_s3_error)?;
    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(etag(&manifest.etag)),
        ..Default::default()
    }))
}

pub(super) async fn get_object(
    front: &Front,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let actor = access_key_of(&req.credentials);
    let input = req.input;
    let (m, shared) = front.read_target(&input.bucket, &input.key).await?;
    check_read_conditions(
        &m,
        &input.if_match,
        &input.if_none_match,
        &input.if_modified_since,
        &input.if_unmodified_since,
    )?;
    let (range, content_range) = match input.range {
        Some(r) => {
            let r = r
                .check(m.size)
                .map_err(|_| to_s3_error(Error::InvalidRange { size: m.size }))?;
            let cr = format!("bytes {}-{}/{}", r.start, r.end - 1, m.size);
            (r, Some(cr))
        }
        None => (0..m.size, None),
    };
    let body = match shared {
        None => StreamingBlob::wrap(
            front
                .engine
                .open(&m, range.start, range.end)
                .await
                .map_err(to_s3_error)?,
        ),
        Some((remote, mount, session)) => {
            match remote.open(session, range.start, range.end).await {
                Ok(stream) => StreamingBlob::wrap(stream),
                Err(e) => {
                    remote.forget(&mount, &input.key);
                    return Err(to_s3_error(e));
                }
            }
        }
    };
    // Logged (and durable) before any header goes out.
    front
        .engine
        .log_read(
            &input.bucket,
            &input.key,
            &m,
            &actor,
            format!("GET bytes {}..{} of {}", range.start, range.end, m.size),
        )
        .await
        .map_err(to_s3_error)?;
    let len = range.end - range.start;
    // Whole-object checksums describe whole objects only.
    let sums = content_range.is_none() && checksum_mode_enabled(&input.checksum_mode);
    Ok(S3Response::new(with_checksums!(
        GetObjectOutput {
            body: Some(body),
            content_length: Some(i64::try_from(len).unwrap_or(i64::MAX)),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&m.etag)),
            last_modified: Some(timestamp(m.last_modified_ms)),
            content_type: input
                .response_content_type
                .or_else(|| m.content_type.clone()),
            cache_control: input
                .response_cache_control
                .or_else(|| header(&m, "cache-control")),
            content_disposition: input
                .response_content_disposition
                .or_else(|| header(&m, "content-disposition")),
            content_encoding: input
                .response_content_encoding
                .or_else(|| header(&m, "content-encoding")),
            content_language: input
                .response_content_language
                .or_else(|| header(&m, "content-language")),
            metadata: metadata(&m),
            checksum_type: stored_checksum_type(&m, sums),
            ..Default::default()
        },
        |a| stored_checksum(&m, sums, a)
    )))
}

pub(super) async fn head_object(
    front: &Front,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let actor = access_key_of(&req.credentials);
    let input = req.input;
    let (m, _) = front.read_target(&input.bucket, &input.key).await?;
    check_read_conditions(
        &m,
        &input.if_match,
        &input.if_none_match,
        &input.if_modified_since,
        &input.if_unmodified_since,
    )?;
    front
        .engine
        .log_read(&input.bucket, &input.key, &m, &actor, "HEAD".into())
        .await
        .map_err(to_s3_error)?;
    let sums = checksum_mode_enabled(&input.checksum_mode);
    Ok(S3Response::new(with_checksums!(
        HeadObjectOutput {
            checksum_type: stored_checksum_type(&m, sums),
            content_length: Some(i64::try_from(m.size).unwrap_or(i64::MAX)),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&m.etag)),
            last_modified: Some(timestamp(m.last_modified_ms)),
            content_type: m.content_type.clone(),
            cache_control: header(&m, "cache-control"),
            content_disposition: header(&m, "content-disposition"),
            content_encoding: header(&m, "content-encoding"),
            content_language: header(&m, "content-language"),
            metadata: metadata(&m),
            ..Default::default()
        },
        |a| stored_checksum(&m, sums, a)
    )))
}

pub(super) async fn delete_object(
    front: &Front,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let input = req.input;
    front.refuse_mounted(&input.bucket)?;
    front
        .engine
        .delete(&input.bucket, &input.key, &access_key_of(&req.credentials))
        .await
        .map_err(to_s3_error)?;
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

pub(super) async fn copy_object(
    front: &Front,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let input = req.input;
    front.refuse_mounted(&input.bucket)?;
    refuse_grants([
        &input.grant_full_control,
        &input.grant_read,
        &input.grant_read_acp,
        &input.grant_write_acp,
    ])?;
    let (src_bucket, src_key) = copy_source(&input.copy_source)?;
    let src = front
        .engine
        .manifest(&src_bucket, &src_key)
        .await
        .map_err(to_s3_error)?;
    check_copy_conditions(
        &src,
        &input.copy_source_if_match,
        &input.copy_source_if_none_match,
        &input.copy_source_if_modified_since,
        &input.copy_source_if_unmodified_since,
    )?;
    let replace = match input.metadata_directive.as_ref().map(|d| d.as_str()) {
        Some(MetadataDirective::REPLACE) => Some(PutRequest {
            headers: stored_headers(
                [
                    &input.cache_control,
                    &input.content_disposition,
                    &input.content_encoding,
                    &input.content_language,
                ],
                input.acl.as_ref().map(|a| a.as_str()),
                input.tagging.as_deref(),
            ),
            metadata: sorted_metadata(input.metadata),
            content_type: input.content_type,
            ..Default::default()
        }),
        Some(MetadataDirective::COPY) | None => {
            if src_bucket == input.bucket && src_key == input.key {
                return Err(s3_error!(
                    InvalidRequest,
                    "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata."
                ));
            }
            None
        }
        Some(other) => {
            return Err(s3_error!(
                InvalidArgument,
                "Unknown metadata directive {other:?}"
            ))
        }
    };
    // The copy is its source's patient's record, or would name one: labelling.
    let named = replace.as_ref().is_some_and(|r| {
        r.metadata
            .iter()
            .any(|(k, _)| k == crate::engine::sharing::PATIENT_META)
    });
    let mapped = front
        .engine
        .labelled_patient(&input.bucket, &input.key, &[])
        .map_err(to_s3_error)?
        .is_some();
    front
        .require_label_right(&req.credentials, src.patient.is_some() || named || mapped)
        .await?;
    let m = front
        .engine
        .copy(
            &src,
            &input.bucket,
            &input.key,
            replace,
            &access_key_of(&req.credentials),
        )
        .await
        .map_err(to_s3_error)?;
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(etag(&m.etag)),
            last_modified: Some(timestamp(m.last_modified_ms)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

pub(super) async fn delete_objects(
    front: &Front,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let input = req.input;
    front.refuse_mounted(&input.bucket)?;
    if input.delete.objects.len() > 1000 {
        return Err(s3_error!(
            MalformedXML,
            "DeleteObjects takes at most 1000 keys"
        ));
    }
    front.require_bucket(&input.bucket).await?;
    let quiet = input.delete.quiet.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    let keys: Vec<String> = input.delete.objects.iter().map(|o| o.key.clone()).collect();
    let results = front
        .engine
        .delete_many(&input.bucket, &keys, &access_key_of(&req.credentials))
        .await
        .map_err(to_s3_error)?;
    for (obj, result) in input.delete.objects.into_iter().zip(results) {
        match result {
            Ok(_) => {
                if !quiet {
                    deleted.push(DeletedObject {
                        key: Some(obj.key),
                        ..Default::default()
                    });
                }
            }
            Err(e) => {
                let err = to_s3_error(e);
                errors.push(s3s::dto::Error {
                    code: Some(err.code().as_str().to_string()),
                    key: Some(obj.key),
                    message: err.message().map(str::to_string),
                    version_id: None,
                });
            }
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        ..Default::default()
    }))
}

pub(super) async fn get_object_acl(
    front: &Front,
    req: S3Request<GetObjectAclInput>,
) -> S3Result<S3Response<GetObjectAclOutput>> {
    front
        .engine
        .manifest(&req.input.bucket, &req.input.key)
        .await
        .map_err(to_s3_error)?;
    Ok(S3Response::new(GetObjectAclOutput {
        grants: Some(owner_full_control()),
        owner: Some(owner()),
        ..Default::default()
    }))
}
