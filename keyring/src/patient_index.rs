//! The per-patient index published to the public store: every record of one patient (where it
//! is, its manifest, its key wrapped to the patient), sealed to the patient and signed by the
//! institution, so `patient pull` recovers every record with the gateway down.
//!
//! The index lives at `v1/p/<64 hex>` ([`index_name`]), a name only the institution and the
//! patient can compute, so the public store cannot tell whose index a file is. Each version
//! carries a sequence number under the institution's signature; the patient remembers the last
//! one accepted and [`PatientIndex::open`] refuses anything older, so the store cannot serve a
//! rolled-back index.
//!
//! Version 2 (what [`PatientIndex::seal`] writes) hides what v1 showed the store: the sequence
//! number moved inside the sealed body, and the sealed whole is padded to a size bucket
//! ([`sealed_len`]: powers of two from 4 KiB), the padding inside the AEAD, so a file's length
//! tells only its bucket. The index key is wrapped to the institution too, so the institution
//! can read its own sequence numbers back ([`PatientIndex::published_seq`]) after a restore.
//! Version 1 stays readable.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use hkdf::Hkdf;
use rand::rngs::OsRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, SharedSecret, StaticSecret};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::hex;
use crate::identity::{Identity, Recipient};
use crate::key::DataKey;
use crate::manifest::Manifest;
use crate::stanza::{self, WrappedKey, STANZA_V1, WRAPPED_KEY_LEN};
use crate::wire::{names, put_bytes, put_str, Names, Reader};

/// Version byte of the v1 sealed index and of its v1 body (read only; nothing writes v1).
pub const INDEX_V1: u8 = 0x01;
/// Version byte of the v2 sealed index and of its v2 body (what [`PatientIndex::seal`] writes).
pub const INDEX_V2: u8 = 0x02;
/// Signature context of a sealed index (both versions: the version byte is signed).
pub const INDEX_CONTEXT: &str = "medgate/v1/patient-index";
/// Prefix of every patient index's object key in the public store.
pub const INDEX_PREFIX: &str = "v1/p/";
/// The smallest size bucket of a v2 sealed index; see [`sealed_len`].
pub const MIN_SEALED_LEN: usize = 4096;
/// HKDF info for index names; changing it is a format change.
const NAME_INFO: &[u8] = b"medgate/v1/patient-index-name";

/// An ephemeral X25519 public key.
const EPHEMERAL_LEN: usize = 32;
/// ChaCha20-Poly1305 of a 32-byte key ‖ tag: a v1 stanza's body.
const BOX_LEN: usize = 48;
/// A v1 stanza without its version byte (1) and recipient tag (4).
const KEY_BOX_LEN: usize = WRAPPED_KEY_LEN - 5;
const SEQ_OFFSET: usize = 1;
const INSTITUTION_OFFSET: usize = SEQ_OFFSET + 8;
const KEY_BOX_OFFSET: usize = INSTITUTION_OFFSET + 32;
/// Length of the v1 clear header, which is also the body's associated data.
const HEADER_LEN: usize = KEY_BOX_OFFSET + KEY_BOX_LEN;
/// Length of the v2 clear header: version, institution, ephemeral key, two key boxes.
const V2_HEADER_LEN: usize = 1 + 32 + EPHEMERAL_LEN + 2 * BOX_LEN;
/// Offset of the institution fingerprint in a v2 header.
const V2_INSTITUTION_OFFSET: usize = 1;
const AEAD_TAG_LEN: usize = 16;
const SIG_LEN: usize = 64;
/// Bytes of a v2 sealed index besides its padded body.
const V2_OVERHEAD: usize = V2_HEADER_LEN + AEAD_TAG_LEN + SIG_LEN;
/// Smallest encoded [`IndexRecord`]: two empty strings, an empty manifest and a stanza.
const RECORD_MIN_LEN: usize = 4 + 4 + 4 + WRAPPED_KEY_LEN;

const SEALED_NAMES: &Names = &names!("patient index");
const BODY_NAMES: &Names = &names!("patient index body");
const PADDING_NOT_ZERO: &str = "patient index body: padding not zero";

/// The public store name of the index `institution` publishes for `patient`.
///
/// `"v1/p/"` ‖ hex(HKDF-SHA256(ikm = X25519(institution, patient), salt = institution X25519 pk
/// ‖ patient X25519 pk, info = "medgate/v1/patient-index-name")), 32 bytes. The patient gets the
/// same name from [`index_name_for_patient`].
///
/// # Errors
/// [`Error::NotContributory`] if the key exchange is non-contributory (a low-order key).
pub fn index_name(institution: &Identity, patient: &Recipient) -> Result<String> {
    let shared = institution.x25519.diffie_hellman(patient.x25519());
    derive_name(&shared, &institution.x25519_public, patient.x25519())
}

/// The patient's side of [`index_name`]: the same name, from the patient's secret.
///
/// # Errors
/// As [`index_name`].
pub fn index_name_for_patient(patient: &Identity, institution: &Recipient) -> Result<String> {
    let shared = patient.x25519.diffie_hellman(institution.x25519());
    derive_name(&shared, institution.x25519(), &patient.x25519_public)
}

fn derive_name(
    shared: &SharedSecret,
    institution_pk: &PublicKey,
    patient_pk: &PublicKey,
) -> Result<String> {
    if !shared.was_contributory() {
        return Err(Error::NotContributory);
    }
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(institution_pk.as_bytes());
    salt[32..].copy_from_slice(patient_pk.as_bytes());
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes())
        .expand(NAME_INFO, &mut okm)
        .expect("Invariant: 32 bytes is a valid HKDF-SHA256 output length");
    Ok(format!("{INDEX_PREFIX}{}", hex::encode(&okm)))
}

/// The length of a v2 sealed index whose unpadded body is `body_len` bytes: the smallest power
/// of two that holds it and the 241 bytes of header, AEAD tag and signature, and at least
/// [`MIN_SEALED_LEN`] (4 KiB, which holds about ten records of a typical 400 bytes: bucket,
/// key, a one-part manifest, the stanza).
///
/// Why powers of two: the public store sees each index's length, and a patient whose index
/// changes bucket while the store watches is singled out. Doubling buckets make that rare (a
/// patient crosses a boundary after about 10, 20, 40, 80, … records, a handful of times in a
/// lifetime)
/// and leave the store a record count within a factor of two; the price is at most twice the
/// bytes of a small object. Finer steps (4 KiB steps up to 64 KiB, say) would cost less storage
/// but tell the store the record count to within ten and let it see a crossing every ten
/// records.
///
/// # Errors
/// [`Error::CounterOverflow`] for a length no power of two in `usize` can hold.
pub fn sealed_len(body_len: usize) -> Result<usize> {
    body_len
        .checked_add(V2_OVERHEAD)
        .and_then(usize::checked_next_power_of_two)
        .map(|n| n.max(MIN_SEALED_LEN))
        .ok_or(Error::CounterOverflow)
}

/// Whether `len` is one of the lengths [`sealed_len`] gives (what every v2 index has).
pub fn is_sealed_len(len: usize) -> bool {
    len >= MIN_SEALED_LEN && len.is_power_of_two()
}

/// One record in a patient's index: enough to fetch, check and open it without the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexRecord {
    /// The bucket the record is stored under.
    pub bucket: String,
    /// Its object key.
    pub key: String,
    /// The encoded [`Manifest`] (size, and each part's blob id, chunk size, plaintext length and
    /// Merkle root). Kept as bytes so an index can carry manifest versions newer than its reader.
    pub manifest: Vec<u8>,
    /// The record's DEK wrapped to the patient.
    pub stanza: WrappedKey,
}

impl IndexRecord {
    /// Decodes [`IndexRecord::manifest`].
    ///
    /// # Errors
    /// As [`Manifest::decode`].
    pub fn decode_manifest(&self) -> Result<Manifest> {
        Manifest::decode(&self.manifest)
    }
}

/// One version of a patient's index.
///
/// Sealed index, v2 (what [`PatientIndex::seal`] writes at [`index_name`]; `L` is the sealed
/// length, a power of two of at least 4096 from [`sealed_len`]):
///
/// | offset  | len    | field                                                            |
/// |---------|--------|------------------------------------------------------------------|
/// | 0       | 1      | version = 0x02                                                   |
/// | 1       | 32     | institution: fingerprint of the institution's recipient          |
/// | 33      | 32     | ephemeral X25519 public key                                      |
/// | 65      | 48     | patient box: ChaCha20-Poly1305(wrap key to the patient, nonce = 0, index key) ‖ tag |
/// | 113     | 48     | institution box: ChaCha20-Poly1305(wrap key to the institution, nonce = 0, index key) ‖ tag |
/// | 161     | L − 225 | ChaCha20-Poly1305(index key, nonce = 0, aad = bytes 0..161, padded body v2) ‖ tag (16) |
/// | L − 64  | 64     | Ed25519 signature, context "medgate/v1/patient-index", over bytes 0..L − 64 |
///
/// The two boxes are the bodies of v1 [`WrappedKey`]s of the index key, one to the patient and
/// one to the institution's own X25519 key, sharing the ephemeral key (their wrap keys differ:
/// each is HKDF(X25519(ephemeral, recipient), salt = ephemeral pk ‖ recipient pk)), without
/// version byte and recipient tag: a tag in clear would let anyone who knows a patient's public
/// key pick out that patient's index files. The opener puts its own tag back. The institution's
/// box lets the institution read back what it published (its sequence number after a restore,
/// [`PatientIndex::published_seq`]); it holds every record's key anyway. The index key and the
/// ephemeral key are drawn fresh for every seal, so every version is new bytes throughout and
/// the zero nonces are safe. Nothing in the clear part changes between versions but the
/// ephemeral key and the boxes.
///
/// Body, v2 (`str` = u32 byte length ‖ UTF-8; `bytes` = u32 length ‖ bytes):
///
/// | offset | len   | field                                                 |
/// |--------|-------|-------------------------------------------------------|
/// | 0      | 1     | version = 0x02                                        |
/// | 1      | 8     | seq (u64)                                             |
/// | 9      | 64    | institution recipient (X25519 pk ‖ Ed25519 pk)        |
/// | 73     | 32    | patient: fingerprint of the patient's recipient       |
/// | 105    | 8     | created_ms (u64)                                      |
/// | 113    | 4 + n | patient_id (`str`)                                    |
/// | …      | 4     | record count (u32)                                    |
/// | …      | …     | records: bucket `str` ‖ key `str` ‖ manifest `bytes` ‖ stanza (85) |
/// | …      | …     | padding: zero bytes up to L − 241 in all              |
///
/// The reader refuses padding that is not all zero (one encoding per value), but does not
/// insist on the bucket: the length is the writer's choice, signed like the rest.
///
/// Sealed index, v1 (written by earlier versions; still read):
///
/// | offset  | len    | field                                                            |
/// |---------|--------|------------------------------------------------------------------|
/// | 0       | 1      | version = 0x01                                                   |
/// | 1       | 8      | seq (u64)                                                        |
/// | 9       | 32     | institution: fingerprint of the institution's recipient          |
/// | 41      | 32     | ephemeral X25519 public key                                      |
/// | 73      | 48     | ChaCha20-Poly1305(wrap key, nonce = 0, index key) ‖ tag (16)     |
/// | 121     | n + 16 | ChaCha20-Poly1305(index key, nonce = 0, aad = bytes 0..121, body) |
/// | 137 + n | 64     | Ed25519 signature, context "medgate/v1/patient-index", over bytes 0..137 + n |
///
/// Body, v1: as v2 without the seq field (version = 0x01, institution recipient at 1, patient
/// fingerprint at 65, created_ms at 97, patient_id at 105, …) and without padding: nothing may
/// follow the last record. The sequence number lives only in the clear header, which the
/// body's AEAD authenticates as associated data.
///
/// Sequence numbers count up across versions (the institution keeps one counter per patient),
/// so a reader that accepted v1 seq m refuses a v2 index below m, and the other way round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatientIndex {
    /// The institution that publishes (and signs) the index.
    pub institution: Recipient,
    /// The patient, as the institution names them.
    pub patient_id: String,
    /// Grows with every published version; a reader refuses anything older than it has seen.
    pub seq: u64,
    /// When this version was made, Unix milliseconds.
    pub created_ms: u64,
    /// Every record of the patient's.
    pub records: Vec<IndexRecord>,
}

/// The parts of a sealed index once its signature and institution fingerprint checked out.
struct Verified<'a> {
    version: u8,
    header: &'a [u8],
    ciphertext: &'a [u8],
}

impl PatientIndex {
    /// Seals the index to `patient` (and its key to `institution` too) and signs it as
    /// `institution`: v2, see the byte table on the type, with a fresh random index key and
    /// ephemeral key, padded to [`sealed_len`].
    ///
    /// # Errors
    /// [`Error::IndexMismatch`] ("institution") if `institution` is not
    /// [`PatientIndex::institution`], ("record stanza") if a record's stanza is not wrapped to
    /// `patient`; [`Error::NotContributory`] for a low-order patient key.
    pub fn seal(&self, institution: &Identity, patient: &Recipient) -> Result<Vec<u8>> {
        self.seal_v2(
            institution,
            patient,
            patient.fingerprint(),
            &DataKey::generate(),
            &StaticSecret::random_from_rng(OsRng),
        )
    }

    fn check_seal_input(&self, institution: &Identity, patient: &Recipient) -> Result<()> {
        if institution.recipient() != self.institution {
            return Err(Error::IndexMismatch("institution"));
        }
        if self
            .records
            .iter()
            .any(|r| r.stanza.recipient_tag() != patient.tag() || r.stanza.kind() != STANZA_V1)
        {
            return Err(Error::IndexMismatch("record stanza"));
        }
        Ok(())
    }

    /// [`PatientIndex::seal`] with the index key, ephemeral secret and the body's patient
    /// fingerprint given.
    ///
    /// # Security
    /// `index_key` and `ephemeral` must be fresh for every call outside of tests: every nonce
    /// is zero.
    fn seal_v2(
        &self,
        institution: &Identity,
        patient: &Recipient,
        patient_key_id: [u8; 32],
        index_key: &DataKey,
        ephemeral: &StaticSecret,
    ) -> Result<Vec<u8>> {
        self.check_seal_input(institution, patient)?;
        let to_patient = stanza::wrap_key_with_ephemeral(patient, index_key, ephemeral)?;
        let to_institution =
            stanza::wrap_key_with_ephemeral(&self.institution, index_key, ephemeral)?;
        let mut body = Zeroizing::new(self.encode_body_v2(patient_key_id));
        let total = sealed_len(body.len())?;
        body.resize(total - V2_OVERHEAD, 0);

        let mut out = Vec::with_capacity(total);
        out.push(INDEX_V2);
        out.extend_from_slice(&self.institution.fingerprint());
        // Both stanzas: version (1) ‖ tag (4) ‖ ephemeral pk (32) ‖ box (48).
        out.extend_from_slice(&to_patient.as_bytes()[5..5 + EPHEMERAL_LEN]);
        out.extend_from_slice(&to_patient.as_bytes()[5 + EPHEMERAL_LEN..]);
        out.extend_from_slice(&to_institution.as_bytes()[5 + EPHEMERAL_LEN..]);
        debug_assert_eq!(out.len(), V2_HEADER_LEN);
        let ciphertext = body_cipher(index_key)
            .encrypt(
                &Nonce::default(),
                Payload {
                    msg: &body,
                    aad: &out,
                },
            )
            .expect("Invariant: an index body is far below the AEAD length limit");
        out.extend_from_slice(&ciphertext);
        let signature = institution.sign(INDEX_CONTEXT, &out);
        out.extend_from_slice(&signature.0);
        debug_assert_eq!(out.len(), total);
        Ok(out)
    }

    /// Seals as v1 (what earlier versions published), for the v1 vectors and tests.
    #[cfg(test)]
    fn seal_v1(
        &self,
        institution: &Identity,
        patient: &Recipient,
        patient_key_id: [u8; 32],
        index_key: &DataKey,
        ephemeral: &StaticSecret,
    ) -> Result<Vec<u8>> {
        self.check_seal_input(institution, patient)?;
        let wrapped = stanza::wrap_key_with_ephemeral(patient, index_key, ephemeral)?;
        let mut out = Vec::with_capacity(HEADER_LEN + 256 + self.records.len() * 512);
        out.push(INDEX_V1);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.institution.fingerprint());
        out.extend_from_slice(&wrapped.as_bytes()[WRAPPED_KEY_LEN - KEY_BOX_LEN..]);

        let body = Zeroizing::new(self.encode_body_v1(patient_key_id));
        let ciphertext = body_cipher(index_key)
            .encrypt(
                &Nonce::default(),
                Payload {
                    msg: &body,
                    aad: &out,
                },
            )
            .expect("Invariant: an index body is far below the AEAD length limit");
        out.extend_from_slice(&ciphertext);
        let signature = institution.sign(INDEX_CONTEXT, &out);
        out.extend_from_slice(&signature.0);
        Ok(out)
    }

    /// The version byte, the signature by `institution` and the institution fingerprint in the
    /// clear header: what every opener checks before anything else.
    fn verify<'a>(bytes: &'a [u8], institution: &Recipient) -> Result<Verified<'a>> {
        let (version, header_len, fp_at) = match bytes.first() {
            None => return Err(Error::Malformed(SEALED_NAMES.truncated)),
            Some(&INDEX_V1) => (INDEX_V1, HEADER_LEN, INSTITUTION_OFFSET),
            Some(&INDEX_V2) => (INDEX_V2, V2_HEADER_LEN, V2_INSTITUTION_OFFSET),
            Some(&v) => return Err(Error::UnsupportedVersion(v)),
        };
        let signed_len = bytes
            .len()
            .checked_sub(SIG_LEN)
            .filter(|&n| n >= header_len + AEAD_TAG_LEN)
            .ok_or(Error::Malformed(SEALED_NAMES.truncated))?;
        let (signed, signature) = bytes.split_at(signed_len);
        let signature = crate::identity::Signature::from_bytes(signature)?;
        institution.verify(INDEX_CONTEXT, signed, &signature)?;
        let (header, ciphertext) = signed.split_at(header_len);
        if !bool::from(header[fp_at..fp_at + 32].ct_eq(&institution.fingerprint())) {
            return Err(Error::IndexMismatch("institution"));
        }
        Ok(Verified {
            version,
            header,
            ciphertext,
        })
    }

    /// Unwraps the index key from a key box: `ephemeral` and `key_box` are a v1 stanza to
    /// `opener` without version byte and tag, which are put back here.
    fn unwrap_box(opener: &Identity, ephemeral: &[u8], key_box: &[u8]) -> Result<DataKey> {
        let mut stanza = Vec::with_capacity(WRAPPED_KEY_LEN);
        stanza.push(STANZA_V1);
        stanza.extend_from_slice(&opener.recipient().tag());
        stanza.extend_from_slice(ephemeral);
        stanza.extend_from_slice(key_box);
        let stanza = WrappedKey::from_bytes(&stanza)?;
        match opener.unwrap_key(&stanza) {
            Some(Ok(key)) => Ok(key),
            // Invariant: `None` cannot happen (the tag is the opener's own); treat it as not
            // opening.
            Some(Err(_)) | None => Err(Error::Decrypt),
        }
    }

    fn decrypt_body(v: &Verified<'_>, index_key: &DataKey) -> Result<Zeroizing<Vec<u8>>> {
        body_cipher(index_key)
            .decrypt(
                &Nonce::default(),
                Payload {
                    msg: v.ciphertext,
                    aad: v.header,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::Decrypt)
    }

    /// The sequence number of a sealed index `institution` published, read by the institution
    /// itself. A restored gateway uses it to continue past every number it ever published.
    /// v2 keeps the number inside the sealed body: the institution opens it with its own key
    /// box (and checks that the body names it). v1 has it in the clear header.
    ///
    /// # Errors
    /// As [`PatientIndex::open`] up to the signature and institution checks; for v2 also
    /// [`Error::Decrypt`] (not this institution's box) and a malformed body.
    pub fn published_seq(bytes: &[u8], institution: &Identity) -> Result<u64> {
        let me = institution.recipient();
        let v = PatientIndex::verify(bytes, &me)?;
        if v.version == INDEX_V1 {
            let mut r = Reader::new(v.header, SEALED_NAMES);
            r.take(SEQ_OFFSET)?;
            return r.u64();
        }
        let ephemeral_at = 1 + 32;
        let box_at = ephemeral_at + EPHEMERAL_LEN + BOX_LEN;
        let index_key = PatientIndex::unwrap_box(
            institution,
            &v.header[ephemeral_at..ephemeral_at + EPHEMERAL_LEN],
            &v.header[box_at..box_at + BOX_LEN],
        )?;
        let body = PatientIndex::decrypt_body(&v, &index_key)?;
        let (index, _) = PatientIndex::decode_body_v2(&body)?;
        if index.institution != me {
            return Err(Error::IndexMismatch("institution"));
        }
        Ok(index.seq)
    }

    /// Checks and opens a sealed index (v1 or v2): the signature by `institution` first, then
    /// decrypts as `patient`, checks the sequence number against `min_seq` (the last one this
    /// patient accepted; the same one again is fine) and that the body names this institution
    /// and patient. (v1 has the number in clear and checks it before decrypting.)
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] / [`Error::Malformed`] for bytes that are not a v1 or v2
    /// index; [`Error::BadSignature`] for a forged or altered file; [`Error::Rollback`] for a
    /// sequence number below `min_seq`; [`Error::Decrypt`] for an index sealed to someone else;
    /// [`Error::IndexMismatch`] ("institution", "patient", "record stanza") for a signed index
    /// made for another institution or patient.
    pub fn open(
        bytes: &[u8],
        patient: &Identity,
        institution: &Recipient,
        min_seq: u64,
    ) -> Result<PatientIndex> {
        let v = PatientIndex::verify(bytes, institution)?;
        let mut r = Reader::new(v.header, SEALED_NAMES);
        r.take(1)?;
        let (ephemeral, key_box, clear_seq) = if v.version == INDEX_V1 {
            let seq = r.u64()?;
            r.take(32)?;
            if seq < min_seq {
                return Err(Error::Rollback {
                    seen: min_seq,
                    got: seq,
                });
            }
            (r.take(EPHEMERAL_LEN)?, r.take(BOX_LEN)?, Some(seq))
        } else {
            r.take(32)?;
            let ephemeral = r.take(EPHEMERAL_LEN)?;
            let key_box = r.take(BOX_LEN)?;
            r.take(BOX_LEN)?;
            (ephemeral, key_box, None)
        };
        r.finish()?;

        let index_key = PatientIndex::unwrap_box(patient, ephemeral, key_box)?;
        let body = PatientIndex::decrypt_body(&v, &index_key)?;
        let (index, patient_key_id) = match clear_seq {
            Some(seq) => PatientIndex::decode_body_v1(&body, seq)?,
            None => PatientIndex::decode_body_v2(&body)?,
        };
        if index.seq < min_seq {
            return Err(Error::Rollback {
                seen: min_seq,
                got: index.seq,
            });
        }
        if index.institution != *institution {
            return Err(Error::IndexMismatch("institution"));
        }
        let me = patient.recipient();
        if !bool::from(patient_key_id.ct_eq(&me.fingerprint())) {
            return Err(Error::IndexMismatch("patient"));
        }
        if index
            .records
            .iter()
            .any(|r| r.stanza.recipient_tag() != me.tag())
        {
            return Err(Error::IndexMismatch("record stanza"));
        }
        Ok(index)
    }

    fn encode_fields(&self, out: &mut Vec<u8>, patient_key_id: [u8; 32]) {
        out.extend_from_slice(&self.institution.to_bytes());
        out.extend_from_slice(&patient_key_id);
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        put_str(out, &self.patient_id);
        let count =
            u32::try_from(self.records.len()).expect("Invariant: no patient has 2^32 records");
        out.extend_from_slice(&count.to_be_bytes());
        for r in &self.records {
            put_str(out, &r.bucket);
            put_str(out, &r.key);
            put_bytes(out, &r.manifest);
            out.extend_from_slice(r.stanza.as_bytes());
        }
    }

    /// The v1 body (no seq, no padding).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn encode_body_v1(&self, patient_key_id: [u8; 32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.records.len() * 512);
        out.push(INDEX_V1);
        self.encode_fields(&mut out, patient_key_id);
        out
    }

    /// The v2 body without its padding.
    pub(crate) fn encode_body_v2(&self, patient_key_id: [u8; 32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.records.len() * 512);
        out.push(INDEX_V2);
        out.extend_from_slice(&self.seq.to_be_bytes());
        self.encode_fields(&mut out, patient_key_id);
        out
    }

    fn decode_fields(r: &mut Reader<'_>, seq: u64) -> Result<(PatientIndex, [u8; 32])> {
        let institution = r.recipient()?;
        let patient_key_id = r.array()?;
        let created_ms = r.u64()?;
        let patient_id = r.string()?;
        let n = r.count(RECORD_MIN_LEN)?;
        let mut records = Vec::with_capacity(n);
        for _ in 0..n {
            records.push(IndexRecord {
                bucket: r.string()?,
                key: r.string()?,
                manifest: r.bytes()?.to_vec(),
                stanza: WrappedKey::from_bytes(r.take(WRAPPED_KEY_LEN)?)?,
            });
        }
        let index = PatientIndex {
            institution,
            patient_id,
            seq,
            created_ms,
            records,
        };
        Ok((index, patient_key_id))
    }

    /// A v1 body, whose sequence number `seq` comes from the clear header.
    pub(crate) fn decode_body_v1(body: &[u8], seq: u64) -> Result<(PatientIndex, [u8; 32])> {
        let mut r = Reader::new(body, BODY_NAMES);
        r.version()?;
        let decoded = PatientIndex::decode_fields(&mut r, seq)?;
        r.finish()?;
        Ok(decoded)
    }

    /// A v2 body, padding included (which must be all zero).
    pub(crate) fn decode_body_v2(body: &[u8]) -> Result<(PatientIndex, [u8; 32])> {
        let mut r = Reader::new(body, BODY_NAMES);
        match r.u8()? {
            INDEX_V2 => {}
            v => return Err(Error::UnsupportedVersion(v)),
        }
        let seq = r.u64()?;
        let decoded = PatientIndex::decode_fields(&mut r, seq)?;
        if r.rest().iter().any(|&b| b != 0) {
            return Err(Error::Malformed(PADDING_NOT_ZERO));
        }
        Ok(decoded)
    }
}

fn body_cipher(index_key: &DataKey) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(Key::from_slice(index_key.expose()))
}

/// The index pinned by `testdata/patient_index_v1_ok.txt`: two records of
/// `testkit::patient()`, published by `testkit::institution()`.
#[cfg(test)]
fn sample() -> PatientIndex {
    use crate::testkit;
    let patient = testkit::patient().recipient();
    let stanza = |dek: u8, eph: u8| {
        stanza::wrap_key_with_ephemeral(
            &patient,
            &DataKey::from_bytes([dek; 32]),
            &StaticSecret::from([eph; 32]),
        )
        .expect("wrap")
    };
    let manifest = crate::manifest::tests::sample().encode();
    PatientIndex {
        institution: testkit::institution().recipient(),
        patient_id: testkit::PATIENT_ID.into(),
        seq: 7,
        created_ms: testkit::CREATED_MS,
        records: vec![
            IndexRecord {
                bucket: "radiology".into(),
                key: "patient-0042/ct/2023-11-14.dcm".into(),
                manifest: manifest.clone(),
                stanza: stanza(0xd0, 0x43),
            },
            IndexRecord {
                bucket: "lab".into(),
                key: "patient-0042/hba1c.json".into(),
                manifest,
                stanza: stanza(0xd1, 0x44),
            },
        ],
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod patient_index_vectors;
