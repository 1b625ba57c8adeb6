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
//!
//! Backup file, v2: v1 can be written by anyone who knows the recovery Recipient (it is
//! public), so a forged "backup" could install its own institution key on restore. v2 adds
//! the institution's Recipient to the header and its signature to the end entry; a restore
//! names the institution it expects (kept offline with the recovery key) and refuses any
//! other signer.
//!
//! | offset | len   | field                                                           |
//! |--------|-------|-----------------------------------------------------------------|
//! | 0      | 8     | magic = "MGBACKUP"                                              |
//! | 8      | 1     | version = 0x02                                                  |
//! | 9      | 8     | created, Unix milliseconds (u64 BE)                             |
//! | 17     | 4     | chunk size c (u32 BE, 1 to 16 MiB)                              |
//! | 21     | 85    | file key wrapped to the recovery Recipient                      |
//! | 106    | 64    | signer: the institution's Recipient (X25519 pk ‖ Ed25519 pk)    |
//! | 170    | …     | payload: sealed chunks, as in v1                                |
//!
//! The payload key is derived as in v1 from SHA-256(bytes 0..170), so the signer is bound to
//! the payload too. The payload's entries are v1's, except the end entry:
//!
//! | kind | fields                                                             | meaning          |
//! |------|--------------------------------------------------------------------|------------------|
//! | 0x00 | count of the entries before it (u64 BE) ‖ signature (64)           | the end, last    |
//!
//! signature = Ed25519 by the signer, context "medgate/v1/backup" (see
//! [`Identity::sign`]), over SHA-256(header bytes 0..170) ‖ SHA-256(every payload byte
//! before the end entry) ‖ count (u64 BE).

use std::fmt;

use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::chunk::{PayloadKey, TAG_LEN};
use crate::error::{Error, Result};
use crate::identity::{Identity, Recipient, Signature};
use crate::key::{BlobId, DataKey};
use crate::stanza::{wrap_key_with_ephemeral, WrappedKey, WRAPPED_KEY_LEN};

/// The file's first 8 bytes.
pub const MAGIC: &[u8; 8] = b"MGBACKUP";
/// Version byte of the v1 backup file (unsigned).
pub const BACKUP_V1: u8 = 0x01;
/// Version byte of the v2 backup file (signed by the institution).
pub const BACKUP_V2: u8 = 0x02;
/// Length of the v1 header, up to the first sealed chunk.
pub const HEADER_LEN: usize = STANZA_OFFSET + WRAPPED_KEY_LEN;
/// Length of the v2 header: the v1 fields and the signer's Recipient.
pub const HEADER_V2_LEN: usize = HEADER_LEN + SIGNER_LEN;
/// The longest header of any version: what a reader takes in before parsing.
pub const MAX_HEADER_LEN: usize = HEADER_V2_LEN;
/// Signature context of a v2 backup's end entry.
pub const BACKUP_CONTEXT: &str = "medgate/v1/backup";
/// Largest chunk size accepted on read, so a crafted header cannot make a reader allocate
/// without limit.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// Chunk size of new backups (1 MiB).
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;

const VERSION_OFFSET: usize = 8;
const CREATED_OFFSET: usize = VERSION_OFFSET + 1;
const CHUNK_SIZE_OFFSET: usize = CREATED_OFFSET + 8;
const STANZA_OFFSET: usize = CHUNK_SIZE_OFFSET + 4;
const SIGNER_LEN: usize = 64;
const SIG_LEN: usize = 64;

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
    /// v2: the institution that signed the backup; `None` for an unsigned v1 backup.
    pub signer: Option<Recipient>,
}

impl BackupHeader {
    /// The format version: [`BACKUP_V2`] when signed, else [`BACKUP_V1`].
    pub fn version(&self) -> u8 {
        if self.signer.is_some() {
            BACKUP_V2
        } else {
            BACKUP_V1
        }
    }

    /// The header's bytes (module docs), [`HEADER_LEN`] or [`HEADER_V2_LEN`] long.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_V2_LEN);
        out.extend_from_slice(MAGIC);
        out.push(self.version());
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out.extend_from_slice(self.stanza.as_bytes());
        if let Some(signer) = &self.signer {
            out.extend_from_slice(&signer.to_bytes());
        }
        out
    }

    /// How many bytes of the file the header takes.
    pub fn len(&self) -> usize {
        if self.signer.is_some() {
            HEADER_V2_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Always false: a header is never empty (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }

    fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }

    /// Parses the header at the start of `bytes` (which may go on with the payload).
    ///
    /// # Errors
    /// [`Error::Malformed`] for a file that is not a medgate backup, is shorter than a header,
    /// has a chunk size out of range or (v2) a signer that is not a valid Recipient;
    /// [`Error::UnsupportedVersion`] for a version other than 0x01 or 0x02.
    pub fn parse(bytes: &[u8]) -> Result<BackupHeader> {
        let magic = bytes
            .get(..VERSION_OFFSET)
            .ok_or(Error::Malformed("backup: not a medgate backup file"))?;
        if magic != MAGIC {
            return Err(Error::Malformed("backup: not a medgate backup file"));
        }
        let version = *bytes
            .get(VERSION_OFFSET)
            .ok_or(Error::Malformed("backup: truncated header"))?;
        let len = match version {
            BACKUP_V1 => HEADER_LEN,
            BACKUP_V2 => HEADER_V2_LEN,
            other => return Err(Error::UnsupportedVersion(other)),
        };
        let header = bytes
            .get(..len)
            .ok_or(Error::Malformed("backup: truncated header"))?;
        let signer = match header.get(HEADER_LEN..) {
            Some(b) if !b.is_empty() => Some(
                Recipient::from_bytes(b)
                    .map_err(|_| Error::Malformed("backup: the signer is not a Recipient"))?,
            ),
            _ => None,
        };
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
            stanza: WrappedKey::from_bytes(&header[STANZA_OFFSET..HEADER_LEN])?,
            signer,
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
    /// A new unsigned v1 backup to `recipient` with a fresh random file key; returns the
    /// sealer and the header to write first. New backups are signed: see
    /// [`Sealer::new_signed`]; this stays for tests and tools that must write v1.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a chunk size of 0 or above [`MAX_CHUNK_SIZE`];
    /// [`Error::NotContributory`] for a low-order recipient key.
    pub fn new(
        recipient: &Recipient,
        created_ms: u64,
        chunk_size: u32,
    ) -> Result<(Sealer, BackupHeader)> {
        Sealer::with_keys(
            recipient,
            None,
            created_ms,
            chunk_size,
            &DataKey::generate(),
            &StaticSecret::random_from_rng(OsRng),
        )
    }

    /// A new v2 backup to `recipient`, to be signed by `signer` (the institution) at its end
    /// ([`EntryEncoder::finish`]).
    ///
    /// # Errors
    /// As [`Sealer::new`].
    pub fn new_signed(
        recipient: &Recipient,
        signer: &Recipient,
        created_ms: u64,
        chunk_size: u32,
    ) -> Result<(Sealer, BackupHeader)> {
        Sealer::with_keys(
            recipient,
            Some(signer),
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
        signer: Option<&Recipient>,
        created_ms: u64,
        chunk_size: u32,
        file_key: &DataKey,
        ephemeral: &StaticSecret,
    ) -> Result<(Sealer, BackupHeader)> {
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(Error::Malformed("backup: chunk size out of range"));
        }
        let header = BackupHeader {
            created_ms,
            chunk_size,
            stanza: wrap_key_with_ephemeral(recipient, file_key, ephemeral)?,
            signer: signer.cloned(),
        };
        let sealer = Sealer {
            key: header.payload_key(file_key),
            chunk_size,
            next: 0,
            finished: false,
        };
        Ok((sealer, header))
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
    seal_with(sealer, &header, payload)
}

fn seal_with(mut sealer: Sealer, header: &BackupHeader, payload: &[u8]) -> Result<Vec<u8>> {
    let mut out = header.encode();
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
    let body = bytes
        .get(opener.header.len()..)
        .ok_or(Error::Malformed("backup: truncated header"))?;
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

/// What a v2 end entry's signature covers besides the count: the header and the payload
/// before the end entry, each as a SHA-256 digest.
fn signed_message(header_digest: &[u8; 32], payload_digest: &[u8; 32], count: u64) -> Vec<u8> {
    let mut msg = Vec::with_capacity(72);
    msg.extend_from_slice(header_digest);
    msg.extend_from_slice(payload_digest);
    msg.extend_from_slice(&count.to_be_bytes());
    msg
}

/// The signing state of a v2 payload, on either side.
#[derive(Clone)]
struct SignedPayload {
    header_digest: [u8; 32],
    signer: Recipient,
    /// Every payload byte before the end entry.
    hasher: Sha256,
}

impl SignedPayload {
    fn for_header(header: &BackupHeader) -> Option<SignedPayload> {
        header.signer.clone().map(|signer| SignedPayload {
            header_digest: header.digest(),
            signer,
            hasher: Sha256::new(),
        })
    }

    fn message(&self, count: u64) -> Vec<u8> {
        let payload: [u8; 32] = self.hasher.clone().finalize().into();
        signed_message(&self.header_digest, &payload, count)
    }
}

/// Encodes a payload's entries for the header's version, and writes its end entry: signed
/// by the institution in v2.
pub struct EntryEncoder {
    signed: Option<SignedPayload>,
    count: u64,
}

impl fmt::Debug for EntryEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntryEncoder")
            .field("signed", &self.signed.is_some())
            .field("count", &self.count)
            .finish()
    }
}

impl EntryEncoder {
    /// An encoder for the payload of the backup with this header.
    pub fn new(header: &BackupHeader) -> EntryEncoder {
        EntryEncoder {
            signed: SignedPayload::for_header(header),
            count: 0,
        }
    }

    /// Appends `entry` (any kind but the end) to `out`.
    ///
    /// # Errors
    /// As [`Entry::encode_into`]; [`Error::Malformed`] for an end entry (see
    /// [`EntryEncoder::finish`]).
    pub fn encode(&mut self, entry: &Entry, out: &mut Vec<u8>) -> Result<()> {
        if matches!(entry, Entry::End(_)) {
            return Err(Error::Malformed("backup: the end entry comes from finish"));
        }
        let start = out.len();
        entry.encode_into(out)?;
        if let Some(s) = &mut self.signed {
            s.hasher.update(&out[start..]);
        }
        self.count += 1;
        Ok(())
    }

    /// Appends the end entry; for a v2 backup signed with `signer`, which must be the
    /// identity the header names. Returns the entry count.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a v2 backup without the header's signer.
    pub fn finish(self, signer: Option<&Identity>, out: &mut Vec<u8>) -> Result<u64> {
        Entry::End(self.count).encode_into(out)?;
        if let Some(s) = &self.signed {
            let id = signer
                .filter(|id| id.recipient() == s.signer)
                .ok_or(Error::Malformed(
                    "backup: not signed by the identity the header names",
                ))?;
            out.extend_from_slice(&id.sign(BACKUP_CONTEXT, &s.message(self.count)).to_bytes());
        }
        Ok(self.count)
    }
}

/// Decodes entries from payload bytes fed in pieces (as chunks are opened), and checks a v2
/// payload's signature at its end entry.
#[derive(Default)]
pub struct EntryDecoder {
    buf: Zeroizing<Vec<u8>>,
    pos: usize,
    count: u64,
    ended: bool,
    signed: Option<SignedPayload>,
}

impl EntryDecoder {
    /// A decoder of a v1 payload with nothing fed yet.
    pub fn new() -> EntryDecoder {
        EntryDecoder::default()
    }

    /// A decoder of the payload of the backup with this header: a v2 payload's end entry
    /// carries the signer's signature, which [`EntryDecoder::next_entry`] checks.
    pub fn for_header(header: &BackupHeader) -> EntryDecoder {
        EntryDecoder {
            signed: SignedPayload::for_header(header),
            ..EntryDecoder::default()
        }
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
    /// after the end entry, or an end entry whose count is wrong; [`Error::BadSignature`]
    /// for a v2 end entry whose signature is not the header's signer's over this payload.
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
                let len = match &self.signed {
                    None => 9,
                    Some(signed) => {
                        let Some(sig) = self.take(p + 9, SIG_LEN) else {
                            return Ok(None);
                        };
                        let sig = Signature::from_bytes(sig)?;
                        signed
                            .signer
                            .verify(BACKUP_CONTEXT, &signed.message(n), &sig)?;
                        9 + SIG_LEN
                    }
                };
                self.ended = true;
                (Entry::End(n), len)
            }
            _ => return Err(Error::Malformed("backup entry: unknown kind")),
        };
        if !matches!(entry, Entry::End(_)) {
            if let (Some(signed), Some(bytes)) = (&mut self.signed, self.buf.get(p..p + len)) {
                signed.hasher.update(bytes);
            }
            self.count += 1;
        }
        self.pos += len;
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
pub(crate) mod tests;

#[cfg(test)]
pub(crate) mod backup_vectors;
