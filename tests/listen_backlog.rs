//! The TCP listeners' accept queue (`--listen-backlog`): sized for reconnect storms, not
//! tokio's 1,024. Read back from the kernel with `ss` (its Send-Q column of a listening socket
//! is the backlog).

mod common;

use std::net::SocketAddr;

use common::*;
use signalgate::config::{DEFAULT_LISTEN_BACKLOG, Settings};

/// The backlog the kernel holds for the listener on `addr`.
fn kernel_backlog(addr: SocketAddr) -> u32 {
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", addr.port())])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|line| line.contains(&addr.to_string()))
        .unwrap_or_else(|| panic!("no listener on {addr} in: {text}"));
    line.split_whitespace()
        .nth(2)
        .and_then(|column| column.parse().ok())
        .unwrap_or_else(|| panic!("no Send-Q in {line:?}"))
}

fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("somaxconn")
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test]
async fn every_tcp_listener_gets_the_configured_backlog() {
    let gw = Gateway::start_with(Settings {
        listen_backlog: Some(1500),
        ..Settings::default()
    })
    .await;
    let expected = 1500.min(somaxconn());
    assert_eq!(kernel_backlog(gw.addr()), expected);
    assert_eq!(kernel_backlog(gw.http_addr()), expected);
    gw.stop().await;

    let gw = Gateway::start().await;
    assert_eq!(
        kernel_backlog(gw.addr()),
        DEFAULT_LISTEN_BACKLOG.min(somaxconn()),
        "the default is sized for storms, above tokio's 1,024"
    );
    const { assert!(DEFAULT_LISTEN_BACKLOG > 1024) };
    gw.stop().await;
}
