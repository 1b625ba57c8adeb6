//! How a patient proves who they are on a request: the gateway's [`AuthChallenge`] (MACed
//! with a [`ChallengeKey`]), the [`AuthToken`] the patient signs ([`SignedAuth`]).

use super::*;

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
