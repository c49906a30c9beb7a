//! A session's stream to its connection, and the frames outside that stream.
//!
//! [`Hub::deliver`] appends to a session's stream: numbered and sent at once when nothing waits
//! ahead of it and the connection's send window is open, otherwise behind what waits (see
//! `backlog.rs`). [`Hub::pump`] sends what waits as the window reopens. Acks of the client's
//! numbered frames go out only when nothing of the stream waits, so that an Error about one of
//! those frames always reaches the client before the Ack that covers it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::millis_u32;
use super::pending::{Class, News};
use super::{ConnId, Hub, HubEvent, Output, SessionKey};
use crate::proto::{self, Ack, ErrorCode, GoAway, Pong, Reason, ServerFrame, server_frame::Msg};

/// The signals waiting for a session are at the backlog bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BacklogFull {
    pub waiting: usize,
    pub waiting_bytes: usize,
}

/// Something for a session's ordered stream.
pub(super) enum Item {
    /// A reply (or an Error) to the session's own request `in_reply_to`.
    Reply {
        in_reply_to: u64,
        msg: Msg,
    },
    Signal(Msg),
    /// Presence news about `peer_id` in `room`.
    News {
        room: String,
        peer_id: String,
        news: News,
    },
}

/// The error frame's body; ServerFrame.in_reply_to and Error.in_reply_to always agree.
pub(super) fn error_msg(code: ErrorCode, message: impl Into<String>, in_reply_to: u64) -> Msg {
    Msg::Error(proto::Error {
        code: code.into(),
        message: message.into(),
        in_reply_to,
    })
}

/// Text a client sent, fit to be echoed in an Error or a log line: at most 64 characters,
/// control characters escaped (a 64 KiB room name of control bytes must not become a
/// 320 KiB error).
pub(super) fn shown(text: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = text
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX).is_some() {
        out.push('…');
    }
    format!("\"{out}\"")
}

impl Hub {
    /// Appends to the session's stream (nothing happens for a session that is gone). A
    /// signal is refused ([`BacklogFull`]) when the signals waiting for the session are at the
    /// backlog bound — it can only be when something waits, so the common path (nothing
    /// waiting, window open: numbered and sent at once) checks no budget.
    pub(super) fn deliver(&mut self, key: SessionKey, item: Item) -> Result<(), BacklogFull> {
        let Some(session) = self.sessions.get_mut(&key) else {
            return Ok(());
        };
        let conn = session.conn();
        let durable = session.durable.is_some();
        if let Some(conn) = conn
            && !durable
            && session.backlog.is_drained()
            && let Some(connection) = self.connections.get_mut(&conn)
            && connection.flow.can_take()
        {
            let (in_reply_to, msg, signal) = match item {
                Item::Reply { in_reply_to, msg } => (in_reply_to, msg, false),
                Item::Signal(msg) => (0, msg, true),
                Item::News { news, .. } => (0, news.into_msg(), false),
            };
            let (frame, size) = session.backlog.number_and_send(in_reply_to, msg, signal);
            let limits = &self.config.limits;
            session
                .backlog
                .drop_unacked_beyond(limits.backlog_frames, limits.backlog_bytes);
            self.outputs.push_back(Output::Send { conn, frame });
            if let Some(mark) = connection.flow.sent(size) {
                self.outputs.push_back(Output::Checkpoint { conn, mark });
            }
            return Ok(());
        }
        let limits = &self.config.limits;
        match item {
            Item::Reply { in_reply_to, msg } => {
                let size = msg.encoded_len();
                session.backlog.push(in_reply_to, msg, size, Class::Reply);
                if conn.is_some() && session.backlog.pending_replies() > limits.backlog_frames {
                    // Closed once the current input is done (see `check_overloaded`).
                    self.overloaded.push(key);
                }
            }
            Item::Signal(msg) => {
                let size = msg.encoded_len();
                let (waiting, waiting_bytes) = session.backlog.unsent_signals();
                if waiting + 1 > limits.backlog_frames
                    || waiting_bytes + size > limits.backlog_bytes
                {
                    return Err(BacklogFull {
                        waiting,
                        waiting_bytes,
                    });
                }
                session.backlog.push(0, msg, size, Class::Signal);
            }
            Item::News {
                room,
                peer_id,
                news,
            } => session.backlog.push_news(&room, &peer_id, news),
        }
        if durable {
            // Numbered now, for the log: what goes out must be stored first.
            session.backlog.number_pending();
            self.persist_frames(key);
        }
        if conn.is_some() {
            self.pump(key);
        }
        Ok(())
    }

    /// Sends what waits in the session's stream while its connection's window is open.
    pub(super) fn pump(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(conn) = session.conn() else {
            return;
        };
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        loop {
            if !connection.flow.can_take() {
                if let Some(mark) = connection.flow.checkpoint() {
                    self.outputs.push_back(Output::Checkpoint { conn, mark });
                }
                break;
            }
            let Some((frame, size)) = session.backlog.take_next() else {
                break;
            };
            self.outputs.push_back(Output::Send { conn, frame });
            if let Some(mark) = connection.flow.sent(size) {
                self.outputs.push_back(Output::Checkpoint { conn, mark });
            }
        }
        let limits = &self.config.limits;
        session
            .backlog
            .drop_unacked_beyond(limits.backlog_frames, limits.backlog_bytes);
        if session.backlog.is_drained() && session.settled_seq() > session.client_seq_told {
            self.acks_due.push(key);
        }
    }

    /// The client's numbered frames were processed: an Ack is due (sent by
    /// [`Self::send_due_acks`]).
    pub(super) fn ack_due(&mut self, key: SessionKey) {
        self.acks_due.push(key);
    }

    /// One Ack per session for the inputs processed since the last call, to sessions whose
    /// stream has nothing waiting (the others get theirs from [`Self::pump`] once drained).
    pub(super) fn send_due_acks(&mut self) {
        for key in std::mem::take(&mut self.acks_due) {
            let Some(session) = self.sessions.get_mut(&key) else {
                continue;
            };
            let Some(conn) = session.conn() else {
                continue; // The Welcome of a resume says it.
            };
            let seq = session.settled_seq();
            if seq <= session.client_seq_told || !session.backlog.is_drained() {
                continue;
            }
            session.client_seq_told = seq;
            self.send_direct(conn, 0, Msg::Ack(Ack { seq }));
        }
    }

    /// Clients that send requests without reading their replies: closed as slow consumers
    /// once their unsent replies exceed the backlog bound (they may resume and read).
    pub(super) fn check_overloaded(&mut self, now: Instant) {
        for key in std::mem::take(&mut self.overloaded) {
            let Some(session) = self.sessions.get(&key) else {
                continue;
            };
            if let Some(conn) = session.conn() {
                let peer = session.peer_id.clone();
                tracing::warn!(%conn, %peer, "replies not read: closing the slow consumer");
                self.close_connection(now, conn, Reason::SlowConsumer);
            }
        }
    }

    /// A reply to the session's own request (kept for replay like everything else; replies
    /// are never refused: a client that does not read them is closed instead).
    pub(super) fn reply(&mut self, key: SessionKey, in_reply_to: u64, msg: Msg) {
        let _ = self.deliver(key, Item::Reply { in_reply_to, msg });
    }

    pub(super) fn reply_error(
        &mut self,
        key: SessionKey,
        id: u64,
        code: ErrorCode,
        message: impl Into<String>,
    ) {
        self.reply(key, id, error_msg(code, message, id));
    }

    /// Refuses a frame with an Error. Counts as a protocol error for frames that no
    /// well-behaved client sends; too many of those close the connection.
    pub(super) fn refuse(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: u64,
        code: ErrorCode,
        message: impl Into<String>,
    ) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        // Frames no well-behaved client sends, bad tokens included: a connection that keeps
        // sending them is closed rather than answered forever.
        let misbehaving = matches!(
            code,
            ErrorCode::MalformedFrame
                | ErrorCode::FrameTooLarge
                | ErrorCode::UnsupportedFrame
                | ErrorCode::HelloRequired
                | ErrorCode::AlreadyWelcomed
                | ErrorCode::TokenMissing
                | ErrorCode::TokenMalformed
                | ErrorCode::TokenBadSignature
                | ErrorCode::TokenExpired
                | ErrorCode::TokenNotYetValid
                | ErrorCode::TokenWrongAudience
                | ErrorCode::TokenWrongIssuer
                | ErrorCode::TokenRevoked
                | ErrorCode::IdentityMismatch
        );
        if misbehaving {
            connection.protocol_errors += 1;
        }
        let too_many = connection.protocol_errors > self.config.limits.max_protocol_errors;
        match connection.session {
            Some(key) => self.reply_error(key, id, code, message),
            None => self.send_direct(conn, id, error_msg(code, message, id)),
        }
        if too_many {
            let message = format!(
                "more than {} refused frames; closing",
                self.config.limits.max_protocol_errors
            );
            self.send_direct(conn, 0, error_msg(ErrorCode::Closing, message, 0));
            self.close_connection(now, conn, Reason::ProtocolError);
        }
    }

    /// A frame about the connection itself, outside the session's stream (seq 0).
    pub(super) fn send_direct(&mut self, conn: ConnId, in_reply_to: u64, msg: Msg) {
        let frame = Arc::new(ServerFrame {
            seq: 0,
            in_reply_to,
            msg: Some(msg),
        });
        self.outputs.push_back(Output::Send { conn, frame });
    }

    pub(super) fn pong(&mut self, conn: ConnId, id: u64, payload: Bytes) {
        self.send_direct(conn, id, Msg::Pong(Pong { payload }));
    }

    /// GoAway for a shutdown: reconnect after `reconnect_after`, spread.
    pub(super) fn go_away_frame(&mut self, conn: ConnId) {
        self.go_away_with(conn, Reason::ServerShutdown, self.config.reconnect_after);
    }

    /// GoAway telling the client to move to another gateway of the cluster now (spread over
    /// `reconnect_spread`): its session is (or will be) taken up there.
    pub(super) fn go_elsewhere(&mut self, conn: ConnId, reason: Reason) {
        self.go_away_with(conn, reason, Duration::ZERO);
    }

    fn go_away_with(&mut self, conn: ConnId, reason: Reason, reconnect_after: Duration) {
        let msg = Msg::GoAway(GoAway {
            reason: reason.into(),
            reconnect_after_ms: millis_u32(reconnect_after),
            spread_ms: millis_u32(self.config.reconnect_spread),
        });
        self.send_direct(conn, 0, msg);
    }

    /// The hub closes a connection (after what is queued for it). Its session, if any, is
    /// away and may resume — unless the gateway is shutting down.
    pub(super) fn close_connection(&mut self, now: Instant, conn: ConnId, reason: Reason) {
        self.deadlines.cancel(super::Deadline::Hello(conn));
        let Some(connection) = self.connections.remove(&conn) else {
            return;
        };
        self.outputs.push_back(Output::Close { conn, reason });
        if let Some(key) = connection.session {
            self.event(HubEvent::ConnectionEnded {
                transport: connection.transport,
                reason,
                silent_for: Duration::ZERO,
            });
            if reason != Reason::ServerShutdown {
                self.go_away(now, key, reason, Duration::ZERO);
            }
        }
    }
}
