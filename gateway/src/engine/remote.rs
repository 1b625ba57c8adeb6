//! The receiving side of sharing between institutions: gateway B serving, on its own S3
//! endpoint, records that gateway A shares with it.
//!
//! An admin at B *mounts* a bucket: B sends a share request to A (signed with B's
//! institution key, see [`PeerClient`]) and keeps `bucket → (peer, request id)`. Once the
//! patient approves at A, reads of that bucket go to A's exchange API:
//!
//! - listing: the records the grant covers, shown at B as `A_BUCKET/A_KEY`;
//! - a read session: A checks the grant and hands out the record's manifest and B's
//!   stanza (A logs the read). B unwraps the data key with its own identity and keeps the
//!   session at most [`MAX_SESSION_TTL`], so a revocation at A takes effect at B within a
//!   minute;
//! - ciphertext: each chunk comes from A's blob endpoint, which checks the grant again on
//!   every call, with its leaf and inclusion proof ([`keyring::ChunkAnswer`]); B checks
//!   both against the blob's root in the signed manifest, then opens the chunk
//!   (ChaCha20-Poly1305 under the record's key, bound to the blob, the chunk index and the
//!   last-chunk flag). The cloud never sees B's credentials, and A never sees plaintext.
//!
//! Every answer A gives (a request's state, a listing, a read session) is a
//! [`keyring::SignedPeerAnswer`] that B checks against A's *configured* Recipient, the
//! nonce of the request it sent and its own Recipient before using anything in it: whoever
//! answers at A's URL without A's key gets nothing served as A's. Peer URLs are https unless
//! the peer entry allows plain http; a peer's `ca_file` is the only CA trusted for it. What
//! a peer may claim is bounded: answer bodies ([`MAX_ANSWER_BYTES`]), listings
//! ([`keyring::peer::MAX_LISTED_OBJECTS`]), chunk sizes
//! ([`keyring::peer::MIN_PEER_CHUNK_SIZE`]..=[`keyring::peer::MAX_PEER_CHUNK_SIZE`]), and a read
//! walks the manifest's chunks lazily, a few in flight at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use keyring::consent::PeerAuth;
use keyring::peer::{check_peer_chunk_size, MAX_PEER_CHUNK_SIZE};
use keyring::{
    AnswerBody, ChunkAnswer, DataKey, Identity, Manifest, PeerAnswer, Recipient, RequestStatus,
    SignedPeerAnswer, WrappedKey,
};
use serde::{Deserialize, Serialize};

use crate::engine::read;
use crate::routes::Route;
use crate::store::private::{MountRecord, PrivateStore};
use crate::{Error, Result};

mod client;

pub use client::PeerClient;

/// The longest a read session (manifest and unwrapped key) is reused before A is asked again.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(60);

/// The header that carries a [`SignedPeerAuth`]: `Authorization: Medgate-Peer <text>`.
pub const PEER_SCHEME: &str = "Medgate-Peer";

/// Chunks fetched from the peer at once per read.
const REMOTE_READ_CONCURRENCY: usize = 4;

/// How long one call to a peer may take.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest rollover answer read from a peer.
const MAX_ROLLOVER_ANSWER_BYTES: usize = 1 << 20;

/// Largest answer body read from a peer: a signed answer (a listing of
/// [`keyring::peer::MAX_LISTED_OBJECTS`] records, a manifest) or one chunk with its proof.
pub const MAX_ANSWER_BYTES: usize = MAX_PEER_CHUNK_SIZE as usize + (1 << 20);

/// A peer institution from the config's `[[peers]]`.
#[derive(Clone, Debug)]
pub struct Peer {
    pub name: String,
    pub recipient: Recipient,
    /// The peer's JSON API (`https://gateway-a.example:9443`), if this gateway calls it.
    pub url: Option<url::Url>,
    /// Whether `url` may be plain `http://` (tests on loopback); https otherwise.
    pub allow_plain_http: bool,
    /// A PEM CA bundle pinned for this peer: only these CAs are trusted for its HTTPS API,
    /// not the system roots.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Peer {
    /// Checks that the peer's URL may be called: https, or http when the entry allows it.
    ///
    /// # Errors
    /// `InvalidArgument` saying what to fix.
    pub fn check_url(&self) -> Result<()> {
        match self.url.as_ref().map(url::Url::scheme) {
            None | Some("https") => Ok(()),
            Some("http") if self.allow_plain_http => Ok(()),
            Some("http") => Err(Error::InvalidArgument(format!(
                "peer {:?}: url is plain http; use https, or set allow_plain_http = true on its [[peers]] entry (loopback tests only)",
                self.name
            ))),
            Some(other) => Err(Error::InvalidArgument(format!(
                "peer {:?}: url scheme {other:?}: must be https",
                self.name
            ))),
        }
    }
}

/// A share request as one gateway sends it to another (`POST /v1/peer/requests`): the
/// recipient is the caller, and who is asking comes from the callee's peer config.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PeerShareRequest {
    pub patient: String,
    /// `object`, `prefix` or `patient`.
    pub scope: String,
    #[serde(default)]
    pub bucket: String,
    /// The key (object) or prefix (prefix).
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub include_future: bool,
    pub purpose_text: String,
    pub purpose_code: String,
    pub expires_ms: u64,
}

/// One record a grant covers, as listed to its recipient.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SharedObject {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: u64,
}

/// A read session's key material, as the owning gateway hands it out.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExchangeRequest {
    pub grant: String,
    pub bucket: String,
    pub key: String,
}

/// A signed answer as it travels: `{"answer": "<SignedPeerAnswer text>"}`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedAnswerText {
    /// [`keyring::SignedPeerAnswer::to_text`]: base64url of its v1 encoding.
    pub answer: String,
}

/// A read session: one record's manifest and key, fetched from the peer.
pub struct Session {
    pub peer: Peer,
    pub grant: String,
    pub bucket: String,
    pub key: String,
    pub manifest: Manifest,
    dek: DataKey,
    fetched: Instant,
}

/// Mounts and read sessions of this gateway.
pub struct Remote {
    client: PeerClient,
    peers: Vec<Peer>,
    private: Arc<dyn PrivateStore>,
    mounts: RwLock<HashMap<String, MountRecord>>,
    sessions: Mutex<HashMap<(String, String, String), Arc<Session>>>,
    ttl: Duration,
    identity: Arc<Identity>,
}

impl Remote {
    /// Loads the mounts from the private store.
    ///
    /// # Errors
    /// Store failures.
    pub async fn new(
        identity: Arc<Identity>,
        peers: Vec<Peer>,
        private: Arc<dyn PrivateStore>,
        ttl: Duration,
        ca: Option<&std::path::Path>,
    ) -> Result<Self> {
        let mounts = private
            .mounts()
            .await?
            .into_iter()
            .map(|m| (m.bucket.clone(), m))
            .collect();
        let mut client = PeerClient::new(Arc::clone(&identity), ca, &peers)?;
        client.store = Some(Arc::clone(&private));
        Ok(Remote {
            client,
            peers,
            private,
            mounts: RwLock::new(mounts),
            sessions: Mutex::new(HashMap::new()),
            ttl: ttl.min(MAX_SESSION_TTL),
            identity,
        })
    }

    /// The configured peers.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The peer named `name`.
    ///
    /// # Errors
    /// `InvalidArgument` for a name not in `[[peers]]`.
    pub fn peer(&self, name: &str) -> Result<&Peer> {
        self.peers
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::InvalidArgument(format!("no peer named {name:?} in [[peers]]")))
    }

    /// The mount of `bucket`, if it is one.
    pub fn mount(&self, bucket: &str) -> Option<MountRecord> {
        self.mounts.read().ok().and_then(|m| m.get(bucket).cloned())
    }

    /// Every mount.
    pub fn mounts(&self) -> Vec<MountRecord> {
        self.mounts
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Asks peer `peer` for a share and mounts it at `bucket` (pending until the patient
    /// approves at the peer).
    ///
    /// # Errors
    /// A bucket that exists here or is mounted already; an unknown peer; the peer refuses or
    /// its answer does not verify.
    pub async fn ask(
        &self,
        peer: &str,
        bucket: &str,
        request: &PeerShareRequest,
    ) -> Result<MountRecord> {
        check_bucket_name(bucket)?;
        if self.private.bucket(bucket).await?.is_some() || self.mount(bucket).is_some() {
            return Err(Error::BucketExists(bucket.into()));
        }
        let peer = self.peer(peer)?.clone();
        let answer = self
            .client
            .answer(&peer, Route::PeerNewRequest, &[], &[], Some(request))
            .await?;
        let (request_id, _, grant) = request_answer(&peer, &answer, None)?;
        let record = MountRecord {
            bucket: bucket.into(),
            peer: peer.name.clone(),
            request_id,
            grant,
            created_ms: crate::now_ms(),
            state: None,
        };
        self.private.put_mount(record.clone()).await?;
        self.private.flush().await?;
        if let Ok(mut m) = self.mounts.write() {
            m.insert(bucket.into(), record.clone());
        }
        Ok(record)
    }

    /// Every mount, each with its state at the peer (asked now; a peer that does not
    /// answer gives `unknown: ...`).
    pub async fn mounts_with_state(&self) -> Vec<MountRecord> {
        let mut out = self.mounts();
        out.sort_by(|a, b| a.bucket.cmp(&b.bucket));
        for m in &mut out {
            m.state = Some(match self.peer_state(m).await {
                Ok(RequestStatus::Approved) => "in force".to_string(),
                Ok(s) => s.as_str().to_string(),
                Err(e) => format!("unknown: {e}"),
            });
        }
        out
    }

    /// A mount's request state at the peer, from its signed answer.
    async fn peer_state(&self, mount: &MountRecord) -> Result<RequestStatus> {
        let peer = self.peer(&mount.peer)?.clone();
        let answer = self
            .client
            .answer(
                &peer,
                Route::PeerRequest,
                &[("id", &mount.request_id)],
                &[],
                None::<&()>,
            )
            .await?;
        Ok(request_answer(&peer, &answer, Some(&mount.request_id))?.1)
    }

    /// The grant behind a mount: asks the peer while the request is pending, and keeps
    /// the answer once approved.
    ///
    /// # Errors
    /// `GrantRefused` while pending or after a denial; peer failures.
    pub async fn grant(&self, mount: &MountRecord) -> Result<(Peer, String)> {
        let peer = self.peer(&mount.peer)?.clone();
        if let Some(g) = &mount.grant {
            return Ok((peer, g.clone()));
        }
        let answer = self
            .client
            .answer(
                &peer,
                Route::PeerRequest,
                &[("id", &mount.request_id)],
                &[],
                None::<&()>,
            )
            .await?;
        let (_, status, grant) = request_answer(&peer, &answer, Some(&mount.request_id))?;
        let Some(grant) = grant else {
            return Err(Error::GrantRefused(format!(
                "the share request behind bucket {} is {} at {}",
                mount.bucket,
                status.as_str(),
                peer.name
            )));
        };
        let mut updated = mount.clone();
        updated.grant = Some(grant.clone());
        self.private.put_mount(updated.clone()).await?;
        self.private.flush().await?;
        if let Ok(mut m) = self.mounts.write() {
            m.insert(mount.bucket.clone(), updated);
        }
        Ok((peer, grant))
    }

    /// The records a mount shows, as `(local key, object)`.
    ///
    /// # Errors
    /// As [`Self::grant`]; peer failures; an answer about another grant.
    pub async fn list(&self, mount: &MountRecord) -> Result<Vec<(String, SharedObject)>> {
        let (peer, grant) = self.grant(mount).await?;
        let answer = self
            .client
            .answer(
                &peer,
                Route::PeerObjects,
                &[],
                &[("grant", &grant)],
                None::<&()>,
            )
            .await?;
        let AnswerBody::Objects(listed) = answer.body else {
            return Err(Error::Peer(format!("{}: not a listing", peer.name)));
        };
        if answer.grant != grant {
            return Err(Error::Peer(format!(
                "{}: a listing of another grant",
                peer.name
            )));
        }
        let mut out: Vec<(String, SharedObject)> = listed
            .into_iter()
            .map(|o| {
                (
                    format!("{}/{}", o.bucket, o.key),
                    SharedObject {
                        bucket: o.bucket,
                        key: o.key,
                        size: o.size,
                        etag: o.etag,
                        last_modified_ms: o.last_modified_ms,
                    },
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The read session for `key` (`A_BUCKET/A_KEY`) of a mount: reused while younger than
    /// the session TTL, else fetched from the peer (which logs the read).
    ///
    /// # Errors
    /// `NoSuchKey` for a key without a `/`; `GrantRefused` when the peer refuses; an answer
    /// that does not verify, is about another record, or claims chunk sizes out of range; a
    /// stanza this gateway cannot open.
    pub async fn session(&self, mount: &MountRecord, key: &str) -> Result<Arc<Session>> {
        let Some((a_bucket, a_key)) = key.split_once('/') else {
            return Err(Error::NoSuchKey {
                bucket: mount.bucket.clone(),
                key: key.into(),
            });
        };
        let (peer, grant) = self.grant(mount).await?;
        let id = (grant.clone(), a_bucket.to_string(), a_key.to_string());
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.retain(|_, s| s.fetched.elapsed() < self.ttl);
            if let Some(s) = sessions.get(&id) {
                return Ok(Arc::clone(s));
            }
        }
        let answer = self
            .client
            .answer(
                &peer,
                Route::PeerExchange,
                &[],
                &[],
                Some(&ExchangeRequest {
                    grant: grant.clone(),
                    bucket: a_bucket.into(),
                    key: a_key.into(),
                }),
            )
            .await?;
        let bad = |what: &str| Error::Peer(format!("{}: bad {what} in the exchange", peer.name));
        if answer.grant != grant || answer.bucket != a_bucket || answer.key != a_key {
            return Err(bad("record (an answer about another one)"));
        }
        let AnswerBody::Exchange { manifest, stanza } = answer.body else {
            return Err(bad("answer kind"));
        };
        let manifest = Manifest::decode(&manifest).map_err(|_| bad("manifest"))?;
        for part in &manifest.parts {
            check_peer_chunk_size(part.chunk_size).map_err(|_| {
                Error::Peer(format!(
                    "{}: a chunk size of {} bytes is out of range ({}..={})",
                    peer.name,
                    part.chunk_size,
                    keyring::peer::MIN_PEER_CHUNK_SIZE,
                    MAX_PEER_CHUNK_SIZE
                ))
            })?;
        }
        let stanza = WrappedKey::from_bytes(&stanza).map_err(|_| bad("stanza"))?;
        let dek = match self.identity.unwrap_key(&stanza) {
            Some(Ok(dek)) => dek,
            _ => return Err(Error::NoStanza(manifest.dek_id.to_hex())),
        };
        let session = Arc::new(Session {
            peer,
            grant,
            bucket: a_bucket.into(),
            key: a_key.into(),
            manifest,
            dek,
            fetched: Instant::now(),
        });
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert(id, Arc::clone(&session));
        }
        Ok(session)
    }

    /// Forgets every read session (after a refusal, the next read asks again).
    pub fn forget(&self, mount: &MountRecord, key: &str) {
        if let (Some((b, k)), Some(g)) = (key.split_once('/'), mount.grant.as_ref()) {
            if let Ok(mut s) = self.sessions.lock() {
                s.remove(&(g.clone(), b.to_string(), k.to_string()));
            }
        }
    }

    /// Opens plaintext bytes `start..end` of a session's record: chunks come from the
    /// peer's blob endpoint, each checked against the signed manifest's root and opened
    /// here. The chunks are walked lazily (never a list of them all), at most
    /// [`REMOTE_READ_CONCURRENCY`] in flight. The first chunk is fetched before this
    /// returns, so a refusal becomes a clean S3 error; a later failure cuts the body short.
    ///
    /// # Errors
    /// The peer refuses or fails; a chunk that does not prove or open.
    pub async fn open(
        self: &Arc<Self>,
        session: Arc<Session>,
        start: u64,
        end: u64,
    ) -> Result<
        impl Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + Sync + Unpin + 'static,
    > {
        let windows = read::windows(&session.manifest, &session.dek, start, end);
        read::stream(
            read::ChunkSource::Peer {
                remote: Arc::clone(self),
                session,
            },
            windows,
            read::ReadAhead {
                concurrency: REMOTE_READ_CONCURRENCY,
                queue: 2,
                warn: "aborting a shared read: a later chunk failed",
                cut: "shared read failed",
            },
        )
        .await
    }

    /// The peer source of the read pipeline: chunk `job.index` from the peer's blob
    /// endpoint, with its leaf once the inclusion proof led to the part's root in the
    /// manifest the peer signed.
    pub(crate) async fn sealed_chunk(
        &self,
        s: &Session,
        job: &read::ChunkJob,
    ) -> Result<(Bytes, keyring::Hash)> {
        let (blob, chunk) = (job.blob.to_hex(), job.index.to_string());
        let query = [
            ("grant", s.grant.as_str()),
            ("bucket", s.bucket.as_str()),
            ("key", s.key.as_str()),
            ("blob", blob.as_str()),
            ("chunk", chunk.as_str()),
        ];
        let (_, body) = self
            .client
            .call(&s.peer, Route::PeerBlob, &[], &query, None)
            .await?;
        // The leaf and proof lead to the blob's root in the manifest A signed; only a chunk
        // that passes is opened (and the AEAD under the record's key, bound to the blob, the
        // index and the last-chunk flag, is checked again there).
        let answer =
            ChunkAnswer::decode(&body).map_err(|_| Error::integrity(&job.blob, job.index))?;
        answer
            .verify(job.index, job.layout.chunk_count(), &job.root)
            .map_err(|_| Error::integrity(&job.blob, job.index))?;
        Ok((Bytes::from(answer.sealed), answer.leaf))
    }
}

/// What a request answer says: (request id, state, grant once approved). `expected` is the
/// request id asked about, if any.
fn request_answer(
    peer: &Peer,
    answer: &PeerAnswer,
    expected: Option<&str>,
) -> Result<(String, RequestStatus, Option<String>)> {
    let AnswerBody::Request { request_id, status } = &answer.body else {
        return Err(Error::Peer(format!("{}: not a request state", peer.name)));
    };
    if expected.is_some_and(|e| e != request_id) {
        return Err(Error::Peer(format!(
            "{}: the state of another request",
            peer.name
        )));
    }
    let grant = status.has_grant().then(|| answer.grant.clone());
    Ok((request_id.clone(), *status, grant))
}

/// S3's bucket naming rules (3 to 63 of `a-z 0-9 . -`, starting and ending with a letter or
/// digit), for mounts, which do not go through S3's CreateBucket.
///
/// # Errors
/// `InvalidArgument` saying the rule.
pub fn check_bucket_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{name:?} is not a valid bucket name (3 to 63 of a-z 0-9 . -)"
        )))
    }
}

impl crate::engine::record::Engine {
    /// One sealed chunk of `part` for a peer, with its Merkle leaf and inclusion proof (the
    /// caller has checked the peer's grant covers the record).
    ///
    /// # Errors
    /// `InvalidArgument` for a chunk past the blob's end; store errors.
    pub async fn peer_chunk(
        &self,
        part: &keyring::manifest::Part,
        chunk: u64,
    ) -> Result<keyring::ChunkAnswer> {
        let layout = keyring::Layout::new(part.plaintext_len, part.chunk_size)?;
        let count = layout.chunk_count();
        if chunk >= count {
            return Err(Error::InvalidArgument(format!(
                "chunk {} is not within the blob's {count} chunks",
                chunk
            )));
        }
        let leaves = self.private.leaves(part.blob, 0, count - 1).await?;
        let leaf = *leaves
            .get(usize::try_from(chunk).unwrap_or(usize::MAX))
            .ok_or_else(|| Error::Corrupt(format!("leaves of blob {}", part.blob.to_hex())))?;
        let proof = keyring::InclusionProof::generate(&leaves, chunk)?;
        let sealed = read::sealed_range(&self.public, &part.blob, &layout, chunk)
            .await
            .map_err(Error::Public)?;
        Ok(keyring::ChunkAnswer {
            index: chunk,
            leaf,
            proof,
            sealed: sealed.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests;
