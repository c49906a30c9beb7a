//! Graceful shutdown: every task stops, and a client that vanished does not hold it up.

mod common;

use std::time::{Duration, Instant};

use common::*;
use signalgate::config::{Listen, Settings};
use signalgate::proto::{Reason, server_frame};

/// A WebTransport close used to wait for the peer to acknowledge the control stream's FIN
/// before sending the close code: a vanished client held each close (and the shutdown) for
/// the whole grace period.
#[tokio::test]
async fn shutdown_is_not_held_up_by_a_webtransport_client_that_vanished() {
    let gw = Gateway::start().await; // liveness 10 s: the gateway still believes it alive
    let relay = UdpRelay::start(gw.addr()).await;
    let (_phone, mut other) = phone_and_observer(&gw, relay.connect(&gw).await, "r").await;
    relay.blackhole.cut();
    let started = Instant::now();
    gw.stop().await; // grace 2 s
    let took = started.elapsed();
    eprintln!("shutdown took {took:?}");
    assert!(took < Duration::from_millis(1500), "shutdown took {took:?}");
    // The reachable client got its GoAway.
    let frame = other.next_event(WAIT).await.expect("GoAway");
    assert!(
        matches!(frame.msg, Some(server_frame::Msg::GoAway(g)) if g.reason() == Reason::ServerShutdown)
    );
}

#[tokio::test]
async fn the_metrics_listener_stops_with_the_gateway() {
    let gw = Gateway::start_with(Settings {
        metrics_listen: Some(Listen::On("127.0.0.1:0".parse().expect("addr"))),
        ..Settings::default()
    })
    .await;
    let metrics = gw.metrics_addr().expect("metrics listener");
    let (status, body) = http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("signalgate_sessions"));
    gw.stop().await;
    tokio::time::sleep(ms(100)).await;
    assert!(
        tokio::net::TcpStream::connect(metrics).await.is_err(),
        "/metrics still accepts connections after the gateway stopped"
    );
}
