//! Hello, Welcome, the Hello deadline, bad input on a connection.

use super::*;
use crate::core::codec::FrameProblem;
use crate::proto::Ping;

#[test]
fn hello_gets_welcome_with_the_liveness_numbers_and_an_unguessable_token() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let conn = f.open(now, Transport::WebSocket);
    let id = f.send(now, conn, Msg::Hello(Hello::default()));
    let out = f.drain();
    let frames = frames_to(&out, conn);
    assert_eq!(frames.len(), 1);
    assert_eq!(
        frames[0].seq, 0,
        "Welcome is not part of the replayable stream"
    );
    assert_eq!(frames[0].in_reply_to, id);
    let w = welcome_of(&out, conn);
    assert_eq!(w.liveness_timeout_ms, 10_000);
    assert_eq!(w.ping_interval_ms, 4_000);
    assert_eq!(w.resume_window_ms, 30_000);
    assert_eq!(w.max_frame_bytes, 65_536);
    assert_eq!((w.last_client_seq, w.replay_until_seq), (0, 0));
    assert!(!w.resumed);
    assert!(w.peer_id.starts_with("p-"));
    assert!(
        w.resume_token.len() >= 43,
        "256 bits, base64: {}",
        w.resume_token
    );
    assert_eq!(w.connection_id, conn.to_string());
    assert!(events(&out).contains(&HubEvent::SessionStarted {
        transport: Transport::WebSocket
    }));
    assert_eq!(f.hub.gauges().online(Transport::WebSocket), 1);

    let other = f.client(now);
    assert_ne!(other.peer_id, w.peer_id);
    assert_ne!(other.token, w.resume_token);
}

#[test]
fn ids_come_from_the_injected_entropy_so_runs_repeat() {
    let ids = || {
        let mut f = Fixture::new();
        let now = f.at(0.0);
        (0..3).map(|_| f.client(now).peer_id).collect::<Vec<_>>()
    };
    assert_eq!(ids(), ids());
}

#[test]
fn requests_before_hello_are_refused_but_the_connection_may_still_say_hello() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let conn = f.open(now, Transport::WebSocket);
    for msg in [
        Msg::Join(Join { room: "r".into() }),
        Msg::Bye(proto::Bye {}),
        Msg::Suspend(proto::Suspend {}),
    ] {
        let id = f.send(now, conn, msg);
        let out = f.drain();
        let errors = errors_to(&out, conn);
        assert_eq!(errors[0].code(), ErrorCode::HelloRequired);
        assert_eq!(errors[0].in_reply_to, id);
        assert!(closes(&out).is_empty());
    }
    let out = f.hello_on(now, conn, Hello::default());
    welcome_of(&out, conn);
}

#[test]
fn second_hello_on_a_connection_is_refused() {
    let mut f = Fixture::new();
    let c = f.client(f.at(0.0));
    let out = f.hello_on(f.at(0.1), c.conn, Hello::default());
    assert_eq!(error_code(&out, c.conn), ErrorCode::AlreadyWelcomed);
}

#[test]
fn a_connection_without_hello_is_closed_at_the_hello_deadline_and_not_before() {
    let mut f = Fixture::new(); // hello_timeout 10 s
    let conn = f.open(f.at(0.0), Transport::WebSocket);
    assert_eq!(f.hub.poll_timeout(), Some(f.at(10.0)));
    f.hub.handle_timeout(f.at(9.999));
    assert!(f.drain().is_empty());
    f.hub.handle_timeout(f.at(10.0));
    let out = f.drain();
    assert_eq!(error_code(&out, conn), ErrorCode::HelloRequired);
    assert_eq!(closes(&out), [(conn, Reason::HelloTimeout)]);
    // The connection is forgotten: its late frames do nothing.
    f.send(f.at(10.1), conn, Msg::Hello(Hello::default()));
    assert!(f.drain().is_empty());
}

#[test]
fn deadlines_do_not_pile_up_for_welcomed_connections() {
    let mut f = Fixture::new();
    for _ in 0..100 {
        f.client(f.at(0.0));
    }
    assert_eq!(
        f.hub.poll_timeout(),
        None,
        "a Hello cancels its connection's deadline"
    );
    f.hub.handle_timeout(f.at(60.0));
    assert!(closes(&f.drain()).is_empty());
    assert_eq!(f.hub.gauges().online(Transport::WebSocket), 100);
}

#[test]
fn ping_gets_pong_with_the_same_payload_outside_the_ordered_stream() {
    let mut f = Fixture::new();
    let c = f.client(f.at(0.0));
    let payload = Bytes::from_static(b"t=42");
    let id = f.send(f.at(0.0), c.conn, Msg::Ping(Ping { payload }));
    let frames = frames_to(&f.drain(), c.conn);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].seq, 0);
    assert_eq!(frames[0].in_reply_to, id);
    assert!(matches!(&frames[0].msg, Some(server_frame::Msg::Pong(p)) if p.payload == "t=42"));
}

#[test]
fn malformed_and_unsupported_frames_get_errors_and_the_connection_stays() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    let detail = "garbage".to_string();
    f.hub
        .frame_rejected(now, a.conn, FrameProblem::Malformed { detail });
    assert_eq!(error_code(&f.drain(), a.conn), ErrorCode::MalformedFrame);
    let what = "text message";
    f.hub
        .frame_rejected(now, a.conn, FrameProblem::Unsupported { what });
    let out = f.drain();
    assert_eq!(error_code(&out, a.conn), ErrorCode::UnsupportedFrame);
    assert!(closes(&out).is_empty());
    f.signal(now, &a, "r", &b.peer_id, b"still works");
    assert_eq!(data_signals(&f.drain(), b.conn).len(), 1);
}

#[test]
fn an_oversized_frame_closes_the_connection_and_the_peer_becomes_unreachable() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    let problem = FrameProblem::TooLarge {
        size: 100_000,
        max: 65_536,
    };
    f.hub.frame_rejected(now, a.conn, problem);
    let out = f.drain();
    let errors = errors_to(&out, a.conn);
    assert_eq!(errors[0].code(), ErrorCode::FrameTooLarge);
    assert!(
        errors[0].message.contains("100000"),
        "{}",
        errors[0].message
    );
    assert_eq!(closes(&out), [(a.conn, Reason::ProtocolError)]);
    let states = peer_states(&out, b.conn);
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].state(), PresenceState::Unreachable);
    assert_eq!(states[0].reason(), Reason::ProtocolError);
}

#[test]
fn too_many_refused_frames_close_the_connection() {
    let mut f = Fixture::new(); // max_protocol_errors 16
    let now = f.at(0.0);
    let conn = f.open(now, Transport::WebSocket);
    for _ in 0..16 {
        f.send(now, conn, Msg::Ping(Ping::default()));
    }
    assert!(closes(&f.drain()).is_empty());
    f.send(now, conn, Msg::Ping(Ping::default()));
    let out = f.drain();
    assert_eq!(closes(&out), [(conn, Reason::ProtocolError)]);
    assert!(
        errors_to(&out, conn)
            .iter()
            .any(|e| e.code() == ErrorCode::Closing)
    );
}
