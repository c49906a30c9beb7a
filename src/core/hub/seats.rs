//! Cluster mode: who decides a join when the room is on several gateways.
//!
//! Each gateway knows the room's members on every gateway, but two joins on two gateways at
//! the same moment would each see the last seat free. So one gateway decides for each room:
//! its *home*, the live gateway with the highest rendezvous hash of (room, node id) — every
//! gateway computes the same one from the same membership, and a room moves home only when
//! its home is lost. A join elsewhere asks the home for a seat (`SeatRequest`); the home
//! counts online members plus the seats it granted that have not shown up as members yet,
//! and answers. Until the answer, the session's later frames wait (they are processed after
//! the join, in order, as on one gateway).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Deadline, Hub, SessionKey};
use crate::proto::cluster::{SeatAnswer, SeatRequest, envelope::Body};
use crate::proto::{ClientFrame, ErrorCode, PresenceState};

/// A granted seat is held this long for its member to show up.
const RESERVATION: Duration = Duration::from_secs(5);

/// Frames a session may send while its join waits for the home's answer.
pub(super) const MAX_PARKED: usize = 256;

/// A join waiting for the room's home.
#[derive(Debug)]
pub(super) struct SeatWait {
    pub key: SessionKey,
    pub id: u64,
    pub seq: u64,
    pub room: String,
    pub home: String,
}

/// The frames of a session that arrived while its join waited.
pub(super) type Parked = VecDeque<ClientFrame>;

fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

impl Hub {
    /// The gateway that decides joins of `room` (None outside cluster mode).
    pub(super) fn room_home(&self, room: &str) -> Option<String> {
        let me = self.config.cluster_node.as_deref()?;
        std::iter::once(me)
            .chain(self.live_nodes.iter().map(String::as_str))
            .max_by_key(|node| (fnv1a(&[room, node]), *node))
            .map(str::to_string)
    }

    /// Seats granted here for `room` whose members have not shown up yet.
    fn reserved(&mut self, now: Instant, room: &str) -> usize {
        let Some(held) = self.reservations.get_mut(room) else {
            return 0;
        };
        held.retain(|(_, until)| *until > now);
        let n = held.len();
        if n == 0 {
            self.reservations.remove(room);
        }
        n
    }

    /// A member showed up in `room`: the seat granted to it (if any) is taken.
    pub(super) fn seat_taken(&mut self, room: &str, peer_id: &str) {
        if let Some(held) = self.reservations.get_mut(room) {
            held.retain(|(peer, _)| peer != peer_id);
            if held.is_empty() {
                self.reservations.remove(room);
            }
        }
    }

    /// Whether one more member fits in `room`, as its home sees it.
    pub(super) fn seat_free(&mut self, now: Instant, room: &str) -> bool {
        let limits = &self.config.limits;
        let (max, hard) = (limits.max_peers_per_room, 2 * limits.max_peers_per_room);
        let online = self
            .rooms
            .members(room)
            .filter(|(_, member)| self.member_state(room, *member) == PresenceState::Online)
            .count();
        let all = self.rooms.member_count(room);
        let reserved = self.reserved(now, room);
        online + reserved < max && all + reserved < hard
    }

    /// Asks the room's home for a seat; the session's frames wait for the answer.
    pub(super) fn ask_for_seat(
        &mut self,
        now: Instant,
        (key, id, seq): (SessionKey, u64, u64),
        room: String,
        home: String,
    ) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.parked.get_or_insert_with(VecDeque::new);
        if seq != 0 {
            session.unsettled.insert(seq);
        }
        let peer_id = session.peer_id.clone();
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.outputs.push_back(super::Output::ToNode {
            node: home.clone(),
            body: Body::SeatRequest(SeatRequest {
                ticket,
                room: room.clone(),
                peer_id,
            }),
        });
        self.seat_waits.insert(
            ticket,
            SeatWait {
                key,
                id,
                seq,
                room,
                home,
            },
        );
        self.deadlines
            .set(Deadline::Seat(ticket), now + self.config.liveness.timeout());
    }

    /// This gateway is the room's home: a seat for a join on another gateway.
    pub(super) fn seat_requested(&mut self, now: Instant, from: &str, request: SeatRequest) {
        let granted = self.seat_free(now, &request.room);
        if granted {
            self.reservations
                .entry(request.room.clone())
                .or_default()
                .push((request.peer_id, now + RESERVATION));
        }
        self.outputs.push_back(super::Output::ToNode {
            node: from.to_string(),
            body: Body::SeatAnswer(SeatAnswer {
                ticket: request.ticket,
                granted,
            }),
        });
    }

    /// The home answered (or will not: `granted` None, the join is decided again with the
    /// home the cluster has now).
    pub(super) fn seat_answered(&mut self, now: Instant, ticket: u64, granted: Option<bool>) {
        let Some(wait) = self.seat_waits.remove(&ticket) else {
            return;
        };
        self.deadlines.cancel(Deadline::Seat(ticket));
        let SeatWait {
            key, id, seq, room, ..
        } = wait;
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.unsettled.remove(&seq);
        let parked = session.parked.take().unwrap_or_default();
        match granted {
            Some(true) => self.admit(key, id, room),
            Some(false) => {
                let limits = &self.config.limits;
                let message = format!(
                    "room {room:?} is full ({} peers)",
                    limits.max_peers_per_room
                );
                self.reply_error(key, id, ErrorCode::RoomFull, message);
            }
            None => self.join(now, (key, id, seq), room),
        }
        self.ack_due(key);
        // What arrived meanwhile, in order, as if it had just arrived (a Join parks the rest
        // again). A session whose connection is gone drops them: they were not processed,
        // so its client resends the numbered ones after resuming.
        for frame in parked {
            let Some(session) = self.sessions.get_mut(&key) else {
                return;
            };
            let Some(conn) = session.conn() else {
                session.parked = None;
                return;
            };
            match &mut session.parked {
                Some(waiting) => waiting.push_back(frame),
                None => self.frame_received(now, conn, frame),
            }
        }
    }

    /// The home of these joins was lost: decide them again.
    pub(super) fn seats_of_lost_node(&mut self, now: Instant, node: &str) {
        let mut tickets: Vec<u64> = self
            .seat_waits
            .iter()
            .filter(|(_, w)| w.home == node)
            .map(|(t, _)| *t)
            .collect();
        tickets.sort();
        for ticket in tickets {
            self.seat_answered(now, ticket, None);
        }
    }
}
