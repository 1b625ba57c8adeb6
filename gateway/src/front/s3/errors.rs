//! The one place an engine `Error` becomes an S3 error code and message.

use super::*;

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
        Error::Integrity { .. } => {
            tracing::warn!(error = %e, "integrity failure");
            (
                C::InternalError,
                "stored data failed its integrity check".into(),
            )
        }
        Error::NoStanza(_) => {
            tracing::warn!(error = %e, "no institution key opens a record's data key");
            (
                C::InternalError,
                "the gateway holds no institution key that opens this record's data key: after \
                 `medgate keys rotate`, the previous identity file (institution.key.old-...) must \
                 stay beside institution.key until the re-wrap has finished"
                    .into(),
            )
        }
        _ => {
            tracing::warn!(error = %e, "internal error");
            (C::InternalError, "internal error".into())
        }
    };
    S3Error::with_message(code, msg)
}
