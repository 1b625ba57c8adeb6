//! The peers' client: signs requests with the institution key ([`PeerAuth`]), sends them over
//! the peer's pinned TLS, bounds and checks the answers, and follows a peer's verified key
//! rollover (see the parent module, [`crate::engine::remote`]).

use super::*;

/// Signs and sends requests to peers.
pub struct PeerClient {
    pub(super) identity: Arc<Identity>,
    /// The client for peers without a pinned CA (system roots, plus `[api] peer_ca`).
    pub(super) http: reqwest::Client,
    /// One client per peer with a `ca_file`: that CA only.
    pub(super) pinned: HashMap<String, reqwest::Client>,
    /// Peers whose key moved by a verified rollover: name -> the key followed now.
    pub(super) repinned: RwLock<HashMap<String, Recipient>>,
    /// Where re-pins are kept across restarts (set by [`Remote::new`]).
    pub(super) store: Option<Arc<dyn PrivateStore>>,
}

fn http_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(PEER_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        // A peer's answer is never a redirect; following one would leave the pinned URL.
        .redirect(reqwest::redirect::Policy::none())
}

fn add_cas(
    mut builder: reqwest::ClientBuilder,
    path: &std::path::Path,
) -> Result<reqwest::ClientBuilder> {
    let pem = std::fs::read(path)
        .map_err(|e| Error::InvalidArgument(format!("peer CA bundle {}: {e}", path.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| Error::InvalidArgument(format!("peer CA bundle {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "peer CA bundle {}: no certificate in it",
            path.display()
        )));
    }
    for cert in certs {
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
}

impl PeerClient {
    /// A client signing with `identity`. `ca` adds a PEM CA bundle to the system roots for
    /// peers without their own `ca_file`; a peer with one trusts only that bundle.
    ///
    /// # Errors
    /// An unreadable or empty CA bundle; a client that cannot be built.
    pub fn new(
        identity: Arc<Identity>,
        ca: Option<&std::path::Path>,
        peers: &[Peer],
    ) -> Result<Self> {
        let mut builder = http_builder();
        if let Some(ca) = ca {
            builder = add_cas(builder, ca)?;
        }
        let build = |b: reqwest::ClientBuilder| {
            b.build()
                .map_err(|e| Error::Internal(format!("HTTP client: {e}")))
        };
        let http = build(builder)?;
        let mut pinned = HashMap::new();
        for p in peers {
            if let Some(ca) = &p.ca_file {
                let b = add_cas(http_builder().tls_built_in_root_certs(false), ca)?;
                pinned.insert(p.name.clone(), build(b)?);
            }
        }
        Ok(PeerClient {
            identity,
            http,
            pinned,
            repinned: RwLock::new(HashMap::new()),
            store: None,
        })
    }

    /// The key `peer` is pinned to now: the configured one, or the one a verified key
    /// rollover handed it over to.
    pub fn key_of(&self, peer: &Peer) -> Recipient {
        self.repinned
            .read()
            .ok()
            .and_then(|m| m.get(&peer.name).cloned())
            .unwrap_or_else(|| peer.recipient.clone())
    }

    /// Fetches `peer`'s key rollovers (`GET /v1/peer/rollover`) and follows them from the key
    /// pinned for it, each signed by the key before it (`keyring::rollover::follow_chain`).
    /// Returns the new key when the peer moved; re-pins it here and in the private store.
    ///
    /// # Errors
    /// `Peer` when the peer cannot be asked, or a rollover does not verify against the key
    /// pinned for it (a key that is not the peer's); store failures.
    pub async fn follow_rollover(&self, peer: &Peer) -> Result<Option<Recipient>> {
        let base = peer.url.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!("peer {} has no url in the config", peer.name))
        })?;
        peer.check_url()?;
        let url = base
            .join(Route::PeerRollover.path(&[]).trim_start_matches('/'))
            .map_err(|e| Error::InvalidArgument(format!("peer {} url: {e}", peer.name)))?;
        let resp = self
            .pinned
            .get(&peer.name)
            .unwrap_or(&self.http)
            .get(url)
            .send()
            .await
            .map_err(|e| Error::Peer(format!("{} unreachable: {}", peer.name, redact(&e))))?;
        if !resp.status().is_success() {
            return Err(Error::Peer(format!(
                "{}: no key rollover to follow (HTTP {})",
                peer.name,
                resp.status()
            )));
        }
        let mut body = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| Error::Peer(format!("{}: {}", peer.name, redact(&e))))?;
            if buf.len() + piece.len() > MAX_ROLLOVER_ANSWER_BYTES {
                return Err(too_long(peer));
            }
            buf.extend_from_slice(&piece);
        }
        let answer: crate::engine::keyrot::RolloverAnswer = serde_json::from_slice(&buf)
            .map_err(|e| Error::Peer(format!("{}: unexpected rollover answer: {e}", peer.name)))?;
        let chain = answer
            .rollovers
            .iter()
            .map(|t| keyring::SignedRollover::from_text(t))
            .collect::<keyring::Result<Vec<_>>>()
            .map_err(|e| Error::Peer(format!("{}: unreadable key rollover: {e}", peer.name)))?;
        let pinned = self.key_of(peer);
        let (key, followed) = keyring::rollover::follow_chain(&pinned, &chain).map_err(|e| {
            Error::Peer(format!(
                "{}: key rollover refused ({e}): not signed by the key pinned for this peer",
                peer.name
            ))
        })?;
        if followed.is_empty() {
            return Ok(None);
        }
        if let Ok(mut m) = self.repinned.write() {
            m.insert(peer.name.clone(), key.clone());
        }
        if let Some(store) = &self.store {
            store.put_peer_key(&peer.name, &key.to_string()).await?;
        }
        tracing::warn!(
            peer = %peer.name,
            "peer {} rotated its key: update [[peers]] recipient to {key}",
            peer.name
        );
        Ok(Some(key))
    }

    /// Sends `route` (its path with `params`, and `query`) with `body` to `peer`, signed; returns the nonce it was signed
    /// with and the answer's body (at most [`MAX_ANSWER_BYTES`]). A peer's error answer
    /// becomes `GrantRefused` (401, 403) or `Peer`.
    ///
    /// # Errors
    /// The peer has no URL, a plain http one it may not use, cannot be reached, refuses, or
    /// answers more than [`MAX_ANSWER_BYTES`].
    pub async fn call(
        &self,
        peer: &Peer,
        route: Route,
        params: &[(&str, &str)],
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<([u8; 16], Bytes)> {
        let method = route.method();
        let target = route.path_query(params, query);
        let base = peer.url.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!("peer {} has no url in the config", peer.name))
        })?;
        peer.check_url()?;
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
            self.key_of(peer).fingerprint(),
            crate::now_ms(),
            method.as_str(),
            &host,
            &signed_target,
            &body,
        )
        .sign(&self.identity);
        let nonce = auth.auth.nonce;
        let mut req = self
            .pinned
            .get(&peer.name)
            .unwrap_or(&self.http)
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
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(too_long(peer));
        }
        let mut body = resp.bytes_stream();
        let mut buf = bytes::BytesMut::new();
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| Error::Peer(format!("{}: {}", peer.name, redact(&e))))?;
            if buf.len() + piece.len() > MAX_ANSWER_BYTES {
                return Err(too_long(peer));
            }
            buf.extend_from_slice(&piece);
        }
        let bytes = buf.freeze();
        if status.is_success() {
            return Ok((nonce, bytes));
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

    /// [`Self::call`] with a JSON body; the answer must be a [`SignedPeerAnswer`] signed by
    /// `peer`'s configured Recipient for this request's nonce and this gateway, and is
    /// returned only then.
    ///
    /// # Errors
    /// As [`Self::call`]; an answer that is not one, or does not verify.
    pub async fn answer(
        &self,
        peer: &Peer,
        route: Route,
        params: &[(&str, &str)],
        query: &[(&str, &str)],
        body: Option<&impl Serialize>,
    ) -> Result<PeerAnswer> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let (nonce, bytes) = self.call(peer, route, params, query, body).await?;
        let text: SignedAnswerText = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Peer(format!("{}: unexpected answer: {e}", peer.name)))?;
        let signed = SignedPeerAnswer::from_text(&text.answer)
            .map_err(|e| Error::Peer(format!("{}: unreadable answer: {e}", peer.name)))?;
        let me = self.identity.recipient();
        let refused = |e: keyring::Error| {
            Error::Peer(format!(
                "{}: answer refused ({e}): not signed by the key configured for this peer, or not for this request",
                peer.name
            ))
        };
        match signed.verify(&self.key_of(peer), &nonce, &me) {
            Ok(answer) => Ok(answer.clone()),
            // Signed by a key we do not know: the peer may have replaced its key. Only a
            // rollover signed by the key pinned for it moves the pin.
            Err(first) => match self.follow_rollover(peer).await? {
                Some(key) => Ok(signed.verify(&key, &nonce, &me).map_err(refused)?.clone()),
                None => Err(refused(first)),
            },
        }
    }
}

fn too_long(peer: &Peer) -> Error {
    Error::Peer(format!(
        "{}: answer longer than {MAX_ANSWER_BYTES} bytes refused",
        peer.name
    ))
}

/// reqwest errors name the URL, which holds no secret; their causes say what to fix (a
/// certificate from an untrusted CA, a refused connection), so the whole chain is kept.
fn redact(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = cause.source();
    }
    s
}
