//! The gateway over WebSocket/TLS, through real sockets: relay, liveness under a network cut,
//! bad input, limits, shutdown.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use prost::Message;
use signalgate::client::{ClientError, Connection, Incoming, Outgoing, Session};
use signalgate::config::Settings;
use signalgate::proto::{
    ClientFrame, ErrorCode, Ping, PresenceState, Reason, Transport, client_frame, server_frame,
    signal,
};

#[tokio::test]
async fn two_peers_exchange_offer_answer_and_candidates_with_server_given_ids() {
    let gw = Gateway::start().await;
    let mut alice = gw.ws_session().await;
    let mut bob = gw.ws_session().await;
    assert_ne!(alice.peer_id(), bob.peer_id());
    alice.join("call").await.expect("alice joins");
    let joined = bob.join("call").await.expect("bob joins");
    assert_eq!(joined.peers.len(), 1);
    assert_eq!(joined.peers[0].peer_id, alice.peer_id());

    alice
        .signal("call", bob.peer_id(), offer("v=0 offer"))
        .expect("send");
    let got = next_signal(&mut bob).await.expect("offer arrives");
    assert_eq!(got.from, alice.peer_id());
    assert_eq!(got.payload, Some(offer("v=0 offer")));

    bob.signal("call", alice.peer_id(), answer("v=0 answer"))
        .expect("send");
    let got = next_signal(&mut alice).await.expect("answer arrives");
    assert_eq!(got.from, bob.peer_id());
    assert_eq!(got.payload, Some(answer("v=0 answer")));

    for i in 0..3 {
        let text = format!("candidate:{i} 1 udp 2122260223 127.0.0.1 5000{i} typ host");
        alice
            .signal("call", bob.peer_id(), candidate(&text))
            .expect("send");
        bob.signal("call", alice.peer_id(), candidate(&text))
            .expect("send");
    }
    for session in [&mut alice, &mut bob] {
        for i in 0..3 {
            let got = next_signal(session).await.expect("candidate arrives");
            let Some(signal::Payload::Candidate(c)) = got.payload else {
                panic!("{got:?}");
            };
            assert!(
                c.candidate.starts_with(&format!("candidate:{i} ")),
                "in order: {c:?}"
            );
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_peer_cannot_signal_into_a_room_it_has_not_joined() {
    let gw = Gateway::start().await;
    let mut alice = gw.ws_session().await;
    let mut bob = gw.ws_session().await;
    let mut mallory = gw.ws_session().await;
    alice.join("private").await.expect("join");
    bob.join("private").await.expect("join");
    mallory.join("elsewhere").await.expect("join");

    let id = mallory
        .signal("private", bob.peer_id(), data(b"hi"))
        .expect("send");
    let error = mallory
        .wait_for(WAIT, "an Error", error_of)
        .await
        .expect("refused with an Error");
    assert_eq!(error.code(), ErrorCode::NotJoined);
    assert_eq!(error.in_reply_to, id);
    assert!(error.message.contains("private"), "{}", error.message);
    // Bob got nothing from mallory (his next event is alice's signal, sent now).
    alice
        .signal("private", bob.peer_id(), data(b"from alice"))
        .expect("send");
    let got = next_signal(&mut bob).await.expect("alice's signal");
    assert_eq!(got.from, alice.peer_id());
    gw.stop().await;
}

/// The fault the gateway exists for: a peer's network vanishes without FIN or RST.
///
/// With 1 s / 300 ms liveness the other peer is told UNREACHABLE 1.0 s after the cut
/// (measured here over five runs: 1.0015–1.0027 s; WebTransport 1.015–1.025 s), then LEFT
/// when the 2 s resume window ends. Without reply-based liveness the same cut is not noticed
/// at all within the test's bound (`the_same_cut_goes_unnoticed_without_reply_based_liveness`
/// below: 0 PeerState in 3 s while 20 signals went into the dead socket without an error);
/// TCP itself would take ~924.6 s (tcp_retries2 = 15), and a writer measured on this kernel
/// with the cut in a router namespace still "succeeded" after 120 s.
#[tokio::test]
async fn a_blackholed_peer_is_unreachable_within_the_liveness_timeout_then_left() {
    let timeout = ms(1000);
    let gw = Gateway::with_liveness(timeout, ms(300), ms(2000)).await;
    let proxy = TcpProxy::start(gw.addr()).await;
    let conn = proxy.connect(&gw).await;
    let (phone, mut observer) = phone_and_observer(&gw, conn, "r").await;
    assert_cut_is_noticed(
        &phone,
        &mut observer,
        &proxy.blackhole,
        timeout,
        ms(2000),
        Transport::Websocket,
    )
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn the_same_cut_goes_unnoticed_without_reply_based_liveness() {
    let gw =
        Gateway::with_liveness(Duration::from_secs(600), Duration::from_secs(20), ms(2000)).await;
    let proxy = TcpProxy::start(gw.addr()).await;
    let conn = proxy.connect(&gw).await;
    let (phone, mut observer) = phone_and_observer(&gw, conn, "r").await;
    proxy.blackhole.cut();
    for _ in 0..20 {
        observer
            .signal("r", phone.peer_id(), data(b"into the void"))
            .expect("send");
    }
    let outcome = next_peer_state(&mut observer, ms(3000)).await;
    assert!(
        matches!(outcome, Err(ClientError::Timeout(_))),
        "nothing is noticed and no signal is refused: {outcome:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn bad_input_gets_the_documented_errors_and_other_sessions_keep_working() {
    let gw = Gateway::start().await;
    let mut bystander = gw.ws_session().await;
    let mut other = gw.ws_session().await;
    bystander.join("r").await.expect("join");
    other.join("r").await.expect("join");

    let mut raw = gw.ws().await;
    // Signal before Hello.
    let signal = ClientFrame {
        id: 7,
        msg: Some(client_frame::Msg::Signal(Default::default())),
        ..Default::default()
    };
    raw.send_frame(signal).expect("send");
    assert_error(&mut raw, ErrorCode::HelloRequired, 7).await;
    // Garbage bytes.
    raw.send(Outgoing::Raw(Bytes::from_static(
        b"\xff\xfe garbage \x00\x01",
    )))
    .expect("send");
    assert_error(&mut raw, ErrorCode::MalformedFrame, 0).await;
    // A truncated frame.
    let ping = ClientFrame {
        id: 9,
        msg: Some(client_frame::Msg::Ping(Ping {
            payload: Bytes::from_static(b"a payload long enough to cut"),
        })),
        ..Default::default()
    }
    .encode_to_vec();
    raw.send(Outgoing::Raw(Bytes::copy_from_slice(
        &ping[..ping.len() - 5],
    )))
    .expect("send");
    assert_error(&mut raw, ErrorCode::MalformedFrame, 0).await;
    // A text frame.
    raw.send(Outgoing::Text("{\"hello\":1}".into()))
        .expect("send");
    assert_error(&mut raw, ErrorCode::UnsupportedFrame, 0).await;
    // The connection still works: Hello, then an unknown room.
    let mut session = Session::start(raw).await.expect("welcome after bad input");
    let id = session.send(client_frame::Msg::Signal(signalgate::proto::Signal {
        room: "nope".into(),
        to: bystander.peer_id().into(),
        from: String::new(),
        payload: Some(data(b"x")),
    }));
    let error = session
        .wait_for(WAIT, "an Error", error_of)
        .await
        .expect("error");
    // A room that does not exist answers like one the sender is not in (no existence leak).
    assert_eq!(error.code(), ErrorCode::NotJoined);
    assert_eq!(error.in_reply_to, id.expect("sent"));
    // An oversized frame closes the connection with 1008 after a FRAME_TOO_LARGE error.
    // (The Ping first takes the gateway's Ack of the numbered signal off the connection.)
    session.ping().await.expect("pong");
    let mut raw = session.into_connection();
    raw.send(Outgoing::Raw(Bytes::from(vec![0u8; 70_000])))
        .expect("send");
    assert_error(&mut raw, ErrorCode::FrameTooLarge, 0).await;
    match raw.recv_within(WAIT).await.expect("close arrives") {
        Incoming::Closed { code, reason } => {
            assert_eq!(code, Some(1008));
            assert_eq!(reason, "protocol_error");
        }
        other => panic!("{other:?}"),
    }

    // Throughout, the other sessions were unaffected.
    bystander.ping().await.expect("bystander still served");
    other
        .signal("r", bystander.peer_id(), data(b"still here"))
        .expect("send");
    let got = next_signal(&mut bystander)
        .await
        .expect("relay still works");
    assert_eq!(got.from, other.peer_id());
    gw.stop().await;
}

async fn assert_error(conn: &mut Connection, code: ErrorCode, in_reply_to: u64) {
    let frame = conn.recv_frame(WAIT).await.expect("a frame");
    let error = error_of(&frame).unwrap_or_else(|| panic!("expected an Error, got {frame:?}"));
    assert_eq!(error.code(), code, "{}", error.message);
    assert_eq!(error.in_reply_to, in_reply_to);
    assert!(!error.message.is_empty());
}

#[tokio::test]
async fn a_connection_without_hello_is_closed_at_the_hello_deadline() {
    let gw = Gateway::start_with(Settings {
        hello_timeout: Some(ms(300)),
        ..Settings::default()
    })
    .await;
    let mut raw = gw.ws().await;
    assert_error(&mut raw, ErrorCode::HelloRequired, 0).await;
    match raw.recv_within(WAIT).await.expect("close") {
        Incoming::Closed { code, .. } => assert_eq!(code, Some(4003)),
        other => panic!("{other:?}"),
    }
    gw.stop().await;
}

#[tokio::test]
async fn app_level_ping_gets_pong() {
    let gw = Gateway::start().await;
    let mut session = gw.ws_session().await;
    let rtt = session.ping().await.expect("pong");
    assert!(rtt < Duration::from_secs(5));
    gw.stop().await;
}

#[tokio::test]
async fn room_limits_are_enforced_with_clear_errors() {
    let gw = Gateway::start_with(Settings {
        max_peers_per_room: Some(2),
        max_rooms_per_session: Some(1),
        ..Settings::default()
    })
    .await;
    let mut a = gw.ws_session().await;
    let mut b = gw.ws_session().await;
    let mut c = gw.ws_session().await;
    a.join("r").await.expect("join");
    b.join("r").await.expect("join");
    let refused = |r: Result<_, ClientError>| match r {
        Err(ClientError::Refused(e)) => e.code(),
        other => panic!("{other:?}"),
    };
    assert_eq!(refused(c.join("r").await), ErrorCode::RoomFull);
    assert_eq!(refused(a.join("second").await), ErrorCode::TooManyRooms);
    assert_eq!(
        refused(c.join("bad room name").await),
        ErrorCode::InvalidArgument
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_flooding_client_is_rate_limited_and_others_are_not() {
    let gw = Gateway::start_with(Settings {
        rate_limit: Some(20),
        rate_burst: Some(10),
        ..Settings::default()
    })
    .await;
    let mut flooder = gw.ws_session().await;
    let mut victim = gw.ws_session().await;
    flooder.join("r").await.expect("join");
    victim.join("r").await.expect("join");
    for _ in 0..200 {
        flooder
            .signal("r", victim.peer_id(), data(b"spam"))
            .expect("send");
    }
    let mut limited = 0;
    while let Ok(frame) = flooder.next_event(ms(500)).await {
        if error_of(&frame).is_some_and(|e| e.code() == ErrorCode::RateLimited) {
            limited += 1;
        }
    }
    assert!(limited >= 150, "most of the flood is refused: {limited}");
    // The victim and everyone else are served normally.
    victim.ping().await.expect("victim served");
    let mut bystander = gw.ws_session().await;
    bystander.join("r").await.expect("bystander joins");
    gw.stop().await;
}

/// A peer that stops reading: the gateway hands its connection no more than it drains, so
/// what is sent to it waits in its bounded backlog and, beyond the bound, is refused to the
/// sender (RECIPIENT_BUFFER_FULL: nothing is dropped silently); others are not held up by it;
/// and since it no longer answers probes either, it is declared unreachable in time.
#[tokio::test]
async fn a_peer_that_stops_reading_costs_its_senders_a_clear_refusal_and_nobody_else_anything() {
    let gw = Gateway::start_with(Settings {
        liveness_timeout: Some(Duration::from_secs(3)),
        ping_interval: Some(Duration::from_secs(1)),
        outbound_queue: Some(16),
        rate_limit: Some(100_000),
        rate_burst: Some(100_000),
        backlog_frames: Some(50),
        backlog_bytes: Some(1 << 30),
        ..Settings::default()
    })
    .await;
    let proxy = TcpProxy::start(gw.addr()).await;
    let conn = proxy.connect(&gw).await;
    let (slow, mut sender) = phone_and_observer(&gw, conn, "r").await;
    proxy.blackhole.cut(); // Stops reading: kernel buffers fill, then the backlog.
    static CHUNK: [u8; 60_000] = [7; 60_000];
    let started = Instant::now();
    let refusal = loop {
        for _ in 0..20 {
            sender
                .signal("r", slow.peer_id(), data(&CHUNK))
                .expect("send");
        }
        let found = sender
            .wait_for(ms(200), "a refusal", |frame| {
                error_of(frame).filter(|e| e.code() == ErrorCode::RecipientBufferFull)
            })
            .await;
        match found {
            Ok(error) => break error,
            Err(ClientError::Timeout(_)) if started.elapsed() < Duration::from_secs(20) => {}
            Err(other) => panic!("{other}"),
        }
    };
    assert!(
        refusal.message.contains(slow.peer_id()),
        "{}",
        refusal.message
    );
    let rtt = sender.ping().await.expect("the sender is served promptly");
    assert!(rtt < Duration::from_secs(2), "{rtt:?}");
    let state = next_peer_state(&mut sender, Duration::from_secs(10))
        .await
        .expect("the stalled peer is declared unreachable");
    assert_eq!(state.state(), PresenceState::Unreachable);
    assert_eq!(state.reason(), Reason::LivenessTimeout);
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_sends_goaway_then_closes_every_session() {
    let gw = Gateway::start().await;
    let mut a = gw.ws_session().await;
    let mut b = gw.wt_session().await;
    gw.stop().await;
    for session in [&mut a, &mut b] {
        let frame = session.next_event(WAIT).await.expect("GoAway");
        match frame.msg {
            Some(server_frame::Msg::GoAway(g)) => assert_eq!(g.reason(), Reason::ServerShutdown),
            other => panic!("{other:?}"),
        }
        match session
            .connection_mut()
            .recv_within(WAIT)
            .await
            .expect("close")
        {
            Incoming::Closed { code, .. } => assert_eq!(code, Some(1001)),
            other => panic!("{other:?}"),
        }
    }
}

/// The raw response of a GET with an Origin header (status line and headers included).
async fn get_with_origin(addr: std::net::SocketAddr, path: &str, origin: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nOrigin: {origin}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response).to_ascii_lowercase()
}

#[tokio::test]
async fn pages_of_allowed_origins_may_read_endpoints_and_the_certificate_hash_across_origins() {
    let gw = Gateway::start_with(Settings {
        allowed_origins: Some(vec!["https://app.example.com".into()]),
        ..Settings::default()
    })
    .await;
    for path in ["/endpoints", "/cert-hash"] {
        let allowed = get_with_origin(gw.http_addr(), path, "https://app.example.com").await;
        assert!(
            allowed.contains("access-control-allow-origin: https://app.example.com"),
            "{path}: {allowed}"
        );
        let other = get_with_origin(gw.http_addr(), path, "https://evil.example").await;
        assert!(other.starts_with("http/1.1 200"), "{path}: {other}");
        assert!(
            !other.contains("access-control-allow-origin"),
            "{path}: {other}"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn origins_outside_the_allow_list_are_refused() {
    let gw = Gateway::start_with(Settings {
        allowed_origins: Some(vec!["https://app.example.com".into()]),
        ..Settings::default()
    })
    .await;
    let mut options = gw.options.clone();
    options.origin = Some("https://evil.example".into());
    let refused = Connection::websocket(&gw.wss_url(), &options).await;
    assert!(
        matches!(&refused, Err(ClientError::Connect(e)) if e.contains("403")),
        "{refused:?}"
    );
    options.origin = Some("https://app.example.com".into());
    let conn = Connection::websocket(&gw.wss_url(), &options)
        .await
        .expect("allowed origin");
    Session::start(conn).await.expect("welcome");
    gw.stop().await;
}

#[tokio::test]
async fn http_endpoints_serve_health_certificate_hash_and_the_demo() {
    let gw = Gateway::start().await;
    let (status, body) = http_get(gw.http_addr(), "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = http_get(gw.http_addr(), "/cert-hash").await;
    assert_eq!(status, 200);
    assert!(body.contains(&gw.cert_sha256_hex()), "{body}");
    let (status, body) = http_get(gw.http_addr(), "/endpoints").await;
    assert_eq!(status, 200);
    let port = gw.addr().port();
    assert!(
        body.contains(&format!("\"webtransport\":\"https://127.0.0.1:{port}/wt\"")),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "\"websocket\":\"ws://localhost:{}/ws\"",
            gw.http_addr().port()
        )),
        "{body}"
    );
    // A hostile Host header is not echoed into the JSON.
    let hostile = "localhost:1\",\"cert_sha256\":\"evil";
    let (status, body) = http_get_with_host(gw.http_addr(), "/endpoints", hostile).await;
    assert_eq!(status, 200);
    assert!(!body.contains("evil"), "{body}");
    let (status, body) = http_get(gw.http_addr(), "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<html"), "{body}");
    let (status, _) = http_get(gw.http_addr(), "/demo.js").await;
    assert_eq!(status, 200);
    let (status, _) = http_get(gw.http_addr(), "/nope").await;
    assert_eq!(status, 404);
    // The plain-HTTP WebSocket works too (the demo page's fallback).
    let conn = Connection::websocket(&format!("ws://{}/ws", gw.http_addr()), &gw.options)
        .await
        .expect("plain ws");
    let mut session = Session::start(conn).await.expect("welcome");
    session.join("plain").await.expect("join");
    gw.stop().await;
}

#[tokio::test]
async fn joining_reports_existing_members_and_their_state() {
    let gw = Gateway::start().await;
    let mut a = gw.ws_session().await;
    let mut b = gw.ws_session().await;
    a.join("r").await.expect("join");
    b.join("r").await.expect("join");
    let joined = a
        .wait_for(WAIT, "PeerJoined", |f| match &f.msg {
            Some(server_frame::Msg::PeerJoined(p)) => Some(p.clone()),
            _ => None,
        })
        .await
        .expect("a hears of b");
    assert_eq!(joined.peer.expect("peer").peer_id, b.peer_id());
    b.leave("r").await.expect("leave");
    let left = next_peer_left(&mut a, WAIT).await.expect("a hears b left");
    assert_eq!(left.reason(), Reason::LeftRoom);
    gw.stop().await;
}

/// A gateway left running renews its development certificate before it expires: sessions
/// stay up, new connections get the new certificate, /cert-hash tells pages the new hash.
#[tokio::test]
async fn the_development_certificate_is_renewed_while_running_without_dropping_sessions() {
    let gw = Gateway::start().await;
    let mut ws = gw.ws_session().await;
    let mut wt = gw.wt_session().await;
    ws.join("r").await.expect("join");
    wt.join("r").await.expect("join");
    let old_hash = gw.cert_sha256_hex();
    assert!(
        !gw.renew_certificate_at(std::time::SystemTime::now()),
        "fresh: nothing to renew"
    );
    let in_eleven_days = std::time::SystemTime::now() + Duration::from_secs(11 * 24 * 3600);
    assert!(
        gw.renew_certificate_at(in_eleven_days),
        "renewed when less than 3 days remain"
    );

    let (_, body) = http_get(gw.http_addr(), "/cert-hash").await;
    assert!(!body.contains(&old_hash), "{body}");
    let new_options = gw.current_options();
    let conn = Connection::websocket(&gw.wss_url(), &new_options)
        .await
        .expect("new certificate (TLS)");
    Session::start(conn).await.expect("welcome");
    let conn = Connection::webtransport(&gw.wt_url(), &new_options)
        .await
        .expect("new certificate (QUIC)");
    Session::start(conn).await.expect("welcome");
    assert!(
        Connection::websocket(&gw.wss_url(), &gw.options)
            .await
            .is_err(),
        "old pin no longer matches"
    );

    ws.signal("r", wt.peer_id(), data(b"still connected"))
        .expect("send");
    assert_eq!(
        next_signal(&mut wt).await.expect("relay").from,
        ws.peer_id()
    );
    gw.stop().await;
}
