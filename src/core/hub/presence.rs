//! A session's presence as its rooms see it: ONLINE -> away (UNREACHABLE, with the reason)
//! -> ONLINE again on resume, or LEFT for good. The only ways to LEFT: the client's Bye, the
//! resume window running out, a resume that could not continue without loss (the client
//! starts a new session), and shutdown.

use std::time::{Duration, Instant};

use super::delivery::Item;
use super::millis_u64;
use super::pending::News;
use super::session::Presence;
use super::{Deadline, Hub, HubEvent, Output, SessionKey};
use crate::core::reason_label;
use crate::proto::{PeerLeft, PeerState, PresenceState, Reason};

impl Hub {
    /// The session lost its connection (or suspended it): its rooms are told at once, it may
    /// resume within the resume window, and what is sent to it meanwhile waits.
    pub(super) fn go_away(
        &mut self,
        now: Instant,
        key: SessionKey,
        reason: Reason,
        silent_for: Duration,
    ) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if session.conn().is_none() {
            return;
        }
        session.presence = Presence::Away { since: now, reason };
        let transport = session.transport.index();
        self.gauges.online[transport] -= 1;
        self.gauges.unreachable[transport] += 1;
        tracing::info!(
            peer = %session.peer_id,
            transport = %session.transport,
            reason = reason_label(reason),
            silent_for_ms = millis_u64(silent_for),
            "peer unreachable"
        );
        self.deadlines
            .set(Deadline::ResumeWindow(key), now + self.config.resume_window);
        // The log says it is away: its resume window runs from now, even after a crash.
        self.persist_soon(key);
        self.tell_rooms_state(key, PresenceState::Unreachable, reason, silent_for);
    }

    /// Tells every member of the session's rooms its new state.
    pub(super) fn tell_rooms_state(
        &mut self,
        key: SessionKey,
        state: PresenceState,
        reason: Reason,
        silent_for: Duration,
    ) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let detected_by = session.transport.to_proto();
        let peer_id = session.peer_id.clone();
        let rooms: Vec<String> = session.rooms.iter().cloned().collect();
        for room in rooms {
            let news = PeerState {
                room: room.clone(),
                peer_id: peer_id.clone(),
                state: state.into(),
                reason: reason.into(),
                silent_for_ms: millis_u64(silent_for),
                detected_by: detected_by.into(),
            };
            for other in self.rooms.others(&room, key) {
                self.tell(other, &room, &peer_id, News::State(news.clone()));
            }
            if let Some(peer) = self.session_peer(key, state) {
                self.announce_member(&room, peer, reason, news.silent_for_ms, key);
            }
        }
    }

    /// Presence news about `peer_id` in `room` for the session `to`.
    pub(super) fn tell(&mut self, to: SessionKey, room: &str, peer_id: &str, news: News) {
        // News is never refused (it is coalesced while it waits).
        let _ = self.deliver(
            to,
            Item::News {
                room: room.to_string(),
                peer_id: peer_id.to_string(),
                news,
            },
        );
    }

    /// The session is gone for good: it leaves every room (members see PeerLeft with
    /// `reason`), its resume token dies, and its connection, if any, is closed.
    pub(super) fn end_session(&mut self, key: SessionKey, reason: Reason) {
        let rooms: Vec<String> = self
            .sessions
            .get(&key)
            .map(|s| s.rooms.iter().cloned().collect())
            .unwrap_or_default();
        for room in rooms {
            self.remove_from_room(key, &room, reason);
        }
        self.forget_identity(key);
        self.end_log(key);
        let Some(session) = self.sessions.remove(&key) else {
            return;
        };
        self.by_peer_id.remove(&session.peer_id);
        self.by_resume_token.remove(&session.resume_token);
        for deadline in [
            Deadline::ResumeWindow(key),
            Deadline::TokenExpiry(key),
            Deadline::TokenGrace(key),
        ] {
            self.deadlines.cancel(deadline);
        }
        tracing::info!(peer = %session.peer_id, reason = reason_label(reason), "peer left");
        let transport = session.transport.index();
        match session.presence {
            Presence::Online(conn) => {
                self.gauges.online[transport] -= 1;
                if self.connections.remove(&conn).is_some() {
                    self.outputs.push_back(Output::Close { conn, reason });
                    self.event(HubEvent::ConnectionEnded {
                        transport: session.transport,
                        reason,
                        silent_for: Duration::ZERO,
                    });
                }
            }
            Presence::Away { .. } => self.gauges.unreachable[transport] -= 1,
        }
        self.event(HubEvent::SessionEnded { reason });
    }

    pub(super) fn remove_from_room(&mut self, key: SessionKey, room: &str, reason: Reason) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.rooms.remove(room);
        let peer_id = session.peer_id.clone();
        if self.rooms.remove(room, &peer_id) {
            self.gauges.rooms -= 1;
        }
        let left = PeerLeft {
            room: room.to_string(),
            peer_id: peer_id.clone(),
            reason: reason.into(),
        };
        for other in self.rooms.others(room, key) {
            self.tell(other, room, &peer_id, News::Left(left.clone()));
        }
        self.announce_left(room, &peer_id, reason);
    }

    pub(super) fn presence_state(&self, key: SessionKey) -> PresenceState {
        self.sessions
            .get(&key)
            .map_or(PresenceState::Unspecified, |s| s.presence.state())
    }
}
