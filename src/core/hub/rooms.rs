//! Room membership: which peers are in which room, and where each member's session lives —
//! in this hub ([`Member::Local`]) or, in cluster mode, on another gateway
//! ([`Member::Remote`], see `remote.rs`).
//!
//! Every fan-out (presence news, the member list of `Joined`) and every lookup of a signal's
//! recipient goes through here. Fan-out reaches local members only: each gateway tells its own
//! sessions, from the news other gateways send it.

use std::collections::{BTreeMap, HashMap};

use super::SessionKey;
use super::remote::RemoteKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Member {
    Local(SessionKey),
    Remote(RemoteKey),
}

#[derive(Debug, Default)]
pub(super) struct Rooms {
    /// Room name -> peer id -> member. Ordered by peer id so that outputs are deterministic.
    rooms: HashMap<String, BTreeMap<String, Member>>,
}

impl Rooms {
    /// Rooms with at least one member.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(String::as_str)
    }

    pub fn member_count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, BTreeMap::len)
    }

    pub fn member(&self, room: &str, peer_id: &str) -> Option<Member> {
        self.rooms.get(room)?.get(peer_id).copied()
    }

    /// Members in peer-id order.
    pub fn members(&self, room: &str) -> impl Iterator<Item = (&str, Member)> {
        self.rooms
            .get(room)
            .into_iter()
            .flat_map(|m| m.iter().map(|(peer, member)| (peer.as_str(), *member)))
    }

    /// Every local member but `except`, in peer-id order (collected: the caller mutates
    /// sessions).
    pub fn others(&self, room: &str, except: SessionKey) -> Vec<SessionKey> {
        self.members(room)
            .filter_map(|(_, member)| match member {
                Member::Local(key) if key != except => Some(key),
                _ => None,
            })
            .collect()
    }

    /// Every local member.
    pub fn locals(&self, room: &str) -> Vec<SessionKey> {
        self.members(room)
            .filter_map(|(_, member)| match member {
                Member::Local(key) => Some(key),
                Member::Remote(_) => None,
            })
            .collect()
    }

    /// Adds (or re-addresses) a member; true if the room was created by it.
    pub fn add(&mut self, room: &str, peer_id: &str, member: Member) -> bool {
        let created = !self.rooms.contains_key(room);
        self.rooms
            .entry(room.to_string())
            .or_default()
            .insert(peer_id.to_string(), member);
        created
    }

    /// Removes a member; true if the room is gone with it (it was the last one).
    pub fn remove(&mut self, room: &str, peer_id: &str) -> bool {
        let Some(members) = self.rooms.get_mut(room) else {
            return false;
        };
        members.remove(peer_id);
        if members.is_empty() {
            self.rooms.remove(room);
            return true;
        }
        false
    }

    pub fn clear(&mut self) {
        self.rooms.clear();
    }
}
