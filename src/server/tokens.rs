//! The runtime's part of authentication: the token of a Hello or a Refresh is verified here,
//! in the connection's own task (signature checks cost tens of microseconds and must not
//! queue behind the hub), and handed to the hub as verified facts ([`Credentials`]).

use std::time::{Instant, SystemTime};

use super::ServerContext;
use super::hub_driver::HubInput;
use crate::auth::Authenticator;
use crate::core::hub::ConnId;
use crate::core::identity::{Credentials, Grants, Identity, Profile, Verified};
use crate::metrics;
use crate::proto::{ClientFrame, client_frame};

/// The hub input for a frame from `conn`: Hello and Refresh carry their verified token when
/// authentication is on; everything else goes as it is.
pub fn hub_input(ctx: &ServerContext, conn: ConnId, mut frame: Box<ClientFrame>) -> HubInput {
    let Some(auth) = &ctx.auth else {
        return HubInput::Frame { conn, frame };
    };
    match frame.msg.take() {
        Some(client_frame::Msg::Hello(hello)) => {
            let credentials = verify(auth, &hello.token);
            HubInput::Hello {
                conn,
                id: frame.id,
                hello: Box::new(hello),
                credentials: Box::new(credentials),
            }
        }
        Some(client_frame::Msg::Refresh(refresh)) => HubInput::Refresh {
            conn,
            id: frame.id,
            credentials: Box::new(verify(auth, &refresh.token)),
        },
        msg => {
            frame.msg = msg;
            HubInput::Frame { conn, frame }
        }
    }
}

fn verify(auth: &Authenticator, token: &str) -> Credentials {
    let (now, clock) = (Instant::now(), SystemTime::now());
    match auth.verify(token, clock) {
        Ok(token) => Credentials::Verified(Verified {
            expires_at: now + token.expires_in(clock),
            identity: Identity {
                sub: token.sub,
                device: token.device,
            },
            grants: Grants {
                rooms: token.rooms,
                signal: token.signal,
            },
            profile: Profile {
                name: token.name,
                metadata: token.metadata,
            },
        }),
        Err(refusal) => {
            metrics::auth_refused(refusal.label());
            Credentials::Refused {
                code: refusal.code(),
                message: refusal.to_string(),
            }
        }
    }
}
