//! medgate's pure cryptography and binary formats.
//!
//! Values in, values out: this crate does no I/O, spawns nothing and knows nothing about S3. The
//! gateway calls it on buffers. Every format here is versioned, described by a byte table on the
//! type that encodes it, and pinned by the vectors under `testdata/`.
//!
//! Modules, bottom up:
//! - [`error`]: the crate's one error type; oracle-prone failures are opaque.
//! - `hex`: minimal lowercase hex for ids (private).
//! - `wire`: the one byte codec: length-prefixed writers, the strict `Reader`, the `Wire`
//!   trait with `encode`/`decode`/text forms, base64url (private; used by the formats below).
//! - [`key`]: data keys (DEKs) and the random ids of blobs and DEKs.
//! - [`identity`]: X25519 + Ed25519 identities and their public [`Recipient`]s.
//! - [`stanza`]: a DEK wrapped to one recipient.
//! - [`chunk`]: STREAM sealing of a blob's chunks and the chunk layout arithmetic.
//! - [`merkle`]: RFC 6962 hashing of sealed chunks, roots, inclusion and consistency proofs.
//! - [`tiles`]: the transparency log's tree as C2SP tlog-tiles, and roots from tiles.
//! - [`checkpoint`]: signed notes, log checkpoints and witness cosignatures (C2SP formats).
//! - [`logentry`]: transparency log entries and their salted commitments.
//! - [`vault`]: sealing small secrets under a key derived from an identity.
//! - [`idfile`]: the text form of an identity file, optionally passphrase-sealed.
//! - [`manifest`]: the per-object manifest kept in the private store.
//! - [`dek_record`]: the private store's record of a data key: its stanzas and their Recipients.
//! - [`consent`]: share requests, grants, denials, revocations, patient and peer
//!   authentication, key registration (one file a concept under `consent/`).
//! - [`patient_index`]: the per-patient index published sealed to the patient.
//! - [`backup`]: the backup file, encrypted to an offline recovery Recipient.
//! - [`peer`]: signed answers between institutions' gateways and chunks with their proofs.
//! - [`rollover`]: an institution's signed handover from its old identity to a new one.
//! - `fuzzing` (only under `--cfg fuzzing`): entry points for `fuzz/` to private decoders.
//!
//! Tests only: `testkit` (fixed identities, samples and the one reader/writer of vector
//! files) and `vectors` (the one generator of every file under `testdata/`, and the checks of
//! the formats that have no vector tests of their own). A large module keeps its tests in
//! sibling files (`backup/tests.rs`, ...).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backup;
pub mod checkpoint;
pub mod chunk;
pub mod consent;
pub mod dek_record;
pub mod error;
#[cfg(fuzzing)]
pub mod fuzzing;
mod hex;
pub mod identity;
pub mod idfile;
pub mod key;
pub mod logentry;
pub mod manifest;
pub mod merkle;
pub mod patient_index;
pub mod peer;
pub mod rollover;
pub mod stanza;
pub mod tiles;
pub mod vault;
mod wire;

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod vectors;

pub use checkpoint::{Checkpoint, NoteSignature, NoteVerifier, SignatureType, SignedNote};
pub use chunk::{Layout, PayloadKey, DEFAULT_CHUNK_SIZE, TAG_LEN};
pub use consent::{
    AuthChallenge, AuthToken, Denial, Grant, KeyChange, PeerAuth, Records, Revocation, Scope,
    ShareRequest, SignedAuth, SignedDenial, SignedGrant, SignedKeyChange, SignedPeerAuth,
    SignedRequest, SignedRevocation,
};
pub use error::{Error, Result};
pub use identity::{Identity, Recipient, Signature};
pub use key::{BlobId, DataKey, DekId};
pub use manifest::{Manifest, Part, SUITE_V1};
pub use merkle::{
    leaf_hash, node_hash, root, ConsistencyProof, Hash, InclusionProof, LeafFn, LeafSource,
    RootBuilder,
};
pub use patient_index::{IndexRecord, PatientIndex};
pub use peer::{
    AnswerBody, ChunkAnswer, ListedObject, PeerAnswer, RequestStatus, SignedPeerAnswer,
};
pub use rollover::{Rollover, SignedRollover};
pub use stanza::{BatchWrapper, WrappedKey};
pub use tiles::{root_from_tiles, tile_path, tiles_for, tiles_for_append, TileId};
pub use vault::VaultKey;
