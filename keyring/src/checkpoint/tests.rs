//! Tests of `checkpoint`.

use ed25519_dalek::{SigningKey, Verifier as _};
use proptest::prelude::*;

use super::*;
use crate::merkle::leaf_hash;
use crate::testkit::{self, seq, Body, Parsed};

/// The log's fixed identity: X25519 secret 01..20, Ed25519 seed 21..40.
fn log_identity() -> Identity {
    testkit::fixed(0x01)
}

/// A witness's fixed identity: X25519 secret 81..a0, Ed25519 seed a1..c0.
fn witness_identity() -> Identity {
    testkit::fixed(0x81)
}

/// An identity around a bare Ed25519 seed (the X25519 half is unused here).
fn ed25519_identity(seed: &[u8]) -> Identity {
    Identity::from_bytes(&[[0x77u8; 32].as_slice(), seed].concat()).unwrap()
}

const LOG: &str = "medgate.example.org/log";
const WITNESS: &str = "witness.example.net/w1";
const TIMESTAMP: u64 = 1_700_000_000;

/// The root of the 8-leaf CT test tree (see merkle's vectors).
fn ct_root() -> Hash {
    ::hex::decode("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
        .unwrap()
        .try_into()
        .unwrap()
}

fn checkpoint() -> Checkpoint {
    Checkpoint::new(LOG, 8, ct_root())
}

#[test]
fn base64_rfc4648_vectors() {
    // RFC 4648 §10.
    for (plain, enc) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(b64::encode(plain.as_bytes()), enc);
        assert_eq!(b64::decode(enc).unwrap(), plain.as_bytes());
    }
    for bad in [
        "Zg=", "Zh==", "Zm9=", "Zg==Zg==", "Z===", "Zm9v\n", "Zm-v", "Zm9vY", "=Zm9",
    ] {
        assert!(b64::decode(bad).is_none(), "{bad}");
    }
}

#[test]
fn checkpoint_body_from_the_spec() {
    let body =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let c = Checkpoint::parse_body(body).unwrap();
    assert_eq!(c.origin, "example.com/behind-the-sofa");
    assert_eq!(c.size, 20852163);
    assert!(c.extensions.is_empty());
    assert_eq!(c.body(), body);
    let ext = format!("{body}ext one\n\u{e9}t\u{e9}\n");
    let c = Checkpoint::parse_body(&ext).unwrap();
    assert_eq!(c.extensions, ["ext one", "\u{e9}t\u{e9}"]);
    assert_eq!(c.body(), ext);
}

#[test]
fn malformed_bodies() {
    let root = b64::encode(&[7; 32]);
    let good = format!("o\n1\n{root}\n");
    assert!(Checkpoint::parse_body(&good).is_ok());
    for bad in [
        format!("o\n1\n{root}"),
        "o\n1\n".to_string(),
        format!("\n1\n{root}\n"),
        format!("o\n01\n{root}\n"),
        format!("o\n-1\n{root}\n"),
        format!("o\n+1\n{root}\n"),
        format!("o\n\n{root}\n"),
        format!("o\n18446744073709551616\n{root}\n"),
        format!("o\n1\n{}\n", b64::encode(&[7; 31])),
        format!("o\n1\n{}\n", b64::encode(&[7; 33])),
        format!("o\n1\n{}\n", &root[..43]),
        format!("o\n1\n{root}\n\n"),
        format!("o\n1\n{root}\nx\n\ny\n"),
        format!("o\t\n1\n{root}\n"),
        format!("o\r\n1\n{root}\n"),
    ] {
        assert!(
            matches!(Checkpoint::parse_body(&bad), Err(Error::Malformed(_))),
            "{bad:?}"
        );
    }
    assert!(Checkpoint::parse_body(&format!("o\n0\n{root}\n")).is_ok());
    let max = format!("o\n18446744073709551615\n{root}\n");
    assert_eq!(Checkpoint::parse_body(&max).unwrap().size, u64::MAX);
    // Signing refuses fields that would not parse back.
    let id = log_identity();
    for cp in [
        Checkpoint::new("", 1, [0; 32]),
        Checkpoint::new("a\nb", 1, [0; 32]),
        Checkpoint::new("a\u{7}", 1, [0; 32]),
        Checkpoint {
            extensions: vec![String::new()],
            ..checkpoint()
        },
    ] {
        assert!(id.sign_checkpoint(LOG, &cp).is_err(), "{cp:?}");
    }
    for name in ["", "a b", "a+b", "a\u{a0}b", "a\u{2003}b", "a\u{1}"] {
        assert!(id.sign_checkpoint(name, &checkpoint()).is_err(), "{name:?}");
    }
}

#[test]
fn sign_and_verify() {
    let (log, witness) = (log_identity(), witness_identity());
    let note = log.sign_checkpoint(LOG, &checkpoint()).unwrap();
    assert!(note.starts_with(&format!("{}\n\u{2014} {LOG} ", checkpoint().body())));
    assert_eq!(
        log.recipient().verify_checkpoint(LOG, &note).unwrap(),
        checkpoint()
    );
    // Another key, or the right key under another name, finds no line of its own.
    assert_eq!(
        witness.recipient().verify_checkpoint(LOG, &note),
        Err(Error::MissingSignature {
            key: witness.recipient().note_verifier(LOG).unwrap().label()
        })
    );
    assert!(matches!(
        log.recipient()
            .verify_checkpoint("other.example/log", &note),
        Err(Error::MissingSignature { .. })
    ));
    // A cosignature key does not accept a plain signature (different key id).
    assert!(matches!(
        log.recipient().verify_cosignature(LOG, &note),
        Err(Error::MissingSignature { .. })
    ));
    // Any change to the text breaks the signature.
    let tampered = note.replacen("\n8\n", "\n9\n", 1);
    assert_eq!(
        log.recipient().verify_checkpoint(LOG, &tampered),
        Err(Error::BadSignature)
    );
    // A signed note whose text is not a checkpoint is malformed as a checkpoint.
    let plain = log.sign_note(LOG, "hello\nworld\n").unwrap();
    assert!(matches!(
        log.recipient().verify_checkpoint(LOG, &plain),
        Err(Error::Malformed(_))
    ));
    let parsed = SignedNote::parse(&plain).unwrap();
    assert_eq!(
        log.recipient()
            .note_verifier(LOG)
            .unwrap()
            .verify_note(&parsed),
        Ok(None)
    );
    assert!(log.sign_note(LOG, "no newline").is_err());
    assert!(log.sign_note(LOG, "nul\0\n").is_err());
}

#[test]
fn cosign_and_verify() {
    let (log, witness) = (log_identity(), witness_identity());
    let note = log.sign_checkpoint(LOG, &checkpoint()).unwrap();
    let cosigned = witness
        .cosign_checkpoint(WITNESS, &note, TIMESTAMP)
        .unwrap();
    assert!(cosigned.starts_with(&note));
    let (cp, ts) = witness
        .recipient()
        .verify_cosignature(WITNESS, &cosigned)
        .unwrap();
    assert_eq!((cp, ts), (checkpoint(), TIMESTAMP));
    // The log's line still verifies; the witness line is ignored by the log's verifier.
    assert_eq!(
        log.recipient().verify_checkpoint(LOG, &cosigned).unwrap(),
        checkpoint()
    );
    // A witness's verify_checkpoint also accepts its cosignature.
    let wv = witness.recipient().cosignature_verifier(WITNESS).unwrap();
    assert_eq!(wv.verify_checkpoint(&cosigned).unwrap(), checkpoint());
    // The plain-signature key of the witness does not match the cosignature line.
    assert!(matches!(
        witness.recipient().verify_checkpoint(WITNESS, &cosigned),
        Err(Error::MissingSignature { .. })
    ));
    // A log key cannot return a timestamp.
    let lv = log.recipient().note_verifier(LOG).unwrap();
    assert!(matches!(
        lv.verify_cosignature(&cosigned),
        Err(Error::Malformed(_))
    ));
    // Re-cosigning replaces the witness's line rather than adding one.
    let again = witness
        .cosign_checkpoint(WITNESS, &cosigned, TIMESTAMP + 60)
        .unwrap();
    let n = SignedNote::parse(&again).unwrap();
    assert_eq!(n.signatures().len(), 2);
    assert_eq!(wv.verify_cosignature(&again).unwrap().1, TIMESTAMP + 60);
    // The timestamp is signed.
    let mut forged = SignedNote::parse(&cosigned).unwrap();
    forged.signatures[1].signature[7] ^= 1;
    assert_eq!(wv.verify_note(&forged), Err(Error::BadSignature));
    // Cosigning needs a checkpoint and a timestamp below 2^63.
    let plain = log.sign_note(LOG, "hello\n").unwrap();
    assert!(witness
        .cosign_checkpoint(WITNESS, &plain, TIMESTAMP)
        .is_err());
    assert!(witness.cosign_checkpoint(WITNESS, &note, 1 << 63).is_err());
    assert!(witness
        .cosign_checkpoint(WITNESS, &note, (1 << 63) - 1)
        .is_ok());
    // A cosignature over extension lines covers them.
    let ext = Checkpoint {
        extensions: vec!["extra".into()],
        ..checkpoint()
    };
    let n = log.sign_checkpoint(LOG, &ext).unwrap();
    let c = witness.cosign_checkpoint(WITNESS, &n, TIMESTAMP).unwrap();
    assert!(wv.verify_cosignature(&c).is_ok());
    let (head, tail) = c.split_once("\n\n").unwrap();
    let changed = format!("{}\n\n{tail}", head.replace("extra", "extrb"));
    assert_eq!(wv.verify_checkpoint(&changed), Err(Error::BadSignature));
}

#[test]
fn every_line_from_a_known_key_must_verify() {
    let log = log_identity();
    let note = log.sign_checkpoint(LOG, &checkpoint()).unwrap();
    let mut n = SignedNote::parse(&note).unwrap();
    let mut bad = n.signatures[0].clone();
    bad.signature[0] ^= 1;
    // add_signature would replace the good line; push both.
    n.signatures.push(bad);
    assert_eq!(
        log.recipient().verify_checkpoint(LOG, &n.to_string()),
        Err(Error::BadSignature)
    );
    // Wrong length from a known key is a bad signature, not an ignored line.
    n.signatures[1].signature.truncate(63);
    assert_eq!(
        log.recipient().verify_checkpoint(LOG, &n.to_string()),
        Err(Error::BadSignature)
    );
}

#[test]
fn vkeys() {
    let log = log_identity();
    let v = log.recipient().note_verifier(LOG).unwrap();
    let text = v.to_string();
    assert_eq!(NoteVerifier::from_vkey(&text).unwrap(), v);
    assert_eq!(text.parse::<NoteVerifier>().unwrap(), v);
    let w = log.recipient().cosignature_verifier(WITNESS).unwrap();
    assert_eq!(NoteVerifier::from_vkey(&w.to_string()).unwrap(), w);
    assert_ne!(
        v.key_id(),
        key_id(LOG, SignatureType::Cosignature, &v.public_key())
    );
    // Published keys, with the key ids their owners computed. The base64 of TEST contains a
    // '+' (transparency-dev/formats note/note_cosigv1_test.go).
    for (vkey, ty) in [
        (
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            SignatureType::Ed25519,
        ),
        (
            "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop",
            SignatureType::Ed25519,
        ),
        (
            "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6",
            SignatureType::Ed25519,
        ),
        (
            "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
            SignatureType::Cosignature,
        ),
    ] {
        let v = NoteVerifier::from_vkey(vkey).unwrap();
        assert_eq!(v.signature_type(), ty);
        assert_eq!(v.to_string(), vkey);
    }
    // golang.org/x/mod/sumdb/note TestNewVerifier: no substring and no one-byte change of
    // a good key is accepted.
    let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    let b = vkey.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if (i, j) != (0, b.len()) {
                let s = std::str::from_utf8(&b[i..j]).unwrap();
                assert!(NoteVerifier::from_vkey(s).is_err(), "{s}");
            }
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] += 1;
        if let Ok(s) = std::str::from_utf8(&m) {
            assert!(NoteVerifier::from_vkey(s).is_err(), "{s}");
        }
    }
    // Wrong length and unknown algorithm, with adjusted key ids.
    assert!(NoteVerifier::from_vkey(
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
    )
    .is_err());
    assert!(NoteVerifier::from_vkey(
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    )
    .is_err());
}

#[test]
fn malformed_notes() {
    // golang.org/x/mod/sumdb/note TestOpen's malformed messages.
    let text = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    let sig = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    assert!(SignedNote::parse(&format!("{text}\n{sig}")).is_ok());
    for bad in [
            text.to_string(),
            format!("{text}\n"),
            format!("{text}\n{}", &sig[..sig.len() - 1]),
            format!("\u{1}{text}\n{sig}"),
            format!("{text}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="),
            format!("{text}\n{sig}Unexpected line.\n"),
            format!("{text}\n{}", sig.repeat(101)),
            format!("{text}\n\u{2014} PeterNeumann \n"),
            format!("{text}\n\u{2014} PeterNeumann AAAAAA==\n"),
            format!("{text}\n\u{2014} PeterNeumann  x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"),
            format!("{text}\n- PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"),
        ] {
            assert!(SignedNote::parse(&bad).is_err(), "{bad:?}");
        }
    // Up to 100 lines are fine.
    assert_eq!(
        SignedNote::parse(&format!("{text}\n{}", sig.repeat(100)))
            .unwrap()
            .signatures()
            .len(),
        100
    );
}

#[test]
fn independent_ed25519_check() {
    // The checked-in note, checked with ed25519-dalek and sha2 directly: key id and
    // signature bytes, no code of this module but the base64 pinned above.
    let v = read_vector("checkpoint_v1_ok");
    let note = v.text();
    let (text, sigs) = note.rsplit_once("\n\n").unwrap();
    let text = format!("{text}\n");
    let line = sigs.strip_suffix('\n').unwrap();
    let (name, b64sig) = line
        .strip_prefix("\u{2014} ")
        .unwrap()
        .split_once(' ')
        .unwrap();
    let raw = b64::decode(b64sig).unwrap();
    let seed: [u8; 32] = ::hex::decode(v.get("seed")).unwrap().try_into().unwrap();
    let sk = SigningKey::from_bytes(&seed);
    let pk = sk.verifying_key();
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n\x01");
    h.update(pk.as_bytes());
    assert_eq!(raw[..4], h.finalize()[..4]);
    let sig = ed25519_dalek::Signature::from_slice(&raw[4..]).unwrap();
    pk.verify(text.as_bytes(), &sig).unwrap();
    assert_eq!(sk.sign(text.as_bytes()).to_bytes().as_slice(), &raw[4..]);
    assert_eq!(
        text,
        format!("{LOG}\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n")
    );
}

// ---- checked-in vectors (testdata/tlog/) ----

/// The file shape of `crate::testkit` (keys may repeat; the body is the note as raw text).
fn parse_vector(text: &str) -> Parsed {
    let v = testkit::parse("vector", text);
    assert_eq!(v.all("encoding").next(), Some("text"));
    v
}

fn read_vector(name: &str) -> Parsed {
    let v = testkit::read_in("tlog", name);
    assert_eq!(v.all("encoding").next(), Some("text"));
    v
}

fn outcome<T>(r: Result<T>) -> std::result::Result<T, String> {
    r.map_err(|e| testkit::error_name(&e))
}

/// Runs one vector: every `signer` vkey must verify the note; for a checkpoint, the fields
/// must match the header and every `witness` (`<vkey> <timestamp>`) must cosign it; with a
/// `seed`, signing the text again must give the first signer's line byte for byte.
fn check(v: &Parsed) -> String {
    let note = match outcome(SignedNote::parse(v.text())) {
        Ok(n) => n,
        Err(e) => return e,
    };
    assert_eq!(note.to_string(), v.text(), "a note re-serializes unchanged");
    for signer in v.all("signer") {
        let verifier = NoteVerifier::from_vkey(signer).expect("signer vkey");
        if let Err(e) = outcome(verifier.verify_note(&note)) {
            return e;
        }
    }
    if v.all("origin").next().is_some() {
        let cp = match outcome(note.checkpoint()) {
            Ok(c) => c,
            Err(e) => return e,
        };
        assert_eq!(cp.origin, v.get("origin"));
        assert_eq!(cp.size.to_string(), v.get("size"));
        assert_eq!(::hex::encode(cp.root), v.get("root"));
        let signer = NoteVerifier::from_vkey(v.get("signer")).unwrap();
        assert_eq!(signer.verify_checkpoint(v.text()).unwrap(), cp);
        for w in v.all("witness") {
            let (vkey, ts) = w.split_once(' ').expect("witness: <vkey> <timestamp>");
            let wv = NoteVerifier::from_vkey(vkey).expect("witness vkey");
            match outcome(wv.verify_cosignature(v.text())) {
                Ok((c, t)) => {
                    assert_eq!(c, cp);
                    assert_eq!(t.to_string(), ts);
                }
                Err(e) => return e,
            }
        }
    }
    if let Some(seed) = v.all("seed").next() {
        let id = ed25519_identity(&::hex::decode(seed).unwrap());
        let signer = NoteVerifier::from_vkey(v.get("signer")).unwrap();
        let again = id.sign_note(signer.name(), note.text()).unwrap();
        let ours = SignedNote::parse(&again).unwrap().signatures[0].clone();
        assert!(
            note.signatures().contains(&ours),
            "re-signing reproduces the signature line"
        );
    }
    "ok".into()
}

#[test]
fn vectors() {
    let mut names: Vec<String> = std::fs::read_dir(testkit::dir().join("tlog"))
        .expect("testdata/tlog exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
        .filter(|n| n != "rfc6962_vectors")
        .collect();
    names.sort();
    assert!(
        names.len() >= 10,
        "expected the checked-in vectors, found {names:?}"
    );
    for name in names {
        let v = read_vector(&name);
        assert_eq!(check(&v), v.expect, "vector {name}");
    }
}

/// Writes the generated vectors (not the external ones). Run explicitly, only when adding
/// vectors: regenerating an existing file is a format change.
pub(crate) fn generate_tlog_vectors() {
    let (log, witness) = (log_identity(), witness_identity());
    let seed = ::hex::encode(seq::<32>(0x21));
    let log_vkey = log.recipient().note_verifier(LOG).unwrap().to_string();
    let witness_vkey = witness
        .recipient()
        .cosignature_verifier(WITNESS)
        .unwrap()
        .to_string();
    let cp = checkpoint();
    let header = |expect: &str, extra: &[(&'static str, String)]| {
        let mut h: Vec<(&'static str, String)> = vec![
            ("expect", expect.to_string()),
            ("signer", log_vkey.clone()),
            ("seed", seed.clone()),
            ("origin", cp.origin.clone()),
            ("size", cp.size.to_string()),
            ("root", ::hex::encode(cp.root)),
        ];
        h.extend(extra.iter().cloned());
        h
    };
    let write =
        |name: &str, comment: &'static str, header: Vec<(&'static str, String)>, body: &str| {
            let (expect, header): (Vec<_>, Vec<_>) =
                header.into_iter().partition(|(k, _)| *k == "expect");
            let vector = testkit::Vector {
                comment,
                expect: expect.into_iter().map(|(_, v)| v).collect(),
                header,
                body: Body::Text(body.to_string()),
            };
            testkit::write_in("tlog", name, vector);
        };
    let note = log.sign_checkpoint(LOG, &cp).unwrap();
    write(
            "checkpoint_v1_ok",
            "A checkpoint of the 8-leaf CT test tree signed by the log key whose Ed25519 seed is `seed`\n(bytes 0x21..0x40).",
            header("ok", &[]),
            &note,
        );
    let mut bad = SignedNote::parse(&note).unwrap();
    bad.signatures[0].signature[10] ^= 0x01;
    write(
        "checkpoint_bad_signature",
        "checkpoint_v1_ok with one bit of the Ed25519 signature flipped.",
        header("bad-signature", &[]),
        &bad.to_string(),
    );
    write(
        "checkpoint_tampered_size",
        "checkpoint_v1_ok with the tree size changed from 8 to 9 after signing.",
        header("bad-signature", &[]),
        &note.replacen("\n8\n", "\n9\n", 1),
    );
    let other = ed25519_identity(&seq::<32>(0xc1))
        .sign_checkpoint(LOG, &cp)
        .unwrap();
    write(
            "checkpoint_other_key",
            "The same checkpoint signed under the same name by another key: the signer's key id does not\nmatch, so the line is ignored and the signer's signature is missing.",
            header("missing-signature", &[]),
            &other,
        );
    let bad_root = log
        .sign_note(LOG, &format!("{LOG}\n8\n{}\n", b64::encode(&[0xab; 31])))
        .unwrap();
    write(
        "checkpoint_short_root",
        "A validly signed note whose root line decodes to 31 bytes: not a checkpoint.",
        header("malformed", &[]),
        &bad_root,
    );
    let cosigned = witness
        .cosign_checkpoint(WITNESS, &note, TIMESTAMP)
        .unwrap();
    // A line from a key nobody here knows, which every verifier must skip and keep.
    let mut with_unknown = SignedNote::parse(&cosigned).unwrap();
    with_unknown.signatures.insert(
        1,
        NoteSignature {
            name: "unknown.example/log".into(),
            key_id: [0xde, 0xad, 0xbe, 0xef],
            signature: leaf_hash(b"opaque").to_vec(),
        },
    );
    let w = format!("{witness_vkey} {TIMESTAMP}");
    write(
            "cosignature_v1_ok",
            "checkpoint_v1_ok cosigned (cosignature/v1) by the witness whose Ed25519 seed is 0xa1..0xc0,\nwith an opaque line from an unknown key in between.",
            header("ok", &[("witness", w.clone())]),
            &with_unknown.to_string(),
        );
    let mut bad_ts = SignedNote::parse(&cosigned).unwrap();
    bad_ts.signatures[1].signature[7] ^= 0x01;
    write(
            "cosignature_bad_timestamp",
            "cosignature_v1_ok without the unknown line and with the cosignature's timestamp changed by one\nsecond after signing.",
            header("bad-signature", &[("witness", w)]),
            &bad_ts.to_string(),
        );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn checkpoint_round_trip(
        origin in "[a-z0-9./\u{e9}-]{1,40}",
        size in any::<u64>(),
        root in any::<[u8; 32]>(),
        ext in prop::collection::vec("[ -~]{1,20}", 0..3),
        ts in 0u64..(1 << 63),
    ) {
        let cp = Checkpoint { origin, size, root, extensions: ext };
        prop_assert_eq!(Checkpoint::parse_body(&cp.body()).unwrap(), cp.clone());
        let (log, witness) = (log_identity(), witness_identity());
        let note = log.sign_checkpoint(LOG, &cp).unwrap();
        let note = witness.cosign_checkpoint(WITNESS, &note, ts).unwrap();
        prop_assert_eq!(SignedNote::parse(&note).unwrap().to_string(), note.clone());
        prop_assert_eq!(log.recipient().verify_checkpoint(LOG, &note).unwrap(), cp.clone());
        prop_assert_eq!(witness.recipient().verify_cosignature(WITNESS, &note).unwrap(), (cp, ts));
    }

    #[test]
    fn base64_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
        prop_assert_eq!(b64::decode(&b64::encode(&bytes)).unwrap(), bytes);
    }

    #[test]
    fn parsers_never_panic(s in "(\\PC|\n|\u{2014} ){0,200}") {
        let _ = SignedNote::parse(&s);
        let _ = Checkpoint::parse_body(&s);
        let _ = NoteVerifier::from_vkey(&s);
        let _ = b64::decode(&s);
    }
}

#[test]
fn vector_reader_keeps_repeated_keys() {
    let v = parse_vector("# c\nexpect: ok\nwitness: a\nwitness: b\nencoding: text\n\nbody\n");
    assert_eq!(v.all("witness").collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(v.expect, "ok");
}
