//! The public (untrusted) store: `object_store` over a local folder, S3, Azure or GCS.
//!
//! Only sealed chunks reach it, as blobs named `v1/b/<2 hex>/<32 hex>` after their random
//! id (DESIGN.md, "Public store layout"). Nothing else of a record is ever written here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use keyring::BlobId;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RetryConfig, UploadPart,
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

/// How long the public store may take, and how its transient failures are retried.
///
/// `timeout`, `connect_timeout` and `retry` configure object_store's HTTP client, so
/// they apply to cloud stores (S3, Azure, GCS, HTTP). `operation_timeout` bounds every
/// operation of any store, the folder included, from outside ([`Observed`]): a store
/// that accepts connections but never answers becomes an error, not a hang.
#[derive(Clone, Debug)]
pub struct StoreTimeouts {
    /// One HTTP request, from connecting to the last byte of the answer.
    pub timeout: Duration,
    /// Establishing the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Retries with exponential backoff of connection errors, 5xx, 429, and timeouts of
    /// requests object_store deems safe to repeat (reads, and S3 blob and part uploads).
    pub retry: RetryConfig,
    /// One whole operation, retries included.
    pub operation_timeout: Duration,
}

/// `timeout` unless configured (object_store's own default too: a 5 MiB part over a
/// slow uplink needs time).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// `connect_timeout` unless configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// medgate's retry policy unless configured: a few quick retries within 10 s, so a
/// store that is down fails in about a second (connection refused) and a client never
/// waits minutes (object_store's default allows 10 retries within 3 minutes).
pub fn default_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(10),
    }
}

impl StoreTimeouts {
    /// Resolves the settings: each given value wins; otherwise `timeout` and
    /// `connect_timeout` come from the store options of those names, else the defaults,
    /// and `operation_timeout` leaves room for one request after the retries stopped
    /// (`timeout + retry_timeout + max_backoff`).
    ///
    /// # Errors
    /// An option that is not a duration (`"30s"`, `"500ms"`), or a zero duration.
    pub fn new(
        options: &BTreeMap<String, String>,
        timeout: Option<Duration>,
        connect_timeout: Option<Duration>,
        operation_timeout: Option<Duration>,
        retry: RetryConfig,
    ) -> Result<Self> {
        let from_option = |name: &str, default: Duration| -> Result<Duration> {
            match options.get(name) {
                Some(v) => humantime::parse_duration(v).map_err(|e| {
                    Error::InvalidArgument(format!("public_store.options.{name}: {e}"))
                }),
                None => Ok(default),
            }
        };
        let timeout = match timeout {
            Some(t) => t,
            None => from_option("timeout", DEFAULT_TIMEOUT)?,
        };
        let connect_timeout = match connect_timeout {
            Some(t) => t,
            None => from_option("connect_timeout", DEFAULT_CONNECT_TIMEOUT)?,
        };
        let operation_timeout =
            operation_timeout.unwrap_or(timeout + retry.retry_timeout + retry.backoff.max_backoff);
        for (name, d) in [
            ("timeout", timeout),
            ("connect_timeout", connect_timeout),
            ("operation_timeout", operation_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::InvalidArgument(format!("{name} must be positive")));
            }
        }
        if !(retry.backoff.base >= 1.0 && retry.backoff.base.is_finite()) {
            return Err(Error::InvalidArgument(
                "retry.backoff_base must be a number of at least 1".into(),
            ));
        }
        Ok(StoreTimeouts {
            timeout,
            connect_timeout,
            retry,
            operation_timeout,
        })
    }

    /// The defaults, `timeout` and `connect_timeout` read from `options` when there.
    ///
    /// # Errors
    /// As [`StoreTimeouts::new`].
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<Self> {
        Self::new(options, None, None, None, default_retry())
    }
}

/// Whether opening a folder store may create its folder. A folder that is not there is
/// almost always a mistyped path, and creating it would put records where nobody looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Folder {
    /// Never create anything: the folder must exist (read-only commands).
    MustExist,
    /// Create the default folder (`DATA_DIR/public`) when missing; any other must exist.
    CreateDefault,
    /// Create the folder when missing (the config's `[public_store] create = true`).
    Create,
}

/// Where a public store setting points, parsed strictly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local folder; `default` when it is the data dir's own `public/`.
    Folder { path: PathBuf, default: bool },
    /// A cloud store URL (`s3://`, `az://`, `gs://`, `http(s)://`, ...).
    Cloud(url::Url),
}

/// The schemes a public store URL may have, as `object_store` reads them.
const SCHEMES: &[&str] = &[
    "file", "s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss", "http", "https",
];

impl Location {
    /// Parses a public store setting: `None` is `default_dir`; `scheme://…` a URL of a
    /// known scheme (`file://` is a folder); anything else a folder path. A string that
    /// starts like a URL (`s3:/bucket`, `s3:bucket`, `hospital:archive`) but is not one of
    /// a known scheme is refused rather than taken for a folder named `s3:`.
    ///
    /// # Errors
    /// `InvalidArgument` saying what to write instead.
    pub fn parse(url: Option<&str>, default_dir: &Path) -> Result<Location> {
        let Some(text) = url else {
            return Ok(Location::Folder {
                path: default_dir.to_path_buf(),
                default: true,
            });
        };
        if text.is_empty() {
            return Err(Error::InvalidArgument(
                "public store: the URL is empty (leave it out for DATA_DIR/public)".into(),
            ));
        }
        if let Some(scheme) = scheme_like(text) {
            let lower = scheme.to_ascii_lowercase();
            let rest = &text[scheme.len() + 1..];
            if !rest.starts_with("//") {
                let fix = if lower == "file" {
                    format!(
                        "write file:///{} or the path alone",
                        rest.trim_start_matches('/')
                    )
                } else if SCHEMES.contains(&lower.as_str()) {
                    format!(
                        "write {lower}://{} for a {lower} URL",
                        rest.trim_start_matches('/')
                    )
                } else {
                    format!("{lower:?} is not a store scheme ({})", SCHEMES.join(", "))
                };
                return Err(Error::InvalidArgument(format!(
                    "public store {text:?} looks like a URL but is not one: {fix}; \
                     for a folder whose name has a colon, write ./{text}"
                )));
            }
            if !SCHEMES.contains(&lower.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "public store URL {}: unknown scheme {lower:?} (known: {})",
                    redact_url(text),
                    SCHEMES.join(", ")
                )));
            }
            let parsed = url::Url::parse(text).map_err(|e| {
                Error::InvalidArgument(format!("public store URL {}: {e}", redact_url(text)))
            })?;
            if parsed.scheme() == "file" {
                let path = parsed.to_file_path().map_err(|()| {
                    Error::InvalidArgument(format!(
                        "public store URL {text}: not a local path (file:///absolute/path)"
                    ))
                })?;
                return Ok(Location::Folder {
                    path,
                    default: false,
                });
            }
            return Ok(Location::Cloud(parsed));
        }
        Ok(Location::Folder {
            path: PathBuf::from(text),
            default: false,
        })
    }

    /// The store as the start-up log shows it: a folder's path, or the URL without any
    /// password.
    pub fn describe(&self) -> String {
        match self {
            Location::Folder { path, default } => format!(
                "folder {}{}",
                path.display(),
                if *default { " (the default)" } else { "" }
            ),
            Location::Cloud(u) => redact_url(u.as_str()),
        }
    }
}

/// The scheme of a string that starts like a URL (`letter (letter|digit|+|-|.)* ':'`),
/// if it does.
fn scheme_like(text: &str) -> Option<&str> {
    let (head, _) = text.split_once(':')?;
    let mut chars = head.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(head)
}

/// `text` as a URL with its password, if any, replaced by `redacted`.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        _ => text.to_string(),
    }
}

/// Why an S3 store configured with `options` has no credentials, when it has none:
/// object_store would then ask the EC2 instance metadata service, which outside EC2 fails
/// with an error about a metadata URL that says nothing of the cause. `None` for other
/// stores and for S3 stores with static keys, a role, container credentials, an explicit
/// metadata endpoint, or `skip_signature`.
pub fn missing_credentials(
    location: &Location,
    options: &BTreeMap<String, String>,
) -> Option<String> {
    use object_store::aws::AmazonS3ConfigKey as Key;
    use object_store::ObjectStoreScheme as Scheme;
    let Location::Cloud(url) = location else {
        return None;
    };
    if !matches!(Scheme::parse(url), Ok((Scheme::AmazonS3, _))) {
        return None;
    }
    let set: Vec<Key> = options
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .filter_map(|(k, _)| k.parse().ok())
        .collect();
    let has = |k: Key| set.contains(&k);
    let env = |n: &str| std::env::var_os(n).is_some_and(|v| !v.is_empty());
    let fine = (has(Key::AccessKeyId) && has(Key::SecretAccessKey))
        || has(Key::SkipSignature)
        || has(Key::WebIdentityTokenFile)
        || has(Key::ContainerCredentialsRelativeUri)
        || has(Key::ContainerCredentialsFullUri)
        || has(Key::MetadataEndpoint)
        || (env("AWS_WEB_IDENTITY_TOKEN_FILE") && env("AWS_ROLE_ARN"));
    (!fine).then(|| {
        format!(
            "no credentials for {}: set access_key_id and secret_access_key (or \
             skip_signature = true for a public bucket, web_identity_token_file and role_arn, \
             or metadata_endpoint on EC2) in [public_store.options] or with --public-store-opt",
            redact_url(url.as_str())
        )
    })
}

/// Opens a public store, counted in the metrics ([`Observed`]), with the default
/// [`StoreTimeouts`] (`timeout` and `connect_timeout` from `options` when given), never
/// creating a folder: for commands that only read.
///
/// `url` is `None` for the default folder `default_dir`, a folder path, a
/// `file:///abs/path` URL, or a URL of a cloud store (`s3://bucket/prefix`, `az://…`,
/// `gs://…`), with `options` such as `endpoint`, `region`, `access_key_id`,
/// `secret_access_key`, `allow_http` (see [`Location::parse`]).
///
/// # Errors
/// An unparseable URL, an unknown option, or a folder that does not exist.
pub fn open(
    url: Option<&str>,
    options: &BTreeMap<String, String>,
    default_dir: &Path,
) -> Result<PublicStore> {
    open_with(
        url,
        options,
        default_dir,
        &StoreTimeouts::from_options(options)?,
        Folder::MustExist,
    )
}

/// [`open`] with explicit timeouts and retries (which beat the `timeout` and
/// `connect_timeout` options), creating a missing folder as `folder` allows.
///
/// # Errors
/// As [`open`]; a folder that cannot be created.
pub fn open_with(
    url: Option<&str>,
    options: &BTreeMap<String, String>,
    default_dir: &Path,
    timeouts: &StoreTimeouts,
    folder: Folder,
) -> Result<PublicStore> {
    let store: PublicStore = match Location::parse(url, default_dir)? {
        Location::Folder { path, default } => {
            let create = match folder {
                Folder::MustExist => false,
                Folder::CreateDefault => default,
                Folder::Create => true,
            };
            open_folder(&path, create)?
        }
        Location::Cloud(parsed) => {
            let (store, prefix) = open_cloud(&parsed, options, timeouts).map_err(|e| {
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
    };
    Ok(Arc::new(Observed {
        inner: store,
        deadline: timeouts.operation_timeout,
    }))
}

/// A cloud store built as `object_store::parse_url_opts` builds it (unknown option
/// names ignored: [`check`] names them), with the timeouts and retries added.
fn open_cloud(
    url: &url::Url,
    options: &BTreeMap<String, String>,
    timeouts: &StoreTimeouts,
) -> object_store::Result<(Box<dyn ObjectStore>, StorePath)> {
    use object_store::ObjectStoreScheme as Scheme;
    let mut options = options.clone();
    for (name, d) in [
        ("timeout", timeouts.timeout),
        ("connect_timeout", timeouts.connect_timeout),
    ] {
        options.insert(name.into(), humantime::format_duration(d).to_string());
    }
    let retry = timeouts.retry.clone();
    macro_rules! build {
        ($builder:ty, $url:expr) => {{
            let builder =
                options
                    .iter()
                    .fold(<$builder>::new().with_url($url), |b, (k, v)| {
                        match k.parse() {
                            Ok(k) => b.with_config(k, v.clone()),
                            Err(_) => b,
                        }
                    });
            Box::new(builder.with_retry(retry).build()?) as Box<dyn ObjectStore>
        }};
    }
    let (scheme, path) = Scheme::parse(url)?;
    let path = StorePath::parse(path)?;
    let store = match scheme {
        Scheme::AmazonS3 => build!(object_store::aws::AmazonS3Builder, url.as_str()),
        Scheme::MicrosoftAzure => build!(object_store::azure::MicrosoftAzureBuilder, url.as_str()),
        Scheme::GoogleCloudStorage => {
            build!(object_store::gcp::GoogleCloudStorageBuilder, url.as_str())
        }
        Scheme::Http => build!(
            object_store::http::HttpBuilder,
            &url[..url::Position::BeforePath]
        ),
        _ => return object_store::parse_url_opts(url, options),
    };
    Ok((store, path))
}

/// What an operation that outlived [`StoreTimeouts::operation_timeout`] fails with.
#[derive(Debug, thiserror::Error)]
#[error("the public store did not answer {op} within {}", humantime::format_duration(*.after))]
pub struct NoAnswer {
    op: &'static str,
    after: Duration,
}

fn no_answer(op: &'static str, after: Duration) -> object_store::Error {
    crate::metrics::global()
        .public_timeouts
        .get_or_create(&crate::metrics::StoreOpLabels { op })
        .inc();
    object_store::Error::Generic {
        store: "medgate",
        source: Box::new(NoAnswer { op, after }),
    }
}

/// Whether a public store error means the store could not be reached or did not answer
/// in time (connection refused or reset, a timeout), as opposed to an answer.
pub fn unreachable(e: &object_store::Error) -> bool {
    // object_store's own transport error (`HttpError`, shown as "HTTP error: …") is
    // forwarded transparently by its retry error, so only its text is left to see.
    chain(e).any(|s| {
        s.downcast_ref::<NoAnswer>().is_some()
            || s.downcast_ref::<object_store::client::HttpError>()
                .is_some()
            || s.to_string().contains("HTTP error: ")
    })
}

/// Whether the store asked us to slow down: 429, or 503 (S3's "SlowDown"; object_store
/// keeps no body of a 5xx answer, so a 503 cannot be told apart from other 503s), or a
/// SlowDown error in a body.
pub fn throttled(e: &object_store::Error) -> bool {
    chain(e).any(|s| {
        let text = s.to_string();
        text.contains("status code: 429")
            || text.contains("status code: 503")
            || text.contains("SlowDown")
    })
}

fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
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
    if let Location::Folder { .. } = Location::parse(url, Path::new("."))? {
        return Ok(());
    }
    let Some(url) = url else {
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
    match Location::parse(url, default_dir) {
        Ok(Location::Folder { path, .. }) => Some(path),
        _ => None,
    }
}

fn open_folder(dir: &Path, create: bool) -> Result<PublicStore> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::InvalidArgument(format!(
                "public store folder {} is not a folder",
                dir.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::create_dir_all(dir)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::InvalidArgument(format!(
                "public store folder {} does not exist: check the path, create the folder, \
                 or set [public_store] create = true to have medgate create it",
                dir.display()
            )))
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Arc::new(LocalFileSystem::new_with_prefix(dir)?))
}

/// A public store whose every request is counted in `medgate_public_store_requests_total`
/// and, when it fails, `medgate_public_store_errors_total` (by operation), and fails
/// with [`NoAnswer`] when it takes longer than the operation deadline (a hung store, or a
/// hung mount under a folder). A `get_opts` body streams outside the deadline; the engine
/// reads with `get_range`, which it covers.
#[derive(Debug)]
pub struct Observed {
    /// The store itself.
    inner: PublicStore,
    /// How long one operation may take before it fails ([`NoAnswer`]).
    deadline: Duration,
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

/// `op` run within `deadline`, then counted.
async fn bounded<T>(
    op: &'static str,
    deadline: Duration,
    op_future: impl std::future::Future<Output = object_store::Result<T>>,
) -> object_store::Result<T> {
    let result = tokio::time::timeout(deadline, op_future)
        .await
        .unwrap_or_else(|_| Err(no_answer(op, deadline)));
    counted(op, result)
}

#[async_trait]
impl ObjectStore for Observed {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        bounded(
            "put",
            self.deadline,
            self.inner.put_opts(location, payload, opts),
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = bounded(
            "create_multipart",
            self.deadline,
            self.inner.put_multipart_opts(location, opts),
        )
        .await?;
        Ok(Box::new(ObservedUpload {
            inner: upload,
            deadline: self.deadline,
        }))
    }

    async fn get_opts(
        &self,
        location: &StorePath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let op = if options.head { "head" } else { "get" };
        bounded(op, self.deadline, self.inner.get_opts(location, options)).await
    }

    async fn get_range(
        &self,
        location: &StorePath,
        range: std::ops::Range<u64>,
    ) -> object_store::Result<Bytes> {
        bounded("get", self.deadline, self.inner.get_range(location, range)).await
    }

    async fn head(&self, location: &StorePath) -> object_store::Result<ObjectMeta> {
        bounded("head", self.deadline, self.inner.head(location)).await
    }

    async fn delete(&self, location: &StorePath) -> object_store::Result<()> {
        bounded("delete", self.deadline, self.inner.delete(location)).await
    }

    fn list(
        &self,
        prefix: Option<&StorePath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let metrics = crate::metrics::global();
        metrics.public_request::<()>("list", &Ok(()));
        let deadline = self.deadline;
        // Each page within the deadline; after a page that never came, the listing ends.
        let pages =
            futures::stream::unfold(Some(self.inner.list(prefix)), move |inner| async move {
                let mut inner = inner?;
                match tokio::time::timeout(deadline, inner.next()).await {
                    Ok(Some(item)) => Some((item, Some(inner))),
                    Ok(None) => None,
                    Err(_) => Some((Err(no_answer("list", deadline)), None)),
                }
            });
        pages
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
        bounded(
            "list",
            self.deadline,
            self.inner.list_with_delimiter(prefix),
        )
        .await
    }

    async fn copy(&self, from: &StorePath, to: &StorePath) -> object_store::Result<()> {
        bounded("copy", self.deadline, self.inner.copy(from, to)).await
    }

    async fn copy_if_not_exists(
        &self,
        from: &StorePath,
        to: &StorePath,
    ) -> object_store::Result<()> {
        bounded(
            "copy",
            self.deadline,
            self.inner.copy_if_not_exists(from, to),
        )
        .await
    }
}

/// A multipart upload of an [`Observed`] store: parts, completion and abort counted.
#[derive(Debug)]
struct ObservedUpload {
    inner: Box<dyn MultipartUpload>,
    /// The store's operation deadline, for each part, completion and abort.
    deadline: Duration,
}

#[async_trait]
impl MultipartUpload for ObservedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.inner.put_part(data);
        let deadline = self.deadline;
        Box::pin(async move { bounded("put_part", deadline, part).await })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        bounded("complete_multipart", self.deadline, self.inner.complete()).await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        bounded("abort_multipart", self.deadline, self.inner.abort()).await
    }
}

#[cfg(test)]
mod tests;
