//! The checked-in test vectors under `testdata/` (and `testdata/tlog/`): the one deterministic
//! generator of every file, [`generate_vectors`] (run explicitly with
//! `cargo test -p medgate-keyring -- --ignored generate_vectors`; it calls each format's own
//! generator: consent, patient index, backup, rollover, tlog, log entry), and the table-driven check that
//! the stanza, chunk, manifest, DEK record, idfile, vault and peer files still open (or fail) as
//! their header says, and that deterministic encodings reproduce the stored bytes exactly. The
//! other formats' files are checked next to their code.
//!
//! File shape: see `crate::testkit`, which reads and writes every vector file. Regenerating a
//! file that already exists is a format change (see DESIGN.md): after running the generator,
//! `git diff keyring/testdata` must be empty.

use x25519_dalek::StaticSecret;

use crate::chunk::{Layout, PayloadKey};
use crate::dek_record::{DekRecord, DekStanza, DEK_RECORD_V1};
use crate::identity::Identity;
use crate::idfile::{self, Cost};
use crate::key::{BlobId, DataKey};
use crate::manifest::Manifest;
use crate::merkle::{leaf_hash, InclusionProof, RootBuilder};
use crate::peer::{
    AnswerBody, ChunkAnswer, ListedObject, PeerAnswer, RequestStatus, SignedPeerAnswer,
};
use crate::stanza::{
    wrap_key_with_ephemeral, wrap_own_with_nonce, BatchWrapper, WrappedKey, STANZA_BATCH,
    STANZA_OWN,
};
use crate::testkit::{self, outcome, seq, write, Body, Parsed, Vector};

/// A of the stanza and peer vectors (`testkit::institution`).
fn identity_a() -> Identity {
    testkit::fixed(0x01)
}

/// B of the peer vectors (`testkit::patient`).
fn identity_b() -> Identity {
    testkit::fixed(0x81)
}

const DEK: [u8; 32] = [0xd0; 32];
const EPHEMERAL: [u8; 32] = [0x42; 32];
const OWN_NONCE: [u8; 24] = [0x24; 24];
const BATCH_SALT: [u8; 16] = [0x5a; 16];
const BLOB: [u8; 16] = [0xb1; 16];
const OTHER_BLOB: [u8; 16] = [0xb2; 16];
const CHUNK_SIZE: u32 = 64;

fn plaintext() -> Vec<u8> {
    (0..150u8).collect()
}

fn seal_stream(dek: &DataKey, blob: &BlobId, data: &[u8]) -> Vec<Vec<u8>> {
    let layout = Layout::new(data.len() as u64, CHUNK_SIZE).expect("small layout");
    let key = PayloadKey::derive(dek, blob);
    (0..layout.chunk_count())
        .map(|i| {
            let start = layout.plain_offset(i) as usize;
            let end = start + layout.plain_len(i) as usize;
            key.seal(i, layout.is_last(i), &data[start..end])
                .expect("seal")
        })
        .collect()
}

fn chunk_vector(
    comment: &'static str,
    expect: &'static str,
    data: &[u8],
    chunks: Vec<Vec<u8>>,
) -> Vector {
    let mut header = vec![
        ("dek", hex::encode(DEK)),
        ("blob", hex::encode(BLOB)),
        ("chunk-size", CHUNK_SIZE.to_string()),
        ("plaintext", hex::encode(data)),
    ];
    if expect == "ok" {
        let mut b = RootBuilder::new();
        chunks.iter().for_each(|c| b.push(leaf_hash(c)));
        header.push(("root", hex::encode(b.finish())));
    }
    Vector {
        comment,
        expect: expect.into(),
        header,
        body: Body::Bytes(chunks.concat()),
    }
}

/// A stanza vector: header `identity`, the kind's own parameters, then `dek`.
fn stanza_vector(
    id: &Identity,
    params: Vec<(&'static str, String)>,
    comment: &'static str,
    expect: &'static str,
    body: Vec<u8>,
) -> Vector {
    let mut header = vec![("identity", hex::encode(id.to_bytes().as_ref()))];
    header.extend(params);
    header.push(("dek", hex::encode(DEK)));
    Vector {
        comment,
        expect: expect.into(),
        header,
        body: Body::Bytes(body),
    }
}

#[test]
#[ignore = "writes testdata/; run explicitly, only when adding vectors"]
fn generate_vectors() {
    generate_format_vectors();
    generate_peer_vectors();
    generate_dek_record_vectors();
    crate::consent::vectors::generate_consent_vectors();
    crate::patient_index::patient_index_vectors::generate_patient_index_vectors();
    crate::backup::backup_vectors::generate_backup_vectors();
    crate::rollover::rollover_vectors::generate_rollover_vectors();
    crate::checkpoint::tests::generate_tlog_vectors();
    crate::logentry::logentry_vectors::generate_logentry_vectors();
}

/// The stanza, chunk, manifest, idfile and vault vectors.
fn generate_format_vectors() {
    let a = identity_a();
    let dek = DataKey::from_bytes(DEK);
    let stanza = wrap_key_with_ephemeral(&a.recipient(), &dek, &StaticSecret::from(EPHEMERAL))
        .expect("wrap")
        .to_bytes();
    let stanza_case = |comment, expect, body| {
        stanza_vector(
            &a,
            vec![("ephemeral", hex::encode(EPHEMERAL))],
            comment,
            expect,
            body,
        )
    };
    write(
        "stanza_v1_ok",
        stanza_case(
            "A DEK wrapped to `identity` with a fixed ephemeral secret.",
            "ok",
            stanza.clone(),
        ),
    );
    let mut bad_tag = stanza.clone();
    bad_tag[84] ^= 0x01;
    write(
        "stanza_bad_tag",
        stanza_case(
            "Last byte of the Poly1305 tag flipped.",
            "decrypt-error",
            bad_tag,
        ),
    );
    let mut bad_ct = stanza.clone();
    bad_ct[40] ^= 0x80;
    write(
        "stanza_bad_ciphertext",
        stanza_case("A bit of the wrapped DEK flipped.", "decrypt-error", bad_ct),
    );
    let mut low_order = stanza.clone();
    low_order[5..37].fill(0);
    write(
        "stanza_low_order",
        stanza_case("Ephemeral key replaced by the all-zero (low-order) point: must be rejected, not unwrapped to a\nkey anyone can compute.", "decrypt-error", low_order),
    );
    let other = wrap_key_with_ephemeral(
        &identity_b().recipient(),
        &dek,
        &StaticSecret::from(EPHEMERAL),
    )
    .expect("wrap")
    .to_bytes();
    write(
        "stanza_other_recipient",
        stanza_case(
            "Wrapped to a different identity: the tag does not match, so it is skipped.",
            "not-mine",
            other,
        ),
    );
    let mut v2 = stanza.clone();
    v2[0] = 0x02;
    write(
        "stanza_bad_version",
        stanza_case("Version byte 0x02.", "unsupported-version", v2),
    );
    write(
        "stanza_truncated",
        stanza_case("Last byte missing.", "malformed", stanza[..84].to_vec()),
    );

    // The institution's own stanza (kind 0x03) and the batch stanza (kind 0x04).
    let own = wrap_own_with_nonce(&a.own_key(), a.recipient().tag(), &dek, &OWN_NONCE).to_bytes();
    let own_case = |comment, expect, body| {
        stanza_vector(
            &a,
            vec![("nonce", hex::encode(OWN_NONCE))],
            comment,
            expect,
            body,
        )
    };
    write(
        "stanza_own_ok",
        own_case(
            "A DEK in the own stanza of `identity` (kind 0x03), with a fixed nonce.",
            "ok",
            own.clone(),
        ),
    );
    let mut own_bad = own.clone();
    own_bad[76] ^= 0x01;
    write(
        "stanza_own_bad_tag",
        own_case(
            "Last byte of the Poly1305 tag flipped.",
            "decrypt-error",
            own_bad,
        ),
    );
    let mut own_tag = own.clone();
    own_tag[2] ^= 0x01;
    write(
        "stanza_own_other_tag",
        own_case(
            "A recipient-tag byte flipped: not this identity's stanza, so it is skipped.",
            "not-mine",
            own_tag,
        ),
    );
    let b_own = identity_b();
    write(
        "stanza_own_other_identity",
        own_case(
            "Sealed by another identity under its own key, with this identity's tag written in: the\nkey differs, so it does not open.",
            "decrypt-error",
            wrap_own_with_nonce(&b_own.own_key(), a.recipient().tag(), &dek, &OWN_NONCE).to_bytes(),
        ),
    );
    let batch = BatchWrapper::new(&a.recipient(), &StaticSecret::from(EPHEMERAL))
        .expect("batch")
        .wrap_with_salt(&dek, &BATCH_SALT)
        .to_bytes();
    let batch_case = |comment, expect, body| {
        let params = vec![
            ("ephemeral", hex::encode(EPHEMERAL)),
            ("salt", hex::encode(BATCH_SALT)),
        ];
        stanza_vector(&a, params, comment, expect, body)
    };
    write(
        "stanza_batch_ok",
        batch_case(
            "A DEK wrapped to `identity` in a batch stanza (kind 0x04): fixed ephemeral and salt.",
            "ok",
            batch.clone(),
        ),
    );
    let mut batch_salt = batch.clone();
    batch_salt[40] ^= 0x01;
    write(
        "stanza_batch_bad_salt",
        batch_case(
            "A salt byte flipped: another wrap key, so it does not open.",
            "decrypt-error",
            batch_salt,
        ),
    );
    let mut batch_low = batch.clone();
    batch_low[5..37].fill(0);
    write(
        "stanza_batch_low_order",
        batch_case(
            "Ephemeral key replaced by the all-zero (low-order) point: rejected.",
            "decrypt-error",
            batch_low,
        ),
    );
    write(
        "stanza_batch_truncated",
        batch_case("Last byte missing.", "malformed", batch[..100].to_vec()),
    );

    let data = plaintext();
    let blob = BlobId(BLOB);
    let chunks = seal_stream(&dek, &blob, &data);
    assert_eq!(chunks.len(), 3);
    write(
        "chunk_v1_ok",
        chunk_vector(
            "150 bytes in 64-byte chunks: 3 sealed chunks (64, 64, 22 bytes + tags), concatenated.",
            "ok",
            &data,
            chunks.clone(),
        ),
    );
    write(
        "chunk_empty_ok",
        chunk_vector(
            "An empty object: one empty final chunk (just a tag).",
            "ok",
            &[],
            seal_stream(&dek, &blob, &[]),
        ),
    );
    let mut swapped = chunks.clone();
    swapped.swap(0, 1);
    write(
        "chunk_swapped",
        chunk_vector("Chunks 0 and 1 swapped.", "decrypt-error", &data, swapped),
    );
    write(
        "chunk_truncated",
        chunk_vector(
            "Final chunk dropped: chunk 1 now has to open as final and must not.",
            "decrypt-error",
            &data,
            chunks[..2].to_vec(),
        ),
    );
    let mut bad = chunks.clone();
    bad[1][10] ^= 0x04;
    write(
        "chunk_bad_tag",
        chunk_vector(
            "One ciphertext bit flipped in chunk 1.",
            "decrypt-error",
            &data,
            bad,
        ),
    );
    let full = seal_stream(&dek, &blob, &[data.clone(), vec![0xee; 64]].concat());
    let mut not_last = chunks[..2].to_vec();
    not_last.push(full[2].clone());
    write(
        "chunk_last_flag_missing",
        chunk_vector(
            "A full-size chunk 2 sealed as non-final, in place of the final chunk.",
            "decrypt-error",
            &data,
            not_last,
        ),
    );
    write(
        "chunk_other_blob",
        chunk_vector(
            "Sealed under another blob id with the same DEK: a different payload key.",
            "decrypt-error",
            &data,
            seal_stream(&dek, &BlobId(OTHER_BLOB), &data),
        ),
    );

    let m = crate::manifest::tests::sample().encode();
    let manifest_case = |comment, expect: &str, body: Vec<u8>| Vector {
        comment,
        expect: expect.into(),
        header: Vec::new(),
        body: Body::Bytes(body),
    };
    write(
        "manifest_v1_ok",
        manifest_case(
            "manifest::tests::sample(): two parts, all optional fields set, non-ASCII metadata.",
            "ok",
            m.clone(),
        ),
    );
    let mut v2 = m.clone();
    v2[0] = 0x02;
    write(
        "manifest_bad_version",
        manifest_case("Version byte 0x02.", "unsupported-version", v2),
    );
    write(
        "manifest_truncated",
        manifest_case(
            "Last byte of the last part's root missing.",
            "malformed",
            m[..m.len() - 1].to_vec(),
        ),
    );
    write(
        "manifest_trailing",
        manifest_case(
            "One byte after the last part.",
            "malformed",
            [m.as_slice(), &[0]].concat(),
        ),
    );

    let cost = crate::idfile::tests::TEST_COST;
    let (salt, nonce) = (seq::<16>(0x51), seq::<24>(0x61));
    let pass = b"correct horse battery staple";
    let sealed = idfile::sealed(&a, pass, cost, &salt, &nonce).expect("seal idfile");
    let id_header = |with_pass: bool| {
        let mut h = vec![
            ("identity", hex::encode(a.to_bytes().as_ref())),
            ("recipient", a.recipient().to_string()),
            ("salt", hex::encode(salt)),
            ("nonce", hex::encode(nonce)),
            ("argon2-m-kib", cost.m_kib.to_string()),
            ("argon2-t", cost.t.to_string()),
            ("argon2-p", cost.p.to_string()),
        ];
        if with_pass {
            h.push(("passphrase", hex::encode(pass)));
        }
        h
    };
    write(
        "idfile_plain_ok",
        Vector {
            comment: "A plain identity file for `identity`.",
            expect: "ok".into(),
            header: id_header(false),
            body: Body::Text(idfile::plain(&a).to_string()),
        },
    );
    write("idfile_sealed_ok", Vector {
        comment: "`identity` sealed under `passphrase` (cheap argon2id parameters, carried in the file).",
        expect: "ok".into(),
        header: id_header(true),
        body: Body::Text(sealed.to_string()),
    });
    let mut wrong = id_header(false);
    wrong.push(("passphrase", hex::encode(b"correct horse battery stapler")));
    write(
        "idfile_sealed_wrong_passphrase",
        Vector {
            comment: "The sealed file above, opened with a wrong passphrase.",
            expect: "decrypt-error".into(),
            header: wrong,
            body: Body::Text(sealed.to_string()),
        },
    );
    write(
        "idfile_sealed_no_passphrase",
        Vector {
            comment: "The sealed file above, opened without a passphrase.",
            expect: "passphrase-required".into(),
            header: id_header(false),
            body: Body::Text(sealed.to_string()),
        },
    );

    let vk = a.vault_key("medgate/v1/s3-secret");
    let vnonce = seq::<24>(0x71);
    let boxed = vk.seal_with_nonce(
        &vnonce,
        b"AKIDEXAMPLE",
        b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    let vault_header = |aad: &[u8]| {
        vec![
            ("identity", hex::encode(a.to_bytes().as_ref())),
            ("purpose", "medgate/v1/s3-secret".to_string()),
            ("aad", hex::encode(aad)),
            ("nonce", hex::encode(vnonce)),
            (
                "plaintext",
                hex::encode(b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            ),
        ]
    };
    write("vault_v1_ok", Vector {
        comment: "An S3 secret key sealed under identity.vault_key(purpose), bound to its access key id.",
        expect: "ok".into(),
        header: vault_header(b"AKIDEXAMPLE"),
        body: Body::Bytes(boxed.clone()),
    });
    write(
        "vault_wrong_aad",
        Vector {
            comment: "The box above, opened for another access key id.",
            expect: "decrypt-error".into(),
            header: vault_header(b"AKIDOTHER"),
            body: Body::Bytes(boxed),
        },
    );
}

const PEER_NONCE: [u8; 16] = [0x70; 16];

/// The peer answers of `testdata/peer_*`: A (identity_a) answers B (identity_b).
fn peer_answers() -> Vec<(&'static str, PeerAnswer)> {
    let b = identity_b().recipient();
    let stanza = wrap_key_with_ephemeral(
        &b,
        &DataKey::from_bytes(DEK),
        &StaticSecret::from(EPHEMERAL),
    )
    .expect("wrap")
    .to_bytes();
    let base = |grant: &str, body| PeerAnswer {
        nonce: PEER_NONCE,
        caller: b.clone(),
        grant: grant.into(),
        bucket: String::new(),
        key: String::new(),
        version_id: String::new(),
        body,
    };
    let mut exchange = base(
        "g1",
        AnswerBody::Exchange {
            manifest: crate::manifest::tests::sample().encode(),
            stanza,
        },
    );
    exchange.bucket = "ehr".into();
    exchange.key = "alice/ct.dcm".into();
    vec![
        (
            "request",
            base(
                "g1",
                AnswerBody::Request {
                    request_id: "r1".into(),
                    status: RequestStatus::Approved,
                },
            ),
        ),
        (
            "objects",
            base(
                "g1",
                AnswerBody::Objects(vec![ListedObject {
                    bucket: "ehr".into(),
                    key: "alice/ct.dcm".into(),
                    size: 150,
                    etag: "\"0123\"".into(),
                    last_modified_ms: 1_700_000_000_000,
                }]),
            ),
        ),
        ("exchange", exchange),
    ]
}

fn peer_header(
    owner: &Identity,
    nonce: [u8; 16],
    caller: &Identity,
) -> Vec<(&'static str, String)> {
    vec![
        ("owner", hex::encode(owner.recipient().to_bytes())),
        ("nonce", hex::encode(nonce)),
        ("caller", hex::encode(caller.recipient().to_bytes())),
    ]
}

fn generate_peer_vectors() {
    let (a, b) = (identity_a(), identity_b());
    for (kind, answer) in peer_answers() {
        let signed = answer.sign(&a).encode();
        let name = |case: &str| format!("peer_answer_{kind}_{case}");
        write(
            &name("ok"),
            Vector {
                comment: "A's signed answer to B's request with this nonce.",
                expect: "ok".into(),
                header: peer_header(&a, PEER_NONCE, &b),
                body: Body::Bytes(signed.clone()),
            },
        );
        write(
            &name("other_signer"),
            Vector {
                comment: "The same answer signed by B's key (whoever answers at A's URL without A's key).",
                expect: "bad-signature".into(),
                header: peer_header(&a, PEER_NONCE, &b),
                body: Body::Bytes(answer.sign(&b).encode()),
            },
        );
        write(
            &name("replayed"),
            Vector {
                comment: "A's answer replayed to a request with another nonce.",
                expect: "auth-mismatch/nonce".into(),
                header: peer_header(&a, [0x71; 16], &b),
                body: Body::Bytes(signed.clone()),
            },
        );
        write(
            &name("other_caller"),
            Vector {
                comment: "A's answer to B presented to another institution (A itself here).",
                expect: "auth-mismatch/caller".into(),
                header: peer_header(&a, PEER_NONCE, &a),
                body: Body::Bytes(signed.clone()),
            },
        );
        let mut flipped = signed.clone();
        flipped[signed.len() - 66] ^= 0x01;
        write(
            &name("edited"),
            Vector {
                comment: "One bit of the answer's last field flipped.",
                expect: "bad-signature".into(),
                header: peer_header(&a, PEER_NONCE, &b),
                body: Body::Bytes(flipped),
            },
        );
    }
    let (_, answer) = peer_answers().remove(0);
    let signed = answer.sign(&a).encode();
    write(
        "peer_answer_truncated",
        Vector {
            comment: "The request answer without its signature's last byte.",
            expect: "malformed".into(),
            header: peer_header(&a, PEER_NONCE, &b),
            body: Body::Bytes(signed[..signed.len() - 1].to_vec()),
        },
    );
    let mut v2 = signed;
    v2[0] = 0x02;
    write(
        "peer_answer_bad_version",
        Vector {
            comment: "Version byte 0x02.",
            expect: "unsupported-version".into(),
            header: peer_header(&a, PEER_NONCE, &b),
            body: Body::Bytes(v2),
        },
    );
    // Chunks with their proofs, against the chunk vectors' blob.
    let chunks = seal_stream(&DataKey::from_bytes(DEK), &BlobId(BLOB), &plaintext());
    let leaves: Vec<_> = chunks.iter().map(|c| leaf_hash(c)).collect();
    let root = crate::merkle::root(&leaves);
    let chunk_header = |index: u64| {
        vec![
            ("index", index.to_string()),
            ("chunk-count", leaves.len().to_string()),
            ("root", hex::encode(root)),
        ]
    };
    let answer = |i: usize| ChunkAnswer {
        index: i as u64,
        leaf: leaves[i],
        proof: InclusionProof::generate(&leaves, i as u64).expect("proof"),
        sealed: chunks[i].clone(),
    };
    write(
        "peer_chunk_ok",
        Vector {
            comment: "Chunk 1 of the chunk vectors' blob, with its leaf and inclusion proof.",
            expect: "ok".into(),
            header: chunk_header(1),
            body: Body::Bytes(answer(1).encode()),
        },
    );
    write(
        "peer_chunk_other_index",
        Vector {
            comment: "Chunk 0 with its own proof, offered as chunk 1.",
            expect: "invalid-proof".into(),
            header: chunk_header(1),
            body: Body::Bytes(answer(0).encode()),
        },
    );
    let mut forged = answer(1);
    forged.sealed[0] ^= 0x01;
    write(
        "peer_chunk_edited",
        Vector {
            comment: "Chunk 1 with one bit flipped, leaf and proof unchanged.",
            expect: "invalid-proof".into(),
            header: chunk_header(1),
            body: Body::Bytes(forged.encode()),
        },
    );
    forged.leaf = leaf_hash(&forged.sealed);
    write(
        "peer_chunk_releafed",
        Vector {
            comment:
                "The edited chunk with its own leaf hash: the proof no longer leads to the root.",
            expect: "invalid-proof".into(),
            header: chunk_header(1),
            body: Body::Bytes(forged.encode()),
        },
    );
}

fn check_peer(name: &str, v: &Parsed) -> String {
    let recipient = |k: &str| crate::identity::Recipient::from_bytes(&v.hex(k)).expect("recipient");
    if name.starts_with("peer_chunk") {
        let index: u64 = v.get("index").parse().expect("index");
        let count: u64 = v.get("chunk-count").parse().expect("chunk count");
        let root: [u8; 32] = v.hex("root").try_into().expect("32 bytes");
        let r = ChunkAnswer::decode(&v.body).and_then(|c| {
            c.verify(index, count, &root)?;
            assert_eq!(c.encode(), v.body);
            Ok(())
        });
        return outcome(r);
    }
    let nonce: [u8; 16] = v.hex("nonce").try_into().expect("16 bytes");
    let r = SignedPeerAnswer::decode(&v.body).and_then(|s| {
        let a = s.verify(&recipient("owner"), &nonce, &recipient("caller"))?;
        // ok files re-sign byte for byte (Ed25519 is deterministic) and are one of the answers.
        assert_eq!(a.sign(&identity_a()).encode(), v.body);
        assert!(peer_answers().iter().any(|(_, p)| p == a));
        Ok(())
    });
    outcome(r)
}

fn check_stanza(v: &Parsed) -> String {
    let id = Identity::from_bytes(&v.hex("identity")).expect("identity");
    let w = match WrappedKey::from_bytes(&v.body) {
        Ok(w) => w,
        Err(e) => return outcome::<()>(Err(e)),
    };
    match id.unwrap_key(&w) {
        None => "not-mine".into(),
        Some(Err(e)) => outcome::<()>(Err(e)),
        Some(Ok(dek)) => {
            assert_eq!(dek.expose().to_vec(), v.hex("dek"));
            let again = match w.kind() {
                STANZA_OWN => {
                    let nonce: [u8; 24] = v.hex("nonce").try_into().expect("24 bytes");
                    wrap_own_with_nonce(&id.own_key(), id.recipient().tag(), &dek, &nonce)
                }
                STANZA_BATCH => {
                    let eph: [u8; 32] = v.hex("ephemeral").try_into().expect("32 bytes");
                    let salt: [u8; 16] = v.hex("salt").try_into().expect("16 bytes");
                    BatchWrapper::new(&id.recipient(), &StaticSecret::from(eph))
                        .expect("batch")
                        .wrap_with_salt(&dek, &salt)
                }
                _ => {
                    let eph: [u8; 32] = v.hex("ephemeral").try_into().expect("32 bytes");
                    wrap_key_with_ephemeral(&id.recipient(), &dek, &StaticSecret::from(eph))
                        .expect("wrap")
                }
            };
            assert_eq!(
                again.as_bytes(),
                v.body.as_slice(),
                "re-wrap must reproduce the stanza"
            );
            "ok".into()
        }
    }
}

/// Opens the body the way a streaming reader that does not know the length would: split it into
/// sealed chunks of `chunk-size + 16` bytes, the final piece being the final chunk.
fn check_chunks(v: &Parsed) -> String {
    let dek = DataKey::from_bytes(v.hex("dek").try_into().expect("32 bytes"));
    let blob = BlobId(v.hex("blob").try_into().expect("16 bytes"));
    let cs: usize = v.get("chunk-size").parse().expect("chunk size");
    let key = PayloadKey::derive(&dek, &blob);
    let pieces: Vec<&[u8]> = v.body.chunks(cs + crate::TAG_LEN).collect();
    if pieces.is_empty() {
        return "malformed".into();
    }
    let mut plain = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        match key.open(i as u64, i + 1 == pieces.len(), piece) {
            Ok(p) => plain.extend(p),
            Err(e) => return outcome::<()>(Err(e)),
        }
    }
    let want = v.hex("plaintext");
    assert_eq!(plain, want);
    let mut root = RootBuilder::new();
    pieces.iter().for_each(|c| root.push(leaf_hash(c)));
    assert_eq!(root.finish().to_vec(), v.hex("root"));
    let layout = Layout::new(want.len() as u64, cs as u32).expect("layout");
    let again: Vec<u8> = (0..layout.chunk_count())
        .flat_map(|i| {
            let start = layout.plain_offset(i) as usize;
            let end = start + layout.plain_len(i) as usize;
            key.seal(i, layout.is_last(i), &want[start..end])
                .expect("seal")
        })
        .collect();
    assert_eq!(again, v.body, "re-seal must reproduce the stream");
    "ok".into()
}

/// The DEK record rows of the private store, version 1 and 2 (`dek_record_*`).
fn dek_record_sample() -> DekRecord {
    let (a, b) = (identity_a(), identity_b());
    let dek = DataKey::from_bytes(DEK);
    let own = wrap_own_with_nonce(&a.own_key(), a.recipient().tag(), &dek, &OWN_NONCE);
    let x = wrap_key_with_ephemeral(&b.recipient(), &dek, &StaticSecret::from(EPHEMERAL))
        .expect("wrap");
    let batch = BatchWrapper::new(&b.recipient(), &StaticSecret::from(EPHEMERAL))
        .expect("batch")
        .wrap_with_salt(&dek, &BATCH_SALT);
    DekRecord {
        refs: 3,
        stanzas: vec![
            DekStanza::new(a.recipient(), own).expect("a's stanza"),
            DekStanza::new(b.recipient(), x).expect("b's stanza"),
            DekStanza::unknown(batch),
        ],
    }
}

/// The `recipients` header: each stanza's Recipient in hex, `-` for unknown, comma-separated.
fn dek_record_recipients(rec: &DekRecord) -> String {
    rec.stanzas
        .iter()
        .map(|s| match s.recipient() {
            Some(r) => hex::encode(r.to_bytes()),
            None => "-".into(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn generate_dek_record_vectors() {
    let rec = dek_record_sample();
    let case = |comment, expect: &str, rec: &DekRecord, body: Vec<u8>| Vector {
        comment,
        expect: expect.into(),
        header: vec![("recipients", dek_record_recipients(rec))],
        body: Body::Bytes(body),
    };
    let v1 = DekRecord {
        refs: rec.refs,
        stanzas: rec
            .stanzas
            .iter()
            .map(|s| DekStanza::unknown(s.wrapped().clone()))
            .collect(),
    };
    write(
        "dek_record_v1_ok",
        case(
            "Version 1 (stanzas alone): own stanza of identity A, X25519 and batch stanzas of B.",
            "ok",
            &v1,
            v1.encode_v1(),
        ),
    );
    let v2 = rec.encode();
    write(
        "dek_record_v2_ok",
        case(
            "Version 2: the same stanzas, the first two beside their Recipients (A, B), the\nbatch stanza of unknown recipient (flag 0x00).",
            "ok",
            &rec,
            v2.clone(),
        ),
    );
    let mut bad = v2.clone();
    bad[0] = 0x03;
    write(
        "dek_record_bad_version",
        case("Version byte 0x03.", "unsupported-version", &rec, bad),
    );
    write(
        "dek_record_v2_truncated",
        case(
            "Last byte of the last stanza missing.",
            "malformed",
            &rec,
            v2[..v2.len() - 1].to_vec(),
        ),
    );
    write(
        "dek_record_v2_trailing",
        case(
            "One byte after the last stanza.",
            "malformed",
            &rec,
            [v2.as_slice(), &[0]].concat(),
        ),
    );
    let mut flag = v2.clone();
    flag[13] = 0x02;
    write(
        "dek_record_v2_bad_flag",
        case(
            "The first entry's recipient flag is 0x02.",
            "malformed",
            &rec,
            flag,
        ),
    );
    let mut other = v2.clone();
    other[14..14 + 64].copy_from_slice(&identity_b().recipient().to_bytes());
    write(
        "dek_record_v2_other_recipient",
        case(
            "The own stanza of A said to be wrapped to B: its tag is not B's.",
            "malformed",
            &rec,
            other,
        ),
    );
}

fn check_dek_record(v: &Parsed) -> String {
    match DekRecord::decode(&v.body) {
        Ok(rec) => {
            assert_eq!(dek_record_recipients(&rec), v.get("recipients"));
            let again = if v.body[0] == DEK_RECORD_V1 {
                rec.encode_v1()
            } else {
                rec.encode()
            };
            assert_eq!(again, v.body, "re-encode must reproduce the record");
            // The stanzas are the deterministic ones of the sample, in order.
            let sample = dek_record_sample();
            for (s, want) in rec.stanzas.iter().zip(&sample.stanzas) {
                assert_eq!(s.wrapped(), want.wrapped());
            }
            assert_eq!(rec.stanzas.len(), sample.stanzas.len());
            "ok".into()
        }
        Err(e) => outcome::<()>(Err(e)),
    }
}

fn check_manifest(v: &Parsed) -> String {
    match Manifest::decode(&v.body) {
        Ok(m) => {
            let sample = crate::manifest::tests::sample();
            assert_eq!(m, sample);
            assert_eq!(
                sample.encode(),
                v.body,
                "re-encode must reproduce the manifest"
            );
            "ok".into()
        }
        Err(e) => outcome::<()>(Err(e)),
    }
}

fn key_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect()
}

fn check_idfile(v: &Parsed) -> String {
    let pass = v.has("passphrase").then(|| v.hex("passphrase"));
    let id = match idfile::decode(v.text(), pass.as_deref()) {
        Ok(id) => id,
        Err(e) => return outcome::<()>(Err(e)),
    };
    assert_eq!(id.to_bytes().to_vec(), v.hex("identity"));
    assert_eq!(id.recipient().to_string(), v.get("recipient"));
    let again = match &pass {
        None => idfile::plain(&id),
        Some(p) => {
            let cost = Cost {
                m_kib: v.get("argon2-m-kib").parse().expect("m"),
                t: v.get("argon2-t").parse().expect("t"),
                p: v.get("argon2-p").parse().expect("p"),
            };
            let salt = v.hex("salt").try_into().expect("16 bytes");
            let nonce = v.hex("nonce").try_into().expect("24 bytes");
            idfile::sealed(&id, p, cost, &salt, &nonce).expect("seal")
        }
    };
    // Comment lines carry the crate version; only the key line is the format.
    assert_eq!(
        key_lines(&again),
        key_lines(v.text()),
        "re-encode must reproduce the key line"
    );
    "ok".into()
}

fn check_vault(v: &Parsed) -> String {
    let id = Identity::from_bytes(&v.hex("identity")).expect("identity");
    let key = id.vault_key(v.get("purpose"));
    let aad = v.hex("aad");
    match key.open(&aad, &v.body) {
        Ok(plain) => {
            assert_eq!(*plain, v.hex("plaintext"));
            let nonce = v.hex("nonce").try_into().expect("24 bytes");
            assert_eq!(
                key.seal_with_nonce(&nonce, &aad, &plain),
                v.body,
                "re-seal must reproduce the box"
            );
            "ok".into()
        }
        Err(e) => outcome::<()>(Err(e)),
    }
}

#[test]
fn vectors() {
    let all = testkit::read_all("");
    assert!(
        all.len() >= 20,
        "expected the checked-in vectors, found {}",
        all.len()
    );
    for v in all {
        let name = v.name.as_str();
        let got = match name.split('_').next() {
            Some("stanza") => check_stanza(&v),
            Some("chunk") => check_chunks(&v),
            Some("manifest") => check_manifest(&v),
            Some("dek") => check_dek_record(&v),
            Some("idfile") => check_idfile(&v),
            Some("vault") => check_vault(&v),
            Some("peer") => check_peer(name, &v),
            // Checked by the vector tests in consent/vectors.rs, patient_index.rs, backup.rs,
            // rollover.rs and logentry.rs.
            Some("consent" | "patient" | "backup" | "rollover" | "logentry") => continue,
            _ => panic!("vector {name}: unknown kind"),
        };
        assert_eq!(got, v.expect, "vector {name}");
    }
}
