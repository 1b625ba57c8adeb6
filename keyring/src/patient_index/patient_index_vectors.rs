//! The `testdata/patient_index_*.txt` vectors: a deterministic generator (run by the one
//! generator, `crate::vectors::generate_vectors`) and the check
//! that every file opens (or fails) as its header says. `ok` files are re-sealed with the
//! header's index key and ephemeral secret and must reproduce byte for byte.

use super::*;
use crate::testkit::{self, outcome, write, Body, Parsed, Vector};

const INDEX_KEY: [u8; 32] = [0x31; 32];
const EPHEMERAL: [u8; 32] = [0x42; 32];

fn h(b: impl AsRef<[u8]>) -> String {
    ::hex::encode(b)
}

/// The index of [`sample`] sealed as `version` (1 or 2), its body naming `patient_key_id`.
fn seal(version: u8, patient_key_id: [u8; 32]) -> Vec<u8> {
    let seal = if version == INDEX_V1 {
        PatientIndex::seal_v1
    } else {
        PatientIndex::seal_v2
    };
    seal(
        &sample(),
        &testkit::institution(),
        &testkit::patient().recipient(),
        patient_key_id,
        &DataKey::from_bytes(INDEX_KEY),
        &StaticSecret::from(EPHEMERAL),
    )
    .expect("seal")
}

/// The institution's signature again over all but the last `SIG_LEN` bytes.
fn resign(b: &mut [u8]) {
    let n = b.len() - SIG_LEN;
    let sig = testkit::institution().sign(INDEX_CONTEXT, &b[..n]);
    b[n..].copy_from_slice(&sig.0);
}

fn header(opener: &Identity, verifier: &Recipient, min_seq: u64) -> Vec<(&'static str, String)> {
    vec![
        ("institution", h(verifier.to_bytes())),
        ("patient-identity", h(opener.to_bytes().as_ref())),
        ("min-seq", min_seq.to_string()),
    ]
}

/// Opened by the patient, checked against the institution, min-seq 7.
fn std_header() -> Vec<(&'static str, String)> {
    header(&testkit::patient(), &testkit::institution().recipient(), 7)
}

/// [`std_header`] and what an `ok` file needs to re-seal and name the index.
fn ok_header() -> Vec<(&'static str, String)> {
    let (inst, pat) = (testkit::institution(), testkit::patient());
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
    ok_header
}

fn case(
    comment: &'static str,
    expect: &str,
    header: Vec<(&'static str, String)>,
    body: Vec<u8>,
) -> Vector {
    Vector {
        comment,
        expect: expect.into(),
        header,
        body: Body::Bytes(body),
    }
}

/// The cases v1 and v2 share, with the same comments: `patient_index_<case>` for v1,
/// `patient_index_v2_<case>` for v2.
fn common_cases(version: u8, ok: &[u8]) {
    let prefix = if version == INDEX_V1 {
        "patient_index_"
    } else {
        "patient_index_v2_"
    };
    let (inst, pat, other) = (testkit::institution(), testkit::patient(), testkit::other());
    let name = |case: &str| format!("{prefix}{case}");
    let mut bad = ok.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    write(
        &name("bad_signature"),
        case(
            "Last signature byte flipped.",
            "bad-signature",
            std_header(),
            bad,
        ),
    );
    write(
        &name("other_patient"),
        case(
            "Opened by another patient: the index key does not unwrap.",
            "decrypt-error",
            header(&other, &inst.recipient(), 0),
            ok.to_vec(),
        ),
    );
    write(
        &name("wrong_patient"),
        case(
            "Sealed to the patient and signed, but the body names another patient's key.",
            "index-mismatch/patient",
            std_header(),
            seal(version, other.recipient().fingerprint()),
        ),
    );
    write(
        &name("other_institution"),
        case(
            "Checked against another institution's key.",
            "bad-signature",
            header(&pat, &other.recipient(), 0),
            ok.to_vec(),
        ),
    );
    write(
        &name("truncated"),
        case(
            "Only the first 200 bytes: shorter than header, AEAD tag and signature.",
            "malformed",
            std_header(),
            ok[..200].to_vec(),
        ),
    );
}

/// Every `testdata/patient_index_*.txt`, v1 and v2.
pub(crate) fn generate_patient_index_vectors() {
    let (inst, pat) = (testkit::institution(), testkit::patient());

    // v1.
    let ok = seal(INDEX_V1, pat.recipient().fingerprint());
    write(
        "patient_index_v1_ok",
        case(
            "patient_index::sample() (seq 7, two records) sealed to `patient-identity`, signed by\n`institution-identity`, opened with min-seq = seq (the same version again is fine).",
            "ok",
            ok_header(),
            ok.clone(),
        ),
    );
    common_cases(INDEX_V1, &ok);
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
    resign(&mut bad);
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
    let mut v2 = ok;
    v2[0] = 0x02;
    write(
        "patient_index_bad_version",
        case(
            "The v1 index with its version byte set to 0x02: read as a v2 index (since v2\nexists), whose signature does not hold. (Until v2 it was unsupported-version.)",
            "bad-signature",
            std_header(),
            v2,
        ),
    );

    // v2.
    let ok = seal(INDEX_V2, pat.recipient().fingerprint());
    write(
        "patient_index_v2_ok",
        case(
            "patient_index::sample() (seq 7, two records) as v2: sealed to `patient-identity` (and\nits key to the institution), signed by `institution-identity`, padded to 4096 bytes,\nopened with min-seq = seq. The institution reads seq 7 back with its own box.",
            "ok",
            ok_header(),
            ok.clone(),
        ),
    );
    common_cases(INDEX_V2, &ok);
    let mut bad = ok.clone();
    bad[V2_HEADER_LEN + 3] ^= 0x01;
    resign(&mut bad);
    write(
        "patient_index_v2_tampered_resigned",
        case(
            "A ciphertext bit flipped and re-signed by the institution: the AEAD refuses it.",
            "decrypt-error",
            std_header(),
            bad,
        ),
    );
    write(
        "patient_index_v2_rolled_back",
        case(
            "Opened by a patient who has already accepted seq 8 (from a v1 or a v2 index): the\nnumber is inside the sealed body, checked after decryption.",
            "rollback",
            header(&pat, &inst.recipient(), 8),
            ok.clone(),
        ),
    );
    let mut body = sample().encode_body_v2(pat.recipient().fingerprint());
    let content = body.len();
    body.resize(ok.len() - V2_OVERHEAD, 0);
    body[content] = 0x01;
    let ct = body_cipher(&DataKey::from_bytes(INDEX_KEY))
        .encrypt(
            &Nonce::default(),
            Payload {
                msg: &body,
                aad: &ok[..V2_HEADER_LEN],
            },
        )
        .expect("encrypt");
    let mut bad = ok.clone();
    bad[V2_HEADER_LEN..V2_HEADER_LEN + ct.len()].copy_from_slice(&ct);
    resign(&mut bad);
    write(
        "patient_index_v2_bad_padding",
        case(
            "Sealed and signed by the institution, but the first padding byte is 0x01: one\nencoding per value, so refused.",
            "malformed",
            std_header(),
            bad,
        ),
    );
    let mut v3 = ok;
    v3[0] = 0x03;
    write(
        "patient_index_v2_bad_version",
        case(
            "Version byte 0x03.",
            "unsupported-version",
            std_header(),
            v3,
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
        let seal = if v.body[0] == INDEX_V1 {
            PatientIndex::seal_v1
        } else {
            PatientIndex::seal_v2
        };
        let again = seal(
            index,
            &inst,
            &patient.recipient(),
            patient.recipient().fingerprint(),
            &DataKey::from_bytes(v.array("index-key")),
            &StaticSecret::from(v.array::<32>("ephemeral")),
        )
        .expect("seal");
        assert_eq!(again, v.body, "re-seal must reproduce the index");
        assert_eq!(
            PatientIndex::published_seq(&v.body, &inst),
            Ok(index.seq),
            "{}: the institution reads its number back",
            v.name
        );
    }
    outcome(r)
}

#[test]
fn patient_index_vectors() {
    testkit::check_all("patient_index_", 20, check);
}
