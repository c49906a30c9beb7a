//! TCP acknowledgements as liveness evidence (`--tcp-ack-evidence`): why `auto` keeps them away
//! from connections that come through a proxy, and that even where they are (wrongly) counted
//! they cannot keep a vanished client alive for more than three liveness timeouts.

mod common;

use std::time::Duration;

use common::*;
use signalgate::config::Settings;
use signalgate::proto::{PresenceState, Reason};
use signalgate::transport::tcp_liveness::TcpAckEvidence;

async fn gateway(evidence: TcpAckEvidence, timeout: Duration) -> Gateway {
    Gateway::start_with(Settings {
        liveness_timeout: Some(timeout),
        ping_interval: Some(ms(300)),
        resume_window: Some(ms(2000)),
        tcp_ack_evidence: Some(evidence),
        ..Settings::default()
    })
    .await
}

/// How long after cutting the phone's path behind a TCP proxy the observer is told it is
/// UNREACHABLE, and the silence the gateway reports.
async fn cut_behind_a_proxy(gw: &Gateway) -> (Duration, u64) {
    let proxy = TcpProxy::start(gw.addr()).await;
    let conn = proxy.connect(gw).await;
    let (phone, mut observer) = phone_and_observer(gw, conn, "r").await;
    let cut_at = std::time::Instant::now();
    proxy.blackhole.cut();
    let state = next_peer_state(&mut observer, ms(8000))
        .await
        .expect("PeerState arrives");
    assert_eq!(state.peer_id, phone.peer_id());
    assert_eq!(state.state(), PresenceState::Unreachable);
    assert_eq!(state.reason(), Reason::LivenessTimeout);
    (cut_at.elapsed(), state.silent_for_ms)
}

#[tokio::test]
async fn behind_a_proxy_auto_ignores_the_proxys_acks_and_a_cut_is_noticed_within_the_timeout() {
    // The proxy connects from loopback: a proxy's address, so its ACKs prove nothing.
    let timeout = ms(1000);
    let gw = gateway(TcpAckEvidence::Auto, timeout).await;
    let (noticed, silent_ms) = cut_behind_a_proxy(&gw).await;
    assert!(silent_ms >= 1000, "{silent_ms} ms");
    assert!(
        noticed <= timeout + ms(1000),
        "noticed {noticed:?} after the cut"
    );
    gw.stop().await;
}

#[tokio::test]
async fn acks_counted_where_they_prove_nothing_delay_a_verdict_by_two_timeouts_at_most() {
    // `always` behind a proxy is a misconfiguration: the proxy's kernel acknowledges every
    // probe for a client that is gone. The acknowledgements are read (the verdict comes later
    // than the timeout) but bridge at most two more timeouts of silence.
    let timeout = ms(1000);
    let gw = gateway(TcpAckEvidence::Always, timeout).await;
    let (noticed, silent_ms) = cut_behind_a_proxy(&gw).await;
    eprintln!("always behind a proxy: noticed after {noticed:?}, silent for {silent_ms} ms");
    assert!(
        silent_ms >= 3000,
        "the proxy's ACKs bridged the silence: {silent_ms} ms"
    );
    assert!(
        noticed <= 3 * timeout + ms(1000),
        "but for two timeouts at most: noticed {noticed:?} after the cut"
    );
    gw.stop().await;
}
