//! The tokio runtime around the core: listeners, the hub task, one driver task per
//! connection, and a graceful shutdown that every task observes.

mod admission;
mod api;
mod assets;
mod cluster;
mod connection;
mod durable;
mod http;
mod hub_driver;
mod memory;
mod quic;
mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::config::TlsSource;
use crate::core::hub::Hub;
use crate::metrics;
use crate::tls::{CertificateFiles, Identity, LiveCertificate, Reload, TlsError};
use admission::Admission;
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
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
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
    /// The backend API (plain HTTP, bearer secret); None when off.
    pub api: Option<SocketAddr>,
}

/// What every task of the server shares.
pub struct ServerContext {
    pub config: Config,
    pub certificate: Arc<LiveCertificate>,
    pub bound: Bound,
    /// Per-source and handshake limits of new connections, shared by every listener.
    admission: Arc<Admission>,
    /// Verifies the tokens of Hello and Refresh; None when authentication is off.
    pub auth: Option<Arc<Authenticator>>,
    hub: mpsc::Sender<HubInput>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    next_conn: AtomicU64,
    /// Connections ended so far (for giving memory back after a peak).
    closes: memory::Closes,
    /// Cluster mode: every live gateway's endpoint, this one first (for `/endpoints`).
    pub cluster_endpoints: Arc<std::sync::RwLock<Vec<crate::proto::cluster::Endpoint>>>,
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
        if self.ctx.config.cluster.is_some() {
            self.drain().await;
        }
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

impl Running {
    /// Cluster mode: hands every session to the other gateways (their clients are told to
    /// reconnect) and waits until those gateways acknowledged them, at most the resume
    /// window. Alone in its cluster, nothing moves: the shutdown ends the sessions.
    pub async fn drain(&self) -> usize {
        let (reply, moved) = tokio::sync::oneshot::channel();
        if self.ctx.hub.send(HubInput::Drain(reply)).await.is_err() {
            return 0;
        }
        let moved = moved.await.unwrap_or(0);
        if moved > 0 {
            tracing::info!(
                moved,
                "draining: sessions handed over to the other gateways"
            );
        }
        let deadline = tokio::time::Instant::now() + self.ctx.config.hub.resume_window;
        loop {
            let (reply, unacked) = tokio::sync::oneshot::channel();
            if self
                .ctx
                .hub
                .send(HubInput::ClusterUnacked(reply))
                .await
                .is_err()
            {
                break;
            }
            match unacked.await {
                Ok(0) | Err(_) => break,
                Ok(_) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!("draining: some hand-overs were not acknowledged in time");
                    break;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        // The new holders announced the sessions before acknowledging them; give those
        // announcements a head start over the goodbye, which makes the others forget this
        // gateway's members (its sessions must not flap UNREACHABLE on the way).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = self.ctx.hub.send(HubInput::ClusterLeave).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        moved
    }
}

/// A TCP listener with `backlog` (tokio's `bind` always asks for 1,024, which a reconnect
/// storm overflows: the kernel then drops SYNs and clients wait for their retransmission).
fn bind_tcp(
    addr: SocketAddr,
    what: &'static str,
    backlog: u32,
) -> Result<TcpListener, ServerError> {
    let bind = || {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(backlog)
    };
    let listener = bind().map_err(|source| ServerError::Bind { addr, what, source })?;
    warn_if_the_kernel_caps(backlog);
    Ok(listener)
}

/// The kernel silently caps every listen backlog at net.core.somaxconn.
fn warn_if_the_kernel_caps(backlog: u32) {
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok());
    if let Some(somaxconn) = somaxconn.filter(|&cap| cap < backlog) {
        tracing::warn!(
            listen_backlog = backlog,
            somaxconn,
            "the kernel caps the listen backlog at net.core.somaxconn; raise it (sysctl) for reconnect storms"
        );
    }
}

/// Binds every listener and starts serving. Fails, naming the address, if one cannot be bound.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Seen before the first load, so that a change in between is reloaded.
    let certificate_files = match &config.tls {
        TlsSource::Files { cert, key } => Some(CertificateFiles::new(cert, key)),
        TlsSource::Development { .. } => None,
    };
    let identity = Identity::load(&config.tls)?;

    let certificate = LiveCertificate::new(&identity)?;

    let tcp = bind_tcp(config.listen, "HTTPS/WebSocket", config.listen_backlog)?;
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
        Some(addr) => Some(bind_tcp(addr, "plain HTTP", config.listen_backlog)?),
        None => None,
    };
    let api = match &config.api {
        Some(api) => Some(bind_tcp(api.listen, "backend API", config.listen_backlog)?),
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
        api: api.as_ref().and_then(|l| l.local_addr().ok()),
    };

    let tls_config = certificate.server_config(vec![b"http/1.1".to_vec()])?;
    let (hub_tx, hub_rx) = mpsc::channel(HUB_QUEUE);
    let authenticator = config
        .auth
        .clone()
        .map(|auth| Arc::new(Authenticator::new(auth)));
    match &authenticator {
        Some(auth) => {
            tracing::info!(keys = ?auth.describe_keys(), "tokens required: every Hello carries a JWT");
        }
        None => tracing::warn!(
            "authentication is OFF: anyone who can reach this gateway may join any room \
             (development only; see --auth-hs256-secret-file, --auth-public-key, --auth-jwks)"
        ),
    }
    let ctx = Arc::new(ServerContext {
        certificate,
        bound,
        admission: Admission::new(admission::Limits::from_config(&config)),
        auth: authenticator,
        hub: hub_tx,
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        next_conn: AtomicU64::new(1),
        closes: memory::Closes::default(),
        cluster_endpoints: Arc::default(),
        config,
    });
    tokio::spawn(memory::give_back_after_closes(ctx.clone()));
    let cluster = match &ctx.config.cluster {
        Some(settings) => {
            metrics::cluster_configured();
            let endpoint = own_endpoint(&ctx, settings);
            *ctx.cluster_endpoints
                .write()
                .unwrap_or_else(|e| e.into_inner()) = vec![endpoint.clone()];
            Some(
                cluster::start(
                    settings,
                    ctx.config.hub.liveness,
                    endpoint,
                    ctx.hub.clone(),
                    ctx.cluster_endpoints.clone(),
                )
                .await?,
            )
        }
        None => None,
    };
    let hub_task = tokio::spawn(hub_driver::run(
        Hub::new(ctx.config.hub.clone()),
        hub_rx,
        cluster,
    ));
    let acceptor = TlsAcceptor::from(Arc::new(tls_config));
    tokio::spawn(http::accept_loop(ctx.clone(), tcp, Some(acceptor)));
    if let Some(http) = http {
        tokio::spawn(http::accept_loop(ctx.clone(), http, None));
    }
    if let Some(listener) = webtransport {
        tokio::spawn(listener.accept_loop(ctx.clone()));
    }
    if let Some(api) = api {
        tokio::spawn(api::accept_loop(ctx.clone(), api));
    }
    if matches!(ctx.config.tls, TlsSource::Development { .. }) {
        tokio::spawn(renew_certificate_hourly(ctx.clone()));
    }
    if let (Some(files), Some(every)) = (certificate_files, ctx.config.cert_reload_interval) {
        tokio::spawn(reload_certificate_files(ctx.clone(), files, every));
    }
    Ok(Running {
        ctx,
        hub_task,
        identity,
        metrics_stop,
    })
}

/// How clients reach this gateway, as the other gateways' `/endpoints` list it.
fn own_endpoint(
    ctx: &ServerContext,
    settings: &crate::config::ClusterConfig,
) -> crate::proto::cluster::Endpoint {
    let listen = ctx.bound.listen;
    let host = settings
        .advertise_host
        .clone()
        .unwrap_or_else(|| match listen.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        });
    crate::proto::cluster::Endpoint {
        node: settings.node.clone(),
        websocket_url: format!("wss://{host}:{}/ws", listen.port()),
        webtransport_url: if ctx.bound.webtransport.is_empty() {
            String::new()
        } else {
            format!("https://{host}:{}/wt", listen.port())
        },
        certificate_sha256: ctx.certificate.sha256_hex(),
        draining: false,
    }
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

/// `--cert/--key` from a CA are renewed in place: checks the files every `every` and presents
/// a changed pair that loads to new handshakes (TLS and QUIC); open sessions keep theirs. A
/// pair that does not load (half-written, mismatched) is logged naming the file, and the
/// current certificate stays.
async fn reload_certificate_files(
    ctx: Arc<ServerContext>,
    mut files: CertificateFiles,
    every: Duration,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // Immediate; the files were just loaded.
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = ctx.shutdown.cancelled() => return,
        }
        // File I/O off the runtime's threads (a slow disk or network mount).
        let checked = tokio::task::spawn_blocking(move || {
            let reload = files.check();
            (files, reload)
        })
        .await;
        let reload;
        (files, reload) = match checked {
            Ok(checked) => checked,
            Err(error) => {
                tracing::error!(%error, "the certificate check failed; no more reloads");
                return;
            }
        };
        match reload {
            Reload::Unchanged | Reload::Changing => {}
            Reload::Loaded(identity) => {
                if identity.leaf_sha256() == ctx.certificate.sha256() {
                    tracing::debug!("certificate files rewritten with the same certificate");
                    continue;
                }
                match ctx.certificate.replace(&identity) {
                    Ok(()) => {
                        metrics::certificate_reload("loaded");
                        tracing::info!(
                            sha256 = %identity.leaf_sha256_hex(),
                            "certificate reloaded: new handshakes get it, open sessions keep theirs"
                        );
                    }
                    Err(error) => {
                        metrics::certificate_reload("failed");
                        tracing::error!(%error, "cannot use the changed certificate; the current one stays");
                    }
                }
            }
            Reload::Failed(error) => {
                metrics::certificate_reload("failed");
                tracing::error!(%error, "cannot reload the certificate; the current one stays");
            }
        }
    }
}
