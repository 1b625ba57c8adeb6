//! Signed checkpoints of the transparency log, in the C2SP text formats other logs, witnesses and
//! monitors already speak: signed notes (<https://c2sp.org/signed-note>), checkpoints
//! (<https://c2sp.org/tlog-checkpoint>) and Ed25519 witness cosignatures
//! (<https://c2sp.org/tlog-cosignature>, `cosignature/v1`).
//!
//! The gateway signs a [`Checkpoint`] of its log with [`Identity::sign_checkpoint`] and publishes
//! the note at `v1/log/checkpoint`; witnesses (other institutions) check consistency and add a
//! line with [`Identity::cosign_checkpoint`]; clients check the log's line and a quorum of
//! witness lines with [`NoteVerifier`] (or [`Recipient::verify_checkpoint`]) and keep the
//! largest checkpoint they have seen.
//!
//! These formats are versioned by their specifications, not by a leading byte: the signature type
//! byte inside each key id (0x01 note signature, 0x04 cosignature) and the `cosignature/v1`
//! header play that part. They are pinned by the vectors in `testdata/tlog/`, including notes
//! signed by other implementations.
//!
//! # Security
//! Note signatures are plain Ed25519 over the note text, with no medgate context prefix, so that
//! any signed-note verifier can check them. They cannot be confused with [`Identity::sign`]'s
//! signatures made by the same key: those cover `context ‖ 0x00 ‖ message`, and a note never
//! contains a NUL. A cosignature message (`cosignature/v1\ntime …\n…`) is not a checkpoint body
//! either, since its second line is not a decimal size.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::hex;
use crate::identity::{Identity, Recipient};
use crate::merkle::{hash_eq, Hash};

/// Signature lines start with an em dash (U+2014) and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// The most signature lines a note may carry (as golang.org/x/mod/sumdb/note; the spec asks for
/// at least 16). Bounds the work an attacker-supplied note can cause.
const MAX_SIGNATURES: usize = 100;

/// The first line of the message an Ed25519 cosignature signs.
const COSIGNATURE_HEADER: &str = "cosignature/v1\n";

/// Length of an Ed25519 signature.
const ED25519_SIG_LEN: usize = 64;

/// Length of a cosignature's timestamp.
const TIMESTAMP_LEN: usize = 8;

/// The kind of a note signature: which message it signs and which type byte its key id hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureType {
    /// Type 0x01: Ed25519 over the note text (how a log signs its checkpoint).
    Ed25519,
    /// Type 0x04: timestamped Ed25519 `cosignature/v1` (how a witness cosigns a checkpoint).
    Cosignature,
}

impl SignatureType {
    /// The signature type identifier byte of the signed-note specification.
    pub fn id(self) -> u8 {
        match self {
            SignatureType::Ed25519 => 0x01,
            SignatureType::Cosignature => 0x04,
        }
    }

    fn from_id(id: u8) -> Option<SignatureType> {
        match id {
            0x01 => Some(SignatureType::Ed25519),
            0x04 => Some(SignatureType::Cosignature),
            _ => None,
        }
    }
}

/// A note key id: `SHA-256(name ‖ 0x0A ‖ type ‖ 32-byte Ed25519 public key)[:4]`.
pub fn key_id(name: &str, sig_type: SignatureType, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', sig_type.id()]);
    h.update(public_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// Key names are non-empty and hold no Unicode space, no `+` and no control character.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c < ' ')
}

/// Signed-note text may hold no ASCII control character but newline.
fn no_controls(s: &str) -> bool {
    !s.chars().any(|c| c < ' ' && c != '\n')
}

/// A transparency log checkpoint: the log's tree head at one size (tlog-checkpoint v1).
///
/// Body (the signed note text), one `\n`-terminated line each:
///
/// | line | content                                                                  |
/// |------|--------------------------------------------------------------------------|
/// | 1    | origin: the log's identity, non-empty (e.g. `medgate.example.org/log`)   |
/// | 2    | tree size, ASCII decimal without leading zeros                          |
/// | 3    | root hash, standard base64 with padding (44 characters)                  |
/// | 4…   | optional extension lines, non-empty, opaque                              |
///
/// No line may contain a control character.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The log's origin line.
    pub origin: String,
    /// Number of leaves in the tree.
    pub size: u64,
    /// RFC 6962 root of the tree.
    pub root: Hash,
    /// Extension lines, without their newlines. Witnesses make no statement about them.
    pub extensions: Vec<String>,
}

impl PartialEq for Checkpoint {
    fn eq(&self, other: &Checkpoint) -> bool {
        self.origin == other.origin
            && self.size == other.size
            && hash_eq(&self.root, &other.root)
            && self.extensions == other.extensions
    }
}

impl Eq for Checkpoint {}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Checkpoint {
        Checkpoint {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note text: origin, size, base64 root and extension lines, each ending in `\n`.
    ///
    /// Well-formed only if the fields are (see [`Checkpoint::check`]); signing checks that.
    pub fn body(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            b64::encode(&self.root)
        );
        for line in &self.extensions {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Checks that the fields make a well-formed body: origin and extension lines non-empty,
    /// without newlines or control characters.
    ///
    /// # Errors
    /// [`Error::Malformed`] naming the offending field.
    pub fn check(&self) -> Result<()> {
        let line_ok = |s: &str| !s.is_empty() && !s.contains('\n') && no_controls(s);
        if !line_ok(&self.origin) {
            return Err(Error::Malformed("checkpoint: origin line"));
        }
        if !self.extensions.iter().all(|e| line_ok(e)) {
            return Err(Error::Malformed("checkpoint: extension line"));
        }
        Ok(())
    }

    /// Parses a checkpoint body (a note's text, without the signatures).
    ///
    /// # Errors
    /// [`Error::Malformed`] unless `text` is at least three non-empty `\n`-terminated lines: an
    /// origin, a canonical decimal size and the base64 of exactly 32 bytes.
    pub fn parse_body(text: &str) -> Result<Checkpoint> {
        let body = text
            .strip_suffix('\n')
            .ok_or(Error::Malformed("checkpoint: no final newline"))?;
        if !no_controls(text) {
            return Err(Error::Malformed("checkpoint: control character"));
        }
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(Error::Malformed("checkpoint: fewer than three lines"));
        };
        if origin.is_empty() {
            return Err(Error::Malformed("checkpoint: empty origin"));
        }
        let canonical = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size = canonical
            .then(|| size.parse::<u64>().ok())
            .flatten()
            .ok_or(Error::Malformed("checkpoint: tree size"))?;
        let root: Hash = b64::decode(root)
            .and_then(|r| r.try_into().ok())
            .ok_or(Error::Malformed("checkpoint: root hash"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(Error::Malformed("checkpoint: empty extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

/// One signature line of a signed note.
///
/// Line: `— <name> <base64(key id ‖ signature)>\n`, with U+2014 EM DASH and single spaces.
///
/// | offset | len | field (for the two types medgate checks)                              |
/// |--------|-----|-----------------------------------------------------------------------|
/// | 0      | 4   | key id ([`key_id`])                                                   |
/// | 4      | 64  | type 0x01: Ed25519 over the note text                                 |
/// | 4      | 8   | type 0x04: timestamp, big-endian u64 seconds, at most 2^63 − 1        |
/// | 12     | 64  | type 0x04: Ed25519 over `cosignature/v1\ntime <ts>\n` ‖ note text      |
///
/// Lines of other types (ECDSA, RFC 6962 tree head signatures, ML-DSA) are kept as opaque bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    /// The signer's key name.
    pub name: String,
    /// The signer's 4-byte key id.
    pub key_id: [u8; 4],
    /// The bytes after the key id: the signature proper (with its timestamp, for a cosignature).
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The line, with its final newline.
    pub fn line(&self) -> String {
        let payload = [self.key_id.as_slice(), &self.signature].concat();
        format!("{SIG_PREFIX}{} {}\n", self.name, b64::encode(&payload))
    }
}

/// A note and its signature lines (C2SP signed-note).
///
/// | part            | content                                                            |
/// |-----------------|--------------------------------------------------------------------|
/// | text            | UTF-8, ends in `\n`; for a checkpoint, the [`Checkpoint`] body     |
/// | separator       | one empty line (`\n`)                                              |
/// | signatures (1…) | [`NoteSignature`] lines, at most 100                               |
///
/// The whole note is valid UTF-8 with no control character but newline; the text ends at the last
/// empty line. Lines from unknown keys are kept, so adding a cosignature preserves them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedNote {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// A note with `text` and no signature yet.
    ///
    /// # Errors
    /// [`Error::Malformed`] if `text` does not end in a newline or holds a control character.
    pub fn new(text: &str) -> Result<SignedNote> {
        if !text.ends_with('\n') || !no_controls(text) {
            return Err(Error::Malformed("signed note: text"));
        }
        Ok(SignedNote {
            text: text.to_owned(),
            signatures: Vec::new(),
        })
    }

    /// Parses a signed note.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a control character, no separating empty line, no or more than
    /// 100 signature lines, or a line that is not `— <name> <base64>` with a valid name and at
    /// least 5 decoded bytes.
    pub fn parse(note: &str) -> Result<SignedNote> {
        const BAD: Error = Error::Malformed("signed note");
        if !no_controls(note) {
            return Err(BAD);
        }
        let split = note.rfind("\n\n").ok_or(BAD)?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        let sigs = sigs.strip_suffix('\n').ok_or(BAD)?;
        let mut signatures = Vec::new();
        for line in sigs.split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(BAD);
            }
            let rest = line.strip_prefix(SIG_PREFIX).ok_or(BAD)?;
            let (name, b64) = rest.split_once(' ').ok_or(BAD)?;
            let bytes = b64::decode(b64).ok_or(BAD)?;
            if !valid_name(name) || bytes.len() < 5 {
                return Err(BAD);
            }
            let (id, sig) = bytes.split_at(4);
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_id: [id[0], id[1], id[2], id[3]],
                signature: sig.to_vec(),
            });
        }
        Ok(SignedNote {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The note text (without the separator and signatures).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines, in order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Appends a signature line, first removing any line with the same name and key id (a
    /// re-signature replaces the old one).
    ///
    /// # Errors
    /// [`Error::Malformed`] for an invalid key name, or if the note already has 100 lines.
    pub fn add_signature(&mut self, sig: NoteSignature) -> Result<()> {
        if !valid_name(&sig.name) {
            return Err(Error::Malformed("signed note: key name"));
        }
        self.signatures
            .retain(|s| !(s.name == sig.name && s.key_id == sig.key_id));
        if self.signatures.len() == MAX_SIGNATURES {
            return Err(Error::Malformed("signed note: too many signatures"));
        }
        self.signatures.push(sig);
        Ok(())
    }

    /// The text parsed as a checkpoint. The text is *unverified* here: use
    /// [`NoteVerifier::verify_checkpoint`] for anything trusted.
    ///
    /// # Errors
    /// As [`Checkpoint::parse_body`].
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        Checkpoint::parse_body(&self.text)
    }
}

impl fmt::Display for SignedNote {
    /// The note's text form. (With no signature line it is not yet a parseable note.)
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for s in &self.signatures {
            f.write_str(&s.line())?;
        }
        Ok(())
    }
}

/// The message a `cosignature/v1` signs: `cosignature/v1\ntime <timestamp>\n` ‖ note text.
fn cosignature_message(timestamp: u64, text: &str) -> Vec<u8> {
    format!("{COSIGNATURE_HEADER}time {timestamp}\n{text}").into_bytes()
}

/// A public key that checks one kind of note signature under one name: a log's key
/// ([`SignatureType::Ed25519`]) or a witness's ([`SignatureType::Cosignature`]).
///
/// Text form (a "vkey", as golang.org/x/mod/sumdb/note and the witness network write it):
/// `<name>+<key id, 8 hex digits>+<base64(type byte ‖ 32-byte Ed25519 public key)>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    sig_type: SignatureType,
    key: VerifyingKey,
    key_id: [u8; 4],
}

impl NoteVerifier {
    /// A verifier for `public_key` signing as `name`.
    ///
    /// # Errors
    /// [`Error::Malformed`] for an invalid name or a public key that is not a curve point.
    pub fn new(name: &str, sig_type: SignatureType, public_key: &[u8; 32]) -> Result<NoteVerifier> {
        if !valid_name(name) {
            return Err(Error::Malformed("note verifier: key name"));
        }
        let key = VerifyingKey::from_bytes(public_key)
            .map_err(|_| Error::Malformed("note verifier: public key"))?;
        Ok(NoteVerifier {
            name: name.to_owned(),
            sig_type,
            key,
            key_id: key_id(name, sig_type, public_key),
        })
    }

    /// Parses a vkey (see the type docs).
    ///
    /// # Errors
    /// [`Error::Malformed`] for a bad layout, an unsupported type byte, a bad key, or a key id
    /// that does not match the name and key.
    pub fn from_vkey(vkey: &str) -> Result<NoteVerifier> {
        const BAD: Error = Error::Malformed("vkey");
        let (name, rest) = vkey.split_once('+').ok_or(BAD)?;
        let (id, key) = rest.split_once('+').ok_or(BAD)?;
        let id: [u8; 4] = hex::decode_array(id, "vkey: key id")?;
        let key = b64::decode(key).ok_or(BAD)?;
        let (&ty, pk) = key.split_first().ok_or(BAD)?;
        let sig_type =
            SignatureType::from_id(ty).ok_or(Error::Malformed("vkey: signature type"))?;
        let pk: [u8; 32] = pk.try_into().map_err(|_| BAD)?;
        let v = NoteVerifier::new(name, sig_type, &pk)?;
        if v.key_id != id {
            return Err(Error::Malformed("vkey: key id does not match the key"));
        }
        Ok(v)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id.
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// Which signatures this key checks.
    pub fn signature_type(&self) -> SignatureType {
        self.sig_type
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// `<name>+<key id hex>`, how errors name the key.
    fn label(&self) -> String {
        format!("{}+{}", self.name, hex::encode(&self.key_id))
    }

    /// Checks every line of `note` from this key (same name and key id); lines from other keys
    /// are ignored. Returns the latest cosignature timestamp for a cosignature key, `None` for a
    /// log key.
    ///
    /// # Errors
    /// [`Error::MissingSignature`] if no line is from this key; [`Error::BadSignature`] if any
    /// line from this key fails to verify (the spec's advice: reject the whole note).
    pub fn verify_note(&self, note: &SignedNote) -> Result<Option<u64>> {
        let mut seen = false;
        let mut latest: Option<u64> = None;
        for sig in note
            .signatures
            .iter()
            .filter(|s| s.name == self.name && s.key_id == self.key_id)
        {
            seen = true;
            match self.sig_type {
                SignatureType::Ed25519 => {
                    self.check_ed25519(note.text.as_bytes(), &sig.signature)?;
                }
                SignatureType::Cosignature => {
                    if sig.signature.len() != TIMESTAMP_LEN + ED25519_SIG_LEN {
                        return Err(Error::BadSignature);
                    }
                    let (ts, s) = sig.signature.split_at(TIMESTAMP_LEN);
                    let mut be = [0u8; TIMESTAMP_LEN];
                    be.copy_from_slice(ts);
                    let ts = u64::from_be_bytes(be);
                    if ts > i64::MAX as u64 {
                        return Err(Error::BadSignature);
                    }
                    self.check_ed25519(&cosignature_message(ts, &note.text), s)?;
                    latest = latest.max(Some(ts));
                }
            }
        }
        if !seen {
            return Err(Error::MissingSignature { key: self.label() });
        }
        Ok(latest)
    }

    fn check_ed25519(&self, msg: &[u8], sig: &[u8]) -> Result<()> {
        let sig = ed25519_dalek::Signature::from_slice(sig).map_err(|_| Error::BadSignature)?;
        self.key
            .verify_strict(msg, &sig)
            .map_err(|_| Error::BadSignature)
    }

    /// Parses `note`, checks this key's lines ([`NoteVerifier::verify_note`]) and returns the
    /// checkpoint it signs. Works for both key types; a cosignature's timestamp is dropped.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a malformed note or a signed text that is not a checkpoint;
    /// otherwise as [`NoteVerifier::verify_note`].
    pub fn verify_checkpoint(&self, note: &str) -> Result<Checkpoint> {
        let note = SignedNote::parse(note)?;
        self.verify_note(&note)?;
        note.checkpoint()
    }

    /// Like [`NoteVerifier::verify_checkpoint`] for a witness key, also returning the
    /// cosignature's timestamp (Unix seconds).
    ///
    /// # Errors
    /// As [`NoteVerifier::verify_checkpoint`]; [`Error::Malformed`] if this is not a
    /// [`SignatureType::Cosignature`] key.
    pub fn verify_cosignature(&self, note: &str) -> Result<(Checkpoint, u64)> {
        let note = SignedNote::parse(note)?;
        let ts = self
            .verify_note(&note)?
            .ok_or(Error::Malformed("note verifier: not a cosignature key"))?;
        Ok((note.checkpoint()?, ts))
    }
}

impl fmt::Display for NoteVerifier {
    /// The vkey.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = [&[self.sig_type.id()], self.key.as_bytes().as_slice()].concat();
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(&self.key_id),
            b64::encode(&key)
        )
    }
}

impl FromStr for NoteVerifier {
    type Err = Error;

    fn from_str(s: &str) -> Result<NoteVerifier> {
        NoteVerifier::from_vkey(s)
    }
}

impl Identity {
    /// Signs `text` as a note under `name` with this identity's Ed25519 key (type 0x01, no
    /// context prefix: see the module's Security section) and returns the note.
    ///
    /// # Errors
    /// [`Error::Malformed`] for an invalid key name, or a text that does not end in a newline or
    /// holds a control character.
    pub fn sign_note(&self, name: &str, text: &str) -> Result<String> {
        let mut note = SignedNote::new(text)?;
        note.add_signature(self.note_signature(name, text))?;
        Ok(note.to_string())
    }

    /// The type 0x01 signature line over `text`.
    fn note_signature(&self, name: &str, text: &str) -> NoteSignature {
        let pk = self.ed25519.verifying_key().to_bytes();
        NoteSignature {
            name: name.to_owned(),
            key_id: key_id(name, SignatureType::Ed25519, &pk),
            signature: self.ed25519.sign(text.as_bytes()).to_bytes().to_vec(),
        }
    }

    /// Signs a checkpoint of this identity's log under `name` (which should equal the origin)
    /// and returns the note to publish.
    ///
    /// # Errors
    /// [`Error::Malformed`] for an invalid key name or checkpoint field ([`Checkpoint::check`]).
    pub fn sign_checkpoint(&self, name: &str, checkpoint: &Checkpoint) -> Result<String> {
        checkpoint.check()?;
        self.sign_note(name, &checkpoint.body())
    }

    /// Adds (or replaces) this identity's `cosignature/v1` line, as witness `name`, to a signed
    /// checkpoint, stating that at `timestamp` (Unix seconds) it is the largest consistent
    /// checkpoint this witness has seen of that log. Other lines are kept.
    ///
    /// Checks nothing about the log's signature or consistency: the witness does that before
    /// calling (with [`NoteVerifier::verify_checkpoint`] and
    /// [`crate::merkle::ConsistencyProof::verify`]).
    ///
    /// # Errors
    /// [`Error::Malformed`] for a malformed note, a text that is not a checkpoint, an invalid
    /// name, or a timestamp above 2^63 − 1.
    pub fn cosign_checkpoint(&self, name: &str, note: &str, timestamp: u64) -> Result<String> {
        if timestamp > i64::MAX as u64 {
            return Err(Error::Malformed("cosignature: timestamp above 2^63 - 1"));
        }
        let mut note = SignedNote::parse(note)?;
        note.checkpoint()?;
        let pk = self.ed25519.verifying_key().to_bytes();
        let sig = self
            .ed25519
            .sign(&cosignature_message(timestamp, &note.text));
        note.add_signature(NoteSignature {
            name: name.to_owned(),
            key_id: key_id(name, SignatureType::Cosignature, &pk),
            signature: [timestamp.to_be_bytes().as_slice(), &sig.to_bytes()].concat(),
        })?;
        Ok(note.to_string())
    }
}

impl Recipient {
    /// The verifier of this recipient's checkpoint signatures (type 0x01) under `name`.
    ///
    /// # Errors
    /// [`Error::Malformed`] for an invalid key name.
    pub fn note_verifier(&self, name: &str) -> Result<NoteVerifier> {
        NoteVerifier::new(name, SignatureType::Ed25519, &self.ed25519.to_bytes())
    }

    /// The verifier of this recipient's witness cosignatures (type 0x04) under `name`.
    ///
    /// # Errors
    /// [`Error::Malformed`] for an invalid key name.
    pub fn cosignature_verifier(&self, name: &str) -> Result<NoteVerifier> {
        NoteVerifier::new(name, SignatureType::Cosignature, &self.ed25519.to_bytes())
    }

    /// Checks this recipient's signature under `name` on a checkpoint note and returns the
    /// checkpoint. Lines from other keys are ignored.
    ///
    /// # Errors
    /// As [`NoteVerifier::verify_checkpoint`].
    pub fn verify_checkpoint(&self, name: &str, note: &str) -> Result<Checkpoint> {
        self.note_verifier(name)?.verify_checkpoint(note)
    }

    /// Checks this recipient's cosignature as witness `name` and returns the checkpoint and the
    /// cosignature's timestamp. Lines from other keys (including the log's) are ignored.
    ///
    /// # Errors
    /// As [`NoteVerifier::verify_cosignature`].
    pub fn verify_cosignature(&self, name: &str, note: &str) -> Result<(Checkpoint, u64)> {
        self.cosignature_verifier(name)?.verify_cosignature(note)
    }
}

/// Standard base64 (RFC 4648 §4) with padding, decoding only the canonical encoding, so every
/// byte string has exactly one text form.
mod b64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub(super) fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn value(c: u8) -> Option<u32> {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        Some(u32::from(v))
    }

    /// `None` unless `s` is exactly what [`encode`] gives for some bytes.
    pub(super) fn decode(s: &str) -> Option<Vec<u8>> {
        let s = s.as_bytes();
        // Whole quads only.
        if s.len() & 3 != 0 {
            return None;
        }
        let mut out = Vec::with_capacity(s.len() / 4 * 3);
        let quads = s.len() / 4;
        for (q, quad) in s.chunks_exact(4).enumerate() {
            let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 || (pad > 0 && q + 1 != quads) {
                return None;
            }
            let mut n = 0u32;
            for &c in &quad[..4 - pad] {
                n = n << 6 | value(c)?;
            }
            n <<= 6 * pad as u32;
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            // Canonical: the bits under the padding are zero.
            if bytes[3 - pad..].iter().any(|&b| b != 0) {
                return None;
            }
            out.extend_from_slice(&bytes[..3 - pad]);
        }
        Some(out)
    }
}

#[cfg(test)]
pub(crate) mod tests;
