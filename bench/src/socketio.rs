//! A minimal Socket.IO 4 client for the baseline (`bench/baselines/socketio/relay_server.js`):
//! engine.io protocol v4 and Socket.IO protocol v5 framing over a plain WebSocket, one
//! packet per text message, the default namespace only, no binary attachments.
//!
//! - connect: `ws://HOST:PORT/socket.io/?EIO=4&transport=websocket`; the server opens with
//!   `0{"sid":..,"pingInterval":..}`, the client asks for the namespace with `40` and the
//!   server grants it with `40{"sid":..}` (or refuses with `44{..}`).
//! - heartbeat: the server sends engine.io ping `2` every pingInterval and drops a client
//!   whose pong `3` does not come within pingTimeout; a background task answers every ping,
//!   whoever reads the client or not (as the signalgate client's task answers WebSocket Pings).
//! - events: `42["name",args..]`; with an ack id `42<id>["name",args..]`, answered by
//!   `43<id>[args..]`.

use std::net::{IpAddr, SocketAddr};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, lookup_host};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A Socket.IO packet from the server (engine.io pings are answered, never handed over).
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// engine.io open `0{..}`: the handshake's JSON.
    Open(String),
    /// Socket.IO connect `40{..}`: the namespace is ours.
    Connected,
    /// `42[<id>]["name",args..]`.
    Event { name: String, args: Vec<Value> },
    /// `43<id>[args..]`: the answer to our event `id`.
    Ack { id: u64, args: Vec<Value> },
    /// Anything else: its first characters (for a tally).
    Other(String),
}

impl Packet {
    /// A short name of the packet's kind, for a tally.
    pub fn kind(&self) -> String {
        match self {
            Packet::Open(_) => "open".into(),
            Packet::Connected => "connected".into(),
            Packet::Event { name, .. } => format!("event:{name}"),
            Packet::Ack { .. } => "ack".into(),
            Packet::Other(start) => format!("other:{start}"),
        }
    }
}

/// What one text message from the server is.
#[derive(Debug, PartialEq)]
enum Parsed {
    /// engine.io ping: to be answered with a pong.
    Ping,
    Packet(Packet),
    /// The end of the session (engine.io close, Socket.IO disconnect or connect error).
    End(String),
}

fn parse(text: &str) -> Parsed {
    let other = || Parsed::Packet(Packet::Other(text.chars().take(8).collect()));
    match text.as_bytes().first() {
        Some(b'2') if text.len() == 1 => return Parsed::Ping,
        Some(b'0') => return Parsed::Packet(Packet::Open(text[1..].to_string())),
        Some(b'1') => return Parsed::End("engine.io close packet from the server".into()),
        Some(b'4') => {}
        _ => return other(),
    }
    // A Socket.IO packet: type, then for events and acks an optional id, then JSON.
    let body = &text[1..];
    let (kind, rest) = match body.chars().next() {
        Some(kind) => (kind, &body[kind.len_utf8()..]),
        None => return other(),
    };
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (id, json) = (rest[..digits].parse::<u64>().ok(), &rest[digits..]);
    match kind {
        '0' => Parsed::Packet(Packet::Connected),
        '1' => Parsed::End("Socket.IO disconnect packet from the server".into()),
        '4' => Parsed::End(format!("Socket.IO connect refused: {json}")),
        '2' | '3' => {
            let Ok(mut args) = serde_json::from_str::<Vec<Value>>(json) else {
                return other();
            };
            match (kind, id) {
                ('3', Some(id)) => Parsed::Packet(Packet::Ack { id, args }),
                ('2', _) if args.first().is_some_and(Value::is_string) => {
                    let name = match args.remove(0) {
                        Value::String(name) => name,
                        _ => return other(),
                    };
                    Parsed::Packet(Packet::Event { name, args })
                }
                _ => other(),
            }
        }
        _ => other(),
    }
}

/// `ws://HOST:PORT[/path]` → the engine.io WebSocket URL (path `/socket.io/` unless given;
/// the query `EIO=4&transport=websocket` unless there is one).
fn engine_url(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| {
        format!("{url}: the Socket.IO baseline takes ws://HOST:PORT[/socket.io/]")
    })?;
    if url.contains('?') {
        return Ok(url.to_string());
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = if path.is_empty() { "socket.io/" } else { path };
    Ok(format!("ws://{authority}/{path}?EIO=4&transport=websocket"))
}

/// One Socket.IO session on the default namespace.
pub struct Client {
    outgoing: mpsc::UnboundedSender<String>,
    incoming: mpsc::UnboundedReceiver<Result<Packet, String>>,
    /// Why the session ended, once it did.
    closed: Option<String>,
    next_ack: u64,
    task: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// WebSocket to the server (from `bind` if given), then the engine.io and Socket.IO
    /// handshakes.
    pub async fn connect(url: &str, bind: Option<IpAddr>) -> Result<Client, String> {
        let url = engine_url(url)?;
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("{url}: {what}: {e}");
        let request = url
            .as_str()
            .into_client_request()
            .map_err(|e| fail("invalid URL", &e))?;
        let uri = request.uri().clone();
        let host = uri.host().ok_or_else(|| fail("no host", &"missing"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addr: SocketAddr = lookup_host((host, uri.port_u16().unwrap_or(80)))
            .await
            .map_err(|e| fail("lookup", &e))?
            .next()
            .ok_or_else(|| fail("lookup", &"no address"))?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| fail("socket", &e))?;
        if let Some(ip) = bind {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| fail("bind", &e))?;
        }
        let stream = socket
            .connect(addr)
            .await
            .map_err(|e| fail("TCP connect", &e))?;
        let _ = stream.set_nodelay(true);
        let (ws, _response) = client_async(request, stream)
            .await
            .map_err(|e| fail("WebSocket handshake", &e))?;

        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let end = loop {
                tokio::select! {
                    out = out_rx.recv() => match out {
                        Some(text) => {
                            if let Err(e) = sink.send(Message::text(text)).await {
                                break format!("send: {e}");
                            }
                        }
                        None => {
                            let _ = sink.send(Message::Close(None)).await;
                            return;
                        }
                    },
                    message = stream.next() => match message {
                        Some(Ok(Message::Text(text))) => match parse(&text) {
                            Parsed::Ping => {
                                if let Err(e) = sink.send(Message::text("3")).await {
                                    break format!("pong: {e}");
                                }
                            }
                            Parsed::Packet(packet) => {
                                let _ = in_tx.send(Ok(packet));
                            }
                            Parsed::End(why) => break why,
                        },
                        Some(Ok(Message::Close(frame))) => {
                            break match frame {
                                Some(f) => format!("closed by the server: code {}: {}", f.code, f.reason),
                                None => "closed by the server".into(),
                            };
                        }
                        Some(Ok(Message::Binary(_))) => {
                            let _ = in_tx.send(Ok(Packet::Other("binary".into())));
                        }
                        Some(Ok(_)) => {} // WebSocket Ping/Pong: tungstenite answers.
                        Some(Err(e)) => break e.to_string(),
                        None => break "connection ended".into(),
                    },
                }
            };
            let _ = in_tx.send(Err(end));
        });
        let mut client = Client {
            outgoing: out_tx,
            incoming: in_rx,
            closed: None,
            next_ack: 0,
            task,
        };
        match client.recv().await? {
            Packet::Open(_) => {}
            other => {
                return Err(format!(
                    "{url}: expected the engine.io open packet, got {other:?}"
                ));
            }
        }
        client.send("40".into())?;
        loop {
            if client.recv().await? == Packet::Connected {
                return Ok(client);
            }
        }
    }

    fn send(&self, text: String) -> Result<(), String> {
        self.outgoing
            .send(text)
            .map_err(|_| "connection task ended".to_string())
    }

    /// `42["event",arg]`.
    pub fn emit(&self, event: &str, arg: &str) -> Result<(), String> {
        self.send(format!("42{}", json!([event, arg])))
    }

    /// `42<id>["event",arg]`, then waits for `43<id>[..]` (other packets are dropped).
    pub async fn call(&mut self, event: &str, arg: &str) -> Result<Vec<Value>, String> {
        let id = self.next_ack;
        self.next_ack += 1;
        self.send(format!("42{id}{}", json!([event, arg])))?;
        loop {
            if let Packet::Ack { id: got, args } = self.recv().await?
                && got == id
            {
                return Ok(args);
            }
        }
    }

    /// The next packet; once the session ended, why, forever.
    pub async fn recv(&mut self) -> Result<Packet, String> {
        if let Some(why) = &self.closed {
            return Err(why.clone());
        }
        let received = self
            .incoming
            .recv()
            .await
            .unwrap_or_else(|| Err("connection task ended".into()));
        if let Err(why) = &received {
            self.closed = Some(why.clone());
        }
        received
    }
}

/// Connects and joins `rooms` (each acked), with the retries of [`crate::with_retries`].
pub async fn open(url: &str, bind: Option<IpAddr>, rooms: &[String]) -> Result<Client, String> {
    crate::with_retries(|| async move {
        let mut client = Client::connect(url, bind).await?;
        for room in rooms {
            client.call("join", room).await?;
        }
        Ok(client)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_io_and_socket_io_packets_parse() {
        assert_eq!(parse("2"), Parsed::Ping);
        assert!(
            matches!(parse(r#"0{"sid":"a"}"#), Parsed::Packet(Packet::Open(s)) if s == r#"{"sid":"a"}"#)
        );
        assert_eq!(parse(r#"40{"sid":"b"}"#), Parsed::Packet(Packet::Connected));
        assert_eq!(
            parse(r#"42["signal","abc"]"#),
            Parsed::Packet(Packet::Event {
                name: "signal".into(),
                args: vec![json!("abc")]
            })
        );
        assert_eq!(
            parse("4317[]"),
            Parsed::Packet(Packet::Ack {
                id: 17,
                args: vec![]
            })
        );
        assert!(matches!(parse("1"), Parsed::End(_)));
        assert!(matches!(parse("41"), Parsed::End(_)));
        assert!(matches!(parse(r#"44{"message":"no"}"#), Parsed::End(m) if m.contains("no")));
        // Nothing the server sends makes the parser panic.
        for text in [
            "",
            "4",
            "42",
            "42[",
            "42[1]",
            "43[]",
            "4é",
            "6",
            "3probe",
            "42x[\"a\"]",
        ] {
            assert!(!matches!(parse(text), Parsed::Ping), "{text:?}");
        }
    }

    #[test]
    fn engine_urls() {
        let q = "?EIO=4&transport=websocket";
        assert_eq!(
            engine_url("ws://h:1").unwrap(),
            format!("ws://h:1/socket.io/{q}")
        );
        assert_eq!(
            engine_url("ws://h:1/").unwrap(),
            format!("ws://h:1/socket.io/{q}")
        );
        assert_eq!(
            engine_url("ws://h:1/socket.io/").unwrap(),
            format!("ws://h:1/socket.io/{q}")
        );
        assert_eq!(
            engine_url("ws://h:1/x/?EIO=4").unwrap(),
            "ws://h:1/x/?EIO=4"
        );
        assert!(engine_url("wss://h:1/").is_err());
    }
}
