//! What one institution's gateway answers another (the peer boundary): signed answers
//! ([`SignedPeerAnswer`]) and chunks with their inclusion proofs ([`ChunkAnswer`]).
//!
//! Gateway B asks gateway A with a [`crate::SignedPeerAuth`] carrying a fresh nonce. A answers
//! with a [`PeerAnswer`] that binds that nonce, B's Recipient, the grant, the record and what A
//! says about it (a request's state, a listing, or a record's manifest and B's stanza), signed
//! by A's Ed25519 key under a context string per kind. B checks the signature against A's
//! *configured* Recipient, the nonce against the one it sent and the caller against itself
//! before it uses anything in the answer, so whoever answers at A's URL without A's key (a
//! hijacked DNS name, a rogue proxy) cannot make B serve a record as A's, and a recorded answer
//! cannot be replayed for another request. Each chunk then comes as a [`ChunkAnswer`]: its leaf
//! and an inclusion proof to the signed manifest's root, checked before the chunk is opened.
//!
//! Encoding conventions are those of [`crate::consent`]: a version byte, big-endian integers,
//! `str` = u32 length ‖ UTF-8, strict decoding (no trailing bytes, no truncation).

use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::identity::{Identity, Recipient, Signature};
use crate::merkle::{leaf_hash, Hash, InclusionProof};
use crate::wire::{names, put_bytes, put_str, wire_methods, Names, Reader, Wire};

/// Version byte of the v1 peer formats.
pub const PEER_V1: u8 = 0x01;

/// Signature context of a [`PeerAnswer`] about a share request ([`AnswerBody::Request`]).
pub const REQUEST_ANSWER_CONTEXT: &str = "medgate/v1/request-answer";
/// Signature context of a [`PeerAnswer`] listing a grant's records ([`AnswerBody::Objects`]).
pub const OBJECTS_ANSWER_CONTEXT: &str = "medgate/v1/objects-answer";
/// Signature context of a [`PeerAnswer`] opening a read session ([`AnswerBody::Exchange`]).
pub const EXCHANGE_ANSWER_CONTEXT: &str = "medgate/v1/exchange-answer";

/// Most records one listing answer may hold.
pub const MAX_LISTED_OBJECTS: usize = 100_000;
/// Longest id (grant, request), version id or ETag in an answer, in bytes.
pub const MAX_ID_LEN: usize = 1024;
/// Longest bucket name in an answer, in bytes.
pub const MAX_BUCKET_LEN: usize = crate::consent::MAX_BUCKET_LEN;
/// Longest object key in an answer, in bytes.
pub const MAX_KEY_LEN: usize = crate::consent::MAX_KEY_LEN;
/// Longest manifest in an exchange answer, in bytes (a manifest of ~270 000 parts).
pub const MAX_MANIFEST_LEN: usize = 16 << 20;
/// Smallest chunk size a peer's manifest may claim (the smallest a gateway writes).
pub const MIN_PEER_CHUNK_SIZE: u32 = 1024;
/// Largest chunk size a peer's manifest may claim (the most a blob call returns).
pub const MAX_PEER_CHUNK_SIZE: u32 = 64 << 20;

const KIND_REQUEST: u8 = 0x01;
const KIND_OBJECTS: u8 = 0x02;
const KIND_EXCHANGE: u8 = 0x03;

/// A share request's state as its owner reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestStatus {
    /// Waiting for the patient.
    Pending,
    /// Approved, and the grant (the answer's grant id) is in force.
    Approved,
    /// Refused by the patient.
    Denied,
    /// Approved, and the grant has since been revoked.
    Revoked,
    /// Approved, and the grant has expired.
    Expired,
}

impl RequestStatus {
    fn byte(self) -> u8 {
        match self {
            RequestStatus::Pending => 0x00,
            RequestStatus::Approved => 0x01,
            RequestStatus::Denied => 0x02,
            RequestStatus::Revoked => 0x03,
            RequestStatus::Expired => 0x04,
        }
    }

    /// `pending`, `approved`, `denied`, `revoked` or `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Denied => "denied",
            RequestStatus::Revoked => "revoked",
            RequestStatus::Expired => "expired",
        }
    }

    /// Whether the request was approved, so a grant id goes with it.
    pub fn has_grant(self) -> bool {
        matches!(
            self,
            RequestStatus::Approved | RequestStatus::Revoked | RequestStatus::Expired
        )
    }
}

/// One record a grant covers, as listed to its recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    /// The owner's bucket.
    pub bucket: String,
    /// The owner's key.
    pub key: String,
    /// Plaintext size.
    pub size: u64,
    /// ETag, quotes included.
    pub etag: String,
    /// Unix milliseconds.
    pub last_modified_ms: u64,
}

/// What an answer says, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerBody {
    /// Kind 0x01: the state of share request `request_id` (its grant, once approved, is the
    /// answer's `grant`).
    Request {
        /// The request's id at the owner.
        request_id: String,
        /// Its state.
        status: RequestStatus,
    },
    /// Kind 0x02: the records the answer's grant covers.
    Objects(Vec<ListedObject>),
    /// Kind 0x03: a read session of the answer's `bucket`/`key`: its manifest (v1 encoding) and
    /// the caller's stanza.
    Exchange {
        /// [`crate::Manifest::encode`] of the record.
        manifest: Vec<u8>,
        /// [`crate::WrappedKey::to_bytes`] of the caller's stanza.
        stanza: Vec<u8>,
    },
}

/// An owning gateway's answer to one signed peer request.
///
/// PeerAnswer, v1:
///
/// | offset | len   | field                                                                |
/// |--------|-------|----------------------------------------------------------------------|
/// | 0      | 1     | version = 0x01                                                       |
/// | 1      | 1     | kind: 0x01 request state, 0x02 object listing, 0x03 exchange         |
/// | 2      | 16    | nonce: the one in the caller's `PeerAuth` this answers               |
/// | 18     | 64    | caller: X25519 pk ‖ Ed25519 pk of the institution answered           |
/// | 82     | 4 + n | grant id (`str`, ≤ 1024; empty while a request is pending or denied) |
/// | …      | 4 + n | bucket (`str`, ≤ 255; empty unless kind 0x03)                        |
/// | …      | 4 + n | key (`str`, ≤ 1024; empty unless kind 0x03)                          |
/// | …      | 4 + n | version id (`str`, ≤ 1024; empty until versions exist)               |
/// | …      | …     | body, by kind (below)                                                |
///
/// Body of kind 0x01: request id (`str`, 1..=1024) ‖ state (u8: 0x00 pending, 0x01 approved
/// and the grant in force, 0x02 denied, 0x03 approved and the grant revoked since, 0x04
/// approved and the grant expired). A grant id is present exactly in states 0x01, 0x03, 0x04.
///
/// Body of kind 0x02: count (u32, ≤ 100 000) ‖ count × (bucket `str` ‖ key `str` ‖ size u64 ‖
/// etag `str` ‖ last_modified_ms u64).
///
/// Body of kind 0x03: manifest (u32 length ‖ bytes, ≤ 16 MiB) ‖ stanza (u32 length ‖ bytes).
///
/// Signed as a [`SignedPeerAnswer`] by the owner's Ed25519 key with the context of its kind
/// ([`REQUEST_ANSWER_CONTEXT`], [`OBJECTS_ANSWER_CONTEXT`], [`EXCHANGE_ANSWER_CONTEXT`]);
/// nothing may follow the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAnswer {
    /// The nonce of the request this answers.
    pub nonce: [u8; 16],
    /// Who asked.
    pub caller: Recipient,
    /// The grant the answer is about.
    pub grant: String,
    /// The owner's bucket (exchange only).
    pub bucket: String,
    /// The owner's key (exchange only).
    pub key: String,
    /// The record version (empty until versions exist).
    pub version_id: String,
    /// What the owner says.
    pub body: AnswerBody,
}

impl PeerAnswer {
    /// The signature context of this answer's kind.
    pub fn context(&self) -> &'static str {
        context_of(self.kind())
    }

    fn kind(&self) -> u8 {
        match self.body {
            AnswerBody::Request { .. } => KIND_REQUEST,
            AnswerBody::Objects(_) => KIND_OBJECTS,
            AnswerBody::Exchange { .. } => KIND_EXCHANGE,
        }
    }

    /// Signs with the context of its kind; `owner` is the answering institution.
    pub fn sign(&self, owner: &Identity) -> SignedPeerAnswer {
        SignedPeerAnswer {
            signature: owner.sign(self.context(), &self.encode()),
            answer: self.clone(),
        }
    }

    /// Checks the field rules in the byte table.
    ///
    /// # Errors
    /// [`Error::Malformed`] naming the field.
    pub fn validate(&self) -> Result<()> {
        len_at_most(&self.grant, MAX_ID_LEN, "peer answer: grant")?;
        len_at_most(&self.bucket, MAX_BUCKET_LEN, "peer answer: bucket")?;
        len_at_most(&self.key, MAX_KEY_LEN, "peer answer: key")?;
        len_at_most(&self.version_id, MAX_ID_LEN, "peer answer: version id")?;
        let exchange = matches!(self.body, AnswerBody::Exchange { .. });
        if !exchange && (!self.bucket.is_empty() || !self.key.is_empty()) {
            return Err(Error::Malformed(
                "peer answer: bucket or key outside an exchange",
            ));
        }
        match &self.body {
            AnswerBody::Request { request_id, status } => {
                if request_id.is_empty() {
                    return Err(Error::Malformed("peer answer: request id"));
                }
                len_at_most(request_id, MAX_ID_LEN, "peer answer: request id")?;
                if status.has_grant() == self.grant.is_empty() {
                    return Err(Error::Malformed(
                        "peer answer: a grant id exactly when approved",
                    ));
                }
            }
            AnswerBody::Objects(list) => {
                if list.len() > MAX_LISTED_OBJECTS {
                    return Err(Error::Malformed("peer answer: too many objects"));
                }
                for o in list {
                    len_at_most(&o.bucket, MAX_BUCKET_LEN, "peer answer: listed bucket")?;
                    len_at_most(&o.key, MAX_KEY_LEN, "peer answer: listed key")?;
                    len_at_most(&o.etag, MAX_ID_LEN, "peer answer: listed etag")?;
                }
            }
            AnswerBody::Exchange { manifest, .. } => {
                if self.grant.is_empty() || self.bucket.is_empty() || self.key.is_empty() {
                    return Err(Error::Malformed("peer answer: exchange without a record"));
                }
                if manifest.len() > MAX_MANIFEST_LEN {
                    return Err(Error::Malformed("peer answer: manifest too long"));
                }
            }
        }
        Ok(())
    }
}

fn context_of(kind: u8) -> &'static str {
    match kind {
        KIND_REQUEST => REQUEST_ANSWER_CONTEXT,
        KIND_OBJECTS => OBJECTS_ANSWER_CONTEXT,
        _ => EXCHANGE_ANSWER_CONTEXT,
    }
}

fn len_at_most(s: &str, max: usize, what: &'static str) -> Result<()> {
    if s.len() > max {
        return Err(Error::Malformed(what));
    }
    Ok(())
}

impl Wire for PeerAnswer {
    const NAMES: &'static Names = &names!("peer answer");

    fn write(&self, out: &mut Vec<u8>) {
        out.push(PEER_V1);
        out.push(self.kind());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.caller.to_bytes());
        put_str(out, &self.grant);
        put_str(out, &self.bucket);
        put_str(out, &self.key);
        put_str(out, &self.version_id);
        match &self.body {
            AnswerBody::Request { request_id, status } => {
                put_str(out, request_id);
                out.push(status.byte());
            }
            AnswerBody::Objects(list) => {
                let n = u32::try_from(list.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&n.to_be_bytes());
                for o in list {
                    put_str(out, &o.bucket);
                    put_str(out, &o.key);
                    out.extend_from_slice(&o.size.to_be_bytes());
                    put_str(out, &o.etag);
                    out.extend_from_slice(&o.last_modified_ms.to_be_bytes());
                }
            }
            AnswerBody::Exchange { manifest, stanza } => {
                put_bytes(out, manifest);
                put_bytes(out, stanza);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<PeerAnswer> {
        match r.u8()? {
            PEER_V1 => {}
            v => return Err(Error::UnsupportedVersion(v)),
        }
        let kind = r.u8()?;
        let nonce = r.array()?;
        let caller = r.recipient()?;
        let grant = r.string()?;
        let bucket = r.string()?;
        let key = r.string()?;
        let version_id = r.string()?;
        let body = match kind {
            KIND_REQUEST => {
                let request_id = r.string()?;
                let status = match r.u8()? {
                    0x00 => RequestStatus::Pending,
                    0x01 => RequestStatus::Approved,
                    0x02 => RequestStatus::Denied,
                    0x03 => RequestStatus::Revoked,
                    0x04 => RequestStatus::Expired,
                    _ => return Err(Error::Malformed("peer answer: request state")),
                };
                AnswerBody::Request { request_id, status }
            }
            KIND_OBJECTS => {
                // Smallest entry: four empty-string lengths and two u64s.
                let n = r.count(4 * 3 + 8 * 2)?;
                if n > MAX_LISTED_OBJECTS {
                    return Err(Error::Malformed("peer answer: too many objects"));
                }
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    list.push(ListedObject {
                        bucket: r.string()?,
                        key: r.string()?,
                        size: r.u64()?,
                        etag: r.string()?,
                        last_modified_ms: r.u64()?,
                    });
                }
                AnswerBody::Objects(list)
            }
            KIND_EXCHANGE => AnswerBody::Exchange {
                manifest: r.bytes()?.to_vec(),
                stanza: r.bytes()?.to_vec(),
            },
            _ => return Err(Error::Malformed("peer answer: kind")),
        };
        let a = PeerAnswer {
            nonce,
            caller,
            grant,
            bucket,
            key,
            version_id,
            body,
        };
        a.validate()?;
        Ok(a)
    }
}

wire_methods!(PeerAnswer, "peer answer");

/// A [`PeerAnswer`] signed by the answering institution with the context of its kind.
///
/// Encoding: the answer's encoding ‖ signature (64).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPeerAnswer {
    /// What is signed.
    pub answer: PeerAnswer,
    /// Signature over the encoding of `answer`, context [`PeerAnswer::context`].
    pub signature: Signature,
}

impl Wire for SignedPeerAnswer {
    const NAMES: &'static Names = &names!("signed peer answer");

    fn write(&self, out: &mut Vec<u8>) {
        self.answer.write(out);
        out.extend_from_slice(&self.signature.0);
    }

    fn read(r: &mut Reader<'_>) -> Result<SignedPeerAnswer> {
        Ok(SignedPeerAnswer {
            answer: PeerAnswer::read(r)?,
            signature: Signature(r.array()?),
        })
    }
}

wire_methods!(SignedPeerAnswer, "signed peer answer");

impl SignedPeerAnswer {
    /// Checks that `owner` (the answering institution's *configured* Recipient) signed this
    /// answer, that it answers the request with `nonce` made by `caller`, and returns it. Use
    /// nothing in an answer before this passes.
    ///
    /// # Errors
    /// [`Error::BadSignature`]; [`Error::AuthMismatch`] naming "nonce" or "caller".
    pub fn verify(
        &self,
        owner: &Recipient,
        nonce: &[u8; 16],
        caller: &Recipient,
    ) -> Result<&PeerAnswer> {
        let a = &self.answer;
        owner.verify(a.context(), &a.encode(), &self.signature)?;
        if !bool::from(a.nonce[..].ct_eq(&nonce[..])) {
            return Err(Error::AuthMismatch("nonce"));
        }
        if !a.caller.ct_eq(caller) {
            return Err(Error::AuthMismatch("caller"));
        }
        Ok(a)
    }
}

/// Most hashes in a chunk's inclusion proof (a tree of 2⁶⁴ leaves).
const MAX_PROOF_HASHES: usize = 64;

/// One sealed chunk as the owning gateway's blob endpoint serves it to a peer, with what lets
/// the peer check it against the signed manifest before opening it.
///
/// ChunkAnswer, v1:
///
/// | offset | len | field                                                                 |
/// |--------|-----|-----------------------------------------------------------------------|
/// | 0      | 1   | version = 0x01                                                        |
/// | 1      | 8   | chunk index (u64)                                                     |
/// | 9      | 32  | leaf = SHA-256(0x00 ‖ sealed chunk)                                   |
/// | 41     | 1   | n: number of proof hashes (≤ 64)                                      |
/// | 42     | 32n | inclusion proof of the leaf in the blob's tree, leaf end first        |
/// | …      | …   | the sealed chunk (to the end)                                         |
///
/// Not signed: the proof leads to the blob's root in a signed [`PeerAnswer`]'s manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkAnswer {
    /// Which chunk of the blob.
    pub index: u64,
    /// Its leaf hash.
    pub leaf: Hash,
    /// Its inclusion proof.
    pub proof: InclusionProof,
    /// The sealed bytes.
    pub sealed: Vec<u8>,
}

impl ChunkAnswer {
    /// The v1 encoding (see the byte table on the type).
    pub fn encode(&self) -> Vec<u8> {
        let p = self.proof.as_bytes();
        let mut out = Vec::with_capacity(42 + p.len() + self.sealed.len());
        out.push(PEER_V1);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.leaf);
        out.push(u8::try_from(self.proof.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(p);
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Parses a chunk answer.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`]; [`Error::Malformed`] for truncation or a proof longer than
    /// 64 hashes.
    pub fn decode(bytes: &[u8]) -> Result<ChunkAnswer> {
        let mut r = Reader::new(bytes, &names!("chunk answer"));
        match r.u8()? {
            PEER_V1 => {}
            v => return Err(Error::UnsupportedVersion(v)),
        }
        let index = r.u64()?;
        let leaf = r.array()?;
        let n = usize::from(r.u8()?);
        if n > MAX_PROOF_HASHES {
            return Err(Error::Malformed("chunk answer: proof too long"));
        }
        let proof = InclusionProof::from_bytes(r.take(32 * n)?)?;
        let rest = r.take(bytes.len() - 42 - 32 * n)?;
        Ok(ChunkAnswer {
            index,
            leaf,
            proof,
            sealed: rest.to_vec(),
        })
    }

    /// Checks that this is chunk `index` of a blob of `chunk_count` chunks with Merkle root
    /// `root`: the index matches, the leaf is the hash of the sealed bytes, and the proof leads
    /// from it to `root`. Only then may the chunk be opened.
    ///
    /// # Errors
    /// [`Error::InvalidProof`] for any mismatch.
    pub fn verify(&self, index: u64, chunk_count: u64, root: &Hash) -> Result<()> {
        if self.index != index || !bool::from(leaf_hash(&self.sealed)[..].ct_eq(&self.leaf[..])) {
            return Err(Error::InvalidProof);
        }
        self.proof.verify(&self.leaf, index, chunk_count, root)
    }
}

/// Checks that a chunk size a peer's manifest claims is one a gateway writes and a blob call
/// can carry ([`MIN_PEER_CHUNK_SIZE`]..=[`MAX_PEER_CHUNK_SIZE`]).
///
/// # Errors
/// [`Error::Malformed`].
pub fn check_peer_chunk_size(chunk_size: u32) -> Result<()> {
    if (MIN_PEER_CHUNK_SIZE..=MAX_PEER_CHUNK_SIZE).contains(&chunk_size) {
        Ok(())
    } else {
        Err(Error::Malformed("peer manifest: chunk size out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> Identity {
        Identity::from_bytes(&[b; 64]).expect("identity")
    }

    fn answers(caller: &Recipient) -> Vec<PeerAnswer> {
        let base = |body| PeerAnswer {
            nonce: [7; 16],
            caller: caller.clone(),
            grant: "g1".into(),
            bucket: String::new(),
            key: String::new(),
            version_id: String::new(),
            body,
        };
        let mut exchange = base(AnswerBody::Exchange {
            manifest: vec![1, 2, 3],
            stanza: vec![4, 5],
        });
        exchange.bucket = "ehr".into();
        exchange.key = "alice/ct.dcm".into();
        vec![
            base(AnswerBody::Request {
                request_id: "r1".into(),
                status: RequestStatus::Approved,
            }),
            base(AnswerBody::Objects(vec![ListedObject {
                bucket: "ehr".into(),
                key: "alice/ct.dcm".into(),
                size: 10,
                etag: "\"e\"".into(),
                last_modified_ms: 5,
            }])),
            exchange,
        ]
    }

    #[test]
    fn round_trip_and_every_bit_flip_fails() {
        let (owner, caller, other) = (id(1), id(2), id(3));
        for a in answers(&caller.recipient()) {
            let signed = a.sign(&owner);
            let bytes = signed.encode();
            let back = SignedPeerAnswer::decode(&bytes).expect("decode");
            assert_eq!(back, signed);
            assert_eq!(
                back.verify(&owner.recipient(), &[7; 16], &caller.recipient()),
                Ok(&a)
            );
            assert_eq!(
                back.verify(&other.recipient(), &[7; 16], &caller.recipient()),
                Err(Error::BadSignature)
            );
            assert_eq!(
                back.verify(&owner.recipient(), &[8; 16], &caller.recipient()),
                Err(Error::AuthMismatch("nonce"))
            );
            assert_eq!(
                back.verify(&owner.recipient(), &[7; 16], &other.recipient()),
                Err(Error::AuthMismatch("caller"))
            );
            for i in 0..bytes.len() * 8 {
                let mut b = bytes.clone();
                b[i / 8] ^= 1 << (i % 8);
                let r = SignedPeerAnswer::decode(&b).and_then(|s| {
                    s.verify(&owner.recipient(), &[7; 16], &caller.recipient())
                        .map(|_| ())
                });
                assert!(r.is_err(), "bit {i} flipped still verifies");
            }
        }
    }

    #[test]
    fn a_signature_of_one_kind_is_not_one_of_another() {
        let (owner, caller) = (id(1), id(2));
        let all = answers(&caller.recipient());
        let sig = all[1].sign(&owner).signature;
        // Same signed bytes under another context: the kind byte differs, and so does the
        // context, so neither the bytes nor the signature carry over.
        for a in [&all[0], &all[2]] {
            let forged = SignedPeerAnswer {
                answer: a.clone(),
                signature: sig,
            };
            assert!(forged
                .verify(&owner.recipient(), &[7; 16], &caller.recipient())
                .is_err());
        }
    }

    #[test]
    fn fields_are_bounded() {
        let caller = id(2).recipient();
        let mut a = answers(&caller).remove(0);
        a.body = AnswerBody::Request {
            request_id: "r1".into(),
            status: RequestStatus::Pending,
        };
        assert!(
            PeerAnswer::decode(&a.encode()).is_err(),
            "grant while pending"
        );
        a.grant.clear();
        assert!(PeerAnswer::decode(&a.encode()).is_ok());
        a.bucket = "b".into();
        assert!(
            PeerAnswer::decode(&a.encode()).is_err(),
            "bucket outside exchange"
        );
        let mut list = answers(&caller).remove(1);
        let one = match &list.body {
            AnswerBody::Objects(l) => l[0].clone(),
            _ => unreachable!("answers()[1] lists"),
        };
        list.body = AnswerBody::Objects(vec![one; MAX_LISTED_OBJECTS + 1]);
        assert_eq!(
            PeerAnswer::decode(&list.encode()),
            Err(Error::Malformed("peer answer: too many objects"))
        );
        // A count that the rest of the input could not hold is refused before allocating.
        let mut huge = answers(&caller).remove(1).encode();
        let at = huge.len() - (4 + 3 + 4 + 12 + 8 + 4 + 3 + 8) - 4;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(PeerAnswer::decode(&huge).is_err());
        assert!(check_peer_chunk_size(1).is_err());
        assert!(check_peer_chunk_size(1023).is_err());
        assert!(check_peer_chunk_size(1024).is_ok());
        assert!(check_peer_chunk_size(1 << 20).is_ok());
        assert!(check_peer_chunk_size((64 << 20) + 1).is_err());
    }

    #[test]
    fn chunk_answers_prove_their_chunk() {
        let chunks: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 40]).collect();
        let leaves: Vec<Hash> = chunks.iter().map(|c| leaf_hash(c)).collect();
        let root = crate::merkle::root(&leaves);
        for (i, c) in chunks.iter().enumerate() {
            let i = i as u64;
            let a = ChunkAnswer {
                index: i,
                leaf: leaves[i as usize],
                proof: InclusionProof::generate(&leaves, i).expect("proof"),
                sealed: c.clone(),
            };
            let bytes = a.encode();
            let back = ChunkAnswer::decode(&bytes).expect("decode");
            assert_eq!(back, a);
            assert_eq!(back.verify(i, 5, &root), Ok(()));
            assert!(back.verify((i + 1) % 5, 5, &root).is_err(), "other index");
            assert!(back.verify(i, 5, &[0; 32]).is_err(), "other root");
            for bit in 0..bytes.len() * 8 {
                let mut b = bytes.clone();
                b[bit / 8] ^= 1 << (bit % 8);
                let r = ChunkAnswer::decode(&b).and_then(|c| c.verify(i, 5, &root));
                assert!(r.is_err(), "chunk {i}: bit {bit} flipped still verifies");
            }
        }
        assert!(ChunkAnswer::decode(&[1, 0]).is_err());
    }
}
