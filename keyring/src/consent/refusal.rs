//! What a patient signs to refuse a request ([`Denial`], [`SignedDenial`]) or to withdraw a
//! grant ([`Revocation`], [`SignedRevocation`]).

use super::*;

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
