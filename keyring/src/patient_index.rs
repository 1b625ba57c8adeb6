//! The per-patient index published to the public store: every record of one patient (where it
//! is, its manifest, its key wrapped to the patient), sealed to the patient and signed by the
//! institution, so `patient pull` recovers every record with the gateway down.
//!
//! The index lives at `v1/p/<64 hex>` ([`index_name`]), a name only the institution and the
//! patient can compute, so the public store cannot tell whose index a file is. Each version
//! carries a sequence number under the institution's signature; the patient remembers the last
//! one accepted and [`PatientIndex::open`] refuses anything older, so the store cannot serve a
//! rolled-back index.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use hkdf::Hkdf;
use rand::rngs::OsRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, SharedSecret, StaticSecret};
use zeroize::Zeroizing;

use crate::consent::{names, put_bytes, put_str, Names, Reader};
use crate::error::{Error, Result};
use crate::hex;
use crate::identity::{Identity, Recipient};
use crate::key::DataKey;
use crate::manifest::Manifest;
use crate::stanza::{self, WrappedKey, STANZA_V1, WRAPPED_KEY_LEN};

/// Version byte of the v1 sealed index and of its v1 body.
pub const INDEX_V1: u8 = 0x01;
/// Signature context of a sealed index.
pub const INDEX_CONTEXT: &str = "medgate/v1/patient-index";
/// Prefix of every patient index's object key in the public store.
pub const INDEX_PREFIX: &str = "v1/p/";
/// HKDF info for index names; changing it is a format change.
const NAME_INFO: &[u8] = b"medgate/v1/patient-index-name";

/// A v1 stanza without its version byte (1) and recipient tag (4).
const KEY_BOX_LEN: usize = WRAPPED_KEY_LEN - 5;
const SEQ_OFFSET: usize = 1;
const INSTITUTION_OFFSET: usize = SEQ_OFFSET + 8;
const KEY_BOX_OFFSET: usize = INSTITUTION_OFFSET + 32;
/// Length of the clear header, which is also the body's associated data.
const HEADER_LEN: usize = KEY_BOX_OFFSET + KEY_BOX_LEN;
const AEAD_TAG_LEN: usize = 16;
const SIG_LEN: usize = 64;
/// Smallest encoded [`IndexRecord`]: two empty strings, an empty manifest and a stanza.
const RECORD_MIN_LEN: usize = 4 + 4 + 4 + WRAPPED_KEY_LEN;

const SEALED_NAMES: &Names = &names!("patient index");
const BODY_NAMES: &Names = &names!("patient index body");

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
/// Sealed index, v1 (what is published at [`index_name`]):
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
/// Bytes 41..121 are a v1 [`WrappedKey`] of the index key to the patient without its version
/// byte and recipient tag: a tag in clear would let anyone who knows a patient's public key pick
/// out that patient's index files. The opener puts its own tag back. The index key is drawn
/// fresh for every seal and encrypts exactly one body, which is what makes the zero nonce safe.
///
/// Body, v1 (`str` = u32 byte length ‖ UTF-8; `bytes` = u32 length ‖ bytes):
///
/// | offset | len   | field                                                 |
/// |--------|-------|-------------------------------------------------------|
/// | 0      | 1     | version = 0x01                                        |
/// | 1      | 64    | institution recipient (X25519 pk ‖ Ed25519 pk)        |
/// | 65     | 32    | patient: fingerprint of the patient's recipient       |
/// | 97     | 8     | created_ms (u64)                                      |
/// | 105    | 4 + n | patient_id (`str`)                                    |
/// | …      | 4     | record count (u32)                                    |
/// | …      | …     | records: bucket `str` ‖ key `str` ‖ manifest `bytes` ‖ stanza (85) |
///
/// Nothing may follow the last record. The sequence number lives only in the header, which the
/// body's AEAD authenticates as associated data.
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

impl PatientIndex {
    /// Seals the index to `patient` and signs it as `institution` (see the byte table on the
    /// type), with a fresh random index key and ephemeral key.
    ///
    /// # Errors
    /// [`Error::IndexMismatch`] ("institution") if `institution` is not
    /// [`PatientIndex::institution`], ("record stanza") if a record's stanza is not wrapped to
    /// `patient`; [`Error::NotContributory`] for a low-order patient key.
    pub fn seal(&self, institution: &Identity, patient: &Recipient) -> Result<Vec<u8>> {
        self.seal_raw(
            institution,
            patient,
            patient.fingerprint(),
            &DataKey::generate(),
            &StaticSecret::random_from_rng(OsRng),
        )
    }

    /// [`PatientIndex::seal`] with the index key, ephemeral secret and the body's patient
    /// fingerprint given.
    ///
    /// # Security
    /// `index_key` and `ephemeral` must be fresh for every call outside of tests: both nonces
    /// are zero.
    fn seal_raw(
        &self,
        institution: &Identity,
        patient: &Recipient,
        patient_key_id: [u8; 32],
        index_key: &DataKey,
        ephemeral: &StaticSecret,
    ) -> Result<Vec<u8>> {
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
        let wrapped = stanza::wrap_key_with_ephemeral(patient, index_key, ephemeral)?;
        let mut out = Vec::with_capacity(HEADER_LEN + 256 + self.records.len() * 512);
        out.push(INDEX_V1);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.institution.fingerprint());
        out.extend_from_slice(&wrapped.as_bytes()[WRAPPED_KEY_LEN - KEY_BOX_LEN..]);

        let body = Zeroizing::new(self.encode_body(patient_key_id));
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

    /// The sequence number of a sealed index `institution` published, read by the institution
    /// itself (which cannot open the body: it is sealed to the patient). A restored gateway
    /// uses it to continue past every number it ever published.
    ///
    /// # Errors
    /// As [`PatientIndex::open`] up to the signature and institution checks.
    pub fn published_seq(bytes: &[u8], institution: &Recipient) -> Result<u64> {
        match bytes.first() {
            None => return Err(Error::Malformed(SEALED_NAMES.truncated)),
            Some(&INDEX_V1) => {}
            Some(&v) => return Err(Error::UnsupportedVersion(v)),
        }
        let signed_len = bytes
            .len()
            .checked_sub(SIG_LEN)
            .filter(|&n| n >= HEADER_LEN + AEAD_TAG_LEN)
            .ok_or(Error::Malformed(SEALED_NAMES.truncated))?;
        let (signed, signature) = bytes.split_at(signed_len);
        let signature = crate::identity::Signature::from_bytes(signature)?;
        institution.verify(INDEX_CONTEXT, signed, &signature)?;
        let mut r = Reader::new(&signed[..HEADER_LEN], SEALED_NAMES);
        r.take(SEQ_OFFSET)?;
        let seq = r.u64()?;
        let institution_fp: [u8; 32] = r.array()?;
        if !bool::from(institution_fp.ct_eq(&institution.fingerprint())) {
            return Err(Error::IndexMismatch("institution"));
        }
        Ok(seq)
    }

    /// Checks and opens a sealed index: the signature by `institution` first, then the sequence
    /// number against `min_seq` (the last one this patient accepted; the same one again is
    /// fine), and only then decrypts as `patient` and checks the body names this institution and
    /// patient.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] / [`Error::Malformed`] for bytes that are not a v1 index;
    /// [`Error::BadSignature`] for a forged or altered file; [`Error::Rollback`] for a sequence
    /// number below `min_seq`; [`Error::Decrypt`] for an index sealed to someone else;
    /// [`Error::IndexMismatch`] ("institution", "patient", "record stanza") for a signed index
    /// made for another institution or patient.
    pub fn open(
        bytes: &[u8],
        patient: &Identity,
        institution: &Recipient,
        min_seq: u64,
    ) -> Result<PatientIndex> {
        match bytes.first() {
            None => return Err(Error::Malformed(SEALED_NAMES.truncated)),
            Some(&INDEX_V1) => {}
            Some(&v) => return Err(Error::UnsupportedVersion(v)),
        }
        let signed_len = bytes
            .len()
            .checked_sub(SIG_LEN)
            .filter(|&n| n >= HEADER_LEN + AEAD_TAG_LEN)
            .ok_or(Error::Malformed(SEALED_NAMES.truncated))?;
        let (signed, signature) = bytes.split_at(signed_len);
        let signature = crate::identity::Signature::from_bytes(signature)?;
        institution.verify(INDEX_CONTEXT, signed, &signature)?;

        let (header, ciphertext) = signed.split_at(HEADER_LEN);
        let mut r = Reader::new(header, SEALED_NAMES);
        r.take(SEQ_OFFSET)?;
        let seq = r.u64()?;
        let institution_fp: [u8; 32] = r.array()?;
        let key_box: [u8; KEY_BOX_LEN] = r.array()?;
        r.finish()?;
        if !bool::from(institution_fp.ct_eq(&institution.fingerprint())) {
            return Err(Error::IndexMismatch("institution"));
        }
        if seq < min_seq {
            return Err(Error::Rollback {
                seen: min_seq,
                got: seq,
            });
        }

        let me = patient.recipient();
        let mut stanza = Vec::with_capacity(WRAPPED_KEY_LEN);
        stanza.push(STANZA_V1);
        stanza.extend_from_slice(&me.tag());
        stanza.extend_from_slice(&key_box);
        let stanza = WrappedKey::from_bytes(&stanza)?;
        let index_key = match patient.unwrap_key(&stanza) {
            Some(Ok(key)) => key,
            // Invariant: `None` cannot happen (the tag is our own); treat it as not opening.
            Some(Err(_)) | None => return Err(Error::Decrypt),
        };
        let body = body_cipher(&index_key)
            .decrypt(
                &Nonce::default(),
                Payload {
                    msg: ciphertext,
                    aad: header,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::Decrypt)?;

        let (index, patient_key_id) = PatientIndex::decode_body(&body, seq)?;
        if index.institution != *institution {
            return Err(Error::IndexMismatch("institution"));
        }
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

    pub(crate) fn encode_body(&self, patient_key_id: [u8; 32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.records.len() * 512);
        out.push(INDEX_V1);
        out.extend_from_slice(&self.institution.to_bytes());
        out.extend_from_slice(&patient_key_id);
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        put_str(&mut out, &self.patient_id);
        let count =
            u32::try_from(self.records.len()).expect("Invariant: no patient has 2^32 records");
        out.extend_from_slice(&count.to_be_bytes());
        for r in &self.records {
            put_str(&mut out, &r.bucket);
            put_str(&mut out, &r.key);
            put_bytes(&mut out, &r.manifest);
            out.extend_from_slice(r.stanza.as_bytes());
        }
        out
    }

    pub(crate) fn decode_body(body: &[u8], seq: u64) -> Result<(PatientIndex, [u8; 32])> {
        let mut r = Reader::new(body, BODY_NAMES);
        r.version()?;
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
        r.finish()?;
        let index = PatientIndex {
            institution,
            patient_id,
            seq,
            created_ms,
            records,
        };
        Ok((index, patient_key_id))
    }
}

fn body_cipher(index_key: &DataKey) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(Key::from_slice(index_key.expose()))
}

/// The index pinned by `testdata/patient_index_v1_ok.txt`: two records of
/// `consent::testkit::patient()`, published by `consent::testkit::institution()`.
#[cfg(test)]
fn sample() -> PatientIndex {
    use crate::consent::testkit;
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
mod tests {
    use super::*;
    use crate::consent::testkit;
    use proptest::prelude::*;

    fn sealed() -> Vec<u8> {
        sample()
            .seal(&testkit::institution(), &testkit::patient().recipient())
            .unwrap()
    }

    fn open(bytes: &[u8], min_seq: u64) -> Result<PatientIndex> {
        PatientIndex::open(
            bytes,
            &testkit::patient(),
            &testkit::institution().recipient(),
            min_seq,
        )
    }

    #[test]
    fn names_agree_and_separate() {
        let (inst, pat, other) = (testkit::institution(), testkit::patient(), testkit::other());
        let name = index_name(&inst, &pat.recipient()).unwrap();
        assert_eq!(
            index_name_for_patient(&pat, &inst.recipient()).unwrap(),
            name
        );
        let hex = name.strip_prefix(INDEX_PREFIX).expect("prefix");
        assert_eq!(hex.len(), 64);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(index_name(&inst, &other.recipient()).unwrap(), name);
        assert_ne!(index_name(&other, &pat.recipient()).unwrap(), name);
        // Swapping roles gives another name: the salt orders institution before patient.
        assert_ne!(index_name(&pat, &inst.recipient()).unwrap(), name);
    }

    #[test]
    fn names_refuse_low_order_keys() {
        let mut b = testkit::patient().recipient().to_bytes();
        b[..32].fill(0);
        let low = crate::identity::tests_support::recipient_unchecked(&b);
        assert_eq!(
            index_name(&testkit::institution(), &low),
            Err(Error::NotContributory)
        );
        assert_eq!(
            index_name_for_patient(&testkit::patient(), &low),
            Err(Error::NotContributory)
        );
    }

    #[test]
    fn seal_open_round_trip() {
        let bytes = sealed();
        assert_eq!(open(&bytes, 0).unwrap(), sample());
        assert_eq!(open(&bytes, 7).unwrap(), sample());
        // Fresh keys every time.
        assert_ne!(sealed(), bytes);
        let mut empty = sample();
        empty.records.clear();
        let b = empty
            .seal(&testkit::institution(), &testkit::patient().recipient())
            .unwrap();
        assert_eq!(open(&b, 0).unwrap(), empty);
        // The records' keys open for the patient.
        let index = open(&bytes, 0).unwrap();
        let dek = testkit::patient()
            .unwrap_key(&index.records[0].stanza)
            .expect("mine")
            .unwrap();
        assert_eq!(dek.expose(), &[0xd0; 32]);
        assert_eq!(
            index.records[1].decode_manifest().unwrap(),
            crate::manifest::tests::sample()
        );
    }

    #[test]
    fn header_is_clear_and_tagless() {
        let bytes = sealed();
        assert_eq!(bytes[0], INDEX_V1);
        assert_eq!(bytes[1..9], 7u64.to_be_bytes());
        assert_eq!(
            bytes[9..41],
            testkit::institution().recipient().fingerprint()
        );
        let tag = testkit::patient().recipient().tag();
        assert!(!bytes[..HEADER_LEN].windows(4).any(|w| w == tag));
    }

    #[test]
    fn seal_refuses_inconsistent_input() {
        let (inst, pat, other) = (testkit::institution(), testkit::patient(), testkit::other());
        assert_eq!(
            sample().seal(&other, &pat.recipient()),
            Err(Error::IndexMismatch("institution"))
        );
        assert_eq!(
            sample().seal(&inst, &other.recipient()),
            Err(Error::IndexMismatch("record stanza"))
        );
    }

    #[test]
    fn open_checks() {
        let (inst, pat, other) = (testkit::institution(), testkit::patient(), testkit::other());
        let bytes = sealed();
        assert_eq!(open(&bytes, 8), Err(Error::Rollback { seen: 8, got: 7 }));
        assert_eq!(
            PatientIndex::open(&bytes, &pat, &other.recipient(), 0),
            Err(Error::BadSignature)
        );
        assert_eq!(
            PatientIndex::open(&bytes, &other, &inst.recipient(), 0),
            Err(Error::Decrypt)
        );
        // Signed by another institution: the signature check comes first.
        let mut forged = sample();
        forged.institution = other.recipient();
        let b = forged.seal(&other, &pat.recipient()).unwrap();
        assert_eq!(open(&b, 0), Err(Error::BadSignature));
        // The institution names someone else's fingerprint in the header, or body.
        let mut b = bytes.clone();
        b[9] ^= 1;
        let n = b.len() - SIG_LEN;
        let sig = inst.sign(INDEX_CONTEXT, &b[..n]);
        b[n..].copy_from_slice(&sig.0);
        assert_eq!(open(&b, 0), Err(Error::IndexMismatch("institution")));
        // A body naming another patient.
        let b = sample()
            .seal_raw(
                &inst,
                &pat.recipient(),
                other.recipient().fingerprint(),
                &DataKey::generate(),
                &StaticSecret::random_from_rng(OsRng),
            )
            .unwrap();
        assert_eq!(open(&b, 0), Err(Error::IndexMismatch("patient")));
        // Versions and lengths.
        let mut b = bytes.clone();
        b[0] = 2;
        assert_eq!(open(&b, 0), Err(Error::UnsupportedVersion(2)));
        for cut in 0..bytes.len() {
            assert!(open(&bytes[..cut], 0).is_err(), "cut {cut}");
        }
        assert_eq!(
            open(&[bytes.as_slice(), &[0]].concat(), 0),
            Err(Error::BadSignature)
        );
    }

    #[test]
    fn the_institution_reads_its_published_seq() {
        let bytes = sealed();
        let inst = testkit::institution();
        assert_eq!(
            PatientIndex::published_seq(&bytes, &inst.recipient()).unwrap(),
            sample().seq
        );
        assert_eq!(
            PatientIndex::published_seq(&bytes, &Identity::generate().recipient()),
            Err(Error::BadSignature)
        );
        let mut bad = bytes.clone();
        bad[SEQ_OFFSET + 7] ^= 1;
        assert_eq!(
            PatientIndex::published_seq(&bad, &inst.recipient()),
            Err(Error::BadSignature)
        );
        assert!(PatientIndex::published_seq(&bytes[..100], &inst.recipient()).is_err());
    }

    #[test]
    fn every_byte_is_protected() {
        let bytes = sealed();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1 << (i % 8);
            assert!(open(&b, 0).is_err(), "byte {i}");
        }
    }

    #[test]
    fn decode_body_bounds_counts() {
        let idx = sample();
        let mut body = idx.encode_body([0; 32]);
        let count_at = 105 + 4 + idx.patient_id.len();
        body[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            PatientIndex::decode_body(&body, 0).err(),
            Some(Error::Malformed("patient index body: truncated"))
        );
        let body = idx.encode_body([0; 32]);
        assert!(PatientIndex::decode_body(&[body.as_slice(), &[0]].concat(), 0).is_err());
        assert_eq!(PatientIndex::decode_body(&body, 7).unwrap().0, idx);
    }

    fn arb_record() -> impl Strategy<Value = (String, String, Vec<u8>, [u8; 32])> {
        (
            "[a-z0-9.-]{0,10}",
            "\\PC{0,20}",
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<[u8; 32]>(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn round_trip(
            seq in any::<u64>(),
            created_ms in any::<u64>(),
            patient_id in "\\PC{0,20}",
            records in proptest::collection::vec(arb_record(), 0..4),
        ) {
            let (inst, pat) = (testkit::institution(), testkit::patient());
            let index = PatientIndex {
                institution: inst.recipient(),
                patient_id,
                seq,
                created_ms,
                records: records
                    .into_iter()
                    .map(|(bucket, key, manifest, dek)| IndexRecord {
                        bucket,
                        key,
                        manifest,
                        stanza: pat.recipient().wrap_key(&DataKey::from_bytes(dek)).unwrap(),
                    })
                    .collect(),
            };
            let bytes = index.seal(&inst, &pat.recipient()).unwrap();
            prop_assert_eq!(
                PatientIndex::open(&bytes, &pat, &inst.recipient(), seq).unwrap(),
                index
            );
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = open(&bytes, 0);
            let _ = PatientIndex::decode_body(&bytes, 0);
        }
    }
}

/// The `testdata/patient_index_*.txt` vectors: a deterministic generator (run explicitly with
/// `cargo test -p medgate-keyring -- --ignored generate_patient_index_vectors`) and the check
/// that every file opens (or fails) as its header says. `ok` files are re-sealed with the
/// header's index key and ephemeral secret and must reproduce byte for byte.
#[cfg(test)]
mod patient_index_vectors {
    use super::*;
    use crate::consent::testkit::{self, outcome, write, Parsed, Vector};

    const INDEX_KEY: [u8; 32] = [0x31; 32];
    const EPHEMERAL: [u8; 32] = [0x42; 32];

    fn h(b: impl AsRef<[u8]>) -> String {
        ::hex::encode(b)
    }

    #[test]
    #[ignore = "writes testdata/; run explicitly, only when adding vectors"]
    fn generate_patient_index_vectors() {
        let (inst, pat, other) = (testkit::institution(), testkit::patient(), testkit::other());
        let seal = |patient_key_id: [u8; 32]| {
            sample()
                .seal_raw(
                    &inst,
                    &pat.recipient(),
                    patient_key_id,
                    &DataKey::from_bytes(INDEX_KEY),
                    &StaticSecret::from(EPHEMERAL),
                )
                .expect("seal")
        };
        let ok = seal(pat.recipient().fingerprint());
        let header = |opener: &Identity, verifier: &Recipient, min_seq: u64| {
            vec![
                ("institution", h(verifier.to_bytes())),
                ("patient-identity", h(opener.to_bytes().as_ref())),
                ("min-seq", min_seq.to_string()),
            ]
        };
        let std_header = || header(&pat, &inst.recipient(), 7);
        let case = |comment, expect: &str, header, body| Vector {
            comment,
            expect: expect.into(),
            header,
            body,
        };
        let mut ok_header = std_header();
        ok_header.extend([
            ("institution-identity", h(inst.to_bytes().as_ref())),
            (
                "name",
                index_name(&inst, &pat.recipient()).expect("contributory"),
            ),
            ("index-key", h(INDEX_KEY)),
            ("ephemeral", h(EPHEMERAL)),
        ]);
        write(
            "patient_index_v1_ok",
            case(
                "patient_index::sample() (seq 7, two records) sealed to `patient-identity`, signed by\n`institution-identity`, opened with min-seq = seq (the same version again is fine).",
                "ok",
                ok_header,
                ok.clone(),
            ),
        );
        let mut bad = ok.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        write(
            "patient_index_bad_signature",
            case(
                "Last signature byte flipped.",
                "bad-signature",
                std_header(),
                bad,
            ),
        );
        let mut bad = ok.clone();
        bad[HEADER_LEN + 3] ^= 0x01;
        write(
            "patient_index_tampered",
            case(
                "A ciphertext bit flipped: the signature covers it.",
                "bad-signature",
                std_header(),
                bad.clone(),
            ),
        );
        let n = bad.len() - SIG_LEN;
        let sig = inst.sign(INDEX_CONTEXT, &bad[..n]);
        bad[n..].copy_from_slice(&sig.0);
        write(
            "patient_index_tampered_resigned",
            case(
                "The same flipped bit, re-signed by the institution: the AEAD still refuses it.",
                "decrypt-error",
                std_header(),
                bad,
            ),
        );
        write(
            "patient_index_rolled_back",
            case(
                "Opened by a patient who has already accepted seq 8.",
                "rollback",
                header(&pat, &inst.recipient(), 8),
                ok.clone(),
            ),
        );
        write(
            "patient_index_other_patient",
            case(
                "Opened by another patient: the index key does not unwrap.",
                "decrypt-error",
                header(&other, &inst.recipient(), 0),
                ok.clone(),
            ),
        );
        write(
            "patient_index_wrong_patient",
            case(
                "Sealed to the patient and signed, but the body names another patient's key.",
                "index-mismatch/patient",
                std_header(),
                seal(other.recipient().fingerprint()),
            ),
        );
        write(
            "patient_index_other_institution",
            case(
                "Checked against another institution's key.",
                "bad-signature",
                header(&pat, &other.recipient(), 0),
                ok.clone(),
            ),
        );
        write(
            "patient_index_truncated",
            case(
                "Only the first 200 bytes: shorter than header, AEAD tag and signature.",
                "malformed",
                std_header(),
                ok[..200].to_vec(),
            ),
        );
        let mut v2 = ok;
        v2[0] = 0x02;
        write(
            "patient_index_bad_version",
            case(
                "Version byte 0x02.",
                "unsupported-version",
                std_header(),
                v2,
            ),
        );
    }

    fn check(v: &Parsed) -> String {
        let patient = v.identity("patient-identity");
        let institution = v.recipient("institution");
        let r = PatientIndex::open(&v.body, &patient, &institution, v.u64("min-seq"));
        if let Ok(index) = &r {
            assert_eq!(index, &sample(), "{}", v.name);
            let inst = v.identity("institution-identity");
            let name = index_name(&inst, &patient.recipient()).expect("contributory");
            assert_eq!(name, v.get("name"));
            assert_eq!(
                index_name_for_patient(&patient, &inst.recipient()).expect("contributory"),
                name
            );
            let again = index
                .seal_raw(
                    &inst,
                    &patient.recipient(),
                    patient.recipient().fingerprint(),
                    &DataKey::from_bytes(v.array("index-key")),
                    &StaticSecret::from(v.array::<32>("ephemeral")),
                )
                .expect("seal");
            assert_eq!(again, v.body, "re-seal must reproduce the index");
        }
        outcome(r)
    }

    #[test]
    fn patient_index_vectors() {
        let all = testkit::read_all("patient_index_");
        assert!(
            all.len() >= 10,
            "expected the checked-in vectors, found {}",
            all.len()
        );
        for v in &all {
            assert_eq!(check(v), v.expect, "vector {}", v.name);
        }
    }
}
