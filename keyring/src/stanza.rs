//! A DEK wrapped to one recipient (a "stanza"), after age's X25519 recipient type.
//!
//! The wrap is ephemeral-static X25519: each stanza draws a fresh ephemeral key, so the wrap key
//! is never reused and a zero nonce is safe. The stanza carries a short recipient tag so an
//! identity can tell "not for me" (skip it) from "for me but damaged" (an error).

use std::fmt;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, SharedSecret, StaticSecret};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::hex;
use crate::identity::Recipient;
use crate::key::DataKey;

/// Version byte of [`WrappedKey`] v1.
pub const STANZA_V1: u8 = 0x01;
/// Encoded length of a v1 [`WrappedKey`].
pub const WRAPPED_KEY_LEN: usize = 85;

const TAG_OFFSET: usize = 1;
const EPHEMERAL_OFFSET: usize = TAG_OFFSET + 4;
const BODY_OFFSET: usize = EPHEMERAL_OFFSET + 32;
const DEK_CT_LEN: usize = 32;

/// HKDF info for the wrap key; changing it is a format change.
const WRAP_INFO: &[u8] = b"medgate/v1/wrap";

/// A DEK wrapped to one [`Recipient`].
///
/// Wrapped key (stanza), v1:
///
/// | offset | len | field                                                  |
/// |--------|-----|--------------------------------------------------------|
/// | 0      | 1   | version = 0x01                                         |
/// | 1      | 4   | recipient tag = SHA-256(recipient X25519 pk)\[0..4\]   |
/// | 5      | 32  | ephemeral X25519 public key                            |
/// | 37     | 48  | ChaCha20-Poly1305(wrap key, nonce = 0, DEK) ‖ tag (16) |
///
/// wrap key = HKDF-SHA256(ikm = X25519(ephemeral, recipient), salt = ephemeral pk ‖ recipient pk,
/// info = "medgate/v1/wrap").
///
/// The tag only routes: it is 32 bits of a public key hash, so collisions are possible and an
/// identity whose tag matches may still fail to unwrap.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey([u8; WRAPPED_KEY_LEN]);

impl WrappedKey {
    /// The encoded stanza (see the byte table on the type).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// The encoded stanza, borrowed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Parses an encoded stanza.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for a version byte other than 0x01, [`Error::Malformed`] for
    /// a wrong length. The ciphertext is not checked here; that happens on unwrap.
    pub fn from_bytes(bytes: &[u8]) -> Result<WrappedKey> {
        match bytes.first() {
            None => return Err(Error::Malformed("stanza: empty")),
            Some(&STANZA_V1) => {}
            Some(&v) => return Err(Error::UnsupportedVersion(v)),
        }
        let array: [u8; WRAPPED_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| Error::Malformed("stanza: wrong length"))?;
        Ok(WrappedKey(array))
    }

    /// The 4-byte tag of the recipient this stanza was wrapped to.
    pub fn recipient_tag(&self) -> [u8; 4] {
        let mut tag = [0u8; 4];
        tag.copy_from_slice(&self.0[TAG_OFFSET..EPHEMERAL_OFFSET]);
        tag
    }

    fn ephemeral(&self) -> PublicKey {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&self.0[EPHEMERAL_OFFSET..BODY_OFFSET]);
        PublicKey::from(pk)
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("recipient_tag", &hex::encode(&self.recipient_tag()))
            .field("ephemeral", &hex::encode(self.ephemeral().as_bytes()))
            .finish_non_exhaustive()
    }
}

fn wrap_cipher(
    shared: &SharedSecret,
    ephemeral: &PublicKey,
    recipient: &PublicKey,
) -> ChaCha20Poly1305 {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral.as_bytes());
    salt[32..].copy_from_slice(recipient.as_bytes());
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes())
        .expand(WRAP_INFO, okm.as_mut())
        .expect("Invariant: 32 bytes is a valid HKDF-SHA256 output length");
    ChaCha20Poly1305::new(Key::from_slice(okm.as_ref()))
}

/// Wraps `dek` to `recipient` using the given ephemeral secret.
///
/// # Security
/// `ephemeral` must be fresh random for every call outside of test vectors: the nonce is zero,
/// so reusing an ephemeral key with the same recipient reuses (key, nonce).
pub(crate) fn wrap_key_with_ephemeral(
    recipient: &Recipient,
    dek: &DataKey,
    ephemeral: &StaticSecret,
) -> Result<WrappedKey> {
    let recipient_pk = recipient.x25519();
    let ephemeral_pk = PublicKey::from(ephemeral);
    let shared = ephemeral.diffie_hellman(recipient_pk);
    if !shared.was_contributory() {
        return Err(Error::NotContributory);
    }
    let cipher = wrap_cipher(&shared, &ephemeral_pk, recipient_pk);

    let mut out = [0u8; WRAPPED_KEY_LEN];
    out[0] = STANZA_V1;
    out[TAG_OFFSET..EPHEMERAL_OFFSET].copy_from_slice(&recipient.tag());
    out[EPHEMERAL_OFFSET..BODY_OFFSET].copy_from_slice(ephemeral_pk.as_bytes());
    let body = &mut out[BODY_OFFSET..BODY_OFFSET + DEK_CT_LEN];
    body.copy_from_slice(dek.expose());
    let tag = cipher
        .encrypt_in_place_detached(&Nonce::default(), b"", body)
        .expect("Invariant: a 32-byte message is within ChaCha20-Poly1305 limits");
    out[BODY_OFFSET + DEK_CT_LEN..].copy_from_slice(&tag);
    Ok(WrappedKey(out))
}

/// Unwraps a stanza whose tag has already been matched against `recipient_pk`.
///
/// Every failure, including a low-order ephemeral key, is [`Error::Decrypt`], so a damaged or
/// hostile stanza reveals nothing beyond "did not open".
pub(crate) fn unwrap_key(
    secret: &StaticSecret,
    recipient_pk: &PublicKey,
    stanza: &WrappedKey,
) -> Result<DataKey> {
    let ephemeral_pk = stanza.ephemeral();
    let shared = secret.diffie_hellman(&ephemeral_pk);
    if !shared.was_contributory() {
        return Err(Error::Decrypt);
    }
    let cipher = wrap_cipher(&shared, &ephemeral_pk, recipient_pk);
    let mut dek = Zeroizing::new([0u8; DEK_CT_LEN]);
    dek.copy_from_slice(&stanza.0[BODY_OFFSET..BODY_OFFSET + DEK_CT_LEN]);
    let tag = Tag::from_slice(&stanza.0[BODY_OFFSET + DEK_CT_LEN..]);
    cipher
        .decrypt_in_place_detached(&Nonce::default(), b"", dek.as_mut(), tag)
        .map_err(|_| Error::Decrypt)?;
    Ok(DataKey::from_bytes(*dek))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use proptest::prelude::*;

    #[test]
    fn wrap_unwrap() {
        let id = Identity::generate();
        let dek = DataKey::generate();
        let w = id.recipient().wrap_key(&dek).unwrap();
        assert_eq!(w.as_bytes().len(), WRAPPED_KEY_LEN);
        assert_eq!(w.recipient_tag(), id.recipient().tag());
        let got = id.unwrap_key(&w).unwrap().unwrap();
        assert_eq!(got.expose(), dek.expose());
        // Fresh ephemeral each time.
        assert_ne!(id.recipient().wrap_key(&dek).unwrap(), w);
        assert!(format!("{w:?}").starts_with("WrappedKey { recipient_tag: "));
    }

    #[test]
    fn other_identity_is_not_mine() {
        let w = Identity::generate()
            .recipient()
            .wrap_key(&DataKey::generate())
            .unwrap();
        assert!(Identity::generate().unwrap_key(&w).is_none());
    }

    #[test]
    fn every_bit_flip_after_the_tag_fails() {
        let id = Identity::generate();
        let w = id.recipient().wrap_key(&DataKey::generate()).unwrap();
        for byte in EPHEMERAL_OFFSET..WRAPPED_KEY_LEN {
            for bit in 0..8 {
                let mut b = w.to_bytes();
                b[byte] ^= 1 << bit;
                let bad = WrappedKey::from_bytes(&b).unwrap();
                assert_eq!(
                    id.unwrap_key(&bad).map(|r| r.map(|_| ())),
                    Some(Err(Error::Decrypt))
                );
            }
        }
    }

    #[test]
    fn low_order_ephemeral_is_an_error_not_a_panic() {
        let id = Identity::generate();
        let mut b = id
            .recipient()
            .wrap_key(&DataKey::generate())
            .unwrap()
            .to_bytes();
        b[EPHEMERAL_OFFSET..BODY_OFFSET].fill(0);
        let bad = WrappedKey::from_bytes(&b).unwrap();
        assert!(matches!(id.unwrap_key(&bad), Some(Err(Error::Decrypt))));
    }

    #[test]
    fn wrap_to_low_order_recipient_refused() {
        // Only constructible inside the crate: `Recipient::from_bytes` refuses such keys.
        let mut b = Identity::generate().recipient().to_bytes();
        b[..32].fill(0);
        let r = crate::identity::tests_support::recipient_unchecked(&b);
        assert_eq!(
            r.wrap_key(&DataKey::generate()),
            Err(Error::NotContributory)
        );
    }

    #[test]
    fn from_bytes_checks() {
        assert_eq!(
            WrappedKey::from_bytes(&[]),
            Err(Error::Malformed("stanza: empty"))
        );
        assert_eq!(
            WrappedKey::from_bytes(&[2; 85]),
            Err(Error::UnsupportedVersion(2))
        );
        assert_eq!(
            WrappedKey::from_bytes(&[1; 84]),
            Err(Error::Malformed("stanza: wrong length"))
        );
        assert!(WrappedKey::from_bytes(&[1; 86]).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(dek in any::<[u8; 32]>(), eph in any::<[u8; 32]>()) {
            let id = Identity::generate();
            let dek = DataKey::from_bytes(dek);
            let w = wrap_key_with_ephemeral(&id.recipient(), &dek, &StaticSecret::from(eph)).unwrap();
            let parsed = WrappedKey::from_bytes(&w.to_bytes()).unwrap();
            prop_assert_eq!(&parsed, &w);
            let got = id.unwrap_key(&parsed).unwrap().unwrap();
            prop_assert_eq!(got.expose(), dek.expose());
        }
    }
}
