//! Durable mode on a fake clock: what is stored before it counts, what is refused when it
//! cannot be stored, and what another gateway recovers from a lost gateway's logs. The store
//! here keeps records in memory with JetStream's one rule that matters (an append is refused
//! unless the log's last record is the one expected); the real JetStream is exercised by
//! `tests/durable.rs`.

use std::collections::HashMap;

use super::*;
use crate::core::hub::{PersistFailure, StoredRecord};
use crate::proto::cluster::DurableRecord;

#[derive(Default)]
struct Store {
    logs: HashMap<String, Vec<StoredRecord>>,
    next_stream_seq: u64,
    /// Appends asked for and not answered yet: (log key, expected last, record).
    waiting: Vec<(String, Option<u64>, DurableRecord)>,
    /// Logs read: (ticket, key).
    reads: Vec<(u64, String)>,
}

impl Store {
    /// Takes the store's work out of `out`; the rest is returned.
    fn take(&mut self, out: Vec<Output>) -> Vec<Output> {
        let mut rest = Vec::new();
        for o in out {
            match o {
                Output::Persist {
                    key,
                    expect_last,
                    record,
                } => self.waiting.push((key, expect_last, *record)),
                Output::ReadLog { ticket, key } => self.reads.push((ticket, key)),
                other => rest.push(other),
            }
        }
        rest
    }

    /// Stores what waits (or refuses it, as JetStream would) and tells the hub.
    fn store_all(&mut self, hub: &mut Hub, now: Instant) {
        for (key, expect_last, record) in std::mem::take(&mut self.waiting) {
            let log = self.logs.entry(key.clone()).or_default();
            let last = log.last().map(|r| r.stream_seq);
            if expect_last.is_some() && expect_last != last {
                let last = log.last().cloned().map(Box::new);
                hub.persist_failed(now, &key, PersistFailure::Conflict { last });
                continue;
            }
            self.next_stream_seq += 1;
            log.push(StoredRecord {
                stream_seq: self.next_stream_seq,
                age: Duration::ZERO,
                record,
            });
            // The stream's limit per subject: JetStream drops a log's oldest records.
            let keep = LOG_RECORDS as usize;
            if log.len() > keep {
                log.drain(..log.len() - keep);
            }
            hub.persisted(now, &key, self.next_stream_seq);
        }
    }

    fn fail_all(&mut self, hub: &mut Hub, now: Instant) {
        for (key, _, _) in std::mem::take(&mut self.waiting) {
            let failure = PersistFailure::Unavailable("no quorum".into());
            hub.persist_failed(now, &key, failure);
        }
    }

    fn answer_reads(&mut self, hub: &mut Hub, now: Instant) {
        for (ticket, key) in std::mem::take(&mut self.reads) {
            let records = self.logs.get(&key).cloned().unwrap_or_default();
            hub.recovered(now, ticket, Ok(records));
        }
    }
}

/// A durable gateway and its store: everything the clients got so far is kept in `out`.
struct Gateway {
    fx: Fixture,
    out: Vec<Output>,
}

fn durable_config(node: &str) -> HubConfig {
    HubConfig {
        cluster_node: Some(node.into()),
        durable: true,
        ..HubConfig::default()
    }
}

impl Gateway {
    fn new(node: &str, seed: u64) -> Self {
        let mut fx = Fixture::with(durable_config(node));
        fx.hub = Hub::with_entropy(durable_config(node), Box::new(SeededEntropy::new(seed)));
        Self {
            fx,
            out: Vec::new(),
        }
    }

    /// Collects outputs, storing nothing.
    fn collect(&mut self, store: &mut Store) {
        let out = self.fx.drain();
        let rest = store.take(out);
        self.out.extend(rest);
    }

    /// Collects outputs and stores every record until the gateway is quiet.
    fn settle(&mut self, store: &mut Store, now: Instant) {
        loop {
            self.collect(store);
            if store.waiting.is_empty() && store.reads.is_empty() {
                break;
            }
            store.store_all(&mut self.fx.hub, now);
            store.answer_reads(&mut self.fx.hub, now);
        }
    }

    fn client(&mut self, store: &mut Store, now: Instant) -> Client {
        let conn = self.fx.open(now, Transport::WebSocket);
        self.fx.send(now, conn, Msg::Hello(Hello::default()));
        self.settle(store, now);
        let welcome = welcome_of(&self.out, conn);
        Client {
            conn,
            peer_id: welcome.peer_id,
            token: welcome.resume_token,
        }
    }

    /// A client of a lost gateway comes here with its resume token (everything settled).
    fn resume(&mut self, store: &mut Store, now: Instant, c: &Client, last_seq: u64) -> ConnId {
        self.resume_acked(store, now, c, last_seq, 0)
    }

    /// [`Self::resume`] by a client whose numbered frames up to `acked` were acknowledged.
    fn resume_acked(
        &mut self,
        store: &mut Store,
        now: Instant,
        c: &Client,
        last_seq: u64,
        acked: u64,
    ) -> ConnId {
        let conn = self.fx.open(now, Transport::WebSocket);
        let hello = Hello {
            resume_token: c.token.clone(),
            last_seq,
            attempt: 1,
            acked_client_seq: acked,
            ..Default::default()
        };
        self.fx.send(now, conn, Msg::Hello(hello));
        self.settle(store, now);
        conn
    }

    fn signal(&mut self, now: Instant, from: &Client, seq: u64, to: &Client, data: &'static [u8]) {
        let signal = data_signal("r", &to.peer_id, data);
        self.fx
            .send_numbered(now, from.conn, seq, Msg::Signal(signal));
    }
}

/// Alice and Bob in room "r" of durable gateway "a", everything stored.
fn alice_and_bob(store: &mut Store, now: Instant) -> (Gateway, Client, Client) {
    let mut a = Gateway::new("a", 1);
    let alice = a.client(store, now);
    let bob = a.client(store, now);
    for c in [&alice, &bob] {
        a.fx.send(now, c.conn, Msg::Join(Join { room: "r".into() }));
        a.settle(store, now);
    }
    a.out.clear();
    (a, alice, bob)
}

#[test]
fn a_signal_reaches_its_recipient_and_its_sender_hears_of_it_only_once_stored() {
    let mut store = Store::default();
    let now = Instant::now();
    let (mut a, alice, bob) = alice_and_bob(&mut store, now);
    a.signal(now, &alice, 1, &bob, b"offer");
    a.collect(&mut store);
    assert!(
        data_signals(&a.out, bob.conn).is_empty(),
        "sent before stored"
    );
    assert!(
        acks_to(&a.out, alice.conn).is_empty(),
        "acknowledged before stored"
    );
    store.store_all(&mut a.fx.hub, now); // Bob's record: the signal.
    a.collect(&mut store);
    let got = data_signals(&a.out, bob.conn);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, alice.peer_id);
    assert_eq!(
        acks_to(&a.out, alice.conn),
        [1],
        "accepted once in Bob's log"
    );
    assert!(
        store.waiting.is_empty(),
        "one write per signal: Alice's log has nothing new"
    );
}

#[test]
fn a_join_is_acknowledged_only_once_the_joiners_own_log_stored_it() {
    let mut store = Store::default();
    let now = Instant::now();
    let mut a = Gateway::new("a", 1);
    let alice = a.client(&mut store, now);
    a.out.clear();
    let join = Msg::Join(Join { room: "r".into() });
    a.fx.send_numbered(now, alice.conn, 1, join);
    a.collect(&mut store);
    assert!(
        acks_to(&a.out, alice.conn).is_empty(),
        "acknowledged before its room was stored"
    );
    a.settle(&mut store, now);
    assert_eq!(acks_to(&a.out, alice.conn), [1]);
    let log = &store.logs[&log_key(&alice.token)];
    let rooms = log.last().and_then(|r| r.record.session.as_ref());
    assert_eq!(rooms.map(|s| s.rooms.clone()), Some(vec!["r".to_string()]));
}

#[test]
fn a_recovered_session_continues_from_what_its_client_was_acknowledged() {
    let mut store = Store::default();
    let now = Instant::now();
    let (mut a, alice, bob) = alice_and_bob(&mut store, now);
    for seq in 1..=2 {
        a.signal(now, &alice, seq, &bob, b"acked");
        a.settle(&mut store, now);
    }
    assert_eq!(acks_to(&a.out, alice.conn), [1, 2]);
    // Gateway a dies; Alice's log never heard of frames 1 and 2 (Bob's did).
    let mut b = Gateway::new("b", 2);
    let later = now + secs(1.0);
    b.fx.hub.node_lost(later, "a", secs(1.0));
    let bob_conn = b.resume(&mut store, later, &bob, 0);
    let alice_conn = b.resume_acked(&mut store, later, &alice, 0, 2);
    assert_eq!(welcome_of(&b.out, alice_conn).last_client_seq, 2);
    b.signal(later, &alice.on(alice_conn), 3, &bob.on(bob_conn), b"after");
    b.settle(&mut store, later);
    assert!(
        errors_to(&b.out, alice_conn).is_empty(),
        "frame 3 follows 2"
    );
    assert_eq!(acks_to(&b.out, alice_conn), [3]);
    let data: Vec<Vec<u8>> = data_signals(&b.out, bob_conn)
        .into_iter()
        .map(|(_, _, d)| d.to_vec())
        .collect();
    assert_eq!(
        data,
        [b"acked".to_vec(), b"acked".to_vec(), b"after".to_vec()]
    );
}

#[test]
fn a_signal_its_log_cannot_store_is_refused_and_the_stream_has_no_hole() {
    let mut store = Store::default();
    let now = Instant::now();
    let (mut a, alice, bob) = alice_and_bob(&mut store, now);
    a.signal(now, &alice, 1, &bob, b"lost");
    a.collect(&mut store);
    store.fail_all(&mut a.fx.hub, now); // JetStream is down: neither log is written.
    a.collect(&mut store);
    let errors = errors_to(&a.out, alice.conn);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code(), ErrorCode::StorageUnavailable);
    assert!(data_signals(&a.out, bob.conn).is_empty());
    // JetStream is back: the logs are written again, and Alice's Ack says frame 1 is settled.
    a.fx.hub.handle_timeout(now + secs(1.0));
    a.settle(&mut store, now + secs(1.0));
    assert_eq!(
        acks_to(&a.out, alice.conn),
        [1],
        "refused counts as settled"
    );
    a.signal(now + secs(1.0), &alice, 2, &bob, b"kept");
    a.settle(&mut store, now + secs(1.0));
    let got = data_signals(&a.out, bob.conn);
    assert_eq!(got.len(), 1, "only the stored signal arrives: {got:?}");
    assert_eq!(&got[0].2[..], b"kept");
    let bob_seqs: Vec<u64> = frames_to(&a.out, bob.conn)
        .iter()
        .map(|f| f.seq)
        .filter(|s| *s > 0)
        .collect();
    let contiguous = bob_seqs.windows(2).all(|w| w[1] == w[0] + 1);
    assert!(contiguous, "Bob's stream has a hole: {bob_seqs:?}");
}

#[test]
fn a_lost_gateways_session_is_recovered_elsewhere_with_every_frame_its_client_missed() {
    let mut store = Store::default();
    let now = Instant::now();
    let (mut a, alice, bob) = alice_and_bob(&mut store, now);
    let three: [(u64, &'static [u8]); 3] = [(1, b"one"), (2, b"two"), (3, b"three")];
    for (seq, data) in three {
        a.signal(now, &alice, seq, &bob, data);
        a.settle(&mut store, now);
    }
    let got = data_signals(&a.out, bob.conn);
    assert_eq!(got.len(), 3);
    // Bob's client processed the first only; then gateway a dies with everything.
    let last_seq = got[0].0;
    let mut b = Gateway::new("b", 2);
    let later = now + secs(1.0);
    b.fx.hub.node_lost(later, "a", secs(1.0));
    let conn = b.resume(&mut store, later, &bob, last_seq);
    let welcome = welcome_of(&b.out, conn);
    assert!(welcome.resumed);
    assert_eq!(welcome.peer_id, bob.peer_id, "same peer id");
    assert_eq!(welcome.rooms, ["r"], "same rooms");
    let replayed = data_signals(&b.out, conn);
    let data: Vec<&[u8]> = replayed.iter().map(|(_, _, d)| &d[..]).collect();
    assert_eq!(
        data,
        [&b"two"[..], b"three"],
        "every frame after last_seq, once, in order"
    );
    assert_eq!(replayed[0].0, last_seq + 1, "seq numbers continue");

    // Gateway a was only cut off, and writes to Bob's log again: it is fenced out.
    a.fx.hub.handle_timeout(now + LOG_MAX_AGE);
    a.collect(&mut store);
    store.store_all(&mut a.fx.hub, now + LOG_MAX_AGE);
    a.collect(&mut store);
    let log = &store.logs[&log_key(&bob.token)];
    let newest = log.last().and_then(|r| r.record.session.as_ref());
    assert_eq!(
        newest.map(|s| s.durable_generation),
        Some(1),
        "b's record stays last"
    );
}

#[test]
fn a_signal_sent_again_after_the_senders_gateway_crashed_is_delivered_once() {
    let mut store = Store::default();
    let now = Instant::now();
    let (mut a, alice, bob) = alice_and_bob(&mut store, now);
    a.signal(now, &alice, 1, &bob, b"once");
    a.collect(&mut store);
    // Bob's record is stored; gateway a dies before Alice's Ack reaches her.
    store.store_all(&mut a.fx.hub, now);
    store.waiting.clear(); // Died with them.
    let mut b = Gateway::new("b", 2);
    let later = now + secs(1.0);
    b.fx.hub.node_lost(later, "a", secs(1.0));
    let mut resume = |c: &Client, last_seq| {
        let conn = b.resume(&mut store, later, c, last_seq);
        (conn, welcome_of(&b.out, conn))
    };
    let (bob_conn, _) = resume(&bob, 0);
    let (alice_conn, welcome) = resume(&alice, 0);
    assert_eq!(
        welcome.last_client_seq, 0,
        "neither Alice's log nor her client knew frame 1 settled"
    );
    // So her client sends it again.
    b.signal(later, &alice.on(alice_conn), 1, &bob.on(bob_conn), b"once");
    b.settle(&mut store, later);
    let got = data_signals(&b.out, bob_conn);
    assert_eq!(got.len(), 1, "delivered once: {got:?}");
    assert_eq!(acks_to(&b.out, alice_conn), [1]);
}

#[test]
fn a_durable_log_is_bounded_like_the_hold_with_the_same_answer_beyond_it() {
    let mut store = Store::default();
    let now = Instant::now();
    let mut config = durable_config("a");
    config.limits.backlog_frames = 5;
    let mut a = Gateway::new("a", 1);
    a.fx.hub = Hub::with_entropy(config, Box::new(SeededEntropy::new(1)));
    let alice = a.client(&mut store, now);
    let bob = a.client(&mut store, now);
    for c in [&alice, &bob] {
        a.fx.send(now, c.conn, Msg::Join(Join { room: "r".into() }));
        a.settle(&mut store, now);
    }
    // Bob is away: what is sent to him is held, in memory and in his log.
    a.fx.hub
        .connection_lost(now, bob.conn, Reason::ConnectionLost, secs(0.0));
    a.settle(&mut store, now);
    for seq in 1..=6 {
        a.signal(now, &alice, seq, &bob, b"held");
        a.settle(&mut store, now);
    }
    let errors = errors_to(&a.out, alice.conn);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code(), ErrorCode::RecipientBufferFull);
    let held: usize = store.logs[&log_key(&bob.token)]
        .iter()
        .filter_map(|r| r.record.session.as_ref())
        .flat_map(|s| s.frames.iter())
        .filter(|f| f.signal)
        .count();
    assert_eq!(held, 5, "the log holds what the bound lets in, no more");
}

#[test]
fn a_large_backlog_is_stored_in_records_nats_accepts_and_delivered_whole() {
    static BIG: [u8; 16 * 1024] = [7; 16 * 1024];
    let mut store = Store::default();
    let now = Instant::now();
    let (mut a, alice, bob) = alice_and_bob(&mut store, now);
    a.fx.hub
        .connection_lost(now, bob.conn, Reason::ConnectionLost, secs(0.0));
    a.settle(&mut store, now);
    // JetStream is slow: 40 signals of 16 KiB pile up behind one record on its way.
    a.signal(now, &alice, 1, &bob, &BIG);
    a.collect(&mut store);
    for seq in 2..=40 {
        a.signal(now, &alice, seq, &bob, &BIG);
        a.collect(&mut store);
    }
    a.settle(&mut store, now);
    let biggest = store
        .logs
        .values()
        .flatten()
        .map(|r| prost::Message::encoded_len(&r.record))
        .max()
        .unwrap_or(0);
    assert!(biggest < 512 * 1024, "a record of {biggest} bytes");
    let (conn, out) = a.fx.resume(now, &bob, 0, 1, Transport::WebSocket);
    a.out.extend(store.take(out));
    a.settle(&mut store, now);
    assert_eq!(data_signals(&a.out, conn).len(), 40, "every held signal");
}

#[test]
fn two_gateways_recovering_one_session_at_once_leave_it_to_the_first_that_stores() {
    let mut store = Store::default();
    let now = Instant::now();
    let (mut a, _alice, bob) = alice_and_bob(&mut store, now);
    a.settle(&mut store, now);
    let later = now + secs(1.0);
    let hello = |c: &Client| {
        Msg::Hello(Hello {
            resume_token: c.token.clone(),
            attempt: 1,
            ..Default::default()
        })
    };
    // Gateway a is lost; the client tries b and c at once (two connections).
    let mut b = Gateway::new("b", 2);
    let mut c = Gateway::new("c", 3);
    let mut on = Vec::new();
    for g in [&mut b, &mut c] {
        g.fx.hub.node_lost(later, "a", secs(1.0));
        let conn = g.fx.open(later, Transport::WebSocket);
        g.fx.send(later, conn, hello(&bob));
        g.collect(&mut store);
        store.answer_reads(&mut g.fx.hub, later);
        g.collect(&mut store);
        on.push(conn);
    }
    // Both took it up from the same log; b's take-over record is stored first.
    assert!(welcome_of(&b.out, on[0]).resumed);
    assert!(welcome_of(&c.out, on[1]).resumed);
    let waiting = std::mem::take(&mut store.waiting);
    let (from_b, from_c): (Vec<_>, Vec<_>) =
        waiting.into_iter().partition(|(_, _, r)| r.holder == "b");
    store.waiting = from_b;
    store.store_all(&mut b.fx.hub, later);
    store.waiting = from_c;
    store.store_all(&mut c.fx.hub, later);
    c.collect(&mut store);
    assert_eq!(
        closes(&c.out),
        [(on[1], Reason::Superseded)],
        "c lets go of the session"
    );
    b.collect(&mut store);
    assert!(closes(&b.out).is_empty(), "b keeps it");
}

#[test]
fn a_log_longer_than_jetstream_keeps_still_has_every_unacknowledged_frame() {
    let mut store = Store::default();
    let now = Instant::now();
    let (mut a, alice, bob) = alice_and_bob(&mut store, now);
    // Bob reads but never acknowledges: every frame stays his to resume from, while his log
    // grows past the records JetStream keeps.
    let signals = LOG_RECORDS as u64 + 100;
    for seq in 1..=signals {
        let t = now + secs(0.05 * seq as f64);
        a.signal(t, &alice, seq, &bob, b"keep");
        a.settle(&mut store, t);
    }
    assert_eq!(data_signals(&a.out, bob.conn).len() as u64, signals);
    assert!(store.logs[&log_key(&bob.token)].len() <= LOG_RECORDS as usize);
    let later = now + secs(0.05 * signals as f64 + 1.0);
    let mut b = Gateway::new("b", 2);
    b.fx.hub.node_lost(later, "a", secs(1.0));
    let conn = b.resume(&mut store, later, &bob, 0);
    assert!(
        welcome_of(&b.out, conn).resumed,
        "{:?}",
        errors_to(&b.out, conn)
    );
    assert_eq!(
        data_signals(&b.out, conn).len() as u64,
        signals,
        "every frame, from the first"
    );
}

#[test]
fn a_new_sessions_first_frames_wait_for_its_first_record() {
    let mut store = Store::default();
    let now = Instant::now();
    let mut a = Gateway::new("a", 1);
    let conn = a.fx.open(now, Transport::WebSocket);
    a.fx.send(now, conn, Msg::Hello(Hello::default()));
    a.fx.send(now, conn, Msg::Join(Join { room: "r".into() }));
    a.collect(&mut store);
    let numbered = |a: &Gateway| frames_to(&a.out, conn).iter().any(|f| f.seq > 0);
    assert!(
        !numbered(&a),
        "Joined went out before the session's first record was stored"
    );
    store.fail_all(&mut a.fx.hub, now); // JetStream did not store it.
    a.collect(&mut store);
    assert!(!numbered(&a), "Joined went out although never stored");
    a.fx.hub.handle_timeout(now + secs(1.0));
    a.settle(&mut store, now + secs(1.0));
    assert!(numbered(&a), "Joined goes out once stored");
}
