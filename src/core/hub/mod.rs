//! The hub: sessions, rooms, presence, relay and resume, as one sans-IO state machine.
//!
//! Inputs: [`Hub::connection_opened`], [`Hub::frame_received`], [`Hub::frame_rejected`],
//! [`Hub::connection_lost`], [`Hub::outbound_overflow`], [`Hub::handle_timeout`],
//! [`Hub::shutdown`]. Outputs: [`Hub::poll_output`] (frames to send, connections to close,
//! events for metrics) and [`Hub::poll_timeout`] (when to call `handle_timeout` next).
//!
//! Vocabulary: a *connection* is one transport-level link (a WebSocket, a WebTransport
//! session). A *session* is the logical client: its peer id, rooms, ordered frame stream and
//! resume token. A session outlives its connection for the resume window, and a new
//! connection can take it over.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use prost::Message;
use ring::rand::SystemRandom;

use super::codec::FrameProblem;
use super::ids;
use super::liveness::LivenessConfig;
use super::rate_limit::TokenBucket;
use super::replay::ReplayBuffer;
use super::{Transport, reason_label};
use crate::proto::{
    self, ClientFrame, ErrorCode, GoAway, Hello, Joined, Left, Peer, PeerJoined, PeerLeft,
    PeerState, Pong, PresenceState, Reason, ServerFrame, Welcome, client_frame, server_frame,
    signal,
};

/// A connection, numbered by the runtime (unique for the process lifetime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SessionKey(u64);

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
    /// Frames kept for a session that is unreachable or has not acked them yet.
    pub hold_frames: usize,
    pub hold_bytes: usize,
    /// Refused frames a connection may send before it is closed.
    pub max_protocol_errors: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_rooms_per_session: 16,
            max_peers_per_room: 64,
            requests_per_sec: 50,
            request_burst: 100,
            hold_frames: 1024,
            hold_bytes: 1024 * 1024,
            max_protocol_errors: 16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    pub liveness: LivenessConfig,
    /// How long an unreachable session may be resumed before it is gone (LEFT).
    pub resume_window: Duration,
    /// A connection that has not sent Hello by then is closed.
    pub hello_timeout: Duration,
    /// Suggested to clients in GoAway.
    pub reconnect_after: Duration,
    pub limits: Limits,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            liveness: LivenessConfig::default(),
            resume_window: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(10),
            reconnect_after: Duration::from_secs(1),
            limits: Limits::default(),
        }
    }
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write this frame to the connection (after everything sent to it before).
    Send { conn: ConnId, frame: ServerFrame },
    /// Close the connection (after the frames queued before) for this reason. The hub has
    /// already forgotten the connection: later inputs about it are ignored.
    Close { conn: ConnId, reason: Reason },
    /// Something to count.
    Event(HubEvent),
}

/// Facts for metrics and logs.
#[derive(Debug, Clone, PartialEq)]
pub enum HubEvent {
    SessionStarted {
        transport: Transport,
    },
    /// A Hello with a resume token was answered (resumed, took over, or refused).
    Resume {
        transport: Transport,
        outcome: ResumeOutcome,
    },
    /// A connection that carried a session ended, by the peer's doing or the gateway's.
    /// `silent_for`: how long nothing had arrived from it (the detection latency).
    ConnectionEnded {
        transport: Transport,
        reason: Reason,
        silent_for: Duration,
    },
    /// A session is gone for good (LEFT).
    SessionEnded {
        reason: Reason,
    },
    SignalRelayed {
        kind: SignalKind,
    },
    SignalRefused {
        reason: ErrorCode,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResumeOutcome {
    /// The session was unreachable and is back.
    Resumed,
    /// The session still had a connection the gateway believed alive; the new one took over.
    TookOver,
    /// Unknown or expired token.
    Expired,
    /// Frames after the client's last_seq were evicted.
    Gap,
    /// A newer connection attempt holds the session.
    StaleAttempt,
    /// last_seq ahead of anything sent.
    Invalid,
}

impl ResumeOutcome {
    pub const ALL: [ResumeOutcome; 6] = [
        Self::Resumed,
        Self::TookOver,
        Self::Expired,
        Self::Gap,
        Self::StaleAttempt,
        Self::Invalid,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Resumed => "resumed",
            Self::TookOver => "took_over",
            Self::Expired => "expired",
            Self::Gap => "gap",
            Self::StaleAttempt => "stale_attempt",
            Self::Invalid => "invalid",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalKind {
    Description,
    Candidate,
    Data,
}

impl SignalKind {
    pub const ALL: [SignalKind; 3] = [Self::Description, Self::Candidate, Self::Data];

    pub fn label(self) -> &'static str {
        match self {
            Self::Description => "description",
            Self::Candidate => "candidate",
            Self::Data => "data",
        }
    }
}

/// Counts the runtime exports as gauges, kept up to date on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Sessions with a live connection, by [`Transport`] index.
    pub online: [usize; 2],
    /// Sessions waiting for a resume, by the [`Transport`] index of their last connection.
    pub unreachable: [usize; 2],
    pub rooms: usize,
}

impl Gauges {
    pub fn online(&self, transport: Transport) -> usize {
        self.online[transport.index()]
    }

    pub fn unreachable(&self, transport: Transport) -> usize {
        self.unreachable[transport.index()]
    }
}

#[derive(Debug)]
struct Connection {
    transport: Transport,
    session: Option<SessionKey>,
    protocol_errors: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Online(ConnId),
    Unreachable { since: Instant },
}

#[derive(Debug)]
struct Session {
    peer_id: String,
    resume_token: String,
    rooms: BTreeSet<String>,
    presence: Presence,
    /// Transport of the current (or last) connection.
    transport: Transport,
    next_seq: u64,
    replay: ReplayBuffer,
    /// Highest Hello.attempt that attached a connection.
    attempt: u64,
    limiter: TokenBucket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    HelloDeadline(ConnId),
    /// Fires the end of the resume window of the unreachable period that began at `since`.
    ResumeWindow {
        session: SessionKey,
        since: Instant,
    },
}

/// Why a frame could not be emitted to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HoldFull;

/// What happens when a session's replay buffer is at its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenFull {
    /// Refuse the frame (the caller tells the sender). Used for relayed signals.
    Refuse,
    /// Always keep the frame (presence and replies are small and bounded by room limits).
    Keep,
}

pub struct Hub {
    config: HubConfig,
    rng: SystemRandom,
    connections: HashMap<ConnId, Connection>,
    sessions: HashMap<SessionKey, Session>,
    by_peer_id: HashMap<String, SessionKey>,
    by_resume_token: HashMap<String, SessionKey>,
    /// Room name -> peer id -> session. Ordered so that outputs are deterministic.
    rooms: HashMap<String, BTreeMap<String, SessionKey>>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    outputs: VecDeque<Output>,
    gauges: Gauges,
    next_session_key: u64,
    shutting_down: bool,
}

const MAX_ROOM_NAME: usize = 64;
const MAX_PEER_ID: usize = 64;

fn valid_room_name(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= MAX_ROOM_NAME
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn millis_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The error frame's body; ServerFrame.in_reply_to and Error.in_reply_to always agree.
fn error_msg(code: ErrorCode, message: impl Into<String>, in_reply_to: u64) -> server_frame::Msg {
    server_frame::Msg::Error(proto::Error {
        code: code.into(),
        message: message.into(),
        in_reply_to,
    })
}

impl Hub {
    pub fn new(config: HubConfig) -> Self {
        Self {
            config,
            rng: SystemRandom::new(),
            connections: HashMap::new(),
            sessions: HashMap::new(),
            by_peer_id: HashMap::new(),
            by_resume_token: HashMap::new(),
            rooms: HashMap::new(),
            timers: BinaryHeap::new(),
            outputs: VecDeque::new(),
            gauges: Gauges::default(),
            next_session_key: 0,
            shutting_down: false,
        }
    }

    pub fn gauges(&self) -> &Gauges {
        &self.gauges
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest pending timer (some may be stale; handling them early is harmless).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    // ----------------------------------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------------------------------

    /// A transport accepted a connection. It must say Hello within `hello_timeout`.
    pub fn connection_opened(&mut self, now: Instant, conn: ConnId, transport: Transport) {
        self.connections.insert(
            conn,
            Connection {
                transport,
                session: None,
                protocol_errors: 0,
            },
        );
        self.arm(now + self.config.hello_timeout, Timer::HelloDeadline(conn));
    }

    pub fn frame_received(&mut self, now: Instant, conn: ConnId, frame: ClientFrame) {
        let Some(connection) = self.connections.get(&conn) else {
            return; // Already closed by the hub; the transport has not caught up yet.
        };
        let id = frame.id;
        let Some(msg) = frame.msg else {
            self.frame_rejected(
                now,
                conn,
                FrameProblem::Malformed {
                    detail: "the frame carries no message".into(),
                },
            );
            return;
        };
        let Some(key) = connection.session else {
            match msg {
                client_frame::Msg::Hello(hello) => self.hello(now, conn, id, hello),
                _ => self.refuse(
                    now,
                    conn,
                    id,
                    ErrorCode::HelloRequired,
                    "send Hello first".to_string(),
                ),
            }
            return;
        };
        if matches!(msg, client_frame::Msg::Ack(_)) {
            // Acks are never rate limited: refusing them would only grow the buffers.
        } else if let Some(session) = self.sessions.get_mut(&key)
            && !session.limiter.try_take(now)
        {
            if matches!(msg, client_frame::Msg::Signal(_)) {
                self.event(HubEvent::SignalRefused {
                    reason: ErrorCode::RateLimited,
                });
            }
            let message = format!(
                "more than {} requests per second (burst {}); this frame was not processed",
                self.config.limits.requests_per_sec, self.config.limits.request_burst
            );
            self.reply(key, id, error_msg(ErrorCode::RateLimited, message, id));
            return;
        }
        match msg {
            client_frame::Msg::Hello(_) => self.refuse(
                now,
                conn,
                id,
                ErrorCode::AlreadyWelcomed,
                "this connection already has a session".to_string(),
            ),
            client_frame::Msg::Join(join) => self.join(key, id, join.room),
            client_frame::Msg::Leave(leave) => self.leave(key, id, leave.room),
            client_frame::Msg::Signal(signal) => self.relay(key, id, signal),
            client_frame::Msg::Ping(ping) => self.push_send(
                conn,
                ServerFrame {
                    seq: 0,
                    in_reply_to: id,
                    msg: Some(server_frame::Msg::Pong(Pong {
                        payload: ping.payload,
                    })),
                },
            ),
            client_frame::Msg::Ack(ack) => self.ack(key, id, ack.seq),
        }
    }

    /// Bytes arrived that are not a valid frame. Fatal problems close the connection.
    pub fn frame_rejected(&mut self, now: Instant, conn: ConnId, problem: FrameProblem) {
        let code = match &problem {
            FrameProblem::Malformed { .. } | FrameProblem::BrokenFraming { .. } => {
                ErrorCode::MalformedFrame
            }
            FrameProblem::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameProblem::Unsupported { .. } => ErrorCode::UnsupportedFrame,
        };
        self.refuse(now, conn, 0, code, problem.to_string());
        if problem.is_fatal() {
            self.close_connection(now, conn, Reason::ProtocolError);
        }
    }

    /// The connection ended without the hub asking for it. `reason` is one of
    /// LIVENESS_TIMEOUT (nothing arrived in time), CONNECTION_LOST (EOF/reset/I/O error) or
    /// CLIENT_CLOSED (a close handshake). `silent_for`: time since anything last arrived.
    pub fn connection_lost(
        &mut self,
        now: Instant,
        conn: ConnId,
        reason: Reason,
        silent_for: Duration,
    ) {
        let Some(connection) = self.connections.remove(&conn) else {
            return;
        };
        let Some(key) = connection.session else {
            return; // Never said Hello: nobody to tell.
        };
        self.event(HubEvent::ConnectionEnded {
            transport: connection.transport,
            reason,
            silent_for,
        });
        if reason == Reason::ClientClosed {
            self.end_session(key, Reason::ClientClosed);
        } else {
            self.become_unreachable(now, key, reason, silent_for);
        }
    }

    /// The connection's outbound queue is full: it reads too slowly. Closed; its session
    /// keeps every frame for a resume.
    pub fn outbound_overflow(&mut self, now: Instant, conn: ConnId) {
        self.close_connection(now, conn, Reason::SlowConsumer);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::HelloDeadline(conn) => {
                    let waiting = self
                        .connections
                        .get(&conn)
                        .is_some_and(|c| c.session.is_none());
                    if waiting {
                        let message =
                            format!("no Hello within {:?}; closing", self.config.hello_timeout);
                        self.refuse(now, conn, 0, ErrorCode::HelloRequired, message);
                        self.close_connection(now, conn, Reason::HelloTimeout);
                    }
                }
                Timer::ResumeWindow { session, since } => {
                    let still_that_period = self
                        .sessions
                        .get(&session)
                        .is_some_and(|s| s.presence == Presence::Unreachable { since });
                    if still_that_period {
                        self.end_session(session, Reason::ResumeWindowExpired);
                    }
                }
            }
        }
    }

    /// Graceful shutdown: GoAway to every connection, then close them all. New Hellos are
    /// refused from now on.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let mut conns: Vec<ConnId> = self.connections.keys().copied().collect();
        conns.sort();
        for conn in conns {
            self.push_send(
                conn,
                ServerFrame {
                    seq: 0,
                    in_reply_to: 0,
                    msg: Some(server_frame::Msg::GoAway(GoAway {
                        reason: Reason::ServerShutdown.into(),
                        reconnect_after_ms: millis_u32(self.config.reconnect_after),
                    })),
                },
            );
            self.close_connection(now, conn, Reason::ServerShutdown);
        }
        // Sessions live in this process only: nobody can resume them once it exits.
        self.sessions.clear();
        self.by_peer_id.clear();
        self.by_resume_token.clear();
        self.rooms.clear();
        self.timers.clear();
        self.gauges = Gauges::default();
    }

    // ----------------------------------------------------------------------------------------
    // Hello: new session, resume, take-over
    // ----------------------------------------------------------------------------------------

    fn hello(&mut self, now: Instant, conn: ConnId, id: u64, hello: Hello) {
        if self.shutting_down {
            self.refuse(
                now,
                conn,
                id,
                ErrorCode::ShuttingDown,
                "the gateway is shutting down".to_string(),
            );
            self.close_connection(now, conn, Reason::ServerShutdown);
            return;
        }
        match self.session_to_take_over(&hello) {
            Some(key) => self.resume(now, conn, id, key, &hello),
            None if !hello.resume_token.is_empty() => {
                self.resume_refused(conn, ResumeOutcome::Expired);
                self.refuse(
                    now,
                    conn,
                    id,
                    ErrorCode::ResumeExpired,
                    "the resume token is unknown or its resume window ran out; send Hello \
                     without a resume token to start a new session"
                        .to_string(),
                );
            }
            None => self.start_session(now, conn, id),
        }
    }

    /// The one rule of who may take a session over: the holder of its resume token.
    /// (An authenticated identity will be the second way in, here.)
    fn session_to_take_over(&self, hello: &Hello) -> Option<SessionKey> {
        if hello.resume_token.is_empty() {
            return None;
        }
        self.by_resume_token.get(&hello.resume_token).copied()
    }

    fn start_session(&mut self, now: Instant, conn: ConnId, id: u64) {
        let Some(transport) = self.connections.get(&conn).map(|c| c.transport) else {
            return;
        };
        let mut peer_id = ids::new_peer_id(&self.rng);
        while self.by_peer_id.contains_key(&peer_id) {
            peer_id = ids::new_peer_id(&self.rng);
        }
        let resume_token = ids::new_resume_token(&self.rng);
        let key = SessionKey(self.next_session_key);
        self.next_session_key += 1;
        let limits = &self.config.limits;
        self.sessions.insert(
            key,
            Session {
                peer_id: peer_id.clone(),
                resume_token: resume_token.clone(),
                rooms: BTreeSet::new(),
                presence: Presence::Online(conn),
                transport,
                next_seq: 1,
                replay: ReplayBuffer::default(),
                attempt: 0,
                limiter: TokenBucket::new(now, limits.requests_per_sec, limits.request_burst),
            },
        );
        self.by_peer_id.insert(peer_id, key);
        self.by_resume_token.insert(resume_token, key);
        self.attach(conn, key);
        self.welcome(conn, id, key, false);
        if let Some(session) = self.sessions.get(&key) {
            tracing::debug!(%conn, peer = %session.peer_id, %transport, "session started");
        }
        self.event(HubEvent::SessionStarted { transport });
    }

    fn resume(&mut self, now: Instant, conn: ConnId, id: u64, key: SessionKey, hello: &Hello) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let last_sent = session.next_seq - 1;
        if hello.attempt != 0 && hello.attempt <= session.attempt {
            let message = format!(
                "connection attempt {} is older than attempt {}, which holds the session",
                hello.attempt, session.attempt
            );
            self.resume_refused(conn, ResumeOutcome::StaleAttempt);
            self.refuse(now, conn, id, ErrorCode::StaleAttempt, message);
            self.close_connection(now, conn, Reason::Superseded);
            return;
        }
        if hello.last_seq > last_sent {
            let message = format!(
                "last_seq {} is ahead of the last frame sent to this session ({last_sent})",
                hello.last_seq
            );
            self.resume_refused(conn, ResumeOutcome::Invalid);
            self.refuse(now, conn, id, ErrorCode::InvalidArgument, message);
            return;
        }
        if !session.replay.can_resume_from(hello.last_seq) {
            // The token proves the client owns the session and it is starting over: end the
            // old session now rather than leaving a ghost for the whole resume window.
            self.resume_refused(conn, ResumeOutcome::Gap);
            let message = format!(
                "frames after seq {} were evicted (the client did not ack them in time); send \
                 Hello without a resume token to start a new session",
                hello.last_seq
            );
            self.refuse(now, conn, id, ErrorCode::ResumeGap, message);
            self.end_session(key, Reason::Superseded);
            return;
        }

        let Some(transport) = self.connections.get(&conn).map(|c| c.transport) else {
            return;
        };
        let outcome = match session.presence {
            Presence::Online(old) => {
                // The gateway had not noticed that the old connection is dead (or the client
                // moved on while it still works): the newer attempt wins at once.
                self.detach(old, key);
                self.connections.remove(&old);
                self.outputs.push_back(Output::Close {
                    conn: old,
                    reason: Reason::Superseded,
                });
                self.event(HubEvent::ConnectionEnded {
                    transport: self.session_transport(key),
                    reason: Reason::Superseded,
                    silent_for: Duration::ZERO,
                });
                ResumeOutcome::TookOver
            }
            Presence::Unreachable { .. } => {
                self.gauges.unreachable[session.transport.index()] -= 1;
                ResumeOutcome::Resumed
            }
        };
        if let Some(session) = self.sessions.get_mut(&key) {
            session.attempt = hello.attempt;
            session.presence = Presence::Online(conn);
            session.transport = transport;
            session.replay.ack(hello.last_seq);
        }
        self.attach(conn, key);
        self.welcome(conn, id, key, true);
        let replay: Vec<ServerFrame> = self
            .sessions
            .get(&key)
            .map(|s| s.replay.after(hello.last_seq).cloned().collect())
            .unwrap_or_default();
        for frame in replay {
            self.push_send(conn, frame);
        }
        if outcome == ResumeOutcome::Resumed {
            self.broadcast_presence(key, PresenceState::Online, Reason::Resumed, Duration::ZERO);
        }
        if let Some(session) = self.sessions.get(&key) {
            tracing::info!(
                %conn,
                peer = %session.peer_id,
                %transport,
                outcome = outcome.label(),
                last_seq = hello.last_seq,
                "session resumed"
            );
        }
        self.event(HubEvent::Resume { transport, outcome });
    }

    fn welcome(&mut self, conn: ConnId, id: u64, key: SessionKey, resumed: bool) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let config = &self.config;
        let welcome = Welcome {
            session_id: conn.to_string(),
            peer_id: session.peer_id.clone(),
            resume_token: session.resume_token.clone(),
            liveness_timeout_ms: millis_u32(config.liveness.timeout()),
            ping_interval_ms: millis_u32(config.liveness.ping_interval()),
            resumed,
            resume_window_ms: millis_u32(config.resume_window),
            rooms: session.rooms.iter().cloned().collect(),
            max_frame_bytes: u32::try_from(config.limits.max_frame_bytes).unwrap_or(u32::MAX),
        };
        self.push_send(
            conn,
            ServerFrame {
                seq: 0,
                in_reply_to: id,
                msg: Some(server_frame::Msg::Welcome(welcome)),
            },
        );
    }

    fn resume_refused(&mut self, conn: ConnId, outcome: ResumeOutcome) {
        if let Some(c) = self.connections.get(&conn) {
            let transport = c.transport;
            tracing::info!(%conn, %transport, outcome = outcome.label(), "resume refused");
            self.event(HubEvent::Resume { transport, outcome });
        }
    }

    // ----------------------------------------------------------------------------------------
    // Rooms and relay
    // ----------------------------------------------------------------------------------------

    fn join(&mut self, key: SessionKey, id: u64, room: String) {
        if !valid_room_name(&room) {
            let message = format!(
                "room name {room:?} is invalid: 1 to {MAX_ROOM_NAME} bytes of A-Z a-z 0-9 . _ : -"
            );
            return self.reply(key, id, error_msg(ErrorCode::InvalidArgument, message, id));
        }
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let limits = self.config.limits.clone();
        if session.rooms.contains(&room) {
            let message = format!("already in room {room:?}");
            return self.reply(key, id, error_msg(ErrorCode::AlreadyJoined, message, id));
        }
        if session.rooms.len() >= limits.max_rooms_per_session {
            let message = format!(
                "a session may be in at most {} rooms",
                limits.max_rooms_per_session
            );
            return self.reply(key, id, error_msg(ErrorCode::TooManyRooms, message, id));
        }
        let members = self.rooms.get(&room).map_or(0, BTreeMap::len);
        if members >= limits.max_peers_per_room {
            let message = format!(
                "room {room:?} is full ({} peers)",
                limits.max_peers_per_room
            );
            return self.reply(key, id, error_msg(ErrorCode::RoomFull, message, id));
        }
        let peer_id = session.peer_id.clone();

        let others: Vec<(String, SessionKey)> = self
            .rooms
            .get(&room)
            .map(|m| m.iter().map(|(p, k)| (p.clone(), *k)).collect())
            .unwrap_or_default();
        let peers = others
            .iter()
            .map(|(peer_id, other)| Peer {
                peer_id: peer_id.clone(),
                state: self.presence_state(*other).into(),
            })
            .collect();
        if !self.rooms.contains_key(&room) {
            self.gauges.rooms += 1;
        }
        self.rooms
            .entry(room.clone())
            .or_default()
            .insert(peer_id.clone(), key);
        if let Some(session) = self.sessions.get_mut(&key) {
            session.rooms.insert(room.clone());
        }
        self.reply(
            key,
            id,
            server_frame::Msg::Joined(Joined {
                room: room.clone(),
                peers,
            }),
        );
        let joined = PeerJoined {
            room,
            peer: Some(Peer {
                peer_id,
                state: PresenceState::Online.into(),
            }),
        };
        for (_, other) in others {
            self.notify(other, server_frame::Msg::PeerJoined(joined.clone()));
        }
    }

    fn leave(&mut self, key: SessionKey, id: u64, room: String) {
        let in_room = self
            .sessions
            .get(&key)
            .is_some_and(|s| s.rooms.contains(&room));
        if !in_room {
            let (code, message) = if self.rooms.contains_key(&room) {
                (ErrorCode::NotJoined, format!("not in room {room:?}"))
            } else {
                (ErrorCode::UnknownRoom, format!("no room {room:?}"))
            };
            return self.reply(key, id, error_msg(code, message, id));
        }
        self.remove_from_room(key, &room, Reason::LeftRoom);
        self.reply(key, id, server_frame::Msg::Left(Left { room }));
    }

    fn relay(&mut self, key: SessionKey, id: u64, mut signal: proto::Signal) {
        let refuse = |hub: &mut Self, code: ErrorCode, message: String| {
            hub.event(HubEvent::SignalRefused { reason: code });
            hub.reply(key, id, error_msg(code, message, id));
        };
        let Some(sender) = self.sessions.get(&key) else {
            return;
        };
        let sender_id = sender.peer_id.clone();
        let sender_in_room = sender.rooms.contains(&signal.room);
        let kind = match &signal.payload {
            Some(signal::Payload::Description(d)) => {
                if d.r#type() == proto::SdpType::Unspecified {
                    let message = "description.type must be OFFER, ANSWER, PRANSWER or ROLLBACK";
                    return refuse(self, ErrorCode::InvalidArgument, message.to_string());
                }
                SignalKind::Description
            }
            Some(signal::Payload::Candidate(_)) => SignalKind::Candidate,
            Some(signal::Payload::Data(_)) => SignalKind::Data,
            None => {
                let message = "a Signal needs a description, a candidate or data";
                return refuse(self, ErrorCode::InvalidArgument, message.to_string());
            }
        };
        let Some(members) = self.rooms.get(&signal.room) else {
            let message = format!("no room {:?}", signal.room);
            return refuse(self, ErrorCode::UnknownRoom, message);
        };
        let recipient = members.get(&signal.to).copied();
        if !sender_in_room {
            let message = format!("join room {:?} before signaling in it", signal.room);
            return refuse(self, ErrorCode::NotJoined, message);
        }
        if signal.to.is_empty() || signal.to.len() > MAX_PEER_ID || signal.to == sender_id {
            let message = format!(
                "`to` must name another peer of the room, got {:?}",
                signal.to
            );
            return refuse(self, ErrorCode::InvalidArgument, message);
        }
        let Some(recipient) = recipient else {
            let message = format!("peer {:?} is not in room {:?}", signal.to, signal.room);
            return refuse(self, ErrorCode::PeerNotInRoom, message);
        };
        // Never trust the client's `from`.
        signal.from = sender_id;
        let to = signal.to.clone();
        match self.emit(
            recipient,
            0,
            server_frame::Msg::Signal(signal),
            WhenFull::Refuse,
        ) {
            Ok(()) => self.event(HubEvent::SignalRelayed { kind }),
            Err(HoldFull) => {
                let limits = &self.config.limits;
                let message = format!(
                    "peer {to:?} is unreachable and {} frames / {} bytes are already held \
                     for it; this signal was not accepted",
                    limits.hold_frames, limits.hold_bytes
                );
                refuse(self, ErrorCode::RecipientBufferFull, message);
            }
        }
    }

    fn ack(&mut self, key: SessionKey, id: u64, seq: u64) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let last_sent = session.next_seq - 1;
        if seq > last_sent {
            let message = format!("ack of seq {seq}, but the last frame sent was {last_sent}");
            return self.reply(key, id, error_msg(ErrorCode::InvalidArgument, message, id));
        }
        session.replay.ack(seq);
    }

    // ----------------------------------------------------------------------------------------
    // Presence
    // ----------------------------------------------------------------------------------------

    fn become_unreachable(
        &mut self,
        now: Instant,
        key: SessionKey,
        reason: Reason,
        silent_for: Duration,
    ) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if !matches!(session.presence, Presence::Online(_)) {
            return;
        }
        session.presence = Presence::Unreachable { since: now };
        self.gauges.online[session.transport.index()] -= 1;
        self.gauges.unreachable[session.transport.index()] += 1;
        tracing::info!(
            peer = %session.peer_id,
            transport = %session.transport,
            reason = reason_label(reason),
            silent_for_ms = millis_u64(silent_for),
            "peer unreachable"
        );
        self.arm(
            now + self.config.resume_window,
            Timer::ResumeWindow {
                session: key,
                since: now,
            },
        );
        self.broadcast_presence(key, PresenceState::Unreachable, reason, silent_for);
    }

    fn broadcast_presence(
        &mut self,
        key: SessionKey,
        state: PresenceState,
        reason: Reason,
        silent_for: Duration,
    ) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let detected_by = session.transport.to_proto();
        let peer_id = session.peer_id.clone();
        let rooms: Vec<String> = session.rooms.iter().cloned().collect();
        for room in rooms {
            let msg = PeerState {
                room: room.clone(),
                peer_id: peer_id.clone(),
                state: state.into(),
                reason: reason.into(),
                silent_for_ms: millis_u64(silent_for),
                detected_by: detected_by.into(),
            };
            for other in self.room_members_except(&room, key) {
                self.notify(other, server_frame::Msg::PeerState(msg.clone()));
            }
        }
    }

    /// The session is gone for good: it leaves every room, its token dies.
    fn end_session(&mut self, key: SessionKey, reason: Reason) {
        let rooms: Vec<String> = self
            .sessions
            .get(&key)
            .map(|s| s.rooms.iter().cloned().collect())
            .unwrap_or_default();
        for room in rooms {
            self.remove_from_room(key, &room, reason);
        }
        let Some(session) = self.sessions.remove(&key) else {
            return;
        };
        self.by_peer_id.remove(&session.peer_id);
        self.by_resume_token.remove(&session.resume_token);
        tracing::info!(peer = %session.peer_id, reason = reason_label(reason), "peer left");
        match session.presence {
            Presence::Online(conn) => {
                self.gauges.online[session.transport.index()] -= 1;
                if self.connections.remove(&conn).is_some() {
                    self.outputs.push_back(Output::Close { conn, reason });
                }
            }
            Presence::Unreachable { .. } => {
                self.gauges.unreachable[session.transport.index()] -= 1;
            }
        }
        self.event(HubEvent::SessionEnded { reason });
    }

    fn remove_from_room(&mut self, key: SessionKey, room: &str, reason: Reason) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.rooms.remove(room);
        let peer_id = session.peer_id.clone();
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(&peer_id);
            if members.is_empty() {
                self.rooms.remove(room);
                self.gauges.rooms -= 1;
            }
        }
        let left = PeerLeft {
            room: room.to_string(),
            peer_id,
            reason: reason.into(),
        };
        for other in self.room_members_except(room, key) {
            self.notify(other, server_frame::Msg::PeerLeft(left.clone()));
        }
    }

    fn room_members_except(&self, room: &str, key: SessionKey) -> Vec<SessionKey> {
        self.rooms
            .get(room)
            .map(|m| m.values().copied().filter(|k| *k != key).collect())
            .unwrap_or_default()
    }

    fn presence_state(&self, key: SessionKey) -> PresenceState {
        match self.sessions.get(&key).map(|s| s.presence) {
            Some(Presence::Online(_)) => PresenceState::Online,
            Some(Presence::Unreachable { .. }) => PresenceState::Unreachable,
            None => PresenceState::Unspecified,
        }
    }

    // ----------------------------------------------------------------------------------------
    // Connections and output
    // ----------------------------------------------------------------------------------------

    fn attach(&mut self, conn: ConnId, key: SessionKey) {
        if let Some(c) = self.connections.get_mut(&conn) {
            c.session = Some(key);
            self.gauges.online[c.transport.index()] += 1;
        }
    }

    fn detach(&mut self, conn: ConnId, key: SessionKey) {
        if let Some(c) = self.connections.get_mut(&conn)
            && c.session == Some(key)
        {
            c.session = None;
            self.gauges.online[c.transport.index()] -= 1;
        }
    }

    fn session_transport(&self, key: SessionKey) -> Transport {
        self.sessions
            .get(&key)
            .map_or(Transport::WebSocket, |s| s.transport)
    }

    /// The hub closes a connection: its session (if any) becomes unreachable, since the
    /// client may come back.
    fn close_connection(&mut self, now: Instant, conn: ConnId, reason: Reason) {
        let Some(connection) = self.connections.remove(&conn) else {
            return;
        };
        self.outputs.push_back(Output::Close { conn, reason });
        if let Some(key) = connection.session {
            self.event(HubEvent::ConnectionEnded {
                transport: connection.transport,
                reason,
                silent_for: Duration::ZERO,
            });
            if reason == Reason::ServerShutdown {
                return; // Nobody is left to tell.
            }
            self.become_unreachable(now, key, reason, Duration::ZERO);
        }
    }

    /// Refuses a request with an Error. Counts as a protocol error for frames that no
    /// well-behaved client sends; too many of those close the connection.
    fn refuse(&mut self, now: Instant, conn: ConnId, id: u64, code: ErrorCode, message: String) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        let misbehaving = matches!(
            code,
            ErrorCode::MalformedFrame
                | ErrorCode::FrameTooLarge
                | ErrorCode::UnsupportedFrame
                | ErrorCode::HelloRequired
                | ErrorCode::AlreadyWelcomed
        );
        if misbehaving {
            connection.protocol_errors += 1;
        }
        let too_many = connection.protocol_errors > self.config.limits.max_protocol_errors;
        let session = connection.session;
        match session {
            Some(key) => self.reply(key, id, error_msg(code, message, id)),
            None => self.push_send(
                conn,
                ServerFrame {
                    seq: 0,
                    in_reply_to: id,
                    msg: Some(error_msg(code, message, id)),
                },
            ),
        }
        if too_many {
            let message = format!(
                "more than {} refused frames; closing",
                self.config.limits.max_protocol_errors
            );
            self.push_send(
                conn,
                ServerFrame {
                    seq: 0,
                    in_reply_to: 0,
                    msg: Some(error_msg(ErrorCode::Closing, message, 0)),
                },
            );
            self.close_connection(now, conn, Reason::ProtocolError);
        }
    }

    /// A reply to the session's own request (kept for replay like everything else).
    fn reply(&mut self, key: SessionKey, id: u64, msg: server_frame::Msg) {
        let _ = self.emit(key, id, msg, WhenFull::Keep);
    }

    /// News about other peers.
    fn notify(&mut self, key: SessionKey, msg: server_frame::Msg) {
        let _ = self.emit(key, 0, msg, WhenFull::Keep);
    }

    /// Appends a frame to the session's ordered stream: numbered, kept for replay, and sent
    /// at once if the session has a connection.
    fn emit(
        &mut self,
        key: SessionKey,
        in_reply_to: u64,
        msg: server_frame::Msg,
        when_full: WhenFull,
    ) -> Result<(), HoldFull> {
        let limits = &self.config.limits;
        let Some(session) = self.sessions.get_mut(&key) else {
            return Ok(());
        };
        let frame = ServerFrame {
            seq: session.next_seq,
            in_reply_to,
            msg: Some(msg),
        };
        let size = frame.encoded_len();
        let over_bound = |replay: &ReplayBuffer| {
            replay.len() + 1 > limits.hold_frames || replay.bytes() + size > limits.hold_bytes
        };
        match session.presence {
            Presence::Online(conn) => {
                // Delivered now; kept only in case the connection dies before the client
                // acks. A client that never acks loses only its ability to resume.
                while !session.replay.is_empty() && over_bound(&session.replay) {
                    session.replay.evict_oldest();
                }
                session.replay.push(frame.clone(), size);
                session.next_seq += 1;
                self.outputs.push_back(Output::Send { conn, frame });
            }
            Presence::Unreachable { .. } => {
                if over_bound(&session.replay) {
                    if when_full == WhenFull::Refuse {
                        return Err(HoldFull);
                    }
                    // Presence news for a peer that stays away during heavy churn: past twice
                    // the bound the oldest frames go, and a resume will be refused as a gap
                    // (the client is told and starts over; nothing is lost silently).
                    let hard_frames = limits.hold_frames * 2;
                    let hard_bytes = limits.hold_bytes * 2;
                    while !session.replay.is_empty()
                        && (session.replay.len() + 1 > hard_frames
                            || session.replay.bytes() + size > hard_bytes)
                    {
                        session.replay.evict_oldest();
                    }
                }
                session.replay.push(frame, size);
                session.next_seq += 1;
            }
        }
        Ok(())
    }

    fn push_send(&mut self, conn: ConnId, frame: ServerFrame) {
        self.outputs.push_back(Output::Send { conn, frame });
    }

    fn event(&mut self, event: HubEvent) {
        self.outputs.push_back(Output::Event(event));
    }

    fn arm(&mut self, at: Instant, timer: Timer) {
        self.timers.push(Reverse((at, timer)));
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("connections", &self.connections.len())
            .field("sessions", &self.sessions.len())
            .field("rooms", &self.rooms.len())
            .field("gauges", &self.gauges)
            .finish()
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
