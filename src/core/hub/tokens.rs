//! A session's token over time: refreshed in-band before it expires; at expiry the client is
//! warned (TOKEN_EXPIRED) and gets `token_grace` to refresh; then its connection is closed
//! (4006). The session itself stays resumable — with a fresh token.

use std::time::Instant;

use super::delivery::error_msg;
use super::millis_u64;
use super::{Deadline, Hub, SessionKey};
use crate::core::identity::Credentials;
use crate::proto::{ErrorCode, Left, Reason, Refreshed, server_frame::Msg};

impl Hub {
    /// (Re)arms the expiry of the session's token.
    pub(super) fn schedule_token_expiry(&mut self, key: SessionKey) {
        self.deadlines.cancel(Deadline::TokenGrace(key));
        match self.sessions.get(&key).and_then(|s| s.token_expires) {
            Some(at) => self.deadlines.set(Deadline::TokenExpiry(key), at),
            None => self.deadlines.cancel(Deadline::TokenExpiry(key)),
        }
    }

    pub(super) fn token_expired(&mut self, now: Instant, key: SessionKey) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        if session.conn().is_none() {
            return; // A resume needs a fresh token anyway.
        }
        let grace = self.config.token_grace;
        let message = format!(
            "the session's token expired; send Refresh with a new token within {grace:?} or the \
             connection is closed"
        );
        self.reply(key, 0, error_msg(ErrorCode::TokenExpired, message, 0));
        self.deadlines.set(Deadline::TokenGrace(key), now + grace);
    }

    pub(super) fn token_grace_over(&mut self, now: Instant, key: SessionKey) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let still_expired = session.token_expires.is_some_and(|at| at <= now);
        if let (true, Some(conn)) = (still_expired, session.conn()) {
            tracing::info!(peer = %session.peer_id, "token expired without refresh: closing");
            self.close_connection(now, conn, Reason::TokenExpired);
        }
    }

    /// Refresh: a new token for the same identity. Rooms the new token no longer grants are
    /// left (the client gets Left, its peers PeerLeft).
    pub(super) fn refresh(
        &mut self,
        now: Instant,
        key: SessionKey,
        id: u64,
        credentials: Credentials,
    ) {
        let verified = match credentials {
            Credentials::Anonymous => {
                let message = "authentication is off: there is no token to refresh";
                return self.reply_error(key, id, ErrorCode::InvalidArgument, message);
            }
            Credentials::Refused { code, message } => {
                return self.reply_error(key, id, code, message);
            }
            Credentials::Verified(verified) => verified,
        };
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if session.identity.as_ref() != Some(&verified.identity) {
            let message = "the new token is for another identity";
            return self.reply_error(key, id, ErrorCode::IdentityMismatch, message);
        }
        session.token_expires = Some(verified.expires_at);
        session.profile = verified.profile;
        session.grants = verified.grants;
        let revoked: Vec<String> = session
            .rooms
            .iter()
            .filter(|room| !session.grants.allows_room(room))
            .cloned()
            .collect();
        for room in revoked {
            self.remove_from_room(key, &room, Reason::LeftRoom);
            self.reply(key, 0, Msg::Left(Left { room }));
        }
        self.schedule_token_expiry(key);
        let expires_in = millis_u64(verified.expires_at.saturating_duration_since(now)).max(1);
        self.reply(
            key,
            id,
            Msg::Refreshed(Refreshed {
                token_expires_in_ms: expires_in,
            }),
        );
    }
}
