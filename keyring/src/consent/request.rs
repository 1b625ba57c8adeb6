//! What a recipient asks for: the [`ShareRequest`] and its [`SignedRequest`].

use super::*;

/// A recipient's request to read some of a patient's records.
///
/// ShareRequest, v1 (`str` as in the module docs):
///
/// | offset | len   | field                                                        |
/// |--------|-------|--------------------------------------------------------------|
/// | 0      | 1     | version = 0x01                                               |
/// | 1      | 32    | institution: fingerprint of the owning gateway's recipient   |
/// | 33     | 64    | recipient: X25519 pk ‖ Ed25519 pk of who gets the keys        |
/// | 97     | 8     | created_ms (u64)                                             |
/// | 105    | 8     | expires_ms (u64): when the access asked for ends              |
/// | 113    | 16    | nonce                                                        |
/// | 129    | 4 + n | patient_id (`str`, 1..=256 bytes, no control characters)     |
/// | …      | 2 + … | scope (see [`Scope`])                                        |
/// | …      | 4 + n | requester (`str`, 0..=256 bytes, no control characters)      |
/// | …      | 4 + n | purpose_code (`str`, 1..=64 bytes of `A-Z a-z 0-9 . _ -`)     |
/// | …      | 4 + n | purpose_text (`str`, 0..=4096 bytes, no control but newline) |
///
/// Nothing may follow `purpose_text`; `created_ms < expires_ms`.
///
/// # Security
/// `requester` and `purpose_text` are the requester's own words. What the patient is shown
/// about who is asking must come from the gateway's peer configuration for `recipient`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareRequest {
    /// Fingerprint ([`Recipient::fingerprint`]) of the gateway that holds the records.
    pub institution: [u8; 32],
    /// The patient, as the owning gateway names them.
    pub patient_id: String,
    /// Which records.
    pub scope: Scope,
    /// Who the record keys would be wrapped to.
    pub recipient: Recipient,
    /// The requester's name for itself (untrusted display text).
    pub requester: String,
    /// Free-text purpose (untrusted display text).
    pub purpose_text: String,
    /// Purpose of use code, FHIR v3 ActReason style, e.g. `TREAT`, `ETREAT`, `HPAYMT`.
    pub purpose_code: String,
    /// When the request was made, Unix milliseconds.
    pub created_ms: u64,
    /// When the access asked for would end, Unix milliseconds.
    pub expires_ms: u64,
    /// Random, so two otherwise equal requests have different hashes.
    pub nonce: [u8; 16],
}

impl ShareRequest {
    /// The request's id: SHA-256("medgate/v1/request-id" ‖ 0x00 ‖ encoding). Grants and denials
    /// name the request by it.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(REQUEST_ID_PREFIX);
        h.update(self.encode());
        h.finalize().into()
    }

    /// Checks the field rules in the byte table (what [`ShareRequest::decode`] guarantees).
    ///
    /// # Errors
    /// [`Error::Malformed`] naming the field.
    pub fn validate(&self) -> Result<()> {
        check_patient_id(&self.patient_id, "share request: patient id")?;
        self.scope.validate()?;
        check_text(
            &self.requester,
            MAX_NAME_LEN,
            false,
            "share request: requester",
        )?;
        let code_ok = (1..=MAX_PURPOSE_CODE_LEN).contains(&self.purpose_code.len())
            && self
                .purpose_code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !code_ok {
            return Err(Error::Malformed("share request: purpose code"));
        }
        check_text(
            &self.purpose_text,
            MAX_PURPOSE_TEXT_LEN,
            true,
            "share request: purpose text",
        )?;
        if self.created_ms >= self.expires_ms {
            return Err(Error::Malformed("share request: expires before created"));
        }
        Ok(())
    }

    /// Signs the request as its requester (the recipient itself, or a peer gateway asking for
    /// it), with context [`REQUEST_CONTEXT`].
    pub fn sign(&self, requester: &Identity) -> SignedRequest {
        SignedRequest {
            signature: requester.sign(REQUEST_CONTEXT, &self.encode()),
            request: self.clone(),
        }
    }
}

impl Wire for ShareRequest {
    const NAMES: &'static Names = &names!("share request");

    fn write(&self, out: &mut Vec<u8>) {
        out.push(CONSENT_V1);
        out.extend_from_slice(&self.institution);
        out.extend_from_slice(&self.recipient.to_bytes());
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        put_str(out, &self.patient_id);
        self.scope.write(out);
        put_str(out, &self.requester);
        put_str(out, &self.purpose_code);
        put_str(out, &self.purpose_text);
    }

    fn read(r: &mut Reader<'_>) -> Result<ShareRequest> {
        r.version()?;
        let institution = r.array()?;
        let recipient = r.recipient()?;
        let created_ms = r.u64()?;
        let expires_ms = r.u64()?;
        let nonce = r.array()?;
        let patient_id = r.string()?;
        let scope = Scope::read(r)?;
        let requester = r.string()?;
        let purpose_code = r.string()?;
        let purpose_text = r.string()?;
        let req = ShareRequest {
            institution,
            patient_id,
            scope,
            recipient,
            requester,
            purpose_text,
            purpose_code,
            created_ms,
            expires_ms,
            nonce,
        };
        req.validate()?;
        Ok(req)
    }
}

wire_methods!(ShareRequest, "share request");

signed_type!(
    /// A [`ShareRequest`] signed by its requester with context [`REQUEST_CONTEXT`].
    ///
    /// Encoding: the request's encoding ‖ signature (64).
    SignedRequest, request: ShareRequest, REQUEST_CONTEXT, "signed share request"
);

impl SignedRequest {
    /// Checks the signature against `requester`: the request's recipient when it asks for
    /// itself, or the configured key of the peer gateway asking for it.
    ///
    /// # Errors
    /// [`Error::BadSignature`].
    pub fn verify(&self, requester: &Recipient) -> Result<()> {
        requester.verify(REQUEST_CONTEXT, &self.request.encode(), &self.signature)
    }
}
