//! Configuration: CLI flags over `SIGNALGATE_*` environment variables over a TOML file over
//! built-in defaults. Every value is validated once, here, with a message that names it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{AuthConfig, AuthSettings, SecretString, read_secret_file};
use crate::core::hub::{HubConfig, Limits};
use crate::core::liveness::LivenessConfig;
use crate::transport::tcp_liveness::TcpAckEvidence;

/// A listener address, or `off` to disable that listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    On(SocketAddr),
    Off,
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Listen::Off);
        }
        s.parse()
            .map(Listen::On)
            .map_err(|_| format!("{s:?} is neither an address like 127.0.0.1:4480 nor `off`"))
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Listen {
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            Listen::On(addr) => Some(addr),
            Listen::Off => None,
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 10s or 300ms: {e}"))
}

/// Every setting, each optional so that the layers can be merged. Field docs are the
/// `--help` text; the TOML keys are the field names.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Tokens (in TOML: an `[auth]` table). No key given: anyone may join any room.
    #[command(flatten)]
    #[serde(default)]
    pub auth: AuthSettings,

    /// Sessions the gateway holds at once (online or away); beyond, Hello gets
    /// TOO_MANY_SESSIONS.
    #[arg(long, env = "SIGNALGATE_MAX_SESSIONS", value_name = "N")]
    pub max_sessions: Option<usize>,

    /// Connections that have not said Hello yet; beyond, new ones are closed at once.
    #[arg(long, env = "SIGNALGATE_MAX_PENDING_HELLOS", value_name = "N")]
    pub max_pending_hellos: Option<usize>,

    /// After a session's token expired, how long it may still Refresh before its connection
    /// is closed (4006; the session stays resumable with a new token).
    #[arg(long, env = "SIGNALGATE_TOKEN_GRACE", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub token_grace: Option<Duration>,

    /// TCP (HTTPS + WebSocket at /ws) and UDP (HTTP/3 + WebTransport at /wt) address.
    #[arg(long, env = "SIGNALGATE_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Plain-HTTP listener for the demo page, /endpoints and WebSocket at /ws without TLS
    /// (for development, or behind a TLS-terminating proxy), or `off`.
    #[arg(long, env = "SIGNALGATE_HTTP_LISTEN", value_name = "ADDR|off")]
    pub http_listen: Option<Listen>,

    /// Prometheus /metrics listener (plain HTTP), or `off`.
    #[arg(long, env = "SIGNALGATE_METRICS_LISTEN", value_name = "ADDR|off")]
    pub metrics_listen: Option<Listen>,

    /// Serve WebTransport on the UDP side of --listen.
    #[arg(long, env = "SIGNALGATE_WEBTRANSPORT", value_name = "BOOL")]
    pub webtransport: Option<bool>,

    /// A session from which nothing arrived for this long is declared unreachable.
    #[arg(long, env = "SIGNALGATE_LIVENESS_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub liveness_timeout: Option<Duration>,

    /// A quiet session is probed this often; must be below half of --liveness-timeout.
    #[arg(long, env = "SIGNALGATE_PING_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub ping_interval: Option<Duration>,

    /// Whether a WebSocket client's TCP acknowledgements prove it alive while its replies are
    /// stuck in retransmission on a lossy link: `auto` (where no proxy is in between: a
    /// public peer address and no forwarding header), `always`, `never`.
    #[arg(
        long,
        env = "SIGNALGATE_TCP_ACK_EVIDENCE",
        value_name = "auto|always|never"
    )]
    pub tcp_ack_evidence: Option<TcpAckEvidence>,

    /// How long an unreachable session can be resumed before its peers are told it left.
    #[arg(long, env = "SIGNALGATE_RESUME_WINDOW", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub resume_window: Option<Duration>,

    /// A connection must send Hello within this time.
    #[arg(long, env = "SIGNALGATE_HELLO_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub hello_timeout: Option<Duration>,

    /// One deadline from accept to the session: TLS handshake plus WebSocket upgrade (a TCP
    /// connection that has not upgraded by then is closed, whatever it asked meanwhile), or
    /// QUIC handshake plus WebTransport session request and control stream.
    #[arg(long, env = "SIGNALGATE_HANDSHAKE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub handshake_timeout: Option<Duration>,

    /// On SIGINT/SIGTERM: how long to let GoAway and close frames drain before exiting.
    #[arg(long, env = "SIGNALGATE_SHUTDOWN_GRACE", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub shutdown_grace: Option<Duration>,

    /// PEM certificate chain. Without --cert/--key a development certificate is generated.
    #[arg(long, env = "SIGNALGATE_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// PEM private key for --cert.
    #[arg(long, env = "SIGNALGATE_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Where the development certificate is kept (and renewed when it nears expiry).
    #[arg(long, env = "SIGNALGATE_DEV_CERT_DIR", value_name = "DIR")]
    pub dev_cert_dir: Option<PathBuf>,

    /// Origins allowed to open WebSocket/WebTransport sessions (comma separated, e.g.
    /// `https://app.example.com`). Empty: any origin.
    #[arg(
        long,
        env = "SIGNALGATE_ALLOWED_ORIGINS",
        value_name = "ORIGIN,...",
        value_delimiter = ','
    )]
    pub allowed_origins: Option<Vec<String>>,

    /// Largest accepted client frame, in bytes.
    #[arg(long, env = "SIGNALGATE_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,

    /// Rooms one session may be in at once.
    #[arg(long, env = "SIGNALGATE_MAX_ROOMS_PER_SESSION", value_name = "N")]
    pub max_rooms_per_session: Option<usize>,

    /// Peers one room may hold.
    #[arg(long, env = "SIGNALGATE_MAX_PEERS_PER_ROOM", value_name = "N")]
    pub max_peers_per_room: Option<usize>,

    /// Requests (Join, Leave, Signal, Ping) per second per session.
    #[arg(long, env = "SIGNALGATE_RATE_LIMIT", value_name = "PER_SEC")]
    pub rate_limit: Option<u32>,

    /// Burst allowance of --rate-limit.
    #[arg(long, env = "SIGNALGATE_RATE_BURST", value_name = "N")]
    pub rate_burst: Option<u32>,

    /// A session's backlog (what its client has not acknowledged, held while it is away):
    /// signals not yet delivered beyond this many frames are refused to their sender.
    /// (Before 0.2: --hold-frames, still accepted.)
    #[arg(
        long,
        alias = "hold-frames",
        env = "SIGNALGATE_BACKLOG_FRAMES",
        value_name = "N"
    )]
    #[serde(alias = "hold_frames")]
    pub backlog_frames: Option<usize>,

    /// The same bound in bytes. (Before 0.2: --hold-bytes, still accepted.)
    #[arg(
        long,
        alias = "hold-bytes",
        env = "SIGNALGATE_BACKLOG_BYTES",
        value_name = "BYTES"
    )]
    #[serde(alias = "hold_bytes")]
    pub backlog_bytes: Option<usize>,

    /// Frames queued for a connection's writer; the gateway hands a connection at most half
    /// of it before the connection proves it wrote them.
    #[arg(long, env = "SIGNALGATE_OUTBOUND_QUEUE", value_name = "N")]
    pub outbound_queue: Option<usize>,

    /// GoAway on shutdown: clients reconnect at a random moment within this window after
    /// the suggested delay (1s), so that they do not all come back at once.
    #[arg(long, env = "SIGNALGATE_RECONNECT_SPREAD", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub reconnect_spread: Option<Duration>,

    /// Connections open at once from one source address (TCP and QUIC together; IPv6: one
    /// /64). A connection beyond it is closed right after accept (TCP) or refused before its
    /// handshake (QUIC). 0: no limit (e.g. behind a proxy that connects from one address).
    /// Default 256 (many users can share one address behind a carrier's NAT).
    #[arg(long, env = "SIGNALGATE_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<u32>,

    /// New connections per second from one source address (TCP and QUIC together; IPv6: one
    /// /64), with a burst of twice this; beyond it they are refused like
    /// --max-connections-per-ip. 0: no limit. Default 50.
    #[arg(
        long,
        env = "SIGNALGATE_NEW_CONNECTIONS_PER_IP_PER_SEC",
        value_name = "PER_SEC"
    )]
    pub new_connections_per_ip_per_sec: Option<u32>,

    /// Connections in their handshake at once (TLS + WebSocket upgrade, QUIC handshake +
    /// WebTransport session request), all listeners together; beyond it new connections are
    /// refused. From half of it on, QUIC clients must first prove their address (Retry).
    /// Default 512.
    #[arg(long, env = "SIGNALGATE_MAX_HANDSHAKES", value_name = "N")]
    pub max_handshakes: Option<u32>,

    /// TCP connections that may wait, first come first served, for a handshake slot when all
    /// --max-handshakes are taken (within --handshake-timeout from accept); beyond it they
    /// are refused. 0: refuse at once. Default 16384.
    #[arg(long, env = "SIGNALGATE_HANDSHAKE_QUEUE", value_name = "N")]
    pub handshake_queue: Option<u32>,

    /// Connections the kernel queues for accept on each TCP listener (a reconnect storm
    /// arrives at once); the kernel caps it at net.core.somaxconn. Default 4096.
    #[arg(long, env = "SIGNALGATE_LISTEN_BACKLOG", value_name = "N")]
    pub listen_backlog: Option<u32>,

    /// How often the --cert/--key files are checked for changes; a changed pair that loads
    /// is used for new handshakes (open sessions keep theirs), a broken one is logged and the
    /// current certificate kept. `0s`: never. Default 5s.
    #[arg(long, env = "SIGNALGATE_CERT_RELOAD_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub cert_reload_interval: Option<Duration>,

    /// Backend API listener for the application's own servers (plain HTTP, JSON, bearer
    /// secret; see docs/api/openapi.yaml), or `off` (the default). It needs --api-secret-file
    /// (or --api-secret). Keep it on loopback or a private network: it is not TLS.
    #[arg(long, env = "SIGNALGATE_API_LISTEN", value_name = "ADDR|off")]
    pub api_listen: Option<Listen>,

    /// Bearer secret of the backend API (at least 32 bytes of printable ASCII, no spaces).
    /// Prefer --api-secret-file: a command line is visible to other users.
    #[arg(
        long,
        env = "SIGNALGATE_API_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub api_secret: Option<SecretString>,

    /// File holding the backend API's bearer secret (trailing newlines are ignored).
    #[arg(long, env = "SIGNALGATE_API_SECRET_FILE", value_name = "FILE")]
    pub api_secret_file: Option<PathBuf>,

    /// Cluster mode: the NATS servers to join other gateways through
    /// (`nats://HOST:PORT[,nats://HOST:PORT...]`). Without it the gateway runs alone, with
    /// everything in this process.
    #[arg(long, env = "SIGNALGATE_CLUSTER", value_name = "URLS")]
    pub cluster: Option<String>,

    /// Cluster mode: this gateway's node id (1 to 64 of A-Z a-z 0-9 _ -; unique in the
    /// cluster). Default: generated at start.
    #[arg(long, env = "SIGNALGATE_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,

    /// Cluster mode: the cluster's name (NATS subjects start with `signalgate.<name>.`), so
    /// that several clusters can share NATS servers. Default `default`.
    #[arg(long, env = "SIGNALGATE_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,

    /// Cluster mode: the host name clients reach this gateway by, for `/endpoints`. Default:
    /// the listen address.
    #[arg(long, env = "SIGNALGATE_ADVERTISE_HOST", value_name = "HOST")]
    pub advertise_host: Option<String>,

    /// Cluster mode: keep every session in a durable log (NATS JetStream) so that it survives
    /// its gateway's crash: a frame counts (goes to its client, is acknowledged to its
    /// sender) only once stored. Needs JetStream on the NATS servers. Default false.
    #[arg(long, env = "SIGNALGATE_DURABLE", value_name = "BOOL")]
    pub durable: Option<bool>,

    /// Durable mode: copies JetStream keeps of every session log (1 to 5; at most the NATS
    /// servers with JetStream). Default 3.
    #[arg(long, env = "SIGNALGATE_DURABLE_REPLICAS", value_name = "N")]
    pub durable_replicas: Option<u8>,

    /// Durable mode: how long a record may take to be stored (tried again meanwhile) before
    /// the signals in it are refused with STORAGE_UNAVAILABLE. Default 10s: the death of the
    /// NATS node that leads the stream costs JetStream a leader election of several seconds
    /// (at 5s, one such death in three refused signals: bench/results/durable).
    #[arg(long, env = "SIGNALGATE_DURABLE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub durable_timeout: Option<Duration>,
}

macro_rules! layer_fields {
    ($($field:ident),* $(,)?) => {
        impl Settings {
            /// `self` wins where it has a value; `lower` fills the rest.
            pub fn over(self, lower: Settings) -> Settings {
                Settings {
                    auth: self.auth.over(lower.auth),
                    $($field: self.$field.or(lower.$field),)*
                }
            }
        }
    };
}

layer_fields!(
    max_sessions,
    max_pending_hellos,
    token_grace,
    listen,
    http_listen,
    metrics_listen,
    webtransport,
    liveness_timeout,
    ping_interval,
    tcp_ack_evidence,
    resume_window,
    hello_timeout,
    handshake_timeout,
    shutdown_grace,
    cert,
    key,
    dev_cert_dir,
    allowed_origins,
    max_frame_bytes,
    max_rooms_per_session,
    max_peers_per_room,
    rate_limit,
    rate_burst,
    backlog_frames,
    backlog_bytes,
    outbound_queue,
    reconnect_spread,
    max_connections_per_ip,
    new_connections_per_ip_per_sec,
    max_handshakes,
    handshake_queue,
    listen_backlog,
    cert_reload_interval,
    api_listen,
    api_secret,
    api_secret_file,
    cluster,
    node_id,
    cluster_name,
    advertise_host,
    durable,
    durable_replicas,
    durable_timeout,
);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    pub fn from_toml_file(path: &std::path::Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    pub fn from_toml_str(text: &str) -> Result<Settings, toml::de::Error> {
        toml::from_str(text)
    }
}

/// Where the TLS identity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Generated (ECDSA P-256, ≤ 14 days) and kept in this directory.
    Development {
        dir: PathBuf,
    },
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Token verification; None: authentication is off (anyone may join any room).
    pub auth: Option<AuthConfig>,
    pub listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub webtransport: bool,
    pub hub: HubConfig,
    pub tls: TlsSource,
    pub allowed_origins: Vec<String>,
    pub outbound_queue: usize,
    pub handshake_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Which WebSocket connections' TCP acknowledgements count as liveness evidence.
    pub tcp_ack_evidence: TcpAckEvidence,
    /// Per source address (IPv6: /64), TCP and QUIC together; 0: no limit.
    pub max_connections_per_ip: u32,
    /// Per source address, burst twice this; 0: no limit.
    pub new_connections_per_ip_per_sec: u32,
    /// Connections in their handshake at once, all listeners together.
    pub max_handshakes: u32,
    /// TCP connections that may wait for a handshake slot; 0: refused at once.
    pub handshake_queue: u32,
    /// The accept queue of each TCP listener (capped by the kernel's somaxconn).
    pub listen_backlog: u32,
    /// How often `--cert/--key` are checked for changes; `None`: never.
    pub cert_reload_interval: Option<Duration>,
    /// The backend API; None: off.
    pub api: Option<ApiConfig>,
    /// Cluster mode; None: a single gateway.
    pub cluster: Option<ClusterConfig>,
}

/// How this gateway joins a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:port`).
    pub servers: Vec<String>,
    pub node: String,
    pub name: String,
    pub advertise_host: Option<String>,
    /// Durable mode; None: sessions live in their gateway's memory only.
    pub durable: Option<DurableConfig>,
}

/// Where and how session logs are kept (durable mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableConfig {
    pub replicas: u8,
    pub timeout: Duration,
}

/// A node id or cluster name: it becomes part of NATS subjects and resume tokens.
fn check_name(flag: &str, value: &str) -> Result<String, ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(value.to_string())
    } else {
        Err(invalid(format!(
            "{flag} = {value:?} is invalid: 1 to 64 of A-Z a-z 0-9 _ -"
        )))
    }
}

fn check_cluster(s: &Settings) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(urls) = &s.cluster else {
        for (flag, given) in [
            ("node_id", s.node_id.is_some()),
            ("cluster_name", s.cluster_name.is_some()),
            ("durable", s.durable == Some(true)),
            ("durable_replicas", s.durable_replicas.is_some()),
            ("durable_timeout", s.durable_timeout.is_some()),
        ] {
            if given {
                return Err(invalid(format!("{flag} is given without cluster")));
            }
        }
        return Ok(None);
    };
    let servers = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|url| {
            let rest = url.strip_prefix("nats://").ok_or_else(|| {
                invalid(format!(
                    "cluster URL {url:?} is invalid: expected nats://HOST:PORT"
                ))
            })?;
            let port_ok = rest
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(invalid(format!(
                    "cluster URL {url:?} is invalid: expected nats://HOST:PORT"
                )));
            }
            Ok(url.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(invalid(format!(
            "cluster = {urls:?} names no NATS server (nats://HOST:PORT[,...])"
        )));
    }
    let node = match &s.node_id {
        Some(id) => check_name("node_id", id)?,
        None => generated_node_id(),
    };
    let name = check_name(
        "cluster_name",
        s.cluster_name.as_deref().unwrap_or("default"),
    )?;
    let durable = if s.durable.unwrap_or(false) {
        let replicas = s.durable_replicas.unwrap_or(3);
        if !(1..=5).contains(&replicas) {
            return Err(invalid(format!(
                "durable_replicas = {replicas} is invalid: 1 to 5 (JetStream's limit)"
            )));
        }
        let timeout = s.durable_timeout.unwrap_or(DEFAULT_DURABLE_TIMEOUT);
        if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(60) {
            return Err(invalid(format!(
                "durable_timeout = {timeout:?} is invalid: 100ms to 60s"
            )));
        }
        Some(DurableConfig { replicas, timeout })
    } else {
        for (flag, given) in [
            ("durable_replicas", s.durable_replicas.is_some()),
            ("durable_timeout", s.durable_timeout.is_some()),
        ] {
            if given {
                return Err(invalid(format!("{flag} is given without durable = true")));
            }
        }
        None
    };
    Ok(Some(ClusterConfig {
        servers,
        node,
        name,
        advertise_host: s.advertise_host.clone(),
        durable,
    }))
}

fn generated_node_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    // Unique enough among a cluster's gateways; the OS generator failing is fatal anyway.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    format!(
        "gw-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// The backend API's listener and the bearer secret its callers present.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// `Debug` shows its length only.
    pub secret: SecretString,
}

/// Shortest accepted backend API secret, in bytes.
pub const MIN_API_SECRET_BYTES: usize = 32;
/// Longest accepted backend API secret, in bytes (it travels in a header).
pub const MAX_API_SECRET_BYTES: usize = 1024;

/// The backend API from `--api-listen` and `--api-secret` / `--api-secret-file`: a secret
/// given is checked even when the API is off; the API on without a secret is refused. Messages
/// name the flag (and the file), never the secret.
fn check_api(
    listen: Option<Listen>,
    inline: Option<SecretString>,
    file: Option<PathBuf>,
) -> Result<Option<ApiConfig>, ConfigError> {
    let (secret, origin) = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "give the backend API secret once: --api-secret and --api-secret-file are both set"
                    .to_owned(),
            ));
        }
        (None, None) => (None, String::new()),
        (Some(inline), None) => (Some(inline.expose().to_owned()), "--api-secret".to_owned()),
        (None, Some(path)) => {
            let origin = format!("--api-secret-file {}", path.display());
            let bytes = read_secret_file(&path)
                .map_err(|e| invalid(format!("{origin}: cannot read it: {e}")))?;
            let text = String::from_utf8(bytes).map_err(|_| {
                invalid(format!(
                    "{origin}: the secret must be printable ASCII without spaces"
                ))
            })?;
            (Some(text), origin)
        }
    };
    if let Some(secret) = &secret {
        let len = secret.len();
        if len < MIN_API_SECRET_BYTES {
            return Err(invalid(format!(
                "the backend API secret ({origin}) is {len} bytes long; at least \
                 {MIN_API_SECRET_BYTES} are required (e.g. `openssl rand -hex 32`)"
            )));
        }
        if len > MAX_API_SECRET_BYTES {
            return Err(invalid(format!(
                "the backend API secret ({origin}) is {len} bytes long, more than \
                 {MAX_API_SECRET_BYTES}"
            )));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(format!(
                "the backend API secret ({origin}) must be printable ASCII without spaces \
                 (it travels in an Authorization header)"
            )));
        }
    }
    match (listen.and_then(Listen::addr), secret) {
        (None, _) => Ok(None),
        (Some(listen), Some(secret)) => Ok(Some(ApiConfig {
            listen,
            secret: SecretString::new(secret),
        })),
        (Some(listen), None) => Err(invalid(format!(
            "--api-listen {listen} is set but the backend API has no secret: give \
             --api-secret-file FILE (or --api-secret); it does not start without one"
        ))),
    }
}

pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 256;
pub const DEFAULT_NEW_CONNECTIONS_PER_IP_PER_SEC: u32 = 50;
/// Enough for thousands of clients reconnecting at once (tokio's default is 1,024).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
pub const DEFAULT_MAX_HANDSHAKES: u32 = 512;
/// A storm of TCP connections waits for handshake slots rather than being reset and retrying
/// (which costs more: every retry is another accept and another wait for the CPU). Enough for
/// 10,000 clients reconnecting at once without a refusal (bench/storm.py); a waiting
/// connection costs its descriptor and a few KiB, for at most --handshake-timeout.
pub const DEFAULT_HANDSHAKE_QUEUE: u32 = 16_384;
pub const DEFAULT_CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// Durable mode: longer than a JetStream leader election after the leader's node died
/// (several seconds in nats-server 2.9), shorter than the SDK's request timeout (15 s).
pub const DEFAULT_DURABLE_TIMEOUT: Duration = Duration::from_secs(10);

/// `0s` turns reloading off; otherwise 100ms to 1h.
fn check_cert_reload_interval(value: Option<Duration>) -> Result<Option<Duration>, ConfigError> {
    match value.unwrap_or(DEFAULT_CERT_RELOAD_INTERVAL) {
        Duration::ZERO => Ok(None),
        value if value < Duration::from_millis(100) || value > Duration::from_secs(3600) => {
            Err(invalid(format!(
                "cert_reload_interval = {value:?} is out of range (0s to turn it off, or 100ms to 1h)"
            )))
        }
        value => Ok(Some(value)),
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:4433";
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:4480";
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

fn invalid(message: String) -> ConfigError {
    ConfigError::Invalid(message)
}

fn default_addr(text: &str) -> SocketAddr {
    text.parse().expect("built-in default addresses parse")
}

fn check_range<T: PartialOrd + std::fmt::Display>(
    name: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    if value < min || value > max {
        return Err(invalid(format!(
            "{name} = {value} is out of range ({min} to {max})"
        )));
    }
    Ok(value)
}

fn check_origin(origin: &str) -> Result<String, ConfigError> {
    let origin = origin.trim().trim_end_matches('/');
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains('/') => Ok(origin.to_ascii_lowercase()),
        _ => Err(invalid(format!(
            "allowed_origins entry {origin:?} is not an origin like https://app.example.com"
        ))),
    }
}

impl TryFrom<Settings> for Config {
    type Error = ConfigError;

    fn try_from(s: Settings) -> Result<Self, ConfigError> {
        let cluster = check_cluster(&s)?;
        let defaults = Limits::default();
        let hub_defaults = HubConfig::default();
        let liveness_timeout = s
            .liveness_timeout
            .unwrap_or(hub_defaults.liveness.timeout());
        let ping_interval = s
            .ping_interval
            .unwrap_or(hub_defaults.liveness.ping_interval());
        let liveness = LivenessConfig::new(liveness_timeout, ping_interval)
            .map_err(|e| invalid(format!("liveness_timeout / ping_interval: {e}")))?;
        let resume_window = s.resume_window.unwrap_or(hub_defaults.resume_window);
        if resume_window > Duration::from_secs(24 * 3600) {
            return Err(invalid(format!(
                "resume_window = {resume_window:?} is longer than a day"
            )));
        }
        let hello_timeout = s.hello_timeout.unwrap_or(hub_defaults.hello_timeout);
        let handshake_timeout = s.handshake_timeout.unwrap_or(Duration::from_secs(10));
        for (name, value) in [
            ("hello_timeout", hello_timeout),
            ("handshake_timeout", handshake_timeout),
        ] {
            if value < Duration::from_millis(100) || value > Duration::from_secs(300) {
                return Err(invalid(format!(
                    "{name} = {value:?} is out of range (100ms to 300s)"
                )));
            }
        }
        let outbound_queue = check_range(
            "outbound_queue",
            s.outbound_queue.unwrap_or(256),
            16,
            1_000_000,
        )?;
        let auth = s
            .auth
            .validate()
            .map_err(|e| invalid(format!("auth: {e}")))?;
        let authentication = auth.is_some();
        let token_grace = s.token_grace.unwrap_or(hub_defaults.token_grace);
        if token_grace > Duration::from_secs(3600) {
            return Err(invalid(format!(
                "token_grace = {token_grace:?} is longer than an hour"
            )));
        }
        let limits = Limits {
            max_frame_bytes: check_range(
                "max_frame_bytes",
                s.max_frame_bytes.unwrap_or(defaults.max_frame_bytes),
                1024,
                16 * 1024 * 1024,
            )?,
            max_rooms_per_session: check_range(
                "max_rooms_per_session",
                s.max_rooms_per_session
                    .unwrap_or(defaults.max_rooms_per_session),
                1,
                10_000,
            )?,
            max_peers_per_room: check_range(
                "max_peers_per_room",
                s.max_peers_per_room.unwrap_or(defaults.max_peers_per_room),
                2,
                100_000,
            )?,
            requests_per_sec: check_range(
                "rate_limit",
                s.rate_limit.unwrap_or(defaults.requests_per_sec),
                1,
                1_000_000,
            )?,
            request_burst: check_range(
                "rate_burst",
                s.rate_burst.unwrap_or(defaults.request_burst),
                1,
                1_000_000,
            )?,
            backlog_frames: check_range(
                "backlog_frames",
                s.backlog_frames.unwrap_or(defaults.backlog_frames),
                1,
                1_000_000,
            )?,
            backlog_bytes: check_range(
                "backlog_bytes",
                s.backlog_bytes.unwrap_or(defaults.backlog_bytes),
                1024,
                1 << 30,
            )?,
            max_protocol_errors: defaults.max_protocol_errors,
            // Half the writer's queue: frames outside the session's stream (Pong, Ack,
            // GoAway) always find room behind a full window.
            send_window_frames: outbound_queue / 2,
            send_window_bytes: defaults.send_window_bytes,
            max_sessions: check_range(
                "max_sessions",
                s.max_sessions.unwrap_or(defaults.max_sessions),
                1,
                100_000_000,
            )?,
            max_pending_hellos: check_range(
                "max_pending_hellos",
                s.max_pending_hellos.unwrap_or(defaults.max_pending_hellos),
                1,
                10_000_000,
            )?,
        };
        let reconnect_spread = s.reconnect_spread.unwrap_or(hub_defaults.reconnect_spread);
        if reconnect_spread > Duration::from_secs(600) {
            return Err(invalid(format!(
                "reconnect_spread = {reconnect_spread:?} is longer than 10 minutes"
            )));
        }
        let tls = match (s.cert, s.key) {
            (Some(cert), Some(key)) => TlsSource::Files { cert, key },
            (None, None) => TlsSource::Development {
                dir: s.dev_cert_dir.unwrap_or_else(|| PathBuf::from("certs")),
            },
            (Some(cert), None) => {
                return Err(invalid(format!(
                    "cert = {} is given without key",
                    cert.display()
                )));
            }
            (None, Some(key)) => {
                return Err(invalid(format!(
                    "key = {} is given without cert",
                    key.display()
                )));
            }
        };
        let allowed_origins = s
            .allowed_origins
            .unwrap_or_default()
            .iter()
            .filter(|o| !o.trim().is_empty())
            .map(|o| check_origin(o))
            .collect::<Result<Vec<_>, _>>()?;
        let listen = s.listen.unwrap_or_else(|| default_addr(DEFAULT_LISTEN));
        let http_listen = s
            .http_listen
            .unwrap_or(Listen::On(default_addr(DEFAULT_HTTP_LISTEN)))
            .addr();
        let metrics_listen = s
            .metrics_listen
            .unwrap_or(Listen::On(default_addr(DEFAULT_METRICS_LISTEN)))
            .addr();
        Ok(Config {
            auth,
            listen,
            http_listen,
            metrics_listen,
            webtransport: s.webtransport.unwrap_or(true),
            hub: HubConfig {
                liveness,
                resume_window,
                hello_timeout,
                reconnect_after: hub_defaults.reconnect_after,
                reconnect_spread,
                authentication,
                token_grace,
                limits,
                cluster_node: cluster.as_ref().map(|c| c.node.clone()),
                durable: cluster.as_ref().is_some_and(|c| c.durable.is_some()),
            },
            tls,
            allowed_origins,
            outbound_queue,
            handshake_timeout,
            tcp_ack_evidence: s.tcp_ack_evidence.unwrap_or_default(),
            shutdown_grace: s.shutdown_grace.unwrap_or(Duration::from_secs(5)),
            max_connections_per_ip: check_range(
                "max_connections_per_ip",
                s.max_connections_per_ip
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_IP),
                0,
                1_000_000,
            )?,
            new_connections_per_ip_per_sec: check_range(
                "new_connections_per_ip_per_sec",
                s.new_connections_per_ip_per_sec
                    .unwrap_or(DEFAULT_NEW_CONNECTIONS_PER_IP_PER_SEC),
                0,
                1_000_000,
            )?,
            max_handshakes: check_range(
                "max_handshakes",
                s.max_handshakes.unwrap_or(DEFAULT_MAX_HANDSHAKES),
                1,
                1_000_000,
            )?,
            handshake_queue: check_range(
                "handshake_queue",
                s.handshake_queue.unwrap_or(DEFAULT_HANDSHAKE_QUEUE),
                0,
                1_000_000,
            )?,
            listen_backlog: check_range(
                "listen_backlog",
                s.listen_backlog.unwrap_or(DEFAULT_LISTEN_BACKLOG),
                1,
                65_535,
            )?,
            cert_reload_interval: check_cert_reload_interval(s.cert_reload_interval)?,
            api: check_api(s.api_listen, s.api_secret, s.api_secret_file)?,
            cluster,
        })
    }
}

impl Config {
    /// Whether a request's Origin header may open a session. Requests without an Origin
    /// (native clients) are not browsers and are let through; the allow-list protects
    /// browsers' users from foreign pages.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            _ if self.allowed_origins.is_empty() => true,
            None => true,
            Some(origin) => {
                let origin = origin.trim_end_matches('/').to_ascii_lowercase();
                self.allowed_origins.contains(&origin)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Result<Config, ConfigError> {
        Config::try_from(Settings::from_toml_str(toml).map_err(|e| invalid(e.to_string()))?)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = config("").expect("defaults are valid");
        assert_eq!(c.listen, default_addr("127.0.0.1:4433"));
        assert_eq!(c.http_listen, Some(default_addr("127.0.0.1:4480")));
        assert_eq!(c.metrics_listen, Some(default_addr("127.0.0.1:9464")));
        assert_eq!(c.hub.liveness.timeout(), Duration::from_secs(10));
        assert_eq!(c.hub.liveness.ping_interval(), Duration::from_secs(4));
        assert_eq!(c.hub.resume_window, Duration::from_secs(30));
        assert!(c.webtransport);
        assert_eq!(
            c.tls,
            TlsSource::Development {
                dir: "certs".into()
            }
        );
    }

    #[test]
    fn toml_values_are_read_with_human_durations() {
        let c = config(
            r#"
            listen = "0.0.0.0:443"
            http_listen = "off"
            liveness_timeout = "2s"
            ping_interval = "600ms"
            allowed_origins = ["https://App.example.com/"]
            "#,
        )
        .expect("valid");
        assert_eq!(c.listen, default_addr("0.0.0.0:443"));
        assert_eq!(c.http_listen, None);
        assert_eq!(c.hub.liveness.ping_interval(), Duration::from_millis(600));
        assert_eq!(c.allowed_origins, ["https://app.example.com"]);
    }

    #[test]
    fn a_ping_interval_not_below_half_the_timeout_is_refused_naming_both_values() {
        let err = config("liveness_timeout = \"10s\"\nping_interval = \"5s\"").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("5s") && text.contains("10s"), "{text}");
    }

    #[test]
    fn a_listen_backlog_out_of_range_is_refused_naming_it() {
        let err = config("listen_backlog = 0").unwrap_err().to_string();
        assert!(err.contains("listen_backlog = 0"), "{err}");
        assert_eq!(
            config("listen_backlog = 8192")
                .expect("valid")
                .listen_backlog,
            8192
        );
        assert_eq!(
            config("").expect("valid").listen_backlog,
            DEFAULT_LISTEN_BACKLOG
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = Settings::from_toml_str("liveness_timout = \"10s\"").unwrap_err();
        assert!(err.to_string().contains("liveness_timout"), "{err}");
        let err = Settings::from_toml_str("liveness_timeout = \"ten\"").unwrap_err();
        assert!(err.to_string().contains("liveness_timeout"), "{err}");
        let err = config("max_frame_bytes = 10").unwrap_err();
        assert!(err.to_string().contains("max_frame_bytes = 10"), "{err}");
        let err = config("cert = \"a.pem\"").unwrap_err();
        assert!(err.to_string().contains("a.pem"), "{err}");
        let err = config("allowed_origins = [\"example.com\"]").unwrap_err();
        assert!(err.to_string().contains("example.com"), "{err}");
        let err = config("http_listen = \"nowhere\"").unwrap_err();
        assert!(err.to_string().contains("nowhere"), "{err}");
        let err = config("backlog_frames = 0").unwrap_err();
        assert!(err.to_string().contains("backlog_frames = 0"), "{err}");
    }

    #[test]
    fn the_old_hold_names_still_set_the_backlog() {
        let c = config("hold_frames = 77\nhold_bytes = 4096").expect("valid");
        assert_eq!(c.hub.limits.backlog_frames, 77);
        assert_eq!(c.hub.limits.backlog_bytes, 4096);
        let c = config("outbound_queue = 64").expect("valid");
        assert_eq!(c.hub.limits.send_window_frames, 32);
    }

    #[test]
    fn higher_layers_win_field_by_field() {
        let file = Settings::from_toml_str("liveness_timeout = \"20s\"\nping_interval = \"5s\"")
            .expect("toml");
        let cli = Settings {
            ping_interval: Some(Duration::from_secs(3)),
            ..Settings::default()
        };
        let c = Config::try_from(cli.over(file)).expect("valid");
        assert_eq!(c.hub.liveness.timeout(), Duration::from_secs(20));
        assert_eq!(c.hub.liveness.ping_interval(), Duration::from_secs(3));
    }

    #[test]
    fn origin_allow_list() {
        let open = config("").expect("valid");
        assert!(open.origin_allowed(Some("https://evil.example")));
        let c = config("allowed_origins = [\"https://app.example.com\"]").expect("valid");
        assert!(c.origin_allowed(Some("https://app.example.com")));
        assert!(c.origin_allowed(Some("HTTPS://APP.example.com")));
        assert!(!c.origin_allowed(Some("https://evil.example")));
        assert!(c.origin_allowed(None), "native clients send no Origin");
    }
}
