//! Client -> gateway delivery over real sockets: numbered frames lost in flight with a
//! connection are resent after the resume and processed exactly once, in order.

mod common;

use std::time::Duration;

use common::*;
use signalgate::client::{Outgoing, Session};
use signalgate::proto::signal;

fn payload(text: String) -> signal::Payload {
    signal::Payload::Data(text.into_bytes().into())
}

async fn received_texts(session: &mut Session, count: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < count {
        let signal = next_signal(session).await.expect("a signal");
        if let Some(signal::Payload::Data(d)) = signal.payload {
            got.push(String::from_utf8_lossy(&d).into_owned());
        }
    }
    got
}

#[tokio::test]
async fn signals_lost_in_flight_with_a_cut_connection_are_resent_and_arrive_once_in_order() {
    let gw = Gateway::start().await;
    let proxy = TcpProxy::start(gw.addr()).await;
    let (mut phone, mut observer) = phone_and_observer(&gw, proxy.connect(&gw).await, "r").await;
    let to = observer.peer_id().to_string();
    let sent: Vec<String> = (1..=10).map(|i| format!("s{i}")).collect();
    for text in &sent[..5] {
        phone.signal("r", &to, payload(text.clone())).expect("send");
    }
    assert_eq!(received_texts(&mut observer, 5).await, sent[..5]);
    proxy.blackhole.cut();
    // These never reach the gateway; the client keeps them until acknowledged.
    for text in &sent[5..] {
        phone.signal("r", &to, payload(text.clone())).expect("send");
    }
    assert!(phone.unacked() >= 5);
    // The gateway has not noticed the cut (10 s liveness): the resume takes the session over.
    let mut back = Session::resume(gw.wt().await, &phone.resume_state())
        .await
        .expect("resumes");
    assert!(back.welcome().last_client_seq >= 6, "{:?}", back.welcome());
    assert_eq!(received_texts(&mut observer, 5).await, sent[5..]);
    // Nothing twice: the next signal is a new one.
    back.signal("r", &to, payload("after".into()))
        .expect("send");
    assert_eq!(received_texts(&mut observer, 1).await, ["after"]);
    back.ping().await.expect("pong");
    assert_eq!(back.unacked(), 0, "everything acknowledged");
    gw.stop().await;
}

#[tokio::test]
async fn signals_processed_but_not_acknowledged_before_a_loss_are_not_relayed_twice() {
    let gw = Gateway::start().await;
    let (phone, mut observer) = phone_and_observer(&gw, gw.wt().await, "r").await;
    let mut phone = phone;
    let to = observer.peer_id().to_string();
    let sent: Vec<String> = (1..=20).map(|i| format!("s{i}")).collect();
    for text in &sent {
        phone.signal("r", &to, payload(text.clone())).expect("send");
    }
    assert_eq!(received_texts(&mut observer, 20).await, sent);
    // The gateway processed all 20; the phone vanishes before reading a single Ack, so it
    // still holds them all and will offer them again.
    assert_eq!(phone.unacked(), 20);
    let state = phone.resume_state();
    phone.connection().send(Outgoing::Abort).expect("abort");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut back = Session::resume(gw.ws().await, &state)
        .await
        .expect("resumes");
    // The Join was numbered 1, the signals 2..=21.
    assert_eq!(back.welcome().last_client_seq, state.next_client_seq - 1);
    assert_eq!(back.unacked(), 0, "nothing to resend");
    back.signal("r", &to, payload("after".into()))
        .expect("send");
    assert_eq!(
        received_texts(&mut observer, 1).await,
        ["after"],
        "no duplicate before it"
    );
    gw.stop().await;
}

/// The old gateway pushed a resume's whole backlog into the connection's 256-frame queue at
/// once and closed the resumed client as a slow consumer for its own backlog (the client saw
/// 1006). The replay is now paced by what the connection drains.
#[tokio::test]
async fn a_resume_with_a_thousand_waiting_frames_is_delivered_whole_not_closed() {
    let gw = Gateway::start_with(signalgate::config::Settings {
        rate_limit: Some(100_000),
        rate_burst: Some(100_000),
        ..Default::default()
    })
    .await;
    let (mut phone, mut observer) = phone_and_observer(&gw, gw.ws().await, "r").await;
    let peer_id = phone.peer_id().to_string();
    phone.suspend().expect("suspend");
    let _ = next_peer_state(&mut observer, ms(3000))
        .await
        .expect("suspended");
    let sent: Vec<String> = (0..1000).map(|i| format!("held-{i}")).collect();
    for text in &sent {
        observer
            .signal("r", &peer_id, payload(text.clone()))
            .expect("send");
    }
    observer.ping().await.expect("all processed");
    let mut back = Session::resume(gw.ws().await, &phone.resume_state())
        .await
        .expect("resumes");
    assert!(
        back.welcome().replay_until_seq >= 1000,
        "{:?}",
        back.welcome()
    );
    assert_eq!(received_texts(&mut back, 1000).await, sent);
    back.ping()
        .await
        .expect("the resumed connection is still open");
    gw.stop().await;
}
