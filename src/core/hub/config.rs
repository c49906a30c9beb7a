//! The hub's configuration: timings and the limits that protect the gateway and other
//! clients from one client.

use std::time::Duration;

use crate::core::liveness::LivenessConfig;

/// Bounds that protect the gateway and other clients from one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted ClientFrame, in bytes.
    pub max_frame_bytes: usize,
    pub max_rooms_per_session: usize,
    pub max_peers_per_room: usize,
    /// Join, Leave, Signal and Ping per second per session (token bucket rate)...
    pub requests_per_sec: u32,
    /// ...with bursts up to this many.
    pub request_burst: u32,
    /// A session's backlog (what its client has not acknowledged): signals not yet sent are
    /// refused to their sender beyond these; sent frames not acknowledged are forgotten
    /// beyond them.
    pub backlog_frames: usize,
    pub backlog_bytes: usize,
    /// Refused frames a connection may send before it is closed.
    pub max_protocol_errors: u32,
    /// Frames (and bytes) handed to a connection before it must confirm that it drained
    /// them; keep it well below the runtime's outbound queue.
    pub send_window_frames: usize,
    pub send_window_bytes: usize,
    /// Sessions the gateway holds at once (online or away); beyond, Hello gets
    /// TOO_MANY_SESSIONS.
    pub max_sessions: usize,
    /// Connections that have not said Hello yet; beyond, new ones are closed at once.
    pub max_pending_hellos: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_rooms_per_session: 16,
            max_peers_per_room: 64,
            requests_per_sec: 50,
            request_burst: 100,
            backlog_frames: 1024,
            backlog_bytes: 1024 * 1024,
            max_protocol_errors: 16,
            send_window_frames: 128,
            send_window_bytes: 512 * 1024,
            max_sessions: 100_000,
            max_pending_hellos: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    pub liveness: LivenessConfig,
    /// How long a session that is away may be resumed before it is gone (LEFT).
    pub resume_window: Duration,
    /// A connection that has not sent Hello by then is closed.
    pub hello_timeout: Duration,
    /// GoAway: clients reconnect at a random moment in
    /// [reconnect_after, reconnect_after + reconnect_spread].
    pub reconnect_after: Duration,
    pub reconnect_spread: Duration,
    /// Tokens are required: a Hello or Refresh must come through
    /// [`super::Hub::hello_received`] / [`super::Hub::refresh_received`] with verified
    /// credentials.
    pub authentication: bool,
    /// After its token expired, a session gets this long to refresh before it is closed.
    pub token_grace: Duration,
    pub limits: Limits,
    /// Cluster mode: this gateway's node id (resume tokens name it). None: a single gateway.
    pub cluster_node: Option<String>,
    /// Cluster mode: every session's stream and state are stored in a durable log (JetStream)
    /// before they count (see `durable.rs`), so that a session survives its gateway's crash.
    pub durable: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            liveness: LivenessConfig::default(),
            resume_window: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(10),
            reconnect_after: Duration::from_secs(1),
            reconnect_spread: Duration::from_secs(2),
            authentication: false,
            token_grace: Duration::from_secs(10),
            limits: Limits::default(),
            cluster_node: None,
            durable: false,
        }
    }
}
