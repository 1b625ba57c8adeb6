//! The [`Scope`] of a request or grant: which of a patient's records it covers ([`Records`])
//! and whether records written later are included.

use super::*;

/// Which of a patient's records a grant covers, by where they are stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Records {
    /// One object (every version of it that [`Scope::include_future`] allows).
    Object {
        /// The bucket.
        bucket: String,
        /// The exact object key.
        key: String,
    },
    /// Every object in `bucket` whose key starts with `prefix` (byte-wise, as S3 prefixes:
    /// `scans/a` also covers `scans/ab`; end a folder prefix with `/`).
    Prefix {
        /// The bucket.
        bucket: String,
        /// The key prefix; empty means the whole bucket.
        prefix: String,
    },
    /// All of the patient's records, in every bucket.
    Patient,
}

/// What a share request asks for and a grant allows.
///
/// Scope, v1 (part of [`ShareRequest`] and [`Grant`]; `str` as in the module docs):
///
/// | offset | len   | field                                                   |
/// |--------|-------|---------------------------------------------------------|
/// | 0      | 1     | kind: 0x01 object, 0x02 prefix, 0x03 patient            |
/// | 1      | 1     | include_future: 0x00 no, 0x01 yes                       |
/// | 2      | 4 + n | bucket (`str`); object and prefix only                  |
/// | …      | 4 + n | key (object) or prefix (prefix) (`str`); those only     |
///
/// A bucket is 1 to [`MAX_BUCKET_LEN`] bytes without `/`; a key is 1 to [`MAX_KEY_LEN`] bytes; a
/// prefix is 0 to [`MAX_KEY_LEN`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    /// Which records, by location.
    pub records: Records,
    /// Whether records (or new versions of an object) added after the grant are covered too.
    pub include_future: bool,
}

const SCOPE_OBJECT: u8 = 0x01;
const SCOPE_PREFIX: u8 = 0x02;
const SCOPE_PATIENT: u8 = 0x03;

impl Scope {
    /// Whether the record stored at `bucket`/`key` is inside this scope, by location only.
    ///
    /// # Security
    /// This is only the path part. The gateway must separately check that the record belongs to
    /// the grant's patient (a prefix or a bucket may hold other patients' records too) and, with
    /// [`Scope::covers_version`], when it was added.
    pub fn covers(&self, bucket: &str, key: &str) -> bool {
        match &self.records {
            Records::Object { bucket: b, key: k } => b == bucket && k == key,
            Records::Prefix { bucket: b, prefix } => {
                b == bucket && key.starts_with(prefix.as_str())
            }
            Records::Patient => true,
        }
    }

    /// [`Scope::covers`], and also whether a record version added at `added_ms` is covered by a
    /// grant the gateway accepted at `granted_ms` (both on the gateway's clock):
    /// later versions only with [`Scope::include_future`].
    pub fn covers_version(&self, bucket: &str, key: &str, added_ms: u64, granted_ms: u64) -> bool {
        self.covers(bucket, key) && (self.include_future || added_ms <= granted_ms)
    }

    /// Checks the field limits in the byte table.
    ///
    /// # Errors
    /// [`Error::Malformed`] naming the field.
    pub fn validate(&self) -> Result<()> {
        match &self.records {
            Records::Object { bucket, key } => {
                check_bucket(bucket)?;
                check_len(key, 1, MAX_KEY_LEN, "scope: key length")
            }
            Records::Prefix { bucket, prefix } => {
                check_bucket(bucket)?;
                check_len(prefix, 0, MAX_KEY_LEN, "scope: prefix length")
            }
            Records::Patient => Ok(()),
        }
    }

    pub(super) fn write(&self, out: &mut Vec<u8>) {
        let (kind, strings) = match &self.records {
            Records::Object { bucket, key } => (SCOPE_OBJECT, Some((bucket, key))),
            Records::Prefix { bucket, prefix } => (SCOPE_PREFIX, Some((bucket, prefix))),
            Records::Patient => (SCOPE_PATIENT, None),
        };
        out.push(kind);
        out.push(u8::from(self.include_future));
        if let Some((a, b)) = strings {
            put_str(out, a);
            put_str(out, b);
        }
    }

    pub(super) fn read(r: &mut Reader<'_>) -> Result<Scope> {
        let kind = r.u8()?;
        let include_future = r.flag()?;
        let records = match kind {
            SCOPE_OBJECT => Records::Object {
                bucket: r.string()?,
                key: r.string()?,
            },
            SCOPE_PREFIX => Records::Prefix {
                bucket: r.string()?,
                prefix: r.string()?,
            },
            SCOPE_PATIENT => Records::Patient,
            _ => return Err(Error::Malformed("scope: unknown kind")),
        };
        let scope = Scope {
            records,
            include_future,
        };
        scope.validate()?;
        Ok(scope)
    }
}
