//! What a session asks for: Join, Leave, Signal (validated, checked against its grants and
//! relayed), Ack, Bye.

use std::time::Instant;

use super::delivery::{BacklogFull, Item, error_msg, shown};
use super::pending::News;
use super::rooms::Member;
use super::{Hub, HubEvent, SessionKey, SignalKind};
use crate::proto::{
    self, ErrorCode, Joined, Left, Peer, PeerJoined, PresenceState, Reason, server_frame::Msg,
    signal,
};

const MAX_ROOM_NAME: usize = 64;
const MAX_PEER_ID: usize = 64;

fn valid_room_name(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= MAX_ROOM_NAME
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

impl Hub {
    pub(super) fn join(
        &mut self,
        now: Instant,
        (key, id, seq): (SessionKey, u64, u64),
        room: String,
    ) {
        if !valid_room_name(&room) {
            let message = format!(
                "room name {} is invalid: 1 to {MAX_ROOM_NAME} bytes of A-Z a-z 0-9 . _ : -",
                shown(&room)
            );
            return self.reply_error(key, id, ErrorCode::InvalidArgument, message);
        }
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let limits = &self.config.limits;
        if !session.grants.allows_room(&room) {
            let message = format!("the session's token does not grant room {room:?}");
            return self.reply_error(key, id, ErrorCode::RoomNotGranted, message);
        }
        if session.rooms.contains(&room) {
            let message = format!("already in room {room:?}");
            return self.reply_error(key, id, ErrorCode::AlreadyJoined, message);
        }
        if session.rooms.len() >= limits.max_rooms_per_session {
            let message = format!(
                "a session may be in at most {} rooms",
                limits.max_rooms_per_session
            );
            return self.reply_error(key, id, ErrorCode::TooManyRooms, message);
        }
        // Capacity is for peers who are there: members who went away (and may never come
        // back) cannot squat a room. Away members still count toward a hard bound of twice
        // the capacity, so memory stays bounded. In a cluster, members on every gateway
        // count, and the room's home gateway decides (`seats.rs`).
        if let Some(home) = self.room_home(&room)
            && self.config.cluster_node.as_ref() != Some(&home)
        {
            return self.ask_for_seat(now, (key, id, seq), room, home);
        }
        if !self.seat_free(now, &room) {
            let message = format!(
                "room {room:?} is full ({} peers)",
                self.config.limits.max_peers_per_room
            );
            return self.reply_error(key, id, ErrorCode::RoomFull, message);
        }
        self.admit(key, id, room);
    }

    /// Adds the session to the room (capacity checked): Joined with every member, PeerJoined
    /// to the others, on every gateway.
    pub(super) fn admit(&mut self, key: SessionKey, id: u64, room: String) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let peer_id = session.peer_id.clone();
        let profile = session.profile.clone();
        let peers = self
            .rooms
            .members(&room)
            .map(|(peer_id, member)| {
                let profile = self.member_profile(member);
                Peer {
                    peer_id: peer_id.to_string(),
                    state: self.member_state(&room, member).into(),
                    name: profile.name,
                    metadata: profile.metadata,
                }
            })
            .collect();
        let others = self.rooms.locals(&room);
        if self.rooms.add(&room, &peer_id, Member::Local(key)) {
            self.gauges.rooms += 1;
        }
        if let Some(session) = self.sessions.get_mut(&key) {
            session.rooms.insert(room.clone());
        }
        let peer = Peer {
            peer_id: peer_id.clone(),
            state: PresenceState::Online.into(),
            name: profile.name,
            metadata: profile.metadata,
        };
        let joined = PeerJoined {
            room: room.clone(),
            peer: Some(peer.clone()),
        };
        self.reply(
            key,
            id,
            Msg::Joined(Joined {
                room: room.clone(),
                peers,
            }),
        );
        for other in others {
            self.tell(other, &room, &peer_id, News::Joined(joined.clone()));
        }
        self.announce_member(&room, peer, Reason::Unspecified, 0, key);
    }

    pub(super) fn leave(&mut self, key: SessionKey, id: u64, room: String) {
        let in_room = self
            .sessions
            .get(&key)
            .is_some_and(|s| s.rooms.contains(&room));
        if !in_room {
            // The same answer whether the room exists or not: an outsider learns nothing.
            let message = format!("not in room {}", shown(&room));
            return self.reply_error(key, id, ErrorCode::NotJoined, message);
        }
        self.remove_from_room(key, &room, Reason::LeftRoom);
        self.reply(key, id, Msg::Left(Left { room }));
    }

    pub(super) fn relay(
        &mut self,
        now: Instant,
        key: SessionKey,
        id: u64,
        seq: u64,
        mut signal: proto::Signal,
    ) {
        let refuse = |hub: &mut Self, code: ErrorCode, message: String| {
            hub.event(HubEvent::SignalRefused { reason: code });
            hub.reply(key, id, error_msg(code, message, id));
        };
        let Some(sender) = self.sessions.get(&key) else {
            return;
        };
        if !sender.grants.signal {
            let message = "the session's token does not allow sending signals";
            return refuse(self, ErrorCode::SignalNotGranted, message.to_string());
        }
        let kind = match &signal.payload {
            Some(signal::Payload::Description(d)) if d.r#type() == proto::SdpType::Unspecified => {
                let message = "description.type must be OFFER, ANSWER, PRANSWER or ROLLBACK";
                return refuse(self, ErrorCode::InvalidArgument, message.to_string());
            }
            Some(payload) => SignalKind::of(payload),
            None => {
                let message = "a Signal needs a description, a candidate or data";
                return refuse(self, ErrorCode::InvalidArgument, message.to_string());
            }
        };
        // Whether the room exists or not: an outsider learns nothing about other rooms.
        if !sender.rooms.contains(&signal.room) {
            let message = format!("join room {} before signaling in it", shown(&signal.room));
            return refuse(self, ErrorCode::NotJoined, message);
        }
        if signal.to.is_empty() || signal.to.len() > MAX_PEER_ID || signal.to == sender.peer_id {
            let message = format!(
                "`to` must name another peer of the room, got {}",
                shown(&signal.to)
            );
            return refuse(self, ErrorCode::InvalidArgument, message);
        }
        let Some(recipient) = self.rooms.member(&signal.room, &signal.to) else {
            let message = format!(
                "peer {} is not in room {:?}",
                shown(&signal.to),
                signal.room
            );
            return refuse(self, ErrorCode::PeerNotInRoom, message);
        };
        // Never trust the client's `from`.
        signal.from = sender.peer_id.clone();
        let to = signal.to.clone();
        let recipient = match recipient {
            Member::Local(recipient) => recipient,
            Member::Remote(remote) => {
                return self.relay_remote(now, (key, id, seq), remote, kind, signal);
            }
        };
        if self.already_taken(recipient, &signal.from, seq) {
            // Sent again after its gateway crashed: the recipient has it already.
            return;
        }
        match self.deliver(recipient, Item::Signal(Msg::Signal(signal))) {
            Ok(()) => {
                self.settle_local_when_stored(recipient, key, id, seq);
                self.event(HubEvent::SignalRelayed { kind });
            }
            Err(BacklogFull {
                waiting,
                waiting_bytes,
            }) => {
                let limits = &self.config.limits;
                let message = format!(
                    "peer {to:?} has {waiting} signals ({waiting_bytes} bytes) waiting to be \
                     delivered, the most it may have ({} / {} bytes); this signal was not \
                     accepted",
                    limits.backlog_frames, limits.backlog_bytes
                );
                refuse(self, ErrorCode::RecipientBufferFull, message);
            }
        }
    }

    /// The client processed every frame of its stream up to `seq`.
    pub(super) fn client_ack(&mut self, key: SessionKey, id: u64, seq: u64) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        // Not beyond what the client was sent: acknowledging frames it never received would
        // make the gateway forget them.
        let last_sent = session.backlog.sent_through();
        if seq > last_sent {
            let message = format!("ack of seq {seq}, but the last frame sent was {last_sent}");
            return self.reply_error(key, id, ErrorCode::InvalidArgument, message);
        }
        session.backlog.ack(seq);
    }

    /// The client leaves for good: its rooms see PeerLeft (BYE), the connection is closed.
    pub(super) fn bye(&mut self, key: SessionKey) {
        self.end_session(key, Reason::Bye);
    }
}
