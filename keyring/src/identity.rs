//! Identities (secret) and recipients (public), and their Bech32 text forms.
//!
//! An [`Identity`] holds two independent keys: X25519 to unwrap DEKs and Ed25519 to sign. Its
//! public half is a [`Recipient`]. Keeping the keys independent (rather than converting one curve
//! form into the other) means a flaw in one use cannot leak into the other.

use std::fmt;
use std::str::FromStr;

use bech32::{Bech32, Hrp};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::hex;
use crate::key::DataKey;
use crate::stanza::{self, BatchWrapper, WrappedKey};
use crate::vault::VaultKey;

/// Bech32 HRP of a [`Recipient`] (printed lowercase: `medgate1...`).
pub const RECIPIENT_HRP: &str = "medgate";
/// Bech32 HRP of an [`Identity`] (printed uppercase: `MEDGATE-SECRET-KEY-1...`).
pub const IDENTITY_HRP: &str = "medgate-secret-key-";

/// An X25519 + Ed25519 secret key pair (the institution's, or a patient's).
///
/// Both keys are wiped on drop. Debug output never shows them.
#[derive(Clone)]
pub struct Identity {
    pub(crate) x25519: StaticSecret,
    pub(crate) ed25519: SigningKey,
    /// The X25519 public key, computed once: every unwrap checks a stanza's tag against it,
    /// and deriving it is a scalar multiplication.
    pub(crate) x25519_public: PublicKey,
}

impl Identity {
    /// Generates a fresh identity from the operating system's CSPRNG.
    pub fn generate() -> Identity {
        Identity::from_keys(
            StaticSecret::random_from_rng(OsRng),
            SigningKey::generate(&mut OsRng),
        )
    }

    fn from_keys(x25519: StaticSecret, ed25519: SigningKey) -> Identity {
        Identity {
            x25519_public: PublicKey::from(&x25519),
            x25519,
            ed25519,
        }
    }

    /// The public half.
    pub fn recipient(&self) -> Recipient {
        Recipient {
            x25519: self.x25519_public,
            ed25519: self.ed25519.verifying_key(),
        }
    }

    /// The secret key bytes: X25519 secret (32) ‖ Ed25519 seed (32).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 64]> {
        let mut out = Zeroizing::new([0u8; 64]);
        out[..32].copy_from_slice(self.x25519.as_bytes());
        out[32..].copy_from_slice(self.ed25519.as_bytes());
        out
    }

    /// The inverse of [`Identity::to_bytes`].
    ///
    /// # Errors
    /// [`Error::Malformed`] unless `bytes` is exactly 64 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Identity> {
        if bytes.len() != 64 {
            return Err(Error::Malformed("identity: wrong length"));
        }
        let mut x = Zeroizing::new([0u8; 32]);
        x.copy_from_slice(&bytes[..32]);
        let mut ed = Zeroizing::new([0u8; 32]);
        ed.copy_from_slice(&bytes[32..]);
        Ok(Identity::from_keys(
            StaticSecret::from(*x),
            SigningKey::from_bytes(&ed),
        ))
    }

    /// The text form, `MEDGATE-SECRET-KEY-1...` (Bech32, uppercase like age's secret keys so it
    /// stands out as a secret).
    pub fn to_bech32(&self) -> Zeroizing<String> {
        bech32_encode(IDENTITY_HRP, self.to_bytes().as_ref(), true)
    }

    /// Parses the text form, in either case.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a bad checksum, another HRP or a wrong payload length.
    pub fn from_bech32(s: &str) -> Result<Identity> {
        let bytes = bech32_decode::<64>(s, IDENTITY_HRP, "identity bech32")?;
        Identity::from_bytes(bytes.as_ref())
    }

    /// Tries to unwrap a stanza.
    ///
    /// `None` if the stanza's recipient tag is not ours (try the next identity or stanza);
    /// `Some(Err(Error::Decrypt))` if it is ours but does not open (damaged or forged, or a tag
    /// collision).
    pub fn unwrap_key(&self, stanza: &WrappedKey) -> Option<Result<DataKey>> {
        let recipient = &self.x25519_public;
        // Not constant time on purpose: the tag is derived from public data only.
        if stanza.recipient_tag() != tag_of(recipient) {
            return None;
        }
        Some(stanza::unwrap_key(
            &self.x25519,
            recipient,
            || self.own_key(),
            stanza,
        ))
    }

    /// Wraps a DEK for this identity itself: an own stanza (kind 0x03), symmetric, so writing
    /// and opening it costs no public-key operation. The gateway uses it for the institution's
    /// stanza on every record.
    pub fn wrap_own(&self, dek: &DataKey) -> WrappedKey {
        stanza::wrap_own(&self.own_key(), tag_of(&self.x25519_public), dek)
    }

    pub(crate) fn own_key(&self) -> Zeroizing<[u8; 32]> {
        crate::vault::derive_key(self.x25519.as_bytes(), stanza::OWN_PURPOSE)
    }

    /// Signs `context ‖ 0x00 ‖ msg`, so a signature made for one use can never be replayed as
    /// another (e.g. a grant as an auth token).
    ///
    /// # Panics
    /// If `context` contains a NUL byte: contexts are fixed strings like `"medgate/v1/grant"`, and
    /// a NUL would make the framing ambiguous.
    pub fn sign(&self, context: &str, msg: &[u8]) -> Signature {
        assert!(
            !context.contains('\0'),
            "signature context must not contain NUL"
        );
        Signature(self.ed25519.sign(&framed(context, msg)).to_bytes())
    }

    /// A symmetric key for sealing small secrets that belong to this identity's holder.
    ///
    /// HKDF-SHA256(ikm = X25519 secret, salt = "medgate/v1/vault", info = `purpose`); distinct
    /// purposes give independent keys.
    pub fn vault_key(&self, purpose: &str) -> VaultKey {
        VaultKey::derive(self.x25519.as_bytes(), purpose)
    }

    /// The key this identity's gateway authenticates patient challenges with (see
    /// [`crate::consent::ChallengeKey`]).
    pub fn challenge_key(&self) -> crate::consent::ChallengeKey {
        crate::consent::ChallengeKey::from_bytes(crate::vault::derive_key(
            self.x25519.as_bytes(),
            crate::consent::CHALLENGE_KEY_PURPOSE,
        ))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("recipient", &self.recipient())
            .finish_non_exhaustive()
    }
}

pub(crate) fn framed(context: &str, msg: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + 1 + msg.len());
    m.extend_from_slice(context.as_bytes());
    m.push(0);
    m.extend_from_slice(msg);
    m
}

fn tag_of(pk: &PublicKey) -> [u8; 4] {
    let digest = Sha256::digest(pk.as_bytes());
    let mut tag = [0u8; 4];
    tag.copy_from_slice(&digest[..4]);
    tag
}

/// A public key pair: where DEKs are wrapped to and signatures are checked against.
///
/// Text form: Bech32 with HRP `medgate` (`medgate1...`) over [`Recipient::to_bytes`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Recipient {
    pub(crate) x25519: PublicKey,
    pub(crate) ed25519: VerifyingKey,
}

impl Recipient {
    /// The 4-byte routing tag written into stanzas: SHA-256(X25519 pk)\[0..4\].
    pub fn tag(&self) -> [u8; 4] {
        tag_of(&self.x25519)
    }

    /// SHA-256 of the X25519 public key: a stable, fixed-size key for indexing by recipient.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.x25519.as_bytes()).into()
    }

    /// Whether `other` is this same Recipient: both keys, compared in constant time. Use this,
    /// never [`Recipient::fingerprint`] (the X25519 key alone), to tell who a peer is.
    pub fn ct_eq(&self, other: &Recipient) -> bool {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            &self.to_bytes()[..],
            &other.to_bytes()[..],
        ))
    }

    /// Wraps a DEK to this recipient with a fresh ephemeral key.
    ///
    /// # Errors
    /// [`Error::NotContributory`] if this recipient's X25519 key is a low-order point.
    pub fn wrap_key(&self, dek: &DataKey) -> Result<WrappedKey> {
        let ephemeral = StaticSecret::random_from_rng(OsRng);
        stanza::wrap_key_with_ephemeral(self, dek, &ephemeral)
    }

    /// A wrapper for many DEKs to this recipient under one fresh ephemeral key (kind 0x04
    /// stanzas); for re-wrapping a batch of records, one X25519 operation in all.
    ///
    /// # Errors
    /// [`Error::NotContributory`] if this recipient's X25519 key is a low-order point.
    pub fn batch_wrapper(&self) -> Result<BatchWrapper> {
        BatchWrapper::new(self, &StaticSecret::random_from_rng(OsRng))
    }

    /// Checks a signature made by [`Identity::sign`] with the same `context`.
    ///
    /// Uses `verify_strict`, which rejects non-canonical signatures and small-order keys, so a
    /// signature is not malleable.
    ///
    /// # Errors
    /// [`Error::BadSignature`] for any failure.
    pub fn verify(&self, context: &str, msg: &[u8], sig: &Signature) -> Result<()> {
        if context.contains('\0') {
            return Err(Error::BadSignature);
        }
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        self.ed25519
            .verify_strict(&framed(context, msg), &sig)
            .map_err(|_| Error::BadSignature)
    }

    /// X25519 public key (32) ‖ Ed25519 verifying key (32).
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(self.x25519.as_bytes());
        out[32..].copy_from_slice(self.ed25519.as_bytes());
        out
    }

    /// The inverse of [`Recipient::to_bytes`].
    ///
    /// # Errors
    /// [`Error::Malformed`] for a wrong length, an Ed25519 key that is not a valid or is a
    /// small-order point, or a low-order X25519 key (nothing could ever be wrapped to it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Recipient> {
        let bytes: &[u8; 64] = bytes
            .try_into()
            .map_err(|_| Error::Malformed("recipient: wrong length"))?;
        let mut x = [0u8; 32];
        x.copy_from_slice(&bytes[..32]);
        let mut ed = [0u8; 32];
        ed.copy_from_slice(&bytes[32..]);
        let x25519 = PublicKey::from(x);
        // Any clamped scalar maps a low-order point to the identity, so one multiplication by a
        // fixed scalar detects them.
        if !StaticSecret::from([1u8; 32])
            .diffie_hellman(&x25519)
            .was_contributory()
        {
            return Err(Error::Malformed("recipient: low-order X25519 key"));
        }
        let ed25519 = VerifyingKey::from_bytes(&ed)
            .map_err(|_| Error::Malformed("recipient: invalid Ed25519 key"))?;
        if ed25519.is_weak() {
            return Err(Error::Malformed("recipient: small-order Ed25519 key"));
        }
        Ok(Recipient { x25519, ed25519 })
    }

    pub(crate) fn x25519(&self) -> &PublicKey {
        &self.x25519
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bech32_encode(RECIPIENT_HRP, &self.to_bytes(), false))
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Recipient {
    type Err = Error;

    /// Parses `medgate1...` (either case).
    fn from_str(s: &str) -> Result<Recipient> {
        let bytes = bech32_decode::<64>(s, RECIPIENT_HRP, "recipient bech32")?;
        Recipient::from_bytes(bytes.as_ref())
    }
}

/// An Ed25519 signature over a domain-separated message (see [`Identity::sign`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    /// The 64 signature bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }

    /// Parses 64 signature bytes.
    ///
    /// # Errors
    /// [`Error::Malformed`] for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Signature> {
        bytes
            .try_into()
            .map(Signature)
            .map_err(|_| Error::Malformed("signature: wrong length"))
    }

    /// 128 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// Parses 128 hex digits (either case).
    ///
    /// # Errors
    /// [`Error::Malformed`] for any other input.
    pub fn from_hex(s: &str) -> Result<Signature> {
        hex::decode_array(s, "signature hex").map(Signature)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

fn hrp(s: &'static str) -> Hrp {
    Hrp::parse(s).expect("Invariant: medgate HRPs are fixed, valid ASCII")
}

/// Bech32 (not Bech32m, as age) without the 90-character limit of BIP 173.
///
/// Writes into a buffer sized up front so no reallocation leaves a copy of a secret behind.
pub(crate) fn bech32_encode(hrp_str: &'static str, data: &[u8], upper: bool) -> Zeroizing<String> {
    let hrp = hrp(hrp_str);
    let len = bech32::encoded_length::<Bech32>(hrp, data)
        .expect("Invariant: medgate payloads are far below the Bech32 code length");
    let mut out = Zeroizing::new(String::with_capacity(len));
    let written = if upper {
        bech32::encode_upper_to_fmt::<Bech32, _>(&mut *out, hrp, data)
    } else {
        bech32::encode_lower_to_fmt::<Bech32, _>(&mut *out, hrp, data)
    };
    written.expect("Invariant: length checked above and writing to a String cannot fail");
    out
}

/// Decodes Bech32 text with the given HRP into exactly `N` bytes.
///
/// Rejects non-zero padding bits, so each payload has exactly one text form per case.
pub(crate) fn bech32_decode<const N: usize>(
    s: &str,
    hrp_str: &'static str,
    what: &'static str,
) -> Result<Zeroizing<[u8; N]>> {
    let checked = bech32::primitives::decode::CheckedHrpstring::new::<Bech32>(s)
        .map_err(|_| Error::Malformed(what))?;
    if checked.hrp() != hrp(hrp_str) {
        return Err(Error::Malformed(what));
    }
    checked
        .validate_segwit_padding()
        .map_err(|_| Error::Malformed(what))?;
    let mut out = Zeroizing::new([0u8; N]);
    let mut bytes = checked.byte_iter();
    for slot in out.iter_mut() {
        *slot = bytes.next().ok_or(Error::Malformed(what))?;
    }
    if bytes.next().is_some() {
        return Err(Error::Malformed(what));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A recipient built without `from_bytes`' checks, to test what wrapping does with keys that
    /// parsing would refuse.
    pub(crate) fn recipient_unchecked(b: &[u8; 64]) -> Recipient {
        let mut x = [0u8; 32];
        x.copy_from_slice(&b[..32]);
        let mut ed = [0u8; 32];
        ed.copy_from_slice(&b[32..]);
        Recipient {
            x25519: PublicKey::from(x),
            ed25519: VerifyingKey::from_bytes(&ed).expect("test key"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixed(seed: u8) -> Identity {
        let mut b = [seed; 64];
        b[32..].fill(seed.wrapping_add(1));
        Identity::from_bytes(&b).unwrap()
    }

    #[test]
    fn bech32_shapes() {
        let id = fixed(3);
        let s = id.to_bech32();
        assert!(s.starts_with("MEDGATE-SECRET-KEY-1"), "{}", &*s);
        assert_eq!(s.to_uppercase(), *s);
        assert_eq!(
            Identity::from_bech32(&s.to_lowercase()).unwrap().to_bytes(),
            id.to_bytes()
        );
        let r = id.recipient().to_string();
        assert!(r.starts_with("medgate1"), "{r}");
        assert!(r.len() > 90, "no BIP 173 length limit: {}", r.len());
        assert_eq!(r.parse::<Recipient>().unwrap(), id.recipient());
        assert_eq!(
            r.to_uppercase().parse::<Recipient>().unwrap(),
            id.recipient()
        );
        assert_eq!(format!("{:?}", id.recipient()), r);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let id = fixed(9);
        let dbg = format!("{id:?}");
        assert!(dbg.contains("medgate1"));
        assert!(!dbg.to_lowercase().contains(&id.to_bech32().to_lowercase()));
        assert!(!dbg.contains(&crate::hex::encode(id.to_bytes().as_ref())));
    }

    #[test]
    fn recipient_parse_errors() {
        let r = fixed(1).recipient().to_string();
        let mut flipped = r.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'q' { b'p' } else { b'q' };
        let flipped = String::from_utf8(flipped).unwrap();
        for bad in [
            "",
            "medgate",
            "medgate1",
            "age1qqqq",
            flipped.as_str(),
            &r[..r.len() - 1],
            &format!("{}{}", &r[..10], r[10..].to_uppercase()),
        ] {
            assert!(
                matches!(bad.parse::<Recipient>(), Err(Error::Malformed(_))),
                "{bad}"
            );
        }
        // Secret key text is not a recipient, and vice versa.
        let sk = fixed(1).to_bech32();
        assert!(sk.parse::<Recipient>().is_err());
        assert!(Identity::from_bech32(&r).is_err());
        // Wrong payload length under the right HRP.
        let short = bech32_encode(RECIPIENT_HRP, &[0u8; 63], false);
        assert!(short.parse::<Recipient>().is_err());
        // Low-order X25519 key, valid Ed25519 key.
        let mut b = fixed(1).recipient().to_bytes();
        b[..32].fill(0);
        assert_eq!(
            Recipient::from_bytes(&b),
            Err(Error::Malformed("recipient: low-order X25519 key"))
        );
        // Identity point as the Ed25519 key (small order).
        let mut b = fixed(1).recipient().to_bytes();
        b[32..].fill(0);
        b[32] = 1;
        assert!(Recipient::from_bytes(&b).is_err());
        assert!(Recipient::from_bytes(&[0u8; 65]).is_err());
        assert!(Identity::from_bytes(&[0u8; 63]).is_err());
    }

    #[test]
    fn signatures_are_domain_separated() {
        let id = fixed(5);
        let r = id.recipient();
        let sig = id.sign("medgate/v1/grant", b"msg");
        assert_eq!(r.verify("medgate/v1/grant", b"msg", &sig), Ok(()));
        assert_eq!(
            r.verify("medgate/v1/auth", b"msg", &sig),
            Err(Error::BadSignature)
        );
        assert_eq!(
            r.verify("medgate/v1/grant", b"msh", &sig),
            Err(Error::BadSignature)
        );
        assert_eq!(
            fixed(6)
                .recipient()
                .verify("medgate/v1/grant", b"msg", &sig),
            Err(Error::BadSignature)
        );
        // The context and message cannot trade bytes across the separator.
        let sig2 = id.sign("medgate/v1/gran", b"t\0msg");
        assert_eq!(
            r.verify("medgate/v1/grant", b"msg", &sig2),
            Err(Error::BadSignature)
        );
        assert_eq!(r.verify("a\0b", b"", &sig), Err(Error::BadSignature));
        let mut bad = sig;
        bad.0[63] ^= 0x10;
        assert_eq!(
            r.verify("medgate/v1/grant", b"msg", &bad),
            Err(Error::BadSignature)
        );
        assert_eq!(Signature::from_hex(&sig.to_hex()).unwrap(), sig);
        assert_eq!(Signature::from_bytes(&sig.to_bytes()).unwrap(), sig);
        assert!(Signature::from_bytes(&[0u8; 63]).is_err());
    }

    #[test]
    #[should_panic(expected = "NUL")]
    fn sign_rejects_nul_context() {
        fixed(1).sign("a\0b", b"");
    }

    #[test]
    fn vault_keys_differ_by_purpose_and_identity() {
        let a = fixed(1).vault_key("s3-secrets");
        let b = fixed(1).vault_key("other");
        let c = fixed(2).vault_key("s3-secrets");
        let boxed = a.seal(b"AKID", b"secret");
        assert_eq!(&*a.open(b"AKID", &boxed).unwrap(), b"secret");
        assert_eq!(b.open(b"AKID", &boxed).unwrap_err(), Error::Decrypt);
        assert_eq!(c.open(b"AKID", &boxed).unwrap_err(), Error::Decrypt);
        assert_eq!(a.open(b"AKID2", &boxed).unwrap_err(), Error::Decrypt);
        assert_eq!(format!("{a:?}"), "VaultKey(<redacted>)");
    }

    proptest! {
        #[test]
        fn identity_round_trips(x in any::<[u8; 32]>(), ed in any::<[u8; 32]>()) {
            let id = Identity::from_bytes(&[x, ed].concat()).unwrap();
            let back = Identity::from_bech32(&id.to_bech32()).unwrap();
            prop_assert_eq!(back.to_bytes(), id.to_bytes());
            let r = id.recipient();
            prop_assert_eq!(Recipient::from_bytes(&r.to_bytes()).unwrap(), r.clone());
            prop_assert_eq!(r.to_string().parse::<Recipient>().unwrap(), r);
        }

        #[test]
        fn vault_round_trips(aad in proptest::collection::vec(any::<u8>(), 0..40), msg in proptest::collection::vec(any::<u8>(), 0..200)) {
            let k = fixed(7).vault_key("p");
            let boxed = k.seal(&aad, &msg);
            prop_assert_eq!(boxed.len(), 1 + 24 + msg.len() + 16);
            prop_assert_eq!(&*k.open(&aad, &boxed).unwrap(), &msg);
            for cut in 0..boxed.len() {
                prop_assert!(k.open(&aad, &boxed[..cut]).is_err());
            }
            let mut flipped = boxed.clone();
            let i = flipped.len() / 2;
            flipped[i] ^= 1;
            prop_assert!(k.open(&aad, &flipped).is_err());
        }
    }
}
