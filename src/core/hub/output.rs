//! What the hub asks of the runtime, and the facts it reports for metrics and logs.

use std::sync::Arc;
use std::time::Duration;

use super::ConnId;
use crate::core::Transport;
use crate::proto::{ErrorCode, Reason, ServerFrame};

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write this frame to the connection (after everything sent to it before).
    Send {
        conn: ConnId,
        frame: Arc<ServerFrame>,
    },
    /// Report [`super::Hub::connection_drained`]`(conn, mark)` once everything sent to the
    /// connection before this was written.
    Checkpoint { conn: ConnId, mark: u64 },
    /// Close the connection (after the frames queued before) for this reason. The hub has
    /// already forgotten the connection: later inputs about it are ignored.
    Close { conn: ConnId, reason: Reason },
    /// Something to count.
    Event(HubEvent),
    /// Cluster mode: send this to one gateway, over its reliable link.
    ToNode {
        node: String,
        body: crate::proto::cluster::envelope::Body,
    },
    /// Cluster mode: send this to every live gateway.
    ToCluster {
        body: crate::proto::cluster::envelope::Body,
    },
    /// Durable mode: append `record` to the session log `key`, only if the log's last record
    /// is at stream seq `expect_last` (when given). Answer [`super::Hub::persisted`] or
    /// [`super::Hub::persist_failed`]. At most one is on its way per log.
    Persist {
        key: String,
        expect_last: Option<u64>,
        record: Box<crate::proto::cluster::DurableRecord>,
    },
    /// Durable mode: read every record of log `key`; answer [`super::Hub::recovered`].
    ReadLog { ticket: u64, key: String },
}

/// Facts for metrics and logs.
#[derive(Debug, Clone, PartialEq)]
pub enum HubEvent {
    SessionStarted {
        transport: Transport,
    },
    /// A Hello with a resume token was answered (resumed, took over, or refused).
    Resume {
        transport: Transport,
        outcome: ResumeOutcome,
    },
    /// A connection that carried a session ended, by the peer's doing or the gateway's.
    /// `silent_for`: how long nothing had arrived from it (the detection latency).
    ConnectionEnded {
        transport: Transport,
        reason: Reason,
        silent_for: Duration,
    },
    /// A session is gone for good (LEFT).
    SessionEnded {
        reason: Reason,
    },
    SignalRelayed {
        kind: SignalKind,
    },
    SignalRefused {
        reason: ErrorCode,
    },
    /// Cluster mode: another gateway answered for a signal sent to it, after `round_trip`.
    RemoteSignalSettled {
        round_trip: Duration,
    },
    /// Durable mode: a record of a session's log was not stored.
    DurableWriteFailed,
    /// Durable mode: a session whose gateway was lost was taken up here from its log.
    SessionRecovered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResumeOutcome {
    /// The session was away and is back.
    Resumed,
    /// The session still had a connection the gateway believed alive; the new one took over.
    TookOver,
    /// Unknown or expired token.
    Expired,
    /// Frames after the client's last_seq were dropped.
    Gap,
    /// A newer connection attempt holds the session.
    StaleAttempt,
    /// last_seq ahead of anything sent, or no attempt number.
    Invalid,
}

impl ResumeOutcome {
    pub const ALL: [ResumeOutcome; 6] = [
        Self::Resumed,
        Self::TookOver,
        Self::Expired,
        Self::Gap,
        Self::StaleAttempt,
        Self::Invalid,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Resumed => "resumed",
            Self::TookOver => "took_over",
            Self::Expired => "expired",
            Self::Gap => "gap",
            Self::StaleAttempt => "stale_attempt",
            Self::Invalid => "invalid",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalKind {
    Description,
    Candidate,
    Data,
}

impl SignalKind {
    pub const ALL: [SignalKind; 3] = [Self::Description, Self::Candidate, Self::Data];

    pub fn of(payload: &crate::proto::signal::Payload) -> Self {
        use crate::proto::signal::Payload;
        match payload {
            Payload::Description(_) => Self::Description,
            Payload::Candidate(_) => Self::Candidate,
            Payload::Data(_) => Self::Data,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Description => "description",
            Self::Candidate => "candidate",
            Self::Data => "data",
        }
    }
}

/// Counts the runtime exports as gauges, kept up to date on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Sessions with a live connection, by [`Transport`] index.
    pub online: [usize; 2],
    /// Sessions away (may still resume), by the [`Transport`] index of their last connection.
    pub unreachable: [usize; 2],
    pub rooms: usize,
}

impl Gauges {
    pub fn online(&self, transport: Transport) -> usize {
        self.online[transport.index()]
    }

    pub fn unreachable(&self, transport: Transport) -> usize {
        self.unreachable[transport.index()]
    }
}
