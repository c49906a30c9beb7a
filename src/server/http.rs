//! The TCP side: HTTPS (and optionally plain HTTP) with the WebSocket upgrade at `/ws`,
//! `/healthz`, `/cert-hash`, `/endpoints` and the demo page at `/`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::admission::{Admittance, Admitted, ConnectionPermit, HandshakePermit, Refusal};
use super::{ServerContext, assets, connection};
use crate::core::Transport;
use crate::metrics;
use crate::transport::tcp_liveness::{self, TcpAckEvidence, TcpWitness};
use crate::transport::websocket;

type Body = Full<Bytes>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Http,
}

/// Accepts TCP connections until shutdown; TLS first when `tls` is given.
///
/// A connection beyond the per-source limits, or beyond the handshake limit when the queue
/// for handshake slots is full, is closed right after accept, before TLS. One that finds every
/// slot taken waits in that queue. An admitted one has `handshake_timeout` from accept
/// (its wait included) to its WebSocket upgrade,
/// TLS and every HTTP request on the way included: a connection that has not upgraded by
/// then is closed (plain requests for the demo, /healthz … are served meanwhile).
pub async fn accept_loop(ctx: Arc<ServerContext>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = ctx.shutdown.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, typically: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admittance = match ctx.admission.admit_or_queue(peer.ip()) {
            Ok(admittance) => admittance,
            Err(refusal) => {
                refuse(tcp, peer, refusal);
                continue;
            }
        };
        let deadline = tokio::time::Instant::now() + ctx.config.handshake_timeout;
        let ctx2 = ctx.clone();
        let tls = tls.clone();
        // Socket options in the connection's task: the accept loop only accepts (a storm).
        ctx.tasks.spawn(async move {
            let Admitted {
                connection,
                handshake,
            } = match admittance {
                Admittance::Now(admitted) => admitted,
                Admittance::Queued(queued) => {
                    match tokio::time::timeout_at(deadline, queued.slot()).await {
                        Ok(Some(admitted)) => admitted,
                        Ok(None) | Err(_) => {
                            tracing::debug!(%peer, "no handshake slot before the deadline");
                            metrics::handshake_failed(Transport::WebSocket, "timeout");
                            return;
                        }
                    }
                }
            };
            tune_socket(&tcp, ctx2.config.hub.liveness.tcp_backstop());
            let tcp_witness = (ctx2.config.tcp_ack_evidence != TcpAckEvidence::Never)
                .then(|| TcpWitness::new(&tcp))
                .flatten();
            let connection = Arc::new(connection);
            match tls {
                None => {
                    let handshake = Handshake::new(deadline, handshake);
                    let tcp_side = TcpSide {
                        peer,
                        scheme: Scheme::Http,
                        tcp_witness,
                    };
                    serve_http(ctx2, tcp, tcp_side, handshake, connection).await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let handshake = Handshake::new(deadline, handshake);
                            let tcp_side = TcpSide {
                                peer,
                                scheme: Scheme::Https,
                                tcp_witness,
                            };
                            serve_http(ctx2, stream, tcp_side, handshake, connection).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            metrics::handshake_failed(Transport::WebSocket, "tls");
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            metrics::handshake_failed(Transport::WebSocket, "timeout");
                        }
                    }
                }
            }
        });
    }
}

/// Closes a connection the limits refused at once, with a reset: no TLS, no FIN handshake,
/// no TIME_WAIT left behind on our side.
fn refuse(tcp: TcpStream, peer: SocketAddr, refusal: Refusal) {
    metrics::connection_refused(Transport::WebSocket, refusal.label());
    tracing::debug!(%peer, reason = refusal.label(), "TCP connection refused");
    if let Err(error) = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO)) {
        tracing::debug!(%error, "cannot set SO_LINGER");
    }
    drop(tcp);
}

/// The rest of a TCP connection's handshake: its deadline and its handshake slot.
struct Handshake {
    deadline: tokio::time::Instant,
    _slot: HandshakePermit,
}

impl Handshake {
    fn new(deadline: tokio::time::Instant, slot: HandshakePermit) -> Handshake {
        Handshake {
            deadline,
            _slot: slot,
        }
    }
}

/// - TCP_USER_TIMEOUT: the kernel's backstop for a vanished peer; without it unacknowledged
///   data is retransmitted for ~15 minutes (tcp_retries2 = 15) before the socket errors out.
///   Set just after the liveness timeout, so that the liveness verdict comes first.
/// - Linear retransmission timeouts for thin streams: a lost probe or reply is retried every
///   RTO instead of after 0.4, 0.8, 1.6, 3.2 s …, so a lossy but live connection gets many
///   more chances within one liveness timeout (signaling connections are always thin), and
///   the retransmission timeout capped at one second where the kernel applies no linear
///   timeouts (under BBR).
fn tune_socket(tcp: &TcpStream, user_timeout: Duration) {
    let _ = tcp.set_nodelay(true);
    let socket = socket2::SockRef::from(tcp);
    if let Err(error) = socket.set_tcp_user_timeout(Some(user_timeout)) {
        tracing::warn!(%error, "cannot set TCP_USER_TIMEOUT");
    }
    if let Err(error) = socket.set_tcp_thin_linear_timeouts(true) {
        tracing::debug!(%error, "cannot set TCP_THIN_LINEAR_TIMEOUTS");
    }
    if let Err(error) = tcp_liveness::cap_retransmission_backoff(tcp) {
        tracing::debug!(%error, "cannot set TCP_RTO_MAX_MS (Linux 6.15 and later)");
    }
}

/// What the HTTP layer knows of the TCP connection under it.
#[derive(Debug, Clone, Copy)]
struct TcpSide {
    peer: SocketAddr,
    scheme: Scheme,
    /// None when TCP acknowledgements never count as liveness evidence.
    tcp_witness: Option<TcpWitness>,
}

/// Serves HTTP on one connection until it upgrades to a WebSocket (the upgraded connection
/// then lives on in its own task, with `permit`), ends, or reaches the handshake deadline.
async fn serve_http<S>(
    ctx: Arc<ServerContext>,
    stream: S,
    tcp_side: TcpSide,
    handshake: Handshake,
    permit: Arc<ConnectionPermit>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = tcp_side.peer;
    let ctx2 = ctx.clone();
    let answered = Arc::new(AtomicBool::new(false));
    let answered2 = answered.clone();
    let service = service_fn(move |req| {
        let ctx = ctx2.clone();
        let permit = permit.clone();
        answered2.store(true, Ordering::Relaxed);
        async move { Ok::<_, Infallible>(route(ctx, tcp_side, &permit, req)) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.config.handshake_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        // Ends with the upgrade (the connection is handed over) or with the connection.
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
        }
        () = tokio::time::sleep_until(handshake.deadline) => {
            if answered.load(Ordering::Relaxed) {
                tracing::debug!(%peer, "HTTP connection closed at the handshake deadline");
            } else {
                tracing::debug!(%peer, "no request within the handshake timeout");
                metrics::handshake_failed(Transport::WebSocket, "timeout");
            }
        }
        () = ctx.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(ctx.config.shutdown_grace, conn).await;
        }
    }
}

fn route(
    ctx: Arc<ServerContext>,
    tcp_side: TcpSide,
    permit: &Arc<ConnectionPermit>,
    req: Request<Incoming>,
) -> Response<Body> {
    let TcpSide { peer, scheme, .. } = tcp_side;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/ws" => websocket_upgrade(ctx, tcp_side, permit.clone(), req),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/cert-hash" => readable_from_pages(
            &ctx,
            &req,
            json(format!(
                r#"{{"algorithm":"sha-256","value":"{}"}}"#,
                ctx.certificate.sha256_hex()
            )),
        ),
        "/endpoints" => readable_from_pages(&ctx, &req, json(endpoints_json(&ctx, scheme, &req))),
        "/dev-token" => dev_token(&ctx, peer, &req),
        path => match assets::get(path) {
            Some(asset) => Response::builder()
                .header(header::CONTENT_TYPE, asset.content_type)
                .header(header::CACHE_CONTROL, "no-cache")
                .body(Full::new(Bytes::from_static(asset.bytes)))
                .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "response\n")),
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
}

/// Development tokens for the demo: `GET /dev-token?sub=NAME` → `{"token": "…"}` (every room,
/// one hour, `name` = the sub). Only where nobody else can reach it: the gateway has an
/// HS256 secret, every listener is on loopback, and the request comes from loopback.
/// Anywhere else the route does not exist (404).
fn dev_token(ctx: &ServerContext, peer: SocketAddr, req: &Request<Incoming>) -> Response<Body> {
    let Some(auth) = ctx.auth.as_ref().filter(|_| dev_tokens_allowed(ctx, peer)) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let sub = req
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("sub="))
        .unwrap_or("");
    let plain = |s: &str| {
        (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if !plain(sub) {
        return text(
            StatusCode::BAD_REQUEST,
            "sub must be 1 to 64 characters of A-Z a-z 0-9 . _ -\n",
        );
    }
    let mut spec = crate::auth::TokenSpec::new(sub, ["*"]);
    spec.name = Some(sub.to_string());
    match auth.mint_hs256(&spec, std::time::SystemTime::now()) {
        Ok(token) => json(format!(r#"{{"token":"{token}"}}"#)),
        // The keys are public keys only: no development tokens.
        Err(_) => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn dev_tokens_allowed(ctx: &ServerContext, peer: SocketAddr) -> bool {
    let bound = &ctx.bound;
    peer.ip().is_loopback()
        && bound.listen.ip().is_loopback()
        && bound.http.is_none_or(|a| a.ip().is_loopback())
        && bound.webtransport.iter().all(|a| a.ip().is_loopback())
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Public facts (where to connect, the certificate hash) that a page of an allowed origin may
/// read across origins (CORS): in a cluster the SDK asks any gateway's `/endpoints`, not only
/// the one that served the page. Nothing secret is behind these, and no credentials are
/// involved.
fn readable_from_pages(
    ctx: &ServerContext,
    req: &Request<Incoming>,
    mut response: Response<Body>,
) -> Response<Body> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return response;
    };
    if ctx.config.origin_allowed(origin.to_str().ok()) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

fn json(body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The authority (`host[:port]`) the client used and its host part, if the Host header is
/// plain: letters, digits and `.-:[]` only (it is echoed into JSON).
fn request_authority(req: &Request<Incoming>) -> Option<(String, String)> {
    let authority = req.headers().get(header::HOST)?.to_str().ok()?;
    let plain = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !plain {
        return None;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next()?),
        None => authority.split(':').next()?.to_string(),
    };
    (!host.is_empty()).then(|| (authority.to_string(), host))
}

/// Where a page served by this gateway should connect. WebTransport uses 127.0.0.1 when
/// the page came from `localhost`: Chromium resolves localhost to [::1] only for it.
fn endpoints_json(ctx: &ServerContext, scheme: Scheme, req: &Request<Incoming>) -> String {
    let listen = ctx.bound.listen;
    let request = request_authority(req);
    let host = request
        .as_ref()
        .map_or_else(|| listen.ip().to_string(), |(_, host)| host.clone());
    let request_authority = request.map(|(authority, _)| authority);
    let websocket = match (scheme, request_authority) {
        (Scheme::Http, Some(authority)) => format!("ws://{authority}/ws"),
        (Scheme::Https, Some(authority)) => format!("wss://{authority}/ws"),
        (_, None) => format!("wss://{host}:{}/ws", listen.port()),
    };
    let webtransport = if ctx.bound.webtransport.is_empty() {
        "null".to_string()
    } else {
        let wt_host = if host == "localhost" {
            "127.0.0.1"
        } else {
            host.as_str()
        };
        format!(r#""https://{wt_host}:{}/wt""#, listen.port())
    };
    format!(
        r#"{{"webtransport":{webtransport},"websocket":"{websocket}","websocket_tls":"wss://{host}:{port}/ws","cert_sha256":"{hash}","gateways":{gateways}}}"#,
        port = listen.port(),
        hash = ctx.certificate.sha256_hex(),
        gateways = cluster_gateways_json(ctx),
    )
}

/// Cluster mode: every gateway that answers and is not draining, this one first, each with
/// its own certificate hash (WebTransport pins it per gateway), for the SDK to spread over
/// and fail over to. Alone: an empty list.
fn cluster_gateways_json(ctx: &ServerContext) -> String {
    let endpoints = match ctx.cluster_endpoints.read() {
        Ok(endpoints) => endpoints.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let gateways: Vec<serde_json::Value> = endpoints
        .iter()
        .filter(|e| !e.draining)
        .map(|e| {
            serde_json::json!({
                "node": e.node,
                "websocket": e.websocket_url,
                "webtransport": (!e.webtransport_url.is_empty()).then_some(&e.webtransport_url),
                "cert_sha256": e.certificate_sha256,
            })
        })
        .collect();
    serde_json::Value::Array(gateways).to_string()
}

fn websocket_upgrade(
    ctx: Arc<ServerContext>,
    tcp_side: TcpSide,
    permit: Arc<ConnectionPermit>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let peer = tcp_side.peer;
    let headers = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        metrics::handshake_failed(Transport::WebSocket, "bad_request");
        return text(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket only\n",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        metrics::handshake_failed(Transport::WebSocket, "bad_request");
        return text(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Version must be 13\n",
        );
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        metrics::handshake_failed(Transport::WebSocket, "bad_request");
        return text(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing\n");
    };
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if !ctx.config.origin_allowed(origin) {
        tracing::info!(%peer, origin = origin.unwrap_or(""), "WebSocket origin refused");
        metrics::handshake_failed(Transport::WebSocket, "origin");
        return text(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    let tcp_witness = tcp_side
        .tcp_witness
        .filter(|_| ctx.config.tcp_ack_evidence.applies(peer.ip(), headers));
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    let ctx2 = ctx.clone();
    ctx.tasks.spawn(async move {
        // The source's connection count lasts as long as the WebSocket.
        let _permit = permit;
        match upgrade.await {
            Ok(upgraded) => {
                let limits = &ctx2.config.hub.limits;
                let config = websocket::config(limits.max_frame_bytes);
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                let link = websocket::spawn(
                    ws,
                    peer,
                    limits.max_frame_bytes,
                    ctx2.config.outbound_queue,
                    tcp_witness,
                );
                connection::drive(ctx2, link).await;
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "WebSocket upgrade failed");
                metrics::handshake_failed(Transport::WebSocket, "io");
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}
