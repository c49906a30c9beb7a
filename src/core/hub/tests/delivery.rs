//! The delivery contract: client frames numbered and acknowledged (exactly once, in order,
//! an Error before the Ack that covers it), and a stream paced by what the connection drains.

use super::*;
use crate::proto::{Ack, Leave};

fn signal_msg(to: &str, data: &'static [u8]) -> Msg {
    Msg::Signal(data_signal("r", to, data))
}

#[test]
fn numbered_frames_are_processed_once_in_order_and_acknowledged() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    f.send_numbered(now, a.conn, 1, signal_msg(&b.peer_id, b"one"));
    f.send_numbered(now, a.conn, 2, signal_msg(&b.peer_id, b"two"));
    let out = f.drain();
    assert_eq!(
        acks_to(&out, a.conn),
        [2],
        "one Ack for what came in together"
    );
    // A resend of what was processed is skipped (and acknowledged again).
    f.send_numbered(now, a.conn, 2, signal_msg(&b.peer_id, b"two"));
    let out = f.drain();
    assert!(data_signals(&out, b.conn).is_empty(), "never relayed twice");
    assert!(errors_to(&out, a.conn).is_empty());
    // A frame that skips a number is refused, not processed, and changes nothing.
    let id = f.send_numbered(now, a.conn, 4, signal_msg(&b.peer_id, b"four"));
    let out = f.drain();
    let errors = errors_to(&out, a.conn);
    assert_eq!(errors[0].code(), ErrorCode::InvalidArgument);
    assert_eq!(errors[0].in_reply_to, id);
    assert!(
        errors[0].message.contains("from 3"),
        "{}",
        errors[0].message
    );
    assert!(data_signals(&out, b.conn).is_empty());
    f.send_numbered(now, a.conn, 3, signal_msg(&b.peer_id, b"three"));
    let out = f.drain();
    assert_eq!(acks_to(&out, a.conn), [3]);
    let got: Vec<Bytes> = data_signals(&out, b.conn)
        .into_iter()
        .map(|s| s.2)
        .collect();
    assert_eq!(got, ["three"]);
}

#[test]
fn a_refused_frame_gets_its_error_before_the_ack_that_covers_it() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    let refused = f.send_numbered(now, a.conn, 1, signal_msg("p-nobody", b"x"));
    f.send_numbered(now, a.conn, 2, signal_msg(&b.peer_id, b"ok"));
    let out = f.drain();
    let to_a: Vec<String> = msgs_to(&out, a.conn)
        .into_iter()
        .map(|m| match m {
            server_frame::Msg::Error(e) => {
                format!("error {} for {}", e.code().as_str_name(), e.in_reply_to)
            }
            server_frame::Msg::Ack(k) => format!("ack {}", k.seq),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        to_a,
        [
            format!("error ERROR_CODE_PEER_NOT_IN_ROOM for {refused}"),
            "ack 2".to_string()
        ]
    );
}

#[test]
fn the_welcome_of_a_resume_says_what_was_processed_and_the_old_connection_is_not_read() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    f.send_numbered(now, a.conn, 1, signal_msg(&b.peer_id, b"one"));
    f.drain();
    // a moves to a new connection while frame 2 is still on its way over the old one.
    let (conn, out) = f.resume(f.at(1.0), &a, 2, 1, Transport::WebTransport);
    let w = welcome_of(&out, conn);
    assert_eq!(w.last_client_seq, 1);
    f.send_numbered(f.at(1.1), a.conn, 2, signal_msg(&b.peer_id, b"two"));
    assert!(
        f.drain().is_empty(),
        "the superseded connection is not read"
    );
    // The client resends what the Welcome did not cover: processed once.
    f.send_numbered(f.at(1.2), conn, 2, signal_msg(&b.peer_id, b"two"));
    let out = f.drain();
    assert_eq!(acks_to(&out, conn), [2]);
    let got: Vec<Bytes> = data_signals(&out, b.conn)
        .into_iter()
        .map(|s| s.2)
        .collect();
    assert_eq!(got, ["two"]);
    // And after another loss, the resume's Welcome says 2.
    f.hub
        .connection_lost(f.at(2.0), conn, Reason::ConnectionLost, secs(0.0));
    let (conn, out) = f.resume(f.at(3.0), &a, 2, 2, Transport::WebSocket);
    assert_eq!(welcome_of(&out, conn).last_client_seq, 2);
}

#[test]
fn a_fresh_session_numbers_from_one_again() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let a = f.client(now);
    f.send_numbered(now, a.conn, 1, Msg::Join(Join { room: "r".into() }));
    let out = f.drain();
    assert_eq!(acks_to(&out, a.conn), [1]);
    let b = f.client(now);
    f.send_numbered(now, b.conn, 1, Msg::Join(Join { room: "r".into() }));
    assert_eq!(acks_to(&f.drain(), b.conn), [1]);
}

#[test]
fn a_long_replay_is_paced_by_what_the_connection_drains_never_a_slow_consumer() {
    // The window is 8 frames; 300 signals wait for a client that is away.
    let config = HubConfig {
        limits: Limits {
            send_window_frames: 8,
            ..Limits::default()
        },
        ..HubConfig::default()
    };
    let mut f = Fixture::with(config);
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    f.hub
        .connection_lost(f.at(1.0), a.conn, Reason::ConnectionLost, secs(0.0));
    f.drain();
    for i in 0..300u64 {
        // Spread over time so the sender stays within the rate limit.
        f.signal(f.at(1.0 + i as f64 * 0.03), &b, "r", &a.peer_id, b"held");
    }
    assert!(errors_to(&f.drain(), b.conn).is_empty());
    let conn = ConnId(f.next_conn);
    f.stalled.insert(conn);
    let (_, out) = f.resume(f.at(11.0), &a, 2, 1, Transport::WebSocket);
    assert_eq!(welcome_of(&out, conn).replay_until_seq, 302);
    assert_eq!(data_signals(&out, conn).len(), 8, "one window, then wait");
    let marks: Vec<u64> = out
        .iter()
        .filter_map(|o| match o {
            Output::Checkpoint { conn: c, mark } if *c == conn => Some(*mark),
            _ => None,
        })
        .collect();
    assert_eq!(marks, [1, 2, 3, 4], "a checkpoint every quarter window");
    assert!(closes(&out).is_empty());
    // Live traffic meanwhile queues behind the replay, in order.
    f.signal(f.at(11.1), &b, "r", &a.peer_id, b"live");
    assert!(
        f.drain()
            .iter()
            .all(|o| !matches!(o, Output::Send { conn: c, .. } if *c == conn))
    );
    // As the writer reports checkpoints, the rest follows in order.
    f.stalled.clear();
    let mut seqs = Vec::new();
    let mut mark = 4;
    loop {
        f.hub.connection_drained(f.at(11.2), conn, mark);
        let out = f.drain();
        assert!(closes(&out).is_empty());
        let got = data_signals(&out, conn);
        if got.is_empty() {
            break;
        }
        seqs.extend(got.iter().map(|s| s.0));
        mark += 100; // a late, cumulative report
    }
    assert_eq!(seqs, (11..=303).collect::<Vec<u64>>());
}

#[test]
fn a_reader_that_stalls_makes_its_senders_see_buffer_full_not_itself_closed() {
    let config = HubConfig {
        limits: Limits {
            send_window_frames: 8,
            backlog_frames: 20,
            ..Limits::default()
        },
        ..HubConfig::default()
    };
    let mut f = Fixture::with(config);
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    f.stalled.insert(a.conn);
    let mut refused = 0;
    for i in 0..40 {
        f.signal(f.at(i as f64 * 0.05), &b, "r", &a.peer_id, b"x");
        let out = f.drain();
        assert!(closes(&out).is_empty());
        refused += errors_to(&out, b.conn)
            .iter()
            .filter(|e| e.code() == ErrorCode::RecipientBufferFull)
            .count();
    }
    // A window of 8 in flight plus 20 waiting are accepted; the rest is refused to b.
    assert_eq!(refused, 40 - 8 - 20);
}

#[test]
fn a_client_that_sends_requests_but_never_reads_is_closed_as_a_slow_consumer() {
    let config = HubConfig {
        limits: Limits {
            send_window_frames: 4,
            backlog_frames: 10,
            ..Limits::default()
        },
        ..HubConfig::default()
    };
    let mut f = Fixture::with(config);
    let now = f.at(0.0);
    let a = f.client(now);
    f.stalled.insert(a.conn);
    let mut closed = None;
    for i in 0..30 {
        let room = if i % 2 == 0 { "x" } else { "y" };
        let msg = if i % 4 < 2 {
            Msg::Join(Join { room: room.into() })
        } else {
            Msg::Leave(Leave { room: room.into() })
        };
        f.send(f.at(i as f64 * 0.1), a.conn, msg);
        if let Some(&(_, reason)) = closes(&f.drain()).first() {
            closed = Some((i, reason));
            break;
        }
    }
    // 4 in the window, 10 waiting, the 15th reply is one too many.
    assert_eq!(closed, Some((14, Reason::SlowConsumer)));
}

#[test]
fn the_ack_waits_for_the_stream_to_drain() {
    let config = HubConfig {
        limits: Limits {
            send_window_frames: 4,
            ..Limits::default()
        },
        ..HubConfig::default()
    };
    let mut f = Fixture::with(config);
    let now = f.at(0.0);
    let a = f.client(now);
    f.stalled.insert(a.conn);
    for seq in 1..=6 {
        let room = format!("room{seq}");
        f.send_numbered(now, a.conn, seq, Msg::Join(Join { room }));
    }
    let out = f.drain();
    assert_eq!(msgs_to(&out, a.conn).len(), 4, "a full window of Joined");
    assert!(
        acks_to(&out, a.conn).is_empty(),
        "Joined 5 and 6 are still waiting"
    );
    f.stalled.clear();
    f.hub.connection_drained(now, a.conn, 99);
    let out = f.drain();
    let kinds: Vec<&str> = msgs_to(&out, a.conn)
        .iter()
        .map(|m| match m {
            server_frame::Msg::Joined(_) => "joined",
            server_frame::Msg::Ack(_) => "ack",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["joined", "joined", "ack"]);
    assert_eq!(acks_to(&out, a.conn), [6]);
    // Client acks are never rate limited and never acknowledged themselves.
    f.send(now, a.conn, Msg::Ack(Ack { seq: 6 }));
    assert!(f.drain().is_empty());
}

#[test]
fn a_client_cannot_acknowledge_frames_it_was_never_sent() {
    let config = HubConfig {
        limits: Limits {
            send_window_frames: 4,
            ..Limits::default()
        },
        ..HubConfig::default()
    };
    let mut f = Fixture::with(config);
    let now = f.at(0.0);
    let a = f.client(now);
    f.stalled.insert(a.conn);
    for seq in 1..=6 {
        let room = format!("room{seq}");
        f.send_numbered(now, a.conn, seq, Msg::Join(Join { room }));
    }
    f.drain(); // Joined 1..=4 went out; 5 and 6 wait for the window.
    let too_far = f.send(now, a.conn, Msg::Ack(Ack { seq: 6 }));
    f.send(now, a.conn, Msg::Ack(Ack { seq: 4 }));
    // The replies wait behind the window too; once it opens, everything comes in order:
    // frames 5 and 6 were not forgotten, and the Ack of 6 was refused.
    f.stalled.clear();
    f.hub.connection_drained(now, a.conn, 99);
    let out = f.drain();
    let joined: Vec<u64> = frames_to(&out, a.conn)
        .iter()
        .filter(|fr| matches!(fr.msg, Some(server_frame::Msg::Joined(_))))
        .map(|fr| fr.seq)
        .collect();
    assert_eq!(joined, [5, 6]);
    let errors = errors_to(&out, a.conn);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code(), ErrorCode::InvalidArgument);
    assert_eq!(errors[0].in_reply_to, too_far);
}
