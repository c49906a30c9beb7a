//! The backend API over real HTTP (a plain TCP client writing HTTP/1.1), with real WebSocket
//! and WebTransport sessions: the bearer secret, listing sessions and rooms, disconnecting a
//! peer or an identity, revoking an identity's tokens, bad requests, the OpenAPI document
//! against what is served, and the configuration (off by default, no start without a secret).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use common::*;
use serde_json::{Value, json};
use signalgate::auth::{AuthSettings, SecretString, TokenSpec, mint_hs256};
use signalgate::client::{ClientError, Connection, Incoming, Session};
use signalgate::config::{Config, Listen, Settings};
use signalgate::proto::{ErrorCode, PresenceState, Reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const API_SECRET: &str = "api-secret-0123456789abcdef-0123456789abcdef";
const TOKEN_SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

#[derive(Debug, Clone, Copy)]
enum Kind {
    WebSocket,
    WebTransport,
}

const BOTH: [Kind; 2] = [Kind::WebSocket, Kind::WebTransport];

fn with_api(settings: Settings) -> Settings {
    Settings {
        api_listen: Some(Listen::On("127.0.0.1:0".parse().expect("addr"))),
        api_secret: Some(SecretString::new(API_SECRET)),
        ..settings
    }
}

/// A gateway with the API on, without tokens.
async fn gateway() -> Gateway {
    Gateway::start_with(with_api(Settings::default())).await
}

/// A gateway with the API on and HS256 tokens required.
async fn gateway_with_tokens() -> Gateway {
    Gateway::start_with(with_api(Settings {
        auth: AuthSettings {
            hs256_secret: Some(SecretString::new(TOKEN_SECRET)),
            ..AuthSettings::default()
        },
        ..Settings::default()
    }))
    .await
}

fn api_addr(gw: &Gateway) -> SocketAddr {
    gw.running().bound().api.expect("the backend API listens")
}

async fn connect(gw: &Gateway, kind: Kind) -> Connection {
    match kind {
        Kind::WebSocket => gw.ws().await,
        Kind::WebTransport => gw.wt().await,
    }
}

fn token_at(spec: &TokenSpec, at: SystemTime) -> String {
    mint_hs256(TOKEN_SECRET.as_bytes(), spec, at).expect("mint")
}

fn spec(sub: &str, device: Option<&str>) -> TokenSpec {
    let mut spec = TokenSpec::new(sub, ["lobby"]);
    spec.device = device.map(str::to_owned);
    spec
}

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    text: String,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

/// Sends `head` (request line and headers, without the final blank line) and `body` as they
/// are, with `Connection: close`, and reads the whole reply.
async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the API");
    let mut request = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("the API answers in time")
        .expect("read");
    let text = String::from_utf8(response).expect("UTF-8 reply");
    let (head, body_text) = text.split_once("\r\n\r\n").expect("a complete reply");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let body = if body_text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body_text).unwrap_or_else(|e| panic!("not JSON ({e}): {body_text}"))
    };
    Reply {
        status,
        headers,
        text: body_text.to_owned(),
        body,
    }
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut head = format!("{method} {path} HTTP/1.1");
    if let Some(authorization) = authorization {
        head.push_str(&format!("\r\nAuthorization: {authorization}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    if !body.is_empty() {
        head.push_str(&format!(
            "\r\nContent-Type: application/json\r\nContent-Length: {}",
            body.len()
        ));
    }
    raw(addr, &head, body.as_bytes()).await
}

fn bearer() -> String {
    format!("Bearer {API_SECRET}")
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, Some(&bearer()), None).await
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> Reply {
    request(addr, "POST", path, Some(&bearer()), Some(&body)).await
}

/// `GET /v1/sessions`, as (peer id → session JSON).
async fn sessions(addr: SocketAddr, query: &str) -> Vec<Value> {
    let reply = get(addr, &format!("/v1/sessions{query}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["sessions"]
        .as_array()
        .expect("a sessions array")
        .clone()
}

fn peer_ids(sessions: &[Value]) -> Vec<&str> {
    sessions
        .iter()
        .map(|s| s["peer_id"].as_str().expect("peer_id"))
        .collect()
}

fn sorted<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut ids: Vec<&str> = ids.into_iter().collect();
    ids.sort_unstable();
    ids
}

/// What a disconnected client sees: the Error DISCONNECTED, then the close code.
async fn disconnect_seen_by(session: &mut Session) -> (signalgate::proto::Error, Option<u16>) {
    let mut error = None;
    loop {
        match session.connection_mut().recv_within(WAIT).await {
            Ok(Incoming::Frame(frame)) => {
                if let Some(e) = error_of(&frame) {
                    error = Some(e);
                }
            }
            Ok(Incoming::Closed { code, .. }) => {
                return (error.expect("an Error before the close"), code);
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => panic!("no close: {e}"),
        }
    }
}

async fn assert_disconnected(session: &mut Session, reason: &str) {
    let (error, code) = disconnect_seen_by(session).await;
    assert_eq!(error.code(), ErrorCode::Disconnected, "{}", error.message);
    assert!(
        error.message.contains(reason),
        "the client sees the reason: {}",
        error.message
    );
    assert_eq!(code, Some(4007), "closed with 4007 (disconnected)");
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn without_the_secret_or_with_another_one_every_request_is_401() {
    let gw = gateway().await;
    let addr = api_addr(&gw);
    let wrong_last = format!("Bearer {}x", &API_SECRET[..API_SECRET.len() - 1]);
    let prefix = format!("Bearer {}", &API_SECRET[..32]);
    let longer = format!("Bearer {API_SECRET}0");
    let basic = format!("Basic {API_SECRET}");
    let bare = API_SECRET.to_owned();
    let attempts: [(Option<&str>, bool); 7] = [
        (None, false),
        (Some("Bearer"), false),
        (Some(&basic), false),
        (Some(&bare), false),
        (Some(&wrong_last), true),
        (Some(&prefix), true),
        (Some(&longer), true),
    ];
    let body = json!({"reason": "r"});
    let targets: [(&str, &str, Option<&Value>); 5] = [
        ("GET", "/v1/health", None),
        ("GET", "/v1/sessions", None),
        ("GET", "/v1/no-such-endpoint", None),
        ("DELETE", "/v1/sessions", None),
        ("POST", "/v1/identities/alice/revoke", Some(&body)),
    ];
    for (authorization, wrong_secret) in attempts {
        for (method, path, body) in targets {
            let reply = request(addr, method, path, authorization, body).await;
            assert_eq!(
                reply.status, 401,
                "{method} {path} with {authorization:?}: {}",
                reply.text
            );
            assert_eq!(reply.code(), "unauthorized", "{}", reply.text);
            let challenge = reply.header("WWW-Authenticate").expect("a challenge");
            assert!(challenge.starts_with("Bearer "), "{challenge}");
            assert_eq!(
                challenge.contains("invalid_token"),
                wrong_secret,
                "{challenge}"
            );
            assert!(
                !reply.text.contains(&API_SECRET[..16]),
                "the secret is never echoed"
            );
        }
    }
    let reply = get(addr, "/v1/health").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"sessions": 0, "rooms": 0}));
    assert_eq!(reply.header("Content-Type"), Some("application/json"));
    // The scheme is case-insensitive.
    let reply = request(
        addr,
        "GET",
        "/v1/health",
        Some(&format!("bearer {API_SECRET}")),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Sessions and rooms
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sessions_and_rooms_list_websocket_and_webtransport_sessions() {
    let gw = gateway().await;
    let addr = api_addr(&gw);
    let mut ws = gw.ws_session().await;
    let mut wt = gw.wt_session().await;
    let mut sleeper = gw.ws_session().await;
    ws.join("lobby").await.expect("ws joins");
    wt.join("lobby").await.expect("wt joins");
    wt.join("side").await.expect("wt joins side");
    sleeper.join("lobby").await.expect("sleeper joins");
    // The sleeper is suspended (its page frozen): unreachable, reason `suspended`.
    sleeper.suspend().expect("suspend");
    let state = next_peer_state(&mut ws, WAIT).await.expect("PeerState");
    assert_eq!(state.peer_id, sleeper.peer_id());
    assert_eq!(state.state(), PresenceState::Unreachable);

    let listed = sessions(addr, "").await;
    let all = sorted([ws.peer_id(), wt.peer_id(), sleeper.peer_id()]);
    assert_eq!(peer_ids(&listed), all, "every session, by peer id");
    let view = |peer: &str| {
        listed
            .iter()
            .find(|s| s["peer_id"] == peer)
            .expect("listed")
            .clone()
    };
    assert_eq!(
        view(ws.peer_id()),
        json!({
            "peer_id": ws.peer_id(), "identity": null, "device": null, "name": "",
            "state": "online", "away_reason": null, "transport": "websocket",
            "rooms": ["lobby"],
        })
    );
    assert_eq!(
        view(wt.peer_id()),
        json!({
            "peer_id": wt.peer_id(), "identity": null, "device": null, "name": "",
            "state": "online", "away_reason": null, "transport": "webtransport",
            "rooms": ["lobby", "side"],
        })
    );
    let sleeping = view(sleeper.peer_id());
    assert_eq!(sleeping["state"], "unreachable");
    assert_eq!(sleeping["away_reason"], "suspended");
    assert_eq!(sleeping["transport"], "websocket");

    let rooms = get(addr, "/v1/rooms").await;
    assert_eq!(rooms.status, 200, "{}", rooms.text);
    assert_eq!(
        rooms.body,
        json!({"rooms": [
            {"name": "lobby", "members": all},
            {"name": "side", "members": [wt.peer_id()]},
        ]})
    );

    let lobby = get(addr, "/v1/rooms/lobby").await;
    assert_eq!(lobby.status, 200, "{}", lobby.text);
    assert_eq!(lobby.body["name"], "lobby");
    let members = lobby.body["members"].as_array().expect("members");
    assert_eq!(peer_ids(members), all);
    assert_eq!(
        members.iter().find(|m| m["peer_id"] == wt.peer_id()),
        Some(&view(wt.peer_id()))
    );
    let side = get(addr, "/v1/rooms/side").await;
    assert_eq!(side.body["members"], json!([view(wt.peer_id())]));

    let none = get(addr, "/v1/rooms/nowhere").await;
    assert_eq!(none.status, 404, "{}", none.text);
    assert_eq!(none.code(), "not_found");
    assert!(none.message().contains("nowhere"), "{}", none.message());

    let health = get(addr, "/v1/health").await;
    assert_eq!(health.body, json!({"sessions": 3, "rooms": 2}));
    // Without tokens nobody has an identity.
    assert!(sessions(addr, "?identity=alice").await.is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn disconnecting_a_peer_tells_it_why_closes_4007_and_its_peers_see_it_leave() {
    let gw = gateway().await;
    let addr = api_addr(&gw);
    for kind in BOTH {
        let room = format!("room-{kind:?}");
        let mut victim = Session::start(connect(&gw, kind).await)
            .await
            .expect("welcome");
        let mut observer = gw.ws_session().await;
        victim.join(&room).await.expect("victim joins");
        observer.join(&room).await.expect("observer joins");
        let victim_id = victim.peer_id().to_owned();

        let reason = format!("maintenance ({kind:?}), please reload");
        let reply = post(
            addr,
            &format!("/v1/sessions/{victim_id}/disconnect"),
            json!({ "reason": reason }),
        )
        .await;
        assert_eq!(reply.status, 200, "{kind:?}: {}", reply.text);
        assert_eq!(reply.body, json!({"disconnected": 1}));

        assert_disconnected(&mut victim, &reason).await;
        let left = next_peer_left(&mut observer, WAIT).await.expect("PeerLeft");
        assert_eq!(left.peer_id, victim_id);
        assert_eq!(left.room, room);
        assert_eq!(left.reason(), Reason::Disconnected);

        let listed = sessions(addr, "").await;
        assert_eq!(peer_ids(&listed), [observer.peer_id()], "{kind:?}");
        let again = post(
            addr,
            &format!("/v1/sessions/{victim_id}/disconnect"),
            json!({ "reason": reason }),
        )
        .await;
        assert_eq!(again.status, 404, "{}", again.text);
        assert_eq!(again.code(), "not_found");
        assert!(again.message().contains(&victim_id), "{}", again.message());
        observer.close().await;
    }
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Identities (tokens on)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn disconnecting_an_identity_ends_every_device_of_it_and_no_other() {
    let gw = gateway_with_tokens().await;
    let addr = api_addr(&gw);
    let sub = "alice@example.com/team";
    let encoded = "alice%40example.com%2Fteam";
    let now = SystemTime::now();
    let mut phone_spec = spec(sub, Some("phone"));
    phone_spec.name = Some("Alice".into());
    let phone_token = token_at(&phone_spec, now);
    let mut phone = Session::start_with_token(gw.wt().await, &phone_token)
        .await
        .expect("phone");
    let mut laptop =
        Session::start_with_token(gw.ws().await, &token_at(&spec(sub, Some("laptop")), now))
            .await
            .expect("laptop");
    let mut bob = Session::start_with_token(gw.ws().await, &token_at(&spec("bob", None), now))
        .await
        .expect("bob");
    for session in [&mut phone, &mut laptop, &mut bob] {
        session.join("lobby").await.expect("join");
    }

    let alices = sessions(addr, &format!("?identity={encoded}")).await;
    assert_eq!(
        peer_ids(&alices),
        sorted([phone.peer_id(), laptop.peer_id()])
    );
    let phone_view = alices
        .iter()
        .find(|s| s["peer_id"] == phone.peer_id())
        .expect("phone listed");
    assert_eq!(phone_view["identity"], sub);
    assert_eq!(phone_view["device"], "phone");
    assert_eq!(phone_view["name"], "Alice");
    assert_eq!(phone_view["transport"], "webtransport");
    let bobs = sessions(addr, "?identity=bob").await;
    assert_eq!(peer_ids(&bobs), [bob.peer_id()]);
    assert_eq!(bobs[0]["device"], Value::Null);

    let reply = post(
        addr,
        &format!("/v1/identities/{encoded}/disconnect"),
        json!({"reason": "signed out everywhere"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"disconnected": 2}));
    assert_disconnected(&mut phone, "signed out everywhere").await;
    assert_disconnected(&mut laptop, "signed out everywhere").await;
    let mut gone = Vec::new();
    for _ in 0..2 {
        let left = next_peer_left(&mut bob, WAIT).await.expect("PeerLeft");
        assert_eq!(left.reason(), Reason::Disconnected);
        gone.push(left.peer_id);
    }
    gone.sort();
    assert_eq!(gone, sorted([phone.peer_id(), laptop.peer_id()]));
    assert_eq!(peer_ids(&sessions(addr, "").await), [bob.peer_id()]);

    // A disconnect is not a revocation: the same token comes back at once.
    let back = Session::start_with_token(gw.ws().await, &phone_token)
        .await
        .expect("the token still works");
    assert_eq!(back.welcome().identity, sub);
    // An identity without sessions is no error.
    let none = post(
        addr,
        "/v1/identities/nobody/disconnect",
        json!({"reason": "x"}),
    )
    .await;
    assert_eq!(none.status, 200, "{}", none.text);
    assert_eq!(none.body, json!({"disconnected": 0}));
    gw.stop().await;
}

#[tokio::test]
async fn revoking_an_identity_ends_its_sessions_and_refuses_its_tokens_until_the_next_one() {
    let gw = gateway_with_tokens().await;
    let addr = api_addr(&gw);
    let issued = SystemTime::now();
    let alice_token = token_at(&spec("alice", None), issued);
    let bob_token = token_at(&spec("bob", None), issued);
    let mut alice = Session::start_with_token(gw.wt().await, &alice_token)
        .await
        .expect("alice");
    let mut bob = Session::start_with_token(gw.ws().await, &bob_token)
        .await
        .expect("bob");
    alice.join("lobby").await.expect("alice joins");
    bob.join("lobby").await.expect("bob joins");
    let alice_id = alice.peer_id().to_owned();

    let reply = post(
        addr,
        "/v1/identities/alice/revoke",
        json!({"reason": "account suspended"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["disconnected"], 1);
    let revoked_at = reply.body["revoked_at"].as_str().expect("revoked_at");
    let revoked_at = humantime::parse_rfc3339(revoked_at).expect("RFC 3339");
    assert!(
        revoked_at + Duration::from_secs(1) >= issued,
        "{revoked_at:?}"
    );

    assert_disconnected(&mut alice, "account suspended").await;
    let left = next_peer_left(&mut bob, WAIT).await.expect("PeerLeft");
    assert_eq!(
        (left.peer_id.as_str(), left.reason()),
        (alice_id.as_str(), Reason::Disconnected)
    );

    // The token alice holds no longer opens a session, on either transport.
    for kind in BOTH {
        match Session::start_with_token(connect(&gw, kind).await, &alice_token).await {
            Err(ClientError::Refused(e)) => {
                assert_eq!(e.code(), ErrorCode::TokenRevoked, "{kind:?}: {}", e.message);
            }
            other => panic!("{kind:?}: the revoked token was not refused: {other:?}"),
        }
    }
    // Nor any other token of alice issued up to the revocation.
    let same_second = token_at(&spec("alice", Some("tablet")), revoked_at);
    match Session::start_with_token(gw.ws().await, &same_second).await {
        Err(ClientError::Refused(e)) => assert_eq!(e.code(), ErrorCode::TokenRevoked),
        other => panic!("a token issued in the revocation's second was not refused: {other:?}"),
    }
    // Bob is untouched: still online, and his token still works.
    assert_eq!(
        peer_ids(&sessions(addr, "?identity=bob").await),
        [bob.peer_id()]
    );
    bob.ping().await.expect("bob is connected");
    // Alice's next token (issued after the revocation, iat has whole seconds) works.
    let next = token_at(&spec("alice", None), revoked_at + Duration::from_secs(1));
    let back = Session::start_with_token(gw.wt().await, &next)
        .await
        .expect("the next token is accepted");
    assert_eq!(back.welcome().identity, "alice");
    let listed = sessions(addr, "?identity=alice").await;
    assert_eq!(peer_ids(&listed), [back.peer_id()]);
    gw.stop().await;
}

#[tokio::test]
async fn revoking_without_tokens_is_a_conflict_that_says_why() {
    let gw = gateway().await;
    let addr = api_addr(&gw);
    let reply = post(addr, "/v1/identities/alice/revoke", json!({"reason": "x"})).await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert_eq!(reply.code(), "tokens_disabled");
    assert!(
        reply.message().contains("tokens are off"),
        "{}",
        reply.message()
    );
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Bad requests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_requests_are_refused_with_the_status_and_code_that_name_the_problem() {
    let gw = gateway().await;
    let addr = api_addr(&gw);
    let session = gw.ws_session().await;
    let disconnect = format!("/v1/sessions/{}/disconnect", session.peer_id());

    let long = "r".repeat(129);
    let reply = get(addr, &format!("/v1/rooms/{long}")).await;
    assert_eq!(
        (reply.status, reply.code()),
        (400, "invalid_argument"),
        "{}",
        reply.text
    );
    assert!(
        reply.message().contains("room") && reply.message().contains("129 bytes"),
        "{}",
        reply.message()
    );
    let reply = post(
        addr,
        &format!("/v1/sessions/{}/disconnect", "p".repeat(200)),
        json!({"reason": "x"}),
    )
    .await;
    assert_eq!(
        (reply.status, reply.code()),
        (400, "invalid_argument"),
        "{}",
        reply.text
    );
    assert!(reply.message().contains("peer_id"), "{}", reply.message());
    let reply = get(addr, "/v1/rooms/a%ZZb").await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.message().contains("a%ZZb"), "{}", reply.message());
    let reply = get(addr, "/v1/sessions?identiy=alice").await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.message().contains("identiy"), "{}", reply.message());
    let reply = get(addr, "/v1/rooms?x=1").await;
    assert_eq!(reply.status, 400, "{}", reply.text);

    let reply = post(addr, &disconnect, json!({"reason": ""})).await;
    assert_eq!(
        (reply.status, reply.code()),
        (400, "invalid_argument"),
        "{}",
        reply.text
    );
    assert!(reply.message().contains("reason"), "{}", reply.message());
    let reply = post(addr, &disconnect, json!({"reason": "r".repeat(257)})).await;
    assert_eq!(
        (reply.status, reply.code()),
        (400, "invalid_argument"),
        "{}",
        reply.text
    );
    let reply = post(addr, &disconnect, json!({"reasn": "typo"})).await;
    assert_eq!(
        (reply.status, reply.code()),
        (400, "invalid_json"),
        "{}",
        reply.text
    );
    assert!(reply.message().contains("reasn"), "{}", reply.message());
    let reply = post(addr, &disconnect, json!(["reason"])).await;
    assert_eq!(
        (reply.status, reply.code()),
        (400, "invalid_json"),
        "{}",
        reply.text
    );
    let head = format!("POST {disconnect} HTTP/1.1\r\nAuthorization: {}", bearer());
    let reply = raw(
        addr,
        &format!("{head}\r\nContent-Type: application/json\r\nContent-Length: 5"),
        b"{nope",
    )
    .await;
    assert_eq!(
        (reply.status, reply.code()),
        (400, "invalid_json"),
        "{}",
        reply.text
    );
    let reply = raw(
        addr,
        &format!("{head}\r\nContent-Type: text/plain\r\nContent-Length: 15"),
        b"{\"reason\":\"x\"}\n",
    )
    .await;
    assert_eq!(
        (reply.status, reply.code()),
        (415, "unsupported_media_type"),
        "{}",
        reply.text
    );
    let reply = raw(addr, &format!("{head}\r\nContent-Length: 0"), b"").await;
    assert_eq!(
        (reply.status, reply.code()),
        (415, "unsupported_media_type"),
        "{}",
        reply.text
    );

    // Bodies beyond 16 KiB: declared, or sent chunked without a length.
    let big = format!("{{\"reason\":\"{}\"}}", "x".repeat(17 * 1024));
    let reply = raw(
        addr,
        &format!(
            "{head}\r\nContent-Type: application/json\r\nContent-Length: {}",
            big.len()
        ),
        big.as_bytes(),
    )
    .await;
    assert_eq!(
        (reply.status, reply.code()),
        (413, "body_too_large"),
        "{}",
        reply.text
    );
    let chunked = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let reply = raw(
        addr,
        &format!("{head}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"),
        chunked.as_bytes(),
    )
    .await;
    assert_eq!(
        (reply.status, reply.code()),
        (413, "body_too_large"),
        "{}",
        reply.text
    );

    let reply = request(addr, "DELETE", "/v1/sessions", Some(&bearer()), None).await;
    assert_eq!(
        (reply.status, reply.code()),
        (405, "method_not_allowed"),
        "{}",
        reply.text
    );
    assert_eq!(reply.header("Allow"), Some("GET"));
    let reply = get(addr, &disconnect).await;
    assert_eq!(reply.status, 405, "{}", reply.text);
    assert_eq!(reply.header("Allow"), Some("POST"));
    let reply = get(addr, "/v1/nothing-here").await;
    assert_eq!(
        (reply.status, reply.code()),
        (404, "not_found"),
        "{}",
        reply.text
    );

    // None of this touched the session.
    assert_eq!(peer_ids(&sessions(addr, "").await), [session.peer_id()]);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The OpenAPI document against what is served
// ---------------------------------------------------------------------------------------------

const OPENAPI: &str = include_str!("../docs/api/openapi.yaml");

/// (method, path) under `paths:` (path keys indented 2 spaces, operations 4). The unit test in
/// src/server/api.rs checks the other direction (every served route is documented).
fn documented_operations() -> Vec<(String, String)> {
    const METHODS: &[&str] = &[
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut operations = Vec::new();
    let mut in_paths = false;
    let mut path = String::new();
    for line in OPENAPI.lines().map(str::trim_end) {
        let indent = line.len() - line.trim_start().len();
        let key = line.trim_start().strip_suffix(':');
        match (indent, key) {
            (_, _) if line.trim().is_empty() => {}
            (0, _) => in_paths = line == "paths:",
            (2, Some(key)) if in_paths => path = key.trim_matches('"').to_owned(),
            (4, Some(method)) if in_paths && METHODS.contains(&method) => {
                operations.push((method.to_ascii_uppercase(), path.clone()));
            }
            _ => {}
        }
    }
    operations
}

#[tokio::test]
async fn every_operation_of_the_openapi_document_is_served() {
    let gw = gateway_with_tokens().await;
    let addr = api_addr(&gw);
    let operations = documented_operations();
    assert_eq!(operations.len(), 7, "{operations:?}");
    for (method, path) in operations {
        let concrete = path
            .split('/')
            .map(|part| {
                if part.starts_with('{') {
                    "someone"
                } else {
                    part
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let body = (method == "POST").then(|| json!({"reason": "checking the document"}));
        let reply = request(addr, &method, &concrete, Some(&bearer()), body.as_ref()).await;
        assert_ne!(
            reply.code(),
            "method_not_allowed",
            "{method} {path}: {}",
            reply.text
        );
        assert!(
            !reply.message().starts_with("no endpoint"),
            "{method} {path} is documented but not served: {}",
            reply.text
        );
        assert!(
            [200, 404].contains(&reply.status),
            "{method} {path}: {}",
            reply.text
        );
    }
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_api_is_off_by_default() {
    let gw = Gateway::start().await;
    assert_eq!(gw.running().bound().api, None);
    assert!(gw.running().config().api.is_none());
    gw.stop().await;
}

fn config(settings: Settings) -> Result<Config, String> {
    Config::try_from(settings).map_err(|e| e.to_string())
}

#[test]
fn the_api_needs_a_secret_of_32_printable_bytes_and_messages_never_show_it() {
    let on = || Settings {
        api_listen: Some(Listen::On("127.0.0.1:9470".parse().expect("addr"))),
        ..Settings::default()
    };
    let err = config(on()).expect_err("no secret");
    assert!(
        err.contains("--api-secret-file") && err.contains("--api-secret"),
        "{err}"
    );

    let short = "short-but-secret-value";
    let err = config(Settings {
        api_secret: Some(SecretString::new(short)),
        ..on()
    })
    .expect_err("too short");
    assert!(
        err.contains("--api-secret") && err.contains("22 bytes") && err.contains("32"),
        "{err}"
    );
    assert!(!err.contains(short), "the secret is never shown: {err}");

    let spaced = "a secret with spaces that is long enough";
    let err = config(Settings {
        api_secret: Some(SecretString::new(spaced)),
        ..on()
    })
    .expect_err("spaces");
    assert!(
        err.contains("printable ASCII") && !err.contains(spaced),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("api-secret");
    std::fs::write(&file, format!("{API_SECRET}\n")).expect("write");
    let err = config(Settings {
        api_secret: Some(SecretString::new(API_SECRET)),
        api_secret_file: Some(file.clone()),
        ..on()
    })
    .expect_err("both");
    assert!(err.contains("both"), "{err}");

    let c = config(Settings {
        api_secret_file: Some(file.clone()),
        ..on()
    })
    .expect("a secret file with a trailing newline");
    let api = c.api.as_ref().expect("api on");
    assert_eq!(api.secret.expose(), API_SECRET);
    assert!(
        !format!("{c:?}").contains(API_SECRET),
        "Debug never shows the secret"
    );

    let missing = dir.path().join("nope");
    let err = config(Settings {
        api_secret_file: Some(missing.clone()),
        ..on()
    })
    .expect_err("missing file");
    assert!(
        err.contains("--api-secret-file") && err.contains(&missing.display().to_string()),
        "{err}"
    );

    // A secret without the listener: checked, but nothing listens.
    let c = config(Settings {
        api_secret: Some(SecretString::new(API_SECRET)),
        ..Settings::default()
    })
    .expect("valid");
    assert!(c.api.is_none());
    let c = config(Settings {
        api_listen: Some(Listen::Off),
        ..Settings::default()
    })
    .expect("off");
    assert!(c.api.is_none());
}

/// The binary refuses to start with the API on and no (or a bad) secret, naming the flag.
#[test]
fn the_binary_refuses_to_start_the_api_without_a_secret() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let short = "not-long-enough-secret";
    for extra in [vec![], vec!["--api-secret", short]] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_signalgate"))
            .arg("serve")
            .args(["--http-listen", "off", "--metrics-listen", "off"])
            .args(["--api-listen", "127.0.0.1:0"])
            .arg("--dev-cert-dir")
            .arg(dir.path())
            .args(&extra)
            .env("SIGNALGATE_LISTEN", "127.0.0.1:0")
            .env_remove("SIGNALGATE_API_SECRET")
            .env_remove("SIGNALGATE_API_SECRET_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the gateway started with the API and {extra:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        assert!(!status.success(), "{extra:?}");
        assert!(stderr.contains("--api-secret"), "{extra:?}: {stderr}");
        assert!(
            !stderr.contains(short),
            "the secret is never printed: {stderr}"
        );
    }
}

/// The hub's answer to GET /v1/sessions reflects presence: a session that comes back from
/// UNREACHABLE is online again, with its new transport.
#[tokio::test]
async fn a_resumed_session_is_online_again_over_its_new_transport() {
    let gw = gateway().await;
    let addr = api_addr(&gw);
    let mut observer = gw.ws_session().await;
    let mut phone = gw.ws_session().await;
    observer.join("lobby").await.expect("join");
    phone.join("lobby").await.expect("join");
    let peer = phone.peer_id().to_owned();
    let state = phone.resume_state();
    phone.suspend().expect("suspend");
    next_peer_state(&mut observer, WAIT)
        .await
        .expect("unreachable");
    let listed = sessions(addr, "").await;
    let away = listed
        .iter()
        .find(|s| s["peer_id"] == peer.as_str())
        .expect("listed");
    assert_eq!(
        (away["state"].as_str(), away["away_reason"].as_str()),
        (Some("unreachable"), Some("suspended"))
    );
    let back = Session::resume(gw.wt().await, &state)
        .await
        .expect("resumed");
    assert!(back.welcome().resumed);
    let again = next_peer_state(&mut observer, WAIT)
        .await
        .expect("online again");
    assert_eq!(again.state(), PresenceState::Online);
    let listed = sessions(addr, "").await;
    let online = listed
        .iter()
        .find(|s| s["peer_id"] == peer.as_str())
        .expect("listed");
    assert_eq!(online["state"], "online");
    assert_eq!(online["away_reason"], Value::Null);
    assert_eq!(online["transport"], "webtransport");
    gw.stop().await;
}

/// A connection that says nothing, or stays idle after a request, is closed after the header
/// timeout (10 s): silent connections cannot hold the API's connection slots.
#[tokio::test]
async fn silent_and_idle_connections_are_closed_after_the_header_timeout() {
    let gw = gateway().await;
    let addr = api_addr(&gw);
    let silent = tcp_closed_after(addr, Duration::from_secs(15));
    let idle = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET /v1/health HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\n\r\n",
            bearer()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let started = std::time::Instant::now();
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (received, Some(started.elapsed())),
                Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
                Err(_) => return (received, None),
            }
        }
    };
    let (silent, (received, idle)) = tokio::join!(silent, idle);
    let silent = silent.expect("a silent connection is closed");
    assert!(silent <= Duration::from_secs(12), "closed after {silent:?}");
    assert!(
        String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"),
        "answered first"
    );
    let idle = idle.expect("an idle keep-alive connection is closed");
    assert!(idle <= Duration::from_secs(12), "closed after {idle:?}");
    gw.stop().await;
}
