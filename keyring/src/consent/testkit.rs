//! Fixed identities and samples, and the vector file format of `crate::vectors` (comment lines,
//! `key: value` header, blank line, hex body), for consent's and `patient_index`'s vectors.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use super::*;

pub(crate) fn seq<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn fixed(start: u8) -> Identity {
    Identity::from_bytes(&seq::<64>(start)).expect("fixed identity")
}

/// The owning gateway (the `identity` of the stanza vectors).
pub(crate) fn institution() -> Identity {
    fixed(0x01)
}

/// The requesting institution, which is also the request's recipient.
pub(crate) fn requester() -> Identity {
    fixed(0x41)
}

/// The patient.
pub(crate) fn patient() -> Identity {
    fixed(0x81)
}

/// Anyone else.
pub(crate) fn other() -> Identity {
    fixed(0xc1)
}

pub(crate) const PATIENT_ID: &str = "patient-0042";
pub(crate) const CREATED_MS: u64 = 1_700_000_000_000;
pub(crate) const EXPIRES_MS: u64 = CREATED_MS + 30 * 86_400_000;
pub(crate) const ISSUED_MS: u64 = CREATED_MS + 600_000;

/// The request pinned by `testdata/consent_request_ok.txt`.
pub(crate) fn request() -> ShareRequest {
    ShareRequest {
        institution: institution().recipient().fingerprint(),
        patient_id: PATIENT_ID.into(),
        scope: Scope {
            records: Records::Prefix {
                bucket: "radiology".into(),
                prefix: "patient-0042/ct/".into(),
            },
            include_future: false,
        },
        recipient: requester().recipient(),
        requester: "St. Elsewhere Cardiology".into(),
        purpose_text: "Second opinion on CT thorax\nrequested by Dr. Ünal".into(),
        purpose_code: "TREAT".into(),
        created_ms: CREATED_MS,
        expires_ms: EXPIRES_MS,
        nonce: seq(0xa0),
    }
}

/// The grant of [`request`] pinned by `testdata/consent_grant_ok.txt`.
pub(crate) fn grant() -> Grant {
    let mut g = Grant::for_request(&request(), &patient().recipient(), ISSUED_MS);
    g.nonce = seq(0xb0);
    g
}

pub(crate) fn outcome<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(Error::Malformed(_)) => "malformed".into(),
        Err(Error::UnsupportedVersion(_)) => "unsupported-version".into(),
        Err(Error::BadSignature) => "bad-signature".into(),
        Err(Error::Decrypt) => "decrypt-error".into(),
        Err(Error::GrantExpired { .. }) => "grant-expired".into(),
        Err(Error::GrantMismatch(f)) => format!("grant-mismatch/{f}"),
        Err(Error::AuthExpired) => "auth-expired".into(),
        Err(Error::AuthMismatch(f)) => format!("auth-mismatch/{f}"),
        Err(Error::Rollback { .. }) => "rollback".into(),
        Err(Error::IndexMismatch(f)) => format!("index-mismatch/{f}"),
        Err(e) => format!("unexpected error: {e}"),
    }
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// One vector file.
pub(crate) struct Vector {
    pub(crate) comment: &'static str,
    pub(crate) expect: String,
    pub(crate) header: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
}

pub(crate) fn write(name: &str, v: Vector) {
    let mut out = String::new();
    for line in v.comment.lines() {
        writeln!(out, "# {line}").expect("String write");
    }
    writeln!(out, "expect: {}", v.expect).expect("String write");
    for (k, val) in &v.header {
        writeln!(out, "{k}: {val}").expect("String write");
    }
    out.push('\n');
    for line in hex::encode(&v.body).as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("hex is ASCII"));
        out.push('\n');
    }
    std::fs::write(dir().join(format!("{name}.txt")), out).expect("write vector");
}

pub(crate) struct Parsed {
    pub(crate) name: String,
    pub(crate) expect: String,
    header: BTreeMap<String, String>,
    pub(crate) body: Vec<u8>,
}

impl Parsed {
    pub(crate) fn get(&self, key: &str) -> &str {
        self.header
            .get(key)
            .unwrap_or_else(|| panic!("{}: missing header {key}", self.name))
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.header.contains_key(key)
    }

    pub(crate) fn hex(&self, key: &str) -> Vec<u8> {
        hex::decode(self.get(key)).unwrap_or_else(|_| panic!("{}: bad hex in {key}", self.name))
    }

    pub(crate) fn array<const N: usize>(&self, key: &str) -> [u8; N] {
        self.hex(key)
            .try_into()
            .unwrap_or_else(|_| panic!("{}: {key} is not {N} bytes", self.name))
    }

    pub(crate) fn u64(&self, key: &str) -> u64 {
        self.get(key)
            .parse()
            .unwrap_or_else(|_| panic!("{}: {key} is not a u64", self.name))
    }

    pub(crate) fn identity(&self, key: &str) -> Identity {
        Identity::from_bytes(&self.hex(key)).expect("identity")
    }

    pub(crate) fn recipient(&self, key: &str) -> Recipient {
        Recipient::from_bytes(&self.hex(key)).expect("recipient")
    }
}

/// Every `testdata/<prefix>*.txt`, parsed, in name order.
pub(crate) fn read_all(prefix: &str) -> Vec<Parsed> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("testdata/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "txt")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 name")
                .to_string();
            let text = std::fs::read_to_string(&path).expect("read vector");
            let (head, body) = text.split_once("\n\n").expect("blank line after header");
            let mut header = BTreeMap::new();
            for line in head.lines().filter(|l| !l.starts_with('#')) {
                let (k, v) = line.split_once(": ").expect("key: value");
                header.insert(k.to_string(), v.to_string());
            }
            let expect = header.remove("expect").expect("expect header");
            let body = hex::decode(body.split_whitespace().collect::<String>()).expect("hex body");
            Parsed {
                name,
                expect,
                header,
                body,
            }
        })
        .collect()
}
