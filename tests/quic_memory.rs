//! Measurements, run by hand (ignored by `cargo test`): the gateway's resident memory with
//! many idle WebTransport sessions, with clients that send every datagram they may, and with
//! many small signals held for an unreachable peer while large frames pass by.
//!
//! ```sh
//! cargo build --release
//! SIGNALGATE_BIN=target/release/signalgate \
//!   cargo test --release --test quic_memory -- --ignored --nocapture --test-threads 1
//! ```
//! `SIGNALGATE_BIN` chooses the gateway binary (to compare builds); `SESSIONS` the number of
//! idle sessions (default 1000); `HELD_TRANSPORT` = `ws` or `wt` (default both).
//! Each test starts its own gateway process and prints its RSS before and after.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{data, ms};
use signalgate::client::{ConnectOptions, Connection, Outgoing, Session, Trust};
use tokio::sync::Semaphore;

struct GatewayProcess {
    child: Child,
    port: u16,
    options: ConnectOptions,
    sha256: [u8; 32],
    _dir: tempfile::TempDir,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway_bin() -> PathBuf {
    std::env::var_os("SIGNALGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_signalgate")))
}

fn free_port() -> u16 {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    tcp.local_addr().expect("addr").port()
}

fn cert_sha256(path: &Path) -> [u8; 32] {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_file(path).expect("certificate");
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

async fn start_gateway(extra: &[&str]) -> GatewayProcess {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(gateway_bin())
        .args(["serve", "--listen", &listen, "--http-listen", "off"])
        .args(["--metrics-listen", "off", "--log", "warn"])
        .arg("--dev-cert-dir")
        .arg(dir.path())
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("gateway starts");
    let cert = dir.path().join("dev-cert.pem");
    for _ in 0..100 {
        if cert.exists() && std::net::TcpStream::connect(&listen).is_ok() {
            break;
        }
        tokio::time::sleep(ms(100)).await;
    }
    let sha256 = cert_sha256(&cert);
    GatewayProcess {
        child,
        port,
        options: ConnectOptions::new(Trust::CertificateSha256(sha256)),
        sha256,
        _dir: dir,
    }
}

impl GatewayProcess {
    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    fn wt_url(&self) -> String {
        format!("https://127.0.0.1:{}/wt", self.port)
    }

    fn ws_url(&self) -> String {
        format!("wss://127.0.0.1:{}/ws", self.port)
    }
}

/// Limits that would refuse a load generator on one address.
const NO_PER_IP_LIMITS: &[&str] = &[
    "--max-connections-per-ip",
    "0",
    "--new-connections-per-ip-per-sec",
    "0",
];

fn limit_flags() -> &'static [&'static str] {
    // A build from before the limits has no such flags.
    if std::env::var_os("SIGNALGATE_NO_LIMIT_FLAGS").is_some() {
        &[]
    } else {
        NO_PER_IP_LIMITS
    }
}

async fn settle(gw: &GatewayProcess) -> u64 {
    tokio::time::sleep(Duration::from_secs(5)).await;
    gw.rss_kib()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: run by hand"]
async fn rss_with_idle_webtransport_sessions() {
    let count: usize = std::env::var("SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let gw = start_gateway(limit_flags()).await;
    let before = settle(&gw).await;
    let gate = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    for _ in 0..count {
        let gate = gate.clone();
        let url = gw.wt_url();
        let options = gw.options.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let conn = Connection::webtransport(&url, &options).await.ok()?;
            Session::start(conn).await.ok()
        }));
    }
    let mut sessions = Vec::new();
    for task in tasks {
        if let Ok(Some(session)) = task.await {
            sessions.push(session);
        }
    }
    let after = settle(&gw).await;
    let per_session = (after.saturating_sub(before)) as f64 / sessions.len().max(1) as f64;
    println!(
        "idle WebTransport sessions: {} of {count} open; gateway RSS {before} KiB -> {after} KiB: {per_session:.1} KiB per session ({})",
        sessions.len(),
        gateway_bin().display()
    );
    drop(sessions);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: run by hand"]
async fn rss_with_clients_sending_every_datagram_they_may() {
    const CLIENTS: usize = 100;
    const DATAGRAMS: usize = 2000;
    // These clients say no Hello: keep them past the Hello deadline.
    let mut flags = vec!["--hello-timeout", "300s"];
    flags.extend_from_slice(limit_flags());
    let gw = start_gateway(&flags).await;
    let before = settle(&gw).await;
    let mut held = Vec::new();
    let (mut sent, mut refused_locally) = (0usize, 0usize);
    for _ in 0..CLIENTS {
        let config = wtransport::ClientConfig::builder()
            .with_bind_default()
            .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(gw.sha256)])
            .build();
        let endpoint = wtransport::Endpoint::client(config).expect("endpoint");
        let Ok(session) = endpoint.connect(gw.wt_url()).await else {
            continue;
        };
        let Ok(opening) = session.open_bi().await else {
            continue;
        };
        let Ok(stream) = opening.await else {
            continue;
        };
        let payload = vec![7u8; 1100];
        for n in 0..DATAGRAMS {
            match session.send_datagram(&payload) {
                Ok(()) => sent += 1,
                Err(_) => refused_locally += 1,
            }
            if n % 20 == 0 {
                tokio::time::sleep(ms(1)).await;
            }
        }
        held.push((endpoint, session, stream));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = settle(&gw).await;
    let alive = held
        .iter()
        .filter(|(_, s, _)| s.quic_connection().close_reason().is_none())
        .count();
    println!(
        "datagram senders: {CLIENTS} clients, {sent} datagrams of 1100 bytes sent, {refused_locally} refused by the client's own QUIC stack; {alive} connections still open; gateway RSS {before} KiB -> {after} KiB: {:.1} KiB per client ({})",
        after.saturating_sub(before) as f64 / CLIENTS as f64,
        gateway_bin().display()
    );
}

/// A peer is unreachable (connection aborted, no Bye); another sends it small signals, each
/// followed by a large frame that is refused at once (a signal to a peer not in the room).
/// The small ones are held in the unreachable peer's backlog; the large ones are gone.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: run by hand"]
async fn rss_with_small_signals_held_between_large_frames() {
    const PAIRS: usize = 1000;
    static SMALL: [u8; 100] = [1; 100];
    static LARGE: [u8; 60_000] = [2; 60_000];
    let transports: Vec<String> = match std::env::var("HELD_TRANSPORT") {
        Ok(t) => vec![t],
        Err(_) => vec!["ws".into(), "wt".into()],
    };
    for transport in transports {
        let mut flags = vec![
            "--rate-limit",
            "1000000",
            "--rate-burst",
            "1000000",
            "--resume-window",
            "600s",
        ];
        flags.extend_from_slice(limit_flags());
        let gw = start_gateway(&flags).await;
        let connect = |gw: &GatewayProcess| {
            let (url, options) = (
                if transport == "ws" {
                    gw.ws_url()
                } else {
                    gw.wt_url()
                },
                gw.options.clone(),
            );
            let ws = transport == "ws";
            async move {
                let conn = if ws {
                    Connection::websocket(&url, &options).await
                } else {
                    Connection::webtransport(&url, &options).await
                };
                Session::start(conn.expect("connect"))
                    .await
                    .expect("welcome")
            }
        };
        let mut victim = connect(&gw).await;
        let mut sender = connect(&gw).await;
        victim.join("r").await.expect("join");
        sender.join("r").await.expect("join");
        let victim_id = victim.peer_id().to_string();
        victim.connection().send(Outgoing::Abort).expect("abort");
        tokio::time::sleep(ms(500)).await;
        let before = settle(&gw).await;
        for n in 0..PAIRS {
            sender.signal("r", &victim_id, data(&SMALL)).expect("small");
            sender.signal("r", "nobody", data(&LARGE)).expect("large");
            if n % 50 == 0 {
                sender.ping().await.expect("ping");
            }
        }
        sender.ping().await.expect("everything processed");
        let after = settle(&gw).await;
        println!(
            "{transport}: {PAIRS} small signals held between large frames: gateway RSS {before} KiB -> {after} KiB: {:.1} KiB per held signal ({})",
            after.saturating_sub(before) as f64 / PAIRS as f64,
            gateway_bin().display()
        );
        drop(gw);
    }
}
