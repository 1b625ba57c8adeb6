//! The gateway's one error type.
//!
//! Variants name what went wrong in domain terms; the S3 front maps them to wire codes in
//! exactly one place (`front::s3::to_s3_error`). A failed integrity or decryption check is one
//! variant that carries where it happened but never key material or plaintext.

use keyring::BlobId;

/// Errors of the gateway engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    #[error("bucket {0:?} already exists")]
    BucketExists(String),
    #[error("bucket {0:?} is not empty")]
    BucketNotEmpty(String),
    #[error("object {bucket:?}/{key:?} does not exist")]
    NoSuchKey { bucket: String, key: String },
    #[error("the Content-MD5 you specified did not match what was received")]
    BadDigest,
    #[error("the {0} checksum you specified did not match the calculated checksum")]
    ChecksumMismatch(String),
    #[error("the body ended after {got} bytes but {expected} were announced")]
    IncompleteBody { expected: u64, got: u64 },
    #[error("the requested range is not satisfiable for an object of {size} bytes")]
    InvalidRange { size: u64 },
    #[error("multipart upload {0:?} does not exist")]
    NoSuchUpload(String),
    #[error("part {0} was not uploaded or its ETag does not match")]
    InvalidPart(u32),
    #[error("the list of parts was not in ascending order")]
    InvalidPartOrder,
    #[error("part {number} is {size} bytes; every part but the last must be at least 5 MiB")]
    EntityTooSmall { number: u32, size: u64 },
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("integrity check failed for blob {blob} chunk {chunk}")]
    Integrity { blob: String, chunk: u64 },
    #[error("no wrapped key for this gateway on object {0}")]
    NoStanza(String),
    #[error("the upload was reaped by gc before it committed; retry the request")]
    Reaped,
    #[error("unknown patient {0:?}: register it first with `medgate patient register`")]
    UnknownPatient(String),
    #[error("grant refused: {0}")]
    GrantRefused(String),
    /// A JSON API caller that did not prove who it is (admin token, patient signature, peer
    /// signature); says what was wrong, never the secret.
    #[error("not authorized: {0}")]
    Unauthorized(String),
    /// A bounded table is full for now (e.g. single-use tokens not yet expired); the
    /// caller may retry later.
    #[error("busy: {0}")]
    Busy(String),
    /// A backup that must not be restored as it is (unsigned, signed by another key, or
    /// older than what was published); says why and what to pass to restore it anyway.
    #[error("the backup is refused: {0}")]
    BackupRefused(String),
    /// A patient's audit found the log or their entries not as published.
    #[error("audit failed: {0}")]
    AuditFailed(String),
    /// Something an API caller named does not exist (or is not theirs to see).
    #[error("not found: {0}")]
    NotFound(String),
    /// Another institution's gateway could not be reached or answered nonsense.
    #[error("peer gateway: {0}")]
    Peer(String),
    #[error("access key {0:?} does not exist")]
    NoSuchAccessKey(String),
    #[error("the request body could not be read")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("public store: {0}")]
    Public(#[from] object_store::Error),
    /// A failure of the private store's backend (the sled adapter converts its errors).
    #[error("private store: {0}")]
    Private(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("private store record is corrupt: {0}")]
    Corrupt(String),
    #[error("crypto: {0}")]
    Keyring(#[from] keyring::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal: {0}")]
    Internal(String),
    /// A certificate or key that cannot be read or used; never carries key bytes.
    #[error("TLS: {what}")]
    Tls {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Every integrity failure is built here, so this is also where it is counted.
    pub(crate) fn integrity(blob: &BlobId, chunk: u64) -> Self {
        crate::metrics::global().integrity_failures.inc();
        Error::Integrity {
            blob: blob.to_hex(),
            chunk,
        }
    }
}

/// Result alias of the gateway.
pub type Result<T, E = Error> = std::result::Result<T, E>;
