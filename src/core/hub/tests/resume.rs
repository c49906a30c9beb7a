//! Resume: what waited is delivered in order, once; take-over; the fences; presence news
//! held as state, not as a log.

use super::*;
use crate::proto::{Ack, Leave};

#[test]
fn signals_to_an_unreachable_peer_wait_and_are_delivered_in_order_after_resume() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    // a has processed Joined(1) and PeerJoined(2); a signal (3) is in flight when it dies.
    f.signal(now, &b, "r", &a.peer_id, b"in-flight");
    f.drain();
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::LivenessTimeout, secs(10.0));
    f.drain();
    for payload in [b"held-1" as &'static [u8], b"held-2", b"held-3"] {
        f.signal(f.at(2.0), &b, "r", &a.peer_id, payload);
    }
    let out = f.drain();
    assert!(
        errors_to(&out, b.conn).is_empty(),
        "held, not refused: {out:?}"
    );

    // a comes back over the other transport.
    let (conn, out) = f.resume(f.at(5.0), &a, 2, 1, Transport::WebTransport);
    let w = welcome_of(&out, conn);
    assert!(w.resumed);
    assert_eq!(w.peer_id, a.peer_id);
    assert_eq!(w.rooms, ["r"]);
    assert_eq!(
        w.replay_until_seq, 6,
        "the replay ends with the last held frame"
    );
    let replayed = data_signals(&out, conn);
    let seqs: Vec<u64> = replayed.iter().map(|r| r.0).collect();
    let payloads: Vec<&[u8]> = replayed.iter().map(|r| r.2.as_ref()).collect();
    assert_eq!(seqs, [3, 4, 5, 6]);
    assert_eq!(
        payloads,
        [b"in-flight" as &[u8], b"held-1", b"held-2", b"held-3"]
    );
    assert!(replayed.iter().all(|r| r.1 == b.peer_id));
    // b sees a come back ONLINE, never left + joined.
    let states = peer_states(&out, b.conn);
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].state(), PresenceState::Online);
    assert_eq!(states[0].reason(), Reason::Resumed);
    assert_eq!(states[0].detected_by(), proto::Transport::Webtransport);
    assert!(peer_lefts(&out, b.conn).is_empty());
    assert!(
        msgs_to(&out, b.conn)
            .iter()
            .all(|m| !matches!(m, server_frame::Msg::PeerJoined(_)))
    );
    assert!(events(&out).contains(&HubEvent::Resume {
        transport: Transport::WebTransport,
        outcome: ResumeOutcome::Resumed
    }));
    assert_eq!(f.hub.gauges().online(Transport::WebTransport), 1);
    assert_eq!(f.hub.gauges().unreachable, [0, 0]);

    // New frames continue the same numbering, nothing twice.
    f.signal(f.at(6.0), &b, "r", &a.peer_id, b"after");
    let seqs: Vec<u64> = data_signals(&f.drain(), conn).iter().map(|r| r.0).collect();
    assert_eq!(seqs, [7]);
    // The resume window of the old loss no longer applies.
    f.hub.handle_timeout(f.at(100.0));
    assert!(peer_lefts(&f.drain(), b.conn).is_empty());
}

#[test]
fn resume_replays_only_what_the_client_missed() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    for _ in 0..5 {
        f.signal(now, &b, "r", &a.peer_id, b"s");
    }
    f.drain(); // a got seq 1..=7
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::ConnectionLost, secs(0.0));
    f.drain();
    let (conn, out) = f.resume(f.at(2.0), &a, 5, 1, Transport::WebSocket);
    let seqs: Vec<u64> = frames_to(&out, conn).iter().map(|fr| fr.seq).collect();
    assert_eq!(seqs, [0, 6, 7], "Welcome, then exactly the missed frames");
    assert_eq!(welcome_of(&out, conn).replay_until_seq, 7);
}

#[test]
fn signals_beyond_the_backlog_bound_are_refused_to_the_sender_never_dropped_silently() {
    let config = HubConfig {
        limits: Limits {
            backlog_frames: 4,
            ..Limits::default()
        },
        ..HubConfig::default()
    };
    let mut f = Fixture::with(config);
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    f.send(now, a.conn, Msg::Ack(Ack { seq: 2 }));
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::LivenessTimeout, secs(10.0));
    f.drain();
    let mut accepted = 0;
    let mut refused = Vec::new();
    for i in 0..6 {
        let id = f.signal(f.at(2.0), &b, "r", &a.peer_id, b"held");
        let errors = errors_to(&f.drain(), b.conn);
        match errors.as_slice() {
            [] => accepted += 1,
            [e] => {
                assert_eq!(e.code(), ErrorCode::RecipientBufferFull);
                assert_eq!(e.in_reply_to, id);
                assert!(e.message.contains(&a.peer_id));
                refused.push(i);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(accepted, 4);
    assert_eq!(refused, [4, 5]);
    // Presence news has no part in the signals' budget.
    let c = f.client(f.at(2.5));
    f.join(f.at(2.5), &c, "r");
    let (conn, out) = f.resume(f.at(3.0), &a, 2, 1, Transport::WebSocket);
    assert_eq!(
        data_signals(&out, conn).len(),
        4,
        "everything accepted is delivered"
    );
    assert!(msgs_to(&out, conn)
        .iter()
        .any(|m| matches!(m, server_frame::Msg::PeerJoined(j) if j.peer.as_ref().is_some_and(|p| p.peer_id == c.peer_id))));
}

#[test]
fn room_churn_while_away_is_coalesced_and_never_costs_the_session() {
    // Measured on the old gateway: a peer unreachable for 12 s while 8 members churned
    // (join/leave within the rate limits) came back to RESUME_GAP — session lost, new peer
    // id — after ~1,600 presence frames were held for it. Presence is state, not a log.
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let away = f.client(now);
    f.join(now, &away, "r");
    let stayer = f.client(now);
    f.join(now, &stayer, "r");
    let churners: Vec<Client> = (0..8).map(|_| f.client(now)).collect();
    f.drain();
    f.hub
        .connection_lost(f.at(1.0), away.conn, Reason::LivenessTimeout, secs(10.0));
    f.drain();
    // 12 s, each churner joining and leaving twice a second (4 requests/s each).
    let mut t = 1.0;
    while t < 13.0 {
        for c in &churners {
            f.send(f.at(t), c.conn, Msg::Join(Join { room: "r".into() }));
            f.send(f.at(t), c.conn, Msg::Leave(Leave { room: "r".into() }));
        }
        f.drain();
        t += 0.5;
    }
    // Churner 0 stays in the end; the stayer flaps ten times and is away in the end.
    f.send(
        f.at(t),
        churners[0].conn,
        Msg::Join(Join { room: "r".into() }),
    );
    let mut stayer_conn = stayer.conn;
    for attempt in 1..=10 {
        f.hub
            .connection_lost(f.at(t), stayer_conn, Reason::ConnectionLost, secs(0.0));
        f.drain();
        stayer_conn = f
            .resume(f.at(t), &stayer, 0, attempt, Transport::WebSocket)
            .0;
    }
    f.hub
        .connection_lost(f.at(t), stayer_conn, Reason::ConnectionLost, secs(0.0));
    f.drain();
    let (conn, out) = f.resume(f.at(13.5), &away, 2, 1, Transport::WebSocket);
    let w = welcome_of(&out, conn);
    assert!(w.resumed, "{out:?}");
    assert_eq!(w.peer_id, away.peer_id);
    let news = msgs_to(&out, conn);
    // What the client needs, each at the place of its first change: churner 0 is in the
    // room; the stayer is unreachable. The seven who joined and left while it was away are
    // never mentioned.
    let words: Vec<String> = news
        .iter()
        .map(|m| match m {
            server_frame::Msg::PeerState(s) => format!("state {} {:?}", s.peer_id, s.state()),
            server_frame::Msg::PeerJoined(j) => {
                format!("joined {}", j.peer.clone().unwrap_or_default().peer_id)
            }
            server_frame::Msg::PeerLeft(l) => format!("left {}", l.peer_id),
            server_frame::Msg::Welcome(_) => "welcome".into(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        words,
        [
            "welcome".to_string(),
            format!("joined {}", churners[0].peer_id),
            format!("state {} Unreachable", stayer.peer_id),
        ]
    );
    assert!(closes(&out).is_empty());
}

#[test]
fn a_new_connection_takes_over_a_session_whose_old_connection_still_looks_alive() {
    // The seed's bug: the gateway has not noticed that the old connection is dead, and the
    // client is back. It must never answer "already connected".
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    f.signal(now, &b, "r", &a.peer_id, b"lost-in-dead-socket");
    f.drain();
    let (conn, out) = f.resume(f.at(1.0), &a, 2, 1, Transport::WebSocket);
    assert_eq!(closes(&out), [(a.conn, Reason::Superseded)]);
    let w = welcome_of(&out, conn);
    assert!(w.resumed);
    assert_eq!(w.peer_id, a.peer_id);
    assert_eq!(
        data_signals(&out, conn).len(),
        1,
        "the frame the dead socket swallowed"
    );
    assert!(
        msgs_to(&out, b.conn).is_empty(),
        "b sees nothing at all: a never left"
    );
    assert!(events(&out).contains(&HubEvent::Resume {
        transport: Transport::WebSocket,
        outcome: ResumeOutcome::TookOver
    }));
    assert_eq!(f.hub.gauges().online(Transport::WebSocket), 2);
    // The old connection's late news is ignored.
    f.hub
        .connection_lost(f.at(2.0), a.conn, Reason::LivenessTimeout, secs(10.0));
    assert!(f.drain().is_empty());
    f.signal(f.at(2.0), &a, "r", &b.peer_id, b"from-old");
    assert!(f.drain().is_empty());
    assert_eq!(f.hub.gauges().online(Transport::WebSocket), 2);
}

#[test]
fn a_stale_slow_attempt_cannot_take_the_session_from_a_newer_connection() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    // Attempt 2 connects fast and resumes; attempt 1 (started earlier) arrives later.
    let (newer, out) = f.resume(f.at(1.0), &a, 2, 2, Transport::WebTransport);
    assert!(welcome_of(&out, newer).resumed);
    let (stale, out) = f.resume(f.at(1.5), &a, 2, 1, Transport::WebSocket);
    assert_eq!(error_code(&out, stale), ErrorCode::StaleAttempt);
    assert_eq!(closes(&out), [(stale, Reason::Superseded)]);
    // The newer connection still holds the session.
    f.signal(f.at(2.0), &b, "r", &a.peer_id, b"to-newer");
    assert_eq!(data_signals(&f.drain(), newer).len(), 1);
    // A same-numbered retry is stale too; a higher one wins.
    let (retry, out) = f.resume(f.at(3.0), &a, 3, 2, Transport::WebSocket);
    assert_eq!(error_code(&out, retry), ErrorCode::StaleAttempt);
    let (newest, out) = f.resume(f.at(3.0), &a, 3, 3, Transport::WebSocket);
    assert!(welcome_of(&out, newest).resumed);
    assert_eq!(closes(&out), [(newer, Reason::Superseded)]);
}

#[test]
fn a_resume_without_an_attempt_number_is_refused_and_moves_no_fence() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, _b) = f.pair(now, "r");
    let (conn, out) = f.resume(f.at(1.0), &a, 2, 5, Transport::WebSocket);
    assert!(welcome_of(&out, conn).resumed);
    // attempt 0 would once skip the stale check and reset the high-water mark.
    let (zero, out) = f.resume(f.at(2.0), &a, 2, 0, Transport::WebSocket);
    let errors = errors_to(&out, zero);
    assert_eq!(errors[0].code(), ErrorCode::InvalidArgument);
    assert!(errors[0].message.contains("attempt"));
    assert!(closes(&out).is_empty(), "{out:?}");
    let (stale, out) = f.resume(f.at(3.0), &a, 2, 4, Transport::WebSocket);
    assert_eq!(error_code(&out, stale), ErrorCode::StaleAttempt);
}

#[test]
fn resume_with_an_unknown_token_is_expired_and_a_fresh_hello_still_works() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let conn = f.open(now, Transport::WebSocket);
    let hello = Hello {
        resume_token: "not-a-token".into(),
        attempt: 1,
        ..Default::default()
    };
    let out = f.hello_on(now, conn, hello);
    assert_eq!(error_code(&out, conn), ErrorCode::ResumeExpired);
    assert!(closes(&out).is_empty());
    assert!(!welcome_of(&f.hello_on(now, conn, Hello::default()), conn).resumed);
}

#[test]
fn resume_claiming_frames_never_sent_is_refused() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let a = f.client(now);
    f.join(now, &a, "r"); // seq 1
    f.hub
        .connection_lost(now, a.conn, Reason::ConnectionLost, secs(0.0));
    let (conn, out) = f.resume(f.at(1.0), &a, 99, 1, Transport::WebSocket);
    let errors = errors_to(&out, conn);
    assert_eq!(errors[0].code(), ErrorCode::InvalidArgument);
    assert!(errors[0].message.contains("99"));
}

#[test]
fn acks_trim_the_backlog_and_dropping_unacked_frames_turns_a_resume_into_a_clear_gap() {
    let config = HubConfig {
        limits: Limits {
            backlog_frames: 3,
            ..Limits::default()
        },
        ..HubConfig::default()
    };
    let mut f = Fixture::with(config);
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    // a acks everything it gets: nothing unacked is ever dropped, so a resume works.
    let mut last = 0;
    for _ in 0..10 {
        f.signal(now, &b, "r", &a.peer_id, b"s");
        last = frames_to(&f.drain(), a.conn)
            .last()
            .map(|fr| fr.seq)
            .expect("sent");
        f.send(now, a.conn, Msg::Ack(Ack { seq: last }));
    }
    let id = f.send(now, a.conn, Msg::Ack(Ack { seq: 1000 }));
    let errors = errors_to(&f.drain(), a.conn);
    assert_eq!(errors[0].code(), ErrorCode::InvalidArgument);
    assert_eq!(errors[0].in_reply_to, id);
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::ConnectionLost, secs(0.0));
    f.drain();
    let (a_conn, out) = f.resume(f.at(1.5), &a, last, 1, Transport::WebSocket);
    assert!(welcome_of(&out, a_conn).resumed);
    // b never acks the 10 signals a sends it: with a bound of 3 the oldest sent ones are
    // dropped, so a resume from seq 1 (b's Joined) would lose frames: a clear gap, never a
    // silent loss.
    let a_now = a.on(a_conn);
    for _ in 0..10 {
        f.signal(f.at(2.0), &a_now, "r", &b.peer_id, b"s");
    }
    f.drain();
    f.hub
        .connection_lost(f.at(3.0), b.conn, Reason::ConnectionLost, secs(0.0));
    f.drain();
    let (conn, out) = f.resume(f.at(4.0), &b, 1, 1, Transport::WebSocket);
    assert_eq!(error_code(&out, conn), ErrorCode::ResumeGap);
    // The old session is ended at once (its owner starts over), with its own reason.
    let lefts = peer_lefts(&out, a_conn);
    assert_eq!(lefts.len(), 1);
    assert_eq!(lefts[0].peer_id, b.peer_id);
    assert_eq!(lefts[0].reason(), Reason::ResumeGap);
    assert!(events(&out).contains(&HubEvent::Resume {
        transport: Transport::WebSocket,
        outcome: ResumeOutcome::Gap
    }));
    assert!(events(&out).contains(&HubEvent::SessionEnded {
        reason: Reason::ResumeGap
    }));
}

#[test]
fn resume_exactly_at_the_window_end_is_too_late() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let a = f.client(now);
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::LivenessTimeout, secs(10.0));
    f.hub.handle_timeout(f.at(31.0));
    let (conn, out) = f.resume(f.at(31.0), &a, 0, 1, Transport::WebSocket);
    assert_eq!(error_code(&out, conn), ErrorCode::ResumeExpired);
}

#[test]
fn resume_just_before_the_window_end_succeeds() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let a = f.client(now);
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::LivenessTimeout, secs(10.0));
    f.hub.handle_timeout(f.at(30.999));
    let (conn, out) = f.resume(f.at(30.999), &a, 0, 1, Transport::WebSocket);
    assert!(welcome_of(&out, conn).resumed);
}

#[test]
fn a_second_loss_gets_a_fresh_resume_window() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::LivenessTimeout, secs(10.0));
    let (conn, _) = f.resume(f.at(20.0), &a, 2, 1, Transport::WebSocket);
    f.hub
        .connection_lost(f.at(25.0), conn, Reason::LivenessTimeout, secs(10.0));
    f.drain();
    assert_eq!(
        f.hub.poll_timeout(),
        Some(f.at(55.0)),
        "one deadline, the new one"
    );
    f.hub.handle_timeout(f.at(54.0));
    assert!(peer_lefts(&f.drain(), b.conn).is_empty());
    f.hub.handle_timeout(f.at(55.0));
    assert_eq!(peer_lefts(&f.drain(), b.conn).len(), 1);
}
