//! The backend API: a plain-HTTP JSON listener (`--api-listen`, off by default) for the
//! application's own servers. They list sessions and rooms, disconnect a session or every
//! session of an identity (the client sees the reason), and revoke an identity's tokens.
//! `docs/api/openapi.yaml` describes every endpoint; [`ROUTES`] is what this module serves, and
//! a test keeps the two equal.
//!
//! - Every request must carry `Authorization: Bearer <--api-secret>`, compared in constant
//!   time (as SHA-256 digests, so that not even the length shows); otherwise 401.
//! - Bounded: request headers within [`HEADER_READ_TIMEOUT`], bodies of at most
//!   [`MAX_BODY_BYTES`] within [`BODY_READ_TIMEOUT`], at most [`MAX_CONNECTIONS`] connections.
//! - The hub is reached only through [`HubInput::Admin`]; an answer that does not come within
//!   [`HUB_ANSWER_TIMEOUT`] is a 503.
//! - Revoking is the [`Authenticator`]'s (tokens of the identity issued up to now are refused
//!   from then on); the hub then ends the identity's sessions.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::ServerContext;
use super::hub_driver::{AdminRequest, HubInput};
use crate::auth::Authenticator;
use crate::core::hub::{DisconnectTarget, RoomView, SessionView};
use crate::core::reason_label;
use crate::proto::PresenceState;

/// Largest request body, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Request headers must arrive within this time (also how long an idle connection may wait
/// for its next request).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's body must arrive within this time.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for the hub's answer before it is a 503.
pub const HUB_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; beyond, new ones are closed right after accept.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest peer id, identity (`sub`) or room name in a path or a query, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest disconnect reason, in bytes.
pub const MAX_REASON_BYTES: usize = 256;

type Body = Full<Bytes>;

/// What the router serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Health,
    Sessions,
    Rooms,
    Room,
    DisconnectSession,
    DisconnectIdentity,
    RevokeIdentity,
}

/// Every endpoint: method, path template (OpenAPI syntax, `{name}` is one path segment),
/// handler. The router serves these and nothing else; `docs/api/openapi.yaml` must list
/// exactly these (a test checks both ways).
const ROUTES: &[(&str, &str, Endpoint)] = &[
    ("GET", "/v1/health", Endpoint::Health),
    ("GET", "/v1/sessions", Endpoint::Sessions),
    ("GET", "/v1/rooms", Endpoint::Rooms),
    ("GET", "/v1/rooms/{room}", Endpoint::Room),
    (
        "POST",
        "/v1/sessions/{peer_id}/disconnect",
        Endpoint::DisconnectSession,
    ),
    (
        "POST",
        "/v1/identities/{sub}/disconnect",
        Endpoint::DisconnectIdentity,
    ),
    (
        "POST",
        "/v1/identities/{sub}/revoke",
        Endpoint::RevokeIdentity,
    ),
];

/// Why a request is refused; each is one HTTP status and one stable `code`.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("this API requires `Authorization: Bearer <secret>` (the gateway's --api-secret)")]
    MissingSecret,
    #[error("the bearer secret is wrong")]
    WrongSecret,
    #[error("no endpoint {path}; see docs/api/openapi.yaml")]
    UnknownEndpoint { path: String },
    #[error("{method} is not allowed on {path}; allowed: {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: String,
    },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("the body is not the JSON this endpoint takes: {0}")]
    InvalidJson(String),
    #[error("the body must be JSON: send Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("the body did not arrive within {BODY_READ_TIMEOUT:?}")]
    BodyTimeout,
    #[error("{0}")]
    NotFound(String),
    #[error(
        "tokens are off on this gateway (no --auth-* key), so there is nothing to revoke; \
         use POST /v1/identities/{{sub}}/disconnect to end sessions"
    )]
    TokensDisabled,
    #[error(
        "the gateway did not answer within {HUB_ANSWER_TIMEOUT:?} (busy or shutting down); try again"
    )]
    HubUnavailable,
}

/// Every `code` an error body can carry (the OpenAPI document lists the same).
#[cfg(test)]
const ERROR_CODES: &[&str] = &[
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "invalid_argument",
    "invalid_json",
    "unsupported_media_type",
    "body_too_large",
    "request_timeout",
    "tokens_disabled",
    "unavailable",
    "internal",
];

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingSecret | ApiError::WrongSecret => StatusCode::UNAUTHORIZED,
            ApiError::UnknownEndpoint { .. } | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::InvalidArgument(_) | ApiError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TokensDisabled => StatusCode::CONFLICT,
            ApiError::HubUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::MissingSecret | ApiError::WrongSecret => "unauthorized",
            ApiError::UnknownEndpoint { .. } | ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::InvalidArgument(_) => "invalid_argument",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::BodyTooLarge => "body_too_large",
            ApiError::BodyTimeout => "request_timeout",
            ApiError::TokensDisabled => "tokens_disabled",
            ApiError::HubUnavailable => "unavailable",
        }
    }

    fn into_response(self) -> Response<Body> {
        #[derive(Serialize)]
        struct Detail<'a> {
            code: &'a str,
            message: String,
        }
        #[derive(Serialize)]
        struct ErrorBody<'a> {
            error: Detail<'a>,
        }
        let body = ErrorBody {
            error: Detail {
                code: self.code(),
                message: self.to_string(),
            },
        };
        let mut response = json(self.status(), &body);
        let headers = response.headers_mut();
        match &self {
            ApiError::MissingSecret => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"signalgate\""),
                );
            }
            ApiError::WrongSecret => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"signalgate\", error=\"invalid_token\"",
                    ),
                );
            }
            ApiError::MethodNotAllowed { allowed, .. } => {
                if let Ok(value) = HeaderValue::from_str(allowed) {
                    headers.insert(header::ALLOW, value);
                }
            }
            _ => {}
        }
        response
    }
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(bytes) => (status, bytes),
        Err(error) => {
            tracing::error!(%error, "backend API: cannot serialize a response");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"error":{"code":"internal","message":"cannot serialize the response"}}"#
                    .to_vec(),
            )
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The state the handlers share: where the hub is, the secret's digest, the authenticator.
struct Api {
    hub: mpsc::Sender<HubInput>,
    secret_sha256: [u8; 32],
    auth: Option<Arc<Authenticator>>,
    hub_timeout: Duration,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Equal without an early exit: the time taken does not depend on where they differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Accepts API connections until shutdown. Does nothing without an API configuration.
pub async fn accept_loop(ctx: Arc<ServerContext>, listener: TcpListener) {
    let Some(config) = ctx.config.api.as_ref() else {
        return;
    };
    let api = Arc::new(Api {
        hub: ctx.hub.clone(),
        secret_sha256: sha256(config.secret.expose().as_bytes()),
        auth: ctx.auth.clone(),
        hub_timeout: HUB_ANSWER_TIMEOUT,
    });
    if let Ok(addr) = listener.local_addr() {
        if addr.ip().is_loopback() {
            tracing::info!(%addr, "backend API listening (plain HTTP, bearer secret)");
        } else {
            tracing::warn!(
                %addr,
                "backend API listening on a non-loopback address: it is plain HTTP, keep it \
                 on a private network (the secret travels in clear)"
            );
        }
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = ctx.shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, typically: back off instead of spinning.
                tracing::warn!(%error, "backend API: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "backend API: {MAX_CONNECTIONS} connections open, refusing one");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let api = api.clone();
        let ctx2 = ctx.clone();
        ctx.tasks.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.handle(request).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(%peer, %error, "backend API: connection ended with an error");
                    }
                }
                () = ctx2.shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(ctx2.config.shutdown_grace, conn).await;
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// `POST …/disconnect` and `…/revoke`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    /// Shown to the client in its Error DISCONNECTED.
    reason: String,
}

/// A matched route: the endpoint and its path parameters, decoded and checked.
#[derive(Debug, PartialEq, Eq)]
struct Matched {
    endpoint: Endpoint,
    params: Vec<String>,
}

/// Matches `path` against [`ROUTES`]: the endpoint, or 404 (no template matches) or 405 (a
/// template matches, with other methods). Parameters are percent-decoded per segment (so
/// `%2F` stays inside its name) and checked by [`check_name`].
fn route(method: &Method, path: &str) -> Result<Matched, ApiError> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut allowed: Vec<&str> = Vec::new();
    for (route_method, template, endpoint) in ROUTES {
        let parts: Vec<&str> = template.split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut raw_params = Vec::new();
        let fits = parts.iter().zip(&segments).all(|(part, segment)| {
            match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => {
                    raw_params.push((name, *segment));
                    true
                }
                None => part == segment,
            }
        });
        if !fits {
            continue;
        }
        if method.as_str() != *route_method {
            allowed.push(route_method);
            continue;
        }
        let params = raw_params
            .into_iter()
            .map(|(name, raw)| percent_decode(name, raw).and_then(|v| check_name(name, v)))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Matched {
            endpoint: *endpoint,
            params,
        });
    }
    if allowed.is_empty() {
        return Err(ApiError::UnknownEndpoint { path: shown(path) });
    }
    allowed.dedup();
    Err(ApiError::MethodNotAllowed {
        method: shown(method.as_str()),
        path: shown(path),
        allowed: allowed.join(", "),
    })
}

/// A value for a message: at most 64 characters, quoted and escaped.
fn shown(value: &str) -> String {
    let mut short: String = value.chars().take(64).collect();
    if short.len() < value.len() {
        short.push('…');
    }
    format!("{short:?}")
}

/// `%XX` escapes decoded (`+` is a plus sign, not a space); the result must be UTF-8.
fn percent_decode(name: &str, raw: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::InvalidArgument(format!("{name} {}: {why}", shown(raw)));
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("a % must be followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("not UTF-8 once decoded"))
}

/// A peer id, identity or room name: 1 to [`MAX_NAME_BYTES`] bytes, no control characters.
fn check_name(name: &str, value: String) -> Result<String, ApiError> {
    let bad = |why: String| ApiError::InvalidArgument(format!("{name} {}: {why}", shown(&value)));
    if value.is_empty() {
        return Err(bad("is empty".to_owned()));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(bad(format!(
            "is {} bytes long, more than {MAX_NAME_BYTES}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(bad("contains control characters".to_owned()));
    }
    Ok(value)
}

/// The query's parameters, each decoded; only those in `accepted`, each at most once.
fn query_params(query: Option<&str>, accepted: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let mut params: Vec<(String, String)> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode("query parameter", raw_key)?;
        if !accepted.contains(&key.as_str()) {
            let takes = match accepted {
                [] => "no query parameters".to_owned(),
                names => format!("only {}", names.join(", ")),
            };
            return Err(ApiError::InvalidArgument(format!(
                "unknown query parameter {}: this endpoint takes {takes}",
                shown(&key)
            )));
        }
        if params.iter().any(|(k, _)| *k == key) {
            return Err(ApiError::InvalidArgument(format!(
                "query parameter {key} is given more than once"
            )));
        }
        let value = percent_decode(&key, raw_value).and_then(|v| check_name(&key, v))?;
        params.push((key, value));
    }
    Ok(params)
}

fn authorize(headers: &HeaderMap, secret_sha256: &[u8; 32]) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::MissingSecret);
    };
    let value = value.as_bytes();
    let presented = match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => value[7..].trim_ascii(),
        _ => return Err(ApiError::MissingSecret),
    };
    if constant_time_eq(&sha256(presented), secret_sha256) {
        Ok(())
    } else {
        Err(ApiError::WrongSecret)
    }
}

/// The body of a POST: JSON (by Content-Type), at most [`MAX_BODY_BYTES`], within
/// [`BODY_READ_TIMEOUT`].
async fn json_body<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::BodyTooLarge);
    }
    let limited = Limited::new(req.into_body(), MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(BODY_READ_TIMEOUT, limited.collect()).await {
        Err(_) => return Err(ApiError::BodyTimeout),
        Ok(Err(error)) => {
            if error.is::<http_body_util::LengthLimitError>() {
                return Err(ApiError::BodyTooLarge);
            }
            return Err(ApiError::InvalidArgument(format!(
                "the body could not be read: {error}"
            )));
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    // An object only: serde would also take a struct from an array of its fields.
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(invalid_json)?;
    if !value.is_object() {
        return Err(ApiError::InvalidJson("expected a JSON object".to_owned()));
    }
    serde_json::from_value(value).map_err(invalid_json)
}

/// serde_json's message (it names the field or the position), at most 200 bytes.
fn invalid_json(error: serde_json::Error) -> ApiError {
    let mut message = error.to_string();
    if message.len() > 200 {
        let mut end = 200;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    ApiError::InvalidJson(message)
}

fn check_reason(reason: &str) -> Result<(), ApiError> {
    if reason.trim().is_empty() {
        return Err(ApiError::InvalidArgument(
            "reason is empty: say why (the client sees it)".to_owned(),
        ));
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::InvalidArgument(format!(
            "reason is {} bytes long, more than {MAX_REASON_BYTES}",
            reason.len()
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(ApiError::InvalidArgument(
            "reason contains control characters".to_owned(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct SessionJson<'a> {
    peer_id: &'a str,
    identity: Option<&'a str>,
    device: Option<&'a str>,
    name: &'a str,
    state: &'static str,
    away_reason: Option<&'static str>,
    transport: &'static str,
    rooms: &'a [String],
}

impl<'a> From<&'a SessionView> for SessionJson<'a> {
    fn from(s: &'a SessionView) -> Self {
        SessionJson {
            peer_id: &s.peer_id,
            identity: s.identity.as_deref(),
            device: s.device.as_deref(),
            name: &s.name,
            state: match s.state {
                PresenceState::Online => "online",
                // The hub's sessions are online or away; away is UNREACHABLE.
                PresenceState::Unreachable | PresenceState::Unspecified => "unreachable",
            },
            away_reason: s.away_reason.map(reason_label),
            transport: s.transport.label(),
            rooms: &s.rooms,
        }
    }
}

#[derive(Serialize)]
struct SessionsJson<'a> {
    sessions: Vec<SessionJson<'a>>,
}

#[derive(Serialize)]
struct RoomJson<'a> {
    name: &'a str,
    members: &'a [String],
}

#[derive(Serialize)]
struct RoomsJson<'a> {
    rooms: Vec<RoomJson<'a>>,
}

#[derive(Serialize)]
struct RoomDetailJson<'a> {
    name: &'a str,
    members: Vec<SessionJson<'a>>,
}

#[derive(Serialize)]
struct DisconnectedJson {
    disconnected: usize,
}

#[derive(Serialize)]
struct RevokedJson {
    /// RFC 3339, whole seconds: tokens issued (`iat`) at or before it are refused.
    revoked_at: String,
    disconnected: usize,
}

#[derive(Serialize)]
struct HealthJson {
    sessions: usize,
    rooms: usize,
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

impl Api {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let response = match self.serve(req).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%method, path = %shown(&path), code = error.code(), %error, "backend API: refused");
                error.into_response()
            }
        };
        tracing::debug!(%method, path = %shown(&path), status = response.status().as_u16(), "backend API");
        response
    }

    async fn serve(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        // Before anything else: a caller without the secret learns nothing, not even which
        // paths exist.
        authorize(req.headers(), &self.secret_sha256)?;
        let Matched { endpoint, params } = route(req.method(), req.uri().path())?;
        let accepted: &[&str] = match endpoint {
            Endpoint::Sessions => &["identity"],
            _ => &[],
        };
        let query = query_params(req.uri().query(), accepted)?;
        let param = params.into_iter().next().unwrap_or_default();
        match endpoint {
            Endpoint::Health => {
                let sessions = self.ask(AdminRequest::Sessions).await?;
                let rooms = self.ask(AdminRequest::Rooms).await?;
                Ok(json(
                    StatusCode::OK,
                    &HealthJson {
                        sessions: sessions.len(),
                        rooms: rooms.len(),
                    },
                ))
            }
            Endpoint::Sessions => {
                let identity = query
                    .into_iter()
                    .find(|(k, _)| k == "identity")
                    .map(|(_, v)| v);
                let sessions = self.ask(AdminRequest::Sessions).await?;
                let sessions = sessions
                    .iter()
                    .filter(|s| identity.is_none() || s.identity == identity)
                    .map(SessionJson::from)
                    .collect();
                Ok(json(StatusCode::OK, &SessionsJson { sessions }))
            }
            Endpoint::Rooms => {
                let rooms = self.ask(AdminRequest::Rooms).await?;
                let rooms = rooms
                    .iter()
                    .map(|r| RoomJson {
                        name: &r.name,
                        members: &r.members,
                    })
                    .collect();
                Ok(json(StatusCode::OK, &RoomsJson { rooms }))
            }
            Endpoint::Room => self.room(&param).await,
            Endpoint::DisconnectSession => {
                let body: DisconnectBody = json_body(req).await?;
                check_reason(&body.reason)?;
                let target = DisconnectTarget::Peer(param.clone());
                let disconnected = self.disconnect(target, body.reason.clone()).await?;
                tracing::info!(peer_id = %param, reason = ?body.reason, disconnected, "backend API: session disconnected");
                if disconnected == 0 {
                    return Err(ApiError::NotFound(format!(
                        "no session with peer_id {}",
                        shown(&param)
                    )));
                }
                Ok(json(StatusCode::OK, &DisconnectedJson { disconnected }))
            }
            Endpoint::DisconnectIdentity => {
                let body: DisconnectBody = json_body(req).await?;
                check_reason(&body.reason)?;
                let target = DisconnectTarget::Identity(param.clone());
                let disconnected = self.disconnect(target, body.reason.clone()).await?;
                tracing::info!(sub = %param, reason = ?body.reason, disconnected, "backend API: identity disconnected");
                Ok(json(StatusCode::OK, &DisconnectedJson { disconnected }))
            }
            Endpoint::RevokeIdentity => {
                let Some(auth) = self.auth.clone() else {
                    return Err(ApiError::TokensDisabled);
                };
                let body: DisconnectBody = json_body(req).await?;
                check_reason(&body.reason)?;
                // Revoked first, so that a client cut off cannot come back with the token it
                // holds meanwhile.
                let at = SystemTime::now();
                auth.revoke(&param, at);
                let target = DisconnectTarget::Identity(param.clone());
                let disconnected = self.disconnect(target, body.reason.clone()).await?;
                tracing::info!(sub = %param, reason = ?body.reason, disconnected, "backend API: identity revoked");
                Ok(json(
                    StatusCode::OK,
                    &RevokedJson {
                        revoked_at: humantime::format_rfc3339_seconds(at).to_string(),
                        disconnected,
                    },
                ))
            }
        }
    }

    async fn room(&self, name: &str) -> Result<Response<Body>, ApiError> {
        let rooms: Vec<RoomView> = self.ask(AdminRequest::Rooms).await?;
        let Some(room) = rooms.into_iter().find(|r| r.name == name) else {
            return Err(ApiError::NotFound(format!("no room {}", shown(name))));
        };
        let sessions = self.ask(AdminRequest::Sessions).await?;
        // In the room's order; a member whose session ended between the two answers is left
        // out.
        let members = room
            .members
            .iter()
            .filter_map(|peer| sessions.iter().find(|s| &s.peer_id == peer))
            .map(SessionJson::from)
            .collect();
        Ok(json(
            StatusCode::OK,
            &RoomDetailJson {
                name: &room.name,
                members,
            },
        ))
    }

    async fn disconnect(
        &self,
        target: DisconnectTarget,
        message: String,
    ) -> Result<usize, ApiError> {
        self.ask(|reply| AdminRequest::Disconnect {
            target,
            message,
            reply,
        })
        .await
    }

    /// Sends a request to the hub and waits for its answer, both within `hub_timeout`.
    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> AdminRequest,
    ) -> Result<T, ApiError> {
        let (reply, answer) = oneshot::channel();
        let asked = async {
            self.hub
                .send(HubInput::Admin(request(reply)))
                .await
                .map_err(|_| ApiError::HubUnavailable)?;
            answer.await.map_err(|_| ApiError::HubUnavailable)
        };
        tokio::time::timeout(self.hub_timeout, asked)
            .await
            .map_err(|_| ApiError::HubUnavailable)?
    }
}

#[cfg(test)]
mod tests;
