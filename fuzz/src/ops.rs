//! The `hub` target's input: a [`Setup`] (limits and timings, within what `src/config.rs`
//! accepts) and then operations until the input runs out. Decoded with the `arbitrary` crate;
//! [`Encode`] is the inverse, for writing seeds (a test checks that the two agree).
//!
//! Frequent operations get wide tag ranges, rare ones (shutdown) narrow ones.

use arbitrary::{Arbitrary, Unstructured};

/// Limits and timings of the hub under test.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq, Default)]
pub struct Setup {
    pub window: u8,
    pub backlog_frames: u8,
    pub backlog_kib: u8,
    pub rooms_per_session: u8,
    pub peers_per_room: u8,
    pub rate: u8,
    pub burst: u8,
    pub protocol_errors: u8,
    pub resume_window_s: u8,
    pub hello_timeout: u8,
    pub seed: u8,
    /// Bit 0: authentication on (Hello and Refresh come with credentials).
    pub auth: u8,
    /// < 128: at most 1 + n % 8 sessions, else the default.
    pub max_sessions: u8,
    /// < 128: at most 1 + n % 8 connections awaiting Hello, else the default.
    pub max_pending_hellos: u8,
    pub token_grace_s: u8,
}

/// One step of the scenario. `conn` picks an opened connection (modulo their number); 255
/// names a connection the hub never saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Open {
        webtransport: bool,
    },
    Send {
        conn: u8,
        seq: SeqPick,
        msg: MsgPick,
    },
    Rejected {
        conn: u8,
        problem: ProblemPick,
    },
    /// `connection_drained` with one of the checkpoints the connection was given.
    Drained {
        conn: u8,
        mark: u8,
    },
    /// A stalled connection does not confirm its checkpoints (a reader that stopped); the
    /// others confirm each at once. Un-stalling confirms the latest.
    Stall {
        conn: u8,
        stalled: bool,
    },
    Lost {
        conn: u8,
        reason: u8,
        silent_ms: u16,
    },
    Overflow {
        conn: u8,
    },
    /// Moves the fake clock (`ms` < 32768: milliseconds; else (ms - 32768) * 10 ms), then
    /// `handle_timeout`.
    Advance {
        ms: u16,
    },
    Shutdown,
    /// The backend disconnects a peer (`target` picks a peer id seen) or every session of an
    /// identity.
    Disconnect {
        target: u8,
        by_identity: bool,
    },
}

/// `ClientFrame.seq`, relative to what the session's client would number next.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum SeqPick {
    Unnumbered,
    Next,
    Repeat,
    Skip,
    Wild(u16),
}

/// A server seq the client refers to (Ack.seq, Hello.last_seq), relative to the highest seq
/// the session's client has seen.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum AckPick {
    Latest,
    Back(u8),
    Zero,
    Ahead(u8),
    Wild(u64),
}

/// Hello.attempt, relative to the client's highest attempt for that session.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum AttemptPick {
    Next,
    Same,
    Zero,
    Wild(u64),
}

#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum PayloadPick {
    /// SdpType by number modulo 6 (5 is no known type).
    Description(u8),
    Candidate(bool),
    Data(u8),
    Empty,
}

/// What the runtime established about a Hello's or Refresh's token (with authentication on;
/// without it every Hello and Refresh goes through `frame_received`).
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum CredPick {
    /// A verified token: identity `identity % 3` (with device "d1" or none), room grants
    /// `grants % 5` (any, "a", prefix "lobby", "b" + prefix "team:", none), expiring in
    /// `expires_s` seconds.
    Verified {
        identity: u8,
        device: bool,
        grants: u8,
        signal: bool,
        expires_s: u8,
    },
    /// A refused token: TOKEN_* code by number.
    Refused(u8),
    /// The frame as it is, through `frame_received` (the hub's unverified path).
    Unverified,
}

#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum ProblemPick {
    Malformed,
    TooLarge,
    Unsupported,
    BrokenFraming,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsgPick {
    /// `resume`: 0 = no token, 255 = a token the hub never issued, else one of the tokens
    /// seen in Welcomes (modulo their number).
    Hello {
        resume: u8,
        last_seq: AckPick,
        attempt: AttemptPick,
        creds: CredPick,
    },
    Refresh {
        creds: CredPick,
    },
    Join {
        room: u8,
    },
    Leave {
        room: u8,
    },
    /// `to`: 250 = itself, 251 = "", 252 = too long, 253 = unknown, else a peer id seen.
    Signal {
        room: u8,
        to: u8,
        payload: PayloadPick,
    },
    Ping {
        len: u8,
    },
    Ack {
        seq: AckPick,
    },
    Bye,
    Suspend,
}

// Tag ranges (first value of each; a range ends where the next begins).
const OP_OPEN: u8 = 0;
const OP_SEND: u8 = 20;
const OP_REJECTED: u8 = 160;
const OP_DRAINED: u8 = 170;
const OP_STALL: u8 = 185;
const OP_LOST: u8 = 195;
const OP_OVERFLOW: u8 = 210;
const OP_ADVANCE: u8 = 215;
const OP_DISCONNECT: u8 = 252;
const OP_SHUTDOWN: u8 = 255;

const MSG_HELLO: u8 = 0;
const MSG_REFRESH: u8 = 32;
const MSG_JOIN: u8 = 40;
const MSG_LEAVE: u8 = 80;
const MSG_SIGNAL: u8 = 100;
const MSG_PING: u8 = 170;
const MSG_ACK: u8 = 185;
const MSG_BYE: u8 = 235;
const MSG_SUSPEND: u8 = 245;

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let tag: u8 = u.arbitrary()?;
        Ok(match tag {
            OP_OPEN..OP_SEND => Op::Open {
                webtransport: u.arbitrary()?,
            },
            OP_SEND..OP_REJECTED => Op::Send {
                conn: u.arbitrary()?,
                seq: u.arbitrary()?,
                msg: u.arbitrary()?,
            },
            OP_REJECTED..OP_DRAINED => Op::Rejected {
                conn: u.arbitrary()?,
                problem: u.arbitrary()?,
            },
            OP_DRAINED..OP_STALL => Op::Drained {
                conn: u.arbitrary()?,
                mark: u.arbitrary()?,
            },
            OP_STALL..OP_LOST => Op::Stall {
                conn: u.arbitrary()?,
                stalled: u.arbitrary()?,
            },
            OP_LOST..OP_OVERFLOW => Op::Lost {
                conn: u.arbitrary()?,
                reason: u.arbitrary()?,
                silent_ms: u.arbitrary()?,
            },
            OP_OVERFLOW..OP_ADVANCE => Op::Overflow {
                conn: u.arbitrary()?,
            },
            OP_ADVANCE..OP_DISCONNECT => Op::Advance { ms: u.arbitrary()? },
            OP_DISCONNECT..OP_SHUTDOWN => Op::Disconnect {
                target: u.arbitrary()?,
                by_identity: u.arbitrary()?,
            },
            OP_SHUTDOWN => Op::Shutdown,
        })
    }
}

impl<'a> Arbitrary<'a> for MsgPick {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let tag: u8 = u.arbitrary()?;
        Ok(match tag {
            MSG_HELLO..MSG_REFRESH => MsgPick::Hello {
                resume: u.arbitrary()?,
                last_seq: u.arbitrary()?,
                attempt: u.arbitrary()?,
                creds: u.arbitrary()?,
            },
            MSG_REFRESH..MSG_JOIN => MsgPick::Refresh {
                creds: u.arbitrary()?,
            },
            MSG_JOIN..MSG_LEAVE => MsgPick::Join {
                room: u.arbitrary()?,
            },
            MSG_LEAVE..MSG_SIGNAL => MsgPick::Leave {
                room: u.arbitrary()?,
            },
            MSG_SIGNAL..MSG_PING => MsgPick::Signal {
                room: u.arbitrary()?,
                to: u.arbitrary()?,
                payload: u.arbitrary()?,
            },
            MSG_PING..MSG_ACK => MsgPick::Ping {
                len: u.arbitrary()?,
            },
            MSG_ACK..MSG_BYE => MsgPick::Ack {
                seq: u.arbitrary()?,
            },
            MSG_BYE..MSG_SUSPEND => MsgPick::Bye,
            MSG_SUSPEND..=u8::MAX => MsgPick::Suspend,
        })
    }
}

/// The most operations one input runs (keeps every execution short).
pub const MAX_OPS: usize = 400;

/// Decodes an input: the setup, then operations while bytes remain.
pub fn decode(data: &[u8]) -> (Setup, Vec<Op>) {
    let mut u = Unstructured::new(data);
    let setup = Setup::arbitrary(&mut u).unwrap_or_default();
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    (setup, ops)
}

/// The inverse of decoding, for seeds: `decode(&encode(setup, ops)) == (setup, ops)`.
pub fn encode(setup: &Setup, ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    setup.encode(&mut out);
    for op in ops {
        op.encode(&mut out);
    }
    out
}

/// Bytes that `arbitrary` decodes back to the value.
pub trait Encode {
    fn encode(&self, out: &mut Vec<u8>);
}

impl Encode for u8 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self);
    }
}

impl Encode for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl Encode for u16 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend(self.to_le_bytes());
    }
}

impl Encode for u64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend(self.to_le_bytes());
    }
}

/// A derived enum's variant: `arbitrary` picks variant `(u32 * count) >> 32`.
fn variant(out: &mut Vec<u8>, index: u64, count: u64) {
    let v = (index << 32).div_ceil(count);
    out.extend((v as u32).to_le_bytes());
}

impl Encode for Setup {
    fn encode(&self, out: &mut Vec<u8>) {
        for b in [
            self.window,
            self.backlog_frames,
            self.backlog_kib,
            self.rooms_per_session,
            self.peers_per_room,
            self.rate,
            self.burst,
            self.protocol_errors,
            self.resume_window_s,
            self.hello_timeout,
            self.seed,
            self.auth,
            self.max_sessions,
            self.max_pending_hellos,
            self.token_grace_s,
        ] {
            out.push(b);
        }
    }
}

impl Encode for SeqPick {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            SeqPick::Unnumbered => variant(out, 0, 5),
            SeqPick::Next => variant(out, 1, 5),
            SeqPick::Repeat => variant(out, 2, 5),
            SeqPick::Skip => variant(out, 3, 5),
            SeqPick::Wild(v) => {
                variant(out, 4, 5);
                v.encode(out);
            }
        }
    }
}

impl Encode for AckPick {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            AckPick::Latest => variant(out, 0, 5),
            AckPick::Back(n) => {
                variant(out, 1, 5);
                n.encode(out);
            }
            AckPick::Zero => variant(out, 2, 5),
            AckPick::Ahead(n) => {
                variant(out, 3, 5);
                n.encode(out);
            }
            AckPick::Wild(v) => {
                variant(out, 4, 5);
                v.encode(out);
            }
        }
    }
}

impl Encode for AttemptPick {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            AttemptPick::Next => variant(out, 0, 4),
            AttemptPick::Same => variant(out, 1, 4),
            AttemptPick::Zero => variant(out, 2, 4),
            AttemptPick::Wild(v) => {
                variant(out, 3, 4);
                v.encode(out);
            }
        }
    }
}

impl Encode for PayloadPick {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            PayloadPick::Description(t) => {
                variant(out, 0, 4);
                t.encode(out);
            }
            PayloadPick::Candidate(b) => {
                variant(out, 1, 4);
                b.encode(out);
            }
            PayloadPick::Data(n) => {
                variant(out, 2, 4);
                n.encode(out);
            }
            PayloadPick::Empty => variant(out, 3, 4),
        }
    }
}

impl Encode for CredPick {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            CredPick::Verified {
                identity,
                device,
                grants,
                signal,
                expires_s,
            } => {
                variant(out, 0, 3);
                identity.encode(out);
                device.encode(out);
                grants.encode(out);
                signal.encode(out);
                expires_s.encode(out);
            }
            CredPick::Refused(code) => {
                variant(out, 1, 3);
                code.encode(out);
            }
            CredPick::Unverified => variant(out, 2, 3),
        }
    }
}

impl Encode for ProblemPick {
    fn encode(&self, out: &mut Vec<u8>) {
        let index = match self {
            ProblemPick::Malformed => 0,
            ProblemPick::TooLarge => 1,
            ProblemPick::Unsupported => 2,
            ProblemPick::BrokenFraming => 3,
        };
        variant(out, index, 4);
    }
}

impl Encode for MsgPick {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            MsgPick::Hello {
                resume,
                last_seq,
                attempt,
                creds,
            } => {
                out.push(MSG_HELLO);
                resume.encode(out);
                last_seq.encode(out);
                attempt.encode(out);
                creds.encode(out);
            }
            MsgPick::Refresh { creds } => {
                out.push(MSG_REFRESH);
                creds.encode(out);
            }
            MsgPick::Join { room } => {
                out.push(MSG_JOIN);
                room.encode(out);
            }
            MsgPick::Leave { room } => {
                out.push(MSG_LEAVE);
                room.encode(out);
            }
            MsgPick::Signal { room, to, payload } => {
                out.push(MSG_SIGNAL);
                room.encode(out);
                to.encode(out);
                payload.encode(out);
            }
            MsgPick::Ping { len } => {
                out.push(MSG_PING);
                len.encode(out);
            }
            MsgPick::Ack { seq } => {
                out.push(MSG_ACK);
                seq.encode(out);
            }
            MsgPick::Bye => out.push(MSG_BYE),
            MsgPick::Suspend => out.push(MSG_SUSPEND),
        }
    }
}

impl Encode for Op {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::Open { webtransport } => {
                out.push(OP_OPEN);
                webtransport.encode(out);
            }
            Op::Send { conn, seq, msg } => {
                out.push(OP_SEND);
                conn.encode(out);
                seq.encode(out);
                msg.encode(out);
            }
            Op::Rejected { conn, problem } => {
                out.push(OP_REJECTED);
                conn.encode(out);
                problem.encode(out);
            }
            Op::Drained { conn, mark } => {
                out.push(OP_DRAINED);
                conn.encode(out);
                mark.encode(out);
            }
            Op::Stall { conn, stalled } => {
                out.push(OP_STALL);
                conn.encode(out);
                stalled.encode(out);
            }
            Op::Lost {
                conn,
                reason,
                silent_ms,
            } => {
                out.push(OP_LOST);
                conn.encode(out);
                reason.encode(out);
                silent_ms.encode(out);
            }
            Op::Overflow { conn } => {
                out.push(OP_OVERFLOW);
                conn.encode(out);
            }
            Op::Advance { ms } => {
                out.push(OP_ADVANCE);
                ms.encode(out);
            }
            Op::Disconnect {
                target,
                by_identity,
            } => {
                out.push(OP_DISCONNECT);
                target.encode(out);
                by_identity.encode(out);
            }
            Op::Shutdown => out.push(OP_SHUTDOWN),
        }
    }
}
