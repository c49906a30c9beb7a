//! Transport adapters: each turns one kind of connection into a [`Link`] — a stream of
//! [`Inbound`] events and a sink of [`Outbound`] commands — and contains no signaling logic.
//! The generic driver in `server::connection` runs liveness and talks to the hub.

pub mod tcp_liveness;
pub mod websocket;
pub mod webtransport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::core::Transport;
use crate::core::codec::FrameProblem;
use crate::proto::{ClientFrame, Reason, ServerFrame};

/// What a transport reader reports.
#[derive(Debug)]
pub enum Inbound {
    /// Boxed: a decoded frame is ~170 bytes, and every connection's inbound channel holds a
    /// block of 32 of its largest variant from the first frame on (5.5 KiB per idle session
    /// unboxed, 1.3 KiB boxed; measured with bench/heap_per_session.py).
    Frame(Box<ClientFrame>),
    Rejected(FrameProblem),
    /// Something arrived that is not a frame (a pong, QUIC packets): proof of life only.
    /// With a round-trip time when the transport measured one.
    Activity {
        rtt: Option<Duration>,
    },
    /// The connection ended by the peer's doing: CLIENT_CLOSED (close handshake) or
    /// CONNECTION_LOST (EOF, reset, I/O error).
    Closed(Reason),
}

/// What a transport writer is told to do, in order.
#[derive(Debug)]
pub enum Outbound {
    Frame(Arc<ServerFrame>),
    /// Everything before this has been written: publish the mark on [`Link::written`].
    Checkpoint(u64),
    /// Send a probe the peer's network stack answers (a WebSocket Ping, a QUIC datagram).
    Probe,
    /// Close the connection after everything queued before.
    Close(Reason),
}

/// One accepted connection as the driver sees it.
pub struct Link {
    pub transport: Transport,
    pub peer: SocketAddr,
    pub inbound: mpsc::Receiver<Inbound>,
    pub outbox: mpsc::Sender<Outbound>,
    pub reader: JoinHandle<()>,
    pub writer: JoinHandle<()>,
    /// The last [`Outbound::Checkpoint`] the writer got past (everything before it written).
    pub written: watch::Receiver<u64>,
    /// For transports that report activity by sampling: whether something arrived that has
    /// not been reported yet (the sampler may lag when the gateway is short of CPU). Asked
    /// once before a liveness verdict.
    pub unreported_activity: Option<UnreportedActivity>,
    /// Where the peer's TCP acknowledgements prove the client itself alive (see
    /// [`tcp_liveness`]): read at each liveness timer.
    pub tcp_witness: Option<tcp_liveness::TcpWitness>,
}

/// See [`Link::unreported_activity`].
pub type UnreportedActivity = Box<dyn Fn() -> bool + Send + Sync>;

/// Capacity of the reader -> driver channel. Small: it only smooths bursts; the bound
/// pushes back on a client that sends faster than the hub takes frames.
pub const INBOUND_QUEUE: usize = 64;

/// How much a transport reads at once. Signaling frames are small (an SDP offer is a few KiB,
/// read in a few chunks) and every idle connection keeps its read buffer: 1 KiB instead of
/// 4 KiB saves 3 KiB per session.
pub const READ_CHUNK: usize = 1024;

/// The close code sent to the client for each reason the gateway closes a connection, the
/// same numbers on both transports (WebSocket close code, WebTransport session error code).
pub fn close_code(reason: Reason) -> u16 {
    match reason {
        Reason::ServerShutdown => 1001,
        Reason::ProtocolError => 1008,
        // A newer connection of the same client replaced this one (a take-over, or a resume
        // that had to start a new session).
        Reason::Superseded | Reason::ResumeGap => 4001,
        Reason::SlowConsumer => 4002,
        Reason::HelloTimeout => 4003,
        Reason::LivenessTimeout => 4004,
        Reason::Suspended => 4005,
        Reason::TokenExpired => 4006,
        Reason::Disconnected => 4007,
        Reason::GatewayFull => 4008,
        // Cluster mode: this gateway is cut off from the others; reconnect to another one.
        Reason::GatewayLost => 4009,
        _ => 1000,
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("transport", &self.transport)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}
