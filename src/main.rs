//! The `medgate` binary: parses arguments, wires the gateway together, and runs admin
//! commands against a running server (admin socket) or a stopped one (the store itself).

mod backup;
pub(crate) mod config;
mod keyrot;
mod link;
mod ops;
mod patient;
mod witness;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use gateway::engine::record::EngineConfig;
use gateway::front::admin::{self, AdminContext, AdminRequest, AdminResponse};
use gateway::runtime::run::{Listening, RunConfig, RunErrorSource};
use gateway::store::private::prelude::*;
use gateway::store::private::sled::SledStore;
use keyring::{Identity, Recipient};

use crate::config::{parse_kv, FileConfig};

const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
const DEFAULT_DATA_DIR: &str = "./medgate-data";
pub(crate) const DEFAULT_CACHE_BYTES: u64 = 16 << 20;

#[derive(Parser)]
#[command(
    name = "medgate",
    version,
    about = "S3 gateway that encrypts medical records before they reach a public cloud"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum KeysAction {
    /// The institution's Recipient, the log's origin and the key rollovers it published.
    Show,
    /// Replace the institution key: a new identity, a rollover signed by the old key and the
    /// new one (logged, and published at v1/rollover/<n> for witnesses, patients and peers),
    /// checkpoints signed by the new key under the same origin, and every record re-wrapped
    /// to the new key. The handover needs the server stopped; the re-wrap is resumable (run
    /// the command again, with the server running or not) and shows a progress bar. The old
    /// identity stays in INSTITUTION_KEY.old-<fingerprint> until you remove it.
    Rotate {
        #[command(flatten)]
        public: PublicStoreArg,
        /// Where the unfinished rotation's state is kept (default DATA_DIR/keys-rotate.state).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Stop after the handover: start the server again and run `medgate keys rotate` once
        /// more to re-wrap the records through it (the server is down only for the handover).
        #[arg(long)]
        handover_only: bool,
    },
}

#[derive(Args, Clone, Default)]
pub(crate) struct DataDirArg {
    /// Data directory: private store, institution identity, credentials, admin socket.
    #[arg(long, env = "MEDGATE_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// TOML config file (settings below override it).
    #[arg(long, env = "MEDGATE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Public store URL: a folder, file:///path, s3://bucket/prefix, az://…, gs://… A folder
    /// must exist, except DATA_DIR/public, unless the config says [public_store] create = true.
    #[arg(long, env = "MEDGATE_PUBLIC_STORE", global = true)]
    public_store: Option<String>,
    /// Public store option KEY=VALUE (endpoint, region, access_key_id, allow_http, …); repeatable.
    #[arg(long = "public-store-opt", value_parser = parse_kv, global = true)]
    public_store_opts: Vec<(String, String)>,
}

/// The data dir and config alone, for commands that never touch the public store.
#[derive(Args, Clone, Default)]
pub(crate) struct StoreDirArg {
    /// Data directory: private store, institution identity, credentials, admin socket.
    #[arg(long, env = "MEDGATE_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// TOML config file (settings below override it).
    #[arg(long, env = "MEDGATE_CONFIG", global = true)]
    config: Option<PathBuf>,
}

/// The public store options alone, for a subcommand whose parent takes [`StoreDirArg`].
#[derive(Args, Clone, Default)]
pub(crate) struct PublicStoreArg {
    /// Public store URL: a folder, file:///path, s3://bucket/prefix, az://…, gs://… A folder
    /// must exist, except DATA_DIR/public, unless the config says [public_store] create = true.
    #[arg(long, env = "MEDGATE_PUBLIC_STORE")]
    public_store: Option<String>,
    /// Public store option KEY=VALUE (endpoint, region, access_key_id, allow_http, …); repeatable.
    #[arg(long = "public-store-opt", value_parser = parse_kv)]
    public_store_opts: Vec<(String, String)>,
}

impl StoreDirArg {
    /// These settings with the public store `public` names.
    fn with_public(&self, public: PublicStoreArg) -> DataDirArg {
        DataDirArg {
            data_dir: self.data_dir.clone(),
            config: self.config.clone(),
            public_store: public.public_store,
            public_store_opts: public.public_store_opts,
        }
    }
}

impl From<&StoreDirArg> for DataDirArg {
    fn from(d: &StoreDirArg) -> Self {
        DataDirArg {
            data_dir: d.data_dir.clone(),
            config: d.config.clone(),
            ..DataDirArg::default()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the S3 gateway.
    Serve(ServeArgs),
    /// GET /healthz on the ops port; exit 0 on 200 (the container HEALTHCHECK).
    Healthcheck(ops::HealthcheckArgs),
    /// Check a config file.
    Config {
        #[command(subcommand)]
        action: ops::ConfigAction,
    },
    /// The institution's keys: bare `medgate keys` prints its public Recipient.
    Keys {
        #[command(flatten)]
        dir: StoreDirArg,
        #[command(subcommand)]
        action: Option<KeysAction>,
    },
    /// Manage S3 access keys.
    AccessKey {
        #[command(flatten)]
        dir: StoreDirArg,
        #[command(subcommand)]
        action: AccessKeyAction,
    },
    /// Delete public-store blobs that nothing references (dry run unless --apply).
    Gc {
        #[command(flatten)]
        dir: DataDirArg,
        /// Keep unreferenced blobs younger than this (e.g. 0s, 30m, 1h).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        grace: Duration,
        /// Actually delete; without it gc only reports.
        #[arg(long)]
        apply: bool,
    },
    /// Patients: keys, registration, and their consent (approve, deny, revoke).
    Patient {
        #[command(subcommand)]
        action: patient::PatientAction,
    },
    /// Share requests, grants and the activity record (admin).
    Share {
        #[command(subcommand)]
        action: patient::ShareAction,
    },
    /// Give records new data keys: re-seal their blobs under a fresh key with fresh blob
    /// ids, re-wrap for the institution, the patient and grants in force, move every copy;
    /// old blobs are left to gc. Resumable: run the same command again after a crash.
    Rotate {
        #[command(flatten)]
        dir: DataDirArg,
        /// One record: BUCKET/KEY.
        #[arg(long, conflicts_with_all = ["bucket", "prefix", "patient"])]
        object: Option<String>,
        /// The bucket of a prefix scope (with --prefix; alone: every record in it).
        #[arg(long, conflicts_with = "patient")]
        bucket: Option<String>,
        /// Records whose keys start with PREFIX inside --bucket (e.g. --bucket pacs
        /// --prefix p-1001/).
        #[arg(long, requires = "bucket", conflicts_with = "patient")]
        prefix: Option<String>,
        /// All of a patient's records.
        #[arg(long)]
        patient: Option<String>,
        /// Where an unfinished rotation is remembered (to resume it).
        #[arg(long, default_value = ".medgate-rotate.json")]
        state: PathBuf,
    },
    /// The transparency log, as another party sees it.
    Log {
        #[command(subcommand)]
        action: LogAction,
    },
    /// Check the transparency log against every published checkpoint, and every
    /// manifest against its logged root; --deep also re-hashes every blob. Exits
    /// non-zero naming each mismatch.
    Verify {
        #[command(flatten)]
        dir: DataDirArg,
        /// Also re-hash every blob in the public store (reads all of it).
        #[arg(long)]
        deep: bool,
    },
    /// Back up the private store and the institution identity, encrypted to the offline
    /// recovery Recipient (online: through the running server).
    Backup(backup::BackupArgs),
    /// Restore a backup into an empty or absent data dir, with the recovery identity.
    Restore(backup::RestoreArgs),
    /// The recovery key that backups are encrypted to.
    Recovery {
        #[command(subcommand)]
        action: backup::RecoveryAction,
    },
}

#[derive(Subcommand)]
enum LogAction {
    /// Witness an institution's log: check that its published checkpoint extends the last
    /// one this witness cosigned (consistency proof), then cosign it and hand the
    /// cosignature to the gateway, which publishes it with the checkpoint.
    Witness(witness::WitnessArgs),
}

#[derive(Subcommand)]
enum AccessKeyAction {
    /// Create a key; its secret is shown once.
    Create {
        /// Limit the key to this bucket (repeatable); without it the key may use every bucket.
        #[arg(long = "bucket")]
        buckets: Vec<String>,
        /// Let the key label records with a patient (`x-amz-meta-medgate-patient`, or a
        /// `[[patient_prefixes]]` match), which adds them to the patient's index and grants.
        /// Without it such writes are refused with AccessDenied.
        #[arg(long)]
        label_patients: bool,
    },
    /// List keys (never secrets).
    List {
        #[command(flatten)]
        out: patient::JsonArg,
    },
    /// Delete a key.
    Delete {
        /// The access key id (from `medgate access-key list`).
        id: String,
    },
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// Address for the S3 endpoint.
    #[arg(long, env = "MEDGATE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Plaintext bytes per sealed chunk (default 1 MiB).
    #[arg(long, env = "MEDGATE_CHUNK_SIZE")]
    chunk_size: Option<u32>,
    /// How often patient indexes are published (default 10s; `[engine] index_interval`).
    /// A tick with changes rewrites at least 32 indexes (`[engine] index_cover`), changed
    /// and unchanged together; a tick without writes nothing.
    #[arg(long, env = "MEDGATE_INDEX_INTERVAL", value_parser = humantime::parse_duration)]
    index_interval: Option<Duration>,
    /// Log format: human or json.
    #[arg(long, env = "MEDGATE_LOG_FORMAT")]
    log_format: Option<String>,
    /// Institution identity file (default DATA_DIR/institution.key).
    #[arg(long, env = "MEDGATE_IDENTITY")]
    identity: Option<PathBuf>,
    /// Base domain for virtual-host-style requests (bucket.DOMAIN); path style always works.
    #[arg(long, env = "MEDGATE_DOMAIN")]
    domain: Option<String>,
    /// Address for /healthz, /readyz and /metrics (default 127.0.0.1:9003).
    #[arg(long, env = "MEDGATE_OPS_LISTEN")]
    ops_listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS on the S3 and ops ports (with --tls-key); reloaded
    /// on SIGHUP.
    #[arg(long, env = "MEDGATE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "MEDGATE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on addresses that are not loopback (behind a TLS proxy).
    #[arg(long, env = "MEDGATE_ALLOW_PLAIN_HTTP")]
    allow_plain_http: bool,
    /// Address for the JSON API (admin, patients, peers, log; default 127.0.0.1:9002).
    #[arg(long, env = "MEDGATE_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Time a client has, from connecting or from its previous response, to send a
    /// complete request head (default 30s; `[connections] header_timeout`).
    #[arg(long, env = "MEDGATE_HEADER_TIMEOUT", value_parser = humantime::parse_duration)]
    header_timeout: Option<Duration>,
    /// A connection with no request in flight this long is closed (default 120s;
    /// `[connections] idle_timeout`).
    #[arg(long, env = "MEDGATE_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Connections open at once per port (default 4096; `[connections] max_per_port`);
    /// at the cap a new one closes the idle one of longest standing.
    #[arg(long, env = "MEDGATE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
}

fn main() -> std::process::ExitCode {
    forbid_dumps_and_ptrace();
    tune_allocator();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("medgate: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("medgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Healthcheck(args) => ops::healthcheck(args).await,
        Command::Config {
            action: ops::ConfigAction::Check { file },
        } => ops::config_check(&file),
        Command::Keys { dir, action: None } => keys(&(&dir).into()).await,
        Command::Keys {
            dir,
            action: Some(KeysAction::Show),
        } => keyrot::keys_show(&(&dir).into()).await,
        Command::Keys {
            dir,
            action:
                Some(KeysAction::Rotate {
                    public,
                    state,
                    handover_only,
                }),
        } => keyrot::keys_rotate(&dir.with_public(public), state, handover_only).await,
        Command::AccessKey { dir, action } => access_key(&(&dir).into(), action).await,
        Command::Gc { dir, grace, apply } => gc(&dir, grace, apply).await,
        Command::Patient { action } => patient::patient(action).await,
        Command::Share { action } => patient::share(action).await,
        Command::Verify { dir, deep } => verify(&dir, deep).await,
        Command::Log {
            action: LogAction::Witness(args),
        } => witness::witness(args).await,
        Command::Rotate {
            dir,
            object,
            bucket,
            prefix,
            patient,
            state,
        } => rotate(&dir, object, bucket, prefix, patient, &state).await,
        Command::Backup(args) => backup::backup(args).await,
        Command::Restore(args) => backup::restore(args).await,
        Command::Recovery { action } => backup::recovery(action),
    }
}

/// Resolved data dir and public store settings, and the file config they came with.
pub(crate) struct Setup {
    pub(crate) file: FileConfig,
    pub(crate) data_dir: PathBuf,
    public_url: Option<String>,
    public_opts: BTreeMap<String, String>,
}

impl Setup {
    fn default_public_dir(&self) -> PathBuf {
        self.data_dir.join("public")
    }

    /// Where the public store setting points (parsed strictly: see
    /// [`gateway::store::public::Location::parse`]).
    pub(crate) fn public_location(&self) -> Result<gateway::store::public::Location> {
        gateway::store::public::Location::parse(
            self.public_url.as_deref(),
            &self.default_public_dir(),
        )
        .context("cannot open the public store")
    }

    /// Opens the public store. `write`: the command writes, so the default folder
    /// (`DATA_DIR/public`), or any folder with `[public_store] create = true`, is created
    /// when missing; otherwise nothing is ever created.
    pub(crate) fn open_public(
        &self,
        write: bool,
    ) -> Result<(gateway::store::public::PublicStore, Option<PathBuf>)> {
        use gateway::store::public::Folder;
        let url = self.public_url.as_deref();
        let timeouts = self.file.public_store.timeouts(&self.public_opts)?;
        let folder = match (write, self.file.public_store.create) {
            (false, _) => Folder::MustExist,
            (true, Some(true)) => Folder::Create,
            (true, _) => Folder::CreateDefault,
        };
        let store = gateway::store::public::open_with(
            url,
            &self.public_opts,
            &self.default_public_dir(),
            &timeouts,
            folder,
        )
        .context("cannot open the public store")?;
        Ok((
            store,
            gateway::store::public::local_root(url, &self.default_public_dir()),
        ))
    }
}

pub(crate) fn setup(dir: &DataDirArg) -> Result<Setup> {
    let file = FileConfig::load(dir.config.as_deref())?;
    let data_dir = dir
        .data_dir
        .clone()
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let public_url = dir
        .public_store
        .clone()
        .or_else(|| file.public_store.url.clone());
    let mut public_opts = file.public_store.options.clone();
    public_opts.extend(dir.public_store_opts.iter().cloned());
    Ok(Setup {
        file,
        data_dir,
        public_url,
        public_opts,
    })
}

fn init_logging(format: &str) -> Result<()> {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MEDGATE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,s3s=off"));
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // Counted whatever the log filter lets through.
    let retries =
        RetryCounter.with_filter(Targets::new().with_target(RETRY_TARGET, LevelFilter::INFO));
    let registry = tracing_subscriber::registry().with(retries);
    match format {
        "json" => registry.with(fmt.json().with_filter(filter)).init(),
        "human" => registry.with(fmt.with_filter(filter)).init(),
        other => bail!("--log-format must be human or json, not {other:?}"),
    }
    Ok(())
}

/// Where object_store logs each retry, one event per retry ("… backing off …").
const RETRY_TARGET: &str = "object_store::client::retry";

/// Counts object_store's retries into `medgate_public_store_retries_total`: its retry
/// loop offers no hook but the event it logs before each one.
struct RetryCounter;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RetryCounter {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if event.metadata().target() == RETRY_TARGET {
            gateway::metrics::global().public_retries.inc();
        }
    }
}

/// glibc's malloc defaults suit many small allocations, not ours: each request moves
/// 1 MiB chunk buffers between threads (body reader, sealing pool, MD5 lane, store
/// writer). With the defaults, freed buffers stay in up to 8 arenas per core and the
/// mmap threshold climbs to 32 MiB, so RSS grows to the sum of every thread's high-water
/// mark and never comes back (the aws CLI's 10 parallel parts took RSS 85 MiB above
/// idle; with this, 35 MiB: benches/clients.py). Two arenas, and buffers of 256 KiB and
/// more mapped on their own, make RSS follow live data. Runs before any thread starts;
/// `MALLOC_ARENA_MAX` / `MALLOC_MMAP_THRESHOLD_` set by ops win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator parameters; called before other threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: as above.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// Secrets live in this process's memory: no other process of the same user may read it
/// (ptrace, `/proc/PID/mem`) and the kernel writes no core dump of it, whatever the
/// core-dump limit says later. Runs first thing in `main`, for every command (the patient
/// commands hold the patient's key).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn forbid_dumps_and_ptrace() {
    // SAFETY: PR_SET_DUMPABLE takes an integer argument and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc != 0 {
        eprintln!(
            "warning: prctl(PR_SET_DUMPABLE, 0) failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn forbid_dumps_and_ptrace() {}

/// Each open connection is a file descriptor, and the usual soft limit (1024) is far
/// below what `[connections] max_per_port` allows on three ports: raise the soft limit to
/// the hard one.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
}

/// Secrets live in this process's memory; a core dump would write them to disk.
fn disable_core_dumps() {
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0) {
        tracing::warn!(error = %e, "could not disable core dumps");
    }
}

pub(crate) fn passphrase() -> Option<zeroize::Zeroizing<Vec<u8>>> {
    std::env::var("MEDGATE_PASSPHRASE")
        .ok()
        .filter(|p| !p.is_empty())
        .map(|p| zeroize::Zeroizing::new(p.into_bytes()))
}

pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub(crate) fn identity_path(setup: &Setup, flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| setup.file.identity.clone())
        .unwrap_or_else(|| setup.data_dir.join("institution.key"))
}

/// Loads the institution identity, creating it on first run.
pub(crate) fn load_identity(path: &Path, data_dir: &Path, create: bool) -> Result<Identity> {
    let pass = passphrase();
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the institution identity {}", path.display()))?;
        let text = zeroize::Zeroizing::new(text);
        if keyring::idfile::is_sealed(&text) && pass.is_none() {
            bail!(
                "the institution identity {} is sealed with a passphrase: set MEDGATE_PASSPHRASE",
                path.display()
            );
        }
        let id =
            keyring::idfile::decode(&text, pass.as_deref().map(|p| p.as_slice())).map_err(|e| {
                match e {
                    keyring::Error::Decrypt => anyhow!(
                        "MEDGATE_PASSPHRASE does not open the institution identity {}",
                        path.display()
                    ),
                    other => anyhow!("institution identity {}: {other}", path.display()),
                }
            })?;
        if !keyring::idfile::is_sealed(&text) && path.starts_with(data_dir) {
            tracing::warn!(
                path = %path.display(),
                "the institution identity is an unsealed file inside the data dir: set MEDGATE_PASSPHRASE \
                 to seal it, or keep it elsewhere with --identity"
            );
        }
        return Ok(id);
    }
    if !create {
        bail!(
            "no institution identity at {}: run `medgate serve` once to create it",
            path.display()
        );
    }
    let id = Identity::generate();
    let text = keyring::idfile::encode(&id, pass.as_deref().map(|p| p.as_slice()));
    write_private_file(path, text.as_bytes())?;
    tracing::info!(path = %path.display(), sealed = pass.is_some(), "created the institution identity");
    if pass.is_none() {
        tracing::warn!(
            "the institution identity is stored unsealed (0600); set MEDGATE_PASSPHRASE to seal it with argon2id"
        );
    }
    Ok(id)
}

/// The admin token from `path`, created there (0600, 40 random letters and digits) when
/// missing. Never logged.
fn load_admin_token(path: &Path) -> Result<zeroize::Zeroizing<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = zeroize::Zeroizing::new(text.trim().to_string());
            if token.len() < 16 {
                bail!(
                    "the admin token in {} is shorter than 16 characters: put a longer one there",
                    path.display()
                );
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = admin::new_secret();
            write_private_file(path, format!("{}\n", token.as_str()).as_bytes())?;
            tracing::info!(path = %path.display(), "created the admin token for the JSON API");
            Ok(token)
        }
        Err(e) => Err(anyhow!(
            "cannot read the admin token {}: {e}",
            path.display()
        )),
    }
}

/// Opens the private store and upgrades what an older medgate wrote there: DEK records
/// whose stanzas are stored without their Recipient are given it
/// (`KvStore::upgrade_dek_records` in `gateway::store::rules`; once per store), matching
/// each stanza against the institution, the configured peers and backup recovery Recipient, and the patients and
/// grant recipients the store knows.
fn open_private(setup: &Setup, cache_bytes: u64, institution: &Recipient) -> Result<SledStore> {
    let data_dir = &setup.data_dir;
    let store = open_sled(data_dir, cache_bytes)?;
    // Keys the config names; one that does not parse names no stanza (and `config check`
    // reports it), so it is skipped here rather than stopping an admin command.
    let mut others: Vec<Recipient> = setup
        .file
        .peer_list()
        .iter()
        .filter_map(|(_, r)| r.parse().ok())
        .collect();
    if let Some(r) = setup.file.backup.recovery_recipient.as_deref() {
        others.extend(r.parse::<Recipient>().ok());
    }
    store
        .upgrade_dek_records(institution, &others)
        .map_err(|e| {
            anyhow!(
                "cannot upgrade the DEK records of the private store {}: {e}",
                data_dir.join("private").display()
            )
        })?;
    Ok(store)
}

pub(crate) fn open_sled(data_dir: &Path, cache_bytes: u64) -> Result<SledStore> {
    let dir = data_dir.join("private");
    SledStore::open(&dir, cache_bytes).map_err(|e| match e {
        gateway::Error::Io(io)
            if io.raw_os_error() == Some(11)
                || io.to_string().contains("could not acquire lock") =>
        {
            anyhow!(
                "another medgate process is using {}: its private store {} is locked. Stop \
                 that process first (admin commands reach a running server through \
                 DATA_DIR/admin.sock), or give this one another --data-dir",
                data_dir.display(),
                dir.display()
            )
        }
        other => anyhow!("cannot open the private store {}: {other}", dir.display()),
    })
}

fn create_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        anyhow!(
            "cannot create the data dir {}: {e}. Create it for the user medgate runs as \
             (e.g. `install -d -m 0700 -o medgate {}`), or pass another --data-dir",
            dir.display(),
            dir.display()
        )
    })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
        anyhow!(
            "cannot make the data dir {} private (mode 0700): {e}. The data dir must be owned \
             by the user medgate runs as: `chown -R USER {}` (or pass another --data-dir)",
            dir.display(),
            dir.display()
        )
    })?;
    // Everything medgate keeps there is written beside the data, so find out now, with
    // the path and the fix, rather than at the first file.
    let probe = dir.join(".medgate-write-test");
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => bail!(
            "the data dir {} is not writable: {e}. The data dir must be owned by the user \
             medgate runs as: `chown -R USER {}` (or pass another --data-dir)",
            dir.display(),
            dir.display()
        ),
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let setup = setup(&args.dir)?;
    let log_format = args
        .log_format
        .clone()
        .or_else(|| setup.file.log_format.clone())
        .unwrap_or_else(|| "human".into());
    init_logging(&log_format)?;
    disable_core_dumps();
    raise_open_files_limit();
    let limits = setup.file.connections.limits(&config::ConnectionsConfig {
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        max_per_port: args.max_connections,
    })?;
    let mut transport = config::Transport::resolve(
        &setup.file,
        args.listen,
        args.ops_listen,
        args.tls_cert.clone(),
        args.tls_key.clone(),
        args.allow_plain_http,
    )?;
    if let Some(a) = args.admin_listen {
        transport.api_listen = a;
    }
    transport.check_plain_http()?;
    let peers = setup.file.peers()?;
    if let Some(ttl) = setup.file.api.session_ttl {
        if ttl > gateway::engine::remote::MAX_SESSION_TTL || ttl.is_zero() {
            bail!("[api] session_ttl must be between 1s and 60s");
        }
    }
    let tls = match &transport.tls {
        Some((cert, key)) => Some(Arc::new(gateway::runtime::tls::Tls::load(cert, key)?)),
        None => None,
    };
    // The public store setting is checked before anything is created: a mistyped URL
    // must not leave a data dir (or a folder named `s3:`) behind.
    let location = setup.public_location()?;
    let no_credentials = gateway::store::public::missing_credentials(&location, &setup.public_opts);
    let data_dir = setup.data_dir.clone();
    create_data_dir(&data_dir)?;
    let (public, public_root) = setup.open_public(true)?;
    tracing::info!(public_store = %location.describe(), "public store");
    if let Some(why) = &no_credentials {
        tracing::warn!("{why}");
    }
    let id_path = identity_path(&setup, args.identity.as_deref());
    let identity = Arc::new(load_identity(&id_path, &data_dir, true)?);
    let previous = keyrot::load_previous(&id_path, &data_dir)?;
    if data_dir.join("keys-rotate.state").exists() {
        tracing::warn!(
            "an institution key rotation is unfinished: run `medgate keys rotate` to finish it"
        );
    }
    let cache = setup
        .file
        .private_store
        .cache_bytes
        .unwrap_or(DEFAULT_CACHE_BYTES);
    let private: Arc<dyn PrivateStore> =
        Arc::new(open_private(&setup, cache, &identity.recipient())?);
    backup::check_at_start(&*private, &setup.file.backup).await?;
    // Peers that replaced their key since the config was written: followed by a verified
    // rollover (see gateway::engine::remote), kept in the private store; the config is not rewritten.
    let mut peers = peers;
    for (name, recipient) in private.peer_keys().await? {
        let Ok(key) = recipient.parse::<keyring::Recipient>() else {
            continue;
        };
        if let Some(p) = peers
            .iter_mut()
            .find(|p| p.name == name && !p.recipient.ct_eq(&key))
        {
            tracing::warn!(
                peer = %name,
                "peer {name} rotated its key: update [[peers]] recipient to {key}"
            );
            p.recipient = key;
        }
    }

    let mut engine_config = EngineConfig::default();
    if let Some(cs) = args.chunk_size.or(setup.file.engine.chunk_size) {
        config::check_chunk_size(cs).context("--chunk-size")?;
        engine_config.chunk_size = cs;
    }
    engine_config.part_size = config::part_size(setup.file.engine.part_size, public_root.is_some());
    for p in &setup.file.patient_prefixes {
        gateway::engine::sharing::check_patient_id(&p.patient)
            .with_context(|| format!("patient_prefixes entry {}/{}", p.bucket, p.prefix))?;
    }
    engine_config.patient_prefixes = setup.file.patient_prefixes.clone();
    let (index_interval, index_cover) = setup.file.engine.index_publication(args.index_interval)?;
    engine_config.index_cover = index_cover;
    let domain = args.domain.clone().or_else(|| setup.file.s3.domain.clone());

    let first_key = ensure_first_access_key(&*private, &identity, &data_dir).await?;
    warn_upgraded_label_right(&*private).await?;
    let token_file = setup
        .file
        .api
        .admin_token_file
        .clone()
        .unwrap_or_else(|| data_dir.join("admin.token"));
    let admin_token = load_admin_token(&token_file)?;
    let reloader = ops::reload_on_sighup(tls.clone()).context("cannot watch SIGHUP")?;

    let config = RunConfig {
        private,
        public,
        public_root,
        public_hint: no_credentials,
        identity: Arc::clone(&identity),
        previous,
        peers,
        peer_list: setup.file.peer_list(),
        engine: engine_config,
        index_interval,
        session_ttl: setup
            .file
            .api
            .session_ttl
            .unwrap_or(gateway::engine::remote::MAX_SESSION_TTL),
        peer_ca: setup.file.api.peer_ca.clone(),
        domain,
        listen: transport.listen,
        ops_listen: transport.ops_listen,
        api_listen: transport.api_listen,
        tls: tls.clone(),
        limits,
        admin_socket: data_dir.join("admin.sock"),
        admin_token,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listening = |at: Listening| {
        let local = at.s3;
        println!("medgate listening on {scheme}://{local}");
        println!(
            "ops endpoints (/healthz, /readyz, /metrics) on {scheme}://{}",
            at.ops
        );
        println!(
            "JSON API on {scheme}://{} (OpenAPI at /openapi.json; admin token in {})",
            at.api,
            token_file.display()
        );
        if let Some(id) = first_key {
            println!(
                "created access key {id}; its secret is in {}",
                data_dir.join("credentials").display()
            );
        }
        let credentials = data_dir.join("credentials");
        if credentials.exists() {
            println!(
                "try: AWS_SHARED_CREDENTIALS_FILE={} aws --profile medgate --endpoint-url {scheme}://{local} s3 ls",
                credentials.display()
            );
        } else {
            // A restored data dir: backups hold the access keys (their secrets sealed) but
            // not this file, and the secrets are not shown again.
            println!(
                "no credentials file {} (a restore does not bring it back): the S3 keys you had still \
                 work; for a new one run `medgate access-key create --data-dir {}` and give its \
                 secret to the S3 client",
                credentials.display(),
                data_dir.display()
            );
        }
    };
    let result = gateway::runtime::run::run(config, listening, shutdown_signal()).await;
    reloader.abort();
    result.map_err(|e| {
        let err = match e.source {
            RunErrorSource::Io(io) => anyhow::Error::new(io),
            RunErrorSource::Gateway(g) => anyhow::Error::new(g),
        };
        match e.context {
            Some(c) => err.context(c),
            None => err,
        }
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// On first run, creates the first access key (from MEDGATE_ACCESS_KEY_ID and
/// MEDGATE_SECRET_ACCESS_KEY when set) and writes DATA_DIR/credentials. Returns the id of
/// a key it created.
async fn ensure_first_access_key(
    store: &dyn PrivateStore,
    identity: &Identity,
    data_dir: &Path,
) -> Result<Option<String>> {
    let env_id = std::env::var("MEDGATE_ACCESS_KEY_ID")
        .ok()
        .filter(|s| !s.is_empty());
    let env_secret = std::env::var("MEDGATE_SECRET_ACCESS_KEY")
        .ok()
        .filter(|s| !s.is_empty())
        .map(zeroize::Zeroizing::new);
    let (id, secret) = match (env_id, env_secret) {
        (Some(id), Some(secret)) => {
            if store.access_key(&id).await?.is_some() {
                return Ok(None);
            }
            (id, secret)
        }
        (Some(_), None) | (None, Some(_)) => {
            bail!("set both MEDGATE_ACCESS_KEY_ID and MEDGATE_SECRET_ACCESS_KEY, or neither")
        }
        (None, None) => {
            if !store.list_access_keys().await?.is_empty() {
                return Ok(None);
            }
            (admin::new_access_key_id(), admin::new_secret())
        }
    };
    // The first key is the operator's: it may label records with patients.
    gateway::engine::maintenance::add_access_key(store, identity, &id, &secret, Vec::new(), true)
        .await
        .map_err(|e| anyhow!("cannot create the first access key: {e}"))?;
    let creds = zeroize::Zeroizing::new(format!(
        "[medgate]\naws_access_key_id = {id}\naws_secret_access_key = {}\n",
        secret.as_str()
    ));
    write_private_file(&data_dir.join("credentials"), creds.as_bytes())?;
    Ok(Some(id))
}

/// Keys whose rows predate the label right (v1 rows) keep it; name them, so that an admin
/// can replace those that do not need it.
async fn warn_upgraded_label_right(store: &dyn PrivateStore) -> Result<()> {
    let upgraded: Vec<String> = store
        .list_access_keys()
        .await?
        .into_iter()
        .filter(|k| k.v == gateway::store::private::ACCESS_KEY_ROW_V1 && k.label_patients)
        .map(|k| k.id)
        .collect();
    if !upgraded.is_empty() {
        tracing::warn!(
            keys = %upgraded.join(", "),
            "access keys created before --label-patients existed keep the right to label records with patients; replace those that do not need it (medgate access-key create [--label-patients], then access-key delete)"
        );
    }
    Ok(())
}

/// Runs an admin request through the running server, or directly on the store when no
/// server answers. Says which on stderr.
pub(crate) async fn admin_request(dir: &DataDirArg, req: AdminRequest) -> Result<AdminResponse> {
    admin_request_with(dir, req, None).await
}

/// [`admin_request`], reporting a long operation's steps to `progress`.
pub(crate) async fn admin_request_with(
    dir: &DataDirArg,
    req: AdminRequest,
    progress: Option<admin::Progress>,
) -> Result<AdminResponse> {
    let setup = setup(dir)?;
    let socket = setup.data_dir.join("admin.sock");
    if socket.exists() {
        match admin::call_with_progress(&socket, &req, progress.as_ref()).await {
            Ok(resp) => {
                eprintln!(
                    "(through the running server's admin socket {})",
                    socket.display()
                );
                return Ok(resp);
            }
            // A server that holds the socket but does not answer also holds the store:
            // say so rather than fall back.
            Err(gateway::Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                bail!("{e}")
            }
            Err(e) => tracing::debug!(error = %e, "admin socket did not answer"),
        }
    }
    if !setup.data_dir.join("private").exists() {
        bail!(
            "{} is not a medgate data dir (no private store): pass --data-dir, or run `medgate serve` once",
            setup.data_dir.display()
        );
    }
    let id_path = identity_path(&setup, None);
    let identity = Arc::new(load_identity(&id_path, &setup.data_dir, false)?);
    let previous = keyrot::load_previous(&id_path, &setup.data_dir)?;
    let cache = setup
        .file
        .private_store
        .cache_bytes
        .unwrap_or(DEFAULT_CACHE_BYTES);
    let private: Arc<dyn PrivateStore> =
        Arc::new(open_private(&setup, cache, &identity.recipient())?);
    let (public, public_root) = setup.open_public(true)?;
    eprintln!(
        "(no server running: opened the store in {} directly)",
        setup.data_dir.display()
    );
    let engine = Arc::new(gateway::engine::record::Engine::new(
        public,
        private,
        identity,
        gateway::engine::record::EngineConfig::default(),
    ));
    engine.set_previous(previous);
    let cx = AdminContext {
        engine,
        serving: false,
        public_root,
        peers: setup.file.peer_list(),
        progress,
    };
    Ok(admin::handle(&cx, req).await)
}

pub(crate) fn fail_on_error(resp: AdminResponse) -> Result<AdminResponse> {
    match resp {
        AdminResponse::Error { message } => Err(anyhow!(message)),
        other => Ok(other),
    }
}

/// A progress bar for a long admin job, length set as progress frames arrive; indicatif hides
/// it when stderr is not a terminal.
pub(crate) fn progress_bar(template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

async fn verify(dir: &DataDirArg, deep: bool) -> Result<()> {
    // One bar per step (the log's entries, then the objects); hidden when stderr is not a
    // terminal.
    let bar = progress_bar("{msg:>28} [{bar:40}] {pos}/{len} ({elapsed})");
    let shown = bar.clone();
    let progress: admin::Progress = Arc::new(move |step: &str, done: u64, total: u64| {
        let msg = match step {
            "log" => "log entries checked",
            "objects" if deep => "objects and blobs checked",
            "objects" => "manifests checked",
            _ => "steps done",
        };
        shown.set_message(msg);
        shown.set_length(total);
        shown.set_position(done);
    });
    let resp = admin_request_with(dir, AdminRequest::Verify { deep }, Some(progress)).await;
    bar.finish_and_clear();
    match fail_on_error(resp?)? {
        AdminResponse::Verified { report: r } => {
            println!(
                "log: {} entries, {} checkpoints published, public checkpoint at size {}",
                r.log_size,
                r.checkpoints,
                r.published_size
                    .map_or("(none)".to_string(), |s| s.to_string())
            );
            println!(
                "objects: {} manifests checked{}",
                r.objects,
                if deep {
                    format!(", {} blobs re-hashed", r.blobs_rehashed)
                } else {
                    String::new()
                }
            );
            if r.problems.is_empty() {
                println!("verify: OK");
                Ok(())
            } else {
                for p in &r.problems {
                    println!("MISMATCH {p}");
                }
                bail!("verify found {} problems", r.problems.len())
            }
        }
        _ => bail!("unexpected answer from the server"),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RotateState {
    scope: gateway::engine::rotate::RotateScope,
    since: u64,
}

async fn rotate(
    dir: &DataDirArg,
    object: Option<String>,
    bucket: Option<String>,
    prefix: Option<String>,
    patient: Option<String>,
    state: &Path,
) -> Result<()> {
    use gateway::engine::rotate::RotateScope;
    let scope = match (object, bucket, patient) {
        (Some(o), _, _) => match o.split_once('/') {
            Some((b, k)) if !b.is_empty() && !k.is_empty() => RotateScope::Object {
                bucket: b.to_string(),
                key: k.to_string(),
            },
            _ => bail!("--object must be BUCKET/KEY (e.g. --object pacs/p-1001/ct.dcm), not {o:?}"),
        },
        (None, Some(bucket), _) => {
            if bucket.is_empty() || bucket.contains('/') {
                bail!(
                    "--bucket is a bucket name alone, not {bucket:?}: write --bucket BUCKET \
                     --prefix PREFIX (the prefix is inside the bucket)"
                );
            }
            RotateScope::Prefix {
                bucket,
                prefix: prefix.unwrap_or_default(),
            }
        }
        (None, None, Some(patient)) => RotateScope::Patient { patient },
        _ => bail!(
            "say which records: --object BUCKET/KEY, --bucket BUCKET [--prefix PREFIX], or \
             --patient ID"
        ),
    };
    let scope_json = serde_json::to_value(&scope)?;
    let since = match std::fs::read(state) {
        Ok(b) => {
            let s: RotateState = serde_json::from_slice(&b)
                .with_context(|| format!("{} is not a rotation state file", state.display()))?;
            if serde_json::to_value(&s.scope)? != scope_json {
                bail!(
                    "{} holds an unfinished rotation of another scope: finish that one first (or delete the file)",
                    state.display()
                );
            }
            eprintln!(
                "resuming the rotation that started at log index {} (records it rotated are skipped)",
                s.since
            );
            s.since
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let size = match fail_on_error(admin_request(dir, AdminRequest::LogSize).await?)? {
                AdminResponse::LogSize { size } => size,
                _ => bail!("unexpected answer from the server"),
            };
            std::fs::write(
                state,
                serde_json::to_vec_pretty(&RotateState {
                    scope: scope.clone(),
                    since: size,
                })?,
            )
            .with_context(|| format!("cannot write {}", state.display()))?;
            size
        }
        Err(e) => bail!("cannot read {}: {e}", state.display()),
    };
    let bar = progress_bar("rotating [{bar:40}] {pos}/{len} records ({elapsed})");
    let shown = bar.clone();
    let progress: admin::Progress = Arc::new(move |_: &str, done: u64, total: u64| {
        shown.set_length(total);
        shown.set_position(done);
    });
    let resp = admin_request_with(
        dir,
        AdminRequest::Rotate {
            scope,
            since: Some(since),
        },
        Some(progress),
    )
    .await;
    bar.finish_and_clear();
    match fail_on_error(resp?)? {
        AdminResponse::Rotated { report: r } => {
            let _ = std::fs::remove_file(state);
            println!(
                "rotated {} data keys ({} manifests moved, {} bytes re-sealed); {} already rotated, {} changed meanwhile and left alone",
                r.rotated, r.manifests, r.bytes, r.skipped, r.raced
            );
            println!("the old blobs are garbage now: `medgate gc --apply` removes them after the grace period");
            Ok(())
        }
        _ => bail!("unexpected answer from the server"),
    }
}

async fn keys(dir: &DataDirArg) -> Result<()> {
    match fail_on_error(admin_request(dir, AdminRequest::Recipient).await?)? {
        AdminResponse::Recipient { recipient } => {
            println!("{recipient}");
            Ok(())
        }
        _ => bail!("unexpected answer from the server"),
    }
}

async fn access_key(dir: &DataDirArg, action: AccessKeyAction) -> Result<()> {
    let json = matches!(action, AccessKeyAction::List { out } if out.json);
    let req = match action {
        AccessKeyAction::Create {
            buckets,
            label_patients,
        } => AdminRequest::AccessKeyCreate {
            buckets,
            label_patients,
        },
        AccessKeyAction::List { .. } => AdminRequest::AccessKeyList,
        AccessKeyAction::Delete { id } => AdminRequest::AccessKeyDelete { id },
    };
    match fail_on_error(admin_request(dir, req).await?)? {
        AdminResponse::AccessKeyCreated {
            id,
            secret,
            buckets,
            label_patients,
        } => {
            println!("aws_access_key_id = {id}");
            println!("aws_secret_access_key = {}", secret.expose());
            if buckets.is_empty() {
                println!("# may use every bucket");
            } else {
                println!("# limited to buckets: {}", buckets.join(", "));
            }
            if label_patients {
                println!("# may label records with a patient");
            } else {
                println!("# may not label records with a patient (--label-patients)");
            }
            eprintln!("The secret is shown only now; store it in the application's credentials.");
        }
        AdminResponse::AccessKeys { keys } if json => patient::print_json(&keys)?,
        AdminResponse::AccessKeys { keys } => {
            for k in keys {
                let scope = if k.buckets.is_empty() {
                    "all buckets".to_string()
                } else {
                    k.buckets.join(",")
                };
                let label = if k.label_patients {
                    "label-patients"
                } else {
                    "-"
                };
                println!("{}\t{}\t{}", k.id, scope, label);
            }
        }
        AdminResponse::Deleted { id, existed } => {
            if !existed {
                bail!("no access key {id}");
            }
            println!("deleted access key {id}");
        }
        _ => bail!("unexpected answer from the server"),
    }
    Ok(())
}

async fn gc(dir: &DataDirArg, grace: Duration, apply: bool) -> Result<()> {
    let req = AdminRequest::Gc {
        grace_secs: grace.as_secs(),
        apply,
    };
    match fail_on_error(admin_request(dir, req).await?)? {
        AdminResponse::Gc { report: r } => {
            println!(
                "scanned {} blobs: {} live, {} unreferenced but younger than the grace period, {} foreign names",
                r.scanned, r.live, r.young, r.foreign
            );
            let verb = if r.applied { "deleted" } else { "would delete" };
            println!(
                "{verb} {} unreferenced blobs ({} bytes), {} stale pending uploads and {} staging files of unfinished uploads",
                r.reclaimable, r.reclaimable_bytes, r.stale_pending, r.stale_staging
            );
            let verb = if r.applied { "aborted" } else { "would abort" };
            println!(
                "{verb} {} multipart uploads idle for longer than the grace period",
                r.stale_uploads
            );
            let pending_work =
                r.reclaimable + r.stale_pending + r.stale_staging + r.stale_uploads > 0;
            if !r.applied && pending_work {
                println!("dry run: pass --apply to delete");
            }
            Ok(())
        }
        _ => bail!("unexpected answer from the server"),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    #[allow(unsafe_code)]
    fn the_process_is_not_dumpable_after_hardening() {
        // SAFETY: PR_GET_DUMPABLE only reads a flag of this process.
        let before = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
        assert_eq!(before, 1, "a test process starts dumpable");
        super::forbid_dumps_and_ptrace();
        // SAFETY: as above.
        let after = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
        assert_eq!(after, 0);
    }
}
