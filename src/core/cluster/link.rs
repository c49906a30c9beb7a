//! A reliable, ordered link between two gateway incarnations over an unreliable broker.
//!
//! NATS delivers in order but at most once: a NATS server that dies takes the messages in
//! its buffers with it, and the gateways' clients reconnect to another server as if nothing
//! happened. Between two gateways that live, nothing accepted may be lost, so every message
//! that carries state is numbered, acknowledged cumulatively (piggybacked on whatever goes
//! the other way, or alone at the end of a round) and resent from the first unacknowledged
//! one until acknowledged (go-back-N: the receiver takes only the next number, which keeps
//! it in order without a reorder buffer; on loopback and in a data centre losses are rare
//! and bursty, so resending a window is cheaper than tracking holes).
//!
//! An ack means more than "received": it covers only what the gateway has *acted on*
//! ([`Link::commit`], at the end of the round in which the messages were handled), and it is
//! taken only from an envelope sent after everything the acknowledger sent before it has
//! arrived (the envelope's `sent`). So when an ack reaches a gateway, every answer to what it
//! covers has reached it first — which is what lets an ack alone say "your Relay was
//! accepted".

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::proto::cluster::envelope::Body;

/// Messages a link keeps unacknowledged before the peer counts as broken (it answers pings
/// but does not take what is sent: holding more would only grow memory).
pub const MAX_UNACKED: usize = 200_000;

/// Messages resent per retransmission round (the rest follow once these are acknowledged).
const RESEND_BATCH: usize = 1024;

/// A standalone ack goes at once when it covers this many messages, whatever the delay.
const ACK_EVERY: u64 = 64;

#[derive(Debug)]
pub struct Link {
    next_seq: u64,
    unacked: VecDeque<(u64, Body)>,
    /// When the oldest unacknowledged message is resent if still unacknowledged.
    resend_at: Option<Instant>,
    /// The highest seq received in order.
    received: u64,
    /// The highest seq received and acted on: what acks say.
    acknowledgeable: u64,
    /// The highest ack sent.
    ack_sent: u64,
    /// A duplicate or out-of-order message arrived: the peer is resending, so it should hear
    /// the ack again even if nothing new was received.
    reack: bool,
    /// When a due ack goes out alone if nothing carried it before.
    ack_at: Option<Instant>,
    /// When the last ack went out alone.
    last_alone: Option<Instant>,
}

/// What the receiver does with a numbered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// The next one: deliver it.
    Deliver,
    /// Already delivered, or ahead of a gap (it will be resent): drop it.
    Drop,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            next_seq: 1,
            unacked: VecDeque::new(),
            resend_at: None,
            received: 0,
            acknowledgeable: 0,
            ack_sent: 0,
            reack: false,
            ack_at: None,
            last_alone: None,
        }
    }
}

impl Link {
    /// Numbers a message; the caller transmits it with [`Self::ack_to_send`].
    pub fn push(&mut self, now: Instant, rto: Duration, body: Body) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unacked.push_back((seq, body));
        self.resend_at.get_or_insert(now + rto);
        seq
    }

    /// The cumulative ack to put on an outgoing envelope (it settles the due ack).
    pub fn ack_to_send(&mut self) -> u64 {
        self.reack = false;
        self.ack_at = None;
        self.ack_sent = self.acknowledgeable;
        self.acknowledgeable
    }

    /// What an envelope may acknowledge (without settling a due ack).
    pub fn acknowledgeable(&self) -> u64 {
        self.acknowledgeable
    }

    /// The last seq numbered here (what an envelope's `sent` says).
    pub fn last_sent(&self) -> u64 {
        self.next_seq - 1
    }

    /// Everything received so far has been acted on (the end of a round).
    pub fn commit(&mut self) {
        self.acknowledgeable = self.received;
    }

    pub fn ack_due(&self) -> bool {
        self.reack || self.acknowledgeable > self.ack_sent
    }

    /// Whether a due ack should go out alone now (after [`Self::commit`]); the caller then
    /// sends it. At most one standalone ack per `delay`, unless it covers [`ACK_EVERY`]
    /// messages or the peer is resending: a one-way stream would otherwise cost the broker a
    /// message per round for its acks, while a quiet link still acks at once.
    pub fn ack_now(&mut self, now: Instant, delay: Duration) -> bool {
        if !self.ack_due() {
            self.ack_at = None;
            return false;
        }
        let earliest = self.last_alone.map_or(now, |at| at + delay);
        let now_or_never = self.reack || self.acknowledgeable - self.ack_sent >= ACK_EVERY;
        if now_or_never || now >= earliest {
            self.last_alone = Some(now);
            return true;
        }
        self.ack_at = Some(earliest);
        false
    }

    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// The peer acted on everything up to `ack`, which came on an envelope that said it had
    /// sent up to `sent`. Taken only if everything up to `sent` has arrived here (else it
    /// comes again, on the resent messages or after them); `acked` gets each message it
    /// settles, in order.
    pub fn on_ack(
        &mut self,
        now: Instant,
        rto: Duration,
        (ack, sent): (u64, u64),
        mut acked: impl FnMut(Body),
    ) {
        if sent > self.received {
            return;
        }
        let before = self.unacked.len();
        while self.unacked.front().is_some_and(|(seq, _)| *seq <= ack) {
            if let Some((_, body)) = self.unacked.pop_front() {
                acked(body);
            }
        }
        if self.unacked.is_empty() {
            self.resend_at = None;
        } else if self.unacked.len() < before {
            // Progress: the next resend is one timeout after it, not after the first send.
            self.resend_at = Some(now + rto);
        }
    }

    pub fn on_receive(&mut self, seq: u64) -> Received {
        if seq == self.received + 1 {
            self.received = seq;
            Received::Deliver
        } else {
            self.reack = true;
            Received::Drop
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.resend_at, self.ack_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Due for a resend at `now`: the first unacknowledged messages, oldest first.
    pub fn resend(&mut self, now: Instant, rto: Duration) -> Vec<(u64, Body)> {
        match self.resend_at {
            Some(at) if now >= at => {
                self.resend_at = Some(now + rto);
                self.unacked.iter().take(RESEND_BATCH).cloned().collect()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::cluster::{Ping, envelope::Body};

    fn body(n: u64) -> Body {
        Body::Ping(Ping { nonce: n })
    }

    /// What `b` would put on an ack-only envelope to `a` at the end of its round.
    fn ack_of(b: &mut Link) -> (u64, u64) {
        b.commit();
        (b.ack_to_send(), b.last_sent())
    }

    fn settled(a: &mut Link, t: Instant, rto: Duration, ack: (u64, u64)) -> Vec<u64> {
        let mut nonces = Vec::new();
        a.on_ack(t, rto, ack, |body| {
            if let Body::Ping(p) = body {
                nonces.push(p.nonce);
            }
        });
        nonces
    }

    #[test]
    fn a_message_lost_in_the_broker_is_resent_and_delivered_once_in_order() {
        let t0 = Instant::now();
        let rto = Duration::from_millis(200);
        let (mut a, mut b) = (Link::default(), Link::default());
        let sent: Vec<u64> = (1..=3).map(|n| a.push(t0, rto, body(n))).collect();
        assert_eq!(sent, [1, 2, 3]);
        // 1 arrives, 2 is lost with its NATS server, 3 arrives after the gap.
        assert_eq!(b.on_receive(1), Received::Deliver);
        assert_eq!(b.on_receive(3), Received::Drop);
        assert_eq!(settled(&mut a, t0, rto, ack_of(&mut b)), [1]);
        assert_eq!(a.unacked(), 2);
        assert!(a.resend(t0 + Duration::from_millis(100), rto).is_empty());
        let again = a.resend(t0 + Duration::from_millis(250), rto);
        assert_eq!(again.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(b.on_receive(2), Received::Deliver);
        assert_eq!(b.on_receive(3), Received::Deliver);
        assert_eq!(
            b.on_receive(2),
            Received::Drop,
            "a duplicate is not delivered"
        );
        assert_eq!(settled(&mut a, t0, rto, ack_of(&mut b)), [2, 3]);
        assert_eq!(a.unacked(), 0);
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn an_ack_covers_only_what_was_acted_on_and_arrives_after_every_answer() {
        let t0 = Instant::now();
        let rto = Duration::from_millis(200);
        let (mut a, mut b) = (Link::default(), Link::default());
        a.push(t0, rto, body(1));
        assert_eq!(b.on_receive(1), Received::Deliver);
        // Received but not yet acted on (the round goes on): nothing to acknowledge yet.
        assert_eq!(b.acknowledgeable(), 0);
        assert!(!b.ack_due());
        // b answers it (say, a refusal), then acknowledges at the end of its round.
        let answer = b.push(t0, rto, body(100));
        let ack = ack_of(&mut b);
        assert_eq!(ack, (1, answer));
        // The answer is lost in the broker: the ack alone settles nothing...
        assert!(settled(&mut a, t0, rto, ack).is_empty());
        assert_eq!(a.unacked(), 1);
        // ...until the answer arrives (resent), carrying the ack again.
        assert_eq!(a.on_receive(answer), Received::Deliver);
        assert_eq!(settled(&mut a, t0, rto, ack), [1]);
    }

    #[test]
    fn standalone_acks_go_at_most_one_per_delay_unless_many_are_due_or_the_peer_resends() {
        let t0 = Instant::now();
        let delay = Duration::from_millis(1);
        let mut b = Link::default();
        assert!(!b.ack_now(t0, delay), "nothing to acknowledge");
        b.on_receive(1);
        b.commit();
        assert!(b.ack_now(t0, delay), "a quiet link acknowledges at once");
        assert_eq!(b.ack_to_send(), 1);
        b.on_receive(2);
        b.commit();
        let soon = t0 + delay / 4;
        assert!(!b.ack_now(soon, delay), "the next one waits for the delay");
        assert_eq!(b.poll_timeout(), Some(t0 + delay), "woken for it");
        assert!(b.ack_now(t0 + delay, delay));
        assert_eq!(b.ack_to_send(), 2);
        assert_eq!(b.poll_timeout(), None);
        // Enough for one ack: at once.
        for seq in 3..3 + ACK_EVERY {
            b.on_receive(seq);
        }
        b.commit();
        assert!(b.ack_now(t0 + delay, delay));
        b.ack_to_send();
        // A duplicate: the peer resends, so it has not heard the ack — at once too.
        assert_eq!(b.on_receive(2), Received::Drop);
        b.commit();
        assert!(b.ack_now(t0 + delay, delay));
    }
}
