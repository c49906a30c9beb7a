//! `hub-cost`: what one input costs the sans-IO hub, without sockets, tasks or TLS.
//!
//! Setup (not measured): a `Hub` with the default config; C connections say Hello and join
//! rooms of K members (`room-0` holds connections 0..K, and so on); every output drained.
//! Then the measured feeding: N `Signal{data}` frames, round-robin over the connections, each
//! to another member of the sender's room (cycling through them), with `poll_output()`
//! drained after every input, as the runtime's hub task does. A receiver acknowledges every
//! `--ack-every` numbered frames it was sent, like a real client (otherwise its replay buffer
//! fills up to the hold bound and every further frame evicts one); those Acks are inputs too,
//! fed right after the output that triggered them.
//!
//! The clock is fake: input i happens at setup + i × `--step-us`, so the per-session rate
//! limit (default 50/s, burst 100) never refuses a frame when C × 1e6 / step-us / C ≤ 50,
//! i.e. each session sends every C × step µs (1,000 × 100 µs = 100 ms, 10/s, by default). The
//! hub's timers are served when `poll_timeout()` says they are due, as the runtime does.
//!
//! The frames are cloned from per-(sender, recipient) templates: two short strings and a
//! reference-counted payload, about what decoding a frame from the socket allocates. That
//! harness work alone is measured too (`harness_ns_per_input`, the same loop without the hub)
//! so it can be told apart.
//!
//! `bench/hub_cost.sh` runs this under callgrind, counting instructions in
//! [`feed_hub`] and [`feed_harness_only`] only (their names are what `--toggle-collect`
//! matches: keep them).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use signalgate::core::Transport;
use signalgate::core::hub::{ConnId, Hub, HubConfig, Output};
use signalgate::proto::{ClientFrame, ErrorCode, Hello, Join, client_frame, server_frame};

use crate::frames;

#[derive(clap::Args)]
pub struct HubCostArgs {
    /// Connections (sessions); a multiple of --room-size.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Members per room (at least 2).
    #[arg(long, default_value_t = 10)]
    room_size: usize,
    /// Signal frames fed in each measured run.
    #[arg(long, default_value_t = 1_000_000)]
    signals: usize,
    /// Size of each signal's `data` payload, in bytes.
    #[arg(long, default_value_t = 200)]
    bytes: usize,
    /// Measured runs (each on a fresh hub); the best is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// A receiver acks every this many numbered frames (0: never).
    #[arg(long, default_value_t = 16)]
    ack_every: u64,
    /// Fake time between two inputs, microseconds.
    #[arg(long, default_value_t = 100)]
    step_us: u64,
    /// Exit after this many seconds, whatever happens.
    #[arg(long, default_value_t = 600)]
    pub max_secs: u64,
}

/// What the setup leaves for the feeding.
pub struct Plan {
    connections: usize,
    room_size: usize,
    /// templates[sender][j]: a Signal to the j-th other member of the sender's room.
    templates: Vec<Vec<ClientFrame>>,
    /// Per connection: highest seq it was sent, and how many numbered frames since its Ack.
    receivers: Vec<ReceiverState>,
    t0: Instant,
    step: Duration,
    ack_every: u64,
}

#[derive(Clone, Copy, Default)]
struct ReceiverState {
    last_seq: u64,
    unacked: u64,
}

/// Outputs of the measured feeding, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub inputs: u64,
    pub acks: u64,
    pub outputs: u64,
    pub sends: u64,
    pub relayed_signals: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub closes: u64,
    pub events: u64,
    pub timeouts_handled: u64,
}

fn conn(i: usize) -> ConnId {
    ConnId(i as u64)
}

/// Drains every output, noting receivers that owe an Ack.
#[inline]
fn drain(hub: &mut Hub, plan: &mut Plan, owe_ack: &mut Vec<usize>, tally: &mut Tally) {
    while let Some(output) = hub.poll_output() {
        tally.outputs += 1;
        match output {
            Output::Send { conn, frame, .. } => {
                tally.sends += 1;
                match &frame.msg {
                    Some(server_frame::Msg::Signal(_)) => tally.relayed_signals += 1,
                    Some(server_frame::Msg::Error(error)) => {
                        tally.errors += 1;
                        if tally.first_error.is_none() {
                            let code = ErrorCode::try_from(error.code)
                                .map_or("UNKNOWN", |c| c.as_str_name());
                            tally.first_error = Some(format!("{code}: {}", error.message));
                        }
                    }
                    _ => {}
                }
                if frame.seq != 0 {
                    let index = conn.0 as usize;
                    if let Some(r) = plan.receivers.get_mut(index) {
                        r.last_seq = r.last_seq.max(frame.seq);
                        r.unacked += 1;
                        if plan.ack_every > 0 && r.unacked >= plan.ack_every {
                            r.unacked = 0;
                            owe_ack.push(index);
                        }
                    }
                }
            }
            // The writer confirms at once, as the runtime does once it wrote what came before.
            Output::Checkpoint { conn, mark } => hub.connection_drained(plan.t0, conn, mark),
            Output::Close { .. } => tally.closes += 1,
            Output::Event(_) => tally.events += 1,
            // A single gateway: nothing goes to a cluster or its durable store.
            Output::ToNode { .. }
            | Output::ToCluster { .. }
            | Output::Persist { .. }
            | Output::ReadLog { .. } => {}
        }
    }
}

/// A fresh hub with C sessions in rooms of K; outputs drained.
pub fn setup(args: &HubCostArgs) -> Result<(Hub, Plan), String> {
    let (c, k) = (args.connections, args.room_size);
    if k < 2 || c == 0 || c % k != 0 {
        return Err("--connections must be a positive multiple of --room-size ≥ 2".into());
    }
    let mut hub = Hub::new(HubConfig::default());
    let t0 = Instant::now();
    let mut plan = Plan {
        connections: c,
        room_size: k,
        templates: Vec::new(),
        receivers: vec![ReceiverState::default(); c],
        t0,
        step: Duration::from_micros(args.step_us),
        ack_every: args.ack_every,
    };
    let mut peer_ids = vec![String::new(); c];
    let mut owe = Vec::new();
    let mut tally = Tally::default();
    for (i, peer_id) in peer_ids.iter_mut().enumerate() {
        hub.connection_opened(t0, conn(i), Transport::WebSocket);
        let hello = frames::client_frame(1, client_frame::Msg::Hello(Hello::default()));
        hub.frame_received(t0, conn(i), hello);
        while let Some(output) = hub.poll_output() {
            if let Output::Send { frame, .. } = output
                && let Some(server_frame::Msg::Welcome(welcome)) = &frame.msg
            {
                peer_id.clone_from(&welcome.peer_id);
            }
        }
        if peer_id.is_empty() {
            return Err(format!("connection {i} got no Welcome"));
        }
    }
    for i in 0..c {
        #[allow(clippy::needless_update)]
        let join = Join {
            room: format!("room-{}", i / k),
            ..Default::default()
        };
        hub.frame_received(
            t0,
            conn(i),
            frames::client_frame(2, client_frame::Msg::Join(join)),
        );
        drain(&mut hub, &mut plan, &mut owe, &mut tally);
    }
    if tally.errors > 0 {
        return Err(format!("setup refused: {:?}", tally.first_error));
    }
    // Acks owed from the setup (PeerJoined floods with --ack-every small) are sent now.
    for r in owe.drain(..) {
        let seq = plan.receivers[r].last_seq;
        hub.frame_received(t0, conn(r), frames::ack(0, seq));
    }
    drain(&mut hub, &mut plan, &mut owe, &mut tally);
    let payload = Bytes::from(vec![0x5a; args.bytes]);
    plan.templates = (0..c)
        .map(|s| {
            let room_first = s / k * k;
            (1..k)
                .map(|j| {
                    let to = room_first + (s - room_first + j) % k;
                    frames::data_signal(
                        1000 + j as u64,
                        &format!("room-{}", s / k),
                        &peer_ids[to],
                        payload.clone(),
                    )
                })
                .collect()
        })
        .collect();
    Ok((hub, plan))
}

/// The sender and the template of input `i`: round-robin over the connections; each
/// connection cycles through the other members of its room.
#[inline]
fn pick(plan: &Plan, i: usize) -> (usize, &ClientFrame) {
    let sender = i % plan.connections;
    let round = i / plan.connections;
    let frame = &plan.templates[sender][round % (plan.room_size - 1)];
    (sender, frame)
}

/// The measured feeding: N signals (plus the Acks they cause), outputs drained after every
/// input. Its name is matched by `bench/hub_cost.sh` (callgrind `--toggle-collect`).
#[inline(never)]
pub fn feed_hub(hub: &mut Hub, plan: &mut Plan, n: usize) -> Tally {
    let mut tally = Tally::default();
    let mut owe_ack: Vec<usize> = Vec::with_capacity(16);
    for i in 0..n {
        let now = plan.t0 + plan.step * (i as u32 + 1);
        let (sender, template) = pick(plan, i);
        let frame = template.clone();
        hub.frame_received(now, conn(sender), frame);
        tally.inputs += 1;
        drain(hub, plan, &mut owe_ack, &mut tally);
        while let Some(r) = owe_ack.pop() {
            let seq = plan.receivers[r].last_seq;
            hub.frame_received(now, conn(r), frames::ack(0, seq));
            tally.inputs += 1;
            tally.acks += 1;
            drain(hub, plan, &mut owe_ack, &mut tally);
        }
        if hub.poll_timeout().is_some_and(|at| at <= now) {
            hub.handle_timeout(now);
            tally.timeouts_handled += 1;
            drain(hub, plan, &mut owe_ack, &mut tally);
        }
    }
    tally
}

/// The harness's own share of [`feed_hub`]: picking and cloning the frames, without the hub.
#[inline(never)]
pub fn feed_harness_only(plan: &Plan, n: usize) -> u64 {
    let mut sum = 0u64;
    for i in 0..n {
        let now = plan.t0 + plan.step * (i as u32 + 1);
        let (sender, template) = pick(plan, i);
        let frame = black_box(template.clone());
        sum = sum.wrapping_add(frame.id + sender as u64);
        black_box(now);
        drop(frame);
    }
    sum
}

pub fn hub_cost(args: HubCostArgs) -> Result<Value, String> {
    if args.runs == 0 || args.signals == 0 {
        return Err("--runs and --signals must be positive".into());
    }
    if u32::try_from(args.signals).is_err() {
        return Err("--signals must fit in 32 bits".into());
    }
    let mut runs = Vec::new();
    let mut harness_runs = Vec::new();
    let mut tally = Tally::default();
    for _ in 0..args.runs {
        let (mut hub, mut plan) = setup(&args)?;
        let started = Instant::now();
        let t = feed_hub(&mut hub, &mut plan, args.signals);
        let elapsed = started.elapsed();
        black_box(&hub);
        runs.push(elapsed.as_nanos() as f64);
        let started = Instant::now();
        black_box(feed_harness_only(&plan, args.signals));
        harness_runs.push(started.elapsed().as_nanos() as f64);
        if tally.inputs != 0 && t != tally {
            return Err(format!("runs differ: {tally:?} then {t:?}"));
        }
        tally = t;
        drop(hub);
    }
    let best = runs.iter().copied().fold(f64::INFINITY, f64::min);
    let best_harness = harness_runs.iter().copied().fold(f64::INFINITY, f64::min);
    let per = |ns: f64, count: u64| (ns / count as f64 * 10.0).round() / 10.0;
    let inputs = tally.inputs;
    Ok(json!({
        "event": "result",
        "connections": args.connections,
        "room_size": args.room_size,
        "signals": args.signals,
        "bytes": args.bytes,
        "ack_every": args.ack_every,
        "step_us": args.step_us,
        "runs": args.runs,
        "inputs": inputs,
        "acks": tally.acks,
        "ns_per_input": per(best, inputs),
        "ns_per_signal": per(best, args.signals as u64),
        "ns_per_input_all_runs": runs.iter().map(|&ns| per(ns, inputs)).collect::<Vec<_>>(),
        "harness_ns_per_input": per(best_harness, inputs),
        "outputs": tally.outputs,
        "outputs_per_input": (tally.outputs as f64 / inputs as f64 * 1000.0).round() / 1000.0,
        "sends": tally.sends,
        "relayed_signals": tally.relayed_signals,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "closes": tally.closes,
        "events": tally.events,
        "timeouts_handled": tally.timeouts_handled,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> HubCostArgs {
        HubCostArgs {
            connections: 20,
            room_size: 5,
            signals: 2_000,
            bytes: 32,
            runs: 1,
            ack_every: 16,
            step_us: 100,
            max_secs: 60,
        }
    }

    #[test]
    fn every_signal_is_relayed_and_acked() {
        let args = small();
        let (mut hub, mut plan) = setup(&args).expect("setup");
        let tally = feed_hub(&mut hub, &mut plan, args.signals);
        assert_eq!(tally.errors, 0, "{:?}", tally.first_error);
        assert_eq!(tally.relayed_signals, 2_000);
        assert_eq!(tally.closes, 0);
        // Each receiver acks every 16 frames it is sent.
        assert!(tally.acks >= 2_000 / 16 - 20, "{tally:?}");
        assert_eq!(tally.inputs, 2_000 + tally.acks);
    }

    #[test]
    fn signals_go_to_every_other_member_of_the_room() {
        let args = small();
        let (_, plan) = setup(&args).expect("setup");
        let mut seen = std::collections::BTreeSet::new();
        for i in (0..4 * args.connections).filter(|i| i % args.connections == 7) {
            let (sender, frame) = pick(&plan, i);
            assert_eq!(sender, 7);
            seen.insert(format!("{frame:?}"));
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn refused_shapes() {
        let mut args = small();
        args.connections = 21;
        assert!(setup(&args).is_err());
    }
}
