//! The processes of the network-cut benchmark; `bench/run.py` starts them in network
//! namespaces and reads what they print (`bench/cluster.py` uses them on loopback).
//!
//! - `clients`: opens N signalgate sessions (WebSocket or WebTransport, by the URL's scheme)
//!   from the given source addresses, joins each to its own room (`PREFIX{i}`; with
//!   `--room-size K`, K sessions per room), then stays quiet: the gateway's probes are answered by the client's network stack (tungstenite
//!   answers Pings, quinn ACKs keep-alives), as a browser's would. With `--protocol socketio`,
//!   Socket.IO sessions of the baseline server instead ([`socketio`]; engine.io pings answered).
//! - `observer`: joins the same rooms from the gateway's side of the cut and writes every
//!   presence change it receives as a JSON line stamped with CLOCK_REALTIME.
//! - `storm` ([`storm`]): a reconnect storm (`bench/storm.py`): N sessions reconnect at once
//!   when their gateway is restarted, or arrive at once.
//! - `members`: joins rooms once and prints who is listed in each (`bench/cluster.py` uses
//!   it to look for members of a lost gateway that were never removed).
//!
//! Two throughput benchmarks live here too (see bench/README.md):
//!
//! - `relay` ([`relay`]): one-way latency of signals relayed by a running gateway at a given
//!   rate (`bench/relay.py` drives it); with `--protocol socketio`, by the Socket.IO baseline.
//! - `hub-cost` ([`hub_cost`]): wall-clock cost of one input to the sans-IO hub, no I/O
//!   (`bench/hub_cost.sh` also counts its instructions under callgrind).
//!
//! Every process is bounded in time (`--max-secs`) and stops by itself.

mod frames;
mod hub_cost;
mod relay;
mod socketio;
mod storm;

use std::future::Future;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use signalgate::client::{ClientError, ConnectOptions, Connection, Session, Trust};
use signalgate::proto::{PresenceState, Reason, ServerFrame, Transport, server_frame};
use tokio::sync::{Semaphore, mpsc};

#[derive(Parser)]
#[command(about = "Load generator and observer of the signalgate network-cut benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open N quiet sessions, each in its own room, and keep them until stopped.
    Clients(ClientsArgs),
    /// Join rooms and record every presence change received (JSON lines).
    Observer(ObserverArgs),
    /// Join rooms, print each room's member list (one JSON line per room), and exit.
    Members(MembersArgs),
    /// Relay latency: sender/receiver pairs through a running gateway (or the Socket.IO
    /// baseline, `--protocol socketio`) at a given rate.
    Relay(relay::RelayArgs),
    /// Cost of one input to the sans-IO hub (no I/O): ns per input, best of several runs.
    HubCost(hub_cost::HubCostArgs),
    /// Reconnect storm: N sessions that reconnect at once when lost (or arrive at once).
    Storm(storm::StormArgs),
}

/// What the load generator speaks to the server under test.
#[derive(Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Protocol {
    /// signalgate's protobuf frames (WebSocket or WebTransport, by the URL's scheme).
    #[default]
    Signalgate,
    /// Socket.IO 4 (engine.io v4 / Socket.IO v5 text packets over a plain WebSocket), to
    /// `bench/baselines/socketio/relay_server.js` at `ws://HOST:PORT/socket.io/`.
    Socketio,
}

impl Protocol {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::Signalgate => "signalgate",
            Protocol::Socketio => "socketio",
        }
    }
}

#[derive(clap::Args)]
struct Common {
    /// `wss://HOST:PORT/ws` (WebSocket) or `https://HOST:PORT/wt` (WebTransport); for
    /// `--protocol socketio`, `ws://HOST:PORT/socket.io/`.
    #[arg(long)]
    url: String,
    /// SHA-256 of the gateway's certificate (64 hex characters, as the gateway prints it);
    /// needed for signalgate over wss:// and https://.
    #[arg(long)]
    cert_sha256: Option<String>,
    /// Exit after this many seconds, whatever happens.
    #[arg(long, default_value_t = 900)]
    max_secs: u64,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 48)]
    concurrency: usize,
}

/// N sessions, numbered from `first`, from these source addresses.
#[derive(clap::Args)]
pub(crate) struct Sessions {
    /// Number of sessions.
    #[arg(long)]
    pub(crate) count: usize,
    /// Index of the first session (its room is PREFIX{first}).
    #[arg(long, default_value_t = 0)]
    pub(crate) first: usize,
    #[arg(long)]
    pub(crate) room_prefix: String,
    /// Source addresses, used in turn (spreads the ephemeral ports).
    #[arg(long, value_delimiter = ',')]
    pub(crate) bind: Vec<IpAddr>,
}

#[derive(clap::Args)]
struct ClientsArgs {
    #[command(flatten)]
    common: Common,
    /// What the sessions speak (socketio: each joins its room with an acked `join` event).
    #[arg(long, value_enum, default_value_t = Protocol::Signalgate)]
    protocol: Protocol,
    #[command(flatten)]
    sessions: Sessions,
    /// Sessions per room: session i joins PREFIX{i / room_size} (1: each its own room).
    #[arg(long, default_value_t = 1)]
    room_size: usize,
    /// Session i starts after a delay spread evenly over this many milliseconds, so that
    /// the sessions' probe cycles (and so the cut) fall at every phase.
    #[arg(long, default_value_t = 0)]
    spread_ms: u64,
}

/// Evenly spread fractions in [0, 1) for i = 0, 1, 2, ... (golden-ratio sequence).
fn spread_fraction(i: usize) -> f64 {
    (i as f64 * 0.618_033_988_749_894_9).fract()
}

#[derive(clap::Args)]
struct ObserverArgs {
    #[command(flatten)]
    common: Common,
    /// Rooms to join, as PREFIX:FIRST:COUNT (repeatable).
    #[arg(long = "rooms", required = true)]
    rooms: Vec<String>,
    /// Rooms per observer session (the gateway's --max-rooms-per-session must allow it).
    #[arg(long, default_value_t = 1000)]
    rooms_per_session: usize,
    /// Where to write the JSON lines.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct MembersArgs {
    #[command(flatten)]
    common: Common,
    /// Rooms to list, as PREFIX:FIRST:COUNT (repeatable).
    #[arg(long = "rooms", required = true)]
    rooms: Vec<String>,
    /// Rooms per session (the gateway's --max-rooms-per-session must allow it).
    #[arg(long, default_value_t = 1000)]
    rooms_per_session: usize,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One JSON line on stdout (the orchestrator reads them).
pub(crate) fn emit(line: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub(crate) async fn connect(
    url: &str,
    options: &ConnectOptions,
) -> Result<Connection, ClientError> {
    if url.starts_with("https://") {
        Connection::webtransport(url, options).await
    } else {
        Connection::websocket(url, options).await
    }
}

fn main() -> Result<(), String> {
    let cli = Cli::parse();
    let cli = match cli.command {
        Command::HubCost(args) => return run_hub_cost(args),
        command => Cli { command },
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio runtime: {e}"))?;
    let (common, work) = match cli.command {
        Command::Clients(args) => {
            let max = args.common.max_secs;
            (max, runtime.spawn(reporting(clients(args))))
        }
        Command::Observer(args) => {
            let max = args.common.max_secs;
            (max, runtime.spawn(reporting(observer(args))))
        }
        Command::Members(args) => {
            let max = args.common.max_secs;
            (max, runtime.spawn(reporting(members(args))))
        }
        Command::Relay(args) => {
            let max = args.max_secs;
            let work = async move {
                emit(relay::relay(args).await?);
                Ok(())
            };
            (max, runtime.spawn(reporting(work)))
        }
        Command::Storm(args) => {
            let max = args.common.max_secs;
            (max, runtime.spawn(storm::storm(args)))
        }
        Command::HubCost(_) => unreachable!("run without a runtime"),
    };
    let result = runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        tokio::select! {
            done = work => done.map_err(|e| e.to_string())?,
            _ = term.recv() => Ok(()),
            _ = int.recv() => Ok(()),
            () = tokio::time::sleep(Duration::from_secs(common)) => {
                emit(json!({"event": "max_secs", "t": now_secs()}));
                Ok(())
            }
        }
    });
    emit(json!({"event": "exit", "t": now_secs()}));
    // Thousands of connections need no orderly teardown: the kernel closes them.
    std::process::exit(if result.is_ok() { 0 } else { 1 });
}

/// Runs `work`; its error, if any, also as a JSON line `{"event": "error", "error"}`.
async fn reporting(work: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    let done = work.await;
    if let Err(error) = &done {
        emit(json!({"event": "error", "error": error}));
    }
    done
}

/// `hub-cost` runs on the main thread, without a runtime; a watchdog bounds it in time.
fn run_hub_cost(args: hub_cost::HubCostArgs) -> Result<(), String> {
    let max = Duration::from_secs(args.max_secs);
    std::thread::spawn(move || {
        std::thread::sleep(max);
        emit(json!({"event": "max_secs", "t": now_secs()}));
        std::process::exit(1);
    });
    emit(hub_cost::hub_cost(args)?);
    Ok(())
}

/// How a signalgate client trusts the gateway: `--cert-sha256`, required over TLS.
pub(crate) fn trust(url: &str, cert_sha256: Option<&str>) -> Result<Trust, String> {
    match cert_sha256 {
        Some(hex) => Trust::sha256_hex(hex).map_err(|e| e.to_string()),
        None if url.starts_with("ws://") => Ok(Trust::WebPki), // No TLS: never used.
        None => Err(format!(
            "--cert-sha256 is needed for signalgate at {url} (the gateway prints its certificate's SHA-256)"
        )),
    }
}

fn options(common: &Common, bind: Option<IpAddr>) -> Result<ConnectOptions, String> {
    let mut options = ConnectOptions::new(trust(&common.url, common.cert_sha256.as_deref())?);
    options.bind = bind;
    Ok(options)
}

/// Runs `attempt` up to three times, each within 30 s, waiting a little longer before each
/// retry (a loaded machine drops the odd handshake); the last error if none succeeded.
pub(crate) async fn with_retries<T, F, Fut>(mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    for n in 0..3 {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(500 * n)).await;
        }
        match tokio::time::timeout(Duration::from_secs(30), attempt()).await {
            Ok(Ok(opened)) => return Ok(opened),
            Ok(Err(error)) => last = error,
            Err(_) => last = "timed out".into(),
        }
    }
    Err(last)
}

/// Connect, Hello, Join, with a few retries.
async fn open_session(
    url: &str,
    options: &ConnectOptions,
    rooms: &[String],
) -> Result<Session, String> {
    with_retries(|| async move {
        let conn = connect(url, options).await.map_err(|e| e.to_string())?;
        let mut session = Session::start(conn).await.map_err(|e| e.to_string())?;
        session.set_reply_timeout(Duration::from_secs(30));
        for room in rooms {
            session.join(room).await.map_err(|e| e.to_string())?;
        }
        Ok(session)
    })
    .await
}

/// How `clients` opens its quiet sessions.
enum Dial {
    Signalgate(ConnectOptions),
    Socketio(Option<IpAddr>),
}

/// A quiet session of `clients`.
enum Idle {
    Signalgate(Box<Session>),
    Socketio(socketio::Client),
}

impl Dial {
    async fn open(&self, url: &str, room: String) -> Result<Idle, String> {
        let rooms = [room];
        match self {
            Dial::Signalgate(options) => open_session(url, options, &rooms)
                .await
                .map(|session| Idle::Signalgate(Box::new(session))),
            Dial::Socketio(bind) => socketio::open(url, *bind, &rooms).await.map(Idle::Socketio),
        }
    }
}

impl Idle {
    /// Reads (and drops) whatever arrives until the connection ends: why it did.
    async fn until_closed(self) -> String {
        match self {
            Idle::Signalgate(mut session) => loop {
                match session.next_event(Duration::from_secs(3600)).await {
                    Ok(_) | Err(ClientError::Timeout(_)) => continue,
                    Err(error) => break error.to_string(),
                }
            },
            Idle::Socketio(mut client) => loop {
                if let Err(why) = client.recv().await {
                    break why;
                }
            },
        }
    }
}

enum ClientReport {
    Ready,
    Failed { index: usize, error: String },
    Closed { index: usize, error: String },
}

async fn clients(args: ClientsArgs) -> Result<(), String> {
    let gate = Arc::new(Semaphore::new(args.common.concurrency.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel();
    for n in 0..args.sessions.count {
        let index = args.sessions.first + n;
        let bind = (!args.sessions.bind.is_empty())
            .then(|| args.sessions.bind[n % args.sessions.bind.len()]);
        let dial = match args.protocol {
            Protocol::Signalgate => Dial::Signalgate(options(&args.common, bind)?),
            Protocol::Socketio => Dial::Socketio(bind),
        };
        let url = args.common.url.clone();
        let room = format!(
            "{}{}",
            args.sessions.room_prefix,
            index / args.room_size.max(1)
        );
        let gate = gate.clone();
        let tx = tx.clone();
        let delay = Duration::from_secs_f64(args.spread_ms as f64 / 1000.0 * spread_fraction(n));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let permit = gate.acquire_owned().await;
            let idle = match dial.open(&url, room).await {
                Ok(idle) => idle,
                Err(error) => {
                    let _ = tx.send(ClientReport::Failed { index, error });
                    return;
                }
            };
            drop(permit);
            let _ = tx.send(ClientReport::Ready);
            // Quiet from here on.
            let error = idle.until_closed().await;
            let _ = tx.send(ClientReport::Closed { index, error });
        });
    }
    drop(tx);
    let (mut connected, mut failed) = (0usize, 0usize);
    let mut announced = args.sessions.count == 0;
    if announced {
        emit(json!({"event": "ready", "connected": 0, "failed": 0, "t": now_secs()}));
    }
    while let Some(report) = rx.recv().await {
        match report {
            ClientReport::Ready => connected += 1,
            ClientReport::Failed { index, error } => {
                failed += 1;
                if failed <= 5 {
                    emit(json!({"event": "connect_failed", "index": index, "error": error}));
                }
            }
            ClientReport::Closed { index, error } => {
                emit(
                    json!({"event": "client_closed", "index": index, "t": now_secs(), "error": error}),
                );
            }
        }
        if !announced && connected + failed == args.sessions.count {
            announced = true;
            emit(
                json!({"event": "ready", "connected": connected, "failed": failed, "t": now_secs()}),
            );
        }
    }
    std::future::pending().await
}

fn reason_name(reason: i32) -> &'static str {
    Reason::try_from(reason).map_or("unknown", |r| r.as_str_name())
}

/// The JSON line for a frame the observer received, if it is about presence.
fn presence_line(frame: &ServerFrame, t: f64) -> Option<Value> {
    match frame.msg.as_ref()? {
        server_frame::Msg::PeerState(state) => {
            let presence = presence_name(state.state);
            let detected_by =
                Transport::try_from(state.detected_by).map_or("unknown", |t| match t {
                    Transport::Websocket => "websocket",
                    Transport::Webtransport => "webtransport",
                    Transport::Unspecified => "unspecified",
                });
            Some(json!({
                "t": t, "kind": presence, "room": state.room, "peer": state.peer_id,
                "reason": reason_name(state.reason), "silent_for_ms": state.silent_for_ms,
                "detected_by": detected_by,
            }))
        }
        server_frame::Msg::PeerLeft(left) => Some(json!({
            "t": t, "kind": "left", "room": left.room, "peer": left.peer_id,
            "reason": reason_name(left.reason),
        })),
        server_frame::Msg::PeerJoined(joined) => Some(json!({
            "t": t, "kind": "joined", "room": joined.room,
            "peer": joined.peer.as_ref().map(|p| p.peer_id.clone()).unwrap_or_default(),
        })),
        server_frame::Msg::GoAway(_) => Some(json!({"t": t, "kind": "go_away"})),
        _ => None,
    }
}

fn expand_rooms(specs: &[String]) -> Result<Vec<String>, String> {
    let mut rooms = Vec::new();
    for spec in specs {
        let bad = || format!("--rooms {spec:?} is not PREFIX:FIRST:COUNT");
        let mut parts = spec.rsplitn(3, ':');
        let count: usize = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let first: usize = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let prefix = parts.next().ok_or_else(bad)?;
        rooms.extend((first..first + count).map(|i| format!("{prefix}{i}")));
    }
    Ok(rooms)
}

async fn observer(args: ObserverArgs) -> Result<(), String> {
    let rooms = expand_rooms(&args.rooms)?;
    let file = std::fs::File::create(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let (lines_tx, mut lines_rx) = mpsc::unbounded_channel::<Value>();
    // A plain thread writes the file, so the sessions never wait for the disk.
    std::thread::spawn(move || {
        let mut out = std::io::BufWriter::new(file);
        while let Some(line) = lines_rx.blocking_recv() {
            let _ = writeln!(out, "{line}");
            while let Ok(line) = lines_rx.try_recv() {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
        }
    });

    let gate = Arc::new(Semaphore::new(args.common.concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<usize, String>>();
    let chunks: Vec<Vec<String>> = rooms
        .chunks(args.rooms_per_session.max(1))
        .map(<[String]>::to_vec)
        .collect();
    let sessions = chunks.len();
    for (n, chunk) in chunks.into_iter().enumerate() {
        let options = options(&args.common, None)?;
        let url = args.common.url.clone();
        let gate = gate.clone();
        let ready_tx = ready_tx.clone();
        let lines_tx = lines_tx.clone();
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let mut session = match open_session(&url, &options, &chunk).await {
                Ok(session) => session,
                Err(error) => {
                    let _ = ready_tx.send(Err(error));
                    return;
                }
            };
            drop(permit);
            let _ = ready_tx.send(Ok(chunk.len()));
            loop {
                match session.next_event(Duration::from_secs(3600)).await {
                    Ok(frame) => {
                        if let Some(line) = presence_line(&frame, now_secs()) {
                            let _ = lines_tx.send(line);
                        }
                    }
                    Err(ClientError::Timeout(_)) => continue,
                    Err(error) => {
                        let line = json!({"t": now_secs(), "kind": "observer_closed", "session": n, "error": error.to_string()});
                        emit(line.clone());
                        let _ = lines_tx.send(line);
                        return;
                    }
                }
            }
        });
    }
    drop(ready_tx);
    let (mut joined, mut failed) = (0usize, Vec::new());
    for _ in 0..sessions {
        match ready_rx.recv().await {
            Some(Ok(n)) => joined += n,
            Some(Err(error)) => failed.push(error),
            None => break,
        }
    }
    emit(json!({
        "event": "ready", "sessions": sessions, "rooms": joined,
        "failed": failed.len(), "errors": failed.iter().take(5).collect::<Vec<_>>(), "t": now_secs(),
    }));
    std::future::pending().await
}

fn presence_name(state: i32) -> &'static str {
    PresenceState::try_from(state).map_or("unknown", |s| match s {
        PresenceState::Unreachable => "unreachable",
        PresenceState::Online => "online",
        PresenceState::Unspecified => "unspecified",
    })
}

/// Joins every room (up to `rooms_per_session` per session, one session after the other)
/// and prints `{"event": "members", "room", "peers": [[peer_id, state], ...]}` for each: the
/// members the gateway lists in Joined, this session excluded. Then `{"event": "done"}`.
async fn members(args: MembersArgs) -> Result<(), String> {
    let rooms = expand_rooms(&args.rooms)?;
    let options = options(&args.common, None)?;
    let mut listed = 0usize;
    for chunk in rooms.chunks(args.rooms_per_session.max(1)) {
        let conn = connect(&args.common.url, &options)
            .await
            .map_err(|e| e.to_string())?;
        let mut session = Session::start(conn).await.map_err(|e| e.to_string())?;
        for room in chunk {
            let joined = session.join(room).await.map_err(|e| e.to_string())?;
            let peers: Vec<Value> = joined
                .peers
                .iter()
                .map(|p| json!([p.peer_id, presence_name(p.state)]))
                .collect();
            listed += peers.len();
            emit(json!({"event": "members", "room": room, "peers": peers}));
        }
        session.close().await;
    }
    emit(json!({"event": "done", "rooms": rooms.len(), "members": listed, "t": now_secs()}));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_specs_expand_in_order() {
        let rooms = expand_rooms(&["ws-a:3:2".into(), "x:y:0:1".into()]).expect("valid");
        assert_eq!(rooms, ["ws-a3", "ws-a4", "x:y0"]);
        assert!(expand_rooms(&["nocount".into()]).is_err());
    }

    #[test]
    fn spread_fractions_cover_the_interval_evenly() {
        let mut buckets = [0usize; 10];
        for i in 0..1000 {
            let f = spread_fraction(i);
            assert!((0.0..1.0).contains(&f));
            buckets[(f * 10.0) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (90..=110).contains(&b)),
            "{buckets:?}"
        );
    }
}
