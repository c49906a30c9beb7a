//! Every hub rule, driven with a fake clock and seeded randomness: no sockets, no sleeping.

mod auth;
mod cluster;
mod delivery;
mod durable;
mod hello;
mod limits;
mod presence;
mod relay;
mod resume;
mod rooms;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::core::ids::SeededEntropy;
use crate::proto::{
    self, Hello, Join, PeerLeft, PeerState, PresenceState, ServerFrame, Signal, Welcome,
    client_frame::Msg, server_frame, signal,
};

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

pub struct Fixture {
    pub hub: Hub,
    pub t0: Instant,
    pub next_conn: u64,
    next_id: u64,
    /// Connections whose writer does not confirm checkpoints (a reader that stalls).
    pub stalled: HashSet<ConnId>,
}

/// A welcomed client as the tests see it.
#[derive(Debug, Clone)]
pub struct Client {
    pub conn: ConnId,
    pub peer_id: String,
    pub token: String,
}

impl Client {
    /// The same session, on the connection it resumed on.
    pub fn on(&self, conn: ConnId) -> Client {
        Client {
            conn,
            ..self.clone()
        }
    }
}

impl Fixture {
    pub fn new() -> Self {
        Self::with(HubConfig::default())
    }

    pub fn with(config: HubConfig) -> Self {
        Self {
            hub: Hub::with_entropy(config, Box::new(SeededEntropy::new(1))),
            t0: Instant::now(),
            next_conn: 1,
            next_id: 100,
            stalled: HashSet::new(),
        }
    }

    pub fn at(&self, s: f64) -> Instant {
        self.t0 + secs(s)
    }

    /// Every output so far. Checkpoints are confirmed at once (the writer keeps up), except
    /// for stalled connections.
    pub fn drain(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(output) = self.hub.poll_output() {
            if let Output::Checkpoint { conn, mark } = output
                && !self.stalled.contains(&conn)
            {
                self.hub.connection_drained(self.t0, conn, mark);
            }
            out.push(output);
        }
        out
    }

    pub fn open(&mut self, now: Instant, transport: Transport) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.hub.connection_opened(now, conn, transport);
        conn
    }

    /// Sends an unnumbered frame; returns its id.
    pub fn send(&mut self, now: Instant, conn: ConnId, msg: Msg) -> u64 {
        self.send_numbered(now, conn, 0, msg)
    }

    pub fn send_numbered(&mut self, now: Instant, conn: ConnId, seq: u64, msg: Msg) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let frame = ClientFrame {
            id,
            seq,
            msg: Some(msg),
        };
        self.hub.frame_received(now, conn, frame);
        id
    }

    pub fn hello_on(&mut self, now: Instant, conn: ConnId, hello: Hello) -> Vec<Output> {
        self.send(now, conn, Msg::Hello(hello));
        self.drain()
    }

    pub fn client(&mut self, now: Instant) -> Client {
        self.client_over(now, Transport::WebSocket)
    }

    pub fn client_over(&mut self, now: Instant, transport: Transport) -> Client {
        let conn = self.open(now, transport);
        let out = self.hello_on(now, conn, Hello::default());
        let welcome = welcome_of(&out, conn);
        assert!(!welcome.resumed);
        Client {
            conn,
            peer_id: welcome.peer_id,
            token: welcome.resume_token,
        }
    }

    pub fn join(&mut self, now: Instant, c: &Client, room: &str) -> Vec<Output> {
        self.send(now, c.conn, Msg::Join(Join { room: room.into() }));
        self.drain()
    }

    /// Clients in one room, everyone's join news drained.
    pub fn room(&mut self, now: Instant, room: &str, n: usize) -> Vec<Client> {
        let clients: Vec<Client> = (0..n).map(|_| self.client(now)).collect();
        for c in &clients {
            self.join(now, c, room);
        }
        clients
    }

    pub fn pair(&mut self, now: Instant, room: &str) -> (Client, Client) {
        let mut clients = self.room(now, room, 2).into_iter();
        let a = clients.next().expect("two");
        let b = clients.next().expect("two");
        (a, b)
    }

    pub fn signal(
        &mut self,
        now: Instant,
        from: &Client,
        room: &str,
        to: &str,
        data: &'static [u8],
    ) -> u64 {
        self.send(now, from.conn, Msg::Signal(data_signal(room, to, data)))
    }

    pub fn resume(
        &mut self,
        now: Instant,
        c: &Client,
        last_seq: u64,
        attempt: u64,
        transport: Transport,
    ) -> (ConnId, Vec<Output>) {
        let conn = self.open(now, transport);
        let out = self.hello_on(
            now,
            conn,
            Hello {
                resume_token: c.token.clone(),
                last_seq,
                attempt,
                ..Default::default()
            },
        );
        (conn, out)
    }
}

pub fn data_signal(room: &str, to: &str, data: &'static [u8]) -> Signal {
    Signal {
        room: room.into(),
        to: to.into(),
        from: String::new(),
        payload: Some(signal::Payload::Data(Bytes::from_static(data))),
    }
}

pub fn frames_to(out: &[Output], conn: ConnId) -> Vec<ServerFrame> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { conn: c, frame } if *c == conn => Some(ServerFrame::clone(frame)),
            _ => None,
        })
        .collect()
}

pub fn msgs_to(out: &[Output], conn: ConnId) -> Vec<server_frame::Msg> {
    frames_to(out, conn)
        .into_iter()
        .filter_map(|f| f.msg)
        .collect()
}

pub fn welcome_of(out: &[Output], conn: ConnId) -> Welcome {
    match msgs_to(out, conn).into_iter().next() {
        Some(server_frame::Msg::Welcome(w)) => w,
        other => panic!("expected Welcome first, got {other:?} in {out:?}"),
    }
}

pub fn errors_to(out: &[Output], conn: ConnId) -> Vec<proto::Error> {
    msgs_to(out, conn)
        .into_iter()
        .filter_map(|m| match m {
            server_frame::Msg::Error(e) => Some(e),
            _ => None,
        })
        .collect()
}

pub fn error_code(out: &[Output], conn: ConnId) -> ErrorCode {
    let errors = errors_to(out, conn);
    assert_eq!(errors.len(), 1, "expected one error, got {out:?}");
    errors[0].code()
}

pub fn closes(out: &[Output]) -> Vec<(ConnId, Reason)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Close { conn, reason } => Some((*conn, *reason)),
            _ => None,
        })
        .collect()
}

pub fn peer_states(out: &[Output], conn: ConnId) -> Vec<PeerState> {
    msgs_to(out, conn)
        .into_iter()
        .filter_map(|m| match m {
            server_frame::Msg::PeerState(s) => Some(s),
            _ => None,
        })
        .collect()
}

pub fn peer_lefts(out: &[Output], conn: ConnId) -> Vec<PeerLeft> {
    msgs_to(out, conn)
        .into_iter()
        .filter_map(|m| match m {
            server_frame::Msg::PeerLeft(l) => Some(l),
            _ => None,
        })
        .collect()
}

/// (seq, from, data) of every data signal to `conn`.
pub fn data_signals(out: &[Output], conn: ConnId) -> Vec<(u64, String, Bytes)> {
    frames_to(out, conn)
        .into_iter()
        .filter_map(|f| match f.msg {
            Some(server_frame::Msg::Signal(Signal {
                from,
                payload: Some(signal::Payload::Data(d)),
                ..
            })) => Some((f.seq, from, d)),
            _ => None,
        })
        .collect()
}

/// The client-frame seqs acknowledged to `conn`, in order.
pub fn acks_to(out: &[Output], conn: ConnId) -> Vec<u64> {
    msgs_to(out, conn)
        .into_iter()
        .filter_map(|m| match m {
            server_frame::Msg::Ack(a) => Some(a.seq),
            _ => None,
        })
        .collect()
}

pub fn events(out: &[Output]) -> Vec<HubEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}
