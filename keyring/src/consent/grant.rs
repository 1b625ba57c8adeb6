//! What a patient signs to approve a request: the [`Grant`] and its [`SignedGrant`], with
//! the check the gateway runs before it re-wraps a record key.

use super::*;

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

signed_type!(
    /// A [`Grant`] signed by the patient with context [`GRANT_CONTEXT`].
    ///
    /// Encoding: the grant's encoding ‖ signature (64).
    SignedGrant, grant: Grant, GRANT_CONTEXT, "signed grant"
);

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
