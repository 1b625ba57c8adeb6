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
//! non-zero trailing bits. The reader, writers and text form are the crate's one codec,
//! `crate::wire`.
//!
//! # Files
//! One concept a file, all re-exported here (`keyring::consent::X` is the path to use):
//! - `scope`: [`Scope`] and [`Records`], what a request asks for and a grant allows.
//! - `request`: [`ShareRequest`] and [`SignedRequest`].
//! - `grant`: [`Grant`] and [`SignedGrant`] with its check.
//! - `refusal`: [`Denial`] and [`Revocation`] and their signed forms.
//! - `patient_auth`: [`AuthChallenge`], [`ChallengeKey`], [`AuthToken`], [`SignedAuth`].
//! - `peer_auth`: [`PeerAuth`] and [`SignedPeerAuth`], one gateway calling another.
//! - `registration`: [`registration_proof`], [`verify_registration`], [`KeyChange`],
//!   [`SignedKeyChange`].
//!
//! This file keeps the constants, the `signed_type!` macro and the field checks they share.

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
// Checks shared by the formats

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
// The formats, one concept a file

mod grant;
mod patient_auth;
mod peer_auth;
mod refusal;
mod registration;
mod request;
mod scope;

pub use grant::*;
pub use patient_auth::*;
pub use peer_auth::*;
pub use refusal::*;
pub use registration::*;
pub use request::*;
pub use scope::*;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod vectors;
