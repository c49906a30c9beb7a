//! `storm`: a reconnect storm, timed from the client side (`bench/storm.py` drives it).
//!
//! - Restart (the default): opens N sessions (session i joins its own room `PREFIX{i}`, from
//!   the `--bind` addresses in turn, at most `--concurrency` being set up at once) and prints
//!   `ready`. From then on, whenever a session's connection is lost it reconnects **at once**,
//!   with no gate: a fresh Hello and Join (the gateway was restarted, there is nothing to
//!   resume); a failed attempt is retried after a jittered `--retry-min-ms`…`--retry-max-ms`,
//!   until the process ends. A killed gateway's TCP connections end with a FIN or a reset
//!   from its kernel; a QUIC connection ends with nothing (a restarted gateway's stateless
//!   resets carry another key), so over WebTransport the client finds out as the JS SDK
//!   does: an app Ping every `--ping-ms`, and lost after `--dead-after-ms` without a frame
//!   (until the first loss; `--keep-pinging` for always).
//! - `--at-once`: N new sessions connect at the same instant (`--start-at`, CLOCK_REALTIME,
//!   so that several processes start together), with no gate, and are timed from it.
//!
//! Per session it keeps the CLOCK_REALTIME of its first loss, of its first reconnect attempt,
//! of the transport being up (TLS + upgrade, or QUIC + WebTransport session), of the Welcome
//! and of the Joined, and the attempts (`--records FILE`: one JSON line per session, so that
//! an orchestrator can time the storm from the gateway's restart and merge processes). Once
//! every lost session rejoined (`--expect-lost` of them at least; by default all), or after
//! `--storm-timeout`, one `storm` line sums it up. The sessions then stay; a later loss is
//! reconnected the same way and reported as a `lost_after` line.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use signalgate::client::{ClientError, ConnectOptions, Session};
use signalgate::proto::{Ping, client_frame};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::{Common, Sessions, connect, emit, now_secs, open_session, options};

#[derive(clap::Args)]
pub(crate) struct StormArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    #[command(flatten)]
    sessions: Sessions,
    /// N new sessions arrive at once (no gate) instead of reconnecting after a loss.
    #[arg(long)]
    at_once: bool,
    /// With --at-once: the instant to start (seconds since the Unix epoch, CLOCK_REALTIME);
    /// default now.
    #[arg(long)]
    start_at: Option<f64>,
    /// Seconds from the first loss (--at-once: from the start) until the `storm` line is
    /// printed even if some sessions are still down.
    #[arg(long, default_value_t = 30.0)]
    storm_timeout: f64,
    /// The storm is over once this many sessions were lost and all of them rejoined
    /// (default: every session that opened).
    #[arg(long)]
    expect_lost: Option<usize>,
    /// A failed attempt is retried after a random delay between these (milliseconds).
    #[arg(long, default_value_t = 100)]
    retry_min_ms: u64,
    #[arg(long, default_value_t = 300)]
    retry_max_ms: u64,
    /// One attempt (connect, Hello, Join) gives up after this long.
    #[arg(long, default_value_t = 10_000)]
    attempt_timeout_ms: u64,
    /// App-level Ping every this many milliseconds (0: none), until the session's first loss
    /// (with --keep-pinging, always).
    #[arg(long, default_value_t = 0)]
    ping_ms: u64,
    /// The connection counts as lost after this long without a frame (0: only when the
    /// transport says so); like --ping-ms, until the first loss.
    #[arg(long, default_value_t = 0)]
    dead_after_ms: u64,
    /// Keep pinging (and watching for silence) after a session rejoined, as the JS SDK does.
    /// Off by default: on one machine the clients' own pings would take CPU from the gateway,
    /// and a rejoined session declared dead by the gateway is told so (a close).
    #[arg(long)]
    keep_pinging: bool,
    /// Write one JSON line per session here when the storm is over.
    #[arg(long)]
    records: Option<PathBuf>,
}

/// What the session tasks tell the main loop.
enum Report {
    /// Restart mode: the session opened before the storm.
    Opened,
    OpenFailed {
        index: usize,
        error: String,
    },
    Lost {
        slot: usize,
        t: f64,
        error: String,
    },
    Joined {
        slot: usize,
        cycle: Cycle,
    },
    AttemptFailed {
        slot: usize,
        t_first: f64,
        error: String,
    },
}

/// One way from down to joined: the first attempt, and the stages of the one that made it
/// (the failed attempts are reported as they fail).
#[derive(Debug, Clone, Copy)]
struct Cycle {
    t_attempt: f64,
    t_connected: f64,
    t_welcome: f64,
    t_joined: f64,
}

/// One session's record: its first loss, the first attempt after it, the latest rejoin.
#[derive(Debug, Clone, Default)]
struct Record {
    t_loss: Option<f64>,
    t_attempt: Option<f64>,
    t_connected: Option<f64>,
    t_welcome: Option<f64>,
    t_joined: Option<f64>,
    attempts: u32,
    losses: u32,
    down: bool,
    opened: bool,
}

struct Shared {
    url: String,
    /// One per `--bind` address (or one without).
    options: Vec<ConnectOptions>,
    room_prefix: String,
    first: usize,
    at_once: bool,
    start_at: f64,
    retry: (u64, u64),
    attempt_timeout: Duration,
    ping: Option<Duration>,
    dead_after: Option<Duration>,
    keep_pinging: bool,
    gate: Arc<Semaphore>,
}

/// Small deterministic jitter (xorshift64*), seeded per session.
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Jitter {
        Jitter(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn fraction(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn millis_between(&mut self, (min, max): (u64, u64)) -> Duration {
        let span = max.saturating_sub(min) as f64;
        Duration::from_secs_f64((min as f64 + span * self.fraction()) / 1000.0)
    }
}

/// The tokio instant of a CLOCK_REALTIME instant (now if it is past).
fn instant_of(epoch_secs: f64) -> Instant {
    Instant::now() + Duration::from_secs_f64((epoch_secs - now_secs()).max(0.0))
}

pub(crate) async fn storm(args: StormArgs) -> Result<(), String> {
    let binds: Vec<Option<IpAddr>> = if args.sessions.bind.is_empty() {
        vec![None]
    } else {
        args.sessions.bind.iter().copied().map(Some).collect()
    };
    let options = binds
        .into_iter()
        .map(|bind| options(&args.common, bind))
        .collect::<Result<Vec<_>, _>>()?;
    let start_at = args.start_at.unwrap_or_else(now_secs);
    let shared = Arc::new(Shared {
        url: args.common.url.clone(),
        options,
        room_prefix: args.sessions.room_prefix.clone(),
        first: args.sessions.first,
        at_once: args.at_once,
        start_at,
        retry: (args.retry_min_ms, args.retry_max_ms.max(args.retry_min_ms)),
        attempt_timeout: Duration::from_millis(args.attempt_timeout_ms.max(1)),
        ping: (args.ping_ms > 0).then(|| Duration::from_millis(args.ping_ms)),
        dead_after: (args.dead_after_ms > 0).then(|| Duration::from_millis(args.dead_after_ms)),
        keep_pinging: args.keep_pinging,
        gate: Arc::new(Semaphore::new(args.common.concurrency.max(1))),
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    for slot in 0..args.sessions.count {
        tokio::spawn(session_task(shared.clone(), slot, tx.clone()));
    }
    drop(tx);
    let mode = if args.at_once { "at_once" } else { "restart" };
    if args.at_once {
        emit(
            json!({"event": "armed", "count": args.sessions.count, "start_at": start_at, "t": now_secs()}),
        );
    }

    let mut records = vec![Record::default(); args.sessions.count];
    let mut errors: HashMap<String, usize> = HashMap::new();
    let mut losses: HashMap<String, usize> = HashMap::new();
    let (mut opened, mut open_failed) = (0usize, 0usize);
    let mut ready = args.at_once;
    if !ready && args.sessions.count == 0 {
        ready = true;
        emit(json!({"event": "ready", "connected": 0, "failed": 0, "t": now_secs()}));
    }
    let mut deadline = args
        .at_once
        .then(|| instant_of(start_at + args.storm_timeout));
    let mut over = false;
    loop {
        let report = match deadline.filter(|_| !over) {
            Some(deadline) => tokio::select! {
                report = rx.recv() => report,
                () = tokio::time::sleep_until(deadline) => {
                    over = true;
                    finish(&args, mode, &records, [&errors, &losses], true);
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(report) = report else {
            // Every session task ended (none opened): nothing more will happen.
            if !over {
                finish(&args, mode, &records, [&errors, &losses], false);
            }
            return Ok(());
        };
        match report {
            Report::Opened => opened += 1,
            Report::OpenFailed { index, error } => {
                open_failed += 1;
                if open_failed <= 5 {
                    emit(json!({"event": "connect_failed", "index": index, "error": error}));
                }
            }
            Report::Lost { slot, t, error } => {
                let record = &mut records[slot];
                if record.losses == 0 {
                    record.t_loss = Some(t);
                }
                record.losses += 1;
                record.down = true;
                if deadline.is_none() {
                    deadline = Some(Instant::now() + Duration::from_secs_f64(args.storm_timeout));
                }
                if over {
                    emit(
                        json!({"event": "lost_after", "index": shared.first + slot, "t": t, "error": error}),
                    );
                }
                count_kind(&mut losses, error.replace(&shared.url, "URL"));
            }
            Report::Joined { slot, cycle } => {
                let record = &mut records[slot];
                record.t_attempt.get_or_insert(cycle.t_attempt);
                record.t_connected = Some(cycle.t_connected);
                record.t_welcome = Some(cycle.t_welcome);
                record.t_joined = Some(cycle.t_joined);
                record.attempts += 1; // The failed ones were counted as they failed.
                record.down = false;
                record.opened = true;
            }
            Report::AttemptFailed {
                slot,
                t_first,
                error,
            } => {
                let record = &mut records[slot];
                record.t_attempt.get_or_insert(t_first);
                record.attempts += 1;
                count_kind(&mut errors, error.replace(&shared.url, "URL"));
            }
        }
        if !ready && opened + open_failed == args.sessions.count {
            ready = true;
            emit(
                json!({"event": "ready", "connected": opened, "failed": open_failed, "t": now_secs()}),
            );
        }
        if !over && ready && storm_over(&args, &records, opened) {
            over = true;
            finish(&args, mode, &records, [&errors, &losses], false);
        }
    }
}

/// Counts one more of a kind of error (at most 40 kinds; the rest as `(other)`).
fn count_kind(counts: &mut HashMap<String, usize>, text: String) {
    let key: String = text.chars().take(160).collect();
    if counts.len() < 40 || counts.contains_key(&key) {
        *counts.entry(key).or_default() += 1;
    } else {
        *counts.entry("(other)".into()).or_default() += 1;
    }
}

/// Restart: `expect_lost` (default every session that opened) were lost and none is down.
/// At once: every session joined.
fn storm_over(args: &StormArgs, records: &[Record], opened: usize) -> bool {
    if args.at_once {
        return records.iter().all(|r| r.t_joined.is_some());
    }
    let lost = records.iter().filter(|r| r.losses > 0).count();
    let down = records.iter().any(|r| r.down);
    lost > 0 && lost >= args.expect_lost.unwrap_or(opened) && !down
}

/// Prints the `storm` line and writes the records.
fn finish(
    args: &StormArgs,
    mode: &str,
    records: &[Record],
    kinds: [&HashMap<String, usize>; 2],
    timed_out: bool,
) {
    if let Some(path) = &args.records {
        let mut text = String::new();
        for (slot, r) in records.iter().enumerate() {
            let line = json!({
                "i": args.sessions.first + slot, "t_loss": r.t_loss, "t_attempt": r.t_attempt,
                "t_connected": r.t_connected, "t_welcome": r.t_welcome, "t_joined": r.t_joined,
                "attempts": r.attempts, "losses": r.losses, "down": r.down,
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        if let Err(error) = std::fs::write(path, text) {
            emit(
                json!({"event": "error", "error": format!("cannot write {}: {error}", path.display())}),
            );
        }
    }
    emit(summary(args, mode, records, kinds, timed_out));
}

fn summary(
    args: &StormArgs,
    mode: &str,
    records: &[Record],
    [errors, losses]: [&HashMap<String, usize>; 2],
    timed_out: bool,
) -> Value {
    let start = args.at_once.then(|| args.start_at.unwrap_or(0.0));
    let involved: Vec<&Record> = if args.at_once {
        records.iter().collect()
    } else {
        records.iter().filter(|r| r.losses > 0).collect()
    };
    let settled = |r: &Record| !r.down && r.t_joined.is_some();
    let rejoined = involved.iter().filter(|r| settled(r)).count();
    // Seconds from the first attempt (at once: from the start) to each stage.
    let from = |r: &Record| start.or(r.t_attempt);
    let stage = |pick: fn(&Record) -> Option<f64>| {
        let mut values: Vec<f64> = involved
            .iter()
            .filter(|r| settled(r))
            .filter_map(|r| Some(pick(r)? - from(r)?))
            .collect();
        values.sort_by(f64::total_cmp);
        quantiles(&values)
    };
    let min = |pick: fn(&Record) -> Option<f64>| {
        involved
            .iter()
            .filter_map(|r| pick(r))
            .min_by(f64::total_cmp)
    };
    let max = |pick: fn(&Record) -> Option<f64>| {
        involved
            .iter()
            .filter_map(|r| pick(r))
            .max_by(f64::total_cmp)
    };
    let most = |counts: &HashMap<String, usize>| {
        let mut counts: Vec<(&String, &usize)> = counts.iter().collect();
        counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        counts
            .iter()
            .take(12)
            .map(|(k, v)| json!([k, v]))
            .collect::<Vec<_>>()
    };
    json!({
        "event": "storm",
        "mode": mode,
        "n": records.len(),
        "opened": records.iter().filter(|r| r.opened || r.losses > 0).count(),
        "lost": if args.at_once { 0 } else { involved.len() },
        "rejoined": rejoined,
        "failed": involved.len() - rejoined,
        "lost_again": involved.iter().filter(|r| r.losses > 1).count(),
        "attempts": involved.iter().map(|r| u64::from(r.attempts)).sum::<u64>(),
        "timed_out": timed_out,
        "t_start": start,
        "t_first_loss": min(|r| r.t_loss),
        "t_last_loss": max(|r| r.t_loss),
        "t_first_attempt": min(|r| r.t_attempt),
        "t_last_joined": max(|r| r.t_joined),
        "joined_s": stage(|r| r.t_joined),
        "welcome_s": stage(|r| r.t_welcome),
        "connected_s": stage(|r| r.t_connected),
        "errors": most(errors),
        "loss_reasons": most(losses),
        "t": now_secs(),
    })
}

/// p50 / p99 / max, nearest rank, of sorted values (seconds, to the microsecond).
fn quantiles(sorted: &[f64]) -> Value {
    let rank = |p: f64| -> Option<f64> {
        if sorted.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
        Some((sorted[rank.clamp(1, sorted.len()) - 1] * 1e6).round() / 1e6)
    };
    json!({"count": sorted.len(), "p50": rank(50.0), "p99": rank(99.0), "max": rank(100.0)})
}

async fn session_task(shared: Arc<Shared>, slot: usize, tx: mpsc::UnboundedSender<Report>) {
    let index = shared.first + slot;
    let room = format!("{}{}", shared.room_prefix, index);
    let options = &shared.options[slot % shared.options.len()];
    let mut jitter = Jitter::new((index as u64 + 1) ^ now_secs().to_bits());
    let mut session = if shared.at_once {
        tokio::time::sleep_until(instant_of(shared.start_at)).await;
        let (session, cycle) = rejoin(&shared, options, slot, &room, &mut jitter, &tx).await;
        let _ = tx.send(Report::Joined { slot, cycle });
        session
    } else {
        let permit = shared.gate.clone().acquire_owned().await;
        match open_session(&shared.url, options, std::slice::from_ref(&room)).await {
            Ok(session) => {
                drop(permit);
                let _ = tx.send(Report::Opened);
                session
            }
            Err(error) => {
                let _ = tx.send(Report::OpenFailed { index, error });
                return;
            }
        }
    };
    let mut watch = Watch {
        ping: shared.ping,
        dead_after: shared.dead_after,
    };
    loop {
        let error = hold(&mut session, watch, &mut jitter).await;
        if !shared.keep_pinging {
            watch = Watch {
                ping: None,
                dead_after: None,
            };
        }
        let t = now_secs();
        drop(session);
        let _ = tx.send(Report::Lost { slot, t, error });
        let (rejoined, cycle) = rejoin(&shared, options, slot, &room, &mut jitter, &tx).await;
        let _ = tx.send(Report::Joined { slot, cycle });
        session = rejoined;
    }
}

/// How a connected session watches its gateway.
#[derive(Debug, Clone, Copy)]
struct Watch {
    ping: Option<Duration>,
    dead_after: Option<Duration>,
}

/// Stays connected (reading whatever arrives, pinging if asked) until the connection is lost;
/// returns why.
async fn hold(session: &mut Session, watch: Watch, jitter: &mut Jitter) -> String {
    let mut last_inbound = Instant::now();
    // The first Ping at a random phase, so that the sessions' Pings are spread.
    let mut next_ping = watch
        .ping
        .map(|every| Instant::now() + every.mul_f64(jitter.fraction()));
    loop {
        let mut wake = Instant::now() + Duration::from_secs(3600);
        if let Some(at) = next_ping {
            wake = wake.min(at);
        }
        if let Some(after) = watch.dead_after {
            wake = wake.min(last_inbound + after);
        }
        let event = session.next_event(Duration::from_secs(3600));
        match tokio::time::timeout_at(wake, event).await {
            Ok(Ok(_)) => last_inbound = Instant::now(),
            Ok(Err(ClientError::Timeout(_))) => {}
            Ok(Err(error)) => return error.to_string(),
            Err(_) => {
                let now = Instant::now();
                if let Some(after) = watch.dead_after
                    && now >= last_inbound + after
                {
                    return format!("nothing received for {} ms", after.as_millis());
                }
                if let (Some(every), Some(at)) = (watch.ping, next_ping)
                    && now >= at
                {
                    next_ping = Some(now + every);
                    if let Err(error) = session.send(client_frame::Msg::Ping(Ping::default())) {
                        return error.to_string();
                    }
                }
            }
        }
    }
}

/// Attempts until one gets through: connect, Hello, Join; a failure waits a jittered delay.
async fn rejoin(
    shared: &Shared,
    options: &ConnectOptions,
    slot: usize,
    room: &str,
    jitter: &mut Jitter,
    tx: &mpsc::UnboundedSender<Report>,
) -> (Session, Cycle) {
    let t_attempt = now_secs();
    loop {
        match attempt(shared, options, room).await {
            Ok((session, t_connected, t_welcome, t_joined)) => {
                let cycle = Cycle {
                    t_attempt,
                    t_connected,
                    t_welcome,
                    t_joined,
                };
                return (session, cycle);
            }
            Err(error) => {
                let _ = tx.send(Report::AttemptFailed {
                    slot,
                    t_first: t_attempt,
                    error,
                });
            }
        }
        tokio::time::sleep(jitter.millis_between(shared.retry)).await;
    }
}

/// One attempt: the transport (TLS + WebSocket upgrade, or QUIC + WebTransport session),
/// Hello → Welcome, Join → Joined. Returns the session and when each stage was done.
async fn attempt(
    shared: &Shared,
    options: &ConnectOptions,
    room: &str,
) -> Result<(Session, f64, f64, f64), String> {
    let mut stage = "the transport";
    let result = tokio::time::timeout(shared.attempt_timeout, async {
        let conn = connect(&shared.url, options).await?;
        let t_connected = now_secs();
        stage = "the Welcome";
        let mut session = Session::start(conn).await?;
        let t_welcome = now_secs();
        stage = "the Joined";
        session.set_reply_timeout(shared.attempt_timeout);
        session.join(room).await?;
        Ok::<_, ClientError>((session, t_connected, t_welcome, now_secs()))
    })
    .await;
    match result {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("the attempt timed out waiting for {stage}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_its_interval_and_spreads() {
        let mut jitter = Jitter::new(7);
        let delays: Vec<Duration> = (0..1000)
            .map(|_| jitter.millis_between((100, 300)))
            .collect();
        assert!(
            delays
                .iter()
                .all(|d| (100..=300).contains(&(d.as_millis() as u64)))
        );
        let low = delays.iter().filter(|d| d.as_millis() < 200).count();
        assert!((400..=600).contains(&low), "{low}");
    }

    #[test]
    fn nearest_rank_quantiles() {
        let values: Vec<f64> = (1..=1000).map(f64::from).collect();
        let q = quantiles(&values);
        assert_eq!(q["p50"], 500.0);
        assert_eq!(q["p99"], 990.0);
        assert_eq!(q["max"], 1000.0);
        assert_eq!(quantiles(&[])["p50"], Value::Null);
    }
}
