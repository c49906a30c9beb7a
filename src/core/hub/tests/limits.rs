//! Limits that keep one client (or a crowd of them) from harming others.

use super::*;
use crate::proto::{Ack, Ping};

fn limited(limits: Limits) -> Fixture {
    Fixture::with(HubConfig {
        limits,
        ..HubConfig::default()
    })
}

#[test]
fn beyond_the_session_limit_a_hello_is_refused_and_closed_and_others_keep_working() {
    let mut f = limited(Limits {
        max_sessions: 2,
        ..Limits::default()
    });
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    let conn = f.open(now, Transport::WebSocket);
    let out = f.hello_on(now, conn, Hello::default());
    assert_eq!(error_code(&out, conn), ErrorCode::TooManySessions);
    assert_eq!(closes(&out), [(conn, Reason::GatewayFull)]);
    f.signal(now, &a, "r", &b.peer_id, b"still");
    assert_eq!(data_signals(&f.drain(), b.conn).len(), 1);
}

#[test]
fn connections_waiting_for_hello_are_capped() {
    let mut f = limited(Limits {
        max_pending_hellos: 3,
        ..Limits::default()
    });
    let now = f.at(0.0);
    let waiting: Vec<ConnId> = (0..3).map(|_| f.open(now, Transport::WebSocket)).collect();
    assert!(f.drain().is_empty());
    let fourth = f.open(now, Transport::WebSocket);
    assert_eq!(closes(&f.drain()), [(fourth, Reason::GatewayFull)]);
    // One says Hello: a place is free again.
    f.hello_on(now, waiting[0], Hello::default());
    let fifth = f.open(now, Transport::WebSocket);
    assert!(closes(&f.drain()).iter().all(|(c, _)| *c != fifth));
}

#[test]
fn a_ping_payload_is_small_or_refused() {
    let mut f = Fixture::new();
    let c = f.client(f.at(0.0));
    let payload = Bytes::from(vec![1u8; 129]);
    f.send(f.at(0.0), c.conn, Msg::Ping(Ping { payload }));
    let out = f.drain();
    assert_eq!(error_code(&out, c.conn), ErrorCode::InvalidArgument);
    assert!(
        msgs_to(&out, c.conn)
            .iter()
            .all(|m| !matches!(m, server_frame::Msg::Pong(_)))
    );
}

#[test]
fn what_a_client_sent_is_echoed_bounded_and_escaped() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, _b) = f.pair(now, "r");
    let evil: String = "\u{1}".repeat(64 * 1024);
    f.send(
        now,
        a.conn,
        Msg::Signal(Signal {
            room: "r".into(),
            to: evil.clone(),
            ..data_signal("r", "x", b"d")
        }),
    );
    f.send(now, a.conn, Msg::Join(Join { room: evil }));
    for e in errors_to(&f.drain(), a.conn) {
        assert!(
            e.message.len() < 600,
            "{} bytes: {}",
            e.message.len(),
            e.message
        );
        assert!(!e.message.contains('\u{1}'), "control bytes escaped");
    }
}

#[test]
fn members_who_went_away_cannot_squat_a_room() {
    let mut f = limited(Limits {
        max_peers_per_room: 3,
        ..Limits::default()
    });
    let now = f.at(0.0);
    let squatters = f.room(now, "r", 3);
    for s in &squatters {
        f.hub
            .connection_lost(now, s.conn, Reason::ConnectionLost, secs(0.0));
    }
    f.drain();
    // Three real peers still get in; the away members count toward a hard bound (2x) only.
    let real: Vec<Client> = (0..3).map(|_| f.client(now)).collect();
    for c in &real {
        assert!(errors_to(&f.join(now, c, "r"), c.conn).is_empty());
    }
    let one_more = f.client(now);
    assert_eq!(
        error_code(&f.join(now, &one_more, "r"), one_more.conn),
        ErrorCode::RoomFull
    );
}

#[test]
fn an_ack_flood_is_dropped_unanswered() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let c = f.client(now);
    for _ in 0..10_000 {
        f.send(now, c.conn, Msg::Ack(Ack { seq: 10_000 }));
    }
    let errors = errors_to(&f.drain(), c.conn);
    // Each Ack beyond the last frame is an error — but only within the Ack rate: the flood
    // beyond it is dropped without a word (no amplification).
    assert!(errors.len() <= 400, "{} errors", errors.len());
}

#[test]
fn a_session_that_flaps_is_slowed_down_and_its_peers_are_told_a_bounded_number_of_times() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    let mut conn = a.conn;
    let mut refused = 0;
    let mut told = 0;
    for attempt in 1..=50 {
        f.hub
            .connection_lost(now, conn, Reason::ConnectionLost, secs(0.0));
        told += peer_states(&f.drain(), b.conn).len();
        let (next, out) = f.resume(now, &a, 0, attempt, Transport::WebSocket);
        told += peer_states(&out, b.conn).len();
        if errors_to(&out, next)
            .iter()
            .any(|e| e.code() == ErrorCode::RateLimited)
        {
            refused += 1;
            continue;
        }
        conn = next;
    }
    assert!(refused >= 39, "{refused} refused");
    assert!(told <= 2 * 11 + 1, "{told} presence changes told to b");
    // Later, the bucket refilled: it may come back.
    let (back, out) = f.resume(f.at(60.0), &a, 0, 51, Transport::WebSocket);
    assert!(welcome_of(&out, back).resumed);
}
