//! Patient key registration ([`registration_proof`], [`verify_registration`]) and key change
//! ([`KeyChange`], [`SignedKeyChange`]).

use super::*;

/// The message a [`registration_proof`] signs (byte table there).
fn registration_message(
    institution: &[u8; 32],
    recipient: &Recipient,
    patient_id: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 32 + 64 + 4 + patient_id.len());
    out.push(CONSENT_V1);
    out.extend_from_slice(institution);
    out.extend_from_slice(&recipient.to_bytes());
    put_str(&mut out, patient_id);
    out
}

/// Proof that whoever registers `identity`'s public key for `patient_id` at `institution` holds
/// its secret: a signature with context [`REGISTER_CONTEXT`] over this message.
///
/// Registration, v1:
///
/// | offset | len   | field                                               |
/// |--------|-------|-----------------------------------------------------|
/// | 0      | 1     | version = 0x01                                      |
/// | 1      | 32    | institution: fingerprint of the registering gateway |
/// | 33     | 64    | recipient: the key being registered                 |
/// | 97     | 4 + n | patient_id (`str`)                                  |
///
/// The institution is bound so a proof shown to one gateway cannot register the key at another.
pub fn registration_proof(
    identity: &Identity,
    institution: [u8; 32],
    patient_id: &str,
) -> Signature {
    let msg = registration_message(&institution, &identity.recipient(), patient_id);
    identity.sign(REGISTER_CONTEXT, &msg)
}

/// Checks a [`registration_proof`] for `recipient`.
///
/// # Errors
/// [`Error::BadSignature`] for a proof made for another key, institution or patient id.
pub fn verify_registration(
    recipient: &Recipient,
    institution: [u8; 32],
    patient_id: &str,
    proof: &Signature,
) -> Result<()> {
    let msg = registration_message(&institution, recipient, patient_id);
    recipient.verify(REGISTER_CONTEXT, &msg, proof)
}

/// A patient's move from the key on file to a new one, signed by the old key.
///
/// KeyChange, v1:
///
/// | offset | len   | field                                             |
/// |--------|-------|---------------------------------------------------|
/// | 0      | 1     | version = 0x01                                    |
/// | 1      | 32    | institution: fingerprint of the gateway           |
/// | 33     | 32    | old: fingerprint of the key on file               |
/// | 65     | 64    | new: the new recipient                            |
/// | 129    | 8     | issued_ms (u64)                                   |
/// | 137    | 16    | nonce                                             |
/// | 153    | 4 + n | patient_id (`str`, 1..=256 bytes)                 |
///
/// Losing the old key needs the logged break-glass procedure instead; that is not this type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChange {
    /// Fingerprint of the gateway.
    pub institution: [u8; 32],
    /// The patient.
    pub patient_id: String,
    /// Fingerprint of the key on file, which signs the change.
    pub old: [u8; 32],
    /// The key to put on file.
    pub new: Recipient,
    /// When the patient signed, Unix milliseconds.
    pub issued_ms: u64,
    /// Random.
    pub nonce: [u8; 16],
}

impl KeyChange {
    /// The change of `patient_id`'s key at `institution` from `old` to `new`, with a fresh nonce.
    pub fn new(
        institution: [u8; 32],
        patient_id: &str,
        old: &Recipient,
        new: &Recipient,
        issued_ms: u64,
    ) -> KeyChange {
        KeyChange {
            institution,
            patient_id: patient_id.to_owned(),
            old: old.fingerprint(),
            new: new.clone(),
            issued_ms,
            nonce: random_nonce(),
        }
    }

    /// Signs with the old key (context [`KEY_CHANGE_CONTEXT`]) and adds the new key's
    /// [`registration_proof`].
    ///
    /// # Errors
    /// [`Error::AuthMismatch`] ("old key", "new key") if the identities are not the keys the
    /// change names.
    pub fn sign(&self, old: &Identity, new: &Identity) -> Result<SignedKeyChange> {
        if old.recipient().fingerprint() != self.old {
            return Err(Error::AuthMismatch("old key"));
        }
        if new.recipient() != self.new {
            return Err(Error::AuthMismatch("new key"));
        }
        Ok(SignedKeyChange {
            signature: old.sign(KEY_CHANGE_CONTEXT, &self.encode()),
            new_proof: registration_proof(new, self.institution, &self.patient_id),
            change: self.clone(),
        })
    }
}

impl Wire for KeyChange {
    const NAMES: &'static Names = &names!("key change");

    fn write(&self, out: &mut Vec<u8>) {
        out.push(CONSENT_V1);
        out.extend_from_slice(&self.institution);
        out.extend_from_slice(&self.old);
        out.extend_from_slice(&self.new.to_bytes());
        out.extend_from_slice(&self.issued_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        put_str(out, &self.patient_id);
    }

    fn read(r: &mut Reader<'_>) -> Result<KeyChange> {
        r.version()?;
        let c = KeyChange {
            institution: r.array()?,
            old: r.array()?,
            new: r.recipient()?,
            issued_ms: r.u64()?,
            nonce: r.array()?,
            patient_id: r.string()?,
        };
        check_patient_id(&c.patient_id, "key change: patient id")?;
        Ok(c)
    }
}

wire_methods!(KeyChange, "key change");

/// A [`KeyChange`] signed by the old key, with the new key's proof of possession.
///
/// Encoding: the change's encoding ‖ old key's signature (64) ‖ new key's
/// [`registration_proof`] (64).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedKeyChange {
    /// What is changed.
    pub change: KeyChange,
    /// The old key's signature over the change.
    pub signature: Signature,
    /// The new key's [`registration_proof`] for the same institution and patient.
    pub new_proof: Signature,
}

impl SignedKeyChange {
    /// Checks that `current` (the key on file for `patient_id`) signed this change at
    /// `institution`, that the new key proved possession, and that the change was issued within
    /// `max_age_ms` of `now_ms` (so an old change cannot be replayed after the patient moved
    /// back to the old key).
    ///
    /// # Errors
    /// [`Error::BadSignature`] for either signature; [`Error::AuthMismatch`] ("old key",
    /// "institution", "patient", "new key"); [`Error::AuthExpired`].
    pub fn verify(
        &self,
        current: &Recipient,
        institution: [u8; 32],
        patient_id: &str,
        now_ms: u64,
        max_age_ms: u64,
    ) -> Result<()> {
        let c = &self.change;
        current.verify(KEY_CHANGE_CONTEXT, &c.encode(), &self.signature)?;
        if !ct_eq(&c.old, &current.fingerprint()) {
            return Err(Error::AuthMismatch("old key"));
        }
        if !ct_eq(&c.institution, &institution) {
            return Err(Error::AuthMismatch("institution"));
        }
        if c.patient_id != patient_id {
            return Err(Error::AuthMismatch("patient"));
        }
        if c.new == *current {
            return Err(Error::AuthMismatch("new key"));
        }
        verify_registration(&c.new, c.institution, &c.patient_id, &self.new_proof)?;
        if now_ms.abs_diff(c.issued_ms) > max_age_ms {
            return Err(Error::AuthExpired);
        }
        Ok(())
    }
}

impl Wire for SignedKeyChange {
    const NAMES: &'static Names = &names!("signed key change");

    fn write(&self, out: &mut Vec<u8>) {
        self.change.write(out);
        out.extend_from_slice(&self.signature.0);
        out.extend_from_slice(&self.new_proof.0);
    }

    fn read(r: &mut Reader<'_>) -> Result<SignedKeyChange> {
        Ok(SignedKeyChange {
            change: KeyChange::read(r)?,
            signature: Signature(r.array()?),
            new_proof: Signature(r.array()?),
        })
    }
}

wire_methods!(SignedKeyChange, "signed key change");
