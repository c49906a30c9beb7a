//! The hub: sessions, rooms, presence, relay and resume, as one sans-IO state machine.
//!
//! Inputs: [`Hub::connection_opened`], [`Hub::frame_received`], [`Hub::frame_rejected`],
//! [`Hub::connection_drained`], [`Hub::connection_lost`], [`Hub::outbound_overflow`],
//! [`Hub::handle_timeout`], [`Hub::shutdown`]; in cluster mode also
//! [`Hub::cluster_received`], [`Hub::node_up`], [`Hub::node_lost`], [`Hub::set_live_nodes`],
//! [`Hub::set_cut_off`], [`Hub::drain`] (see `remote.rs`). Outputs: [`Hub::poll_output`] (frames to send,
//! checkpoints, connections to close, events for metrics) and [`Hub::poll_timeout`] (when to
//! call `handle_timeout` next). The caller owns the clock and passes `now`; the hub owns no
//! socket, no timer and no randomness of its own ([`Entropy`] is injected).
//!
//! Where each rule lives:
//!
//! | file | rules |
//! | --- | --- |
//! | `mod.rs` | the inputs; which handler a client frame goes to; numbered client frames (exactly once, in order) and rate limits |
//! | `hello.rs` | Hello: a new session, resume, take-over (by resume token or by identity), the fences (attempt, last_seq, gaps, resume rate), Welcome |
//! | `requests.rs` | Join, Leave, Signal (validation, grants and relay), Ack, Bye, Refresh |
//! | `admin.rs` | what the application's backend may see and do: list sessions and rooms, disconnect |
//! | `tokens.rs` | token expiry during a session: warning, grace, close |
//! | `presence.rs` | ONLINE -> away -> LEFT, and telling room members |
//! | `delivery.rs` | a session's stream to its connection: numbering, pacing by the send window, Acks to the client, errors, closes |
//! | `backlog.rs`, `pending.rs` | the ordered stream and its bounds; presence coalescing |
//! | `flow.rs` | the send window of a connection |
//! | `rooms.rs` | membership (local and remote members) and fan-out |
//! | `remote.rs` | cluster mode: members on other gateways and their presence, a lost gateway |
//! | `relay_across.rs` | cluster mode: signals to another gateway, settled by it before the sender's Ack |
//! | `handover.rs` | cluster mode: claims and hand-overs of whole sessions (resume anywhere, identity take-over, drain) |
//! | `durable.rs` | durable mode: each session's log in JetStream, stored before it counts, recovered after its gateway's crash |
//! | `seats.rs` | cluster mode: the room's home gateway decides joins (a race for the last seat admits one) |
//! | `deadlines.rs` | per-item timers (Hello deadline, resume window) |
//! | `session.rs`, `config.rs`, `output.rs` | the data and the vocabulary |

mod admin;
mod backlog;
mod config;
mod deadlines;
mod delivery;
mod durable;
mod flow;
mod handover;
mod hello;
mod numbered_map;
mod output;
mod pending;
mod presence;
mod relay_across;
mod remote;
mod requests;
mod rooms;
mod seats;
mod session;
mod tokens;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

pub use admin::{DisconnectTarget, RoomView, SessionView};
pub use config::{HubConfig, Limits};
pub use durable::{LOG_MAX_AGE, LOG_RECORDS, PersistFailure, StoredRecord, log_key};
pub use output::{Gauges, HubEvent, Output, ResumeOutcome, SignalKind};

use super::codec::FrameProblem;
use super::identity::{Credentials, Identity};
use super::ids::{Entropy, SystemEntropy};
use crate::proto::{ClientFrame, ErrorCode, Hello, Reason, client_frame};
use deadlines::Deadlines;
use handover::PendingClaim;
use numbered_map::NumberedMap;
use relay_across::Ticket;
use remote::{RemoteKey, RemotePeer};
use rooms::Rooms;
use session::{Connection, Session};

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

/// Milliseconds for the wire, saturating (a duration never wraps into a small number).
fn millis_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// A Pong echoes its Ping's payload outside the paced stream: keep it small.
const MAX_PING_PAYLOAD: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Deadline {
    /// The connection must have said Hello by then.
    Hello(ConnId),
    /// The session, away, is gone (LEFT) at the end of its resume window.
    ResumeWindow(SessionKey),
    /// The session's token expires: warn it to refresh.
    TokenExpiry(SessionKey),
    /// The grace after expiry ran out: close the connection.
    TokenGrace(SessionKey),
    /// A member of a lost gateway is gone (LEFT) at the end of its resume window.
    RemoteExpiry(RemoteKey),
    /// The room's home did not answer a seat request in time.
    Seat(u64),
    /// Durable mode: the session's log may be written again after a failure.
    PersistRetry(SessionKey),
    /// Durable mode: the session's log gets old; a checkpoint renews it.
    LogRefresh(SessionKey),
}

pub struct Hub {
    config: HubConfig,
    entropy: Box<dyn Entropy>,
    connections: NumberedMap<ConnId, Connection>,
    /// Boxed: a session is ~650 bytes, and a hash map keeps up to twice its entries' room in
    /// free buckets; boxed, the free buckets hold pointers.
    sessions: NumberedMap<SessionKey, Box<Session>>,
    by_peer_id: HashMap<String, SessionKey>,
    by_resume_token: HashMap<String, SessionKey>,
    by_identity: HashMap<Identity, SessionKey>,
    rooms: Rooms,
    deadlines: Deadlines<Deadline>,
    outputs: VecDeque<Output>,
    /// Sessions whose client may need an Ack of its numbered frames (sent once the outputs
    /// of the current inputs are taken: one Ack per session per batch).
    acks_due: Vec<SessionKey>,
    /// Sessions whose unread replies passed the bound during the current input.
    overloaded: Vec<SessionKey>,
    gauges: Gauges,
    next_session_key: u64,
    shutting_down: bool,
    // Cluster mode (see `remote.rs`); empty in a single gateway.
    remote: NumberedMap<RemoteKey, RemotePeer>,
    remote_by_peer: HashMap<String, RemoteKey>,
    next_remote_key: u64,
    tickets: HashMap<u64, Ticket>,
    next_ticket: u64,
    claims: HashMap<u64, PendingClaim>,
    /// Resume tokens of sessions handed over from here, by token: (where to, until when).
    moved_tokens: HashMap<String, (String, Instant)>,
    live_nodes: HashSet<String>,
    seat_waits: HashMap<u64, seats::SeatWait>,
    /// Seats this gateway granted as a room's home, by room: (peer id, held until).
    reservations: HashMap<String, Vec<(String, Instant)>>,
    /// Cut off from the cluster: no Hello is taken.
    cut_off: bool,
    // Durable mode (see `durable.rs`).
    /// This process, among the holders of session logs (random).
    incarnation: u64,
    /// The latest `now` an input brought, and the first (records compute durations with it).
    clock: Option<Instant>,
    started: Option<Instant>,
    durable_keys: HashMap<String, SessionKey>,
    /// Sessions with something new for their log.
    persist_due: Vec<SessionKey>,
    /// Hellos waiting for a session's log to be read.
    recoveries: HashMap<u64, PendingClaim>,
    /// Gateways lost, and when (for as long as their sessions may be recovered).
    lost_nodes: HashMap<String, Instant>,
}

impl Hub {
    /// A hub whose ids and resume tokens come from the operating system's random source.
    pub fn new(config: HubConfig) -> Self {
        Self::with_entropy(config, Box::new(SystemEntropy::default()))
    }

    /// A hub with its randomness injected (deterministic tests, fuzzing).
    pub fn with_entropy(config: HubConfig, mut entropy: Box<dyn Entropy>) -> Self {
        let mut incarnation = [0u8; 8];
        entropy.fill(&mut incarnation);
        Self {
            config,
            entropy,
            connections: NumberedMap::default(),
            sessions: NumberedMap::default(),
            by_peer_id: HashMap::new(),
            by_resume_token: HashMap::new(),
            by_identity: HashMap::new(),
            rooms: Rooms::default(),
            deadlines: Deadlines::new(),
            outputs: VecDeque::new(),
            acks_due: Vec::new(),
            overloaded: Vec::new(),
            gauges: Gauges::default(),
            next_session_key: 0,
            shutting_down: false,
            remote: NumberedMap::default(),
            remote_by_peer: HashMap::new(),
            next_remote_key: 0,
            tickets: HashMap::new(),
            next_ticket: 1,
            claims: HashMap::new(),
            moved_tokens: HashMap::new(),
            live_nodes: HashSet::new(),
            seat_waits: HashMap::new(),
            reservations: HashMap::new(),
            cut_off: false,
            incarnation: u64::from_le_bytes(incarnation),
            clock: None,
            started: None,
            durable_keys: HashMap::new(),
            persist_due: Vec::new(),
            recoveries: HashMap::new(),
            lost_nodes: HashMap::new(),
        }
    }

    pub fn gauges(&self) -> &Gauges {
        &self.gauges
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        if self.outputs.is_empty() {
            self.send_due_records();
            self.send_due_acks();
        }
        self.outputs.pop_front()
    }

    /// Durations in durable records are computed from the latest input's `now`.
    fn tick(&mut self, now: Instant) {
        self.clock = Some(now);
        self.started.get_or_insert(now);
    }

    /// When [`Self::handle_timeout`] has work next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    // ----------------------------------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------------------------------

    /// A transport accepted a connection. It must say Hello within `hello_timeout`. Beyond
    /// `max_pending_hellos` connections waiting for Hello it is closed at once.
    pub fn connection_opened(&mut self, now: Instant, conn: ConnId, transport: Transport) {
        self.tick(now);
        let limits = &self.config.limits;
        let pending = self.connections.len() - self.sessions_online();
        if pending >= limits.max_pending_hellos {
            tracing::warn!(%conn, pending, "too many connections waiting for Hello: closing");
            self.outputs.push_back(Output::Close {
                conn,
                reason: Reason::GatewayFull,
            });
            return;
        }
        self.connections.insert(
            conn,
            Connection {
                transport,
                session: None,
                protocol_errors: 0,
                flow: flow::Flow::new(limits.send_window_frames, limits.send_window_bytes),
            },
        );
        self.deadlines
            .set(Deadline::Hello(conn), now + self.config.hello_timeout);
    }

    pub fn frame_received(&mut self, now: Instant, conn: ConnId, frame: ClientFrame) {
        self.tick(now);
        let Some(session) = self.connections.get(&conn).map(|c| c.session) else {
            return; // Already closed by the hub; the transport has not caught up yet.
        };
        if let Some(key) = session
            && self.park(now, conn, key, &frame)
        {
            return;
        }
        let ClientFrame { id, seq, msg } = frame;
        let Some(msg) = msg else {
            let detail = "the frame carries no message".into();
            return self.frame_rejected(now, conn, FrameProblem::Malformed { detail });
        };
        let Some(key) = session else {
            return match msg {
                client_frame::Msg::Hello(hello) => {
                    let credentials = self.unverified();
                    self.hello(now, conn, id, hello, credentials)
                }
                _ => self.refuse(now, conn, id, ErrorCode::HelloRequired, "send Hello first"),
            };
        };
        use client_frame::Msg;
        match msg {
            Msg::Refresh(_) => {
                if self.within_rate(now, key, id, false) {
                    let credentials = self.unverified();
                    self.refresh(now, key, id, credentials);
                }
            }
            Msg::Hello(_) => self.refuse(
                now,
                conn,
                id,
                ErrorCode::AlreadyWelcomed,
                "this connection already has a session",
            ),
            // Never answered with an Error (that would amplify a flood); beyond their own
            // rate, Acks are dropped unread.
            Msg::Ack(ack) => {
                if self
                    .sessions
                    .get_mut(&key)
                    .is_some_and(|s| s.ack_limiter.try_take(now))
                {
                    self.client_ack(key, id, ack.seq);
                }
            }
            Msg::Bye(_) => self.bye(key),
            Msg::Suspend(_) => self.close_connection(now, conn, Reason::Suspended),
            Msg::Ping(ping) => {
                if ping.payload.len() > MAX_PING_PAYLOAD {
                    let message = format!(
                        "a Ping payload may have at most {MAX_PING_PAYLOAD} bytes, got {}",
                        ping.payload.len()
                    );
                    self.reply_error(key, id, ErrorCode::InvalidArgument, message);
                } else if self.within_rate(now, key, id, false) {
                    self.pong(conn, id, ping.payload);
                }
            }
            Msg::Join(join) => {
                if self.numbered(key, id, seq) && self.within_rate(now, key, id, false) {
                    self.join(now, (key, id, seq), join.room);
                }
            }
            Msg::Leave(leave) => {
                if self.numbered(key, id, seq) && self.within_rate(now, key, id, false) {
                    self.leave(key, id, leave.room);
                }
            }
            Msg::Signal(signal) => {
                if self.numbered(key, id, seq) && self.within_rate(now, key, id, true) {
                    self.relay(now, key, id, seq, signal);
                }
            }
        }
        self.check_overloaded(now);
    }

    /// A Hello whose token the runtime verified (or that authentication does not apply to).
    pub fn hello_received(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: u64,
        hello: Hello,
        credentials: Credentials,
    ) {
        self.tick(now);
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        if connection.session.is_some() {
            let message = "this connection already has a session";
            return self.refuse(now, conn, id, ErrorCode::AlreadyWelcomed, message);
        }
        self.hello(now, conn, id, hello, credentials);
    }

    /// A Refresh whose token the runtime verified.
    pub fn refresh_received(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: u64,
        credentials: Credentials,
    ) {
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        let Some(key) = connection.session else {
            return self.refuse(now, conn, id, ErrorCode::HelloRequired, "send Hello first");
        };
        if self.within_rate(now, key, id, false) {
            self.refresh(now, key, id, credentials);
        }
    }

    /// What a Hello or Refresh that did not come through the runtime's verification gets.
    fn unverified(&self) -> Credentials {
        if self.config.authentication {
            Credentials::Refused {
                code: ErrorCode::TokenMissing,
                message: "the token was not verified".into(),
            }
        } else {
            Credentials::Anonymous
        }
    }

    fn sessions_online(&self) -> usize {
        self.gauges.online.iter().sum()
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

    /// Everything sent to the connection before checkpoint `mark` was written: it may take
    /// more.
    pub fn connection_drained(&mut self, _now: Instant, conn: ConnId, mark: u64) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        connection.flow.drained(mark);
        if let Some(key) = connection.session {
            self.pump(key);
        }
    }

    /// The connection ended without the hub asking for it: its session (if any) is away and
    /// may resume. Any transport close counts here, a close handshake included — only Bye
    /// means leaving. `reason`: LIVENESS_TIMEOUT (nothing arrived in time), CONNECTION_LOST
    /// (EOF, reset, I/O error, a writer that died) or CLIENT_CLOSED (a close handshake).
    /// `silent_for`: time since anything last arrived.
    pub fn connection_lost(
        &mut self,
        now: Instant,
        conn: ConnId,
        reason: Reason,
        silent_for: Duration,
    ) {
        self.deadlines.cancel(Deadline::Hello(conn));
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
        self.go_away(now, key, reason, silent_for);
    }

    /// The connection's outbound queue is full although the hub paces it: it reads too
    /// slowly for even the frames outside its session's stream. Closed; the session keeps
    /// every frame for a resume.
    pub fn outbound_overflow(&mut self, now: Instant, conn: ConnId) {
        self.close_connection(now, conn, Reason::SlowConsumer);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        while let Some(deadline) = self.deadlines.pop_due(now) {
            match deadline {
                Deadline::Hello(conn) => {
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
                Deadline::ResumeWindow(key) => {
                    let away = self.sessions.get(&key).is_some_and(|s| s.conn().is_none());
                    if away {
                        self.end_session(key, Reason::ResumeWindowExpired);
                    }
                }
                Deadline::TokenExpiry(key) => self.token_expired(now, key),
                Deadline::TokenGrace(key) => self.token_grace_over(now, key),
                Deadline::RemoteExpiry(remote) => self.remote_expired(now, remote),
                Deadline::Seat(ticket) => self.seat_answered(now, ticket, None),
                Deadline::PersistRetry(key) => self.persist_retry(key),
                Deadline::LogRefresh(key) => self.refresh_log(key),
            }
        }
    }

    /// Graceful shutdown: GoAway to every connection, then close them all; every session
    /// ends (this process is the only one that keeps them). New Hellos are refused.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let mut conns: Vec<ConnId> = self.connections.keys().copied().collect();
        conns.sort();
        for conn in conns {
            self.go_away_frame(conn);
            self.close_connection(now, conn, Reason::ServerShutdown);
        }
        for _ in 0..self.sessions.len() {
            self.event(HubEvent::SessionEnded {
                reason: Reason::ServerShutdown,
            });
        }
        self.sessions.clear();
        self.durable_keys.clear();
        self.persist_due.clear();
        self.by_peer_id.clear();
        self.by_resume_token.clear();
        self.by_identity.clear();
        self.rooms.clear();
        self.deadlines.clear();
        self.acks_due.clear();
        self.gauges = Gauges::default();
    }

    // ----------------------------------------------------------------------------------------
    // Rules every request goes through
    // ----------------------------------------------------------------------------------------

    /// Client -> gateway exactly once, in order: true if the frame is to be processed now.
    /// A duplicate (seq already processed) is skipped, a frame that skips a seq is refused;
    /// either way the client learns where the gateway stands from the next Ack.
    fn numbered(&mut self, key: SessionKey, id: u64, seq: u64) -> bool {
        if seq == 0 {
            return true; // Not numbered: at most once.
        }
        let Some(session) = self.sessions.get_mut(&key) else {
            return false;
        };
        let expected = session.client_seq + 1;
        if seq < expected {
            self.ack_due(key);
            return false;
        }
        if seq > expected {
            let message = format!(
                "frame seq {seq} skips {expected}: resend the numbered frames from {expected} in order"
            );
            self.reply_error(key, id, ErrorCode::InvalidArgument, message);
            return false;
        }
        session.client_seq = seq;
        self.ack_due(key);
        true
    }

    /// While the session's join waits for its room's home gateway, its requests wait too
    /// (Ping, Ack, Bye and Suspend do not). True if the frame was parked.
    fn park(&mut self, now: Instant, conn: ConnId, key: SessionKey, frame: &ClientFrame) -> bool {
        use client_frame::Msg;
        if matches!(
            frame.msg,
            None | Some(Msg::Ping(_) | Msg::Ack(_) | Msg::Bye(_) | Msg::Suspend(_))
        ) {
            return false;
        }
        let Some(parked) = self.sessions.get_mut(&key).and_then(|s| s.parked.as_mut()) else {
            return false;
        };
        if parked.len() >= seats::MAX_PARKED {
            tracing::warn!(%conn, "requests pile up while a join waits: closing");
            self.close_connection(now, conn, Reason::SlowConsumer);
        } else {
            parked.push_back(frame.clone());
        }
        true
    }

    /// The session's rate limit; a refused frame gets RATE_LIMITED and is not processed.
    fn within_rate(&mut self, now: Instant, key: SessionKey, id: u64, signal: bool) -> bool {
        let Some(session) = self.sessions.get_mut(&key) else {
            return false;
        };
        if session.limiter.try_take(now) {
            return true;
        }
        if signal {
            self.event(HubEvent::SignalRefused {
                reason: ErrorCode::RateLimited,
            });
        }
        let limits = &self.config.limits;
        let message = format!(
            "more than {} requests per second (burst {}); this frame was not processed",
            limits.requests_per_sec, limits.request_burst
        );
        self.reply_error(key, id, ErrorCode::RateLimited, message);
        false
    }

    fn event(&mut self, event: HubEvent) {
        self.outputs.push_back(Output::Event(event));
    }
}

use super::Transport;

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("connections", &self.connections.len())
            .field("sessions", &self.sessions.len())
            .field("rooms", &self.rooms.len())
            .field("deadlines", &self.deadlines.len())
            .field("gauges", &self.gauges)
            .finish()
    }
}

#[cfg(test)]
mod tests;
