//! The abuse limits on /metrics: refusals by transport and reason, QUIC Retries under load,
//! handshakes in progress. One test in this binary, because the metrics recorder is global
//! to the process (a second gateway with /metrics in the same binary could not start, and
//! other gateways' events would land in the same counters).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use signalgate::client::Connection;
use signalgate::config::{Listen, Settings};

async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    body
}

/// The value of the series `name{labels}` (labels as rendered, e.g.
/// `transport="webtransport",reason="handshakes"`), 0 when absent.
fn value(text: &str, name: &str, labels: &str) -> f64 {
    let series = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn refusals_retries_and_handshakes_are_counted() {
    let gw = Gateway::start_with(Settings {
        metrics_listen: Some(Listen::On("127.0.0.1:0".parse().expect("addr"))),
        max_connections_per_ip: Some(3),
        new_connections_per_ip_per_sec: Some(0),
        max_handshakes: Some(4),
        handshake_timeout: Some(Duration::from_secs(8)),
        ..Settings::default()
    })
    .await;
    let metrics = gw.metrics_addr().expect("metrics listener");
    let text = scrape(metrics).await;
    for reason in ["per_ip_limit", "per_ip_rate", "per_ip_table", "handshakes"] {
        for transport in ["websocket", "webtransport"] {
            let labels = format!(r#"transport="{transport}",reason="{reason}""#);
            assert!(
                text.contains(&format!(
                    "signalgate_connections_refused_total{{{labels}}} 0"
                )),
                "{labels} exported at zero"
            );
        }
    }
    assert_eq!(value(&text, "signalgate_quic_retries_total", ""), 0.0);

    // Two silent TCP connections take half the handshake slots: QUIC must prove its address
    // (a Retry), and is then admitted. (The metrics listener is not limited.)
    let stalled = [silent_tcp(gw.addr()).await, silent_tcp(gw.addr()).await];
    let in_progress = eventually(WAIT, || async {
        let text = scrape(metrics).await;
        (value(&text, "signalgate_handshakes_in_progress", "") >= 2.0).then_some(())
    })
    .await;
    assert!(in_progress.is_some(), "two handshakes in progress");
    let session = Connection::webtransport(&gw.wt_url(), &gw.options)
        .await
        .expect("admitted after a Retry");
    let text = scrape(metrics).await;
    assert!(value(&text, "signalgate_quic_retries_total", "") >= 1.0);
    // The source has three connections open (two stalled, one session): the limit.
    assert!(
        Connection::websocket(&gw.wss_url(), &gw.options)
            .await
            .is_err()
    );
    assert!(
        Connection::webtransport(&gw.wt_url(), &gw.options)
            .await
            .is_err()
    );
    let text = scrape(metrics).await;
    for transport in ["websocket", "webtransport"] {
        let labels = format!(r#"transport="{transport}",reason="per_ip_limit""#);
        assert!(
            value(&text, "signalgate_connections_refused_total", &labels) >= 1.0,
            "{labels}"
        );
    }
    assert!(value(&text, "signalgate_tracked_sources", "") >= 1.0);
    drop((stalled, session));
    let idle = eventually(WAIT, || async {
        let text = scrape(metrics).await;
        (value(&text, "signalgate_handshakes_in_progress", "") == 0.0).then_some(())
    })
    .await;
    assert!(idle.is_some(), "handshake slots given back");
    gw.stop().await;
}
