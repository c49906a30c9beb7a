//! Abuse limits over real sockets: connections per source address (concurrent and per
//! second, TCP and QUIC together, loopback included), connections in their handshake, one
//! deadline from accept to the session, and QUIC sized to what the protocol needs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use signalgate::client::Connection;
use signalgate::config::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A refused connection fails at once: well before any handshake or Hello deadline.
const REFUSED_WITHIN: Duration = Duration::from_secs(3);

/// Connects over `transport` ("ws" or "wt"): `Err` with how long the refusal took, or the
/// connection.
async fn try_connect(gw: &Gateway, transport: &str) -> Result<Connection, Duration> {
    let started = Instant::now();
    let connected = match transport {
        "ws" => Connection::websocket(&gw.wss_url(), &gw.options).await,
        _ => Connection::webtransport(&gw.wt_url(), &gw.options).await,
    };
    connected.map_err(|error| {
        eprintln!("{transport} refused after {:?}: {error}", started.elapsed());
        started.elapsed()
    })
}

async fn assert_refused(gw: &Gateway, transport: &str) {
    match try_connect(gw, transport).await {
        Ok(_) => panic!("{transport}: connection admitted beyond the limit"),
        Err(after) => assert!(
            after < REFUSED_WITHIN,
            "{transport}: refused only after {after:?}"
        ),
    }
}

#[tokio::test]
async fn connections_beyond_the_per_ip_limit_are_refused_on_both_transports() {
    let gw = Gateway::start_with(Settings {
        max_connections_per_ip: Some(3),
        new_connections_per_ip_per_sec: Some(0),
        ..Settings::default()
    })
    .await;
    // Three connections from 127.0.0.1, over both transports: the limit is per source.
    let mut ws = gw.ws_session().await;
    let second_ws = gw.ws_session().await;
    let mut wt = gw.wt_session().await;

    assert_refused(&gw, "ws").await;
    assert_refused(&gw, "wt").await;
    assert_eq!(
        try_http_get(gw.http_addr(), "/healthz").await,
        None,
        "the plain-HTTP listener counts too"
    );
    ws.ping().await.expect("admitted sessions are unaffected");
    wt.ping().await.expect("admitted sessions are unaffected");

    // A connection that ends gives its place back, to either transport.
    second_ws.close().await;
    let again = eventually(WAIT, || async { try_connect(&gw, "wt").await.ok() }).await;
    assert!(again.is_some(), "a freed place is given again");
    assert_refused(&gw, "ws").await;
    drop(again);
    let again = eventually(WAIT, || async {
        try_http_get(gw.http_addr(), "/healthz").await
    })
    .await;
    assert_eq!(again.map(|(status, _)| status), Some(200));
    gw.stop().await;
}

#[tokio::test]
async fn new_connections_per_ip_are_rate_limited_with_a_burst_of_twice_the_rate() {
    let gw = Gateway::start_with(Settings {
        max_connections_per_ip: Some(0),
        new_connections_per_ip_per_sec: Some(1),
        ..Settings::default()
    })
    .await;
    let started = Instant::now();
    for n in 1..=2 {
        let answer = try_http_get(gw.http_addr(), "/healthz").await;
        assert_eq!(
            answer.map(|(s, _)| s),
            Some(200),
            "connection {n} of the burst"
        );
    }
    assert_eq!(try_http_get(gw.http_addr(), "/healthz").await, None);
    // The same source over QUIC: the same bucket.
    assert_refused(&gw, "wt").await;
    assert_refused(&gw, "ws").await;
    let spent = started.elapsed();
    assert!(
        spent < Duration::from_millis(900),
        "the refusals must come before a token refills (took {spent:?}): inconclusive"
    );
    // One token per second comes back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answer = try_http_get(gw.http_addr(), "/healthz").await;
    assert_eq!(answer.map(|(s, _)| s), Some(200), "a token came back");
    gw.stop().await;
}

#[tokio::test]
async fn connections_in_their_handshake_are_capped_on_every_listener() {
    let gw = Gateway::start_with(Settings {
        max_handshakes: Some(2),
        handshake_queue: Some(1),
        handshake_timeout: Some(Duration::from_secs(8)),
        max_connections_per_ip: Some(0),
        new_connections_per_ip_per_sec: Some(0),
        ..Settings::default()
    })
    .await;
    // An upgraded session holds no handshake slot.
    let mut established = gw.ws_session().await;
    // Two connections that never start TLS hold both slots.
    let stalled = [silent_tcp(gw.addr()).await, silent_tcp(gw.addr()).await];
    tokio::time::sleep(ms(200)).await;
    // A third WebSocket client waits for a slot instead of being reset (a storm would
    // otherwise come back as a storm of retries)...
    let (url, options) = (gw.wss_url(), gw.options.clone());
    let waiting = tokio::spawn(async move { Connection::websocket(&url, &options).await });
    tokio::time::sleep(ms(500)).await;
    assert!(
        !waiting.is_finished(),
        "the third connection waits in the queue"
    );
    // ...and with the queue full, a fourth is closed at once.
    let refused_at_once = eventually(Duration::from_secs(3), || async {
        tcp_closed_after(gw.addr(), ms(500)).await
    })
    .await
    .expect("a fourth connection is closed at once");
    assert!(refused_at_once < ms(500), "{refused_at_once:?}");
    assert_eq!(try_http_get(gw.http_addr(), "/healthz").await, None);
    // QUIC: first a Retry (half the slots or more are taken), then the refusal.
    assert_refused(&gw, "wt").await;
    established
        .ping()
        .await
        .expect("established sessions are unaffected");

    drop(stalled);
    let queued = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the queued connection gets a freed slot")
        .expect("task");
    assert!(queued.is_ok(), "it completes its handshake: {queued:?}");
    let admitted = eventually(WAIT, || async { try_connect(&gw, "wt").await.ok() }).await;
    assert!(
        admitted.is_some(),
        "slots come back when the stalled connections go"
    );
    gw.stop().await;
}

#[tokio::test]
async fn one_deadline_runs_from_accept_to_the_websocket_upgrade() {
    let handshake_timeout = Duration::from_secs(1);
    let gw = Gateway::start_with(Settings {
        handshake_timeout: Some(handshake_timeout),
        ..Settings::default()
    })
    .await;
    // A connection that never starts TLS is closed at the deadline.
    let closed = tcp_closed_after(gw.addr(), Duration::from_secs(10))
        .await
        .expect("closed");
    eprintln!("silent TLS connection closed after {closed:?}");
    assert!(
        closed >= ms(700) && closed <= handshake_timeout + ms(2000),
        "{closed:?}"
    );

    // Answered requests on a keep-alive connection do not extend it: the deadline is for
    // the whole way to an upgrade, not per request.
    let mut http = TcpStream::connect(gw.http_addr()).await.expect("connect");
    let started = Instant::now();
    let mut answered = 0;
    let mut buf = vec![0u8; 4096];
    let ended_after = loop {
        if started.elapsed() > Duration::from_secs(8) {
            panic!("a keep-alive connection without upgrade outlived the deadline by far");
        }
        let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
        if http.write_all(request).await.is_err() {
            break started.elapsed();
        }
        match tokio::time::timeout(WAIT, http.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answered += 1,
            _ => break started.elapsed(),
        }
        tokio::time::sleep(ms(200)).await;
    };
    eprintln!("keep-alive connection closed after {ended_after:?}, {answered} answers");
    assert!(answered >= 2, "requests were served meanwhile: {answered}");
    assert!(
        ended_after >= ms(700) && ended_after <= handshake_timeout + ms(2000),
        "{ended_after:?}"
    );

    // Upgraded sessions are past their handshake: the deadline does not touch them.
    let mut ws = gw.ws_session().await;
    let mut wt = gw.wt_session().await;
    tokio::time::sleep(handshake_timeout * 2).await;
    ws.ping()
        .await
        .expect("WebSocket session outlives the handshake deadline");
    wt.ping()
        .await
        .expect("WebTransport session outlives the handshake deadline");
    gw.stop().await;
}

#[tokio::test]
async fn a_quic_connection_without_a_session_request_is_closed_at_the_deadline() {
    let handshake_timeout = Duration::from_secs(1);
    let gw = Gateway::start_with(Settings {
        handshake_timeout: Some(handshake_timeout),
        ..Settings::default()
    })
    .await;
    // The QUIC handshake (ALPN h3), then nothing: no HTTP/3 settings, no CONNECT.
    let hash = gw.running().certificate().sha256();
    let config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(hash)])
        .build();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    let started = Instant::now();
    let quic = endpoint
        .connect_with(config.quic_config().clone(), gw.addr(), "localhost")
        .expect("connect")
        .await
        .expect("QUIC handshake");
    let closed = tokio::time::timeout(Duration::from_secs(10), quic.closed())
        .await
        .expect("closed by the gateway");
    let after = started.elapsed();
    eprintln!("QUIC connection without a session closed after {after:?}: {closed}");
    assert!(
        after >= ms(700) && after <= handshake_timeout + ms(2000),
        "{after:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn quic_gives_a_client_what_signaling_needs_and_no_more() {
    let gw = Gateway::start_with(Settings {
        liveness_timeout: Some(Duration::from_secs(3)),
        ping_interval: Some(ms(300)),
        ..Settings::default()
    })
    .await;
    let (_endpoint, session) = raw_webtransport(&gw).await;
    let (_send, _recv) = session
        .open_bi()
        .await
        .expect("control stream")
        .await
        .expect("control stream");

    // The gateway's probes still arrive: empty datagrams.
    let probe = tokio::time::timeout(Duration::from_secs(3), session.receive_datagram())
        .await
        .expect("a probe within the ping interval (and margin)")
        .expect("datagram");
    assert!(probe.payload().is_empty(), "{:?}", probe.payload());

    // No datagram of the client's fits: the gateway announced room for none.
    let quic = session.quic_connection();
    assert_eq!(quic.max_datagram_size().unwrap_or(0), 0);
    assert!(session.send_datagram(b"x").is_err());

    // Bidirectional streams: the CONNECT request and the control stream are open; one more
    // (which the gateway refuses with an Error), no fourth.
    let third = tokio::time::timeout(ms(1000), quic.open_bi()).await;
    assert!(matches!(third, Ok(Ok(_))), "a third bidirectional stream");
    let fourth = tokio::time::timeout(ms(1000), quic.open_bi()).await;
    assert!(fourth.is_err(), "no fourth bidirectional stream");

    // Unidirectional streams: HTTP/3's own (control, QPACK encoder and decoder), no more.
    // (This client uses one of them, its control stream.) Kept open: a finished stream
    // gives its place back.
    let mut opened = Vec::new();
    while let Ok(Ok(stream)) = tokio::time::timeout(ms(1000), quic.open_uni()).await {
        opened.push(stream);
        assert!(
            opened.len() <= 3,
            "more unidirectional streams than HTTP/3 needs"
        );
    }
    assert_eq!(
        opened.len(),
        2,
        "three in all with the client's control stream"
    );

    // A session over our client works as ever.
    let mut wt = gw.wt_session().await;
    wt.ping().await.expect("ping");
    gw.stop().await;
}

#[test]
fn bad_limit_values_are_refused_naming_them() {
    use signalgate::config::Config;
    let refused = |settings: Settings| Config::try_from(settings).expect_err("refused").to_string();
    let text = refused(Settings {
        max_handshakes: Some(0),
        ..Settings::default()
    });
    assert!(text.contains("max_handshakes = 0"), "{text}");
    let text = refused(Settings {
        max_connections_per_ip: Some(2_000_000),
        ..Settings::default()
    });
    assert!(text.contains("max_connections_per_ip = 2000000"), "{text}");
    let text = refused(Settings {
        new_connections_per_ip_per_sec: Some(5_000_000),
        ..Settings::default()
    });
    assert!(
        text.contains("new_connections_per_ip_per_sec = 5000000"),
        "{text}"
    );
    let text = refused(Settings {
        cert_reload_interval: Some(ms(10)),
        ..Settings::default()
    });
    assert!(text.contains("cert_reload_interval = 10ms"), "{text}");
    // 0 turns the per-source limits and reloading off; the defaults are the documented ones.
    let off = Config::try_from(Settings {
        max_connections_per_ip: Some(0),
        new_connections_per_ip_per_sec: Some(0),
        cert_reload_interval: Some(Duration::ZERO),
        ..Settings::default()
    })
    .expect("valid");
    assert_eq!(
        (
            off.max_connections_per_ip,
            off.new_connections_per_ip_per_sec
        ),
        (0, 0)
    );
    assert_eq!(off.cert_reload_interval, None);
    let defaults = Config::try_from(Settings::default()).expect("valid");
    assert_eq!(defaults.max_connections_per_ip, 256);
    assert_eq!(defaults.new_connections_per_ip_per_sec, 50);
    assert_eq!(defaults.max_handshakes, 512);
    assert_eq!(defaults.cert_reload_interval, Some(Duration::from_secs(5)));
    assert_eq!(defaults.handshake_timeout, Duration::from_secs(10));
}

#[test]
fn the_flags_are_documented_and_a_bad_value_stops_the_start() {
    let bin = env!("CARGO_BIN_EXE_signalgate");
    let help = std::process::Command::new(bin)
        .args(["serve", "--help"])
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--max-connections-per-ip",
        "--new-connections-per-ip-per-sec",
        "--max-handshakes",
        "--cert-reload-interval",
        "--handshake-timeout",
    ] {
        assert!(help.contains(flag), "{flag} in --help:\n{help}");
    }
    let out = std::process::Command::new(bin)
        .args(["serve", "--max-handshakes", "0", "--metrics-listen", "off"])
        .env_remove("SIGNALGATE_MAX_HANDSHAKES")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_handshakes = 0"), "{stderr}");
}

/// One client flooding — the largest frames it may send, as fast as its connection takes them,
/// from several connections — never holds up another pair's relay beyond a bound: the flood is
/// rate limited per session and pushed back per connection, and the hub stays fair.
#[tokio::test]
async fn a_flooding_client_never_delays_another_pairs_relay_beyond_a_bound() {
    use signalgate::client::Outgoing;
    use signalgate::proto::{ClientFrame, Signal, client_frame, signal};
    let gw = Gateway::start().await;
    let mut a = gw.ws_session().await;
    let mut b = gw.wt_session().await;
    a.join("calm").await.expect("join");
    b.join("calm").await.expect("join");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut floods = Vec::new();
    for _ in 0..3 {
        let mut flooder = gw.ws_session().await;
        flooder.join("noise").await.expect("join");
        let stop = stop.clone();
        floods.push(tokio::spawn(async move {
            let big = vec![0x42u8; 60_000];
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let frame = ClientFrame {
                    id: sent,
                    msg: Some(client_frame::Msg::Signal(Signal {
                        room: "noise".into(),
                        to: "p-nobody".into(),
                        payload: Some(signal::Payload::Data(big.clone().into())),
                        ..Default::default()
                    })),
                    ..Default::default()
                };
                if flooder.connection().send(Outgoing::Frame(frame)).is_err() {
                    break;
                }
                sent += 1;
                // Read what came back (the errors), so the flooder is not merely a slow reader.
                // (tokio's timeout polls the receive once before looking at the deadline.)
                while let Ok(incoming) =
                    tokio::time::timeout(Duration::ZERO, flooder.connection_mut().recv()).await
                {
                    if matches!(incoming, signalgate::client::Incoming::Closed { .. }) {
                        return sent;
                    }
                }
                tokio::task::yield_now().await;
            }
            sent
        }));
    }
    tokio::time::sleep(ms(300)).await;
    // Meanwhile a and b signal at 20/s and measure each signal's trip.
    let mut worst = Duration::ZERO;
    let mut trips = Vec::new();
    for _ in 0..40 {
        let sent_at = Instant::now();
        a.signal("calm", b.peer_id(), data(b"calm")).expect("send");
        let got = next_signal(&mut b)
            .await
            .expect("relayed despite the flood");
        assert_eq!(got.from, a.peer_id());
        let trip = sent_at.elapsed();
        worst = worst.max(trip);
        trips.push(trip);
        tokio::time::sleep(ms(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for f in floods {
        total += f.await.unwrap_or(0);
    }
    trips.sort();
    eprintln!(
        "relay during a flood of {total} 60 KB frames: p50 {:?}, max {worst:?}",
        trips[trips.len() / 2]
    );
    assert!(total > 100, "the flood did flood: {total} frames");
    assert!(
        worst < Duration::from_millis(1500),
        "a signal took {worst:?} during the flood"
    );
    gw.stop().await;
}

/// Beyond --max-sessions a Hello is refused with TOO_MANY_SESSIONS and the connection closed
/// (4008), on both transports, and the sessions already there keep working.
#[tokio::test]
async fn beyond_the_session_limit_hellos_are_refused_on_both_transports() {
    use signalgate::client::{ClientError, Incoming, Session};
    use signalgate::proto::ErrorCode;
    let gw = Gateway::start_with(Settings {
        max_sessions: Some(2),
        ..Settings::default()
    })
    .await;
    let mut first = gw.ws_session().await;
    let _second = gw.wt_session().await;
    for conn in [gw.ws().await, gw.wt().await] {
        match Session::start(conn).await {
            Err(ClientError::Refused(e)) => assert_eq!(e.code(), ErrorCode::TooManySessions),
            other => panic!("expected TOO_MANY_SESSIONS, got {other:?}"),
        }
    }
    // The refused connection is closed with 4008 (checked on a raw connection).
    let mut raw = gw.ws().await;
    raw.send_frame(signalgate::proto::ClientFrame {
        id: 1,
        msg: Some(signalgate::proto::client_frame::Msg::Hello(
            Default::default(),
        )),
        ..Default::default()
    })
    .expect("send");
    let mut code = None;
    while let Ok(incoming) = raw.recv_within(WAIT).await {
        if let Incoming::Closed { code: c, .. } = incoming {
            code = c;
            break;
        }
    }
    assert_eq!(code, Some(4008));
    first
        .ping()
        .await
        .expect("the sessions already there keep working");
    gw.stop().await;
}
