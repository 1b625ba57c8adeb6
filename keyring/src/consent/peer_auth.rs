//! Institution-to-institution requests: the [`PeerAuth`] a calling gateway signs
//! ([`SignedPeerAuth`]) and the callee's check of it.

use super::*;

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
