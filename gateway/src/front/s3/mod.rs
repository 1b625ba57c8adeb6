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

use crate::engine::record::{
    ChecksumCheck, ChosenPart, Completion, Engine, PartRequest, PutRequest, Trailers,
};
use crate::engine::{ListedObject, Precondition};
use crate::Error;

mod auth;
mod buckets;
mod checksums;
mod errors;
mod listing;
mod multipart;
mod objects;

pub use auth::{KeyAccess, KeyAuth};
use checksums::*;
pub use errors::to_s3_error;
use listing::*;
use objects::*;

pub use crate::engine::ACCESS_KEY_VAULT;

fn timestamp(ms: u64) -> Timestamp {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map(Timestamp::from)
        .unwrap_or_default()
}

/// Who a read is logged as: the access key that signed it.
/// Who a request is, for the log: its access key id (never the secret), or `anonymous`.
fn access_key_of(credentials: &Option<s3s::auth::Credentials>) -> String {
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
        buckets::list_buckets(self, req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        buckets::create_bucket(self, req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        buckets::head_bucket(self, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        buckets::get_bucket_location(self, req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        buckets::delete_bucket(self, req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        objects::put_object(self, req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        objects::get_object(self, req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        objects::head_object(self, req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        objects::delete_object(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create_multipart_upload(self, req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        multipart::upload_part_copy(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete_multipart_upload(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort_multipart_upload(self, req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_multipart_uploads(self, req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        objects::copy_object(self, req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        objects::delete_objects(self, req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        listing::list_objects_v2(self, req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        listing::list_objects(self, req).await
    }

    /// This gateway keeps one version per key; tools that always list versions get each
    /// object once, with version id `null`.
    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        listing::list_object_versions(self, req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        buckets::get_bucket_versioning(self, req).await
    }

    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        buckets::get_bucket_acl(self, req).await
    }

    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        objects::get_object_acl(self, req).await
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
        match self.engine.bucket(bucket).await {
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
