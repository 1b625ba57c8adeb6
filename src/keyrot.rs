//! `medgate keys show` and `medgate keys rotate`: replacing the institution key (see
//! `gateway::engine::keyrot` for the handover and the re-wrap).
//!
//! Files, next to the identity file (default DATA_DIR/institution.key):
//! - `<identity>.next`: the new identity while a rotation is under way (sealed like the
//!   current one when MEDGATE_PASSPHRASE is set);
//! - `<identity>.old-<32 hex>`: each previous identity, named by the first 16 bytes of its
//!   fingerprint. The server loads them at start, so records not yet re-wrapped still open.
//!
//! The state file (default DATA_DIR/keys-rotate.state) says how far a rotation got:
//! `{"stage": "handover"|"rewrap", "new": "<recipient>"}`. Running the command again resumes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use gateway::front::admin::{self, AdminRequest, AdminResponse};
use gateway::store::private::prelude::*;
use keyring::{Identity, Recipient, SignedRollover};

use crate::{
    admin_request, admin_request_with, fail_on_error, identity_path, load_identity, open_private,
    passphrase, setup, write_private_file, DataDirArg, DEFAULT_CACHE_BYTES,
};

#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    stage: String,
    new: String,
}

/// `<identity>.old-<32 hex>` for `r`.
fn old_path(identity: &Path, r: &Recipient) -> PathBuf {
    let mut name = identity.as_os_str().to_owned();
    name.push(format!(".old-{}", hex::encode(&r.fingerprint()[..16])));
    PathBuf::from(name)
}

fn next_path(identity: &Path) -> PathBuf {
    let mut name = identity.as_os_str().to_owned();
    name.push(".next");
    PathBuf::from(name)
}

/// The previous identities kept beside `identity` (`<identity>.old-<suffix>`, not the
/// `.tmp` of one being written), as (suffix, path), sorted by suffix.
///
/// # Errors
/// The folder is there but cannot be listed.
fn previous_identity_paths(identity: &Path) -> Result<Vec<(String, PathBuf)>> {
    let (Some(dir), Some(stem)) = (identity.parent(), identity.file_name()) else {
        return Ok(Vec::new());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.old-", stem.to_string_lossy());
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e?.path();
        let suffix = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(&prefix))
            .filter(|s| !s.ends_with(".tmp"))
            .map(str::to_string);
        if let Some(suffix) = suffix {
            out.push((suffix, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The files of a key rotation that a backup must carry, named as a restore lays them out
/// (beside `institution.key` in the data dir): each previous identity
/// (`institution.key.old-<hex>`), the new one while the handover is under way
/// (`institution.key.next`) and the state file (`keys-rotate.state`). Without the previous
/// identities, records the re-wrap has not reached would not open after a restore.
///
/// # Errors
/// A file that is there but cannot be read.
pub(crate) fn rotation_files(
    identity: &Path,
    data_dir: &Path,
) -> Result<Vec<(String, zeroize::Zeroizing<Vec<u8>>)>> {
    let read = |path: &Path| -> Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(zeroize::Zeroizing::new(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    };
    let mut out = Vec::new();
    for (suffix, path) in previous_identity_paths(identity)? {
        if let Some(b) = read(&path)? {
            out.push((format!("institution.key.old-{suffix}"), b));
        }
    }
    if let Some(b) = read(&next_path(identity))? {
        out.push(("institution.key.next".to_string(), b));
    }
    if let Some(b) = read(&data_dir.join("keys-rotate.state"))? {
        out.push(("keys-rotate.state".to_string(), b));
    }
    Ok(out)
}

/// The previous identities kept beside `identity` (`<identity>.old-*`).
///
/// # Errors
/// A file that does not open (sealed without MEDGATE_PASSPHRASE, damaged).
pub(crate) fn load_previous(identity: &Path, data_dir: &Path) -> Result<Vec<Arc<Identity>>> {
    previous_identity_paths(identity)?
        .into_iter()
        .map(|(_, path)| {
            load_identity(&path, data_dir, false)
                .map(Arc::new)
                .with_context(|| format!("previous institution identity {}", path.display()))
        })
        .collect()
}

/// Whether a server answers on the data dir's admin socket.
async fn server_running(data_dir: &Path) -> bool {
    let socket = data_dir.join("admin.sock");
    socket.exists() && admin::call(&socket, &AdminRequest::LogSize).await.is_ok()
}

pub(crate) async fn keys_show(dir: &DataDirArg) -> Result<()> {
    let recipient = match fail_on_error(admin_request(dir, AdminRequest::Recipient).await?)? {
        AdminResponse::Recipient { recipient } => recipient,
        _ => bail!("unexpected answer from the server"),
    };
    println!("recipient: {recipient}");
    let rollovers = match fail_on_error(admin_request(dir, AdminRequest::Rollovers).await?)? {
        AdminResponse::Rollovers { rollovers } => rollovers,
        _ => bail!("unexpected answer from the server"),
    };
    for text in rollovers {
        let s = SignedRollover::from_text(&text)?;
        let r = &s.rollover;
        println!(
            "rollover {}: {} -> {} at log size {} (origin {})",
            r.seq, r.old, r.new, r.log_size, r.origin
        );
    }
    Ok(())
}

pub(crate) async fn keys_rotate(
    dir: &DataDirArg,
    state: Option<PathBuf>,
    handover_only: bool,
) -> Result<()> {
    let setup = setup(dir)?;
    let data_dir = setup.data_dir.clone();
    let id_path = identity_path(&setup, None);
    let state_path = state.unwrap_or_else(|| data_dir.join("keys-rotate.state"));
    let mut st: Option<State> = match std::fs::read(&state_path) {
        Ok(b) => Some(serde_json::from_slice(&b).with_context(|| {
            format!("{} is not a key rotation state file", state_path.display())
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => bail!("cannot read {}: {e}", state_path.display()),
    };
    let save = |st: &State| -> Result<()> {
        std::fs::write(&state_path, serde_json::to_vec_pretty(st)?)
            .with_context(|| format!("cannot write {}", state_path.display()))
    };
    if st.as_ref().is_none_or(|s| s.stage == "handover") {
        if server_running(&data_dir).await {
            bail!(
                "a server is running on {}: stop it first (the handover changes the key it signs \
                 with), run `medgate keys rotate` again, then start it; the re-wrap can run with the \
                 server up",
                data_dir.display()
            );
        }
        if !data_dir.join("private").exists() {
            bail!(
                "{} is not a medgate data dir (no private store): pass --data-dir",
                data_dir.display()
            );
        }
    }
    if st.is_none() {
        let new = Identity::generate();
        let pass = passphrase();
        let text = keyring::idfile::encode(&new, pass.as_deref().map(|p| p.as_slice()));
        write_private_file(&next_path(&id_path), text.as_bytes())?;
        let s = State {
            stage: "handover".into(),
            new: new.recipient().to_string(),
        };
        save(&s)?;
        eprintln!(
            "new institution identity in {}",
            next_path(&id_path).display()
        );
        st = Some(s);
    }
    let Some(mut st) = st else {
        bail!("no rotation state")
    };
    let new_r: Recipient = st
        .new
        .parse()
        .map_err(|_| anyhow!("{}: bad recipient", state_path.display()))?;
    if st.stage == "handover" {
        handover(&setup, &id_path, &new_r).await?;
        st.stage = "rewrap".into();
        save(&st)?;
    } else {
        eprintln!("resuming the re-wrap of the key rotation to {new_r}");
    }
    if handover_only {
        println!("institution key handed over to {new_r}; records are re-wrapped by the next `medgate keys rotate`");
        return Ok(());
    }
    // Re-wrap: through the running server when there is one, else on the store directly.
    let bar = crate::progress_bar("re-wrapping [{bar:40}] {pos}/{len} records ({elapsed})");
    let shown = bar.clone();
    // Without a terminal (a service, a log file) the bar is hidden: a line per 5 % instead.
    let lines = bar.is_hidden();
    let last_line = std::sync::atomic::AtomicU64::new(u64::MAX);
    let progress: admin::Progress = Arc::new(move |_: &str, done: u64, total: u64| {
        shown.set_length(total);
        shown.set_position(done);
        if lines && total > 0 {
            let step = done * 20 / total;
            if last_line.swap(step, std::sync::atomic::Ordering::Relaxed) != step {
                eprintln!("re-wrapping: {done}/{total} records");
            }
        }
    });
    let resp = admin_request_with(dir, AdminRequest::KeysRewrap, Some(progress)).await;
    bar.finish_and_clear();
    match fail_on_error(resp?)? {
        AdminResponse::KeysRewrapped { report: r } => {
            let _ = std::fs::remove_file(&state_path);
            println!("institution key rotated: {new_r}");
            println!(
                "re-wrapped {} data keys ({} already re-wrapped; {} records)",
                r.rewrapped, r.skipped, r.objects
            );
            println!(
                "peers that pin the old key follow the rollover; update their [[peers]] recipient to {new_r}"
            );
            Ok(())
        }
        _ => bail!("unexpected answer from the server"),
    }
}

/// The handover on the stopped data dir, then the identity files: the old identity is kept as
/// `<identity>.old-<fp>`, the new one becomes `<identity>`.
async fn handover(setup: &crate::Setup, id_path: &Path, new_r: &Recipient) -> Result<()> {
    let data_dir = &setup.data_dir;
    let next = next_path(id_path);
    let current = load_identity(id_path, data_dir, false)?;
    // The swap already happened (a run that stopped right after it).
    if current.recipient().ct_eq(new_r) && !next.exists() {
        return Ok(());
    }
    let new = load_identity(&next, data_dir, false)
        .with_context(|| format!("the new identity {}", next.display()))?;
    if !new.recipient().ct_eq(new_r) {
        bail!(
            "{} is not the identity the rotation state names: remove the state file to start over",
            next.display()
        );
    }
    let cache = setup
        .file
        .private_store
        .cache_bytes
        .unwrap_or(DEFAULT_CACHE_BYTES);
    let private: Arc<dyn PrivateStore> =
        Arc::new(open_private(setup, cache, &current.recipient())?);
    let (public, _) = setup.open_public(true)?;
    let signed = gateway::engine::keyrot::handover(&*private, &public, &current, &new)
        .await
        .map_err(|e| anyhow!("key handover: {e}"))?;
    private.flush().await?;
    drop(private);
    let old = old_path(id_path, &current.recipient());
    if !old.exists() {
        std::fs::copy(id_path, &old)
            .with_context(|| format!("cannot keep the old identity as {}", old.display()))?;
        std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    }
    std::fs::rename(&next, id_path)
        .with_context(|| format!("cannot move {} to {}", next.display(), id_path.display()))?;
    eprintln!(
        "handed over at log size {} (rollover {}, published at v1/rollover/{}); the old identity is kept in {}",
        signed.rollover.log_size,
        signed.rollover.seq,
        signed.rollover.seq,
        old.display()
    );
    Ok(())
}
