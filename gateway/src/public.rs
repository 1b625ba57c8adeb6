//! The public (untrusted) store: `object_store` over a local folder, S3, Azure or GCS.
//!
//! Only sealed chunks reach it, as blobs named `v1/b/<2 hex>/<32 hex>` after their random
//! id (DESIGN.md, "Public store layout"). Nothing else of a record is ever written here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyring::BlobId;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;

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

/// Opens a public store.
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
    let Some(url) = url else {
        return open_folder(default_dir);
    };
    if !url.contains("://") {
        return open_folder(Path::new(url));
    }
    let parsed = url::Url::parse(url)
        .map_err(|e| Error::InvalidArgument(format!("public store URL: {e}")))?;
    if parsed.scheme() == "file" {
        let dir = parsed
            .to_file_path()
            .map_err(|()| Error::InvalidArgument("public store URL: not a local path".into()))?;
        return open_folder(&dir);
    }
    let (store, prefix) = object_store::parse_url_opts(
        &parsed,
        options.iter().map(|(k, v)| (k.as_str(), v.clone())),
    )?;
    if prefix.as_ref().is_empty() {
        Ok(Arc::from(store))
    } else {
        Ok(Arc::new(PrefixStore::new(store, prefix)))
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
