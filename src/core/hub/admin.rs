//! What the application's backend may see and do through the gateway's backend API: the
//! sessions and rooms, and disconnecting a session or every session of an identity (with a
//! message the client sees). Revoking an identity's tokens is the runtime's part (it verifies
//! tokens); the hub ends the sessions.

use std::time::Instant;

use super::delivery::error_msg;
use super::session::Presence;
use super::{Hub, SessionKey};
use crate::core::Transport;
use crate::proto::{ErrorCode, PresenceState, Reason};

/// One session as the backend API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub peer_id: String,
    /// The token's `sub` and `device` (None without authentication).
    pub identity: Option<String>,
    pub device: Option<String>,
    pub name: String,
    pub state: PresenceState,
    /// Why it is away (None when online).
    pub away_reason: Option<Reason>,
    /// Of the current (or last) connection.
    pub transport: Transport,
    pub rooms: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomView {
    pub name: String,
    /// Peer ids, in order.
    pub members: Vec<String>,
}

/// Whom to disconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectTarget {
    Peer(String),
    /// Every session of this `sub`, whatever the device.
    Identity(String),
}

impl Hub {
    /// Every session, ordered by peer id.
    pub fn sessions(&self) -> Vec<SessionView> {
        let mut views: Vec<SessionView> = self
            .sessions
            .values()
            .map(|s| SessionView {
                peer_id: s.peer_id.clone(),
                identity: s.identity.as_ref().map(|i| i.sub.clone()),
                device: s.identity.as_ref().and_then(|i| i.device.clone()),
                name: s.profile.name.clone(),
                state: s.presence.state(),
                away_reason: match s.presence {
                    Presence::Online(_) => None,
                    Presence::Away { reason, .. } => Some(reason),
                },
                transport: s.transport,
                rooms: s.rooms.iter().cloned().collect(),
            })
            .collect();
        views.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        views
    }

    /// Every room with its members, ordered by name.
    pub fn rooms(&self) -> Vec<RoomView> {
        let mut views: Vec<RoomView> = self
            .rooms
            .names()
            .map(|name| RoomView {
                name: name.to_string(),
                members: self
                    .rooms
                    .members(name)
                    .map(|(peer, _)| peer.to_string())
                    .collect(),
            })
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    /// Ends the targeted sessions for good: an online client gets Error DISCONNECTED with
    /// `message`, then its connection is closed (4007); peers see PeerLeft (DISCONNECTED).
    /// Returns how many sessions ended.
    pub fn disconnect(&mut self, _now: Instant, target: &DisconnectTarget, message: &str) -> usize {
        let keys: Vec<SessionKey> = match target {
            DisconnectTarget::Peer(peer_id) => {
                self.by_peer_id.get(peer_id).copied().into_iter().collect()
            }
            DisconnectTarget::Identity(sub) => self
                .sessions
                .iter()
                .filter(|(_, s)| s.identity.as_ref().is_some_and(|i| &i.sub == sub))
                .map(|(key, _)| *key)
                .collect(),
        };
        for key in &keys {
            if let Some(conn) = self.sessions.get(key).and_then(|s| s.conn()) {
                let text = format!("disconnected by the application: {message}");
                self.send_direct(conn, 0, error_msg(ErrorCode::Disconnected, text, 0));
            }
            self.end_session(*key, Reason::Disconnected);
        }
        keys.len()
    }
}
