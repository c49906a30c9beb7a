//! Cluster mode: signals to a member on another gateway. They go to its gateway with a
//! ticket and are *settled* when that gateway has decided: accepted (its link acknowledges
//! the Relay; no message of its own, since at 10,000 signals/s every NATS message counts), or
//! refused with the Error the sender gets (a Verdict, which always arrives before the ack).
//! The sender's Ack never covers a frame whose fate is unknown. Per sender and recipient,
//! signals stay in order across a move: while signals to a peer are in flight through its old
//! gateway (which forwards them, says so, and passes the new gateway's verdict back), new ones
//! follow the same way.

use std::time::Instant;

use super::delivery::{BacklogFull, Item, error_msg};
use super::remote::RemoteKey;
use super::{Hub, HubEvent, Output, SessionKey, SignalKind};
use crate::proto::cluster::{Forwarded, Relay, SessionError, Verdict, envelope::Body};
use crate::proto::{self, ErrorCode, server_frame::Msg};

/// A signal sent to another gateway, waiting for its verdict.
#[derive(Debug)]
pub(super) struct Ticket {
    /// The remote member it is for.
    pub(super) to: RemoteKey,
    /// That gateway forwarded it: only its Verdict settles it, not its ack.
    verdict_follows: bool,
    origin: Origin,
    /// Durable mode: the Relay itself, for sending it again where its recipient is
    /// recovered if its gateway is lost before answering (see [`Hub::park_unanswered`]).
    relay: Option<Relay>,
    /// Its recipient's gateway was lost before answering: it waits for the recipient to turn
    /// up on another gateway (or to be gone).
    parked: bool,
}

#[derive(Debug)]
enum Origin {
    /// From a local session: its Error (if any) goes to it, and its frame is settled.
    Own {
        sender: SessionKey,
        sender_peer: String,
        id: u64,
        seq: u64,
        kind: SignalKind,
        sent_at: Instant,
    },
    /// Forwarded for a session that moved away from here: the verdict goes back.
    Forwarded { node: String, ticket: u64 },
}

/// The verdict of a Relay its gateway acknowledged without answering it.
fn accepted(ticket: u64) -> Verdict {
    Verdict {
        ticket,
        code: ErrorCode::Unspecified.into(),
        message: String::new(),
    }
}

/// The verdict for a signal whose recipient's gateway is lost.
pub(super) fn unavailable(ticket: u64, node: &str) -> Verdict {
    Verdict {
        ticket,
        code: ErrorCode::RecipientUnavailable.into(),
        message: format!(
            "the recipient's gateway ({node}) was lost before it accepted this signal; it was \
             not delivered"
        ),
    }
}

impl Hub {
    pub(super) fn relay_remote(
        &mut self,
        now: Instant,
        (sender, id, seq): (SessionKey, u64, u64),
        to: RemoteKey,
        kind: SignalKind,
        signal: proto::Signal,
    ) {
        let Some(session) = self.sessions.get_mut(&sender) else {
            return;
        };
        if seq != 0 {
            session.unsettled.insert(seq);
        }
        let origin = Origin::Own {
            sender,
            sender_peer: session.peer_id.clone(),
            id,
            seq,
            kind,
            sent_at: now,
        };
        let relay = Relay {
            ticket: 0,
            signal: Some(signal),
            sender_seq: seq,
            verdict_wanted: self.durable(),
        };
        self.relay_to(now, to, origin, relay);
    }

    /// Sends `relay` to the remote member `to`, through its route, under a new ticket.
    fn relay_to(&mut self, now: Instant, to: RemoteKey, origin: Origin, mut relay: Relay) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        relay.ticket = ticket;
        self.tickets.insert(
            ticket,
            Ticket {
                to,
                // A durable sender settles only on a Verdict, sent once the signal is stored.
                verdict_follows: relay.verdict_wanted,
                origin,
                relay: relay.verdict_wanted.then(|| relay.clone()),
                parked: false,
            },
        );
        let node = match self.remote.get_mut(&to) {
            Some(r) => r.send(),
            None => String::new(),
        };
        if !self.live_nodes.contains(&node) {
            // Its gateway is lost (it is UNREACHABLE, and LEFT at the end of the window).
            return self.verdict_received(now, unavailable(ticket, &node));
        }
        self.outputs.push_back(Output::ToNode {
            node,
            body: Body::Relay(relay),
        });
    }

    /// A Relay from another gateway. Accepted: nothing to say (the link's ack says it), unless
    /// the sender wants a Verdict (durable mode), which goes once the signal is stored.
    pub(super) fn relay_received(&mut self, now: Instant, from: &str, relay: Relay) {
        let Relay {
            ticket,
            signal,
            sender_seq,
            verdict_wanted,
        } = relay;
        let verdict = |code: ErrorCode, message: String| Output::ToNode {
            node: from.to_string(),
            body: Body::Verdict(Verdict {
                ticket,
                code: code.into(),
                message,
            }),
        };
        let Some(signal) = signal else {
            let out = verdict(ErrorCode::InvalidArgument, "no signal".into());
            return self.outputs.push_back(out);
        };
        let not_in_room = || {
            let message = format!("peer {:?} is not in room {:?}", signal.to, signal.room);
            verdict(ErrorCode::PeerNotInRoom, message)
        };
        if let Some(&key) = self.by_peer_id.get(&signal.to) {
            if !self
                .sessions
                .get(&key)
                .is_some_and(|s| s.rooms.contains(&signal.room))
            {
                let out = not_in_room();
                return self.outputs.push_back(out);
            }
            let kind = signal
                .payload
                .as_ref()
                .map_or(SignalKind::Data, SignalKind::of);
            let to = signal.to.clone();
            let sender = signal.from.clone();
            if self.already_taken(key, &sender, sender_seq) {
                // Sent again after the sender's gateway crashed: the recipient has it already.
                if verdict_wanted {
                    self.verdict_when_stored(key, from, ticket, None);
                }
                return;
            }
            let out = match self.deliver(key, Item::Signal(Msg::Signal(signal))) {
                Ok(()) => {
                    if verdict_wanted {
                        let sent = (sender_seq != 0).then_some((sender, sender_seq));
                        self.verdict_when_stored(key, from, ticket, sent);
                    }
                    return self.event(HubEvent::SignalRelayed { kind });
                }
                Err(BacklogFull {
                    waiting,
                    waiting_bytes,
                }) => {
                    let message = format!(
                        "peer {to:?} has {waiting} signals ({waiting_bytes} bytes) waiting to \
                         be delivered, the most it may have; this signal was not accepted"
                    );
                    verdict(ErrorCode::RecipientBufferFull, message)
                }
            };
            return self.outputs.push_back(out);
        }
        // It moved away from here: forward, and pass the verdict back.
        let Some(&remote) = self.remote_by_peer.get(&signal.to) else {
            let out = not_in_room();
            return self.outputs.push_back(out);
        };
        // Before this round's ack, which must not settle it.
        self.outputs.push_back(Output::ToNode {
            node: from.to_string(),
            body: Body::Forwarded(Forwarded { ticket }),
        });
        let origin = Origin::Forwarded {
            node: from.to_string(),
            ticket,
        };
        let relay = Relay {
            ticket: 0,
            signal: Some(signal),
            sender_seq,
            verdict_wanted,
        };
        self.relay_to(now, remote, origin, relay);
    }

    /// The gateway a Relay went to acknowledged it: accepted, unless it said it forwarded it.
    pub fn relay_acknowledged(&mut self, now: Instant, ticket: u64) {
        if self
            .tickets
            .get(&ticket)
            .is_some_and(|t| !t.verdict_follows)
        {
            self.verdict_received(now, accepted(ticket));
        }
    }

    pub(super) fn forwarded_received(&mut self, forwarded: Forwarded) {
        if let Some(t) = self.tickets.get_mut(&forwarded.ticket) {
            t.verdict_follows = true;
        }
    }

    pub(super) fn verdict_received(&mut self, now: Instant, verdict: Verdict) {
        let Some(Ticket { to, origin, .. }) = self.tickets.remove(&verdict.ticket) else {
            return;
        };
        if let Some(r) = self.remote.get_mut(&to) {
            r.settled();
        }
        let code = verdict.code();
        match origin {
            Origin::Forwarded { node, ticket } => {
                let body = Body::Verdict(Verdict { ticket, ..verdict });
                self.outputs.push_back(Output::ToNode { node, body });
            }
            Origin::Own {
                sender,
                sender_peer,
                id,
                seq,
                kind,
                sent_at,
                ..
            } => {
                let round_trip = now.saturating_duration_since(sent_at);
                self.event(HubEvent::RemoteSignalSettled { round_trip });
                if code == ErrorCode::Unspecified {
                    self.event(HubEvent::SignalRelayed { kind });
                } else {
                    self.event(HubEvent::SignalRefused { reason: code });
                }
                let held_here = self
                    .sessions
                    .get(&sender)
                    .is_some_and(|s| s.peer_id == sender_peer);
                if held_here {
                    if code == ErrorCode::StorageUnavailable {
                        self.storage_refusal(sender, id, verdict.message);
                    } else if code != ErrorCode::Unspecified {
                        self.reply(sender, id, error_msg(code, verdict.message, id));
                    }
                    if let Some(session) = self.sessions.get_mut(&sender) {
                        session.unsettled.remove(&seq);
                    }
                    self.ack_due(sender);
                } else if let Some(r) = self
                    .remote_by_peer
                    .get(&sender_peer)
                    .and_then(|k| self.remote.get(k))
                    && (code != ErrorCode::Unspecified || (self.durable() && seq != 0))
                {
                    // The sender moved meanwhile: its Error follows it (in durable mode, so
                    // does its acceptance, which its new gateway waits for before its Ack).
                    let node = r.node.clone();
                    let body = Body::SessionError(SessionError {
                        peer_id: sender_peer,
                        error: Some(proto::Error {
                            code: code.into(),
                            message: verdict.message,
                            in_reply_to: id,
                        }),
                        seq: if self.durable() { seq } else { 0 },
                    });
                    self.outputs.push_back(Output::ToNode { node, body });
                }
            }
        }
    }

    /// Durable mode: a gateway was lost with signals to `remote` unanswered. Whether it
    /// stored them is in the recipient's log, which the gateway that recovers the recipient
    /// reads: they wait for that ([`Self::resend_parked`]), and are refused only if the
    /// recipient never turns up. Returns the tickets that cannot wait (no Relay kept).
    pub(super) fn park_unanswered(&mut self, lost: &str, tickets: Vec<u64>) -> Vec<u64> {
        let mut cannot = Vec::new();
        let mut recovered_already = Vec::new();
        for ticket in tickets {
            match self.tickets.get_mut(&ticket) {
                Some(t) if t.relay.is_some() && self.remote.contains_key(&t.to) => {
                    t.parked = true;
                    if self.remote.get(&t.to).is_some_and(|r| r.node != lost) {
                        recovered_already.push(t.to);
                    }
                }
                _ => cannot.push(ticket),
            }
        }
        // Its new gateway announced it before this one noticed the loss.
        recovered_already.sort();
        recovered_already.dedup();
        for remote in recovered_already {
            if let Some(r) = self.remote.get_mut(&remote) {
                r.in_flight = 0;
            }
            self.resend_parked(remote);
        }
        cannot
    }

    /// The tickets waiting for `remote` to turn up, oldest first.
    fn parked_for(&self, remote: RemoteKey) -> Vec<u64> {
        let mut parked: Vec<u64> = self
            .tickets
            .iter()
            .filter(|(_, t)| t.parked && t.to == remote)
            .map(|(ticket, _)| *ticket)
            .collect();
        parked.sort();
        parked
    }

    /// The recipient `remote` turned up on another gateway: the signals that waited for it go
    /// there, in order, under their tickets. Its log says which it had stored already (the
    /// recipient remembers each sender's last numbered frame): those are accepted without
    /// being delivered twice.
    pub(super) fn resend_parked(&mut self, remote: RemoteKey) {
        for ticket in self.parked_for(remote) {
            let Some(t) = self.tickets.get_mut(&ticket) else {
                continue;
            };
            t.parked = false;
            let Some(relay) = t.relay.clone() else {
                continue;
            };
            let Some(node) = self.remote.get_mut(&remote).map(|r| r.send()) else {
                continue;
            };
            self.outputs.push_back(Output::ToNode {
                node,
                body: Body::Relay(relay),
            });
        }
    }

    /// The recipient `remote` is gone for good: what waited for it is refused.
    pub(super) fn refuse_parked(&mut self, now: Instant, remote: RemoteKey, node: &str) {
        for ticket in self.parked_for(remote) {
            self.verdict_received(now, unavailable(ticket, node));
        }
    }

    pub(super) fn session_error_received(&mut self, error: SessionError) {
        let Some(&key) = self.by_peer_id.get(&error.peer_id) else {
            return;
        };
        if error.seq != 0 {
            self.settled_elsewhere(key, error.seq);
        }
        let Some(error) = error.error else {
            return;
        };
        let id = error.in_reply_to;
        match error.code() {
            ErrorCode::Unspecified => {}
            ErrorCode::StorageUnavailable => self.storage_refusal(key, id, error.message),
            _ => self.reply(key, id, Msg::Error(error)),
        }
    }
}
