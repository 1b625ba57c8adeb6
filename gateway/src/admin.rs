//! Local administration: access keys and the institution's public key.
//!
//! The same operations run two ways. With the server stopped, the binary opens the
//! private store and calls them directly. With the server running (sled lets one process
//! open the store), the binary sends one JSON line over the 0600 Unix socket
//! `DATA_DIR/admin.sock` and the server calls them. Only local users who can read the
//! data dir can reach the socket.

use std::path::Path;
use std::sync::Arc;

use keyring::Identity;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::gc::GcReport;
use crate::private::{AccessKeyRecord, PrivateStore};
use crate::public::PublicStore;
use crate::s3::ACCESS_KEY_VAULT;
use crate::{Error, Result};

/// A request on the admin socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum AdminRequest {
    Recipient,
    AccessKeyCreate { buckets: Vec<String> },
    AccessKeyList,
    AccessKeyDelete { id: String },
    Gc { grace_secs: u64, apply: bool },
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
        secret: String,
        buckets: Vec<String>,
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
    pub private: Arc<dyn PrivateStore>,
    pub public: PublicStore,
    /// The folder behind `public`, when it is one (for gc's staging sweep).
    pub public_root: Option<std::path::PathBuf>,
    pub institution: Arc<Identity>,
}

/// An access key as listed (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessKeyInfo {
    pub id: String,
    pub buckets: Vec<String>,
    pub created_ms: u64,
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

/// Stores an access key with its secret sealed under the institution's vault key.
///
/// # Errors
/// An id that is empty or already used; store failures.
pub async fn add_access_key(
    store: &dyn PrivateStore,
    institution: &Identity,
    id: &str,
    secret: &str,
    buckets: Vec<String>,
) -> Result<()> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::InvalidArgument(
            "an access key id is 1 to 128 ASCII letters and digits".into(),
        ));
    }
    if secret.len() < 16 {
        return Err(Error::InvalidArgument(
            "a secret access key needs at least 16 characters".into(),
        ));
    }
    if store.access_key(id).await?.is_some() {
        return Err(Error::InvalidArgument(format!(
            "access key {id} already exists"
        )));
    }
    let vault = institution.vault_key(ACCESS_KEY_VAULT);
    store
        .put_access_key(AccessKeyRecord {
            id: id.to_string(),
            sealed_secret: vault.seal(id.as_bytes(), secret.as_bytes()),
            buckets,
            created_ms: crate::now_ms(),
        })
        .await?;
    store.flush().await
}

/// Carries out one admin request against a store.
pub async fn handle(cx: &AdminContext, req: AdminRequest) -> AdminResponse {
    let store = &*cx.private;
    let institution = &*cx.institution;
    let result = async {
        Ok::<_, Error>(match req {
            AdminRequest::Recipient => AdminResponse::Recipient {
                recipient: institution.recipient().to_string(),
            },
            AdminRequest::AccessKeyCreate { buckets } => {
                let id = new_access_key_id();
                let secret = new_secret();
                add_access_key(store, institution, &id, &secret, buckets.clone()).await?;
                AdminResponse::AccessKeyCreated {
                    id,
                    secret: secret.to_string(),
                    buckets,
                }
            }
            AdminRequest::AccessKeyList => AdminResponse::AccessKeys {
                keys: store
                    .list_access_keys()
                    .await?
                    .into_iter()
                    .map(|r| AccessKeyInfo {
                        id: r.id,
                        buckets: r.buckets,
                        created_ms: r.created_ms,
                    })
                    .collect(),
            },
            AdminRequest::AccessKeyDelete { id } => {
                let existed = store.delete_access_key(&id).await?;
                store.flush().await?;
                AdminResponse::Deleted { id, existed }
            }
            AdminRequest::Gc { grace_secs, apply } => {
                let report = crate::gc::run(
                    &cx.public,
                    cx.public_root.as_deref(),
                    store,
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
    .await;
    result.unwrap_or_else(|e| AdminResponse::Error {
        message: e.to_string(),
    })
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

/// Sends one request to a running server's admin socket.
///
/// # Errors
/// The socket is missing or refuses (no server runs), or the answer is not JSON.
pub async fn call(path: &Path, req: &AdminRequest) -> Result<AdminResponse> {
    let stream = UnixStream::connect(path).await?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(req).map_err(|e| Error::Internal(e.to_string()))?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.shutdown().await?;
    let mut lines = BufReader::new(read).lines();
    let answer = lines
        .next_line()
        .await?
        .ok_or_else(|| Error::Internal("the server closed the admin socket".into()))?;
    serde_json::from_str(&answer).map_err(|e| Error::Internal(format!("bad admin answer: {e}")))
}
