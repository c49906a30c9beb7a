//! The out-of-process harness itself (tests/common/cluster.rs): a real NATS cluster that
//! survives a SIGKILLed node, and the real gateway binary read back from its banner.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::cluster::{GatewayProcess, NatsCluster};

#[test]
fn a_nats_cluster_forms_and_a_killed_node_rejoins() {
    let mut cluster = NatsCluster::start(3);
    assert_eq!(cluster.len(), 3);
    for i in 0..3 {
        assert_eq!(
            cluster.routes(i),
            Some(2),
            "node {i}:\n{}",
            cluster.log_tail(i)
        );
    }
    let urls = cluster.urls();
    assert_eq!(urls.split(',').count(), 3, "{urls}");
    assert!(urls.contains(&cluster.url(1)), "{urls}");

    cluster.kill(1);
    assert!(!cluster.is_running(1));
    assert_eq!(cluster.routes(1), None, "a killed node does not answer");

    cluster.restart(1);
    assert!(cluster.is_running(1));
    for i in 0..3 {
        assert_eq!(
            cluster.routes(i),
            Some(2),
            "node {i}:\n{}",
            cluster.log_tail(i)
        );
    }
    assert_eq!(
        cluster
            .log(1)
            .matches("started by the test harness")
            .count(),
        2,
        "the log keeps both runs"
    );
}

#[tokio::test]
async fn a_gateway_process_serves_a_session_until_sigkill() {
    let mut gateway = GatewayProcess::spawn(&[]);
    let metrics = gateway.metrics_addr().expect("metrics on by default");
    let (status, body) = common::http_get(metrics, "/metrics").await;
    assert_eq!(status, 200, "{body}");

    let session = gateway.ws_session().await;
    assert!(!session.peer_id().is_empty());

    gateway.kill9();
    let status = gateway
        .wait_exit(Duration::from_secs(5))
        .expect("the gateway exits on SIGKILL");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
}

#[test]
fn a_gateway_process_exits_cleanly_on_sigterm() {
    let args = ["--metrics-listen".to_string(), "off".to_string()];
    let mut gateway = GatewayProcess::spawn(&args);
    assert_eq!(
        gateway.metrics_addr(),
        None,
        "extra args replace the defaults"
    );
    gateway.terminate();
    let status = gateway
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", gateway.log_tail()));
    assert!(status.success(), "{status}:\n{}", gateway.log());
    assert!(gateway.log().contains("shutting down"), "{}", gateway.log());
}
