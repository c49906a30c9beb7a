//! Reconnect without loss, through real sockets: resume across transports, take-over of a
//! session whose old connection still looks alive, expiry, stale attempts, the hold bound.

mod common;

use std::time::{Duration, Instant};

use common::*;
use signalgate::client::{ClientError, ResumeState, Session};
use signalgate::config::Settings;
use signalgate::proto::{ErrorCode, PresenceState, Reason, Transport, server_frame, signal};

/// Payloads of the data signals received until `count` arrived, with their seqs.
async fn receive_data(session: &mut Session, count: usize) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while got.len() < count {
        let frame = session.next_event(WAIT).await.expect("a frame");
        if let Some(server_frame::Msg::Signal(s)) = frame.msg
            && let Some(signal::Payload::Data(d)) = s.payload
        {
            got.push((frame.seq, String::from_utf8_lossy(&d).into_owned()));
        }
    }
    got
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

/// A peer is cut off; the other side keeps signaling to it (some signals go into the dead
/// connection before the gateway notices, the rest are held); it comes back over the *other*
/// transport with its token and gets every missed signal, in order, nothing twice.
async fn resume_across_transports(cut_over: Transport) {
    let gw = Gateway::with_liveness(ms(1000), ms(300), Duration::from_secs(20)).await;
    let (tcp, udp) = (
        TcpProxy::start(gw.addr()).await,
        UdpRelay::start(gw.addr()).await,
    );
    let conn = match cut_over {
        Transport::Websocket => tcp.connect(&gw).await,
        _ => udp.connect(&gw).await,
    };
    let (phone, mut observer) = phone_and_observer(&gw, conn, "call").await;
    let peer_id = phone.peer_id().to_string();
    // The phone processed everything so far (Joined, PeerJoined).
    let state = phone.resume_state();

    tcp.blackhole.cut();
    udp.blackhole.cut();
    let payload = |s: &String| bytes::Bytes::from(s.clone().into_bytes());
    let before = numbered("before-noticed", 0..5);
    for text in &before {
        observer
            .signal("call", &peer_id, signal::Payload::Data(payload(text)))
            .expect("send");
    }
    let unreachable = next_peer_state(&mut observer, ms(5000))
        .await
        .expect("UNREACHABLE");
    assert_eq!(unreachable.state(), PresenceState::Unreachable);
    let held = numbered("held", 0..5);
    for text in &held {
        observer
            .signal("call", &peer_id, signal::Payload::Data(payload(text)))
            .expect("send");
    }
    observer
        .ping()
        .await
        .expect("no refusal: the signals are held");

    // Back over the other transport, directly.
    let conn = match cut_over {
        Transport::Websocket => gw.wt().await,
        _ => gw.ws().await,
    };
    let mut back = Session::resume(conn, &state).await.expect("welcome");
    assert!(back.welcome().resumed);
    assert_eq!(back.peer_id(), peer_id);
    assert_eq!(back.welcome().rooms, ["call"]);
    let got = receive_data(&mut back, 10).await;
    let texts: Vec<String> = got.iter().map(|(_, t)| t.clone()).collect();
    assert_eq!(
        texts,
        [before, held].concat(),
        "every missed signal, in order"
    );
    assert!(
        got.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "consecutive seqs: {got:?}"
    );

    let online = next_peer_state(&mut observer, ms(5000))
        .await
        .expect("ONLINE again");
    assert_eq!(online.peer_id, peer_id);
    assert_eq!(online.state(), PresenceState::Online);
    assert_eq!(online.reason(), Reason::Resumed);
    // And nothing else: no PeerLeft, no PeerJoined for the resumed peer.
    observer
        .signal("call", &peer_id, data(b"after"))
        .expect("send");
    let after = receive_data(&mut back, 1).await;
    assert_eq!(after[0].1, "after");
    let noise = observer.next_event(ms(300)).await;
    assert!(matches!(noise, Err(ClientError::Timeout(_))), "{noise:?}");
    gw.stop().await;
}

#[tokio::test]
async fn a_cut_websocket_peer_resumes_over_webtransport_without_losing_a_signal() {
    resume_across_transports(Transport::Websocket).await;
}

#[tokio::test]
async fn a_cut_webtransport_peer_resumes_over_websocket_without_losing_a_signal() {
    resume_across_transports(Transport::Webtransport).await;
}

/// The seed's bug: the client's network blinked, its old TCP connection is still open and
/// unresponsive (the gateway has not noticed: long liveness timeout), and it reconnects. The
/// new connection is accepted at once, never "already connected".
#[tokio::test]
async fn a_reconnect_while_the_old_tcp_connection_still_looks_alive_takes_over_at_once() {
    let gw = Gateway::with_liveness(
        Duration::from_secs(60),
        Duration::from_secs(20),
        Duration::from_secs(60),
    )
    .await;
    let proxy = TcpProxy::start(gw.addr()).await;
    let conn = proxy.connect(&gw).await;
    let (phone, mut observer) = phone_and_observer(&gw, conn, "r").await;
    let state = phone.resume_state();
    proxy.blackhole.cut();
    observer
        .signal("r", phone.peer_id(), data(b"swallowed by the dead socket"))
        .expect("send");
    observer.ping().await.expect("relayed without complaint");

    let started = Instant::now();
    let mut back = Session::resume(gw.ws().await, &state)
        .await
        .expect("accepted, not refused");
    let took = started.elapsed();
    assert!(back.welcome().resumed);
    assert_eq!(back.peer_id(), phone.peer_id());
    assert!(
        took < Duration::from_secs(2),
        "at once, not after a timeout: {took:?}"
    );
    let got = receive_data(&mut back, 1).await;
    assert_eq!(got[0].1, "swallowed by the dead socket");
    // The observer saw no presence change at all: the peer never left.
    let noise = observer.next_event(ms(500)).await;
    assert!(matches!(noise, Err(ClientError::Timeout(_))), "{noise:?}");
    observer
        .signal("r", back.peer_id(), data(b"to the new connection"))
        .expect("send");
    assert_eq!(
        receive_data(&mut back, 1).await[0].1,
        "to the new connection"
    );
    gw.stop().await;
}

#[tokio::test]
async fn after_the_resume_window_the_token_is_expired_and_a_fresh_session_starts() {
    let gw = Gateway::with_liveness(ms(1000), ms(300), ms(500)).await;
    let proxy = TcpProxy::start(gw.addr()).await;
    let conn = proxy.connect(&gw).await;
    let (phone, mut observer) = phone_and_observer(&gw, conn, "r").await;
    let state = phone.resume_state();
    proxy.blackhole.cut();
    let left = next_peer_left(&mut observer, ms(5000))
        .await
        .expect("PeerLeft");
    assert_eq!(left.reason(), Reason::ResumeWindowExpired);

    let refused = Session::resume(gw.ws().await, &state).await;
    match refused {
        Err(ClientError::Refused(error)) => {
            assert_eq!(error.code(), ErrorCode::ResumeExpired);
            assert!(error.message.contains("new session"), "{}", error.message);
        }
        other => panic!("{other:?}"),
    }
    let mut fresh = gw.ws_session().await;
    assert_ne!(fresh.peer_id(), phone.peer_id());
    fresh.join("r").await.expect("a fresh session works");
    gw.stop().await;
}

#[tokio::test]
async fn a_stale_slow_connect_attempt_cannot_take_the_session_back() {
    let gw = Gateway::start().await;
    let mut original = gw.ws_session().await;
    original.join("r").await.expect("join");
    let token = original.welcome().resume_token.clone();
    let attempt = |n: u64| ResumeState {
        resume_token: token.clone(),
        last_seq: 1,
        attempt: n - 1, // Session::resume sends attempt + 1.
        ..ResumeState::default()
    };
    let mut newer = Session::resume(gw.wt().await, &attempt(2))
        .await
        .expect("attempt 2");
    assert!(newer.welcome().resumed);
    let stale = Session::resume(gw.ws().await, &attempt(1)).await;
    match stale {
        Err(ClientError::Refused(error)) => assert_eq!(error.code(), ErrorCode::StaleAttempt),
        other => panic!("{other:?}"),
    }
    newer
        .ping()
        .await
        .expect("the newer connection still holds the session");
    let mut observer = gw.ws_session().await;
    observer.join("r").await.expect("join");
    observer
        .signal("r", newer.peer_id(), data(b"to newer"))
        .expect("send");
    assert_eq!(receive_data(&mut newer, 1).await[0].1, "to newer");
    gw.stop().await;
}

#[tokio::test]
async fn the_hold_is_bounded_and_the_sender_is_told_what_was_not_accepted() {
    let gw = Gateway::start_with(Settings {
        liveness_timeout: Some(ms(1000)),
        ping_interval: Some(ms(300)),
        resume_window: Some(Duration::from_secs(20)),
        backlog_frames: Some(4),
        ..Settings::default()
    })
    .await;
    let proxy = TcpProxy::start(gw.addr()).await;
    let conn = proxy.connect(&gw).await;
    let (mut phone, mut observer) = phone_and_observer(&gw, conn, "r").await;
    phone.ack().expect("ack");
    phone
        .ping()
        .await
        .expect("the ack is processed before the pong (same connection)");
    let state = phone.resume_state();
    proxy.blackhole.cut();
    next_peer_state(&mut observer, ms(5000))
        .await
        .expect("UNREACHABLE");

    let mut refused = Vec::new();
    let ids: Vec<u64> = (0..6)
        .map(|i| {
            let text = format!("held-{i}");
            observer
                .signal(
                    "r",
                    phone.peer_id(),
                    signal::Payload::Data(text.into_bytes().into()),
                )
                .expect("send")
        })
        .collect();
    observer.ping().await.expect("pong");
    while let Ok(frame) = observer.next_event(ms(300)).await {
        if let Some(error) = error_of(&frame) {
            assert_eq!(error.code(), ErrorCode::RecipientBufferFull);
            refused.push(error.in_reply_to);
        }
    }
    assert_eq!(
        refused,
        ids[4..],
        "the signals past the bound of 4 are refused, each told"
    );
    let mut back = Session::resume(gw.ws().await, &state)
        .await
        .expect("resumed");
    let texts: Vec<String> = receive_data(&mut back, 4)
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(
        texts,
        numbered("held", 0..4),
        "everything accepted is delivered"
    );
    gw.stop().await;
}
