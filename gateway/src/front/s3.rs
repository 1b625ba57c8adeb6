//! The S3 front: s3s operations mapped onto the record engine.
//!
//! Handlers destructure and validate their input, call the engine, and build the output.
//! Every engine error becomes an S3 error in [`to_s3_error`], the one place where
//! failures get wire codes. Operations not implemented here answer `NotImplemented`
//! (s3s's default for every `S3` method).

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};

use crate::engine::record::{ChecksumCheck, ChosenPart, Engine, PartRequest, PutRequest};
use crate::engine::{ListedObject, Precondition};
use crate::Error;

pub use crate::engine::ACCESS_KEY_VAULT;

/// Maps an engine error to the S3 error a client sees. Internal failures are logged with
/// their cause and answered with a generic message.
pub fn to_s3_error(e: Error) -> S3Error {
    use S3ErrorCode as C;
    let (code, msg): (S3ErrorCode, String) = match &e {
        Error::NoSuchBucket(_) => (C::NoSuchBucket, e.to_string()),
        Error::BucketExists(_) => (C::BucketAlreadyOwnedByYou, e.to_string()),
        Error::BucketNotEmpty(_) => (C::BucketNotEmpty, e.to_string()),
        Error::NoSuchKey { .. } => (C::NoSuchKey, "The specified key does not exist.".into()),
        Error::BadDigest | Error::ChecksumMismatch(_) => (C::BadDigest, e.to_string()),
        Error::IncompleteBody { .. } => (C::IncompleteBody, e.to_string()),
        Error::InvalidRange { .. } => (C::InvalidRange, e.to_string()),
        Error::PreconditionFailed => (C::PreconditionFailed, e.to_string()),
        Error::NoSuchUpload(_) => (C::NoSuchUpload, e.to_string()),
        Error::InvalidPart(_) => (C::InvalidPart, e.to_string()),
        Error::InvalidPartOrder => (C::InvalidPartOrder, e.to_string()),
        Error::EntityTooSmall { .. } => (C::EntityTooSmall, e.to_string()),
        Error::InvalidArgument(_) | Error::NotFound(_) => (C::InvalidArgument, e.to_string()),
        Error::NoSuchAccessKey(_) => (C::InvalidAccessKeyId, e.to_string()),
        Error::UnknownPatient(_) => (C::InvalidArgument, e.to_string()),
        Error::GrantRefused(_) | Error::Unauthorized(_) => (C::AccessDenied, e.to_string()),
        Error::Peer(_) => {
            tracing::warn!(error = %e, "peer gateway failure");
            (C::ServiceUnavailable, e.to_string())
        }
        Error::Reaped => (C::ServiceUnavailable, e.to_string()),
        Error::Busy(_) => (C::SlowDown, e.to_string()),
        Error::Body(_) => (
            C::IncompleteBody,
            "the request body could not be read".into(),
        ),
        Error::Public(p) if crate::engine::throttled(p) => {
            tracing::warn!(error = %e, "public store throttled");
            (C::SlowDown, "the storage backend asks to slow down".into())
        }
        Error::Public(_) => {
            tracing::warn!(error = %e, "public store failure");
            (
                C::ServiceUnavailable,
                "the storage backend is unavailable".into(),
            )
        }
        Error::Integrity { .. } | Error::NoStanza(_) => {
            tracing::warn!(error = %e, "integrity failure");
            (
                C::InternalError,
                "stored data failed its integrity check".into(),
            )
        }
        _ => {
            tracing::warn!(error = %e, "internal error");
            (C::InternalError, "internal error".into())
        }
    };
    S3Error::with_message(code, msg)
}

fn timestamp(ms: u64) -> Timestamp {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map(Timestamp::from)
        .unwrap_or_default()
}

/// Who a read is logged as: the access key that signed it.
fn reader(credentials: &Option<s3s::auth::Credentials>) -> String {
    credentials
        .as_ref()
        .map_or_else(|| "anonymous".into(), |c| c.access_key.clone())
}

fn etag(quoted: &str) -> ETag {
    ETag::Strong(quoted.trim_matches('"').to_string())
}

fn header<'a>(m: &'a keyring::Manifest, name: &str) -> Option<String> {
    m.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v): &'a (String, String)| v.clone())
}

fn metadata(m: &keyring::Manifest) -> Option<Metadata> {
    if m.metadata.is_empty() {
        return None;
    }
    Some(m.metadata.iter().cloned().collect::<HashMap<_, _>>())
}

/// The S3 service.
#[derive(Clone)]
pub struct Front {
    engine: Arc<Engine>,
}

impl Front {
    pub fn new(engine: Arc<Engine>) -> Self {
        Front { engine }
    }
}

#[async_trait::async_trait]
impl S3 for Front {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let allowed = match &req.credentials {
            Some(c) => self
                .engine
                .private
                .access_key(&c.access_key)
                .await
                .map_err(to_s3_error)?
                .map(|r| r.buckets)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let mut listed: Vec<(String, u64)> = self
            .engine
            .private
            .list_buckets()
            .await
            .map_err(to_s3_error)?
            .into_iter()
            .map(|b| (b.name, b.created_ms))
            .collect();
        // Buckets mounted from peers are buckets to clients too (PACS and GUI clients
        // browse ListBuckets to find them).
        if let Some(remote) = self.engine.remote.get() {
            listed.extend(
                remote
                    .mounts()
                    .into_iter()
                    .map(|m| (m.bucket, m.created_ms)),
            );
        }
        listed.sort();
        let buckets = listed
            .into_iter()
            .filter(|(name, _)| allowed.is_empty() || allowed.contains(name))
            .map(|(name, created_ms)| Bucket {
                name: Some(name),
                creation_date: Some(timestamp(created_ms)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner()),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let name = req.input.bucket;
        if self.engine.mount(&name).is_some() {
            return Err(to_s3_error(Error::BucketExists(name)));
        }
        self.engine
            .private
            .create_bucket(&name, crate::now_ms())
            .await
            .map_err(to_s3_error)?;
        self.engine.private.flush().await.map_err(to_s3_error)?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{name}")),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.engine
            .private
            .delete_bucket(&req.input.bucket)
            .await
            .map_err(to_s3_error)?;
        self.engine.private.flush().await.map_err(to_s3_error)?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        self.refuse_mounted(&input.bucket)?;
        refuse_grants([
            &input.grant_full_control,
            &input.grant_read,
            &input.grant_read_acp,
            &input.grant_write_acp,
        ])?;
        let content_md5 = parse_md5(input.content_md5.as_deref())?;
        let precondition = write_precondition(&input.if_none_match, &input.if_match)?;
        let put = PutRequest {
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
        let labelled = self
            .engine
            .labelled_patient(&put.bucket, &put.key, &put.metadata)
            .map_err(to_s3_error)?
            .is_some();
        self.require_label_right(&req.credentials, labelled).await?;
        let manifest = match input.body {
            Some(body) => self.engine.put(put, body).await,
            None => {
                let empty = futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>();
                self.engine.put(put, empty).await
            }
        }
        .map_err(to_s3_error)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&manifest.etag)),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let actor = reader(&req.credentials);
        let input = req.input;
        let (m, shared) = self.read_target(&input.bucket, &input.key).await?;
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
                self.engine
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
        self.engine
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
        Ok(S3Response::new(GetObjectOutput {
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
            checksum_crc32: stored_checksum(&m, sums, "CRC32"),
            checksum_crc32c: stored_checksum(&m, sums, "CRC32C"),
            checksum_sha1: stored_checksum(&m, sums, "SHA1"),
            checksum_sha256: stored_checksum(&m, sums, "SHA256"),
            checksum_crc64nvme: stored_checksum(&m, sums, "CRC64NVME"),
            checksum_type: stored_checksum_type(&m, sums),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let actor = reader(&req.credentials);
        let input = req.input;
        let (m, _) = self.read_target(&input.bucket, &input.key).await?;
        check_read_conditions(
            &m,
            &input.if_match,
            &input.if_none_match,
            &input.if_modified_since,
            &input.if_unmodified_since,
        )?;
        self.engine
            .log_read(&input.bucket, &input.key, &m, &actor, "HEAD".into())
            .await
            .map_err(to_s3_error)?;
        let sums = checksum_mode_enabled(&input.checksum_mode);
        Ok(S3Response::new(HeadObjectOutput {
            checksum_crc32: stored_checksum(&m, sums, "CRC32"),
            checksum_crc32c: stored_checksum(&m, sums, "CRC32C"),
            checksum_sha1: stored_checksum(&m, sums, "SHA1"),
            checksum_sha256: stored_checksum(&m, sums, "SHA256"),
            checksum_crc64nvme: stored_checksum(&m, sums, "CRC64NVME"),
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
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.refuse_mounted(&input.bucket)?;
        self.engine
            .delete(&input.bucket, &input.key)
            .await
            .map_err(to_s3_error)?;
        self.engine.private.flush().await.map_err(to_s3_error)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        self.refuse_mounted(&input.bucket)?;
        refuse_grants([
            &input.grant_full_control,
            &input.grant_read,
            &input.grant_read_acp,
            &input.grant_write_acp,
        ])?;
        let bucket = input.bucket.clone();
        let key = input.key.clone();
        let metadata = sorted_metadata(input.metadata);
        let labelled = self
            .engine
            .labelled_patient(&bucket, &key, &metadata)
            .map_err(to_s3_error)?
            .is_some();
        self.require_label_right(&req.credentials, labelled).await?;
        let id = self
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
        let upload = self
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

    async fn upload_part(
        &self,
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
            Some(body) => self.engine.upload_part(part, body).await,
            None => {
                let empty = futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>();
                self.engine.upload_part(part, empty).await
            }
        }
        .map_err(to_s3_error)?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag(&etag_value)),
            checksum_crc32: part_checksum(&sums, "CRC32"),
            checksum_crc32c: part_checksum(&sums, "CRC32C"),
            checksum_sha1: part_checksum(&sums, "SHA1"),
            checksum_sha256: part_checksum(&sums, "SHA256"),
            checksum_crc64nvme: part_checksum(&sums, "CRC64NVME"),
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        let number = part_number(input.part_number)?;
        let (src_bucket, src_key) = copy_source(&input.copy_source)?;
        let src = self
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
        self.engine
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
        let body = self
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
        let (tag, sums) = self
            .engine
            .upload_part(part, body)
            .await
            .map_err(to_s3_error)?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(etag(&tag)),
                checksum_crc32: part_checksum(&sums, "CRC32"),
                checksum_crc32c: part_checksum(&sums, "CRC32C"),
                checksum_sha1: part_checksum(&sums, "SHA1"),
                checksum_sha256: part_checksum(&sums, "SHA256"),
                checksum_crc64nvme: part_checksum(&sums, "CRC64NVME"),
                last_modified: Some(timestamp(crate::now_ms())),
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
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
        let m = self
            .engine
            .complete_upload(
                &input.upload_id,
                &input.bucket,
                &input.key,
                &chosen,
                &sent,
                precondition,
            )
            .await
            .map_err(to_s3_error)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(etag(&m.etag)),
            checksum_crc32: stored_checksum(&m, true, "CRC32"),
            checksum_crc32c: stored_checksum(&m, true, "CRC32C"),
            checksum_sha1: stored_checksum(&m, true, "SHA1"),
            checksum_sha256: stored_checksum(&m, true, "SHA256"),
            checksum_crc64nvme: stored_checksum(&m, true, "CRC64NVME"),
            checksum_type: stored_checksum_type(&m, true),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.engine
            .abort_upload(&input.upload_id, &input.bucket, &input.key)
            .await
            .map_err(to_s3_error)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        self.engine
            .upload(&input.upload_id, &input.bucket, &input.key)
            .await
            .map_err(to_s3_error)?;
        let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let marker = input.part_number_marker.unwrap_or(0);
        let all = self
            .engine
            .private
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
                    .map(|(n, p)| Part {
                        checksum_crc32: part_checksum(&p.checksums, "CRC32"),
                        checksum_crc32c: part_checksum(&p.checksums, "CRC32C"),
                        checksum_sha1: part_checksum(&p.checksums, "SHA1"),
                        checksum_sha256: part_checksum(&p.checksums, "SHA256"),
                        checksum_crc64nvme: part_checksum(&p.checksums, "CRC64NVME"),
                        part_number: Some(n as i32),
                        e_tag: Some(ETag::Strong(p.md5)),
                        size: Some(i64::try_from(p.plaintext_len).unwrap_or(i64::MAX)),
                        last_modified: Some(timestamp(p.created_ms)),
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let uploads = self
            .engine
            .private
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

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        self.refuse_mounted(&input.bucket)?;
        refuse_grants([
            &input.grant_full_control,
            &input.grant_read,
            &input.grant_read_acp,
            &input.grant_write_acp,
        ])?;
        let (src_bucket, src_key) = copy_source(&input.copy_source)?;
        let src = self
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
        let mapped = self
            .engine
            .labelled_patient(&input.bucket, &input.key, &[])
            .map_err(to_s3_error)?
            .is_some();
        self.require_label_right(&req.credentials, src.patient.is_some() || named || mapped)
            .await?;
        let m = self
            .engine
            .copy(&src, &input.bucket, &input.key, replace)
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

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        self.refuse_mounted(&input.bucket)?;
        if input.delete.objects.len() > 1000 {
            return Err(s3_error!(
                MalformedXML,
                "DeleteObjects takes at most 1000 keys"
            ));
        }
        self.require_bucket(&input.bucket).await?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for obj in input.delete.objects {
            match self.engine.delete(&input.bucket, &obj.key).await {
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
        self.engine.private.flush().await.map_err(to_s3_error)?;
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let after = match (&input.continuation_token, &input.start_after) {
            (Some(t), _) => decode_token(t)?,
            (None, Some(s)) => s.clone(),
            (None, None) => String::new(),
        };
        let page = self
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

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let after = input.marker.clone().unwrap_or_default();
        let page = self
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
    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let input = req.input;
        let after = input.key_marker.clone().unwrap_or_default();
        let page = self
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

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }

    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketAclOutput {
            grants: Some(owner_full_control()),
            owner: Some(owner()),
        }))
    }

    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        self.engine
            .manifest(&req.input.bucket, &req.input.key)
            .await
            .map_err(to_s3_error)?;
        Ok(S3Response::new(GetObjectAclOutput {
            grants: Some(owner_full_control()),
            owner: Some(owner()),
            ..Default::default()
        }))
    }
}

/// The single owner every bucket and object has: the institution running the gateway.
fn owner() -> Owner {
    Owner {
        display_name: Some("medgate".into()),
        id: Some("medgate".into()),
    }
}

fn owner_full_control() -> Vec<Grant> {
    vec![Grant {
        grantee: Some(Grantee {
            display_name: Some("medgate".into()),
            id: Some("medgate".into()),
            type_: Type::from_static(Type::CANONICAL_USER),
            email_address: None,
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    }]
}

/// One page of a key listing, shared by ListObjects, ListObjectsV2 and
/// ListObjectVersions.
/// One key of a listing: from this gateway's own records or from a peer's share.
struct Listed {
    key: String,
    size: u64,
    etag: String,
    last_modified_ms: u64,
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

struct ListPage {
    objects: Vec<Listed>,
    prefixes: Vec<String>,
    truncated: bool,
    /// Where the next page starts (exclusive): the last key, or past the last common
    /// prefix.
    resume_after: String,
    max_keys: usize,
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
fn encoder(encoding: &Option<EncodingType>) -> impl Fn(String) -> String + Copy {
    let url = encoding
        .as_ref()
        .is_some_and(|e| e.as_str() == EncodingType::URL);
    move |s: String| if url { url_encode(&s) } else { s }
}

/// A read of a mounted bucket: the peer link, the mount and the read session.
type SharedRead = (
    Arc<crate::engine::remote::Remote>,
    crate::engine::MountRecord,
    Arc<crate::engine::remote::Session>,
);

impl Front {
    /// The manifest of `bucket/key`: this gateway's own, or, for a bucket mounted from a
    /// peer, the one the peer hands out for the read session.
    async fn read_target(
        &self,
        bucket: &str,
        key: &str,
    ) -> S3Result<(keyring::Manifest, Option<SharedRead>)> {
        match self.engine.mount(bucket) {
            Some((remote, mount)) => {
                let session = remote.session(&mount, key).await.map_err(to_s3_error)?;
                Ok((session.manifest.clone(), Some((remote, mount, session))))
            }
            None => Ok((
                self.engine
                    .manifest(bucket, key)
                    .await
                    .map_err(to_s3_error)?,
                None,
            )),
        }
    }

    /// Writes to a bucket mounted from a peer are refused: it shows another institution's
    /// records, read-only.
    fn refuse_mounted(&self, bucket: &str) -> S3Result<()> {
        match self.engine.mount(bucket) {
            Some((_, mount)) => Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                format!(
                    "bucket {bucket} shows records shared by peer {}; it is read-only",
                    mount.peer
                ),
            )),
            None => Ok(()),
        }
    }

    /// Refuses a write that labels its record with a patient (`labelled`) unless the
    /// caller's access key was created with `--label-patients`: labelling adds the record
    /// to the patient's index and to their grants for future records.
    async fn require_label_right(
        &self,
        credentials: &Option<s3s::auth::Credentials>,
        labelled: bool,
    ) -> S3Result<()> {
        if !labelled {
            return Ok(());
        }
        let Some(cred) = credentials else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        let record = self
            .engine
            .private
            .access_key(&cred.access_key)
            .await
            .map_err(to_s3_error)?
            .ok_or_else(|| s3_error!(InvalidAccessKeyId))?;
        if record.label_patients {
            Ok(())
        } else {
            Err(s3_error!(
                AccessDenied,
                "access key {} may not label records with a patient (x-amz-meta-medgate-patient, a [[patient_prefixes]] prefix, or a copy of a patient's record); use a key created with `medgate access-key create --label-patients`",
                cred.access_key
            ))
        }
    }

    async fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        match self.engine.private.bucket(bucket).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(to_s3_error(Error::NoSuchBucket(bucket.to_string()))),
            Err(e) => Err(to_s3_error(e)),
        }
    }

    /// Keys of `bucket` under `prefix` strictly after `after`, rolled up at `delimiter`
    /// into common prefixes, at most `max_keys` entries (keys plus prefixes).
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &Option<String>,
        delimiter: &Option<String>,
        mut after: String,
        max_keys: Option<i32>,
    ) -> S3Result<ListPage> {
        // A mounted bucket lists what the peer's grant covers, fetched once per page.
        let shared = match self.engine.mount(bucket) {
            Some((remote, mount)) => Some(remote.list(&mount).await.map_err(to_s3_error)?),
            None => {
                self.require_bucket(bucket).await?;
                None
            }
        };
        let prefix = prefix.clone().unwrap_or_default();
        let delimiter = delimiter.clone().filter(|d| !d.is_empty());
        let max_keys = max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let mut page = ListPage {
            objects: Vec::new(),
            prefixes: Vec::new(),
            truncated: false,
            resume_after: String::new(),
            max_keys,
        };
        'scan: loop {
            let batch: Vec<Listed> = match &shared {
                Some(all) => all
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix) && k.as_str() > after.as_str())
                    .take(1000)
                    .map(|(k, o)| Listed {
                        key: k.clone(),
                        size: o.size,
                        etag: o.etag.clone(),
                        last_modified_ms: o.last_modified_ms,
                    })
                    .collect(),
                None => self
                    .engine
                    .private
                    .list_objects(bucket, &prefix, &after, 1000)
                    .await
                    .map_err(to_s3_error)?
                    .into_iter()
                    .map(Listed::from)
                    .collect(),
            };
            if batch.is_empty() {
                break;
            }
            for obj in batch {
                after.clone_from(&obj.key);
                let group = delimiter.as_ref().and_then(|d| {
                    obj.key[prefix.len()..]
                        .find(d.as_str())
                        .map(|pos| obj.key[..prefix.len() + pos + d.len()].to_string())
                });
                if let Some(cp) = &group {
                    if page.prefixes.last() == Some(cp) {
                        continue;
                    }
                }
                if page.objects.len() + page.prefixes.len() >= max_keys {
                    page.truncated = true;
                    break 'scan;
                }
                match group {
                    Some(cp) => {
                        // Skip every other key under this common prefix.
                        after = format!("{cp}\u{10FFFF}");
                        page.resume_after.clone_from(&after);
                        page.prefixes.push(cp);
                        continue 'scan;
                    }
                    None => {
                        page.resume_after.clone_from(&obj.key);
                        page.objects.push(obj);
                    }
                }
            }
        }
        Ok(page)
    }
}

/// S3's `encoding-type=url`: every byte outside the unreserved set is %XX-escaped
/// (the aws CLI and boto3 always ask for it and decode what they get).
fn url_encode(s: &str) -> String {
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

const CHECKSUM_ALGORITHMS: [&str; 5] = ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"];

/// The additional checksums a write asks for: values in `x-amz-checksum-*` headers,
/// the algorithm named by `x-amz-sdk-checksum-algorithm`, and the ones announced in
/// `x-amz-trailer` (their values arrive after an aws-chunked body).
fn checksum_check(
    headers: &hyper::HeaderMap,
    trailers: Option<s3s::TrailingHeaders>,
    algorithm: Option<&ChecksumAlgorithm>,
    values: [&Option<String>; 5],
) -> ChecksumCheck {
    let mut check = ChecksumCheck {
        trailers,
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
fn stored_checksum(m: &keyring::Manifest, enabled: bool, algo: &str) -> Option<String> {
    if !enabled {
        return None;
    }
    m.checksums
        .iter()
        .find(|(a, _)| a == algo)
        .map(|(_, v)| v.clone())
}

/// The `x-amz-checksum-type` of a stored checksum: composite values end in `-N`.
fn stored_checksum_type(m: &keyring::Manifest, enabled: bool) -> Option<ChecksumType> {
    if !enabled {
        return None;
    }
    m.checksums
        .first()
        .map(|(_, v)| ChecksumType::from_static(crate::engine::checksum::Kind::of_value(v).name()))
}

fn part_checksum(sums: &[(String, String)], algo: &str) -> Option<String> {
    sums.iter().find(|(a, _)| a == algo).map(|(_, v)| v.clone())
}

/// (algorithm, value) pairs from the five checksum fields of an S3 input, in
/// [`CHECKSUM_ALGORITHMS`] order.
fn named_checksums(values: [&Option<String>; 5]) -> Vec<(String, String)> {
    CHECKSUM_ALGORITHMS
        .iter()
        .zip(values)
        .filter_map(|(name, v)| v.as_ref().map(|v| (name.to_string(), v.clone())))
        .collect()
}

fn checksum_mode_enabled(mode: &Option<ChecksumMode>) -> bool {
    mode.as_ref()
        .is_some_and(|c| c.as_str() == ChecksumMode::ENABLED)
}

fn parse_md5(header: Option<&str>) -> S3Result<Option<[u8; 16]>> {
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
fn stored_headers(
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

fn sorted_metadata(meta: Option<Metadata>) -> Vec<(String, String)> {
    let mut meta: Vec<(String, String)> = meta.unwrap_or_default().into_iter().collect();
    meta.sort();
    meta
}

/// ACL grants name other AWS accounts; this gateway has none to enforce them for, so it
/// refuses them rather than ignore them silently.
fn refuse_grants(grants: [&Option<String>; 4]) -> S3Result<()> {
    if grants.iter().any(|g| g.is_some()) {
        return Err(s3_error!(
            NotImplemented,
            "ACL grants cannot be enforced by this gateway"
        ));
    }
    Ok(())
}

fn write_precondition(
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
fn copy_source(src: &CopySource) -> S3Result<(String, String)> {
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
fn check_read_conditions(
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
fn check_copy_conditions(
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

fn etag_matches(cond: &ETagCondition, quoted: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(t) => t.value() == quoted.trim_matches('"'),
    }
}

fn part_number(n: i32) -> S3Result<u32> {
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

fn encode_token(after: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(after.as_bytes())
}

fn decode_token(token: &str) -> S3Result<String> {
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

/// Looks up S3 secret keys in the private store and opens them with the vault key.
pub struct KeyAuth {
    engine: Arc<Engine>,
}

impl KeyAuth {
    pub fn new(engine: Arc<Engine>) -> Self {
        KeyAuth { engine }
    }
}

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        let record = self
            .engine
            .private
            .access_key(access_key)
            .await
            .map_err(to_s3_error)?
            .ok_or_else(|| {
                s3_error!(
                    InvalidAccessKeyId,
                    "The AWS Access Key Id you provided does not exist in our records."
                )
            })?;
        let vault = self.engine.institution().vault_key(ACCESS_KEY_VAULT);
        let secret = vault
            .open(record.id.as_bytes(), &record.sealed_secret)
            .map_err(|_| {
                tracing::warn!(
                    access_key,
                    "access key secret does not open under this identity"
                );
                s3_error!(InternalError, "access key store is damaged")
            })?;
        // No copy outlives this call: `secret` is wiped on drop, and s3s's `SecretKey`
        // (a copy of exactly its length) wipes itself on drop too.
        let text = std::str::from_utf8(&secret)
            .map_err(|_| s3_error!(InternalError, "access key store is damaged"))?;
        Ok(SecretKey::from(text))
    }
}

/// Per-key bucket restrictions.
pub struct KeyAccess {
    engine: Arc<Engine>,
}

impl KeyAccess {
    pub fn new(engine: Arc<Engine>) -> Self {
        KeyAccess { engine }
    }

    async fn check_source(
        &self,
        credentials: Option<&s3s::auth::Credentials>,
        source: &CopySource,
    ) -> S3Result<()> {
        let Some(cred) = credentials else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        let record = self.record(&cred.access_key).await?;
        let (src_bucket, _) = copy_source(source)?;
        if record.buckets.is_empty() || record.buckets.contains(&src_bucket) {
            Ok(())
        } else {
            Err(s3_error!(
                AccessDenied,
                "this access key may not read the copy source bucket"
            ))
        }
    }

    async fn record(&self, access_key: &str) -> S3Result<crate::engine::AccessKeyRecord> {
        self.engine
            .private
            .access_key(access_key)
            .await
            .map_err(to_s3_error)?
            .ok_or_else(|| s3_error!(InvalidAccessKeyId))
    }
}

#[async_trait::async_trait]
impl S3Access for KeyAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        // The first place s3s names the operation: tell the server's metrics.
        let op = cx.s3_op().name().to_string();
        if let Some(slot) = cx.extensions_mut().get::<crate::metrics::OperationSlot>() {
            slot.set(&op);
        }
        let Some(cred) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        let record = self.record(&cred.access_key).await?;
        if record.buckets.is_empty() {
            return Ok(());
        }
        match cx.s3_path().get_bucket_name() {
            None => Ok(()),
            Some(b) if record.buckets.iter().any(|x| x == b) => Ok(()),
            Some(_) => Err(s3_error!(
                AccessDenied,
                "this access key may not use that bucket"
            )),
        }
    }

    /// A copy reads another bucket: a key limited to named buckets must be allowed
    /// there too.
    async fn copy_object(&self, req: &mut S3Request<CopyObjectInput>) -> S3Result<()> {
        self.check_source(req.credentials.as_ref(), &req.input.copy_source)
            .await
    }

    async fn upload_part_copy(&self, req: &mut S3Request<UploadPartCopyInput>) -> S3Result<()> {
        self.check_source(req.credentials.as_ref(), &req.input.copy_source)
            .await
    }
}
