//! The backup file: a copy of the private store and the institution identity file,
//! encrypted to an offline recovery [`Recipient`] that ops keep apart from the data dir.
//!
//! The file reuses the record formats: a random file key wrapped to the recovery Recipient in
//! a v1 stanza ([`crate::stanza`]), and the payload sealed in STREAM chunks under a key derived
//! from it ([`crate::chunk`]), so truncation, reordering and tampering fail to open. The header
//! is bound to the payload key: changing any header byte changes the key, and the first chunk
//! no longer opens.
//!
//! Backup file, v1:
//!
//! | offset | len   | field                                                           |
//! |--------|-------|-----------------------------------------------------------------|
//! | 0      | 8     | magic = "MGBACKUP"                                              |
//! | 8      | 1     | version = 0x01                                                  |
//! | 9      | 8     | created, Unix milliseconds (u64 BE)                             |
//! | 17     | 4     | chunk size c: plaintext bytes per chunk (u32 BE, 1 to 16 MiB)   |
//! | 21     | 85    | file key (32 random bytes) wrapped to the recovery Recipient    |
//! | 106    | …     | payload: sealed chunks of c + 16 bytes, the last 16 to c + 16   |
//!
//! payload key = HKDF-SHA256(ikm = file key, salt = SHA-256(bytes 0..106)\[0..16\],
//! info = "medgate/v1/payload") (that is [`PayloadKey::derive`] with the header hash as the
//! blob id); chunk i is sealed with nonce = i (88-bit BE) ‖ last flag. An empty payload is
//! one empty final chunk.
//!
//! The payload plaintext is a sequence of [`Entry`]s:
//!
//! | kind | fields                                                             | meaning          |
//! |------|--------------------------------------------------------------------|------------------|
//! | 0x01 | name (u16 BE len ‖ UTF-8) ‖ contents (u32 BE len ‖ bytes)          | a file           |
//! | 0x02 | name (u16 BE len ‖ bytes)                                          | a tree starts    |
//! | 0x03 | key (u32 BE len ‖ bytes) ‖ value (u32 BE len ‖ bytes)              | a record of it   |
//! | 0x00 | count of the entries before it (u64 BE)                            | the end, last    |
//!
//! The end entry makes a payload cut at an entry boundary detectable even before the STREAM
//! flag is checked, and nothing may follow it.

use std::fmt;

use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::chunk::{PayloadKey, TAG_LEN};
use crate::error::{Error, Result};
use crate::identity::{Identity, Recipient};
use crate::key::{BlobId, DataKey};
use crate::stanza::{wrap_key_with_ephemeral, WrappedKey, WRAPPED_KEY_LEN};

/// The file's first 8 bytes.
pub const MAGIC: &[u8; 8] = b"MGBACKUP";
/// Version byte of the v1 backup file.
pub const BACKUP_V1: u8 = 0x01;
/// Length of the v1 header, up to the first sealed chunk.
pub const HEADER_LEN: usize = STANZA_OFFSET + WRAPPED_KEY_LEN;
/// Largest chunk size accepted on read, so a crafted header cannot make a reader allocate
/// without limit.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// Chunk size of new backups (1 MiB).
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;

const VERSION_OFFSET: usize = 8;
const CREATED_OFFSET: usize = VERSION_OFFSET + 1;
const CHUNK_SIZE_OFFSET: usize = CREATED_OFFSET + 8;
const STANZA_OFFSET: usize = CHUNK_SIZE_OFFSET + 4;

const ENTRY_END: u8 = 0x00;
const ENTRY_FILE: u8 = 0x01;
const ENTRY_TREE: u8 = 0x02;
const ENTRY_RECORD: u8 = 0x03;

/// The clear header of a backup file (see the module docs for its bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupHeader {
    /// When the snapshot was taken, Unix milliseconds.
    pub created_ms: u64,
    /// Plaintext bytes per sealed chunk.
    pub chunk_size: u32,
    /// The file key wrapped to the recovery Recipient.
    pub stanza: WrappedKey,
}

impl BackupHeader {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..VERSION_OFFSET].copy_from_slice(MAGIC);
        out[VERSION_OFFSET] = BACKUP_V1;
        out[CREATED_OFFSET..CHUNK_SIZE_OFFSET].copy_from_slice(&self.created_ms.to_be_bytes());
        out[CHUNK_SIZE_OFFSET..STANZA_OFFSET].copy_from_slice(&self.chunk_size.to_be_bytes());
        out[STANZA_OFFSET..].copy_from_slice(self.stanza.as_bytes());
        out
    }

    /// Parses the header at the start of `bytes` (which may go on with the payload).
    ///
    /// # Errors
    /// [`Error::Malformed`] for a file that is not a medgate backup, is shorter than a header
    /// or has a chunk size out of range; [`Error::UnsupportedVersion`] for a version other
    /// than 0x01.
    pub fn parse(bytes: &[u8]) -> Result<BackupHeader> {
        let magic = bytes
            .get(..VERSION_OFFSET)
            .ok_or(Error::Malformed("backup: not a medgate backup file"))?;
        if magic != MAGIC {
            return Err(Error::Malformed("backup: not a medgate backup file"));
        }
        let header = bytes
            .get(..HEADER_LEN)
            .ok_or(Error::Malformed("backup: truncated header"))?;
        if header[VERSION_OFFSET] != BACKUP_V1 {
            return Err(Error::UnsupportedVersion(header[VERSION_OFFSET]));
        }
        let mut created = [0u8; 8];
        created.copy_from_slice(&header[CREATED_OFFSET..CHUNK_SIZE_OFFSET]);
        let mut cs = [0u8; 4];
        cs.copy_from_slice(&header[CHUNK_SIZE_OFFSET..STANZA_OFFSET]);
        let chunk_size = u32::from_be_bytes(cs);
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(Error::Malformed("backup: chunk size out of range"));
        }
        Ok(BackupHeader {
            created_ms: u64::from_be_bytes(created),
            chunk_size,
            stanza: WrappedKey::from_bytes(&header[STANZA_OFFSET..])?,
        })
    }

    /// Length of every sealed chunk but the last: chunk size + [`TAG_LEN`].
    pub fn sealed_chunk_len(&self) -> usize {
        self.chunk_size as usize + TAG_LEN
    }

    fn payload_key(&self, file_key: &DataKey) -> PayloadKey {
        let digest = Sha256::digest(self.encode());
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&digest[..16]);
        PayloadKey::derive(file_key, &BlobId(salt))
    }
}

/// Seals a backup's payload chunk by chunk. Wipes its key on drop.
pub struct Sealer {
    key: PayloadKey,
    chunk_size: u32,
    next: u64,
    finished: bool,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("chunk_size", &self.chunk_size)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A new backup to `recipient` with a fresh random file key; returns the sealer and the
    /// header to write first.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a chunk size of 0 or above [`MAX_CHUNK_SIZE`];
    /// [`Error::NotContributory`] for a low-order recipient key.
    pub fn new(
        recipient: &Recipient,
        created_ms: u64,
        chunk_size: u32,
    ) -> Result<(Sealer, [u8; HEADER_LEN])> {
        Sealer::with_keys(
            recipient,
            created_ms,
            chunk_size,
            &DataKey::generate(),
            &StaticSecret::random_from_rng(OsRng),
        )
    }

    /// [`Sealer::new`] with the file key and ephemeral secret given.
    ///
    /// # Security
    /// Both must be fresh random outside of test vectors.
    pub(crate) fn with_keys(
        recipient: &Recipient,
        created_ms: u64,
        chunk_size: u32,
        file_key: &DataKey,
        ephemeral: &StaticSecret,
    ) -> Result<(Sealer, [u8; HEADER_LEN])> {
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(Error::Malformed("backup: chunk size out of range"));
        }
        let header = BackupHeader {
            created_ms,
            chunk_size,
            stanza: wrap_key_with_ephemeral(recipient, file_key, ephemeral)?,
        };
        let sealer = Sealer {
            key: header.payload_key(file_key),
            chunk_size,
            next: 0,
            finished: false,
        };
        Ok((sealer, header.encode()))
    }

    /// Plaintext bytes per chunk: every chunk but the last must be exactly this long.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size as usize
    }

    /// Seals the next chunk. The last one (which may be shorter, even empty) must say so.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a non-final chunk of the wrong length, a final chunk longer
    /// than the chunk size, or any chunk after the final one.
    pub fn seal(&mut self, chunk: &[u8], last: bool) -> Result<Vec<u8>> {
        if self.finished {
            return Err(Error::Malformed("backup: chunk after the final one"));
        }
        let ok = if last {
            chunk.len() <= self.chunk_size()
        } else {
            chunk.len() == self.chunk_size()
        };
        if !ok {
            return Err(Error::Malformed("backup: chunk of the wrong length"));
        }
        let sealed = self.key.seal(self.next, last, chunk)?;
        self.next += 1;
        self.finished = last;
        Ok(sealed)
    }
}

/// Opens a backup's payload chunk by chunk. Wipes its key on drop.
pub struct Opener {
    key: PayloadKey,
    header: BackupHeader,
    next: u64,
    finished: bool,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("header", &self.header)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// Parses the header at the start of `bytes` and unwraps the file key with `identity`.
    ///
    /// # Errors
    /// As [`BackupHeader::parse`]; [`Error::NotForThisIdentity`] when the file key was wrapped
    /// to another Recipient; [`Error::Decrypt`] when the stanza is damaged.
    pub fn new(bytes: &[u8], identity: &Identity) -> Result<Opener> {
        let header = BackupHeader::parse(bytes)?;
        let file_key = match identity.unwrap_key(&header.stanza) {
            None => return Err(Error::NotForThisIdentity),
            Some(r) => r?,
        };
        Ok(Opener {
            key: header.payload_key(&file_key),
            header,
            next: 0,
            finished: false,
        })
    }

    /// The header the opener was made from.
    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    /// Opens the next sealed chunk; the caller says whether it is the last in the file.
    ///
    /// # Errors
    /// [`Error::Decrypt`] for a chunk that does not authenticate at this position with this
    /// flag (tampered, reordered, or the file cut short so that a middle chunk is the last);
    /// [`Error::Malformed`] for a chunk after the final one or longer than a sealed chunk.
    pub fn open(&mut self, sealed: &[u8], last: bool) -> Result<Zeroizing<Vec<u8>>> {
        if self.finished {
            return Err(Error::Malformed("backup: data after the final chunk"));
        }
        if sealed.len() > self.header.sealed_chunk_len() {
            return Err(Error::Malformed("backup: chunk too long"));
        }
        let plain = Zeroizing::new(self.key.open(self.next, last, sealed)?);
        self.next += 1;
        self.finished = last;
        Ok(plain)
    }

    /// Checks that the final chunk was opened.
    ///
    /// # Errors
    /// [`Error::Malformed`] ("backup: truncated") if it was not.
    pub fn finish(&self) -> Result<()> {
        if self.finished {
            Ok(())
        } else {
            Err(Error::Malformed("backup: truncated"))
        }
    }
}

/// Seals a whole payload held in memory: the header and every chunk, concatenated.
///
/// # Errors
/// As [`Sealer::new`].
pub fn seal(
    recipient: &Recipient,
    created_ms: u64,
    chunk_size: u32,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let (sealer, header) = Sealer::new(recipient, created_ms, chunk_size)?;
    seal_with(sealer, header, payload)
}

fn seal_with(mut sealer: Sealer, header: [u8; HEADER_LEN], payload: &[u8]) -> Result<Vec<u8>> {
    let mut out = header.to_vec();
    let mut chunks = payload.chunks(sealer.chunk_size()).peekable();
    if chunks.peek().is_none() {
        out.extend(sealer.seal(&[], true)?);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        // A payload that fills its last chunk exactly still ends with that chunk as final.
        out.extend(sealer.seal(chunk, last)?);
    }
    Ok(out)
}

/// Opens a whole backup file held in memory: its header and payload.
///
/// # Errors
/// As [`Opener::new`] and [`Opener::open`]; a file cut anywhere fails.
pub fn open(bytes: &[u8], identity: &Identity) -> Result<(BackupHeader, Zeroizing<Vec<u8>>)> {
    let mut opener = Opener::new(bytes, identity)?;
    let body = &bytes[HEADER_LEN..];
    let size = opener.header.sealed_chunk_len();
    let mut out = Zeroizing::new(Vec::with_capacity(body.len()));
    // Every chunk is full-size but the last, which is the (possibly empty) remainder.
    let count = body.len().div_ceil(size).max(1);
    for i in 0..count {
        let start = i * size;
        let end = (start + size).min(body.len());
        out.extend_from_slice(&opener.open(&body[start..end], i + 1 == count)?);
    }
    opener.finish()?;
    Ok((opener.header.clone(), out))
}

/// One item of the payload (see the module docs for the encoding).
#[derive(Clone, PartialEq, Eq)]
pub enum Entry {
    /// A file of the data dir (the institution identity file), by name.
    File {
        /// Its name, e.g. `institution.key`.
        name: String,
        /// Its bytes.
        contents: Zeroizing<Vec<u8>>,
    },
    /// The records that follow belong to this tree of the private store.
    Tree(Vec<u8>),
    /// One record of the current tree.
    Record {
        /// The record's key.
        key: Vec<u8>,
        /// The record's value.
        value: Vec<u8>,
    },
    /// The end: how many entries came before it.
    End(u64),
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::File { name, contents } => f
                .debug_struct("File")
                .field("name", name)
                .field("len", &contents.len())
                .finish_non_exhaustive(),
            Entry::Tree(name) => f
                .debug_tuple("Tree")
                .field(&String::from_utf8_lossy(name))
                .finish(),
            Entry::Record { key, value } => f
                .debug_struct("Record")
                .field("key_len", &key.len())
                .field("value_len", &value.len())
                .finish(),
            Entry::End(n) => f.debug_tuple("End").field(n).finish(),
        }
    }
}

impl Entry {
    /// Appends the encoded entry to `out`.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a name longer than 65535 bytes or contents, keys or values
    /// of 4 GiB or more.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        fn len16(n: usize) -> Result<[u8; 2]> {
            u16::try_from(n)
                .map(u16::to_be_bytes)
                .map_err(|_| Error::Malformed("backup entry: name too long"))
        }
        fn len32(n: usize) -> Result<[u8; 4]> {
            u32::try_from(n)
                .map(u32::to_be_bytes)
                .map_err(|_| Error::Malformed("backup entry: too large"))
        }
        match self {
            Entry::File { name, contents } => {
                out.push(ENTRY_FILE);
                out.extend_from_slice(&len16(name.len())?);
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&len32(contents.len())?);
                out.extend_from_slice(contents);
            }
            Entry::Tree(name) => {
                out.push(ENTRY_TREE);
                out.extend_from_slice(&len16(name.len())?);
                out.extend_from_slice(name);
            }
            Entry::Record { key, value } => {
                out.push(ENTRY_RECORD);
                out.extend_from_slice(&len32(key.len())?);
                out.extend_from_slice(key);
                out.extend_from_slice(&len32(value.len())?);
                out.extend_from_slice(value);
            }
            Entry::End(n) => {
                out.push(ENTRY_END);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        Ok(())
    }
}

/// Decodes entries from payload bytes fed in pieces (as chunks are opened).
#[derive(Default)]
pub struct EntryDecoder {
    buf: Zeroizing<Vec<u8>>,
    pos: usize,
    count: u64,
    ended: bool,
}

impl EntryDecoder {
    /// A decoder with nothing fed yet.
    pub fn new() -> EntryDecoder {
        EntryDecoder::default()
    }

    /// Adds the next payload bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn take(&self, at: usize, n: usize) -> Option<&[u8]> {
        self.buf.get(at..at.checked_add(n)?)
    }

    fn u16_at(&self, at: usize) -> Option<usize> {
        let b = self.take(at, 2)?;
        Some(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u32_at(&self, at: usize) -> Option<usize> {
        let b = self.take(at, 4)?;
        usize::try_from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok()
    }

    /// The next complete entry, or `None` until more bytes are pushed.
    ///
    /// # Errors
    /// [`Error::Malformed`] for an unknown kind, a file name that is not UTF-8, anything
    /// after the end entry, or an end entry whose count is wrong.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        let p = self.pos;
        let Some(&kind) = self.buf.get(p) else {
            return Ok(None);
        };
        if self.ended {
            return Err(Error::Malformed("backup: data after the end entry"));
        }
        let (entry, len) = match kind {
            ENTRY_FILE => {
                let Some(n) = self.u16_at(p + 1) else {
                    return Ok(None);
                };
                let Some(c) = self.u32_at(p + 3 + n) else {
                    return Ok(None);
                };
                let (Some(name), Some(contents)) = (self.take(p + 3, n), self.take(p + 7 + n, c))
                else {
                    return Ok(None);
                };
                let name = std::str::from_utf8(name)
                    .map_err(|_| Error::Malformed("backup entry: file name is not UTF-8"))?
                    .to_string();
                let contents = Zeroizing::new(contents.to_vec());
                (Entry::File { name, contents }, 7 + n + c)
            }
            ENTRY_TREE => {
                let Some(n) = self.u16_at(p + 1) else {
                    return Ok(None);
                };
                let Some(name) = self.take(p + 3, n) else {
                    return Ok(None);
                };
                (Entry::Tree(name.to_vec()), 3 + n)
            }
            ENTRY_RECORD => {
                let Some(k) = self.u32_at(p + 1) else {
                    return Ok(None);
                };
                let Some(v) = self.u32_at(p + 5 + k) else {
                    return Ok(None);
                };
                let (Some(key), Some(value)) = (self.take(p + 5, k), self.take(p + 9 + k, v))
                else {
                    return Ok(None);
                };
                (
                    Entry::Record {
                        key: key.to_vec(),
                        value: value.to_vec(),
                    },
                    9 + k + v,
                )
            }
            ENTRY_END => {
                let Some(b) = self.take(p + 1, 8) else {
                    return Ok(None);
                };
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                let n = u64::from_be_bytes(n);
                if n != self.count {
                    return Err(Error::Malformed("backup: entry count does not match"));
                }
                self.ended = true;
                (Entry::End(n), 9)
            }
            _ => return Err(Error::Malformed("backup entry: unknown kind")),
        };
        self.pos += len;
        if !matches!(entry, Entry::End(_)) {
            self.count += 1;
        }
        Ok(Some(entry))
    }

    /// Checks that the end entry was read and nothing is left over; returns the entry count.
    ///
    /// # Errors
    /// [`Error::Malformed`] ("backup: truncated") otherwise.
    pub fn finish(&self) -> Result<u64> {
        if self.ended && self.pos == self.buf.len() {
            Ok(self.count)
        } else {
            Err(Error::Malformed("backup: truncated"))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
        let mut v2 = file.clone();
        v2[VERSION_OFFSET] = 2;
        assert_eq!(open(&v2, &id).unwrap_err(), Error::UnsupportedVersion(2));
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
}

/// The `testdata/backup_*.txt` vectors: a deterministic generator (run explicitly with
/// `cargo test -p medgate-keyring -- --ignored generate_backup_vectors`) and the check that
/// every file opens (or fails) as its header says. `ok` files are re-sealed with the header's
/// file key and ephemeral secret and must reproduce byte for byte.
#[cfg(test)]
mod backup_vectors {
    use super::tests::{encode, sample_entries};
    use super::*;
    use crate::consent::testkit::{self, write, Parsed, Vector};

    const FILE_KEY: [u8; 32] = [0x5a; 32];
    const EPHEMERAL: [u8; 32] = [0x42; 32];
    const CREATED_MS: u64 = 1_700_000_000_000;
    const CHUNK: u32 = 64;

    fn h(b: impl AsRef<[u8]>) -> String {
        ::hex::encode(b)
    }

    fn sealed(payload: &[u8]) -> Vec<u8> {
        let (sealer, header) = Sealer::with_keys(
            &testkit::institution().recipient(),
            CREATED_MS,
            CHUNK,
            &DataKey::from_bytes(FILE_KEY),
            &StaticSecret::from(EPHEMERAL),
        )
        .expect("seal");
        seal_with(sealer, header, payload).expect("seal")
    }

    fn outcome<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(Error::NotForThisIdentity) => "not-for-this-identity".into(),
            Err(e) => testkit::outcome::<()>(Err(e)),
        }
    }

    #[test]
    #[ignore = "writes testdata/; run explicitly, only when adding vectors"]
    fn generate_backup_vectors() {
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
            body,
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
        let mut v2 = ok;
        v2[VERSION_OFFSET] = 0x02;
        write(
            "backup_bad_version",
            case("Version byte 0x02.", "unsupported-version", &inst, v2),
        );
    }

    fn check(v: &Parsed) -> String {
        let id = v.identity("recovery-identity");
        let r = open(&v.body, &id);
        if let Ok((header, plain)) = &r {
            assert_eq!(header.created_ms, CREATED_MS, "{}", v.name);
            assert_eq!(header.chunk_size, CHUNK, "{}", v.name);
            assert_eq!(plain.to_vec(), v.hex("payload"), "{}", v.name);
            let (sealer, head) = Sealer::with_keys(
                &id.recipient(),
                header.created_ms,
                header.chunk_size,
                &DataKey::from_bytes(v.array("file-key")),
                &StaticSecret::from(v.array::<32>("ephemeral")),
            )
            .expect("seal");
            assert_eq!(
                seal_with(sealer, head, plain).expect("seal"),
                v.body,
                "re-seal must reproduce the backup"
            );
            let mut d = EntryDecoder::new();
            d.push(plain);
            let mut entries = Vec::new();
            while let Some(e) = d.next_entry().expect("entries") {
                entries.push(e);
            }
            d.finish().expect("complete");
            assert_eq!(entries, sample_entries());
        }
        outcome(r)
    }

    #[test]
    fn backup_vectors() {
        let all = testkit::read_all("backup_");
        assert!(
            all.len() >= 6,
            "expected the checked-in vectors, found {}",
            all.len()
        );
        for v in &all {
            assert_eq!(check(v), v.expect, "vector {}", v.name);
        }
    }
}
