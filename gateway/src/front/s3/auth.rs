//! SigV4 keys and access checks of the S3 front: the secret of an access key (unsealed
//! through the engine) and what a key may reach (buckets, copy sources, patient labels).

use super::*;

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
