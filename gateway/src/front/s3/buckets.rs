//! Bucket operations of the S3 front: list, create, head, location, delete, versioning, ACL.

use super::*;

pub(super) async fn list_buckets(
    front: &Front,
    req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let allowed = match &req.credentials {
        Some(c) => front
            .engine
            .access_key(&c.access_key)
            .await
            .map_err(to_s3_error)?
            .map(|r| r.buckets)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut listed: Vec<(String, u64)> = front
        .engine
        .list_buckets()
        .await
        .map_err(to_s3_error)?
        .into_iter()
        .map(|b| (b.name, b.created_ms))
        .collect();
    // Buckets mounted from peers are buckets to clients too (PACS and GUI clients
    // browse ListBuckets to find them).
    if let Some(remote) = front.engine.remote() {
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

pub(super) async fn create_bucket(
    front: &Front,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let name = req.input.bucket;
    if front.engine.mount(&name).is_some() {
        return Err(to_s3_error(Error::BucketExists(name)));
    }
    front
        .engine
        .create_bucket(&name)
        .await
        .map_err(to_s3_error)?;
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{name}")),
    }))
}

pub(super) async fn head_bucket(
    front: &Front,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    front.require_bucket(&req.input.bucket).await?;
    Ok(S3Response::new(HeadBucketOutput::default()))
}

pub(super) async fn get_bucket_location(
    front: &Front,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    front.require_bucket(&req.input.bucket).await?;
    Ok(S3Response::new(GetBucketLocationOutput::default()))
}

pub(super) async fn delete_bucket(
    front: &Front,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    front
        .engine
        .delete_bucket(&req.input.bucket)
        .await
        .map_err(to_s3_error)?;
    Ok(S3Response::new(DeleteBucketOutput {}))
}

pub(super) async fn get_bucket_versioning(
    front: &Front,
    req: S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    front.require_bucket(&req.input.bucket).await?;
    Ok(S3Response::new(GetBucketVersioningOutput::default()))
}

pub(super) async fn get_bucket_acl(
    front: &Front,
    req: S3Request<GetBucketAclInput>,
) -> S3Result<S3Response<GetBucketAclOutput>> {
    front.require_bucket(&req.input.bucket).await?;
    Ok(S3Response::new(GetBucketAclOutput {
        grants: Some(owner_full_control()),
        owner: Some(owner()),
    }))
}
