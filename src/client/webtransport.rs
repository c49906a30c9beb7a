//! The client's WebTransport transport: one bidirectional stream of length-delimited frames.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::mpsc;
use wtransport::endpoint::ConnectOptions as WtConnectOptions;
use wtransport::error::ConnectionError;
use wtransport::{ClientConfig, Endpoint, VarInt};

use super::{ClientError, ConnectOptions, Connection, Incoming, Kind, Outgoing, tls};
use crate::core::codec::LengthDelimitedDecoder;
use crate::proto::ServerFrame;

/// Like Chromium: a 30 s idle timeout and no keep-alives of its own (the gateway probes).
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Connection, ClientError> {
    let connect_err =
        |what: &str, e: &dyn std::fmt::Display| ClientError::Connect(format!("{url}: {what}: {e}"));
    let v6 = url.contains("://[");
    let bind_ip = options.bind.unwrap_or(if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    let tls = tls::client_config(&options.trust, b"h3", true)?;
    let config = ClientConfig::builder()
        .with_bind_address(SocketAddr::new(bind_ip, 0))
        .with_custom_tls(tls)
        .max_idle_timeout(Some(CLIENT_IDLE_TIMEOUT))
        .map_err(|e| connect_err("idle timeout", &e))?
        .build();
    let endpoint = Endpoint::client(config).map_err(|e| connect_err("UDP socket", &e))?;
    let mut request = WtConnectOptions::builder(url);
    if let Some(origin) = &options.origin {
        request = request.add_header("origin", origin);
    }
    let connection = endpoint
        .connect(request.build())
        .await
        .map_err(|e| connect_err("WebTransport session", &e))?;
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| connect_err("open control stream", &e))?
        .await
        .map_err(|e| connect_err("open control stream", &e))?;

    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Outgoing>();
    let (in_tx, in_rx) = mpsc::unbounded_channel::<Incoming>();
    let max_frame_bytes = options.max_frame_bytes;
    let task = tokio::spawn(async move {
        let _endpoint = endpoint; // Keeps the UDP socket alive as long as the connection.
        let mut decoder = LengthDelimitedDecoder::new(max_frame_bytes);
        let mut buf = vec![0u8; 16 * 1024];
        let mut extra_streams = Vec::new();
        loop {
            tokio::select! {
                out = out_rx.recv() => {
                    let bytes = match out {
                        Some(Outgoing::Frame(frame)) => frame.encode_length_delimited_to_vec(),
                        Some(Outgoing::Raw(bytes)) => bytes.to_vec(),
                        Some(Outgoing::Text(_)) => continue, // No text on WebTransport.
                        Some(Outgoing::Abort) => {
                            connection.close(VarInt::from_u32(0), b"");
                            let _ = in_tx.send(Incoming::Closed { code: Some(0), reason: "aborted by the client".into() });
                            return;
                        }
                        Some(Outgoing::ExtraStream(bytes)) => {
                            if let Ok(opening) = connection.open_bi().await
                                && let Ok((mut extra_send, extra_recv)) = opening.await
                            {
                                let _ = extra_send.write_all(&bytes).await;
                                extra_streams.push((extra_send, extra_recv));
                            }
                            continue;
                        }
                        Some(Outgoing::Close | Outgoing::CloseWithCode(_)) | None => {
                            // The close handshake: FIN on the control stream; the gateway then
                            // closes the session. (Leaving is a Bye frame, sent before this.)
                            let _ = send.finish().await;
                            let _ = tokio::time::timeout(Duration::from_secs(1), connection.closed()).await;
                            connection.close(VarInt::from_u32(0), b"client closed");
                            let _ = in_tx.send(Incoming::Closed { code: Some(0), reason: "closed by the client".into() });
                            return;
                        }
                    };
                    if let Err(error) = send.write_all(&bytes).await {
                        let _ = in_tx.send(Incoming::Closed { code: None, reason: error.to_string() });
                        return;
                    }
                }
                read = recv.read(&mut buf) => {
                    let n = match read {
                        Ok(Some(n)) => n,
                        Ok(None) | Err(_) => {
                            let error = connection.closed().await;
                            let (code, reason) = match &error {
                                ConnectionError::ApplicationClosed(close) => (
                                    u16::try_from(close.code().into_inner()).ok(),
                                    String::from_utf8_lossy(close.reason()).into_owned(),
                                ),
                                other => (None, other.to_string()),
                            };
                            let _ = in_tx.send(Incoming::Closed { code, reason });
                            return;
                        }
                    };
                    decoder.extend(&buf[..n]);
                    loop {
                        let incoming = match decoder.next_frame() {
                            Ok(Some(body)) => match ServerFrame::decode(body) {
                                Ok(frame) => Incoming::Frame(frame),
                                Err(e) => Incoming::Undecodable(e.to_string()),
                            },
                            Ok(None) => break,
                            Err(problem) => Incoming::Undecodable(problem.to_string()),
                        };
                        if in_tx.send(incoming).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    Ok(Connection::new(Kind::WebTransport, out_tx, in_rx, task))
}
