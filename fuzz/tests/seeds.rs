//! The seed corpora (`corpus/<target>/seed-*`) are written from the scenarios below, and every
//! committed corpus file runs through its target's checks here (no libFuzzer needed).
//!
//! Regenerate the seeds after changing the input format or the scenarios:
//! `SIGNALGATE_WRITE_SEEDS=1 cargo test --test seeds` (in fuzz/).

use std::path::PathBuf;

use prost::Message;
use signalgate_fuzz::codec::{check_websocket_frame, check_webtransport_stream, max_to_bytes};
use signalgate_fuzz::ops::{
    AckPick, AttemptPick, CredPick, MsgPick, Op, PayloadPick, ProblemPick, SeqPick, Setup, decode,
    encode,
};
use signalgate_fuzz::proto::{
    self, Ack, ClientFrame, Hello, IceCandidate, Join, Leave, Ping, Refresh, SessionDescription,
    Signal, client_frame::Msg, signal,
};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn frame(id: u64, seq: u64, msg: Msg) -> ClientFrame {
    ClientFrame {
        id,
        seq,
        msg: Some(msg),
    }
}

/// One of every client frame kind.
fn sample_frames() -> Vec<(&'static str, ClientFrame)> {
    vec![
        ("hello", frame(1, 0, Msg::Hello(Hello::default()))),
        (
            "hello-resume",
            frame(
                2,
                0,
                Msg::Hello(Hello {
                    token: String::new(),
                    resume_token: "8Jm3n1u0p2yQxq6mLxH1wq1pNsm2dIYwqv3b6yI7oZ0".into(),
                    last_seq: 17,
                    attempt: 3,
                    client: "signalgate-js/1".into(),
                    acked_client_seq: 12,
                }),
            ),
        ),
        (
            "join",
            frame(
                3,
                1,
                Msg::Join(Join {
                    room: "lobby".into(),
                }),
            ),
        ),
        (
            "leave",
            frame(
                4,
                2,
                Msg::Leave(Leave {
                    room: "lobby".into(),
                }),
            ),
        ),
        (
            "signal-offer",
            frame(
                5,
                3,
                Msg::Signal(Signal {
                    room: "lobby".into(),
                    to: "p-AAAAAAAAAAAA".into(),
                    from: String::new(),
                    payload: Some(signal::Payload::Description(SessionDescription {
                        r#type: proto::SdpType::Offer.into(),
                        sdp: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n".into(),
                    })),
                }),
            ),
        ),
        (
            "signal-candidate",
            frame(
                6,
                4,
                Msg::Signal(Signal {
                    room: "lobby".into(),
                    to: "p-AAAAAAAAAAAA".into(),
                    from: String::new(),
                    payload: Some(signal::Payload::Candidate(IceCandidate {
                        candidate: "candidate:1 1 udp 2122260223 127.0.0.1 54400 typ host".into(),
                        sdp_mid: Some("0".into()),
                        sdp_m_line_index: Some(0),
                        username_fragment: Some("abcd".into()),
                    })),
                }),
            ),
        ),
        (
            "signal-data",
            frame(
                7,
                5,
                Msg::Signal(Signal {
                    room: "lobby".into(),
                    to: "p-AAAAAAAAAAAA".into(),
                    from: String::new(),
                    payload: Some(signal::Payload::Data(bytes::Bytes::from_static(
                        b"\x00\x01app data",
                    ))),
                }),
            ),
        ),
        (
            "ping",
            frame(
                8,
                0,
                Msg::Ping(Ping {
                    payload: bytes::Bytes::from_static(b"12345678"),
                }),
            ),
        ),
        ("ack", frame(9, 0, Msg::Ack(Ack { seq: 42 }))),
        ("bye", frame(10, 0, Msg::Bye(proto::Bye {}))),
        ("suspend", frame(11, 0, Msg::Suspend(proto::Suspend {}))),
        (
            "refresh",
            frame(
                12,
                0,
                Msg::Refresh(Refresh {
                    token: "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln".into(),
                }),
            ),
        ),
    ]
}

fn with_max(max: usize, body: &[u8]) -> Vec<u8> {
    let mut out = max_to_bytes(max).expect("a preset").to_vec();
    out.extend_from_slice(body);
    out
}

fn websocket_seeds() -> Seeds {
    let mut seeds: Seeds = sample_frames()
        .into_iter()
        .map(|(name, f)| (name.to_string(), with_max(64 * 1024, &f.encode_to_vec())))
        .collect();
    let join = sample_frames()[2].1.encode_to_vec();
    seeds.push(("too-large".into(), with_max(16, &[0x0a; 17])));
    seeds.push(("at-limit".into(), with_max(join.len(), &join)));
    seeds.push(("truncated".into(), with_max(1024, &join[..join.len() - 2])));
    seeds.push(("no-message".into(), with_max(1024, &[0x08, 0x07])));
    seeds.push((
        "unknown-field".into(),
        with_max(1024, &[0x08, 0x01, 0xf8, 0x01, 0x05]),
    ));
    seeds
}

fn stream_seed(max: usize, sizes: &[u8], frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = max_to_bytes(max).expect("a preset").to_vec();
    out.push(sizes.len() as u8);
    out.extend_from_slice(sizes);
    for f in frames {
        out.extend_from_slice(f);
    }
    out
}

fn webtransport_seeds() -> Seeds {
    let delimited: Vec<Vec<u8>> = sample_frames()
        .into_iter()
        .map(|(_, f)| f.encode_length_delimited_to_vec())
        .collect();
    vec![
        ("all-kinds".into(), stream_seed(64 * 1024, &[], &delimited)),
        (
            "all-kinds-chunked".into(),
            stream_seed(64 * 1024, &[1, 3, 0, 7, 64], &delimited),
        ),
        (
            "too-large-prefix".into(),
            stream_seed(1024, &[2], &[vec![0xff, 0xff, 0x7f, 0x00]]),
        ),
        (
            "endless-varint".into(),
            stream_seed(1024, &[4], &[vec![0x80; 12]]),
        ),
        (
            "garbage-body".into(),
            stream_seed(
                1024,
                &[5],
                &[vec![0x03, 0xff, 0xff, 0xff], delimited[0].clone()],
            ),
        ),
        (
            "incomplete".into(),
            stream_seed(
                1024,
                &[],
                &[delimited[4][..delimited[4].len() - 3].to_vec()],
            ),
        ),
    ]
}

fn setup() -> Setup {
    Setup {
        window: 0,            // 8 frames
        backlog_frames: 15,   // 16
        backlog_kib: 1,       // 2 KiB
        rooms_per_session: 3, // 4
        peers_per_room: 2,    // 4
        rate: 99,             // 100/s
        burst: 99,            // 100
        protocol_errors: 16,
        resume_window_s: 30,
        hello_timeout: 10, // 10.1 s
        seed: 1,
        auth: 0,
        max_sessions: 200,       // the default
        max_pending_hellos: 200, // the default
        token_grace_s: 10,
    }
}

/// With authentication: every Hello and Refresh comes with credentials.
fn auth_setup() -> Setup {
    Setup {
        auth: 1,
        max_sessions: 3,       // 4 sessions
        max_pending_hellos: 2, // 3 connections awaiting Hello
        ..setup()
    }
}

fn verified(identity: u8, grants: u8, expires_s: u8) -> CredPick {
    CredPick::Verified {
        identity,
        device: false,
        grants,
        signal: true,
        expires_s,
    }
}

fn hello_as(conn: u8, creds: CredPick) -> Op {
    send(
        conn,
        SeqPick::Unnumbered,
        MsgPick::Hello {
            resume: 0,
            last_seq: AckPick::Zero,
            attempt: AttemptPick::Next,
            creds,
        },
    )
}

fn send(conn: u8, seq: SeqPick, msg: MsgPick) -> Op {
    Op::Send { conn, seq, msg }
}

fn hello(conn: u8) -> Op {
    send(
        conn,
        SeqPick::Unnumbered,
        MsgPick::Hello {
            resume: 0,
            last_seq: AckPick::Zero,
            attempt: AttemptPick::Zero,
            creds: CredPick::Unverified,
        },
    )
}

/// `token`: 1-based index of the Welcome whose token it presents.
fn resume(conn: u8, token: u8, last_seq: AckPick) -> Op {
    send(
        conn,
        SeqPick::Unnumbered,
        MsgPick::Hello {
            resume: token,
            last_seq,
            attempt: AttemptPick::Next,
            creds: CredPick::Unverified,
        },
    )
}

fn join(conn: u8, room: u8) -> Op {
    send(conn, SeqPick::Next, MsgPick::Join { room })
}

fn data(conn: u8, to: u8, len: u8) -> Op {
    send(
        conn,
        SeqPick::Next,
        MsgPick::Signal {
            room: 0,
            to,
            payload: PayloadPick::Data(len),
        },
    )
}

fn ack(conn: u8) -> Op {
    send(
        conn,
        SeqPick::Unnumbered,
        MsgPick::Ack {
            seq: AckPick::Latest,
        },
    )
}

fn secs(s: u16) -> Op {
    Op::Advance {
        ms: 0x8000 | (s * 100),
    }
}

/// Two clients (conns 0 and 1, sessions 0 and 1) in room "a".
fn pair() -> Vec<Op> {
    vec![
        Op::Open {
            webtransport: false,
        },
        Op::Open { webtransport: true },
        hello(0),
        hello(1),
        join(0, 0),
        join(1, 0),
    ]
}

fn hub_seeds() -> Seeds {
    let mut scenarios: Vec<(&str, Vec<Op>)> = Vec::new();
    let mut relay = pair();
    relay.extend([
        data(0, 1, 8),
        send(
            1,
            SeqPick::Next,
            MsgPick::Signal {
                room: 0,
                to: 0,
                payload: PayloadPick::Description(1),
            },
        ),
        send(
            0,
            SeqPick::Next,
            MsgPick::Signal {
                room: 0,
                to: 1,
                payload: PayloadPick::Candidate(true),
            },
        ),
        ack(0),
        ack(1),
        send(0, SeqPick::Unnumbered, MsgPick::Ping { len: 4 }),
        send(1, SeqPick::Next, MsgPick::Leave { room: 0 }),
        secs(1),
    ]);
    scenarios.push(("relay", relay));

    let mut away = pair();
    away.extend([
        Op::Lost {
            conn: 1,
            reason: 2,
            silent_ms: 4000,
        },
        data(0, 1, 16),
        data(0, 1, 16),
        secs(5),
        Op::Open {
            webtransport: false,
        },
        resume(2, 2, AckPick::Back(1)),
        ack(2),
        data(2, 0, 4),
    ]);
    scenarios.push(("unreachable-then-resume", away));

    let mut takeover = pair();
    takeover.extend([
        data(0, 1, 3),
        Op::Open { webtransport: true },
        resume(2, 2, AckPick::Latest),
        data(1, 0, 3),
        data(2, 0, 3),
    ]);
    scenarios.push(("takeover", takeover));

    let mut expiry = pair();
    expiry.extend([
        send(1, SeqPick::Unnumbered, MsgPick::Suspend),
        secs(20),
        data(0, 1, 1),
        secs(11),
        Op::Open {
            webtransport: false,
        },
        resume(2, 2, AckPick::Latest),
    ]);
    scenarios.push(("suspend-then-expire", expiry));

    scenarios.push((
        "hello-timeout",
        vec![
            Op::Open {
                webtransport: false,
            },
            Op::Open { webtransport: true },
            send(0, SeqPick::Next, MsgPick::Join { room: 0 }),
            secs(11),
        ],
    ));

    let mut slow = pair();
    slow.push(Op::Stall {
        conn: 1,
        stalled: true,
    });
    for _ in 0..20 {
        slow.push(data(0, 1, 100));
    }
    slow.extend([
        Op::Drained { conn: 1, mark: 0 },
        Op::Lost {
            conn: 1,
            reason: 1,
            silent_ms: 10_000,
        },
        Op::Open {
            webtransport: false,
        },
        resume(2, 2, AckPick::Back(3)),
    ]);
    scenarios.push(("slow-reader-backlog", slow));

    // A client that acknowledges frames numbered for it but not sent yet (the replay of a
    // resume waits behind a stalled writer).
    let mut ahead = pair();
    ahead.push(Op::Lost {
        conn: 1,
        reason: 2,
        silent_ms: 100,
    });
    for _ in 0..12 {
        ahead.push(data(0, 1, 10));
    }
    ahead.extend([
        Op::Open {
            webtransport: false,
        },
        Op::Stall {
            conn: 2,
            stalled: true,
        },
        resume(2, 2, AckPick::Latest),
        send(
            2,
            SeqPick::Unnumbered,
            MsgPick::Ack {
                seq: AckPick::Ahead(2),
            },
        ),
        Op::Stall {
            conn: 2,
            stalled: false,
        },
        data(2, 0, 1),
    ]);
    scenarios.push(("ack-of-unsent-replay", ahead));

    let mut bye = pair();
    bye.extend([
        Op::Open {
            webtransport: false,
        },
        hello(2),
        join(2, 0),
        send(1, SeqPick::Unnumbered, MsgPick::Bye),
        data(0, 1, 2),
        Op::Overflow { conn: 2 },
        Op::Shutdown,
        Op::Open { webtransport: true },
        hello(3),
    ]);
    scenarios.push(("bye-overflow-shutdown", bye));

    let mut errors = pair();
    errors.extend([
        Op::Rejected {
            conn: 0,
            problem: ProblemPick::Malformed,
        },
        send(0, SeqPick::Skip, MsgPick::Join { room: 1 }),
        send(0, SeqPick::Repeat, MsgPick::Join { room: 1 }),
        send(0, SeqPick::Next, MsgPick::Join { room: 4 }),
        send(0, SeqPick::Next, MsgPick::Leave { room: 3 }),
        send(
            0,
            SeqPick::Next,
            MsgPick::Signal {
                room: 0,
                to: 250,
                payload: PayloadPick::Empty,
            },
        ),
        send(
            0,
            SeqPick::Next,
            MsgPick::Signal {
                room: 0,
                to: 1,
                payload: PayloadPick::Description(0),
            },
        ),
        send(
            0,
            SeqPick::Unnumbered,
            MsgPick::Ack {
                seq: AckPick::Ahead(9),
            },
        ),
        send(
            1,
            SeqPick::Unnumbered,
            MsgPick::Hello {
                resume: 0,
                last_seq: AckPick::Zero,
                attempt: AttemptPick::Zero,
                creds: CredPick::Unverified,
            },
        ),
        Op::Open {
            webtransport: false,
        },
        resume(2, 255, AckPick::Zero),
        send(
            2,
            SeqPick::Unnumbered,
            MsgPick::Hello {
                resume: 1,
                last_seq: AckPick::Ahead(50),
                attempt: AttemptPick::Zero,
                creds: CredPick::Unverified,
            },
        ),
        Op::Rejected {
            conn: 1,
            problem: ProblemPick::TooLarge,
        },
    ]);
    scenarios.push(("refusals", errors));

    let mut seeds: Seeds = scenarios
        .into_iter()
        .map(|(name, ops)| (name.to_string(), encode(&setup(), &ops)))
        .collect();

    // With authentication.
    let ws = Op::Open {
        webtransport: false,
    };
    let mut identity = vec![
        ws.clone(),
        ws.clone(),
        hello_as(0, verified(0, 0, 60)),
        hello_as(1, verified(1, 3, 60)),
        join(0, 0),
        join(1, 1),
        join(1, 3),
        join(1, 0),
        data(0, 1, 5),
        // alice's app restarts: no resume token, same identity -> takes the session over.
        ws.clone(),
        hello_as(2, verified(0, 0, 60)),
        join(2, 1),
        send(
            2,
            SeqPick::Next,
            MsgPick::Refresh {
                creds: verified(0, 1, 90),
            },
        ),
        send(
            1,
            SeqPick::Unnumbered,
            MsgPick::Refresh {
                creds: verified(2, 0, 90),
            },
        ),
        // A resume token of bob's session presented by carol.
        ws.clone(),
        send(
            3,
            SeqPick::Unnumbered,
            MsgPick::Hello {
                resume: 2,
                last_seq: AckPick::Latest,
                attempt: AttemptPick::Next,
                creds: verified(2, 0, 60),
            },
        ),
        hello_as(3, CredPick::Refused(1)),
        hello_as(3, CredPick::Unverified),
        Op::Disconnect {
            target: 1,
            by_identity: true,
        },
    ];
    identity.push(secs(1));
    seeds.push((
        "auth-identity-refresh-disconnect".into(),
        encode(&auth_setup(), &identity),
    ));

    let mut expiry = vec![
        ws.clone(),
        ws.clone(),
        hello_as(0, verified(0, 0, 5)),
        hello_as(1, verified(1, 0, 120)),
        join(0, 0),
        join(1, 0),
        secs(6),
        send(
            0,
            SeqPick::Unnumbered,
            MsgPick::Refresh {
                creds: verified(0, 0, 5),
            },
        ),
        secs(6),
        secs(11),
        ws.clone(),
        send(
            2,
            SeqPick::Unnumbered,
            MsgPick::Hello {
                resume: 1,
                last_seq: AckPick::Latest,
                attempt: AttemptPick::Next,
                creds: verified(0, 0, 60),
            },
        ),
    ];
    expiry.extend([ws.clone(), ws.clone(), ws.clone(), ws.clone(), ws.clone()]);
    for conn in 3..8 {
        expiry.push(hello_as(conn, verified(2, 0, 60)));
    }
    seeds.push((
        "auth-expiry-and-limits".into(),
        encode(&auth_setup(), &expiry),
    ));
    seeds
}

/// Named inputs of one target.
type Seeds = Vec<(String, Vec<u8>)>;

fn all_seeds() -> Vec<(&'static str, Seeds)> {
    vec![
        ("websocket_frame", websocket_seeds()),
        ("webtransport_stream", webtransport_seeds()),
        ("hub", hub_seeds()),
    ]
}

fn check(target: &str, data: &[u8]) {
    match target {
        "websocket_frame" => check_websocket_frame(data),
        "webtransport_stream" => check_webtransport_stream(data),
        "hub" => signalgate_fuzz::hub::run(data),
        other => panic!("no target {other}"),
    }
}

#[test]
fn seeds_are_committed_and_current() {
    let write = std::env::var_os("SIGNALGATE_WRITE_SEEDS").is_some();
    for (target, seeds) in all_seeds() {
        let dir = corpus_dir(target);
        for (name, bytes) in seeds {
            check(target, &bytes);
            let path = dir.join(format!("seed-{name}"));
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            } else {
                let committed = std::fs::read(&path).unwrap_or_else(|e| {
                    panic!(
                        "{}: {e} (SIGNALGATE_WRITE_SEEDS=1 writes it)",
                        path.display()
                    )
                });
                assert_eq!(
                    committed,
                    bytes,
                    "{} is stale (SIGNALGATE_WRITE_SEEDS=1 rewrites it)",
                    path.display()
                );
            }
        }
    }
}

/// Every corpus file there is (the committed seeds, and whatever local fuzzing added) passes
/// its target's checks: a regression test without libFuzzer.
#[test]
fn corpora_pass() {
    for target in ["websocket_frame", "webtransport_stream", "hub"] {
        let Ok(entries) = std::fs::read_dir(corpus_dir(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            check(target, &std::fs::read(&path).unwrap());
        }
    }
}

/// `encode` is the inverse of the `arbitrary` decoding, on inputs from a simple generator.
#[test]
fn op_encoding_round_trips() {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let len = (next() % 300) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let (setup, ops) = decode(&bytes);
        let again = decode(&encode(&setup, &ops));
        assert_eq!(again, (setup, ops), "input {bytes:?}");
    }
    let ops = pair();
    assert_eq!(decode(&encode(&setup(), &ops)), (setup(), ops));
}

/// Runs one input without libFuzzer, e.g. with the hub's trace of every op and output:
/// `SIGNALGATE_FUZZ_TRACE=1 SIGNALGATE_FUZZ_INPUT=artifacts/hub/crash-… cargo test --test
/// seeds replay -- --ignored --nocapture` (`SIGNALGATE_FUZZ_TARGET` picks the target, default
/// hub).
#[test]
#[ignore]
fn replay() {
    let path = std::env::var("SIGNALGATE_FUZZ_INPUT").expect("SIGNALGATE_FUZZ_INPUT=<file>");
    let target = std::env::var("SIGNALGATE_FUZZ_TARGET").unwrap_or_else(|_| "hub".into());
    check(&target, &std::fs::read(path).unwrap());
}
