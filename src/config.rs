//! Settings: defaults, then a TOML file, then `MEDGATE_*` environment variables, then
//! flags (clap merges the last two: a flag beats its variable).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The config file, every field optional. See `deploy/medgate.example.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub log_format: Option<String>,
    pub identity: Option<PathBuf>,
    #[serde(default)]
    pub public_store: PublicStoreConfig,
    #[serde(default)]
    pub engine: EngineFileConfig,
    #[serde(default)]
    pub private_store: PrivateStoreConfig,
    #[serde(default)]
    pub s3: S3Config,
    /// Other institutions this gateway knows: what a patient is shown about who asks.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Bucket prefixes whose records belong to one patient, beside the
    /// `x-amz-meta-medgate-patient` header.
    #[serde(default)]
    pub patient_prefixes: Vec<gateway::engine::record::PatientPrefix>,
    /// TLS on the S3 and ops ports, and when plain HTTP is allowed.
    #[serde(default)]
    pub tls: TlsConfig,
    /// The ops port: health, readiness, metrics.
    #[serde(default)]
    pub ops: OpsConfig,
    /// Backups: the recovery Recipient and how old the last one may get.
    #[serde(default)]
    pub backup: crate::backup::BackupConfig,
    /// The JSON API: admin, patients, peers, log.
    #[serde(default)]
    pub api: ApiConfig,
    /// Limits on client connections, the same on every port.
    #[serde(default)]
    pub connections: ConnectionsConfig,
}

/// `[connections]`: what each port (S3, JSON API, ops) allows its clients.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// From connecting (or the end of the previous response) to a complete request
    /// head; default 30s.
    #[serde(default, with = "humantime_serde_opt")]
    pub header_timeout: Option<std::time::Duration>,
    /// No request in flight for this long closes the connection; default 120s.
    #[serde(default, with = "humantime_serde_opt")]
    pub idle_timeout: Option<std::time::Duration>,
    /// Connections open at once per port; default 4096. At the cap a new connection
    /// closes the idle one of longest standing.
    pub max_per_port: Option<usize>,
}

impl ConnectionsConfig {
    /// The limits from this section, `overrides` (flags and environment) winning.
    ///
    /// # Errors
    /// A zero duration or cap.
    pub fn limits(
        &self,
        overrides: &ConnectionsConfig,
    ) -> anyhow::Result<gateway::runtime::server::ConnLimits> {
        let d = gateway::runtime::server::ConnLimits::default();
        let limits = gateway::runtime::server::ConnLimits {
            header_timeout: overrides
                .header_timeout
                .or(self.header_timeout)
                .unwrap_or(d.header_timeout),
            idle_timeout: overrides
                .idle_timeout
                .or(self.idle_timeout)
                .unwrap_or(d.idle_timeout),
            max_connections: overrides
                .max_per_port
                .or(self.max_per_port)
                .unwrap_or(d.max_connections),
        };
        if limits.header_timeout.is_zero() {
            bail!("[connections] header_timeout (--header-timeout) must be more than 0s");
        }
        if limits.idle_timeout.is_zero() {
            bail!("[connections] idle_timeout (--idle-timeout) must be more than 0s");
        }
        if limits.max_connections == 0 {
            bail!("[connections] max_per_port (--max-connections) must be at least 1");
        }
        Ok(limits)
    }
}

/// `[api]`: the JSON API beside the S3 port.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Where it listens (default 127.0.0.1:9002; `--admin-listen`).
    pub listen: Option<SocketAddr>,
    /// File holding the admin token (default DATA_DIR/admin.token, created 0600 at the
    /// first start).
    pub admin_token_file: Option<PathBuf>,
    /// PEM CA bundle trusted for peers' HTTPS APIs, beside the system roots.
    pub peer_ca: Option<PathBuf>,
    /// How long a read session of a shared record (its manifest and key, from the peer) is
    /// reused: at most 60 s, the default.
    #[serde(default, with = "humantime_serde_opt")]
    pub session_ttl: Option<std::time::Duration>,
}

/// Where the JSON API listens unless configured.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:9002";

pub(crate) mod humantime_serde_opt {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<std::time::Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// `[tls]`: PEM files for the S3 and ops ports, reloaded on SIGHUP.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Serve plain HTTP on an address that is not loopback.
    pub allow_plain_http: Option<bool>,
}

/// `[ops]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    pub listen: Option<SocketAddr>,
}

/// Where the ops endpoints listen unless configured: loopback, so plain HTTP is allowed.
pub const DEFAULT_OPS_LISTEN: &str = "127.0.0.1:9003";

/// How the S3 and ops ports are exposed, resolved from flags, environment and file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    pub listen: SocketAddr,
    pub ops_listen: SocketAddr,
    pub api_listen: SocketAddr,
    /// Certificate and key files, when TLS is on.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub allow_plain_http: bool,
}

impl Transport {
    /// Resolves the settings: each argument is the flag-or-environment value, which
    /// beats the file's.
    ///
    /// # Errors
    /// A certificate without a key or the other way round.
    pub fn resolve(
        file: &FileConfig,
        listen: Option<SocketAddr>,
        ops_listen: Option<SocketAddr>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        allow_plain_http: bool,
    ) -> anyhow::Result<Self> {
        let listen = listen.or(file.listen).unwrap_or_else(|| {
            crate::DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses")
        });
        let ops_listen = ops_listen.or(file.ops.listen).unwrap_or_else(|| {
            DEFAULT_OPS_LISTEN
                .parse()
                .expect("the default ops address parses")
        });
        let cert = cert.or_else(|| file.tls.cert.clone());
        let key = key.or_else(|| file.tls.key.clone());
        let tls = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                bail!("[tls] cert (--tls-cert) is set but key (--tls-key) is not: set both, or neither")
            }
            (None, Some(_)) => {
                bail!("[tls] key (--tls-key) is set but cert (--tls-cert) is not: set both, or neither")
            }
        };
        let api_listen = file.api.listen.unwrap_or_else(|| {
            DEFAULT_API_LISTEN
                .parse()
                .expect("the default API address parses")
        });
        Ok(Transport {
            listen,
            ops_listen,
            api_listen,
            tls,
            allow_plain_http: allow_plain_http || file.tls.allow_plain_http.unwrap_or(false),
        })
    }

    /// Plain HTTP is served only on loopback addresses unless explicitly allowed:
    /// access keys' signatures protect requests, but record bodies would cross the
    /// network in clear.
    ///
    /// # Errors
    /// A port that would serve plain HTTP beyond loopback, naming the setting.
    pub fn check_plain_http(&self) -> anyhow::Result<()> {
        if self.tls.is_some() || self.allow_plain_http {
            return Ok(());
        }
        for (setting, addr) in [
            ("listen (--listen)", self.listen),
            ("[ops] listen (--ops-listen)", self.ops_listen),
            ("[api] listen (--admin-listen)", self.api_listen),
        ] {
            if !addr.ip().is_loopback() {
                bail!(
                    "refusing to serve plain HTTP on {addr} ({setting}), which is not a loopback \
                     address: configure [tls] cert and key (--tls-cert, --tls-key), or set [tls] \
                     allow_plain_http = true (--allow-plain-http) when a TLS proxy or a closed \
                     network protects the port"
                );
            }
        }
        Ok(())
    }
}

/// A peer institution: its name as this hospital knows it, and its Recipient.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub name: String,
    pub recipient: String,
    /// The peer's JSON API (`https://gateway-a.example:9002`), to ask it for shares and
    /// read what it shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Let `url` be plain `http://` (loopback tests only); https otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_plain_http: bool,
    /// A PEM CA bundle pinned for this peer: only these CAs are trusted for its `url`, not
    /// the system roots (nor `[api] peer_ca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Base domain for virtual-host-style addressing.
    pub domain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicStoreConfig {
    pub url: Option<String>,
    /// Whether `serve` may create a folder store's folder when it is missing (the default
    /// `DATA_DIR/public` is always created).
    pub create: Option<bool>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// One HTTP request to a cloud store (humantime, e.g. "30s").
    pub timeout: Option<String>,
    /// Connecting to a cloud store.
    pub connect_timeout: Option<String>,
    /// One whole operation of any store, retries included.
    pub operation_timeout: Option<String>,
    #[serde(default)]
    pub retry: RetryFileConfig,
}

/// `[public_store.retry]`: object_store's `RetryConfig` and `BackoffConfig`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFileConfig {
    pub max_retries: Option<usize>,
    pub backoff_initial: Option<String>,
    pub backoff_max: Option<String>,
    pub backoff_base: Option<f64>,
    pub retry_timeout: Option<String>,
}

impl PublicStoreConfig {
    /// The timeouts and retries `serve` uses with these store `options` (the file's
    /// merged with `--public-store-opt`).
    ///
    /// # Errors
    /// A setting that is not a duration, a zero duration, a backoff base below 1.
    pub fn timeouts(
        &self,
        options: &BTreeMap<String, String>,
    ) -> anyhow::Result<gateway::store::public::StoreTimeouts> {
        let duration = |name: &str, v: &Option<String>| -> anyhow::Result<_> {
            v.as_deref()
                .map(humantime::parse_duration)
                .transpose()
                .with_context(|| format!("[public_store] {name}"))
        };
        let mut retry = gateway::store::public::default_retry();
        let r = &self.retry;
        if let Some(n) = r.max_retries {
            retry.max_retries = n;
        }
        if let Some(d) = duration("retry.backoff_initial", &r.backoff_initial)? {
            retry.backoff.init_backoff = d;
        }
        if let Some(d) = duration("retry.backoff_max", &r.backoff_max)? {
            retry.backoff.max_backoff = d;
        }
        if let Some(b) = r.backoff_base {
            retry.backoff.base = b;
        }
        if let Some(d) = duration("retry.retry_timeout", &r.retry_timeout)? {
            retry.retry_timeout = d;
        }
        gateway::store::public::StoreTimeouts::new(
            options,
            duration("timeout", &self.timeout)?,
            duration("connect_timeout", &self.connect_timeout)?,
            duration("operation_timeout", &self.operation_timeout)?,
            retry,
        )
        .context("[public_store]")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineFileConfig {
    pub chunk_size: Option<u32>,
    pub part_size: Option<usize>,
    /// How often patient indexes are published (default 10s; `--index-interval`).
    #[serde(default, with = "humantime_serde_opt")]
    pub index_interval: Option<std::time::Duration>,
    /// Patient indexes a publication tick rewrites at least, changed and unchanged together
    /// (default and minimum 32).
    pub index_cover: Option<usize>,
}

impl EngineFileConfig {
    /// The patient index publication interval (`overrides`, from the flag or environment,
    /// winning) and cover.
    ///
    /// # Errors
    /// An interval under 100ms or over a day; a cover under 32.
    pub fn index_publication(
        &self,
        interval_override: Option<std::time::Duration>,
    ) -> anyhow::Result<(std::time::Duration, usize)> {
        let interval = interval_override
            .or(self.index_interval)
            .unwrap_or(gateway::engine::sharing::DEFAULT_INDEX_INTERVAL);
        if interval < std::time::Duration::from_millis(100)
            || interval > std::time::Duration::from_secs(86_400)
        {
            bail!(
                "[engine] index_interval (--index-interval) = {}: must be between 100ms and 1day",
                humantime::format_duration(interval)
            );
        }
        let cover = self
            .index_cover
            .unwrap_or(gateway::engine::sharing::MIN_INDEX_COVER);
        if cover < gateway::engine::sharing::MIN_INDEX_COVER {
            bail!(
                "[engine] index_cover = {cover}: must be at least {} (fewer would let the public \
                 store tell which patient's index changed)",
                gateway::engine::sharing::MIN_INDEX_COVER
            );
        }
        Ok((interval, cover))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateStoreConfig {
    pub cache_bytes: Option<u64>,
}

impl FileConfig {
    /// The peers as the gateway uses them.
    ///
    /// # Errors
    /// A recipient or URL that does not parse.
    pub fn peers(&self) -> anyhow::Result<Vec<gateway::engine::remote::Peer>> {
        self.peers
            .iter()
            .map(|p| {
                Ok(gateway::engine::remote::Peer {
                    name: p.name.clone(),
                    recipient: p
                        .recipient
                        .parse()
                        .map_err(|e| anyhow::anyhow!("[[peers]] {:?}: recipient: {e}", p.name))?,
                    url: p
                        .url
                        .as_deref()
                        .map(url::Url::parse)
                        .transpose()
                        .map_err(|e| anyhow::anyhow!("[[peers]] {:?}: url: {e}", p.name))?,
                    allow_plain_http: p.allow_plain_http,
                    ca_file: p.ca_file.clone(),
                })
            })
            .collect()
    }

    /// The peers as (name, recipient) pairs.
    pub fn peer_list(&self) -> Vec<(String, String)> {
        self.peers
            .iter()
            .map(|p| (p.name.clone(), p.recipient.clone()))
            .collect()
    }

    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        // toml's own Display quotes the offending line, which may hold a secret (a
        // public store key): report the position and the message only.
        toml::from_str(&text).map_err(|e| {
            let at = match e.span() {
                Some(span) => {
                    let before = text.get(..span.start).unwrap_or("");
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {column}: ")
                }
                None => String::new(),
            };
            anyhow::anyhow!(
                "config file {} is not valid: {at}{}",
                path.display(),
                without_values(e.message().trim_end())
            )
        })
    }

    /// Checks every setting as `serve` reads it, without opening the data dir or
    /// contacting a store (the TLS files are read, to check them).
    ///
    /// # Errors
    /// The first bad setting, named as in the file.
    pub fn validate(&self) -> anyhow::Result<Transport> {
        if let Some(f) = &self.log_format {
            check_log_format(f).context("log_format")?;
        }
        if let Some(cs) = self.engine.chunk_size {
            check_chunk_size(cs).context("[engine] chunk_size")?;
        }
        if self.engine.part_size == Some(0) {
            bail!("[engine] part_size = 0: must be positive");
        }
        self.engine.index_publication(None)?;
        gateway::store::public::check(self.public_store.url.as_deref(), &self.public_store.options)
            .context("[public_store]")?;
        self.public_store.timeouts(&self.public_store.options)?;
        if let Some(d) = &self.s3.domain {
            gateway::runtime::server::check_domain(d).context("[s3] domain")?;
        }
        for p in &self.peers {
            p.recipient
                .parse::<keyring::Recipient>()
                .map_err(|e| anyhow::anyhow!("[[peers]] {:?}: recipient: {e}", p.name))?;
            if let Some(u) = &p.url {
                let parsed = url::Url::parse(u)
                    .map_err(|e| anyhow::anyhow!("[[peers]] {:?}: url: {e}", p.name))?;
                match parsed.scheme() {
                    "https" => {}
                    "http" if p.allow_plain_http => {}
                    "http" => bail!(
                        "[[peers]] {:?}: url is plain http: use https://, or set allow_plain_http = true on this entry (loopback tests only)",
                        p.name
                    ),
                    _ => bail!("[[peers]] {:?}: url must be https://", p.name),
                }
            }
            if let Some(ca) = &p.ca_file {
                if p.url.is_none() {
                    bail!("[[peers]] {:?}: ca_file without a url", p.name);
                }
                std::fs::metadata(ca)
                    .with_context(|| format!("[[peers]] {:?}: ca_file {}", p.name, ca.display()))?;
            }
        }
        if let Some(ttl) = self.api.session_ttl {
            if ttl > gateway::engine::remote::MAX_SESSION_TTL || ttl.is_zero() {
                bail!("[api] session_ttl must be between 1s and 60s (a revocation must reach this gateway within a minute)");
            }
        }
        for p in &self.patient_prefixes {
            gateway::engine::sharing::check_patient_id(&p.patient).with_context(|| {
                format!("[[patient_prefixes]] {}/{}: patient", p.bucket, p.prefix)
            })?;
        }
        self.backup.validate()?;
        self.connections.limits(&ConnectionsConfig::default())?;
        let transport = Transport::resolve(self, None, None, None, None, false)?;
        if let Some((cert, key)) = &transport.tls {
            gateway::runtime::tls::Tls::load(cert, key).context("[tls]")?;
        }
        transport.check_plain_http()?;
        Ok(transport)
    }

    /// The settings `serve` would run with from this file alone, as TOML: built-in
    /// defaults filled in, and the value of every public store option whose name
    /// suggests a secret replaced by `<redacted>`.
    ///
    /// # Errors
    /// Settings [`FileConfig::validate`] refuses.
    pub fn effective(&self) -> anyhow::Result<String> {
        let transport = self.validate()?;
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::DEFAULT_DATA_DIR));
        let url = match &self.public_store.url {
            Some(u) => redact_url(u),
            None => data_dir.join("public").display().to_string(),
        };
        let folder = gateway::store::public::local_root(Some(&url), &data_dir).is_some();
        let (cert, key) = match transport.tls {
            Some((c, k)) => (Some(c), Some(k)),
            None => (None, None),
        };
        let timeouts = self.public_store.timeouts(&self.public_store.options)?;
        let human = |d| humantime::format_duration(d).to_string();
        let effective = Effective {
            identity: self
                .identity
                .clone()
                .unwrap_or_else(|| data_dir.join("institution.key")),
            data_dir,
            listen: transport.listen.to_string(),
            log_format: self.log_format.clone().unwrap_or_else(|| "human".into()),
            public_store: EffectivePublicStore {
                url,
                timeout: human(timeouts.timeout),
                connect_timeout: human(timeouts.connect_timeout),
                operation_timeout: human(timeouts.operation_timeout),
                retry: EffectiveRetry {
                    max_retries: timeouts.retry.max_retries,
                    backoff_initial: human(timeouts.retry.backoff.init_backoff),
                    backoff_max: human(timeouts.retry.backoff.max_backoff),
                    backoff_base: timeouts.retry.backoff.base,
                    retry_timeout: human(timeouts.retry.retry_timeout),
                },
                options: self
                    .public_store
                    .options
                    .iter()
                    .map(|(k, v)| {
                        let v = if is_secret_name(k) {
                            "<redacted>".to_string()
                        } else {
                            v.clone()
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            },
            engine: EffectiveEngine {
                chunk_size: self
                    .engine
                    .chunk_size
                    .unwrap_or(keyring::DEFAULT_CHUNK_SIZE),
                part_size: part_size(self.engine.part_size, folder),
                index_interval: human(self.engine.index_publication(None)?.0),
                index_cover: self.engine.index_publication(None)?.1,
            },
            private_store: EffectivePrivateStore {
                cache_bytes: self
                    .private_store
                    .cache_bytes
                    .unwrap_or(crate::DEFAULT_CACHE_BYTES),
            },
            s3: EffectiveS3 {
                domain: self.s3.domain.clone(),
            },
            tls: EffectiveTls {
                cert,
                key,
                allow_plain_http: transport.allow_plain_http,
            },
            ops: EffectiveOps {
                listen: transport.ops_listen.to_string(),
            },
            api: EffectiveApi {
                listen: transport.api_listen.to_string(),
                admin_token_file: self.api.admin_token_file.clone(),
                peer_ca: self.api.peer_ca.clone(),
                session_ttl: humantime::format_duration(
                    self.api
                        .session_ttl
                        .unwrap_or(gateway::engine::remote::MAX_SESSION_TTL),
                )
                .to_string(),
            },
            backup: self.backup.effective(),
            connections: {
                let l = self.connections.limits(&ConnectionsConfig::default())?;
                EffectiveConnections {
                    header_timeout: human(l.header_timeout),
                    idle_timeout: human(l.idle_timeout),
                    max_per_port: l.max_connections,
                }
            },
            peers: self.peers.clone(),
            patient_prefixes: self
                .patient_prefixes
                .iter()
                .map(|p| EffectivePrefix {
                    bucket: p.bucket.clone(),
                    prefix: p.prefix.clone(),
                    patient: p.patient.clone(),
                })
                .collect(),
        };
        toml::to_string(&effective).context("cannot print the effective settings")
    }
}

/// A deserializer message without the value it quotes ("invalid type: integer `123`,
/// expected a string" loses `123`): the value may be a secret typed without quotes.
fn without_values(msg: &str) -> String {
    for lead in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(lead) {
            let kind: String = rest
                .chars()
                .take_while(|c| !matches!(c, '`' | '"' | '\'' | ','))
                .collect();
            let expected = rest.find(", expected").map_or("", |i| &rest[i..]);
            return format!("{lead}{}{expected}", kind.trim_end());
        }
    }
    msg.to_string()
}

/// Whether a public store option holds a secret, judged by its name.
fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["secret", "key", "token", "password", "sas"]
        .iter()
        .any(|w| n.contains(w))
}

/// A URL with any password in it replaced.
fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        _ => u.to_string(),
    }
}

/// `log_format`: `human` or `json`.
pub fn check_log_format(format: &str) -> anyhow::Result<()> {
    match format {
        "human" | "json" => Ok(()),
        other => bail!("must be human or json, not {other:?}"),
    }
}

/// `chunk_size`: at least 1 KiB.
pub fn check_chunk_size(size: u32) -> anyhow::Result<()> {
    if size < 1024 {
        bail!("{size} is too small: must be at least 1024 bytes");
    }
    Ok(())
}

/// Bytes per public-store part: the configured size with a floor, or the default. A
/// folder has no minimum part size, and smaller parts keep concurrent uploads light;
/// object stores (S3) refuse parts under 5 MiB but the last.
pub fn part_size(configured: Option<usize>, folder: bool) -> usize {
    let (floor, default) = if folder {
        (1 << 20, 2 << 20)
    } else {
        (
            5 << 20,
            gateway::engine::record::EngineConfig::default().part_size,
        )
    };
    configured.map_or(default, |ps| ps.max(floor))
}

/// What `medgate config check` prints. Plain values come before tables, as TOML needs.
#[derive(Serialize)]
struct Effective {
    data_dir: PathBuf,
    listen: String,
    log_format: String,
    identity: PathBuf,
    public_store: EffectivePublicStore,
    engine: EffectiveEngine,
    private_store: EffectivePrivateStore,
    s3: EffectiveS3,
    tls: EffectiveTls,
    ops: EffectiveOps,
    api: EffectiveApi,
    backup: crate::backup::EffectiveBackup,
    connections: EffectiveConnections,
    peers: Vec<PeerConfig>,
    patient_prefixes: Vec<EffectivePrefix>,
}

#[derive(Serialize)]
struct EffectivePublicStore {
    url: String,
    timeout: String,
    connect_timeout: String,
    operation_timeout: String,
    options: BTreeMap<String, String>,
    retry: EffectiveRetry,
}

#[derive(Serialize)]
struct EffectiveRetry {
    max_retries: usize,
    backoff_initial: String,
    backoff_max: String,
    backoff_base: f64,
    retry_timeout: String,
}

#[derive(Serialize)]
struct EffectiveEngine {
    chunk_size: u32,
    part_size: usize,
    index_interval: String,
    index_cover: usize,
}

#[derive(Serialize)]
struct EffectivePrivateStore {
    cache_bytes: u64,
}

#[derive(Serialize)]
struct EffectiveS3 {
    domain: Option<String>,
}

#[derive(Serialize)]
struct EffectiveTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    allow_plain_http: bool,
}

#[derive(Serialize)]
struct EffectiveOps {
    listen: String,
}

#[derive(Serialize)]
struct EffectiveApi {
    listen: String,
    /// Where the admin token is read from (never the token).
    admin_token_file: Option<PathBuf>,
    peer_ca: Option<PathBuf>,
    session_ttl: String,
}

#[derive(Serialize)]
struct EffectiveConnections {
    header_timeout: String,
    idle_timeout: String,
    max_per_port: usize,
}

#[derive(Serialize)]
struct EffectivePrefix {
    bucket: String,
    prefix: String,
    patient: String,
}

/// Parses `KEY=VALUE`.
pub fn parse_kv(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("expected KEY=VALUE, got {s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn secrets_are_redacted_by_option_name() {
        let cfg = parse(
            r#"
[public_store]
url = "s3://bucket/prefix"
[public_store.options]
region = "eu-central-1"
access_key_id = "AKIAEXAMPLE"
secret_access_key = "wJalrXUtnFEMI"
token = "tok"
"#,
        );
        let out = cfg.effective().unwrap();
        assert!(out.contains(r#"region = "eu-central-1""#), "{out}");
        assert!(
            !out.contains("wJalrXUtnFEMI") && !out.contains("AKIAEXAMPLE"),
            "{out}"
        );
        assert!(!out.contains(r#""tok""#), "{out}");
        assert!(out.contains(r#"secret_access_key = "<redacted>""#), "{out}");
        assert!(out.contains(r#"listen = "127.0.0.1:9003""#), "{out}");
        assert!(out.contains(r#"index_interval = "10s""#), "{out}");
        assert!(out.contains("index_cover = 32"), "{out}");
    }

    #[test]
    fn index_publication_settings() {
        let cfg = parse("[engine]\nindex_interval = \"30s\"\nindex_cover = 100");
        assert_eq!(
            cfg.engine.index_publication(None).unwrap(),
            (std::time::Duration::from_secs(30), 100)
        );
        // The flag (or MEDGATE_INDEX_INTERVAL) wins over the file.
        assert_eq!(
            cfg.engine
                .index_publication(Some(std::time::Duration::from_secs(1)))
                .unwrap(),
            (std::time::Duration::from_secs(1), 100)
        );
        assert_eq!(
            parse("").engine.index_publication(None).unwrap(),
            (std::time::Duration::from_secs(10), 32)
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |text: &str| format!("{:#}", parse(text).validate().unwrap_err());
        assert!(err("log_format = \"xml\"").contains("log_format"));
        assert!(err("[engine]\nchunk_size = 10").contains("chunk_size"));
        let e = err("[engine]\nindex_cover = 5");
        assert!(
            e.contains("[engine] index_cover = 5") && e.contains("32"),
            "{e}"
        );
        let e = err("[engine]\nindex_interval = \"10ms\"");
        assert!(e.contains("[engine] index_interval"), "{e}");
        assert!(err("[s3]\ndomain = \"no spaces allowed\"").contains("[s3] domain"));
        let e = err("[public_store]\nurl = \"s3://b/p\"\n[public_store.options]\nregoin = \"x\"");
        assert!(e.contains("regoin"), "{e}");
        let e = err("[tls]\ncert = \"/nonexistent/tls.crt\"");
        assert!(e.contains("key"), "{e}");
        let e = err("listen = \"0.0.0.0:9000\"");
        assert!(
            e.contains("plain HTTP") && e.contains("0.0.0.0:9000"),
            "{e}"
        );
        let e = err("[ops]\nlisten = \"0.0.0.0:9090\"");
        assert!(e.contains("[ops] listen"), "{e}");
        let e = err("[public_store]\ntimeout = \"soon\"");
        assert!(e.contains("[public_store] timeout"), "{e}");
        let e = err("[public_store.retry]\nretry_timeout = \"10 parsecs\"");
        assert!(e.contains("retry.retry_timeout"), "{e}");
        let e = err("[public_store.retry]\nbackoff_base = 0.5");
        assert!(e.contains("backoff_base"), "{e}");
        let e = err("[public_store]\noperation_timeout = \"0s\"");
        assert!(e.contains("operation_timeout must be positive"), "{e}");
        assert!(
            parse("listen = \"0.0.0.0:9000\"\n[tls]\nallow_plain_http = true")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn public_store_timeouts_have_defaults_and_settings() {
        let out = parse("").effective().unwrap();
        for line in [
            r#"timeout = "30s""#,
            r#"connect_timeout = "5s""#,
            r#"operation_timeout = "42s""#,
            "max_retries = 3",
            r#"backoff_initial = "100ms""#,
            r#"retry_timeout = "10s""#,
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
        let cfg = parse(
            r#"
[public_store]
timeout = "2s"
[public_store.options]
connect_timeout = "1s"
[public_store.retry]
max_retries = 0
retry_timeout = "1s"
backoff_max = "500ms"
"#,
        );
        let t = cfg
            .public_store
            .timeouts(&cfg.public_store.options)
            .unwrap();
        assert_eq!(t.timeout, std::time::Duration::from_secs(2));
        assert_eq!(t.connect_timeout, std::time::Duration::from_secs(1));
        assert_eq!(t.retry.max_retries, 0);
        assert_eq!(t.operation_timeout, std::time::Duration::from_millis(3500));
    }

    #[test]
    fn parse_errors_name_the_place_but_not_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "[public_store.options]\nregion = \"x\"\nsecret_access_key = 9876543210\n",
        )
        .unwrap();
        let e = format!("{:#}", FileConfig::load(Some(&path)).unwrap_err());
        assert!(e.contains("bad.toml") && e.contains("line 3"), "{e}");
        assert!(
            e.contains("invalid type: integer, expected a string"),
            "{e}"
        );
        assert!(!e.contains("9876543210"), "{e}");
        std::fs::write(&path, "[opps]\nlisten = 1\n").unwrap();
        let e = format!("{:#}", FileConfig::load(Some(&path)).unwrap_err());
        assert!(e.contains("unknown field `opps`"), "{e}");
    }

    #[test]
    fn part_size_has_floors_and_defaults() {
        assert_eq!(part_size(None, true), 2 << 20);
        assert_eq!(part_size(Some(1), true), 1 << 20);
        assert_eq!(part_size(Some(1), false), 5 << 20);
        assert_eq!(part_size(Some(8 << 20), false), 8 << 20);
    }
}
