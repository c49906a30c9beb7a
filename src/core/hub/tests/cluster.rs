//! Two hubs of a cluster wired to each other directly (what the cluster adapter does over
//! NATS, minus NATS): the rules that must hold across gateways, on a fake clock.

use super::*;
use crate::proto::cluster::envelope::Body;
use crate::proto::{ErrorCode, Joined, Leave};

/// Gateways "a" and "b"; messages between them move only when [`Two::pump`] is called, so
/// "at the same moment" is just two inputs before a pump.
struct Two {
    a: Fixture,
    b: Fixture,
    /// What the clients got, in order, by gateway.
    out_a: Vec<Output>,
    out_b: Vec<Output>,
    /// Relays each side was handed and has not acknowledged yet (tickets), by side: its link
    /// acknowledges them after what it answered (as `core::cluster::link` does).
    unacked_by_a: Vec<u64>,
    unacked_by_b: Vec<u64>,
}

fn config(node: &str, max_peers_per_room: usize) -> HubConfig {
    let mut config = HubConfig {
        cluster_node: Some(node.into()),
        ..HubConfig::default()
    };
    config.limits.max_peers_per_room = max_peers_per_room;
    config
}

impl Two {
    fn new(max_peers_per_room: usize) -> Self {
        let mut a = Fixture::with(config("a", max_peers_per_room));
        let mut b = Fixture::with(config("b", max_peers_per_room));
        // Different randomness, as two processes have (peer ids are unique cluster-wide).
        b.hub = Hub::with_entropy(
            config("b", max_peers_per_room),
            Box::new(SeededEntropy::new(2)),
        );
        b.t0 = a.t0;
        a.hub.set_live_nodes(["b".to_string()]);
        b.hub.set_live_nodes(["a".to_string()]);
        Self {
            a,
            b,
            out_a: Vec::new(),
            out_b: Vec::new(),
            unacked_by_a: Vec::new(),
            unacked_by_b: Vec::new(),
        }
    }

    fn fx(&mut self, side: char) -> &mut Fixture {
        if side == 'a' {
            &mut self.a
        } else {
            &mut self.b
        }
    }

    fn unacked_by(&mut self, side: char) -> &mut Vec<u64> {
        if side == 'a' {
            &mut self.unacked_by_a
        } else {
            &mut self.unacked_by_b
        }
    }

    /// Keeps what clients get; hands what is for the other gateway to it, then acknowledges
    /// the relays `from` had acted on when `out` was drained.
    fn route(&mut self, now: Instant, from: char, out: Vec<Output>) -> bool {
        let (name, other) = if from == 'a' { ("a", 'b') } else { ("b", 'a') };
        let acks = std::mem::take(self.unacked_by(from));
        let mut moved = !acks.is_empty();
        for o in out {
            match o {
                Output::ToNode { body, .. } | Output::ToCluster { body } => {
                    moved = true;
                    if let Body::Relay(relay) = &body {
                        self.unacked_by(other).push(relay.ticket);
                    }
                    self.fx(other).hub.cluster_received(now, name, body);
                }
                other_output => {
                    if from == 'a' {
                        self.out_a.push(other_output);
                    } else {
                        self.out_b.push(other_output);
                    }
                }
            }
        }
        for ticket in acks {
            self.fx(other).hub.relay_acknowledged(now, ticket);
        }
        moved
    }

    /// Moves messages between the gateways until both are quiet.
    fn pump(&mut self, now: Instant) {
        loop {
            let out = self.a.drain();
            let moved_a = self.route(now, 'a', out);
            let out = self.b.drain();
            let moved_b = self.route(now, 'b', out);
            if !moved_a && !moved_b {
                break;
            }
        }
    }

    /// Alice on gateway a and bob on gateway b, both in room "r", the join news drained.
    fn alice_on_a_and_bob_on_b(&mut self, now: Instant) -> (Client, Client) {
        let alice = self.client(now, 'a');
        let bob = self.client(now, 'b');
        self.join(now, 'a', &alice, "r");
        self.join(now, 'b', &bob, "r");
        self.out_a.clear();
        (alice, bob)
    }

    fn client(&mut self, now: Instant, side: char) -> Client {
        let conn = self.fx(side).open(now, Transport::WebSocket);
        let out = self.fx(side).hello_on(now, conn, Hello::default());
        let welcome = welcome_of(&out, conn);
        self.route(now, side, out);
        Client {
            conn,
            peer_id: welcome.peer_id,
            token: welcome.resume_token,
        }
    }

    /// A client with a token: the Hello goes through `hello_received` as the runtime
    /// verified it. `sub` only names it in failures.
    fn client_with(
        &mut self,
        now: Instant,
        side: char,
        credentials: crate::core::identity::Credentials,
        sub: &str,
    ) -> Client {
        let conn = self.fx(side).open(now, Transport::WebSocket);
        self.fx(side)
            .hub
            .hello_received(now, conn, 1, Hello::default(), credentials);
        self.pump(now);
        let out = if side == 'a' {
            &self.out_a
        } else {
            &self.out_b
        };
        let welcome = msgs_to(out, conn)
            .into_iter()
            .find_map(|m| match m {
                server_frame::Msg::Welcome(w) => Some(w),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{sub} was not welcomed: {:?}", msgs_to(out, conn)));
        Client {
            conn,
            peer_id: welcome.peer_id,
            token: welcome.resume_token,
        }
    }

    fn send(&mut self, now: Instant, side: char, conn: ConnId, seq: u64, msg: Msg) {
        self.fx(side).send_numbered(now, conn, seq, msg);
        let out = self.fx(side).drain();
        self.route(now, side, out);
    }

    fn join(&mut self, now: Instant, side: char, c: &Client, room: &str) {
        self.send(now, side, c.conn, 0, Msg::Join(Join { room: room.into() }));
        self.pump(now);
    }
}

fn joined(out: &[Output], conn: ConnId) -> Option<Joined> {
    msgs_to(out, conn).into_iter().find_map(|m| match m {
        server_frame::Msg::Joined(j) => Some(j),
        _ => None,
    })
}

fn error_codes(out: &[Output], conn: ConnId) -> Vec<ErrorCode> {
    msgs_to(out, conn)
        .into_iter()
        .filter_map(|m| match m {
            server_frame::Msg::Error(e) => Some(e.code()),
            _ => None,
        })
        .collect()
}

#[test]
fn two_joins_for_the_last_seat_on_two_gateways_admit_exactly_one() {
    for room in ["r0", "r1", "r2", "r3", "lobby", "x"] {
        let mut two = Two::new(2);
        let now = two.a.t0;
        let first = two.client(now, 'a');
        two.join(now, 'a', &first, room);
        // The last seat: one join on each gateway, before either hears of the other.
        let x = two.client(now, 'a');
        let y = two.client(now, 'b');
        two.send(now, 'a', x.conn, 0, Msg::Join(Join { room: room.into() }));
        two.send(now, 'b', y.conn, 0, Msg::Join(Join { room: room.into() }));
        two.pump(now);
        let x_in = joined(&two.out_a, x.conn).is_some();
        let y_in = joined(&two.out_b, y.conn).is_some();
        assert!(
            x_in ^ y_in,
            "room {room}: exactly one is admitted (x {x_in}, y {y_in})"
        );
        let loser = if x_in {
            error_codes(&two.out_b, y.conn)
        } else {
            error_codes(&two.out_a, x.conn)
        };
        assert_eq!(loser, [ErrorCode::RoomFull], "room {room}");
        // A seat freed is a seat again, whoever's gateway decides.
        let (side, winner) = if x_in { ('a', &x) } else { ('b', &y) };
        two.send(
            now,
            side,
            winner.conn,
            0,
            Msg::Leave(Leave { room: room.into() }),
        );
        two.pump(now);
        let z = two.client(now, 'b');
        two.join(now, 'b', &z, room);
        assert!(
            joined(&two.out_b, z.conn).is_some(),
            "room {room}: the freed seat"
        );
    }
}

#[test]
fn frames_sent_behind_a_join_that_waits_for_its_home_are_processed_after_it_in_order() {
    // Find a room whose home is gateway a, and join it from b.
    let mut two = Two::new(8);
    let room = (0..100)
        .map(|i| format!("room-{i}"))
        .find(|r| two.b.hub.room_home(r).as_deref() == Some("a"))
        .expect("some room lives on a");
    let now = two.a.t0;
    let host = two.client(now, 'a');
    two.join(now, 'a', &host, &room);
    let guest = two.client(now, 'b');
    two.b
        .send_numbered(now, guest.conn, 1, Msg::Join(Join { room: room.clone() }));
    two.b.send_numbered(
        now,
        guest.conn,
        2,
        Msg::Signal(data_signal(&room, &host.peer_id, b"hi")),
    );
    two.pump(now);
    let guest_msgs = msgs_to(&two.out_b, guest.conn);
    let joined_at = guest_msgs
        .iter()
        .position(|m| matches!(m, server_frame::Msg::Joined(_)))
        .expect("joined");
    assert!(
        error_codes(&two.out_b, guest.conn).is_empty(),
        "the signal behind the join was processed after it: {guest_msgs:?}"
    );
    let acks: Vec<u64> = guest_msgs
        .iter()
        .filter_map(|m| match m {
            server_frame::Msg::Ack(a) => Some(a.seq),
            _ => None,
        })
        .collect();
    assert_eq!(
        acks.last(),
        Some(&2),
        "both acknowledged once settled: {guest_msgs:?}"
    );
    let first_ack = guest_msgs
        .iter()
        .position(|m| matches!(m, server_frame::Msg::Ack(_)))
        .expect("acknowledged");
    assert!(
        joined_at < first_ack,
        "the Ack follows the Joined: {guest_msgs:?}"
    );
    let host_signals: Vec<String> = msgs_to(&two.out_a, host.conn)
        .into_iter()
        .filter_map(|m| match m {
            server_frame::Msg::Signal(s) => Some(s.from),
            _ => None,
        })
        .collect();
    assert_eq!(host_signals, std::slice::from_ref(&guest.peer_id));
}

#[test]
fn an_ack_never_covers_a_signal_whose_remote_verdict_is_unknown() {
    let mut two = Two::new(8);
    let now = two.a.t0;
    let (alice, bob) = two.alice_on_a_and_bob_on_b(now);
    // Alice signals bob (on b): nothing moves between the gateways yet.
    two.a.send_numbered(
        now,
        alice.conn,
        1,
        Msg::Signal(data_signal("r", &bob.peer_id, b"1")),
    );
    let before = two.a.drain();
    assert!(
        !msgs_to(&before, alice.conn)
            .iter()
            .any(|m| matches!(m, server_frame::Msg::Ack(a) if a.seq >= 1)),
        "acknowledged before gateway b accepted it: {before:?}"
    );
    // Now let it move.
    two.route(now, 'a', before);
    two.pump(now);
    assert!(
        msgs_to(&two.out_a, alice.conn)
            .iter()
            .any(|m| matches!(m, server_frame::Msg::Ack(a) if a.seq == 1)),
        "acknowledged once accepted"
    );
}

#[test]
fn a_signal_forwarded_after_its_recipient_moved_is_settled_by_the_new_gateways_verdict() {
    // Alice (on a) signals bob (on b) while b drains bob's session to a: b forwards the
    // signal to a, which refuses it. b's ack of the relay must not settle it as accepted.
    let mut two = Two::new(8);
    let now = two.a.t0;
    let (alice, bob) = two.alice_on_a_and_bob_on_b(now);
    let id = two.a.send_numbered(
        now,
        alice.conn,
        1,
        Msg::Signal(data_signal("r", &bob.peer_id, b"1")),
    );
    let relay = two.a.drain();
    two.b.hub.drain(now, &["a".to_string()]);
    let hand_over = two.b.drain();
    two.route(now, 'b', hand_over);
    // Bob's session is on a now, with no room for another signal.
    two.a.hub.config.limits.backlog_frames = 0;
    two.route(now, 'a', relay);
    two.pump(now);
    let to_alice = msgs_to(&two.out_a, alice.conn);
    let error = to_alice
        .iter()
        .position(|m| matches!(m, server_frame::Msg::Error(e) if e.in_reply_to == id))
        .expect("the new gateway's refusal reaches the sender");
    assert_eq!(
        error_codes(&two.out_a, alice.conn),
        [ErrorCode::RecipientBufferFull]
    );
    let ack = to_alice
        .iter()
        .position(|m| matches!(m, server_frame::Msg::Ack(a) if a.seq >= 1))
        .expect("acknowledged once settled");
    assert!(error < ack, "the Error comes before the Ack: {to_alice:?}");
}

#[test]
fn a_lost_gateway_makes_its_members_unreachable_then_left_after_the_window() {
    let mut two = Two::new(8);
    let now = two.a.t0;
    let (alice, bob) = two.alice_on_a_and_bob_on_b(now);
    two.a.hub.set_live_nodes(Vec::<String>::new());
    two.a.hub.node_lost(now, "b", secs(2.0));
    let out = two.a.drain();
    let states: Vec<PeerState> = msgs_to(&out, alice.conn)
        .into_iter()
        .filter_map(|m| match m {
            server_frame::Msg::PeerState(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].peer_id, bob.peer_id);
    assert_eq!(states[0].state(), PresenceState::Unreachable);
    assert_eq!(states[0].reason(), proto::Reason::GatewayLost);
    let window = two.a.hub.config.resume_window;
    two.a.hub.handle_timeout(now + window - secs(0.1));
    assert!(msgs_to(&two.a.drain(), alice.conn).is_empty());
    two.a.hub.handle_timeout(now + window);
    let left: Vec<PeerLeft> = msgs_to(&two.a.drain(), alice.conn)
        .into_iter()
        .filter_map(|m| match m {
            server_frame::Msg::PeerLeft(l) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].reason(), proto::Reason::ResumeWindowExpired);
    assert!(
        two.a
            .hub
            .rooms()
            .iter()
            .all(|r| !r.members.contains(&bob.peer_id))
    );
}

#[test]
fn the_same_identity_on_another_gateway_takes_its_session_over_once_cluster_wide() {
    use crate::core::identity::{Credentials, Grants, Identity, Profile, Verified};
    let mut two = Two::new(8);
    for fx in [&mut two.a, &mut two.b] {
        fx.hub.config.authentication = true;
    }
    let now = two.a.t0;
    let alice_token = |f: &Fixture| {
        Credentials::Verified(Verified {
            identity: Identity {
                sub: "alice".into(),
                device: None,
            },
            grants: Grants::all(),
            profile: Profile::default(),
            expires_at: f.at(3600.0),
        })
    };
    let bob_token = match alice_token(&two.a) {
        Credentials::Verified(mut v) => {
            v.identity.sub = "bob".into();
            Credentials::Verified(v)
        }
        other => other,
    };
    let bob = two.client_with(now, 'a', bob_token, "bob");
    let old = two.client_with(now, 'a', alice_token(&two.a), "alice");
    two.join(now, 'a', &bob, "r");
    two.join(now, 'a', &old, "r");
    two.out_a.clear();
    // Alice's app restarts and comes back through gateway b, without its resume token.
    let new = two.client_with(now, 'b', alice_token(&two.b), "alice");
    assert_eq!(new.peer_id, old.peer_id, "the same session, cluster-wide");
    assert!(
        two.out_a
            .iter()
            .any(|o| matches!(o, Output::Close { conn, .. } if *conn == old.conn)),
        "the old connection is closed"
    );
    assert!(
        !msgs_to(&two.out_a, bob.conn).iter().any(|m| matches!(
            m,
            server_frame::Msg::PeerLeft(_) | server_frame::Msg::PeerJoined(_)
        )),
        "bob sees one session, never a second alice: {:?}",
        msgs_to(&two.out_a, bob.conn)
    );
    // A second identity starts its own session (nobody holds one).
    let carol_token = match alice_token(&two.b) {
        Credentials::Verified(mut v) => {
            v.identity.sub = "carol".into();
            Credentials::Verified(v)
        }
        other => other,
    };
    let carol = two.client_with(now, 'b', carol_token, "carol");
    assert_ne!(carol.peer_id, new.peer_id);
}

/// The outputs of `fx` for other gateways, in order, by destination.
fn for_nodes(out: Vec<Output>) -> Vec<(String, Body)> {
    out.into_iter()
        .filter_map(|o| match o {
            Output::ToNode { node, body } => Some((node, body)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_claim_that_reaches_a_drained_gateway_follows_the_session_behind_its_hand_over() {
    // Gateway a drains to b; the client reconnects to c, whose claim reaches a before the
    // hand-over has reached b.
    let fx = |node: &str, seed: u64, live: [&str; 2]| {
        let mut f = Fixture::with(config(node, 8));
        f.hub = Hub::with_entropy(config(node, 8), Box::new(SeededEntropy::new(seed)));
        f.hub.set_live_nodes(live.map(String::from));
        f
    };
    let (mut a, mut b, mut c) = (
        fx("a", 1, ["b", "c"]),
        fx("b", 2, ["a", "c"]),
        fx("c", 3, ["a", "b"]),
    );
    let now = a.t0;
    let client = a.client(now);
    a.hub.drain(now, &["b".to_string()]);
    let held_for_b = for_nodes(a.drain());
    assert!(held_for_b.iter().all(|(n, _)| n == "b"));
    // The client comes to c with its resume token (issued by a).
    let conn = c.open(now, Transport::WebSocket);
    c.send(
        now,
        conn,
        Msg::Hello(Hello {
            resume_token: client.token.clone(),
            last_seq: 0,
            attempt: 1,
            ..Default::default()
        }),
    );
    for (node, body) in for_nodes(c.drain()) {
        assert_eq!(node, "a", "c asks the issuer first");
        a.hub.cluster_received(now, "c", body);
    }
    // a's link to b carries the hand-over, then the claim it forwards.
    let forwarded = for_nodes(a.drain());
    for (node, body) in held_for_b.into_iter().chain(forwarded) {
        assert_eq!(node, "b");
        b.hub.cluster_received(now, "a", body);
    }
    for (node, body) in for_nodes(b.drain()) {
        if node == "c" {
            c.hub.cluster_received(now, "b", body);
        }
    }
    let welcome = welcome_of(&c.drain(), conn);
    assert!(welcome.resumed, "resumed on c: {welcome:?}");
    assert_eq!(welcome.peer_id, client.peer_id);
}
