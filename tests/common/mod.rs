//! Test support: an in-process gateway on free ports, and faults between client and gateway
//! (a TCP proxy and a UDP relay that can silently blackhole all traffic, like a phone whose
//! network vanished, and a relay that changes its source port, like a rebinding client).
#![allow(dead_code)] // Each test binary uses a different part.
pub mod cluster;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use signalgate::client::{ClientError, ConnectOptions, Connection, Session, Trust};
use signalgate::config::{Config, Listen, Settings};
use signalgate::proto::{
    IceCandidate, PeerLeft, PeerState, PresenceState, SdpType, ServerFrame, SessionDescription,
    Signal, server_frame, signal,
};
use signalgate::server::{self, Running};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Mutex, Notify};

pub const WAIT: Duration = Duration::from_secs(10);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A gateway running inside the test process on free ports.
pub struct Gateway {
    running: Running,
    pub options: ConnectOptions,
    _certs: tempfile::TempDir,
}

impl Gateway {
    pub async fn start() -> Gateway {
        Self::start_with(Settings::default()).await
    }

    /// Short liveness numbers for fault tests.
    pub async fn with_liveness(
        timeout: Duration,
        ping: Duration,
        resume_window: Duration,
    ) -> Gateway {
        Self::start_with(Settings {
            liveness_timeout: Some(timeout),
            ping_interval: Some(ping),
            resume_window: Some(resume_window),
            ..Settings::default()
        })
        .await
    }

    pub async fn start_with(settings: Settings) -> Gateway {
        // Gateway logs in test output with RUST_LOG=signalgate=debug (and --nocapture).
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let certs = tempfile::tempdir().expect("temp dir");
        // TCP binds port 0 and UDP then takes the same number; retry the rare clash.
        let mut last_error = None;
        for _ in 0..5 {
            let settings = Settings {
                listen: Some("127.0.0.1:0".parse().expect("addr")),
                http_listen: Some(Listen::On("127.0.0.1:0".parse().expect("addr"))),
                metrics_listen: settings.metrics_listen.or(Some(Listen::Off)),
                dev_cert_dir: Some(certs.path().to_owned()),
                shutdown_grace: Some(Duration::from_secs(2)),
                ..settings.clone()
            };
            let config = Config::try_from(settings).expect("valid test configuration");
            match server::start(config).await {
                Ok(running) => {
                    let trust = Trust::CertificateSha256(running.identity().leaf_sha256());
                    return Gateway {
                        running,
                        options: ConnectOptions::new(trust),
                        _certs: certs,
                    };
                }
                Err(error) => last_error = Some(error),
            }
        }
        panic!("gateway did not start: {last_error:?}");
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.bound().listen
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.running.bound().metrics
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.running.bound().http.expect("plain HTTP listener")
    }

    pub fn wss_url(&self) -> String {
        format!("wss://{}/ws", self.addr())
    }

    pub fn wt_url(&self) -> String {
        format!("https://{}/wt", self.addr())
    }

    pub fn cert_sha256_hex(&self) -> String {
        self.running.identity().leaf_sha256_hex()
    }

    pub async fn ws(&self) -> Connection {
        Connection::websocket(&self.wss_url(), &self.options)
            .await
            .expect("WebSocket connects")
    }

    pub async fn wt(&self) -> Connection {
        Connection::webtransport(&self.wt_url(), &self.options)
            .await
            .expect("WebTransport connects")
    }

    pub async fn ws_session(&self) -> Session {
        Session::start(self.ws().await)
            .await
            .expect("welcome over WebSocket")
    }

    pub async fn wt_session(&self) -> Session {
        Session::start(self.wt().await)
            .await
            .expect("welcome over WebTransport")
    }

    /// Renews the development certificate as if `now` were the time (see Running).
    pub fn renew_certificate_at(&self, now: std::time::SystemTime) -> bool {
        self.running.renew_certificate_at(now).expect("renewal")
    }

    /// Connect options trusting the certificate presented now.
    pub fn current_options(&self) -> ConnectOptions {
        ConnectOptions::new(Trust::CertificateSha256(
            self.running.certificate().sha256(),
        ))
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// A session over `conn` (typically through a fault injector) and an observer connected
/// directly, both in `room`. The news of each other's join is consumed, so the next events
/// either sees are the test's.
pub async fn phone_and_observer(gw: &Gateway, conn: Connection, room: &str) -> (Session, Session) {
    let mut phone = Session::start(conn).await.expect("welcome");
    let mut observer = gw.ws_session().await;
    phone.join(room).await.expect("phone joins");
    observer.join(room).await.expect("observer joins");
    phone
        .wait_for(WAIT, "PeerJoined", |f| {
            matches!(f.msg, Some(server_frame::Msg::PeerJoined(_))).then_some(())
        })
        .await
        .expect("the phone hears of the observer");
    (phone, observer)
}

/// Cuts `blackhole` between `phone` and the gateway and checks what `observer` is told: the
/// phone UNREACHABLE (liveness timeout, noticed by `transport`) within the liveness timeout
/// plus 1 s of the cut and silent for at least the timeout, then LEFT when the resume
/// window ends. Returns how long after the cut the observer was told.
pub async fn assert_cut_is_noticed(
    phone: &Session,
    observer: &mut Session,
    blackhole: &Blackhole,
    liveness_timeout: Duration,
    resume_window: Duration,
    transport: signalgate::proto::Transport,
) -> Duration {
    use signalgate::proto::Reason;
    let cut_at = std::time::Instant::now();
    blackhole.cut();
    let state = next_peer_state(observer, ms(5000))
        .await
        .expect("PeerState arrives");
    let noticed_after = cut_at.elapsed();
    eprintln!("{transport:?} cut noticed after {noticed_after:?}: {state:?}");
    assert_eq!(state.peer_id, phone.peer_id());
    assert_eq!(state.state(), PresenceState::Unreachable);
    assert_eq!(state.reason(), Reason::LivenessTimeout);
    assert_eq!(state.detected_by(), transport);
    let timeout_ms = u64::try_from(liveness_timeout.as_millis()).expect("small");
    assert!(
        state.silent_for_ms >= timeout_ms,
        "declared only after the timeout: {state:?}"
    );
    assert!(
        noticed_after <= liveness_timeout + ms(1000),
        "noticed {noticed_after:?} after the cut, bound is liveness_timeout + 1 s"
    );
    let left = next_peer_left(observer, resume_window + ms(5000))
        .await
        .expect("PeerLeft arrives");
    assert_eq!(left.peer_id, phone.peer_id());
    assert_eq!(left.reason(), Reason::ResumeWindowExpired);
    let left_after = cut_at.elapsed();
    assert!(
        left_after + ms(100) >= noticed_after + resume_window,
        "LEFT {left_after:?} after the cut: not before the resume window ran out"
    );
    noticed_after
}

// ---------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------

pub fn offer(sdp: &str) -> signal::Payload {
    signal::Payload::Description(SessionDescription {
        r#type: SdpType::Offer.into(),
        sdp: sdp.into(),
    })
}

pub fn answer(sdp: &str) -> signal::Payload {
    signal::Payload::Description(SessionDescription {
        r#type: SdpType::Answer.into(),
        sdp: sdp.into(),
    })
}

pub fn candidate(text: &str) -> signal::Payload {
    signal::Payload::Candidate(IceCandidate {
        candidate: text.into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some("ufrag".into()),
    })
}

pub fn data(bytes: &'static [u8]) -> signal::Payload {
    signal::Payload::Data(bytes::Bytes::from_static(bytes))
}

pub async fn next_signal(session: &mut Session) -> Result<Signal, ClientError> {
    session
        .wait_for(WAIT, "a Signal", |frame| match &frame.msg {
            Some(server_frame::Msg::Signal(s)) => Some(s.clone()),
            _ => None,
        })
        .await
}

pub async fn next_peer_state(
    session: &mut Session,
    timeout: Duration,
) -> Result<PeerState, ClientError> {
    session
        .wait_for(timeout, "a PeerState", |frame| match &frame.msg {
            Some(server_frame::Msg::PeerState(s)) => Some(s.clone()),
            _ => None,
        })
        .await
}

pub async fn next_peer_left(
    session: &mut Session,
    timeout: Duration,
) -> Result<PeerLeft, ClientError> {
    session
        .wait_for(timeout, "a PeerLeft", |frame| match &frame.msg {
            Some(server_frame::Msg::PeerLeft(l)) => Some(l.clone()),
            _ => None,
        })
        .await
}

pub fn error_of(frame: &ServerFrame) -> Option<signalgate::proto::Error> {
    match &frame.msg {
        Some(server_frame::Msg::Error(e)) => Some(e.clone()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

/// A switch shared by a proxy and its pumps: once cut, nothing moves in either direction,
/// and nothing is closed either (no FIN, no RST): the peer just vanished.
#[derive(Clone, Default)]
pub struct Blackhole {
    cut: Arc<AtomicBool>,
    changed: Arc<Notify>,
}

impl Blackhole {
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    async fn wait_cut(&self) {
        loop {
            let notified = self.changed.notified();
            if self.is_cut() {
                return;
            }
            notified.await;
        }
    }
}

/// A TCP proxy in front of the gateway. Cutting it stops forwarding both ways while both
/// sockets stay open, so the gateway's writes keep "succeeding" into kernel buffers.
pub struct TcpProxy {
    pub addr: SocketAddr,
    pub blackhole: Blackhole,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let blackhole = Blackhole::default();
        let switch = blackhole.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, switch.clone()));
                tokio::spawn(pump(server_read, client_write, switch.clone()));
            }
        });
        TcpProxy { addr, blackhole }
    }

    pub fn wss_url(&self) -> String {
        format!("wss://{}/ws", self.addr)
    }

    /// A WebSocket connection to `gw` through this proxy.
    pub async fn connect(&self, gw: &Gateway) -> Connection {
        Connection::websocket(&self.wss_url(), &gw.options)
            .await
            .expect("connects through the proxy")
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    switch: Blackhole,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            () = switch.wait_cut() => break,
        };
        if switch.is_cut() || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    if switch.is_cut() {
        // Hold both sockets open forever: no FIN, no RST, no reads.
        std::future::pending::<()>().await;
    }
    let _ = to.shutdown().await;
}

/// A UDP relay in front of the gateway's QUIC port. It can blackhole all datagrams, or move
/// to a new source port (the gateway then sees the client's address change).
pub struct UdpRelay {
    pub addr: SocketAddr,
    pub blackhole: Blackhole,
    upstream: Arc<Mutex<Arc<UdpSocket>>>,
    rebind: Arc<Notify>,
    gateway: SocketAddr,
    /// The last datagrams the client sent, for [`UdpRelay::cut_and_replay`].
    recent: Arc<Mutex<std::collections::VecDeque<Vec<u8>>>>,
}

impl UdpRelay {
    pub async fn start(gateway: SocketAddr) -> UdpRelay {
        let downstream = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
        let addr = downstream.local_addr().expect("relay addr");
        let first = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream"));
        let upstream = Arc::new(Mutex::new(first));
        let blackhole = Blackhole::default();
        let rebind = Arc::new(Notify::new());
        let client_addr: Arc<Mutex<Option<SocketAddr>>> = Arc::default();

        let recent: Arc<Mutex<std::collections::VecDeque<Vec<u8>>>> = Arc::default();
        // Client -> gateway, through the current upstream socket.
        let (down, up, hole, who, seen) = (
            downstream.clone(),
            upstream.clone(),
            blackhole.clone(),
            client_addr.clone(),
            recent.clone(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = down.recv_from(&mut buf).await {
                *who.lock().await = Some(from);
                if hole.is_cut() {
                    continue;
                }
                {
                    let mut seen = seen.lock().await;
                    seen.push_back(buf[..n].to_vec());
                    if seen.len() > 16 {
                        seen.pop_front();
                    }
                }
                let socket = up.lock().await.clone();
                let _ = socket.send_to(&buf[..n], gateway).await;
            }
        });
        // Gateway -> client, from whichever upstream socket is current.
        let (down, up, hole, who, rebound) = (
            downstream,
            upstream.clone(),
            blackhole.clone(),
            client_addr,
            rebind.clone(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let socket = up.lock().await.clone();
                let received = tokio::select! {
                    received = socket.recv_from(&mut buf) => received,
                    () = rebound.notified() => continue,
                };
                let Ok((n, _)) = received else { break };
                if hole.is_cut() {
                    continue;
                }
                if let Some(client) = *who.lock().await {
                    let _ = down.send_to(&buf[..n], client).await;
                }
            }
        });
        UdpRelay {
            addr,
            blackhole,
            upstream,
            rebind,
            gateway,
            recent,
        }
    }

    /// Cuts the client off, then keeps sending copies of its last datagrams to the gateway
    /// (from the client's address, every 100 ms): packets that carry the connection's ID and
    /// even decrypt, but that the client never sent again — an attacker on the path, or a
    /// middlebox replaying. They must not keep a vanished client alive.
    pub async fn cut_and_replay(&self) {
        self.blackhole.cut();
        let recorded: Vec<Vec<u8>> = self.recent.lock().await.iter().cloned().collect();
        let up = self.upstream.clone();
        let gateway = self.gateway;
        tokio::spawn(async move {
            loop {
                let socket = up.lock().await.clone();
                for datagram in &recorded {
                    let _ = socket.send_to(datagram, gateway).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    pub fn wt_url(&self) -> String {
        format!("https://{}/wt", self.addr)
    }

    /// A WebTransport connection to `gw` through this relay.
    pub async fn connect(&self, gw: &Gateway) -> Connection {
        Connection::webtransport(&self.wt_url(), &gw.options)
            .await
            .expect("connects through the relay")
    }

    /// From now on, traffic to the gateway leaves from a new local port.
    pub async fn rebind(&self) -> SocketAddr {
        let fresh = Arc::new(
            UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind new upstream"),
        );
        let addr = fresh.local_addr().expect("addr");
        *self.upstream.lock().await = fresh;
        self.rebind.notify_waiters();
        addr
    }
}

/// A GET over plain HTTP/1.1; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get_with_host(addr, path, &format!("localhost:{}", addr.port())).await
}

/// A GET over plain HTTP/1.1 with this Host header; returns (status, body).
pub async fn http_get_with_host(addr: SocketAddr, path: &str, host: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

// ---------------------------------------------------------------------------------------------
// Connection limits and handshakes
// ---------------------------------------------------------------------------------------------

/// A GET over plain HTTP/1.1; `None` when the gateway closed or reset the connection instead
/// of answering (a refused connection).
pub async fn try_http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Opens a TCP connection to `addr` and sends nothing: how long until the gateway closes or
/// resets it (`None`: still open after `within`). The socket is closed on return.
pub async fn tcp_closed_after(addr: SocketAddr, within: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(within, stream.read(&mut byte)).await {
        Ok(_) => Some(started.elapsed()),
        Err(_) => None,
    }
}

/// A TCP connection that says nothing (a stalled handshake) until dropped.
pub async fn silent_tcp(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("TCP connect")
}

/// Polls `attempt` every 100 ms until it gives `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = std::time::Instant::now() + within;
    loop {
        if let Some(value) = attempt().await {
            return Some(value);
        }
        if std::time::Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(ms(100)).await;
    }
}

impl Gateway {
    pub fn running(&self) -> &Running {
        &self.running
    }
}

/// A WebTransport session (no control stream yet) from a plain wtransport client trusting the
/// gateway's certificate by hash, with quinn's default transport (so what it may send is
/// limited by the gateway alone). Keep the endpoint as long as the connection.
pub async fn raw_webtransport(
    gw: &Gateway,
) -> (
    wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>,
    wtransport::Connection,
) {
    let hash = gw.running().certificate().sha256();
    let config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(hash)])
        .build();
    let endpoint = wtransport::Endpoint::client(config).expect("client endpoint");
    let connection = endpoint
        .connect(gw.wt_url())
        .await
        .expect("WebTransport session");
    (endpoint, connection)
}

impl Gateway {
    /// The directory of the gateway's development certificate (dev-cert.pem, dev-key.pem),
    /// e.g. for a TLS-terminating proxy in front of it.
    pub fn dev_cert_dir(&self) -> &std::path::Path {
        self._certs.path()
    }
}
