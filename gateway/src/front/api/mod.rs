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
//! The paths are the route table's ([`crate::routes::Route`]): [`router`] serves each row with
//! its handler, and the clients build their paths from the same rows. Each kind of caller
//! is an extractor (`auth.rs`: `AdminAuth`, `PatientAuth`, `PeerAuth`, `RecipientAuth`) that
//! a handler takes as an argument; a refused caller never reaches the handler.
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
use axum::routing::{on, MethodFilter, MethodRouter};
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
use crate::routes::Route;
use crate::{Error, Result};

mod admin_routes;
mod auth;
mod log_routes;
mod patient_routes;
mod peer_routes;
#[cfg(test)]
mod tests;

use admin_routes::*;
use auth::*;
pub use log_routes::CosignBody;
use log_routes::*;
pub use patient_routes::entries_for;
use patient_routes::*;
use peer_routes::*;

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

/// The API's routes: every row of the route table ([`crate::routes::Route`]) with its
/// handler, so the paths served are exactly the ones the clients build.
pub fn router(state: ApiState) -> Router {
    Route::ALL
        .iter()
        .fold(Router::new(), |router, &route| {
            router.route(route.template(), handler(route))
        })
        .fallback(|| async {
            ApiError(Error::NotFound(
                "no such API path; see /openapi.json".into(),
            ))
        })
        .with_state(state)
        .layer(axum::middleware::map_response(with_iso_times))
}

/// The handler of `route`, on the route's method. A route added to the table without a
/// handler here does not compile.
fn handler(route: Route) -> MethodRouter<ApiState> {
    let m = method_filter(&route.method());
    match route {
        Route::OpenApi => on(m, openapi_json),
        Route::LogCheckpoint => on(m, log_checkpoint),
        Route::LogInclusion => on(m, log_inclusion),
        Route::LogConsistency => on(m, log_consistency),
        Route::LogCosign => on(m, log_cosign),
        Route::AdminPatients => on(m, admin_patients),
        Route::AdminRegister => on(m, admin_register),
        Route::AdminPatient => on(m, admin_patient),
        Route::AdminBreakGlass => on(m, admin_break_glass),
        Route::AdminRequests => on(m, admin_requests),
        Route::AdminNewRequest => on(m, admin_new_request),
        Route::AdminRequest => on(m, admin_request),
        Route::AdminGrants => on(m, admin_grants),
        Route::AdminAccessKeys => on(m, admin_access_keys),
        Route::AdminNewAccessKey => on(m, admin_new_access_key),
        Route::AdminDeleteAccessKey => on(m, admin_delete_access_key),
        Route::AdminEvents => on(m, admin_events),
        Route::AdminVerify => on(m, admin_verify),
        Route::AdminMounts => on(m, admin_mounts),
        Route::AdminMount => on(m, admin_mount),
        Route::PatientChallenge => on(m, patient_challenge),
        Route::PatientMe => on(m, patient_me),
        Route::PatientRequests => on(m, patient_requests),
        Route::PatientRequest => on(m, patient_request),
        Route::PatientApprove => on(m, patient_approve),
        Route::PatientDeny => on(m, patient_deny),
        Route::PatientGrants => on(m, patient_grants),
        Route::PatientRevoke => on(m, patient_revoke),
        Route::PatientKeyChange => on(m, patient_key_change),
        Route::PatientEntries => on(m, patient_entries),
        Route::RecipientChallenge => on(m, recipient_challenge),
        Route::RecipientExchange => on(m, recipient_exchange),
        Route::PeerNewRequest => on(m, peer_new_request),
        Route::PeerRequest => on(m, peer_request),
        Route::PeerObjects => on(m, peer_objects),
        Route::PeerExchange => on(m, peer_exchange),
        Route::PeerBlob => on(m, peer_blob),
        Route::PeerRollover => on(m, peer_rollover),
    }
}

/// axum's filter for one of the table's methods (GET also answers HEAD, as axum's `get`).
fn method_filter(method: &Method) -> MethodFilter {
    if method == Method::POST {
        MethodFilter::POST
    } else if method == Method::DELETE {
        MethodFilter::DELETE
    } else {
        MethodFilter::GET
    }
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
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ChallengeBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// The patient's Recipient, when the id is not at hand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
}

/// `POST /v1/recipient/challenge`: the grant a recipient is about to use.
#[derive(Serialize, Deserialize, ToSchema)]
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
#[derive(Serialize, Deserialize, ToSchema)]
pub struct GrantBody {
    pub grant: String,
}

/// `POST /v1/patient/requests/{id}/deny`: a `SignedDenial` text.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DenialBody {
    pub denial: String,
}

/// `POST /v1/patient/revocations`: a `SignedRevocation` text.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RevocationBody {
    pub revocation: String,
}

/// `POST /v1/patient/key-change`: a `SignedKeyChange` text.
#[derive(Serialize, Deserialize, ToSchema)]
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
