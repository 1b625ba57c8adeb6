//! Consent: what a recipient asks for ([`ShareRequest`]), what a patient signs to approve, refuse
//! or withdraw it ([`Grant`], [`Denial`], [`Revocation`]), and how a patient proves who they are
//! ([`AuthChallenge`] / [`AuthToken`], [`registration_proof`], [`KeyChange`]).
//!
//! The gateway never re-wraps a record key without a [`SignedGrant`] that passes
//! [`SignedGrant::check`] against the key on file for the patient. Everything here is values in,
//! values out; remembering used grant ids, challenges and nonces is the gateway's job.
//!
//! # Encoding conventions
//! Every format starts with a version byte (0x01 for all of v1). Integers are big-endian with
//! fixed widths; `str` is a u32 byte length followed by that many bytes of UTF-8; a recipient is
//! its 64-byte [`Recipient::to_bytes`] form. Decoding is strict: truncation, trailing bytes, bad
//! flags, invalid UTF-8 and out-of-range fields are all errors, so every value has exactly one
//! encoding and hashes and signatures over encodings are well defined.
//!
//! A signed form (`Signed*`) is the payload's encoding followed by a 64-byte Ed25519 signature
//! made with [`Identity::sign`] over that encoding, under a context string naming its use
//! ([`GRANT_CONTEXT`], ...), so no signature can be replayed as another kind.
//!
//! # Text forms
//! Every encoding has a text form for command lines and JSON: unpadded base64url (RFC 4648 §5)
//! of the bytes. Parsing ignores surrounding whitespace and refuses padding, other alphabets and
//! non-zero trailing bits.

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::identity::{Identity, Recipient, Signature};
#[cfg(test)]
use crate::wire::base64url;
use crate::wire::{names, put_bytes, put_str, wire_methods, Names, Reader, Wire};

/// Version byte of every v1 consent format.
pub const CONSENT_V1: u8 = crate::wire::V1;

/// Signature context of a [`SignedRequest`].
pub const REQUEST_CONTEXT: &str = "medgate/v1/request";
/// Signature context of a [`SignedGrant`].
pub const GRANT_CONTEXT: &str = "medgate/v1/grant";
/// Signature context of a [`SignedRevocation`].
pub const REVOKE_CONTEXT: &str = "medgate/v1/revoke";
/// Signature context of a [`SignedDenial`].
pub const DENY_CONTEXT: &str = "medgate/v1/deny";
/// Signature context of a [`SignedAuth`].
pub const AUTH_CONTEXT: &str = "medgate/v1/auth";
/// Signature context of a [`SignedPeerAuth`].
pub const PEER_CONTEXT: &str = "medgate/v1/peer";
/// Signature context of a [`registration_proof`].
pub const REGISTER_CONTEXT: &str = "medgate/v1/register";
/// Signature context of a [`SignedKeyChange`] (the old key's signature).
pub const KEY_CHANGE_CONTEXT: &str = "medgate/v1/key-change";

/// Prefix hashed before a request's encoding to get its id ([`ShareRequest::hash`]). Not the
/// signature context: an id and a signature over the same request never share a preimage.
const REQUEST_ID_PREFIX: &[u8] = b"medgate/v1/request-id\0";
/// Prefix hashed before a grant's encoding to get its id ([`SignedGrant::id`]).
const GRANT_ID_PREFIX: &[u8] = b"medgate/v1/grant-id\0";

/// Longest patient id or requester name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest bucket name, in bytes.
pub const MAX_BUCKET_LEN: usize = 255;
/// Longest object key or prefix, in bytes (S3's own limit).
pub const MAX_KEY_LEN: usize = 1024;
/// Longest purpose code, in bytes.
pub const MAX_PURPOSE_CODE_LEN: usize = 64;
/// Longest free-text purpose, in bytes.
pub const MAX_PURPOSE_TEXT_LEN: usize = 4096;
/// Longest HTTP method in an [`AuthToken`], in bytes.
pub const MAX_METHOD_LEN: usize = 16;
/// Longest HTTP request target (path and query) in an [`AuthToken`], in bytes.
pub const MAX_PATH_LEN: usize = 8192;

// ---------------------------------------------------------------------------------------------
// Signed forms

/// A `payload ‖ signature` type and its [`Wire`] impl.
macro_rules! signed_type {
    ($(#[$doc:meta])* $ty:ident, $field:ident: $payload:ident, $context:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $ty {
            /// What is signed.
            pub $field: $payload,
            #[doc = concat!("Signature over the encoding of `", stringify!($field), "`, context [`", stringify!($context), "`].")]
            pub signature: Signature,
        }

        impl Wire for $ty {
            const NAMES: &'static Names = &names!($what);

            fn write(&self, out: &mut Vec<u8>) {
                self.$field.write(out);
                out.extend_from_slice(&self.signature.0);
            }

            fn read(r: &mut Reader<'_>) -> Result<$ty> {
                Ok($ty {
                    $field: $payload::read(r)?,
                    signature: Signature(r.array()?),
                })
            }
        }

        wire_methods!($ty, $what);
    };
}

// ---------------------------------------------------------------------------------------------
// Scope

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

    fn write(&self, out: &mut Vec<u8>) {
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

    fn read(r: &mut Reader<'_>) -> Result<Scope> {
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

fn check_len(s: &str, min: usize, max: usize, what: &'static str) -> Result<()> {
    if (min..=max).contains(&s.len()) {
        Ok(())
    } else {
        Err(Error::Malformed(what))
    }
}

fn check_bucket(bucket: &str) -> Result<()> {
    check_len(bucket, 1, MAX_BUCKET_LEN, "scope: bucket length")?;
    if bucket.contains('/') {
        return Err(Error::Malformed("scope: bucket contains '/'"));
    }
    Ok(())
}

/// Free text shown to people must not carry terminal escapes or other control characters.
fn check_text(s: &str, max: usize, allow_newline: bool, what: &'static str) -> Result<()> {
    let bad = |c: char| c.is_control() && !(allow_newline && c == '\n');
    if s.len() > max || s.chars().any(bad) {
        return Err(Error::Malformed(what));
    }
    Ok(())
}

fn check_patient_id(patient_id: &str, what: &'static str) -> Result<()> {
    if patient_id.is_empty() {
        return Err(Error::Malformed(what));
    }
    check_text(patient_id, MAX_NAME_LEN, false, what)
}

fn random_nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    OsRng.fill_bytes(&mut n);
    n
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

// ---------------------------------------------------------------------------------------------
// Share request

/// A recipient's request to read some of a patient's records.
///
/// ShareRequest, v1 (`str` as in the module docs):
///
/// | offset | len   | field                                                        |
/// |--------|-------|--------------------------------------------------------------|
/// | 0      | 1     | version = 0x01                                               |
/// | 1      | 32    | institution: fingerprint of the owning gateway's recipient   |
/// | 33     | 64    | recipient: X25519 pk ‖ Ed25519 pk of who gets the keys        |
/// | 97     | 8     | created_ms (u64)                                             |
/// | 105    | 8     | expires_ms (u64): when the access asked for ends              |
/// | 113    | 16    | nonce                                                        |
/// | 129    | 4 + n | patient_id (`str`, 1..=256 bytes, no control characters)     |
/// | …      | 2 + … | scope (see [`Scope`])                                        |
/// | …      | 4 + n | requester (`str`, 0..=256 bytes, no control characters)      |
/// | …      | 4 + n | purpose_code (`str`, 1..=64 bytes of `A-Z a-z 0-9 . _ -`)     |
/// | …      | 4 + n | purpose_text (`str`, 0..=4096 bytes, no control but newline) |
///
/// Nothing may follow `purpose_text`; `created_ms < expires_ms`.
///
/// # Security
/// `requester` and `purpose_text` are the requester's own words. What the patient is shown
/// about who is asking must come from the gateway's peer configuration for `recipient`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareRequest {
    /// Fingerprint ([`Recipient::fingerprint`]) of the gateway that holds the records.
    pub institution: [u8; 32],
    /// The patient, as the owning gateway names them.
    pub patient_id: String,
    /// Which records.
    pub scope: Scope,
    /// Who the record keys would be wrapped to.
    pub recipient: Recipient,
    /// The requester's name for itself (untrusted display text).
    pub requester: String,
    /// Free-text purpose (untrusted display text).
    pub purpose_text: String,
    /// Purpose of use code, FHIR v3 ActReason style, e.g. `TREAT`, `ETREAT`, `HPAYMT`.
    pub purpose_code: String,
    /// When the request was made, Unix milliseconds.
    pub created_ms: u64,
    /// When the access asked for would end, Unix milliseconds.
    pub expires_ms: u64,
    /// Random, so two otherwise equal requests have different hashes.
    pub nonce: [u8; 16],
}

impl ShareRequest {
    /// The request's id: SHA-256("medgate/v1/request-id" ‖ 0x00 ‖ encoding). Grants and denials
    /// name the request by it.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(REQUEST_ID_PREFIX);
        h.update(self.encode());
        h.finalize().into()
    }

    /// Checks the field rules in the byte table (what [`ShareRequest::decode`] guarantees).
    ///
    /// # Errors
    /// [`Error::Malformed`] naming the field.
    pub fn validate(&self) -> Result<()> {
        check_patient_id(&self.patient_id, "share request: patient id")?;
        self.scope.validate()?;
        check_text(
            &self.requester,
            MAX_NAME_LEN,
            false,
            "share request: requester",
        )?;
        let code_ok = (1..=MAX_PURPOSE_CODE_LEN).contains(&self.purpose_code.len())
            && self
                .purpose_code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !code_ok {
            return Err(Error::Malformed("share request: purpose code"));
        }
        check_text(
            &self.purpose_text,
            MAX_PURPOSE_TEXT_LEN,
            true,
            "share request: purpose text",
        )?;
        if self.created_ms >= self.expires_ms {
            return Err(Error::Malformed("share request: expires before created"));
        }
        Ok(())
    }

    /// Signs the request as its requester (the recipient itself, or a peer gateway asking for
    /// it), with context [`REQUEST_CONTEXT`].
    pub fn sign(&self, requester: &Identity) -> SignedRequest {
        SignedRequest {
            signature: requester.sign(REQUEST_CONTEXT, &self.encode()),
            request: self.clone(),
        }
    }
}

impl Wire for ShareRequest {
    const NAMES: &'static Names = &names!("share request");

    fn write(&self, out: &mut Vec<u8>) {
        out.push(CONSENT_V1);
        out.extend_from_slice(&self.institution);
        out.extend_from_slice(&self.recipient.to_bytes());
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        put_str(out, &self.patient_id);
        self.scope.write(out);
        put_str(out, &self.requester);
        put_str(out, &self.purpose_code);
        put_str(out, &self.purpose_text);
    }

    fn read(r: &mut Reader<'_>) -> Result<ShareRequest> {
        r.version()?;
        let institution = r.array()?;
        let recipient = r.recipient()?;
        let created_ms = r.u64()?;
        let expires_ms = r.u64()?;
        let nonce = r.array()?;
        let patient_id = r.string()?;
        let scope = Scope::read(r)?;
        let requester = r.string()?;
        let purpose_code = r.string()?;
        let purpose_text = r.string()?;
        let req = ShareRequest {
            institution,
            patient_id,
            scope,
            recipient,
            requester,
            purpose_text,
            purpose_code,
            created_ms,
            expires_ms,
            nonce,
        };
        req.validate()?;
        Ok(req)
    }
}

wire_methods!(ShareRequest, "share request");

// ---------------------------------------------------------------------------------------------
// Grant

/// A patient's approval of one [`ShareRequest`], to be signed with [`Grant::sign`].
///
/// Grant, v1:
///
/// | offset | len | field                                                  |
/// |--------|-----|--------------------------------------------------------|
/// | 0      | 1   | version = 0x01                                         |
/// | 1      | 32  | request_hash ([`ShareRequest::hash`])                  |
/// | 33     | 32  | institution: fingerprint of the owning gateway         |
/// | 65     | 32  | patient_key_id: fingerprint of the patient's recipient |
/// | 97     | 64  | recipient: X25519 pk ‖ Ed25519 pk                      |
/// | 161    | 8   | issued_ms (u64)                                        |
/// | 169    | 8   | expires_ms (u64)                                       |
/// | 177    | 16  | nonce                                                  |
/// | 193    | 2+… | scope (see [`Scope`]); nothing may follow              |
///
/// The request hash already binds the request, but the grant repeats what the patient approved
/// (institution, recipient, scope, expiry) so that the signed bytes say it on their own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The request approved.
    pub request_hash: [u8; 32],
    /// Fingerprint of the gateway that holds the records.
    pub institution: [u8; 32],
    /// Who the record keys may be wrapped to.
    pub recipient: Recipient,
    /// Which records.
    pub scope: Scope,
    /// When the access ends, Unix milliseconds; at most the request's expiry.
    pub expires_ms: u64,
    /// Random, so two grants of the same request have different ids.
    pub nonce: [u8; 16],
    /// Fingerprint of the patient's recipient: which key must have signed.
    pub patient_key_id: [u8; 32],
    /// When the patient signed, Unix milliseconds on the patient's clock.
    pub issued_ms: u64,
}

impl Grant {
    /// The grant that approves `request` exactly as asked, for the patient whose public key is
    /// `patient`, with a fresh random nonce.
    pub fn for_request(request: &ShareRequest, patient: &Recipient, issued_ms: u64) -> Grant {
        Grant {
            request_hash: request.hash(),
            institution: request.institution,
            recipient: request.recipient.clone(),
            scope: request.scope.clone(),
            expires_ms: request.expires_ms,
            nonce: random_nonce(),
            patient_key_id: patient.fingerprint(),
            issued_ms,
        }
    }

    /// Signs the grant with context [`GRANT_CONTEXT`].
    ///
    /// The result only passes [`SignedGrant::check`] if `patient` is the key named by
    /// [`Grant::patient_key_id`].
    pub fn sign(&self, patient: &Identity) -> SignedGrant {
        SignedGrant {
            signature: patient.sign(GRANT_CONTEXT, &self.encode()),
            grant: self.clone(),
        }
    }
}

impl Wire for Grant {
    const NAMES: &'static Names = &names!("grant");

    fn write(&self, out: &mut Vec<u8>) {
        out.push(CONSENT_V1);
        out.extend_from_slice(&self.request_hash);
        out.extend_from_slice(&self.institution);
        out.extend_from_slice(&self.patient_key_id);
        out.extend_from_slice(&self.recipient.to_bytes());
        out.extend_from_slice(&self.issued_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        self.scope.write(out);
    }

    fn read(r: &mut Reader<'_>) -> Result<Grant> {
        r.version()?;
        Ok(Grant {
            request_hash: r.array()?,
            institution: r.array()?,
            patient_key_id: r.array()?,
            recipient: r.recipient()?,
            issued_ms: r.u64()?,
            expires_ms: r.u64()?,
            nonce: r.array()?,
            scope: Scope::read(r)?,
        })
    }
}

wire_methods!(Grant, "grant");

// ---------------------------------------------------------------------------------------------
// Revocation and denial

/// A patient's withdrawal of a grant, to be signed with [`Revocation::sign`].
///
/// Revocation, v1 (41 bytes):
///
/// | offset | len | field                        |
/// |--------|-----|------------------------------|
/// | 0      | 1   | version = 0x01               |
/// | 1      | 16  | grant_id ([`SignedGrant::id`]) |
/// | 17     | 8   | issued_ms (u64)              |
/// | 25     | 16  | nonce                        |
///
/// The grant id binds the institution, recipient and patient key through the grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The grant withdrawn.
    pub grant_id: [u8; 16],
    /// When the patient signed, Unix milliseconds on the patient's clock.
    pub issued_ms: u64,
    /// Random.
    pub nonce: [u8; 16],
}

impl Revocation {
    /// The revocation of `grant`, with a fresh random nonce.
    pub fn for_grant(grant: &SignedGrant, issued_ms: u64) -> Revocation {
        Revocation {
            grant_id: grant.id(),
            issued_ms,
            nonce: random_nonce(),
        }
    }

    /// Signs with context [`REVOKE_CONTEXT`].
    pub fn sign(&self, patient: &Identity) -> SignedRevocation {
        SignedRevocation {
            signature: patient.sign(REVOKE_CONTEXT, &self.encode()),
            revocation: self.clone(),
        }
    }
}

impl Wire for Revocation {
    const NAMES: &'static Names = &names!("revocation");

    fn write(&self, out: &mut Vec<u8>) {
        out.push(CONSENT_V1);
        out.extend_from_slice(&self.grant_id);
        out.extend_from_slice(&self.issued_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
    }

    fn read(r: &mut Reader<'_>) -> Result<Revocation> {
        r.version()?;
        Ok(Revocation {
            grant_id: r.array()?,
            issued_ms: r.u64()?,
            nonce: r.array()?,
        })
    }
}

wire_methods!(Revocation, "revocation");

/// A patient's refusal of a share request, to be signed with [`Denial::sign`].
///
/// Denial, v1 (57 bytes):
///
/// | offset | len | field                                  |
/// |--------|-----|----------------------------------------|
/// | 0      | 1   | version = 0x01                         |
/// | 1      | 32  | request_hash ([`ShareRequest::hash`])  |
/// | 33     | 8   | issued_ms (u64)                        |
/// | 41     | 16  | nonce                                  |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The request refused.
    pub request_hash: [u8; 32],
    /// When the patient signed, Unix milliseconds on the patient's clock.
    pub issued_ms: u64,
    /// Random.
    pub nonce: [u8; 16],
}

impl Denial {
    /// The denial of `request`, with a fresh random nonce.
    pub fn for_request(request: &ShareRequest, issued_ms: u64) -> Denial {
        Denial {
            request_hash: request.hash(),
            issued_ms,
            nonce: random_nonce(),
        }
    }

    /// Signs with context [`DENY_CONTEXT`].
    pub fn sign(&self, patient: &Identity) -> SignedDenial {
        SignedDenial {
            signature: patient.sign(DENY_CONTEXT, &self.encode()),
            denial: self.clone(),
        }
    }
}

impl Wire for Denial {
    const NAMES: &'static Names = &names!("denial");

    fn write(&self, out: &mut Vec<u8>) {
        out.push(CONSENT_V1);
        out.extend_from_slice(&self.request_hash);
        out.extend_from_slice(&self.issued_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
    }

    fn read(r: &mut Reader<'_>) -> Result<Denial> {
        r.version()?;
        Ok(Denial {
            request_hash: r.array()?,
            issued_ms: r.u64()?,
            nonce: r.array()?,
        })
    }
}

wire_methods!(Denial, "denial");

// ---------------------------------------------------------------------------------------------
// Signed forms

signed_type!(
    /// A [`ShareRequest`] signed by its requester with context [`REQUEST_CONTEXT`].
    ///
    /// Encoding: the request's encoding ‖ signature (64).
    SignedRequest, request: ShareRequest, REQUEST_CONTEXT, "signed share request"
);

signed_type!(
    /// A [`Grant`] signed by the patient with context [`GRANT_CONTEXT`].
    ///
    /// Encoding: the grant's encoding ‖ signature (64).
    SignedGrant, grant: Grant, GRANT_CONTEXT, "signed grant"
);

signed_type!(
    /// A [`Revocation`] signed by the patient with context [`REVOKE_CONTEXT`].
    ///
    /// Encoding: the revocation's encoding (41) ‖ signature (64).
    SignedRevocation, revocation: Revocation, REVOKE_CONTEXT, "signed revocation"
);

signed_type!(
    /// A [`Denial`] signed by the patient with context [`DENY_CONTEXT`].
    ///
    /// Encoding: the denial's encoding (57) ‖ signature (64).
    SignedDenial, denial: Denial, DENY_CONTEXT, "signed denial"
);

impl SignedRequest {
    /// Checks the signature against `requester`: the request's recipient when it asks for
    /// itself, or the configured key of the peer gateway asking for it.
    ///
    /// # Errors
    /// [`Error::BadSignature`].
    pub fn verify(&self, requester: &Recipient) -> Result<()> {
        requester.verify(REQUEST_CONTEXT, &self.request.encode(), &self.signature)
    }
}

impl SignedGrant {
    /// The grant's id: the first 16 bytes of SHA-256("medgate/v1/grant-id" ‖ 0x00 ‖ grant
    /// encoding).
    ///
    /// Over the grant, not the signature: the patient could sign the same grant again and get a
    /// different valid signature, which must not make it a different (unused, unrevoked) grant.
    pub fn id(&self) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(GRANT_ID_PREFIX);
        h.update(self.grant.encode());
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        id
    }

    /// Everything the gateway must know before re-wrapping keys under this grant: it was signed
    /// by `patient` (the key on file for `request.patient_id`), names that key, this
    /// `institution`, and `request` by hash, gives exactly the request's recipient and scope, ends
    /// no later than the request asked, and has not ended at `now_ms`.
    ///
    /// Not checked here, and the gateway's job: that the grant id is not revoked or already used,
    /// that `request` itself was accepted from that requester, and which records are the
    /// patient's (see [`Scope::covers`]).
    ///
    /// # Errors
    /// [`Error::BadSignature`]; [`Error::GrantMismatch`] naming the field ("patient key",
    /// "institution", "request", "recipient", "scope", "expiry"); [`Error::GrantExpired`].
    pub fn check(
        &self,
        patient: &Recipient,
        institution: [u8; 32],
        request: &ShareRequest,
        now_ms: u64,
    ) -> Result<()> {
        let g = &self.grant;
        patient.verify(GRANT_CONTEXT, &g.encode(), &self.signature)?;
        if !ct_eq(&g.patient_key_id, &patient.fingerprint()) {
            return Err(Error::GrantMismatch("patient key"));
        }
        if !ct_eq(&g.institution, &institution) || !ct_eq(&request.institution, &institution) {
            return Err(Error::GrantMismatch("institution"));
        }
        if !ct_eq(&g.request_hash, &request.hash()) {
            return Err(Error::GrantMismatch("request"));
        }
        if g.recipient != request.recipient {
            return Err(Error::GrantMismatch("recipient"));
        }
        if g.scope != request.scope {
            return Err(Error::GrantMismatch("scope"));
        }
        // A patient may shorten the access asked for, never lengthen it.
        if g.expires_ms > request.expires_ms {
            return Err(Error::GrantMismatch("expiry"));
        }
        if now_ms >= g.expires_ms {
            return Err(Error::GrantExpired {
                expires_ms: g.expires_ms,
                now_ms,
            });
        }
        Ok(())
    }
}

impl SignedRevocation {
    /// Checks that `patient` signed this revocation and that it withdraws `grant`, a grant made
    /// by the same key.
    ///
    /// # Errors
    /// [`Error::BadSignature`]; [`Error::GrantMismatch`] ("grant id", "patient key").
    pub fn check(&self, patient: &Recipient, grant: &SignedGrant) -> Result<()> {
        patient.verify(REVOKE_CONTEXT, &self.revocation.encode(), &self.signature)?;
        if !ct_eq(&self.revocation.grant_id, &grant.id()) {
            return Err(Error::GrantMismatch("grant id"));
        }
        if !ct_eq(&grant.grant.patient_key_id, &patient.fingerprint()) {
            return Err(Error::GrantMismatch("patient key"));
        }
        Ok(())
    }
}

impl SignedDenial {
    /// Checks that `patient` (the key on file for `request.patient_id`) signed this denial of
    /// `request`.
    ///
    /// # Errors
    /// [`Error::BadSignature`]; [`Error::GrantMismatch`] ("request").
    pub fn check(&self, patient: &Recipient, request: &ShareRequest) -> Result<()> {
        patient.verify(DENY_CONTEXT, &self.denial.encode(), &self.signature)?;
        if !ct_eq(&self.denial.request_hash, &request.hash()) {
            return Err(Error::GrantMismatch("request"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Patient authentication

/// A challenge the gateway hands a patient who wants to act (list requests, grant, revoke).
///
/// AuthChallenge, v1:
///
/// | offset | len   | field                                            |
/// |--------|-------|--------------------------------------------------|
/// | 0      | 1     | version = 0x01                                   |
/// | 1      | 32    | institution: fingerprint of the issuing gateway  |
/// | 33     | 32    | challenge: random                                |
/// | 65     | 8     | issued_ms (u64), on the gateway's clock          |
/// | 73     | 4 + n | patient_id (`str`, 1..=256 bytes)                |
///
/// The gateway keeps the challenges it issued and deletes each on first use, which makes an
/// [`AuthToken`] single-use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthChallenge {
    /// Fingerprint of the gateway that issued the challenge.
    pub institution: [u8; 32],
    /// The patient who is to answer it.
    pub patient_id: String,
    /// Random bytes.
    pub challenge: [u8; 32],
    /// When it was issued, Unix milliseconds on the gateway's clock.
    pub issued_ms: u64,
}

impl AuthChallenge {
    /// A fresh challenge with 32 random bytes from the operating system's CSPRNG.
    pub fn new(institution: [u8; 32], patient_id: &str, issued_ms: u64) -> AuthChallenge {
        let mut challenge = [0u8; 32];
        OsRng.fill_bytes(&mut challenge);
        AuthChallenge {
            institution,
            patient_id: patient_id.to_owned(),
            challenge,
            issued_ms,
        }
    }
}

impl Wire for AuthChallenge {
    const NAMES: &'static Names = &names!("auth challenge");

    fn write(&self, out: &mut Vec<u8>) {
        out.push(CONSENT_V1);
        out.extend_from_slice(&self.institution);
        out.extend_from_slice(&self.challenge);
        out.extend_from_slice(&self.issued_ms.to_be_bytes());
        put_str(out, &self.patient_id);
    }

    fn read(r: &mut Reader<'_>) -> Result<AuthChallenge> {
        r.version()?;
        let c = AuthChallenge {
            institution: r.array()?,
            challenge: r.array()?,
            issued_ms: r.u64()?,
            patient_id: r.string()?,
        };
        check_patient_id(&c.patient_id, "auth challenge: patient id")?;
        Ok(c)
    }
}

wire_methods!(AuthChallenge, "auth challenge");

/// HKDF purpose (info) of the [`ChallengeKey`]: its own, so the key is independent of every
/// other key derived from the institution's secret.
pub const CHALLENGE_KEY_PURPOSE: &str = "medgate/v1/patient-challenge-mac";
/// Domain separation prefix of the challenge MAC input.
const CHALLENGE_MAC_PREFIX: &[u8] = b"medgate/v1/patient-challenge\0";
/// Bytes of [`AuthChallenge::challenge`] that are random; the rest is the MAC.
const CHALLENGE_NONCE_LEN: usize = 16;

/// The key a gateway authenticates the patient challenges it issues with, so that it keeps
/// no state per challenge: any gateway of the institution (same identity) recognises its
/// own challenges, and a flood of challenge requests costs nothing but CPU.
///
/// Derived with [`crate::Identity::challenge_key`]: HKDF-SHA256(ikm = X25519 secret,
/// salt = "medgate/v1/vault", info = [`CHALLENGE_KEY_PURPOSE`]). Wiped on drop.
///
/// An issued challenge is an ordinary [`AuthChallenge`] v1 (the byte table is unchanged);
/// its 32 `challenge` bytes are:
///
/// | offset | len | field                                                               |
/// |--------|-----|---------------------------------------------------------------------|
/// | 0      | 16  | nonce: random                                                       |
/// | 16     | 16  | tag: HMAC-SHA256(key, "medgate/v1/patient-challenge" ‖ 0x00 ‖ institution (32) ‖ nonce (16) ‖ issued_ms (u64) ‖ patient_id (`str`))[..16] |
///
/// The challenge expires a fixed window after `issued_ms` (the gateway's setting), so the
/// challenge carries its own expiry. Challenges made by older gateways (32 random bytes)
/// simply fail the tag check and the patient asks for a new one.
pub struct ChallengeKey(zeroize::Zeroizing<[u8; 32]>);

impl ChallengeKey {
    pub(crate) fn from_bytes(key: zeroize::Zeroizing<[u8; 32]>) -> ChallengeKey {
        ChallengeKey(key)
    }

    fn tag(&self, c: &AuthChallenge, nonce: &[u8]) -> [u8; 16] {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_ref())
            .expect("Invariant: HMAC takes a key of any length");
        mac.update(CHALLENGE_MAC_PREFIX);
        mac.update(&c.institution);
        mac.update(nonce);
        mac.update(&c.issued_ms.to_be_bytes());
        let mut id = Vec::with_capacity(4 + c.patient_id.len());
        put_str(&mut id, &c.patient_id);
        mac.update(&id);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&full[..16]);
        tag
    }

    /// A fresh challenge for `patient_id` issued at `issued_ms`, with a random nonce and
    /// this key's tag.
    pub fn issue(&self, institution: [u8; 32], patient_id: &str, issued_ms: u64) -> AuthChallenge {
        let mut c = AuthChallenge {
            institution,
            patient_id: patient_id.to_owned(),
            challenge: [0u8; 32],
            issued_ms,
        };
        let mut nonce = [0u8; CHALLENGE_NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let tag = self.tag(&c, &nonce);
        c.challenge[..CHALLENGE_NONCE_LEN].copy_from_slice(&nonce);
        c.challenge[CHALLENGE_NONCE_LEN..].copy_from_slice(&tag);
        c
    }

    /// Checks that this key issued `c` as it stands (institution, nonce, time and patient
    /// unchanged); the tag is compared in constant time.
    ///
    /// # Errors
    /// [`Error::AuthMismatch`] ("challenge").
    pub fn check(&self, c: &AuthChallenge) -> Result<()> {
        let (nonce, tag) = c.challenge.split_at(CHALLENGE_NONCE_LEN);
        if ct_eq(&self.tag(c, nonce), tag) {
            Ok(())
        } else {
            Err(Error::AuthMismatch("challenge"))
        }
    }
}

impl std::fmt::Debug for ChallengeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChallengeKey(<redacted>)")
    }
}

/// What a patient signs to authorize one HTTP request: a challenge, and the request it answers.
///
/// AuthToken, v1:
///
/// | offset | len   | field                                                          |
/// |--------|-------|----------------------------------------------------------------|
/// | 0      | 1     | version = 0x01                                                 |
/// | 1      | 4 + n | challenge: u32 length ‖ [`AuthChallenge`] encoding              |
/// | …      | 4 + n | method (`str`, 1..=16 bytes of `A-Z`)                          |
/// | …      | 4 + n | path (`str`, 1..=8192 bytes starting with `/`, no control characters): request target, query included |
/// | …      | 32    | SHA-256 of the request body                                    |
///
/// Signed as a [`SignedAuth`] with context [`AUTH_CONTEXT`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthToken {
    /// The challenge answered.
    pub challenge: AuthChallenge,
    /// The HTTP method, uppercase (`GET`, `POST`, ...).
    pub method: String,
    /// The request target as sent: path and query, e.g. `/v1/consent/grants?x=1`.
    pub path: String,
    /// SHA-256 of the request body (of the empty string when there is none).
    pub body_sha256: [u8; 32],
}

impl AuthToken {
    /// The token for `method path` with `body`.
    pub fn new(challenge: AuthChallenge, method: &str, path: &str, body: &[u8]) -> AuthToken {
        AuthToken {
            challenge,
            method: method.to_owned(),
            path: path.to_owned(),
            body_sha256: Sha256::digest(body).into(),
        }
    }

    /// Signs with context [`AUTH_CONTEXT`].
    pub fn sign(&self, patient: &Identity) -> SignedAuth {
        SignedAuth {
            signature: patient.sign(AUTH_CONTEXT, &self.encode()),
            token: self.clone(),
        }
    }

    /// Checks the field rules in the byte table.
    ///
    /// # Errors
    /// [`Error::Malformed`] naming the field.
    pub fn validate(&self) -> Result<()> {
        check_patient_id(&self.challenge.patient_id, "auth challenge: patient id")?;
        let m = self.method.as_bytes();
        if m.is_empty() || m.len() > MAX_METHOD_LEN || !m.iter().all(u8::is_ascii_uppercase) {
            return Err(Error::Malformed("auth token: method"));
        }
        if !self.path.starts_with('/') {
            return Err(Error::Malformed("auth token: path"));
        }
        check_text(&self.path, MAX_PATH_LEN, false, "auth token: path")
    }
}

impl Wire for AuthToken {
    const NAMES: &'static Names = &names!("auth token");

    fn write(&self, out: &mut Vec<u8>) {
        out.push(CONSENT_V1);
        put_bytes(out, &self.challenge.encode());
        put_str(out, &self.method);
        put_str(out, &self.path);
        out.extend_from_slice(&self.body_sha256);
    }

    fn read(r: &mut Reader<'_>) -> Result<AuthToken> {
        r.version()?;
        let t = AuthToken {
            challenge: AuthChallenge::decode(r.bytes()?)?,
            method: r.string()?,
            path: r.string()?,
            body_sha256: r.array()?,
        };
        t.validate()?;
        Ok(t)
    }
}

wire_methods!(AuthToken, "auth token");

signed_type!(
    /// An [`AuthToken`] signed by the patient with context [`AUTH_CONTEXT`]: what a patient
    /// sends (as text, e.g. in a header) with the request it authorizes.
    ///
    /// Encoding: the token's encoding ‖ signature (64).
    SignedAuth, token: AuthToken, AUTH_CONTEXT, "signed auth token"
);

impl SignedAuth {
    /// Checks that `patient` (the key on file for the challenge's patient) signed exactly
    /// `expected` (which the gateway builds from the challenge it stored and the request it
    /// received), and that the challenge was issued no more than `max_age_ms` from `now_ms`.
    ///
    /// The gateway must delete the challenge once it is used.
    ///
    /// # Errors
    /// [`Error::BadSignature`]; [`Error::AuthMismatch`] naming the field ("institution",
    /// "patient", "challenge", "method", "path", "body"); [`Error::AuthExpired`].
    pub fn verify(
        &self,
        patient: &Recipient,
        expected: &AuthToken,
        now_ms: u64,
        max_age_ms: u64,
    ) -> Result<()> {
        patient.verify(AUTH_CONTEXT, &self.token.encode(), &self.signature)?;
        let (got, want) = (&self.token, expected);
        if !ct_eq(&got.challenge.institution, &want.challenge.institution) {
            return Err(Error::AuthMismatch("institution"));
        }
        if got.challenge.patient_id != want.challenge.patient_id {
            return Err(Error::AuthMismatch("patient"));
        }
        if !ct_eq(&got.challenge.challenge, &want.challenge.challenge)
            || got.challenge.issued_ms != want.challenge.issued_ms
        {
            return Err(Error::AuthMismatch("challenge"));
        }
        if got.method != want.method {
            return Err(Error::AuthMismatch("method"));
        }
        if got.path != want.path {
            return Err(Error::AuthMismatch("path"));
        }
        if !ct_eq(&got.body_sha256, &want.body_sha256) {
            return Err(Error::AuthMismatch("body"));
        }
        // Gateways behind one index may disagree slightly about the time, so a challenge "from
        // the future" is accepted within the same window.
        if now_ms.abs_diff(want.challenge.issued_ms) > max_age_ms {
            return Err(Error::AuthExpired);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Institution-to-institution requests

/// Longest `Host` value in a [`PeerAuth`], in bytes.
pub const MAX_HOST_LEN: usize = 255;

/// What a calling institution signs to authorize one HTTP request to another institution's
/// gateway (share requests, exchange of keys and ciphertext): the whole request, pinned to one
/// callee and one moment.
///
/// PeerAuth, v1:
///
/// | offset | len   | field                                                           |
/// |--------|-------|-----------------------------------------------------------------|
/// | 0      | 1     | version = 0x01                                                  |
/// | 1      | 64    | caller: X25519 pk ‖ Ed25519 pk of the calling institution        |
/// | 65     | 32    | callee: fingerprint of the gateway being called                  |
/// | 97     | 8     | timestamp_ms (u64), on the caller's clock                       |
/// | 105    | 16    | nonce: random; the callee refuses one it has seen in the window |
/// | 121    | 4 + n | method (`str`, 1..=16 bytes of `A-Z`)                            |
/// | …      | 4 + n | host (`str`, 1..=255 bytes, no control characters): `Host` header |
/// | …      | 4 + n | target (`str`, 1..=8192 bytes starting with `/`): path and the full query string, as sent |
/// | …      | 32    | SHA-256 of the request body                                     |
///
/// Signed as a [`SignedPeerAuth`] with context [`PEER_CONTEXT`]; nothing may follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAuth {
    /// The calling institution's recipient (whose Ed25519 key signs).
    pub caller: Recipient,
    /// Fingerprint of the gateway the request is for.
    pub callee: [u8; 32],
    /// When the caller made the request, Unix milliseconds.
    pub timestamp_ms: u64,
    /// Random; single use within the replay window.
    pub nonce: [u8; 16],
    /// HTTP method.
    pub method: String,
    /// The `Host` header the request was sent with.
    pub host: String,
    /// Path and full query string.
    pub target: String,
    /// SHA-256 of the body.
    pub body_sha256: [u8; 32],
}

impl PeerAuth {
    /// The authorization for `method host target` with `body`, now-ish and with a fresh nonce.
    pub fn new(
        caller: Recipient,
        callee: [u8; 32],
        timestamp_ms: u64,
        method: &str,
        host: &str,
        target: &str,
        body: &[u8],
    ) -> PeerAuth {
        PeerAuth {
            caller,
            callee,
            timestamp_ms,
            nonce: random_nonce(),
            method: method.to_owned(),
            host: host.to_owned(),
            target: target.to_owned(),
            body_sha256: Sha256::digest(body).into(),
        }
    }

    /// Signs with context [`PEER_CONTEXT`]; `caller` must be the identity of `self.caller`.
    pub fn sign(&self, caller: &Identity) -> SignedPeerAuth {
        SignedPeerAuth {
            signature: caller.sign(PEER_CONTEXT, &self.encode()),
            auth: self.clone(),
        }
    }

    /// Checks the field rules in the byte table.
    ///
    /// # Errors
    /// [`Error::Malformed`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let m = self.method.as_bytes();
        if m.is_empty() || m.len() > MAX_METHOD_LEN || !m.iter().all(u8::is_ascii_uppercase) {
            return Err(Error::Malformed("peer auth: method"));
        }
        if self.host.is_empty() {
            return Err(Error::Malformed("peer auth: host"));
        }
        check_text(&self.host, MAX_HOST_LEN, false, "peer auth: host")?;
        if !self.target.starts_with('/') {
            return Err(Error::Malformed("peer auth: target"));
        }
        check_text(&self.target, MAX_PATH_LEN, false, "peer auth: target")
    }
}

impl Wire for PeerAuth {
    const NAMES: &'static Names = &names!("peer auth");

    fn write(&self, out: &mut Vec<u8>) {
        out.push(CONSENT_V1);
        out.extend_from_slice(&self.caller.to_bytes());
        out.extend_from_slice(&self.callee);
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        put_str(out, &self.method);
        put_str(out, &self.host);
        put_str(out, &self.target);
        out.extend_from_slice(&self.body_sha256);
    }

    fn read(r: &mut Reader<'_>) -> Result<PeerAuth> {
        r.version()?;
        let a = PeerAuth {
            caller: r.recipient()?,
            callee: r.array()?,
            timestamp_ms: r.u64()?,
            nonce: r.array()?,
            method: r.string()?,
            host: r.string()?,
            target: r.string()?,
            body_sha256: r.array()?,
        };
        a.validate()?;
        Ok(a)
    }
}

wire_methods!(PeerAuth, "peer auth");

signed_type!(
    /// A [`PeerAuth`] signed by the calling institution with context [`PEER_CONTEXT`]: what
    /// one gateway sends (as text, in the `Authorization: Medgate-Peer ...` header) with a
    /// request to another.
    ///
    /// Encoding: the authorization's encoding ‖ signature (64).
    SignedPeerAuth, auth: PeerAuth, PEER_CONTEXT, "signed peer auth"
);

impl SignedPeerAuth {
    /// Checks that `caller`, the Recipient *configured* for the calling peer, signed exactly
    /// the request the callee received (`callee`, `method`, `host`, `target`, `body`), within
    /// `window_ms` of `now_ms` either way. The whole Recipient in the authorization (both
    /// keys) must equal `caller`, compared in constant time, and the signature is checked
    /// against `caller`'s Ed25519 key only, never a key the request brings. The callee must
    /// also check that the nonce is new.
    ///
    /// # Errors
    /// [`Error::BadSignature`]; [`Error::AuthMismatch`] naming the field ("caller", "callee",
    /// "method", "host", "target", "body"); [`Error::AuthExpired`].
    #[allow(clippy::too_many_arguments)]
    pub fn verify(
        &self,
        caller: &Recipient,
        callee: &[u8; 32],
        method: &str,
        host: &str,
        target: &str,
        body: &[u8],
        now_ms: u64,
        window_ms: u64,
    ) -> Result<()> {
        let a = &self.auth;
        caller.verify(PEER_CONTEXT, &a.encode(), &self.signature)?;
        if !a.caller.ct_eq(caller) {
            return Err(Error::AuthMismatch("caller"));
        }
        if !ct_eq(&a.callee, callee) {
            return Err(Error::AuthMismatch("callee"));
        }
        if a.method != method {
            return Err(Error::AuthMismatch("method"));
        }
        if !a.host.eq_ignore_ascii_case(host) {
            return Err(Error::AuthMismatch("host"));
        }
        if a.target != target {
            return Err(Error::AuthMismatch("target"));
        }
        let digest: [u8; 32] = Sha256::digest(body).into();
        if !ct_eq(&a.body_sha256, &digest) {
            return Err(Error::AuthMismatch("body"));
        }
        if now_ms.abs_diff(a.timestamp_ms) > window_ms {
            return Err(Error::AuthExpired);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Key registration and change

/// The message a [`registration_proof`] signs (byte table there).
fn registration_message(
    institution: &[u8; 32],
    recipient: &Recipient,
    patient_id: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 32 + 64 + 4 + patient_id.len());
    out.push(CONSENT_V1);
    out.extend_from_slice(institution);
    out.extend_from_slice(&recipient.to_bytes());
    put_str(&mut out, patient_id);
    out
}

/// Proof that whoever registers `identity`'s public key for `patient_id` at `institution` holds
/// its secret: a signature with context [`REGISTER_CONTEXT`] over this message.
///
/// Registration, v1:
///
/// | offset | len   | field                                               |
/// |--------|-------|-----------------------------------------------------|
/// | 0      | 1     | version = 0x01                                      |
/// | 1      | 32    | institution: fingerprint of the registering gateway |
/// | 33     | 64    | recipient: the key being registered                 |
/// | 97     | 4 + n | patient_id (`str`)                                  |
///
/// The institution is bound so a proof shown to one gateway cannot register the key at another.
pub fn registration_proof(
    identity: &Identity,
    institution: [u8; 32],
    patient_id: &str,
) -> Signature {
    let msg = registration_message(&institution, &identity.recipient(), patient_id);
    identity.sign(REGISTER_CONTEXT, &msg)
}

/// Checks a [`registration_proof`] for `recipient`.
///
/// # Errors
/// [`Error::BadSignature`] for a proof made for another key, institution or patient id.
pub fn verify_registration(
    recipient: &Recipient,
    institution: [u8; 32],
    patient_id: &str,
    proof: &Signature,
) -> Result<()> {
    let msg = registration_message(&institution, recipient, patient_id);
    recipient.verify(REGISTER_CONTEXT, &msg, proof)
}

/// A patient's move from the key on file to a new one, signed by the old key.
///
/// KeyChange, v1:
///
/// | offset | len   | field                                             |
/// |--------|-------|---------------------------------------------------|
/// | 0      | 1     | version = 0x01                                    |
/// | 1      | 32    | institution: fingerprint of the gateway           |
/// | 33     | 32    | old: fingerprint of the key on file               |
/// | 65     | 64    | new: the new recipient                            |
/// | 129    | 8     | issued_ms (u64)                                   |
/// | 137    | 16    | nonce                                             |
/// | 153    | 4 + n | patient_id (`str`, 1..=256 bytes)                 |
///
/// Losing the old key needs the logged break-glass procedure instead; that is not this type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChange {
    /// Fingerprint of the gateway.
    pub institution: [u8; 32],
    /// The patient.
    pub patient_id: String,
    /// Fingerprint of the key on file, which signs the change.
    pub old: [u8; 32],
    /// The key to put on file.
    pub new: Recipient,
    /// When the patient signed, Unix milliseconds.
    pub issued_ms: u64,
    /// Random.
    pub nonce: [u8; 16],
}

impl KeyChange {
    /// The change of `patient_id`'s key at `institution` from `old` to `new`, with a fresh nonce.
    pub fn new(
        institution: [u8; 32],
        patient_id: &str,
        old: &Recipient,
        new: &Recipient,
        issued_ms: u64,
    ) -> KeyChange {
        KeyChange {
            institution,
            patient_id: patient_id.to_owned(),
            old: old.fingerprint(),
            new: new.clone(),
            issued_ms,
            nonce: random_nonce(),
        }
    }

    /// Signs with the old key (context [`KEY_CHANGE_CONTEXT`]) and adds the new key's
    /// [`registration_proof`].
    ///
    /// # Errors
    /// [`Error::AuthMismatch`] ("old key", "new key") if the identities are not the keys the
    /// change names.
    pub fn sign(&self, old: &Identity, new: &Identity) -> Result<SignedKeyChange> {
        if old.recipient().fingerprint() != self.old {
            return Err(Error::AuthMismatch("old key"));
        }
        if new.recipient() != self.new {
            return Err(Error::AuthMismatch("new key"));
        }
        Ok(SignedKeyChange {
            signature: old.sign(KEY_CHANGE_CONTEXT, &self.encode()),
            new_proof: registration_proof(new, self.institution, &self.patient_id),
            change: self.clone(),
        })
    }
}

impl Wire for KeyChange {
    const NAMES: &'static Names = &names!("key change");

    fn write(&self, out: &mut Vec<u8>) {
        out.push(CONSENT_V1);
        out.extend_from_slice(&self.institution);
        out.extend_from_slice(&self.old);
        out.extend_from_slice(&self.new.to_bytes());
        out.extend_from_slice(&self.issued_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        put_str(out, &self.patient_id);
    }

    fn read(r: &mut Reader<'_>) -> Result<KeyChange> {
        r.version()?;
        let c = KeyChange {
            institution: r.array()?,
            old: r.array()?,
            new: r.recipient()?,
            issued_ms: r.u64()?,
            nonce: r.array()?,
            patient_id: r.string()?,
        };
        check_patient_id(&c.patient_id, "key change: patient id")?;
        Ok(c)
    }
}

wire_methods!(KeyChange, "key change");

/// A [`KeyChange`] signed by the old key, with the new key's proof of possession.
///
/// Encoding: the change's encoding ‖ old key's signature (64) ‖ new key's
/// [`registration_proof`] (64).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedKeyChange {
    /// What is changed.
    pub change: KeyChange,
    /// The old key's signature over the change.
    pub signature: Signature,
    /// The new key's [`registration_proof`] for the same institution and patient.
    pub new_proof: Signature,
}

impl SignedKeyChange {
    /// Checks that `current` (the key on file for `patient_id`) signed this change at
    /// `institution`, that the new key proved possession, and that the change was issued within
    /// `max_age_ms` of `now_ms` (so an old change cannot be replayed after the patient moved
    /// back to the old key).
    ///
    /// # Errors
    /// [`Error::BadSignature`] for either signature; [`Error::AuthMismatch`] ("old key",
    /// "institution", "patient", "new key"); [`Error::AuthExpired`].
    pub fn verify(
        &self,
        current: &Recipient,
        institution: [u8; 32],
        patient_id: &str,
        now_ms: u64,
        max_age_ms: u64,
    ) -> Result<()> {
        let c = &self.change;
        current.verify(KEY_CHANGE_CONTEXT, &c.encode(), &self.signature)?;
        if !ct_eq(&c.old, &current.fingerprint()) {
            return Err(Error::AuthMismatch("old key"));
        }
        if !ct_eq(&c.institution, &institution) {
            return Err(Error::AuthMismatch("institution"));
        }
        if c.patient_id != patient_id {
            return Err(Error::AuthMismatch("patient"));
        }
        if c.new == *current {
            return Err(Error::AuthMismatch("new key"));
        }
        verify_registration(&c.new, c.institution, &c.patient_id, &self.new_proof)?;
        if now_ms.abs_diff(c.issued_ms) > max_age_ms {
            return Err(Error::AuthExpired);
        }
        Ok(())
    }
}

impl Wire for SignedKeyChange {
    const NAMES: &'static Names = &names!("signed key change");

    fn write(&self, out: &mut Vec<u8>) {
        self.change.write(out);
        out.extend_from_slice(&self.signature.0);
        out.extend_from_slice(&self.new_proof.0);
    }

    fn read(r: &mut Reader<'_>) -> Result<SignedKeyChange> {
        Ok(SignedKeyChange {
            change: KeyChange::read(r)?,
            signature: Signature(r.array()?),
            new_proof: Signature(r.array()?),
        })
    }
}

wire_methods!(SignedKeyChange, "signed key change");

/// Fixed identities and samples, and the vector file format of `crate::vectors` (comment lines,
/// `key: value` header, blank line, hex body), for this module's and `patient_index`'s vectors.
#[cfg(test)]
pub(crate) mod testkit {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    use std::path::PathBuf;

    use super::*;

    pub(crate) fn seq<const N: usize>(start: u8) -> [u8; N] {
        std::array::from_fn(|i| start.wrapping_add(i as u8))
    }

    fn fixed(start: u8) -> Identity {
        Identity::from_bytes(&seq::<64>(start)).expect("fixed identity")
    }

    /// The owning gateway (the `identity` of the stanza vectors).
    pub(crate) fn institution() -> Identity {
        fixed(0x01)
    }

    /// The requesting institution, which is also the request's recipient.
    pub(crate) fn requester() -> Identity {
        fixed(0x41)
    }

    /// The patient.
    pub(crate) fn patient() -> Identity {
        fixed(0x81)
    }

    /// Anyone else.
    pub(crate) fn other() -> Identity {
        fixed(0xc1)
    }

    pub(crate) const PATIENT_ID: &str = "patient-0042";
    pub(crate) const CREATED_MS: u64 = 1_700_000_000_000;
    pub(crate) const EXPIRES_MS: u64 = CREATED_MS + 30 * 86_400_000;
    pub(crate) const ISSUED_MS: u64 = CREATED_MS + 600_000;

    /// The request pinned by `testdata/consent_request_ok.txt`.
    pub(crate) fn request() -> ShareRequest {
        ShareRequest {
            institution: institution().recipient().fingerprint(),
            patient_id: PATIENT_ID.into(),
            scope: Scope {
                records: Records::Prefix {
                    bucket: "radiology".into(),
                    prefix: "patient-0042/ct/".into(),
                },
                include_future: false,
            },
            recipient: requester().recipient(),
            requester: "St. Elsewhere Cardiology".into(),
            purpose_text: "Second opinion on CT thorax\nrequested by Dr. Ünal".into(),
            purpose_code: "TREAT".into(),
            created_ms: CREATED_MS,
            expires_ms: EXPIRES_MS,
            nonce: seq(0xa0),
        }
    }

    /// The grant of [`request`] pinned by `testdata/consent_grant_ok.txt`.
    pub(crate) fn grant() -> Grant {
        let mut g = Grant::for_request(&request(), &patient().recipient(), ISSUED_MS);
        g.nonce = seq(0xb0);
        g
    }

    pub(crate) fn outcome<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(Error::Malformed(_)) => "malformed".into(),
            Err(Error::UnsupportedVersion(_)) => "unsupported-version".into(),
            Err(Error::BadSignature) => "bad-signature".into(),
            Err(Error::Decrypt) => "decrypt-error".into(),
            Err(Error::GrantExpired { .. }) => "grant-expired".into(),
            Err(Error::GrantMismatch(f)) => format!("grant-mismatch/{f}"),
            Err(Error::AuthExpired) => "auth-expired".into(),
            Err(Error::AuthMismatch(f)) => format!("auth-mismatch/{f}"),
            Err(Error::Rollback { .. }) => "rollback".into(),
            Err(Error::IndexMismatch(f)) => format!("index-mismatch/{f}"),
            Err(e) => format!("unexpected error: {e}"),
        }
    }

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
    }

    /// One vector file.
    pub(crate) struct Vector {
        pub(crate) comment: &'static str,
        pub(crate) expect: String,
        pub(crate) header: Vec<(&'static str, String)>,
        pub(crate) body: Vec<u8>,
    }

    pub(crate) fn write(name: &str, v: Vector) {
        let mut out = String::new();
        for line in v.comment.lines() {
            writeln!(out, "# {line}").expect("String write");
        }
        writeln!(out, "expect: {}", v.expect).expect("String write");
        for (k, val) in &v.header {
            writeln!(out, "{k}: {val}").expect("String write");
        }
        out.push('\n');
        for line in hex::encode(&v.body).as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("hex is ASCII"));
            out.push('\n');
        }
        std::fs::write(dir().join(format!("{name}.txt")), out).expect("write vector");
    }

    pub(crate) struct Parsed {
        pub(crate) name: String,
        pub(crate) expect: String,
        header: BTreeMap<String, String>,
        pub(crate) body: Vec<u8>,
    }

    impl Parsed {
        pub(crate) fn get(&self, key: &str) -> &str {
            self.header
                .get(key)
                .unwrap_or_else(|| panic!("{}: missing header {key}", self.name))
        }

        pub(crate) fn has(&self, key: &str) -> bool {
            self.header.contains_key(key)
        }

        pub(crate) fn hex(&self, key: &str) -> Vec<u8> {
            hex::decode(self.get(key)).unwrap_or_else(|_| panic!("{}: bad hex in {key}", self.name))
        }

        pub(crate) fn array<const N: usize>(&self, key: &str) -> [u8; N] {
            self.hex(key)
                .try_into()
                .unwrap_or_else(|_| panic!("{}: {key} is not {N} bytes", self.name))
        }

        pub(crate) fn u64(&self, key: &str) -> u64 {
            self.get(key)
                .parse()
                .unwrap_or_else(|_| panic!("{}: {key} is not a u64", self.name))
        }

        pub(crate) fn identity(&self, key: &str) -> Identity {
            Identity::from_bytes(&self.hex(key)).expect("identity")
        }

        pub(crate) fn recipient(&self, key: &str) -> Recipient {
            Recipient::from_bytes(&self.hex(key)).expect("recipient")
        }
    }

    /// Every `testdata/<prefix>*.txt`, parsed, in name order.
    pub(crate) fn read_all(prefix: &str) -> Vec<Parsed> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir())
            .expect("testdata/ exists")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "txt")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
            })
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|path| {
                let name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .expect("utf-8 name")
                    .to_string();
                let text = std::fs::read_to_string(&path).expect("read vector");
                let (head, body) = text.split_once("\n\n").expect("blank line after header");
                let mut header = BTreeMap::new();
                for line in head.lines().filter(|l| !l.starts_with('#')) {
                    let (k, v) = line.split_once(": ").expect("key: value");
                    header.insert(k.to_string(), v.to_string());
                }
                let expect = header.remove("expect").expect("expect header");
                let body =
                    hex::decode(body.split_whitespace().collect::<String>()).expect("hex body");
                Parsed {
                    name,
                    expect,
                    header,
                    body,
                }
            })
            .collect()
    }
}

/// The `testdata/consent_*.txt` vectors: a deterministic generator (run explicitly with
/// `cargo test -p medgate-keyring -- --ignored generate_consent_vectors`) and the check that every
/// file still decodes and verifies (or fails) as its header says. Ed25519 signatures are
/// deterministic, so `ok` files are also re-signed and must reproduce byte for byte.
///
/// Headers: `kind` picks the check; keys are hex (`*-identity` are the test secrets, others
/// public recipients, 64 bytes, or fingerprints, 32 bytes); times are decimal Unix milliseconds.
#[cfg(test)]
mod consent_vectors {
    use super::testkit::{self, outcome, seq, write, Parsed, Vector};
    use super::*;

    fn h(b: impl AsRef<[u8]>) -> String {
        hex::encode(b)
    }

    fn case(
        comment: &'static str,
        expect: &str,
        header: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> Vector {
        Vector {
            comment,
            expect: expect.into(),
            header,
            body,
        }
    }

    fn flip_last(mut b: Vec<u8>) -> Vec<u8> {
        if let Some(x) = b.last_mut() {
            *x ^= 0x01;
        }
        b
    }

    #[test]
    #[ignore = "writes testdata/; run explicitly, only when adding vectors"]
    fn generate_consent_vectors() {
        let (inst, req_id, pat, other) = (
            testkit::institution(),
            testkit::requester(),
            testkit::patient(),
            testkit::other(),
        );
        let inst_fp = inst.recipient().fingerprint();
        let request = testkit::request();
        let req_bytes = request.encode();

        // Share requests.
        let req_header = || {
            vec![
                ("kind", "request".to_string()),
                ("hash", h(request.hash())),
                ("text", request.to_text()),
            ]
        };
        write(
            "consent_request_ok",
            case(
                "consent::testkit::request(): a prefix scope, non-ASCII and a newline in the purpose.",
                "ok",
                req_header(),
                req_bytes.clone(),
            ),
        );
        let mut v2 = req_bytes.clone();
        v2[0] = 0x02;
        write(
            "consent_request_bad_version",
            case(
                "Version byte 0x02.",
                "unsupported-version",
                req_header(),
                v2,
            ),
        );
        write(
            "consent_request_truncated",
            case(
                "Last byte of the purpose text missing.",
                "malformed",
                req_header(),
                req_bytes[..req_bytes.len() - 1].to_vec(),
            ),
        );
        write(
            "consent_request_trailing",
            case(
                "One byte after the purpose text.",
                "malformed",
                req_header(),
                [req_bytes.as_slice(), &[0]].concat(),
            ),
        );
        let mut esc = request.clone();
        esc.requester = "Evil\u{1b}[2J Clinic".into();
        write(
            "consent_request_control_char",
            case(
                "The requester name carries a terminal escape: refused.",
                "malformed",
                req_header(),
                esc.encode(),
            ),
        );

        let signed_req = request.sign(&req_id);
        let sreq_header = |signer: &Identity, with_secret: bool| {
            let mut hd = vec![
                ("kind", "signed-request".to_string()),
                ("signer", h(signer.recipient().to_bytes())),
            ];
            if with_secret {
                hd.push(("signer-identity", h(signer.to_bytes().as_ref())));
            }
            hd
        };
        write(
            "consent_signed_request_ok",
            case(
                "The request signed by its recipient (context medgate/v1/request).",
                "ok",
                sreq_header(&req_id, true),
                signed_req.encode(),
            ),
        );
        write(
            "consent_signed_request_other_signer",
            case(
                "The same signed request checked against another key.",
                "bad-signature",
                sreq_header(&other, false),
                signed_req.encode(),
            ),
        );

        // Grants.
        let grant = testkit::grant();
        let signed = grant.sign(&pat);
        let sg = signed.encode();
        let grant_header = |inst_fp: [u8; 32], req: &ShareRequest, now: u64| {
            vec![
                ("kind", "grant".to_string()),
                ("patient", h(pat.recipient().to_bytes())),
                ("institution", h(inst_fp)),
                ("request", h(req.encode())),
                ("now-ms", now.to_string()),
            ]
        };
        let now = testkit::ISSUED_MS + 1;
        let mut ok_header = grant_header(inst_fp, &request, now);
        ok_header.extend([
            ("id", h(signed.id())),
            ("text", signed.to_text()),
            ("signer-identity", h(pat.to_bytes().as_ref())),
        ]);
        write(
            "consent_grant_ok",
            case(
                "consent::testkit::grant() signed by the patient, checked against the request it approves.",
                "ok",
                ok_header,
                sg.clone(),
            ),
        );
        write(
            "consent_grant_bad_signature",
            case(
                "Last signature byte flipped.",
                "bad-signature",
                grant_header(inst_fp, &request, now),
                flip_last(sg.clone()),
            ),
        );
        write(
            "consent_grant_other_key",
            case(
                "The same grant (naming the patient's key id) signed by another key.",
                "bad-signature",
                grant_header(inst_fp, &request, now),
                grant.sign(&other).encode(),
            ),
        );
        let mut edited = sg.clone();
        // The scope's include_future flag: the byte after the kind at offset 193.
        edited[194] ^= 0x01;
        write(
            "consent_grant_edited_scope",
            case(
                "include_future switched on after signing.",
                "bad-signature",
                grant_header(inst_fp, &request, now),
                edited,
            ),
        );
        let mut edited = sg.clone();
        edited[169] ^= 0x01;
        write(
            "consent_grant_edited_expiry",
            case(
                "The expiry's top byte changed after signing.",
                "bad-signature",
                grant_header(inst_fp, &request, now),
                edited,
            ),
        );
        let mut another = request.clone();
        another.nonce = seq(0xa1);
        write(
            "consent_grant_other_request",
            case(
                "A valid grant replayed for another request (same fields, another nonce).",
                "grant-mismatch/request",
                grant_header(inst_fp, &another, now),
                sg.clone(),
            ),
        );
        write(
            "consent_grant_wrong_institution",
            case(
                "A valid grant presented to another institution.",
                "grant-mismatch/institution",
                grant_header(other.recipient().fingerprint(), &request, now),
                sg.clone(),
            ),
        );
        write(
            "consent_grant_expired",
            case(
                "Checked at the expiry instant.",
                "grant-expired",
                grant_header(inst_fp, &request, testkit::EXPIRES_MS),
                sg.clone(),
            ),
        );
        let mut longer = grant.clone();
        longer.expires_ms += 1;
        write(
            "consent_grant_longer_expiry",
            case(
                "Signed by the patient with an expiry past the one requested.",
                "grant-mismatch/expiry",
                grant_header(inst_fp, &request, now),
                longer.sign(&pat).encode(),
            ),
        );
        let mut wider = grant.clone();
        wider.scope.records = Records::Patient;
        write(
            "consent_grant_wider_scope",
            case(
                "Signed by the patient with a wider scope than requested.",
                "grant-mismatch/scope",
                grant_header(inst_fp, &request, now),
                wider.sign(&pat).encode(),
            ),
        );
        write(
            "consent_grant_truncated",
            case(
                "Last signature byte missing.",
                "malformed",
                grant_header(inst_fp, &request, now),
                sg[..sg.len() - 1].to_vec(),
            ),
        );
        write(
            "consent_grant_trailing",
            case(
                "One byte after the signature.",
                "malformed",
                grant_header(inst_fp, &request, now),
                [sg.as_slice(), &[0]].concat(),
            ),
        );

        // Revocation and denial.
        let revocation = Revocation {
            grant_id: signed.id(),
            issued_ms: testkit::ISSUED_MS + 1000,
            nonce: seq(0xc0),
        };
        let rev_header = |g: &SignedGrant, with_secret: bool| {
            let mut hd = vec![
                ("kind", "revocation".to_string()),
                ("patient", h(pat.recipient().to_bytes())),
                ("grant", h(g.encode())),
            ];
            if with_secret {
                hd.push(("signer-identity", h(pat.to_bytes().as_ref())));
            }
            hd
        };
        let sr = revocation.sign(&pat).encode();
        write(
            "consent_revocation_ok",
            case(
                "The patient revokes consent_grant_ok's grant.",
                "ok",
                rev_header(&signed, true),
                sr.clone(),
            ),
        );
        let mut other_grant = grant.clone();
        other_grant.nonce = seq(0xb1);
        write(
            "consent_revocation_other_grant",
            case(
                "The revocation checked against another grant.",
                "grant-mismatch/grant id",
                rev_header(&other_grant.sign(&pat), false),
                sr,
            ),
        );
        let denial = Denial {
            request_hash: request.hash(),
            issued_ms: testkit::ISSUED_MS,
            nonce: seq(0xd0),
        };
        let den_header = |r: &ShareRequest, with_secret: bool| {
            let mut hd = vec![
                ("kind", "denial".to_string()),
                ("patient", h(pat.recipient().to_bytes())),
                ("request", h(r.encode())),
            ];
            if with_secret {
                hd.push(("signer-identity", h(pat.to_bytes().as_ref())));
            }
            hd
        };
        let sd = denial.sign(&pat).encode();
        write(
            "consent_denial_ok",
            case(
                "The patient refuses consent_request_ok's request.",
                "ok",
                den_header(&request, true),
                sd.clone(),
            ),
        );
        write(
            "consent_denial_other_request",
            case(
                "The denial checked against another request.",
                "grant-mismatch/request",
                den_header(&another, false),
                sd,
            ),
        );

        // Patient authentication.
        let challenge = AuthChallenge {
            institution: inst_fp,
            patient_id: testkit::PATIENT_ID.into(),
            challenge: seq(0xe0),
            issued_ms: testkit::CREATED_MS,
        };
        let body = br#"{"grant":"..."}"#;
        let token = AuthToken::new(challenge.clone(), "POST", "/v1/consent/grants", body);
        let st = token.sign(&pat).encode();
        let auth_header = |expected: &AuthToken, now: u64, with_secret: bool| {
            let mut hd = vec![
                ("kind", "auth".to_string()),
                ("patient", h(pat.recipient().to_bytes())),
                ("expected", h(expected.encode())),
                ("now-ms", now.to_string()),
                ("max-age-ms", "300000".to_string()),
            ];
            if with_secret {
                hd.push(("signer-identity", h(pat.to_bytes().as_ref())));
            }
            hd
        };
        write(
            "consent_auth_ok",
            case(
                "A patient's token for POST /v1/consent/grants, 10 s after the challenge.",
                "ok",
                auth_header(&token, testkit::CREATED_MS + 10_000, true),
                st.clone(),
            ),
        );
        write(
            "consent_auth_stale",
            case(
                "The same token presented 5 min 1 ms after the challenge.",
                "auth-expired",
                auth_header(&token, testkit::CREATED_MS + 300_001, false),
                st.clone(),
            ),
        );
        let elsewhere = AuthToken::new(challenge.clone(), "POST", "/v1/consent/revocations", body);
        write(
            "consent_auth_wrong_path",
            case(
                "The token replayed on another path.",
                "auth-mismatch/path",
                auth_header(&elsewhere, testkit::CREATED_MS + 10_000, false),
                st.clone(),
            ),
        );
        let other_body = AuthToken::new(challenge, "POST", "/v1/consent/grants", b"{}");
        write(
            "consent_auth_wrong_body",
            case(
                "The token replayed with another body.",
                "auth-mismatch/body",
                auth_header(&other_body, testkit::CREATED_MS + 10_000, false),
                st,
            ),
        );

        // Institution-to-institution requests.
        let peer_auth = PeerAuth {
            caller: req_id.recipient(),
            callee: inst_fp,
            timestamp_ms: testkit::CREATED_MS,
            nonce: seq(0x70),
            method: "POST".into(),
            host: "gateway-a.example:9443".into(),
            target: "/v1/peer/exchange?grant=g1".into(),
            body_sha256: Sha256::digest(br#"{"bucket":"b","key":"k"}"#).into(),
        };
        let peer_header = |callee: [u8; 32], target: &str, now: u64, with_secret: bool| {
            let mut hd = vec![
                ("kind", "peer".to_string()),
                ("callee", h(callee)),
                ("method", "POST".to_string()),
                ("host", "gateway-a.example:9443".to_string()),
                ("target", target.to_string()),
                ("body", h(br#"{"bucket":"b","key":"k"}"#)),
                ("now-ms", now.to_string()),
                ("window-ms", "300000".to_string()),
            ];
            if with_secret {
                hd.push(("signer-identity", h(req_id.to_bytes().as_ref())));
            }
            hd
        };
        let sp = peer_auth.sign(&req_id).encode();
        write(
            "consent_peer_ok",
            case(
                "Gateway B's signed exchange call to gateway A, 2 s after B made it.",
                "ok",
                peer_header(
                    inst_fp,
                    "/v1/peer/exchange?grant=g1",
                    testkit::CREATED_MS + 2_000,
                    true,
                ),
                sp.clone(),
            ),
        );
        write(
            "consent_peer_stale",
            case(
                "The same call replayed 5 min 1 ms later.",
                "auth-expired",
                peer_header(
                    inst_fp,
                    "/v1/peer/exchange?grant=g1",
                    testkit::CREATED_MS + 300_001,
                    false,
                ),
                sp.clone(),
            ),
        );
        write(
            "consent_peer_other_query",
            case(
                "The same signature on another query string.",
                "auth-mismatch/target",
                peer_header(
                    inst_fp,
                    "/v1/peer/exchange?grant=g2",
                    testkit::CREATED_MS + 2_000,
                    false,
                ),
                sp.clone(),
            ),
        );
        write(
            "consent_peer_other_callee",
            case(
                "The same call presented to another gateway.",
                "auth-mismatch/callee",
                peer_header(
                    other.recipient().fingerprint(),
                    "/v1/peer/exchange?grant=g1",
                    testkit::CREATED_MS + 2_000,
                    false,
                ),
                sp.clone(),
            ),
        );
        let mut forged = peer_auth.clone();
        forged.caller = other.recipient();
        let mut forged_bytes = forged.encode();
        forged_bytes.extend_from_slice(&peer_auth.sign(&req_id).signature.0);
        write(
            "consent_peer_other_caller",
            case(
                "B's signature presented as if another institution had made the call.",
                "bad-signature",
                peer_header(
                    inst_fp,
                    "/v1/peer/exchange?grant=g1",
                    testkit::CREATED_MS + 2_000,
                    false,
                ),
                forged_bytes,
            ),
        );
        // Someone who knows B's Recipient puts B's X25519 key beside their own Ed25519 key and
        // signs with it: refused against B's configured Recipient.
        let mut impersonated = peer_auth.clone();
        impersonated.caller = Recipient {
            x25519: *req_id.recipient().x25519(),
            ed25519: other.recipient().ed25519,
        };
        let mut hd = peer_header(
            inst_fp,
            "/v1/peer/exchange?grant=g1",
            testkit::CREATED_MS + 2_000,
            false,
        );
        hd.push(("caller", h(req_id.recipient().to_bytes())));
        write(
            "consent_peer_impersonated",
            case(
                "B's X25519 key with another Ed25519 key, signed by that key, checked against B.",
                "bad-signature",
                hd,
                impersonated.sign(&other).encode(),
            ),
        );

        // Registration and key change.
        let reg_header = |inst_fp: [u8; 32], with_secret: bool| {
            let mut hd = vec![
                ("kind", "register".to_string()),
                ("recipient", h(pat.recipient().to_bytes())),
                ("institution", h(inst_fp)),
                ("patient-id", testkit::PATIENT_ID.to_string()),
            ];
            if with_secret {
                hd.push(("signer-identity", h(pat.to_bytes().as_ref())));
            }
            hd
        };
        let proof = registration_proof(&pat, inst_fp, testkit::PATIENT_ID)
            .0
            .to_vec();
        write(
            "consent_register_ok",
            case(
                "Proof of possession for registering the patient's key (context medgate/v1/register).",
                "ok",
                reg_header(inst_fp, true),
                proof.clone(),
            ),
        );
        write(
            "consent_register_other_institution",
            case(
                "The proof replayed at another institution.",
                "bad-signature",
                reg_header(other.recipient().fingerprint(), false),
                proof,
            ),
        );
        let change = KeyChange {
            institution: inst_fp,
            patient_id: testkit::PATIENT_ID.into(),
            old: pat.recipient().fingerprint(),
            new: other.recipient(),
            issued_ms: testkit::CREATED_MS,
            nonce: seq(0xf0),
        };
        let skc = change.sign(&pat, &other).expect("matching keys");
        let kc_header = |with_secret: bool| {
            let mut hd = vec![
                ("kind", "key-change".to_string()),
                ("current", h(pat.recipient().to_bytes())),
                ("institution", h(inst_fp)),
                ("patient-id", testkit::PATIENT_ID.to_string()),
                ("now-ms", (testkit::CREATED_MS + 1000).to_string()),
                ("max-age-ms", "300000".to_string()),
            ];
            if with_secret {
                hd.push(("signer-identity", h(pat.to_bytes().as_ref())));
                hd.push(("new-identity", h(other.to_bytes().as_ref())));
            }
            hd
        };
        write(
            "consent_key_change_ok",
            case(
                "The patient moves from their key to `new-identity`'s, signed by the old key, with the new key's proof.",
                "ok",
                kc_header(true),
                skc.encode(),
            ),
        );
        let mut bad = skc.clone();
        bad.new_proof = registration_proof(&other, inst_fp, "patient-0043");
        write(
            "consent_key_change_bad_proof",
            case(
                "The new key's proof is for another patient id.",
                "bad-signature",
                kc_header(false),
                bad.encode(),
            ),
        );
    }

    /// Re-signs `payload` with `signer-identity` (when the header has one) and compares.
    fn resigned(v: &Parsed, context: &str, payload: &[u8], sig: &Signature) {
        if v.has("signer-identity") {
            let again = v.identity("signer-identity").sign(context, payload);
            assert_eq!(
                &again, sig,
                "{}: re-signing must reproduce the signature",
                v.name
            );
        }
    }

    fn check(v: &Parsed) -> String {
        match v.get("kind") {
            "request" => {
                let r = ShareRequest::decode(&v.body);
                if let Ok(req) = &r {
                    assert_eq!(req, &testkit::request());
                    assert_eq!(req.encode(), v.body);
                    assert_eq!(req.hash().to_vec(), v.hex("hash"));
                    assert_eq!(req.to_text(), v.get("text"));
                    assert_eq!(ShareRequest::from_text(v.get("text")).as_ref(), Ok(req));
                }
                outcome(r)
            }
            "signed-request" => {
                let r = SignedRequest::decode(&v.body).and_then(|s| {
                    s.verify(&v.recipient("signer"))?;
                    Ok(s)
                });
                if let Ok(s) = &r {
                    assert_eq!(s.encode(), v.body);
                    resigned(v, REQUEST_CONTEXT, &s.request.encode(), &s.signature);
                }
                outcome(r)
            }
            "grant" => {
                let request = ShareRequest::decode(&v.hex("request")).expect("request");
                let r = SignedGrant::decode(&v.body).and_then(|g| {
                    g.check(
                        &v.recipient("patient"),
                        v.array("institution"),
                        &request,
                        v.u64("now-ms"),
                    )?;
                    Ok(g)
                });
                if let Ok(g) = &r {
                    assert_eq!(g.encode(), v.body);
                    assert_eq!(g.id().to_vec(), v.hex("id"));
                    assert_eq!(g.to_text(), v.get("text"));
                    assert_eq!(SignedGrant::from_text(v.get("text")).as_ref(), Ok(g));
                    resigned(v, GRANT_CONTEXT, &g.grant.encode(), &g.signature);
                }
                outcome(r)
            }
            "revocation" => {
                let grant = SignedGrant::decode(&v.hex("grant")).expect("grant");
                let r = SignedRevocation::decode(&v.body).and_then(|s| {
                    s.check(&v.recipient("patient"), &grant)?;
                    Ok(s)
                });
                if let Ok(s) = &r {
                    assert_eq!(s.encode(), v.body);
                    resigned(v, REVOKE_CONTEXT, &s.revocation.encode(), &s.signature);
                }
                outcome(r)
            }
            "denial" => {
                let request = ShareRequest::decode(&v.hex("request")).expect("request");
                let r = SignedDenial::decode(&v.body).and_then(|s| {
                    s.check(&v.recipient("patient"), &request)?;
                    Ok(s)
                });
                if let Ok(s) = &r {
                    assert_eq!(s.encode(), v.body);
                    resigned(v, DENY_CONTEXT, &s.denial.encode(), &s.signature);
                }
                outcome(r)
            }
            "auth" => {
                let expected = AuthToken::decode(&v.hex("expected")).expect("expected token");
                let r = SignedAuth::decode(&v.body).and_then(|s| {
                    s.verify(
                        &v.recipient("patient"),
                        &expected,
                        v.u64("now-ms"),
                        v.u64("max-age-ms"),
                    )?;
                    Ok(s)
                });
                if let Ok(s) = &r {
                    assert_eq!(s.encode(), v.body);
                    resigned(v, AUTH_CONTEXT, &s.token.encode(), &s.signature);
                }
                outcome(r)
            }
            "peer" => {
                let r = SignedPeerAuth::decode(&v.body).and_then(|s| {
                    // The configured caller; older vectors pin the one the request names.
                    let caller = if v.has("caller") {
                        v.recipient("caller")
                    } else {
                        s.auth.caller.clone()
                    };
                    s.verify(
                        &caller,
                        &v.array("callee"),
                        v.get("method"),
                        v.get("host"),
                        v.get("target"),
                        &v.hex("body"),
                        v.u64("now-ms"),
                        v.u64("window-ms"),
                    )?;
                    Ok(s)
                });
                if let Ok(s) = &r {
                    assert_eq!(s.encode(), v.body);
                    resigned(v, PEER_CONTEXT, &s.auth.encode(), &s.signature);
                }
                outcome(r)
            }
            "register" => {
                let (recipient, inst) = (v.recipient("recipient"), v.array("institution"));
                let patient_id = v.get("patient-id");
                let r = Signature::from_bytes(&v.body).and_then(|sig| {
                    verify_registration(&recipient, inst, patient_id, &sig)?;
                    Ok(sig)
                });
                if let Ok(sig) = &r {
                    if v.has("signer-identity") {
                        let id = v.identity("signer-identity");
                        assert_eq!(&registration_proof(&id, inst, patient_id), sig);
                    }
                }
                outcome(r)
            }
            "key-change" => {
                let r = SignedKeyChange::decode(&v.body).and_then(|s| {
                    s.verify(
                        &v.recipient("current"),
                        v.array("institution"),
                        v.get("patient-id"),
                        v.u64("now-ms"),
                        v.u64("max-age-ms"),
                    )?;
                    Ok(s)
                });
                if let Ok(s) = &r {
                    assert_eq!(s.encode(), v.body);
                    if v.has("signer-identity") {
                        let again = s
                            .change
                            .sign(&v.identity("signer-identity"), &v.identity("new-identity"))
                            .expect("matching keys");
                        assert_eq!(&again, s, "re-signing must reproduce the change");
                    }
                }
                outcome(r)
            }
            kind => panic!("{}: unknown kind {kind}", v.name),
        }
    }

    #[test]
    fn consent_vectors() {
        let all = testkit::read_all("consent_");
        assert!(
            all.len() >= 30,
            "expected the checked-in vectors, found {}",
            all.len()
        );
        for v in &all {
            assert_eq!(check(v), v.expect, "vector {}", v.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::{self, seq};
    use super::*;
    use proptest::prelude::*;

    /// One named way to spoil a value, for table-driven negative tests.
    type Edit<T> = Box<dyn Fn(&mut T)>;

    fn now() -> u64 {
        testkit::ISSUED_MS + 1
    }

    fn inst_fp() -> [u8; 32] {
        testkit::institution().recipient().fingerprint()
    }

    fn check(g: &SignedGrant, request: &ShareRequest) -> Result<()> {
        g.check(&testkit::patient().recipient(), inst_fp(), request, now())
    }

    #[test]
    fn base64url_rfc4648_vectors() {
        // RFC 4648 §10, without padding and with the URL-safe alphabet.
        for (plain, text) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url::encode(plain.as_bytes()), text);
            assert_eq!(base64url::decode(text, "t").unwrap(), plain.as_bytes());
        }
        assert_eq!(base64url::encode(&[0xfb, 0xff]), "-_8");
        for bad in [
            "Zg==", "Zm9v+", "Zm9v/w", "Z", "Zh", "Zm9", "Zm9vY", "Zm 9v", "é",
        ] {
            assert!(base64url::decode(bad, "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn scope_covers() {
        let object = Scope {
            records: Records::Object {
                bucket: "b".into(),
                key: "p1/a.dcm".into(),
            },
            include_future: false,
        };
        assert!(object.covers("b", "p1/a.dcm"));
        assert!(!object.covers("b", "p1/a.dcm2"));
        assert!(!object.covers("c", "p1/a.dcm"));
        let prefix = Scope {
            records: Records::Prefix {
                bucket: "b".into(),
                prefix: "p1/".into(),
            },
            include_future: true,
        };
        assert!(prefix.covers("b", "p1/a.dcm"));
        assert!(prefix.covers("b", "p1/"));
        assert!(!prefix.covers("b", "p1"));
        assert!(!prefix.covers("b", "p2/a.dcm"));
        assert!(!prefix.covers("bb", "p1/a.dcm"));
        let patient = Scope {
            records: Records::Patient,
            include_future: false,
        };
        assert!(patient.covers("any", "thing"));
        // Versions added after the grant only with include_future.
        assert!(patient.covers_version("b", "k", 10, 10));
        assert!(!patient.covers_version("b", "k", 11, 10));
        assert!(prefix.covers_version("b", "p1/x", 11, 10));
        assert!(!prefix.covers_version("b", "p2/x", 1, 10));
    }

    #[test]
    fn validate_rules() {
        let ok = testkit::request();
        ok.validate().unwrap();
        let cases: Vec<(&str, Edit<ShareRequest>)> = vec![
            ("empty patient", Box::new(|r| r.patient_id.clear())),
            ("patient NUL", Box::new(|r| r.patient_id.push('\0'))),
            ("patient long", Box::new(|r| r.patient_id = "p".repeat(257))),
            ("requester newline", Box::new(|r| r.requester.push('\n'))),
            (
                "requester bidi ctl",
                Box::new(|r| r.requester.push('\u{85}')),
            ),
            ("purpose ESC", Box::new(|r| r.purpose_text.push('\u{1b}'))),
            (
                "purpose long",
                Box::new(|r| r.purpose_text = "x".repeat(4097)),
            ),
            ("code empty", Box::new(|r| r.purpose_code.clear())),
            ("code space", Box::new(|r| r.purpose_code = "TRE AT".into())),
            ("code long", Box::new(|r| r.purpose_code = "A".repeat(65))),
            ("expiry", Box::new(|r| r.expires_ms = r.created_ms)),
            (
                "bucket slash",
                Box::new(|r| {
                    r.scope.records = Records::Prefix {
                        bucket: "a/b".into(),
                        prefix: String::new(),
                    }
                }),
            ),
            (
                "empty bucket",
                Box::new(|r| {
                    r.scope.records = Records::Object {
                        bucket: String::new(),
                        key: "k".into(),
                    }
                }),
            ),
            (
                "empty key",
                Box::new(|r| {
                    r.scope.records = Records::Object {
                        bucket: "b".into(),
                        key: String::new(),
                    }
                }),
            ),
            (
                "long key",
                Box::new(|r| {
                    r.scope.records = Records::Object {
                        bucket: "b".into(),
                        key: "k".repeat(1025),
                    }
                }),
            ),
        ];
        for (what, edit) in cases {
            let mut r = ok.clone();
            edit(&mut r);
            assert!(matches!(r.validate(), Err(Error::Malformed(_))), "{what}");
            assert!(
                matches!(ShareRequest::decode(&r.encode()), Err(Error::Malformed(_))),
                "{what}"
            );
        }
        let mut r = ok.clone();
        r.purpose_code = "ETREAT.v3-x_1".into();
        r.purpose_text = "multi\nline".into();
        r.requester.clear();
        r.scope.records = Records::Prefix {
            bucket: "b".into(),
            prefix: String::new(),
        };
        assert_eq!(ShareRequest::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn decode_rejects_bad_framing() {
        let good = testkit::request().encode();
        let mut bad = good.clone();
        bad[0] = 0;
        assert_eq!(
            ShareRequest::decode(&bad),
            Err(Error::UnsupportedVersion(0))
        );
        assert_eq!(
            ShareRequest::decode(&[]),
            Err(Error::Malformed("share request: truncated"))
        );
        assert_eq!(
            ShareRequest::decode(&[good.as_slice(), b"x"].concat()),
            Err(Error::Malformed("share request: trailing bytes"))
        );
        // Scope kind and flag bytes follow the patient id.
        let scope_at = 129 + 4 + testkit::PATIENT_ID.len();
        let mut bad = good.clone();
        bad[scope_at] = 9;
        assert_eq!(
            ShareRequest::decode(&bad),
            Err(Error::Malformed("scope: unknown kind"))
        );
        let mut bad = good.clone();
        bad[scope_at + 1] = 2;
        assert_eq!(
            ShareRequest::decode(&bad),
            Err(Error::Malformed("share request: bad flag byte"))
        );
        // A length prefix far past the end is truncation, not an allocation.
        let mut bad = good.clone();
        bad[129..133].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            ShareRequest::decode(&bad),
            Err(Error::Malformed("share request: truncated"))
        );
        // Invalid UTF-8 in the patient id.
        let mut bad = good.clone();
        bad[133] = 0xff;
        assert_eq!(
            ShareRequest::decode(&bad),
            Err(Error::Malformed("share request: invalid UTF-8"))
        );
        // A low-order recipient key.
        let mut bad = good;
        bad[33..65].fill(0);
        assert!(matches!(
            ShareRequest::decode(&bad),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn request_hash_and_signature() {
        let r = testkit::request();
        let mut other = r.clone();
        other.nonce = seq(0x01);
        assert_ne!(r.hash(), other.hash());
        let signed = r.sign(&testkit::requester());
        signed.verify(&r.recipient).unwrap();
        assert_eq!(
            signed.verify(&testkit::other().recipient()),
            Err(Error::BadSignature)
        );
        let mut edited = signed.clone();
        edited.request.purpose_code = "HPAYMT".into();
        assert_eq!(edited.verify(&r.recipient), Err(Error::BadSignature));
        assert_eq!(SignedRequest::decode(&signed.encode()).unwrap(), signed);
    }

    #[test]
    fn grant_happy_path_and_id() {
        let request = testkit::request();
        let patient = testkit::patient();
        let g = Grant::for_request(&request, &patient.recipient(), testkit::ISSUED_MS);
        let signed = g.sign(&patient);
        check(&signed, &request).unwrap();
        let again = SignedGrant::decode(&signed.encode()).unwrap();
        assert_eq!(again, signed);
        assert_eq!(again.id(), signed.id());
        // Fresh nonces: two approvals of one request are two grants.
        let g2 = Grant::for_request(&request, &patient.recipient(), testkit::ISSUED_MS);
        assert_ne!(g2.sign(&patient).id(), signed.id());
        // The id does not depend on the signature bytes.
        let mut resigned = signed.clone();
        resigned.signature = Signature([7; 64]);
        assert_eq!(resigned.id(), signed.id());
        // A patient may shorten the access.
        let mut shorter = g.clone();
        shorter.expires_ms = testkit::ISSUED_MS + 2;
        check(&shorter.sign(&patient), &request).unwrap();
    }

    #[test]
    fn grant_every_check() {
        let request = testkit::request();
        let patient = testkit::patient();
        let other = testkit::other();
        let g = testkit::grant();
        let signed = g.sign(&patient);

        // Forged: signed by another key, naming the patient's key id, or its own.
        assert_eq!(check(&g.sign(&other), &request), Err(Error::BadSignature));
        let mut own = g.clone();
        own.patient_key_id = other.recipient().fingerprint();
        assert_eq!(check(&own.sign(&other), &request), Err(Error::BadSignature));
        // Signed by the patient but naming another key.
        assert_eq!(
            check(&own.sign(&patient), &request),
            Err(Error::GrantMismatch("patient key"))
        );

        // Edited after signing.
        let mut edited = signed.clone();
        edited.grant.scope.include_future = true;
        assert_eq!(check(&edited, &request), Err(Error::BadSignature));
        let mut edited = signed.clone();
        edited.grant.expires_ms += 1;
        assert_eq!(check(&edited, &request), Err(Error::BadSignature));
        let mut edited = signed.clone();
        edited.grant.recipient = other.recipient();
        assert_eq!(check(&edited, &request), Err(Error::BadSignature));

        // Replayed with another request.
        let mut another = request.clone();
        another.nonce = seq(0x99);
        assert_eq!(
            check(&signed, &another),
            Err(Error::GrantMismatch("request"))
        );

        // Presented to another institution, or for a request to another one.
        assert_eq!(
            signed.check(
                &patient.recipient(),
                other.recipient().fingerprint(),
                &request,
                now()
            ),
            Err(Error::GrantMismatch("institution"))
        );
        let mut elsewhere = request.clone();
        elsewhere.institution = other.recipient().fingerprint();
        let mut g2 = Grant::for_request(&elsewhere, &patient.recipient(), 0);
        g2.institution = inst_fp();
        assert_eq!(
            check(&g2.sign(&patient), &elsewhere),
            Err(Error::GrantMismatch("institution"))
        );

        // Signed by the patient, but not what was asked.
        let mut wider = g.clone();
        wider.scope.include_future = true;
        assert_eq!(
            check(&wider.sign(&patient), &request),
            Err(Error::GrantMismatch("scope"))
        );
        let mut to_other = g.clone();
        to_other.recipient = other.recipient();
        assert_eq!(
            check(&to_other.sign(&patient), &request),
            Err(Error::GrantMismatch("recipient"))
        );
        let mut longer = g.clone();
        longer.expires_ms = request.expires_ms + 1;
        assert_eq!(
            check(&longer.sign(&patient), &request),
            Err(Error::GrantMismatch("expiry"))
        );

        // Expired.
        let at = |t| signed.check(&patient.recipient(), inst_fp(), &request, t);
        at(g.expires_ms - 1).unwrap();
        assert_eq!(
            at(g.expires_ms),
            Err(Error::GrantExpired {
                expires_ms: g.expires_ms,
                now_ms: g.expires_ms
            })
        );
        assert!(matches!(at(u64::MAX), Err(Error::GrantExpired { .. })));
    }

    #[test]
    fn every_bit_flip_of_a_signed_grant_fails() {
        let request = testkit::request();
        let bytes = testkit::grant().sign(&testkit::patient()).encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                let r = SignedGrant::decode(&b).and_then(|g| check(&g, &request));
                assert!(r.is_err(), "byte {i} bit {bit}");
            }
        }
        for cut in 0..bytes.len() {
            assert!(SignedGrant::decode(&bytes[..cut]).is_err());
        }
        assert!(SignedGrant::decode(&[bytes.as_slice(), &[0]].concat()).is_err());
    }

    #[test]
    fn signatures_do_not_cross_kinds() {
        let patient = testkit::patient();
        let signed = testkit::grant().sign(&patient);
        let bytes = signed.grant.encode();
        for ctx in [REQUEST_CONTEXT, REVOKE_CONTEXT, DENY_CONTEXT, AUTH_CONTEXT] {
            assert_eq!(
                patient.recipient().verify(ctx, &bytes, &signed.signature),
                Err(Error::BadSignature)
            );
        }
    }

    #[test]
    fn revocation_and_denial() {
        let (patient, other) = (testkit::patient(), testkit::other());
        let request = testkit::request();
        let grant = testkit::grant().sign(&patient);
        let rev = Revocation::for_grant(&grant, 5).sign(&patient);
        rev.check(&patient.recipient(), &grant).unwrap();
        assert_eq!(SignedRevocation::decode(&rev.encode()).unwrap(), rev);
        assert_eq!(rev.revocation.encode().len(), 41);
        assert_eq!(
            rev.check(&other.recipient(), &grant),
            Err(Error::BadSignature)
        );
        let other_grant = Grant::for_request(&request, &patient.recipient(), 0).sign(&patient);
        assert_eq!(
            rev.check(&patient.recipient(), &other_grant),
            Err(Error::GrantMismatch("grant id"))
        );
        // Another key cannot revoke the patient's grant, even naming it.
        let foreign = Revocation::for_grant(&grant, 5).sign(&other);
        assert_eq!(
            foreign.check(&other.recipient(), &grant),
            Err(Error::GrantMismatch("patient key"))
        );

        let den = Denial::for_request(&request, 5).sign(&patient);
        den.check(&patient.recipient(), &request).unwrap();
        assert_eq!(den.denial.encode().len(), 57);
        assert_eq!(SignedDenial::decode(&den.encode()).unwrap(), den);
        assert_eq!(
            den.check(&other.recipient(), &request),
            Err(Error::BadSignature)
        );
        let mut another = request.clone();
        another.purpose_code = "HRESCH".into();
        assert_eq!(
            den.check(&patient.recipient(), &another),
            Err(Error::GrantMismatch("request"))
        );
        // A denial's signature is not a revocation's.
        let as_rev = SignedRevocation::decode(&den.encode());
        assert!(as_rev.is_err());
    }

    #[test]
    fn challenge_key_recognises_only_its_own_unchanged_challenges() {
        let (inst, other) = (testkit::patient(), testkit::other());
        let key = inst.challenge_key();
        let c = key.issue(inst_fp(), testkit::PATIENT_ID, 1_000_000);
        assert_eq!(c.patient_id, testkit::PATIENT_ID);
        assert_eq!(c.issued_ms, 1_000_000);
        assert_eq!(key.check(&c), Ok(()));
        // Through its text form, as a patient sends it back.
        assert_eq!(
            key.check(&AuthChallenge::from_text(&c.to_text()).unwrap()),
            Ok(())
        );
        // The same key derived again (another gateway of the institution) accepts it.
        assert_eq!(inst.challenge_key().check(&c), Ok(()));
        // Two issues differ (random nonce), both valid.
        let c2 = key.issue(inst_fp(), testkit::PATIENT_ID, 1_000_000);
        assert_ne!(c.challenge, c2.challenge);
        assert_eq!(key.check(&c2), Ok(()));
        let refused = Err(Error::AuthMismatch("challenge"));
        assert_eq!(other.challenge_key().check(&c), refused);
        let edits: Vec<Edit<AuthChallenge>> = vec![
            Box::new(|c| c.patient_id.push('x')),
            Box::new(|c| c.issued_ms += 1),
            Box::new(|c| c.institution[0] ^= 1),
            Box::new(|c| c.challenge[0] ^= 1),
            Box::new(|c| c.challenge[31] ^= 1),
        ];
        for edit in edits {
            let mut e = c.clone();
            edit(&mut e);
            assert_eq!(key.check(&e), refused);
        }
        // A random (old-style) challenge is not one of ours.
        let random = AuthChallenge::new(inst_fp(), testkit::PATIENT_ID, 1_000_000);
        assert_eq!(key.check(&random), refused);
        assert_eq!(format!("{key:?}"), "ChallengeKey(<redacted>)");
    }

    #[test]
    fn auth_token_checks() {
        let (patient, other) = (testkit::patient(), testkit::other());
        let challenge = AuthChallenge::new(inst_fp(), testkit::PATIENT_ID, 1_000_000);
        assert_ne!(
            challenge.challenge,
            AuthChallenge::new(inst_fp(), testkit::PATIENT_ID, 1_000_000).challenge
        );
        assert_eq!(
            AuthChallenge::decode(&challenge.encode()).unwrap(),
            challenge
        );
        assert_eq!(
            AuthChallenge::from_text(&challenge.to_text()).unwrap(),
            challenge
        );
        let token = AuthToken::new(challenge.clone(), "GET", "/v1/consent/requests?x=1", b"");
        let signed = token.sign(&patient);
        let verify = |s: &SignedAuth, expected: &AuthToken, now| {
            s.verify(&patient.recipient(), expected, now, 60_000)
        };
        verify(&signed, &token, 1_000_000).unwrap();
        verify(&signed, &token, 1_060_000).unwrap();
        verify(&signed, &token, 940_000).unwrap();
        assert_eq!(verify(&signed, &token, 1_060_001), Err(Error::AuthExpired));
        assert_eq!(verify(&signed, &token, 939_999), Err(Error::AuthExpired));
        assert_eq!(
            signed.verify(&other.recipient(), &token, 1_000_000, 60_000),
            Err(Error::BadSignature)
        );
        assert_eq!(SignedAuth::decode(&signed.encode()).unwrap(), signed);

        let mismatches: Vec<(&str, Edit<AuthToken>)> = vec![
            ("institution", Box::new(|t| t.challenge.institution[0] ^= 1)),
            ("patient", Box::new(|t| t.challenge.patient_id.push('9'))),
            ("challenge", Box::new(|t| t.challenge.challenge[31] ^= 1)),
            ("challenge", Box::new(|t| t.challenge.issued_ms += 1)),
            ("method", Box::new(|t| t.method = "POST".into())),
            (
                "path",
                Box::new(|t| t.path = "/v1/consent/requests?x=2".into()),
            ),
            (
                "body",
                Box::new(|t| t.body_sha256 = Sha256::digest(b"x").into()),
            ),
        ];
        for (field, edit) in mismatches {
            let mut expected = token.clone();
            edit(&mut expected);
            assert_eq!(
                verify(&signed, &expected, 1_000_000),
                Err(Error::AuthMismatch(field)),
                "{field}"
            );
            // And a token edited after signing no longer verifies.
            let mut forged = signed.clone();
            edit(&mut forged.token);
            assert_eq!(
                verify(&forged, &token, 1_000_000),
                Err(Error::BadSignature),
                "{field}"
            );
        }

        for (method, path) in [("get", "/x"), ("", "/x"), ("GET", "x"), ("GET", "/a\nb")] {
            let t = AuthToken::new(challenge.clone(), method, path, b"");
            assert!(t.validate().is_err(), "{method} {path}");
            assert!(AuthToken::decode(&t.encode()).is_err(), "{method} {path}");
        }
    }

    #[test]
    fn registration_and_key_change() {
        let (patient, other, inst) = (testkit::patient(), testkit::other(), inst_fp());
        let id = testkit::PATIENT_ID;
        let proof = registration_proof(&patient, inst, id);
        verify_registration(&patient.recipient(), inst, id, &proof).unwrap();
        for (r, i, p) in [
            (other.recipient(), inst, id),
            (patient.recipient(), other.recipient().fingerprint(), id),
            (patient.recipient(), inst, "patient-0043"),
        ] {
            assert_eq!(
                verify_registration(&r, i, p, &proof),
                Err(Error::BadSignature)
            );
        }

        let change = KeyChange::new(inst, id, &patient.recipient(), &other.recipient(), 1_000);
        assert_eq!(
            change.sign(&other, &other).err(),
            Some(Error::AuthMismatch("old key"))
        );
        assert_eq!(
            change.sign(&patient, &patient).err(),
            Some(Error::AuthMismatch("new key"))
        );
        let signed = change.sign(&patient, &other).unwrap();
        assert_eq!(SignedKeyChange::decode(&signed.encode()).unwrap(), signed);
        assert_eq!(
            SignedKeyChange::from_text(&signed.to_text()).unwrap(),
            signed
        );
        let verify = |s: &SignedKeyChange, current: &Recipient, inst, pid: &str, now| {
            s.verify(current, inst, pid, now, 60_000)
        };
        verify(&signed, &patient.recipient(), inst, id, 2_000).unwrap();
        assert_eq!(
            verify(&signed, &other.recipient(), inst, id, 2_000),
            Err(Error::BadSignature)
        );
        assert_eq!(
            verify(
                &signed,
                &patient.recipient(),
                other.recipient().fingerprint(),
                id,
                2_000
            ),
            Err(Error::AuthMismatch("institution"))
        );
        assert_eq!(
            verify(&signed, &patient.recipient(), inst, "patient-0043", 2_000),
            Err(Error::AuthMismatch("patient"))
        );
        assert_eq!(
            verify(&signed, &patient.recipient(), inst, id, 62_001),
            Err(Error::AuthExpired)
        );
        let mut bad = signed.clone();
        bad.new_proof = registration_proof(&other, inst, "patient-0043");
        assert_eq!(
            verify(&bad, &patient.recipient(), inst, id, 2_000),
            Err(Error::BadSignature)
        );
        // Signed by the key on file but naming another old key.
        let mut wrong_old = change.clone();
        wrong_old.old = other.recipient().fingerprint();
        let forged = SignedKeyChange {
            signature: patient.sign(KEY_CHANGE_CONTEXT, &wrong_old.encode()),
            new_proof: signed.new_proof,
            change: wrong_old,
        };
        assert_eq!(
            verify(&forged, &patient.recipient(), inst, id, 2_000),
            Err(Error::AuthMismatch("old key"))
        );
        // A "change" to the same key.
        let same = KeyChange::new(inst, id, &patient.recipient(), &patient.recipient(), 1_000)
            .sign(&patient, &patient)
            .unwrap();
        assert_eq!(
            verify(&same, &patient.recipient(), inst, id, 2_000),
            Err(Error::AuthMismatch("new key"))
        );
    }

    #[test]
    fn text_forms() {
        let g = testkit::grant().sign(&testkit::patient());
        let text = g.to_text();
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(SignedGrant::from_text(&format!("  {text}\n")).unwrap(), g);
        assert_eq!(
            SignedGrant::from_text(&format!("{text}=")),
            Err(Error::Malformed("signed grant: bad base64url text"))
        );
        assert!(SignedGrant::from_text(&text.replace('-', "+")).is_err());
        // Another kind's text is not a grant.
        assert!(SignedGrant::from_text(&testkit::request().to_text()).is_err());
        assert!(ShareRequest::from_text(&text).is_err());
    }

    fn arb_text(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[a-zA-Z0-9 ./äü€😀-]{{0,{max}}}"))
            .expect("valid regex")
    }

    fn arb_scope() -> impl Strategy<Value = Scope> {
        let bucket = || proptest::string::string_regex("[a-z0-9.-]{1,12}").expect("valid regex");
        let records = prop_oneof![
            (
                bucket(),
                arb_text(20).prop_filter("non-empty", |k| !k.is_empty())
            )
                .prop_map(|(bucket, key)| Records::Object { bucket, key }),
            (bucket(), arb_text(20))
                .prop_map(|(bucket, prefix)| Records::Prefix { bucket, prefix }),
            Just(Records::Patient),
        ];
        (records, any::<bool>()).prop_map(|(records, include_future)| Scope {
            records,
            include_future,
        })
    }

    prop_compose! {
        fn arb_request()(
            institution in any::<[u8; 32]>(),
            patient_id in proptest::string::string_regex("[a-z0-9-]{1,20}").expect("valid regex"),
            scope in arb_scope(),
            recipient in any::<[u8; 64]>(),
            requester in arb_text(20),
            purpose_text in arb_text(40),
            purpose_code in proptest::string::string_regex("[A-Z]{1,8}").expect("valid regex"),
            created_ms in 0u64..u64::MAX - 1,
            span in 1u64..1 << 40,
            nonce in any::<[u8; 16]>(),
        ) -> ShareRequest {
            ShareRequest {
                institution,
                patient_id,
                scope,
                recipient: Identity::from_bytes(&recipient).expect("any 64 bytes").recipient(),
                requester,
                purpose_text,
                purpose_code,
                created_ms,
                expires_ms: created_ms.saturating_add(span),
                nonce,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn request_round_trip(r in arb_request()) {
            let bytes = r.encode();
            prop_assert_eq!(ShareRequest::decode(&bytes).unwrap(), r.clone());
            prop_assert_eq!(ShareRequest::from_text(&r.to_text()).unwrap(), r.clone());
            for cut in 0..bytes.len() {
                prop_assert!(ShareRequest::decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn grant_round_trip_and_check(r in arb_request(), issued in any::<u64>()) {
            let patient = testkit::patient();
            let signed = Grant::for_request(&r, &patient.recipient(), issued).sign(&patient);
            let again = SignedGrant::decode(&signed.encode()).unwrap();
            prop_assert_eq!(&again, &signed);
            let ok = again.check(&patient.recipient(), r.institution, &r, r.expires_ms - 1);
            prop_assert_eq!(ok, Ok(()));
            prop_assert_eq!(SignedGrant::from_text(&signed.to_text()).unwrap(), signed);
        }

        #[test]
        fn base64url_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let text = base64url::encode(&bytes);
            prop_assert_eq!(base64url::decode(&text, "t").unwrap(), bytes);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut v = vec![CONSENT_V1];
            v.extend(&bytes);
            for b in [&bytes, &v] {
                let _ = ShareRequest::decode(b);
                let _ = SignedGrant::decode(b);
                let _ = SignedRevocation::decode(b);
                let _ = SignedDenial::decode(b);
                let _ = SignedAuth::decode(b);
                let _ = SignedKeyChange::decode(b);
                let _ = AuthChallenge::decode(b);
            }
            let _ = base64url::decode(&String::from_utf8_lossy(&bytes), "t");
        }
    }
}
