//! The signaling core: pure state machines, no tokio, no sockets, no wall clock.
//!
//! Every rule about sessions, rooms, presence, relay, resume and liveness lives here and is
//! unit-tested with a fake clock. Transports only turn bytes into [`codec`] frames and
//! connection events into [`hub::Hub`] inputs.

pub mod cluster;
pub mod codec;
pub mod hub;
pub mod identity;
pub mod ids;
pub mod liveness;
pub mod rate_limit;

use crate::proto;

/// How a client reached the gateway. Bounded: used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    WebSocket,
    WebTransport,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::WebSocket, Transport::WebTransport];

    pub fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::WebTransport => "webtransport",
        }
    }

    pub fn to_proto(self) -> proto::Transport {
        match self {
            Transport::WebSocket => proto::Transport::Websocket,
            Transport::WebTransport => proto::Transport::Webtransport,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// The reason of a presence change or a session's end, as a metric label / log word.
pub fn reason_label(reason: proto::Reason) -> &'static str {
    use proto::Reason as R;
    match reason {
        R::Unspecified => "unspecified",
        R::LivenessTimeout => "liveness_timeout",
        R::ConnectionLost => "connection_lost",
        R::ClientClosed => "client_closed",
        R::LeftRoom => "left_room",
        R::ResumeWindowExpired => "resume_window_expired",
        R::Superseded => "superseded",
        R::SlowConsumer => "slow_consumer",
        R::ProtocolError => "protocol_error",
        R::ServerShutdown => "server_shutdown",
        R::Resumed => "resumed",
        R::HelloTimeout => "hello_timeout",
        R::Bye => "bye",
        R::Suspended => "suspended",
        R::ResumeGap => "resume_gap",
        R::TokenExpired => "token_expired",
        R::Disconnected => "disconnected",
        R::GatewayFull => "gateway_full",
        R::GatewayLost => "gateway_lost",
    }
}
