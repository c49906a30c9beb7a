//! Cluster mode: sessions moving between gateways. A resume token names the gateway that
//! issued it; a client that comes to another gateway with it makes that gateway *claim* the
//! session (from the issuer, then from every gateway if the issuer does not hold it): the
//! holder hands it over whole — rooms, numbering, every frame the client has not
//! acknowledged — and forwards what still arrives for it. The same with a verified identity
//! instead of a resume token (one session per identity, cluster-wide), and on drain, when a
//! gateway pushes every session it holds to the others.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use super::backlog::Backlog;
use super::millis_u64;
use super::remote::RemotePeer;
use super::rooms::Member;
use super::session::{Presence, Session};
use super::{ConnId, Deadline, Hub, HubEvent, Output, ResumeOutcome, SessionKey};
use crate::core::identity::{Grants, Identity, Profile, RoomGrant, Verified};
use crate::core::rate_limit::TokenBucket;
use crate::proto::cluster::{
    self as wire, Claim, ClaimRefused, Handover, SessionState, envelope::Body,
};
use crate::proto::{self, ErrorCode, Hello, PresenceState, Reason};

/// A Hello whose resume token belongs to a session on another gateway.
#[derive(Debug)]
pub(super) struct PendingClaim {
    pub conn: ConnId,
    pub id: u64,
    pub hello: Hello,
    pub verified: Option<Verified>,
    /// Gateways asked that have not answered.
    pub asked: HashSet<String>,
    /// Every live gateway was asked (the issuer did not have it, or is gone).
    pub widened: bool,
    /// Claimed by the identity of the Hello's token, not by a resume token.
    pub by_identity: bool,
}

/// The gateway a resume token was issued by (`<node>.<random>`, cluster mode only).
pub(super) fn token_node(token: &str) -> Option<&str> {
    token.rsplit_once('.').map(|(node, _)| node)
}

impl Hub {
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
        let claim = PendingClaim {
            conn,
            id,
            hello: hello.clone(),
            verified: verified.clone(),
            asked: HashSet::new(),
            widened,
            by_identity: false,
        };
        if ask.is_empty() {
            // Nobody to ask: its log, if any, is all there is (durable mode).
            return self.recover(claim).is_none();
        }
        self.start_claim(claim, ask);
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
        let mut hello = hello.clone();
        hello.resume_token.clear();
        let claim = PendingClaim {
            conn,
            id,
            hello,
            verified: verified.clone(),
            asked: HashSet::new(),
            widened: true,
            by_identity: true,
        };
        let ask = self.live_nodes.iter().cloned().collect();
        self.start_claim(claim, ask);
        true
    }

    fn start_claim(&mut self, claim: PendingClaim, ask: Vec<String>) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.claims.insert(ticket, claim);
        self.ask_claim(ticket, ask);
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
            reply_to: String::new(),
        });
        for node in nodes {
            claim.asked.insert(node.clone());
            self.outputs.push_back(Output::ToNode {
                node,
                body: body.clone(),
            });
        }
    }

    pub(super) fn claim_received(&mut self, now: Instant, from: &str, claim: Claim) {
        let claimer = if claim.reply_to.is_empty() {
            from.to_string()
        } else {
            claim.reply_to.clone()
        };
        let refuse = |code: ErrorCode, message: &str| Output::ToNode {
            node: claimer.clone(),
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
        let moved_to = self
            .moved_tokens
            .get(&claim.resume_token)
            .filter(|(_, until)| *until > now)
            .map(|(node, _)| node.clone());
        if held.is_none()
            && let Some(node) = moved_to
            && node != claimer
        {
            // Handed over from here: the claim follows the session, behind its hand-over.
            let body = Body::Claim(Claim {
                reply_to: claimer.clone(),
                ..claim
            });
            return self.outputs.push_back(Output::ToNode { node, body });
        }
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
        let Some(session) = self.export_session(now, key, &claimer, false, Reason::Superseded)
        else {
            return;
        };
        self.outputs.push_back(Output::ToNode {
            node: claimer,
            body: Body::Handover(Handover {
                ticket: claim.ticket,
                session: Some(session),
            }),
        });
    }

    pub(super) fn claim_refused(&mut self, now: Instant, from: &str, refused: ClaimRefused) {
        let Some(claim) = self.claims.get_mut(&refused.ticket) else {
            return;
        };
        if !claim.asked.remove(from) {
            // Answered by the gateway a claim was forwarded to, for the one that forwarded.
            let forwarder = claim.asked.iter().next().cloned();
            if let Some(forwarder) = forwarder {
                claim.asked.remove(&forwarder);
            }
        }
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
        // Nobody live holds it: its gateway may have been lost with it (durable mode).
        let claim = if refused.code() == ErrorCode::ResumeExpired {
            match self.recover(claim) {
                Some(claim) => claim,
                None => return,
            }
        } else {
            claim
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

    pub(super) fn handover_received(&mut self, now: Instant, from: &str, handover: Handover) {
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
        let key = self.import_session(now, from, state, token, None);
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
        // Claims that still come here follow it (for as long as it may be resumed).
        self.moved_tokens.retain(|_, (_, until)| *until > now);
        self.moved_tokens.insert(
            session.resume_token.clone(),
            (node.to_string(), now + self.config.resume_window),
        );
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
        let rooms = session.rooms.iter().map(|r| (r.clone(), state)).collect();
        let remote = self.add_remote(RemotePeer::new(
            &session.peer_id,
            node,
            rooms,
            session.profile.clone(),
        ));
        for room in &session.rooms {
            self.rooms
                .add(room, &session.peer_id, Member::Remote(remote));
        }
        tracing::info!(peer = %session.peer_id, to = node, "session handed over");
        session.backlog.number_pending();
        let frames = session.backlog.export();
        let mut state = snapshot(&session, Some(now));
        state.frames = frames
            .into_iter()
            .map(|(frame, signal)| wire::BacklogFrame {
                frame: Some(frame),
                signal,
            })
            .collect();
        state.was_online = was_online;
        if let Some(log) = session.durable.take() {
            self.retire_log(key, log);
        }
        if with_token {
            state.resume_token = session.resume_token;
        }
        Some(state)
    }

    /// The session's state as the durable log keeps it (frames aside), or `None`.
    pub(super) fn snapshot(&self, key: SessionKey, now: Option<Instant>) -> SessionState {
        self.sessions
            .get(&key)
            .map(|s| snapshot(s, now))
            .unwrap_or_default()
    }
}

/// What a session is, minus its connection, its frames and its resume token: what a
/// hand-over carries and a durable record stores. `now`: for the token's remaining time.
fn snapshot(session: &Session, now: Option<Instant>) -> SessionState {
    let (next_seq, floor, dropped_unacked) = session.backlog.position();
    let identity = session.identity.as_ref();
    let mut state = SessionState {
        peer_id: session.peer_id.clone(),
        rooms: session.rooms.iter().cloned().collect(),
        transport: session.transport.to_proto().into(),
        client_seq: session.client_seq,
        attempt: session.attempt,
        next_seq,
        floor,
        dropped_unacked,
        frames: Vec::new(),
        has_identity: identity.is_some(),
        sub: identity.as_ref().map(|i| i.sub.clone()).unwrap_or_default(),
        device: identity.and_then(|i| i.device.clone()).unwrap_or_default(),
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
        name: session.profile.name.clone(),
        metadata: session.profile.metadata.clone(),
        token_expires_in_ms: 0,
        was_online: session.conn().is_some(),
        ..Default::default()
    };
    if let (Some(at), Some(now)) = (session.token_expires, now) {
        state.token_expires_in_ms = millis_u64(at.saturating_duration_since(now)).max(1);
    }
    if let Some(log) = &session.durable {
        log.describe(&mut state);
        state.unsettled = session.unsettled.iter().copied().collect();
    }
    state
}

impl Hub {
    /// A session handed over by `from`: held here from now on, away until its client
    /// attaches. Its rooms' members here see no change; the other gateways learn where it
    /// lives from its records.
    pub(super) fn import_session(
        &mut self,
        now: Instant,
        from: &str,
        state: SessionState,
        resume_token: String,
        log_last: Option<u64>,
    ) -> Option<SessionKey> {
        if self.by_peer_id.contains_key(&state.peer_id) {
            tracing::warn!(peer = %state.peer_id, from, "hand-over of a session held here already");
            return None;
        }
        // Where its durable log stands (durable mode).
        let log_state = SessionState {
            next_seq: state.next_seq,
            floor: state.floor,
            client_seq: state.client_seq,
            durable_generation: state.durable_generation,
            durable_revision: state.durable_revision,
            last_from: state.last_from.clone(),
            ..SessionState::default()
        };
        let in_flight = state.unsettled.clone();
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
        } else if log_last.is_some() {
            Reason::GatewayLost // Recovered from its log: its gateway died.
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
            Box::new(Session {
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
                unsettled: in_flight.iter().copied().collect(),
                parked: None,
                moved_online: state.was_online,
                durable: None,
            }),
        );
        self.continue_log(key, &log_state, log_last);
        self.owed_by(key, from, &in_flight);
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
            self.go_elsewhere(conn, Reason::ServerShutdown);
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
}
