//! Durable mode against real failures: a 3-node `nats-server` cluster with JetStream (session
//! logs replicated 3 times) and 3 gateway processes with `--durable true`. A sender streams
//! 1,000 signals to a receiver on another gateway while a gateway is killed with SIGKILL, or
//! the NATS node that leads the logs' stream is, or both; every client comes back on a gateway
//! that lives, with its resume token. The receiver must end with exactly the signals its
//! sender was not refused, in order, each once — the sender's Errors account for every one
//! missing — and the peers of a recovered session see it UNREACHABLE, then ONLINE, never LEFT.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::cluster::{GatewayProcess, NatsCluster, wait_for_cluster};
use common::ms;
use signalgate::client::{ClientError, Session};
use signalgate::proto::{ErrorCode, PresenceState, server_frame, signal};

const SIGNALS: u32 = 1000;
/// The failure strikes after this many signals.
const STRIKE_AT: u32 = 300;
const RESUME_WINDOW: &str = "30s";

fn gateway(nats: &NatsCluster, node: &str) -> GatewayProcess {
    let args: Vec<String> = [
        "--cluster",
        &nats.urls(),
        "--node-id",
        node,
        "--durable",
        "true",
        "--liveness-timeout",
        "2s",
        "--ping-interval",
        "800ms",
        "--resume-window",
        RESUME_WINDOW,
        "--rate-limit",
        "5000",
        "--rate-burst",
        "5000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    GatewayProcess::spawn(&args)
}

/// Writes every gateway's whole log to a file (a failure message has room for a tail only).
fn keep_logs(gateways: &[GatewayProcess], failure: Failure) -> String {
    let dir = std::env::temp_dir();
    let mut paths = Vec::new();
    for (i, gw) in gateways.iter().enumerate() {
        let path = dir.join(format!("signalgate-durable-{failure:?}-gw{i}.log"));
        if std::fs::write(&path, gw.log()).is_ok() {
            paths.push(path.display().to_string());
        }
    }
    format!("gateway logs: {paths:?}")
}

fn payload(i: u32) -> signal::Payload {
    signal::Payload::Data(bytes::Bytes::from(i.to_be_bytes().to_vec()))
}

fn number_of(s: &signalgate::proto::Signal) -> Option<u32> {
    match &s.payload {
        Some(signal::Payload::Data(d)) => Some(u32::from_be_bytes(d[..].try_into().ok()?)),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Failure {
    /// SIGKILL of the receiver's gateway.
    ReceiversGateway,
    /// SIGKILL of the sender's gateway.
    SendersGateway,
    /// SIGKILL of one NATS node.
    NatsNode,
    /// SIGKILL of the receiver's gateway and of a NATS node at once.
    GatewayAndNatsNode,
}

/// A client that comes back on `fallback` (with its resume token) when its connection dies.
struct Client {
    name: &'static str,
    session: Session,
    fallback: usize,
    /// Everything it received, in order.
    seen: Vec<server_frame::Msg>,
}

impl Client {
    async fn come_back(&mut self, gateways: &[GatewayProcess]) {
        let state = self.session.resume_state();
        let gw = &gateways[self.fallback];
        let started = Instant::now();
        let mut resumed = Session::resume(gw.ws().await, &state).await;
        // "Try again in a moment": the log could not be read yet (a NATS node just died).
        for _ in 0..3 {
            match &resumed {
                Err(ClientError::Refused(e)) if e.code() == ErrorCode::StorageUnavailable => {
                    eprintln!("{}: {}", self.name, e.message);
                    tokio::time::sleep(ms(1000)).await;
                    resumed = Session::resume(gw.ws().await, &state).await;
                }
                _ => break,
            }
        }
        let session = resumed.unwrap_or_else(|e| {
            panic!(
                "{} could not resume on gateway {}: {e}\n{}",
                self.name,
                self.fallback,
                gw.log_tail()
            )
        });
        assert!(
            session.welcome().resumed,
            "{} got a new session instead of its own",
            self.name
        );
        assert_eq!(session.peer_id(), self.session.peer_id(), "same peer id");
        eprintln!(
            "{} resumed on gateway {} in {:?}",
            self.name,
            self.fallback,
            started.elapsed()
        );
        self.session = session;
    }

    /// Takes everything that arrives until `wait` passes without a frame; false if the
    /// connection is gone.
    async fn drain(&mut self, wait: Duration) -> bool {
        loop {
            let before = self.seen.len();
            if !self.take(wait).await {
                return false;
            }
            if self.seen.len() == before {
                return true;
            }
        }
    }

    /// Takes what arrived within `wait`; false if the connection is gone.
    async fn take(&mut self, wait: Duration) -> bool {
        match self.session.next_event(wait).await {
            Ok(frame) => {
                if let Some(msg) = frame.msg {
                    self.seen.push(msg);
                }
                true
            }
            Err(ClientError::Timeout(_)) => true,
            Err(_) => false,
        }
    }
}

async fn stream_through(failure: Failure) {
    let mut nats = NatsCluster::start(3);
    let mut gw = vec![
        gateway(&nats, "a"),
        gateway(&nats, "b"),
        gateway(&nats, "c"),
    ];
    wait_for_cluster(&gw.iter().collect::<Vec<_>>(), 3).await;
    let mut alice = Client {
        name: "alice (sender)",
        session: gw[0].ws_session().await,
        fallback: 2,
        seen: Vec::new(),
    };
    let mut bob = Client {
        name: "bob (receiver)",
        session: gw[1].ws_session().await,
        fallback: 2,
        seen: Vec::new(),
    };
    alice.session.join("room").await.expect("joins");
    bob.session.join("room").await.expect("joins");
    let bob_id = bob.session.peer_id().to_string();
    let alice_id = alice.session.peer_id().to_string();
    alice
        .session
        .wait_for(ms(5000), "bob joins", |f| match &f.msg {
            Some(server_frame::Msg::PeerJoined(j)) => j.peer.clone(),
            _ => None,
        })
        .await
        .expect("bob is announced");

    let mut number_of_id: HashMap<u64, u32> = HashMap::new();
    let mut alice_down = false;
    let mut bob_down = false;
    for i in 0..SIGNALS {
        if i == STRIKE_AT {
            match failure {
                Failure::ReceiversGateway => gw[1].kill9(),
                Failure::SendersGateway => gw[0].kill9(),
                Failure::NatsNode => {
                    // The stream's leader: an election, and the gateways' direct links to it lost.
                    let leader = nats.stream_leader("SIGNALGATE_");
                    assert!(leader.is_some(), "the session logs' stream has no leader");
                    nats.kill(leader.unwrap_or(0));
                }
                Failure::GatewayAndNatsNode => {
                    gw[1].kill9();
                    nats.kill(1);
                }
            }
        }
        if alice_down {
            alice.come_back(&gw).await;
            alice_down = false;
        }
        match alice.session.signal("room", &bob_id, payload(i)) {
            Ok(id) => {
                number_of_id.insert(id, i);
            }
            Err(_) => {
                // Kept as unacknowledged: it is sent again after the resume.
                let id = alice.session.resume_state().next_id - 1;
                number_of_id.insert(id, i);
                alice_down = true;
            }
        }
        alice_down |= !alice.take(ms(1)).await;
        if !bob_down {
            bob_down = !bob.take(Duration::ZERO).await;
            if i % 25 == 0 && !bob_down {
                let _ = bob.session.ack();
            }
        }
        if bob_down && i > STRIKE_AT + 50 {
            bob.come_back(&gw).await;
            bob_down = false;
        }
    }
    // Everything sent is settled: acknowledged or refused.
    let deadline = Instant::now() + ms(30_000);
    while alice.session.unacked() > 0 || alice_down || bob_down {
        assert!(
            Instant::now() < deadline,
            "alice still has {} frames unacknowledged; {}",
            alice.session.unacked(),
            keep_logs(&gw, failure)
        );
        if alice_down {
            alice.come_back(&gw).await;
        }
        if bob_down {
            bob.come_back(&gw).await;
        }
        alice_down = !alice.drain(ms(10)).await;
        bob_down = !bob.drain(ms(10)).await;
        let _ = bob.session.ack();
    }
    // What is on its way to either arrives (both read until 2 s pass without a frame).
    for c in [&mut bob, &mut alice] {
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < ms(2000) {
            let before = c.seen.len();
            if !c.take(ms(50)).await {
                c.come_back(&gw).await;
            }
            if c.seen.len() > before {
                quiet_since = Instant::now();
            }
        }
    }

    let refused: BTreeSet<u32> = alice
        .seen
        .iter()
        .filter_map(|m| match m {
            server_frame::Msg::Error(e) => {
                // A signal sent while the receiver's gateway is lost and before the receiver
                // is recovered has nowhere to go; one the log cannot store is refused too.
                let expected = [
                    ErrorCode::RecipientUnavailable,
                    ErrorCode::StorageUnavailable,
                ];
                assert!(expected.contains(&e.code()), "an unexpected refusal: {e:?}");
                number_of_id.get(&e.in_reply_to).copied()
            }
            _ => None,
        })
        .collect();
    let expected: Vec<u32> = (0..SIGNALS).filter(|i| !refused.contains(i)).collect();
    let received: Vec<u32> = bob
        .seen
        .iter()
        .filter_map(|m| match m {
            server_frame::Msg::Signal(s) if s.from == alice_id => number_of(s),
            _ => None,
        })
        .collect();
    eprintln!(
        "{failure:?}: {} sent, {} refused, {} received",
        SIGNALS,
        refused.len(),
        received.len()
    );
    if received != expected {
        let missing: Vec<u32> = expected
            .iter()
            .filter(|i| !received.contains(i))
            .copied()
            .collect();
        let mut sorted = received.clone();
        sorted.sort();
        sorted.dedup();
        panic!(
            "{failure:?}: bob did not get exactly the accepted signals in order once: {} \
             received ({} distinct), {} expected; missing {:?}; {}",
            received.len(),
            sorted.len(),
            expected.len(),
            &missing[..missing.len().min(20)],
            keep_logs(&gw, failure)
        );
    }
    // Nobody saw anyone leave; a recovered peer was UNREACHABLE, then ONLINE again.
    for c in [&alice, &bob] {
        let left: Vec<_> = c
            .seen
            .iter()
            .filter(|m| matches!(m, server_frame::Msg::PeerLeft(_)))
            .collect();
        assert!(left.is_empty(), "{} saw a peer leave: {left:?}", c.name);
    }
    let states = |c: &Client, of: &str| -> Vec<PresenceState> {
        c.seen
            .iter()
            .filter_map(|m| match m {
                server_frame::Msg::PeerState(s) if s.peer_id == of => Some(s.state()),
                _ => None,
            })
            .collect()
    };
    let (watcher, recovered, id) = match failure {
        Failure::SendersGateway => (&bob, &alice, &alice_id),
        Failure::NatsNode => return,
        _ => (&alice, &bob, &bob_id),
    };
    assert_eq!(
        states(watcher, id),
        [PresenceState::Unreachable, PresenceState::Online],
        "{} saw {} go away and come back",
        watcher.name,
        recovered.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receivers_gateway_killed_loses_no_accepted_signal() {
    stream_through(Failure::ReceiversGateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_senders_gateway_killed_delivers_every_accepted_signal_once() {
    stream_through(Failure::SendersGateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_loses_no_accepted_signal() {
    stream_through(Failure::NatsNode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_and_a_nats_node_killed_together_lose_no_accepted_signal() {
    stream_through(Failure::GatewayAndNatsNode).await;
}
