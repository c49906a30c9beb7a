//! Who a session belongs to and what it may do, as the core sees it: facts the runtime has
//! already verified (it checks the token's signature and times; crypto stays out of the
//! core). Without authentication every session is anonymous and may do everything.

use std::time::Instant;

use crate::proto::ErrorCode;

/// The owner of a session: with tokens, the same identity coming back takes its session over.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// The token's `sub`.
    pub sub: String,
    /// The token's `device`: one session per identity and device.
    pub device: Option<String>,
}

/// Which rooms a session may join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomGrant {
    Any,
    Exact(String),
    /// Every room whose name starts with this.
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    pub rooms: Vec<RoomGrant>,
    /// May send signals (a listener-only token may not).
    pub signal: bool,
}

impl Grants {
    /// Everything: what an anonymous session may do when authentication is off.
    pub fn all() -> Self {
        Self {
            rooms: vec![RoomGrant::Any],
            signal: true,
        }
    }

    pub fn allows_room(&self, room: &str) -> bool {
        self.rooms.iter().any(|grant| match grant {
            RoomGrant::Any => true,
            RoomGrant::Exact(name) => name == room,
            RoomGrant::Prefix(prefix) => room.starts_with(prefix.as_str()),
        })
    }
}

/// What peers see of a session besides its peer id (from its token, never from the client).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub metadata: String,
}

/// A token the runtime verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub identity: Identity,
    pub grants: Grants,
    pub profile: Profile,
    /// The token's `exp`, on the caller's clock.
    pub expires_at: Instant,
}

/// What the runtime established about the token of a Hello or a Refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Authentication is off: an anonymous session with every grant.
    Anonymous,
    Verified(Verified),
    /// The token was refused: `code` is one of the `TOKEN_*` codes, `message` says why (it
    /// never contains the token).
    Refused {
        code: ErrorCode,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_grants_match_exactly_by_prefix_or_all() {
        let grants = Grants {
            rooms: vec![
                RoomGrant::Exact("lobby".into()),
                RoomGrant::Prefix("team-".into()),
            ],
            signal: true,
        };
        assert!(grants.allows_room("lobby"));
        assert!(!grants.allows_room("lobby2"));
        assert!(grants.allows_room("team-a"));
        assert!(!grants.allows_room("teams"));
        assert!(Grants::all().allows_room("anything"));
        let none = Grants {
            rooms: Vec::new(),
            signal: true,
        };
        assert!(!none.allows_room("lobby"));
    }
}
