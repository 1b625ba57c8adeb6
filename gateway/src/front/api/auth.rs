//! How the JSON API knows its callers: the admin token, a patient's signed single-use
//! challenge, a grant recipient's challenge, and a peer institution's signed request.
//!
//! Each is an axum extractor a handler takes as an argument: [`AdminAuth`], [`PatientAuth`],
//! [`PeerAuth`] and [`RecipientAuth`]. A handler runs only once its caller is known; the
//! refusal is the handler's `ApiError` answer (401 with its message). Patient and peer
//! signatures cover the body: `PatientAuth<Bytes>` and `PeerAuth<Bytes>` read it, check the
//! signature over it and hand it on; `PatientAuth` and `PeerAuth` (no body, for GETs) check
//! over the empty body, as the API always did. `AdminAuth<Bytes>` reads the body before it
//! checks the token, so a refusal comes in the same order as when each handler checked
//! the token itself (after axum's body limit, before the JSON is parsed).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;

use super::*;

/// What an extractor hands on when the route has no body (a GET): nothing.
pub(super) struct NoBody;

/// The caller presented the admin token (`Authorization: Bearer`), compared in constant
/// time. `AdminAuth<Bytes>` also carries the request's body.
pub(super) struct AdminAuth<B = NoBody> {
    pub body: B,
}

impl FromRequestParts<ApiState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &ApiState) -> ApiResult<Self> {
        st.admin(&parts.headers)?;
        Ok(AdminAuth { body: NoBody })
    }
}

impl FromRequest<ApiState> for AdminAuth<Bytes> {
    type Rejection = Response;

    async fn from_request(req: Request, st: &ApiState) -> std::result::Result<Self, Response> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, st)
            .await
            .map_err(IntoResponse::into_response)?;
        st.admin(&headers)
            .map_err(|e| ApiError(e).into_response())?;
        Ok(AdminAuth { body })
    }
}

/// A registered patient's signed, single-use challenge over this request (method, path
/// and query, body hash): `id` is the patient's. `PatientAuth<Bytes>` carries the body
/// the signature covers.
pub(super) struct PatientAuth<B = NoBody> {
    pub id: String,
    pub body: B,
}

impl FromRequestParts<ApiState> for PatientAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &ApiState) -> ApiResult<Self> {
        let id = st
            .patient(&parts.method, &parts.uri, &parts.headers, b"")
            .await?;
        Ok(PatientAuth { id, body: NoBody })
    }
}

impl FromRequest<ApiState> for PatientAuth<Bytes> {
    type Rejection = Response;

    async fn from_request(req: Request, st: &ApiState) -> std::result::Result<Self, Response> {
        let (method, uri, headers) = (
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        );
        let body = Bytes::from_request(req, st)
            .await
            .map_err(IntoResponse::into_response)?;
        let id = st
            .patient(&method, &uri, &headers, &body)
            .await
            .map_err(|e| ApiError(e).into_response())?;
        Ok(PatientAuth { id, body })
    }
}

/// A configured peer's signed request (see [`ApiState::peer`]): the peer and the
/// request's nonce, which the answer is bound to. `PeerAuth<Bytes>` carries the body the
/// signature covers.
pub(super) struct PeerAuth<B = NoBody> {
    pub peer: Peer,
    pub nonce: [u8; 16],
    pub body: B,
}

impl FromRequestParts<ApiState> for PeerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &ApiState) -> ApiResult<Self> {
        let (peer, nonce) = st.peer(&parts.method, &parts.uri, &parts.headers, b"")?;
        Ok(PeerAuth {
            peer,
            nonce,
            body: NoBody,
        })
    }
}

impl FromRequest<ApiState> for PeerAuth<Bytes> {
    type Rejection = Response;

    async fn from_request(req: Request, st: &ApiState) -> std::result::Result<Self, Response> {
        let (method, uri, headers) = (
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        );
        let body = Bytes::from_request(req, st)
            .await
            .map_err(IntoResponse::into_response)?;
        let (peer, nonce) = st
            .peer(&method, &uri, &headers, &body)
            .map_err(|e| ApiError(e).into_response())?;
        Ok(PeerAuth { peer, nonce, body })
    }
}

/// A grant recipient's request (`POST /v1/recipient/exchange`): the body names the grant,
/// and the request must be signed with that grant's recipient key over a challenge issued
/// for that grant (`POST /v1/recipient/challenge`). The body is parsed first (a bad one
/// is 400 before any signature is looked at); the challenge is used up only once the
/// signature verified.
pub(super) struct RecipientAuth {
    pub body: RecipientExchangeBody,
}

impl FromRequest<ApiState> for RecipientAuth {
    type Rejection = Response;

    async fn from_request(req: Request, st: &ApiState) -> std::result::Result<Self, Response> {
        let (method, uri, headers) = (
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        );
        let body = Bytes::from_request(req, st)
            .await
            .map_err(IntoResponse::into_response)?;
        st.recipient(&method, &uri, &headers, &body)
            .await
            .map(|body| RecipientAuth { body })
            .map_err(|e| ApiError(e).into_response())
    }
}

pub(super) fn authorization<'h>(headers: &'h HeaderMap, scheme: &str) -> Result<&'h str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| Error::Unauthorized(format!("no Authorization: {scheme} header")))?
        .to_str()
        .map_err(|_| Error::Unauthorized("the Authorization header is not text".into()))?;
    match value.split_once(' ') {
        Some((s, rest)) if s.eq_ignore_ascii_case(scheme) => Ok(rest.trim()),
        _ => Err(Error::Unauthorized(format!(
            "this path wants Authorization: {scheme} ..."
        ))),
    }
}

impl ApiState {
    fn admin(&self, headers: &HeaderMap) -> Result<()> {
        use subtle::ConstantTimeEq;
        let given = authorization(headers, "Bearer")?;
        let want = self.0.admin_token.as_bytes();
        if bool::from(given.as_bytes().ct_eq(want)) {
            Ok(())
        } else {
            Err(Error::Unauthorized("wrong admin token".into()))
        }
    }

    /// `challenge` if this institution issued it (its MAC) within the window; `ask` is the
    /// path that hands out new ones, for the error message.
    fn issued_challenge<'c>(
        &self,
        challenge: &'c AuthChallenge,
        ask: &str,
    ) -> Result<&'c AuthChallenge> {
        use subtle::ConstantTimeEq;
        let ours = self.0.engine.institution_id();
        if !bool::from(challenge.institution[..].ct_eq(&ours[..])) {
            return Err(Error::Unauthorized(
                "token: the challenge is another institution's".into(),
            ));
        }
        self.0.challenge_key.check(challenge).map_err(|_| {
            Error::Unauthorized(format!(
                "token: not a challenge this gateway issued; ask POST {ask} for a new one"
            ))
        })?;
        if crate::now_ms().abs_diff(challenge.issued_ms) > AUTH_WINDOW_MS {
            return Err(Error::Unauthorized(format!(
                "token: the challenge has expired; ask POST {ask} for a new one"
            )));
        }
        Ok(challenge)
    }

    /// Checks a patient's signed token for this request and returns the patient id: the
    /// challenge must be one this institution issued (its MAC), within the window, signed
    /// with the key on file for its patient; only then is it used up.
    async fn patient(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<String> {
        let signed = SignedAuth::from_text(authorization(headers, PATIENT_SCHEME)?)
            .map_err(|e| Error::Unauthorized(format!("patient token: {e}")))?;
        let challenge =
            self.issued_challenge(&signed.token.challenge, Route::PatientChallenge.template())?;
        let engine = &self.0.engine;
        let now = crate::now_ms();
        let expected = AuthToken::new(challenge.clone(), method.as_str(), &target(uri), body);
        let refused = |e: keyring::Error| Error::Unauthorized(format!("patient signature: {e}"));
        let patient_id = if let Some(key) = challenge.patient_id.strip_prefix(KEY_SUBJECT) {
            let key: Recipient = key
                .parse()
                .map_err(|_| Error::Unauthorized("patient token: not a patient key".into()))?;
            signed
                .verify(&key, &expected, now, AUTH_WINDOW_MS)
                .map_err(refused)?;
            // The caller holds this key; only now may it learn whether a patient has it.
            let text = key.to_string();
            engine
                .list_patients()
                .await?
                .into_iter()
                .find(|p| p.recipient == text)
                .map(|p| p.id)
        } else {
            match engine.patient(&challenge.patient_id).await? {
                Some(p) => {
                    let key: Recipient = p
                        .recipient
                        .parse()
                        .map_err(|_| Error::Corrupt("a patient's key on file".into()))?;
                    signed
                        .verify(&key, &expected, now, AUTH_WINDOW_MS)
                        .map_err(refused)?;
                    Some(p.id)
                }
                None => {
                    // The same work and answer as a wrong signature: a signature check
                    // (against a key nobody signs patient tokens with) that fails.
                    let nobody = engine.institution().recipient();
                    signed
                        .verify(&nobody, &expected, now, AUTH_WINDOW_MS)
                        .map_err(refused)?;
                    return Err(refused(keyring::Error::BadSignature));
                }
            }
        };
        self.0.used_challenges.use_once(
            challenge.challenge,
            challenge.issued_ms.saturating_add(AUTH_WINDOW_MS),
            now,
        )?;
        patient_id.ok_or_else(|| {
            Error::Unauthorized("no patient is registered with this key at this gateway".into())
        })
    }

    /// Checks a grant recipient's signed request and returns its body (see
    /// [`RecipientAuth`]).
    async fn recipient(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<RecipientExchangeBody> {
        let b: RecipientExchangeBody = parse_json(body)?;
        let signed = SignedAuth::from_text(authorization(headers, PATIENT_SCHEME)?)
            .map_err(|e| Error::Unauthorized(format!("recipient token: {e}")))?;
        let challenge = self.issued_challenge(
            &signed.token.challenge,
            Route::RecipientChallenge.template(),
        )?;
        if challenge.patient_id != format!("{RECIPIENT_CHALLENGE_PREFIX}{}", b.grant) {
            return Err(Error::Unauthorized(
                "the challenge was issued for another grant".into(),
            ));
        }
        let grant = self.0.engine.grant_in_force(&b.grant).await?;
        let key: Recipient = grant
            .recipient
            .parse()
            .map_err(|_| Error::Corrupt("a grant's recipient".into()))?;
        let now = crate::now_ms();
        let expected = AuthToken::new(challenge.clone(), method.as_str(), &target(uri), body);
        signed
            .verify(&key, &expected, now, AUTH_WINDOW_MS)
            .map_err(|e| Error::Unauthorized(format!("recipient signature: {e}")))?;
        // Used up only once its signature verified, as a patient's.
        self.0.used_challenges.use_once(
            challenge.challenge,
            challenge.issued_ms.saturating_add(AUTH_WINDOW_MS),
            now,
        )?;
        Ok(b)
    }

    /// Checks a peer's signature on this request and returns the configured peer and the
    /// request's nonce (which the answer is bound to).
    ///
    /// The caller is the `[[peers]]` entry whose whole Recipient (X25519 and Ed25519 keys)
    /// equals the one the request names, compared in constant time, and the signature is
    /// checked against that configured key only. Anything else is 401 before anything is
    /// logged or looked up.
    fn peer(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(Peer, [u8; 16])> {
        let signed =
            SignedPeerAuth::from_text(authorization(headers, crate::engine::remote::PEER_SCHEME)?)
                .map_err(|e| Error::Unauthorized(format!("peer signature: {e}")))?;
        // Every entry is compared, so the time taken does not say which one matched.
        let mut found = None;
        for p in &self.0.peers {
            if p.recipient.ct_eq(&signed.auth.caller) && found.is_none() {
                found = Some(p);
            }
        }
        let peer = found
            .ok_or_else(|| Error::Unauthorized("the caller is not a configured peer".into()))?
            .clone();
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        let now = crate::now_ms();
        // The callee is this institution: its key, or one it replaced (`medgate keys rotate`)
        // that a peer still pins until it has followed the rollover.
        let previous = self.0.engine.previous();
        let callees = std::iter::once(self.0.engine.institution_id())
            .chain(previous.iter().map(|p| p.recipient().fingerprint()));
        let mut checked = Err(keyring::Error::BadSignature);
        for callee in callees {
            checked = signed.verify(
                &peer.recipient,
                &callee,
                method.as_str(),
                host,
                &target(uri),
                body,
                now,
                AUTH_WINDOW_MS,
            );
            if checked.is_ok() {
                break;
            }
        }
        checked.map_err(|e| Error::Unauthorized(format!("peer signature: {e}")))?;
        // After the signature verified: only a configured peer's requests are remembered.
        self.0.nonces.use_once(
            signed.auth.nonce,
            signed.auth.timestamp_ms.saturating_add(2 * AUTH_WINDOW_MS),
            now,
        )?;
        Ok((peer, signed.auth.nonce))
    }

    /// `answer`, signed by this institution for the peer request with `nonce` from `peer`.
    pub(super) fn sign_answer(
        &self,
        peer: &Peer,
        nonce: [u8; 16],
        grant: &str,
        record: Option<(&str, &str)>,
        body: AnswerBody,
    ) -> Result<Json<SignedAnswerText>> {
        let (bucket, key) = record.unwrap_or(("", ""));
        let answer = PeerAnswer {
            nonce,
            caller: peer.recipient.clone(),
            grant: grant.into(),
            bucket: bucket.into(),
            key: key.into(),
            version_id: String::new(),
            body,
        };
        answer
            .validate()
            .map_err(|e| Error::Internal(format!("peer answer: {e}")))?;
        Ok(Json(SignedAnswerText {
            answer: answer.sign(self.0.engine.institution()).to_text(),
        }))
    }

    pub(super) async fn admin_call(&self, req: AdminRequest) -> ApiResult<Json<AdminResponse>> {
        answer(admin::execute(&self.0.admin, req).await)
    }
}
