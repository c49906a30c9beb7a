//! Leaving is a frame, never a transport event, over real sockets and both transports: Bye
//! leaves at once; any close without it — a WebSocket Close frame of any code, a FIN on the
//! WebTransport control stream, a reset — leaves the session resumable; Suspend is
//! UNREACHABLE with its own reason and comes back with every signal.

mod common;

use std::time::{Duration, Instant};

use common::*;
use signalgate::client::{Connection, Incoming, Outgoing, Session};
use signalgate::proto::{PresenceState, Reason};

#[derive(Debug, Clone, Copy)]
enum Kind {
    WebSocket,
    WebTransport,
}

async fn connect(gw: &Gateway, kind: Kind) -> Connection {
    match kind {
        Kind::WebSocket => gw.ws().await,
        Kind::WebTransport => gw.wt().await,
    }
}

/// The close code the client saw, waiting at most a few seconds.
async fn close_code(session: &mut Session) -> Option<u16> {
    let deadline = Instant::now() + ms(3000);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match session.connection_mut().recv_within(left).await {
            Ok(Incoming::Closed { code, .. }) => return code,
            Ok(_) => continue,
            Err(_) => panic!("the gateway did not close the connection"),
        }
    }
}

async fn bye_is_left_at_once(kind: Kind) {
    let gw = Gateway::start().await;
    let (phone, mut observer) = phone_and_observer(&gw, connect(&gw, kind).await, "r").await;
    let peer_id = phone.peer_id().to_string();
    let state = phone.resume_state();
    let said_bye = Instant::now();
    phone.close().await; // Bye, then the gateway closes
    let left = next_peer_left(&mut observer, ms(3000))
        .await
        .expect("PeerLeft");
    let after = said_bye.elapsed();
    eprintln!("{kind:?}: Bye -> PeerLeft after {after:?}");
    assert_eq!(left.peer_id, peer_id);
    assert_eq!(left.reason(), Reason::Bye);
    assert!(after < ms(2000), "{after:?}");
    // Gone for good: the token no longer resumes anything.
    let again = Session::resume(gw.ws().await, &state).await;
    assert!(again.is_err(), "{again:?}");
    gw.stop().await;
}

#[tokio::test]
async fn bye_over_websocket_is_left_at_once() {
    bye_is_left_at_once(Kind::WebSocket).await;
}

#[tokio::test]
async fn bye_over_webtransport_is_left_at_once() {
    bye_is_left_at_once(Kind::WebTransport).await;
}

/// Ends the phone's connection in one of the ways browsers do, without Bye.
async fn close_without_bye_is_resumable(kind: Kind, how: Outgoing, reason: Reason) {
    let gw = Gateway::with_liveness(ms(2000), ms(600), Duration::from_secs(3)).await;
    let (phone, mut observer) = phone_and_observer(&gw, connect(&gw, kind).await, "r").await;
    let peer_id = phone.peer_id().to_string();
    let state = phone.resume_state();
    let label = format!("{kind:?} {how:?}");
    phone.connection().send(how).expect("close");
    let lost = next_peer_state(&mut observer, ms(3000))
        .await
        .expect("PeerState");
    assert_eq!(lost.peer_id, peer_id, "{label}");
    assert_eq!(lost.state(), PresenceState::Unreachable, "{label}");
    assert_eq!(lost.reason(), reason, "{label}");
    observer
        .signal("r", &peer_id, data(b"while away"))
        .expect("send");
    observer.ping().await.expect("held, not refused");
    let mut back = Session::resume(gw.wt().await, &state)
        .await
        .expect("resumes");
    assert!(back.welcome().resumed, "{label}");
    assert_eq!(back.peer_id(), peer_id);
    let held = next_signal(&mut back).await.expect("the held signal");
    assert_eq!(held.from, observer.peer_id());
    let online = next_peer_state(&mut observer, ms(3000))
        .await
        .expect("ONLINE");
    assert_eq!(online.state(), PresenceState::Online);
    assert_eq!(online.reason(), Reason::Resumed);
    gw.stop().await;
}

#[tokio::test]
async fn a_websocket_close_1001_as_a_frozen_chromium_page_sends_is_not_a_leave() {
    let how = Outgoing::CloseWithCode(1001);
    close_without_bye_is_resumable(Kind::WebSocket, how, Reason::ClientClosed).await;
}

#[tokio::test]
async fn a_websocket_close_1000_is_not_a_leave_either() {
    let how = Outgoing::CloseWithCode(1000);
    close_without_bye_is_resumable(Kind::WebSocket, how, Reason::ClientClosed).await;
}

#[tokio::test]
async fn a_tcp_fin_without_a_close_frame_is_not_a_leave() {
    close_without_bye_is_resumable(Kind::WebSocket, Outgoing::Abort, Reason::ConnectionLost).await;
}

#[tokio::test]
async fn a_fin_on_the_webtransport_control_stream_is_not_a_leave() {
    close_without_bye_is_resumable(Kind::WebTransport, Outgoing::Close, Reason::ClientClosed).await;
}

#[tokio::test]
async fn a_webtransport_session_closed_without_fin_is_not_a_leave() {
    let how = Outgoing::Abort;
    close_without_bye_is_resumable(Kind::WebTransport, how, Reason::ConnectionLost).await;
}

#[tokio::test]
async fn a_client_that_closes_without_bye_lingers_unreachable_for_the_resume_window_then_leaves() {
    let window = Duration::from_millis(1500);
    let gw = Gateway::with_liveness(ms(2000), ms(600), window).await;
    let (phone, mut observer) = phone_and_observer(&gw, gw.ws().await, "r").await;
    let closed_at = Instant::now();
    phone.connection().send(Outgoing::Close).expect("close");
    let lost = next_peer_state(&mut observer, ms(3000))
        .await
        .expect("PeerState");
    assert_eq!(lost.reason(), Reason::ClientClosed);
    let left = next_peer_left(&mut observer, ms(5000))
        .await
        .expect("PeerLeft");
    assert_eq!(left.reason(), Reason::ResumeWindowExpired);
    assert!(closed_at.elapsed() >= window, "{:?}", closed_at.elapsed());
    gw.stop().await;
}

async fn suspend_then_resume(kind: Kind) {
    let gw = Gateway::start().await;
    let (mut phone, mut observer) = phone_and_observer(&gw, connect(&gw, kind).await, "r").await;
    let peer_id = phone.peer_id().to_string();
    phone.suspend().expect("suspend");
    let suspended = next_peer_state(&mut observer, ms(3000))
        .await
        .expect("PeerState");
    assert_eq!(suspended.state(), PresenceState::Unreachable);
    assert_eq!(suspended.reason(), Reason::Suspended);
    assert_eq!(close_code(&mut phone).await, Some(4005));
    let sent: Vec<String> = (0..20).map(|i| format!("while-suspended-{i}")).collect();
    for text in &sent {
        let bytes: &'static [u8] = Box::leak(text.clone().into_bytes().into_boxed_slice());
        observer.signal("r", &peer_id, data(bytes)).expect("send");
    }
    observer.ping().await.expect("held, not refused");
    let mut back = Session::resume(connect(&gw, kind).await, &phone.resume_state())
        .await
        .expect("resumes");
    assert_eq!(back.peer_id(), peer_id);
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let signal = next_signal(&mut back).await.expect("held signal");
        if let Some(signalgate::proto::signal::Payload::Data(d)) = signal.payload {
            got.push(String::from_utf8_lossy(&d).into_owned());
        }
    }
    assert_eq!(got, sent, "every signal, in order, once");
    gw.stop().await;
}

#[tokio::test]
async fn suspend_over_websocket_is_unreachable_suspended_and_resumes_with_every_signal() {
    suspend_then_resume(Kind::WebSocket).await;
}

#[tokio::test]
async fn suspend_over_webtransport_is_unreachable_suspended_and_resumes_with_every_signal() {
    suspend_then_resume(Kind::WebTransport).await;
}
