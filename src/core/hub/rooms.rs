//! Room membership: which peers are in which room, and where each member's session lives.
//!
//! Every fan-out (presence news, the member list of `Joined`) and every lookup of a signal's
//! recipient goes through here. A member's address is a [`SessionKey`] of this hub today; a
//! cluster adds members whose session lives on another node at this seam, without the rules
//! in the rest of the hub changing.

use std::collections::{BTreeMap, HashMap};

use super::SessionKey;

#[derive(Debug, Default)]
pub(super) struct Rooms {
    /// Room name -> peer id -> session. Ordered by peer id so that outputs are deterministic.
    rooms: HashMap<String, BTreeMap<String, SessionKey>>,
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

    pub fn member(&self, room: &str, peer_id: &str) -> Option<SessionKey> {
        self.rooms.get(room)?.get(peer_id).copied()
    }

    /// Members in peer-id order.
    pub fn members(&self, room: &str) -> impl Iterator<Item = (&str, SessionKey)> {
        self.rooms
            .get(room)
            .into_iter()
            .flat_map(|m| m.iter().map(|(peer, key)| (peer.as_str(), *key)))
    }

    /// Every member but `except`, in peer-id order (collected: the caller mutates sessions).
    pub fn others(&self, room: &str, except: SessionKey) -> Vec<SessionKey> {
        self.members(room)
            .map(|(_, key)| key)
            .filter(|key| *key != except)
            .collect()
    }

    /// Adds a member; true if the room was created by it.
    pub fn add(&mut self, room: &str, peer_id: &str, key: SessionKey) -> bool {
        let created = !self.rooms.contains_key(room);
        self.rooms
            .entry(room.to_string())
            .or_default()
            .insert(peer_id.to_string(), key);
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
