//! Behind a TLS-terminating reverse proxy (a real nginx, WebSocket proxying) the gateway's TCP
//! peer is the proxy, whose kernel acknowledges everything. Proof of life must still come from
//! the client: the WebSocket control Pings travel through nginx to the client and its Pongs
//! back, so a client whose path vanished is declared unreachable in time although nginx is
//! alive and well.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use signalgate::client::Connection;
use signalgate::proto::Transport;

struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// nginx terminating TLS with the gateway's certificate and proxying /ws to its plain-HTTP
/// listener. Fails (never skips) when nginx is not installed: `scripts/install-test-deps`.
async fn start_nginx(certs: &Path, upstream: std::net::SocketAddr) -> Nginx {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = dir.path().display();
    let c = certs.display();
    let conf = format!(
        r#"
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {c}/dev-cert.pem;
        ssl_certificate_key {c}/dev-key.pem;
        location /ws {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"#
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let mut child = Command::new("nginx")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx must be installed (apt-get install nginx; scripts/install-test-deps)");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Nginx {
                child,
                port,
                _dir: dir,
            };
        }
        tokio::time::sleep(ms(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
    panic!("nginx did not listen on {port}: {log}");
}

#[tokio::test]
async fn a_client_whose_path_vanishes_behind_nginx_is_unreachable_in_time() {
    let timeout = ms(2000);
    let gw = Gateway::with_liveness(timeout, ms(600), Duration::from_secs(3)).await;
    let nginx = start_nginx(gw.dev_cert_dir(), gw.http_addr()).await;
    // The client reaches nginx through a proxy that can make its path vanish.
    let path = TcpProxy::start(format!("127.0.0.1:{}", nginx.port).parse().expect("addr")).await;
    let conn = Connection::websocket(&path.wss_url(), &gw.options)
        .await
        .expect("a WebSocket through nginx");
    let (phone, mut observer) = phone_and_observer(&gw, conn, "r").await;
    // Alive through nginx: a round trip and a relayed signal.
    let mut phone = phone;
    let rtt = phone.ping().await.expect("pong through nginx");
    eprintln!("RTT through nginx: {rtt:?}");
    observer
        .signal("r", phone.peer_id(), data(b"through nginx"))
        .expect("send");
    next_signal(&mut phone)
        .await
        .expect("relayed through nginx");
    let noticed = assert_cut_is_noticed(
        &phone,
        &mut observer,
        &path.blackhole,
        timeout,
        Duration::from_secs(3),
        Transport::Websocket,
    )
    .await;
    eprintln!("cut behind nginx noticed after {noticed:?}");
    drop(nginx);
    gw.stop().await;
}
