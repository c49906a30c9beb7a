//! The UDP side: HTTP/3 with WebTransport sessions at `/wt`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use wtransport::endpoint::IncomingSession;
use wtransport::endpoint::endpoint_side::Server;
use wtransport::error::ConnectionError;
use wtransport::{Endpoint, VarInt};

use super::admission::Admitted;
use super::{ServerContext, ServerError, connection};
use crate::config::Config;
use crate::core::Transport;
use crate::metrics;
use crate::proto::Reason;
use crate::tls::LiveCertificate;
use crate::transport::close_code;
use crate::transport::webtransport::{self, ActivitySampler};

/// The WebTransport path on the UDP port.
pub const PATH: &str = "/wt";

pub struct Listener {
    endpoints: Vec<Endpoint<Server>>,
    sampler: ActivitySampler,
}

impl Listener {
    /// Binds UDP on the port of `listen` (and on [::1] as well when `listen` is 127.0.0.1,
    /// because Chromium resolves `localhost` to [::1] only for WebTransport).
    pub fn bind(
        listen: SocketAddr,
        certificate: &Arc<LiveCertificate>,
        config: &Config,
    ) -> Result<Listener, ServerError> {
        let mut endpoints = vec![bind_one(listen, certificate, config)?];
        if listen.ip() == IpAddr::from([127, 0, 0, 1]) {
            let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port());
            match bind_one(v6, certificate, config) {
                Ok(endpoint) => endpoints.push(endpoint),
                Err(error) => tracing::debug!(%error, "WebTransport not served on [::1]"),
            }
        }
        let sampler = ActivitySampler::spawn(&config.hub.liveness);
        Ok(Listener { endpoints, sampler })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.endpoints
            .iter()
            .filter_map(|e| e.local_addr().ok())
            .collect()
    }

    pub async fn accept_loop(self, ctx: Arc<ServerContext>) {
        let sampler = self.sampler;
        let loops = self
            .endpoints
            .into_iter()
            .map(|endpoint| accept_on(ctx.clone(), endpoint, sampler.clone()));
        futures_util::future::join_all(loops).await;
    }
}

fn bind_one(
    addr: SocketAddr,
    certificate: &Arc<LiveCertificate>,
    config: &Config,
) -> Result<Endpoint<Server>, ServerError> {
    let bind_error = |source| ServerError::Bind {
        addr,
        what: "WebTransport (UDP)",
        source,
    };
    let socket = webtransport::bind_socket(addr).map_err(bind_error)?;
    let server_config = webtransport::server_config(socket, certificate, config)?;
    Endpoint::server(server_config).map_err(bind_error)
}

/// Admits or refuses each connection attempt before its handshake: while half the handshake
/// slots or more are taken, a client that has not proven its address gets a Retry (a
/// stateless round trip a spoofed source cannot complete) and is admitted when it comes back
/// with the token; a source over its limits, or an attempt with every handshake slot taken,
/// is refused (CONNECTION_REFUSED) at once.
async fn accept_on(ctx: Arc<ServerContext>, endpoint: Endpoint<Server>, sampler: ActivitySampler) {
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            () = ctx.shutdown.cancelled() => break,
        };
        let peer = incoming.remote_address();
        if !incoming.remote_address_validated() && ctx.admission.under_load() {
            tracing::debug!(%peer, "QUIC address validation (Retry) under load");
            metrics::quic_retry();
            incoming.retry();
            continue;
        }
        let admitted = match ctx.admission.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                tracing::debug!(%peer, reason = refusal.label(), "QUIC connection refused");
                metrics::connection_refused(Transport::WebTransport, refusal.label());
                incoming.refuse();
                continue;
            }
        };
        let ctx2 = ctx.clone();
        ctx.tasks
            .spawn(accept_session(ctx2, incoming, sampler.clone(), admitted));
    }
    // Let GoAway and close frames of the sessions drain before the socket goes.
    ctx.tasks.wait().await;
    let code = VarInt::from_u32(u32::from(close_code(Reason::ServerShutdown)));
    endpoint.close(code, b"server_shutdown");
}

/// One deadline (`handshake_timeout`) from the first packet to the control stream: QUIC
/// handshake, HTTP/3 settings, the session request, its acceptance and the client's stream.
async fn accept_session(
    ctx: Arc<ServerContext>,
    incoming: IncomingSession,
    sampler: ActivitySampler,
    admitted: Admitted,
) {
    let Admitted {
        connection: _permit, // The source's count lasts as long as the session.
        handshake,
    } = admitted;
    let deadline = ctx.config.handshake_timeout;
    let established = tokio::time::timeout(deadline, async {
        let request = incoming.await?;
        if request.path() != PATH {
            tracing::debug!(
                path = request.path(),
                "WebTransport request for an unknown path"
            );
            metrics::handshake_failed(Transport::WebTransport, "bad_request");
            request.not_found().await;
            return Ok(None);
        }
        if !ctx.config.origin_allowed(request.origin()) {
            tracing::info!(
                origin = request.origin().unwrap_or(""),
                "WebTransport origin refused"
            );
            metrics::handshake_failed(Transport::WebTransport, "origin");
            request.forbidden().await;
            return Ok(None);
        }
        let connection = request.accept().await?;
        let (send, recv) = connection.accept_bi().await?;
        Ok::<_, ConnectionError>(Some((connection, send, recv)))
    })
    .await;
    drop(handshake);
    let (connection, send, recv) = match established {
        Ok(Ok(Some(session))) => session,
        Ok(Ok(None)) => return,
        Ok(Err(error)) => {
            tracing::debug!(%error, "WebTransport session failed before its control stream");
            metrics::handshake_failed(Transport::WebTransport, "io");
            return;
        }
        Err(_) => {
            metrics::handshake_failed(Transport::WebTransport, "timeout");
            return;
        }
    };
    let link = webtransport::spawn(connection, send, recv, &ctx.config, &sampler);
    connection::drive(ctx, link).await;
}
