//! `medgate backup`, `medgate restore` and `medgate recovery keygen`, the `[backup]` config
//! section, and the start-up warning when no recent backup exists.
//!
//! With a server running, the backup goes through its admin socket and the server streams
//! the encrypted file to this process, which writes it (see `gateway::engine::backup`); with none,
//! this process opens the store itself. Either way the file appears under its name only once
//! complete and durable (written as a hidden `.partial` file beside it, then linked), and
//! never replaces an existing file.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use gateway::engine::backup::{FileBytes, FileSink};
use gateway::front::admin::AdminResponse;
use gateway::front::backup_socket::{BackupClient, Frame};
use gateway::store::private::prelude::*;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use keyring::{Identity, Recipient};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::DataDirArg;

/// How old the last backup may be before the server warns, unless configured.
pub const DEFAULT_MAX_AGE: &str = "7d";
/// Environment variable with the passphrase of a sealed recovery identity.
const RECOVERY_PASSPHRASE_ENV: &str = "MEDGATE_RECOVERY_PASSPHRASE";

/// `[backup]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// The offline recovery Recipient backups are encrypted to (`medgate1...`).
    pub recovery_recipient: Option<String>,
    /// The server warns at start when no backup is younger than this (humantime).
    pub max_age: Option<String>,
}

/// `[backup]` as `medgate config check` prints it.
#[derive(Debug, Serialize)]
pub struct EffectiveBackup {
    recovery_recipient: Option<String>,
    max_age: String,
}

impl BackupConfig {
    fn max_age(&self) -> Result<Duration> {
        let text = self.max_age.as_deref().unwrap_or(DEFAULT_MAX_AGE);
        humantime::parse_duration(text)
            .map_err(|e| anyhow!("[backup] max_age = {text:?}: {e} (e.g. \"7d\", \"36h\")"))
    }

    /// Checks both settings.
    ///
    /// # Errors
    /// A recipient that is not a Recipient, or a duration that does not parse.
    pub fn validate(&self) -> Result<()> {
        if let Some(r) = &self.recovery_recipient {
            r.parse::<Recipient>()
                .map_err(|e| anyhow!("[backup] recovery_recipient: {e}"))?;
        }
        self.max_age()?;
        Ok(())
    }

    /// The settings with defaults filled in.
    pub fn effective(&self) -> EffectiveBackup {
        EffectiveBackup {
            recovery_recipient: self.recovery_recipient.clone(),
            max_age: self
                .max_age
                .clone()
                .unwrap_or_else(|| DEFAULT_MAX_AGE.into()),
        }
    }
}

/// At server start: sets the last-backup gauge, and warns when there is no backup younger
/// than `[backup] max_age`.
///
/// # Errors
/// A bad `max_age`, or the store cannot be read.
pub async fn check_at_start(store: &dyn PrivateStore, config: &BackupConfig) -> Result<()> {
    let max_age = config.max_age()?;
    let last = store
        .last_backup_ms()
        .await
        .context("cannot read the last backup time")?;
    let now = gateway::now_ms();
    match last {
        None => tracing::warn!(
            max_age = %humantime::format_duration(max_age),
            "no backup of the private store was ever recorded: losing it loses every key. \
             Run `medgate backup --out FILE` (see README, Backup and restore)"
        ),
        Some(ms) => {
            gateway::metrics::global()
                .last_backup
                .set(i64::try_from(ms / 1000).unwrap_or(i64::MAX));
            let age = Duration::from_millis(now.saturating_sub(ms));
            if age > max_age {
                tracing::warn!(
                    last_backup_age = %humantime::format_duration(Duration::from_secs(age.as_secs())),
                    max_age = %humantime::format_duration(max_age),
                    "the last backup of the private store is older than [backup] max_age: \
                     run `medgate backup --out FILE`"
                );
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// Where to write the backup; must not exist (created 0600).
    #[arg(long)]
    out: PathBuf,
    /// The offline recovery Recipient (medgate1...) to encrypt to; default the config's
    /// [backup] recovery_recipient.
    #[arg(long)]
    recipient: Option<String>,
    /// The institution identity file to include (default the config's identity, else
    /// DATA_DIR/institution.key).
    #[arg(long)]
    identity: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct RestoreArgs {
    /// The backup file.
    file: PathBuf,
    /// The data dir to restore into: it must be empty or absent.
    #[arg(long)]
    data_dir: PathBuf,
    /// The recovery identity file (from `medgate recovery keygen`); if sealed, its passphrase
    /// comes from MEDGATE_RECOVERY_PASSPHRASE.
    #[arg(long)]
    identity: PathBuf,
    /// The institution's Recipient (medgate1..., what `medgate keys` prints), kept offline
    /// with the recovery key: the backup must be signed by it.
    #[arg(long)]
    institution: String,
    /// The public store the gateway published to (URL or folder, never created): the
    /// backup's transparency log must not be older than the checkpoint published there.
    #[arg(long)]
    public_store: Option<String>,
    /// Public store option KEY=VALUE (endpoint, region, access_key_id, …); repeatable.
    #[arg(long = "public-store-opt", value_parser = crate::config::parse_kv)]
    public_store_opts: Vec<(String, String)>,
    /// Restore a backup in the old unsigned format (v1), which anyone who knows the
    /// recovery Recipient could have written. Logged.
    #[arg(long)]
    allow_unsigned: bool,
    /// Restore a backup older than the public store's checkpoint (or without checking
    /// one): what was logged after it (revocations included) is lost, and listed.
    #[arg(long)]
    accept_rollback: bool,
}

#[derive(Subcommand)]
pub(crate) enum RecoveryAction {
    /// Make a recovery identity for backups; prints its Recipient as the last line. Sealed
    /// with argon2id when MEDGATE_RECOVERY_PASSPHRASE is set.
    Keygen {
        /// Where to write the identity (0600); must not exist.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
}

fn recovery_passphrase() -> Option<Zeroizing<Vec<u8>>> {
    std::env::var(RECOVERY_PASSPHRASE_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .map(|p| Zeroizing::new(p.into_bytes()))
}

fn create_new_private(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                anyhow!(
                    "{} already exists: refusing to overwrite it",
                    path.display()
                )
            }
            _ => anyhow!("cannot create {}: {e}", path.display()),
        })
}

/// `medgate recovery keygen`.
pub(crate) fn recovery(action: RecoveryAction) -> Result<()> {
    match action {
        RecoveryAction::Keygen { out } => {
            let id = Identity::generate();
            let pass = recovery_passphrase();
            let text = keyring::idfile::encode(&id, pass.as_deref().map(|p| p.as_slice()));
            let mut f = create_new_private(&out)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            eprintln!(
                "wrote the recovery identity to {}{}. Keep it offline, apart from the data dir: \
                 it opens every backup. Put the Recipient below in [backup] recovery_recipient.",
                out.display(),
                if pass.is_some() {
                    " (sealed with MEDGATE_RECOVERY_PASSPHRASE)"
                } else {
                    " (unsealed, 0600)"
                }
            );
            // Labelled, and still the last word of the last line for scripts.
            println!("public key (Recipient): {}", id.recipient());
            Ok(())
        }
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template(&format!(
        "{what} [{{bar:40}}] {{pos}}/{{len}} {{msg}} ({{eta}})"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// The hidden file a backup is written to before it gets its name.
fn partial_path(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("--out {} is not a file name", out.display()))?;
    Ok(out.with_file_name(format!(".{name}.partial-{}", std::process::id())))
}

/// Gives the finished file its name without replacing anything (a hard link fails if the
/// name exists), then removes the partial name.
fn publish(partial: &Path, out: &Path) -> Result<()> {
    std::fs::hard_link(partial, out).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            anyhow!(
                "{} appeared while the backup ran: not replacing it",
                out.display()
            )
        }
        _ => anyhow!("cannot name the backup {}: {e}", out.display()),
    })?;
    std::fs::remove_file(partial)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// `medgate backup`.
pub(crate) async fn backup(args: BackupArgs) -> Result<()> {
    let setup = crate::setup(&args.dir)?;
    let recipient_text = args
        .recipient
        .clone()
        .or_else(|| setup.file.backup.recovery_recipient.clone())
        .ok_or_else(|| {
            anyhow!(
                "no recovery recipient: pass --recipient medgate1... or set [backup] \
                 recovery_recipient in the config file (make one with `medgate recovery keygen -o FILE`, \
                 and keep that file offline)"
            )
        })?;
    let recipient: Recipient = recipient_text
        .parse()
        .map_err(|e| anyhow!("the recovery recipient is not a medgate1... Recipient: {e}"))?;
    if args.out.exists() {
        bail!(
            "{} already exists: refusing to overwrite it",
            args.out.display()
        );
    }
    let id_path = crate::identity_path(&setup, args.identity.as_deref());
    let id_text = Zeroizing::new(std::fs::read(&id_path).with_context(|| {
        format!(
            "cannot read the institution identity {} to include it in the backup (pass --identity)",
            id_path.display()
        )
    })?);
    let is_identity = std::str::from_utf8(&id_text)
        .is_ok_and(|t| keyring::idfile::is_sealed(t) || keyring::idfile::decode(t, None).is_ok());
    if !is_identity {
        bail!("{} is not a medgate identity file", id_path.display());
    }
    let identity_file = FileBytes(id_text);
    // A key rotation under way: the previous identities (and its state) go in too.
    let rotation_files: Vec<(String, FileBytes)> =
        crate::keyrot::rotation_files(&id_path, &setup.data_dir)?
            .into_iter()
            .map(|(name, bytes)| (name, FileBytes(bytes)))
            .collect();

    let partial = partial_path(&args.out)?;
    let file = create_new_private(&partial)?;
    let result = run_backup(
        &setup,
        &recipient,
        KeyFiles {
            identity: identity_file,
            rotation: rotation_files,
        },
        args.identity.as_deref(),
        file,
        &partial,
        &args.out,
    )
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// The key files a backup carries: the institution identity file, and a key rotation's files
/// while one is under way (`keyrot::rotation_files`).
struct KeyFiles {
    identity: FileBytes,
    rotation: Vec<(String, FileBytes)>,
}

async fn run_backup(
    setup: &crate::Setup,
    recipient: &Recipient,
    keys: KeyFiles,
    identity_path: Option<&Path>,
    mut file: std::fs::File,
    partial: &Path,
    out: &Path,
) -> Result<()> {
    let socket = setup.data_dir.join("admin.sock");
    let progress = bar(0, "backup");
    let client = if socket.exists() {
        match BackupClient::start(
            &socket,
            &recipient.to_string(),
            keys.identity.clone(),
            keys.rotation.clone(),
        )
        .await
        {
            Ok(c) => Some(c),
            Err(gateway::Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                anyhow::bail!("{e}")
            }
            Err(_) => None,
        }
    } else {
        None
    };
    if let Some(mut client) = client {
        eprintln!(
            "(through the running server's admin socket {})",
            socket.display()
        );
        let mut bytes = 0u64;
        loop {
            match client.next().await? {
                Frame::Data(d) => {
                    file.write_all(&d)
                        .with_context(|| format!("cannot write {}", partial.display()))?;
                    bytes += d.len() as u64;
                }
                Frame::Progress { done, total } => {
                    progress.set_length(total);
                    progress.set_position(done);
                }
                Frame::End(resp) => {
                    progress.finish_and_clear();
                    match *resp {
                        AdminResponse::Done { message } => {
                            file.sync_all()?;
                            drop(file);
                            publish(partial, out)?;
                            eprintln!("backup complete: {message}");
                            break;
                        }
                        AdminResponse::Error { message } => bail!("{message}"),
                        _ => bail!("unexpected answer from the server"),
                    }
                }
            }
        }
        match client.commit().await? {
            AdminResponse::Done { .. } => {}
            AdminResponse::Error { message } => eprintln!("warning: {message}"),
            _ => bail!("unexpected answer from the server"),
        }
        println!("wrote {} ({bytes} bytes)", out.display());
        return Ok(());
    }

    if !setup.data_dir.join("private").exists() {
        bail!(
            "{} is not a medgate data dir (no private store): pass --data-dir",
            setup.data_dir.display()
        );
    }
    let cache = setup
        .file
        .private_store
        .cache_bytes
        .unwrap_or(crate::DEFAULT_CACHE_BYTES);
    let institution = crate::load_identity(
        &crate::identity_path(setup, identity_path),
        &setup.data_dir,
        false,
    )
    .context("the backup is signed with the institution identity")?;
    let store: Arc<dyn PrivateStore> =
        Arc::new(crate::open_private(setup, cache, &institution.recipient())?);
    eprintln!(
        "(no server running: opened the store in {} directly)",
        setup.data_dir.display()
    );
    let p = progress.clone();
    let mut sink = FileSink::new(
        file,
        Box::new(move |done, total| {
            p.set_length(total);
            p.set_position(done);
        }),
    );
    let mut files = vec![("institution.key".to_string(), keys.identity)];
    files.extend(keys.rotation);
    let stats =
        gateway::engine::backup::write_backup(&*store, files, recipient, &institution, &mut sink)
            .await
            .context("backup failed")?;
    progress.finish_and_clear();
    let file = sink.into_file();
    file.sync_all()?;
    drop(file);
    publish(partial, out)?;
    gateway::engine::backup::record_backup(&*store, stats.created_ms)
        .await
        .context("the backup is complete but its time could not be recorded")?;
    eprintln!(
        "backup complete: {} entries (records, trees and files)",
        stats.entries
    );
    println!("wrote {} ({} bytes)", out.display(), stats.bytes);
    Ok(())
}

fn load_recovery_identity(path: &Path) -> Result<Identity> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the recovery identity {}", path.display()))?,
    );
    let pass = recovery_passphrase();
    if keyring::idfile::is_sealed(&text) && pass.is_none() {
        bail!(
            "the recovery identity {} is sealed with a passphrase: set {RECOVERY_PASSPHRASE_ENV}",
            path.display()
        );
    }
    keyring::idfile::decode(&text, pass.as_deref().map(|p| p.as_slice())).map_err(|e| match e {
        keyring::Error::Decrypt => anyhow!(
            "{RECOVERY_PASSPHRASE_ENV} does not open the recovery identity {}",
            path.display()
        ),
        other => anyhow!("recovery identity {}: {other}", path.display()),
    })
}

fn explain(file: &Path, e: gateway::Error) -> anyhow::Error {
    use gateway::Error as G;
    match e {
        G::Keyring(keyring::Error::NotForThisIdentity) => anyhow!(
            "the backup {} is encrypted to another recovery key: this recovery identity cannot open it",
            file.display()
        ),
        G::Keyring(keyring::Error::Decrypt) => anyhow!(
            "the backup {} is damaged, tampered with or truncated: a part of it did not \
             authenticate",
            file.display()
        ),
        G::Keyring(keyring::Error::Malformed(what)) => {
            anyhow!("the backup {} is not a valid medgate backup ({what})", file.display())
        }
        G::Keyring(keyring::Error::UnsupportedVersion(v)) => anyhow!(
            "the backup {} has format version {v:#04x}, which this medgate cannot read",
            file.display()
        ),
        G::Keyring(keyring::Error::BadSignature) => anyhow!(
            "the backup {} does not carry a valid signature of the institution it names: \
             it was forged or altered",
            file.display()
        ),
        G::BackupRefused(why) => anyhow!("the backup {} is refused: {why}", file.display()),
        other => anyhow!("restoring {} failed: {other}", file.display()),
    }
}

/// `medgate restore`.
pub(crate) async fn restore(args: RestoreArgs) -> Result<()> {
    let target = args.data_dir.clone();
    if target.exists() {
        let mut entries = std::fs::read_dir(&target).with_context(|| {
            format!(
                "{} exists and is not a readable directory",
                target.display()
            )
        })?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty: restore only goes into an empty or absent data dir (nothing was changed)",
                target.display()
            );
        }
    }
    let institution: Recipient = args.institution.parse().map_err(|_| {
        anyhow!(
            "--institution is not a medgate1... Recipient (it is what `medgate keys` prints \
             for the institution whose backup this is)"
        )
    })?;
    let identity = load_recovery_identity(&args.identity)?;
    let input = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open the backup {}", args.file.display()))?;
    let size = input.metadata()?.len();
    let published = published_log_size(&args, &institution).await?;

    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("--data-dir {} is not a directory name", target.display()))?;
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = parent.join(format!(".{name}.restore-{}", std::process::id()));
    std::fs::create_dir(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))?;

    let progress = bar(size, "restore");
    let p = progress.clone();
    let stage = staging.clone();
    let expected = institution.clone();
    let allow_unsigned = args.allow_unsigned;
    let result = tokio::task::spawn_blocking(move || {
        let mut input = std::io::BufReader::new(input);
        let expected = gateway::engine::backup::ExpectedSigner {
            institution: &expected,
            allow_unsigned,
        };
        gateway::engine::backup::restore(&mut input, &identity, expected, &stage, &mut |n| p.inc(n))
    })
    .await
    .map_err(|e| anyhow!("restore task: {e}"))
    .and_then(|r| r.map_err(|e| explain(&args.file, e)));
    progress.finish_and_clear();
    let checked = match result {
        Ok(stats) => check_restored(&args, &institution, published, &staging, stats).await,
        Err(e) => Err(e),
    };
    let stats = match checked {
        Ok(stats) => stats,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e.context(format!("nothing was written to {}", target.display())));
        }
    };
    // rename(2) replaces an empty directory, and fails on a non-empty one that appeared
    // meanwhile.
    if let Err(e) = std::fs::rename(&staging, &target) {
        let _ = std::fs::remove_dir_all(&staging);
        bail!(
            "cannot move the restored data into {}: {e}",
            target.display()
        );
    }
    let taken = std::time::UNIX_EPOCH + Duration::from_millis(stats.created_ms);
    println!(
        "restored {} entries ({} records in {} trees, and the files {}) into {} from the backup taken at {}",
        stats.records + stats.trees + stats.files.len() as u64,
        stats.records,
        stats.trees,
        stats.files.join(", "),
        target.display(),
        humantime::format_rfc3339_seconds(taken)
    );
    eprintln!(
        "start it with: medgate serve --data-dir {} --public-store <the same public store as before>",
        target.display()
    );
    eprintln!(
        "S3 clients keep their access keys; the credentials file is not in backups, so for a \
         new key run `medgate access-key create --data-dir {}` once the server runs",
        target.display()
    );
    Ok(())
}

/// The size of the transparency log in the checkpoint the institution published to the
/// public store named by `--public-store`: `Some(0)` when none was ever published, `None`
/// when no store was named (only with `--accept-rollback`).
async fn published_log_size(args: &RestoreArgs, institution: &Recipient) -> Result<Option<u64>> {
    let Some(url) = &args.public_store else {
        if args.accept_rollback {
            eprintln!(
                "warning: no --public-store: the backup is not compared with the published \
                 checkpoint (--accept-rollback)"
            );
            tracing::warn!("restore without comparing the backup with the published checkpoint");
            return Ok(None);
        }
        bail!(
            "pass --public-store (the store the gateway published to) so that restore can check \
             the backup is not older than the log it published; or --accept-rollback to restore \
             without that check"
        );
    };
    let opts: std::collections::BTreeMap<String, String> =
        args.public_store_opts.iter().cloned().collect();
    let store = gateway::store::public::open(Some(url), &opts, Path::new("."))
        .context("cannot open the public store")?;
    let note = match gateway::engine::log::published_checkpoint(&store).await {
        Ok(note) => note,
        Err(gateway::Error::NotFound(_)) => return Ok(Some(0)),
        Err(e) => {
            return Err(anyhow!(e).context("cannot read the checkpoint from the public store"))
        }
    };
    // After `medgate keys rotate` the checkpoint is signed by the key a rollover (signed by
    // --institution) handed over to, under the same origin.
    let (key, origin, _) = gateway::engine::keyrot::follow(&store, institution)
        .await
        .map_err(|e| anyhow!("the key rollovers in the public store do not verify: {e}"))?;
    let cp = key.verify_checkpoint(&origin, &note).map_err(|e| {
        anyhow!(
            "the checkpoint in the public store is not signed by --institution ({e}): is it \
                 the right store and the right institution?"
        )
    })?;
    Ok(Some(cp.size))
}

/// The checks made on a restored data dir before it is moved into place: the backup is not
/// older than the published log (unless `--accept-rollback`, which lists what is lost), an
/// unsigned backup is logged, and the institution identity file in it is the institution's.
async fn check_restored(
    args: &RestoreArgs,
    institution: &Recipient,
    published: Option<u64>,
    staging: &Path,
    stats: gateway::engine::backup::RestoreStats,
) -> Result<gateway::engine::backup::RestoreStats> {
    if !stats.signed {
        eprintln!(
            "warning: {} is an unsigned (v1) backup, restored because of --allow-unsigned",
            args.file.display()
        );
        tracing::warn!(file = %args.file.display(), "restored an unsigned (v1) backup (--allow-unsigned)");
    }
    let id_file = staging.join("institution.key");
    if let Ok(text) = std::fs::read_to_string(&id_file) {
        let text = Zeroizing::new(text);
        if !keyring::idfile::is_sealed(&text) || crate::passphrase().is_some() {
            let pass = crate::passphrase();
            let id = keyring::idfile::decode(&text, pass.as_deref().map(|p| p.as_slice()))
                .map_err(|e| anyhow!("the institution identity in the backup: {e}"))?;
            if id.recipient() != *institution {
                bail!(
                    "the institution identity in the backup is {}, not --institution {institution}",
                    id.recipient()
                );
            }
        }
    }
    let Some(published) = published else {
        return Ok(stats);
    };
    if stats.log_size >= published {
        return Ok(stats);
    }
    let lost = published - stats.log_size;
    if !args.accept_rollback {
        bail!(
            "the backup is older than what the gateway published: its transparency log has {} \
             entries, the checkpoint in the public store {published}. Restoring it would undo \
             the {lost} entries after it, revocations included (revoked grants would work \
             again). Use a newer backup, or pass --accept-rollback to restore it anyway",
            stats.log_size
        );
    }
    let store = gateway::store::private::sled::SledStore::open(&staging.join("private"), 1 << 20)
        .map_err(|e| anyhow!("cannot open the restored store: {e}"))?;
    let now = gateway::now_ms();
    let in_force: Vec<_> = store
        .list_grants()
        .await?
        .into_iter()
        .filter(|g| g.revoked_ms.is_none() && g.expires_ms > now)
        .collect();
    drop(store);
    println!(
        "rollback accepted: the backup's log ends at entry {}, the published checkpoint at {published}; \
         {lost} log entries made after the backup are lost (writes, deletes, grants, revocations).",
        stats.log_size
    );
    println!(
        "grants in force in this backup ({}), any of which a lost entry may have revoked; \
         ask each patient, and revoke again what they had revoked:",
        in_force.len()
    );
    for g in &in_force {
        println!(
            "  grant {}\tpatient {}\tto {}\tuntil {}",
            g.id,
            g.patient_id,
            g.recipient,
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_millis(g.expires_ms)
            )
        );
    }
    tracing::warn!(
        backup_log_size = stats.log_size,
        published_log_size = published,
        grants_in_force = in_force.len(),
        "restored a backup older than the published log (--accept-rollback)"
    );
    Ok(stats)
}
