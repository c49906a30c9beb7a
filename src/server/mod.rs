//! The tokio runtime around the core: listeners, the hub task, one driver task per
//! connection, and a graceful shutdown that every task observes.

mod assets;
mod connection;
mod http;
mod hub_driver;
mod quic;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::config::TlsSource;
use crate::core::hub::Hub;
use crate::metrics;
use crate::tls::{Identity, LiveCertificate, TlsError};
use hub_driver::{HUB_QUEUE, HubInput};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
}

/// The addresses actually bound (ports resolved when 0 was asked for).
#[derive(Debug, Clone)]
pub struct Bound {
    /// TCP: HTTPS and WebSocket over TLS.
    pub listen: SocketAddr,
    /// UDP: WebTransport (same port as `listen`; `[::1]` too when listening on 127.0.0.1).
    pub webtransport: Vec<SocketAddr>,
    /// Plain HTTP: demo page and WebSocket without TLS.
    pub http: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// What every task of the server shares.
pub struct ServerContext {
    pub config: Config,
    pub certificate: Arc<LiveCertificate>,
    pub bound: Bound,
    hub: mpsc::Sender<HubInput>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    next_conn: AtomicU64,
}

impl ServerContext {
    fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// A started gateway.
pub struct Running {
    ctx: Arc<ServerContext>,
    hub_task: JoinHandle<()>,
    identity: Identity,
    /// Stops /metrics last, so that the shutdown's own events are still served meanwhile.
    metrics_stop: CancellationToken,
}

impl Running {
    pub fn bound(&self) -> &Bound {
        &self.ctx.bound
    }

    /// The identity the gateway started with (see [`Self::certificate`] for the current one).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The certificate presented now (the development certificate is renewed while running).
    pub fn certificate(&self) -> &LiveCertificate {
        &self.ctx.certificate
    }

    /// Renews the development certificate if it nears expiry at `now`; true if it changed.
    /// Runs hourly by itself; public so that renewal can be tested without waiting days.
    pub fn renew_certificate_at(&self, now: SystemTime) -> Result<bool, TlsError> {
        renew_certificate(&self.ctx, now)
    }

    pub fn config(&self) -> &Config {
        &self.ctx.config
    }

    /// Cancelling it starts the graceful shutdown (as SIGINT/SIGTERM do).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.ctx.shutdown.clone()
    }

    /// Waits for a shutdown request, then shuts down gracefully: GoAway to every session,
    /// close every connection, let them drain within `shutdown_grace`.
    pub async fn run_until_stopped(self) {
        self.ctx.shutdown.cancelled().await;
        self.stop().await;
    }

    pub async fn stop(self) {
        self.ctx.shutdown.cancel();
        let _ = self.ctx.hub.send(HubInput::Shutdown).await;
        self.ctx.tasks.close();
        if tokio::time::timeout(self.ctx.config.shutdown_grace, self.ctx.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                still_open = self.ctx.tasks.len(),
                "connections still open after the shutdown grace period"
            );
        }
        self.hub_task.abort();
        self.metrics_stop.cancel();
    }
}

async fn bind_tcp(addr: SocketAddr, what: &'static str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, what, source })
}

/// Binds every listener and starts serving. Fails, naming the address, if one cannot be bound.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let identity = Identity::load(&config.tls)?;

    let certificate = LiveCertificate::new(&identity)?;

    let tcp = bind_tcp(config.listen, "HTTPS/WebSocket").await?;
    let listen = tcp.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        what: "HTTPS/WebSocket",
        source,
    })?;
    let webtransport = if config.webtransport {
        Some(quic::Listener::bind(listen, &certificate, &config)?)
    } else {
        None
    };
    let http = match config.http_listen {
        Some(addr) => Some(bind_tcp(addr, "plain HTTP").await?),
        None => None,
    };
    let metrics_stop = CancellationToken::new();
    let metrics_addr = match config.metrics_listen {
        Some(addr) => {
            let bound = metrics::serve(addr, metrics_stop.clone())?;
            metrics::configured(&config.hub);
            Some(bound)
        }
        None => None,
    };
    let bound = Bound {
        listen,
        webtransport: webtransport
            .as_ref()
            .map(|l| l.local_addrs())
            .unwrap_or_default(),
        http: http.as_ref().and_then(|l| l.local_addr().ok()),
        metrics: metrics_addr,
    };

    let tls_config = certificate.server_config(vec![b"http/1.1".to_vec()])?;
    let (hub_tx, hub_rx) = mpsc::channel(HUB_QUEUE);
    let ctx = Arc::new(ServerContext {
        certificate,
        bound,
        hub: hub_tx,
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        next_conn: AtomicU64::new(1),
        config,
    });
    let hub_task = tokio::spawn(hub_driver::run(Hub::new(ctx.config.hub.clone()), hub_rx));
    let acceptor = TlsAcceptor::from(Arc::new(tls_config));
    tokio::spawn(http::accept_loop(ctx.clone(), tcp, Some(acceptor)));
    if let Some(http) = http {
        tokio::spawn(http::accept_loop(ctx.clone(), http, None));
    }
    if let Some(listener) = webtransport {
        tokio::spawn(listener.accept_loop(ctx.clone()));
    }
    if matches!(ctx.config.tls, TlsSource::Development { .. }) {
        tokio::spawn(renew_certificate_hourly(ctx.clone()));
    }
    Ok(Running {
        ctx,
        hub_task,
        identity,
        metrics_stop,
    })
}

/// Development certificates live 13 days; a gateway left running renews its own in time.
async fn renew_certificate_hourly(ctx: Arc<ServerContext>) {
    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    hourly.tick().await; // The first tick is immediate; start-up already checked.
    loop {
        tokio::select! {
            _ = hourly.tick() => {}
            () = ctx.shutdown.cancelled() => return,
        }
        if let Err(error) = renew_certificate(&ctx, SystemTime::now()) {
            tracing::error!(%error, "cannot renew the development certificate");
        }
    }
}

fn renew_certificate(ctx: &ServerContext, now: SystemTime) -> Result<bool, TlsError> {
    let TlsSource::Development { dir } = &ctx.config.tls else {
        return Ok(false);
    };
    let identity = Identity::development(dir, now)?;
    if identity.leaf_sha256() == ctx.certificate.sha256() {
        return Ok(false);
    }
    ctx.certificate.replace(&identity)?;
    tracing::info!(
        sha256 = %identity.leaf_sha256_hex(),
        "development certificate renewed; pages must fetch the new hash from /cert-hash"
    );
    Ok(true)
}
