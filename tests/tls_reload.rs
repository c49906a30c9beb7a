//! A certificate from a CA (`--cert/--key`) is renewed while the gateway runs: the changed
//! files are presented to new connections, TLS and QUIC, while open sessions keep going; a
//! half-written or mismatched pair keeps the current certificate.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::*;
use signalgate::client::{ConnectOptions, Connection, Session, Trust};
use signalgate::config::{Listen, Settings};
use signalgate::tls::{CertificateFiles, Reload};

/// A certificate (ECDSA P-256, 10 days) and its key, as PEM, and the certificate's SHA-256.
struct Pair {
    cert: String,
    key: String,
    sha256: [u8; 32],
}

fn new_pair() -> Pair {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("params");
    let now = SystemTime::now();
    params.not_before = time::OffsetDateTime::from(now - Duration::from_secs(3600));
    params.not_after = time::OffsetDateTime::from(now + Duration::from_secs(10 * 24 * 3600));
    let cert = params.self_signed(&key).expect("certificate");
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.der());
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(digest.as_ref());
    Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
        sha256,
    }
}

struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn new(pair: &Pair) -> Files {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = Files {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            _dir: dir,
        };
        files.write(Some(&pair.cert), Some(&pair.key));
        files
    }

    /// Rewrites the files in place, as `cp` or a careless renewal script would.
    fn write(&self, cert: Option<&str>, key: Option<&str>) {
        if let Some(cert) = cert {
            std::fs::write(&self.cert, cert).expect("write cert");
        }
        if let Some(key) = key {
            std::fs::write(&self.key, key).expect("write key");
        }
    }
}

fn trusting(pair: &Pair) -> ConnectOptions {
    ConnectOptions::new(Trust::CertificateSha256(pair.sha256))
}

async fn connects(gw: &Gateway, transport: &str, pair: &Pair) -> bool {
    let options = trusting(pair);
    match transport {
        "ws" => Connection::websocket(&gw.wss_url(), &options).await.is_ok(),
        _ => Connection::webtransport(&gw.wt_url(), &options)
            .await
            .is_ok(),
    }
}

async fn start(files: &Files, metrics: bool) -> Gateway {
    Gateway::start_with(Settings {
        cert: Some(files.cert.clone()),
        key: Some(files.key.clone()),
        cert_reload_interval: Some(ms(200)),
        metrics_listen: metrics.then(|| Listen::On("127.0.0.1:0".parse().expect("addr"))),
        ..Settings::default()
    })
    .await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_renewed_certificate_is_presented_to_new_connections_and_open_sessions_stay() {
    let old = new_pair();
    let files = Files::new(&old);
    let gw = start(&files, true).await;
    assert_eq!(gw.cert_sha256_hex(), hex(&old.sha256));
    let mut ws = Session::start(
        Connection::websocket(&gw.wss_url(), &trusting(&old))
            .await
            .expect("ws"),
    )
    .await
    .expect("welcome");
    let mut wt = Session::start(
        Connection::webtransport(&gw.wt_url(), &trusting(&old))
            .await
            .expect("wt"),
    )
    .await
    .expect("welcome");
    ws.join("r").await.expect("join");
    wt.join("r").await.expect("join");

    let new = new_pair();
    files.write(Some(&new.cert), Some(&new.key));
    let renewed = eventually(WAIT, || async {
        connects(&gw, "ws", &new).await.then_some(())
    })
    .await;
    assert!(
        renewed.is_some(),
        "new TLS handshakes present the new certificate"
    );
    assert!(
        connects(&gw, "wt", &new).await,
        "and so do new QUIC handshakes"
    );
    assert!(
        !connects(&gw, "ws", &old).await,
        "the old certificate is no longer presented"
    );
    assert!(!connects(&gw, "wt", &old).await);
    let (status, body) = http_get(gw.http_addr(), "/cert-hash").await;
    assert_eq!(status, 200);
    assert!(body.contains(&hex(&new.sha256)), "{body}");

    // The sessions opened with the old certificate go on.
    ws.signal("r", wt.peer_id(), data(b"after the renewal"))
        .expect("send");
    assert_eq!(
        next_signal(&mut wt).await.expect("relayed").from,
        ws.peer_id()
    );
    wt.signal("r", ws.peer_id(), data(b"and back"))
        .expect("send");
    assert_eq!(
        next_signal(&mut ws).await.expect("relayed").from,
        wt.peer_id()
    );

    let metrics = gw.metrics_addr().expect("metrics");
    let (_, text) = http_get(metrics, "/metrics").await;
    let loaded = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"signalgate_certificate_reloads_total{outcome="loaded"} "#))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(loaded, Some(1.0), "{text}");
    gw.stop().await;
}

#[tokio::test]
async fn a_half_written_or_mismatched_pair_keeps_the_current_certificate() {
    let old = new_pair();
    let files = Files::new(&old);
    let gw = start(&files, false).await;
    let new = new_pair();
    let settle = || tokio::time::sleep(ms(1000)); // Five checks.

    // Half of the new certificate.
    files.write(Some(&new.cert[..new.cert.len() / 2]), None);
    settle().await;
    assert!(connects(&gw, "ws", &old).await, "still the old certificate");
    assert!(connects(&gw, "wt", &old).await);
    // The whole new certificate, the old key: they do not belong together.
    files.write(Some(&new.cert), None);
    settle().await;
    assert!(connects(&gw, "ws", &old).await, "still the old certificate");
    assert!(!connects(&gw, "ws", &new).await);
    // The new key completes the pair.
    files.write(None, Some(&new.key));
    let renewed = eventually(WAIT, || async {
        connects(&gw, "wt", &new).await.then_some(())
    })
    .await;
    assert!(renewed.is_some(), "the completed pair is used");
    assert!(connects(&gw, "ws", &new).await);
    gw.stop().await;
}

/// The checks themselves: a change is loaded once it has settled, a failure names the file
/// and is reported once, a missing file is a failure too.
#[test]
fn a_change_is_loaded_once_settled_and_a_failure_names_the_file_once() {
    let old = new_pair();
    let files = Files::new(&old);
    let mut watch = CertificateFiles::new(&files.cert, &files.key);
    assert!(matches!(watch.check(), Reload::Unchanged));

    let new = new_pair();
    files.write(Some(&new.cert[..new.cert.len() / 2]), None);
    assert!(
        matches!(watch.check(), Reload::Changing),
        "first seen: wait"
    );
    match watch.check() {
        Reload::Failed(error) => {
            let text = error.to_string();
            assert!(text.contains(&path_text(&files.cert)), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(watch.check(), Reload::Unchanged), "reported once");

    files.write(Some(&new.cert), None);
    assert!(matches!(watch.check(), Reload::Changing));
    match watch.check() {
        Reload::Failed(error) => {
            let text = error.to_string();
            assert!(
                text.contains(&path_text(&files.cert)) && text.contains(&path_text(&files.key)),
                "a mismatch names both files: {text}"
            );
        }
        other => panic!("{other:?}"),
    }

    std::fs::remove_file(&files.key).expect("remove");
    assert!(matches!(watch.check(), Reload::Changing));
    match watch.check() {
        Reload::Failed(error) => assert!(error.to_string().contains(&path_text(&files.key))),
        other => panic!("{other:?}"),
    }

    files.write(None, Some(&new.key));
    assert!(matches!(watch.check(), Reload::Changing));
    match watch.check() {
        Reload::Loaded(identity) => assert_eq!(identity.leaf_sha256(), new.sha256),
        other => panic!("{other:?}"),
    }
    assert!(matches!(watch.check(), Reload::Unchanged));
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}
