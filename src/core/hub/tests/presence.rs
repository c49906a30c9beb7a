//! Presence: ONLINE -> UNREACHABLE (any transport end, or Suspend) -> LEFT (Bye, the resume
//! window, shutdown).

use super::*;
use crate::proto::{Bye, Suspend};

#[test]
fn a_silent_peer_is_unreachable_at_once_then_left_exactly_after_the_resume_window() {
    let mut f = Fixture::new(); // resume window 30 s
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    f.join(now, &a, "second");
    f.join(now, &b, "second");

    f.hub
        .connection_lost(f.at(12.0), a.conn, Reason::LivenessTimeout, secs(10.0));
    let out = f.drain();
    let states = peer_states(&out, b.conn);
    assert_eq!(states.len(), 2, "one per shared room: {out:?}");
    for s in &states {
        assert_eq!(s.peer_id, a.peer_id);
        assert_eq!(s.state(), PresenceState::Unreachable);
        assert_eq!(s.reason(), Reason::LivenessTimeout);
        assert_eq!(s.silent_for_ms, 10_000);
        assert_eq!(s.detected_by(), proto::Transport::Websocket);
    }
    assert!(peer_lefts(&out, b.conn).is_empty());
    assert!(events(&out).contains(&HubEvent::ConnectionEnded {
        transport: Transport::WebSocket,
        reason: Reason::LivenessTimeout,
        silent_for: secs(10.0),
    }));
    assert_eq!(f.hub.gauges().unreachable(Transport::WebSocket), 1);
    assert_eq!(f.hub.gauges().online(Transport::WebSocket), 1);

    // Someone joining meanwhile sees the peer as UNREACHABLE.
    let c = f.client(f.at(13.0));
    let out = f.join(f.at(13.0), &c, "r");
    let joined = msgs_to(&out, c.conn);
    assert!(matches!(&joined[0], server_frame::Msg::Joined(j)
        if j.peers.iter().any(|p| p.peer_id == a.peer_id && p.state() == PresenceState::Unreachable)));

    assert_eq!(f.hub.poll_timeout(), Some(f.at(42.0)));
    f.hub.handle_timeout(f.at(41.999));
    assert!(peer_lefts(&f.drain(), b.conn).is_empty());
    f.hub.handle_timeout(f.at(42.0));
    let out = f.drain();
    let lefts = peer_lefts(&out, b.conn);
    assert_eq!(lefts.len(), 2);
    assert!(
        lefts
            .iter()
            .all(|l| l.reason() == Reason::ResumeWindowExpired && l.peer_id == a.peer_id)
    );
    assert_eq!(peer_lefts(&out, c.conn).len(), 1);
    assert!(events(&out).contains(&HubEvent::SessionEnded {
        reason: Reason::ResumeWindowExpired
    }));
    assert_eq!(f.hub.gauges().unreachable, [0, 0]);
    // The token is dead now.
    let (conn, out) = f.resume(f.at(43.0), &a, 0, 1, Transport::WebSocket);
    assert_eq!(error_code(&out, conn), ErrorCode::ResumeExpired);
}

#[test]
fn a_close_handshake_is_not_a_leave_the_session_stays_resumable() {
    // Browsers close a frozen or cached page's connections themselves (WebSocket 1001,
    // WebTransport with or without FIN): no close says that the user meant to leave.
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::ClientClosed, secs(0.5));
    let out = f.drain();
    assert!(peer_lefts(&out, b.conn).is_empty());
    let states = peer_states(&out, b.conn);
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].state(), PresenceState::Unreachable);
    assert_eq!(states[0].reason(), Reason::ClientClosed);
    let (conn, out) = f.resume(f.at(20.0), &a, 2, 1, Transport::WebSocket);
    let w = welcome_of(&out, conn);
    assert!(w.resumed);
    assert_eq!(w.peer_id, a.peer_id);
}

#[test]
fn bye_leaves_at_once_closes_the_connection_and_kills_the_token() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    f.signal(now, &b, "r", &a.peer_id, b"unread");
    f.drain();
    f.send(f.at(1.0), a.conn, Msg::Bye(Bye {}));
    let out = f.drain();
    assert!(peer_states(&out, b.conn).is_empty(), "no UNREACHABLE first");
    let lefts = peer_lefts(&out, b.conn);
    assert_eq!(lefts.len(), 1);
    assert_eq!(lefts[0].peer_id, a.peer_id);
    assert_eq!(lefts[0].reason(), Reason::Bye);
    assert_eq!(closes(&out), [(a.conn, Reason::Bye)]);
    assert!(events(&out).contains(&HubEvent::SessionEnded {
        reason: Reason::Bye
    }));
    assert!(events(&out).contains(&HubEvent::ConnectionEnded {
        transport: Transport::WebSocket,
        reason: Reason::Bye,
        silent_for: Duration::ZERO
    }));
    assert_eq!(
        f.hub.gauges(),
        &Gauges {
            online: [1, 0],
            unreachable: [0, 0],
            rooms: 1
        }
    );
    let (conn, out) = f.resume(f.at(2.0), &a, 2, 1, Transport::WebSocket);
    assert_eq!(error_code(&out, conn), ErrorCode::ResumeExpired);
}

#[test]
fn bye_twice_or_on_a_forgotten_connection_harms_nobody() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    f.send(now, a.conn, Msg::Bye(Bye {}));
    f.drain();
    // The connection is forgotten with the first Bye: a second one, or anything else, is
    // not read.
    f.send(now, a.conn, Msg::Bye(Bye {}));
    f.signal(now, &a, "r", &b.peer_id, b"late");
    assert!(f.drain().is_empty());
    // A superseded connection's Bye does not end the session that moved away from it.
    let c = f.client(now);
    f.join(now, &c, "r");
    let (moved, _) = f.resume(f.at(1.0), &c, 1, 1, Transport::WebTransport);
    f.send(f.at(1.1), c.conn, Msg::Bye(Bye {}));
    assert!(f.drain().is_empty());
    f.signal(f.at(1.2), &b, "r", &c.peer_id, b"still here");
    assert_eq!(data_signals(&f.drain(), moved).len(), 1);
}

#[test]
fn suspend_detaches_at_once_holds_signals_and_the_resume_delivers_them() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    f.send(f.at(1.0), a.conn, Msg::Suspend(Suspend {}));
    let out = f.drain();
    assert_eq!(closes(&out), [(a.conn, Reason::Suspended)]);
    let states = peer_states(&out, b.conn);
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].state(), PresenceState::Unreachable);
    assert_eq!(states[0].reason(), Reason::Suspended, "not a network loss");
    assert_eq!(states[0].silent_for_ms, 0);
    assert!(peer_lefts(&out, b.conn).is_empty());
    for data in [b"one" as &'static [u8], b"two"] {
        f.signal(f.at(2.0), &b, "r", &a.peer_id, data);
    }
    assert!(errors_to(&f.drain(), b.conn).is_empty());
    // Back 20 s later (well within the window): same peer, everything in order, once.
    let (conn, out) = f.resume(f.at(21.0), &a, 2, 1, Transport::WebSocket);
    assert!(welcome_of(&out, conn).resumed);
    let got: Vec<Bytes> = data_signals(&out, conn).into_iter().map(|s| s.2).collect();
    assert_eq!(got, ["one", "two"]);
    let states = peer_states(&out, b.conn);
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].state(), PresenceState::Online);
    assert_eq!(states[0].reason(), Reason::Resumed);
}

#[test]
fn a_broken_connection_makes_the_peer_unreachable_not_left() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::ConnectionLost, secs(0.2));
    let out = f.drain();
    let states = peer_states(&out, b.conn);
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].reason(), Reason::ConnectionLost);
    assert_eq!(states[0].silent_for_ms, 200);
    assert!(peer_lefts(&out, b.conn).is_empty());
}

#[test]
fn a_connection_that_never_said_hello_leaves_no_trace() {
    let mut f = Fixture::new();
    let conn = f.open(f.at(0.0), Transport::WebTransport);
    f.hub
        .connection_lost(f.at(1.0), conn, Reason::ConnectionLost, secs(1.0));
    assert!(f.drain().is_empty());
    assert_eq!(
        f.hub.poll_timeout(),
        None,
        "its hello deadline is gone with it"
    );
    f.hub.handle_timeout(f.at(20.0));
    assert!(f.drain().is_empty());
}

#[test]
fn a_slow_consumer_is_closed_and_keeps_its_frames_for_resume() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    f.signal(now, &b, "r", &a.peer_id, b"one");
    f.drain();
    f.hub.outbound_overflow(now, a.conn);
    let out = f.drain();
    assert_eq!(closes(&out), [(a.conn, Reason::SlowConsumer)]);
    assert_eq!(peer_states(&out, b.conn)[0].reason(), Reason::SlowConsumer);
    let (conn, out) = f.resume(f.at(1.0), &a, 2, 1, Transport::WebSocket);
    let replayed = data_signals(&out, conn);
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].2, "one");
}

#[test]
fn gauges_follow_every_transition() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let a = f.client_over(now, Transport::WebTransport);
    let b = f.client_over(now, Transport::WebSocket);
    f.join(now, &a, "x");
    f.join(now, &b, "y");
    let gauges = |online, unreachable, rooms| Gauges {
        online,
        unreachable,
        rooms,
    };
    assert_eq!(f.hub.gauges(), &gauges([1, 1], [0, 0], 2));
    f.hub
        .connection_lost(now, a.conn, Reason::LivenessTimeout, secs(10.0));
    assert_eq!(f.hub.gauges(), &gauges([1, 0], [0, 1], 2));
    let (a_conn, _) = f.resume(f.at(1.0), &a, 1, 1, Transport::WebSocket);
    assert_eq!(f.hub.gauges(), &gauges([2, 0], [0, 0], 2));
    f.send(f.at(2.0), a_conn, Msg::Suspend(Suspend {}));
    assert_eq!(f.hub.gauges(), &gauges([1, 0], [1, 0], 2));
    f.send(f.at(2.0), b.conn, Msg::Bye(Bye {}));
    assert_eq!(f.hub.gauges(), &gauges([0, 0], [1, 0], 1));
}

#[test]
fn shutdown_sends_goaway_to_everyone_then_closes_ends_every_session_and_refuses_new_ones() {
    let config = HubConfig {
        reconnect_spread: secs(3.0),
        ..HubConfig::default()
    };
    let mut f = Fixture::with(config);
    let now = f.at(0.0);
    let clients = f.room(now, "r", 3);
    let away = f.client(now);
    f.hub
        .connection_lost(now, away.conn, Reason::ConnectionLost, secs(0.0));
    let waiting = f.open(now, Transport::WebTransport);
    f.drain();
    f.hub.shutdown(f.at(1.0));
    let out = f.drain();
    for conn in clients.iter().map(|c| c.conn).chain([waiting]) {
        let msgs = msgs_to(&out, conn);
        assert!(
            matches!(msgs.as_slice(), [server_frame::Msg::GoAway(g)]
                if g.reason() == Reason::ServerShutdown && g.reconnect_after_ms == 1000 && g.spread_ms == 3000),
            "{conn}: {msgs:?}"
        );
        assert!(closes(&out).contains(&(conn, Reason::ServerShutdown)));
        let goaway_at = out
            .iter()
            .position(|o| matches!(o, Output::Send { conn: c, .. } if *c == conn));
        let close_at = out
            .iter()
            .position(|o| matches!(o, Output::Close { conn: c, .. } if *c == conn));
        assert!(goaway_at < close_at, "GoAway is queued before the close");
    }
    assert!(
        peer_states(&out, clients[0].conn).is_empty(),
        "no presence noise at shutdown"
    );
    let ended = events(&out)
        .into_iter()
        .filter(|e| {
            *e == HubEvent::SessionEnded {
                reason: Reason::ServerShutdown,
            }
        })
        .count();
    assert_eq!(
        ended, 4,
        "every session, the one away included, is counted as ended"
    );
    assert_eq!(f.hub.gauges(), &Gauges::default());
    assert_eq!(f.hub.poll_timeout(), None);
    let conn = f.open(f.at(2.0), Transport::WebSocket);
    let out = f.hello_on(f.at(2.0), conn, Hello::default());
    assert_eq!(error_code(&out, conn), ErrorCode::ShuttingDown);
}
