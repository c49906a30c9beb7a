//! Signals: relay with the gateway's `from`, refusals, rate limits, the stream's numbering.

use super::*;
use crate::proto::{IceCandidate, SdpType, SessionDescription};

#[test]
fn every_session_stream_is_numbered_from_one_without_holes() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    let mut seqs = Vec::new();
    for _ in 0..5 {
        f.signal(now, &b, "r", &a.peer_id, b"x");
        seqs.extend(frames_to(&f.drain(), a.conn).iter().map(|fr| fr.seq));
    }
    // a: Joined = 1, PeerJoined(b) = 2, then five signals.
    assert_eq!(seqs, [3, 4, 5, 6, 7]);
}

#[test]
fn signals_are_relayed_with_the_senders_server_given_id_whatever_the_client_claims() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "call");
    let payloads = [
        signal::Payload::Description(SessionDescription {
            r#type: SdpType::Offer.into(),
            sdp: "v=0 offer".into(),
        }),
        signal::Payload::Candidate(IceCandidate {
            candidate: "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: Some("abcd".into()),
        }),
        signal::Payload::Data(Bytes::from_static(b"app")),
    ];
    for payload in payloads.clone() {
        let signal = Signal {
            room: "call".into(),
            to: b.peer_id.clone(),
            from: "p-forged".into(),
            payload: Some(payload),
        };
        f.send(now, a.conn, Msg::Signal(signal));
    }
    let out = f.drain();
    assert!(errors_to(&out, a.conn).is_empty(), "{out:?}");
    let got: Vec<Signal> = msgs_to(&out, b.conn)
        .into_iter()
        .filter_map(|m| match m {
            server_frame::Msg::Signal(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 3);
    for (s, payload) in got.iter().zip(payloads) {
        assert_eq!(s.from, a.peer_id);
        assert_eq!(s.to, b.peer_id);
        assert_eq!(s.room, "call");
        assert_eq!(s.payload, Some(payload));
    }
    let relayed = |kind| HubEvent::SignalRelayed { kind };
    assert_eq!(
        events(&out),
        [
            relayed(SignalKind::Description),
            relayed(SignalKind::Candidate),
            relayed(SignalKind::Data)
        ]
    );
}

#[test]
fn bad_signals_are_refused_with_the_matching_error_and_relay_nothing() {
    let mut f = Fixture::new();
    let now = f.at(0.0);
    let (a, b) = f.pair(now, "r");
    let outsider = f.client(now);
    f.join(now, &outsider, "elsewhere");
    let to_b = |room: &str| data_signal(room, &b.peer_id, b"d");
    let cases: Vec<(&Client, Signal, ErrorCode)> = vec![
        // A room that does not exist looks like one the sender is not in: no existence leak.
        (&a, to_b("nope"), ErrorCode::NotJoined),
        (&outsider, to_b("r"), ErrorCode::NotJoined),
        (
            &a,
            data_signal("r", "p-nobody", b"d"),
            ErrorCode::PeerNotInRoom,
        ),
        (
            &a,
            data_signal("r", &outsider.peer_id, b"d"),
            ErrorCode::PeerNotInRoom,
        ),
        (
            &a,
            data_signal("r", &a.peer_id, b"d"),
            ErrorCode::InvalidArgument,
        ),
        (&a, data_signal("r", "", b"d"), ErrorCode::InvalidArgument),
        (
            &a,
            Signal {
                payload: None,
                ..to_b("r")
            },
            ErrorCode::InvalidArgument,
        ),
        (
            &a,
            Signal {
                payload: Some(signal::Payload::Description(SessionDescription::default())),
                ..to_b("r")
            },
            ErrorCode::InvalidArgument,
        ),
    ];
    for (sender, signal, code) in cases {
        let id = f.send(now, sender.conn, Msg::Signal(signal.clone()));
        let out = f.drain();
        let errors = errors_to(&out, sender.conn);
        assert_eq!(errors.len(), 1, "{signal:?}: {out:?}");
        assert_eq!(errors[0].code(), code, "{signal:?}: {}", errors[0].message);
        assert_eq!(errors[0].in_reply_to, id);
        assert!(!errors[0].message.is_empty());
        assert!(data_signals(&out, b.conn).is_empty());
        assert!(events(&out).contains(&HubEvent::SignalRefused { reason: code }));
    }
}

#[test]
fn a_flooding_session_is_rate_limited_without_affecting_others() {
    let config = HubConfig {
        limits: Limits {
            requests_per_sec: 10,
            request_burst: 5,
            ..Limits::default()
        },
        ..HubConfig::default()
    };
    let mut f = Fixture::with(config);
    let now = f.at(0.0);
    let clients = f.room(now, "r", 3);
    let (flooder, victim, bystander) = (&clients[0], &clients[1], &clients[2]);
    // The joins used part of each bucket: advance so that every bucket is full.
    let now = f.at(10.0);
    for _ in 0..20 {
        f.signal(now, flooder, "r", &victim.peer_id, b"spam");
    }
    let out = f.drain();
    assert_eq!(data_signals(&out, victim.conn).len(), 5);
    let errors = errors_to(&out, flooder.conn);
    assert_eq!(errors.len(), 15);
    assert!(errors.iter().all(|e| e.code() == ErrorCode::RateLimited));
    // Not a protocol error: the flooder is not disconnected.
    assert!(closes(&out).is_empty());
    f.signal(now, bystander, "r", &victim.peer_id, b"hello");
    assert_eq!(data_signals(&f.drain(), victim.conn).len(), 1);
    // 100 ms later the flooder has one token again.
    f.signal(f.at(10.1), flooder, "r", &victim.peer_id, b"again");
    assert_eq!(data_signals(&f.drain(), victim.conn).len(), 1);
}
