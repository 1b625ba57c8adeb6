//! Multipart uploads in the S3 front: create, upload a part (or copy one), complete, abort,
//! list parts and uploads.

use super::*;

pub(super) fn part_number(n: i32) -> S3Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            )
        })
}

pub(super) async fn create_multipart_upload(
    front: &Front,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let input = req.input;
    front.refuse_mounted(&input.bucket)?;
    refuse_grants([
        &input.grant_full_control,
        &input.grant_read,
        &input.grant_read_acp,
        &input.grant_write_acp,
    ])?;
    let bucket = input.bucket.clone();
    let key = input.key.clone();
    let metadata = sorted_metadata(input.metadata);
    let labelled = front
        .engine
        .labelled_patient(&bucket, &key, &metadata)
        .map_err(to_s3_error)?
        .is_some();
    front
        .require_label_right(&req.credentials, labelled)
        .await?;
    let id = front
        .engine
        .create_upload(PutRequest {
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
            metadata,
            bucket: input.bucket,
            key: input.key,
            content_type: input.content_type,
            checksums: ChecksumCheck {
                algorithms: input
                    .checksum_algorithm
                    .iter()
                    .map(|a| a.as_str().to_ascii_uppercase())
                    .collect(),
                ..Default::default()
            },
            checksum_type: input.checksum_type.as_ref().map(|t| t.as_str().to_string()),
            ..Default::default()
        })
        .await
        .map_err(to_s3_error)?;
    let upload = front
        .engine
        .upload(&id, &bucket, &key)
        .await
        .map_err(to_s3_error)?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(bucket),
        key: Some(key),
        upload_id: Some(id),
        checksum_algorithm: upload.checksum_algorithm.map(ChecksumAlgorithm::from),
        checksum_type: upload.checksum_type.map(ChecksumType::from),
        ..Default::default()
    }))
}

pub(super) async fn upload_part(
    front: &Front,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let input = req.input;
    let number = part_number(input.part_number)?;
    let md5 = parse_md5(input.content_md5.as_deref())?;
    let len = input.content_length.and_then(|n| u64::try_from(n).ok());
    let part = PartRequest {
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
        upload_id: input.upload_id,
        bucket: input.bucket,
        key: input.key,
        number,
        content_length: len,
        content_md5: md5,
    };
    let (etag_value, sums) = match input.body {
        Some(body) => front.engine.upload_part(part, body).await,
        None => {
            let empty = futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>();
            front.engine.upload_part(part, empty).await
        }
    }
    .map_err(to_s3_error)?;
    Ok(S3Response::new(with_checksums!(
        UploadPartOutput {
            e_tag: Some(etag(&etag_value)),
            ..Default::default()
        },
        |a| part_checksum(&sums, a)
    )))
}

pub(super) async fn upload_part_copy(
    front: &Front,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let input = req.input;
    let number = part_number(input.part_number)?;
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
    front
        .engine
        .check_part_copy(&src, &input.upload_id, &input.bucket, &input.key)
        .await
        .map_err(to_s3_error)?;
    // The part is re-sealed under the upload's DEK: the source's plaintext range is
    // streamed through the reader into a new part blob.
    let range = match &input.copy_source_range {
        Some(r) => {
            let parsed = Range::parse(r).map_err(|_| {
                s3_error!(
                    InvalidArgument,
                    "x-amz-copy-source-range must be bytes=first-last"
                )
            })?;
            match parsed {
                Range::Int {
                    first,
                    last: Some(last),
                } if last < src.size => first..last + 1,
                _ => return Err(to_s3_error(Error::InvalidRange { size: src.size })),
            }
        }
        None => 0..src.size,
    };
    let body = front
        .engine
        .open(&src, range.start, range.end)
        .await
        .map_err(to_s3_error)?;
    let part = PartRequest {
        upload_id: input.upload_id,
        bucket: input.bucket,
        key: input.key,
        number,
        content_length: Some(range.end - range.start),
        ..Default::default()
    };
    let (tag, sums) = front
        .engine
        .upload_part(part, body)
        .await
        .map_err(to_s3_error)?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(with_checksums!(
            CopyPartResult {
                e_tag: Some(etag(&tag)),
                last_modified: Some(timestamp(crate::now_ms())),
            },
            |a| part_checksum(&sums, a)
        )),
        ..Default::default()
    }))
}

pub(super) async fn complete_multipart_upload(
    front: &Front,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let input = req.input;
    let precondition = write_precondition(&input.if_none_match, &input.if_match)?;
    let mut chosen = Vec::new();
    for p in input
        .multipart_upload
        .and_then(|m| m.parts)
        .unwrap_or_default()
    {
        let number = part_number(p.part_number.unwrap_or(0))?;
        let tag = p.e_tag.map(|t| t.into_value()).unwrap_or_default();
        chosen.push(ChosenPart {
            number,
            etag: tag,
            checksums: named_checksums([
                &p.checksum_crc32,
                &p.checksum_crc32c,
                &p.checksum_sha1,
                &p.checksum_sha256,
                &p.checksum_crc64nvme,
            ]),
        });
    }
    let sent = named_checksums([
        &input.checksum_crc32,
        &input.checksum_crc32c,
        &input.checksum_sha1,
        &input.checksum_sha256,
        &input.checksum_crc64nvme,
    ]);
    let m = front
        .engine
        .complete_upload(
            &input.upload_id,
            &input.bucket,
            &input.key,
            Completion {
                parts: &chosen,
                object_checksums: &sent,
                precondition,
                actor: &access_key_of(&req.credentials),
            },
        )
        .await
        .map_err(to_s3_error)?;
    Ok(S3Response::new(with_checksums!(
        CompleteMultipartUploadOutput {
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(etag(&m.etag)),
            checksum_type: stored_checksum_type(&m, true),
            ..Default::default()
        },
        |a| stored_checksum(&m, true, a)
    )))
}

pub(super) async fn abort_multipart_upload(
    front: &Front,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let input = req.input;
    front
        .engine
        .abort_upload(&input.upload_id, &input.bucket, &input.key)
        .await
        .map_err(to_s3_error)?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub(super) async fn list_parts(
    front: &Front,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let input = req.input;
    front
        .engine
        .upload(&input.upload_id, &input.bucket, &input.key)
        .await
        .map_err(to_s3_error)?;
    let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
    let marker = input.part_number_marker.unwrap_or(0);
    let all = front
        .engine
        .parts(&input.upload_id)
        .await
        .map_err(to_s3_error)?;
    let after: Vec<_> = all
        .into_iter()
        .filter(|(n, _)| i64::from(*n) > i64::from(marker))
        .collect();
    let truncated = after.len() > max;
    let page: Vec<_> = after.into_iter().take(max).collect();
    let next = page.last().map(|(n, _)| *n as i32);
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(input.upload_id),
        max_parts: Some(max as i32),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: if truncated { next } else { None },
        is_truncated: Some(truncated),
        parts: Some(
            page.into_iter()
                .map(|(n, p)| {
                    with_checksums!(
                        Part {
                            part_number: Some(n as i32),
                            e_tag: Some(ETag::Strong(p.md5)),
                            size: Some(i64::try_from(p.plaintext_len).unwrap_or(i64::MAX)),
                            last_modified: Some(timestamp(p.created_ms)),
                        },
                        |a| part_checksum(&p.checksums, a)
                    )
                })
                .collect(),
        ),
        ..Default::default()
    }))
}

pub(super) async fn list_multipart_uploads(
    front: &Front,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let input = req.input;
    front.require_bucket(&input.bucket).await?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let uploads = front
        .engine
        .list_uploads(&input.bucket)
        .await
        .map_err(to_s3_error)?
        .into_iter()
        .filter(|(_, u)| u.key.starts_with(&prefix))
        .map(|(id, u)| MultipartUpload {
            key: Some(u.key),
            upload_id: Some(id),
            initiated: Some(timestamp(u.created_ms)),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: input.prefix,
        uploads: Some(uploads),
        is_truncated: Some(false),
        ..Default::default()
    }))
}
