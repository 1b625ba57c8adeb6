//! Commands and wiring for operating medgate: `medgate healthcheck` (the container
//! HEALTHCHECK, no shell needed), `medgate config check FILE`, and reloading the TLS
//! certificate on SIGHUP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use gateway::runtime::tls::Tls;

use crate::config::{FileConfig, DEFAULT_OPS_LISTEN};

#[derive(Args)]
pub(crate) struct HealthcheckArgs {
    /// URL to GET. Default: /healthz on the ops address of MEDGATE_OPS_LISTEN or the
    /// config's [ops] listen (a wildcard address becomes loopback), https when TLS is
    /// configured; else http://127.0.0.1:9003/healthz.
    #[arg(long)]
    ops_url: Option<String>,
    /// PEM CA bundle to verify an https ops port's certificate with. Without it the
    /// certificate is not checked (a liveness probe sends nothing secret).
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
    /// Give up after this long (e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// TOML config file of the server to check.
    #[arg(long, env = "MEDGATE_CONFIG")]
    config: Option<PathBuf>,
    /// The server's ops address, as `serve --ops-listen` takes it.
    #[arg(long, env = "MEDGATE_OPS_LISTEN")]
    ops_listen: Option<SocketAddr>,
    /// The server's TLS certificate setting (only whether it is set matters here).
    #[arg(long, env = "MEDGATE_TLS_CERT", hide = true)]
    tls_cert: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum ConfigAction {
    /// Validate FILE and print the settings it gives, defaults filled in and secrets
    /// redacted; exit non-zero naming the first bad setting.
    Check { file: PathBuf },
}

/// The URL `healthcheck` GETs when none is given.
fn default_url(args: &HealthcheckArgs) -> Result<String> {
    let file = match &args.config {
        Some(path) => FileConfig::load(Some(path))?,
        None => FileConfig::default(),
    };
    let mut addr = args.ops_listen.or(file.ops.listen).unwrap_or_else(|| {
        DEFAULT_OPS_LISTEN
            .parse()
            .expect("the default ops address parses")
    });
    // A server listening on every address is reached on loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let tls = args.tls_cert.is_some() || file.tls.cert.is_some();
    let scheme = if tls { "https" } else { "http" };
    Ok(format!("{scheme}://{addr}/healthz"))
}

/// `medgate healthcheck`: exit 0 when the ops port answers 200.
pub(crate) async fn healthcheck(args: HealthcheckArgs) -> Result<()> {
    let url = match &args.ops_url {
        Some(u) => u.clone(),
        None => default_url(&args)?,
    };
    match gateway::runtime::ops::probe(&url, args.ca_bundle.as_deref(), args.timeout).await {
        Ok((200, _)) => {
            println!("healthy: {url} answered 200");
            Ok(())
        }
        Ok((status, body)) => {
            let body: String = body.trim().chars().take(500).collect();
            bail!("unhealthy: {url} answered {status}: {body}")
        }
        Err(e) => bail!("unhealthy: {url}: {e}"),
    }
}

/// `medgate config check FILE`.
pub(crate) fn config_check(file: &std::path::Path) -> Result<()> {
    let config = FileConfig::load(Some(file))?;
    let effective = config
        .effective()
        .map_err(|e| anyhow::anyhow!("config file {} is not valid: {e:#}", file.display()))?;
    println!(
        "# Effective settings of {}: the file's values and the built-in defaults.\n\
         # MEDGATE_* variables and flags given to `medgate serve` override them.\n\
         # Public store options that may hold secrets are redacted.",
        file.display()
    );
    print!("{effective}");
    eprintln!("{}: OK", file.display());
    Ok(())
}

/// Reloads the TLS certificate and key on every SIGHUP, for as long as the task runs.
/// Without TLS a SIGHUP is logged and ignored (rather than ending the process, which is
/// what an unhandled SIGHUP does).
///
/// # Errors
/// The signal handler cannot be installed.
pub(crate) fn reload_on_sighup(tls: Option<Arc<Tls>>) -> Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let Some(tls) = &tls else {
                tracing::info!("SIGHUP: no TLS configured, nothing to reload");
                continue;
            };
            let outcome = match tls.reload() {
                Ok(()) => {
                    tracing::info!(cert = %tls.cert_path().display(), "SIGHUP: reloaded the TLS certificate; new connections use it");
                    "ok"
                }
                Err(e) => {
                    let e = anyhow::Error::from(e);
                    tracing::warn!(error = %format!("{e:#}"), "SIGHUP: could not reload the TLS certificate; keeping the old one");
                    "error"
                }
            };
            gateway::metrics::global()
                .tls_reloads
                .get_or_create(&gateway::metrics::OutcomeLabels { outcome })
                .inc();
        }
    }))
}
