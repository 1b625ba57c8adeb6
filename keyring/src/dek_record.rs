//! The private store's record of one data key (DEK): how many manifests use it, and its
//! stanzas, each beside the [`Recipient`] it is wrapped to.
//!
//! A stanza only carries a 4-byte routing tag of its recipient (see [`crate::stanza`]), and 32
//! bits collide: two recipients with one tag cannot be told apart by their stanzas. So the
//! record stores the whole Recipient next to each stanza (version 2), and the gateway finds and
//! removes a recipient's stanzas by comparing whole keys in constant time
//! ([`DekStanza::is_for`]), never by tag.
//!
//! Version 1 (written before) kept the stanzas alone:
//!
//! | offset | len       | field                                   |
//! |--------|-----------|-----------------------------------------|
//! | 0      | 1         | version = 0x01                          |
//! | 1      | 8         | manifests referencing this DEK (u64 BE) |
//! | 9      | 4         | stanza count n (u32 BE)                 |
//! | 13     | n × (2+l) | each stanza: length l (u16 BE) ‖ bytes  |
//!
//! Version 2 (written now):
//!
//! | offset | len       | field                                                       |
//! |--------|-----------|-------------------------------------------------------------|
//! | 0      | 1         | version = 0x02                                              |
//! | 1      | 8         | manifests referencing this DEK (u64 BE)                     |
//! | 9      | 4         | stanza count n (u32 BE)                                     |
//! | 13     | n entries | each entry, below                                           |
//!
//! Each v2 entry:
//!
//! | len | field                                                                      |
//! |-----|----------------------------------------------------------------------------|
//! | 1   | recipient flag: 0x01 recipient known, 0x00 unknown (a v1 stanza whose recipient the upgrade could not find) |
//! | 64  | the Recipient ([`Recipient::to_bytes`]: X25519 pk ‖ Ed25519 pk); only when the flag is 0x01 |
//! | 2   | stanza length l (u16 BE)                                                   |
//! | l   | the stanza ([`WrappedKey`] encoding)                                       |
//!
//! A known recipient's tag must be the stanza's tag (a record cannot say a stanza is wrapped to
//! a key it does not name). Decoding is strict: an unknown version, a flag other than 0x00 or
//! 0x01, an invalid Recipient, a stanza that does not parse, truncation or trailing bytes are all
//! errors. Both versions decode; [`DekRecord::encode`] writes version 2.

use std::fmt;

use crate::error::{Error, Result};
use crate::identity::Recipient;
use crate::stanza::WrappedKey;
use crate::wire::{Names, Reader};

/// Version byte of a record that stores stanzas alone.
pub const DEK_RECORD_V1: u8 = 0x01;
/// Version byte of a record that stores each stanza's Recipient.
pub const DEK_RECORD_V2: u8 = 0x02;

const FLAG_UNKNOWN: u8 = 0x00;
const FLAG_KNOWN: u8 = 0x01;

/// One stanza of a DEK and who it is wrapped to.
#[derive(Clone, PartialEq, Eq)]
pub struct DekStanza {
    recipient: Option<Recipient>,
    wrapped: WrappedKey,
}

impl DekStanza {
    /// A stanza wrapped to `recipient`.
    ///
    /// # Errors
    /// [`Error::Malformed`] if the stanza's tag is not the recipient's: it is not wrapped to it.
    pub fn new(recipient: Recipient, wrapped: WrappedKey) -> Result<DekStanza> {
        if wrapped.recipient_tag() != recipient.tag() {
            return Err(Error::Malformed(
                "DEK record: the stanza does not name its recipient",
            ));
        }
        Ok(DekStanza {
            recipient: Some(recipient),
            wrapped,
        })
    }

    /// A stanza whose recipient is not known (a version 1 stanza the upgrade could not match).
    pub fn unknown(wrapped: WrappedKey) -> DekStanza {
        DekStanza {
            recipient: None,
            wrapped,
        }
    }

    /// Who the stanza is wrapped to, when known.
    pub fn recipient(&self) -> Option<&Recipient> {
        self.recipient.as_ref()
    }

    /// The stanza.
    pub fn wrapped(&self) -> &WrappedKey {
        &self.wrapped
    }

    /// The stanza, by value.
    pub fn into_wrapped(self) -> WrappedKey {
        self.wrapped
    }

    /// Whether this stanza is wrapped to `recipient`: its stored Recipient is the same whole
    /// key (X25519 and Ed25519), compared in constant time. A stanza of unknown recipient is
    /// nobody's.
    pub fn is_for(&self, recipient: &Recipient) -> bool {
        self.recipient.as_ref().is_some_and(|r| r.ct_eq(recipient))
    }
}

impl fmt::Debug for DekStanza {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DekStanza")
            .field("recipient", &self.recipient)
            .field("wrapped", &self.wrapped)
            .finish()
    }
}

/// The record of one DEK (see the module docs for both encodings).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DekRecord {
    /// How many manifests use the DEK.
    pub refs: u64,
    /// Its stanzas.
    pub stanzas: Vec<DekStanza>,
}

impl DekRecord {
    /// The version byte of an encoded record, if it has one.
    pub fn version_of(bytes: &[u8]) -> Option<u8> {
        bytes.first().copied()
    }

    /// Encodes the record as version 2.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + self.stanzas.len() * (1 + 64 + 2 + 101));
        out.push(DEK_RECORD_V2);
        out.extend_from_slice(&self.refs.to_be_bytes());
        out.extend_from_slice(&(self.stanzas.len() as u32).to_be_bytes());
        for s in &self.stanzas {
            match &s.recipient {
                Some(r) => {
                    out.push(FLAG_KNOWN);
                    out.extend_from_slice(&r.to_bytes());
                }
                None => out.push(FLAG_UNKNOWN),
            }
            push_stanza(&mut out, &s.wrapped);
        }
        out
    }

    /// Encodes the record as version 1, which drops the recipients. Only for writing the rows
    /// an older gateway wrote (test vectors, upgrade tests); the store writes version 2.
    pub fn encode_v1(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + self.stanzas.len() * (2 + 101));
        out.push(DEK_RECORD_V1);
        out.extend_from_slice(&self.refs.to_be_bytes());
        out.extend_from_slice(&(self.stanzas.len() as u32).to_be_bytes());
        for s in &self.stanzas {
            push_stanza(&mut out, &s.wrapped);
        }
        out
    }

    /// Decodes a version 1 or 2 record. Version 1 stanzas come back with no recipient.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for another version byte, [`Error::Malformed`] for
    /// truncation, trailing bytes, a bad recipient flag or Recipient, a recipient whose tag is
    /// not the stanza's, or a stanza that does not parse.
    pub fn decode(bytes: &[u8]) -> Result<DekRecord> {
        let (&version, rest) = bytes
            .split_first()
            .ok_or(Error::Malformed("DEK record: empty"))?;
        if version != DEK_RECORD_V1 && version != DEK_RECORD_V2 {
            return Err(Error::UnsupportedVersion(version));
        }
        let mut r = Reader::new(rest, NAMES);
        let refs = r.u64()?;
        let count = r.u32()?;
        let mut stanzas = Vec::new();
        for _ in 0..count {
            let recipient = if version == DEK_RECORD_V2 {
                match r.u8()? {
                    FLAG_UNKNOWN => None,
                    FLAG_KNOWN => Some(r.recipient()?),
                    _ => return Err(Error::Malformed("DEK record: bad recipient flag")),
                }
            } else {
                None
            };
            let len = usize::from(r.u16()?);
            let wrapped = WrappedKey::from_bytes(r.take(len)?)?;
            stanzas.push(match recipient {
                Some(r) => DekStanza::new(r, wrapped)?,
                None => DekStanza::unknown(wrapped),
            });
        }
        r.finish()?;
        Ok(DekRecord { refs, stanzas })
    }
}

/// The DEK record's error messages (they predate the shared [`Names`] and stay as they were).
const NAMES: &Names = &Names {
    truncated: "DEK record: truncated",
    trailing: "DEK record: trailing bytes",
    utf8: "DEK record: invalid UTF-8",
    flag: "DEK record: bad recipient flag",
    text: "DEK record: bad text",
    too_many: "DEK record: truncated",
};

fn push_stanza(out: &mut Vec<u8>, w: &WrappedKey) {
    let bytes = w.as_bytes();
    // Stanzas are at most 101 bytes (`WrappedKey::from_bytes` accepts nothing longer).
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::key::DataKey;

    fn id(start: u8) -> Identity {
        Identity::from_bytes(&std::array::from_fn::<u8, 64, _>(|i| {
            start.wrapping_add(i as u8)
        }))
        .unwrap()
    }

    /// A record with an own stanza (institution), an X25519 stanza (patient), a batch stanza
    /// (a grant's recipient) and one stanza of unknown recipient.
    pub(crate) fn sample() -> (DekRecord, Vec<Identity>) {
        let (inst, patient, reader) = (id(0x01), id(0x81), id(0x41));
        let dek = DataKey::from_bytes([0xd0; 32]);
        let own = inst.wrap_own(&dek);
        let p = patient.recipient().wrap_key(&dek).unwrap();
        let b = reader.recipient().batch_wrapper().unwrap().wrap(&dek);
        let lost = id(0x21).recipient().wrap_key(&dek).unwrap();
        let rec = DekRecord {
            refs: 2,
            stanzas: vec![
                DekStanza::new(inst.recipient(), own).unwrap(),
                DekStanza::new(patient.recipient(), p).unwrap(),
                DekStanza::new(reader.recipient(), b).unwrap(),
                DekStanza::unknown(lost),
            ],
        };
        (rec, vec![inst, patient, reader])
    }

    #[test]
    fn v2_round_trips_and_v1_keeps_the_stanzas_without_recipients() {
        let (rec, ids) = sample();
        let bytes = rec.encode();
        assert_eq!(bytes[0], DEK_RECORD_V2);
        assert_eq!(DekRecord::decode(&bytes).unwrap(), rec);
        let v1 = rec.encode_v1();
        let old = DekRecord::decode(&v1).unwrap();
        assert_eq!(old.refs, 2);
        assert!(old.stanzas.iter().all(|s| s.recipient().is_none()));
        assert_eq!(old.encode_v1(), v1);
        for (s, o) in rec.stanzas.iter().zip(&old.stanzas) {
            assert_eq!(s.wrapped(), o.wrapped());
        }
        assert!(rec.stanzas[1].is_for(&ids[1].recipient()));
        assert!(!rec.stanzas[1].is_for(&ids[0].recipient()));
        assert!(!rec.stanzas[3].is_for(&ids[0].recipient()));
        let empty = DekRecord::default();
        assert_eq!(DekRecord::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn strict_decoding() {
        let (rec, _) = sample();
        let bytes = rec.encode();
        for cut in 0..bytes.len() {
            assert!(DekRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            DekRecord::decode(&trailing),
            Err(Error::Malformed(_))
        ));
        for v in [0u8, 3, 0xff] {
            let mut b = bytes.clone();
            b[0] = v;
            assert_eq!(DekRecord::decode(&b), Err(Error::UnsupportedVersion(v)));
        }
        // The first entry's flag.
        let mut flag = bytes.clone();
        flag[13] = 0x02;
        assert!(DekRecord::decode(&flag).is_err());
        // A recipient that is not the one the stanza names.
        let mut other = bytes.clone();
        other[14..14 + 64].copy_from_slice(&id(0x33).recipient().to_bytes());
        assert!(DekRecord::decode(&other).is_err());
        // More stanzas announced than present.
        let mut count = bytes.clone();
        count[12] += 1;
        assert!(DekRecord::decode(&count).is_err());
    }

    #[test]
    fn a_stanza_must_name_its_recipient() {
        let dek = DataKey::from_bytes([7; 32]);
        let w = id(0x01).recipient().wrap_key(&dek).unwrap();
        assert!(DekStanza::new(id(0x02).recipient(), w.clone()).is_err());
        assert!(DekStanza::new(id(0x01).recipient(), w).is_ok());
    }
}
