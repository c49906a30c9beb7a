//! The task that owns the [`Hub`]: feeds it inputs from every connection, arms its timer, and
//! carries out its outputs (frames and checkpoints into connection outboxes, closes, metrics).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::cluster::ClusterDriver;
use crate::core::Transport;
use crate::core::codec::FrameProblem;
use crate::core::hub::{ConnId, DisconnectTarget, Hub, Output, RoomView, SessionView};
use crate::core::identity::Credentials;
use crate::core::reason_label;
use crate::metrics;
use crate::proto::{ClientFrame, Hello, Reason};
use crate::transport::Outbound;

#[derive(Debug)]
pub enum HubInput {
    Opened {
        conn: ConnId,
        transport: Transport,
        outbox: mpsc::Sender<Outbound>,
        /// Sending on it aborts the connection at once; dropping it lets the connection
        /// finish writing what is queued (the close included).
        kill: oneshot::Sender<()>,
    },
    Frame {
        conn: ConnId,
        frame: Box<ClientFrame>,
    },
    /// A Hello whose token the connection's task verified.
    Hello {
        conn: ConnId,
        id: u64,
        hello: Box<Hello>,
        credentials: Box<Credentials>,
    },
    /// A Refresh whose token the connection's task verified.
    Refresh {
        conn: ConnId,
        id: u64,
        credentials: Box<Credentials>,
    },
    Rejected {
        conn: ConnId,
        problem: FrameProblem,
    },
    /// The connection's writer got past checkpoint `mark`.
    Drained {
        conn: ConnId,
        mark: u64,
    },
    Lost {
        conn: ConnId,
        reason: Reason,
        silent_for: Duration,
    },
    /// From the backend API.
    Admin(AdminRequest),
    Shutdown,
    /// Cluster mode: an envelope from another gateway.
    Cluster(Box<crate::proto::cluster::Envelope>),
    /// Cluster mode: the NATS connection went up or down.
    ClusterConnected(bool),
    /// Cluster mode: hand every session to the other gateways (answers how many moved).
    Drain(oneshot::Sender<usize>),
    /// Cluster mode: how many messages other gateways have not acknowledged yet.
    ClusterUnacked(oneshot::Sender<usize>),
    /// Cluster mode: tell the others this gateway leaves (the end of a drain).
    ClusterLeave,
    /// Durable mode: what the session logs' store did.
    Durable(Box<super::durable::DurableEvent>),
}

/// What the backend API asks of the hub; each carries where the answer goes.
#[derive(Debug)]
pub enum AdminRequest {
    Sessions(oneshot::Sender<Vec<SessionView>>),
    Rooms(oneshot::Sender<Vec<RoomView>>),
    /// Ends the targeted sessions (the client sees `message`); answers how many ended.
    Disconnect {
        target: DisconnectTarget,
        message: String,
        reply: oneshot::Sender<usize>,
    },
}

const WRITER_ENDED: &str = "connection writer ended: the connection is lost";

/// Hub inputs waiting to be processed. Connections wait when it is full.
pub const HUB_QUEUE: usize = 4096;

/// Inputs taken per round before the outputs are carried out: the hub coalesces per round
/// (one Ack per session), and the outboxes are fed in larger, cheaper batches.
const BATCH: usize = 64;

struct LinkHandle {
    outbox: mpsc::Sender<Outbound>,
    kill: oneshot::Sender<()>,
}

pub async fn run(
    mut hub: Hub,
    mut inputs: mpsc::Receiver<HubInput>,
    mut cluster: Option<ClusterDriver>,
) {
    let mut links: HashMap<ConnId, LinkHandle> = HashMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let wake = match (
            hub.poll_timeout(),
            cluster.as_ref().and_then(|c| c.poll_timeout()),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            received = inputs.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    break; // Every sender is gone.
                }
            }
            () = sleep_until(wake) => {}
        }
        let now = Instant::now();
        for input in batch.drain(..) {
            match input {
                HubInput::Cluster(envelope) => {
                    if let Some(cluster) = cluster.as_mut() {
                        cluster.received(now, *envelope);
                    }
                }
                HubInput::ClusterConnected(up) => {
                    if let Some(cluster) = cluster.as_mut() {
                        cluster.connection_changed(now, &mut hub, up);
                    }
                }
                HubInput::Drain(reply) => {
                    let moved = match cluster.as_mut() {
                        Some(cluster) => cluster.drain(now, &mut hub),
                        None => 0,
                    };
                    let _ = reply.send(moved);
                }
                HubInput::ClusterLeave => {
                    if let Some(cluster) = cluster.as_mut() {
                        cluster.leave(now);
                    }
                }
                HubInput::ClusterUnacked(reply) => {
                    let _ = reply.send(cluster.as_ref().map_or(0, ClusterDriver::unacked));
                }
                HubInput::Durable(event) => {
                    if let Some(cluster) = cluster.as_mut() {
                        cluster.durable_event(now, &mut hub, *event);
                    }
                }
                input => apply(&mut hub, &mut links, now, input),
            }
        }
        hub.handle_timeout(now);
        if let Some(cluster) = cluster.as_mut() {
            cluster.handle_timeout(now);
        }
        // The hub and the cluster feed each other until both are quiet.
        loop {
            dispatch(&mut hub, &mut links, cluster.as_mut(), now);
            let more = cluster.as_mut().is_some_and(|c| c.step(now, &mut hub));
            if !more {
                break;
            }
        }
        if let Some(cluster) = cluster.as_mut() {
            cluster.flush(now);
        }
        metrics::set_gauges(hub.gauges());
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn apply(hub: &mut Hub, links: &mut HashMap<ConnId, LinkHandle>, now: Instant, input: HubInput) {
    match input {
        HubInput::Opened {
            conn,
            transport,
            outbox,
            kill,
        } => {
            links.insert(conn, LinkHandle { outbox, kill });
            hub.connection_opened(now, conn, transport);
        }
        HubInput::Frame { conn, frame } => hub.frame_received(now, conn, *frame),
        HubInput::Hello {
            conn,
            id,
            hello,
            credentials,
        } => hub.hello_received(now, conn, id, *hello, *credentials),
        HubInput::Refresh {
            conn,
            id,
            credentials,
        } => hub.refresh_received(now, conn, id, *credentials),
        HubInput::Rejected { conn, problem } => hub.frame_rejected(now, conn, problem),
        HubInput::Drained { conn, mark } => hub.connection_drained(now, conn, mark),
        HubInput::Lost {
            conn,
            reason,
            silent_for,
        } => {
            links.remove(&conn);
            hub.connection_lost(now, conn, reason, silent_for);
        }
        HubInput::Admin(request) => match request {
            AdminRequest::Sessions(reply) => {
                let _ = reply.send(hub.sessions());
            }
            AdminRequest::Rooms(reply) => {
                let _ = reply.send(hub.rooms());
            }
            AdminRequest::Disconnect {
                target,
                message,
                reply,
            } => {
                let _ = reply.send(hub.disconnect(now, &target, &message));
            }
        },
        HubInput::Shutdown => hub.shutdown(now),
        HubInput::Cluster(_)
        | HubInput::ClusterConnected(_)
        | HubInput::Drain(_)
        | HubInput::ClusterUnacked(_)
        | HubInput::ClusterLeave
        | HubInput::Durable(_) => {}
    }
}

/// Carries out the hub's outputs. A connection whose outbox is full or closed is dealt with
/// once (logged once, with the number of frames it could not take), not once per frame.
fn dispatch(
    hub: &mut Hub,
    links: &mut HashMap<ConnId, LinkHandle>,
    mut cluster: Option<&mut ClusterDriver>,
    now: Instant,
) {
    let mut undeliverable: HashMap<ConnId, (&'static str, usize)> = HashMap::new();
    while let Some(output) = hub.poll_output() {
        if let Some(cluster) = cluster.as_deref_mut()
            && cluster.hub_output(now, &output)
        {
            continue;
        }
        match output {
            Output::Send { conn, frame } => {
                forward(
                    hub,
                    links,
                    &mut undeliverable,
                    now,
                    conn,
                    Outbound::Frame(frame),
                );
            }
            Output::Checkpoint { conn, mark } => {
                forward(
                    hub,
                    links,
                    &mut undeliverable,
                    now,
                    conn,
                    Outbound::Checkpoint(mark),
                );
            }
            Output::Close { conn, reason } => {
                let Some(link) = links.remove(&conn) else {
                    continue;
                };
                tracing::debug!(%conn, reason = reason_label(reason), "closing");
                if link.outbox.try_send(Outbound::Close(reason)).is_err() {
                    let _ = link.kill.send(());
                }
            }
            Output::Event(event) => metrics::record(&event),
            Output::ToNode { .. }
            | Output::ToCluster { .. }
            | Output::Persist { .. }
            | Output::ReadLog { .. } => {
                tracing::debug!("a cluster output outside cluster mode was dropped");
            }
        }
    }
    for (conn, (what, frames)) in undeliverable {
        if what == WRITER_ENDED {
            // A client that vanishes mid-write is ordinary (a mass disconnect logs thousands).
            tracing::debug!(%conn, frames, "{what}");
        } else {
            tracing::warn!(%conn, frames, "{what}");
        }
    }
}

fn forward(
    hub: &mut Hub,
    links: &mut HashMap<ConnId, LinkHandle>,
    undeliverable: &mut HashMap<ConnId, (&'static str, usize)>,
    now: Instant,
    conn: ConnId,
    out: Outbound,
) {
    if let Some((_, frames)) = undeliverable.get_mut(&conn) {
        *frames += 1;
        return;
    }
    let Some(link) = links.get(&conn) else {
        return;
    };
    match link.outbox.try_send(out) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            undeliverable.insert(conn, ("outbound queue full: closing the slow consumer", 1));
            hub.outbound_overflow(now, conn);
        }
        Err(TrySendError::Closed(_)) => {
            // The writer is gone while the hub thought the connection open: it is lost (the
            // session keeps every frame for a resume; nothing is counted as delivered).
            undeliverable.insert(conn, (WRITER_ENDED, 1));
            if let Some(link) = links.remove(&conn) {
                let _ = link.kill.send(());
            }
            hub.connection_lost(now, conn, Reason::ConnectionLost, Duration::ZERO);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::hub::HubConfig;
    use crate::proto::{Join, PresenceState, Signal, client_frame, server_frame, signal};

    fn frame(id: u64, msg: client_frame::Msg) -> Box<ClientFrame> {
        Box::new(ClientFrame {
            id,
            seq: 0,
            msg: Some(msg),
        })
    }

    /// A connection whose writer died while its reader lives: the session must become
    /// UNREACHABLE (and keep what is sent to it for a resume), not stay ONLINE while the
    /// frames meant for it vanish.
    #[test]
    fn a_connection_whose_writer_died_is_lost_and_its_peers_are_told() {
        let mut hub = Hub::new(HubConfig::default());
        let mut links = HashMap::new();
        let now = Instant::now();
        let mut outboxes = Vec::new();
        for conn in [ConnId(1), ConnId(2)] {
            let (outbox, rx) = mpsc::channel(64);
            let (kill, _killed) = oneshot::channel();
            let transport = Transport::WebSocket;
            let opened = HubInput::Opened {
                conn,
                transport,
                outbox,
                kill,
            };
            apply(&mut hub, &mut links, now, opened);
            let hello = client_frame::Msg::Hello(Hello::default());
            apply(
                &mut hub,
                &mut links,
                now,
                HubInput::Frame {
                    conn,
                    frame: frame(1, hello),
                },
            );
            let join = client_frame::Msg::Join(Join { room: "r".into() });
            apply(
                &mut hub,
                &mut links,
                now,
                HubInput::Frame {
                    conn,
                    frame: frame(2, join),
                },
            );
            dispatch(&mut hub, &mut links, None, now);
            outboxes.push(rx);
        }
        let mut b_outbox = outboxes.pop().expect("b");
        let a_outbox = outboxes.pop().expect("a");
        let peer_of = |rx: &mut mpsc::Receiver<Outbound>| loop {
            match rx.try_recv() {
                Ok(Outbound::Frame(f)) => {
                    if let Some(server_frame::Msg::Welcome(w)) = &f.msg {
                        return w.peer_id.clone();
                    }
                }
                other => panic!("no Welcome: {other:?}"),
            }
        };
        let mut a_outbox = a_outbox;
        let a_peer = peer_of(&mut a_outbox);
        drop(a_outbox); // a's writer is gone
        while b_outbox.try_recv().is_ok() {}
        let signal = client_frame::Msg::Signal(Signal {
            room: "r".into(),
            to: a_peer.clone(),
            from: String::new(),
            payload: Some(signal::Payload::Data(bytes::Bytes::from_static(b"x"))),
        });
        let input = HubInput::Frame {
            conn: ConnId(2),
            frame: frame(3, signal),
        };
        apply(&mut hub, &mut links, now, input);
        dispatch(&mut hub, &mut links, None, now);
        assert_eq!(hub.gauges().unreachable(Transport::WebSocket), 1);
        let mut told = false;
        while let Ok(out) = b_outbox.try_recv() {
            if let Outbound::Frame(f) = out
                && let Some(server_frame::Msg::PeerState(s)) = &f.msg
            {
                assert_eq!(s.peer_id, a_peer);
                assert_eq!(s.state(), PresenceState::Unreachable);
                assert_eq!(s.reason(), Reason::ConnectionLost);
                told = true;
            }
        }
        assert!(told, "b was not told that a is unreachable");
    }
}
