//! The one test kit of this crate: fixed identities and samples, the vector file format of
//! `testdata/` (read and written here only), and the names the vector files use for outcomes.
//!
//! File shape: `# comment` lines, an `expect: <outcome>` line, `key: value` header lines (hex
//! values unless noted; a key may repeat, as `signer` in `testdata/tlog/`), `encoding: text` when
//! the body is raw text, a blank line, then the body: hex of the bytes (64 digits a line), or the
//! raw text. Regenerating a file that already exists is a format change: the one generator is
//! `crate::vectors::generate_vectors`.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::consent::{Grant, Records, Scope, ShareRequest};
use crate::error::{Error, Result};
use crate::identity::{Identity, Recipient};

pub(crate) fn seq<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

/// The identity whose 64 secret bytes are `start`, `start + 1`, ...
pub(crate) fn fixed(start: u8) -> Identity {
    Identity::from_bytes(&seq::<64>(start)).expect("fixed identity")
}

/// The owning gateway (`identity` of the stanza vectors, A of the peer vectors).
pub(crate) fn institution() -> Identity {
    fixed(0x01)
}

/// The requesting institution, which is also the request's recipient.
pub(crate) fn requester() -> Identity {
    fixed(0x41)
}

/// The patient (B of the peer vectors).
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

/// The name a vector file gives an outcome: `ok`, or the error's kind.
pub(crate) fn outcome<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => error_name(&e),
    }
}

/// The name a vector file gives an error.
pub(crate) fn error_name(e: &Error) -> String {
    match e {
        Error::Malformed(_) => "malformed".into(),
        Error::UnsupportedVersion(_) => "unsupported-version".into(),
        Error::BadSignature => "bad-signature".into(),
        Error::MissingSignature { .. } => "missing-signature".into(),
        Error::Decrypt => "decrypt-error".into(),
        Error::PassphraseRequired => "passphrase-required".into(),
        Error::InvalidProof => "invalid-proof".into(),
        Error::GrantExpired { .. } => "grant-expired".into(),
        Error::GrantMismatch(f) => format!("grant-mismatch/{f}"),
        Error::AuthExpired => "auth-expired".into(),
        Error::AuthMismatch(f) => format!("auth-mismatch/{f}"),
        Error::Rollback { .. } => "rollback".into(),
        Error::IndexMismatch(f) => format!("index-mismatch/{f}"),
        e => format!("unexpected error: {e}"),
    }
}

/// `testdata/`.
pub(crate) fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// One vector file.
pub(crate) struct Vector {
    pub(crate) comment: &'static str,
    pub(crate) expect: String,
    pub(crate) header: Vec<(&'static str, String)>,
    pub(crate) body: Body,
}

/// A vector's body: bytes (written as hex) or raw text (`encoding: text`).
pub(crate) enum Body {
    Bytes(Vec<u8>),
    Text(String),
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Body {
        Body::Bytes(b)
    }
}

/// Writes `testdata/<name>.txt`.
pub(crate) fn write(name: &str, v: Vector) {
    write_in("", name, v);
}

/// Writes `testdata/<sub>/<name>.txt`.
pub(crate) fn write_in(sub: &str, name: &str, v: Vector) {
    let mut out = String::new();
    for line in v.comment.lines() {
        writeln!(out, "# {line}").expect("String write");
    }
    writeln!(out, "expect: {}", v.expect).expect("String write");
    for (k, val) in &v.header {
        writeln!(out, "{k}: {val}").expect("String write");
    }
    if let Body::Text(_) = v.body {
        writeln!(out, "encoding: text").expect("String write");
    }
    out.push('\n');
    match v.body {
        Body::Bytes(b) => {
            for line in hex::encode(b).as_bytes().chunks(64) {
                out.push_str(std::str::from_utf8(line).expect("hex is ASCII"));
                out.push('\n');
            }
        }
        Body::Text(t) => out.push_str(&t),
    }
    let dir = dir().join(sub);
    std::fs::create_dir_all(&dir).expect("mkdir testdata");
    std::fs::write(dir.join(format!("{name}.txt")), out).expect("write vector");
}

/// One vector file, read back.
pub(crate) struct Parsed {
    pub(crate) name: String,
    pub(crate) expect: String,
    header: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Parsed {
    /// The first value of `key`.
    pub(crate) fn get(&self, key: &str) -> &str {
        self.header
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{}: missing header {key}", self.name))
    }

    /// Every value of `key`, in file order.
    pub(crate) fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.header
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.all(key).next().is_some()
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

    /// The body of an `encoding: text` vector.
    pub(crate) fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("text body")
    }
}

/// Parses one vector file's text.
pub(crate) fn parse(name: &str, text: &str) -> Parsed {
    let (head, body) = text.split_once("\n\n").expect("blank line after header");
    let mut header = Vec::new();
    for line in head.lines().filter(|l| !l.starts_with('#')) {
        let (k, v) = line.split_once(": ").expect("key: value");
        header.push((k.to_string(), v.to_string()));
    }
    let at = header
        .iter()
        .position(|(k, _)| k == "expect")
        .expect("expect header");
    let expect = header.remove(at).1;
    let body = if header.iter().any(|(k, v)| k == "encoding" && v == "text") {
        body.as_bytes().to_vec()
    } else {
        hex::decode(body.split_whitespace().collect::<String>()).expect("hex body")
    };
    Parsed {
        name: name.to_string(),
        expect,
        header,
        body,
    }
}

/// Every `testdata/<prefix>*.txt`, parsed, in name order.
pub(crate) fn read_all(prefix: &str) -> Vec<Parsed> {
    read_all_in("", prefix)
}

/// `testdata/<sub>/<name>.txt`, parsed.
pub(crate) fn read_in(sub: &str, name: &str) -> Parsed {
    let path = dir().join(sub).join(format!("{name}.txt"));
    parse(name, &std::fs::read_to_string(path).expect("read vector"))
}

/// Every `testdata/<sub>/<prefix>*.txt`, parsed, in name order.
pub(crate) fn read_all_in(sub: &str, prefix: &str) -> Vec<Parsed> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir().join(sub))
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
            parse(&name, &std::fs::read_to_string(&path).expect("read vector"))
        })
        .collect()
}

/// Checks every `testdata/<prefix>*.txt` (at least `min` of them): `check` must give the
/// outcome the file expects.
pub(crate) fn check_all(prefix: &str, min: usize, check: impl Fn(&Parsed) -> String) {
    let all = read_all(prefix);
    assert!(
        all.len() >= min,
        "expected the checked-in {prefix}* vectors, found {}",
        all.len()
    );
    for v in &all {
        assert_eq!(check(v), v.expect, "vector {}", v.name);
    }
}
