//! The JSON API beside the S3 port (`--api-listen`, default loopback), described by the
//! OpenAPI document it serves at `/openapi.json`.
//!
//! Four kinds of caller, each authenticated its own way:
//!
//! | paths           | caller                   | authentication                                      |
//! |-----------------|--------------------------|-----------------------------------------------------|
//! | `/v1/admin/…`   | the hospital's admins    | `Authorization: Bearer <admin token>`                |
//! | `/v1/patient/…` | a registered patient     | `Authorization: Medgate-Patient <SignedAuth>`: a challenge from `POST /v1/patient/challenge`, single use, signed with the patient's key over method, path and query, body hash |
//! | `/v1/peer/…`    | another institution      | `Authorization: Medgate-Peer <SignedPeerAuth>`: the caller's Ed25519 signature over method, host, path, full query, body hash, time and nonce; the caller's whole Recipient must be a configured `[[peers]]` entry's and the signature is checked against that entry's key, the time within 5 minutes, the nonce new; answers are `SignedPeerAnswer`s bound to the nonce, chunks `ChunkAnswer`s with their Merkle proofs |
//! | `/v1/log/…`, `/openapi.json` | anyone      | none: checkpoints and proofs are public anyway       |
//!
//! What authorises a re-wrap is never the channel: grants, denials, revocations and key
//! changes are statements the patient signed, checked against the key on file.
//! Answers are JSON objects tagged by `status` (errors: `{"status":"error","message":…}`
//! with the HTTP status saying what kind).
//!
//! # The patient boundary
//! Anyone can ask for a challenge, so a challenge costs the gateway no state: it is MAC-ed
//! with a key derived from the institution's secret ([`keyring::consent::ChallengeKey`])
//! and carries its issue time, so any gateway of the institution can check it. It is
//! answered the same way (status, body shape, work: no store lookup) for a registered and
//! an unregistered patient id, and for a key whether or not a patient has it: asked by
//! key, the challenge names the key (`key:medgate1...`), never the patient's id. A
//! challenge enters the used set only once a signature over it verifies, so junk never
//! fills that set, and a patient's failure reads the same whether the id is unknown or
//! the signature wrong. Peers' share requests for an unregistered patient are stored like
//! any other (pending until they expire: nobody can approve them), so their answer does
//! not tell who is a patient here either.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use keyring::consent::{
    AuthChallenge, AuthToken, ChallengeKey, SignedAuth, SignedGrant, SignedPeerAuth,
};
use keyring::{AnswerBody, ListedObject, PeerAnswer, Recipient, RequestStatus};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use zeroize::Zeroizing;

use crate::engine::record::Engine;
use crate::engine::remote::{ExchangeRequest, Peer, PeerShareRequest, Remote, SignedAnswerText};
use crate::front::admin::{self, AdminContext, AdminRequest, AdminResponse, NewShareRequest};
use crate::front::replay::ReplayCache;
use crate::{Error, Result};

/// How far a signed request's time (peer) or challenge (patient) may be from now.
pub const AUTH_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Answered patient challenges and peer nonces remembered at most, each (about 50 MiB at
/// worst; only authenticated requests add to them).
const MAX_USED_TOKENS: usize = 1 << 20;
/// The subject of a challenge asked for by key: this prefix and the Recipient. Patient ids
/// are letters, digits, '.', '_' and '-', so no id has this form.
pub const KEY_SUBJECT: &str = "key:";
/// Largest JSON body accepted.
const MAX_BODY: usize = 1 << 20;

/// The scheme of a patient's `Authorization` header.
pub const PATIENT_SCHEME: &str = "Medgate-Patient";

/// What the API serves from.
#[derive(Clone)]
pub struct ApiState(Arc<Inner>);

struct Inner {
    engine: Arc<Engine>,
    admin: AdminContext,
    admin_token: Zeroizing<String>,
    peers: Vec<Peer>,
    remote: Option<Arc<Remote>>,
    /// MACs the challenges this gateway issues (no state per challenge).
    challenge_key: ChallengeKey,
    /// Challenges answered with a valid signature, until they expire.
    used_challenges: ReplayCache<32>,
    /// Nonces of peers' requests whose signature verified, until they expire.
    nonces: ReplayCache<16>,
}

impl ApiState {
    /// The API over `engine`; `admin_token` is what admins present (compared in constant
    /// time; never logged).
    pub fn new(
        engine: Arc<Engine>,
        admin: AdminContext,
        admin_token: Zeroizing<String>,
        peers: Vec<Peer>,
        remote: Option<Arc<Remote>>,
    ) -> Self {
        ApiState(Arc::new(Inner {
            challenge_key: engine.institution().challenge_key(),
            engine,
            admin,
            admin_token,
            peers,
            remote,
            used_challenges: ReplayCache::new("challenge", AUTH_WINDOW_MS, MAX_USED_TOKENS),
            nonces: ReplayCache::new("nonce", AUTH_WINDOW_MS, MAX_USED_TOKENS),
        }))
    }
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/v1/log/checkpoint", get(log_checkpoint))
        .route("/v1/log/proofs/inclusion", get(log_inclusion))
        .route("/v1/log/proofs/consistency", get(log_consistency))
        .route("/v1/log/cosignatures", post(log_cosign))
        .route(
            "/v1/admin/patients",
            get(admin_patients).post(admin_register),
        )
        .route("/v1/admin/patients/{id}", get(admin_patient))
        .route(
            "/v1/admin/patients/{id}/break-glass",
            post(admin_break_glass),
        )
        .route(
            "/v1/admin/requests",
            get(admin_requests).post(admin_new_request),
        )
        .route("/v1/admin/requests/{id}", get(admin_request))
        .route("/v1/admin/grants", get(admin_grants))
        .route(
            "/v1/admin/access-keys",
            get(admin_access_keys).post(admin_new_access_key),
        )
        .route(
            "/v1/admin/access-keys/{id}",
            axum::routing::delete(admin_delete_access_key),
        )
        .route("/v1/admin/events", get(admin_events))
        .route("/v1/admin/verify", post(admin_verify))
        .route("/v1/admin/mounts", get(admin_mounts).post(admin_mount))
        .route("/v1/patient/challenge", post(patient_challenge))
        .route("/v1/recipient/challenge", post(recipient_challenge))
        .route("/v1/recipient/exchange", post(recipient_exchange))
        .route("/v1/patient/me", get(patient_me))
        .route("/v1/patient/requests", get(patient_requests))
        .route("/v1/patient/requests/{id}", get(patient_request))
        .route("/v1/patient/requests/{id}/approve", post(patient_approve))
        .route("/v1/patient/requests/{id}/deny", post(patient_deny))
        .route("/v1/patient/grants", get(patient_grants))
        .route("/v1/patient/revocations", post(patient_revoke))
        .route("/v1/patient/key-change", post(patient_key_change))
        .route("/v1/patient/entries", get(patient_entries))
        .route("/v1/peer/requests", post(peer_new_request))
        .route("/v1/peer/requests/{id}", get(peer_request))
        .route("/v1/peer/objects", get(peer_objects))
        .route("/v1/peer/exchange", post(peer_exchange))
        .route("/v1/peer/blob", get(peer_blob))
        .route("/v1/peer/rollover", get(peer_rollover))
        .fallback(|| async {
            ApiError(Error::NotFound(
                "no such API path; see /openapi.json".into(),
            ))
        })
        .with_state(state)
        .layer(axum::middleware::map_response(with_iso_times))
}

/// Every JSON answer gets, beside each `*_ms` time (milliseconds since the epoch), the
/// same time as an ISO 8601 (RFC 3339, UTC) string under `*_at`. Durations (`*_ms`
/// values before 2001) are left alone.
async fn with_iso_times(resp: Response) -> Response {
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // Answers are built in memory (`Json`): nothing streams here.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError(Error::Internal(format!("reading an answer: {e}"))).into_response()
        }
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    add_iso_times(&mut value);
    match serde_json::to_vec(&value) {
        Ok(out) => {
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(out))
        }
        Err(_) => Response::from_parts(parts, Body::from(bytes)),
    }
}

/// Milliseconds since the epoch from which a `*_ms` value is a time, not a duration
/// (2001-09-09).
const FIRST_TIME_MS: u64 = 1_000_000_000_000;

/// Adds an ISO 8601 `*_at` string beside every `*_ms` time in `value`, at any depth (what
/// every JSON answer of the API gets, and the CLI's `--json`).
pub fn add_iso_times(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let mut times = Vec::new();
            for (k, v) in map.iter_mut() {
                if let (Some(stem), Some(ms)) = (k.strip_suffix("_ms"), v.as_u64()) {
                    if ms >= FIRST_TIME_MS {
                        times.push((format!("{stem}_at"), crate::engine::sharing::rfc3339(ms)));
                    }
                }
                add_iso_times(v);
            }
            for (k, at) in times {
                map.entry(k).or_insert(serde_json::Value::String(at));
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(add_iso_times),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// An error as the API answers it.
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl From<keyring::Error> for ApiError {
    fn from(e: keyring::Error) -> Self {
        ApiError(Error::Keyring(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let (status, message) = match &e {
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, e.to_string()),
            Error::GrantRefused(_) => (StatusCode::FORBIDDEN, e.to_string()),
            Error::NotFound(_)
            | Error::UnknownPatient(_)
            | Error::NoSuchKey { .. }
            | Error::NoSuchBucket(_)
            | Error::NoSuchAccessKey(_) => (StatusCode::NOT_FOUND, e.to_string()),
            Error::InvalidArgument(_) | Error::Keyring(_) => {
                (StatusCode::BAD_REQUEST, e.to_string())
            }
            Error::BucketExists(_) => (StatusCode::CONFLICT, e.to_string()),
            Error::Peer(_) => (StatusCode::BAD_GATEWAY, e.to_string()),
            Error::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            Error::Public(_) => {
                tracing::warn!(error = %e, "public store failure (API)");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the storage backend is unavailable".to_string(),
                )
            }
            _ => {
                tracing::warn!(error = %e, "internal error (API)");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_string(),
                )
            }
        };
        (status, Json(AdminResponse::Error { message })).into_response()
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

/// The answer of an admin operation as HTTP: `Error` answers become the right status.
fn answer(r: Result<AdminResponse>) -> ApiResult<Json<AdminResponse>> {
    Ok(Json(r?))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    if body.len() > MAX_BODY {
        return Err(Error::InvalidArgument("request body too large".into()));
    }
    serde_json::from_slice(body).map_err(|e| Error::InvalidArgument(format!("bad JSON body: {e}")))
}

fn target(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_string(), |pq| pq.as_str().to_string())
}

// ---------------------------------------------------------------------------------------
// Authentication

fn authorization<'h>(headers: &'h HeaderMap, scheme: &str) -> Result<&'h str> {
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
        let challenge = self.issued_challenge(&signed.token.challenge, "/v1/patient/challenge")?;
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
                .private
                .list_patients()
                .await?
                .into_iter()
                .find(|p| p.recipient == text)
                .map(|p| p.id)
        } else {
            match engine.private.patient(&challenge.patient_id).await? {
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
        let previous = self
            .0
            .engine
            .previous
            .get()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
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
    fn sign_answer(
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

    async fn admin_call(&self, req: AdminRequest) -> ApiResult<Json<AdminResponse>> {
        answer(admin::execute(&self.0.admin, req).await)
    }
}

// ---------------------------------------------------------------------------------------
// Schemas of bodies and parameters

/// Every answer is a JSON object whose `status` names its kind (`patient`, `requests`,
/// `grants`, `rewrapped`, `done`, `error`, ...); the other fields depend on it.
#[derive(ToSchema)]
pub struct Answer {
    pub status: String,
}

/// `POST /v1/admin/patients`.
#[derive(Deserialize, ToSchema)]
pub struct RegisterBody {
    pub id: String,
    /// The patient's Recipient (`medgate1...`).
    pub recipient: String,
    /// The registration proof `medgate patient keygen` printed.
    pub proof: String,
}

/// `POST /v1/admin/patients/{id}/break-glass`: replace a patient's lost key.
#[derive(Deserialize, ToSchema)]
pub struct BreakGlassBody {
    /// The new Recipient (`medgate1...`), from `medgate patient keygen` on the patient's side.
    pub recipient: String,
    /// Its registration proof.
    pub proof: String,
    /// Why (at least 10 characters; logged for the patient to see).
    pub reason: String,
    /// Who breaks the glass.
    pub admin: String,
}

/// `POST /v1/admin/access-keys`.
#[derive(Deserialize, ToSchema)]
pub struct AccessKeyBody {
    /// Buckets the key may use; empty for all.
    #[serde(default)]
    pub buckets: Vec<String>,
    /// May label records with a patient (`x-amz-meta-medgate-patient`, or a
    /// `[[patient_prefixes]]` match); default false.
    #[serde(default)]
    pub label_patients: bool,
}

/// `POST /v1/admin/verify`.
#[derive(Deserialize, ToSchema)]
pub struct VerifyBody {
    /// Also re-hash every blob in the public store.
    #[serde(default)]
    pub deep: bool,
}

/// `POST /v1/admin/mounts`: ask peer `peer` for a share and show it as bucket `bucket`.
#[derive(Deserialize, ToSchema)]
pub struct MountBody {
    pub bucket: String,
    pub peer: String,
    pub request: PeerShareRequest,
}

/// The mounts of this gateway.
#[derive(Serialize, ToSchema)]
pub struct MountsAnswer {
    pub status: String,
    #[schema(value_type = Vec<Object>)]
    pub mounts: Vec<crate::engine::MountRecord>,
}

/// `?patient=` filter.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct PatientFilter {
    pub patient: Option<String>,
}

/// `GET /v1/admin/events` parameters.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    #[serde(default)]
    pub from: u64,
    pub limit: Option<usize>,
    pub patient: Option<String>,
}

/// `POST /v1/patient/challenge`: who is asking, by id or by key.
#[derive(Deserialize, ToSchema)]
pub struct ChallengeBody {
    pub patient: Option<String>,
    /// The patient's Recipient, when the id is not at hand.
    pub recipient: Option<String>,
}

/// `POST /v1/recipient/challenge`: the grant a recipient is about to use.
#[derive(Deserialize, ToSchema)]
pub struct RecipientChallengeBody {
    pub grant: String,
}

/// `POST /v1/recipient/exchange`: one record of a grant, as BUCKET and KEY.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RecipientExchangeBody {
    pub grant: String,
    pub bucket: String,
    pub key: String,
}

/// What a recipient's challenge names instead of a patient: `grant:ID`. A `:` is never
/// in a patient id, so such a challenge never opens a patient's paths.
pub const RECIPIENT_CHALLENGE_PREFIX: &str = "grant:";

/// A challenge to sign (an `AuthChallenge` text) and whom it is for: the patient id asked
/// for, or `key:` and the Recipient when asked by key (never the patient's id).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ChallengeAnswer {
    pub patient: String,
    pub challenge: String,
}

/// `GET /v1/patient/requests?all=`.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct AllFilter {
    #[serde(default)]
    pub all: bool,
}

/// `POST /v1/patient/requests/{id}/approve`: a `SignedGrant` text.
#[derive(Deserialize, ToSchema)]
pub struct GrantBody {
    pub grant: String,
}

/// `POST /v1/patient/requests/{id}/deny`: a `SignedDenial` text.
#[derive(Deserialize, ToSchema)]
pub struct DenialBody {
    pub denial: String,
}

/// `POST /v1/patient/revocations`: a `SignedRevocation` text.
#[derive(Deserialize, ToSchema)]
pub struct RevocationBody {
    pub revocation: String,
}

/// `POST /v1/patient/key-change`: a `SignedKeyChange` text.
#[derive(Deserialize, ToSchema)]
pub struct KeyChangeBody {
    pub change: String,
}

pub use crate::engine::audit::{EntriesAnswer, EntryWithProof};
pub use crate::engine::keyrot::RolloverAnswer;

/// The latest published checkpoint.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CheckpointAnswer {
    pub size: u64,
    /// The C2SP signed note.
    pub note: String,
}

/// `GET /v1/log/proofs/inclusion?index=&size=`.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct InclusionQuery {
    pub index: u64,
    pub size: u64,
}

/// `GET /v1/log/proofs/consistency?from=&to=`.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct ConsistencyQuery {
    pub from: u64,
    pub to: u64,
}

/// A Merkle proof: hex hashes in RFC 9162 order.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ProofAnswer {
    pub hashes: Vec<String>,
}

/// `GET /v1/peer/objects?grant=`.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct GrantQuery {
    pub grant: String,
}

/// `GET /v1/peer/blob?...`: one sealed chunk of one blob of a shared record, with its leaf
/// and inclusion proof.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct BlobQuery {
    pub grant: String,
    pub bucket: String,
    pub key: String,
    /// Hex blob id (from the record's manifest).
    pub blob: String,
    /// Chunk index within the blob.
    pub chunk: u64,
}

// ---------------------------------------------------------------------------------------
// The OpenAPI document

#[derive(OpenApi)]
#[openapi(
    info(
        title = "medgate",
        description = "medgate's JSON API: administration, patient consent, exchange between institutions, and the transparency log. S3 clients use the S3 port instead."
    ),
    paths(
        log_checkpoint, log_inclusion, log_consistency, log_cosign, peer_rollover,
        admin_patients, admin_register, admin_patient, admin_break_glass, admin_requests, admin_new_request,
        admin_request, admin_grants, admin_access_keys, admin_new_access_key,
        admin_delete_access_key, admin_events, admin_verify, admin_mounts, admin_mount,
        patient_challenge, patient_me, patient_requests, patient_request, patient_approve,
        patient_deny, patient_grants, patient_revoke, patient_key_change, patient_entries,
        peer_new_request, peer_request, peer_objects, peer_exchange, peer_blob,
        recipient_challenge, recipient_exchange,
    ),
    modifiers(&Security),
    tags(
        (name = "log", description = "Public: checkpoints and proofs."),
        (name = "admin", description = "Bearer admin token."),
        (name = "patient", description = "Medgate-Patient: a signed, single-use challenge."),
        (name = "peer", description = "Medgate-Peer: the calling institution's signature over the request."),
        (name = "recipient", description = "Medgate-Patient: a challenge for one grant, signed with the grant's recipient key."),
    )
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "patient",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "Authorization",
                    "Medgate-Patient <SignedAuth text>: the patient's signature over a challenge from POST /v1/patient/challenge, the method, the path with its query and the SHA-256 of the body",
                ),
            )),
        );
        components.add_security_scheme(
            "peer",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "Authorization",
                    "Medgate-Peer <SignedPeerAuth text>: the calling institution's Ed25519 signature over method, host, path and full query, body hash, time and nonce",
                ),
            )),
        );
    }
}

/// The OpenAPI document as JSON.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

// ---------------------------------------------------------------------------------------
// Log (public)

/// The institution's key rollovers (public: each is signed by the key it replaces and by the
/// new one, so a peer that pinned the old key checks it and re-pins).
#[utoipa::path(get, path = "/v1/peer/rollover", tag = "peer",
    responses((status = 200, body = RolloverAnswer)))]
async fn peer_rollover(State(st): State<ApiState>) -> ApiResult<Json<RolloverAnswer>> {
    let rollovers = crate::engine::keyrot::published_rollovers(&st.0.engine.public)
        .await?
        .iter()
        .map(|r| r.to_text())
        .collect();
    Ok(Json(RolloverAnswer { rollovers }))
}

#[utoipa::path(get, path = "/v1/log/checkpoint", tag = "log",
    responses((status = 200, body = CheckpointAnswer), (status = 404, description = "nothing published yet")))]
async fn log_checkpoint(State(st): State<ApiState>) -> ApiResult<Json<CheckpointAnswer>> {
    let (size, note) =
        st.0.engine
            .private
            .checkpoints()
            .await?
            .pop()
            .ok_or_else(|| Error::NotFound("no checkpoint published yet".into()))?;
    Ok(Json(CheckpointAnswer { size, note }))
}

async fn check_size(engine: &Engine, size: u64) -> Result<()> {
    let have = engine.private.log_size().await?;
    if size == 0 || size > have {
        return Err(Error::InvalidArgument(format!(
            "tree size {size} is not in 1..={have}"
        )));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/log/proofs/inclusion", tag = "log", params(InclusionQuery),
    responses((status = 200, body = ProofAnswer)))]
async fn log_inclusion(
    State(st): State<ApiState>,
    Query(q): Query<InclusionQuery>,
) -> ApiResult<Json<ProofAnswer>> {
    check_size(&st.0.engine, q.size).await?;
    if q.index >= q.size {
        return Err(Error::InvalidArgument(format!(
            "index {} is not below size {}",
            q.index, q.size
        ))
        .into());
    }
    let proof = crate::engine::log::inclusion_proof(&*st.0.engine.private, q.index, q.size).await?;
    Ok(Json(ProofAnswer {
        hashes: proof.hashes().map(hex::encode).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/log/proofs/consistency", tag = "log", params(ConsistencyQuery),
    responses((status = 200, body = ProofAnswer)))]
async fn log_consistency(
    State(st): State<ApiState>,
    Query(q): Query<ConsistencyQuery>,
) -> ApiResult<Json<ProofAnswer>> {
    check_size(&st.0.engine, q.to).await?;
    if q.from > q.to {
        return Err(Error::InvalidArgument(format!("from {} is above to {}", q.from, q.to)).into());
    }
    let proof = crate::engine::log::consistency_proof(&*st.0.engine.private, q.from, q.to).await?;
    Ok(Json(ProofAnswer {
        hashes: proof.hashes().map(hex::encode).collect(),
    }))
}

/// `POST /v1/log/cosignatures`: the latest checkpoint, cosigned by a witness.
#[derive(Deserialize, ToSchema)]
pub struct CosignBody {
    /// The signed note with the witness's cosignature line added.
    pub note: String,
}

#[utoipa::path(post, path = "/v1/log/cosignatures", tag = "log", request_body = CosignBody,
    responses((status = 200, body = Answer, description = "`done`: the cosignature is published with the checkpoint"),
              (status = 403, description = "not a configured witness's valid cosignature of the latest checkpoint")))]
async fn log_cosign(State(st): State<ApiState>, body: Bytes) -> ApiResult<Json<AdminResponse>> {
    // No caller authentication: the cosignature itself is checked against the peers' keys.
    let b: CosignBody = parse_json(&body)?;
    let witnesses: Vec<Recipient> = st.0.peers.iter().map(|p| p.recipient.clone()).collect();
    let engine = &st.0.engine;
    let who = crate::engine::log::add_cosignature(
        &*engine.private,
        &engine.public,
        &engine.institution,
        &witnesses,
        &b.note,
    )
    .await?;
    Ok(Json(AdminResponse::Done {
        message: format!("cosignature by {} published", st.0.peers[who].name),
    }))
}

// ---------------------------------------------------------------------------------------
// Admin

#[utoipa::path(get, path = "/v1/admin/patients", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = Answer, description = "`patients`")))]
async fn admin_patients(
    State(st): State<ApiState>,
    headers: HeaderMap,
) -> ApiResult<Json<AdminResponse>> {
    st.admin(&headers)?;
    st.admin_call(AdminRequest::PatientList).await
}

#[utoipa::path(post, path = "/v1/admin/patients", tag = "admin", security(("admin" = [])),
    request_body = RegisterBody, responses((status = 200, body = Answer, description = "`patient`")))]
async fn admin_register(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<AdminResponse>> {
    st.admin(&headers)?;
    let b: RegisterBody = parse_json(&body)?;
    st.admin_call(AdminRequest::PatientRegister {
        id: b.id,
        recipient: b.recipient,
        proof: b.proof,
    })
    .await
}

#[utoipa::path(get, path = "/v1/admin/patients/{id}", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Answer, description = "`patient`")))]
async fn admin_patient(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<AdminResponse>> {
    st.admin(&headers)?;
    st.admin_call(AdminRequest::PatientShow { id }).await
}

#[utoipa::path(post, path = "/v1/admin/patients/{id}/break-glass", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path)), request_body = BreakGlassBody,
    responses((status = 200, body = Answer, description = "`done`"), (status = 403, description = "the proof does not verify")))]
async fn admin_break_glass(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<AdminResponse>> {
    st.admin(&headers)?;
    let b: BreakGlassBody = parse_json(&body)?;
    st.admin_call(AdminRequest::PatientBreakGlass {
        id,
        recipient: b.recipient,
        proof: b.proof,
        reason: b.reason,
        admin: b.admin,
    })
    .await
}

#[utoipa::path(get, path = "/v1/admin/requests", tag = "admin", security(("admin" = [])),
    params(PatientFilter), responses((status = 200, body = Answer, description = "`requests`")))]
async fn admin_requests(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<PatientFilter>,
) -> ApiResult<Json<AdminResponse>> {
    st.admin(&headers)?;
    st.admin_call(AdminRequest::Requests { patient: q.patient })
        .await
}

#[utoipa::path(post, path = "/v1/admin/requests", tag = "admin", security(("admin" = [])),
    request_body = NewShareRequest, responses((status = 200, body = Answer, description = "`request`")))]
async fn admin_new_request(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<AdminResponse>> {
    st.admin(&headers)?;
    let b: NewShareRequest = parse_json(&body)?;
    st.admin_call(AdminRequest::ShareRequest(Box::new(b))).await
}

#[utoipa::path(get, path = "/v1/admin/requests/{id}", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Answer, description = "`request`")))]
async fn admin_request(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<AdminResponse>> {
    st.admin(&headers)?;
    st.admin_call(AdminRequest::RequestGet { id }).await
}

#[utoipa::path(get, path = "/v1/admin/grants", tag = "admin", security(("admin" = [])),
    params(PatientFilter), responses((status = 200, body = Answer, description = "`grants`")))]
async fn admin_grants(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<PatientFilter>,
) -> ApiResult<Json<AdminResponse>> {
    st.admin(&headers)?;
    st.admin_call(AdminRequest::Grants { patient: q.patient })
        .await
}

#[utoipa::path(get, path = "/v1/admin/access-keys", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = Answer, description = "`access-keys` (ids and buckets, never secrets)")))]
async fn admin_access_keys(
    State(st): State<ApiState>,
    headers: HeaderMap,
) -> ApiResult<Json<AdminResponse>> {
    st.admin(&headers)?;
    st.admin_call(AdminRequest::AccessKeyList).await
}

#[utoipa::path(post, path = "/v1/admin/access-keys", tag = "admin", security(("admin" = [])),
    request_body = AccessKeyBody,
    responses((status = 200, body = Answer, description = "`access-key-created`, with the secret, shown once")))]
async fn admin_new_access_key(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<AdminResponse>> {
    st.admin(&headers)?;
    let b: AccessKeyBody = if body.is_empty() {
        AccessKeyBody {
            buckets: Vec::new(),
            label_patients: false,
        }
    } else {
        parse_json(&body)?
    };
    st.admin_call(AdminRequest::AccessKeyCreate {
        buckets: b.buckets,
        label_patients: b.label_patients,
    })
    .await
}

#[utoipa::path(delete, path = "/v1/admin/access-keys/{id}", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Answer, description = "`deleted`")))]
async fn admin_delete_access_key(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<AdminResponse>> {
    st.admin(&headers)?;
    st.admin_call(AdminRequest::AccessKeyDelete { id }).await
}

#[utoipa::path(get, path = "/v1/admin/events", tag = "admin", security(("admin" = [])),
    params(EventsQuery), responses((status = 200, body = Answer, description = "`events`")))]
async fn admin_events(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<AdminResponse>> {
    st.admin(&headers)?;
    st.admin_call(AdminRequest::Events {
        from: q.from,
        limit: q.limit.unwrap_or(1000),
        patient: q.patient,
    })
    .await
}

#[utoipa::path(post, path = "/v1/admin/verify", tag = "admin", security(("admin" = [])),
    request_body = VerifyBody, responses((status = 200, body = Answer, description = "`verified`, with the problems found")))]
async fn admin_verify(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<AdminResponse>> {
    st.admin(&headers)?;
    let deep = if body.is_empty() {
        false
    } else {
        parse_json::<VerifyBody>(&body)?.deep
    };
    st.admin_call(AdminRequest::Verify { deep }).await
}

fn remote(st: &ApiState) -> Result<&Arc<Remote>> {
    st.0.remote
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("this gateway has no [[peers]] with a url".into()))
}

#[utoipa::path(get, path = "/v1/admin/mounts", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = MountsAnswer)))]
async fn admin_mounts(
    State(st): State<ApiState>,
    headers: HeaderMap,
) -> ApiResult<Json<MountsAnswer>> {
    st.admin(&headers)?;
    let mounts = match &st.0.remote {
        Some(r) => r.mounts_with_state().await,
        None => Vec::new(),
    };
    Ok(Json(MountsAnswer {
        status: "mounts".into(),
        mounts,
    }))
}

#[utoipa::path(post, path = "/v1/admin/mounts", tag = "admin", security(("admin" = [])),
    request_body = MountBody, responses((status = 200, body = MountsAnswer)))]
async fn admin_mount(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<MountsAnswer>> {
    st.admin(&headers)?;
    let b: MountBody = parse_json(&body)?;
    let m = remote(&st)?.ask(&b.peer, &b.bucket, &b.request).await?;
    Ok(Json(MountsAnswer {
        status: "mounts".into(),
        mounts: vec![m],
    }))
}

// ---------------------------------------------------------------------------------------
// Patients

#[utoipa::path(post, path = "/v1/patient/challenge", tag = "patient",
    request_body = ChallengeBody, responses((status = 200, body = ChallengeAnswer)))]
async fn patient_challenge(
    State(st): State<ApiState>,
    body: Bytes,
) -> ApiResult<Json<ChallengeAnswer>> {
    let b: ChallengeBody = parse_json(&body)?;
    // No store lookup, for any caller: the answer and its cost are the same whether or
    // not a patient has this id or key.
    let subject = match (b.patient, b.recipient) {
        (Some(id), _) => {
            crate::engine::sharing::check_patient_id(&id)?;
            id
        }
        (None, Some(r)) => {
            let key: Recipient = r
                .trim()
                .parse()
                .map_err(|_| Error::InvalidArgument("recipient: not a medgate1... key".into()))?;
            format!("{KEY_SUBJECT}{key}")
        }
        (None, None) => {
            return Err(Error::InvalidArgument("give patient or recipient".into()).into())
        }
    };
    let challenge =
        st.0.challenge_key
            .issue(st.0.engine.institution_id(), &subject, crate::now_ms());
    Ok(Json(ChallengeAnswer {
        patient: subject,
        challenge: challenge.to_text(),
    }))
}

/// Issues a challenge for a grant in force; the recipient signs it with the grant's
/// recipient key to call `/v1/recipient/exchange`.
#[utoipa::path(post, path = "/v1/recipient/challenge", tag = "recipient",
    request_body = RecipientChallengeBody, responses((status = 200, body = ChallengeAnswer)))]
async fn recipient_challenge(
    State(st): State<ApiState>,
    body: Bytes,
) -> ApiResult<Json<ChallengeAnswer>> {
    let b: RecipientChallengeBody = parse_json(&body)?;
    // Only a grant in force gets a challenge (an unknown, revoked or expired one is
    // refused with its reason, as every exchange call would be).
    st.0.engine.grant_in_force(&b.grant).await?;
    let now = crate::now_ms();
    let subject = format!("{RECIPIENT_CHALLENGE_PREFIX}{}", b.grant);
    let challenge =
        st.0.challenge_key
            .issue(st.0.engine.institution_id(), &subject, now);
    Ok(Json(ChallengeAnswer {
        patient: subject,
        challenge: challenge.to_text(),
    }))
}

/// A recipient's read of a shared record from anywhere: the manifest and the
/// recipient's wrapped key, for a request signed with the grant's recipient key (a
/// challenge from `/v1/recipient/challenge`). The grant is checked as on every read;
/// the blobs come from the public store.
#[utoipa::path(post, path = "/v1/recipient/exchange", tag = "recipient", security(("patient" = [])),
    request_body = RecipientExchangeBody, responses((status = 200, body = Answer, description = "`exchange`")))]
async fn recipient_exchange(
    State(st): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<AdminResponse>> {
    let b: RecipientExchangeBody = parse_json(&body)?;
    let signed = SignedAuth::from_text(authorization(&headers, PATIENT_SCHEME)?)
        .map_err(|e| Error::Unauthorized(format!("recipient token: {e}")))?;
    let challenge = st.issued_challenge(&signed.token.challenge, "/v1/recipient/challenge")?;
    if challenge.patient_id != format!("{RECIPIENT_CHALLENGE_PREFIX}{}", b.grant) {
        return Err(
            Error::Unauthorized("the challenge was issued for another grant".into()).into(),
        );
    }
    let grant = st.0.engine.grant_in_force(&b.grant).await?;
    let key: Recipient = grant
        .recipient
        .parse()
        .map_err(|_| Error::Corrupt("a grant's recipient".into()))?;
    let now = crate::now_ms();
    let expected = AuthToken::new(challenge.clone(), method.as_str(), &target(&uri), &body);
    signed
        .verify(&key, &expected, now, AUTH_WINDOW_MS)
        .map_err(|e| Error::Unauthorized(format!("recipient signature: {e}")))?;
    // Used up only once its signature verified, as a patient's.
    st.0.used_challenges.use_once(
        challenge.challenge,
        challenge.issued_ms.saturating_add(AUTH_WINDOW_MS),
        now,
    )?;
    st.admin_call(AdminRequest::Exchange {
        grant: b.grant,
        bucket: b.bucket,
        key: b.key,
    })
    .await
}

#[utoipa::path(get, path = "/v1/patient/me", tag = "patient", security(("patient" = [])),
    responses((status = 200, body = Answer, description = "`patient`")))]
async fn patient_me(
    State(st): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<AdminResponse>> {
    let id = st.patient(&method, &uri, &headers, b"").await?;
    st.admin_call(AdminRequest::PatientShow { id }).await
}

#[utoipa::path(get, path = "/v1/patient/requests", tag = "patient", security(("patient" = [])),
    params(AllFilter), responses((status = 200, body = Answer, description = "`requests`")))]
async fn patient_requests(
    State(st): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<AllFilter>,
) -> ApiResult<Json<AdminResponse>> {
    let id = st.patient(&method, &uri, &headers, b"").await?;
    let mut r = admin::execute(&st.0.admin, AdminRequest::Requests { patient: Some(id) }).await?;
    if let AdminResponse::Requests { requests } = &mut r {
        if !q.all {
            requests.retain(|v| v.state == crate::engine::RequestState::Pending);
        }
    }
    Ok(Json(r))
}

/// The request `id` if it is `patient`'s (another patient's looks like none).
async fn own_request(st: &ApiState, patient: &str, id: &str) -> Result<AdminResponse> {
    let r = admin::execute(&st.0.admin, AdminRequest::RequestGet { id: id.into() }).await?;
    match &r {
        AdminResponse::Request { request } if request.patient == patient => Ok(r),
        _ => Err(Error::NotFound(format!("no share request {id} for you"))),
    }
}

#[utoipa::path(get, path = "/v1/patient/requests/{id}", tag = "patient", security(("patient" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Answer, description = "`request`")))]
async fn patient_request(
    State(st): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<AdminResponse>> {
    let patient = st.patient(&method, &uri, &headers, b"").await?;
    Ok(Json(own_request(&st, &patient, &id).await?))
}

#[utoipa::path(post, path = "/v1/patient/requests/{id}/approve", tag = "patient", security(("patient" = [])),
    params(("id" = String, Path)), request_body = GrantBody,
    responses((status = 200, body = Answer, description = "`rewrapped`"), (status = 403, description = "grant refused")))]
async fn patient_approve(
    State(st): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<AdminResponse>> {
    let patient = st.patient(&method, &uri, &headers, &body).await?;
    own_request(&st, &patient, &id).await?;
    let b: GrantBody = parse_json(&body)?;
    st.admin_call(AdminRequest::Approve {
        request_id: id,
        grant: b.grant,
    })
    .await
}

#[utoipa::path(post, path = "/v1/patient/requests/{id}/deny", tag = "patient", security(("patient" = [])),
    params(("id" = String, Path)), request_body = DenialBody,
    responses((status = 200, body = Answer, description = "`done`")))]
async fn patient_deny(
    State(st): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<AdminResponse>> {
    let patient = st.patient(&method, &uri, &headers, &body).await?;
    own_request(&st, &patient, &id).await?;
    let b: DenialBody = parse_json(&body)?;
    st.admin_call(AdminRequest::Deny {
        request_id: id,
        denial: b.denial,
    })
    .await
}

#[utoipa::path(get, path = "/v1/patient/grants", tag = "patient", security(("patient" = [])),
    responses((status = 200, body = Answer, description = "`grants`")))]
async fn patient_grants(
    State(st): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<AdminResponse>> {
    let id = st.patient(&method, &uri, &headers, b"").await?;
    st.admin_call(AdminRequest::Grants { patient: Some(id) })
        .await
}

#[utoipa::path(post, path = "/v1/patient/revocations", tag = "patient", security(("patient" = [])),
    request_body = RevocationBody, responses((status = 200, body = Answer, description = "`done`")))]
async fn patient_revoke(
    State(st): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<AdminResponse>> {
    let patient = st.patient(&method, &uri, &headers, &body).await?;
    let b: RevocationBody = parse_json(&body)?;
    // The revocation is checked against the patient's key on file by the engine; the
    // grant must also be this patient's.
    let rev = keyring::consent::SignedRevocation::from_text(&b.revocation)?;
    let grant_id = hex::encode(rev.revocation.grant_id);
    match st.0.engine.private.grant(&grant_id).await? {
        Some(g) if g.patient_id == patient => {}
        _ => return Err(Error::NotFound(format!("no grant {grant_id} of yours")).into()),
    }
    st.admin_call(AdminRequest::Revoke {
        revocation: b.revocation,
    })
    .await
}

#[utoipa::path(post, path = "/v1/patient/key-change", tag = "patient", security(("patient" = [])),
    request_body = KeyChangeBody, responses((status = 200, body = Answer, description = "`done`")))]
async fn patient_key_change(
    State(st): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<AdminResponse>> {
    st.patient(&method, &uri, &headers, &body).await?;
    let b: KeyChangeBody = parse_json(&body)?;
    st.admin_call(AdminRequest::PatientRekey { change: b.change })
        .await
}

#[utoipa::path(get, path = "/v1/patient/entries", tag = "patient", security(("patient" = [])),
    responses((status = 200, body = EntriesAnswer)))]
async fn patient_entries(
    State(st): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<EntriesAnswer>> {
    let patient = st.patient(&method, &uri, &headers, b"").await?;
    Ok(Json(entries_for(&st.0.engine, &patient).await?))
}

/// Every log entry about `patient`, each with an inclusion proof against the newest
/// checkpoint (published first, so the public store has it).
///
/// # Errors
/// Store failures; nothing published yet.
pub async fn entries_for(engine: &Engine, patient: &str) -> Result<EntriesAnswer> {
    crate::engine::log::publish(&*engine.private, &engine.public, &engine.institution).await?;
    let (tree_size, checkpoint) = engine
        .private
        .checkpoints()
        .await?
        .pop()
        .ok_or_else(|| Error::NotFound("no checkpoint published yet".into()))?;
    let mut entries = Vec::new();
    let mut from = 0;
    while from < tree_size {
        let batch = engine.private.events(from, 10_000).await?;
        let Some(last) = batch.last() else { break };
        from = last.seq + 1;
        for event in batch {
            if event.seq >= tree_size || event.patient.as_deref() != Some(patient) {
                continue;
            }
            let proof =
                crate::engine::log::inclusion_proof(&*engine.private, event.seq, tree_size).await?;
            entries.push(EntryWithProof {
                proof: proof.hashes().map(hex::encode).collect(),
                event,
            });
        }
    }
    Ok(EntriesAnswer {
        checkpoint,
        tree_size,
        entries,
    })
}

// ---------------------------------------------------------------------------------------
// Peers

#[utoipa::path(post, path = "/v1/peer/requests", tag = "peer", security(("peer" = [])),
    request_body = PeerShareRequest, responses((status = 200, body = SignedAnswerText,
        description = "a SignedPeerAnswer of kind 0x01 (request state), context medgate/v1/request-answer")))]
async fn peer_new_request(
    State(st): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<SignedAnswerText>> {
    let (peer, nonce) = st.peer(&method, &uri, &headers, &body)?;
    let b: PeerShareRequest = parse_json(&body)?;
    let n = NewShareRequest {
        patient: b.patient,
        scope: b.scope,
        bucket: b.bucket,
        path: b.path,
        include_future: b.include_future,
        // The caller asks for itself, and who it is comes from our configuration.
        recipient: peer.recipient.to_string(),
        requester: peer.name.clone(),
        purpose_text: b.purpose_text,
        purpose_code: b.purpose_code,
        expires_ms: b.expires_ms,
    };
    let req = admin::new_request(&st.0.admin, &n)?;
    let rec =
        st.0.engine
            .create_peer_request(&req.to_text(), &format!("peer:{}", peer.name))
            .await?;
    Ok(request_answer(&st, &peer, nonce, &rec).await?)
}

/// A request's state as a signed answer: pending, denied, or approved with its grant and
/// whether that grant is in force, revoked or expired.
async fn request_answer(
    st: &ApiState,
    peer: &Peer,
    nonce: [u8; 16],
    rec: &crate::engine::ShareRequestRecord,
) -> Result<Json<SignedAnswerText>> {
    use crate::engine::RequestState;
    let (status, grant) = match (rec.state, rec.grant.as_deref()) {
        (RequestState::Approved, Some(g)) => {
            let status = match st.0.engine.private.grant(g).await? {
                // Expiry first: the sweeper also stamps expired grants as revoked.
                Some(r) if r.expires_ms <= crate::now_ms() => RequestStatus::Expired,
                Some(r) if r.revoked_ms.is_some() => RequestStatus::Revoked,
                _ => RequestStatus::Approved,
            };
            (status, g)
        }
        (RequestState::Denied, _) => (RequestStatus::Denied, ""),
        _ => (RequestStatus::Pending, ""),
    };
    st.sign_answer(
        peer,
        nonce,
        grant,
        None,
        AnswerBody::Request {
            request_id: rec.id.clone(),
            status,
        },
    )
}

#[utoipa::path(get, path = "/v1/peer/requests/{id}", tag = "peer", security(("peer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = SignedAnswerText,
        description = "a SignedPeerAnswer of kind 0x01 (request state), context medgate/v1/request-answer")))]
async fn peer_request(
    State(st): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<SignedAnswerText>> {
    let (peer, nonce) = st.peer(&method, &uri, &headers, b"")?;
    let (rec, req) = st.0.engine.request(&id).await?;
    if !req.recipient.ct_eq(&peer.recipient) {
        return Err(Error::NotFound(format!("no share request {id} for you")).into());
    }
    Ok(request_answer(&st, &peer, nonce, &rec).await?)
}

/// The grant `id`, in force and issued to `peer` (its whole Recipient).
async fn peer_grant(
    st: &ApiState,
    peer: &Peer,
    id: &str,
) -> Result<(crate::engine::GrantRecord, SignedGrant)> {
    let g = st.0.engine.grant_in_force(id).await?;
    let signed = SignedGrant::from_text(&g.grant)?;
    if !signed.grant.recipient.ct_eq(&peer.recipient) {
        return Err(Error::GrantRefused(format!("grant {id} is not yours")));
    }
    Ok((g, signed))
}

/// Whether record version `m` at `bucket`/`key` is one grant `g` lets its recipient read:
/// the patient's, in scope for its time, and wrapped for the recipient.
async fn peer_may_read(
    st: &ApiState,
    g: &crate::engine::GrantRecord,
    signed: &SignedGrant,
    bucket: &str,
    key: &str,
    m: &keyring::Manifest,
) -> Result<bool> {
    if m.patient.as_deref() != Some(g.patient_id.as_str())
        || !signed
            .grant
            .scope
            .covers_version(bucket, key, m.last_modified_ms, g.issued_ms)
    {
        return Ok(false);
    }
    let recipient = &signed.grant.recipient;
    Ok(st
        .0
        .engine
        .private
        .stanzas(m.dek_id)
        .await?
        .iter()
        .any(|s| s.is_for(recipient)))
}

#[utoipa::path(get, path = "/v1/peer/objects", tag = "peer", security(("peer" = [])),
    params(GrantQuery), responses((status = 200, body = SignedAnswerText,
        description = "a SignedPeerAnswer of kind 0x02 (listing), context medgate/v1/objects-answer")))]
async fn peer_objects(
    State(st): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<GrantQuery>,
) -> ApiResult<Json<SignedAnswerText>> {
    let (peer, nonce) = st.peer(&method, &uri, &headers, b"")?;
    let (g, signed) = peer_grant(&st, &peer, &q.grant).await?;
    let mut objects = Vec::new();
    for (bucket, key, m) in st.0.engine.private.patient_objects(&g.patient_id).await? {
        if !signed.grant.scope.covers(&bucket, &key) {
            continue;
        }
        if peer_may_read(&st, &g, &signed, &bucket, &key, &m).await? {
            if objects.len() == keyring::peer::MAX_LISTED_OBJECTS {
                return Err(Error::InvalidArgument(format!(
                    "grant {} covers more than {} records, more than one listing may hold",
                    q.grant,
                    keyring::peer::MAX_LISTED_OBJECTS
                ))
                .into());
            }
            objects.push(ListedObject {
                bucket,
                key,
                size: m.size,
                etag: m.etag.clone(),
                last_modified_ms: m.last_modified_ms,
            });
        }
    }
    Ok(st.sign_answer(&peer, nonce, &q.grant, None, AnswerBody::Objects(objects))?)
}

#[utoipa::path(post, path = "/v1/peer/exchange", tag = "peer", security(("peer" = [])),
    request_body = ExchangeRequest,
    responses((status = 200, body = SignedAnswerText,
        description = "a SignedPeerAnswer of kind 0x03 (manifest and the caller's stanza), context medgate/v1/exchange-answer"),
        (status = 403, description = "grant not in force or record not covered")))]
async fn peer_exchange(
    State(st): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<SignedAnswerText>> {
    let (peer, nonce) = st.peer(&method, &uri, &headers, &body)?;
    let b: ExchangeRequest = parse_json(&body)?;
    peer_grant(&st, &peer, &b.grant).await?;
    let (m, stanza) =
        st.0.engine
            .exchange(&b.grant, &b.bucket, &b.key, &format!("peer:{}", peer.name))
            .await?;
    Ok(st.sign_answer(
        &peer,
        nonce,
        &b.grant,
        Some((&b.bucket, &b.key)),
        AnswerBody::Exchange {
            manifest: m.encode(),
            stanza: stanza.to_bytes(),
        },
    )?)
}

#[utoipa::path(get, path = "/v1/peer/blob", tag = "peer", security(("peer" = [])),
    params(BlobQuery),
    responses((status = 200, description = "a ChunkAnswer (keyring::peer): the sealed chunk with its leaf and inclusion proof", content_type = "application/octet-stream"),
              (status = 403, description = "grant not in force, record version not covered, or no key for the caller")))]
async fn peer_blob(
    State(st): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<BlobQuery>,
) -> ApiResult<Response> {
    let (peer, _) = st.peer(&method, &uri, &headers, b"")?;
    let (g, signed) = peer_grant(&st, &peer, &q.grant).await?;
    let engine = &st.0.engine;
    let m = engine
        .private
        .manifest(&q.bucket, &q.key)
        .await?
        .ok_or_else(|| Error::NoSuchKey {
            bucket: q.bucket.clone(),
            key: q.key.clone(),
        })?;
    if !peer_may_read(&st, &g, &signed, &q.bucket, &q.key, &m).await? {
        return Err(Error::GrantRefused(format!(
            "{}/{} (this version) is not covered by grant {}, or holds no key for you",
            q.bucket, q.key, q.grant
        ))
        .into());
    }
    let part = m
        .parts
        .iter()
        .find(|p| p.blob.to_hex() == q.blob)
        .ok_or_else(|| Error::GrantRefused("that blob is not part of the record".into()))?;
    let answer = engine.peer_chunk(part, q.chunk).await?;
    Ok(Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(answer.encode()))
        .map_err(|e| Error::Internal(e.to_string()))?)
}
