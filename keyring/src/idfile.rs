//! The text form of an identity file (the institution's or a patient's), either plain or sealed
//! under a passphrase with argon2id.
//!
//! Plain:
//!
//! ```text
//! # medgate identity, created by medgate-keyring 0.1.0
//! # recipient: medgate1...
//! MEDGATE-SECRET-KEY-1...
//! ```
//!
//! Sealed: the same comments, then one `MEDGATE-SEALED-KEY-1...` line (see [`SealedIdentity`]
//! for the bytes inside). Comment (`#`) and blank lines are ignored on read; exactly one key line
//! must remain.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::identity::{bech32_decode, bech32_encode, Identity};

/// Bech32 HRP of a sealed identity (printed uppercase: `MEDGATE-SEALED-KEY-1...`).
pub const SEALED_HRP: &str = "medgate-sealed-key-";
/// Version byte of [`SealedIdentity`] v1.
pub const SEALED_V1: u8 = 0x01;

/// argon2id memory cost of new sealed files, in KiB (19 MiB, OWASP's minimum recommendation).
pub const DEFAULT_M_KIB: u32 = 19 * 1024;
/// argon2id passes of new sealed files.
pub const DEFAULT_T: u32 = 2;
/// argon2id lanes of new sealed files.
pub const DEFAULT_P: u32 = 1;

/// Upper bounds accepted on read, so a crafted file cannot make decoding allocate or spin
/// without limit: 1 GiB of memory, 16 passes, 16 lanes.
const MAX_M_KIB: u32 = 1 << 20;
const MAX_T: u32 = 16;
const MAX_P: u32 = 16;

const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 1 + 4 + 4 + 4 + SALT_LEN + NONCE_LEN;
const SECRET_LEN: usize = 64;
const SEALED_LEN: usize = HEADER_LEN + SECRET_LEN + 16;

/// Documents the bytes inside a `MEDGATE-SEALED-KEY-1...` line; not constructed directly.
///
/// Sealed identity, v1:
///
/// | offset | len | field                                                  |
/// |--------|-----|--------------------------------------------------------|
/// | 0      | 1   | version = 0x01                                         |
/// | 1      | 4   | argon2id memory cost m, KiB (u32)                      |
/// | 5      | 4   | argon2id passes t (u32)                                |
/// | 9      | 4   | argon2id lanes p (u32)                                 |
/// | 13     | 16  | random salt                                            |
/// | 29     | 24  | random XChaCha20 nonce                                 |
/// | 53     | 64  | XChaCha20-Poly1305 ciphertext of [`Identity::to_bytes`] |
/// | 117    | 16  | Poly1305 tag                                           |
///
/// key = argon2id v0x13(passphrase, salt, m, t, p) → 32 bytes. The associated data is bytes
/// 0..53, so the parameters and salt cannot be altered without the open failing.
pub enum SealedIdentity {}

/// argon2id cost parameters of a sealed identity file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cost {
    pub(crate) m_kib: u32,
    pub(crate) t: u32,
    pub(crate) p: u32,
}

const DEFAULT_COST: Cost = Cost {
    m_kib: DEFAULT_M_KIB,
    t: DEFAULT_T,
    p: DEFAULT_P,
};

/// The identity file text. With a passphrase, the key is sealed with argon2id (m = 19 MiB,
/// t = 2, p = 1) and XChaCha20-Poly1305 under a fresh salt and nonce.
pub fn encode(identity: &Identity, passphrase: Option<&[u8]>) -> Zeroizing<String> {
    match passphrase {
        None => plain(identity),
        Some(pass) => {
            let mut salt = [0u8; SALT_LEN];
            OsRng.fill_bytes(&mut salt);
            let mut nonce = [0u8; NONCE_LEN];
            OsRng.fill_bytes(&mut nonce);
            sealed(identity, pass, DEFAULT_COST, &salt, &nonce)
                .expect("Invariant: the default argon2 parameters are valid")
        }
    }
}

fn comments(identity: &Identity, how: &str) -> String {
    format!(
        "# medgate identity, created by medgate-keyring {}{how}\n# recipient: {}\n",
        env!("CARGO_PKG_VERSION"),
        identity.recipient()
    )
}

pub(crate) fn plain(identity: &Identity) -> Zeroizing<String> {
    let key = identity.to_bech32();
    let head = comments(identity, "");
    let mut out = Zeroizing::new(String::with_capacity(head.len() + key.len() + 1));
    out.push_str(&head);
    out.push_str(&key);
    out.push('\n');
    out
}

/// Seals with explicit cost, salt and nonce; test vectors use cheap parameters through this.
pub(crate) fn sealed(
    identity: &Identity,
    passphrase: &[u8],
    cost: Cost,
    salt: &[u8; SALT_LEN],
    nonce: &[u8; NONCE_LEN],
) -> Result<Zeroizing<String>> {
    let mut bytes = [0u8; SEALED_LEN];
    bytes[0] = SEALED_V1;
    bytes[1..5].copy_from_slice(&cost.m_kib.to_be_bytes());
    bytes[5..9].copy_from_slice(&cost.t.to_be_bytes());
    bytes[9..13].copy_from_slice(&cost.p.to_be_bytes());
    bytes[13..29].copy_from_slice(salt);
    bytes[29..HEADER_LEN].copy_from_slice(nonce);
    let cipher = derive(passphrase, cost, salt)?;
    let (header, rest) = bytes.split_at_mut(HEADER_LEN);
    let (body, tag_out) = rest.split_at_mut(SECRET_LEN);
    body.copy_from_slice(identity.to_bytes().as_ref());
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(nonce), header, body)
        .expect("Invariant: 64 bytes is within XChaCha20-Poly1305 limits");
    tag_out.copy_from_slice(&tag);

    let key = bech32_encode(SEALED_HRP, &bytes, true);
    let head = comments(identity, ", sealed with a passphrase (argon2id)");
    let mut out = Zeroizing::new(String::with_capacity(head.len() + key.len() + 1));
    out.push_str(&head);
    out.push_str(&key);
    out.push('\n');
    Ok(out)
}

fn derive(passphrase: &[u8], cost: Cost, salt: &[u8]) -> Result<XChaCha20Poly1305> {
    if cost.m_kib > MAX_M_KIB || cost.t > MAX_T || cost.p > MAX_P {
        return Err(Error::Malformed(
            "sealed identity: argon2 parameters out of range",
        ));
    }
    let params = Params::new(cost.m_kib, cost.t, cost.p, Some(32))
        .map_err(|_| Error::Malformed("sealed identity: invalid argon2 parameters"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|_| Error::Malformed("sealed identity: invalid argon2 parameters"))?;
    Ok(XChaCha20Poly1305::new(Key::from_slice(key.as_ref())))
}

/// The single non-comment, non-blank line.
fn key_line(text: &str) -> Result<&str> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    match (lines.next(), lines.next()) {
        (Some(line), None) => Ok(line),
        (None, _) => Err(Error::Malformed("identity file: no key line")),
        (Some(_), Some(_)) => Err(Error::Malformed("identity file: more than one key line")),
    }
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

fn is_sealed_line(line: &str) -> bool {
    starts_with_ignore_case(line, SEALED_HRP)
        && line.as_bytes().get(SEALED_HRP.len()) == Some(&b'1')
}

/// Whether the file holds a passphrase-sealed key (so the caller knows to ask for one).
pub fn is_sealed(text: &str) -> bool {
    key_line(text).is_ok_and(is_sealed_line)
}

/// Reads an identity file written by [`encode`].
///
/// A passphrase given for a plain file is ignored.
///
/// # Errors
/// [`Error::PassphraseRequired`] for a sealed file without a passphrase, [`Error::Decrypt`]
/// for a wrong passphrase or a damaged sealed key, [`Error::UnsupportedVersion`] for a sealed
/// format other than v1, and [`Error::Malformed`] for anything that is not an identity file.
pub fn decode(text: &str, passphrase: Option<&[u8]>) -> Result<Identity> {
    let line = key_line(text)?;
    if !is_sealed_line(line) {
        return Identity::from_bech32(line);
    }
    let pass = passphrase.ok_or(Error::PassphraseRequired)?;
    let bytes = bech32_decode::<SEALED_LEN>(line, SEALED_HRP, "sealed identity bech32")?;
    if bytes[0] != SEALED_V1 {
        return Err(Error::UnsupportedVersion(bytes[0]));
    }
    let be32 =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let cost = Cost {
        m_kib: be32(1),
        t: be32(5),
        p: be32(9),
    };
    let cipher = derive(pass, cost, &bytes[13..29])?;
    let (header, rest) = bytes.split_at(HEADER_LEN);
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    secret.copy_from_slice(&rest[..SECRET_LEN]);
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(&header[29..]),
            header,
            secret.as_mut(),
            Tag::from_slice(&rest[SECRET_LEN..]),
        )
        .map_err(|_| Error::Decrypt)?;
    Identity::from_bytes(secret.as_ref())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Cheap parameters so tests and vectors stay fast; the format carries them.
    pub(crate) const TEST_COST: Cost = Cost {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    #[test]
    fn plain_round_trip() {
        let id = Identity::generate();
        let text = encode(&id, None);
        assert!(!is_sealed(&text));
        assert!(text.starts_with("# medgate identity, created by "));
        assert!(text.contains("\nMEDGATE-SECRET-KEY-1"));
        let back = decode(&text, None).unwrap();
        assert_eq!(back.to_bytes(), id.to_bytes());
        // A passphrase for a plain file is ignored.
        assert_eq!(decode(&text, Some(b"x")).unwrap().to_bytes(), id.to_bytes());
        // Lowercase, CRLF, and extra blank lines are fine.
        let relaxed = text.to_lowercase().replace('\n', "\r\n\r\n");
        assert_eq!(decode(&relaxed, None).unwrap().to_bytes(), id.to_bytes());
    }

    #[test]
    fn sealed_with_default_cost() {
        let id = Identity::generate();
        let text = encode(&id, Some(b"correct horse"));
        assert!(is_sealed(&text));
        assert!(text.contains("\nMEDGATE-SEALED-KEY-1"));
        assert_eq!(
            decode(&text, Some(b"correct horse")).unwrap().to_bytes(),
            id.to_bytes()
        );
        assert_eq!(decode(&text, None).unwrap_err(), Error::PassphraseRequired);
        assert_eq!(
            decode(&text, Some(b"wrong horse")).unwrap_err(),
            Error::Decrypt
        );
    }

    #[test]
    fn malformed_files() {
        assert!(matches!(decode("", None), Err(Error::Malformed(_))));
        assert!(matches!(
            decode("# only a comment\n", None),
            Err(Error::Malformed(_))
        ));
        let id = Identity::generate();
        let two = format!("{}{}\n", &*encode(&id, None), &*id.to_bech32());
        assert!(matches!(decode(&two, None), Err(Error::Malformed(_))));
        assert!(matches!(
            decode("MEDGATE-SECRET-KEY-1qqqq", None),
            Err(Error::Malformed(_))
        ));
        assert!(!is_sealed("garbage"));
        // A recipient is not an identity.
        let r = id.recipient().to_string();
        assert!(matches!(decode(&r, None), Err(Error::Malformed(_))));
    }

    #[test]
    fn sealed_rejects_tampered_params_and_absurd_costs() {
        let id = Identity::generate();
        let good = sealed(&id, b"pw", TEST_COST, &[1; 16], &[2; 24]).unwrap();
        let line = key_line(&good).unwrap();
        let bytes = bech32_decode::<SEALED_LEN>(line, SEALED_HRP, "t").unwrap();

        let reencode = |b: &[u8; SEALED_LEN]| bech32_encode(SEALED_HRP, b, true);
        let mut t2 = *bytes;
        t2[8] = 2; // t = 2: a valid cost, but not the one the key was sealed with.
        assert_eq!(
            decode(&reencode(&t2), Some(b"pw")).unwrap_err(),
            Error::Decrypt
        );
        let mut huge = *bytes;
        huge[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode(&reencode(&huge), Some(b"pw")),
            Err(Error::Malformed(_))
        ));
        let mut v2 = *bytes;
        v2[0] = 2;
        assert_eq!(
            decode(&reencode(&v2), Some(b"pw")).unwrap_err(),
            Error::UnsupportedVersion(2)
        );
        assert!(sealed(
            &id,
            b"pw",
            Cost {
                m_kib: 1,
                t: 1,
                p: 1
            },
            &[1; 16],
            &[2; 24]
        )
        .is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn sealed_round_trip(pass in proptest::collection::vec(any::<u8>(), 0..40), salt in any::<[u8; 16]>(), nonce in any::<[u8; 24]>()) {
            let id = Identity::generate();
            let text = sealed(&id, &pass, TEST_COST, &salt, &nonce).unwrap();
            prop_assert!(is_sealed(&text));
            prop_assert_eq!(decode(&text, Some(&pass)).unwrap().to_bytes(), id.to_bytes());
            let mut wrong = pass.clone();
            wrong.push(0);
            prop_assert_eq!(decode(&text, Some(&wrong)).unwrap_err(), Error::Decrypt);
        }
    }
}
