//! The not-yet-numbered end of a session's stream: what is addressed to a session while it is
//! away (unreachable or suspended), and what its connection cannot take yet. Frames here get
//! their seq only when they go out (or when the session resumes), so presence news can still
//! be coalesced: presence is state, not a log.
//!
//! Presence news about one peer in one room is kept as one *marker*, at the place of the first
//! change, holding the first and the latest news; when it goes out it becomes what the client
//! needs to know — the peer's latest state, or that it left, or nothing at all for a peer that
//! joined and left while the client was away. A signal from that peer seals the marker (news
//! after it gets a new marker behind the signal), so a client never receives a peer's signal
//! before learning that the peer joined, nor after learning that it left. Markers are therefore
//! bounded by the room members plus the held signals, whatever the churn.

use std::collections::{HashMap, VecDeque};

use crate::proto::{Peer, PeerJoined, PeerLeft, PeerState, server_frame::Msg};

/// One piece of presence news for a (room, peer).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum News {
    Joined(PeerJoined),
    State(PeerState),
    Left(PeerLeft),
}

impl News {
    pub fn into_msg(self) -> Msg {
        match self {
            News::Joined(j) => Msg::PeerJoined(j),
            News::State(s) => Msg::PeerState(s),
            News::Left(l) => Msg::PeerLeft(l),
        }
    }
}

/// A frame class that budgets tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// A reply or an error to the session's own request.
    Reply,
    /// A relayed signal (the one class that is refused, to its sender, at the bound).
    Signal,
}

#[derive(Debug)]
struct Marker {
    room: String,
    peer_id: String,
    first: News,
    /// A PeerLeft followed by a later join (the client must see the peer go and come back).
    left: Option<PeerLeft>,
    /// The latest PeerJoined: what the peer looks like (name, metadata) when it is announced.
    joined: Option<Peer>,
    last: News,
}

impl Marker {
    fn new(room: &str, peer_id: &str, news: News) -> Self {
        let joined = match &news {
            News::Joined(j) => j.peer.clone(),
            _ => None,
        };
        Self {
            room: room.to_string(),
            peer_id: peer_id.to_string(),
            first: news.clone(),
            left: None,
            joined,
            last: news,
        }
    }

    fn update(&mut self, news: News) {
        if let News::Left(left) = &self.last
            && self.left.is_none()
            && !matches!(news, News::Left(_))
        {
            self.left = Some(left.clone());
        }
        if let News::Joined(j) = &news {
            self.joined = j.peer.clone();
        }
        self.last = news;
    }

    /// What the client must be told, 0 to 2 messages.
    fn into_msgs(self) -> Vec<Msg> {
        let template = self.joined;
        let joined_from_state = |s: PeerState| {
            let peer = Peer {
                peer_id: s.peer_id,
                state: s.state,
                ..template.clone().unwrap_or_default()
            };
            Msg::PeerJoined(PeerJoined {
                room: s.room,
                peer: Some(peer),
            })
        };
        if let News::Joined(_) = self.first {
            // The client did not know this peer before.
            return match self.last {
                News::Left(_) => Vec::new(),
                News::Joined(j) => vec![Msg::PeerJoined(j)],
                News::State(s) => vec![joined_from_state(s)],
            };
        }
        match (self.left, self.last) {
            (_, News::Left(l)) => vec![Msg::PeerLeft(l)],
            (Some(l), News::Joined(j)) => vec![Msg::PeerLeft(l), Msg::PeerJoined(j)],
            (Some(l), News::State(s)) => vec![Msg::PeerLeft(l), joined_from_state(s)],
            (None, last) => vec![last.into_msg()],
        }
    }
}

#[derive(Debug)]
enum Item {
    Frame {
        in_reply_to: u64,
        msg: Msg,
        size: usize,
        class: Class,
    },
    /// Boxed: a marker holds several messages, a frame one.
    Presence(Box<Marker>),
}

/// A frame that leaves the pending queue to be numbered.
#[derive(Debug)]
pub(super) struct Released {
    pub in_reply_to: u64,
    pub msg: Msg,
    pub signal: bool,
}

#[derive(Debug, Default)]
pub(super) struct Pending {
    items: VecDeque<Item>,
    /// Absolute index of `items[0]` (items are only ever popped from the front).
    front: u64,
    /// (room, peer) -> absolute index of its open marker.
    open: HashMap<(String, String), u64>,
    signals: usize,
    signal_bytes: usize,
    replies: usize,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Signals held here and their encoded bytes.
    pub fn signals(&self) -> (usize, usize) {
        (self.signals, self.signal_bytes)
    }

    /// Replies and errors to the session's own requests held here.
    pub fn replies(&self) -> usize {
        self.replies
    }

    pub fn push_frame(&mut self, in_reply_to: u64, msg: Msg, size: usize, class: Class) {
        match class {
            Class::Signal => {
                if let Msg::Signal(signal) = &msg {
                    // News about the sender after this signal must come after it.
                    self.open
                        .remove(&(signal.room.clone(), signal.from.clone()));
                }
                self.signals += 1;
                self.signal_bytes += size;
            }
            Class::Reply => self.replies += 1,
        }
        self.items.push_back(Item::Frame {
            in_reply_to,
            msg,
            size,
            class,
        });
    }

    pub fn push_news(&mut self, room: &str, peer_id: &str, news: News) {
        let key = (room.to_string(), peer_id.to_string());
        if let Some(&index) = self.open.get(&key)
            && let Some(Item::Presence(marker)) = index
                .checked_sub(self.front)
                .and_then(|i| self.items.get_mut(i as usize))
        {
            marker.update(news);
            return;
        }
        self.open.insert(key, self.front + self.items.len() as u64);
        self.items
            .push_back(Item::Presence(Box::new(Marker::new(room, peer_id, news))));
    }

    /// Takes the oldest item: the frames it becomes (a coalesced marker may become none).
    /// `None` when empty.
    pub fn pop(&mut self) -> Option<Vec<Released>> {
        let item = self.items.pop_front()?;
        let index = self.front;
        self.front += 1;
        Some(match item {
            Item::Frame {
                in_reply_to,
                msg,
                size,
                class,
            } => {
                match class {
                    Class::Signal => {
                        self.signals -= 1;
                        self.signal_bytes -= size;
                    }
                    Class::Reply => self.replies -= 1,
                }
                vec![Released {
                    in_reply_to,
                    msg,
                    signal: class == Class::Signal,
                }]
            }
            Item::Presence(marker) => {
                let key = (marker.room.clone(), marker.peer_id.clone());
                if self.open.get(&key) == Some(&index) {
                    self.open.remove(&key);
                }
                marker
                    .into_msgs()
                    .into_iter()
                    .map(|msg| Released {
                        in_reply_to: 0,
                        msg,
                        signal: false,
                    })
                    .collect()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{PresenceState, Reason, Signal, signal};

    fn joined(peer: &str) -> News {
        News::Joined(PeerJoined {
            room: "r".into(),
            peer: Some(Peer {
                peer_id: peer.into(),
                state: PresenceState::Online.into(),
                name: format!("name of {peer}"),
                ..Default::default()
            }),
        })
    }

    fn state(peer: &str, state: PresenceState) -> News {
        News::State(PeerState {
            room: "r".into(),
            peer_id: peer.into(),
            state: state.into(),
            ..Default::default()
        })
    }

    fn left(peer: &str, reason: Reason) -> News {
        News::Left(PeerLeft {
            room: "r".into(),
            peer_id: peer.into(),
            reason: reason.into(),
        })
    }

    fn signal_from(peer: &str) -> Msg {
        Msg::Signal(Signal {
            room: "r".into(),
            to: "me".into(),
            from: peer.into(),
            payload: Some(signal::Payload::Data(bytes::Bytes::from_static(b"x"))),
        })
    }

    /// Everything, as short words: "joined:a:online", "state:a:unreachable", "left:a", "signal:a".
    fn drain(p: &mut Pending) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(released) = p.pop() {
            for r in released {
                out.push(match r.msg {
                    Msg::PeerJoined(j) => {
                        let peer = j.peer.unwrap_or_default();
                        format!("joined:{}:{}", peer.peer_id, short(peer.state()))
                    }
                    Msg::PeerState(s) => format!("state:{}:{}", s.peer_id, short(s.state())),
                    Msg::PeerLeft(l) => format!("left:{}", l.peer_id),
                    Msg::Signal(s) => format!("signal:{}", s.from),
                    other => format!("{other:?}"),
                });
            }
        }
        out
    }

    fn short(s: PresenceState) -> &'static str {
        match s {
            PresenceState::Online => "online",
            PresenceState::Unreachable => "unreachable",
            PresenceState::Unspecified => "?",
        }
    }

    #[test]
    fn churn_of_strangers_leaves_nothing_and_flaps_leave_the_latest_state() {
        let mut p = Pending::default();
        // 200 strangers join and leave; a known peer flaps 100 times.
        for i in 0..200 {
            let peer = format!("s{i}");
            p.push_news("r", &peer, joined(&peer));
            p.push_news("r", &peer, left(&peer, Reason::LeftRoom));
        }
        for _ in 0..100 {
            p.push_news("r", "k", state("k", PresenceState::Unreachable));
            p.push_news("r", "k", state("k", PresenceState::Online));
        }
        assert_eq!(p.items.len(), 201, "one marker per (room, peer)");
        assert_eq!(drain(&mut p), ["state:k:online"]);
        assert!(p.is_empty());
    }

    #[test]
    fn a_known_peer_that_left_and_came_back_is_seen_leaving_then_joining() {
        let mut p = Pending::default();
        p.push_news("r", "k", left("k", Reason::LeftRoom));
        p.push_news("r", "k", joined("k"));
        p.push_news("r", "k", state("k", PresenceState::Unreachable));
        assert_eq!(drain(&mut p), ["left:k", "joined:k:unreachable"]);
    }

    #[test]
    fn a_coalesced_join_keeps_what_peers_see_of_the_peer() {
        let mut p = Pending::default();
        p.push_news("r", "a", joined("a"));
        p.push_news("r", "a", state("a", PresenceState::Unreachable));
        let released = p.pop().expect("one marker");
        match &released[0].msg {
            Msg::PeerJoined(j) => {
                let peer = j.peer.clone().unwrap_or_default();
                assert_eq!(peer.name, "name of a");
                assert_eq!(peer.state(), PresenceState::Unreachable);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_peers_signal_never_comes_before_its_join_nor_after_its_leave() {
        let mut p = Pending::default();
        p.push_news("r", "a", joined("a"));
        p.push_frame(0, signal_from("a"), 10, Class::Signal);
        p.push_news("r", "a", state("a", PresenceState::Unreachable));
        p.push_news("r", "a", left("a", Reason::ResumeWindowExpired));
        assert_eq!(p.signals(), (1, 10));
        assert_eq!(drain(&mut p), ["joined:a:online", "signal:a", "left:a"]);
        assert_eq!(p.signals(), (0, 0));
    }

    #[test]
    fn news_after_a_partly_drained_queue_still_coalesces_into_the_open_marker() {
        let mut p = Pending::default();
        p.push_frame(7, Msg::Left(Default::default()), 5, Class::Reply);
        p.push_news("r", "k", state("k", PresenceState::Unreachable));
        assert_eq!(p.replies(), 1);
        let first = p.pop().expect("the reply");
        assert_eq!(first[0].in_reply_to, 7);
        assert_eq!(p.replies(), 0);
        p.push_news("r", "k", state("k", PresenceState::Online));
        assert_eq!(drain(&mut p), ["state:k:online"]);
        // The marker is gone with the pop: new news opens a new one.
        p.push_news("r", "k", state("k", PresenceState::Unreachable));
        assert_eq!(drain(&mut p), ["state:k:unreachable"]);
    }
}
