//! Entries of the transparency log and their salted commitments.
//!
//! An entry stays in the private store; what the public log holds is a commitment to it,
//! `SHA-256("medgate/v1/log-entry" ‖ 0x00 ‖ salt ‖ entry)` with a random 32-byte salt, so
//! low-entropy fields (a patient id, an object key) cannot be guessed from public tiles.
//! The log's Merkle leaf is the RFC 6962 leaf hash of the commitment.
//!
//! Entry, v1 (`str` = u32 byte length ‖ UTF-8; `opt` = 0x00, or 0x01 then the value):
//!
//! | offset | len   | field                                                        |
//! |--------|-------|--------------------------------------------------------------|
//! | 0      | 1     | version = 0x01                                               |
//! | 1      | 8     | index: position in the log (u64)                             |
//! | 9      | 8     | time_ms (u64)                                                |
//! | 17     | 4 + n | kind (`str`): put, delete, copy, read, grant, rewrap, ...     |
//! | …      | 4 + n | actor (`str`)                                                |
//! | …      | 1 (+) | patient (`opt str`)                                          |
//! | …      | 8     | patient_seq (u64): 1, 2, ... per patient; 0 without patient  |
//! | …      | 32    | patient_prev: commitment of the patient's previous entry, or zeros |
//! | …      | 1 (+) | bucket (`opt str`)                                           |
//! | …      | 1 (+) | key (`opt str`)                                              |
//! | …      | 1 (+) | grant (`opt str`)                                            |
//! | …      | 1 (+) | object root (`opt` 32 bytes: the Merkle root of the record's blobs, hashed over its parts' roots in order) |
//! | …      | 4 + n | detail (`str`)                                               |
//!
//! Nothing may follow `detail`.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::merkle::Hash;
use crate::wire::{put_opt_str, put_str, Names, Reader};

/// Version byte of [`Entry`].
pub const ENTRY_V1: u8 = 0x01;
const COMMIT_PREFIX: &[u8] = b"medgate/v1/log-entry\0";

/// One log entry (see the module docs for the byte table).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log.
    pub index: u64,
    /// When, Unix milliseconds.
    pub time_ms: u64,
    /// What happened.
    pub kind: String,
    /// Who did it.
    pub actor: String,
    /// The patient it is about.
    pub patient: Option<String>,
    /// The patient's entry count, this one included (0 without a patient).
    pub patient_seq: u64,
    /// Commitment of the patient's previous entry (zeros for the first).
    pub patient_prev: Hash,
    /// The bucket of the record.
    pub bucket: Option<String>,
    /// The key of the record.
    pub key: Option<String>,
    /// The grant involved (hex id).
    pub grant: Option<String>,
    /// The record's object root at this point (see the table).
    pub root: Option<Hash>,
    /// Free text.
    pub detail: String,
}

/// The log entry's error messages (they predate the shared [`Names`] and stay as they were).
const NAMES: &Names = &Names {
    truncated: "log entry: truncated",
    trailing: "log entry: trailing bytes",
    utf8: "log entry: utf-8",
    flag: "log entry: option flag",
    text: "log entry: bad text",
    too_many: "log entry: truncated",
};

impl Entry {
    /// The v1 encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.detail.len());
        out.push(ENTRY_V1);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        put_str(&mut out, &self.kind);
        put_str(&mut out, &self.actor);
        put_opt_str(&mut out, self.patient.as_deref());
        out.extend_from_slice(&self.patient_seq.to_be_bytes());
        out.extend_from_slice(&self.patient_prev);
        put_opt_str(&mut out, self.bucket.as_deref());
        put_opt_str(&mut out, self.key.as_deref());
        put_opt_str(&mut out, self.grant.as_deref());
        match &self.root {
            None => out.push(0),
            Some(r) => {
                out.push(1);
                out.extend_from_slice(r);
            }
        }
        put_str(&mut out, &self.detail);
        out
    }

    /// Parses a v1 entry.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`], [`Error::Malformed`] for truncation, bad flags,
    /// invalid UTF-8 or trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Entry> {
        let mut r = Reader::new(bytes, NAMES);
        let v = r.u8()?;
        if v != ENTRY_V1 {
            return Err(Error::UnsupportedVersion(v));
        }
        let e = Entry {
            index: r.u64()?,
            time_ms: r.u64()?,
            kind: r.string()?,
            actor: r.string()?,
            patient: r.opt_string()?,
            patient_seq: r.u64()?,
            patient_prev: r.array()?,
            bucket: r.opt_string()?,
            key: r.opt_string()?,
            grant: r.opt_string()?,
            root: if r.flag()? { Some(r.array()?) } else { None },
            detail: r.string()?,
        };
        r.finish()?;
        Ok(e)
    }

    /// The salted commitment published in place of the entry.
    pub fn commitment(&self, salt: &[u8; 32]) -> Hash {
        commitment(salt, &self.encode())
    }
}

/// `SHA-256("medgate/v1/log-entry" ‖ 0x00 ‖ salt ‖ entry bytes)`.
pub fn commitment(salt: &[u8; 32], entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(COMMIT_PREFIX);
    h.update(salt);
    h.update(entry);
    h.finalize().into()
}

/// The object root a log entry records for a manifest: the RFC 6962 root over its
/// parts' Merkle roots, in order (one part: the root of that one leaf).
pub fn object_root(part_roots: &[Hash]) -> Hash {
    let leaves: Vec<Hash> = part_roots
        .iter()
        .map(|r| crate::merkle::leaf_hash(r))
        .collect();
    crate::merkle::root(&leaves)
}

/// The checked-in log-entry vectors (`testdata/logentry_*`), generated by
/// [`crate::vectors`]' one generator. A write's entry names the access key id that made it as
/// its actor; entries written before that say `s3` and stay valid: both are pinned here.
#[cfg(test)]
pub(crate) mod logentry_vectors {
    use super::*;
    use crate::testkit::{outcome, read_all, write, Body, Vector};

    const SALT: [u8; 32] = [0x5a; 32];
    /// An access key id as `medgate access-key create` draws them (not a secret).
    pub(crate) const ACCESS_KEY_ID: &str = "MGAB3CD4EF5GH6IJ7KLM";

    /// A PUT of a patient's record, as the gateway logs it, by `actor`.
    pub(crate) fn put_by(actor: &str) -> Entry {
        Entry {
            index: 41,
            time_ms: 1_700_000_000_000,
            kind: "put".into(),
            actor: actor.into(),
            patient: Some("alice".into()),
            patient_seq: 2,
            patient_prev: [0x11; 32],
            bucket: Some("ehr".into()),
            key: Some("alice/note.txt".into()),
            grant: None,
            root: Some([0x22; 32]),
            detail: "5 bytes, etag \"0123456789abcdef0123456789abcdef\"".into(),
        }
    }

    fn case(comment: &'static str, expect: &str, e: &Entry, body: Vec<u8>) -> Vector {
        let mut header = vec![("salt", hex::encode(SALT))];
        if expect == "ok" {
            header.push(("actor", e.actor.clone()));
            header.push(("commitment", hex::encode(e.commitment(&SALT))));
        }
        Vector {
            comment,
            expect: expect.into(),
            header,
            body: Body::Bytes(body),
        }
    }

    pub(crate) fn generate_logentry_vectors() {
        let old = put_by("s3");
        write(
            "logentry_v1_put_s3",
            case(
                "A PUT logged before writes were attributed: actor `s3`. Stays valid and\nverifiable; `commitment` is its salted commitment under `salt`.",
                "ok",
                &old,
                old.encode(),
            ),
        );
        let new = put_by(ACCESS_KEY_ID);
        write(
            "logentry_v1_put_access_key",
            case(
                "A PUT logged with the access key id that made it as actor (same v1 layout).",
                "ok",
                &new,
                new.encode(),
            ),
        );
        let mut bad_version = new.encode();
        bad_version[0] = 0x02;
        write(
            "logentry_bad_version",
            case(
                "Version byte 0x02.",
                "unsupported-version",
                &new,
                bad_version,
            ),
        );
        let ok = new.encode();
        write(
            "logentry_truncated",
            case(
                "The detail cut short by one byte.",
                "malformed",
                &new,
                ok[..ok.len() - 1].to_vec(),
            ),
        );
        let mut trailing = ok.clone();
        trailing.push(0);
        write(
            "logentry_trailing",
            case("One byte after the detail.", "malformed", &new, trailing),
        );
    }

    #[test]
    fn vectors() {
        let all = read_all("logentry_");
        assert!(all.len() >= 5, "log entry vectors missing");
        for v in all {
            assert_eq!(outcome(Entry::decode(&v.body)), v.expect, "{}", v.name);
            if v.expect == "ok" {
                let e = Entry::decode(&v.body).expect("decodes");
                assert_eq!(e.encode(), v.body, "{}: re-encode", v.name);
                assert_eq!(e.actor, v.get("actor"), "{}: actor", v.name);
                assert_eq!(e, put_by(v.get("actor")), "{}: sample", v.name);
                assert_eq!(
                    e.commitment(&v.array("salt")).to_vec(),
                    v.hex("commitment"),
                    "{}: commitment",
                    v.name
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Entry {
        Entry {
            index: 7,
            time_ms: 1_700_000_000_000,
            kind: "grant".into(),
            actor: "patient:alice".into(),
            patient: Some("alice".into()),
            patient_seq: 3,
            patient_prev: [5u8; 32],
            bucket: Some("pacs".into()),
            key: Some("alice/ct.dcm".into()),
            grant: Some("00ff".into()),
            root: Some([9u8; 32]),
            detail: "approved".into(),
        }
    }

    /// Pins the v1 encoding and commitment.
    #[test]
    fn vector() {
        let e = sample();
        let bytes = e.encode();
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
        let c = e.commitment(&[1u8; 32]);
        // Recomputed independently: SHA-256(prefix ‖ salt ‖ bytes).
        let mut h = Sha256::new();
        h.update(b"medgate/v1/log-entry\0");
        h.update([1u8; 32]);
        h.update(&bytes);
        let want: [u8; 32] = h.finalize().into();
        assert_eq!(c, want);
        assert_eq!(
            crate::hex::encode(&bytes[..17]),
            "0100000000000000070000018bcfe56800"
        );
    }

    #[test]
    fn damage_is_refused() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..n]).is_err(), "truncated at {n}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Entry::decode(&long).is_err());
        let mut v = bytes;
        v[0] = 2;
        assert_eq!(Entry::decode(&v), Err(Error::UnsupportedVersion(2)));
    }

    proptest! {
        #[test]
        fn round_trip(kind in ".{0,20}", detail in ".{0,50}", idx in any::<u64>(),
                      patient in proptest::option::of("[a-z]{1,10}"), seq in any::<u64>()) {
            let e = Entry { index: idx, kind, detail, patient, patient_seq: seq, ..sample() };
            prop_assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        }
    }
}
