//! Cluster mode: members whose session lives on another gateway, and the hub's side of the
//! conversation between gateways. The hub never learns about NATS: the runtime's cluster
//! adapter hands it what other gateways sent ([`Hub::cluster_received`], [`Hub::node_up`],
//! [`Hub::node_lost`]) and carries out [`Output::ToNode`] / [`Output::ToCluster`]. Every rule
//! about rooms, presence, ordering and limits stays where it is for local sessions; this file
//! only keeps the view of the others and translates.
//!
//! - **Presence.** Each gateway tells the others about its own sessions, per room (`Member`,
//!   `MemberLeft`); each tells its own sessions what it hears. A gateway that is lost makes
//!   its members UNREACHABLE (GATEWAY_LOST) here at once, and LEFT when the resume window
//!   runs out unless they turn up on another gateway.
//! - **Signals** to a remote member go to its gateway with a ticket and are *settled* when
//!   that gateway answers (accepted, or refused with the Error the sender gets): the sender's
//!   Ack never covers a frame whose fate is unknown. Per sender and recipient, signals stay in
//!   order across a move: while signals to a peer are in flight through its old gateway (which
//!   forwards them), new ones follow the same way.
//! - **Resume anywhere.** A resume token names the gateway that issued it. A client that comes
//!   to another gateway with it makes that gateway *claim* the session: the holder hands it
//!   over whole (rooms, numbering, every frame the client has not acknowledged) and forwards
//!   what still arrives for it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::backlog::Backlog;
use super::delivery::{BacklogFull, Item, error_msg};
use super::pending::News;
use super::rooms::Member;
use super::session::{Presence, Session};
use super::{ConnId, Deadline, Hub, HubEvent, Output, ResumeOutcome, SessionKey, SignalKind};
use crate::core::identity::{Grants, Identity, Profile, RoomGrant, Verified};
use crate::core::rate_limit::TokenBucket;
use crate::proto::cluster::{
    self as wire, Claim, ClaimRefused, Handover, Relay, SessionError, SessionState, Verdict,
    envelope::Body,
};
use crate::proto::{
    self, ErrorCode, Hello, Peer, PeerJoined, PeerLeft, PeerState, PresenceState, Reason,
    server_frame::Msg,
};

/// A remote member, numbered by this hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct RemoteKey(pub u64);

#[derive(Debug)]
pub(super) struct RemotePeer {
    pub peer_id: String,
    /// The gateway its session lives on.
    pub node: String,
    /// Where signals to it go now: `node`, or the gateway it left while signals sent through
    /// that one are unsettled (they must not be overtaken).
    pub route: String,
    pub in_flight: u32,
    /// Its state in each of its rooms, as its gateway said.
    pub rooms: BTreeMap<String, PresenceState>,
    pub profile: Profile,
    /// Its gateway was lost: it is gone at the end of the resume window.
    pub orphaned: bool,
}

/// A signal sent to another gateway, waiting for its verdict.
#[derive(Debug)]
pub(super) enum Ticket {
    /// From a local session: its Error (if any) goes to it, and its frame is settled.
    Own {
        sender: SessionKey,
        sender_peer: String,
        id: u64,
        seq: u64,
        kind: SignalKind,
        to: RemoteKey,
        sent_at: Instant,
    },
    /// Forwarded for a session that moved away from here: the verdict goes back.
    Forwarded {
        node: String,
        ticket: u64,
        to: RemoteKey,
    },
}

/// A Hello whose resume token belongs to a session on another gateway.
#[derive(Debug)]
pub(super) struct PendingClaim {
    pub conn: ConnId,
    pub id: u64,
    pub hello: Hello,
    pub verified: Option<Verified>,
    /// Gateways asked that have not answered.
    pub asked: std::collections::HashSet<String>,
    /// Every live gateway was asked (the issuer did not have it, or is gone).
    pub widened: bool,
    /// Claimed by the identity of the Hello's token, not by a resume token.
    pub by_identity: bool,
}

fn millis_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The verdict for a signal whose recipient's gateway is lost.
fn unavailable(ticket: u64, node: &str) -> Verdict {
    Verdict {
        ticket,
        code: ErrorCode::RecipientUnavailable.into(),
        message: format!(
            "the recipient's gateway ({node}) was lost before it accepted this signal; it was \
             not delivered"
        ),
    }
}

/// The gateway a resume token was issued by (`<node>.<random>`, cluster mode only).
pub(super) fn token_node(token: &str) -> Option<&str> {
    token.rsplit_once('.').map(|(node, _)| node)
}

impl Hub {
    fn clustered(&self) -> bool {
        self.config.cluster_node.is_some()
    }

    pub(super) fn member_state(&self, room: &str, member: Member) -> PresenceState {
        match member {
            Member::Local(key) => self.presence_state(key),
            Member::Remote(remote) => self
                .remote
                .get(&remote)
                .and_then(|r| r.rooms.get(room).copied())
                .unwrap_or(PresenceState::Unspecified),
        }
    }

    pub(super) fn member_profile(&self, member: Member) -> Profile {
        match member {
            Member::Local(key) => self.sessions.get(&key).map(|s| s.profile.clone()),
            Member::Remote(remote) => self.remote.get(&remote).map(|r| r.profile.clone()),
        }
        .unwrap_or_default()
    }

    // ----------------------------------------------------------------------------------------
    // What this gateway tells the others
    // ----------------------------------------------------------------------------------------

    /// A local member's record in `room` (joined, or its state changed).
    pub(super) fn announce_member(
        &mut self,
        room: &str,
        peer: Peer,
        reason: Reason,
        silent_for_ms: u64,
        key: SessionKey,
    ) {
        if !self.clustered() {
            return;
        }
        let detected_by = self
            .sessions
            .get(&key)
            .map_or(proto::Transport::Unspecified, |s| s.transport.to_proto());
        let body = Body::Member(wire::Member {
            room: room.to_string(),
            peer: Some(peer),
            reason: reason.into(),
            silent_for_ms,
            detected_by: detected_by.into(),
        });
        self.outputs.push_back(Output::ToCluster { body });
    }

    pub(super) fn announce_left(&mut self, room: &str, peer_id: &str, reason: Reason) {
        if !self.clustered() {
            return;
        }
        let body = Body::MemberLeft(wire::MemberLeft {
            room: room.to_string(),
            peer_id: peer_id.to_string(),
            reason: reason.into(),
        });
        self.outputs.push_back(Output::ToCluster { body });
    }

    pub(super) fn session_peer(&self, key: SessionKey, state: PresenceState) -> Option<Peer> {
        let session = self.sessions.get(&key)?;
        Some(Peer {
            peer_id: session.peer_id.clone(),
            state: state.into(),
            name: session.profile.name.clone(),
            metadata: session.profile.metadata.clone(),
        })
    }

    /// A node appeared: it gets this gateway's members, every room, current state.
    pub fn node_up(&mut self, node: &str) {
        let mut keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        keys.sort();
        for key in keys {
            let Some(session) = self.sessions.get(&key) else {
                continue;
            };
            let state = session.presence.state();
            let (reason, since) = match session.presence {
                Presence::Online(_) => (Reason::Unspecified, None),
                Presence::Away { since, reason } => (reason, Some(since)),
            };
            let _ = since;
            let rooms: Vec<String> = session.rooms.iter().cloned().collect();
            let detected_by = session.transport.to_proto();
            let Some(peer) = self.session_peer(key, state) else {
                continue;
            };
            for room in rooms {
                let body = Body::Member(wire::Member {
                    room,
                    peer: Some(peer.clone()),
                    reason: reason.into(),
                    silent_for_ms: 0,
                    detected_by: detected_by.into(),
                });
                self.outputs.push_back(Output::ToNode {
                    node: node.to_string(),
                    body,
                });
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // What other gateways tell this one
    // ----------------------------------------------------------------------------------------

    /// A message another gateway sent over its link (in order, once).
    pub fn cluster_received(&mut self, now: Instant, from: &str, body: Body) {
        match body {
            Body::Member(member) => self.remote_member(now, from, member),
            Body::MemberLeft(left) => self.remote_member_left(from, left),
            Body::Relay(relay) => self.relay_received(now, from, relay),
            Body::Verdict(verdict) => self.verdict_received(now, verdict),
            Body::Claim(claim) => self.claim_received(now, from, claim),
            Body::Handover(handover) => self.handover_received(now, from, handover),
            Body::ClaimRefused(refused) => self.claim_refused(now, from, refused),
            Body::SessionError(error) => self.session_error_received(error),
            Body::SeatRequest(request) => self.seat_requested(now, from, request),
            Body::SeatAnswer(answer) => {
                self.seat_answered(now, answer.ticket, Some(answer.granted))
            }
            // Link and membership messages are the cluster adapter's.
            _ => {}
        }
        self.check_overloaded(now);
    }

    fn remote_member(&mut self, _now: Instant, from: &str, member: wire::Member) {
        let Some(peer) = member.peer else {
            return;
        };
        let room = member.room;
        if self.by_peer_id.contains_key(&peer.peer_id) {
            // Held here: a record from before it moved here is stale.
            return;
        }
        let state = peer.state();
        let remote = match self.remote_by_peer.get(&peer.peer_id) {
            Some(remote) => *remote,
            None => {
                let remote = RemoteKey(self.next_remote_key);
                self.next_remote_key += 1;
                self.remote_by_peer.insert(peer.peer_id.clone(), remote);
                self.remote.insert(
                    remote,
                    RemotePeer {
                        peer_id: peer.peer_id.clone(),
                        node: from.to_string(),
                        route: from.to_string(),
                        in_flight: 0,
                        rooms: BTreeMap::new(),
                        profile: Profile::default(),
                        orphaned: false,
                    },
                );
                remote
            }
        };
        let Some(r) = self.remote.get_mut(&remote) else {
            return;
        };
        if r.node != from {
            r.node = from.to_string();
            if r.in_flight == 0 {
                r.route = from.to_string();
            }
        }
        if r.orphaned {
            r.orphaned = false;
            self.deadlines.cancel(Deadline::RemoteExpiry(remote));
        }
        r.profile = Profile {
            name: peer.name.clone(),
            metadata: peer.metadata.clone(),
        };
        let before = r.rooms.insert(room.clone(), state);
        let peer_id = peer.peer_id.clone();
        let news = match before {
            None => {
                if self.rooms.add(&room, &peer_id, Member::Remote(remote)) {
                    self.gauges.rooms += 1;
                }
                self.seat_taken(&room, &peer_id);
                News::Joined(PeerJoined {
                    room: room.clone(),
                    peer: Some(peer),
                })
            }
            Some(old) if old == state => return,
            Some(_) => News::State(PeerState {
                room: room.clone(),
                peer_id: peer_id.clone(),
                state: state.into(),
                reason: member.reason,
                silent_for_ms: member.silent_for_ms,
                detected_by: member.detected_by,
            }),
        };
        for local in self.rooms.locals(&room) {
            self.tell(local, &room, &peer_id, news.clone());
        }
    }

    fn remote_member_left(&mut self, from: &str, left: wire::MemberLeft) {
        let Some(&remote) = self.remote_by_peer.get(&left.peer_id) else {
            return;
        };
        if self.remote.get(&remote).is_none_or(|r| r.node != from) {
            return; // From a gateway it moved away from.
        }
        self.remove_remote_from_room(remote, &left.room, left.reason());
    }

    fn remove_remote_from_room(&mut self, remote: RemoteKey, room: &str, reason: Reason) {
        let Some(r) = self.remote.get_mut(&remote) else {
            return;
        };
        if r.rooms.remove(room).is_none() {
            return;
        }
        let peer_id = r.peer_id.clone();
        let gone = r.rooms.is_empty();
        if self.rooms.remove(room, &peer_id) {
            self.gauges.rooms -= 1;
        }
        let news = News::Left(PeerLeft {
            room: room.to_string(),
            peer_id: peer_id.clone(),
            reason: reason.into(),
        });
        for local in self.rooms.locals(room) {
            self.tell(local, room, &peer_id, news.clone());
        }
        if gone {
            self.forget_remote(remote);
        }
    }

    /// A remote peer in no room any more (its tickets settle as if it were still there).
    fn forget_remote(&mut self, remote: RemoteKey) {
        if let Some(r) = self.remote.remove(&remote) {
            self.remote_by_peer.remove(&r.peer_id);
        }
        self.deadlines.cancel(Deadline::RemoteExpiry(remote));
    }

    /// The resume window of a lost gateway's member ran out.
    pub(super) fn remote_expired(&mut self, remote: RemoteKey) {
        let rooms: Vec<String> = self
            .remote
            .get(&remote)
            .filter(|r| r.orphaned)
            .map(|r| r.rooms.keys().cloned().collect())
            .unwrap_or_default();
        for room in rooms {
            self.remove_remote_from_room(remote, &room, Reason::ResumeWindowExpired);
        }
    }

    /// A gateway stopped answering (or fenced itself): its members are UNREACHABLE here
    /// now, and LEFT at the end of the resume window unless they come back elsewhere. What
    /// was in flight to it is answered: RECIPIENT_UNAVAILABLE to senders here, resume
    /// refused to clients that claimed a session from it.
    pub fn node_lost(&mut self, now: Instant, node: &str, silent_for: Duration) {
        let mut lost: Vec<RemoteKey> = self
            .remote
            .iter()
            .filter(|(_, r)| r.node == node)
            .map(|(k, _)| *k)
            .collect();
        lost.sort();
        for remote in lost {
            let Some(r) = self.remote.get_mut(&remote) else {
                continue;
            };
            r.orphaned = true;
            let peer_id = r.peer_id.clone();
            let mut changed = Vec::new();
            for (room, state) in r.rooms.iter_mut() {
                if *state != PresenceState::Unreachable {
                    *state = PresenceState::Unreachable;
                    changed.push(room.clone());
                }
            }
            self.deadlines.set(
                Deadline::RemoteExpiry(remote),
                now + self.config.resume_window,
            );
            for room in changed {
                let news = News::State(PeerState {
                    room: room.clone(),
                    peer_id: peer_id.clone(),
                    state: PresenceState::Unreachable.into(),
                    reason: Reason::GatewayLost.into(),
                    silent_for_ms: millis_u64(silent_for),
                    detected_by: proto::Transport::Unspecified.into(),
                });
                for local in self.rooms.locals(&room) {
                    self.tell(local, &room, &peer_id, news.clone());
                }
            }
        }
        let unanswered: Vec<u64> = self
            .tickets
            .iter()
            .filter(|(_, t)| {
                let to = match t {
                    Ticket::Own { to, .. } | Ticket::Forwarded { to, .. } => *to,
                };
                self.remote.get(&to).is_none_or(|r| r.route == node)
            })
            .map(|(ticket, _)| *ticket)
            .collect();
        for ticket in unanswered {
            self.verdict_received(now, unavailable(ticket, node));
        }
        self.seats_of_lost_node(now, node);
        for r in self.remote.values_mut() {
            if r.route == node {
                r.route = r.node.clone();
                r.in_flight = 0;
            }
        }
        let claims: Vec<u64> = self
            .claims
            .iter()
            .filter(|(_, c)| c.asked.contains(node))
            .map(|(t, _)| *t)
            .collect();
        for ticket in claims {
            let message = "the session is unknown or the gateway that held it was lost; send \
                           Hello without a resume token to start a new session"
                .to_string();
            self.claim_refused(
                now,
                node,
                ClaimRefused {
                    ticket,
                    code: ErrorCode::ResumeExpired.into(),
                    message,
                },
            );
        }
        self.check_overloaded(now);
    }

    // ----------------------------------------------------------------------------------------
    // Signals across gateways
    // ----------------------------------------------------------------------------------------

    pub(super) fn relay_remote(
        &mut self,
        now: Instant,
        (sender, id, seq): (SessionKey, u64, u64),
        to: RemoteKey,
        kind: SignalKind,
        signal: proto::Signal,
    ) {
        let Some(r) = self.remote.get_mut(&to) else {
            return;
        };
        if r.in_flight == 0 {
            r.route = r.node.clone();
        }
        r.in_flight += 1;
        let node = r.route.clone();
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let Some(session) = self.sessions.get_mut(&sender) else {
            return;
        };
        if seq != 0 {
            session.unsettled.insert(seq);
        }
        self.tickets.insert(
            ticket,
            Ticket::Own {
                sender,
                sender_peer: session.peer_id.clone(),
                id,
                seq,
                kind,
                to,
                sent_at: now,
            },
        );
        if !self.live_nodes.contains(&node) {
            // Its gateway is lost (it is UNREACHABLE, and LEFT at the end of the window).
            return self.verdict_received(now, unavailable(ticket, &node));
        }
        let signal = Some(signal);
        self.outputs.push_back(Output::ToNode {
            node,
            body: Body::Relay(Relay { ticket, signal }),
        });
    }

    fn relay_received(&mut self, now: Instant, from: &str, relay: Relay) {
        let Relay { ticket, signal } = relay;
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
            let kind = match &signal.payload {
                Some(proto::signal::Payload::Description(_)) => SignalKind::Description,
                Some(proto::signal::Payload::Candidate(_)) => SignalKind::Candidate,
                _ => SignalKind::Data,
            };
            let to = signal.to.clone();
            let out = match self.deliver(key, Item::Signal(Msg::Signal(signal))) {
                Ok(()) => {
                    self.event(HubEvent::SignalRelayed { kind });
                    verdict(ErrorCode::Unspecified, String::new())
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
        let Some(r) = self.remote.get_mut(&remote) else {
            return;
        };
        if r.in_flight == 0 {
            r.route = r.node.clone();
        }
        r.in_flight += 1;
        let node = r.route.clone();
        let forwarded = self.next_ticket;
        self.next_ticket += 1;
        self.tickets.insert(
            forwarded,
            Ticket::Forwarded {
                node: from.to_string(),
                ticket,
                to: remote,
            },
        );
        if !self.live_nodes.contains(&node) {
            return self.verdict_received(now, unavailable(forwarded, &node));
        }
        self.outputs.push_back(Output::ToNode {
            node,
            body: Body::Relay(Relay {
                ticket: forwarded,
                signal: Some(signal),
            }),
        });
    }

    fn verdict_received(&mut self, now: Instant, verdict: Verdict) {
        let Some(ticket) = self.tickets.remove(&verdict.ticket) else {
            return;
        };
        let to = match &ticket {
            Ticket::Own { to, .. } | Ticket::Forwarded { to, .. } => *to,
        };
        if let Some(r) = self.remote.get_mut(&to) {
            r.in_flight = r.in_flight.saturating_sub(1);
            if r.in_flight == 0 {
                r.route = r.node.clone();
            }
        }
        let code = verdict.code();
        match ticket {
            Ticket::Forwarded { node, ticket, .. } => {
                let body = Body::Verdict(Verdict { ticket, ..verdict });
                self.outputs.push_back(Output::ToNode { node, body });
            }
            Ticket::Own {
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
                    if code != ErrorCode::Unspecified {
                        self.reply(sender, id, error_msg(code, verdict.message, id));
                    }
                    if let Some(session) = self.sessions.get_mut(&sender) {
                        session.unsettled.remove(&seq);
                    }
                    self.ack_due(sender);
                } else if code != ErrorCode::Unspecified
                    && let Some(r) = self
                        .remote_by_peer
                        .get(&sender_peer)
                        .and_then(|k| self.remote.get(k))
                {
                    // The sender moved meanwhile: its Error follows it.
                    let node = r.node.clone();
                    let body = Body::SessionError(SessionError {
                        peer_id: sender_peer,
                        error: Some(proto::Error {
                            code: code.into(),
                            message: verdict.message,
                            in_reply_to: id,
                        }),
                    });
                    self.outputs.push_back(Output::ToNode { node, body });
                }
            }
        }
    }

    fn session_error_received(&mut self, error: SessionError) {
        let Some(&key) = self.by_peer_id.get(&error.peer_id) else {
            return;
        };
        if let Some(error) = error.error {
            let id = error.in_reply_to;
            self.reply(key, id, Msg::Error(error));
        }
    }

    // ----------------------------------------------------------------------------------------
    // Sessions moving between gateways
    // ----------------------------------------------------------------------------------------

    /// A Hello with a resume token this hub does not hold: if another live gateway issued
    /// it, claim the session from there (the Hello waits for the answer). False if there is
    /// nobody to ask.
    pub(super) fn claim_elsewhere(
        &mut self,
        conn: ConnId,
        id: u64,
        hello: &Hello,
        verified: &Option<Verified>,
    ) -> bool {
        let Some(me) = &self.config.cluster_node else {
            return false;
        };
        let Some(issuer) = token_node(&hello.resume_token) else {
            return false;
        };
        // The issuer first; if it does not hold the session (it was drained, or it restarted)
        // or is gone, every live gateway.
        let (ask, widened): (Vec<String>, bool) =
            if issuer != me && self.live_nodes.contains(issuer) {
                (vec![issuer.to_string()], false)
            } else {
                (self.live_nodes.iter().cloned().collect(), true)
            };
        if ask.is_empty() {
            return false;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.claims.insert(
            ticket,
            PendingClaim {
                conn,
                id,
                hello: hello.clone(),
                verified: verified.clone(),
                asked: std::collections::HashSet::new(),
                widened,
                by_identity: false,
            },
        );
        self.ask_claim(ticket, ask);
        true
    }

    /// A verified Hello without a session of its identity here: every live gateway is asked
    /// whether it holds one (one session per identity, cluster-wide). False if there is
    /// nobody to ask.
    pub(super) fn claim_identity_elsewhere(
        &mut self,
        conn: ConnId,
        id: u64,
        hello: &Hello,
        verified: &Option<Verified>,
    ) -> bool {
        if verified.is_none() || !self.clustered() || self.live_nodes.is_empty() {
            return false;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let mut hello = hello.clone();
        hello.resume_token.clear();
        self.claims.insert(
            ticket,
            PendingClaim {
                conn,
                id,
                hello,
                verified: verified.clone(),
                asked: std::collections::HashSet::new(),
                widened: true,
                by_identity: true,
            },
        );
        let ask = self.live_nodes.iter().cloned().collect();
        self.ask_claim(ticket, ask);
        true
    }

    fn ask_claim(&mut self, ticket: u64, nodes: Vec<String>) {
        let Some(claim) = self.claims.get_mut(&ticket) else {
            return;
        };
        let identity = claim.verified.as_ref().map(|v| v.identity.clone());
        let body = Body::Claim(Claim {
            ticket,
            resume_token: claim.hello.resume_token.clone(),
            has_identity: identity.is_some(),
            sub: identity.as_ref().map(|i| i.sub.clone()).unwrap_or_default(),
            device: identity.and_then(|i| i.device).unwrap_or_default(),
        });
        for node in nodes {
            claim.asked.insert(node.clone());
            self.outputs.push_back(Output::ToNode {
                node,
                body: body.clone(),
            });
        }
    }

    fn claim_received(&mut self, now: Instant, from: &str, claim: Claim) {
        let refuse = |code: ErrorCode, message: &str| Output::ToNode {
            node: from.to_string(),
            body: Body::ClaimRefused(ClaimRefused {
                ticket: claim.ticket,
                code: code.into(),
                message: message.to_string(),
            }),
        };
        let held = if claim.resume_token.is_empty() {
            let identity = Identity {
                sub: claim.sub.clone(),
                device: (!claim.device.is_empty()).then(|| claim.device.clone()),
            };
            claim
                .has_identity
                .then(|| self.by_identity.get(&identity).copied())
                .flatten()
        } else {
            self.by_resume_token.get(&claim.resume_token).copied()
        };
        let Some(key) = held else {
            let message = "the resume token is unknown or its resume window ran out; send \
                           Hello without a resume token to start a new session";
            let out = refuse(ErrorCode::ResumeExpired, message);
            return self.outputs.push_back(out);
        };
        if claim.has_identity {
            let claimed = Identity {
                sub: claim.sub.clone(),
                device: (!claim.device.is_empty()).then(|| claim.device.clone()),
            };
            let owner = self.sessions.get(&key).and_then(|s| s.identity.clone());
            if owner.as_ref() != Some(&claimed) {
                let message = "the resume token belongs to a session of another identity";
                let out = refuse(ErrorCode::IdentityMismatch, message);
                return self.outputs.push_back(out);
            }
        }
        let Some(session) = self.export_session(now, key, from, false, Reason::Superseded) else {
            return;
        };
        self.outputs.push_back(Output::ToNode {
            node: from.to_string(),
            body: Body::Handover(Handover {
                ticket: claim.ticket,
                session: Some(session),
            }),
        });
    }

    fn claim_refused(&mut self, now: Instant, from: &str, refused: ClaimRefused) {
        let Some(claim) = self.claims.get_mut(&refused.ticket) else {
            return;
        };
        claim.asked.remove(from);
        if refused.code() == ErrorCode::ResumeExpired {
            if !claim.widened {
                claim.widened = true;
                let others: Vec<String> = self
                    .live_nodes
                    .iter()
                    .filter(|n| n.as_str() != from)
                    .cloned()
                    .collect();
                self.ask_claim(refused.ticket, others);
            }
            if self
                .claims
                .get(&refused.ticket)
                .is_some_and(|c| !c.asked.is_empty())
            {
                return; // Someone else may hold it.
            }
        }
        let Some(claim) = self.claims.remove(&refused.ticket) else {
            return;
        };
        if claim.by_identity {
            // Nobody holds a session of this identity: a new one, here.
            return self.start_session(now, claim.conn, claim.id, claim.verified);
        }
        let outcome = match refused.code() {
            ErrorCode::IdentityMismatch => ResumeOutcome::Invalid,
            _ => ResumeOutcome::Expired,
        };
        if refused.code() == ErrorCode::ResumeExpired
            && let Some(verified) = claim.verified
        {
            // With tokens the identity may start afresh (or take its session over) here.
            let mut hello = claim.hello;
            hello.resume_token.clear();
            let credentials = crate::core::identity::Credentials::Verified(verified);
            return self.hello(now, claim.conn, claim.id, hello, credentials);
        }
        self.resume_refused(claim.conn, outcome);
        let code = refused.code();
        self.refuse(now, claim.conn, claim.id, code, refused.message);
    }

    fn handover_received(&mut self, now: Instant, from: &str, handover: Handover) {
        let Some(state) = handover.session else {
            return;
        };
        let claim = self.claims.remove(&handover.ticket);
        let mut token = match &claim {
            Some(claim) => claim.hello.resume_token.clone(),
            None => state.resume_token.clone(),
        };
        if token.is_empty() {
            if claim.as_ref().is_none_or(|c| !c.by_identity) {
                return;
            }
            // Taken over by identity: its client lost the old token, it gets a new one.
            token = self.new_resume_token();
        }
        let key = self.import_session(now, from, state, token);
        let Some(claim) = claim else {
            return; // Pushed by a draining gateway: the client will come.
        };
        let Some(key) = key else {
            return;
        };
        if !self.connections.contains_key(&claim.conn) {
            return; // The client gave up meanwhile; the session waits here.
        }
        let take = if claim.by_identity {
            super::hello::Claim::Identity {
                attempt: claim.hello.attempt,
            }
        } else {
            super::hello::Claim::Token {
                last_seq: claim.hello.last_seq,
                attempt: claim.hello.attempt,
            }
        };
        self.take_up(now, claim.conn, claim.id, key, take, claim.verified);
    }

    /// Takes a session out of this hub for `node`: its rooms keep it, as a member on that
    /// gateway (no news: it is the same peer); its connection, if any, is closed.
    pub(super) fn export_session(
        &mut self,
        now: Instant,
        key: SessionKey,
        node: &str,
        with_token: bool,
        close_reason: Reason,
    ) -> Option<SessionState> {
        self.forget_identity(key);
        let mut session = self.sessions.remove(&key)?;
        self.by_peer_id.remove(&session.peer_id);
        self.by_resume_token.remove(&session.resume_token);
        for deadline in [
            Deadline::ResumeWindow(key),
            Deadline::TokenExpiry(key),
            Deadline::TokenGrace(key),
        ] {
            self.deadlines.cancel(deadline);
        }
        let transport = session.transport.index();
        let was_online = match session.presence {
            Presence::Online(conn) => {
                self.gauges.online[transport] -= 1;
                if let Some(connection) = self.connections.remove(&conn) {
                    self.outputs.push_back(Output::Close {
                        conn,
                        reason: close_reason,
                    });
                    self.event(HubEvent::ConnectionEnded {
                        transport: connection.transport,
                        reason: close_reason,
                        silent_for: Duration::ZERO,
                    });
                }
                true
            }
            Presence::Away { .. } => {
                self.gauges.unreachable[transport] -= 1;
                false
            }
        };
        let state = session.presence.state();
        let remote = RemoteKey(self.next_remote_key);
        self.next_remote_key += 1;
        self.remote_by_peer.insert(session.peer_id.clone(), remote);
        self.remote.insert(
            remote,
            RemotePeer {
                peer_id: session.peer_id.clone(),
                node: node.to_string(),
                route: node.to_string(),
                in_flight: 0,
                rooms: session.rooms.iter().map(|r| (r.clone(), state)).collect(),
                profile: session.profile.clone(),
                orphaned: false,
            },
        );
        for room in &session.rooms {
            self.rooms
                .add(room, &session.peer_id, Member::Remote(remote));
        }
        tracing::info!(peer = %session.peer_id, to = node, "session handed over");
        session.backlog.number_pending();
        let (next_seq, floor, dropped_unacked, frames) = session.backlog.export();
        let identity = session.identity.take();
        Some(SessionState {
            peer_id: session.peer_id,
            rooms: session.rooms.into_iter().collect(),
            transport: session.transport.to_proto().into(),
            client_seq: session.client_seq,
            attempt: session.attempt,
            next_seq,
            floor,
            dropped_unacked,
            frames: frames
                .into_iter()
                .map(|(frame, signal)| wire::BacklogFrame {
                    frame: Some(frame),
                    signal,
                })
                .collect(),
            has_identity: identity.is_some(),
            sub: identity.as_ref().map(|i| i.sub.clone()).unwrap_or_default(),
            device: identity.and_then(|i| i.device).unwrap_or_default(),
            room_grants: session
                .grants
                .rooms
                .iter()
                .map(|g| match g {
                    RoomGrant::Any => wire::RoomGrant {
                        kind: wire::room_grant::Kind::Any.into(),
                        value: String::new(),
                    },
                    RoomGrant::Exact(v) => wire::RoomGrant {
                        kind: wire::room_grant::Kind::Exact.into(),
                        value: v.clone(),
                    },
                    RoomGrant::Prefix(v) => wire::RoomGrant {
                        kind: wire::room_grant::Kind::Prefix.into(),
                        value: v.clone(),
                    },
                })
                .collect(),
            may_signal: session.grants.signal,
            name: session.profile.name,
            metadata: session.profile.metadata,
            token_expires_in_ms: session
                .token_expires
                .map_or(0, |at| millis_u64(at.saturating_duration_since(now)).max(1)),
            was_online,
            resume_token: if with_token {
                session.resume_token
            } else {
                String::new()
            },
        })
    }

    /// A session handed over by `from`: held here from now on, away until its client
    /// attaches. Its rooms' members here see no change; the other gateways learn where it
    /// lives from its records.
    fn import_session(
        &mut self,
        now: Instant,
        from: &str,
        state: SessionState,
        resume_token: String,
    ) -> Option<SessionKey> {
        if self.by_peer_id.contains_key(&state.peer_id) {
            tracing::warn!(peer = %state.peer_id, from, "hand-over of a session held here already");
            return None;
        }
        let transport = match state.transport() {
            proto::Transport::Webtransport => crate::core::Transport::WebTransport,
            _ => crate::core::Transport::WebSocket,
        };
        let identity = state.has_identity.then(|| Identity {
            sub: state.sub.clone(),
            device: (!state.device.is_empty()).then(|| state.device.clone()),
        });
        let grants = Grants {
            rooms: state
                .room_grants
                .iter()
                .map(|g| match g.kind() {
                    wire::room_grant::Kind::Any => RoomGrant::Any,
                    wire::room_grant::Kind::Exact => RoomGrant::Exact(g.value.clone()),
                    wire::room_grant::Kind::Prefix => RoomGrant::Prefix(g.value.clone()),
                })
                .collect(),
            signal: state.may_signal,
        };
        let frames = state
            .frames
            .into_iter()
            .filter_map(|f| Some((f.frame?, f.signal)))
            .collect();
        let backlog = Backlog::import(state.next_seq, state.floor, state.dropped_unacked, frames);
        let key = SessionKey(self.next_session_key);
        self.next_session_key += 1;
        let limits = &self.config.limits;
        let (rate, burst) = (limits.requests_per_sec, limits.request_burst);
        let rooms: BTreeSet<String> = state.rooms.into_iter().collect();
        let reason = if state.was_online {
            Reason::Superseded
        } else {
            Reason::ConnectionLost
        };
        let peer_id = state.peer_id;
        // Its record as a remote member (if this gateway had one) is replaced.
        if let Some(remote) = self.remote_by_peer.remove(&peer_id) {
            self.remote.remove(&remote);
            self.deadlines.cancel(Deadline::RemoteExpiry(remote));
        }
        for room in &rooms {
            if self.rooms.add(room, &peer_id, Member::Local(key)) {
                self.gauges.rooms += 1;
            }
        }
        self.sessions.insert(
            key,
            Session {
                peer_id: peer_id.clone(),
                resume_token: resume_token.clone(),
                rooms,
                presence: Presence::Away { since: now, reason },
                transport,
                backlog,
                client_seq: state.client_seq,
                client_seq_told: state.client_seq,
                attempt: state.attempt,
                limiter: TokenBucket::new(now, rate, burst),
                ack_limiter: TokenBucket::new(now, rate.saturating_mul(4), burst.saturating_mul(4)),
                resume_limiter: super::hello::resume_limiter(now),
                identity: identity.clone(),
                grants,
                profile: Profile {
                    name: state.name,
                    metadata: state.metadata,
                },
                token_expires: (state.token_expires_in_ms > 0)
                    .then(|| now + Duration::from_millis(state.token_expires_in_ms)),
                unsettled: BTreeSet::new(),
                parked: None,
            },
        );
        self.gauges.unreachable[transport.index()] += 1;
        self.by_peer_id.insert(peer_id.clone(), key);
        self.by_resume_token.insert(resume_token, key);
        if let Some(identity) = identity {
            self.by_identity.insert(identity, key);
        }
        self.deadlines
            .set(Deadline::ResumeWindow(key), now + self.config.resume_window);
        self.schedule_token_expiry(key);
        tracing::info!(peer = %peer_id, from, "session taken over from another gateway");
        // Every gateway learns that it lives here now (same state: nobody is told news).
        let state = if state.was_online {
            PresenceState::Online
        } else {
            PresenceState::Unreachable
        };
        let rooms: Vec<String> = self
            .sessions
            .get(&key)
            .map(|s| s.rooms.iter().cloned().collect())
            .unwrap_or_default();
        if let Some(peer) = self.session_peer(key, state) {
            for room in rooms {
                self.announce_member(&room, peer.clone(), reason, 0, key);
            }
        }
        Some(key)
    }

    /// Drain: every session this hub holds goes to the other gateways (`nodes`, in turn),
    /// each connection is told to reconnect (GoAway) and closed. Returns how many moved.
    pub fn drain(&mut self, now: Instant, nodes: &[String]) -> usize {
        if nodes.is_empty() {
            return 0;
        }
        let mut conns: Vec<ConnId> = self.connections.keys().copied().collect();
        conns.sort();
        for conn in conns {
            self.go_away_frame(conn);
        }
        let mut keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        keys.sort();
        let mut moved = 0;
        for (i, key) in keys.into_iter().enumerate() {
            let node = &nodes[i % nodes.len()];
            let drained = self.export_session(now, key, node, true, Reason::ServerShutdown);
            if let Some(session) = drained {
                self.outputs.push_back(Output::ToNode {
                    node: node.clone(),
                    body: Body::Handover(Handover {
                        ticket: 0,
                        session: Some(session),
                    }),
                });
                moved += 1;
            }
        }
        let conns: Vec<ConnId> = self.connections.keys().copied().collect();
        for conn in conns {
            self.close_connection(now, conn, Reason::ServerShutdown);
        }
        moved
    }

    /// The sessions this hub holds (a drained gateway exits when none is left).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Cluster mode: which gateways answer now (claims go only to those).
    pub fn set_live_nodes(&mut self, nodes: impl IntoIterator<Item = String>) {
        self.live_nodes = nodes.into_iter().collect();
    }

    /// This gateway is cut off from the cluster (`true`), or back (`false`). Cut off, it
    /// lets go of its clients — GoAway, then close (4009, GATEWAY_LOST), so that they come
    /// back where the cluster can see them — and takes no Hello; its sessions stay, away,
    /// for a claim from the gateway their clients reach.
    pub fn set_cut_off(&mut self, now: Instant, cut_off: bool) {
        self.cut_off = cut_off;
        if !cut_off {
            return;
        }
        let mut conns: Vec<ConnId> = self.connections.keys().copied().collect();
        conns.sort();
        for conn in &conns {
            self.go_away_frame(*conn);
        }
        for conn in conns {
            self.close_connection(now, conn, Reason::GatewayLost);
        }
    }
}
