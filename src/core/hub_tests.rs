//! Every hub rule, driven with a fake clock: no sockets, no sleeping.

use super::*;
use crate::proto::{
    Ack, IceCandidate, Join, Leave, Ping, SdpType, SessionDescription, Signal, client_frame::Msg,
};
use bytes::Bytes;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

struct Fixture {
    hub: Hub,
    t0: Instant,
    next_conn: u64,
    next_id: u64,
}

/// A welcomed client as the tests see it.
#[derive(Debug, Clone)]
struct Client {
    conn: ConnId,
    peer_id: String,
    token: String,
}

impl Fixture {
    fn new() -> Self {
        Self::with(HubConfig::default())
    }

    fn with(config: HubConfig) -> Self {
        Self {
            hub: Hub::new(config),
            t0: Instant::now(),
            next_conn: 1,
            next_id: 100,
        }
    }

    fn at(&self, s: f64) -> Instant {
        self.t0 + secs(s)
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.hub.poll_output()).collect()
    }

    fn open(&mut self, now: Instant, transport: Transport) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.hub.connection_opened(now, conn, transport);
        conn
    }

    fn send(&mut self, now: Instant, conn: ConnId, msg: Msg) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.hub
            .frame_received(now, conn, ClientFrame { id, msg: Some(msg) });
        id
    }

    fn hello_on(&mut self, now: Instant, conn: ConnId, hello: Hello) -> Vec<Output> {
        self.send(now, conn, Msg::Hello(hello));
        self.drain()
    }

    fn client(&mut self, now: Instant) -> Client {
        self.client_over(now, Transport::WebSocket)
    }

    fn client_over(&mut self, now: Instant, transport: Transport) -> Client {
        let conn = self.open(now, transport);
        let out = self.hello_on(now, conn, Hello::default());
        let welcome = welcome_of(&out, conn);
        assert!(!welcome.resumed);
        Client {
            conn,
            peer_id: welcome.peer_id,
            token: welcome.resume_token,
        }
    }

    fn join(&mut self, now: Instant, c: &Client, room: &str) -> Vec<Output> {
        self.send(now, c.conn, Msg::Join(Join { room: room.into() }));
        self.drain()
    }

    /// Clients in one room, everyone's join news drained.
    fn room(&mut self, now: Instant, room: &str, n: usize) -> Vec<Client> {
        let clients: Vec<Client> = (0..n).map(|_| self.client(now)).collect();
        for c in &clients {
            self.join(now, c, room);
        }
        clients
    }

    fn signal(
        &mut self,
        now: Instant,
        from: &Client,
        room: &str,
        to: &str,
        data: &'static [u8],
    ) -> u64 {
        self.send(
            now,
            from.conn,
            Msg::Signal(Signal {
                room: room.into(),
                to: to.into(),
                from: String::new(),
                payload: Some(signal::Payload::Data(Bytes::from_static(data))),
            }),
        )
    }

    fn resume(
        &mut self,
        now: Instant,
        c: &Client,
        last_seq: u64,
        attempt: u64,
        transport: Transport,
    ) -> (ConnId, Vec<Output>) {
        let conn = self.open(now, transport);
        let out = self.hello_on(
            now,
            conn,
            Hello {
                resume_token: c.token.clone(),
                last_seq,
                attempt,
                ..Default::default()
            },
        );
        (conn, out)
    }
}

fn frames_to(out: &[Output], conn: ConnId) -> Vec<ServerFrame> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { conn: c, frame } if *c == conn => Some(frame.clone()),
            _ => None,
        })
        .collect()
}

fn msgs_to(out: &[Output], conn: ConnId) -> Vec<server_frame::Msg> {
    frames_to(out, conn)
        .into_iter()
        .filter_map(|f| f.msg)
        .collect()
}

fn welcome_of(out: &[Output], conn: ConnId) -> Welcome {
    match msgs_to(out, conn).into_iter().next() {
        Some(server_frame::Msg::Welcome(w)) => w,
        other => panic!("expected Welcome first, got {other:?} in {out:?}"),
    }
}

fn errors_to(out: &[Output], conn: ConnId) -> Vec<proto::Error> {
    msgs_to(out, conn)
        .into_iter()
        .filter_map(|m| match m {
            server_frame::Msg::Error(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn error_code(out: &[Output], conn: ConnId) -> ErrorCode {
    let errors = errors_to(out, conn);
    assert_eq!(errors.len(), 1, "expected one error, got {out:?}");
    errors[0].code()
}

fn closes(out: &[Output]) -> Vec<(ConnId, Reason)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Close { conn, reason } => Some((*conn, *reason)),
            _ => None,
        })
        .collect()
}

fn peer_states(out: &[Output], conn: ConnId) -> Vec<PeerState> {
    msgs_to(out, conn)
        .into_iter()
        .filter_map(|m| match m {
            server_frame::Msg::PeerState(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn peer_lefts(out: &[Output], conn: ConnId) -> Vec<PeerLeft> {
    msgs_to(out, conn)
        .into_iter()
        .filter_map(|m| match m {
            server_frame::Msg::PeerLeft(l) => Some(l),
            _ => None,
        })
        .collect()
}

fn data_signals(out: &[Output], conn: ConnId) -> Vec<(u64, String, Bytes)> {
    frames_to(out, conn)
        .into_iter()
        .filter_map(|f| match f.msg {
            Some(server_frame::Msg::Signal(Signal {
                from,
                payload: Some(signal::Payload::Data(d)),
                ..
            })) => Some((f.seq, from, d)),
            _ => None,
        })
        .collect()
}

fn events(out: &[Output]) -> Vec<HubEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Hello
// ---------------------------------------------------------------------------------------------

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
    assert!(!w.resumed);
    assert!(w.peer_id.starts_with("p-"));
    assert!(
        w.resume_token.len() >= 43,
        "256 bits, base64: {}",
        w.resume_token
    );
    assert_eq!(w.session_id, conn.to_string());
    assert!(events(&out).contains(&HubEvent::SessionStarted {
        transport: Transport::WebSocket
    }));
    assert_eq!(f.hub.gauges().online(Transport::WebSocket), 1);

    let other = f.client(now);
    assert_ne!(other.peer_id, w.peer_id);
    assert_ne!(other.token, w.resume_token);
}

#[test]
fn requests_before_hello_are_refused_but_the_connection_may_still_say_hello() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let conn = f.open(now, Transport::WebSocket);
    let id = f.send(now, conn, Msg::Join(Join { room: "r".into() }));
    let out = f.drain();
    let errors = errors_to(&out, conn);
    assert_eq!(errors[0].code(), ErrorCode::HelloRequired);
    assert_eq!(errors[0].in_reply_to, id);
    assert!(closes(&out).is_empty());
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
fn hello_deadline_does_not_touch_a_welcomed_connection() {
    let mut f = Fixture::new();
    let c = f.client(f.at(0.0));
    f.hub.handle_timeout(f.at(60.0));
    assert!(closes(&f.drain()).is_empty());
    assert_eq!(f.hub.gauges().online(Transport::WebSocket), 1);
    let _ = c;
}

// ---------------------------------------------------------------------------------------------
// Rooms and relay
// ---------------------------------------------------------------------------------------------

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
fn every_session_stream_is_numbered_from_one_without_holes() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let [a, b]: [Client; 2] = f.room(now, "r", 2).try_into().expect("two");
    let mut seqs = Vec::new();
    for _ in 0..5 {
        f.signal(now, &b, "r", &a.peer_id, b"x");
        seqs.extend(frames_to(&f.drain(), a.conn).iter().map(|fr| fr.seq));
    }
    // a: Joined = 1, PeerJoined(b) = 2, then five signals.
    assert_eq!(seqs, [3, 4, 5, 6, 7]);
}

#[test]
fn signals_are_relayed_with_the_senders_server_given_id_whatever_the_client_claims() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let [a, b]: [Client; 2] = f.room(now, "call", 2).try_into().expect("two");
    let payloads = [
        signal::Payload::Description(SessionDescription {
            r#type: SdpType::Offer.into(),
            sdp: "v=0 offer".into(),
        }),
        signal::Payload::Candidate(IceCandidate {
            candidate: "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: Some("abcd".into()),
        }),
        signal::Payload::Data(Bytes::from_static(b"app")),
    ];
    for payload in payloads.clone() {
        f.send(
            now,
            a.conn,
            Msg::Signal(Signal {
                room: "call".into(),
                to: b.peer_id.clone(),
                from: "p-forged".into(),
                payload: Some(payload),
            }),
        );
    }
    let out = f.drain();
    assert!(errors_to(&out, a.conn).is_empty(), "{out:?}");
    let got: Vec<Signal> = msgs_to(&out, b.conn)
        .into_iter()
        .filter_map(|m| match m {
            server_frame::Msg::Signal(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 3);
    for (s, payload) in got.iter().zip(payloads) {
        assert_eq!(s.from, a.peer_id);
        assert_eq!(s.to, b.peer_id);
        assert_eq!(s.room, "call");
        assert_eq!(s.payload, Some(payload));
    }
    let kinds: Vec<HubEvent> = events(&out);
    assert_eq!(
        kinds,
        [
            HubEvent::SignalRelayed {
                kind: SignalKind::Description
            },
            HubEvent::SignalRelayed {
                kind: SignalKind::Candidate
            },
            HubEvent::SignalRelayed {
                kind: SignalKind::Data
            },
        ]
    );
}

#[test]
fn bad_signals_are_refused_with_the_matching_error_and_relay_nothing() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let [a, b]: [Client; 2] = f.room(now, "r", 2).try_into().expect("two");
    let outsider = f.client(now);
    f.join(now, &outsider, "elsewhere");

    let cases: Vec<(&Client, Signal, ErrorCode)> = vec![
        (&a, data_signal("nope", &b.peer_id), ErrorCode::UnknownRoom),
        (
            &outsider,
            data_signal("r", &b.peer_id),
            ErrorCode::NotJoined,
        ),
        (&a, data_signal("r", "p-nobody"), ErrorCode::PeerNotInRoom),
        (
            &a,
            data_signal("r", &outsider.peer_id),
            ErrorCode::PeerNotInRoom,
        ),
        (&a, data_signal("r", &a.peer_id), ErrorCode::InvalidArgument),
        (&a, data_signal("r", ""), ErrorCode::InvalidArgument),
        (
            &a,
            Signal {
                payload: None,
                ..data_signal("r", &b.peer_id)
            },
            ErrorCode::InvalidArgument,
        ),
        (
            &a,
            Signal {
                payload: Some(signal::Payload::Description(SessionDescription::default())),
                ..data_signal("r", &b.peer_id)
            },
            ErrorCode::InvalidArgument,
        ),
    ];
    for (sender, signal, code) in cases {
        let id = f.send(now, sender.conn, Msg::Signal(signal.clone()));
        let out = f.drain();
        let errors = errors_to(&out, sender.conn);
        assert_eq!(errors.len(), 1, "{signal:?}: {out:?}");
        assert_eq!(errors[0].code(), code, "{signal:?}: {}", errors[0].message);
        assert_eq!(errors[0].in_reply_to, id);
        assert!(!errors[0].message.is_empty());
        assert!(data_signals(&out, b.conn).is_empty());
        assert!(events(&out).contains(&HubEvent::SignalRefused { reason: code }));
    }
}

fn data_signal(room: &str, to: &str) -> Signal {
    Signal {
        room: room.into(),
        to: to.into(),
        from: String::new(),
        payload: Some(signal::Payload::Data(Bytes::from_static(b"d"))),
    }
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
    let [a, _b]: [Client; 2] = f.room(now, "full", 2).try_into().expect("two");
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
    assert!(
        f.join(now, &c, &"x".repeat(64))
            .iter()
            .all(|o| !matches!(o, Output::Close { .. }))
    );
}

#[test]
fn leave_tells_the_room_and_an_empty_room_disappears() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let [a, b]: [Client; 2] = f.room(now, "r", 2).try_into().expect("two");
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
    f.send(now, b.conn, Msg::Leave(Leave { room: "r".into() }));
    assert_eq!(error_code(&f.drain(), b.conn), ErrorCode::UnknownRoom);
}

#[test]
fn ping_gets_pong_with_the_same_payload_outside_the_ordered_stream() {
    let mut f = Fixture::new();
    let c = f.client(f.at(0.0));
    let id = f.send(
        f.at(0.0),
        c.conn,
        Msg::Ping(Ping {
            payload: Bytes::from_static(b"t=42"),
        }),
    );
    let frames = frames_to(&f.drain(), c.conn);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].seq, 0);
    assert_eq!(frames[0].in_reply_to, id);
    assert!(matches!(&frames[0].msg, Some(server_frame::Msg::Pong(p)) if p.payload == "t=42"));
}

#[test]
fn a_flooding_session_is_rate_limited_without_affecting_others() {
    let config = HubConfig {
        limits: Limits {
            requests_per_sec: 10,
            request_burst: 5,
            ..Limits::default()
        },
        ..HubConfig::default()
    };
    let mut f = Fixture::with(config);
    let now = f.at(0.0);
    let clients = f.room(now, "r", 3);
    let (flooder, victim, bystander) = (&clients[0], &clients[1], &clients[2]);
    // The three joins used up part of each bucket... advance so every bucket is full.
    let now = f.at(10.0);
    for _ in 0..20 {
        f.signal(now, flooder, "r", &victim.peer_id, b"spam");
    }
    let out = f.drain();
    assert_eq!(data_signals(&out, victim.conn).len(), 5);
    let errors = errors_to(&out, flooder.conn);
    assert_eq!(errors.len(), 15);
    assert!(errors.iter().all(|e| e.code() == ErrorCode::RateLimited));
    // Not a protocol error: the flooder is not disconnected.
    assert!(closes(&out).is_empty());
    f.signal(now, bystander, "r", &victim.peer_id, b"hello");
    assert_eq!(data_signals(&f.drain(), victim.conn).len(), 1);
    // 100 ms later the flooder has one token again.
    f.signal(f.at(10.1), flooder, "r", &victim.peer_id, b"again");
    assert_eq!(data_signals(&f.drain(), victim.conn).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_and_unsupported_frames_get_errors_and_the_connection_stays() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let [a, b]: [Client; 2] = f.room(now, "r", 2).try_into().expect("two");
    f.hub.frame_rejected(
        now,
        a.conn,
        FrameProblem::Malformed {
            detail: "garbage".into(),
        },
    );
    assert_eq!(error_code(&f.drain(), a.conn), ErrorCode::MalformedFrame);
    f.hub.frame_rejected(
        now,
        a.conn,
        FrameProblem::Unsupported {
            what: "text message",
        },
    );
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
    let [a, b]: [Client; 2] = f.room(now, "r", 2).try_into().expect("two");
    f.hub.frame_rejected(
        now,
        a.conn,
        FrameProblem::TooLarge {
            size: 100_000,
            max: 65_536,
        },
    );
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

// ---------------------------------------------------------------------------------------------
// Presence: ONLINE -> UNREACHABLE -> LEFT
// ---------------------------------------------------------------------------------------------

#[test]
fn a_silent_peer_is_unreachable_at_once_then_left_exactly_after_the_resume_window() {
    let mut f = Fixture::new(); // resume window 30 s
    let now = f.at(0.0);
    let [a, b]: [Client; 2] = f.room(now, "r", 2).try_into().expect("two");
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
fn a_close_handshake_means_left_at_once() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let [a, b]: [Client; 2] = f.room(now, "r", 2).try_into().expect("two");
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::ClientClosed, secs(0.5));
    let out = f.drain();
    assert!(peer_states(&out, b.conn).is_empty());
    let lefts = peer_lefts(&out, b.conn);
    assert_eq!(lefts.len(), 1);
    assert_eq!(lefts[0].reason(), Reason::ClientClosed);
    assert_eq!(
        f.hub.gauges(),
        &Gauges {
            online: [1, 0],
            unreachable: [0, 0],
            rooms: 1
        }
    );
}

#[test]
fn a_broken_connection_makes_the_peer_unreachable_not_left() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let [a, b]: [Client; 2] = f.room(now, "r", 2).try_into().expect("two");
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
    f.hub.handle_timeout(f.at(20.0));
    assert!(
        f.drain().is_empty(),
        "the hello deadline of a gone connection is void"
    );
}

#[test]
fn a_slow_consumer_is_closed_and_keeps_its_frames_for_resume() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let [a, b]: [Client; 2] = f.room(now, "r", 2).try_into().expect("two");
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

// ---------------------------------------------------------------------------------------------
// Hold and resume
// ---------------------------------------------------------------------------------------------

#[test]
fn signals_to_an_unreachable_peer_are_held_and_replayed_in_order_after_resume() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let [a, b]: [Client; 2] = f.room(now, "r", 2).try_into().expect("two");
    // a has processed Joined(1) and PeerJoined(2); a signal (3) is in flight when it dies.
    f.signal(now, &b, "r", &a.peer_id, b"in-flight");
    f.drain();
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::LivenessTimeout, secs(10.0));
    f.drain();
    for payload in [b"held-1" as &'static [u8], b"held-2", b"held-3"] {
        f.signal(f.at(2.0), &b, "r", &a.peer_id, payload);
    }
    let out = f.drain();
    assert!(
        errors_to(&out, b.conn).is_empty(),
        "held, not refused: {out:?}"
    );

    // a comes back over the other transport.
    let (conn, out) = f.resume(f.at(5.0), &a, 2, 1, Transport::WebTransport);
    let w = welcome_of(&out, conn);
    assert!(w.resumed);
    assert_eq!(w.peer_id, a.peer_id);
    assert_eq!(w.rooms, ["r"]);
    let replayed = data_signals(&out, conn);
    let seqs: Vec<u64> = replayed.iter().map(|r| r.0).collect();
    let payloads: Vec<&[u8]> = replayed.iter().map(|r| r.2.as_ref()).collect();
    assert_eq!(seqs, [3, 4, 5, 6]);
    assert_eq!(
        payloads,
        [b"in-flight" as &[u8], b"held-1", b"held-2", b"held-3"]
    );
    assert!(replayed.iter().all(|r| r.1 == b.peer_id));
    // b sees a come back ONLINE, never left + joined.
    let states = peer_states(&out, b.conn);
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].state(), PresenceState::Online);
    assert_eq!(states[0].reason(), Reason::Resumed);
    assert_eq!(states[0].detected_by(), proto::Transport::Webtransport);
    assert!(peer_lefts(&out, b.conn).is_empty());
    assert!(
        msgs_to(&out, b.conn)
            .iter()
            .all(|m| !matches!(m, server_frame::Msg::PeerJoined(_)))
    );
    assert!(events(&out).contains(&HubEvent::Resume {
        transport: Transport::WebTransport,
        outcome: ResumeOutcome::Resumed
    }));
    assert_eq!(f.hub.gauges().online(Transport::WebTransport), 1);
    assert_eq!(f.hub.gauges().unreachable, [0, 0]);

    // New frames continue the same numbering, nothing twice.
    f.signal(f.at(6.0), &b, "r", &a.peer_id, b"after");
    let seqs: Vec<u64> = data_signals(&f.drain(), conn).iter().map(|r| r.0).collect();
    assert_eq!(seqs, [7]);
    // The resume window of the old loss no longer applies.
    f.hub.handle_timeout(f.at(100.0));
    assert!(peer_lefts(&f.drain(), b.conn).is_empty());
}

#[test]
fn resume_replays_only_what_the_client_missed() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let [a, b]: [Client; 2] = f.room(now, "r", 2).try_into().expect("two");
    for _ in 0..5 {
        f.signal(now, &b, "r", &a.peer_id, b"s");
    }
    f.drain(); // a got seq 1..=7
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::ConnectionLost, secs(0.0));
    f.drain();
    let (conn, out) = f.resume(f.at(2.0), &a, 5, 1, Transport::WebSocket);
    let seqs: Vec<u64> = frames_to(&out, conn).iter().map(|fr| fr.seq).collect();
    assert_eq!(seqs, [0, 6, 7], "Welcome, then exactly the missed frames");
}

#[test]
fn the_hold_is_bounded_and_the_overflow_is_refused_to_the_sender() {
    let config = HubConfig {
        limits: Limits {
            hold_frames: 4,
            ..Limits::default()
        },
        ..HubConfig::default()
    };
    let mut f = Fixture::with(config);
    let now = f.at(0.0);
    let [a, b]: [Client; 2] = f.room(now, "r", 2).try_into().expect("two");
    f.send(now, a.conn, Msg::Ack(Ack { seq: 2 }));
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::LivenessTimeout, secs(10.0));
    f.drain();
    let mut accepted = 0;
    let mut refused = Vec::new();
    for i in 0..6 {
        let id = f.signal(f.at(2.0), &b, "r", &a.peer_id, b"held");
        let errors = errors_to(&f.drain(), b.conn);
        match errors.as_slice() {
            [] => accepted += 1,
            [e] => {
                assert_eq!(e.code(), ErrorCode::RecipientBufferFull);
                assert_eq!(e.in_reply_to, id);
                assert!(e.message.contains(&a.peer_id));
                refused.push(i);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(accepted, 4);
    assert_eq!(refused, [4, 5]);
    let (conn, out) = f.resume(f.at(3.0), &a, 2, 1, Transport::WebSocket);
    assert_eq!(
        data_signals(&out, conn).len(),
        4,
        "everything accepted is delivered"
    );
}

#[test]
fn a_new_connection_takes_over_a_session_whose_old_connection_still_looks_alive() {
    // The seed's bug: the gateway has not noticed that the old connection is dead, and the
    // client is back. It must never answer "already connected".
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let [a, b]: [Client; 2] = f.room(now, "r", 2).try_into().expect("two");
    f.signal(now, &b, "r", &a.peer_id, b"lost-in-dead-socket");
    f.drain();
    let (conn, out) = f.resume(f.at(1.0), &a, 2, 1, Transport::WebSocket);
    assert_eq!(closes(&out), [(a.conn, Reason::Superseded)]);
    let w = welcome_of(&out, conn);
    assert!(w.resumed);
    assert_eq!(w.peer_id, a.peer_id);
    assert_eq!(
        data_signals(&out, conn).len(),
        1,
        "the frame the dead socket swallowed"
    );
    assert!(
        msgs_to(&out, b.conn).is_empty(),
        "b sees nothing at all: a never left"
    );
    assert!(events(&out).contains(&HubEvent::Resume {
        transport: Transport::WebSocket,
        outcome: ResumeOutcome::TookOver
    }));
    assert_eq!(f.hub.gauges().online(Transport::WebSocket), 2);
    // The old connection's late news is ignored.
    f.hub
        .connection_lost(f.at(2.0), a.conn, Reason::LivenessTimeout, secs(10.0));
    assert!(f.drain().is_empty());
    f.signal(f.at(2.0), &a, "r", &b.peer_id, b"from-old");
    assert!(f.drain().is_empty());
    assert_eq!(f.hub.gauges().online(Transport::WebSocket), 2);
}

#[test]
fn a_stale_slow_attempt_cannot_take_the_session_from_a_newer_connection() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let [a, b]: [Client; 2] = f.room(now, "r", 2).try_into().expect("two");
    // Attempt 2 connects fast and resumes; attempt 1 (started earlier) arrives later.
    let (newer, out) = f.resume(f.at(1.0), &a, 2, 2, Transport::WebTransport);
    assert!(welcome_of(&out, newer).resumed);
    let (stale, out) = f.resume(f.at(1.5), &a, 2, 1, Transport::WebSocket);
    assert_eq!(error_code(&out, stale), ErrorCode::StaleAttempt);
    assert_eq!(closes(&out), [(stale, Reason::Superseded)]);
    // The newer connection still holds the session.
    f.signal(f.at(2.0), &b, "r", &a.peer_id, b"to-newer");
    assert_eq!(data_signals(&f.drain(), newer).len(), 1);
    // And a same-numbered retry is stale too; a higher one wins.
    let (_, out) = f.resume(f.at(3.0), &a, 3, 2, Transport::WebSocket);
    assert!(
        errors_to(&out, ConnId(f.next_conn - 1))
            .iter()
            .any(|e| e.code() == ErrorCode::StaleAttempt)
    );
    let (newest, out) = f.resume(f.at(3.0), &a, 3, 3, Transport::WebSocket);
    assert!(welcome_of(&out, newest).resumed);
    assert_eq!(closes(&out), [(newer, Reason::Superseded)]);
}

#[test]
fn resume_with_an_unknown_token_is_expired_and_a_fresh_hello_still_works() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let conn = f.open(now, Transport::WebSocket);
    let out = f.hello_on(
        now,
        conn,
        Hello {
            resume_token: "not-a-token".into(),
            ..Default::default()
        },
    );
    assert_eq!(error_code(&out, conn), ErrorCode::ResumeExpired);
    assert!(closes(&out).is_empty());
    assert!(!welcome_of(&f.hello_on(now, conn, Hello::default()), conn).resumed);
}

#[test]
fn resume_claiming_frames_never_sent_is_refused() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let a = f.client(now);
    f.join(now, &a, "r"); // seq 1
    f.hub
        .connection_lost(now, a.conn, Reason::ConnectionLost, secs(0.0));
    let (conn, out) = f.resume(f.at(1.0), &a, 99, 1, Transport::WebSocket);
    let errors = errors_to(&out, conn);
    assert_eq!(errors[0].code(), ErrorCode::InvalidArgument);
    assert!(errors[0].message.contains("99"));
}

#[test]
fn acks_trim_the_replay_and_unacked_eviction_turns_resume_into_a_clear_gap() {
    let config = HubConfig {
        limits: Limits {
            hold_frames: 3,
            ..Limits::default()
        },
        ..HubConfig::default()
    };
    let mut f = Fixture::with(config);
    let now = f.at(0.0);
    let [a, b]: [Client; 2] = f.room(now, "r", 2).try_into().expect("two");
    // a acks everything it gets: nothing unacked is ever evicted, so a resume works.
    let mut last = 0;
    for _ in 0..10 {
        f.signal(now, &b, "r", &a.peer_id, b"s");
        last = frames_to(&f.drain(), a.conn)
            .last()
            .map(|fr| fr.seq)
            .expect("sent");
        f.send(now, a.conn, Msg::Ack(Ack { seq: last }));
    }
    let id = f.send(now, a.conn, Msg::Ack(Ack { seq: 1000 }));
    let errors = errors_to(&f.drain(), a.conn);
    assert_eq!(errors[0].code(), ErrorCode::InvalidArgument);
    assert_eq!(errors[0].in_reply_to, id);
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::ConnectionLost, secs(0.0));
    f.drain();
    let (a_conn, out) = f.resume(f.at(1.5), &a, last, 1, Transport::WebSocket);
    assert!(welcome_of(&out, a_conn).resumed);
    // b never acks the 10 signals a sends it: with a bound of 3 the oldest are evicted, so a
    // resume from seq 1 (b's Joined) would lose frames: a clear gap, not a silent loss.
    for _ in 0..10 {
        f.signal(
            f.at(2.0),
            &Client {
                conn: a_conn,
                ..a.clone()
            },
            "r",
            &b.peer_id,
            b"s",
        );
    }
    f.drain();
    f.hub
        .connection_lost(f.at(3.0), b.conn, Reason::ConnectionLost, secs(0.0));
    f.drain();
    let (conn, out) = f.resume(f.at(4.0), &b, 1, 1, Transport::WebSocket);
    assert_eq!(error_code(&out, conn), ErrorCode::ResumeGap);
    // The old session is ended at once (its owner starts over), a sees b leave.
    let lefts = peer_lefts(&out, a_conn);
    assert_eq!(lefts.len(), 1);
    assert_eq!(lefts[0].peer_id, b.peer_id);
    assert!(events(&out).contains(&HubEvent::Resume {
        transport: Transport::WebSocket,
        outcome: ResumeOutcome::Gap
    }));
}

#[test]
fn resume_exactly_at_the_window_end_is_too_late() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let a = f.client(now);
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::LivenessTimeout, secs(10.0));
    f.hub.handle_timeout(f.at(31.0));
    let (conn, out) = f.resume(f.at(31.0), &a, 0, 1, Transport::WebSocket);
    assert_eq!(error_code(&out, conn), ErrorCode::ResumeExpired);
}

#[test]
fn resume_just_before_the_window_end_succeeds() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let a = f.client(now);
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::LivenessTimeout, secs(10.0));
    f.hub.handle_timeout(f.at(30.999));
    let (conn, out) = f.resume(f.at(30.999), &a, 0, 1, Transport::WebSocket);
    assert!(welcome_of(&out, conn).resumed);
}

#[test]
fn a_second_loss_gets_a_fresh_resume_window() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let [a, b]: [Client; 2] = f.room(now, "r", 2).try_into().expect("two");
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::LivenessTimeout, secs(10.0));
    let (conn, _) = f.resume(f.at(20.0), &a, 2, 1, Transport::WebSocket);
    f.hub
        .connection_lost(f.at(25.0), conn, Reason::LivenessTimeout, secs(10.0));
    f.drain();
    // The first window would end at 31 s; it must not end the second period.
    f.hub.handle_timeout(f.at(54.0));
    assert!(peer_lefts(&f.drain(), b.conn).is_empty());
    f.hub.handle_timeout(f.at(55.0));
    assert_eq!(peer_lefts(&f.drain(), b.conn).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

#[test]
fn shutdown_sends_goaway_to_everyone_then_closes_and_refuses_new_sessions() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let clients = f.room(now, "r", 3);
    let waiting = f.open(now, Transport::WebTransport);
    f.hub.shutdown(f.at(1.0));
    let out = f.drain();
    for conn in clients.iter().map(|c| c.conn).chain([waiting]) {
        let msgs = msgs_to(&out, conn);
        assert!(
            matches!(msgs.as_slice(), [server_frame::Msg::GoAway(g)] if g.reason() == Reason::ServerShutdown),
            "{conn}: {msgs:?}"
        );
        assert!(closes(&out).contains(&(conn, Reason::ServerShutdown)));
        // GoAway is queued before the close.
        let goaway_at = out
            .iter()
            .position(|o| matches!(o, Output::Send { conn: c, .. } if *c == conn));
        let close_at = out
            .iter()
            .position(|o| matches!(o, Output::Close { conn: c, .. } if *c == conn));
        assert!(goaway_at < close_at);
    }
    assert!(
        peer_states(&out, clients[0].conn).is_empty(),
        "no presence noise at shutdown"
    );
    assert_eq!(f.hub.gauges(), &Gauges::default());
    let conn = f.open(f.at(2.0), Transport::WebSocket);
    let out = f.hello_on(f.at(2.0), conn, Hello::default());
    assert_eq!(error_code(&out, conn), ErrorCode::ShuttingDown);
}

#[test]
fn gauges_follow_every_transition() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let a = f.client_over(now, Transport::WebTransport);
    let b = f.client_over(now, Transport::WebSocket);
    f.join(now, &a, "x");
    f.join(now, &b, "y");
    assert_eq!(
        f.hub.gauges(),
        &Gauges {
            online: [1, 1],
            unreachable: [0, 0],
            rooms: 2
        }
    );
    f.hub
        .connection_lost(now, a.conn, Reason::LivenessTimeout, secs(10.0));
    assert_eq!(
        f.hub.gauges(),
        &Gauges {
            online: [1, 0],
            unreachable: [0, 1],
            rooms: 2
        }
    );
    let (_, _) = f.resume(f.at(1.0), &a, 1, 1, Transport::WebSocket);
    assert_eq!(
        f.hub.gauges(),
        &Gauges {
            online: [2, 0],
            unreachable: [0, 0],
            rooms: 2
        }
    );
    f.hub
        .connection_lost(f.at(2.0), b.conn, Reason::ClientClosed, secs(0.0));
    assert_eq!(
        f.hub.gauges(),
        &Gauges {
            online: [1, 0],
            unreachable: [0, 0],
            rooms: 1
        }
    );
}
