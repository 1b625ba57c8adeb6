//! Symmetric sealing of small secrets (e.g. the S3 secret keys the gateway must store) under a
//! key derived from the institution's identity, so they are never at rest in clear.

use std::fmt;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Version byte of a v1 vault box.
pub const VAULT_V1: u8 = 0x01;
const VAULT_SALT: &[u8] = b"medgate/v1/vault";
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 1 + NONCE_LEN;
const TAG_LEN: usize = 16;

/// A key for sealing small secrets, derived with [`crate::Identity::vault_key`].
///
/// Sealed box, v1:
///
/// | offset | len | field                                   |
/// |--------|-----|-----------------------------------------|
/// | 0      | 1   | version = 0x01                          |
/// | 1      | 24  | random XChaCha20 nonce                  |
/// | 25     | n   | XChaCha20-Poly1305 ciphertext of n bytes |
/// | 25 + n | 16  | Poly1305 tag                            |
///
/// The AEAD's associated data is the caller's `aad` (e.g. the access key id the secret belongs
/// to, so a box cannot be moved to another row) with nothing prepended. The 24-byte random nonce
/// makes random nonces safe for any realistic number of boxes.
pub struct VaultKey {
    cipher: XChaCha20Poly1305,
}

impl VaultKey {
    pub(crate) fn derive(ikm: &[u8], purpose: &str) -> VaultKey {
        let okm = derive_key(ikm, purpose);
        VaultKey {
            cipher: XChaCha20Poly1305::new(Key::from_slice(okm.as_ref())),
        }
    }

    /// Seals `plaintext` bound to `aad` under a fresh random nonce.
    ///
    /// # Panics
    /// Only if `plaintext` exceeds XChaCha20-Poly1305's 256 GiB limit; vault secrets are tiny.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        self.seal_with_nonce(&nonce, aad, plaintext)
    }

    pub(crate) fn seal_with_nonce(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Vec<u8> {
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("Invariant: vault plaintexts are far below the AEAD length limit");
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.push(VAULT_V1);
        out.extend_from_slice(nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a box made by [`VaultKey::seal`] with the same key and `aad`.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] / [`Error::Malformed`] for a box that is not v1 or too short,
    /// [`Error::Decrypt`] for a wrong key, wrong `aad` or tampered box.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        match sealed.first() {
            None => return Err(Error::Malformed("vault box: empty")),
            Some(&VAULT_V1) => {}
            Some(&v) => return Err(Error::UnsupportedVersion(v)),
        }
        if sealed.len() < HEADER_LEN + TAG_LEN {
            return Err(Error::Malformed("vault box: truncated"));
        }
        let (header, ct) = sealed.split_at(HEADER_LEN);
        let nonce = XNonce::from_slice(&header[1..]);
        self.cipher
            .decrypt(nonce, Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| Error::Decrypt)
    }
}

/// HKDF-SHA256(ikm, salt = "medgate/v1/vault", info = `purpose`): the raw key behind
/// [`VaultKey::derive`], also used for the institution's own stanzas.
pub(crate) fn derive_key(ikm: &[u8], purpose: &str) -> Zeroizing<[u8; 32]> {
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(VAULT_SALT), ikm)
        .expand(purpose.as_bytes(), okm.as_mut())
        .expect("Invariant: 32 bytes is a valid HKDF-SHA256 output length");
    okm
}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VaultKey(<redacted>)")
    }
}
