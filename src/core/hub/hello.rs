//! Hello: a new session, or an existing one taken up by a new connection — by its resume token,
//! or (with tokens) by its identity — even from a connection that still looks alive (never
//! "already connected"); and the fences that keep that honest: the attempt number against
//! stale connects, `last_seq` against frames never sent, gaps the client cannot continue
//! across, the resume rate, the identity a resume token belongs to.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::backlog::Backlog;
use super::delivery::shown;
use super::session::{Presence, Session};
use super::{ConnId, Deadline, Hub, HubEvent, Output, ResumeOutcome, SessionKey};
use super::{millis_u32, millis_u64};
use crate::core::identity::{Credentials, Grants, Profile, Verified};
use crate::core::ids;
use crate::core::rate_limit::TokenBucket;
use crate::proto::{ErrorCode, Hello, PresenceState, Reason, Welcome, server_frame::Msg};

/// Resumes and take-overs per session: a burst of this many, then one per 2 s.
const RESUME_BURST: u32 = 10;

/// Resumes and take-overs of one session: a burst, then one per 2 s.
pub(super) fn resume_limiter(now: Instant) -> TokenBucket {
    TokenBucket::new_per(now, 1, Duration::from_secs(2), RESUME_BURST)
}

/// How a connection takes up an existing session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// With the resume token: the client has everything up to `last_seq`.
    Token { last_seq: u64, attempt: u64 },
    /// With a token of the session's identity, without the resume token: a client that lost
    /// its state (an app restart). It gets what the backlog still holds and numbers its
    /// frames from 1 again.
    Identity { attempt: u64 },
}

impl Hub {
    pub(super) fn hello(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: u64,
        hello: Hello,
        credentials: Credentials,
    ) {
        if self.shutting_down {
            let message = "the gateway is shutting down";
            self.refuse(now, conn, id, ErrorCode::ShuttingDown, message);
            self.close_connection(now, conn, Reason::ServerShutdown);
            return;
        }
        if self.cut_off {
            let message = "this gateway is cut off from the cluster; connect to another one";
            self.refuse(now, conn, id, ErrorCode::ClusterUnavailable, message);
            self.go_elsewhere(conn, Reason::GatewayLost);
            self.close_connection(now, conn, Reason::GatewayLost);
            return;
        }
        let verified = match credentials {
            Credentials::Anonymous => None,
            Credentials::Verified(verified) => Some(verified),
            Credentials::Refused { code, message } => {
                tracing::debug!(%conn, code = code.as_str_name(), %message, "token refused");
                return self.refuse(now, conn, id, code, message);
            }
        };
        if !hello.resume_token.is_empty() {
            match self.by_resume_token.get(&hello.resume_token).copied() {
                Some(key) => {
                    let owner = self.sessions.get(&key).and_then(|s| s.identity.clone());
                    if let Some(verified) = &verified
                        && owner.as_ref() != Some(&verified.identity)
                    {
                        self.resume_refused(conn, ResumeOutcome::Invalid);
                        let message = "the resume token belongs to a session of another identity";
                        return self.refuse(now, conn, id, ErrorCode::IdentityMismatch, message);
                    }
                    let claim = Claim::Token {
                        last_seq: hello.last_seq,
                        attempt: hello.attempt,
                    };
                    return self.take_up(now, conn, id, key, claim, verified);
                }
                // Issued by another gateway of the cluster: claimed from there.
                None if self.claim_elsewhere(conn, id, &hello, &verified) => return,
                None if verified.is_none() => {
                    self.resume_refused(conn, ResumeOutcome::Expired);
                    let message = "the resume token is unknown or its resume window ran out; \
                                   send Hello without a resume token to start a new session";
                    return self.refuse(now, conn, id, ErrorCode::ResumeExpired, message);
                }
                // An old resume token, but the identity may still have a session.
                None => {}
            }
        }
        let owned = verified
            .as_ref()
            .and_then(|v| self.by_identity.get(&v.identity).copied());
        match owned {
            Some(key) => {
                let claim = Claim::Identity {
                    attempt: hello.attempt,
                };
                self.take_up(now, conn, id, key, claim, verified);
            }
            // The identity's session may live on another gateway of the cluster.
            None if self.claim_identity_elsewhere(conn, id, &hello, &verified) => {}
            None => self.start_session(now, conn, id, verified),
        }
    }

    pub(super) fn start_session(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: u64,
        verified: Option<Verified>,
    ) {
        let Some(transport) = self.connections.get(&conn).map(|c| c.transport) else {
            return;
        };
        let limits = &self.config.limits;
        if self.sessions.len() >= limits.max_sessions {
            let message = format!(
                "the gateway holds {} sessions, its limit; try again later",
                self.sessions.len()
            );
            self.refuse(now, conn, id, ErrorCode::TooManySessions, message);
            self.close_connection(now, conn, Reason::GatewayFull);
            return;
        }
        let mut peer_id = ids::new_peer_id(self.entropy.as_mut());
        while self.by_peer_id.contains_key(&peer_id) {
            peer_id = ids::new_peer_id(self.entropy.as_mut());
        }
        let resume_token = self.new_resume_token();
        let key = SessionKey(self.next_session_key);
        self.next_session_key += 1;
        let limits = &self.config.limits;
        let (rate, burst) = (limits.requests_per_sec, limits.request_burst);
        let (identity, grants, profile, token_expires) = match verified {
            Some(v) => (Some(v.identity), v.grants, v.profile, Some(v.expires_at)),
            None => (None, Grants::all(), Profile::default(), None),
        };
        self.sessions.insert(
            key,
            Box::new(Session {
                peer_id: peer_id.clone(),
                resume_token: resume_token.clone(),
                rooms: BTreeSet::new(),
                presence: Presence::Online(conn),
                transport,
                backlog: Backlog::default(),
                client_seq: 0,
                client_seq_told: 0,
                attempt: 0,
                limiter: TokenBucket::new(now, rate, burst),
                ack_limiter: TokenBucket::new(now, rate.saturating_mul(4), burst.saturating_mul(4)),
                resume_limiter: resume_limiter(now),
                identity: identity.clone(),
                grants,
                profile,
                token_expires,
                unsettled: BTreeSet::new(),
                parked: None,
                moved_online: false,
                durable: None,
            }),
        );
        self.open_log(key);
        tracing::debug!(%conn, peer = %peer_id, %transport, "session started");
        self.by_peer_id.insert(peer_id, key);
        self.by_resume_token.insert(resume_token, key);
        if let Some(identity) = identity {
            self.by_identity.insert(identity, key);
        }
        self.schedule_token_expiry(key);
        self.attach(conn, key);
        self.welcome(now, conn, id, key, false);
        self.event(HubEvent::SessionStarted { transport });
    }

    /// A new connection takes up an existing session (resumed if it was away, taken over if
    /// it still had a connection).
    pub(super) fn take_up(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: u64,
        key: SessionKey,
        claim: Claim,
        verified: Option<Verified>,
    ) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let last_sent = session.backlog.last_seq();
        if let Claim::Token { last_seq, attempt } = claim {
            if attempt == 0 {
                // Without an attempt number a stale connect could not be told from a new one.
                self.resume_refused(conn, ResumeOutcome::Invalid);
                let message = "a Hello with a resume token needs attempt >= 1, increased on \
                               every connection attempt";
                return self.refuse(now, conn, id, ErrorCode::InvalidArgument, message);
            }
            if attempt <= session.attempt {
                let message = format!(
                    "connection attempt {attempt} is not newer than attempt {}, which the \
                     session has seen",
                    session.attempt
                );
                self.resume_refused(conn, ResumeOutcome::StaleAttempt);
                self.refuse(now, conn, id, ErrorCode::StaleAttempt, message);
                self.close_connection(now, conn, Reason::Superseded);
                return;
            }
            if last_seq > last_sent {
                let message = format!(
                    "last_seq {last_seq} is ahead of the last frame sent to this session \
                     ({last_sent})"
                );
                self.resume_refused(conn, ResumeOutcome::Invalid);
                return self.refuse(now, conn, id, ErrorCode::InvalidArgument, message);
            }
            if !session.backlog.can_resume_from(last_seq) {
                // The token proves the client owns the session, and it cannot continue: end
                // the old session now rather than leaving a ghost for the whole window.
                self.resume_refused(conn, ResumeOutcome::Gap);
                let message = format!(
                    "frames after seq {last_seq} were dropped (the client did not ack them in \
                     time); send Hello without a resume token to start a new session"
                );
                self.refuse(now, conn, id, ErrorCode::ResumeGap, message);
                self.end_session(key, Reason::ResumeGap);
                return;
            }
        }
        if !session.resume_limiter.try_take(now) {
            let message = "this session resumed too often; wait a moment before reconnecting";
            self.refuse(now, conn, id, ErrorCode::RateLimited, message);
            self.close_connection(now, conn, Reason::ProtocolError);
            return;
        }
        let Some(transport) = self.connections.get(&conn).map(|c| c.transport) else {
            return;
        };
        let outcome = match session.presence {
            Presence::Online(old) => {
                // The gateway had not noticed that the old connection is dead (or the client
                // moved on while it still works): the newer connection wins at once.
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
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.presence = Presence::Online(conn);
        session.transport = transport;
        session.backlog.number_pending();
        let last_seq = match claim {
            Claim::Token { last_seq, attempt } => {
                session.attempt = attempt;
                last_seq
            }
            Claim::Identity { attempt } => {
                // A client that lost its state numbers its frames from 1 again, and gets
                // whatever the backlog still holds.
                session.attempt = session.attempt.max(attempt);
                session.client_seq = 0;
                session.client_seq_told = 0;
                0
            }
        };
        session.backlog.restart_after(last_seq);
        if let Some(v) = verified {
            session.grants = v.grants;
            session.profile = v.profile;
            session.token_expires = Some(v.expires_at);
        }
        self.schedule_token_expiry(key);
        self.attach(conn, key);
        self.persist_soon(key);
        self.welcome(now, conn, id, key, true);
        // A session handed over while online (a drain) was never shown away: nothing to tell.
        let shown_away = self
            .sessions
            .get_mut(&key)
            .is_some_and(|s| !std::mem::take(&mut s.moved_online));
        if outcome == ResumeOutcome::Resumed && shown_away {
            self.tell_rooms_state(key, PresenceState::Online, Reason::Resumed, Duration::ZERO);
        }
        self.pump(key);
        if let Some(session) = self.sessions.get(&key) {
            tracing::info!(
                %conn,
                peer = %session.peer_id,
                %transport,
                outcome = outcome.label(),
                by_identity = matches!(claim, Claim::Identity { .. }),
                last_seq,
                replay_until = session.backlog.last_seq(),
                "session resumed"
            );
        }
        self.event(HubEvent::Resume { transport, outcome });
    }

    /// A resume token; in cluster mode it names this gateway, for a resume on another
    /// gateway to find the session.
    pub(super) fn new_resume_token(&mut self) -> String {
        let token = ids::new_resume_token(self.entropy.as_mut());
        match &self.config.cluster_node {
            Some(node) => format!("{node}.{token}"),
            None => token,
        }
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

    fn welcome(&mut self, now: Instant, conn: ConnId, id: u64, key: SessionKey, resumed: bool) {
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
            identity: session
                .identity
                .as_ref()
                .map(|i| i.sub.clone())
                .unwrap_or_default(),
            token_expires_in_ms: session
                .token_expires
                .map_or(0, |at| millis_u64(at.saturating_duration_since(now)).max(1)),
        };
        self.send_direct(conn, id, Msg::Welcome(welcome));
    }

    pub(super) fn resume_refused(&mut self, conn: ConnId, outcome: ResumeOutcome) {
        if let Some(c) = self.connections.get(&conn) {
            let transport = c.transport;
            tracing::debug!(%conn, %transport, outcome = outcome.label(), "resume refused");
            self.event(HubEvent::Resume { transport, outcome });
        }
    }

    /// The identity's entry goes with its session.
    pub(super) fn forget_identity(&mut self, key: SessionKey) {
        let identity = self.sessions.get(&key).and_then(|s| s.identity.clone());
        if let Some(identity) = identity
            && self.by_identity.get(&identity) == Some(&key)
        {
            tracing::debug!(sub = %shown(&identity.sub), "identity has no session any more");
            self.by_identity.remove(&identity);
        }
    }
}
