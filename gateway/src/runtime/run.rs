//! A whole gateway composed from what the binary resolved: one [`Engine`] over the two
//! stores, its background tasks (grant expiry, patient index and log publication), the peers'
//! clients, and the four listeners (S3, JSON API, ops, admin socket). [`run`] serves until
//! `shutdown` resolves, then stops the listeners, publishes once more and flushes the private
//! store. `medgate serve` (src/main.rs) parses its arguments and config into a
//! [`RunConfig`] and calls [`run`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keyring::Identity;
use zeroize::Zeroizing;

use crate::engine::record::{Engine, EngineConfig};
use crate::engine::remote::{Peer, Remote};
use crate::front::admin::AdminContext;
use crate::front::api::ApiState;
use crate::runtime::server::ConnLimits;
use crate::runtime::tls::Tls;
use crate::store::private::PrivateStore;
use crate::store::public::PublicStore;

/// Everything [`run`] needs, resolved and opened by the caller.
pub struct RunConfig {
    /// The private store, open.
    pub private: Arc<dyn PrivateStore>,
    /// The public store, open.
    pub public: PublicStore,
    /// The folder behind `public`, when it is one (for gc's staging sweep).
    pub public_root: Option<PathBuf>,
    /// Why the public store may lack credentials (shown by `/readyz`), if it may.
    pub public_hint: Option<String>,
    /// The institution identity.
    pub identity: Arc<Identity>,
    /// The institution's previous identities, newest first.
    pub previous: Vec<Arc<Identity>>,
    /// The configured peers (their keys already brought up to date).
    pub peers: Vec<Peer>,
    /// Peers by name and Recipient as the config lists them (for the admin socket).
    pub peer_list: Vec<(String, String)>,
    /// The engine's settings.
    pub engine: EngineConfig,
    /// How often patient indexes are published.
    pub index_interval: Duration,
    /// How long a read session at a peer is reused.
    pub session_ttl: Duration,
    /// A CA bundle pinned for the peers' APIs.
    pub peer_ca: Option<PathBuf>,
    /// The virtual-host domain of the S3 API.
    pub domain: Option<String>,
    /// The S3 port.
    pub listen: SocketAddr,
    /// The ops port.
    pub ops_listen: SocketAddr,
    /// The JSON API port.
    pub api_listen: SocketAddr,
    /// The certificate both TCP ports serve, if any.
    pub tls: Option<Arc<Tls>>,
    /// Connection limits of every port.
    pub limits: ConnLimits,
    /// The admin socket's path.
    pub admin_socket: PathBuf,
    /// The JSON API's admin token.
    pub admin_token: Zeroizing<String>,
}

/// Where the listeners are bound (ports of 0 resolved).
#[derive(Clone, Copy, Debug)]
pub struct Listening {
    pub s3: SocketAddr,
    pub ops: SocketAddr,
    pub api: SocketAddr,
}

/// Why a gateway could not start or stop cleanly: the error and, when there is one, what was
/// being done (the binary shows `context: error`).
#[derive(Debug)]
pub struct RunError {
    pub context: Option<String>,
    pub source: RunErrorSource,
}

/// The error under a [`RunError`].
#[derive(Debug)]
pub enum RunErrorSource {
    Io(std::io::Error),
    Gateway(crate::Error),
}

impl RunError {
    fn io(context: Option<String>) -> impl FnOnce(std::io::Error) -> RunError {
        move |e| RunError {
            context,
            source: RunErrorSource::Io(e),
        }
    }

    fn gateway(context: Option<String>) -> impl FnOnce(crate::Error) -> RunError {
        move |e| RunError {
            context,
            source: RunErrorSource::Gateway(e),
        }
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(c) = &self.context {
            write!(f, "{c}: ")?;
        }
        match &self.source {
            RunErrorSource::Io(e) => write!(f, "{e}"),
            RunErrorSource::Gateway(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Spawns `f` every `every` until aborted, logging (never failing on) its errors.
fn every<F, Fut>(
    every: Duration,
    delay_missed: bool,
    what: &'static str,
    f: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = crate::Result<()>> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        if delay_missed {
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tick.tick().await;
            if let Err(e) = f().await {
                tracing::warn!(error = %e, "{what} failed");
            }
        }
    })
}

/// Serves a gateway until `shutdown` resolves; `listening` hears where it listens once every
/// port is bound.
///
/// # Errors
/// A port or the admin socket that cannot be opened, peers' clients that cannot be set up,
/// an accept loop failure, and a failed final flush of the private store.
pub async fn run(
    config: RunConfig,
    listening: impl FnOnce(Listening),
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let RunConfig {
        private,
        public,
        public_root,
        public_hint,
        identity,
        previous,
        peers,
        peer_list,
        engine: engine_config,
        index_interval,
        session_ttl,
        peer_ca,
        domain,
        listen,
        ops_listen,
        api_listen,
        tls,
        limits,
        admin_socket,
        admin_token,
    } = config;
    let engine = Arc::new(Engine::new(
        public.clone(),
        Arc::clone(&private),
        Arc::clone(&identity),
        engine_config,
    ));
    if !previous.is_empty() {
        engine.set_previous(previous);
    }

    // Grants that end need nobody to act: access checks refuse them at once, and this
    // removes their wrapped keys.
    let sweeper = {
        let engine = Arc::clone(&engine);
        every(
            Duration::from_secs(15),
            false,
            "expiring grants",
            move || {
                let engine = Arc::clone(&engine);
                async move { engine.expire_grants().await.map(drop) }
            },
        )
    };
    // Patient indexes are published in ticks: every record change marks its patient, and
    // every `index_interval` (and once more at shutdown) the marked ones are rewritten with
    // randomly chosen unchanged ones, at least `index_cover` in all (Engine::publish_indexes).
    let index_publisher = {
        let engine = Arc::clone(&engine);
        every(
            index_interval,
            true,
            "publishing patient indexes",
            move || {
                let engine = Arc::clone(&engine);
                async move { engine.publish_indexes().await.map(drop) }
            },
        )
    };
    // The transparency log's checkpoint and tiles, every second.
    let publisher = {
        let engine = Arc::clone(&engine);
        every(
            Duration::from_secs(1),
            false,
            "publishing the transparency log",
            move || {
                let engine = Arc::clone(&engine);
                async move { engine.publish_log().await.map(drop) }
            },
        )
    };
    // Buckets mounted from peers, when any peer has an API url.
    let remote = if peers.iter().any(|p| p.url.is_some()) {
        let r = Arc::new(
            Remote::new(
                Arc::clone(&identity),
                peers.clone(),
                Arc::clone(&private),
                session_ttl,
                peer_ca.as_deref(),
            )
            .await
            .map_err(RunError::gateway(Some(
                "cannot set up the peers' API clients ([[peers]] url, [api] peer_ca)".into(),
            )))?,
        );
        engine.set_remote(Arc::clone(&r));
        Some(r)
    } else {
        None
    };
    let service = crate::runtime::server::s3_service(Arc::clone(&engine), domain.as_deref())
        .map_err(RunError::gateway(None))?;

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(RunError::io(Some(format!("cannot listen on {listen}"))))?;
    let local = listener.local_addr().map_err(RunError::io(None))?;
    let ops_listener = tokio::net::TcpListener::bind(ops_listen)
        .await
        .map_err(RunError::io(Some(format!(
            "cannot listen on {ops_listen} for the ops endpoints ([ops] listen, --ops-listen)"
        ))))?;
    let ops_local = ops_listener.local_addr().map_err(RunError::io(None))?;
    let ops_task = tokio::spawn(crate::runtime::ops::serve(
        ops_listener,
        tls.clone(),
        Arc::new(crate::runtime::ops::Readiness {
            private: Arc::clone(&private),
            public: public.clone(),
            public_hint,
        }),
        std::future::pending(),
        limits,
    ));

    let admin_cx = AdminContext {
        engine: Arc::clone(&engine),
        serving: true,
        public_root,
        peers: peer_list,
        progress: None,
    };
    let admin_task = crate::front::admin::listen(&admin_socket, admin_cx.clone()).map_err(
        RunError::gateway(Some("cannot open the admin socket".into())),
    )?;
    let api_listener = tokio::net::TcpListener::bind(api_listen)
        .await
        .map_err(RunError::io(Some(format!(
            "cannot listen on {api_listen} for the JSON API ([api] listen, --admin-listen)"
        ))))?;
    let api_local = api_listener.local_addr().map_err(RunError::io(None))?;
    let api_task = tokio::spawn(crate::runtime::server::serve_api(
        api_listener,
        tls.clone(),
        ApiState::new(Arc::clone(&engine), admin_cx, admin_token, peers, remote),
        std::future::pending(),
        limits,
    ));

    tracing::info!(recipient = %identity.recipient(), "institution recipient");
    listening(Listening {
        s3: local,
        ops: ops_local,
        api: api_local,
    });

    crate::runtime::server::serve(
        listener,
        service,
        Arc::clone(&engine),
        tls,
        shutdown,
        Duration::from_secs(30),
        limits,
    )
    .await
    .map_err(RunError::io(None))?;
    admin_task.abort();
    api_task.abort();
    ops_task.abort();
    sweeper.abort();
    publisher.abort();
    index_publisher.abort();
    if let Err(e) = engine.publish_indexes().await {
        tracing::warn!(error = %e, "publishing patient indexes at shutdown failed");
    }
    if let Err(e) = engine.publish_log().await {
        tracing::warn!(error = %e, "publishing the transparency log at shutdown failed");
    }
    let _ = std::fs::remove_file(&admin_socket);
    private.flush().await.map_err(RunError::gateway(Some(
        "final flush of the private store".into(),
    )))?;
    tracing::info!("stopped");
    Ok(())
}
