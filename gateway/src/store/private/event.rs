//! The transparency log's row: [`Event`], with what happened typed as an [`EventKind`] and
//! who did it as an [`Actor`], and [`entry_of`], the `keyring::logentry::Entry` it commits to.
//!
//! Both enums are written as the very strings earlier versions wrote (`"put"`,
//! `"patient:p-0001"`, ...), so rows, log entries and their commitments are byte-identical;
//! the tables below are every string any version ever wrote (the upgrade fixtures'
//! rows included, `gateway/tests/upgrade_fixture.rs` checks them).

use std::borrow::Cow;
use std::fmt;

use keyring::logentry::Entry;
use keyring::Hash;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::unhex32;
use crate::Result;

/// One entry of the transparency log as the private store keeps it (JSON, inside an
/// `events` row: see `store::rules::log::EventBlock`).
///
/// Row shape (one JSON object, fields in this order; unversioned: fields were only ever
/// added with a default, so an older row reads with that default):
///
/// | field          | JSON                 | meaning                                              |
/// |----------------|----------------------|------------------------------------------------------|
/// | `seq`          | number               | position in the log (set by the store)               |
/// | `time_ms`      | number               | when, Unix ms                                        |
/// | `kind`         | string               | [`EventKind`]                                        |
/// | `actor`        | string               | [`Actor`]                                            |
/// | `patient`      | string or null       | the patient it is about                              |
/// | `bucket`       | string or null       | the record's bucket                                  |
/// | `key`          | string or null       | the record's key                                     |
/// | `grant`        | string or null       | the grant involved (hex id)                          |
/// | `detail`       | string               | free text                                            |
/// | `root`         | hex (64) or null     | the record's object root, for writes                 |
/// | `patient_seq`  | number               | the patient's entry count with this one (0: none)    |
/// | `patient_prev` | hex (64)             | commitment of the patient's previous entry (zeros)   |
/// | `salt`         | hex (64)             | the random salt of this entry's commitment           |
///
/// The hash fields (`root`, `patient_prev`, `salt`) are kept as their hex text, so a row reads
/// and writes back byte for byte whatever it holds (`patient_prev` and `salt` are empty until
/// the store fills them in); [`Event::root_hash`], [`Event::patient_prev_hash`] and
/// [`Event::salt_hash`] read them as hashes (`Corrupt` when they are not), and [`entry_of`]
/// and `engine::log::commitment_of` go through them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the record, assigned by the store.
    #[serde(default)]
    pub seq: u64,
    pub time_ms: u64,
    pub kind: EventKind,
    pub actor: Actor,
    #[serde(default)]
    pub patient: Option<String>,
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub grant: Option<String>,
    #[serde(default)]
    pub detail: String,
    /// The record's object root (hex), for writes: what `verify` checks manifests against
    /// ([`Event::root_hash`]).
    #[serde(default)]
    pub root: Option<String>,
    /// Set by the store: the patient's entry count with this one, and the commitment of
    /// their previous entry (hex); the random salt of this entry's commitment (hex).
    #[serde(default)]
    pub patient_seq: u64,
    #[serde(default)]
    pub patient_prev: String,
    #[serde(default)]
    pub salt: String,
}

/// What a log entry records: its `kind`, written as the text in the table.
///
/// | variant            | text                 | written by                                  |
/// |--------------------|----------------------|---------------------------------------------|
/// | `Put`              | `put`                | PUT, CompleteMultipartUpload                |
/// | `Copy`             | `copy`               | CopyObject                                  |
/// | `Delete`           | `delete`             | DeleteObject(s)                             |
/// | `Rotate`           | `rotate`             | `medgate rotate` (a record re-encrypted)    |
/// | `Read`             | `read`               | GET/HEAD, a peer's or recipient's read      |
/// | `PatientRegister`  | `patient-register`   | `medgate patient register`                  |
/// | `KeyChange`        | `key-change`         | a patient replacing their key               |
/// | `KeyChangeRefused` | `key-change-refused` | a refused key change                        |
/// | `KeyBreakGlass`    | `key-break-glass`    | an administrator replacing a patient's key  |
/// | `KeyRollover`      | `key-rollover`       | `medgate keys rotate` (the institution key) |
/// | `ShareRequest`     | `share-request`      | a share request stored                      |
/// | `Grant`            | `grant`              | a grant approved                            |
/// | `GrantRefused`     | `grant-refused`      | a grant that failed its checks              |
/// | `Denial`           | `denial`             | a request denied                            |
/// | `Rewrap`           | `rewrap`             | records re-wrapped under a grant            |
/// | `Revocation`       | `revocation`         | a grant revoked                             |
/// | `Expiry`           | `expiry`             | a grant expired                             |
///
/// These are all the kinds any version wrote. `Other` holds any other text: the private
/// store never writes one (`LogTx::append` refuses it) and reads a row holding one as
/// `Corrupt`, but an entry served over the wire by a newer gateway (a patient's audit) may
/// carry a kind this version does not know, and its commitment is still checked byte for
/// byte.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum EventKind {
    Put,
    Copy,
    Delete,
    Rotate,
    /// The default only so that `Event { .., ..Default::default() }` builds; every entry
    /// the gateway writes names its kind.
    #[default]
    Read,
    PatientRegister,
    KeyChange,
    KeyChangeRefused,
    KeyBreakGlass,
    KeyRollover,
    ShareRequest,
    Grant,
    GrantRefused,
    Denial,
    Rewrap,
    Revocation,
    Expiry,
    /// A kind this version does not know (see the type's docs).
    Other(String),
}

impl EventKind {
    /// Every kind this version writes.
    pub const KNOWN: [EventKind; 17] = [
        EventKind::Put,
        EventKind::Copy,
        EventKind::Delete,
        EventKind::Rotate,
        EventKind::Read,
        EventKind::PatientRegister,
        EventKind::KeyChange,
        EventKind::KeyChangeRefused,
        EventKind::KeyBreakGlass,
        EventKind::KeyRollover,
        EventKind::ShareRequest,
        EventKind::Grant,
        EventKind::GrantRefused,
        EventKind::Denial,
        EventKind::Rewrap,
        EventKind::Revocation,
        EventKind::Expiry,
    ];

    /// The kind's text, as rows and log entries carry it.
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Put => "put",
            EventKind::Copy => "copy",
            EventKind::Delete => "delete",
            EventKind::Rotate => "rotate",
            EventKind::Read => "read",
            EventKind::PatientRegister => "patient-register",
            EventKind::KeyChange => "key-change",
            EventKind::KeyChangeRefused => "key-change-refused",
            EventKind::KeyBreakGlass => "key-break-glass",
            EventKind::KeyRollover => "key-rollover",
            EventKind::ShareRequest => "share-request",
            EventKind::Grant => "grant",
            EventKind::GrantRefused => "grant-refused",
            EventKind::Denial => "denial",
            EventKind::Rewrap => "rewrap",
            EventKind::Revocation => "revocation",
            EventKind::Expiry => "expiry",
            EventKind::Other(s) => s,
        }
    }

    /// The kind a text names (`Other` for one this version does not know).
    pub fn parse(text: &str) -> EventKind {
        EventKind::KNOWN
            .into_iter()
            .find(|k| k.as_str() == text)
            .unwrap_or_else(|| EventKind::Other(text.to_string()))
    }

    /// Whether this version knows the kind (not `Other`).
    pub fn is_known(&self) -> bool {
        !matches!(self, EventKind::Other(_))
    }

    /// Whether the entry records a write of an object version (its `root` is the object
    /// root the manifest must have): put, copy, rotate.
    pub fn is_object_write(&self) -> bool {
        matches!(self, EventKind::Put | EventKind::Copy | EventKind::Rotate)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl From<&str> for EventKind {
    fn from(text: &str) -> EventKind {
        EventKind::parse(text)
    }
}

impl From<EventKind> for String {
    fn from(k: EventKind) -> String {
        match k {
            EventKind::Other(s) => s,
            k => k.as_str().to_string(),
        }
    }
}

/// Kinds collect as their texts (`events.map(|e| e.kind).collect::<Vec<String>>()`).
impl FromIterator<EventKind> for Vec<String> {
    fn from_iter<I: IntoIterator<Item = EventKind>>(iter: I) -> Vec<String> {
        iter.into_iter().map(String::from).collect()
    }
}

impl PartialEq<str> for EventKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<EventKind, D::Error> {
        Ok(EventKind::parse(&Cow::<str>::deserialize(d)?))
    }
}

/// Who acted, written as the text in the table (a log entry's `actor`).
///
/// | variant             | text            | who                                                   |
/// |---------------------|-----------------|-------------------------------------------------------|
/// | `AccessKey(id)`     | the id          | an S3 access key (reads and writes); any text not below |
/// | `Anonymous`         | `anonymous`     | an S3 request without credentials                     |
/// | `S3`                | `s3`            | a write logged before writes carried their access key |
/// | `Admin`             | `admin`         | the administrator (admin socket, CLI, `rotate`, key rollover) |
/// | `NamedAdmin(name)`  | `admin:NAME`    | a named administrator (break-glass key replacement)   |
/// | `Patient(id)`       | `patient:ID`    | a patient, by their signature                         |
/// | `UnverifiedPatient` | `patient`       | whoever sent a grant that failed its checks           |
/// | `Peer(name)`        | `peer:NAME`     | a configured peer (share requests, reads)             |
/// | `Recipient`         | `recipient`     | a grant's recipient reading through the admin socket  |
/// | `Gateway`           | `gateway`       | the gateway itself (re-wraps, expiries)               |
///
/// Text that is none of the fixed forms is an access key id, so every text any version
/// wrote reads back as the same text (ids are ASCII letters and digits; one spelled like a
/// fixed form reads as that form and writes the same bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Actor {
    AccessKey(String),
    Anonymous,
    S3,
    Admin,
    NamedAdmin(String),
    Patient(String),
    UnverifiedPatient,
    Peer(String),
    Recipient,
    /// The default only so that `Event { .., ..Default::default() }` builds; every entry
    /// the gateway writes names its actor.
    #[default]
    Gateway,
}

impl Actor {
    /// The actor a text names.
    pub fn parse(text: &str) -> Actor {
        match text {
            "anonymous" => Actor::Anonymous,
            "s3" => Actor::S3,
            "admin" => Actor::Admin,
            "patient" => Actor::UnverifiedPatient,
            "recipient" => Actor::Recipient,
            "gateway" => Actor::Gateway,
            _ => {
                if let Some(name) = text.strip_prefix("admin:") {
                    Actor::NamedAdmin(name.to_string())
                } else if let Some(id) = text.strip_prefix("patient:") {
                    Actor::Patient(id.to_string())
                } else if let Some(name) = text.strip_prefix("peer:") {
                    Actor::Peer(name.to_string())
                } else {
                    Actor::AccessKey(text.to_string())
                }
            }
        }
    }

    /// The actor's text, as rows and log entries carry it.
    pub fn to_text(&self) -> Cow<'_, str> {
        match self {
            Actor::AccessKey(id) => Cow::Borrowed(id),
            Actor::Anonymous => Cow::Borrowed("anonymous"),
            Actor::S3 => Cow::Borrowed("s3"),
            Actor::Admin => Cow::Borrowed("admin"),
            Actor::NamedAdmin(name) => Cow::Owned(format!("admin:{name}")),
            Actor::Patient(id) => Cow::Owned(format!("patient:{id}")),
            Actor::UnverifiedPatient => Cow::Borrowed("patient"),
            Actor::Peer(name) => Cow::Owned(format!("peer:{name}")),
            Actor::Recipient => Cow::Borrowed("recipient"),
            Actor::Gateway => Cow::Borrowed("gateway"),
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.to_text())
    }
}

impl From<&str> for Actor {
    fn from(text: &str) -> Actor {
        Actor::parse(text)
    }
}

impl From<String> for Actor {
    fn from(text: String) -> Actor {
        Actor::parse(&text)
    }
}

impl PartialEq<str> for Actor {
    fn eq(&self, other: &str) -> bool {
        self.to_text() == other
    }
}

impl PartialEq<&str> for Actor {
    fn eq(&self, other: &&str) -> bool {
        self.to_text() == *other
    }
}

impl Serialize for Actor {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_text())
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Actor, D::Error> {
        Ok(Actor::parse(&Cow::<str>::deserialize(d)?))
    }
}

impl Event {
    /// The object root, for a write.
    ///
    /// # Errors
    /// `Corrupt` when the stored text is not 32 bytes of hex.
    pub fn root_hash(&self) -> Result<Option<Hash>> {
        self.root
            .as_deref()
            .map(|r| unhex32(r, "log entry: root"))
            .transpose()
    }

    /// The commitment of the patient's previous entry (zeros for none, or before the store
    /// filled it in).
    ///
    /// # Errors
    /// `Corrupt` when the stored text is not 32 bytes of hex.
    pub fn patient_prev_hash(&self) -> Result<Hash> {
        if self.patient_prev.is_empty() {
            Ok([0u8; 32])
        } else {
            unhex32(&self.patient_prev, "log entry: patient_prev")
        }
    }

    /// The salt of the entry's commitment.
    ///
    /// # Errors
    /// `Corrupt` when the stored text is not 32 bytes of hex (or empty: not yet stored).
    pub fn salt_hash(&self) -> Result<Hash> {
        unhex32(&self.salt, "log entry: salt")
    }
}

/// The log entry an event stands for (the store fills seq, salt and the patient chain).
///
/// # Errors
/// `Corrupt` for malformed hex fields.
pub fn entry_of(e: &Event) -> Result<Entry> {
    Ok(Entry {
        index: e.seq,
        time_ms: e.time_ms,
        kind: e.kind.as_str().to_string(),
        actor: e.actor.to_text().into_owned(),
        patient: e.patient.clone(),
        patient_seq: e.patient_seq,
        patient_prev: e.patient_prev_hash()?,
        bucket: e.bucket.clone(),
        key: e.key.clone(),
        grant: e.grant.clone(),
        root: e.root_hash()?,
        detail: e.detail.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every text any version wrote, and some it did not: each reads back as the same text.
    #[test]
    fn kinds_and_actors_write_the_text_they_were_read_from() {
        for text in [
            "put",
            "copy",
            "delete",
            "rotate",
            "read",
            "patient-register",
            "key-change",
            "key-change-refused",
            "key-break-glass",
            "key-rollover",
            "share-request",
            "grant",
            "grant-refused",
            "denial",
            "rewrap",
            "revocation",
            "expiry",
        ] {
            let k = EventKind::parse(text);
            assert!(k.is_known(), "{text}");
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{text}\""));
        }
        assert_eq!(
            EventKind::parse("future"),
            EventKind::Other("future".into())
        );
        for (text, actor) in [
            ("AKIA1", Actor::AccessKey("AKIA1".into())),
            ("anonymous", Actor::Anonymous),
            ("s3", Actor::S3),
            ("admin", Actor::Admin),
            ("admin:ops", Actor::NamedAdmin("ops".into())),
            ("patient:p-0001", Actor::Patient("p-0001".into())),
            ("patient", Actor::UnverifiedPatient),
            ("peer:hospital-b", Actor::Peer("hospital-b".into())),
            ("recipient", Actor::Recipient),
            ("gateway", Actor::Gateway),
            ("peer-hospital", Actor::AccessKey("peer-hospital".into())),
            ("", Actor::AccessKey(String::new())),
        ] {
            assert_eq!(Actor::parse(text), actor, "{text}");
            let json = serde_json::to_string(&actor).unwrap();
            assert_eq!(json, serde_json::to_string(text).unwrap());
            assert_eq!(serde_json::from_str::<Actor>(&json).unwrap(), actor);
        }
    }

    /// An event row as every version wrote it reads and writes back byte for byte.
    #[test]
    fn event_rows_round_trip_byte_for_byte() {
        let rows = [
            r#"{"seq":1,"time_ms":1796679736276,"kind":"put","actor":"s3","patient":null,"bucket":"radiology","key":"notes/readme.txt","grant":null,"detail":"23 bytes, etag \"1fe11ea7c5604a3b95ed96aa011ca8f8\"","root":"2cfb8fc2f313d8f73d52737c5bb0e731b2d09d8e4c5d8795aef86da994494df4","patient_seq":0,"patient_prev":"0000000000000000000000000000000000000000000000000000000000000000","salt":"234bc1ff5dcb668c38fa62d560d5a696c9a32606d7562fb13e601d6b70e1ed00"}"#,
            r#"{"seq":0,"time_ms":5,"kind":"grant","actor":"patient:p-0001","patient":"p-0001","bucket":null,"key":null,"grant":"ab","detail":"","root":null,"patient_seq":1,"patient_prev":"0000000000000000000000000000000000000000000000000000000000000000","salt":"12a9cb4aa1fdf05eb1409d1a84448a6bf0b9a91a85caba3f2981209d27822542"}"#,
        ];
        for row in rows {
            let e: Event = serde_json::from_str(row).unwrap();
            assert_eq!(serde_json::to_string(&e).unwrap(), row);
        }
        let e: Event = serde_json::from_str(rows[0]).unwrap();
        assert_eq!(entry_of(&e).unwrap().root, e.root_hash().unwrap());
        assert_eq!(e.root_hash().unwrap().map(hex::encode), e.root.clone());
        let bad = Event {
            root: Some("zz".into()),
            ..e
        };
        assert!(matches!(bad.root_hash(), Err(crate::Error::Corrupt(_))));
        assert!(matches!(entry_of(&bad), Err(crate::Error::Corrupt(_))));
    }
}
