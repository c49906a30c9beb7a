//! The `hub` target: a seeded [`Hub`] on a fake clock, driven by [`Op`]s from several
//! connections, with every output checked against a model of what the clients have seen.
//!
//! The one place where an operation becomes a hub input is [`Harness::input_for`] (what the
//! client sends, and with authentication what the runtime established about its token) plus
//! [`feed`] (the call into the hub): a new hub input is one more [`Input`] variant and one
//! more arm there.
//!
//! Invariants checked after every step (besides "no panic"; docs/fuzzing.md has the list):
//! - per connection, the numbered ServerFrame seqs are strictly increasing and without holes,
//!   starting at 1 for a new session and at `Hello.last_seq + 1` after a resume by token
//!   (after a take-over by identity, wherever the backlog starts); a hole is allowed only over
//!   seqs the client itself acknowledged (an Ack or `Hello.last_seq`);
//! - a seq sent again (a replay) carries the same frame as the first time;
//! - a Signal, PeerJoined, PeerState or PeerLeft about room R reaches only a session that is
//!   in R, as the session's own stream of Joined/Left says; a resumed Welcome's rooms agree
//!   with that stream once the replay is through; nothing is about the session itself;
//! - Acks (and `Welcome.last_client_seq`) never exceed the numbered frames the client sent
//!   (1..=n all sent) and never go back (but to 0 after a take-over by identity); an Error
//!   about a numbered frame never arrives after an Ack that covers it on the same connection;
//! - replies (`in_reply_to`) answer a frame of the same session or connection;
//! - `Output::Close` at most once per connection, nothing for a connection after its Close or
//!   after the runtime reported it lost, nothing for a connection never opened; checkpoints
//!   increase; the pending-Hello limit closes exactly the connections it must;
//! - Welcome: once per connection, to the Hello's id, never after shutdown; `resumed` only
//!   for the holder of the session's resume token or its identity; no new session for the
//!   token of a live session, an identity that has one, or beyond `max_sessions`;
//! - the gauges, the backend views (`sessions()`, `rooms()`) and the connection count in
//!   `Hub`'s Debug equal the model; sessions started minus ended equals the live sessions;
//!   the resume window and the Hello deadline end what they must, exactly on time;
//!   `disconnect` ends exactly the live sessions it targets; `poll_timeout` is in the future
//!   after `handle_timeout`;
//! - at most [`MAX_OUTPUTS_PER_STEP`] outputs per step.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use signalgate::core::Transport;
use signalgate::core::codec::FrameProblem;
use signalgate::core::hub::{ConnId, DisconnectTarget, Hub, HubConfig, HubEvent, Limits, Output};
use signalgate::core::identity::{Credentials, Grants, Identity, Profile, RoomGrant, Verified};
use signalgate::core::ids::SeededEntropy;
use signalgate::proto::{
    self, Ack, ClientFrame, ErrorCode, Hello, IceCandidate, Join, Leave, Ping, Reason, Refresh,
    ServerFrame, SessionDescription, Signal, client_frame, server_frame, signal,
};

use crate::ops::{
    AckPick, AttemptPick, CredPick, MsgPick, Op, PayloadPick, ProblemPick, SeqPick, Setup,
};

/// Room names: four valid ones, then invalid ones (empty, a space, too long).
pub const ROOMS: [&str; 7] = [
    "a",
    "b",
    "lobby.1",
    "team:x-y_z",
    "",
    "bad room",
    "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr",
];
const VALID_ROOMS: usize = 4;

/// Identities (`sub`) of verified tokens.
pub const SUBS: [&str; 3] = ["alice", "bob", "carol"];

/// An identity as the model knows it: `SUBS` index and whether it has device "d1".
type Ident = (usize, bool);

fn identity(ident: Ident) -> Identity {
    Identity {
        sub: SUBS[ident.0].to_string(),
        device: ident.1.then(|| "d1".to_string()),
    }
}

/// Bound on the outputs of one step (a step is one input plus the checkpoints it answers).
pub const MAX_OUTPUTS_PER_STEP: usize = 20_000;

/// A connection id the hub never saw.
const UNKNOWN_CONN: ConnId = ConnId(1 << 40);

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn tracing_enabled() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("SIGNALGATE_FUZZ_TRACE").is_some())
}

/// The hub's configuration for a setup: always within what `src/config.rs` accepts.
pub fn config(setup: &Setup) -> HubConfig {
    let defaults = Limits::default();
    let limits = Limits {
        max_frame_bytes: defaults.max_frame_bytes,
        max_rooms_per_session: 1 + usize::from(setup.rooms_per_session % 4),
        max_peers_per_room: 2 + usize::from(setup.peers_per_room % 4),
        requests_per_sec: 1 + u32::from(setup.rate % 100),
        request_burst: 1 + u32::from(setup.burst % 100),
        backlog_frames: 1 + usize::from(setup.backlog_frames % 64),
        backlog_bytes: 1024 * (1 + usize::from(setup.backlog_kib % 64)),
        max_protocol_errors: u32::from(setup.protocol_errors % 17),
        // outbound_queue / 2, outbound_queue >= 16.
        send_window_frames: 8 + usize::from(setup.window % 25),
        send_window_bytes: defaults.send_window_bytes,
        max_sessions: if setup.max_sessions < 128 {
            1 + usize::from(setup.max_sessions % 8)
        } else {
            defaults.max_sessions
        },
        max_pending_hellos: if setup.max_pending_hellos < 128 {
            1 + usize::from(setup.max_pending_hellos % 8)
        } else {
            defaults.max_pending_hellos
        },
    };
    HubConfig {
        resume_window: Duration::from_secs(u64::from(setup.resume_window_s % 61)),
        hello_timeout: Duration::from_millis(100 + 1000 * u64::from(setup.hello_timeout % 21)),
        authentication: setup.auth & 1 == 1,
        token_grace: Duration::from_secs(u64::from(setup.token_grace_s % 31)),
        limits,
        ..HubConfig::default()
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let (setup, ops) = crate::ops::decode(data);
    let mut harness = Harness::new(&setup);
    if tracing_enabled() {
        eprintln!("setup {setup:?}");
    }
    for (i, op) in ops.iter().enumerate() {
        harness.step = i;
        if tracing_enabled() {
            eprintln!("--- op {i}: {op:?}");
        }
        harness.step(op);
    }
}

/// What the hub is told: the one vocabulary between operations and hub calls.
#[derive(Debug)]
pub enum Input {
    Opened {
        conn: ConnId,
        transport: Transport,
    },
    Frame {
        conn: ConnId,
        frame: ClientFrame,
    },
    /// A Hello with what the runtime established about its token (authentication on).
    Hello {
        conn: ConnId,
        id: u64,
        hello: Hello,
        credentials: Credentials,
    },
    Refresh {
        conn: ConnId,
        id: u64,
        credentials: Credentials,
    },
    Rejected {
        conn: ConnId,
        problem: FrameProblem,
    },
    Drained {
        conn: ConnId,
        mark: u64,
    },
    Lost {
        conn: ConnId,
        reason: Reason,
        silent_for: Duration,
    },
    Overflow {
        conn: ConnId,
    },
    /// The clock moved: `handle_timeout`.
    Timeout,
    Shutdown,
    /// The backend API's disconnect.
    Disconnect {
        target: DisconnectTarget,
    },
}

/// The single place that calls the hub's inputs. Returns what `disconnect` returns.
pub fn feed(hub: &mut Hub, now: Instant, input: Input) -> Option<usize> {
    match input {
        Input::Opened { conn, transport } => hub.connection_opened(now, conn, transport),
        Input::Frame { conn, frame } => hub.frame_received(now, conn, frame),
        Input::Hello {
            conn,
            id,
            hello,
            credentials,
        } => hub.hello_received(now, conn, id, hello, credentials),
        Input::Refresh {
            conn,
            id,
            credentials,
        } => hub.refresh_received(now, conn, id, credentials),
        Input::Rejected { conn, problem } => hub.frame_rejected(now, conn, problem),
        Input::Drained { conn, mark } => hub.connection_drained(now, conn, mark),
        Input::Lost {
            conn,
            reason,
            silent_for,
        } => hub.connection_lost(now, conn, reason, silent_for),
        Input::Overflow { conn } => hub.outbound_overflow(now, conn),
        Input::Timeout => hub.handle_timeout(now),
        Input::Shutdown => hub.shutdown(now),
        Input::Disconnect { target } => return Some(hub.disconnect(now, &target, "fuzz")),
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hello,
    Refresh,
    Join,
    Leave,
    Signal,
    Ping,
    Ack,
    Bye,
    Suspend,
}

/// A client frame the harness sent.
#[derive(Debug)]
struct Sent {
    conn: Option<usize>,
    /// The session its connection carried when it was sent (as the model knows it).
    session: Option<usize>,
    kind: Kind,
    /// Its ClientFrame.seq if it is a numbered kind sent within a session, else 0.
    numbered: u64,
    ping: Option<Bytes>,
    ack_seq: u64,
}

#[derive(Debug)]
struct HelloSent {
    id: u64,
    /// The session whose token it carries (`None`: no token, or one never issued).
    token_session: Option<usize>,
    with_token: bool,
    last_seq: u64,
    /// The verified identity it came with (authentication on).
    identity: Option<Ident>,
}

#[derive(Debug)]
struct ConnModel {
    id: ConnId,
    transport: Transport,
    opened_ms: u64,
    /// Closed by the hub (Output::Close) or reported lost by the runtime.
    closed: bool,
    lost: bool,
    stalled: bool,
    /// Set by its Welcome.
    session: Option<usize>,
    welcomed: bool,
    hello: Option<HelloSent>,
    marks: Vec<u64>,
    /// Numbered seqs on this connection: the last one, the first one expected, the end of the
    /// replay its Welcome announced.
    last_seq: u64,
    first_seq: u64,
    replay_until: u64,
    /// Highest client seq this connection was told of (Ack, Welcome.last_client_seq).
    told: u64,
}

impl ConnModel {
    fn live_session(&self) -> Option<usize> {
        if self.closed { None } else { self.session }
    }
}

#[derive(Debug)]
struct SessionModel {
    peer_id: String,
    token: String,
    identity: Option<Ident>,
    transport: Transport,
    conn: Option<usize>,
    /// Known to be gone (Bye, resume gap, resume window, shutdown).
    ended: bool,
    away_since_ms: Option<u64>,
    /// Every numbered frame seen, by seq (replays must repeat them).
    frames: HashMap<u64, Arc<ServerFrame>>,
    max_seq: u64,
    /// Rooms as the session's own stream says (Joined/Left); unknown after frames the client
    /// skipped by acknowledging them unseen.
    rooms: BTreeSet<String>,
    rooms_known: bool,
    /// A resumed Welcome's rooms, to compare once the stream reaches its replay end.
    rooms_check: Option<(u64, BTreeSet<String>)>,
    /// The client's highest Hello.attempt for this session.
    attempt: u64,
    /// What the client numbers next, and every numbered seq it sent.
    client_next: u64,
    client_sent: BTreeSet<u64>,
    /// Highest client seq told (Ack, Welcome.last_client_seq), across connections.
    told: u64,
    /// What the client claimed to have processed: Acks (by frame id) and resumes' last_seq.
    ack_claims: Vec<(u64, u64)>,
    refused_acks: HashSet<u64>,
    resume_claim: u64,
}

impl SessionModel {
    fn claim(&self) -> u64 {
        self.ack_claims
            .iter()
            .filter(|(id, _)| !self.refused_acks.contains(id))
            .map(|(_, seq)| *seq)
            .max()
            .unwrap_or(0)
            .max(self.resume_claim)
    }

    /// Largest n such that the client sent every numbered seq 1..=n.
    fn contiguous_sent(&self) -> u64 {
        let mut n = 0;
        for &s in &self.client_sent {
            if s == n + 1 {
                n = s;
            } else if s > n + 1 {
                break;
            }
        }
        n
    }
}

pub struct Harness {
    hub: Hub,
    config: HubConfig,
    now_ms: u64,
    conns: Vec<ConnModel>,
    sessions: Vec<SessionModel>,
    by_peer: HashMap<String, usize>,
    /// Every resume token seen in a Welcome, with its session, in order.
    tokens: Vec<(String, usize)>,
    sent: HashMap<u64, Sent>,
    next_id: u64,
    shut_down: bool,
    auth: bool,
    /// Sessions a Disconnect in progress must end, and how many it must report.
    disconnecting: Vec<usize>,
    started: usize,
    ended_events: usize,
    step_outputs: usize,
    step: usize,
}

macro_rules! violation {
    ($h:expr, $($arg:tt)*) => {
        panic!("invariant violated at op {}: {}", $h.step, format!($($arg)*))
    };
}

impl Harness {
    pub fn new(setup: &Setup) -> Self {
        let config = config(setup);
        let entropy = SeededEntropy::new(u64::from(setup.seed));
        Self {
            hub: Hub::with_entropy(config.clone(), Box::new(entropy)),
            auth: config.authentication,
            config,
            now_ms: 0,
            conns: Vec::new(),
            sessions: Vec::new(),
            by_peer: HashMap::new(),
            tokens: Vec::new(),
            sent: HashMap::new(),
            next_id: 1,
            shut_down: false,
            disconnecting: Vec::new(),
            started: 0,
            ended_events: 0,
            step_outputs: 0,
            step: 0,
        }
    }

    fn now(&self) -> Instant {
        base() + Duration::from_millis(self.now_ms)
    }

    pub fn step(&mut self, op: &Op) {
        self.step_outputs = 0;
        let advanced = matches!(op, Op::Advance { .. });
        // A connection opened while `max_pending_hellos` wait for Hello is closed at once.
        let full = matches!(op, Op::Open { .. })
            .then(|| self.pending_hellos() >= self.config.limits.max_pending_hellos);
        if let Some(input) = self.input_for(op) {
            if tracing_enabled() {
                eprintln!("  input {input:?}");
            }
            let shutdown = matches!(input, Input::Shutdown);
            let now = self.now();
            let disconnected = feed(&mut self.hub, now, input);
            if shutdown {
                self.shut_down = true;
            }
            self.drain();
            if let Some(n) = disconnected {
                let expected = std::mem::take(&mut self.disconnecting);
                if n != expected.len() {
                    violation!(
                        self,
                        "disconnect ended {n} sessions, {} live ones match",
                        expected.len()
                    );
                }
                for s in expected {
                    let session = &mut self.sessions[s];
                    if session.conn.is_some() {
                        violation!(
                            self,
                            "disconnected session {} still has a connection",
                            session.peer_id
                        );
                    }
                    session.ended = true;
                    session.away_since_ms = None;
                }
            }
            if let Some(full) = full {
                let c = self.conns.last().expect("just opened");
                if c.closed != full {
                    violation!(
                        self,
                        "{} opened with {} connections awaiting Hello (limit {}): closed {}",
                        c.id,
                        self.pending_hellos(),
                        self.config.limits.max_pending_hellos,
                        c.closed
                    );
                }
            }
            if shutdown {
                for s in &mut self.sessions {
                    s.ended = true;
                    s.conn = None;
                    s.away_since_ms = None;
                }
            }
            if advanced {
                self.expire();
                if let Some(next) = self.hub.poll_timeout()
                    && next <= self.now()
                {
                    violation!(
                        self,
                        "poll_timeout {next:?} not after now after handle_timeout"
                    );
                }
            }
        }
        // Un-stalling confirms the latest checkpoint (a writer that caught up).
        if let Op::Stall {
            conn,
            stalled: false,
        } = op
            && let Some(ci) = self.pick_conn(*conn)
            && let Some(&mark) = self.conns[ci].marks.last()
        {
            let id = self.conns[ci].id;
            let now = self.now();
            feed(&mut self.hub, now, Input::Drained { conn: id, mark });
            self.drain();
        }
        self.check_state();
    }

    /// Connections open without a session (what `max_pending_hellos` bounds).
    fn pending_hellos(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| !c.closed && c.session.is_none())
            .count()
    }

    fn live_sessions(&self) -> usize {
        self.sessions.iter().filter(|s| !s.ended).count()
    }

    /// An opened connection by index, `None` for "one the hub never saw" (255) or none yet.
    fn pick_conn(&self, pick: u8) -> Option<usize> {
        if pick == 255 || self.conns.is_empty() {
            None
        } else {
            Some(usize::from(pick) % self.conns.len())
        }
    }

    fn conn_id(&self, ci: Option<usize>) -> ConnId {
        ci.map_or(UNKNOWN_CONN, |i| self.conns[i].id)
    }

    /// The operation as a hub input, and what the client side remembers of it.
    fn input_for(&mut self, op: &Op) -> Option<Input> {
        Some(match op {
            Op::Open { webtransport } => {
                let transport = if *webtransport {
                    Transport::WebTransport
                } else {
                    Transport::WebSocket
                };
                let conn = ConnId(self.conns.len() as u64 + 1);
                self.conns.push(ConnModel {
                    id: conn,
                    transport,
                    opened_ms: self.now_ms,
                    closed: false,
                    lost: false,
                    stalled: false,
                    session: None,
                    welcomed: false,
                    hello: None,
                    marks: Vec::new(),
                    last_seq: 0,
                    first_seq: 1,
                    replay_until: 0,
                    told: 0,
                });
                Input::Opened { conn, transport }
            }
            Op::Send { conn, seq, msg } => {
                let ci = self.pick_conn(*conn);
                let (frame, credentials) = self.client_frame(ci, seq, msg);
                let conn = self.conn_id(ci);
                // As the runtime does: with authentication on, Hello and Refresh go with what
                // it established about their token.
                match (credentials, frame.msg) {
                    (Some(credentials), Some(client_frame::Msg::Hello(hello))) => Input::Hello {
                        conn,
                        id: frame.id,
                        hello,
                        credentials,
                    },
                    (Some(credentials), Some(client_frame::Msg::Refresh(_))) => Input::Refresh {
                        conn,
                        id: frame.id,
                        credentials,
                    },
                    (_, msg) => Input::Frame {
                        conn,
                        frame: ClientFrame { msg, ..frame },
                    },
                }
            }
            Op::Rejected { conn, problem } => {
                let problem = match problem {
                    ProblemPick::Malformed => FrameProblem::Malformed {
                        detail: "fuzz".into(),
                    },
                    ProblemPick::TooLarge => FrameProblem::TooLarge {
                        size: self.config.limits.max_frame_bytes + 1,
                        max: self.config.limits.max_frame_bytes,
                    },
                    ProblemPick::Unsupported => FrameProblem::Unsupported { what: "text" },
                    ProblemPick::BrokenFraming => FrameProblem::BrokenFraming {
                        detail: "fuzz".into(),
                    },
                };
                Input::Rejected {
                    conn: self.conn_id(self.pick_conn(*conn)),
                    problem,
                }
            }
            Op::Drained { conn, mark } => {
                let ci = self.pick_conn(*conn)?;
                let marks = &self.conns[ci].marks;
                if marks.is_empty() {
                    return None;
                }
                let mark = marks[usize::from(*mark) % marks.len()];
                Input::Drained {
                    conn: self.conns[ci].id,
                    mark,
                }
            }
            Op::Stall { conn, stalled } => {
                let ci = self.pick_conn(*conn)?;
                self.conns[ci].stalled = *stalled;
                return None;
            }
            Op::Lost {
                conn,
                reason,
                silent_ms,
            } => {
                let ci = self.pick_conn(*conn);
                let reason =
                    Reason::try_from(i32::from(*reason % 16)).unwrap_or(Reason::Unspecified);
                if let Some(ci) = ci
                    && !self.conns[ci].closed
                {
                    let c = &mut self.conns[ci];
                    c.closed = true;
                    c.lost = true;
                    if let Some(s) = c.session {
                        self.went_away(s, ci);
                    }
                }
                Input::Lost {
                    conn: self.conn_id(ci),
                    reason,
                    silent_for: Duration::from_millis(u64::from(*silent_ms)),
                }
            }
            Op::Overflow { conn } => Input::Overflow {
                conn: self.conn_id(self.pick_conn(*conn)),
            },
            Op::Advance { ms } => {
                let ms = if ms & 0x8000 != 0 {
                    u64::from(ms & 0x7fff) * 10
                } else {
                    u64::from(*ms)
                };
                self.now_ms += ms;
                Input::Timeout
            }
            Op::Shutdown => Input::Shutdown,
            Op::Disconnect {
                target,
                by_identity,
            } => {
                let target = if *by_identity {
                    let sub = usize::from(*target) % SUBS.len();
                    self.disconnecting = (0..self.sessions.len())
                        .filter(|&s| {
                            !self.sessions[s].ended
                                && self.sessions[s].identity.is_some_and(|i| i.0 == sub)
                        })
                        .collect();
                    DisconnectTarget::Identity(SUBS[sub].to_string())
                } else if self.sessions.is_empty() {
                    DisconnectTarget::Peer("p-unknown".into())
                } else {
                    let s = usize::from(*target) % self.sessions.len();
                    if !self.sessions[s].ended {
                        self.disconnecting = vec![s];
                    }
                    DisconnectTarget::Peer(self.sessions[s].peer_id.clone())
                };
                Input::Disconnect { target }
            }
        })
    }

    /// What the runtime established about a token (`None`: the frame goes as it is).
    fn credentials(&self, pick: &CredPick) -> (Option<Credentials>, Option<Ident>) {
        if !self.auth {
            return (None, None);
        }
        match pick {
            CredPick::Verified {
                identity: who,
                device,
                grants,
                signal,
                expires_s,
            } => {
                let ident = (usize::from(*who) % SUBS.len(), *device);
                let rooms = match grants % 5 {
                    0 => vec![RoomGrant::Any],
                    1 => vec![RoomGrant::Exact("a".into())],
                    2 => vec![RoomGrant::Prefix("lobby".into())],
                    3 => vec![
                        RoomGrant::Exact("b".into()),
                        RoomGrant::Prefix("team:".into()),
                    ],
                    _ => Vec::new(),
                };
                let verified = Verified {
                    identity: identity(ident),
                    grants: Grants {
                        rooms,
                        signal: *signal,
                    },
                    profile: Profile {
                        name: format!("{} {}", SUBS[ident.0], u8::from(*device)),
                        metadata: String::new(),
                    },
                    expires_at: self.now() + Duration::from_secs(u64::from(*expires_s % 121)),
                };
                (Some(Credentials::Verified(verified)), Some(ident))
            }
            CredPick::Refused(code) => {
                let code = ErrorCode::try_from(20 + i32::from(*code % 8))
                    .unwrap_or(ErrorCode::TokenMalformed);
                let message = "refused by the fuzzer".to_string();
                (Some(Credentials::Refused { code, message }), None)
            }
            CredPick::Unverified => (None, None),
        }
    }

    /// Builds the frame a client sends, and remembers it.
    fn client_frame(
        &mut self,
        ci: Option<usize>,
        seq: &SeqPick,
        msg: &MsgPick,
    ) -> (ClientFrame, Option<Credentials>) {
        let session = ci.and_then(|i| self.conns[i].live_session());
        let id = self.next_id;
        self.next_id += 1;
        let max_seq = session.map_or(0, |s| self.sessions[s].max_seq);
        let relative = |pick: &AckPick, latest: u64| match pick {
            AckPick::Latest => latest,
            AckPick::Back(n) => latest.saturating_sub(u64::from(*n)),
            AckPick::Zero => 0,
            AckPick::Ahead(n) => latest.saturating_add(u64::from(*n)),
            AckPick::Wild(v) => *v,
        };
        let mut sent = Sent {
            conn: ci,
            session,
            kind: Kind::Hello,
            numbered: 0,
            ping: None,
            ack_seq: 0,
        };
        use client_frame::Msg;
        let mut credentials = None;
        let msg = match msg {
            MsgPick::Hello {
                resume,
                last_seq,
                attempt,
                creds,
            } => {
                let (creds, ident) = self.credentials(creds);
                let verified = matches!(creds, Some(Credentials::Verified(_)));
                credentials = creds;
                let (token, token_session) = match *resume {
                    0 => (String::new(), None),
                    _ if self.tokens.is_empty() => (String::new(), None),
                    255 => ("not-a-token-the-hub-issued".to_string(), None),
                    r => {
                        let (token, s) = &self.tokens[usize::from(r - 1) % self.tokens.len()];
                        (token.clone(), Some(*s))
                    }
                };
                let latest = token_session.map_or(0, |s| self.sessions[s].max_seq);
                let last_seq = relative(last_seq, latest);
                let current = token_session.map_or(0, |s| self.sessions[s].attempt);
                let attempt = match attempt {
                    AttemptPick::Next => current.saturating_add(1),
                    AttemptPick::Same => current,
                    AttemptPick::Zero => 0,
                    AttemptPick::Wild(v) => *v,
                };
                if let Some(s) = token_session {
                    let s = &mut self.sessions[s];
                    s.attempt = s.attempt.max(attempt);
                }
                if let Some(ci) = ci
                    && !self.conns[ci].closed
                    && !self.conns[ci].welcomed
                {
                    self.conns[ci].hello = Some(HelloSent {
                        id,
                        token_session,
                        with_token: !token.is_empty(),
                        last_seq,
                        identity: if verified { ident } else { None },
                    });
                }
                // What an honest client was acknowledged (a durable gateway's recovery reads
                // it; this hub is not durable and must ignore it).
                let acked_client_seq = token_session.map_or(0, |s| self.sessions[s].told);
                Msg::Hello(Hello {
                    token: String::new(),
                    resume_token: token,
                    last_seq,
                    attempt,
                    client: "fuzz".into(),
                    acked_client_seq,
                })
            }
            MsgPick::Refresh { creds } => {
                sent.kind = Kind::Refresh;
                credentials = self.credentials(creds).0;
                Msg::Refresh(Refresh {
                    token: "a.b.c".into(),
                })
            }
            MsgPick::Join { room } => {
                sent.kind = Kind::Join;
                Msg::Join(Join {
                    room: ROOMS[usize::from(*room) % ROOMS.len()].into(),
                })
            }
            MsgPick::Leave { room } => {
                sent.kind = Kind::Leave;
                Msg::Leave(Leave {
                    room: ROOMS[usize::from(*room) % ROOMS.len()].into(),
                })
            }
            MsgPick::Signal { room, to, payload } => {
                sent.kind = Kind::Signal;
                let to = match *to {
                    250 => session.map_or(String::new(), |s| self.sessions[s].peer_id.clone()),
                    251 => String::new(),
                    252 => "p".repeat(65),
                    253 => "p-unknown".into(),
                    _ if self.sessions.is_empty() => "p-unknown".into(),
                    t => self.sessions[usize::from(t) % self.sessions.len()]
                        .peer_id
                        .clone(),
                };
                let payload = match payload {
                    PayloadPick::Description(t) => {
                        let r#type = match t % 6 {
                            5 => 99,
                            t => i32::from(t),
                        };
                        Some(signal::Payload::Description(SessionDescription {
                            r#type,
                            sdp: "v=0".into(),
                        }))
                    }
                    PayloadPick::Candidate(with_mid) => {
                        Some(signal::Payload::Candidate(IceCandidate {
                            candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
                            sdp_mid: with_mid.then(|| "0".into()),
                            sdp_m_line_index: with_mid.then_some(0),
                            username_fragment: None,
                        }))
                    }
                    PayloadPick::Data(n) => Some(signal::Payload::Data(Bytes::from(vec![
                        0xab;
                        usize::from(*n)
                    ]))),
                    PayloadPick::Empty => None,
                };
                Msg::Signal(Signal {
                    room: ROOMS[usize::from(*room) % ROOMS.len()].into(),
                    to,
                    from: "forged".into(),
                    payload,
                })
            }
            MsgPick::Ping { len } => {
                sent.kind = Kind::Ping;
                let payload = Bytes::from(vec![*len; usize::from(*len)]);
                sent.ping = Some(payload.clone());
                Msg::Ping(Ping { payload })
            }
            MsgPick::Ack { seq } => {
                sent.kind = Kind::Ack;
                let seq = relative(seq, max_seq);
                sent.ack_seq = seq;
                if let Some(s) = session {
                    self.sessions[s].ack_claims.push((id, seq));
                }
                Msg::Ack(Ack { seq })
            }
            MsgPick::Bye => {
                sent.kind = Kind::Bye;
                Msg::Bye(proto::Bye {})
            }
            MsgPick::Suspend => {
                sent.kind = Kind::Suspend;
                Msg::Suspend(proto::Suspend {})
            }
        };
        let next = session.map_or(1, |s| self.sessions[s].client_next);
        let seq = match seq {
            SeqPick::Unnumbered => 0,
            SeqPick::Next => next,
            SeqPick::Repeat => next.saturating_sub(1),
            SeqPick::Skip => next.saturating_add(1),
            SeqPick::Wild(v) => u64::from(*v),
        };
        if matches!(sent.kind, Kind::Join | Kind::Leave | Kind::Signal)
            && seq > 0
            && let Some(s) = session
        {
            sent.numbered = seq;
            let s = &mut self.sessions[s];
            s.client_sent.insert(seq);
            if seq == s.client_next {
                s.client_next += 1;
            }
        }
        self.sent.insert(id, sent);
        let frame = ClientFrame {
            id,
            seq,
            msg: Some(msg),
        };
        (frame, credentials)
    }

    /// The session lost its connection (or it was closed): away from now on.
    fn went_away(&mut self, s: usize, ci: usize) {
        let session = &mut self.sessions[s];
        if session.conn == Some(ci) {
            session.conn = None;
            if !session.ended {
                session.away_since_ms = Some(self.now_ms);
            }
        }
    }

    /// Takes every output, answering checkpoints of connections that are not stalled.
    fn drain(&mut self) {
        while let Some(output) = self.hub.poll_output() {
            self.step_outputs += 1;
            if self.step_outputs > MAX_OUTPUTS_PER_STEP {
                violation!(self, "more than {MAX_OUTPUTS_PER_STEP} outputs in one step");
            }
            if tracing_enabled() {
                eprintln!("  out {output:?}");
            }
            match output {
                Output::Send { conn, frame } => self.on_send(conn, frame),
                Output::Checkpoint { conn, mark } => {
                    let ci = self.known_open(conn, "Checkpoint");
                    let c = &mut self.conns[ci];
                    if c.marks.last().is_some_and(|&last| mark <= last) {
                        violation!(self, "checkpoint {mark} of {conn} does not increase");
                    }
                    c.marks.push(mark);
                    if !c.stalled {
                        let now = self.now();
                        feed(&mut self.hub, now, Input::Drained { conn, mark });
                    }
                }
                Output::Close { conn, reason } => {
                    let ci = self.known_open(conn, "Close");
                    self.conns[ci].closed = true;
                    if let Some(s) = self.conns[ci].session {
                        match reason {
                            Reason::Bye | Reason::ResumeGap | Reason::Disconnected => {
                                self.sessions[s].ended = true;
                                self.sessions[s].away_since_ms = None;
                                if self.sessions[s].conn == Some(ci) {
                                    self.sessions[s].conn = None;
                                }
                            }
                            _ => self.went_away(s, ci),
                        }
                    }
                }
                Output::Event(event) => match event {
                    HubEvent::SessionStarted { .. } => self.started += 1,
                    HubEvent::SessionEnded { .. } => {
                        self.ended_events += 1;
                        if self.ended_events > self.started {
                            violation!(self, "more sessions ended than started");
                        }
                    }
                    _ => {}
                },
                Output::ToNode { .. }
                | Output::ToCluster { .. }
                | Output::Persist { .. }
                | Output::ReadLog { .. } => {
                    violation!(self, "a single gateway sent something to a cluster");
                }
            }
        }
    }

    /// The connection's index; it must have been opened, not closed and not reported lost.
    fn known_open(&self, conn: ConnId, what: &str) -> usize {
        let Some(ci) = (conn.0 as usize)
            .checked_sub(1)
            .filter(|&i| i < self.conns.len())
        else {
            violation!(self, "{what} for {conn}, which was never opened");
        };
        let c = &self.conns[ci];
        if c.lost {
            violation!(self, "{what} for {conn} after the runtime reported it lost");
        }
        if c.closed {
            violation!(self, "{what} for {conn} after its Close");
        }
        ci
    }

    fn on_send(&mut self, conn: ConnId, frame: Arc<ServerFrame>) {
        let ci = self.known_open(conn, "Send");
        let Some(msg) = &frame.msg else {
            violation!(self, "a ServerFrame without a message to {conn}");
        };
        use server_frame::Msg;
        // Replies answer a frame of this connection or of its session.
        if frame.in_reply_to != 0 {
            let Some(sent) = self.sent.get(&frame.in_reply_to) else {
                violation!(
                    self,
                    "reply to frame id {} never sent: {frame:?}",
                    frame.in_reply_to
                );
            };
            let same_conn = sent.conn == Some(ci);
            let same_session = sent.session.is_some() && sent.session == self.conns[ci].session;
            if !same_conn && !same_session {
                violation!(
                    self,
                    "{conn} got a reply to another client's frame: {frame:?}"
                );
            }
        }
        if let Msg::Error(e) = msg
            && e.in_reply_to != frame.in_reply_to
        {
            violation!(
                self,
                "Error.in_reply_to disagrees with the frame's: {frame:?}"
            );
        }
        if frame.seq == 0 {
            return self.on_unnumbered(ci, &frame);
        }
        let Some(s) = self.conns[ci].session else {
            violation!(
                self,
                "numbered frame to {conn} before any Welcome: {frame:?}"
            );
        };
        if matches!(
            msg,
            Msg::Welcome(_) | Msg::Pong(_) | Msg::Ack(_) | Msg::GoAway(_)
        ) {
            violation!(self, "numbered frame of an unnumbered kind: {frame:?}");
        }
        let seq = frame.seq;
        let c = &self.conns[ci];
        let expected = match (c.last_seq, c.first_seq) {
            (0, 0) => seq, // after a take-over by identity: wherever the backlog starts
            (0, first) => first,
            (last, _) => last + 1,
        };
        if seq < expected {
            violation!(
                self,
                "seq {seq} to {conn} after {}: not increasing",
                c.last_seq
            );
        }
        if seq > expected {
            let claim = self.sessions[s].claim();
            if seq - 1 > claim {
                violation!(
                    self,
                    "seq {seq} to {conn} skips {expected}..{} which the client never acknowledged (claims up to {claim})",
                    seq - 1
                );
            }
            let session = &mut self.sessions[s];
            if (expected..seq).any(|q| !session.frames.contains_key(&q)) {
                session.rooms_known = false;
            }
        }
        let replay = seq <= c.replay_until;
        let told = c.told;
        self.conns[ci].last_seq = seq;
        if let Some(first) = self.sessions[s].frames.get(&seq) {
            if **first != *frame {
                violation!(
                    self,
                    "seq {seq} sent again with other contents: {first:?} then {frame:?}"
                );
            }
            return;
        }
        // First time this seq is seen: the session's stream moves on.
        let session = &mut self.sessions[s];
        if seq != session.max_seq + 1 {
            session.rooms_known = false;
        }
        session.max_seq = session.max_seq.max(seq);
        session.frames.insert(seq, frame.clone());
        match msg {
            Msg::Joined(j) => {
                if j.peers
                    .iter()
                    .any(|p| p.peer_id == self.sessions[s].peer_id)
                {
                    violation!(self, "Joined lists the session itself: {frame:?}");
                }
                self.expect_reply_kind(&frame, Kind::Join);
                if self.member(s, &j.room) == Some(true) {
                    violation!(self, "Joined {:?} twice without Left: {frame:?}", j.room);
                }
            }
            Msg::Left(l) => {
                // In reply to Leave, or (in_reply_to 0) a room a refreshed token no longer
                // grants.
                if frame.in_reply_to != 0 || !self.auth {
                    self.expect_reply_kind(&frame, Kind::Leave);
                }
                if self.member(s, &l.room) == Some(false) {
                    violation!(self, "Left {:?} without Joined: {frame:?}", l.room);
                }
            }
            Msg::Signal(sig) => {
                if sig.to != self.sessions[s].peer_id {
                    violation!(
                        self,
                        "a Signal for {:?} delivered to {conn}: {frame:?}",
                        sig.to
                    );
                }
                if !self.by_peer.contains_key(&sig.from) {
                    violation!(
                        self,
                        "a Signal from an unknown peer {:?}: {frame:?}",
                        sig.from
                    );
                }
                self.check_about(s, &sig.room, &sig.from, &frame);
            }
            Msg::PeerJoined(p) => {
                let peer = p.peer.as_ref().map_or("", |p| p.peer_id.as_str());
                self.check_about(s, &p.room, peer, &frame);
            }
            Msg::PeerState(p) => self.check_about(s, &p.room, &p.peer_id, &frame),
            Msg::Refreshed(_) => self.expect_reply_kind(&frame, Kind::Refresh),
            Msg::PeerLeft(p) => self.check_about(s, &p.room, &p.peer_id, &frame),
            Msg::Error(e) => {
                // An Error about a numbered frame comes before any Ack that covers it.
                if let Some(sent) = self.sent.get(&e.in_reply_to) {
                    if !replay
                        && sent.numbered > 0
                        && sent.session == Some(s)
                        && told >= sent.numbered
                    {
                        violation!(
                            self,
                            "Error about numbered frame {} after an Ack/Welcome covering it ({told}) on {conn}: {frame:?}",
                            sent.numbered
                        );
                    }
                    if sent.kind == Kind::Ack && e.code() == ErrorCode::InvalidArgument {
                        self.sessions[s].refused_acks.insert(e.in_reply_to);
                    }
                }
            }
            _ => {}
        }
        let session = &mut self.sessions[s];
        match msg {
            Msg::Joined(j) => {
                session.rooms.insert(j.room.clone());
            }
            Msg::Left(l) => {
                session.rooms.remove(&l.room);
            }
            _ => {}
        }
        if let Some((until, rooms)) = &session.rooms_check
            && session.max_seq >= *until
        {
            if session.rooms_known && session.max_seq == *until && session.rooms != *rooms {
                violation!(
                    self,
                    "resumed Welcome said rooms {rooms:?}, the stream through its replay says {:?}",
                    session.rooms
                );
            }
            session.rooms_check = None;
        }
    }

    /// Whether the session is in `room` by its own stream; `None` when unknown.
    fn member(&self, s: usize, room: &str) -> Option<bool> {
        let session = &self.sessions[s];
        session.rooms_known.then(|| session.rooms.contains(room))
    }

    /// News or a signal about `peer` in `room`, to session `s`.
    fn check_about(&self, s: usize, room: &str, peer: &str, frame: &ServerFrame) {
        if peer == self.sessions[s].peer_id {
            violation!(self, "news about the session itself: {frame:?}");
        }
        if self.member(s, room) == Some(false) {
            violation!(
                self,
                "{frame:?} for room {room:?} to {}, which is not in it",
                self.sessions[s].peer_id
            );
        }
    }

    fn expect_reply_kind(&self, frame: &ServerFrame, kind: Kind) {
        match self.sent.get(&frame.in_reply_to) {
            Some(sent) if sent.kind == kind => {}
            _ => violation!(self, "{frame:?} does not answer a {kind:?}"),
        }
    }

    fn on_unnumbered(&mut self, ci: usize, frame: &Arc<ServerFrame>) {
        use server_frame::Msg;
        let conn = self.conns[ci].id;
        match frame.msg.as_ref().expect("checked") {
            Msg::Welcome(w) => self.on_welcome(ci, frame.in_reply_to, w),
            Msg::Pong(p) => {
                let Some(sent) = self.sent.get(&frame.in_reply_to) else {
                    violation!(self, "Pong without its Ping: {frame:?}");
                };
                if sent.kind != Kind::Ping || sent.conn != Some(ci) {
                    violation!(self, "Pong to {conn} answers no Ping of it: {frame:?}");
                }
                if sent.ping.as_ref() != Some(&p.payload) {
                    violation!(self, "Pong payload differs from the Ping's: {frame:?}");
                }
                if self.conns[ci].session.is_none() {
                    violation!(self, "Pong to {conn} before Welcome");
                }
            }
            Msg::Ack(a) => {
                if frame.in_reply_to != 0 {
                    violation!(self, "Ack with in_reply_to: {frame:?}");
                }
                let Some(s) = self.conns[ci].session else {
                    violation!(self, "Ack to {conn} before Welcome: {frame:?}");
                };
                let session = &mut self.sessions[s];
                let sent = session.contiguous_sent();
                if a.seq > sent {
                    violation!(
                        self,
                        "Ack {} to {conn}, but the client sent 1..={sent} only",
                        a.seq
                    );
                }
                if a.seq < session.told {
                    violation!(
                        self,
                        "Ack {} to {conn} goes back from {}",
                        a.seq,
                        session.told
                    );
                }
                session.told = a.seq;
                self.conns[ci].told = self.conns[ci].told.max(a.seq);
            }
            Msg::GoAway(_) => {
                if !self.shut_down {
                    violation!(self, "GoAway to {conn} without a shutdown");
                }
            }
            Msg::Error(e) => {
                if self.conns[ci].session.is_some()
                    && !matches!(e.code(), ErrorCode::Closing | ErrorCode::Disconnected)
                {
                    violation!(
                        self,
                        "unnumbered Error to {conn} that has a session: {frame:?}"
                    );
                }
                if e.code() == ErrorCode::Disconnected && self.disconnecting.is_empty() {
                    violation!(
                        self,
                        "DISCONNECTED to {conn} without a disconnect: {frame:?}"
                    );
                }
                if e.code() == ErrorCode::TooManySessions
                    && self.live_sessions() < self.config.limits.max_sessions
                {
                    violation!(
                        self,
                        "TOO_MANY_SESSIONS with {} live sessions",
                        self.live_sessions()
                    );
                }
                // A refused resume: a token of an ended session gives RESUME_EXPIRED; the
                // gap ends the session.
                if let Some(hello) = &self.conns[ci].hello
                    && hello.id == frame.in_reply_to
                    && let Some(s) = hello.token_session
                {
                    if e.code() == ErrorCode::ResumeGap {
                        let session = &mut self.sessions[s];
                        session.ended = true;
                        session.away_since_ms = None;
                    }
                    if e.code() == ErrorCode::ResumeExpired && !self.sessions[s].ended {
                        violation!(
                            self,
                            "resume of a live session refused as expired: {frame:?}"
                        );
                    }
                    if e.code() == ErrorCode::IdentityMismatch
                        && (self.sessions[s].identity == hello.identity || hello.identity.is_none())
                    {
                        violation!(
                            self,
                            "IDENTITY_MISMATCH for the session's own identity: {frame:?}"
                        );
                    }
                }
            }
            _ => violation!(
                self,
                "unnumbered frame of a numbered kind to {conn}: {frame:?}"
            ),
        }
    }

    fn on_welcome(&mut self, ci: usize, in_reply_to: u64, w: &proto::Welcome) {
        let conn = self.conns[ci].id;
        if self.shut_down {
            violation!(self, "Welcome to {conn} after shutdown");
        }
        if self.conns[ci].welcomed {
            violation!(self, "second Welcome to {conn}");
        }
        let Some(hello) = self.conns[ci].hello.take() else {
            violation!(self, "Welcome to {conn}, which sent no Hello");
        };
        if hello.id != in_reply_to {
            violation!(
                self,
                "Welcome to {conn} answers {in_reply_to}, not its Hello {}",
                hello.id
            );
        }
        if w.connection_id != conn.to_string() {
            violation!(
                self,
                "Welcome.connection_id {:?} on {conn}",
                w.connection_id
            );
        }
        if w.max_frame_bytes as usize != self.config.limits.max_frame_bytes {
            violation!(self, "Welcome.max_frame_bytes {}", w.max_frame_bytes);
        }
        if !self.auth && (!w.identity.is_empty() || w.token_expires_in_ms != 0) {
            violation!(
                self,
                "Welcome with token facts without authentication: {w:?}"
            );
        }
        // The live session the identity owns, if any (at most one).
        let owned: Vec<usize> = hello.identity.map_or(Vec::new(), |ident| {
            (0..self.sessions.len())
                .filter(|&s| !self.sessions[s].ended && self.sessions[s].identity == Some(ident))
                .collect()
        });
        if owned.len() > 1 {
            violation!(
                self,
                "identity {:?} owns {} live sessions",
                hello.identity,
                owned.len()
            );
        }
        let transport = self.conns[ci].transport;
        let s = if w.resumed {
            let Some(&s) = self.by_peer.get(&w.peer_id) else {
                violation!(self, "resumed Welcome for unknown peer {}", w.peer_id);
            };
            if self.sessions[s].ended {
                violation!(self, "session {} resumed after it ended", w.peer_id);
            }
            // By resume token, or (with a verified identity) by the identity that owns it.
            let by_token = hello.token_session == Some(s);
            if !by_token && owned != [s] {
                violation!(
                    self,
                    "{conn} took up {} with neither its resume token nor its identity",
                    w.peer_id
                );
            }
            if by_token && hello.identity.is_some() && hello.identity != self.sessions[s].identity {
                violation!(
                    self,
                    "a resume token of another identity took up {}",
                    w.peer_id
                );
            }
            if by_token && w.replay_until_seq < hello.last_seq {
                violation!(
                    self,
                    "replay_until_seq {} < last_seq {}",
                    w.replay_until_seq,
                    hello.last_seq
                );
            }
            if let Some(old) = self.sessions[s].conn
                && !self.conns[old].closed
            {
                violation!(
                    self,
                    "resume on {conn} while {} still carries the session",
                    self.conns[old].id
                );
            }
            let session = &mut self.sessions[s];
            if by_token {
                let sent = session.contiguous_sent();
                if w.last_client_seq > sent {
                    violation!(
                        self,
                        "Welcome.last_client_seq {} but the client sent 1..={sent}",
                        w.last_client_seq
                    );
                }
                if w.last_client_seq < session.told {
                    violation!(
                        self,
                        "Welcome.last_client_seq {} goes back from {}",
                        w.last_client_seq,
                        session.told
                    );
                }
                session.resume_claim = session.resume_claim.max(hello.last_seq);
            } else {
                // A client that lost its state: it numbers its frames from 1 again and gets
                // what the backlog still holds.
                if w.last_client_seq != 0 {
                    violation!(
                        self,
                        "take-over by identity with last_client_seq {}",
                        w.last_client_seq
                    );
                }
                session.client_sent.clear();
            }
            session.told = w.last_client_seq;
            session.client_next = w.last_client_seq.saturating_add(1);
            session.away_since_ms = None;
            session.conn = Some(ci);
            session.transport = transport;
            let rooms: BTreeSet<String> = w.rooms.iter().cloned().collect();
            if session.max_seq >= w.replay_until_seq {
                if session.rooms_known
                    && session.max_seq == w.replay_until_seq
                    && session.rooms != rooms
                {
                    violation!(
                        self,
                        "resumed Welcome says rooms {rooms:?}, the stream says {:?}",
                        self.sessions[s].rooms
                    );
                }
                self.sessions[s].rooms_check = None;
            } else {
                self.sessions[s].rooms_check = Some((w.replay_until_seq, rooms));
            }
            let c = &mut self.conns[ci];
            // After a take-over by identity the replay starts wherever the backlog does.
            c.first_seq = if by_token {
                hello.last_seq.saturating_add(1)
            } else {
                0
            };
            c.replay_until = w.replay_until_seq;
            c.told = w.last_client_seq;
            s
        } else {
            if let Some(t) = hello.token_session
                && !self.sessions[t].ended
            {
                violation!(
                    self,
                    "a Hello with the token of live session {} got a new session",
                    self.sessions[t].peer_id
                );
            }
            if hello.with_token && hello.identity.is_none() {
                violation!(
                    self,
                    "a Hello with an unknown resume token got a new session on {conn}"
                );
            }
            if !owned.is_empty() {
                violation!(self, "identity {:?} got a second session", hello.identity);
            }
            let live = self.live_sessions();
            if live >= self.config.limits.max_sessions {
                violation!(self, "a new session beyond max_sessions ({live} live)");
            }
            if w.replay_until_seq != 0 || w.last_client_seq != 0 || !w.rooms.is_empty() {
                violation!(self, "a new session's Welcome carries old state: {w:?}");
            }
            if self.by_peer.contains_key(&w.peer_id) {
                violation!(self, "peer id {} handed out twice", w.peer_id);
            }
            let expected_identity = hello.identity.map_or("", |i| SUBS[i.0]);
            if w.identity != expected_identity {
                violation!(
                    self,
                    "Welcome.identity {:?}, the token said {expected_identity:?}",
                    w.identity
                );
            }
            let s = self.sessions.len();
            self.sessions.push(SessionModel {
                peer_id: w.peer_id.clone(),
                token: w.resume_token.clone(),
                identity: hello.identity,
                transport,
                conn: Some(ci),
                ended: false,
                away_since_ms: None,
                frames: HashMap::new(),
                max_seq: 0,
                rooms: BTreeSet::new(),
                rooms_known: true,
                rooms_check: None,
                attempt: 0,
                client_next: 1,
                client_sent: BTreeSet::new(),
                told: 0,
                ack_claims: Vec::new(),
                refused_acks: HashSet::new(),
                resume_claim: 0,
            });
            self.by_peer.insert(w.peer_id.clone(), s);
            self.tokens.push((w.resume_token.clone(), s));
            let c = &mut self.conns[ci];
            c.first_seq = 1;
            c.replay_until = 0;
            c.told = 0;
            s
        };
        if w.resume_token != self.sessions[s].token {
            violation!(self, "the session's resume token changed");
        }
        let c = &mut self.conns[ci];
        c.welcomed = true;
        c.session = Some(s);
        c.last_seq = 0;
    }

    /// After `handle_timeout`: what the deadlines must have ended, by the model's clock.
    fn expire(&mut self) {
        let resume_window = self.config.resume_window.as_millis() as u64;
        let hello_timeout = self.config.hello_timeout.as_millis() as u64;
        for s in &mut self.sessions {
            if let Some(since) = s.away_since_ms
                && since + resume_window <= self.now_ms
            {
                s.ended = true;
                s.away_since_ms = None;
            }
        }
        for c in &self.conns {
            if !c.closed && c.session.is_none() && c.opened_ms + hello_timeout <= self.now_ms {
                violation!(
                    self,
                    "{} has no session {hello_timeout} ms after it opened, still open",
                    c.id
                );
            }
        }
    }

    fn check_state(&self) {
        let gauges = self.hub.gauges();
        let mut online = [0usize; 2];
        let mut away = [0usize; 2];
        let mut live = 0;
        for s in self.sessions.iter().filter(|s| !s.ended) {
            live += 1;
            let t = match s.transport {
                Transport::WebSocket => 0,
                Transport::WebTransport => 1,
            };
            match s.conn {
                Some(_) => online[t] += 1,
                None => away[t] += 1,
            }
        }
        if gauges.online != online || gauges.unreachable != away {
            violation!(
                self,
                "gauges online {:?} unreachable {:?}, the model says {online:?} {away:?}",
                gauges.online,
                gauges.unreachable
            );
        }
        if self.started - self.ended_events != live {
            violation!(
                self,
                "{} sessions started, {} ended, but {live} live in the model",
                self.started,
                self.ended_events
            );
        }
        if gauges.rooms > VALID_ROOMS || (live == 0 && gauges.rooms != 0) {
            violation!(self, "{} rooms with {live} sessions", gauges.rooms);
        }
        for (ci, c) in self.conns.iter().enumerate() {
            if let Some(s) = c.live_session()
                && self.sessions[s].conn != Some(ci)
            {
                violation!(
                    self,
                    "{} carries session {} that is elsewhere",
                    c.id,
                    self.sessions[s].peer_id
                );
            }
        }
        // Counts only Debug shows; skipped if its format changes.
        let debug = format!("{:?}", self.hub);
        let field = |name: &str| -> Option<usize> {
            let at = debug.find(&format!("{name}: "))? + name.len() + 2;
            let digits: String = debug[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        };
        let open = self.conns.iter().filter(|c| !c.closed).count();
        if let Some(n) = field("connections")
            && n != open
        {
            violation!(self, "the hub holds {n} connections, {open} are open");
        }
        // The backend API's view: the live sessions, online exactly when the model says so,
        // and rooms that agree with the sessions' own room lists.
        let views = self.hub.sessions();
        if views.len() != live {
            violation!(
                self,
                "the hub lists {} sessions, {live} are live",
                views.len()
            );
        }
        for view in &views {
            let Some(&s) = self.by_peer.get(&view.peer_id) else {
                violation!(self, "the hub lists unknown peer {}", view.peer_id);
            };
            let model = &self.sessions[s];
            if model.ended {
                violation!(self, "the hub lists {}, which ended", view.peer_id);
            }
            let online = view.state == proto::PresenceState::Online;
            if online != model.conn.is_some() || view.transport != model.transport {
                violation!(
                    self,
                    "the hub lists {view:?}, the model has it on {:?} over {:?}",
                    model.conn,
                    model.transport
                );
            }
            if view.identity.as_deref() != model.identity.map(|i| SUBS[i.0]) {
                violation!(
                    self,
                    "the hub lists {view:?} with another identity than {:?}",
                    model.identity
                );
            }
        }
        let rooms = self.hub.rooms();
        if rooms.len() != gauges.rooms {
            violation!(
                self,
                "{} rooms listed, the gauge says {}",
                rooms.len(),
                gauges.rooms
            );
        }
        for room in &rooms {
            for member in &room.members {
                let listed = views
                    .iter()
                    .find(|v| &v.peer_id == member)
                    .is_some_and(|v| v.rooms.contains(&room.name));
                if !listed {
                    violation!(
                        self,
                        "room {} lists {member}, whose session is not in it",
                        room.name
                    );
                }
            }
        }
        let memberships: usize = views.iter().map(|v| v.rooms.len()).sum();
        let members: usize = rooms.iter().map(|r| r.members.len()).sum();
        if memberships != members {
            violation!(
                self,
                "sessions name {memberships} room memberships, rooms {members}"
            );
        }
        // At most a Hello deadline per connection; a resume window, a token expiry and a
        // token grace per session.
        if let Some(n) = field("deadlines")
            && n > open + 3 * live
        {
            violation!(
                self,
                "{n} deadlines for {open} connections and {live} sessions"
            );
        }
    }
}

/// For seeds and tests: an arbitrary setup from bytes.
pub fn setup_from(bytes: &[u8]) -> Setup {
    Setup::arbitrary(&mut arbitrary::Unstructured::new(bytes)).unwrap_or_default()
}
