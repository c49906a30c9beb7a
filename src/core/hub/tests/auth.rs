//! With tokens: the identity owns its session (take-over without a resume token, never
//! refused, no ghost), grants decide rooms and signalling, tokens expire and are refreshed,
//! and the backend may list and disconnect.

use super::*;
use crate::core::identity::{Credentials, Grants, Identity, Profile, RoomGrant, Verified};
use crate::proto::{Ping, Refresh};

fn verified(
    f: &Fixture,
    sub: &str,
    device: Option<&str>,
    rooms: &[&str],
    expires_s: f64,
) -> Credentials {
    let rooms = rooms
        .iter()
        .map(|r| match r.strip_suffix('*') {
            Some(prefix) => RoomGrant::Prefix(prefix.into()),
            None => RoomGrant::Exact((*r).into()),
        })
        .collect();
    Credentials::Verified(Verified {
        identity: Identity {
            sub: sub.into(),
            device: device.map(Into::into),
        },
        grants: Grants {
            rooms,
            signal: true,
        },
        profile: Profile {
            name: format!("{sub} the user"),
            metadata: r#"{"role":"guest"}"#.into(),
        },
        expires_at: f.at(expires_s),
    })
}

fn authenticated() -> Fixture {
    Fixture::with(HubConfig {
        authentication: true,
        token_grace: secs(5.0),
        ..HubConfig::default()
    })
}

/// Hello with credentials at `at_s` seconds; returns the connection and the outputs.
fn hello_as(
    f: &mut Fixture,
    at_s: f64,
    credentials: Credentials,
    hello: Hello,
) -> (ConnId, Vec<Output>) {
    let now = f.at(at_s);
    let conn = f.open(now, Transport::WebSocket);
    f.hub.hello_received(now, conn, 1, hello, credentials);
    (conn, f.drain())
}

fn login(f: &mut Fixture, now: Instant, sub: &str, rooms: &[&str]) -> Client {
    let credentials = verified(f, sub, None, rooms, 3600.0);
    let (conn, out) = hello_as(
        f,
        now.duration_since(f.t0).as_secs_f64(),
        credentials,
        Hello::default(),
    );
    let w = welcome_of(&out, conn);
    assert_eq!(w.identity, sub);
    Client {
        conn,
        peer_id: w.peer_id,
        token: w.resume_token,
    }
}

#[test]
fn an_unverified_hello_is_refused_when_tokens_are_required() {
    let mut f = authenticated();
    let now = f.at(0.0);
    let conn = f.open(now, Transport::WebSocket);
    let out = f.hello_on(now, conn, Hello::default());
    assert_eq!(error_code(&out, conn), ErrorCode::TokenMissing);
    let refused = Credentials::Refused {
        code: ErrorCode::TokenExpired,
        message: "the token expired 3 s ago".into(),
    };
    f.hub
        .hello_received(now, conn, 2, Hello::default(), refused);
    let out = f.drain();
    let errors = errors_to(&out, conn);
    assert_eq!(errors[0].code(), ErrorCode::TokenExpired);
    assert_eq!(errors[0].in_reply_to, 2);
}

#[test]
fn a_flood_of_bad_tokens_on_one_connection_is_closed_not_answered_forever() {
    let mut f = authenticated();
    let now = f.at(0.0);
    let conn = f.open(now, Transport::WebSocket);
    let mut answered = 0;
    for id in 0..10_000 {
        let refused = Credentials::Refused {
            code: ErrorCode::TokenBadSignature,
            message: "no key verifies it".into(),
        };
        f.hub
            .hello_received(now, conn, id, Hello::default(), refused);
        let out = f.drain();
        answered += errors_to(&out, conn).len();
        if !closes(&out).is_empty() {
            break;
        }
    }
    assert!(answered <= 18, "{answered} errors before the close");
}

#[test]
fn welcome_says_the_identity_and_when_its_token_expires_and_peers_see_the_profile() {
    let mut f = authenticated();
    let now = f.at(0.0);
    let credentials = verified(&f, "alice", None, &["demo"], 600.0);
    let (conn, out) = hello_as(&mut f, 0.0, credentials, Hello::default());
    let w = welcome_of(&out, conn);
    assert_eq!(w.identity, "alice");
    assert_eq!(w.token_expires_in_ms, 600_000);
    let alice = Client {
        conn,
        peer_id: w.peer_id,
        token: w.resume_token,
    };
    f.join(now, &alice, "demo");
    let bob = login(&mut f, now, "bob", &["demo"]);
    let out = f.join(now, &bob, "demo");
    match msgs_to(&out, bob.conn).as_slice() {
        [server_frame::Msg::Joined(j)] => {
            assert_eq!(j.peers[0].name, "alice the user");
            assert_eq!(j.peers[0].metadata, r#"{"role":"guest"}"#);
        }
        other => panic!("{other:?}"),
    }
    match msgs_to(&out, alice.conn).as_slice() {
        [server_frame::Msg::PeerJoined(p)] => {
            assert_eq!(p.peer.as_ref().expect("peer").name, "bob the user");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rooms_and_signalling_follow_the_grants() {
    let mut f = authenticated();
    let now = f.at(0.0);
    let alice = login(&mut f, now, "alice", &["lobby", "team-*"]);
    assert_eq!(
        error_code(&f.join(now, &alice, "elsewhere"), alice.conn),
        ErrorCode::RoomNotGranted
    );
    assert!(errors_to(&f.join(now, &alice, "lobby"), alice.conn).is_empty());
    assert!(errors_to(&f.join(now, &alice, "team-blue"), alice.conn).is_empty());
    let mut listener = verified(&f, "carol", None, &["lobby"], 3600.0);
    if let Credentials::Verified(v) = &mut listener {
        v.grants.signal = false;
    }
    let (conn, out) = hello_as(&mut f, 0.0, listener, Hello::default());
    let carol = Client {
        conn,
        peer_id: welcome_of(&out, conn).peer_id,
        token: String::new(),
    };
    f.join(now, &carol, "lobby");
    f.signal(now, &carol, "lobby", &alice.peer_id, b"hi");
    let out = f.drain();
    assert_eq!(error_code(&out, carol.conn), ErrorCode::SignalNotGranted);
    assert!(data_signals(&out, alice.conn).is_empty());
}

#[test]
fn the_same_identity_without_a_resume_token_takes_its_session_over_with_one_transition() {
    // The seed's second half: a phone app restarted, lost its resume token, and comes back
    // as the same user. Never refused, never a ghost plus a newcomer.
    let mut f = authenticated();
    let now = f.at(0.0);
    let alice = login(&mut f, now, "alice", &["r"]);
    let bob = login(&mut f, now, "bob", &["r"]);
    f.join(now, &alice, "r");
    f.join(now, &bob, "r");
    f.send_numbered(now, alice.conn, 1, Msg::Ping(Ping::default()));
    f.drain();
    // Case 1: the old connection still looks alive.
    let credentials = verified(&f, "alice", None, &["r"], 3600.0);
    let (again, out) = hello_as(&mut f, 1.0, credentials, Hello::default());
    let w = welcome_of(&out, again);
    assert!(w.resumed);
    assert_eq!(w.peer_id, alice.peer_id, "same peer, same rooms");
    assert_eq!(w.rooms, ["r"]);
    assert_eq!(
        w.last_client_seq, 0,
        "a client without state numbers from 1 again"
    );
    assert_eq!(closes(&out), [(alice.conn, Reason::Superseded)]);
    assert!(
        msgs_to(&out, bob.conn).is_empty(),
        "bob sees nothing: alice never left"
    );
    // Its frames count from 1 again.
    f.send_numbered(
        f.at(1.1),
        again,
        1,
        Msg::Signal(data_signal("r", &bob.peer_id, b"hi")),
    );
    assert_eq!(data_signals(&f.drain(), bob.conn).len(), 1);
    // Case 2: away (its connection lost), and a signal waits for it.
    f.hub
        .connection_lost(f.at(2.0), again, Reason::ConnectionLost, secs(0.0));
    f.signal(f.at(2.1), &bob, "r", &alice.peer_id, b"while away");
    f.drain();
    let credentials = verified(&f, "alice", None, &["r"], 3600.0);
    let (third, out) = hello_as(&mut f, 3.0, credentials, Hello::default());
    assert_eq!(welcome_of(&out, third).peer_id, alice.peer_id);
    let got: Vec<Bytes> = data_signals(&out, third).into_iter().map(|s| s.2).collect();
    assert!(got.contains(&Bytes::from_static(b"while away")), "{got:?}");
    let states = peer_states(&out, bob.conn);
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].state(), PresenceState::Online);
    assert!(peer_lefts(&out, bob.conn).is_empty());
    assert_eq!(f.hub.sessions().len(), 2, "no ghost");
}

#[test]
fn another_device_of_the_same_identity_is_another_session() {
    let mut f = authenticated();
    let phone = verified(&f, "alice", Some("phone"), &["r"], 3600.0);
    let laptop = verified(&f, "alice", Some("laptop"), &["r"], 3600.0);
    let (c1, out1) = hello_as(&mut f, 0.0, phone, Hello::default());
    let (c2, out2) = hello_as(&mut f, 0.0, laptop, Hello::default());
    assert_ne!(welcome_of(&out1, c1).peer_id, welcome_of(&out2, c2).peer_id);
    assert!(closes(&out2).is_empty());
}

#[test]
fn a_resume_token_of_another_identity_is_refused() {
    let mut f = authenticated();
    let now = f.at(0.0);
    let alice = login(&mut f, now, "alice", &["r"]);
    let mallory = verified(&f, "mallory", None, &["r"], 3600.0);
    let hello = Hello {
        resume_token: alice.token.clone(),
        attempt: 1,
        ..Default::default()
    };
    let (conn, out) = hello_as(&mut f, 1.0, mallory, hello);
    assert_eq!(error_code(&out, conn), ErrorCode::IdentityMismatch);
    assert!(
        closes(&out).iter().all(|(c, _)| *c != alice.conn),
        "alice keeps her session"
    );
}

#[test]
fn an_expired_token_is_warned_then_closed_after_the_grace_unless_refreshed() {
    let mut f = authenticated(); // grace 5 s
    let now = f.at(0.0);
    let credentials = verified(&f, "alice", None, &["r"], 60.0);
    let (conn, out) = hello_as(&mut f, 0.0, credentials, Hello::default());
    let alice = Client {
        conn,
        peer_id: welcome_of(&out, conn).peer_id,
        token: String::new(),
    };
    f.join(now, &alice, "r");
    f.hub.handle_timeout(f.at(60.0));
    let out = f.drain();
    assert_eq!(error_code(&out, conn), ErrorCode::TokenExpired);
    assert!(closes(&out).is_empty(), "a grace to refresh");
    f.hub.handle_timeout(f.at(65.0));
    let out = f.drain();
    assert_eq!(closes(&out), [(conn, Reason::TokenExpired)]);
    // The session stays resumable — with a fresh token.
    let fresh = verified(&f, "alice", None, &["r"], 3600.0);
    let (back, out) = hello_as(&mut f, 70.0, fresh, Hello::default());
    assert_eq!(welcome_of(&out, back).peer_id, alice.peer_id);

    // Refreshed in time: never warned, never closed.
    let mut f = authenticated();
    let credentials = verified(&f, "bob", None, &["r"], 60.0);
    let (conn, _) = hello_as(&mut f, 0.0, credentials, Hello::default());
    let fresh = verified(&f, "bob", None, &["r"], 120.0);
    f.hub.refresh_received(f.at(50.0), conn, 9, fresh);
    let out = f.drain();
    match msgs_to(&out, conn).as_slice() {
        [server_frame::Msg::Refreshed(r)] => assert_eq!(r.token_expires_in_ms, 70_000),
        other => panic!("{other:?}"),
    }
    f.hub.handle_timeout(f.at(100.0));
    let out = f.drain();
    assert!(
        errors_to(&out, conn).is_empty() && closes(&out).is_empty(),
        "{out:?}"
    );
}

#[test]
fn a_refresh_for_another_identity_is_refused_and_a_narrower_token_leaves_rooms() {
    let mut f = authenticated();
    let now = f.at(0.0);
    let alice = login(&mut f, now, "alice", &["a", "b"]);
    let bob = login(&mut f, now, "bob", &["b"]);
    f.join(now, &alice, "a");
    f.join(now, &alice, "b");
    f.join(now, &bob, "b");
    let other = verified(&f, "bob", None, &["a", "b"], 3600.0);
    f.hub.refresh_received(now, alice.conn, 5, other);
    assert_eq!(
        error_code(&f.drain(), alice.conn),
        ErrorCode::IdentityMismatch
    );
    let narrower = verified(&f, "alice", None, &["a"], 3600.0);
    f.hub.refresh_received(now, alice.conn, 6, narrower);
    let out = f.drain();
    let to_alice = msgs_to(&out, alice.conn);
    assert!(
        to_alice
            .iter()
            .any(|m| matches!(m, server_frame::Msg::Left(l) if l.room == "b"))
    );
    assert!(
        to_alice
            .iter()
            .any(|m| matches!(m, server_frame::Msg::Refreshed(_)))
    );
    assert_eq!(peer_lefts(&out, bob.conn).len(), 1);
    // An unverified Refresh (the runtime did not check it) changes nothing.
    f.send(now, alice.conn, Msg::Refresh(Refresh { token: "x".into() }));
    assert_eq!(error_code(&f.drain(), alice.conn), ErrorCode::TokenMissing);
}

#[test]
fn the_backend_lists_sessions_and_rooms_and_disconnects_a_peer_or_an_identity() {
    let mut f = authenticated();
    let now = f.at(0.0);
    let alice = login(&mut f, now, "alice", &["r"]);
    let bob = login(&mut f, now, "bob", &["r"]);
    let bob2 = {
        let laptop = verified(&f, "bob", Some("laptop"), &["r"], 3600.0);
        let (conn, out) = hello_as(&mut f, 0.0, laptop, Hello::default());
        welcome_of(&out, conn);
        conn
    };
    f.join(now, &alice, "r");
    f.join(now, &bob, "r");
    let sessions = f.hub.sessions();
    assert_eq!(sessions.len(), 3);
    let a = sessions
        .iter()
        .find(|s| s.peer_id == alice.peer_id)
        .expect("alice");
    assert_eq!(a.identity.as_deref(), Some("alice"));
    assert_eq!(a.state, PresenceState::Online);
    assert_eq!(a.rooms, ["r"]);
    let rooms = f.hub.rooms();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].members.len(), 2);

    let ended = f.hub.disconnect(
        now,
        &DisconnectTarget::Identity("bob".into()),
        "account suspended",
    );
    assert_eq!(ended, 2, "every device of bob");
    let out = f.drain();
    let errors = errors_to(&out, bob.conn);
    assert_eq!(errors[0].code(), ErrorCode::Disconnected);
    assert!(errors[0].message.contains("account suspended"));
    assert!(closes(&out).contains(&(bob.conn, Reason::Disconnected)));
    assert!(closes(&out).contains(&(bob2, Reason::Disconnected)));
    let lefts = peer_lefts(&out, alice.conn);
    assert_eq!(lefts.len(), 1);
    assert_eq!(lefts[0].reason(), Reason::Disconnected);
    assert_eq!(
        f.hub
            .disconnect(now, &DisconnectTarget::Peer("p-nobody".into()), "x"),
        0
    );
}
