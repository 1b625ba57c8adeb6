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
//!   every call, and is opened here (ChaCha20-Poly1305 under the record's key, bound to the
//!   blob, the chunk index and the last-chunk flag), so nothing A or the cloud could alter
//!   goes to the client unnoticed. The cloud never sees B's credentials, and A never sees
//!   plaintext.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, Stream, StreamExt};
use keyring::consent::PeerAuth;
use keyring::{BlobId, DataKey, Identity, Layout, Manifest, PayloadKey, Recipient, WrappedKey};
use serde::{Deserialize, Serialize};

use crate::private::{MountRecord, PrivateStore};
use crate::{Error, Result};

/// The longest a read session (manifest and unwrapped key) is reused before A is asked again.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(60);

/// The header that carries a [`SignedPeerAuth`]: `Authorization: Medgate-Peer <text>`.
pub const PEER_SCHEME: &str = "Medgate-Peer";

/// Chunks fetched from the peer at once per read.
const REMOTE_READ_CONCURRENCY: usize = 4;

/// How long one call to a peer may take.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// A peer institution from the config's `[[peers]]`.
#[derive(Clone, Debug)]
pub struct Peer {
    pub name: String,
    pub recipient: Recipient,
    /// The peer's JSON API (`https://gateway-a.example:9443`), if this gateway calls it.
    pub url: Option<url::Url>,
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

/// A share request's state as the peer reports it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PeerRequestState {
    pub id: String,
    /// `pending`, `approved` or `denied`.
    pub state: String,
    /// The grant id once approved.
    pub grant: Option<String>,
    /// Once approved: whether the grant is `in force`, `revoked` or `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_state: Option<String>,
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

/// The records a grant covers.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SharedObjects {
    pub objects: Vec<SharedObject>,
}

/// A read session's key material, as the owning gateway hands it out.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExchangeRequest {
    pub grant: String,
    pub bucket: String,
    pub key: String,
}

/// The manifest (hex of its v1 encoding) and the caller's stanza (hex).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExchangeAnswer {
    pub manifest: String,
    pub stanza: String,
}

/// Signs and sends requests to peers.
pub struct PeerClient {
    identity: Arc<Identity>,
    http: reqwest::Client,
}

impl PeerClient {
    /// A client signing with `identity`; `ca` adds a PEM CA bundle to the trusted roots
    /// (a private CA between hospitals).
    ///
    /// # Errors
    /// An unreadable CA bundle; a client that cannot be built.
    pub fn new(identity: Arc<Identity>, ca: Option<&std::path::Path>) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(PEER_TIMEOUT)
            .connect_timeout(Duration::from_secs(5));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::InvalidArgument(format!("peer CA bundle: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::Internal(format!("HTTP client: {e}")))?;
        Ok(PeerClient { identity, http })
    }

    /// Sends `method target` with `body` to `peer`, signed; returns the answer's status
    /// and body. A peer's error answer becomes `GrantRefused` (403), `NoSuchKey` (404) or
    /// `Peer`.
    ///
    /// # Errors
    /// The peer has no URL, cannot be reached, or refuses.
    pub async fn call(
        &self,
        peer: &Peer,
        method: reqwest::Method,
        target: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes> {
        let base = peer.url.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!("peer {} has no url in the config", peer.name))
        })?;
        let url = base
            .join(target.trim_start_matches('/'))
            .map_err(|e| Error::InvalidArgument(format!("peer {} url: {e}", peer.name)))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(Error::InvalidArgument("peer url has no host".into())),
        };
        let signed_target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let body = body.unwrap_or_default();
        let auth = PeerAuth::new(
            self.identity.recipient(),
            peer.recipient.fingerprint(),
            crate::now_ms(),
            method.as_str(),
            &host,
            &signed_target,
            &body,
        )
        .sign(&self.identity);
        let mut req = self
            .http
            .request(method, url)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("{PEER_SCHEME} {}", auth.to_text()),
            )
            .header(reqwest::header::HOST, host);
        if !body.is_empty() {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Peer(format!("{} unreachable: {}", peer.name, redact(&e))))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::Peer(format!("{}: {}", peer.name, redact(&e))))?;
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| format!("HTTP {status}"));
        Err(match status.as_u16() {
            // The peer's message is its own `grant refused: why`: say it once.
            401 | 403 => Error::GrantRefused(format!(
                "{} answered: {}",
                peer.name,
                message.strip_prefix("grant refused: ").unwrap_or(&message)
            )),
            404 => Error::Peer(format!("{}: not found: {message}", peer.name)),
            _ => Error::Peer(format!("{}: {message}", peer.name)),
        })
    }

    /// [`Self::call`] with a JSON body and answer.
    ///
    /// # Errors
    /// As [`Self::call`]; an answer that is not the expected JSON.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        peer: &Peer,
        method: reqwest::Method,
        target: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let bytes = self.call(peer, method, target, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Peer(format!("{}: unexpected answer: {e}", peer.name)))
    }
}

/// reqwest errors name the URL, which holds no secret, but keep them short.
fn redact(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(src) = std::error::Error::source(e) {
        s.push_str(": ");
        s.push_str(&src.to_string());
    }
    s
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
        Ok(Remote {
            client: PeerClient::new(Arc::clone(&identity), ca)?,
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
    /// A bucket that exists here or is mounted already; an unknown peer; the peer refuses.
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
        let state: PeerRequestState = self
            .client
            .json(
                &peer,
                reqwest::Method::POST,
                "/v1/peer/requests",
                Some(request),
            )
            .await?;
        let record = MountRecord {
            bucket: bucket.into(),
            peer: peer.name.clone(),
            request_id: state.id,
            grant: state.grant,
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
                Ok(s) => match (s.state.as_str(), s.grant_state) {
                    ("approved", Some(g)) => g,
                    (other, _) => other.to_string(),
                },
                Err(e) => format!("unknown: {e}"),
            });
        }
        out
    }

    async fn peer_state(&self, mount: &MountRecord) -> Result<PeerRequestState> {
        let peer = self.peer(&mount.peer)?.clone();
        self.client
            .json(
                &peer,
                reqwest::Method::GET,
                &format!("/v1/peer/requests/{}", mount.request_id),
                None::<&()>,
            )
            .await
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
        let state: PeerRequestState = self
            .client
            .json(
                &peer,
                reqwest::Method::GET,
                &format!("/v1/peer/requests/{}", mount.request_id),
                None::<&()>,
            )
            .await?;
        let Some(grant) = state.grant else {
            return Err(Error::GrantRefused(format!(
                "the share request behind bucket {} is {} at {}",
                mount.bucket, state.state, peer.name
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
    /// As [`Self::grant`]; peer failures.
    pub async fn list(&self, mount: &MountRecord) -> Result<Vec<(String, SharedObject)>> {
        let (peer, grant) = self.grant(mount).await?;
        let listed: SharedObjects = self
            .client
            .json(
                &peer,
                reqwest::Method::GET,
                &format!("/v1/peer/objects?grant={grant}"),
                None::<&()>,
            )
            .await?;
        let mut out: Vec<(String, SharedObject)> = listed
            .objects
            .into_iter()
            .map(|o| (format!("{}/{}", o.bucket, o.key), o))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The read session for `key` (`A_BUCKET/A_KEY`) of a mount: reused while younger than
    /// the session TTL, else fetched from the peer (which logs the read).
    ///
    /// # Errors
    /// `NoSuchKey` for a key without a `/`; `GrantRefused` when the peer refuses; a stanza
    /// this gateway cannot open.
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
        let answer: ExchangeAnswer = self
            .client
            .json(
                &peer,
                reqwest::Method::POST,
                "/v1/peer/exchange",
                Some(&ExchangeRequest {
                    grant: grant.clone(),
                    bucket: a_bucket.into(),
                    key: a_key.into(),
                }),
            )
            .await?;
        let bad = |what: &str| Error::Peer(format!("{}: bad {what} in the exchange", peer.name));
        let manifest =
            Manifest::decode(&hex::decode(&answer.manifest).map_err(|_| bad("manifest"))?)
                .map_err(|_| bad("manifest"))?;
        let stanza =
            WrappedKey::from_bytes(&hex::decode(&answer.stanza).map_err(|_| bad("stanza"))?)
                .map_err(|_| bad("stanza"))?;
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
    /// peer's blob endpoint and are opened here. The first chunk is fetched before this
    /// returns, so a refusal becomes a clean S3 error; a later failure cuts the body short.
    ///
    /// # Errors
    /// The peer refuses or fails; a chunk that does not open.
    pub async fn open(
        self: &Arc<Self>,
        session: Arc<Session>,
        start: u64,
        end: u64,
    ) -> Result<
        impl Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + Sync + Unpin + 'static,
    > {
        let mut jobs = Vec::new();
        let mut part_start = 0u64;
        for part in &session.manifest.parts {
            let part_end = part_start + part.plaintext_len;
            if part_end > start && part_start < end {
                let from = start.max(part_start) - part_start;
                let to = end.min(part_end) - part_start;
                if from < to {
                    let layout = Layout::new(part.plaintext_len, part.chunk_size)?;
                    let key = Arc::new(PayloadKey::derive(&session.dek, &part.blob));
                    for index in layout.chunks_for_range(from, to - 1) {
                        let chunk_start = layout.plain_offset(index);
                        jobs.push(RemoteChunk {
                            blob: part.blob,
                            layout,
                            key: Arc::clone(&key),
                            index,
                            lo: from.saturating_sub(chunk_start),
                            hi: to - chunk_start,
                        });
                    }
                }
            }
            part_start = part_end;
        }
        let remote = Arc::clone(self);
        let mut chunks = futures::stream::iter(jobs)
            .map(move |job| {
                let remote = Arc::clone(&remote);
                let session = Arc::clone(&session);
                async move { job.read(&remote, &session).await }
            })
            .buffered(REMOTE_READ_CONCURRENCY);
        let first = match chunks.next().await {
            Some(r) => Some(r?),
            None => None,
        };
        let (mut tx, rx) = futures::channel::mpsc::channel(2);
        tokio::spawn(async move {
            if let Some(first) = first {
                if tx.send(Ok(first)).await.is_err() {
                    return;
                }
            }
            while let Some(next) = chunks.next().await {
                let item = next.map_err(|e| {
                    tracing::warn!(error = %e, "aborting a shared read: a later chunk failed");
                    std::io::Error::other("shared read failed")
                });
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

/// One sealed chunk of a shared record: fetched from the peer, opened here.
struct RemoteChunk {
    blob: BlobId,
    layout: Layout,
    key: Arc<PayloadKey>,
    index: u64,
    lo: u64,
    hi: u64,
}

impl RemoteChunk {
    async fn read(self, remote: &Remote, s: &Session) -> Result<Bytes> {
        let from = self.layout.sealed_offset(self.index);
        let to = from + self.layout.sealed_len(self.index);
        let target = format!(
            "/v1/peer/blob?grant={}&bucket={}&key={}&blob={}&start={from}&end={to}",
            s.grant,
            encode(&s.bucket),
            encode(&s.key),
            self.blob.to_hex()
        );
        let sealed = remote
            .client
            .call(&s.peer, reqwest::Method::GET, &target, None)
            .await?;
        if sealed.len() as u64 != to - from {
            return Err(Error::integrity(&self.blob, self.index));
        }
        // No leaf to check here: the AEAD under the record's key (bound to the blob, the
        // index and the last-chunk flag) is what A cannot forge.
        let last = self.layout.is_last(self.index);
        crate::record::open_chunk(
            self.key, self.blob, self.index, last, sealed, None, self.lo, self.hi,
        )
        .await
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
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
