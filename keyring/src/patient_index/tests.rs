//! Tests of `patient_index`.

use super::*;
use crate::testkit;
use proptest::prelude::*;

fn sealed() -> Vec<u8> {
    sample()
        .seal(&testkit::institution(), &testkit::patient().recipient())
        .unwrap()
}

fn fixed(index: &PatientIndex, version: u8) -> Vec<u8> {
    let (inst, pat) = (testkit::institution(), testkit::patient().recipient());
    let (key, eph) = (
        DataKey::from_bytes([0x31; 32]),
        StaticSecret::from([0x42; 32]),
    );
    if version == INDEX_V1 {
        index.seal_v1(&inst, &pat, pat.fingerprint(), &key, &eph)
    } else {
        index.seal_v2(&inst, &pat, pat.fingerprint(), &key, &eph)
    }
    .unwrap()
}

fn sealed_v1() -> Vec<u8> {
    fixed(&sample(), INDEX_V1)
}

fn open(bytes: &[u8], min_seq: u64) -> Result<PatientIndex> {
    PatientIndex::open(
        bytes,
        &testkit::patient(),
        &testkit::institution().recipient(),
        min_seq,
    )
}

fn resign(b: &mut [u8]) {
    let n = b.len() - SIG_LEN;
    let sig = testkit::institution().sign(INDEX_CONTEXT, &b[..n]);
    b[n..].copy_from_slice(&sig.0);
}

/// `sample()` with `n` records like a hospital's (a 40-byte key, a one-part manifest).
fn with_records(n: usize) -> PatientIndex {
    let mut index = sample();
    let r = index.records[0].clone();
    index.records = (0..n)
        .map(|i| IndexRecord {
            key: format!("patient-0042/ct/2023-11-14/series-{i:04}/study.dcm"),
            ..r.clone()
        })
        .collect();
    index
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
    assert_eq!(bytes[0], INDEX_V2);
    assert_eq!(open(&bytes, 0).unwrap(), sample());
    assert_eq!(open(&bytes, 7).unwrap(), sample());
    // Fresh keys every time: nothing but the version and institution repeats.
    let again = sealed();
    assert_eq!(again.len(), bytes.len());
    assert_eq!(again[..V2_INSTITUTION_OFFSET + 32], bytes[..33]);
    let same = again[33..]
        .iter()
        .zip(&bytes[33..])
        .filter(|(a, b)| a == b)
        .count();
    assert!(
        same < 64,
        "{same} equal bytes after the header's fixed part"
    );
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
fn v1_still_opens() {
    let bytes = sealed_v1();
    assert_eq!(bytes[0], INDEX_V1);
    assert_eq!(open(&bytes, 7).unwrap(), sample());
    assert_eq!(open(&bytes, 8), Err(Error::Rollback { seen: 8, got: 7 }));
}

#[test]
fn rollback_is_checked_across_versions() {
    let mut v = sample();
    let v1_seq7 = fixed(&v, INDEX_V1);
    v.seq = 8;
    let v2_seq8 = fixed(&v, INDEX_V2);
    v.seq = 6;
    let v2_seq6 = fixed(&v, INDEX_V2);
    // A patient who accepted v1 seq 7 takes v2 seq 8 and refuses v2 seq 6 ...
    assert_eq!(open(&v1_seq7, 0).unwrap().seq, 7);
    assert_eq!(open(&v2_seq8, 7).unwrap().seq, 8);
    assert_eq!(open(&v2_seq6, 7), Err(Error::Rollback { seen: 7, got: 6 }));
    // ... and, having taken v2 seq 8, refuses the v1 seq 7 put back.
    assert_eq!(open(&v1_seq7, 8), Err(Error::Rollback { seen: 8, got: 7 }));
}

#[test]
fn v2_header_is_the_same_for_every_seq_and_tagless() {
    // With the keys fixed, two versions differ only in the ciphertext and signature: the
    // sequence number (and time) are not in the clear.
    let mut a = sample();
    let mut b = sample();
    b.seq = 1 << 40;
    b.created_ms += 1;
    let (ba, bb) = (fixed(&a, INDEX_V2), fixed(&b, INDEX_V2));
    assert_eq!(ba[..V2_HEADER_LEN], bb[..V2_HEADER_LEN]);
    assert_ne!(ba[V2_HEADER_LEN..], bb[V2_HEADER_LEN..]);
    a.seq = 0x0102_0304_0506_0708;
    let bytes = fixed(&a, INDEX_V2);
    assert!(!bytes.windows(8).any(|w| w == a.seq.to_be_bytes()));
    assert_eq!(
        bytes[1..33],
        testkit::institution().recipient().fingerprint()
    );
    // (The institution's tag is the start of its fingerprint, public anyway.)
    let tag = testkit::patient().recipient().tag();
    assert!(!bytes[..V2_HEADER_LEN].windows(4).any(|w| w == tag));
}

#[test]
fn v1_header_is_clear_and_tagless() {
    let bytes = sealed_v1();
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
fn sizes_are_buckets_and_hide_growth() {
    assert_eq!(sealed_len(0).unwrap(), 4096);
    assert_eq!(sealed_len(4096 - V2_OVERHEAD).unwrap(), 4096);
    assert_eq!(sealed_len(4096 - V2_OVERHEAD + 1).unwrap(), 8192);
    assert_eq!(sealed_len(1 << 20).unwrap(), 2 << 20);
    assert_eq!(sealed_len(usize::MAX - 10), Err(Error::CounterOverflow));
    assert!(is_sealed_len(4096) && is_sealed_len(1 << 30));
    assert!(!is_sealed_len(2048) && !is_sealed_len(4097) && !is_sealed_len(6144));

    let mut sizes = Vec::new();
    for n in 0..60 {
        let index = with_records(n);
        let bytes = index
            .seal(&testkit::institution(), &testkit::patient().recipient())
            .unwrap();
        assert!(is_sealed_len(bytes.len()), "{n} records: {}", bytes.len());
        assert_eq!(
            bytes.len(),
            sealed_len(index.encode_body_v2([0; 32]).len()).unwrap()
        );
        assert_eq!(open(&bytes, 0).unwrap(), index);
        sizes.push(bytes.len());
    }
    // Growth changes the size only at powers of two (these records are ~570 bytes, with
    // a two-part manifest): 60 records, four sizes.
    let mut buckets = sizes.clone();
    buckets.dedup();
    assert_eq!(buckets, [4096, 8192, 16384, 32768], "{sizes:?}");
    assert_eq!(sizes.iter().filter(|&&s| s == 4096).count(), 7, "{sizes:?}");
    assert_eq!(sizes.iter().filter(|&&s| s == 8192).count(), 8, "{sizes:?}");
}

#[test]
fn padding_must_be_zero() {
    let index = sample();
    let (inst, pat) = (testkit::institution(), testkit::patient().recipient());
    let mut body = index.encode_body_v2(pat.fingerprint());
    let content = body.len();
    body.resize(4096 - V2_OVERHEAD, 0);
    assert_eq!(PatientIndex::decode_body_v2(&body).unwrap().0, index);
    body[content + 5] = 1;
    assert_eq!(
        PatientIndex::decode_body_v2(&body).err(),
        Some(Error::Malformed(PADDING_NOT_ZERO))
    );
    // Sealed and signed by the institution with bad padding: still refused.
    let key = DataKey::from_bytes([0x31; 32]);
    let mut b = fixed(&index, INDEX_V2);
    let ct = body_cipher(&key)
        .encrypt(
            &Nonce::default(),
            Payload {
                msg: &body,
                aad: &b[..V2_HEADER_LEN],
            },
        )
        .unwrap();
    b[V2_HEADER_LEN..V2_HEADER_LEN + ct.len()].copy_from_slice(&ct);
    resign(&mut b);
    assert_eq!(open(&b, 0), Err(Error::Malformed(PADDING_NOT_ZERO)));
    let _ = inst;
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
    for (version, bytes, fp_at) in [
        (INDEX_V2, sealed(), V2_INSTITUTION_OFFSET),
        (INDEX_V1, sealed_v1(), INSTITUTION_OFFSET),
    ] {
        assert_eq!(open(&bytes, 8), Err(Error::Rollback { seen: 8, got: 7 }));
        assert_eq!(
            PatientIndex::open(&bytes, &pat, &other.recipient(), 0),
            Err(Error::BadSignature)
        );
        assert_eq!(
            PatientIndex::open(&bytes, &other, &inst.recipient(), 0),
            Err(Error::Decrypt)
        );
        // The institution names someone else's fingerprint in the header.
        let mut b = bytes.clone();
        b[fp_at] ^= 1;
        resign(&mut b);
        assert_eq!(open(&b, 0), Err(Error::IndexMismatch("institution")));
        // Versions and lengths.
        let mut b = bytes.clone();
        b[0] = 3;
        assert_eq!(open(&b, 0), Err(Error::UnsupportedVersion(3)));
        for cut in (0..bytes.len()).step_by(7) {
            assert!(open(&bytes[..cut], 0).is_err(), "v{version} cut {cut}");
        }
        assert_eq!(
            open(&[bytes.as_slice(), &[0]].concat(), 0),
            Err(Error::BadSignature)
        );
    }
    // Signed by another institution: the signature check comes first.
    let mut forged = sample();
    forged.institution = other.recipient();
    let b = forged.seal(&other, &pat.recipient()).unwrap();
    assert_eq!(open(&b, 0), Err(Error::BadSignature));
    // A body naming another patient.
    for seal in [PatientIndex::seal_v1, PatientIndex::seal_v2] {
        let b = seal(
            &sample(),
            &inst,
            &pat.recipient(),
            other.recipient().fingerprint(),
            &DataKey::generate(),
            &StaticSecret::random_from_rng(OsRng),
        )
        .unwrap();
        assert_eq!(open(&b, 0), Err(Error::IndexMismatch("patient")));
    }
}

#[test]
fn the_institution_reads_its_published_seq() {
    let inst = testkit::institution();
    for bytes in [sealed(), sealed_v1()] {
        assert_eq!(
            PatientIndex::published_seq(&bytes, &inst).unwrap(),
            sample().seq
        );
        assert_eq!(
            PatientIndex::published_seq(&bytes, &Identity::generate()),
            Err(Error::BadSignature)
        );
        assert!(PatientIndex::published_seq(&bytes[..100], &inst).is_err());
    }
    let mut bad = sealed_v1();
    bad[SEQ_OFFSET + 7] ^= 1;
    assert_eq!(
        PatientIndex::published_seq(&bad, &inst),
        Err(Error::BadSignature)
    );
    // v2: the institution opens its own box, the patient theirs. A byte of one box
    // flipped (and the body re-encrypted under the changed header, and re-signed, as only
    // the institution could) breaks that opener alone.
    let flipped = |at: usize| {
        let mut b = fixed(&sample(), INDEX_V2);
        let cipher = body_cipher(&DataKey::from_bytes([0x31; 32]));
        let (header, rest) = b.split_at(V2_HEADER_LEN);
        let ct = &rest[..rest.len() - SIG_LEN];
        let body = cipher
            .decrypt(
                &Nonce::default(),
                Payload {
                    msg: ct,
                    aad: header,
                },
            )
            .unwrap();
        b[at] ^= 1;
        let ct = cipher
            .encrypt(
                &Nonce::default(),
                Payload {
                    msg: &body,
                    aad: &b[..V2_HEADER_LEN],
                },
            )
            .unwrap();
        b[V2_HEADER_LEN..V2_HEADER_LEN + ct.len()].copy_from_slice(&ct);
        resign(&mut b);
        b
    };
    let bad = flipped(V2_HEADER_LEN - 3);
    assert_eq!(
        PatientIndex::published_seq(&bad, &inst),
        Err(Error::Decrypt)
    );
    assert_eq!(
        open(&bad, 0).unwrap(),
        sample(),
        "the patient's box is intact"
    );
    let bad = flipped(V2_HEADER_LEN - BOX_LEN - 3);
    assert_eq!(PatientIndex::published_seq(&bad, &inst).unwrap(), 7);
    assert_eq!(open(&bad, 0), Err(Error::Decrypt));
}

#[test]
fn every_byte_is_protected() {
    for bytes in [sealed(), sealed_v1()] {
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1 << (i % 8);
            assert!(open(&b, 0).is_err(), "byte {i}");
        }
    }
}

#[test]
fn decode_body_bounds_counts() {
    let idx = sample();
    let mut body = idx.encode_body_v1([0; 32]);
    let count_at = 105 + 4 + idx.patient_id.len();
    body[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        PatientIndex::decode_body_v1(&body, 0).err(),
        Some(Error::Malformed("patient index body: truncated"))
    );
    let body = idx.encode_body_v1([0; 32]);
    assert!(PatientIndex::decode_body_v1(&[body.as_slice(), &[0]].concat(), 0).is_err());
    assert_eq!(PatientIndex::decode_body_v1(&body, 7).unwrap().0, idx);
    assert_eq!(
        PatientIndex::decode_body_v2(&body).err(),
        Some(Error::UnsupportedVersion(1))
    );

    let mut body = idx.encode_body_v2([0; 32]);
    assert_eq!(PatientIndex::decode_body_v2(&body).unwrap().0, idx);
    let count_at = 113 + 4 + idx.patient_id.len();
    body[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        PatientIndex::decode_body_v2(&body).err(),
        Some(Error::Malformed("patient index body: truncated"))
    );
}

/// What the `patient_index` fuzz target checks, over its checked-in corpus (seeds and the
/// long runs' inputs): a body that decodes re-encodes to the same bytes, v1 and v2.
#[test]
fn fuzz_corpus_round_trips() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/patient_index");
    let (mut v1, mut v2) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        if data.first() == Some(&INDEX_V1) {
            if let Ok((index, id)) = PatientIndex::decode_body_v1(&data, 7) {
                assert_eq!(index.encode_body_v1(id), data);
                v1 += 1;
            }
        } else if let Ok((index, id)) = PatientIndex::decode_body_v2(&data) {
            let mut again = index.encode_body_v2(id);
            again.resize(again.len().max(data.len()), 0);
            assert_eq!(again, data);
            v2 += 1;
        }
    }
    assert!(v1 >= 2 && v2 >= 3, "{v1} v1 and {v2} v2 bodies decoded");
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
        prop_assert!(is_sealed_len(bytes.len()));
        prop_assert_eq!(PatientIndex::published_seq(&bytes, &inst).unwrap(), seq);
        prop_assert_eq!(
            PatientIndex::open(&bytes, &pat, &inst.recipient(), seq).unwrap(),
            index
        );
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = open(&bytes, 0);
        let _ = PatientIndex::published_seq(&bytes, &testkit::institution());
        let _ = PatientIndex::decode_body_v1(&bytes, 0);
        let _ = PatientIndex::decode_body_v2(&bytes);
    }
}
