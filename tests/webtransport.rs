//! The gateway over WebTransport (HTTP/3, QUIC), through real UDP sockets, mixed with
//! WebSocket peers in the same rooms.

mod common;

use bytes::Bytes;
use common::*;
use signalgate::client::{ClientError, Connection, Incoming, Outgoing, Session};
use signalgate::config::Settings;
use signalgate::proto::{ErrorCode, PresenceState, Reason, Transport, signal};

#[tokio::test]
async fn a_webtransport_peer_and_a_websocket_peer_signal_each_other_both_ways() {
    let gw = Gateway::start().await;
    let mut wt = gw.wt_session().await;
    let mut ws = gw.ws_session().await;
    wt.join("mixed").await.expect("join");
    let joined = ws.join("mixed").await.expect("join");
    assert_eq!(joined.peers[0].peer_id, wt.peer_id());

    wt.signal("mixed", ws.peer_id(), offer("offer from wt"))
        .expect("send");
    let got = next_signal(&mut ws).await.expect("offer");
    assert_eq!(
        (got.from.as_str(), got.payload),
        (wt.peer_id(), Some(offer("offer from wt")))
    );
    ws.signal("mixed", wt.peer_id(), answer("answer from ws"))
        .expect("send");
    let got = next_signal(&mut wt).await.expect("answer");
    assert_eq!(
        (got.from.as_str(), got.payload),
        (ws.peer_id(), Some(answer("answer from ws")))
    );
    for i in 0..5 {
        let text = format!("candidate:{i} 1 udp 1 127.0.0.1 {} typ host", 40000 + i);
        wt.signal("mixed", ws.peer_id(), candidate(&text))
            .expect("send");
        ws.signal("mixed", wt.peer_id(), candidate(&text))
            .expect("send");
    }
    for session in [&mut ws, &mut wt] {
        for i in 0..5 {
            let got = next_signal(session).await.expect("candidate");
            let Some(signal::Payload::Candidate(c)) = got.payload else {
                panic!("{got:?}")
            };
            assert!(
                c.candidate.starts_with(&format!("candidate:{i} ")),
                "in order"
            );
        }
    }
    gw.stop().await;
}

/// A WebTransport peer whose network vanishes: QUIC sees no more packets, the gateway's
/// keep-alives go unanswered, and the other peer is told within the liveness timeout.
#[tokio::test]
async fn a_blackholed_webtransport_peer_is_unreachable_within_the_liveness_timeout() {
    let timeout = ms(1000);
    let gw = Gateway::with_liveness(timeout, ms(300), ms(2000)).await;
    let relay = UdpRelay::start(gw.addr()).await;
    let conn = relay.connect(&gw).await;
    let (phone, mut observer) = phone_and_observer(&gw, conn, "r").await;
    assert_cut_is_noticed(
        &phone,
        &mut observer,
        &relay.blackhole,
        timeout,
        ms(2000),
        Transport::Webtransport,
    )
    .await;
    gw.stop().await;
}

/// Proof of life must come from the client itself: copies of its old packets, replayed from
/// its address after it vanished, carry the connection ID (and even decrypt) but prove
/// nothing. Counting UDP datagrams would keep this client ONLINE forever.
#[tokio::test]
async fn replayed_packets_of_a_vanished_webtransport_client_do_not_keep_it_alive() {
    let timeout = ms(1000);
    let gw = Gateway::with_liveness(timeout, ms(300), ms(2000)).await;
    let relay = UdpRelay::start(gw.addr()).await;
    let conn = relay.connect(&gw).await;
    let (phone, mut observer) = phone_and_observer(&gw, conn, "r").await;
    let cut_at = std::time::Instant::now();
    relay.cut_and_replay().await;
    let state = next_peer_state(&mut observer, timeout + ms(3000))
        .await
        .expect("the vanished client is declared unreachable");
    eprintln!(
        "noticed after {:?} despite replayed packets",
        cut_at.elapsed()
    );
    assert_eq!(state.peer_id, phone.peer_id());
    assert_eq!(state.state(), PresenceState::Unreachable);
    assert_eq!(state.reason(), Reason::LivenessTimeout);
    // Declared by the liveness check, which saw the whole silence — not by QUIC's idle
    // backstop after the replays had passed for life.
    assert!(state.silent_for_ms >= 1000, "{state:?}");
    assert!(
        cut_at.elapsed() <= timeout + ms(1000),
        "{:?}",
        cut_at.elapsed()
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_changes_its_udp_port_keeps_its_session() {
    let gw = Gateway::with_liveness(ms(1000), ms(300), ms(2000)).await;
    let relay = UdpRelay::start(gw.addr()).await;
    let conn = relay.connect(&gw).await;
    let (mut mobile, mut other) = phone_and_observer(&gw, conn, "r").await;
    let peer_id = mobile.peer_id().to_string();

    for round in 0..3 {
        let new_port = relay.rebind().await;
        eprintln!("round {round}: client traffic now from {new_port}");
        mobile
            .ping()
            .await
            .expect("the gateway answers from the new address");
        mobile
            .signal("r", other.peer_id(), data(b"after rebind"))
            .expect("send");
        let got = next_signal(&mut other).await.expect("relayed");
        assert_eq!(got.from, peer_id);
        other.signal("r", &peer_id, data(b"back")).expect("send");
        let got = next_signal(&mut mobile).await.expect("relayed back");
        assert_eq!(got.from, other.peer_id());
    }
    // Three liveness timeouts later, still no presence change was announced.
    let outcome = next_peer_state(&mut other, ms(3000)).await;
    assert!(
        matches!(outcome, Err(ClientError::Timeout(_))),
        "{outcome:?}"
    );
    assert_eq!(mobile.peer_id(), peer_id);
    gw.stop().await;
}

#[tokio::test]
async fn bad_input_on_the_control_stream_gets_the_documented_errors() {
    let gw = Gateway::start().await;
    let mut bystander = gw.wt_session().await;
    let mut other = gw.ws_session().await;
    bystander.join("r").await.expect("join");
    other.join("r").await.expect("join");

    let mut session = gw.wt_session().await;
    // A well-framed body that is not a ClientFrame: refused, the stream goes on.
    session
        .connection()
        .send(Outgoing::Raw(Bytes::from_static(
            b"\x06\xff\xff\xff\xff\xff\xff",
        )))
        .expect("send");
    let error = session
        .wait_for(WAIT, "an Error", error_of)
        .await
        .expect("error");
    assert_eq!(error.code(), ErrorCode::MalformedFrame);
    session
        .ping()
        .await
        .expect("still usable after a malformed frame");
    // A second control stream: refused on the first one.
    session
        .connection()
        .send(Outgoing::ExtraStream(Bytes::from_static(b"\x00")))
        .expect("send");
    let error = session
        .wait_for(WAIT, "an Error", error_of)
        .await
        .expect("error");
    assert_eq!(error.code(), ErrorCode::UnsupportedFrame);
    assert!(error.message.contains("stream"), "{}", error.message);
    session
        .ping()
        .await
        .expect("still usable after a second stream");
    // A length prefix far beyond the limit: FRAME_TOO_LARGE, then the session is closed.
    let mut conn = session.into_connection();
    conn.send(Outgoing::Raw(Bytes::from_static(b"\xff\xff\xff\xff\x0f")))
        .expect("send");
    let frame = conn.recv_frame(WAIT).await.expect("error frame");
    let error = error_of(&frame).expect("an Error");
    assert_eq!(error.code(), ErrorCode::FrameTooLarge);
    match conn.recv_within(WAIT).await.expect("close") {
        Incoming::Closed { code, reason } => {
            assert_eq!(code, Some(1008));
            assert_eq!(reason, "protocol_error");
        }
        other => panic!("{other:?}"),
    }

    bystander.ping().await.expect("other sessions unaffected");
    other
        .signal("r", bystander.peer_id(), data(b"still relayed"))
        .expect("send");
    assert_eq!(
        next_signal(&mut bystander).await.expect("relay").from,
        other.peer_id()
    );
    gw.stop().await;
}

#[tokio::test]
async fn webtransport_origins_are_checked_against_the_allow_list() {
    let gw = Gateway::start_with(Settings {
        allowed_origins: Some(vec!["https://app.example.com".into()]),
        ..Settings::default()
    })
    .await;
    let mut options = gw.options.clone();
    options.origin = Some("https://evil.example".into());
    let refused = Connection::webtransport(&gw.wt_url(), &options).await;
    assert!(refused.is_err(), "{refused:?}");
    options.origin = Some("https://app.example.com".into());
    let conn = Connection::webtransport(&gw.wt_url(), &options)
        .await
        .expect("allowed origin");
    Session::start(conn).await.expect("welcome");
    gw.stop().await;
}

#[tokio::test]
async fn webtransport_on_another_path_is_refused() {
    let gw = Gateway::start().await;
    let url = format!("https://{}/elsewhere", gw.addr());
    assert!(Connection::webtransport(&url, &gw.options).await.is_err());
    gw.stop().await;
}
