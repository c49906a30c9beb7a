//! Gateways meeting, talking and losing each other, on a fake clock and a broker that
//! loses what the test says.

use super::*;
use crate::proto::cluster::{MemberLeft, envelope::Body};

fn config(node: &str) -> ClusterConfig {
    ClusterConfig {
        node: node.into(),
        liveness: LivenessConfig::new(Duration::from_secs(2), Duration::from_millis(800))
            .expect("valid"),
        min_resend: Duration::from_millis(200),
        ack_delay: Duration::from_millis(1),
        endpoint: Endpoint {
            node: node.into(),
            ..Endpoint::default()
        },
    }
}

fn left(n: u32) -> Body {
    Body::MemberLeft(MemberLeft {
        room: format!("r{n}"),
        peer_id: "p".into(),
        reason: 0,
    })
}

/// Two gateways and a broker between them: `pass` decides whether an envelope arrives.
struct Pair {
    a: Cluster,
    b: Cluster,
    now: Instant,
    delivered_to_b: Vec<Body>,
    events: Vec<(char, ClusterOutput)>,
}

impl Pair {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            a: Cluster::new(now, config("a"), 11),
            b: Cluster::new(now, config("b"), 22),
            now,
            delivered_to_b: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Moves every transmitted envelope to the other side until nothing moves.
    fn exchange(&mut self, mut pass: impl FnMut(&Envelope) -> bool) {
        loop {
            let mut moved = false;
            for side in ['a', 'b'] {
                let (from, to) = if side == 'a' {
                    (&mut self.a, &mut self.b)
                } else {
                    (&mut self.b, &mut self.a)
                };
                from.flush_acks(self.now);
                let mut out = Vec::new();
                while let Some(o) = from.poll_output() {
                    out.push(o);
                }
                for o in out {
                    match o {
                        ClusterOutput::Transmit { envelope, .. } => {
                            if pass(&envelope) {
                                to.receive(self.now, envelope);
                                moved = true;
                            }
                        }
                        ClusterOutput::Deliver { body, .. } if side == 'b' => {
                            self.delivered_to_b.push(body)
                        }
                        other => self.events.push((side, other)),
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn advance(&mut self, by: Duration, pass: impl FnMut(&Envelope) -> bool + Copy) {
        let end = self.now + by;
        while self.now < end {
            self.now = (self.now + Duration::from_millis(50)).min(end);
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            self.exchange(pass);
        }
    }
}

#[test]
fn gateways_find_each_other_and_messages_survive_a_broker_that_loses_some() {
    let mut p = Pair::new();
    p.exchange(|_| true);
    assert!(p.a.is_live("b") && p.b.is_live("a"));
    assert!(
        p.events
            .iter()
            .any(|(s, e)| *s == 'a' && matches!(e, ClusterOutput::NodeUp { node } if node == "b"))
    );
    for n in 0..6 {
        assert!(p.a.send(p.now, "b", left(n)));
    }
    // The broker loses messages 2 and 4 (a NATS server died with them).
    p.exchange(|e| e.seq != 2 && e.seq != 4);
    assert_eq!(
        p.delivered_to_b.len(),
        1,
        "only what arrives in order is delivered"
    );
    p.advance(Duration::from_millis(400), |_| true);
    assert_eq!(p.delivered_to_b, (0..6).map(left).collect::<Vec<_>>());
    assert_eq!(p.a.unacked().map(|(_, n)| n).sum::<usize>(), 0);
}

#[test]
fn a_silent_gateway_is_lost_within_the_liveness_timeout_and_fenced_if_it_speaks_again() {
    let mut p = Pair::new();
    p.exchange(|_| true);
    p.events.clear();
    // b hangs (or is cut off): nothing of its arrives at a, and nothing reaches it.
    let cut = p.now;
    p.advance(Duration::from_secs(3), |_| false);
    let lost_at = p.events.iter().find(|(s, e)| {
        *s == 'a' && matches!(e, ClusterOutput::NodeLost { node, .. } if node == "b")
    });
    assert!(lost_at.is_some(), "a did not lose b: {:?}", p.events);
    assert!(!p.a.is_live("b"));
    let _ = cut;
    // The link heals: b (the same incarnation) speaks again and is told to fence.
    p.events.clear();
    p.advance(Duration::from_secs(1), |_| true);
    assert!(
        p.events
            .iter()
            .any(|(s, e)| *s == 'b' && *e == ClusterOutput::Fence),
        "b was not fenced: {:?}",
        p.events
    );
    // After fencing, b comes back as a new incarnation and a takes it in.
    p.b.rejoin(p.now, 23);
    p.events.clear();
    p.advance(Duration::from_secs(1), |_| true);
    assert!(p.a.is_live("b"));
    assert!(
        p.events
            .iter()
            .any(|(s, e)| *s == 'a' && matches!(e, ClusterOutput::NodeUp { node } if node == "b"))
    );
}

#[test]
fn a_gateway_cut_off_from_the_broker_fences_itself_after_the_liveness_timeout() {
    let mut p = Pair::new();
    p.exchange(|_| true);
    p.events.clear();
    p.b.set_connected(p.now, false);
    p.advance(Duration::from_millis(1900), |_| false);
    assert!(
        !p.events
            .iter()
            .any(|(s, e)| *s == 'b' && *e == ClusterOutput::Fence)
    );
    p.advance(Duration::from_millis(200), |_| false);
    assert!(
        p.events
            .iter()
            .any(|(s, e)| *s == 'b' && *e == ClusterOutput::Fence)
    );
}

#[test]
fn a_gateway_that_said_goodbye_goes_quiet_and_is_not_taken_back() {
    let mut p = Pair::new();
    p.exchange(|_| true);
    p.events.clear();
    p.a.leave(p.now, left(0));
    p.exchange(|_| true);
    assert_eq!(
        p.delivered_to_b.last(),
        Some(&left(0)),
        "the goodbye arrives"
    );
    // What the runtime does with a goodbye.
    p.b.node_left(p.now, "a");
    // a still has acks and announcements in the pipe in a real broker; it must neither send
    // more nor react to "you were lost" (it would fence and rejoin while shutting down).
    p.advance(Duration::from_secs(5), |_| true);
    assert!(!p.b.is_live("a"), "a left: not taken back");
    assert!(
        !p.events
            .iter()
            .any(|(s, e)| *s == 'a' && *e == ClusterOutput::Fence),
        "{:?}",
        p.events
    );
    assert_eq!(p.a.poll_timeout(), None, "a has nothing more to do");
}

#[test]
fn a_relay_is_acknowledged_only_after_every_answer_sent_before_the_ack_even_if_one_was_lost() {
    use crate::proto::cluster::{Relay, Verdict};
    let mut p = Pair::new();
    p.exchange(|_| true);
    p.events.clear();
    let transmitted = |c: &mut Cluster| {
        let mut out = Vec::new();
        while let Some(o) = c.poll_output() {
            if let ClusterOutput::Transmit { envelope, .. } = o {
                out.push(envelope);
            }
        }
        out
    };
    let relay = Body::Relay(Relay {
        ticket: 7,
        ..Default::default()
    });
    assert!(p.a.send(p.now, "b", relay));
    for envelope in transmitted(&mut p.a) {
        p.b.receive(p.now, envelope);
    }
    // b acts on it (refuses it), then its round ends with the ack.
    let refusal = Body::Verdict(Verdict {
        ticket: 7,
        code: 1,
        message: "refused".into(),
    });
    assert!(p.b.send(p.now, "a", refusal.clone()));
    p.b.flush_acks(p.now);
    let from_b = transmitted(&mut p.b);
    assert_eq!(from_b.len(), 2, "the refusal, then the ack: {from_b:?}");
    assert_eq!(from_b[0].ack, 0, "not acknowledged before it was acted on");
    assert_eq!(from_b[1].ack, 1);
    // The broker loses the refusal; the ack alone must not settle the relay.
    p.a.receive(p.now, from_b[1].clone());
    let early: Vec<ClusterOutput> = std::iter::from_fn(|| p.a.poll_output()).collect();
    assert!(
        !early
            .iter()
            .any(|o| matches!(o, ClusterOutput::RelayAcknowledged { .. })),
        "settled by an ack whose refusal was lost: {early:?}"
    );
    // The refusal is resent: it arrives, and only then the acknowledgement.
    p.advance(Duration::from_millis(400), |_| true);
    let a_saw: Vec<&ClusterOutput> = p
        .events
        .iter()
        .filter(|(side, _)| *side == 'a')
        .map(|(_, o)| o)
        .collect();
    let answer = a_saw
        .iter()
        .position(|o| matches!(o, ClusterOutput::Deliver { body, .. } if *body == refusal))
        .expect("the refusal is delivered");
    let acked = a_saw
        .iter()
        .position(|o| matches!(o, ClusterOutput::RelayAcknowledged { ticket: 7, .. }))
        .expect("then the relay is acknowledged");
    assert!(answer < acked);
}
