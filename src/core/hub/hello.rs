//! Hello: a new session, or the resume of an existing one — which may take it over from a
//! connection that still looks alive (never "already connected") — and the fences that keep a
//! resume honest: the attempt number against stale connects, `last_seq` against frames never
//! sent, and gaps the client cannot continue across.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::backlog::Backlog;
use super::session::{Presence, Session};
use super::{ConnId, Deadline, Hub, HubEvent, Output, ResumeOutcome, SessionKey};
use crate::core::ids;
use crate::core::rate_limit::TokenBucket;
use crate::proto::{ErrorCode, Hello, PresenceState, Reason, Welcome, server_frame::Msg};

fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl Hub {
    pub(super) fn hello(&mut self, now: Instant, conn: ConnId, id: u64, hello: Hello) {
        if self.shutting_down {
            let message = "the gateway is shutting down";
            self.refuse(now, conn, id, ErrorCode::ShuttingDown, message);
            self.close_connection(now, conn, Reason::ServerShutdown);
            return;
        }
        match self.session_to_take_over(&hello) {
            Some(key) => self.resume(now, conn, id, key, &hello),
            None if !hello.resume_token.is_empty() => {
                self.resume_refused(conn, ResumeOutcome::Expired);
                let message = "the resume token is unknown or its resume window ran out; send \
                               Hello without a resume token to start a new session";
                self.refuse(now, conn, id, ErrorCode::ResumeExpired, message);
            }
            None => self.start_session(now, conn, id),
        }
    }

    /// The one rule of who may take a session over: the holder of its resume token.
    /// (An authenticated identity will be the second way in, here.)
    fn session_to_take_over(&self, hello: &Hello) -> Option<SessionKey> {
        if hello.resume_token.is_empty() {
            return None;
        }
        self.by_resume_token.get(&hello.resume_token).copied()
    }

    fn start_session(&mut self, now: Instant, conn: ConnId, id: u64) {
        let Some(transport) = self.connections.get(&conn).map(|c| c.transport) else {
            return;
        };
        let mut peer_id = ids::new_peer_id(self.entropy.as_mut());
        while self.by_peer_id.contains_key(&peer_id) {
            peer_id = ids::new_peer_id(self.entropy.as_mut());
        }
        let resume_token = ids::new_resume_token(self.entropy.as_mut());
        let key = SessionKey(self.next_session_key);
        self.next_session_key += 1;
        let limits = &self.config.limits;
        self.sessions.insert(
            key,
            Session {
                peer_id: peer_id.clone(),
                resume_token: resume_token.clone(),
                rooms: BTreeSet::new(),
                presence: Presence::Online(conn),
                transport,
                backlog: Backlog::default(),
                client_seq: 0,
                client_seq_told: 0,
                attempt: 0,
                limiter: TokenBucket::new(now, limits.requests_per_sec, limits.request_burst),
            },
        );
        tracing::debug!(%conn, peer = %peer_id, %transport, "session started");
        self.by_peer_id.insert(peer_id, key);
        self.by_resume_token.insert(resume_token, key);
        self.attach(conn, key);
        self.welcome(conn, id, key, false);
        self.event(HubEvent::SessionStarted { transport });
    }

    fn resume(&mut self, now: Instant, conn: ConnId, id: u64, key: SessionKey, hello: &Hello) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        if hello.attempt == 0 {
            // Without an attempt number a stale connect could not be told from a new one.
            self.resume_refused(conn, ResumeOutcome::Invalid);
            let message = "a Hello with a resume token needs attempt >= 1, increased on every \
                           connection attempt";
            self.refuse(now, conn, id, ErrorCode::InvalidArgument, message);
            return;
        }
        if hello.attempt <= session.attempt {
            let message = format!(
                "connection attempt {} is not newer than attempt {}, which the session has seen",
                hello.attempt, session.attempt
            );
            self.resume_refused(conn, ResumeOutcome::StaleAttempt);
            self.refuse(now, conn, id, ErrorCode::StaleAttempt, message);
            self.close_connection(now, conn, Reason::Superseded);
            return;
        }
        let last_sent = session.backlog.last_seq();
        if hello.last_seq > last_sent {
            let message = format!(
                "last_seq {} is ahead of the last frame sent to this session ({last_sent})",
                hello.last_seq
            );
            self.resume_refused(conn, ResumeOutcome::Invalid);
            self.refuse(now, conn, id, ErrorCode::InvalidArgument, message);
            return;
        }
        if !session.backlog.can_resume_from(hello.last_seq) {
            // The token proves the client owns the session, and it cannot continue: end the
            // old session now rather than leaving a ghost for the whole resume window.
            self.resume_refused(conn, ResumeOutcome::Gap);
            let message = format!(
                "frames after seq {} were dropped (the client did not ack them in time); send \
                 Hello without a resume token to start a new session",
                hello.last_seq
            );
            self.refuse(now, conn, id, ErrorCode::ResumeGap, message);
            self.end_session(key, Reason::ResumeGap);
            return;
        }
        let Some(transport) = self.connections.get(&conn).map(|c| c.transport) else {
            return;
        };
        let outcome = match session.presence {
            Presence::Online(old) => {
                // The gateway had not noticed that the old connection is dead (or the client
                // moved on while it still works): the newer attempt wins at once.
                let old_transport = session.transport;
                self.detach(old, key);
                self.connections.remove(&old);
                self.outputs.push_back(Output::Close {
                    conn: old,
                    reason: Reason::Superseded,
                });
                self.event(HubEvent::ConnectionEnded {
                    transport: old_transport,
                    reason: Reason::Superseded,
                    silent_for: Duration::ZERO,
                });
                ResumeOutcome::TookOver
            }
            Presence::Away { .. } => {
                self.gauges.unreachable[session.transport.index()] -= 1;
                self.deadlines.cancel(Deadline::ResumeWindow(key));
                ResumeOutcome::Resumed
            }
        };
        if let Some(session) = self.sessions.get_mut(&key) {
            session.attempt = hello.attempt;
            session.presence = Presence::Online(conn);
            session.transport = transport;
            session.backlog.number_pending();
            session.backlog.restart_after(hello.last_seq);
        }
        self.attach(conn, key);
        self.welcome(conn, id, key, true);
        if outcome == ResumeOutcome::Resumed {
            self.tell_rooms_state(key, PresenceState::Online, Reason::Resumed, Duration::ZERO);
        }
        self.pump(key);
        if let Some(session) = self.sessions.get(&key) {
            tracing::info!(
                %conn,
                peer = %session.peer_id,
                %transport,
                outcome = outcome.label(),
                last_seq = hello.last_seq,
                replay_until = session.backlog.last_seq(),
                "session resumed"
            );
        }
        self.event(HubEvent::Resume { transport, outcome });
    }

    /// The connection now carries the session.
    fn attach(&mut self, conn: ConnId, key: SessionKey) {
        self.deadlines.cancel(Deadline::Hello(conn));
        if let Some(c) = self.connections.get_mut(&conn) {
            c.session = Some(key);
            self.gauges.online[c.transport.index()] += 1;
        }
    }

    fn detach(&mut self, conn: ConnId, key: SessionKey) {
        if let Some(c) = self.connections.get_mut(&conn)
            && c.session == Some(key)
        {
            c.session = None;
            self.gauges.online[c.transport.index()] -= 1;
        }
    }

    fn welcome(&mut self, conn: ConnId, id: u64, key: SessionKey, resumed: bool) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.client_seq_told = session.client_seq;
        let config = &self.config;
        let welcome = Welcome {
            connection_id: conn.to_string(),
            peer_id: session.peer_id.clone(),
            resume_token: session.resume_token.clone(),
            liveness_timeout_ms: millis_u32(config.liveness.timeout()),
            ping_interval_ms: millis_u32(config.liveness.ping_interval()),
            resumed,
            resume_window_ms: millis_u32(config.resume_window),
            rooms: session.rooms.iter().cloned().collect(),
            max_frame_bytes: u32::try_from(config.limits.max_frame_bytes).unwrap_or(u32::MAX),
            last_client_seq: session.client_seq,
            replay_until_seq: if resumed {
                session.backlog.last_seq()
            } else {
                0
            },
        };
        self.send_direct(conn, id, Msg::Welcome(welcome));
    }

    fn resume_refused(&mut self, conn: ConnId, outcome: ResumeOutcome) {
        if let Some(c) = self.connections.get(&conn) {
            let transport = c.transport;
            tracing::info!(%conn, %transport, outcome = outcome.label(), "resume refused");
            self.event(HubEvent::Resume { transport, outcome });
        }
    }
}
