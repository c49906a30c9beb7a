//! Durable mode (cluster mode with `--durable`): a session survives the crash of the gateway
//! that holds it. Every session has a *log* in JetStream (replicated across the NATS cluster)
//! that its holder appends to, one record at a time; a record carries the session's state
//! (rooms, identity, grants, the client's numbered frames settled) and the frames of its
//! stream numbered since the record before.
//!
//! The rules, each in one place here:
//!
//! - **Stored before it counts.** A frame of a session's stream goes to its client only once
//!   the record holding it is stored; a signal's sender learns it was accepted (its Ack, or
//!   the Verdict to its gateway) only then. So whatever a client saw, or a sender was told was
//!   accepted, is in the log. Frames are numbered when they are accepted (not when they go
//!   out, as without durability), so presence news is not coalesced in durable mode.
//! - **One write per signal.** A signal's sender is acknowledged once the signal is in its
//!   recipient's log; the sender's own log is written only for what the frame did to the
//!   session itself (a Join, a reply, an Error), and the Ack waits for that. So the sender's
//!   log may be behind its Acks: a recovered session continues from the client's
//!   `Hello.acked_client_seq`.
//! - **Exactly once across a sender's crash.** A recipient remembers the last numbered frame
//!   taken from each sender (`last_from`), so a signal the client sends again after its
//!   gateway crashed is recognised and not delivered twice.
//! - **One writer.** A record is appended only if the log's last record is the one its
//!   holder wrote before. A gateway that recovers a session starts a new *generation*; the old
//!   holder's next append fails and it lets go of the session.
//! - **Refused, never downgraded.** A record that cannot be stored in time: the signals in it
//!   are refused to their senders (STORAGE_UNAVAILABLE) and taken out of the stream; the rest
//!   (replies, presence) is tried again.
//! - **Recovery.** A client that resumes where nobody holds its session (its gateway was
//!   lost) gets it back from the log: same peer id, rooms, numbering, every frame it has not
//!   processed. Its peers saw it UNREACHABLE (GATEWAY_LOST), then ONLINE, never LEFT.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::delivery::error_msg;
use super::handover::PendingClaim;
use super::{Deadline, Hub, HubEvent, Output, ResumeOutcome, SessionKey};
use crate::proto::cluster::{DurableRecord, SenderSeq, SessionState, Verdict, envelope::Body};
use crate::proto::{ErrorCode, ServerFrame};

/// JetStream keeps at most this many records per log (the stream's limit per subject: it
/// drops the oldest itself, so that no purge — which scans the stream — is ever needed).
pub const LOG_RECORDS: u32 = 256;

/// Every this many records a holder writes every frame its client has not acknowledged again
/// (a *checkpoint*, in records of at most [`RECORD_FRAME_BYTES`]): everything a recovery needs
/// is then always among the newest [`LOG_RECORDS`].
const CHECKPOINT_EVERY: u32 = 64;

/// JetStream drops records older than this; a holder checkpoints its log at least every half
/// of it, so only the logs of sessions nobody holds any more age out.
pub const LOG_MAX_AGE: Duration = Duration::from_secs(2 * 3600);

/// The frames of one record, at most (NATS refuses messages over 1 MiB by default); what does
/// not fit goes in the next record.
const RECORD_FRAME_BYTES: usize = 256 * 1024;

/// After a record could not be stored, the next try waits this long.
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// The name of a session's log: the SHA-256 of its resume token, in hex. Only a client with
/// the token can name it, and the token itself is never stored.
pub fn log_key(resume_token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, resume_token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A record read back from a session's log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    /// Its position in the stream (what the next append must expect).
    pub stream_seq: u64,
    /// How long ago it was stored.
    pub age: Duration,
    pub record: DurableRecord,
}

/// Why a record was not appended.
#[derive(Debug, Clone, PartialEq)]
pub enum PersistFailure {
    /// JetStream did not store it in time (unavailable, no quorum, timed out).
    Unavailable(String),
    /// The log's last record is not the one this gateway wrote before: `last` is that record
    /// (None if it could not be read).
    Conflict { last: Option<Box<StoredRecord>> },
}

/// Who learns that a frame was accepted once it is stored.
#[derive(Debug)]
enum Acceptance {
    /// A local session's numbered frame: settled (its Ack may cover it).
    Local {
        sender: SessionKey,
        sender_peer: String,
        seq: u64,
        id: u64,
    },
    /// A signal relayed by another gateway that wants a Verdict.
    Remote { node: String, ticket: u64 },
}

#[derive(Debug)]
struct Awaiting {
    /// The frame's seq in the recipient's stream.
    seq: u64,
    acceptance: Acceptance,
    /// Its sender's numbered frame: (sender, its seq, the sender's `last_from` before it,
    /// restored if the frame is taken back).
    from: Option<(String, u64, Option<u64>)>,
}

#[derive(Debug)]
struct InFlight {
    through: u64,
    client_seq: u64,
    /// It carries a change of the session's own state (not only frames).
    state: bool,
}

/// A session's durable log, as its holder sees it.
#[derive(Debug)]
pub(super) struct Log {
    pub key: String,
    generation: u64,
    revision: u64,
    /// The stream seq of this holder's last stored record (None: the next append does not
    /// check, after a hand-over whose last record may still have been on its way).
    expect_last: Option<u64>,
    /// Frames up to this seq are in a record (stored or on its way)...
    written_through: u64,
    /// ...and up to this one stored: they may go out.
    durable_through: u64,
    /// The client's numbered frames settled, as the last stored record says: while the log
    /// holds less than the session (`all_stored`), its Ack may cover no more.
    pub client_seq_durable: u64,
    in_flight: Option<InFlight>,
    /// A record of this holder (this generation, or this hand-over) is stored.
    holding_stored: bool,
    /// The session's state changed since the last record (new frames are told by
    /// `written_through` instead).
    dirty: bool,
    /// The next record is due even with nothing new: a checkpoint.
    checkpoint_due: bool,
    /// A record failed: the next waits for [`Deadline::PersistRetry`].
    waiting_retry: bool,
    awaiting: VecDeque<Awaiting>,
    /// The last numbered frame taken from each sender.
    last_from: HashMap<String, u64>,
    /// Records stored since the last checkpoint began.
    since_checkpoint: u32,
    /// The client's numbered frames whose fate the gateway it came from will tell (it moved
    /// while they were in flight), by seq: that gateway.
    owed: BTreeMap<u64, String>,
}

impl Log {
    fn new(key: String) -> Self {
        Self {
            key,
            generation: 0,
            revision: 0,
            expect_last: None,
            written_through: 0,
            durable_through: 0,
            client_seq_durable: 0,
            in_flight: None,
            holding_stored: false,
            dirty: true,
            checkpoint_due: false,
            waiting_retry: false,
            awaiting: VecDeque::new(),
            last_from: HashMap::new(),
            since_checkpoint: 0,
            owed: BTreeMap::new(),
        }
    }

    /// The log of a session that arrives whole. Recovered from its log (`expect_last`: the
    /// stream seq of the log's last record), everything in `state` is stored. Handed over by
    /// its holder, some of it may not be: the first record here holds every frame kept, and
    /// nothing goes out, nor is acknowledged, before it is stored.
    fn continued(key: String, state: &SessionState, expect_last: Option<u64>) -> Self {
        let (through, client_seq) = match expect_last {
            Some(_) => (state.next_seq.saturating_sub(1), state.client_seq),
            None => (state.floor, 0),
        };
        Self {
            generation: state.durable_generation,
            revision: state.durable_revision,
            expect_last,
            written_through: through,
            durable_through: through,
            client_seq_durable: client_seq,
            last_from: state
                .last_from
                .iter()
                .map(|s| (s.peer_id.clone(), s.seq))
                .collect(),
            ..Self::new(key)
        }
    }

    /// Every frame of the stream up to `last_seq` and the session's own state are stored: an
    /// Ack may cover every settled frame (a settled signal is in its recipient's log).
    pub fn all_stored(&self, last_seq: u64) -> bool {
        self.holding_stored
            && !self.dirty
            && !self.in_flight.as_ref().is_some_and(|f| f.state)
            && self.durable_through >= last_seq
    }

    /// Where the log stands, for a hand-over.
    pub fn describe(&self, state: &mut SessionState) {
        state.durable_generation = self.generation;
        state.durable_revision = self.revision;
        state.last_from = self
            .last_from
            .iter()
            .map(|(peer_id, seq)| SenderSeq {
                peer_id: peer_id.clone(),
                seq: *seq,
            })
            .collect();
        state.last_from.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
    }
}

/// A session rebuilt from its log: the newest state, and each frame from the newest record
/// that has it.
struct Folded {
    state: SessionState,
    holder: String,
    holder_incarnation: u64,
    online: bool,
    age: Duration,
    last_stream_seq: u64,
}

fn fold(records: Vec<StoredRecord>) -> Option<Folded> {
    let order = |r: &StoredRecord| {
        let s = r.record.session.as_ref();
        (
            s.map_or(0, |s| s.durable_generation),
            s.map_or(0, |s| s.durable_revision),
            r.stream_seq,
        )
    };
    let newest = records.iter().max_by_key(|r| order(r))?.clone();
    if newest.record.ended {
        return None; // The session ended: nothing to take up.
    }
    let last_stream_seq = records.iter().map(|r| r.stream_seq).max()?;
    // seq -> (the rank of the record it is from, the frame, whether it is a signal)
    type Ranked = ((u64, u64, u64), ServerFrame, bool);
    let mut frames: BTreeMap<u64, Ranked> = BTreeMap::new();
    for record in &records {
        let rank = order(record);
        let Some(session) = &record.record.session else {
            continue;
        };
        for f in &session.frames {
            let Some(frame) = &f.frame else { continue };
            let newer = frames.get(&frame.seq).is_none_or(|(r, _, _)| *r <= rank);
            if newer {
                frames.insert(frame.seq, (rank, frame.clone(), f.signal));
            }
        }
    }
    let StoredRecord { record, age, .. } = newest;
    let mut state = record.session?;
    let last = state.next_seq.saturating_sub(1);
    // Frames from the floor on, contiguous; a hole (its records purged, or never stored)
    // moves the floor past it, and a resume from before it is then a gap.
    let mut kept = Vec::new();
    let mut expected = state.floor + 1;
    for (seq, (_, frame, signal)) in frames.range(state.floor + 1..=last) {
        if *seq != expected {
            kept.clear();
            state.floor = seq - 1;
            state.dropped_unacked = true;
        }
        kept.push(crate::proto::cluster::BacklogFrame {
            frame: Some(frame.clone()),
            signal: *signal,
        });
        expected = seq + 1;
    }
    if expected <= last {
        kept.clear();
        state.floor = last;
        state.dropped_unacked = true;
    }
    state.frames = kept;
    Some(Folded {
        state,
        holder: record.holder,
        holder_incarnation: record.holder_incarnation,
        online: record.online,
        age,
        last_stream_seq,
    })
}

impl Hub {
    pub(super) fn durable(&self) -> bool {
        self.config.durable && self.clustered()
    }

    /// A session that moved here with frames in flight from `from` (see `owed`).
    pub(super) fn owed_by(&mut self, key: SessionKey, from: &str, seqs: &[u64]) {
        if let Some(log) = self.sessions.get_mut(&key).and_then(|s| s.durable.as_mut()) {
            for seq in seqs {
                log.owed.insert(*seq, from.to_string());
            }
        }
    }

    /// The gateway the session came from settled its frame `seq`.
    pub(super) fn settled_elsewhere(&mut self, key: SessionKey, seq: u64) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.unsettled.remove(&seq);
        if let Some(log) = session.durable.as_mut() {
            log.owed.remove(&seq);
        }
        self.ack_due(key);
    }

    /// Gateway `node` was lost owing the settlement of frames of sessions that moved here.
    /// Their fate is in their recipients' logs, which only see them again if the client
    /// sends them again: the session goes back to before the first (its recipients recognise
    /// what they stored already), and its connection is closed so that its client resumes and
    /// resends them.
    pub(super) fn settlements_lost(&mut self, now: Instant, node: &str) {
        let mut owing: Vec<(SessionKey, u64)> = self
            .sessions
            .iter()
            .filter_map(|(key, s)| {
                let log = s.durable.as_ref()?;
                let first = log.owed.iter().find(|(_, n)| n.as_str() == node)?.0;
                Some((*key, *first))
            })
            .collect();
        owing.sort();
        for (key, first) in owing {
            let Some(session) = self.sessions.get_mut(&key) else {
                continue;
            };
            session.client_seq = first - 1;
            session.client_seq_told = session.client_seq_told.min(first - 1);
            session.unsettled.retain(|seq| *seq < first);
            if let Some(log) = session.durable.as_mut() {
                log.owed.retain(|seq, _| *seq < first);
                log.client_seq_durable = log.client_seq_durable.min(first - 1);
            }
            let peer = session.peer_id.clone();
            tracing::warn!(
                %peer,
                lost = node,
                from_seq = first,
                "the gateway this session came from was lost before settling its frames: its \
                 client resumes and sends them again"
            );
            if let Some(conn) = session.conn() {
                self.close_connection(now, conn, crate::proto::Reason::GatewayLost);
            }
        }
    }

    /// A new session's log (durable mode).
    pub(super) fn open_log(&mut self, key: SessionKey) {
        if !self.durable() {
            return;
        }
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let log = Log::new(log_key(&session.resume_token));
        // Nothing of a new session goes out before its first record is stored.
        session.backlog.release_through(0);
        self.durable_keys.insert(log.key.clone(), key);
        session.durable = Some(Box::new(log));
        self.persist_soon(key);
    }

    /// The log of a session that arrived whole (hand-over: `expect_last` None; recovery: the
    /// stream seq of the log's last record).
    pub(super) fn continue_log(
        &mut self,
        key: SessionKey,
        state: &SessionState,
        expect_last: Option<u64>,
    ) {
        if !self.durable() {
            return;
        }
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let log = Log::continued(log_key(&session.resume_token), state, expect_last);
        session.backlog.release_through(log.durable_through);
        self.durable_keys.insert(log.key.clone(), key);
        session.durable = Some(Box::new(log));
        self.persist_soon(key);
    }

    /// The session's own state changed (beyond its stream's frames): worth a record.
    pub(super) fn persist_soon(&mut self, key: SessionKey) {
        if let Some(log) = self.sessions.get_mut(&key).and_then(|s| s.durable.as_mut()) {
            log.dirty = true;
            self.persist_due.push(key);
        }
    }

    /// Frames were numbered into the session's stream: they go out once a record holds them.
    pub(super) fn persist_frames(&mut self, key: SessionKey) {
        if self.sessions.get(&key).is_some_and(|s| s.durable.is_some()) {
            self.persist_due.push(key);
        }
    }

    /// A frame just numbered into `recipient`'s stream, accepted once stored. False if the
    /// recipient keeps no log (it counts as accepted now).
    fn await_stored(
        &mut self,
        recipient: SessionKey,
        acceptance: Acceptance,
        from: Option<(String, u64)>,
    ) -> bool {
        let Some(session) = self.sessions.get_mut(&recipient) else {
            return false;
        };
        let seq = session.backlog.last_seq();
        let Some(log) = session.durable.as_mut() else {
            return false;
        };
        let from = from.map(|(peer, seq)| {
            let before = log.last_from.insert(peer.clone(), seq);
            (peer, seq, before)
        });
        log.awaiting.push_back(Awaiting {
            seq,
            acceptance,
            from,
        });
        true
    }

    /// Was this numbered frame of `sender_peer` already taken into `recipient`'s stream
    /// (sent again after the sender's gateway crashed)?
    pub(super) fn already_taken(&self, recipient: SessionKey, sender_peer: &str, seq: u64) -> bool {
        seq != 0
            && self
                .sessions
                .get(&recipient)
                .and_then(|s| s.durable.as_ref())
                .and_then(|log| log.last_from.get(sender_peer))
                .is_some_and(|last| *last >= seq)
    }

    /// A local signal was just delivered to `recipient`: its sender's frame settles once
    /// it is stored.
    pub(super) fn settle_local_when_stored(
        &mut self,
        recipient: SessionKey,
        sender: SessionKey,
        id: u64,
        seq: u64,
    ) {
        let Some(sender_peer) = self.sessions.get(&sender).map(|s| s.peer_id.clone()) else {
            return;
        };
        let acceptance = Acceptance::Local {
            sender,
            sender_peer: sender_peer.clone(),
            seq,
            id,
        };
        let from = (seq != 0).then_some((sender_peer, seq));
        if self.await_stored(recipient, acceptance, from)
            && seq != 0
            && let Some(s) = self.sessions.get_mut(&sender)
        {
            s.unsettled.insert(seq);
        }
    }

    /// A signal relayed by `node` was just delivered to `recipient`: its Verdict goes once it
    /// is stored (at once if the recipient keeps no log).
    pub(super) fn verdict_when_stored(
        &mut self,
        recipient: SessionKey,
        node: &str,
        ticket: u64,
        from: Option<(String, u64)>,
    ) {
        let acceptance = Acceptance::Remote {
            node: node.to_string(),
            ticket,
        };
        if !self.await_stored(recipient, acceptance, from) {
            self.send_accepted(node.to_string(), ticket);
        }
    }

    fn send_accepted(&mut self, node: String, ticket: u64) {
        self.outputs.push_back(Output::ToNode {
            node,
            body: Body::Verdict(Verdict {
                ticket,
                code: ErrorCode::Unspecified.into(),
                message: String::new(),
            }),
        });
    }

    /// Appends a record to every log with something new and nothing on its way.
    pub(super) fn send_due_records(&mut self) {
        let mut keys = std::mem::take(&mut self.persist_due);
        keys.sort();
        keys.dedup();
        for key in keys {
            let Some(session) = self.sessions.get(&key) else {
                continue;
            };
            let Some(log) = session.durable.as_ref() else {
                continue;
            };
            if log.in_flight.is_some() || log.waiting_retry {
                continue;
            }
            // Only what the session holds is worth a record: that its client's frames settled
            // further rides along with the next one (signals are in their recipients' logs).
            let new_frames = log.written_through < session.backlog.last_seq();
            if !log.dirty && !log.checkpoint_due && !new_frames {
                continue;
            }
            let written_through = log.written_through;
            let frames = session
                .backlog
                .frames_after(written_through, RECORD_FRAME_BYTES);
            let client_seq = session.settled_in_memory();
            let online = session.conn().is_some();
            let mut state = self.snapshot(key, self.clock);
            let Some(session) = self.sessions.get_mut(&key) else {
                continue;
            };
            let Some(log) = session.durable.as_mut() else {
                continue;
            };
            log.revision += 1;
            let state_changed = std::mem::take(&mut log.dirty);
            log.checkpoint_due = false;
            let through = frames.last().map_or(written_through, |(f, _)| f.seq);
            log.written_through = through;
            log.in_flight = Some(InFlight {
                through,
                client_seq,
                state: state_changed,
            });
            state.client_seq = client_seq;
            // Frames after the settled ones are sent again by the client after a recovery.
            state.unsettled.clear();
            log.describe(&mut state);
            state.frames = frames
                .into_iter()
                .map(|(frame, signal)| crate::proto::cluster::BacklogFrame {
                    frame: Some(frame),
                    signal,
                })
                .collect();
            let record = DurableRecord {
                session: Some(state),
                holder: self.config.cluster_node.clone().unwrap_or_default(),
                holder_incarnation: self.incarnation,
                online,
                ended: false,
            };
            self.outputs.push_back(Output::Persist {
                key: log.key.clone(),
                expect_last: log.expect_last,
                record: Box::new(record),
            });
        }
    }

    /// Input: the record on its way to `log_key` is stored, at `stream_seq`.
    pub fn persisted(&mut self, now: Instant, log_key: &str, stream_seq: u64) {
        self.tick(now);
        let Some(&key) = self.durable_keys.get(log_key) else {
            return; // The session ended or moved meanwhile.
        };
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(log) = session.durable.as_mut() else {
            return;
        };
        let Some(done) = log.in_flight.take() else {
            return;
        };
        log.expect_last = Some(stream_seq);
        log.holding_stored = true;
        // A checkpoint's record holds frames stored before: the stored point only grows.
        log.durable_through = log.durable_through.max(done.through);
        log.client_seq_durable = done.client_seq;
        let mut accepted = Vec::new();
        while log.awaiting.front().is_some_and(|a| a.seq <= done.through) {
            if let Some(a) = log.awaiting.pop_front() {
                accepted.push(a.acceptance);
            }
        }
        session.backlog.release_through(log.durable_through);
        log.since_checkpoint += 1;
        if log.since_checkpoint >= CHECKPOINT_EVERY {
            Self::checkpoint(session);
        }
        self.deadlines
            .set(Deadline::LogRefresh(key), now + LOG_MAX_AGE / 2);
        for acceptance in accepted {
            self.accepted(acceptance);
        }
        // What came meanwhile, or did not fit in the record, goes in the next one.
        self.persist_due.push(key);
        self.pump(key);
        self.ack_due(key);
    }

    /// The next records write every frame the client has not acknowledged again, from the
    /// oldest (no log needs a purge: JetStream drops records beyond [`LOG_RECORDS`] itself).
    fn checkpoint(session: &mut super::session::Session) {
        let floor = session.backlog.floor();
        if let Some(log) = session.durable.as_mut()
            && log.in_flight.is_none()
        {
            log.since_checkpoint = 0;
            log.written_through = log.written_through.min(floor);
            log.checkpoint_due = true;
        }
    }

    /// [`Deadline::LogRefresh`]: the newest record gets old; a checkpoint renews every record
    /// the log still needs before JetStream's max age drops them.
    pub(super) fn refresh_log(&mut self, key: SessionKey) {
        if let Some(session) = self.sessions.get_mut(&key) {
            Self::checkpoint(session);
        }
        self.persist_due.push(key);
    }

    fn accepted(&mut self, acceptance: Acceptance) {
        match acceptance {
            Acceptance::Local {
                sender,
                sender_peer,
                seq,
                ..
            } => {
                if let Some(s) = self.sessions.get_mut(&sender)
                    && s.peer_id == sender_peer
                {
                    s.unsettled.remove(&seq);
                    self.ack_due(sender);
                }
            }
            Acceptance::Remote { node, ticket } => self.send_accepted(node, ticket),
        }
    }

    fn refused(&mut self, acceptance: Acceptance, message: &str) {
        self.event(HubEvent::SignalRefused {
            reason: ErrorCode::StorageUnavailable,
        });
        match acceptance {
            Acceptance::Local {
                sender,
                sender_peer,
                seq,
                id,
            } => {
                if let Some(s) = self.sessions.get_mut(&sender)
                    && s.peer_id == sender_peer
                {
                    s.unsettled.remove(&seq);
                    self.storage_refusal(sender, id, message.to_string());
                    self.ack_due(sender);
                }
            }
            Acceptance::Remote { node, ticket } => {
                self.outputs.push_back(Output::ToNode {
                    node,
                    body: Body::Verdict(Verdict {
                        ticket,
                        code: ErrorCode::StorageUnavailable.into(),
                        message: message.to_string(),
                    }),
                });
            }
        }
    }

    /// STORAGE_UNAVAILABLE for the session's request `id`, twice: at once outside its stream
    /// (the stream goes out only once stored, and the store is what failed), and in its
    /// stream, which survives a lost connection. A client takes the first Error for a request
    /// and ignores a second. Both come before the Ack that covers the frame, which waits for
    /// the session's own log.
    pub(super) fn storage_refusal(&mut self, key: SessionKey, id: u64, message: String) {
        let code = ErrorCode::StorageUnavailable;
        if let Some(conn) = self.sessions.get(&key).and_then(|s| s.conn()) {
            self.send_direct(conn, id, error_msg(code, message.clone(), id));
        }
        self.reply(key, id, error_msg(code, message, id));
    }

    /// Input: the record on its way to `log_key` was not stored.
    pub fn persist_failed(&mut self, now: Instant, log_key: &str, failure: PersistFailure) {
        self.tick(now);
        let Some(&key) = self.durable_keys.get(log_key) else {
            return;
        };
        match failure {
            PersistFailure::Unavailable(why) => self.not_stored(now, key, &why),
            PersistFailure::Conflict { last } => {
                let mine = self
                    .sessions
                    .get(&key)
                    .and_then(|s| s.durable.as_ref())
                    .map(|l| (l.generation, l.revision));
                let me = self.config.cluster_node.as_deref().unwrap_or_default();
                let theirs = last.as_ref().and_then(|l| {
                    let s = l.record.session.as_ref()?;
                    let by_me =
                        l.record.holder == me && l.record.holder_incarnation == self.incarnation;
                    Some((
                        (s.durable_generation, s.durable_revision),
                        by_me,
                        l.stream_seq,
                    ))
                });
                match (mine, theirs) {
                    // A record of this very process that timed out but was stored after all,
                    // or an older holder's that arrived late (a hand-over): append after it;
                    // each seq is taken from the newer record. Anything else is a gateway
                    // that recovered the session: it holds it now.
                    (Some(mine), Some((rank, by_me, stream_seq)))
                        if (by_me && rank <= mine) || rank < mine =>
                    {
                        if let Some(log) =
                            self.sessions.get_mut(&key).and_then(|s| s.durable.as_mut())
                        {
                            log.expect_last = Some(stream_seq);
                            log.in_flight = None;
                            log.written_through = log.durable_through;
                            log.dirty = true;
                        }
                        self.persist_due.push(key);
                    }
                    (_, Some(_)) => self.fenced(now, key),
                    (_, None) => self.not_stored(now, key, "the log's last record is unknown"),
                }
            }
        }
    }

    /// The record was not stored: its signals are refused and taken out of the stream; the
    /// rest (its other frames, and what came after it) is tried again after a pause.
    fn not_stored(&mut self, now: Instant, key: SessionKey, why: &str) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let peer = session.peer_id.clone();
        let Some(log) = session.durable.as_mut() else {
            return;
        };
        let through = log
            .in_flight
            .take()
            .map_or(log.written_through, |f| f.through);
        let after = log.durable_through;
        log.written_through = after;
        log.dirty = true;
        log.waiting_retry = true;
        let in_record = log.awaiting.iter().take_while(|a| a.seq <= through).count();
        let taken_back: Vec<Awaiting> = log.awaiting.drain(..in_record).collect();
        // What came after the record is numbered again below the frames taken out.
        let shift = taken_back.len() as u64;
        for a in log.awaiting.iter_mut() {
            a.seq -= shift;
        }
        // Each sender's last frame taken is now the last that stays (or the one before the
        // first taken back).
        for a in taken_back.iter().rev() {
            if let Some((sender, _, before)) = &a.from {
                match before {
                    Some(seq) => log.last_from.insert(sender.clone(), *seq),
                    None => log.last_from.remove(sender),
                };
            }
        }
        for a in log.awaiting.iter() {
            if let Some((sender, seq, _)) = &a.from {
                log.last_from.insert(sender.clone(), *seq);
            }
        }
        let retracted: BTreeSet<u64> = taken_back.iter().map(|a| a.seq).collect();
        session.backlog.retract(after, &retracted);
        tracing::warn!(
            %peer,
            refused = taken_back.len(),
            error = why,
            "the session's durable log did not store a record: its signals were refused"
        );
        self.event(HubEvent::DurableWriteFailed);
        let message = format!(
            "the recipient's durable log could not store this signal ({why}); it was not \
             accepted and will not be delivered"
        );
        for a in taken_back {
            self.refused(a.acceptance, &message);
        }
        self.deadlines
            .set(Deadline::PersistRetry(key), now + RETRY_AFTER);
    }

    /// [`Deadline::PersistRetry`]: the log may be written again.
    pub(super) fn persist_retry(&mut self, key: SessionKey) {
        if let Some(log) = self.sessions.get_mut(&key).and_then(|s| s.durable.as_mut()) {
            log.waiting_retry = false;
            log.dirty = true;
            self.persist_due.push(key);
        }
    }

    /// Another gateway recovered the session (a newer generation holds its log): this one
    /// lets go of it without a word to its rooms, which hear of it from the new holder.
    fn fenced(&mut self, now: Instant, key: SessionKey) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let peer = session.peer_id.clone();
        let taken_back: Vec<Awaiting> = session
            .durable
            .as_mut()
            .map(|l| l.awaiting.drain(..).collect())
            .unwrap_or_default();
        tracing::warn!(%peer, "another gateway recovered this session: letting go of it");
        let message = "the recipient's session was recovered by another gateway before this \
                       signal was stored; it was not delivered";
        for a in taken_back {
            self.refused(a.acceptance, message);
        }
        self.close_log(key);
        // Its rooms here keep it as a member of no known gateway until the new holder's
        // records say where it lives (signals to it meanwhile: RECIPIENT_UNAVAILABLE).
        let _ = self.export_session(now, key, "", false, crate::proto::Reason::Superseded);
    }

    /// The session leaves this hub (ended, handed over, fenced): frames still on their way to
    /// its log count as accepted (a hand-over carries them; an ended session would have
    /// dropped them anyway).
    pub(super) fn close_log(&mut self, key: SessionKey) {
        if let Some(log) = self.sessions.get_mut(&key).and_then(|s| s.durable.take()) {
            self.retire_log(key, log);
        }
    }

    /// See [`Self::close_log`], for a log already taken out of its session.
    pub(super) fn retire_log(&mut self, key: SessionKey, log: Box<Log>) {
        self.durable_keys.remove(&log.key);
        self.deadlines.cancel(Deadline::PersistRetry(key));
        self.deadlines.cancel(Deadline::LogRefresh(key));
        for a in log.awaiting {
            self.accepted(a.acceptance);
        }
    }

    /// The session ended for good: its log ends with a record that says so (a recovery finds
    /// nothing to take up), and JetStream drops it with its max age. No purge: it scans.
    pub(super) fn end_log(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let Some(log) = session.durable.as_ref() else {
            return;
        };
        let state = SessionState {
            peer_id: session.peer_id.clone(),
            durable_generation: log.generation,
            durable_revision: log.revision + 1,
            ..SessionState::default()
        };
        let persist = Output::Persist {
            key: log.key.clone(),
            expect_last: log.expect_last.filter(|_| log.in_flight.is_none()),
            record: Box::new(DurableRecord {
                session: Some(state),
                holder: self.config.cluster_node.clone().unwrap_or_default(),
                holder_incarnation: self.incarnation,
                online: false,
                ended: true,
            }),
        };
        self.close_log(key);
        self.outputs.push_back(persist);
    }

    // ----------------------------------------------------------------------------------------
    // Recovery
    // ----------------------------------------------------------------------------------------

    /// No live gateway holds the session of this Hello's resume token: read its log. The
    /// claim comes back if there is no log to read (outside durable mode).
    pub(super) fn recover(&mut self, claim: PendingClaim) -> Option<PendingClaim> {
        if !self.durable() || claim.hello.resume_token.is_empty() || claim.by_identity {
            return Some(claim);
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let key = log_key(&claim.hello.resume_token);
        self.recoveries.insert(ticket, claim);
        self.outputs.push_back(Output::ReadLog { ticket, key });
        None
    }

    /// Input: the log asked for by [`Output::ReadLog`] `ticket` (every record, oldest first),
    /// or why it could not be read.
    pub fn recovered(
        &mut self,
        now: Instant,
        ticket: u64,
        read: Result<Vec<StoredRecord>, String>,
    ) {
        self.tick(now);
        let Some(claim) = self.recoveries.remove(&ticket) else {
            return;
        };
        if !self.connections.contains_key(&claim.conn) {
            return;
        }
        let records = match read {
            Ok(records) => records,
            Err(why) => {
                tracing::warn!(error = %why, "a session's durable log could not be read");
                self.resume_refused(claim.conn, ResumeOutcome::Expired);
                let message = format!(
                    "the session's durable log could not be read ({why}); try again in a moment"
                );
                let code = ErrorCode::StorageUnavailable;
                return self.refuse(now, claim.conn, claim.id, code, message);
            }
        };
        let take = super::hello::Claim::Token {
            last_seq: claim.hello.last_seq,
            attempt: claim.hello.attempt,
        };
        if let Some(&key) = self.by_resume_token.get(&claim.hello.resume_token) {
            // Recovered here meanwhile, for another connection of the same client.
            return self.take_up(now, claim.conn, claim.id, key, take, claim.verified);
        }
        let folded = fold(records).filter(|f| self.recoverable(now, f));
        let Some(folded) = folded else {
            return self.nothing_to_recover(now, claim);
        };
        let owner_ok = match (&claim.verified, folded.state.has_identity) {
            (Some(v), true) => {
                v.identity.sub == folded.state.sub
                    && v.identity.device.clone().unwrap_or_default() == folded.state.device
            }
            (Some(_), false) => false,
            (None, _) => true,
        };
        if !owner_ok {
            self.resume_refused(claim.conn, ResumeOutcome::Invalid);
            let message = "the resume token belongs to a session of another identity";
            let code = ErrorCode::IdentityMismatch;
            return self.refuse(now, claim.conn, claim.id, code, message);
        }
        let mut state = folded.state;
        // Away since its gateway died: its peers see it UNREACHABLE, then ONLINE on the resume.
        state.was_online = false;
        state.durable_generation += 1;
        state.durable_revision = 0;
        // The log may be behind the client's Acks (a signal is acknowledged once its
        // recipient stored it): what the gateway acknowledged was processed, and a client
        // that claims more skips only its own frames.
        state.client_seq = state.client_seq.max(claim.hello.acked_client_seq);
        state.token_expires_in_ms = match state.token_expires_in_ms {
            0 => 0,
            ms => ms.saturating_sub(super::millis_u64(folded.age)).max(1),
        };
        let token = claim.hello.resume_token.clone();
        let peer = state.peer_id.clone();
        let Some(key) = self.import_session(
            now,
            &folded.holder,
            state.clone(),
            token,
            Some(folded.last_stream_seq),
        ) else {
            let message = "the session is held here already";
            self.resume_refused(claim.conn, ResumeOutcome::Invalid);
            return self.refuse(
                now,
                claim.conn,
                claim.id,
                ErrorCode::InvalidArgument,
                message,
            );
        };
        tracing::info!(
            %peer,
            lost_gateway = %folded.holder,
            frames = state.frames.len(),
            "session recovered from its durable log"
        );
        self.event(HubEvent::SessionRecovered);
        self.take_up(now, claim.conn, claim.id, key, take, claim.verified);
    }

    /// May a session whose log says this be taken up here? Its holder must be gone, and its
    /// resume window (from the holder's loss, or from when it went away) still open.
    fn recoverable(&self, now: Instant, folded: &Folded) -> bool {
        let window = self.config.resume_window;
        let me = self.config.cluster_node.as_deref().unwrap_or_default();
        if folded.holder == me && folded.holder_incarnation == self.incarnation {
            return false; // A log this very process left behind: the session ended here.
        }
        let lost_at = if folded.holder == me {
            self.started // A predecessor of this gateway: it died before this one started.
        } else {
            self.lost_nodes.get(&folded.holder).copied()
        };
        let lost_recently = lost_at.is_some_and(|at| now.saturating_duration_since(at) < window);
        if folded.online {
            lost_recently
        } else {
            folded.age < window && (lost_recently || !self.live_nodes.contains(&folded.holder))
        }
    }

    /// Nobody holds the session and its log has nothing to take up: as without durability.
    fn nothing_to_recover(&mut self, now: Instant, claim: PendingClaim) {
        if let Some(verified) = claim.verified {
            let mut hello = claim.hello;
            hello.resume_token.clear();
            let credentials = crate::core::identity::Credentials::Verified(verified);
            return self.hello(now, claim.conn, claim.id, hello, credentials);
        }
        self.resume_refused(claim.conn, ResumeOutcome::Expired);
        let message = "the resume token is unknown or its resume window ran out; send Hello \
                       without a resume token to start a new session";
        self.refuse(now, claim.conn, claim.id, ErrorCode::ResumeExpired, message);
    }

    /// When each lost gateway was lost, for as long as a session of it may be recovered.
    pub(super) fn remember_lost(&mut self, now: Instant, node: &str) {
        let window = self.config.resume_window;
        self.lost_nodes
            .retain(|_, at| now.saturating_duration_since(*at) < window);
        self.lost_nodes.insert(node.to_string(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::cluster::BacklogFrame;

    fn record(
        generation: u64,
        rev: u64,
        stream_seq: u64,
        next_seq: u64,
        frames: &[u64],
    ) -> StoredRecord {
        StoredRecord {
            stream_seq,
            age: Duration::ZERO,
            record: DurableRecord {
                session: Some(SessionState {
                    peer_id: "p".into(),
                    next_seq,
                    durable_generation: generation,
                    durable_revision: rev,
                    frames: frames
                        .iter()
                        .map(|seq| BacklogFrame {
                            frame: Some(ServerFrame {
                                seq: *seq,
                                in_reply_to: rev,
                                msg: None,
                            }),
                            signal: true,
                        })
                        .collect(),
                    ..Default::default()
                }),
                holder: "a".into(),
                holder_incarnation: 1,
                online: true,
                ended: false,
            },
        }
    }

    fn seqs_and_revs(f: &Folded) -> Vec<(u64, u64)> {
        f.state
            .frames
            .iter()
            .filter_map(|b| b.frame.as_ref().map(|f| (f.seq, f.in_reply_to)))
            .collect()
    }

    #[test]
    fn a_log_folds_into_the_newest_state_with_every_frame_once() {
        let folded = fold(vec![
            record(0, 1, 10, 3, &[1, 2]),
            record(0, 2, 11, 4, &[3]),
        ])
        .expect("records");
        assert_eq!(folded.state.next_seq, 4);
        assert_eq!(seqs_and_revs(&folded), [(1, 1), (2, 1), (3, 2)]);
        assert_eq!(folded.last_stream_seq, 11);
        assert!(!folded.state.dropped_unacked);
    }

    #[test]
    fn a_newer_record_takes_each_seq_and_frames_beyond_the_newest_state_are_ignored() {
        // Revision 2 timed out but was stored after all (its signals were refused); revision
        // 3 numbered the stream again from 2.
        let folded = fold(vec![
            record(0, 1, 10, 2, &[1]),
            record(0, 2, 11, 4, &[2, 3]),
            record(0, 3, 12, 3, &[2]),
        ])
        .expect("records");
        assert_eq!(seqs_and_revs(&folded), [(1, 1), (2, 3)]);
    }

    #[test]
    fn a_hole_in_the_log_is_a_gap_for_a_resume_from_before_it() {
        let folded =
            fold(vec![record(0, 1, 10, 2, &[1]), record(0, 2, 12, 4, &[3])]).expect("records");
        assert!(folded.state.dropped_unacked);
        assert_eq!(folded.state.floor, 2);
        assert_eq!(seqs_and_revs(&folded), [(3, 2)]);
    }

    #[test]
    fn a_newer_generation_wins_over_a_later_record_of_the_old_holder() {
        let folded = fold(vec![
            record(1, 1, 10, 2, &[1]),
            record(0, 9, 11, 5, &[2, 3, 4]),
        ])
        .expect("records");
        assert_eq!(folded.state.durable_generation, 1);
        assert_eq!(folded.state.next_seq, 2);
    }

    #[test]
    fn an_ended_session_leaves_nothing_to_recover() {
        let mut end = record(0, 3, 12, 1, &[]);
        end.record.ended = true;
        assert!(fold(vec![record(0, 1, 10, 3, &[1, 2]), end]).is_none());
    }

    #[test]
    fn the_log_key_is_a_digest_of_the_token_not_the_token() {
        let key = log_key("node-1.secret");
        assert_eq!(key.len(), 64);
        assert!(!key.contains("secret"));
        assert_eq!(key, log_key("node-1.secret"));
    }
}
