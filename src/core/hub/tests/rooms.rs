//! Join and Leave, room limits and names.

use super::*;
use crate::proto::Leave;

#[test]
fn join_lists_current_members_and_tells_them() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let a = f.client(now);
    let b = f.client(now);
    let out = f.join(now, &a, "room-1");
    match msgs_to(&out, a.conn).as_slice() {
        [server_frame::Msg::Joined(j)] => {
            assert_eq!(j.room, "room-1");
            assert!(j.peers.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let out = f.join(now, &b, "room-1");
    match msgs_to(&out, b.conn).as_slice() {
        [server_frame::Msg::Joined(j)] => {
            assert_eq!(j.peers.len(), 1);
            assert_eq!(j.peers[0].peer_id, a.peer_id);
            assert_eq!(j.peers[0].state(), PresenceState::Online);
        }
        other => panic!("{other:?}"),
    }
    match msgs_to(&out, a.conn).as_slice() {
        [server_frame::Msg::PeerJoined(pj)] => {
            assert_eq!(pj.room, "room-1");
            let peer = pj.peer.as_ref().expect("peer");
            assert_eq!(peer.peer_id, b.peer_id);
            assert_eq!(peer.state(), PresenceState::Online);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.hub.gauges().rooms, 1);
}

#[test]
fn room_limits_and_names_are_enforced_with_clear_errors() {
    let config = HubConfig {
        limits: Limits {
            max_rooms_per_session: 2,
            max_peers_per_room: 2,
            ..Limits::default()
        },
        ..HubConfig::default()
    };
    let mut f = Fixture::with(config);
    let now = f.at(0.0);
    let (a, _b) = f.pair(now, "full");
    let c = f.client(now);
    assert_eq!(
        error_code(&f.join(now, &c, "full"), c.conn),
        ErrorCode::RoomFull
    );
    assert_eq!(
        error_code(&f.join(now, &a, "full"), a.conn),
        ErrorCode::AlreadyJoined
    );
    f.join(now, &a, "second");
    assert_eq!(
        error_code(&f.join(now, &a, "third"), a.conn),
        ErrorCode::TooManyRooms
    );
    for bad in ["", "has space", "ünïcode", &"x".repeat(65)] {
        let out = f.join(now, &c, bad);
        assert_eq!(
            error_code(&out, c.conn),
            ErrorCode::InvalidArgument,
            "{bad:?}"
        );
    }
    let out = f.join(now, &c, &"x".repeat(64));
    assert!(out.iter().all(|o| !matches!(o, Output::Close { .. })));
}

#[test]
fn leave_tells_the_room_and_an_empty_room_disappears() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    f.send(now, a.conn, Msg::Leave(Leave { room: "r".into() }));
    let out = f.drain();
    assert!(
        matches!(msgs_to(&out, a.conn).as_slice(), [server_frame::Msg::Left(l)] if l.room == "r")
    );
    let lefts = peer_lefts(&out, b.conn);
    assert_eq!(lefts.len(), 1);
    assert_eq!(lefts[0].peer_id, a.peer_id);
    assert_eq!(lefts[0].reason(), Reason::LeftRoom);

    f.send(now, a.conn, Msg::Leave(Leave { room: "r".into() }));
    assert_eq!(error_code(&f.drain(), a.conn), ErrorCode::NotJoined);
    f.send(now, b.conn, Msg::Leave(Leave { room: "r".into() }));
    f.drain();
    assert_eq!(f.hub.gauges().rooms, 0);
    // The room is gone; the answer is the same as for a room that exists without you, so an
    // outsider learns nothing about which rooms exist.
    f.send(now, b.conn, Msg::Leave(Leave { room: "r".into() }));
    assert_eq!(error_code(&f.drain(), b.conn), ErrorCode::NotJoined);
}
