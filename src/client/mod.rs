//! A typed Rust client of the signalgate protocol, over WebSocket or WebTransport.
//!
//! Two layers: [`Connection`] moves frames (and, for tests, deliberately bad bytes) over one
//! transport connection; [`Session`] speaks the protocol on top of it (Hello/Welcome,
//! request/reply correlation, seq tracking both ways, resume with resending, Bye). The tests
//! and the benchmarks use it.

mod tls;
mod websocket;
mod webtransport;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::proto::{
    self, Ack, Bye, ClientFrame, Hello, Join, Joined, Leave, Ping, ServerFrame, Suspend, Welcome,
    client_frame, server_frame, signal,
};

/// How the client decides to trust the gateway's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Accept exactly the certificate with this SHA-256 (what browsers do with
    /// `serverCertificateHashes`; the gateway prints it and serves it at /cert-hash).
    CertificateSha256([u8; 32]),
    /// The usual web PKI (certificates from a public CA).
    WebPki,
}

impl Trust {
    /// From the 64 hex characters the gateway prints.
    pub fn sha256_hex(hex: &str) -> Result<Trust, ClientError> {
        let bad = || ClientError::Connect(format!("{hex:?} is not 64 hex characters"));
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(Trust::CertificateSha256(out))
    }
}

#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub trust: Trust,
    /// Sent as the Origin header (as a browser page would).
    pub origin: Option<String>,
    /// Local address to connect from (benchmarks spread connections over 127.0.0.x).
    pub bind: Option<IpAddr>,
    /// Largest frame accepted from the gateway.
    pub max_frame_bytes: usize,
}

impl ConnectOptions {
    pub fn new(trust: Trust) -> Self {
        Self {
            trust,
            origin: None,
            bind: None,
            max_frame_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the gateway refused: {code:?}: {message}", code = .0.code(), message = .0.message)]
    Refused(proto::Error),
    #[error("the connection closed{}", describe_close(*.code, .reason))]
    Closed { code: Option<u16>, reason: String },
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("unexpected frame: {0}")]
    Unexpected(String),
}

fn describe_close(code: Option<u16>, reason: &str) -> String {
    match code {
        Some(code) => format!(" (code {code}, {reason:?})"),
        None if reason.is_empty() => String::new(),
        None => format!(" ({reason})"),
    }
}

/// What the client sends.
#[derive(Debug)]
pub enum Outgoing {
    Frame(ClientFrame),
    /// Bytes as they are: a binary WebSocket message, or bytes on the WebTransport stream.
    /// For testing the gateway's handling of bad input.
    Raw(Bytes),
    /// A WebSocket text message (WebSocket only; for testing).
    Text(String),
    /// Opens another bidirectional stream and writes these bytes on it (WebTransport only;
    /// for testing: the contract allows one stream).
    ExtraStream(Bytes),
    /// Close handshake: WebSocket Close frame; WebTransport FIN on the control stream, then
    /// the gateway closes the session. A close is not a leave: the gateway tells peers the
    /// client is UNREACHABLE (it may resume); only a Bye frame leaves.
    Close,
    /// The close handshake with this WebSocket close code (1001 is what Chromium sends when
    /// it freezes or caches a page); on WebTransport the same as [`Outgoing::Close`].
    CloseWithCode(u16),
    /// Drop the connection without a close handshake (TCP closed without a Close frame; a
    /// WebTransport session closed without FIN, as Chromium does when a page is frozen or a
    /// tab closes). The gateway tells peers the client is UNREACHABLE; it may resume.
    Abort,
}

/// What the client receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Frame(ServerFrame),
    /// Bytes from the gateway that are not a ServerFrame (never expected).
    Undecodable(String),
    Closed {
        code: Option<u16>,
        reason: String,
    },
}

/// One transport connection to the gateway. A background task keeps reading, so the
/// client's network stack answers the gateway's probes even when nobody calls `recv`.
#[derive(Debug)]
pub struct Connection {
    kind: Kind,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    task: JoinHandle<()>,
    closed: Option<Incoming>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    WebSocket,
    WebTransport,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Connection {
    /// `ws://` or `wss://` URL, e.g. `wss://127.0.0.1:4433/ws`.
    pub async fn websocket(url: &str, options: &ConnectOptions) -> Result<Connection, ClientError> {
        websocket::connect(url, options).await
    }

    /// `https://` URL, e.g. `https://127.0.0.1:4433/wt`.
    pub async fn webtransport(
        url: &str,
        options: &ConnectOptions,
    ) -> Result<Connection, ClientError> {
        webtransport::connect(url, options).await
    }

    fn new(
        kind: Kind,
        outgoing: mpsc::UnboundedSender<Outgoing>,
        incoming: mpsc::UnboundedReceiver<Incoming>,
        task: JoinHandle<()>,
    ) -> Connection {
        Connection {
            kind,
            outgoing,
            incoming,
            task,
            closed: None,
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn send(&self, out: Outgoing) -> Result<(), ClientError> {
        self.outgoing.send(out).map_err(|_| ClientError::Closed {
            code: None,
            reason: "connection task ended".into(),
        })
    }

    pub fn send_frame(&self, frame: ClientFrame) -> Result<(), ClientError> {
        self.send(Outgoing::Frame(frame))
    }

    /// The next thing received; after the connection closed, its `Closed` forever.
    pub async fn recv(&mut self) -> Incoming {
        if let Some(closed) = &self.closed {
            return closed.clone();
        }
        let incoming = self.incoming.recv().await.unwrap_or(Incoming::Closed {
            code: None,
            reason: "connection task ended".into(),
        });
        if matches!(incoming, Incoming::Closed { .. }) {
            self.closed = Some(incoming.clone());
        }
        incoming
    }

    pub async fn recv_within(&mut self, timeout: Duration) -> Result<Incoming, ClientError> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| ClientError::Timeout("a frame".into()))
    }

    /// The next ServerFrame, or an error if the connection closed or sent garbage.
    pub async fn recv_frame(&mut self, timeout: Duration) -> Result<ServerFrame, ClientError> {
        match self.recv_within(timeout).await? {
            Incoming::Frame(frame) => Ok(frame),
            Incoming::Undecodable(what) => Err(ClientError::Unexpected(what)),
            Incoming::Closed { code, reason } => Err(ClientError::Closed { code, reason }),
        }
    }

    /// Close handshake, then wait (briefly) for the task to finish.
    pub async fn close(mut self) {
        let _ = self.outgoing.send(Outgoing::Close);
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
    }
}

/// Where a session stands, enough to resume it on a new connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResumeState {
    pub resume_token: String,
    pub last_seq: u64,
    pub attempt: u64,
    /// Numbered frames the gateway has not acknowledged, oldest first: resent after the
    /// resume (those the Welcome says were processed are dropped).
    pub unacked: Vec<ClientFrame>,
    pub next_client_seq: u64,
    pub next_id: u64,
}

impl ResumeState {
    /// The highest numbered frame the gateway acknowledged: the unacknowledged ones follow it.
    pub fn acked_client_seq(&self) -> u64 {
        self.unacked
            .first()
            .map_or(self.next_client_seq, |f| f.seq)
            .saturating_sub(1)
    }
}

/// A signalgate session over a [`Connection`].
#[derive(Debug)]
pub struct Session {
    conn: Connection,
    welcome: Welcome,
    next_id: u64,
    last_seq: u64,
    attempt: u64,
    /// The seq of the next numbered frame (Join, Leave, Signal).
    next_client_seq: u64,
    /// Numbered frames sent and not yet acknowledged by the gateway.
    unacked: VecDeque<ClientFrame>,
    /// Frames received while waiting for a reply, delivered by `next_event` first.
    pending: VecDeque<ServerFrame>,
    timeout: Duration,
}

/// How long a Session waits for a reply by default.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl Session {
    /// Hello (new session) and Welcome.
    pub async fn start(conn: Connection) -> Result<Session, ClientError> {
        Self::start_with_token(conn, "").await
    }

    /// Hello with a token (a JWT, when the gateway requires one) and Welcome. With tokens, a
    /// Hello of an identity that has a session takes that session over (Welcome.resumed).
    pub async fn start_with_token(conn: Connection, token: &str) -> Result<Session, ClientError> {
        let mut session = Session::new(conn, 0, 1);
        let hello = Hello {
            token: token.into(),
            ..Hello::default()
        };
        session.hello(hello).await?;
        Ok(session)
    }

    /// Hello with the resume token; the Welcome says whether it resumed. Numbered frames the
    /// gateway had not processed are resent, in order, right after the Welcome.
    pub async fn resume(conn: Connection, state: &ResumeState) -> Result<Session, ClientError> {
        Self::resume_with_token(conn, state, "").await
    }

    /// [`Session::resume`] with a (fresh) token, when the gateway requires one.
    pub async fn resume_with_token(
        conn: Connection,
        state: &ResumeState,
        token: &str,
    ) -> Result<Session, ClientError> {
        let hello = Hello {
            token: token.into(),
            resume_token: state.resume_token.clone(),
            last_seq: state.last_seq,
            attempt: state.attempt + 1,
            acked_client_seq: state.acked_client_seq(),
            ..Hello::default()
        };
        let mut session = Session::new(conn, state.last_seq, state.next_id);
        session.attempt = hello.attempt;
        session.next_client_seq = state.next_client_seq;
        session.unacked = state.unacked.iter().cloned().collect();
        session.hello(hello).await?;
        if session.welcome.resumed {
            let processed = session.welcome.last_client_seq;
            session.unacked.retain(|f| f.seq > processed);
            for frame in &session.unacked {
                session.conn.send_frame(frame.clone())?;
            }
        } else {
            session.unacked.clear();
            session.next_client_seq = 1;
        }
        Ok(session)
    }

    fn new(conn: Connection, last_seq: u64, next_id: u64) -> Session {
        Session {
            conn,
            welcome: Welcome::default(),
            next_id,
            last_seq,
            attempt: 0,
            next_client_seq: 1,
            unacked: VecDeque::new(),
            pending: VecDeque::new(),
            timeout: REPLY_TIMEOUT,
        }
    }

    async fn hello(&mut self, mut hello: Hello) -> Result<(), ClientError> {
        if hello.client.is_empty() {
            hello.client = format!("signalgate-rust/{}", env!("CARGO_PKG_VERSION"));
        }
        let reply = self.request(client_frame::Msg::Hello(hello)).await?;
        match reply.msg {
            Some(server_frame::Msg::Welcome(welcome)) => self.welcome = welcome,
            other => {
                return Err(ClientError::Unexpected(format!(
                    "{other:?} instead of Welcome"
                )));
            }
        }
        Ok(())
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    pub fn peer_id(&self) -> &str {
        &self.welcome.peer_id
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn connection_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    pub fn into_connection(self) -> Connection {
        self.conn
    }

    /// Highest seq processed.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn resume_state(&self) -> ResumeState {
        ResumeState {
            resume_token: self.welcome.resume_token.clone(),
            last_seq: self.last_seq,
            attempt: self.attempt,
            unacked: self.unacked.iter().cloned().collect(),
            next_client_seq: self.next_client_seq,
            next_id: self.next_id,
        }
    }

    /// Numbered frames sent that the gateway has not acknowledged yet.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    pub fn set_reply_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a frame without waiting for anything; returns its id. Join, Leave and Signal
    /// are numbered and kept until the gateway acknowledges them.
    pub fn send(&mut self, msg: client_frame::Msg) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let numbered = matches!(
            msg,
            client_frame::Msg::Join(_) | client_frame::Msg::Leave(_) | client_frame::Msg::Signal(_)
        );
        let seq = if numbered {
            self.next_client_seq += 1;
            self.next_client_seq - 1
        } else {
            0
        };
        let frame = ClientFrame {
            id,
            seq,
            msg: Some(msg),
        };
        if numbered {
            self.unacked.push_back(frame.clone());
        }
        self.conn.send_frame(frame)?;
        Ok(id)
    }

    /// Sends a request and waits for the frame that answers it. Other frames are kept for
    /// [`Self::next_event`]. An Error reply becomes [`ClientError::Refused`].
    pub async fn request(&mut self, msg: client_frame::Msg) -> Result<ServerFrame, ClientError> {
        let id = self.send(msg)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let frame = self.receive(deadline).await?;
            if frame.in_reply_to == id {
                return match frame.msg {
                    Some(server_frame::Msg::Error(error)) => Err(ClientError::Refused(error)),
                    _ => Ok(frame),
                };
            }
            self.pending.push_back(frame);
        }
    }

    /// Receives one frame, dropping replayed duplicates, tracking seq both ways (the
    /// gateway's Acks are consumed here).
    async fn receive(&mut self, deadline: Instant) -> Result<ServerFrame, ClientError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.conn.recv_frame(left).await?;
            if let Some(server_frame::Msg::Ack(ack)) = &frame.msg {
                while self.unacked.front().is_some_and(|f| f.seq <= ack.seq) {
                    self.unacked.pop_front();
                }
                continue;
            }
            if frame.seq != 0 {
                if frame.seq <= self.last_seq {
                    continue; // Already processed before a resume.
                }
                self.last_seq = frame.seq;
            }
            return Ok(frame);
        }
    }

    pub async fn join(&mut self, room: &str) -> Result<Joined, ClientError> {
        let reply = self
            .request(client_frame::Msg::Join(Join { room: room.into() }))
            .await?;
        match reply.msg {
            Some(server_frame::Msg::Joined(joined)) => Ok(joined),
            other => Err(ClientError::Unexpected(format!(
                "{other:?} instead of Joined"
            ))),
        }
    }

    pub async fn leave(&mut self, room: &str) -> Result<(), ClientError> {
        self.request(client_frame::Msg::Leave(Leave { room: room.into() }))
            .await
            .map(|_| ())
    }

    /// Relays a signal to `to` (no reply unless refused; a refusal arrives as an Error frame
    /// with `in_reply_to` = the returned id).
    pub fn signal(
        &mut self,
        room: &str,
        to: &str,
        payload: signal::Payload,
    ) -> Result<u64, ClientError> {
        self.send(client_frame::Msg::Signal(proto::Signal {
            room: room.into(),
            to: to.into(),
            from: String::new(),
            payload: Some(payload),
        }))
    }

    /// App-level ping: checks that the gateway answers; returns the round trip.
    pub async fn ping(&mut self) -> Result<Duration, ClientError> {
        let started = Instant::now();
        self.request(client_frame::Msg::Ping(Ping {
            payload: Bytes::from_static(b"rust-client"),
        }))
        .await?;
        Ok(started.elapsed())
    }

    /// Acknowledges everything processed so far.
    pub fn ack(&mut self) -> Result<(), ClientError> {
        let seq = self.last_seq;
        self.send(client_frame::Msg::Ack(Ack { seq })).map(|_| ())
    }

    /// The next frame that is not a reply to a pending request.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<ServerFrame, ClientError> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(frame);
        }
        self.receive(Instant::now() + timeout).await
    }

    /// Skips frames until `pick` returns something, within `timeout`.
    pub async fn wait_for<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut pick: impl FnMut(&ServerFrame) -> Option<T>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = match self.next_event(left).await {
                Err(ClientError::Timeout(_)) => return Err(ClientError::Timeout(what.into())),
                other => other?,
            };
            if let Some(found) = pick(&frame) {
                return Ok(found);
            }
        }
    }

    /// Leaves for good: Bye, then the gateway closes the connection (waited for briefly).
    pub async fn close(mut self) {
        if self.send(client_frame::Msg::Bye(Bye {})).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while !matches!(self.conn.recv().await, Incoming::Closed { .. }) {}
            })
            .await;
        }
        self.conn.close().await;
    }

    /// A new token for the session's identity; answered by Refreshed (or refused).
    pub async fn refresh(&mut self, token: &str) -> Result<proto::Refreshed, ClientError> {
        let reply = self
            .request(client_frame::Msg::Refresh(proto::Refresh {
                token: token.into(),
            }))
            .await?;
        match reply.msg {
            Some(server_frame::Msg::Refreshed(r)) => Ok(r),
            other => Err(ClientError::Unexpected(format!(
                "{other:?} instead of Refreshed"
            ))),
        }
    }

    /// Says the client is about to be suspended: the gateway detaches the session (peers see
    /// it UNREACHABLE, reason SUSPENDED) and closes the connection; resume it later.
    pub fn suspend(&mut self) -> Result<(), ClientError> {
        self.send(client_frame::Msg::Suspend(Suspend {}))
            .map(|_| ())
    }
}
