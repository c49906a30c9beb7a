//! Authentication over real sockets and both transports: every refusal a client can meet
//! (missing, malformed, bad signature, expired, not yet valid, revoked by rotation of keys is
//! the auth module's unit tests), grants, the same identity taking its session over, in-band
//! refresh, and expiry without refresh.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use signalgate::auth::{AuthSettings, SecretString, TokenSpec, mint_hs256};
use signalgate::client::{ClientError, Connection, Incoming, Session};
use signalgate::config::Settings;
use signalgate::proto::{ErrorCode, PresenceState, Reason};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

#[derive(Debug, Clone, Copy)]
enum Kind {
    WebSocket,
    WebTransport,
}

const BOTH: [Kind; 2] = [Kind::WebSocket, Kind::WebTransport];

async fn secured(extra: Settings) -> Gateway {
    Gateway::start_with(Settings {
        auth: AuthSettings {
            hs256_secret: Some(SecretString::new(SECRET)),
            ..AuthSettings::default()
        },
        ..extra
    })
    .await
}

fn token(spec: &TokenSpec) -> String {
    mint_hs256(SECRET.as_bytes(), spec, SystemTime::now()).expect("mint")
}

fn for_(sub: &str, rooms: &[&str]) -> TokenSpec {
    TokenSpec::new(sub, rooms.iter().copied())
}

async fn connect(gw: &Gateway, kind: Kind) -> Connection {
    match kind {
        Kind::WebSocket => gw.ws().await,
        Kind::WebTransport => gw.wt().await,
    }
}

/// The close code the client saw (frames before the close are skipped).
async fn close_code(session: &mut Session) -> Option<u16> {
    loop {
        match session.connection_mut().recv_within(WAIT).await {
            Ok(Incoming::Closed { code, .. }) => return code,
            Ok(_) => continue,
            Err(e) => panic!("no close: {e}"),
        }
    }
}

fn refused(result: Result<Session, ClientError>) -> signalgate::proto::Error {
    match result {
        Err(ClientError::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn hellos_with_a_missing_malformed_forged_expired_or_early_token_are_refused_by_code() {
    let gw = secured(Settings::default()).await;
    let forged = mint_hs256(
        b"another-secret-of-at-least-32-bytes!!",
        &for_("eve", &["r"]),
        SystemTime::now(),
    )
    .expect("mint");
    let now = SystemTime::now();
    let expired = mint_hs256(
        SECRET.as_bytes(),
        &for_("alice", &["r"]),
        now - Duration::from_secs(7200),
    )
    .expect("mint");
    let early = mint_hs256(
        SECRET.as_bytes(),
        &for_("alice", &["r"]),
        now + Duration::from_secs(7200),
    )
    .expect("mint");
    let cases = [
        ("", ErrorCode::TokenMissing),
        ("not.a.jwt", ErrorCode::TokenMalformed),
        (forged.as_str(), ErrorCode::TokenBadSignature),
        (expired.as_str(), ErrorCode::TokenExpired),
        (early.as_str(), ErrorCode::TokenNotYetValid),
    ];
    for kind in BOTH {
        for (token, code) in &cases {
            let error = refused(Session::start_with_token(connect(&gw, kind).await, token).await);
            assert_eq!(error.code(), *code, "{kind:?}: {}", error.message);
            if !token.is_empty() {
                assert!(!error.message.contains(token), "the token is never echoed");
            }
        }
    }
    // A valid one on the same gateway works.
    let ok = Session::start_with_token(gw.ws().await, &token(&for_("alice", &["r"]))).await;
    assert_eq!(ok.expect("welcome").welcome().identity, "alice");
    gw.stop().await;
}

#[tokio::test]
async fn rooms_and_signals_follow_the_token_and_peers_see_its_name() {
    let gw = secured(Settings::default()).await;
    for kind in BOTH {
        let mut alice_spec = for_("alice", &["lobby", "team-*"]);
        alice_spec.name = Some("Alice".into());
        let mut alice = Session::start_with_token(connect(&gw, kind).await, &token(&alice_spec))
            .await
            .expect("alice");
        let err = alice.join("elsewhere").await.expect_err("not granted");
        assert!(
            matches!(err, ClientError::Refused(ref e) if e.code() == ErrorCode::RoomNotGranted),
            "{err}"
        );
        alice.join("team-blue").await.expect("prefix grant");
        let mut listener_spec = for_(&format!("carol-{kind:?}"), &["team-blue"]);
        listener_spec.signal = false;
        let mut carol = Session::start_with_token(connect(&gw, kind).await, &token(&listener_spec))
            .await
            .expect("carol");
        let joined = carol.join("team-blue").await.expect("join");
        let alice_seen = joined
            .peers
            .iter()
            .find(|p| p.peer_id == alice.peer_id())
            .expect("alice listed");
        assert_eq!(alice_seen.name, "Alice");
        let id = carol
            .signal("team-blue", alice.peer_id(), data(b"hi"))
            .expect("send");
        let error = carol
            .wait_for(WAIT, "an Error", |f| {
                error_of(f).filter(|e| e.in_reply_to == id)
            })
            .await
            .expect("refused");
        assert_eq!(error.code(), ErrorCode::SignalNotGranted);
        alice.leave("team-blue").await.expect("leave");
    }
    gw.stop().await;
}

/// The seed's second half: an app restarted, lost its resume token, and comes back as the same
/// user — never refused ("already connected"), never a ghost beside a newcomer.
#[tokio::test]
async fn the_same_identity_takes_its_session_over_without_a_resume_token() {
    let gw = secured(Settings::default()).await;
    for kind in BOTH {
        let sub = format!("phone-user-{kind:?}");
        let phone =
            Session::start_with_token(connect(&gw, kind).await, &token(&for_(&sub, &["r"])))
                .await
                .expect("phone");
        let mut observer = Session::start_with_token(
            gw.ws().await,
            &token(&for_(&format!("obs-{kind:?}"), &["r"])),
        )
        .await
        .expect("observer");
        let mut phone = phone;
        phone.join("r").await.expect("join");
        observer.join("r").await.expect("join");
        let peer_id = phone.peer_id().to_string();
        // The app restarts: a new connection, no resume token, a new token of the same user.
        let mut again =
            Session::start_with_token(connect(&gw, kind).await, &token(&for_(&sub, &["r"])))
                .await
                .expect("never refused");
        assert!(again.welcome().resumed);
        assert_eq!(again.peer_id(), peer_id, "same peer, not a newcomer");
        assert_eq!(again.welcome().rooms, ["r"]);
        // The old connection is closed as superseded; the observer sees nothing at all.
        assert_eq!(close_code(&mut phone).await, Some(4001));
        observer.ping().await.expect("pong");
        assert!(
            next_peer_state(&mut observer, ms(300)).await.is_err(),
            "no presence change for a take-over"
        );
        // And it works: a signal to it arrives.
        observer
            .signal("r", &peer_id, data(b"welcome back"))
            .expect("send");
        next_signal(&mut again).await.expect("relayed");
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_token_is_refreshed_in_band_and_an_unrefreshed_one_closes_the_connection_after_the_grace()
{
    let gw = secured(Settings {
        token_grace: Some(ms(800)),
        ..Settings::default()
    })
    .await;
    for kind in BOTH {
        let sub = format!("short-{kind:?}");
        let mut short = for_(&sub, &["r"]);
        short.ttl = Duration::from_secs(2);
        let mut session = Session::start_with_token(connect(&gw, kind).await, &token(&short))
            .await
            .expect("welcome");
        let expires = session.welcome().token_expires_in_ms;
        assert!((1000..=2000).contains(&expires), "{expires}");
        // Refreshed in time: a longer token.
        let refreshed = session
            .refresh(&token(&for_(&sub, &["r"])))
            .await
            .expect("refreshed");
        assert!(refreshed.token_expires_in_ms > 3_000_000);
        // Another identity's token is refused and changes nothing.
        let err = session
            .refresh(&token(&for_("someone-else", &["r"])))
            .await
            .expect_err("mismatch");
        assert!(
            matches!(err, ClientError::Refused(ref e) if e.code() == ErrorCode::IdentityMismatch),
            "{err}"
        );
        // A short token without refresh: warned, then closed with 4006 after the grace.
        let mut lapsing = for_(&format!("lapsing-{kind:?}"), &["r"]);
        lapsing.ttl = Duration::from_secs(2);
        let mut lapsed = Session::start_with_token(connect(&gw, kind).await, &token(&lapsing))
            .await
            .expect("welcome");
        let warning = lapsed
            .wait_for(Duration::from_secs(4), "the expiry warning", error_of)
            .await
            .expect("warned");
        assert_eq!(warning.code(), ErrorCode::TokenExpired);
        assert_eq!(close_code(&mut lapsed).await, Some(4006));
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_expired_session_comes_back_with_a_fresh_token_under_the_same_peer_id() {
    let gw = secured(Settings {
        token_grace: Some(ms(300)),
        resume_window: Some(Duration::from_secs(20)),
        ..Settings::default()
    })
    .await;
    let mut short = for_("lapsing", &["r"]);
    short.ttl = Duration::from_secs(1);
    let mut session = Session::start_with_token(gw.ws().await, &token(&short))
        .await
        .expect("welcome");
    session.join("r").await.expect("join");
    let mut observer = Session::start_with_token(gw.ws().await, &token(&for_("watcher", &["r"])))
        .await
        .expect("observer");
    observer.join("r").await.expect("join");
    let state = session.resume_state();
    let lost = next_peer_state(&mut observer, Duration::from_secs(5))
        .await
        .expect("unreachable");
    assert_eq!(lost.state(), PresenceState::Unreachable);
    assert_eq!(lost.reason(), Reason::TokenExpired);
    let back = Session::resume_with_token(gw.wt().await, &state, &token(&for_("lapsing", &["r"])))
        .await
        .expect("resumed with a fresh token");
    assert_eq!(back.peer_id(), session.peer_id());
    gw.stop().await;
}

/// `cargo run` to a two-tab call with tokens: the demo gets development tokens from the
/// gateway itself — only with an HS256 secret and only on loopback.
#[tokio::test]
async fn development_tokens_come_from_the_gateway_only_with_a_secret_on_loopback() {
    let gw = secured(Settings::default()).await;
    let (status, body) = http_get(gw.http_addr(), "/dev-token?sub=alice").await;
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).expect("json");
    let token = value["token"].as_str().expect("a token");
    let session = Session::start_with_token(gw.ws().await, token)
        .await
        .expect("the development token is accepted");
    assert_eq!(session.welcome().identity, "alice");
    let (status, _) = http_get(gw.http_addr(), "/dev-token?sub=%3Cscript%3E").await;
    assert_eq!(status, 400);
    gw.stop().await;
    let open = Gateway::start().await;
    let (status, _) = http_get(open.http_addr(), "/dev-token?sub=alice").await;
    assert_eq!(status, 404, "no route without a secret");
    open.stop().await;
}
