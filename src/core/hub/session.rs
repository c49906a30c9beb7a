//! What the hub keeps per connection and per session.
//!
//! A *connection* is one transport-level link (a WebSocket, a WebTransport session). A
//! *session* is the logical client: its peer id, rooms, ordered stream (the [`Backlog`]) and
//! resume token. A session outlives its connection for the resume window, and a new
//! connection can take it over.

use std::collections::BTreeSet;
use std::time::Instant;

use super::backlog::Backlog;
use super::flow::Flow;
use super::{ConnId, SessionKey};
use crate::core::Transport;
use crate::core::identity::{Grants, Identity, Profile};
use crate::core::rate_limit::TokenBucket;
use crate::proto::{PresenceState, Reason};

#[derive(Debug)]
pub(super) struct Connection {
    pub transport: Transport,
    pub session: Option<SessionKey>,
    pub protocol_errors: u32,
    pub flow: Flow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Presence {
    Online(ConnId),
    /// No connection since `since` (lost, closed, or suspended: `reason`); may resume until
    /// the resume window runs out.
    Away {
        since: Instant,
        reason: Reason,
    },
}

impl Presence {
    pub fn state(self) -> PresenceState {
        match self {
            Presence::Online(_) => PresenceState::Online,
            Presence::Away { .. } => PresenceState::Unreachable,
        }
    }
}

#[derive(Debug)]
pub(super) struct Session {
    pub peer_id: String,
    pub resume_token: String,
    pub rooms: BTreeSet<String>,
    pub presence: Presence,
    /// Transport of the current (or last) connection.
    pub transport: Transport,
    /// Gateway -> client: the ordered stream.
    pub backlog: Backlog,
    /// Client -> gateway: the last numbered ClientFrame processed...
    pub client_seq: u64,
    /// ...and the last one the client was told of (Ack or Welcome).
    pub client_seq_told: u64,
    /// Highest Hello.attempt that attached a connection.
    pub attempt: u64,
    /// Requests (Join, Leave, Signal, Ping, Refresh).
    pub limiter: TokenBucket,
    /// Acks (cheap, but not free: beyond this they are dropped unread).
    pub ack_limiter: TokenBucket,
    /// Resumes and take-overs: each one tells every peer, so flapping is bounded.
    pub resume_limiter: TokenBucket,
    /// With tokens: whose session this is, what it may do, what peers see, until when.
    pub identity: Option<Identity>,
    pub grants: Grants,
    pub profile: Profile,
    pub token_expires: Option<Instant>,
    /// Numbered client frames (signals to other gateways) whose fate is not known yet: the
    /// Ack stops below the first.
    pub unsettled: BTreeSet<u64>,
    /// Frames that arrived while a join waits for its room's home gateway (`seats.rs`).
    pub parked: Option<super::seats::Parked>,
    /// Handed over from another gateway while online (a drain): its rooms still see it
    /// ONLINE, so its client's return is no news.
    pub moved_online: bool,
    /// Durable mode: the session's log (`durable.rs`).
    pub durable: Option<Box<super::durable::Log>>,
}

impl Session {
    /// The client's numbered frames processed and settled: what an Ack may cover. In durable
    /// mode a settled signal is stored in its recipient's log; what a frame did to the
    /// session itself (a Join's room, a reply, an Error) must be in its own log, so while
    /// anything of it is not stored, no more than that log says.
    pub fn settled_seq(&self) -> u64 {
        let settled = self.settled_in_memory();
        match &self.durable {
            Some(log) if !log.all_stored(self.backlog.last_seq()) => {
                settled.min(log.client_seq_durable)
            }
            _ => settled,
        }
    }

    /// The client's numbered frames processed and settled, stored or not.
    pub fn settled_in_memory(&self) -> u64 {
        self.unsettled
            .first()
            .map_or(self.client_seq, |first| first - 1)
    }

    pub fn conn(&self) -> Option<ConnId> {
        match self.presence {
            Presence::Online(conn) => Some(conn),
            Presence::Away { .. } => None,
        }
    }
}
