//! A DEK wrapped to one recipient (a "stanza"), after age's X25519 recipient type.
//!
//! Three kinds share one encoding, told apart by the first byte:
//!
//! - **X25519 (0x01)**, the default: ephemeral-static X25519 with a fresh ephemeral key per
//!   stanza, so the wrap key is never reused and a zero nonce is safe.
//! - **X25519 batch (0x04)**: one ephemeral key shared by the stanzas of one batch (an approval
//!   re-wrapping thousands of records for one recipient), each stanza with its own random 16-byte
//!   salt in the key derivation, so each still has its own wrap key. One X25519 operation per
//!   batch instead of two per stanza: this is what lets re-wrapping run at store speed.
//! - **Own (0x03)**: the institution's stanza on its own records, sealed with a symmetric key
//!   derived from the institution's X25519 secret (no public-key operation to write or open it;
//!   anyone holding that secret could open an X25519 stanza to it anyway).
//!
//! 0x02 is never written (the test vectors use it as the unknown version). Every stanza carries
//! a short recipient tag so an identity can tell "not for me" (skip it) from "for me but damaged"
//! (an error).

use std::fmt;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use x25519_dalek::{PublicKey, SharedSecret, StaticSecret};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::hex;
use crate::identity::Recipient;
use crate::key::DataKey;

/// Kind byte of an X25519 stanza (one ephemeral key per stanza).
pub const STANZA_V1: u8 = 0x01;
/// Kind byte of an institution's own (symmetric) stanza.
pub const STANZA_OWN: u8 = 0x03;
/// Kind byte of an X25519 stanza whose ephemeral key is shared by a batch.
pub const STANZA_BATCH: u8 = 0x04;
/// Encoded length of an X25519 (0x01) stanza.
pub const WRAPPED_KEY_LEN: usize = 85;
/// Encoded length of an own (0x03) stanza.
pub const OWN_STANZA_LEN: usize = 77;
/// Encoded length of an X25519 batch (0x04) stanza.
pub const BATCH_STANZA_LEN: usize = 101;

const TAG_OFFSET: usize = 1;
const EPHEMERAL_OFFSET: usize = TAG_OFFSET + 4;
const BODY_OFFSET: usize = EPHEMERAL_OFFSET + 32;
const DEK_CT_LEN: usize = 32;
const BATCH_SALT_OFFSET: usize = BODY_OFFSET;
const BATCH_SALT_LEN: usize = 16;
const BATCH_BODY_OFFSET: usize = BATCH_SALT_OFFSET + BATCH_SALT_LEN;
const OWN_NONCE_OFFSET: usize = EPHEMERAL_OFFSET;
const OWN_NONCE_LEN: usize = 24;
const OWN_BODY_OFFSET: usize = OWN_NONCE_OFFSET + OWN_NONCE_LEN;

/// HKDF info for the wrap key; changing it is a format change.
const WRAP_INFO: &[u8] = b"medgate/v1/wrap";
/// HKDF info prefix for batch wrap keys (followed by the stanza's salt).
const BATCH_INFO: &[u8] = b"medgate/v1/wrap-batch";
/// Purpose of the own-stanza key (see [`crate::Identity::vault_key`] for the derivation).
pub(crate) const OWN_PURPOSE: &str = "medgate/v1/own-stanza";

/// A DEK wrapped to one [`Recipient`].
///
/// X25519 stanza, kind 0x01:
///
/// | offset | len | field                                                  |
/// |--------|-----|--------------------------------------------------------|
/// | 0      | 1   | kind = 0x01                                            |
/// | 1      | 4   | recipient tag = SHA-256(recipient X25519 pk)\[0..4\]   |
/// | 5      | 32  | ephemeral X25519 public key                            |
/// | 37     | 48  | ChaCha20-Poly1305(wrap key, nonce = 0, DEK) ‖ tag (16) |
///
/// wrap key = HKDF-SHA256(ikm = X25519(ephemeral, recipient), salt = ephemeral pk ‖ recipient pk,
/// info = "medgate/v1/wrap").
///
/// Own stanza, kind 0x03 (the institution's, on its own records):
///
/// | offset | len | field                                                          |
/// |--------|-----|----------------------------------------------------------------|
/// | 0      | 1   | kind = 0x03                                                    |
/// | 1      | 4   | recipient tag of the institution                               |
/// | 5      | 24  | random XChaCha20 nonce                                         |
/// | 29     | 48  | XChaCha20-Poly1305(own key, nonce, DEK, aad = bytes 0..5) ‖ tag |
///
/// own key = HKDF-SHA256(ikm = X25519 secret, salt = "medgate/v1/vault",
/// info = "medgate/v1/own-stanza").
///
/// X25519 batch stanza, kind 0x04:
///
/// | offset | len | field                                                  |
/// |--------|-----|--------------------------------------------------------|
/// | 0      | 1   | kind = 0x04                                            |
/// | 1      | 4   | recipient tag                                          |
/// | 5      | 32  | ephemeral X25519 public key, shared by the batch       |
/// | 37     | 16  | salt, random per stanza                                |
/// | 53     | 48  | ChaCha20-Poly1305(wrap key, nonce = 0, DEK) ‖ tag (16) |
///
/// PRK = HKDF-Extract(salt = ephemeral pk ‖ recipient pk, ikm = X25519(ephemeral, recipient));
/// wrap key = HKDF-Expand(PRK, info = "medgate/v1/wrap-batch" ‖ salt, 32). Distinct salts give
/// distinct wrap keys, which is what keeps the zero nonce safe with a shared ephemeral key.
///
/// The tag only routes: it is 32 bits of a public key hash, so collisions are possible and an
/// identity whose tag matches may still fail to unwrap.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey(Vec<u8>);

impl WrappedKey {
    /// The encoded stanza (see the byte table on the type).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.clone()
    }

    /// The encoded stanza, borrowed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Parses an encoded stanza.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for an unknown kind byte, [`Error::Malformed`] for a wrong
    /// length. The ciphertext is not checked here; that happens on unwrap.
    pub fn from_bytes(bytes: &[u8]) -> Result<WrappedKey> {
        let want = match bytes.first() {
            None => return Err(Error::Malformed("stanza: empty")),
            Some(&STANZA_V1) => WRAPPED_KEY_LEN,
            Some(&STANZA_OWN) => OWN_STANZA_LEN,
            Some(&STANZA_BATCH) => BATCH_STANZA_LEN,
            Some(&v) => return Err(Error::UnsupportedVersion(v)),
        };
        if bytes.len() != want {
            return Err(Error::Malformed("stanza: wrong length"));
        }
        Ok(WrappedKey(bytes.to_vec()))
    }

    /// The kind byte: [`STANZA_V1`], [`STANZA_OWN`] or [`STANZA_BATCH`].
    pub fn kind(&self) -> u8 {
        self.0[0]
    }

    /// The 4-byte tag of the recipient this stanza was wrapped to.
    pub fn recipient_tag(&self) -> [u8; 4] {
        let mut tag = [0u8; 4];
        tag.copy_from_slice(&self.0[TAG_OFFSET..EPHEMERAL_OFFSET]);
        tag
    }

    /// The ephemeral public key of an X25519 stanza (either kind); `None` for an own stanza.
    fn ephemeral(&self) -> Option<PublicKey> {
        if self.kind() == STANZA_OWN {
            return None;
        }
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&self.0[EPHEMERAL_OFFSET..BODY_OFFSET]);
        Some(PublicKey::from(pk))
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind() {
            STANZA_V1 => "x25519",
            STANZA_OWN => "own",
            _ => "x25519-batch",
        };
        let mut d = f.debug_struct("WrappedKey");
        d.field("kind", &kind)
            .field("recipient_tag", &hex::encode(&self.recipient_tag()));
        if let Some(e) = self.ephemeral() {
            d.field("ephemeral", &hex::encode(e.as_bytes()));
        }
        d.finish_non_exhaustive()
    }
}

/// The HKDF salt of both X25519 kinds: ephemeral pk ‖ recipient pk.
fn pair_salt(ephemeral: &PublicKey, recipient: &PublicKey) -> [u8; 64] {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral.as_bytes());
    salt[32..].copy_from_slice(recipient.as_bytes());
    salt
}

fn wrap_cipher(
    shared: &SharedSecret,
    ephemeral: &PublicKey,
    recipient: &PublicKey,
) -> ChaCha20Poly1305 {
    let salt = pair_salt(ephemeral, recipient);
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes())
        .expand(WRAP_INFO, okm.as_mut())
        .expect("Invariant: 32 bytes is a valid HKDF-SHA256 output length");
    ChaCha20Poly1305::new(Key::from_slice(okm.as_ref()))
}

/// The batch PRK: HKDF-Extract(ephemeral pk ‖ recipient pk, shared secret).
fn batch_prk(
    shared: &SharedSecret,
    ephemeral: &PublicKey,
    recipient: &PublicKey,
) -> Zeroizing<[u8; 32]> {
    let salt = pair_salt(ephemeral, recipient);
    let (prk, _) = Hkdf::<Sha256>::extract(Some(&salt), shared.as_bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&prk);
    out
}

fn batch_cipher(prk: &[u8; 32], salt: &[u8]) -> ChaCha20Poly1305 {
    let mut info = [0u8; BATCH_INFO.len() + BATCH_SALT_LEN];
    info[..BATCH_INFO.len()].copy_from_slice(BATCH_INFO);
    info[BATCH_INFO.len()..].copy_from_slice(salt);
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::from_prk(prk)
        .expect("Invariant: a 32-byte PRK is long enough for HKDF-SHA256")
        .expand(&info, okm.as_mut())
        .expect("Invariant: 32 bytes is a valid HKDF-SHA256 output length");
    ChaCha20Poly1305::new(Key::from_slice(okm.as_ref()))
}

/// Writes ChaCha20-Poly1305(`cipher`, nonce = 0, DEK) ‖ tag at `out[at..]`, the body of both
/// X25519 kinds.
fn seal_dek(cipher: &ChaCha20Poly1305, out: &mut [u8], at: usize, dek: &DataKey) {
    let body = &mut out[at..at + DEK_CT_LEN];
    body.copy_from_slice(dek.expose());
    let tag = cipher
        .encrypt_in_place_detached(&Nonce::default(), b"", body)
        .expect("Invariant: a 32-byte message is within ChaCha20-Poly1305 limits");
    out[at + DEK_CT_LEN..].copy_from_slice(&tag);
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

    let mut out = vec![0u8; WRAPPED_KEY_LEN];
    out[0] = STANZA_V1;
    out[TAG_OFFSET..EPHEMERAL_OFFSET].copy_from_slice(&recipient.tag());
    out[EPHEMERAL_OFFSET..BODY_OFFSET].copy_from_slice(ephemeral_pk.as_bytes());
    seal_dek(&cipher, &mut out, BODY_OFFSET, dek);
    Ok(WrappedKey(out))
}

/// Wraps many DEKs to one recipient with one ephemeral key (kind 0x04 stanzas): one X25519
/// operation when made, then a hash and an AEAD per stanza.
///
/// Made by [`Recipient::batch_wrapper`]. The ephemeral secret is dropped (zeroized) as soon as
/// the shared secret is derived; the PRK is zeroized when the wrapper is dropped.
pub struct BatchWrapper {
    prk: Zeroizing<[u8; 32]>,
    tag: [u8; 4],
    ephemeral: [u8; 32],
}

impl BatchWrapper {
    pub(crate) fn new(recipient: &Recipient, ephemeral: &StaticSecret) -> Result<BatchWrapper> {
        let recipient_pk = recipient.x25519();
        let ephemeral_pk = PublicKey::from(ephemeral);
        let shared = ephemeral.diffie_hellman(recipient_pk);
        if !shared.was_contributory() {
            return Err(Error::NotContributory);
        }
        Ok(BatchWrapper {
            prk: batch_prk(&shared, &ephemeral_pk, recipient_pk),
            tag: recipient.tag(),
            ephemeral: ephemeral_pk.to_bytes(),
        })
    }

    /// Wraps one DEK with a fresh random salt.
    pub fn wrap(&self, dek: &DataKey) -> WrappedKey {
        let mut salt = [0u8; BATCH_SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        self.wrap_with_salt(dek, &salt)
    }

    pub(crate) fn wrap_with_salt(&self, dek: &DataKey, salt: &[u8; BATCH_SALT_LEN]) -> WrappedKey {
        let mut out = vec![0u8; BATCH_STANZA_LEN];
        out[0] = STANZA_BATCH;
        out[TAG_OFFSET..EPHEMERAL_OFFSET].copy_from_slice(&self.tag);
        out[EPHEMERAL_OFFSET..BODY_OFFSET].copy_from_slice(&self.ephemeral);
        out[BATCH_SALT_OFFSET..BATCH_BODY_OFFSET].copy_from_slice(salt);
        seal_dek(
            &batch_cipher(&self.prk, salt),
            &mut out,
            BATCH_BODY_OFFSET,
            dek,
        );
        WrappedKey(out)
    }
}

impl fmt::Debug for BatchWrapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchWrapper")
            .field("recipient_tag", &hex::encode(&self.tag))
            .finish_non_exhaustive()
    }
}

fn own_cipher(own_key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(Key::from_slice(own_key))
}

/// Seals `dek` in an own stanza (kind 0x03) under `own_key` with the given nonce.
pub(crate) fn wrap_own_with_nonce(
    own_key: &[u8; 32],
    tag: [u8; 4],
    dek: &DataKey,
    nonce: &[u8; OWN_NONCE_LEN],
) -> WrappedKey {
    let mut out = vec![0u8; OWN_STANZA_LEN];
    out[0] = STANZA_OWN;
    out[TAG_OFFSET..EPHEMERAL_OFFSET].copy_from_slice(&tag);
    out[OWN_NONCE_OFFSET..OWN_BODY_OFFSET].copy_from_slice(nonce);
    let (header, body) = out.split_at_mut(OWN_NONCE_OFFSET);
    let body = &mut body[OWN_NONCE_LEN..OWN_NONCE_LEN + DEK_CT_LEN];
    body.copy_from_slice(dek.expose());
    let t = own_cipher(own_key)
        .encrypt_in_place_detached(XNonce::from_slice(nonce), header, body)
        .expect("Invariant: a 32-byte message is within XChaCha20-Poly1305 limits");
    out[OWN_BODY_OFFSET + DEK_CT_LEN..].copy_from_slice(&t);
    WrappedKey(out)
}

/// [`wrap_own_with_nonce`] with a random nonce (24 bytes: random nonces are safe).
pub(crate) fn wrap_own(own_key: &[u8; 32], tag: [u8; 4], dek: &DataKey) -> WrappedKey {
    let mut nonce = [0u8; OWN_NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    wrap_own_with_nonce(own_key, tag, dek, &nonce)
}

/// Unwraps a stanza whose tag has already been matched against `recipient_pk`; `own_key` is
/// derived by the caller only for own stanzas.
///
/// Every failure, including a low-order ephemeral key, is [`Error::Decrypt`], so a damaged or
/// hostile stanza reveals nothing beyond "did not open".
pub(crate) fn unwrap_key(
    secret: &StaticSecret,
    recipient_pk: &PublicKey,
    own_key: impl FnOnce() -> Zeroizing<[u8; 32]>,
    stanza: &WrappedKey,
) -> Result<DataKey> {
    let b = &stanza.0;
    let mut dek = Zeroizing::new([0u8; DEK_CT_LEN]);
    match stanza.kind() {
        STANZA_OWN => {
            let key = own_key();
            let (header, rest) = b.split_at(OWN_NONCE_OFFSET);
            let nonce = XNonce::from_slice(&rest[..OWN_NONCE_LEN]);
            dek.copy_from_slice(&b[OWN_BODY_OFFSET..OWN_BODY_OFFSET + DEK_CT_LEN]);
            let tag = Tag::from_slice(&b[OWN_BODY_OFFSET + DEK_CT_LEN..]);
            own_cipher(&key)
                .decrypt_in_place_detached(nonce, header, dek.as_mut(), tag)
                .map_err(|_| Error::Decrypt)?;
        }
        kind => {
            let ephemeral_pk = stanza.ephemeral().ok_or(Error::Decrypt)?;
            let shared = secret.diffie_hellman(&ephemeral_pk);
            if !shared.was_contributory() {
                return Err(Error::Decrypt);
            }
            let (cipher, body) = if kind == STANZA_BATCH {
                let prk = batch_prk(&shared, &ephemeral_pk, recipient_pk);
                let salt = &b[BATCH_SALT_OFFSET..BATCH_BODY_OFFSET];
                (batch_cipher(&prk, salt), BATCH_BODY_OFFSET)
            } else {
                (
                    wrap_cipher(&shared, &ephemeral_pk, recipient_pk),
                    BODY_OFFSET,
                )
            };
            dek.copy_from_slice(&b[body..body + DEK_CT_LEN]);
            let tag = Tag::from_slice(&b[body + DEK_CT_LEN..]);
            cipher
                .decrypt_in_place_detached(&Nonce::default(), b"", dek.as_mut(), tag)
                .map_err(|_| Error::Decrypt)?;
        }
    }
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
        assert!(format!("{w:?}").starts_with("WrappedKey { kind: \"x25519\", recipient_tag: "));
    }

    #[test]
    fn other_identity_is_not_mine() {
        let w = Identity::generate()
            .recipient()
            .wrap_key(&DataKey::generate())
            .unwrap();
        assert!(Identity::generate().unwrap_key(&w).is_none());
    }

    /// Every single-bit flip after the recipient tag makes `w` fail to open for `id`.
    fn every_flip_after_the_tag_fails(id: &Identity, w: &WrappedKey) {
        for byte in EPHEMERAL_OFFSET..w.as_bytes().len() {
            for bit in 0..8 {
                let mut b = w.to_bytes();
                b[byte] ^= 1 << bit;
                let bad = WrappedKey::from_bytes(&b).unwrap();
                assert_eq!(
                    id.unwrap_key(&bad).map(|r| r.map(|_| ())),
                    Some(Err(Error::Decrypt)),
                    "kind {:#04x}: byte {byte} bit {bit}",
                    w.kind()
                );
            }
        }
    }

    #[test]
    fn every_bit_flip_after_the_tag_fails() {
        let id = Identity::generate();
        let w = id.recipient().wrap_key(&DataKey::generate()).unwrap();
        every_flip_after_the_tag_fails(&id, &w);
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

    #[test]
    fn own_stanza_round_trip_and_tamper() {
        let id = Identity::generate();
        let dek = DataKey::generate();
        let w = id.wrap_own(&dek);
        assert_eq!(w.kind(), STANZA_OWN);
        assert_eq!(w.as_bytes().len(), OWN_STANZA_LEN);
        assert_eq!(w.recipient_tag(), id.recipient().tag());
        assert_eq!(WrappedKey::from_bytes(w.as_bytes()).unwrap(), w);
        assert_eq!(id.unwrap_key(&w).unwrap().unwrap().expose(), dek.expose());
        // Random nonce: two own stanzas of one DEK differ.
        assert_ne!(id.wrap_own(&dek), w);
        // Another identity: not its tag, so not its stanza.
        assert!(Identity::generate().unwrap_key(&w).is_none());
        // Every bit after the tag is covered by the AEAD; the tag is authenticated as AAD too
        // (a flipped tag bit routes the stanza elsewhere, so it is "not mine" here).
        every_flip_after_the_tag_fails(&id, &w);
        assert!(format!("{w:?}").contains("kind: \"own\""));
    }

    #[test]
    fn batch_stanzas_share_an_ephemeral_but_not_a_key() {
        let id = Identity::generate();
        let wrapper = id.recipient().batch_wrapper().unwrap();
        let deks: Vec<DataKey> = (0..50).map(|_| DataKey::generate()).collect();
        let stanzas: Vec<WrappedKey> = deks.iter().map(|d| wrapper.wrap(d)).collect();
        for (w, dek) in stanzas.iter().zip(&deks) {
            assert_eq!(w.kind(), STANZA_BATCH);
            assert_eq!(w.as_bytes().len(), BATCH_STANZA_LEN);
            assert_eq!(w.ephemeral(), stanzas[0].ephemeral());
            assert_eq!(id.unwrap_key(w).unwrap().unwrap().expose(), dek.expose());
        }
        // One DEK wrapped twice in a batch: different salts, so different wrap keys and bodies.
        let a = wrapper.wrap(&deks[0]);
        let b = wrapper.wrap(&deks[0]);
        assert_ne!(
            a.as_bytes()[BATCH_SALT_OFFSET..],
            b.as_bytes()[BATCH_SALT_OFFSET..]
        );
        // A second wrapper draws a new ephemeral key.
        let other = id.recipient().batch_wrapper().unwrap().wrap(&deks[0]);
        assert_ne!(other.ephemeral(), a.ephemeral());
        assert!(Identity::generate().unwrap_key(&a).is_none());
        every_flip_after_the_tag_fails(&id, &a);
        let mut low = a.to_bytes();
        low[EPHEMERAL_OFFSET..BODY_OFFSET].fill(0);
        let low = WrappedKey::from_bytes(&low).unwrap();
        assert!(matches!(id.unwrap_key(&low), Some(Err(Error::Decrypt))));
        assert!(format!("{wrapper:?}").starts_with("BatchWrapper { recipient_tag: "));
    }

    #[test]
    fn batch_wrapper_to_low_order_recipient_refused() {
        let mut b = Identity::generate().recipient().to_bytes();
        b[..32].fill(0);
        let r = crate::identity::tests_support::recipient_unchecked(&b);
        assert!(matches!(r.batch_wrapper(), Err(Error::NotContributory)));
    }

    #[test]
    fn kinds_have_their_lengths() {
        for (kind, len) in [
            (STANZA_V1, WRAPPED_KEY_LEN),
            (STANZA_OWN, OWN_STANZA_LEN),
            (STANZA_BATCH, BATCH_STANZA_LEN),
        ] {
            let mut b = vec![0u8; len];
            b[0] = kind;
            assert!(WrappedKey::from_bytes(&b).is_ok());
            for wrong in [len - 1, len + 1] {
                let mut b = vec![0u8; wrong];
                b[0] = kind;
                assert_eq!(
                    WrappedKey::from_bytes(&b),
                    Err(Error::Malformed("stanza: wrong length"))
                );
            }
        }
        // An own stanza opened as if it were an X25519 one cannot happen: the kind byte decides.
        assert_eq!(
            WrappedKey::from_bytes(&[STANZA_OWN; WRAPPED_KEY_LEN]),
            Err(Error::Malformed("stanza: wrong length"))
        );
    }

    proptest! {
        #[test]
        fn batch_round_trip(dek in any::<[u8; 32]>(), eph in any::<[u8; 32]>(), salt in any::<[u8; 16]>()) {
            let id = Identity::generate();
            let dek = DataKey::from_bytes(dek);
            let w = BatchWrapper::new(&id.recipient(), &StaticSecret::from(eph))
                .unwrap()
                .wrap_with_salt(&dek, &salt);
            let parsed = WrappedKey::from_bytes(&w.to_bytes()).unwrap();
            prop_assert_eq!(&parsed, &w);
            let got = id.unwrap_key(&parsed).unwrap().unwrap();
            prop_assert_eq!(got.expose(), dek.expose());
        }

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
