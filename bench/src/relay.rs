//! `relay`: one-way latency of relayed signals through a running gateway.
//!
//! P sender/receiver pairs, each pair alone in its own room. The senders send `Signal{data}`
//! frames of B bytes to their receiver at an aggregate rate R (each sender R/P per second,
//! the senders' phases staggered so that the sends are spread evenly over time), first for a
//! warm-up, then for the measured S seconds. The payload carries the send instant (this
//! process's monotonic clock) and the phase, so the receiver — in the same process —
//! computes the one-way latency of every measured signal.
//!
//! The latency includes both clients' side: the sender's encoding, TLS and socket write, the
//! gateway, the receiver's socket read, TLS and decoding, and any wait for a CPU (the load
//! generator and the gateway share the machine).
//!
//! Every connection keeps reading whatever the gateway sends and acknowledges it (`Ack{seq}`
//! every `--ack-every` numbered frames), as real clients do; frames it has no use for (replies,
//! acks from the gateway, presence) are counted by kind and dropped.
//!
//! Cluster mode (`bench/cluster.py`): with `--receiver-url` the receivers connect to another
//! gateway than the senders, so every signal crosses gateways (sender's gateway → NATS →
//! receiver's gateway, whose verdict goes back before the sender's Ack). A pair starts only
//! once each side has seen the other in the room, so that both gateways know both members
//! before the first signal. `--watch-pid NAME=PID` reports the CPU of more processes (the
//! other gateway, the NATS servers) over the measured interval.
//!
//! With `--numbered` the senders number their signals as the SDK does (`seq`), so the gateway
//! acknowledges them — across gateways only once the recipient's gateway has answered with
//! its verdict — and the time from each send to the Ack that covers it is reported too.
//!
//! With `--protocol socketio` the same pairs, schedule and statistics run against the Socket.IO
//! baseline (`bench/baselines/socketio/relay_server.js`, [`crate::socketio`]): each side joins
//! its room with an acked `join` event, the sender emits `42["signal","<payload>"]` and the
//! server relays it to the room with `socket.to(room).emit`. The payload is text: the same
//! stamp and phase, in hex, padded to `--bytes` characters. Each pair is one [`End`] per side
//! whatever the protocol, so both run one code path ([`run_end`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use signalgate::client::{ClientError, ConnectOptions, Connection, Incoming, Session};
use signalgate::proto::{ErrorCode, ServerFrame, server_frame, signal};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Interval, MissedTickBehavior};

use crate::{Protocol, frames, socketio};

#[derive(clap::Args)]
pub struct RelayArgs {
    /// `wss://HOST:PORT/ws` (WebSocket) or `https://HOST:PORT/wt` (WebTransport); for
    /// `--protocol socketio`, `ws://HOST:PORT/socket.io/`.
    #[arg(long)]
    url: String,
    /// What the pairs speak: signalgate, or Socket.IO to the baseline server.
    #[arg(long, value_enum, default_value_t = Protocol::Signalgate)]
    protocol: Protocol,
    /// SHA-256 of the gateway's certificate (64 hex characters, as the gateway prints it);
    /// needed for signalgate over wss:// and https://.
    #[arg(long)]
    cert_sha256: Option<String>,
    /// Sender/receiver pairs, each alone in its own room.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Size of each signal's `data` payload, in bytes (at least 16); for socketio, in
    /// characters of its text payload (at least 17: the stamp and phase in hex).
    #[arg(long, default_value_t = 200)]
    bytes: usize,
    /// Aggregate rate asked, signals per second (spread evenly over the senders).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Measured interval, seconds.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Sending before the measured interval (not counted), seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// After the last send: wait at most this long for the signals still on their way.
    #[arg(long, default_value_t = 3.0)]
    drain_secs: f64,
    /// Number the signals (`seq`, as the SDK does): the gateway then acknowledges them, and
    /// the time from send to the covering Ack is reported.
    #[arg(long)]
    numbered: bool,
    /// Acknowledge every this many numbered frames received (as the SDK does).
    #[arg(long, default_value_t = 16)]
    ack_every: u64,
    /// The receivers' gateway, when not the senders' (`--url`): cross-gateway relay in a
    /// cluster. Same forms as `--url`.
    #[arg(long)]
    receiver_url: Option<String>,
    /// SHA-256 of the receivers' gateway's certificate (default: `--cert-sha256`).
    #[arg(long)]
    receiver_cert_sha256: Option<String>,
    /// The gateway's process id: report its CPU time over the measured interval.
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// More processes whose CPU time over the measured interval is reported, as NAME=PID
    /// (repeatable; e.g. the receivers' gateway, NATS servers).
    #[arg(long = "watch-pid", value_name = "NAME=PID")]
    watch_pid: Vec<String>,
    /// Rooms are PREFIX{i}.
    #[arg(long, default_value = "relay-")]
    room_prefix: String,
    /// Pairs being set up at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Exit after this many seconds, whatever happens.
    #[arg(long, default_value_t = 300)]
    pub max_secs: u64,
}

/// Payload layout: send instant (ns since `epoch()`, u64 LE), phase, then padding.
const PAYLOAD_MIN: usize = 16;
const PHASE_WARMUP: u8 = 0;
const PHASE_MEASURED: u8 = 1;

/// The process's reference instant for payload stamps (same monotonic clock on both ends).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn stamp_now() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn payload(template: &mut [u8], phase: u8) -> Bytes {
    template[..8].copy_from_slice(&stamp_now().to_le_bytes());
    template[8] = phase;
    Bytes::copy_from_slice(template)
}

/// (send stamp, phase) of a payload written by [`payload`].
fn read_payload(data: &[u8]) -> Option<(u64, u8)> {
    let stamp = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    Some((stamp, *data.get(8)?))
}

/// The text payload of Socket.IO signals: the send instant in 16 hex digits, the phase in
/// one, then padding up to `len` characters.
fn text_payload(len: usize, phase: u8) -> String {
    let mut text = format!("{:016x}{phase}", stamp_now());
    let padding = len.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('.', padding));
    text
}

/// (send stamp, phase) of a payload written by [`text_payload`].
fn read_text_payload(text: &str) -> Option<(u64, u8)> {
    let stamp = u64::from_str_radix(text.get(..16)?, 16).ok()?;
    Some((stamp, text.get(16..17)?.parse().ok()?))
}

/// Counters shared by every task.
#[derive(Default)]
struct Shared {
    sent_warmup: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    received_warmup: AtomicU64,
    acks_sent: AtomicU64,
    /// Numbered signals sent and not yet covered by an Ack from the gateway.
    unacked: AtomicU64,
    /// Frames received that this benchmark does not use, by kind (and errors by code).
    other_frames: Mutex<BTreeMap<String, u64>>,
    /// Connections that ended during the run, with why.
    closed: Mutex<Vec<String>>,
}

impl Shared {
    fn count_other(&self, kind: String) {
        let mut map = self.other_frames.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(kind).or_default() += 1;
    }

    fn note_closed(&self, why: String) {
        let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        closed.push(why);
    }
}

/// Sequence tracking and acknowledgements for one connection.
struct Acker {
    every: u64,
    last_seq: u64,
    unacked: u64,
    next_id: u64,
}

impl Acker {
    fn new(every: u64, last_seq: u64, next_id: u64) -> Self {
        Self {
            every,
            last_seq,
            unacked: 0,
            next_id,
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Notes a received frame; sends an Ack when `every` numbered frames are unacknowledged.
    fn on_frame(&mut self, conn: &Connection, frame: &ServerFrame, shared: &Shared) {
        if frame.seq == 0 || frame.seq <= self.last_seq {
            return;
        }
        self.last_seq = frame.seq;
        self.unacked += 1;
        if self.every > 0 && self.unacked >= self.every {
            self.unacked = 0;
            let id = self.next_id();
            if conn.send_frame(frames::ack(id, self.last_seq)).is_ok() {
                shared.acks_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Name of a frame's kind, for the tally of frames the benchmark does not use.
fn kind_name(frame: &ServerFrame) -> String {
    match &frame.msg {
        Some(server_frame::Msg::Error(error)) => {
            let code = ErrorCode::try_from(error.code).map_or("UNKNOWN", |c| c.as_str_name());
            format!("error:{code}")
        }
        Some(msg) => {
            // "Joined(Joined { .. })" -> "Joined": the variant's name, whatever it is.
            let debug = format!("{msg:?}");
            debug.split('(').next().unwrap_or("?").to_string()
        }
        None => "empty".to_string(),
    }
}

/// The numbering of one sender's signals (`--numbered`) and the Acks that cover them.
struct Numbering {
    /// The seq of the next signal; 0: signals are not numbered.
    next_seq: u64,
    /// (seq, send stamp, measured) of the signals not acknowledged yet, oldest first.
    in_flight: VecDeque<(u64, u64, bool)>,
    /// Send-to-Ack times of the measured signals, ns.
    latencies_ns: Vec<u64>,
}

impl Numbering {
    fn new(next_seq: u64) -> Self {
        Self {
            next_seq,
            in_flight: VecDeque::new(),
            latencies_ns: Vec::new(),
        }
    }

    /// The seq for the next signal (0 when not numbering), noted as in flight.
    fn next(&mut self, measured: bool, shared: &Shared) -> u64 {
        if self.next_seq == 0 {
            return 0;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.push_back((seq, stamp_now(), measured));
        shared.unacked.fetch_add(1, Ordering::Relaxed);
        seq
    }

    /// An Ack from the gateway: every signal up to `seq` is settled.
    fn acked(&mut self, seq: u64, shared: &Shared) {
        let now = stamp_now();
        while let Some(&(first, sent_at, measured)) = self.in_flight.front() {
            if first > seq {
                break;
            }
            self.in_flight.pop_front();
            shared.unacked.fetch_sub(1, Ordering::Relaxed);
            if measured {
                self.latencies_ns.push(now.saturating_sub(sent_at));
            }
        }
    }
}

/// One side of a pair, over either protocol.
enum End {
    Signalgate(Box<GateEnd>),
    Socketio(socketio::Client),
}

/// One side of a pair over signalgate.
struct GateEnd {
    conn: Connection,
    acker: Acker,
    /// A numbered sender's signals in flight (`Numbering::new(0)`: not numbered).
    numbering: Numbering,
    /// Where a sender's signals go: its room and the receiver's peer id (empty for a receiver).
    room: String,
    to: String,
}

/// What one read of an end gave.
enum Received {
    /// A signal of this benchmark: its one-way latency and its phase.
    Signal { latency_ns: u64, phase: u8 },
    /// Anything else (counted in `other_frames`).
    Other,
    /// The connection ended (noted in `closed`).
    Closed,
}

impl GateEnd {
    async fn recv(&mut self, shared: &Shared, role: &str) -> Received {
        let frame = match self.conn.recv().await {
            Incoming::Frame(frame) => frame,
            Incoming::Undecodable(_) => {
                shared.count_other(format!("{role}:undecodable"));
                return Received::Other;
            }
            Incoming::Closed { code, reason } => {
                shared.note_closed(format!("{role}: code {code:?}: {reason}"));
                return Received::Closed;
            }
        };
        let now = stamp_now();
        self.acker.on_frame(&self.conn, &frame, shared);
        match &frame.msg {
            Some(server_frame::Msg::Signal(s)) => {
                if let Some(signal::Payload::Data(data)) = &s.payload
                    && let Some((sent_at, phase)) = read_payload(data)
                {
                    let latency_ns = now.saturating_sub(sent_at);
                    return Received::Signal { latency_ns, phase };
                }
            }
            Some(server_frame::Msg::Ack(ack)) => self.numbering.acked(ack.seq, shared),
            _ => {}
        }
        shared.count_other(format!("{role}:{}", kind_name(&frame)));
        Received::Other
    }

    fn send(&mut self, template: &mut [u8], phase: u8, shared: &Shared) -> bool {
        let id = self.acker.next_id();
        let mut frame = frames::data_signal(id, &self.room, &self.to, payload(template, phase));
        frame.seq = self.numbering.next(phase == PHASE_MEASURED, shared);
        self.conn.send_frame(frame).is_ok()
    }
}

impl End {
    async fn recv(&mut self, shared: &Shared, role: &str) -> Received {
        let client = match self {
            End::Signalgate(end) => return end.recv(shared, role).await,
            End::Socketio(client) => client,
        };
        match client.recv().await {
            Ok(packet) => {
                let now = stamp_now();
                if let socketio::Packet::Event { name, args } = &packet
                    && name == "signal"
                    && let Some((sent_at, phase)) = args
                        .first()
                        .and_then(Value::as_str)
                        .and_then(read_text_payload)
                {
                    let latency_ns = now.saturating_sub(sent_at);
                    return Received::Signal { latency_ns, phase };
                }
                shared.count_other(format!("{role}:{}", packet.kind()));
                Received::Other
            }
            Err(why) => {
                shared.note_closed(format!("{role}: {why}"));
                Received::Closed
            }
        }
    }

    /// Sends one signal stamped now, of `template`'s length; false if the connection is gone.
    fn send(&mut self, template: &mut [u8], phase: u8, shared: &Shared) -> bool {
        match self {
            End::Signalgate(end) => end.send(template, phase, shared),
            End::Socketio(client) => client
                .emit("signal", &text_payload(template.len(), phase))
                .is_ok(),
        }
    }
}

struct Pair {
    sender: End,
    receiver: End,
}

/// Where the two sides of a pair connect, over signalgate.
#[derive(Clone)]
struct GateEndpoints {
    sender_url: String,
    sender: ConnectOptions,
    receiver_url: String,
    receiver: ConnectOptions,
    ack_every: u64,
    numbered: bool,
}

/// Where the pairs connect.
#[derive(Clone)]
enum Endpoints {
    Signalgate(Box<GateEndpoints>),
    /// The Socket.IO baseline server's `ws://` URL.
    Socketio(String),
}

/// How long one side of a pair waits to hear of the other (across gateways the news travels
/// through NATS).
const MEMBER_NEWS: Duration = Duration::from_secs(10);

/// The peer id of the next `PeerJoined` in `room`.
async fn next_peer_joined(session: &mut Session, room: &str) -> Result<String, ClientError> {
    session
        .wait_for(MEMBER_NEWS, "PeerJoined", |f| match &f.msg {
            Some(server_frame::Msg::PeerJoined(j)) if j.room == room => {
                j.peer.as_ref().map(|p| p.peer_id.clone())
            }
            _ => None,
        })
        .await
}

/// Connects the receiver, then the sender, into the same room. The sender learns the
/// receiver's peer id from its Joined reply — or, when the receiver's join is still on its
/// way from another gateway, from the PeerJoined that follows; the receiver then waits for
/// the sender's PeerJoined, so both gateways know both members before anything is sent.
async fn join_gate_pair(
    ends: &GateEndpoints,
    room: &str,
) -> Result<(Session, Session, String), ClientError> {
    let conn = crate::connect(&ends.receiver_url, &ends.receiver).await?;
    let mut receiver = Session::start(conn).await?;
    receiver.join(room).await?;
    let mut sender = Session::start(crate::connect(&ends.sender_url, &ends.sender).await?).await?;
    let joined = sender.join(room).await?;
    let to = match joined.peers.first() {
        Some(peer) => peer.peer_id.clone(),
        None => next_peer_joined(&mut sender, room).await?,
    };
    if to != receiver.peer_id() {
        return Err(ClientError::Unexpected(format!(
            "room {room}: {to} is in it, not the receiver"
        )));
    }
    let sender_id = sender.peer_id().to_string();
    while next_peer_joined(&mut receiver, room).await? != sender_id {}
    Ok((receiver, sender, to))
}

/// Connects a pair into `room` (receiver first), with retries.
async fn open_pair(ends: &Endpoints, room: String) -> Result<Pair, String> {
    let ends = match ends {
        Endpoints::Signalgate(ends) => ends,
        Endpoints::Socketio(url) => {
            let rooms = [room];
            let receiver = socketio::open(url, None, &rooms).await?;
            let sender = socketio::open(url, None, &rooms).await?;
            return Ok(Pair {
                sender: End::Socketio(sender),
                receiver: End::Socketio(receiver),
            });
        }
    };
    let (receiver, sender, to) = crate::with_retries(|| async {
        join_gate_pair(ends, &room).await.map_err(|e| e.to_string())
    })
    .await?;
    // A Session used ids 1 (Hello) and 2 (Join): go on after them.
    let numbering = Numbering::new(if ends.numbered {
        sender.resume_state().next_client_seq
    } else {
        0
    });
    let sender = GateEnd {
        acker: Acker::new(ends.ack_every, sender.last_seq(), 100),
        conn: sender.into_connection(),
        numbering,
        room,
        to,
    };
    let receiver = GateEnd {
        acker: Acker::new(ends.ack_every, receiver.last_seq(), 100),
        conn: receiver.into_connection(),
        numbering: Numbering::new(0),
        room: String::new(),
        to: String::new(),
    };
    Ok(Pair {
        sender: End::Signalgate(Box::new(sender)),
        receiver: End::Signalgate(Box::new(receiver)),
    })
}

/// When the run's phases begin and end.
#[derive(Clone, Copy)]
struct Schedule {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

/// A sender's pace: its first send, then one every `period`.
#[derive(Clone, Copy)]
struct Pace {
    first: Instant,
    period: Duration,
}

/// What one end took home.
#[derive(Default)]
struct Outcome {
    /// One-way latencies of the measured signals it received, ns.
    latencies_ns: Vec<u64>,
    /// Send-to-Ack times of its measured signals (numbered senders only), ns.
    ack_latencies_ns: Vec<u64>,
    /// Its measured signals never acknowledged (numbered senders only).
    never_acked: u64,
}

/// The next tick of a sender; never, for a receiver or a sender done sending.
async fn next_tick(ticks: &mut Option<Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// One end of a pair until stopped or closed: reads whatever arrives, timing the signals of
/// this benchmark, and for a sender (`pace`) sends `bytes`-long signals on schedule until the
/// end of the run.
async fn run_end(
    mut end: End,
    role: &'static str,
    pace: Option<Pace>,
    bytes: usize,
    schedule: Schedule,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let mut template = vec![0u8; bytes];
    let mut ticks = pace.map(|pace| {
        let mut ticks = tokio::time::interval_at(pace.first.into(), pace.period);
        // A late wake-up sends once and keeps to the schedule: no burst to catch up.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        ticks
    });
    let mut outcome = Outcome::default();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            received = end.recv(&shared, role) => match received {
                Received::Signal { latency_ns, phase: PHASE_MEASURED } => {
                    outcome.latencies_ns.push(latency_ns);
                    shared.received.fetch_add(1, Ordering::Relaxed);
                }
                Received::Signal { .. } => {
                    shared.received_warmup.fetch_add(1, Ordering::Relaxed);
                }
                Received::Other => {}
                Received::Closed => break,
            },
            () = next_tick(&mut ticks) => {
                let now = Instant::now();
                if now >= schedule.end {
                    ticks = None;
                    continue;
                }
                let phase = if now >= schedule.measure_from { PHASE_MEASURED } else { PHASE_WARMUP };
                if !end.send(&mut template, phase, &shared) {
                    continue; // The closure arrives through recv().
                }
                let counter = if phase == PHASE_MEASURED { &shared.sent } else { &shared.sent_warmup };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if let End::Signalgate(end) = end {
        let in_flight = &end.numbering.in_flight;
        outcome.never_acked = in_flight
            .iter()
            .filter(|(_, _, measured)| *measured)
            .count() as u64;
        outcome.ack_latencies_ns = end.numbering.latencies_ns;
    }
    outcome
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // The epsilon keeps 99.9 % of 1,000 at rank 999 despite 0.999 not being exact in binary.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e6 * 1000.0).round() / 1000.0
}

/// `NAME=PID` of `--watch-pid`.
fn parse_watch(spec: &str) -> Result<(String, u32), String> {
    let bad = || format!("--watch-pid {spec:?} is not NAME=PID");
    let (name, pid) = spec.split_once('=').ok_or_else(bad)?;
    let pid = pid.parse().map_err(|_| bad())?;
    if name.is_empty() {
        return Err(bad());
    }
    Ok((name.to_string(), pid))
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time the whole machine spent busy (every core; user, nice, system, irq, softirq,
/// steal), in clock ticks: with the gateway's and our own, tells how much went to others.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = cpu
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    Some(
        [0, 1, 2, 5, 6, 7]
            .iter()
            .filter_map(|&i| fields.get(i))
            .sum(),
    )
}

fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

pub async fn relay(args: RelayArgs) -> Result<Value, String> {
    if args.bytes < PAYLOAD_MIN {
        return Err(format!("--bytes must be at least {PAYLOAD_MIN}"));
    }
    if args.pairs == 0 || args.rate <= 0.0 || args.secs <= 0.0 {
        return Err("--pairs, --rate and --secs must be positive".into());
    }
    let _ = epoch();
    let ends = match args.protocol {
        Protocol::Socketio if args.numbered || args.receiver_url.is_some() => {
            return Err(
                "--numbered and --receiver-url are for signalgate only: the Socket.IO \
                 baseline acknowledges no relayed signal and is one server"
                    .into(),
            );
        }
        Protocol::Socketio => Endpoints::Socketio(args.url.clone()),
        Protocol::Signalgate => {
            let receiver_url = args.receiver_url.as_deref().unwrap_or(&args.url);
            let cert = args.cert_sha256.as_deref();
            let receiver_cert = args.receiver_cert_sha256.as_deref().or(cert);
            Endpoints::Signalgate(Box::new(GateEndpoints {
                sender_url: args.url.clone(),
                sender: ConnectOptions::new(crate::trust(&args.url, cert)?),
                receiver_url: receiver_url.to_string(),
                receiver: ConnectOptions::new(crate::trust(receiver_url, receiver_cert)?),
                ack_every: args.ack_every,
                numbered: args.numbered,
            }))
        }
    };
    let watched = args
        .watch_pid
        .iter()
        .map(|spec| parse_watch(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let transport = if args.url.starts_with("https://") {
        "webtransport"
    } else {
        "websocket"
    };

    // Setup: every pair connected and joined before anything is sent.
    let setup_started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let (pairs_tx, mut pairs_rx) = mpsc::unbounded_channel();
    for i in 0..args.pairs {
        let (gate, tx, ends) = (gate.clone(), pairs_tx.clone(), ends.clone());
        let room = format!("{}{i}", args.room_prefix);
        tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let _ = tx.send((i, open_pair(&ends, room).await));
        });
    }
    drop(pairs_tx);
    let mut pairs: Vec<Option<Pair>> = (0..args.pairs).map(|_| None).collect();
    let mut failures = Vec::new();
    while let Some((i, opened)) = pairs_rx.recv().await {
        match opened {
            Ok(pair) => pairs[i] = Some(pair),
            Err(error) => failures.push(format!("pair {i}: {error}")),
        }
    }
    if !failures.is_empty() {
        return Err(format!(
            "{} of {} pairs could not be set up, e.g. {:?}",
            failures.len(),
            args.pairs,
            &failures[..failures.len().min(3)]
        ));
    }
    let setup_secs = setup_started.elapsed().as_secs_f64();
    crate::emit(json!({"event": "ready", "pairs": args.pairs, "setup_secs": setup_secs}));

    // The schedule: each sender sends every `period`; sender i's phase is i/P of a period,
    // so together they send one signal every 1/R seconds.
    let period = Duration::from_secs_f64(args.pairs as f64 / args.rate);
    let start = Instant::now() + Duration::from_millis(200);
    let schedule = Schedule {
        start,
        measure_from: start + Duration::from_secs_f64(args.warmup_secs),
        end: start + Duration::from_secs_f64(args.warmup_secs + args.secs),
    };
    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut ends = Vec::new();
    for (i, pair) in pairs.into_iter().flatten().enumerate() {
        let pace = Pace {
            first: schedule.start + period.mul_f64(i as f64 / args.pairs as f64),
            period,
        };
        for (end, role, pace) in [
            (pair.receiver, "receiver", None),
            (pair.sender, "sender", Some(pace)),
        ] {
            let (shared, stop) = (shared.clone(), stop_rx.clone());
            ends.push(tokio::spawn(run_end(
                end, role, pace, args.bytes, schedule, shared, stop,
            )));
        }
    }

    // The measured interval, with the gateway's and this process's CPU time around it.
    tokio::time::sleep_until(schedule.measure_from.into()).await;
    let gateway_before = args.gateway_pid.and_then(cpu_ticks);
    let self_before = cpu_ticks(std::process::id());
    let machine_before = machine_busy_ticks();
    let watched_before: Vec<Option<u64>> = watched.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
    let measured_started = Instant::now();
    tokio::time::sleep_until(schedule.end.into()).await;
    let gateway_after = args.gateway_pid.and_then(cpu_ticks);
    let self_after = cpu_ticks(std::process::id());
    let machine_after = machine_busy_ticks();
    let watched_after: Vec<Option<u64>> = watched.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
    let measured_secs = measured_started.elapsed().as_secs_f64();

    // Drain: wait for the signals still on their way (or give up after --drain-secs).
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain_secs);
    // Let the senders see the end of their schedule first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    while Instant::now() < drain_deadline
        && (shared.received.load(Ordering::Relaxed) < shared.sent.load(Ordering::Relaxed)
            || shared.unacked.load(Ordering::Relaxed) > 0)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let mut latencies = Vec::new();
    let mut ack_latencies = Vec::new();
    let mut unacked = 0;
    for end in ends {
        if let Ok(mut outcome) = end.await {
            latencies.append(&mut outcome.latencies_ns);
            ack_latencies.append(&mut outcome.ack_latencies_ns);
            unacked += outcome.never_acked;
        }
    }
    latencies.sort_unstable();
    ack_latencies.sort_unstable();

    let sent = shared.sent.load(Ordering::Relaxed);
    let received = shared.received.load(Ordering::Relaxed);
    let ticks = clock_ticks_per_sec() as f64;
    let cpu_percent = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) => Value::from(
            (a.saturating_sub(b) as f64 / ticks / measured_secs * 1000.0).round() / 10.0,
        ),
        _ => Value::Null,
    };
    let mean_ns = if latencies.is_empty() {
        0
    } else {
        latencies.iter().sum::<u64>() / latencies.len() as u64
    };
    let watched_cpu: serde_json::Map<String, Value> = watched
        .iter()
        .zip(watched_before.into_iter().zip(watched_after))
        .map(|((name, _), (before, after))| (name.clone(), cpu_percent(before, after)))
        .collect();
    let closed = shared
        .closed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let other_frames = shared
        .other_frames
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(json!({
        "event": "result",
        "protocol": args.protocol.name(),
        "transport": transport,
        "cross_gateway": args.receiver_url.as_ref().is_some_and(|r| *r != args.url),
        "pairs": args.pairs,
        "bytes": args.bytes,
        "secs": args.secs,
        "measured_secs": (measured_secs * 1000.0).round() / 1000.0,
        "warmup_secs": args.warmup_secs,
        "rate_asked": args.rate,
        "rate_achieved": (sent as f64 / args.secs * 10.0).round() / 10.0,
        "sent": sent,
        "received": received,
        "lost": sent.saturating_sub(received),
        "sent_warmup": shared.sent_warmup.load(Ordering::Relaxed),
        "received_warmup": shared.received_warmup.load(Ordering::Relaxed),
        "latency_ms": {
            "min": ms(latencies.first().copied().unwrap_or(0)),
            "mean": ms(mean_ns),
            "p50": ms(percentile(&latencies, 50.0)),
            "p90": ms(percentile(&latencies, 90.0)),
            "p99": ms(percentile(&latencies, 99.0)),
            "p99_9": ms(percentile(&latencies, 99.9)),
            "max": ms(latencies.last().copied().unwrap_or(0)),
        },
        "numbered": args.numbered,
        // Send to the Ack covering the signal (numbered only; across gateways that includes
        // the recipient's gateway's verdict).
        "ack_latency_ms": (!ack_latencies.is_empty()).then(|| json!({
            "count": ack_latencies.len(),
            "p50": ms(percentile(&ack_latencies, 50.0)),
            "p90": ms(percentile(&ack_latencies, 90.0)),
            "p99": ms(percentile(&ack_latencies, 99.0)),
            "p99_9": ms(percentile(&ack_latencies, 99.9)),
            "max": ms(ack_latencies.last().copied().unwrap_or(0)),
        })),
        "never_acked": unacked,
        "gateway_cpu_percent": cpu_percent(gateway_before, gateway_after),
        "loadgen_cpu_percent": cpu_percent(self_before, self_after),
        // Every core together (200 = both of 2 cores busy); minus the two above: others.
        "machine_cpu_percent": cpu_percent(machine_before, machine_after),
        "watched_cpu_percent": watched_cpu,
        "acks_sent": shared.acks_sent.load(Ordering::Relaxed),
        "other_frames": other_frames,
        "connections_closed": closed.len(),
        "closed_examples": closed.iter().take(5).collect::<Vec<_>>(),
        "setup_secs": (setup_secs * 1000.0).round() / 1000.0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        let mut template = vec![0u8; 32];
        let data = payload(&mut template, PHASE_MEASURED);
        assert_eq!(data.len(), 32);
        let (stamp, phase) = read_payload(&data).expect("long enough");
        assert_eq!(phase, PHASE_MEASURED);
        assert!(stamp <= stamp_now());
        assert!(read_payload(&data[..5]).is_none());
    }

    #[test]
    fn text_payload_round_trips() {
        let text = text_payload(200, PHASE_WARMUP);
        assert_eq!(text.len(), 200);
        let (stamp, phase) = read_text_payload(&text).expect("long enough");
        assert_eq!(phase, PHASE_WARMUP);
        assert!(stamp <= stamp_now());
        assert_eq!(
            text_payload(3, PHASE_MEASURED).len(),
            17,
            "never shorter than its stamp"
        );
        assert!(read_text_payload("0123456789abcdef").is_none());
        assert!(read_text_payload("zz23456789abcdef1").is_none());
        assert!(read_text_payload("0123456789abcdeé1").is_none());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&values, 50.0), 500);
        assert_eq!(percentile(&values, 99.9), 999);
        assert_eq!(percentile(&values, 100.0), 1000);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn numbering_settles_in_flight_signals_up_to_the_ack() {
        let shared = Shared::default();
        let mut off = Numbering::new(0);
        assert_eq!(off.next(true, &shared), 0);
        assert!(off.in_flight.is_empty());
        let mut on = Numbering::new(2);
        assert_eq!(on.next(false, &shared), 2);
        assert_eq!(on.next(true, &shared), 3);
        assert_eq!(on.next(true, &shared), 4);
        assert_eq!(shared.unacked.load(Ordering::Relaxed), 3);
        on.acked(3, &shared);
        assert_eq!(
            on.latencies_ns.len(),
            1,
            "only the measured one of the two acked"
        );
        assert_eq!(on.in_flight.len(), 1);
        assert_eq!(shared.unacked.load(Ordering::Relaxed), 1);
        on.acked(1, &shared);
        assert_eq!(on.in_flight.len(), 1);
    }

    #[test]
    fn watch_specs_parse() {
        assert_eq!(parse_watch("nats-0=42"), Ok(("nats-0".to_string(), 42)));
        assert!(parse_watch("42").is_err());
        assert!(parse_watch("=42").is_err());
        assert!(parse_watch("a=b").is_err());
    }

    #[test]
    fn cpu_ticks_of_this_process_and_the_machine() {
        assert!(cpu_ticks(std::process::id()).is_some());
        assert!(machine_busy_ticks().is_some());
    }
}
