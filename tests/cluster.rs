//! Cluster mode against real components: a 3-node `nats-server` cluster (routes on loopback)
//! and 3 gateway processes. Clients connected to *different* gateways must see the same
//! rooms, presence and signals as on one gateway; a gateway killed with SIGKILL is a dead
//! peer for the others; a client resumes on any gateway; a NATS node lost loses nothing.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{GatewayProcess, NatsCluster, wait_for_cluster};
use common::{data, ms, next_peer_left, next_peer_state, next_signal};
use signalgate::client::{Connection, Session};
use signalgate::proto::{ErrorCode, PresenceState, Reason, server_frame};

const LIVENESS: &str = "2s";
const PING: &str = "800ms";
const RESUME_WINDOW: Duration = Duration::from_secs(6);

/// `serve` flags of gateway `node` joined through the NATS `servers`, then `extra`.
fn node_args(servers: String, node: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--cluster".into(), servers, "--node-id".into(), node.into()];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// A gateway with the tests' short liveness and resume window.
fn gateway(nats: &NatsCluster, node: &str) -> GatewayProcess {
    let window = format!("{}s", RESUME_WINDOW.as_secs());
    let timing = ["--liveness-timeout", LIVENESS, "--ping-interval", PING];
    let mut extra = timing.to_vec();
    extra.extend(["--resume-window", &window]);
    GatewayProcess::spawn(&node_args(nats.urls(), node, &extra))
}

async fn joined_peers(session: &mut Session, room: &str) -> Vec<(String, PresenceState)> {
    let joined = session.join(room).await.expect("joins");
    joined
        .peers
        .iter()
        .map(|p| (p.peer_id.clone(), p.state()))
        .collect()
}

/// Joins and returns every member the session learns of: a member whose own join is still on
/// its way from another gateway is not in Joined but follows at once as PeerJoined (every
/// member hears of every other exactly once, one way or the other).
async fn members_after_join(
    session: &mut Session,
    room: &str,
    expected: usize,
) -> Vec<(String, PresenceState)> {
    let mut members = joined_peers(session, room).await;
    while members.len() < expected {
        let joined = session
            .wait_for(ms(2000), "PeerJoined", |f| match &f.msg {
                Some(server_frame::Msg::PeerJoined(j)) => j.peer.clone(),
                _ => None,
            })
            .await
            .expect("every member is announced");
        members.push((joined.peer_id.clone(), joined.state()));
    }
    members.sort();
    members
}

async fn next_peer_joined(session: &mut Session) -> String {
    session
        .wait_for(ms(5000), "PeerJoined", |f| match &f.msg {
            Some(server_frame::Msg::PeerJoined(j)) => j.peer.as_ref().map(|p| p.peer_id.clone()),
            _ => None,
        })
        .await
        .expect("PeerJoined arrives")
}

struct Three {
    nats: NatsCluster,
    gw: Vec<GatewayProcess>,
}

async fn three() -> Three {
    let nats = NatsCluster::start(3);
    let gw = vec![
        gateway(&nats, "a"),
        gateway(&nats, "b"),
        gateway(&nats, "c"),
    ];
    wait_for_cluster(&gw.iter().collect::<Vec<_>>(), 3).await;
    Three { nats, gw }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_presence_and_signals_span_gateways_in_order() {
    let c = three().await;
    let mut alice = c.gw[0].ws_session().await;
    let mut bob = c.gw[1].ws_session().await;
    let mut carol = c.gw[2].ws_session().await;

    assert!(joined_peers(&mut alice, "room").await.is_empty());
    let seen_by_bob = members_after_join(&mut bob, "room", 1).await;
    assert_eq!(
        seen_by_bob,
        [(alice.peer_id().to_string(), PresenceState::Online)],
        "bob (gateway b) sees alice (gateway a) in Joined"
    );
    assert_eq!(next_peer_joined(&mut alice).await, bob.peer_id());
    let seen_by_carol = members_after_join(&mut carol, "room", 2).await;
    let mut expected = vec![
        (alice.peer_id().to_string(), PresenceState::Online),
        (bob.peer_id().to_string(), PresenceState::Online),
    ];
    expected.sort();
    assert_eq!(
        seen_by_carol, expected,
        "members on every gateway are listed"
    );
    assert_eq!(next_peer_joined(&mut alice).await, carol.peer_id());
    assert_eq!(next_peer_joined(&mut bob).await, carol.peer_id());

    // 80 signals (within the rate limit's burst) alice -> bob across gateways: every one, in order, `from` set by the gateway.
    let bob_id = bob.peer_id().to_string();
    let payloads: Vec<Vec<u8>> = (0..80u32).map(|i| i.to_be_bytes().to_vec()).collect();
    for p in &payloads {
        let payload = signalgate::proto::signal::Payload::Data(bytes::Bytes::from(p.clone()));
        alice.signal("room", &bob_id, payload).expect("sent");
    }
    for p in &payloads {
        let s = next_signal(&mut bob).await.expect("signal arrives");
        assert_eq!(s.from, alice.peer_id());
        assert_eq!(
            s.payload,
            Some(signalgate::proto::signal::Payload::Data(
                bytes::Bytes::from(p.clone())
            ))
        );
    }
    // Errors hold across gateways: a peer of another room, a room the sender is not in.
    let mut dave = c.gw[2].ws_session().await;
    joined_peers(&mut dave, "elsewhere").await;
    let dave_id = dave.peer_id().to_string();
    let id = alice.signal("room", &dave_id, data(b"x")).expect("sent");
    let refused = alice
        .wait_for(ms(5000), "an Error", |f| {
            common::error_of(f).filter(|e| e.in_reply_to == id)
        })
        .await
        .expect("refused");
    assert_eq!(refused.code(), ErrorCode::PeerNotInRoom);
    let id = alice
        .signal("elsewhere", &dave_id, data(b"x"))
        .expect("sent");
    let refused = alice
        .wait_for(ms(5000), "an Error", |f| {
            common::error_of(f).filter(|e| e.in_reply_to == id)
        })
        .await
        .expect("refused");
    assert_eq!(refused.code(), ErrorCode::NotJoined);

    // Leaving is seen everywhere.
    carol.leave("room").await.expect("leaves");
    for s in [&mut alice, &mut bob] {
        let left = next_peer_left(s, ms(5000)).await.expect("PeerLeft");
        assert_eq!(left.peer_id, carol.peer_id());
        assert_eq!(left.reason(), Reason::LeftRoom);
    }
    drop(c.nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_is_a_dead_peer_then_gone_and_its_clients_start_again_elsewhere() {
    let mut c = three().await;
    let mut alice = c.gw[0].ws_session().await;
    let mut bob = c.gw[1].ws_session().await;
    let mut carol = c.gw[2].ws_session().await;
    for s in [&mut alice, &mut bob, &mut carol] {
        s.join("room").await.expect("joins");
    }
    let carol_id = carol.peer_id().to_string();
    // Drain the join news.
    tokio::time::sleep(ms(300)).await;
    while alice.next_event(ms(50)).await.is_ok() {}
    while bob.next_event(ms(50)).await.is_ok() {}

    let killed_at = Instant::now();
    c.gw[2].kill9();
    for s in [&mut alice, &mut bob] {
        let state = next_peer_state(s, ms(10_000)).await.expect("PeerState");
        let after = killed_at.elapsed();
        assert_eq!(state.peer_id, carol_id);
        assert_eq!(state.state(), PresenceState::Unreachable);
        assert_eq!(state.reason(), Reason::GatewayLost);
        assert!(
            after <= ms(2000 + 1000),
            "noticed {after:?} after the kill; bound is liveness_timeout + 1 s"
        );
    }
    // A signal to carol now: not accepted, and the sender is told why.
    let id = alice
        .signal("room", &carol_id, data(b"late"))
        .expect("sent");
    let answer = alice
        .wait_for(ms(5000), "an answer", |f| match &f.msg {
            Some(server_frame::Msg::Error(e)) if e.in_reply_to == id => Some(Some(e.clone())),
            Some(server_frame::Msg::Ack(a)) if a.seq > 0 => Some(None),
            _ => None,
        })
        .await
        .expect("answered");
    if let Some(error) = answer {
        assert_eq!(error.code(), ErrorCode::RecipientUnavailable, "{error:?}");
    }
    // After the resume window: LEFT, and no ghost in any member list.
    for s in [&mut alice, &mut bob] {
        let left = next_peer_left(s, RESUME_WINDOW + ms(3000))
            .await
            .expect("PeerLeft");
        assert_eq!(left.peer_id, carol_id);
        assert_eq!(left.reason(), Reason::ResumeWindowExpired);
        assert!(killed_at.elapsed() >= RESUME_WINDOW);
    }
    let mut erin = c.gw[0].ws_session().await;
    let members = joined_peers(&mut erin, "room").await;
    assert!(
        members.iter().all(|(p, _)| *p != carol_id),
        "carol is a ghost: {members:?}"
    );
    // Carol's client comes back to another gateway with its resume token: the session died
    // with its gateway (crash safety is a separate matter), so it is told to start afresh.
    let state = carol.resume_state();
    let conn: Connection = c.gw[1].ws().await;
    let error = match Session::resume(conn, &state).await {
        Ok(_) => panic!("a session of a killed gateway was resumed"),
        Err(error) => error,
    };
    assert!(
        format!("{error:?}").contains("RESUME_EXPIRED")
            || format!("{error:?}").contains("ResumeExpired"),
        "{error:?}"
    );
    // Everything of the other gateways survived; the killed one restarts (same node id) and
    // is one of the cluster again: a client on it finds the room as it is.
    assert!(alice.ping().await.is_ok() && bob.ping().await.is_ok());
    c.gw[2] = gateway(&c.nats, "c");
    wait_for_cluster(&c.gw.iter().collect::<Vec<_>>(), 3).await;
    let mut frank = c.gw[2].ws_session().await;
    let mut members: Vec<String> = members_after_join(&mut frank, "room", 3)
        .await
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let mut expected = vec![
        alice.peer_id().to_string(),
        bob.peer_id().to_string(),
        erin.peer_id().to_string(),
    ];
    members.sort();
    expected.sort();
    assert_eq!(members, expected, "the room after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_gateway_with_every_held_signal_in_order_once() {
    let c = three().await;
    let mut alice = c.gw[0].ws_session().await;
    let mut bob = c.gw[1].ws_session().await;
    alice.join("room").await.expect("joins");
    bob.join("room").await.expect("joins");
    assert_eq!(next_peer_joined(&mut alice).await, bob.peer_id());
    let bob_id = bob.peer_id().to_string();
    for i in 0..5u32 {
        alice.signal("room", &bob_id, payload(i)).expect("sent");
    }
    for i in 0..5u32 {
        let s = next_signal(&mut bob).await.expect("before the move");
        assert_eq!(s.payload, Some(payload(i)));
    }
    // Bob's connection drops; alice keeps sending meanwhile.
    let state = bob.resume_state();
    bob.into_connection().close().await;
    let away = next_peer_state(&mut alice, ms(5000))
        .await
        .expect("UNREACHABLE");
    assert_eq!(away.state(), PresenceState::Unreachable);
    for i in 5..25u32 {
        alice.signal("room", &bob_id, payload(i)).expect("sent");
    }
    // Every one was accepted (held for bob on gateway b).
    let last = alice.send(signalgate::proto::client_frame::Msg::Ping(
        Default::default(),
    ));
    let _ = last;
    tokio::time::sleep(ms(300)).await;
    // Bob comes back on gateway c.
    let conn = c.gw[2].ws().await;
    let mut bob = Session::resume(conn, &state)
        .await
        .expect("resumed on another gateway");
    assert_eq!(bob.peer_id(), bob_id, "same peer id");
    assert!(bob.welcome().resumed);
    assert_eq!(bob.welcome().rooms, ["room"]);
    for i in 5..25u32 {
        let s = next_signal(&mut bob).await.expect("held signal");
        assert_eq!(s.payload, Some(payload(i)), "in order, once");
    }
    let online = next_peer_state(&mut alice, ms(5000)).await.expect("ONLINE");
    assert_eq!(online.peer_id, bob_id);
    assert_eq!(online.state(), PresenceState::Online);
    // New signals reach bob at his new gateway.
    alice.signal("room", &bob_id, data(b"after")).expect("sent");
    let s = next_signal(&mut bob).await.expect("after the move");
    assert_eq!(s.payload, Some(data(b"after")));
    // Once: nothing is replayed twice.
    while let Ok(frame) = bob.next_event(ms(300)).await {
        assert!(
            !matches!(frame.msg, Some(server_frame::Msg::Signal(_))),
            "a signal arrived twice: {frame:?}"
        );
    }
}

/// Every frame a session receives, kept in order (presence news included) while waiting.
async fn collect(session: &mut Session, into: &mut Vec<server_frame::Msg>, for_at_least: Duration) {
    let until = Instant::now() + for_at_least;
    while Instant::now() < until {
        if let Ok(frame) = session.next_event(ms(50)).await
            && let Some(msg) = frame.msg
        {
            into.push(msg);
        }
    }
}

fn signals_from(msgs: &[server_frame::Msg], from: &str) -> Vec<Vec<u8>> {
    msgs.iter()
        .filter_map(|m| match m {
            server_frame::Msg::Signal(s) if s.from == from => match &s.payload {
                Some(signalgate::proto::signal::Payload::Data(d)) => Some(d.to_vec()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn left_news(msgs: &[server_frame::Msg]) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| match m {
            server_frame::Msg::PeerLeft(l) => Some(format!("{l:?}")),
            _ => None,
        })
        .collect()
}

/// After GoAway (or a close), the client comes back on gateway `to` with its resume token.
async fn move_to(session: Session, to: &GatewayProcess) -> Session {
    let peer = session.peer_id().to_string();
    let state = session.resume_state();
    drop(session);
    let conn = to.ws().await;
    let moved = Session::resume(conn, &state)
        .await
        .unwrap_or_else(|e| panic!("{peer} could not resume on another gateway: {e:?}"));
    assert_eq!(moved.peer_id(), peer, "same peer id after the move");
    assert!(moved.welcome().resumed);
    moved
}

async fn wait_for_go_away(session: &mut Session, seen: &mut Vec<server_frame::Msg>) {
    let deadline = Instant::now() + ms(10_000);
    loop {
        assert!(Instant::now() < deadline, "no GoAway");
        match session.next_event(ms(100)).await {
            Ok(frame) => match frame.msg {
                Some(server_frame::Msg::GoAway(_)) => return,
                Some(msg) => seen.push(msg),
                None => {}
            },
            Err(signalgate::client::ClientError::Timeout(_)) => {}
            Err(_) => return, // Closed: the GoAway went before it.
        }
    }
}

/// `receiver` got payloads 0..sent from `sender`, each once, in order (waits up to 10 s).
async fn assert_every_signal_once_in_order(
    receiver: &mut Session,
    seen: &mut Vec<server_frame::Msg>,
    sender: &str,
    sent: u32,
) {
    let deadline = Instant::now() + ms(10_000);
    while signals_from(seen, sender).len() < sent as usize && Instant::now() < deadline {
        collect(receiver, seen, ms(200)).await;
    }
    let expected: Vec<Vec<u8>> = (0..sent).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(
        signals_from(seen, sender),
        expected,
        "every signal, in order, once"
    );
}

fn payload(i: u32) -> signalgate::proto::signal::Payload {
    signalgate::proto::signal::Payload::Data(bytes::Bytes::from(i.to_be_bytes().to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_gateway_loses_no_signal_and_nobody_sees_left() {
    let mut c = three().await;
    let mut alice = c.gw[0].ws_session().await;
    let mut bob = c.gw[1].ws_session().await;
    alice.join("room").await.expect("joins");
    bob.join("room").await.expect("joins");
    // A peer is signalled once its join reached the sender (Joined or PeerJoined).
    assert_eq!(next_peer_joined(&mut alice).await, bob.peer_id());
    let (alice_id, bob_id) = (alice.peer_id().to_string(), bob.peer_id().to_string());
    let (mut alice_at, mut bob_at) = (0usize, 1usize);
    let (mut alice_saw, mut bob_saw) = (Vec::new(), Vec::new());
    let mut sent = 0u32;
    for restarting in 0..3 {
        // Signals before and while the gateway drains.
        for _ in 0..10 {
            alice.signal("room", &bob_id, payload(sent)).expect("sent");
            sent += 1;
        }
        collect(&mut bob, &mut bob_saw, ms(200)).await;
        c.gw[restarting].terminate();
        for _ in 0..5 {
            // Sent as the gateway goes: whatever it did not process is resent after the move.
            let _ = alice.signal("room", &bob_id, payload(sent));
            sent += 1;
        }
        let next = (restarting + 1) % 3;
        if alice_at == restarting {
            wait_for_go_away(&mut alice, &mut alice_saw).await;
            alice = move_to(alice, &c.gw[next]).await;
            alice_at = next;
        }
        if bob_at == restarting {
            wait_for_go_away(&mut bob, &mut bob_saw).await;
            bob = move_to(bob, &c.gw[next]).await;
            bob_at = next;
        }
        let status = c.gw[restarting]
            .wait_exit(ms(15_000))
            .expect("the drained gateway exits");
        assert!(status.success(), "drain then exit 0: {status:?}");
        let node = ["a", "b", "c"][restarting];
        c.gw[restarting] = gateway(&c.nats, node);
        wait_for_cluster(&c.gw.iter().collect::<Vec<_>>(), 3).await;
    }
    for _ in 0..10 {
        alice.signal("room", &bob_id, payload(sent)).expect("sent");
        sent += 1;
    }
    assert_every_signal_once_in_order(&mut bob, &mut bob_saw, &alice_id, sent).await;
    collect(&mut alice, &mut alice_saw, ms(300)).await;
    assert!(
        left_news(&alice_saw).is_empty(),
        "alice saw LEFT: {:?}",
        left_news(&alice_saw)
    );
    assert!(
        left_news(&bob_saw).is_empty(),
        "bob saw LEFT: {:?}",
        left_news(&bob_saw)
    );
    assert!(
        !alice_saw
            .iter()
            .any(|m| matches!(m, server_frame::Msg::Error(_))),
        "no signal was refused: {alice_saw:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_nats_nodes_loses_no_signal_between_live_gateways() {
    let mut nats = NatsCluster::start(3);
    // A NATS fail-over takes well under 4 s; no gateway may be declared lost.
    let extra = [
        "--liveness-timeout",
        "4s",
        "--ping-interval",
        "1500ms",
        "--rate-limit",
        "1000",
        "--rate-burst",
        "1000",
    ];
    let args = |node: &str| node_args(nats.urls(), node, &extra);
    let a = GatewayProcess::spawn(&args("a"));
    let b = GatewayProcess::spawn(&args("b"));
    wait_for_cluster(&[&a, &b], 2).await;
    let mut alice = a.ws_session().await;
    let mut bob = b.ws_session().await;
    alice.join("room").await.expect("joins");
    bob.join("room").await.expect("joins");
    // A peer is signalled once its join reached the sender (Joined or PeerJoined).
    assert_eq!(next_peer_joined(&mut alice).await, bob.peer_id());
    let (alice_id, bob_id) = (alice.peer_id().to_string(), bob.peer_id().to_string());
    let (mut alice_saw, mut bob_saw) = (Vec::new(), Vec::new());
    let mut sent = 0u32;
    for victim in [0usize, 1, 2] {
        for _ in 0..50 {
            alice.signal("room", &bob_id, payload(sent)).expect("sent");
            sent += 1;
            tokio::time::sleep(ms(5)).await;
            if sent % 50 == 25 {
                nats.kill(victim);
            }
        }
        collect(&mut bob, &mut bob_saw, ms(300)).await;
        nats.restart(victim);
    }
    assert_every_signal_once_in_order(&mut bob, &mut bob_saw, &alice_id, sent).await;
    collect(&mut alice, &mut alice_saw, ms(300)).await;
    for (who, saw) in [("alice", &alice_saw), ("bob", &bob_saw)] {
        assert!(
            !saw.iter().any(|m| matches!(
                m,
                server_frame::Msg::Error(_)
                    | server_frame::Msg::PeerState(_)
                    | server_frame::Msg::PeerLeft(_)
            )),
            "{who} saw a refusal or a presence change: {saw:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_cut_off_from_nats_lets_its_clients_go_and_their_sessions_resume_elsewhere() {
    let mut nats = NatsCluster::start(3);
    // Gateway c knows only NATS node 2: killing that node cuts c off from the cluster.
    let a = gateway(&nats, "a");
    let timing = [
        "--liveness-timeout",
        LIVENESS,
        "--ping-interval",
        PING,
        "--resume-window",
        "30s",
    ];
    let c = GatewayProcess::spawn(&node_args(nats.url(2), "c", &timing));
    wait_for_cluster(&[&a, &c], 2).await;
    let mut alice = a.ws_session().await;
    let mut carol = c.ws_session().await;
    alice.join("room").await.expect("joins");
    carol.join("room").await.expect("joins");
    let carol_id = carol.peer_id().to_string();
    tokio::time::sleep(ms(300)).await;
    let mut alice_saw = Vec::new();
    collect(&mut alice, &mut alice_saw, ms(100)).await;

    let cut_at = Instant::now();
    nats.kill(2);
    // The cluster declares c lost...
    let state = next_peer_state(&mut alice, ms(10_000))
        .await
        .expect("PeerState");
    assert_eq!(state.peer_id, carol_id);
    assert_eq!(state.state(), PresenceState::Unreachable);
    assert_eq!(state.reason(), Reason::GatewayLost);
    assert!(
        cut_at.elapsed() <= ms(2000 + 1500),
        "{:?}",
        cut_at.elapsed()
    );
    // ...and c lets carol go, telling her to move: GoAway, then the connection closes.
    let mut carol_saw = Vec::new();
    wait_for_go_away(&mut carol, &mut carol_saw).await;
    assert!(
        cut_at.elapsed() <= ms(2000 + 1500),
        "{:?}",
        cut_at.elapsed()
    );
    // Cut off, c takes nobody in.
    let conn = c.ws().await;
    match Session::start(conn).await {
        Ok(_) => panic!("a cut-off gateway welcomed a new session"),
        Err(e) => assert!(
            format!("{e:?}").contains("CLUSTER_UNAVAILABLE")
                || format!("{e:?}").contains("ClusterUnavailable"),
            "{e:?}"
        ),
    }
    // NATS comes back; c rejoins as a new incarnation with carol's session (away). Carol
    // reconnects to gateway a and resumes it: same peer id, and alice sees her ONLINE.
    nats.restart(2);
    wait_for_cluster(&[&a, &c], 2).await;
    let carol = move_to(carol, &a).await;
    assert_eq!(carol.peer_id(), carol_id);
    let online = next_peer_state(&mut alice, ms(5000))
        .await
        .expect("ONLINE again");
    assert_eq!(online.peer_id, carol_id);
    assert_eq!(online.state(), PresenceState::Online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_list_every_live_gateway_with_its_own_certificate() {
    let nats = NatsCluster::start(1);
    let port = |_: ()| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let mut gws = Vec::new();
    for node in ["a", "b"] {
        let http = format!("127.0.0.1:{}", port(()));
        let args = node_args(nats.urls(), node, &["--http-listen", &http]);
        gws.push((GatewayProcess::spawn(&args), http));
    }
    wait_for_cluster(&gws.iter().map(|(g, _)| g).collect::<Vec<_>>(), 2).await;
    let http: std::net::SocketAddr = gws[0].1.parse().expect("addr");
    let (status, body) = common::http_get(http, "/endpoints").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    let gateways = json["gateways"].as_array().expect("a gateways list");
    assert_eq!(gateways.len(), 2, "{body}");
    assert_eq!(gateways[0]["node"], "a", "this gateway first: {body}");
    for (entry, (gw, _)) in gateways.iter().zip(&gws) {
        assert_eq!(entry["cert_sha256"], gw.cert_sha256_hex(), "{body}");
        assert_eq!(entry["websocket"], gw.wss_url(), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_joins_for_the_last_seat_on_different_gateways_admit_exactly_one() {
    let nats = NatsCluster::start(1);
    let args = |node: &str| node_args(nats.urls(), node, &["--max-peers-per-room", "2"]);
    let a = GatewayProcess::spawn(&args("a"));
    let b = GatewayProcess::spawn(&args("b"));
    wait_for_cluster(&[&a, &b], 2).await;
    // Several rooms, so that both gateways are some room's home.
    for room in ["r1", "r2", "r3", "r4", "r5", "r6"] {
        let mut first = a.ws_session().await;
        first.join(room).await.expect("the first seat");
        tokio::time::sleep(ms(50)).await;
        let (mut x, mut y) = (a.ws_session().await, b.ws_session().await);
        let join = |s: &mut Session| {
            s.send(signalgate::proto::client_frame::Msg::Join(
                signalgate::proto::Join { room: room.into() },
            ))
            .expect("sent")
        };
        let (x_id, y_id) = (join(&mut x), join(&mut y));
        let mut admitted = 0;
        for (s, id) in [(&mut x, x_id), (&mut y, y_id)] {
            let answer = s
                .wait_for(ms(5000), "Joined or an Error", |f| match &f.msg {
                    Some(server_frame::Msg::Joined(_)) if f.in_reply_to == id => Some(Ok(())),
                    Some(server_frame::Msg::Error(e)) if e.in_reply_to == id => Some(Err(e.code())),
                    _ => None,
                })
                .await
                .expect("answered");
            match answer {
                Ok(()) => admitted += 1,
                Err(code) => assert_eq!(code, ErrorCode::RoomFull, "room {room}"),
            }
        }
        assert_eq!(admitted, 1, "room {room}: one seat, one admitted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_stops_says_goodbye_and_is_dropped_at_once_even_without_sessions() {
    let nats = NatsCluster::start(1);
    // The default liveness (10 s): without a goodbye, the others would wait that long.
    let args = |node: &str| node_args(nats.urls(), node, &[]);
    let mut a = GatewayProcess::spawn(&args("a"));
    let b = GatewayProcess::spawn(&args("b"));
    wait_for_cluster(&[&a, &b], 2).await;
    let stopped_at = Instant::now();
    a.terminate();
    assert!(a.wait_exit(ms(10_000)).is_some_and(|s| s.success()));
    wait_for_cluster(&[&b], 1).await;
    let after = stopped_at.elapsed();
    assert!(
        after < ms(5000),
        "dropped {after:?} after the SIGTERM, not at once"
    );
    assert!(
        !b.log().contains("gateway lost"),
        "a goodbye is no loss: {}",
        b.log_tail()
    );
}
