//! Tests of `backup`.

use super::*;
use proptest::prelude::*;

pub(crate) fn sample_entries() -> Vec<Entry> {
    vec![
        Entry::File {
            name: "institution.key".into(),
            contents: Zeroizing::new(b"# medgate identity\nMEDGATE-SECRET-KEY-1...\n".to_vec()),
        },
        Entry::Tree(b"objects".to_vec()),
        Entry::Record {
            key: b"bucket\0k\xc3\xbc".to_vec(),
            value: (0..40u8).collect(),
        },
        Entry::Record {
            key: Vec::new(),
            value: Vec::new(),
        },
        Entry::Tree(b"log_meta".to_vec()),
        Entry::Record {
            key: b"size".to_vec(),
            value: 7u64.to_be_bytes().to_vec(),
        },
        Entry::End(6),
    ]
}

pub(crate) fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        e.encode_into(&mut out).unwrap();
    }
    out
}

fn decode_all(bytes: &[u8], piece: usize) -> Result<Vec<Entry>> {
    let mut d = EntryDecoder::new();
    let mut out = Vec::new();
    for p in bytes.chunks(piece.max(1)) {
        d.push(p);
        while let Some(e) = d.next_entry()? {
            out.push(e);
        }
    }
    d.finish()?;
    Ok(out)
}

#[test]
fn round_trip() {
    let id = Identity::generate();
    let payload = encode(&sample_entries());
    for cs in [1, 7, 64, payload.len() as u32, 1 << 20] {
        let file = seal(&id.recipient(), 1234, cs, &payload).unwrap();
        let (h, plain) = open(&file, &id).unwrap();
        assert_eq!(h.created_ms, 1234);
        assert_eq!(h.chunk_size, cs);
        assert_eq!(*plain, payload);
        assert_eq!(decode_all(&plain, 5).unwrap(), sample_entries());
    }
    // Empty payload: one empty final chunk.
    let file = seal(&id.recipient(), 1, 16, b"").unwrap();
    assert_eq!(file.len(), HEADER_LEN + TAG_LEN);
    assert!(open(&file, &id).unwrap().1.is_empty());
}

#[test]
fn wrong_key_is_not_for_this_identity() {
    let file = seal(&Identity::generate().recipient(), 1, 64, b"payload").unwrap();
    assert_eq!(
        open(&file, &Identity::generate()).unwrap_err(),
        Error::NotForThisIdentity
    );
}

#[test]
fn every_flipped_byte_fails() {
    let id = Identity::generate();
    let payload = encode(&sample_entries());
    let file = seal(&id.recipient(), 99, 32, &payload).unwrap();
    for i in 0..file.len() {
        let mut bad = file.clone();
        bad[i] ^= 0x01;
        assert!(open(&bad, &id).is_err(), "byte {i} flipped still opened");
    }
}

#[test]
fn every_truncation_fails() {
    let id = Identity::generate();
    let payload = encode(&sample_entries());
    let file = seal(&id.recipient(), 99, 32, &payload).unwrap();
    for n in 0..file.len() {
        assert!(open(&file[..n], &id).is_err(), "cut at {n} still opened");
    }
    let mut longer = file.clone();
    longer.push(0);
    assert!(open(&longer, &id).is_err());
    // A payload cut at an entry boundary but sealed properly is caught by the end entry.
    let cut = encode(&sample_entries()[..3]);
    assert!(decode_all(&cut, 100).is_err());
    let bad_count = encode(&[Entry::Tree(b"t".to_vec()), Entry::End(5)]);
    assert!(decode_all(&bad_count, 100).is_err());
    let after_end = [encode(&[Entry::End(0)]), encode(&[Entry::Tree(vec![])])].concat();
    assert!(decode_all(&after_end, 100).is_err());
}

#[test]
fn header_checks() {
    assert_eq!(
        BackupHeader::parse(b"hello"),
        Err(Error::Malformed("backup: not a medgate backup file"))
    );
    assert_eq!(
        BackupHeader::parse(b"MGBACKUP\x01"),
        Err(Error::Malformed("backup: truncated header"))
    );
    let id = Identity::generate();
    let file = seal(&id.recipient(), 1, 64, b"x").unwrap();
    let mut v3 = file.clone();
    v3[VERSION_OFFSET] = 3;
    assert_eq!(open(&v3, &id).unwrap_err(), Error::UnsupportedVersion(3));
    let mut huge = file.clone();
    huge[CHUNK_SIZE_OFFSET..STANZA_OFFSET].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(open(&huge, &id), Err(Error::Malformed(_))));
    assert!(Sealer::new(&id.recipient(), 1, 0).is_err());
    assert!(Sealer::new(&id.recipient(), 1, MAX_CHUNK_SIZE + 1).is_err());
}

#[test]
fn sealer_enforces_lengths() {
    let id = Identity::generate();
    let (mut s, _) = Sealer::new(&id.recipient(), 1, 4).unwrap();
    assert!(s.seal(b"abc", false).is_err());
    assert!(s.seal(b"abcde", true).is_err());
    s.seal(b"abcd", false).unwrap();
    s.seal(b"ab", true).unwrap();
    assert!(s.seal(b"", true).is_err());
    assert!(format!("{s:?}").starts_with("Sealer"));
}

#[test]
fn debug_hides_contents() {
    let e = Entry::File {
        name: "institution.key".into(),
        contents: Zeroizing::new(b"SECRET".to_vec()),
    };
    assert!(!format!("{e:?}").contains("SECRET"));
}

/// A v2 backup of `entries` to `recovery`, signed by `signer`.
pub(crate) fn seal_signed(
    recovery: &Recipient,
    signer: &Identity,
    chunk_size: u32,
    entries: &[Entry],
) -> Vec<u8> {
    let (sealer, header) =
        Sealer::new_signed(recovery, &signer.recipient(), 77, chunk_size).unwrap();
    seal_with(
        sealer,
        &header,
        &signed_payload(&header, Some(signer), entries),
    )
    .unwrap()
}

/// The payload of `entries` for `header`, its end entry made by `signer`.
pub(crate) fn signed_payload(
    header: &BackupHeader,
    signer: Option<&Identity>,
    entries: &[Entry],
) -> Vec<u8> {
    let mut enc = EntryEncoder::new(header);
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| !matches!(e, Entry::End(_))) {
        enc.encode(e, &mut out).unwrap();
    }
    enc.finish(signer, &mut out).unwrap();
    out
}

/// Opens and decodes a whole file, checking a v2 signature.
pub(crate) fn open_entries(
    bytes: &[u8],
    identity: &Identity,
) -> Result<(BackupHeader, Vec<Entry>)> {
    let (header, plain) = open(bytes, identity)?;
    let mut d = EntryDecoder::for_header(&header);
    d.push(&plain);
    let mut out = Vec::new();
    while let Some(e) = d.next_entry()? {
        out.push(e);
    }
    d.finish()?;
    Ok((header, out))
}

#[test]
fn signed_round_trip_and_refusals() {
    let recovery = Identity::generate();
    let inst = Identity::generate();
    let mallory = Identity::generate();
    for cs in [1, 16, 1 << 20] {
        let file = seal_signed(&recovery.recipient(), &inst, cs, &sample_entries());
        let (h, entries) = open_entries(&file, &recovery).unwrap();
        assert_eq!(h.version(), BACKUP_V2);
        assert_eq!(h.signer, Some(inst.recipient()));
        assert_eq!(entries, sample_entries());
    }
    // Anyone with the recovery Recipient can make a v2 file signed by themselves: it
    // opens, but names its signer, which a restore compares with the institution.
    let forged = seal_signed(&recovery.recipient(), &mallory, 64, &sample_entries());
    let (h, _) = open_entries(&forged, &recovery).unwrap();
    assert_eq!(h.signer, Some(mallory.recipient()));
    // Naming the institution but signing with another key fails at the end entry.
    let (sealer, header) =
        Sealer::new_signed(&recovery.recipient(), &inst.recipient(), 1, 64).unwrap();
    let mut enc = EntryEncoder::new(&header);
    let mut payload = Vec::new();
    enc.encode(&Entry::Tree(b"t".to_vec()), &mut payload)
        .unwrap();
    assert!(EntryEncoder::new(&header)
        .finish(Some(&mallory), &mut Vec::new())
        .is_err());
    assert!(EntryEncoder::new(&header)
        .finish(None, &mut Vec::new())
        .is_err());
    enc.finish(Some(&inst), &mut payload).unwrap();
    let n = payload.len();
    payload[n - 1] ^= 0x01;
    let bad = seal_with(sealer, &header, &payload).unwrap();
    assert_eq!(
        open_entries(&bad, &recovery).unwrap_err(),
        Error::BadSignature
    );
    // A v1-style end entry in a v2 file: the signature is missing.
    let (sealer, header) =
        Sealer::new_signed(&recovery.recipient(), &inst.recipient(), 1, 64).unwrap();
    let unsigned = seal_with(sealer, &header, &encode(&sample_entries())).unwrap();
    assert!(open_entries(&unsigned, &recovery).is_err());
    // An end entry cannot be encoded as an ordinary entry.
    assert!(EntryEncoder::new(&header)
        .encode(&Entry::End(0), &mut Vec::new())
        .is_err());
    // Every flipped byte of a signed file fails, the signer's bytes included.
    let file = seal_signed(&recovery.recipient(), &inst, 64, &sample_entries());
    for i in 0..file.len() {
        let mut bad = file.clone();
        bad[i] ^= 0x01;
        assert!(open_entries(&bad, &recovery).is_err(), "byte {i} flipped");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_payload_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..600), cs in 1u32..200) {
        let id = Identity::generate();
        let file = seal(&id.recipient(), 5, cs, &payload).unwrap();
        prop_assert_eq!(&*open(&file, &id).unwrap().1, &payload);
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let id = Identity::generate();
        let _ = open(&bytes, &id);
        let _ = decode_all(&bytes, 7);
    }
}
