//! Local administration: access keys and the institution's public key.
//!
//! The same operations run two ways. With the server stopped, the binary opens the
//! private store and calls them directly. With the server running (sled lets one process
//! open the store), the binary sends one JSON line over the 0600 Unix socket
//! `DATA_DIR/admin.sock` and the server calls them. Only local users who can read the
//! data dir can reach the socket.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::engine::gc::GcReport;
use crate::engine::record::Engine;
use crate::engine::sharing::RewrapReport;
use crate::engine::{Event, GrantRecord, PatientRecord, RequestState, ShareRequestRecord};
use crate::{Error, Result};

mod client;

pub use client::*;

/// A request on the admin socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum AdminRequest {
    Recipient,
    AccessKeyCreate {
        buckets: Vec<String>,
        /// May label records with a patient.
        #[serde(default)]
        label_patients: bool,
    },
    AccessKeyList,
    AccessKeyDelete {
        id: String,
    },
    Gc {
        grace_secs: u64,
        apply: bool,
    },
    PatientRegister {
        id: String,
        recipient: String,
        proof: String,
    },
    PatientList,
    PatientShow {
        id: String,
    },
    /// The patient whose registered key is `recipient` (for the patient CLI).
    PatientWhoami {
        recipient: String,
    },
    ShareRequest(Box<NewShareRequest>),
    Requests {
        patient: Option<String>,
    },
    RequestGet {
        id: String,
    },
    Approve {
        request_id: String,
        grant: String,
    },
    Deny {
        request_id: String,
        denial: String,
    },
    Revoke {
        revocation: String,
    },
    Grants {
        patient: Option<String>,
    },
    Events {
        from: u64,
        limit: usize,
        patient: Option<String>,
    },
    /// Check the log, manifests and (deep) blobs.
    Verify {
        deep: bool,
    },
    /// New data keys for the records in scope (needs the running server); `since` resumes
    /// a run that started at that log index.
    Rotate {
        scope: crate::engine::rotate::RotateScope,
        since: Option<u64>,
    },
    /// The log's size (where a rotation starts).
    LogSize,
    /// After `medgate keys rotate`'s handover: wraps every record's data key to the current
    /// institution key and removes the previous keys' stanzas (resumable; see `keyrot`).
    KeysRewrap,
    /// The published key rollovers (text forms), oldest first.
    Rollovers,
    /// A patient's key change, signed by the old key (`SignedKeyChange` text).
    PatientRekey {
        change: String,
    },
    /// Break glass: replace a patient's lost key (new key's proof and a reason, logged).
    PatientBreakGlass {
        id: String,
        recipient: String,
        proof: String,
        reason: String,
        /// Who breaks the glass (shown in the log).
        admin: String,
    },
    /// Ask a peer for a share and show it here as `bucket` (needs the running server).
    Mount {
        bucket: String,
        peer: String,
        request: crate::engine::remote::PeerShareRequest,
    },
    /// The buckets mounted from peers.
    Mounts,
    /// A recipient's read of a shared record: its manifest and the recipient's stanza.
    Exchange {
        grant: String,
        bucket: String,
        key: String,
    },
    /// A backup encrypted to `recipient`, streamed back (see [`crate::engine::backup`]); it carries
    /// the institution identity file, which the server does not know the path of.
    Backup {
        recipient: String,
        identity_file: crate::engine::backup::FileBytes,
        /// The files of a key rotation under way, by their names in the data dir
        /// (`institution.key.old-<hex>`, `institution.key.next`, `keys-rotate.state`):
        /// records not yet re-wrapped open only with a previous identity.
        #[serde(default)]
        rotation_files: Vec<(String, crate::engine::backup::FileBytes)>,
    },
}

/// A share request as an admin makes it (on behalf of a recipient key); the gateway adds
/// its own institution id, the time and a nonce.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewShareRequest {
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
    pub recipient: String,
    pub requester: String,
    pub purpose_text: String,
    pub purpose_code: String,
    pub expires_ms: u64,
}

/// A share request as shown to people: the request's own words and what the gateway's
/// configuration says about the recipient.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestView {
    pub id: String,
    pub state: RequestState,
    pub patient: String,
    /// The configured peer name for the recipient key, if it is a configured peer.
    pub recipient_name: Option<String>,
    pub recipient: String,
    pub requester_says: String,
    pub scope: String,
    pub purpose_code: String,
    pub purpose_text: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub grant: Option<String>,
    /// The request's text form (what a grant signs, by hash).
    pub text: String,
    /// How many of the patient's records the request reaches now (0: a request that
    /// shares nothing unless it includes future records). Shown to the admin and the
    /// patient, never to a peer.
    #[serde(default)]
    pub matching_records: Option<u64>,
}

/// The answer to an [`AdminRequest`]. No `Debug`: it may carry a new secret.
#[derive(Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum AdminResponse {
    Recipient {
        recipient: String,
    },
    AccessKeyCreated {
        id: String,
        secret: Secret,
        buckets: Vec<String>,
        #[serde(default)]
        label_patients: bool,
    },
    AccessKeys {
        keys: Vec<AccessKeyInfo>,
    },
    Deleted {
        id: String,
        existed: bool,
    },
    Gc {
        report: GcSummary,
    },
    Patient {
        patient: PatientRecord,
        records: u64,
    },
    Patients {
        patients: Vec<PatientRecord>,
    },
    Requests {
        requests: Vec<RequestView>,
    },
    Request {
        request: RequestView,
    },
    Rewrapped {
        report: RewrapReport,
    },
    Done {
        message: String,
    },
    Grants {
        grants: Vec<GrantRecord>,
    },
    Events {
        events: Vec<Event>,
    },
    Verified {
        report: crate::engine::log::VerifyReport,
    },
    Mounts {
        mounts: Vec<crate::engine::MountRecord>,
    },
    /// Hex of the encoded manifest and of the recipient's stanza.
    Exchange {
        manifest: String,
        stanza: String,
    },
    Rotated {
        report: crate::engine::rotate::RotateReport,
    },
    LogSize {
        size: u64,
    },
    KeysRewrapped {
        report: crate::engine::keyrot::KeyRewrapReport,
    },
    Rollovers {
        rollovers: Vec<String>,
    },
    /// A step of a long operation (verify), before its answer.
    Progress {
        step: String,
        done: u64,
        total: u64,
    },
    Error {
        message: String,
    },
}

/// A gc pass as reported over the socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcSummary {
    pub scanned: u64,
    pub live: u64,
    pub young: u64,
    pub foreign: u64,
    pub reclaimable: u64,
    pub reclaimable_bytes: u64,
    pub stale_pending: u64,
    pub stale_staging: u64,
    pub stale_uploads: u64,
    pub applied: bool,
}

impl From<&GcReport> for GcSummary {
    fn from(r: &GcReport) -> Self {
        GcSummary {
            scanned: r.scanned,
            live: r.live,
            young: r.young,
            foreign: r.foreign,
            reclaimable: r.reclaimable.len() as u64,
            reclaimable_bytes: r.reclaimable_bytes(),
            stale_pending: r.stale_pending,
            stale_staging: r.stale_staging,
            stale_uploads: r.stale_uploads,
            applied: r.applied,
        }
    }
}

/// What admin requests act on.
#[derive(Clone)]
pub struct AdminContext {
    /// The engine every request goes through: the running server's, or on a stopped data dir
    /// one the CLI opened for this command (with the institution's previous identities set).
    pub engine: Arc<Engine>,
    /// Whether `engine` is the running server's (rotation and mounting need it).
    pub serving: bool,
    /// The folder behind the public store, when it is one (for gc's staging sweep).
    pub public_root: Option<std::path::PathBuf>,
    /// Peer institutions by name and Recipient (from the config's `[[peers]]`).
    pub peers: Vec<(String, String)>,
    /// Where a long operation (verify) reports its steps.
    pub progress: Option<Progress>,
}

/// A progress callback: (step, done, total).
pub type Progress = Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

/// An access key as listed (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessKeyInfo {
    pub id: String,
    pub buckets: Vec<String>,
    pub created_ms: u64,
    /// May label records with a patient.
    #[serde(default)]
    pub label_patients: bool,
}

/// A secret on its way to the one who asked for it (a new access key's): wiped when
/// dropped, never shown by `Debug`.
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    /// The secret's text, for the one place that shows or stores it.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl From<zeroize::Zeroizing<String>> for Secret {
    fn from(s: zeroize::Zeroizing<String>) -> Self {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(|s| Secret(zeroize::Zeroizing::new(s)))
    }
}

/// Draws a new access key id (20 upper-case alphanumerics, AWS style).
pub fn new_access_key_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bytes: [u8; 18] = rand::random();
    let mut id = String::from("MG");
    id.extend(bytes.iter().map(|b| ALPHABET[usize::from(b % 32)] as char));
    id
}

/// Draws a new secret: 40 ASCII letters and digits (about 238 bits), safe to paste
/// into any shell or config file.
pub fn new_secret() -> zeroize::Zeroizing<String> {
    use rand::Rng;
    let secret: String = rand::rngs::OsRng
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    zeroize::Zeroizing::new(secret)
}

async fn view(cx: &AdminContext, rec: &ShareRequestRecord) -> Result<RequestView> {
    use keyring::consent::{Records, ShareRequest};
    let req = ShareRequest::from_text(&rec.request)?;
    // For the admin and the patient only (a peer's answers never say whether a patient
    // has records): how many of the patient's records the request reaches now.
    let matching_records = cx
        .engine
        .patient_objects(&rec.patient_id)
        .await?
        .iter()
        .filter(|(bucket, key, _)| req.scope.covers(bucket, key))
        .count() as u64;
    let recipient = req.recipient.to_string();
    let scope = match &req.scope.records {
        Records::Object { bucket, key } => format!("the record {bucket}/{key}"),
        Records::Prefix { bucket, prefix } => {
            format!("the patient's records under {bucket}/{prefix}")
        }
        Records::Patient => "all of the patient's records".to_string(),
    } + if req.scope.include_future {
        ", including records added later"
    } else {
        ", as they are now"
    };
    Ok(RequestView {
        id: rec.id.clone(),
        state: rec.state,
        patient: rec.patient_id.clone(),
        recipient_name: cx
            .peers
            .iter()
            .find(|(_, r)| *r == recipient)
            .map(|(n, _)| n.clone()),
        recipient,
        requester_says: req.requester.clone(),
        scope,
        purpose_code: req.purpose_code.clone(),
        purpose_text: req.purpose_text.clone(),
        created_ms: rec.created_ms,
        expires_ms: req.expires_ms,
        grant: rec.grant.clone(),
        text: rec.request.clone(),
        matching_records: Some(matching_records),
    })
}

/// The share request `n` describes, for this institution, now, with a fresh nonce.
///
/// # Errors
/// `InvalidArgument` naming the field.
pub fn new_request(
    cx: &AdminContext,
    n: &NewShareRequest,
) -> Result<keyring::consent::ShareRequest> {
    use keyring::consent::{Records, Scope, ShareRequest};
    let records = match n.scope.as_str() {
        "object" => Records::Object {
            bucket: n.bucket.clone(),
            key: n.path.clone(),
        },
        "prefix" => Records::Prefix {
            bucket: n.bucket.clone(),
            prefix: n.path.clone(),
        },
        "patient" => Records::Patient,
        other => {
            return Err(Error::InvalidArgument(format!(
                "scope must be object, prefix or patient, not {other:?}"
            )))
        }
    };
    let req = ShareRequest {
        institution: cx.engine.institution().recipient().fingerprint(),
        patient_id: n.patient.clone(),
        scope: Scope {
            records,
            include_future: n.include_future,
        },
        recipient: n
            .recipient
            .parse()
            .map_err(|_| Error::InvalidArgument("the recipient is not a medgate1... key".into()))?,
        requester: n.requester.clone(),
        purpose_text: n.purpose_text.clone(),
        purpose_code: n.purpose_code.clone(),
        created_ms: crate::now_ms(),
        expires_ms: n.expires_ms,
        nonce: rand::random(),
    };
    req.validate()
        .map_err(|e| Error::InvalidArgument(format!("share request: {e}")))?;
    Ok(req)
}

/// Carries out one admin request through the engine; failures become `AdminResponse::Error`.
pub async fn handle(cx: &AdminContext, req: AdminRequest) -> AdminResponse {
    execute(cx, req)
        .await
        .unwrap_or_else(|e| AdminResponse::Error {
            message: e.to_string(),
        })
}

/// Carries out one admin request through the engine.
///
/// # Errors
/// What the operation fails with.
pub async fn execute(cx: &AdminContext, req: AdminRequest) -> Result<AdminResponse> {
    let engine = &*cx.engine;
    let progress = cx.progress.clone();
    let progress = move |step: &str, done: u64, total: u64| {
        if let Some(p) = &progress {
            p(step, done, total);
        }
    };
    async {
        Ok::<_, Error>(match req {
            AdminRequest::PatientRegister {
                id,
                recipient,
                proof,
            } => {
                let patient = engine
                    .register_patient(&id, &recipient, &proof, "admin")
                    .await?;
                AdminResponse::Patient {
                    patient,
                    records: 0,
                }
            }
            AdminRequest::PatientList => AdminResponse::Patients {
                patients: engine.list_patients().await?,
            },
            AdminRequest::PatientShow { id } => {
                let patient = engine
                    .patient(&id)
                    .await?
                    .ok_or_else(|| Error::UnknownPatient(id.clone()))?;
                let records = engine.patient_objects(&id).await?.len() as u64;
                AdminResponse::Patient { patient, records }
            }
            AdminRequest::PatientWhoami { recipient } => {
                let patient = engine
                    .list_patients()
                    .await?
                    .into_iter()
                    .find(|p| p.recipient == recipient)
                    .ok_or_else(|| {
                        Error::InvalidArgument(
                            "no patient is registered with this key at this gateway".into(),
                        )
                    })?;
                let records = engine.patient_objects(&patient.id).await?.len() as u64;
                AdminResponse::Patient { patient, records }
            }
            AdminRequest::ShareRequest(n) => {
                let req = new_request(cx, &n)?;
                let rec = engine.create_request(&req.to_text(), "admin").await?;
                AdminResponse::Request {
                    request: view(cx, &rec).await?,
                }
            }
            AdminRequest::Requests { patient } => {
                let mut requests = Vec::new();
                for r in engine.list_requests().await? {
                    if patient.as_ref().is_none_or(|p| *p == r.patient_id) {
                        requests.push(view(cx, &r).await?);
                    }
                }
                AdminResponse::Requests { requests }
            }
            AdminRequest::RequestGet { id } => {
                let (rec, _) = engine.request(&id).await?;
                AdminResponse::Request {
                    request: view(cx, &rec).await?,
                }
            }
            AdminRequest::Approve { request_id, grant } => AdminResponse::Rewrapped {
                report: engine.approve(&request_id, &grant).await?,
            },
            AdminRequest::Deny { request_id, denial } => {
                engine.deny(&request_id, &denial).await?;
                AdminResponse::Done {
                    message: format!("request {request_id} denied"),
                }
            }
            AdminRequest::Revoke { revocation } => {
                let removed = engine.revoke(&revocation).await?;
                AdminResponse::Done {
                    message: format!("grant revoked; {removed} wrapped keys deleted"),
                }
            }
            AdminRequest::Grants { patient } => AdminResponse::Grants {
                grants: engine
                    .list_grants()
                    .await?
                    .into_iter()
                    .filter(|g| patient.as_ref().is_none_or(|p| *p == g.patient_id))
                    .collect(),
            },
            AdminRequest::Verify { deep } => AdminResponse::Verified {
                report: engine.verify(deep, &progress).await?,
            },
            AdminRequest::KeysRewrap => AdminResponse::KeysRewrapped {
                report: engine.rewrap_institution_keys(&progress).await?,
            },
            AdminRequest::Rollovers => AdminResponse::Rollovers {
                rollovers: engine
                    .published_rollovers()
                    .await?
                    .iter()
                    .map(|r| r.to_text())
                    .collect(),
            },
            AdminRequest::Rotate { scope, since } => {
                if !cx.serving {
                    return Err(Error::InvalidArgument(
                        "rotation re-seals blobs: run it against the running server (medgate serve)"
                            .into(),
                    ));
                }
                AdminResponse::Rotated {
                    report: cx.engine.rotate(&scope, since, &progress).await?,
                }
            }
            AdminRequest::LogSize => AdminResponse::LogSize {
                size: engine.log_size().await?,
            },
            AdminRequest::PatientBreakGlass {
                id,
                recipient,
                proof,
                reason,
                admin,
            } => {
                let n = engine
                    .break_glass_patient_key(&id, &recipient, &proof, &reason, &admin)
                    .await?;
                AdminResponse::Done {
                    message: format!(
                        "key of patient {id} replaced (break glass, logged); {n} records re-wrapped to the new key"
                    ),
                }
            }
            AdminRequest::PatientRekey { change } => {
                let n = engine.change_patient_key(&change).await?;
                AdminResponse::Done {
                    message: format!("key changed; {n} records re-wrapped to the new key"),
                }
            }
            AdminRequest::Mount {
                bucket,
                peer,
                request,
            } => {
                let remote = engine
                    .remote()
                    .filter(|_| cx.serving)
                    .ok_or_else(|| {
                        Error::InvalidArgument(
                            "mounting needs the running server and a [[peers]] entry with a url"
                                .into(),
                        )
                    })?;
                AdminResponse::Mounts {
                    mounts: vec![remote.ask(&peer, &bucket, &request).await?],
                }
            }
            AdminRequest::Mounts => AdminResponse::Mounts {
                mounts: match engine.remote() {
                    Some(r) => r.mounts_with_state().await,
                    None => engine.mounts().await?,
                },
            },
            AdminRequest::Exchange { grant, bucket, key } => {
                let (m, stanza) = engine
                    .exchange(&grant, &bucket, &key, "recipient")
                    .await?;
                AdminResponse::Exchange {
                    manifest: hex::encode(m.encode()),
                    stanza: hex::encode(stanza.to_bytes()),
                }
            }
            AdminRequest::Events {
                from,
                limit,
                patient,
            } => AdminResponse::Events {
                events: engine
                    .events(from, limit.min(10_000))
                    .await?
                    .into_iter()
                    .filter(|e| patient.is_none() || e.patient == patient)
                    .collect(),
            },
            AdminRequest::Backup { .. } => {
                return Err(Error::InvalidArgument(
                    "a backup streams its answer; use `medgate backup`".into(),
                ))
            }
            AdminRequest::Recipient => AdminResponse::Recipient {
                recipient: engine.institution().recipient().to_string(),
            },
            AdminRequest::AccessKeyCreate {
                buckets,
                label_patients,
            } => {
                let id = new_access_key_id();
                let secret = new_secret();
                engine
                    .add_access_key(&id, &secret, buckets.clone(), label_patients)
                    .await?;
                AdminResponse::AccessKeyCreated {
                    id,
                    secret: Secret::from(secret),
                    buckets,
                    label_patients,
                }
            }
            AdminRequest::AccessKeyList => AdminResponse::AccessKeys {
                keys: engine
                    .list_access_keys()
                    .await?
                    .into_iter()
                    .map(|r| AccessKeyInfo {
                        id: r.id,
                        buckets: r.buckets,
                        created_ms: r.created_ms,
                        label_patients: r.label_patients,
                    })
                    .collect(),
            },
            AdminRequest::AccessKeyDelete { id } => {
                let existed = engine.delete_access_key(&id).await?;
                AdminResponse::Deleted { id, existed }
            }
            AdminRequest::Gc { grace_secs, apply } => {
                let report = engine
                    .gc(
                        cx.public_root.as_deref(),
                        std::time::Duration::from_secs(grace_secs),
                        apply,
                    )
                    .await?;
                AdminResponse::Gc {
                    report: GcSummary::from(&report),
                }
            }
        })
    }
    .await
}

/// Serves the admin socket at `path` (created 0600) until the task is dropped.
///
/// # Errors
/// The socket cannot be bound or its mode set.
pub fn listen(path: &Path, cx: AdminContext) -> Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    // Bind under a restrictive umask-equivalent: set the mode right after binding, before
    // any client can have connected (connecting needs write permission on the socket).
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let cx = cx.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_one(stream, &cx).await {
                    tracing::debug!(error = %e, "admin connection failed");
                }
            });
        }
    }))
}

async fn serve_one(stream: UnixStream, cx: &AdminContext) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let resp = match serde_json::from_str::<AdminRequest>(&line) {
            Ok(AdminRequest::Backup {
                recipient,
                identity_file,
                rotation_files,
            }) => {
                return crate::front::backup_socket::serve(
                    cx,
                    &recipient,
                    identity_file,
                    rotation_files,
                    lines.into_inner(),
                    write,
                )
                .await;
            }
            Ok(
                req @ (AdminRequest::Verify { .. }
                | AdminRequest::Rotate { .. }
                | AdminRequest::KeysRewrap),
            ) => {
                // Steps stream as `progress` lines before the answer.
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<AdminResponse>();
                let mut vcx = cx.clone();
                vcx.progress = Some(Arc::new(move |step: &str, done, total| {
                    let _ = tx.send(AdminResponse::Progress {
                        step: step.to_string(),
                        done,
                        total,
                    });
                }));
                let job = tokio::spawn(async move { handle(&vcx, req).await });
                // The job's own steps, and between them the last one again every HEARTBEAT,
                // so that a client's answer timeout measures a stopped server, not a slow step.
                let mut last = AdminResponse::Progress {
                    step: "starting".into(),
                    done: 0,
                    total: 0,
                };
                let mut beat = tokio::time::interval(HEARTBEAT);
                beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    let frame = tokio::select! {
                        p = rx.recv() => match p {
                            Some(p) => {
                                last = p;
                                beat.reset();
                                &last
                            }
                            None => break,
                        },
                        _ = beat.tick() => &last,
                    };
                    let mut out =
                        serde_json::to_vec(frame).map_err(|e| Error::Internal(e.to_string()))?;
                    out.push(b'\n');
                    write.write_all(&out).await?;
                }
                job.await.unwrap_or_else(|e| AdminResponse::Error {
                    message: format!("verify failed: {e}"),
                })
            }
            Ok(req) => handle(cx, req).await,
            Err(e) => AdminResponse::Error {
                message: format!("bad admin request: {e}"),
            },
        };
        let mut out = serde_json::to_vec(&resp).map_err(|e| Error::Internal(e.to_string()))?;
        out.push(b'\n');
        write.write_all(&out).await?;
    }
    Ok(())
}
