//! The task that owns the [`Hub`]: feeds it inputs from every connection, arms its timer, and
//! carries out its outputs (frames into connection outboxes, closes, metrics).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use crate::core::Transport;
use crate::core::codec::FrameProblem;
use crate::core::hub::{ConnId, Hub, Output};
use crate::core::reason_label;
use crate::metrics;
use crate::proto::{ClientFrame, Reason};
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
        frame: ClientFrame,
    },
    Rejected {
        conn: ConnId,
        problem: FrameProblem,
    },
    Lost {
        conn: ConnId,
        reason: Reason,
        silent_for: Duration,
    },
    Shutdown,
}

/// Hub inputs waiting to be processed. Connections wait when it is full.
pub const HUB_QUEUE: usize = 4096;

struct LinkHandle {
    outbox: mpsc::Sender<Outbound>,
    kill: oneshot::Sender<()>,
}

pub async fn run(mut hub: Hub, mut inputs: mpsc::Receiver<HubInput>) {
    let mut links: HashMap<ConnId, LinkHandle> = HashMap::new();
    loop {
        let wake = hub.poll_timeout();
        let input = tokio::select! {
            input = inputs.recv() => match input {
                Some(input) => Some(input),
                None => break,
            },
            () = sleep_until(wake) => None,
        };
        let now = Instant::now();
        match input {
            Some(input) => apply(&mut hub, &mut links, now, input),
            None => hub.handle_timeout(now),
        }
        dispatch(&mut hub, &mut links, now);
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
        HubInput::Frame { conn, frame } => hub.frame_received(now, conn, frame),
        HubInput::Rejected { conn, problem } => hub.frame_rejected(now, conn, problem),
        HubInput::Lost {
            conn,
            reason,
            silent_for,
        } => {
            links.remove(&conn);
            hub.connection_lost(now, conn, reason, silent_for);
        }
        HubInput::Shutdown => hub.shutdown(now),
    }
}

fn dispatch(hub: &mut Hub, links: &mut HashMap<ConnId, LinkHandle>, now: Instant) {
    while let Some(output) = hub.poll_output() {
        match output {
            Output::Send { conn, frame } => {
                let Some(link) = links.get(&conn) else {
                    continue;
                };
                match link.outbox.try_send(Outbound::Frame(frame)) {
                    Ok(()) | Err(TrySendError::Closed(_)) => {}
                    Err(TrySendError::Full(_)) => {
                        tracing::warn!(%conn, "outbound queue full: closing the slow consumer");
                        hub.outbound_overflow(now, conn);
                    }
                }
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
        }
    }
}
