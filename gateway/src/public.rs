//! The public (untrusted) store: `object_store` over a local folder, S3, Azure or GCS.
//!
//! Only sealed chunks reach it, as blobs named `v1/b/<2 hex>/<32 hex>` after their random
//! id (DESIGN.md, "Public store layout"). Nothing else of a record is ever written here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use keyring::BlobId;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

use crate::{Error, Result};

/// The public store as the engine uses it.
pub type PublicStore = Arc<dyn ObjectStore>;

/// Where a blob lives in the public store.
pub fn blob_path(blob: &BlobId) -> StorePath {
    StorePath::from(blob.public_path())
}

/// The folder every blob lives under; gc lists only this.
pub fn blob_root() -> StorePath {
    StorePath::from("v1/b")
}

/// Opens a public store, counted in the metrics ([`Observed`]).
///
/// `url` is `None` for the default folder `default_dir`, a `file:///abs/path` URL, or any
/// URL `object_store` parses (`s3://bucket/prefix`, `az://…`, `gs://…`), with `options`
/// such as `endpoint`, `region`, `access_key_id`, `secret_access_key`, `allow_http`.
///
/// # Errors
/// An unparseable URL, an unknown option, or a folder that cannot be created.
pub fn open(
    url: Option<&str>,
    options: &BTreeMap<String, String>,
    default_dir: &Path,
) -> Result<PublicStore> {
    let store: PublicStore = match url {
        None => open_folder(default_dir)?,
        Some(url) if !url.contains("://") => open_folder(Path::new(url))?,
        Some(url) => {
            let parsed = url::Url::parse(url)
                .map_err(|e| Error::InvalidArgument(format!("public store URL: {e}")))?;
            if parsed.scheme() == "file" {
                let dir = parsed.to_file_path().map_err(|()| {
                    Error::InvalidArgument("public store URL: not a local path".into())
                })?;
                open_folder(&dir)?
            } else {
                let (store, prefix) = object_store::parse_url_opts(
                    &parsed,
                    options.iter().map(|(k, v)| (k.as_str(), v.clone())),
                )
                .map_err(|e| {
                    Error::InvalidArgument(format!(
                        "public store: {}",
                        without_password(&parsed, &e.to_string())
                    ))
                })?;
                if prefix.as_ref().is_empty() {
                    PublicStore::from(store)
                } else {
                    Arc::new(PrefixStore::new(store, prefix))
                }
            }
        }
    };
    Ok(Arc::new(Observed { inner: store }))
}

/// Checks a public store URL and its options as [`open`] reads them, without creating a
/// folder or contacting the store: the URL parses, every option is one the store type
/// knows (object_store itself ignores unknown names, so a typo would go unnoticed), and
/// the store's client builds (durations, booleans and endpoints parse). A folder takes
/// no options; any given are ignored.
///
/// # Errors
/// `InvalidArgument` naming the URL or the option.
pub fn check(url: Option<&str>, options: &BTreeMap<String, String>) -> Result<()> {
    use object_store::ObjectStoreScheme as Scheme;
    let Some(url) = url.filter(|u| u.contains("://")) else {
        return Ok(());
    };
    // The URL may carry a password: messages show it without.
    let parsed = url::Url::parse(url)
        .map_err(|e| Error::InvalidArgument(format!("public store URL: {e}")))?;
    let shown = without_password(&parsed, parsed.as_str());
    let scrub = |e: &dyn std::fmt::Display| without_password(&parsed, &e.to_string());
    if parsed.scheme() == "file" {
        return parsed.to_file_path().map(|_| ()).map_err(|()| {
            Error::InvalidArgument(format!("public store URL {shown}: not a local path"))
        });
    }
    let (scheme, _) = Scheme::parse(&parsed)
        .map_err(|e| Error::InvalidArgument(format!("public store URL {shown}: {}", scrub(&e))))?;
    for name in options.keys() {
        let known = match scheme {
            Scheme::AmazonS3 => name.parse::<object_store::aws::AmazonS3ConfigKey>().is_ok(),
            Scheme::MicrosoftAzure => name.parse::<object_store::azure::AzureConfigKey>().is_ok(),
            Scheme::GoogleCloudStorage => {
                name.parse::<object_store::gcp::GoogleConfigKey>().is_ok()
            }
            Scheme::Http => name.parse::<object_store::ClientConfigKey>().is_ok(),
            _ => true,
        };
        if !known {
            return Err(Error::InvalidArgument(format!(
                "public_store.options: {name:?} is not an option of {} stores",
                parsed.scheme()
            )));
        }
    }
    object_store::parse_url_opts(
        &parsed,
        options.iter().map(|(k, v)| (k.as_str(), v.clone())),
    )
    .map_err(|e| Error::InvalidArgument(format!("public store {shown}: {}", scrub(&e))))?;
    Ok(())
}

/// `text` with the password of `url`, if it has one, replaced: object_store's errors
/// quote the URL they were given.
fn without_password(url: &url::Url, text: &str) -> String {
    match url.password() {
        Some(p) if !p.is_empty() => text.replace(p, "redacted"),
        _ => text.to_string(),
    }
}

/// The folder behind a public store URL, when it is a local folder. gc uses it to find
/// the staging files (`<blob>#<n>`) that a killed multipart upload leaves there, which
/// `object_store`'s listing hides.
pub fn local_root(url: Option<&str>, default_dir: &Path) -> Option<PathBuf> {
    match url {
        None => Some(default_dir.to_path_buf()),
        Some(u) if !u.contains("://") => Some(PathBuf::from(u)),
        Some(u) => url::Url::parse(u)
            .ok()
            .filter(|p| p.scheme() == "file")
            .and_then(|p| p.to_file_path().ok()),
    }
}

fn open_folder(dir: &Path) -> Result<PublicStore> {
    std::fs::create_dir_all(dir)?;
    Ok(Arc::new(LocalFileSystem::new_with_prefix(dir)?))
}

/// A public store whose every request is counted in `medgate_public_store_requests_total`
/// and, when it fails, `medgate_public_store_errors_total` (by operation).
#[derive(Debug)]
pub struct Observed {
    /// The store itself.
    inner: PublicStore,
}

impl std::fmt::Display for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

fn counted<T>(op: &'static str, result: object_store::Result<T>) -> object_store::Result<T> {
    crate::metrics::global().public_request(op, &result);
    result
}

#[async_trait]
impl ObjectStore for Observed {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        counted("put", self.inner.put_opts(location, payload, opts).await)
    }

    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = counted(
            "create_multipart",
            self.inner.put_multipart_opts(location, opts).await,
        )?;
        Ok(Box::new(ObservedUpload { inner: upload }))
    }

    async fn get_opts(
        &self,
        location: &StorePath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let op = if options.head { "head" } else { "get" };
        counted(op, self.inner.get_opts(location, options).await)
    }

    async fn get_range(
        &self,
        location: &StorePath,
        range: std::ops::Range<u64>,
    ) -> object_store::Result<Bytes> {
        counted("get", self.inner.get_range(location, range).await)
    }

    async fn head(&self, location: &StorePath) -> object_store::Result<ObjectMeta> {
        counted("head", self.inner.head(location).await)
    }

    async fn delete(&self, location: &StorePath) -> object_store::Result<()> {
        counted("delete", self.inner.delete(location).await)
    }

    fn list(
        &self,
        prefix: Option<&StorePath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let metrics = crate::metrics::global();
        metrics.public_request::<()>("list", &Ok(()));
        self.inner
            .list(prefix)
            .inspect(move |item| {
                if let Err(e) = item {
                    metrics.public_failure("list", e);
                }
            })
            .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&StorePath>,
    ) -> object_store::Result<ListResult> {
        counted("list", self.inner.list_with_delimiter(prefix).await)
    }

    async fn copy(&self, from: &StorePath, to: &StorePath) -> object_store::Result<()> {
        counted("copy", self.inner.copy(from, to).await)
    }

    async fn copy_if_not_exists(
        &self,
        from: &StorePath,
        to: &StorePath,
    ) -> object_store::Result<()> {
        counted("copy", self.inner.copy_if_not_exists(from, to).await)
    }
}

/// A multipart upload of an [`Observed`] store: parts, completion and abort counted.
#[derive(Debug)]
struct ObservedUpload {
    inner: Box<dyn MultipartUpload>,
}

#[async_trait]
impl MultipartUpload for ObservedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.inner.put_part(data);
        Box::pin(async move { counted("put_part", part.await) })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        counted("complete_multipart", self.inner.complete().await)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        counted("abort_multipart", self.inner.abort().await)
    }
}
