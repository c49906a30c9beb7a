//! The client's WebSocket transport.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::net::{TcpSocket, lookup_host};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{Connector, client_async_tls_with_config};

use super::{ClientError, ConnectOptions, Connection, Incoming, Kind, Outgoing, tls};
use crate::proto::ServerFrame;
use crate::transport::websocket::config as ws_config;

pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Connection, ClientError> {
    let connect_err =
        |what: &str, e: &dyn std::fmt::Display| ClientError::Connect(format!("{url}: {what}: {e}"));
    let mut request = url
        .into_client_request()
        .map_err(|e| connect_err("invalid URL", &e))?;
    if let Some(origin) = &options.origin {
        let value = HeaderValue::from_str(origin).map_err(|e| connect_err("invalid origin", &e))?;
        request.headers_mut().insert("origin", value);
    }
    let uri = request.uri().clone();
    let tls = uri.scheme_str() == Some("wss");
    let host = uri
        .host()
        .ok_or_else(|| connect_err("no host", &"missing"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addr: SocketAddr = lookup_host((host, port))
        .await
        .map_err(|e| connect_err("lookup", &e))?
        .next()
        .ok_or_else(|| connect_err("lookup", &"no address"))?;

    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| connect_err("socket", &e))?;
    if let Some(ip) = options.bind {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| connect_err("bind", &e))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| connect_err("TCP connect", &e))?;
    let _ = stream.set_nodelay(true);
    let connector = if tls {
        let config = tls::client_config(&options.trust, b"http/1.1", false)?;
        Connector::Rustls(Arc::new(config))
    } else {
        Connector::Plain
    };
    let (ws, _response) = client_async_tls_with_config(
        request,
        stream,
        Some(ws_config(options.max_frame_bytes)),
        Some(connector),
    )
    .await
    .map_err(|e| connect_err("WebSocket handshake", &e))?;

    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Outgoing>();
    let (in_tx, in_rx) = mpsc::unbounded_channel::<Incoming>();
    let task = tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        loop {
            tokio::select! {
                out = out_rx.recv() => {
                    let message = match out {
                        Some(Outgoing::Frame(frame)) => Message::Binary(frame.encode_to_vec().into()),
                        Some(Outgoing::Raw(bytes)) => Message::Binary(bytes),
                        Some(Outgoing::Text(text)) => Message::Text(text.into()),
                        Some(Outgoing::ExtraStream(_)) => continue, // No streams on WebSocket.
                        Some(Outgoing::Abort) => {
                            let _ = in_tx.send(Incoming::Closed { code: None, reason: "aborted by the client".into() });
                            return; // Drops the socket: FIN without a WebSocket Close frame.
                        }
                        close @ (Some(Outgoing::Close | Outgoing::CloseWithCode(_)) | None) => {
                            let frame = match close {
                                Some(Outgoing::CloseWithCode(code)) => Some(CloseFrame { code: CloseCode::from(code), reason: "".into() }),
                                _ => None,
                            };
                            let _ = sink.send(Message::Close(frame)).await;
                            // Wait for the gateway's close reply (or give up after a while).
                            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                                while let Some(Ok(m)) = stream.next().await {
                                    if m.is_close() { break; }
                                }
                            }).await;
                            let _ = in_tx.send(Incoming::Closed { code: None, reason: "closed by the client".into() });
                            return;
                        }
                    };
                    if let Err(error) = sink.send(message).await {
                        let _ = in_tx.send(Incoming::Closed { code: None, reason: error.to_string() });
                        return;
                    }
                }
                message = stream.next() => {
                    let incoming = match message {
                        Some(Ok(Message::Binary(bytes))) => match ServerFrame::decode(bytes) {
                            Ok(frame) => Incoming::Frame(frame),
                            Err(e) => Incoming::Undecodable(e.to_string()),
                        },
                        Some(Ok(Message::Close(frame))) => Incoming::Closed {
                            code: frame.as_ref().map(|f| u16::from(f.code)),
                            reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                        },
                        Some(Ok(Message::Text(text))) => Incoming::Undecodable(format!("text message {text:?}")),
                        // Pings are answered by tungstenite itself.
                        Some(Ok(_)) => continue,
                        Some(Err(error)) => Incoming::Closed { code: None, reason: error.to_string() },
                        None => Incoming::Closed { code: None, reason: "end of stream".into() },
                    };
                    let closed = matches!(incoming, Incoming::Closed { .. });
                    if in_tx.send(incoming).is_err() || closed {
                        return;
                    }
                }
            }
        }
    });
    Ok(Connection::new(Kind::WebSocket, out_tx, in_rx, task))
}
