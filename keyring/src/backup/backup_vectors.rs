//! The `testdata/backup_*.txt` vectors: a deterministic generator (run by the one
//! generator, `crate::vectors::generate_vectors`) and the check that
//! every file opens (or fails) as its header says. `ok` files are re-sealed with the header's
//! file key and ephemeral secret and must reproduce byte for byte.

use super::tests::{encode, sample_entries, signed_payload};
use super::*;
use crate::testkit::{self, write, Body, Parsed, Vector};

const FILE_KEY: [u8; 32] = [0x5a; 32];
const EPHEMERAL: [u8; 32] = [0x42; 32];
const CREATED_MS: u64 = 1_700_000_000_000;
const CHUNK: u32 = 64;

fn h(b: impl AsRef<[u8]>) -> String {
    ::hex::encode(b)
}

fn sealer(recovery: &Identity, signer: Option<&Recipient>) -> (Sealer, BackupHeader) {
    Sealer::with_keys(
        &recovery.recipient(),
        signer,
        CREATED_MS,
        CHUNK,
        &DataKey::from_bytes(FILE_KEY),
        &StaticSecret::from(EPHEMERAL),
    )
    .expect("seal")
}

fn sealed(payload: &[u8]) -> Vec<u8> {
    let (sealer, header) = sealer(&testkit::institution(), None);
    seal_with(sealer, &header, payload).expect("seal")
}

/// A v2 file to the requester's key as recovery key, naming `named` as its signer, its
/// end entry signed by `signer`.
fn sealed_v2(named: &Identity, signer: &Identity) -> Vec<u8> {
    let (sealer, header) = sealer(&testkit::requester(), Some(&named.recipient()));
    let payload = if named.recipient() == signer.recipient() {
        signed_payload(&header, Some(signer), &sample_entries())
    } else {
        let entries: Vec<Entry> = sample_entries()
            .into_iter()
            .filter(|e| !matches!(e, Entry::End(_)))
            .collect();
        let mut out = encode(&entries);
        let digest: [u8; 32] = Sha256::digest(&out).into();
        let count = entries.len() as u64;
        Entry::End(count).encode_into(&mut out).expect("end");
        let msg = signed_message(&header.digest(), &digest, count);
        out.extend_from_slice(&signer.sign(BACKUP_CONTEXT, &msg).to_bytes());
        out
    };
    seal_with(sealer, &header, &payload).expect("seal")
}

fn outcome<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(Error::NotForThisIdentity) => "not-for-this-identity".into(),
        Err(e) => testkit::outcome::<()>(Err(e)),
    }
}

pub(crate) fn generate_backup_vectors() {
    let payload = encode(&sample_entries());
    let ok = sealed(&payload);
    let header = |opener: &Identity| {
        vec![
            ("recovery-identity", h(opener.to_bytes().as_ref())),
            ("file-key", h(FILE_KEY)),
            ("ephemeral", h(EPHEMERAL)),
            ("payload", h(&payload)),
        ]
    };
    let inst = testkit::institution();
    let case = |comment, expect: &str, opener: &Identity, body| Vector {
        comment,
        expect: expect.into(),
        header: header(opener),
        body: Body::Bytes(body),
    };
    write(
            "backup_v1_ok",
            case(
                "backup::tests::sample_entries() sealed to `recovery-identity` in 64-byte chunks, created\n1700000000000 ms; re-sealing with `file-key` and `ephemeral` reproduces it.",
                "ok",
                &inst,
                ok.clone(),
            ),
        );
    write(
        "backup_wrong_identity",
        case(
            "The same file opened with another recovery identity.",
            "not-for-this-identity",
            &testkit::other(),
            ok.clone(),
        ),
    );
    let mut bad = ok.clone();
    bad[HEADER_LEN + 70] ^= 0x01;
    write(
        "backup_flipped_byte",
        case(
            "One bit flipped in the second sealed chunk.",
            "decrypt-error",
            &inst,
            bad,
        ),
    );
    let mut bad = ok.clone();
    bad[CREATED_OFFSET + 7] ^= 0x01;
    write(
        "backup_header_edited",
        case(
            "The creation time in the clear header edited: the header is bound to the payload key.",
            "decrypt-error",
            &inst,
            bad,
        ),
    );
    let sealed_len = CHUNK as usize + TAG_LEN;
    write(
        "backup_truncated",
        case(
            "Cut after the second sealed chunk: that chunk now has to open as final and must not.",
            "decrypt-error",
            &inst,
            ok[..HEADER_LEN + 2 * sealed_len].to_vec(),
        ),
    );
    let mut v3 = ok;
    v3[VERSION_OFFSET] = 0x03;
    write(
        "backup_bad_version",
        case("Version byte 0x03.", "unsupported-version", &inst, v3),
    );

    // v2: signed by the institution.
    let recovery = testkit::requester();
    let other = testkit::other();
    let v2_case = |comment, expect: &str, body| Vector {
        comment,
        expect: expect.into(),
        header: vec![
            ("recovery-identity", h(recovery.to_bytes().as_ref())),
            ("institution", h(inst.recipient().to_bytes())),
            ("signer-identity", h(inst.to_bytes().as_ref())),
            ("file-key", h(FILE_KEY)),
            ("ephemeral", h(EPHEMERAL)),
        ],
        body: Body::Bytes(body),
    };
    let ok2 = sealed_v2(&inst, &inst);
    write(
            "backup_v2_ok",
            v2_case(
                "A v2 backup of backup::tests::sample_entries() to `recovery-identity`, 64-byte chunks,\ncreated 1700000000000 ms, naming and signed by `institution` (the secret is\n`signer-identity`); re-sealing with `file-key` and `ephemeral` reproduces it.",
                "ok",
                ok2.clone(),
            ),
        );
    write(
            "backup_v2_other_signer",
            v2_case(
                "A well-formed v2 backup naming and signed by another key (anyone who knows the\nrecovery Recipient can make one): refused because `institution` is expected.",
                "wrong-institution",
                sealed_v2(&other, &other),
            ),
        );
    write(
        "backup_v2_bad_signature",
        v2_case(
            "The header names `institution`, the end entry is signed by another key.",
            "bad-signature",
            sealed_v2(&inst, &other),
        ),
    );
    let mut edited = ok2;
    edited[HEADER_LEN..HEADER_V2_LEN].copy_from_slice(&other.recipient().to_bytes());
    write(
            "backup_v2_signer_edited",
            v2_case(
                "backup_v2_ok with the signer in the header replaced by another Recipient: the header\nis bound to the payload key.",
                "decrypt-error",
                edited,
            ),
        );
    let (s, head) = sealer(&recovery, Some(&inst.recipient()));
    write(
        "backup_v2_unsigned_end",
        v2_case(
            "A v2 header over a v1 payload (its end entry carries no signature).",
            "malformed",
            seal_with(s, &head, &payload).expect("seal"),
        ),
    );
}

/// Opens a vector as `medgate restore` does: the header's signer must be the expected
/// institution (when the vector names one), then every entry decodes and a v2 end entry's
/// signature verifies.
fn check(v: &Parsed) -> String {
    let id = v.identity("recovery-identity");
    let expected = v.has("institution").then(|| v.recipient("institution"));
    let r = open(&v.body, &id);
    let (header, plain) = match r {
        Ok(x) => x,
        Err(e) => return outcome::<()>(Err(e)),
    };
    assert_eq!(header.created_ms, CREATED_MS, "{}", v.name);
    assert_eq!(header.chunk_size, CHUNK, "{}", v.name);
    if let Some(expected) = &expected {
        if header.signer.as_ref() != Some(expected) {
            return "wrong-institution".into();
        }
    }
    let mut d = EntryDecoder::for_header(&header);
    d.push(&plain);
    let mut entries = Vec::new();
    loop {
        match d.next_entry() {
            Ok(Some(e)) => entries.push(e),
            Ok(None) => break,
            Err(e) => return outcome::<()>(Err(e)),
        }
    }
    if let Err(e) = d.finish() {
        return outcome::<()>(Err(e));
    }
    assert_eq!(entries, sample_entries(), "{}", v.name);
    let signer = v
        .has("signer-identity")
        .then(|| v.identity("signer-identity"));
    if v.has("payload") {
        assert_eq!(plain.to_vec(), v.hex("payload"), "{}", v.name);
    }
    let (sealer, head) = Sealer::with_keys(
        &id.recipient(),
        header.signer.as_ref(),
        header.created_ms,
        header.chunk_size,
        &DataKey::from_bytes(v.array("file-key")),
        &StaticSecret::from(v.array::<32>("ephemeral")),
    )
    .expect("seal");
    let payload = match &signer {
        Some(s) => signed_payload(&head, Some(s), &entries),
        None => plain.to_vec(),
    };
    assert_eq!(
        seal_with(sealer, &head, &payload).expect("seal"),
        v.body,
        "re-seal must reproduce the backup {}",
        v.name
    );
    "ok".into()
}

#[test]
fn backup_vectors() {
    testkit::check_all("backup_", 11, check);
}
