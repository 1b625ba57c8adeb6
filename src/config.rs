//! Settings: defaults, then a TOML file, then `MEDGATE_*` environment variables, then
//! flags (clap merges the last two: a flag beats its variable).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

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
    pub patient_prefixes: Vec<gateway::record::PatientPrefix>,
}

/// A peer institution: its name as this hospital knows it, and its Recipient.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub name: String,
    pub recipient: String,
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
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineFileConfig {
    pub chunk_size: Option<u32>,
    pub part_size: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateStoreConfig {
    pub cache_bytes: Option<u64>,
}

impl FileConfig {
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
        toml::from_str(&text)
            .with_context(|| format!("config file {} is not valid", path.display()))
    }
}

/// Parses `KEY=VALUE`.
pub fn parse_kv(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("expected KEY=VALUE, got {s:?}"),
    }
}
