//! Cluster mode: members whose session lives on another gateway. The hub never learns about
//! NATS: the runtime's cluster adapter hands it what other gateways sent
//! ([`Hub::cluster_received`], [`Hub::node_up`], [`Hub::node_lost`]) and carries out
//! [`Output::ToNode`] / [`Output::ToCluster`]. Every rule about rooms, presence, ordering and
//! limits stays where it is for local sessions; cluster mode only keeps the view of the others
//! and translates:
//!
//! - **Presence** (this file). Each gateway tells the others about its own sessions, per room
//!   (`Member`, `MemberLeft`); each tells its own sessions what it hears. A gateway that is lost
//!   makes its members UNREACHABLE (GATEWAY_LOST) here at once, and LEFT when the resume window
//!   runs out unless they turn up on another gateway.
//! - **Signals** to a remote member: `relay_across.rs`.
//! - **Sessions moving** between gateways (resume anywhere, identity take-over, drain):
//!   `handover.rs`.
//! - **Joins** decided by the room's home gateway: `seats.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::millis_u64;
use super::pending::News;
use super::relay_across::unavailable;
use super::rooms::Member;
use super::session::Presence;
use super::{ConnId, Deadline, Hub, Output, SessionKey};
use crate::core::identity::Profile;
use crate::proto::cluster::{self as wire, ClaimRefused, envelope::Body};
use crate::proto::{self, ErrorCode, Peer, PeerJoined, PeerLeft, PeerState, PresenceState, Reason};

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

impl RemotePeer {
    pub fn new(
        peer_id: &str,
        node: &str,
        rooms: BTreeMap<String, PresenceState>,
        profile: Profile,
    ) -> Self {
        Self {
            peer_id: peer_id.to_string(),
            node: node.to_string(),
            route: node.to_string(),
            in_flight: 0,
            rooms,
            profile,
            orphaned: false,
        }
    }

    /// A signal leaves for it: the gateway it goes through (its old one while signals sent
    /// that way are unsettled, so that none is overtaken).
    pub fn send(&mut self) -> String {
        if self.in_flight == 0 {
            self.route = self.node.clone();
        }
        self.in_flight += 1;
        self.route.clone()
    }

    /// One of the signals sent to it was settled.
    pub fn settled(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.route = self.node.clone();
        }
    }

    /// Its session now lives on `node`; signals in flight keep their way.
    fn moved_to(&mut self, node: &str) {
        self.node = node.to_string();
        if self.in_flight == 0 {
            self.route = self.node.clone();
        }
    }
}

impl Hub {
    /// Records a member whose session lives on another gateway.
    pub(super) fn add_remote(&mut self, peer: RemotePeer) -> RemoteKey {
        let remote = RemoteKey(self.next_remote_key);
        self.next_remote_key += 1;
        self.remote_by_peer.insert(peer.peer_id.clone(), remote);
        self.remote.insert(remote, peer);
        remote
    }

    pub(super) fn clustered(&self) -> bool {
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
            let reason = match session.presence {
                Presence::Online(_) => Reason::Unspecified,
                Presence::Away { reason, .. } => reason,
            };
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
        self.tick(now);
        match body {
            Body::Member(member) => self.remote_member(now, from, member),
            Body::MemberLeft(left) => self.remote_member_left(from, left),
            Body::Relay(relay) => self.relay_received(now, from, relay),
            Body::Verdict(verdict) => self.verdict_received(now, verdict),
            Body::Forwarded(forwarded) => self.forwarded_received(forwarded),
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
            None => self.add_remote(RemotePeer::new(
                &peer.peer_id,
                from,
                BTreeMap::new(),
                Profile::default(),
            )),
        };
        let Some(r) = self.remote.get_mut(&remote) else {
            return;
        };
        if r.node != from {
            r.moved_to(from);
        }
        if r.orphaned {
            r.orphaned = false;
            self.deadlines.cancel(Deadline::RemoteExpiry(remote));
            // Recovered on `from` (durable mode): what waited for it goes there.
            self.resend_parked(remote);
        }
        let Some(r) = self.remote.get_mut(&remote) else {
            return;
        };
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
    pub(super) fn remote_expired(&mut self, now: Instant, remote: RemoteKey) {
        let Some(node) = self
            .remote
            .get(&remote)
            .filter(|r| r.orphaned)
            .map(|r| r.node.clone())
        else {
            return;
        };
        self.refuse_parked(now, remote, &node);
        let rooms: Vec<String> = self
            .remote
            .get(&remote)
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
        self.tick(now);
        self.remember_lost(now, node);
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
        let mut unanswered: Vec<u64> = self
            .tickets
            .iter()
            .filter(|(_, t)| self.remote.get(&t.to).is_none_or(|r| r.route == node))
            .map(|(ticket, _)| *ticket)
            .collect();
        unanswered.sort();
        if self.durable() {
            unanswered = self.park_unanswered(node, unanswered);
        }
        for ticket in unanswered {
            self.verdict_received(now, unavailable(ticket, node));
        }
        self.seats_of_lost_node(now, node);
        self.settlements_lost(now, node);
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
            self.go_elsewhere(*conn, Reason::GatewayLost);
        }
        for conn in conns {
            self.close_connection(now, conn, Reason::GatewayLost);
        }
    }
}
