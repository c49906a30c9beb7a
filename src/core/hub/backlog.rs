//! A session's ordered stream toward its client: everything the client has not acknowledged
//! yet. One structure under one name (it used to be "replay" while connected and "hold"
//! while away):
//!
//! ```text
//!   acked | sent, not acked (kept for a resume) | numbered, not sent | pending (not numbered)
//!         ^ frames.front()                       ^ sent_through + 1   ^ pending.pop()
//! ```
//!
//! Frames are numbered when they go out, or all at once when the session resumes (so that the
//! Welcome can say where the replay ends). Until then they wait in [`Pending`], where presence
//! news is coalesced. The connection takes frames as it drains ([`super::flow`]); nothing is
//! ever pushed at it faster.
//!
//! Bounds (`backlog_frames`, `backlog_bytes`): signals not yet sent — pending or numbered —
//! are refused to their sender beyond them; sent frames the client does not acknowledge are
//! dropped oldest first beyond them (a later resume from before them is then a gap). Frames
//! not yet sent are never dropped.

use std::collections::VecDeque;
use std::sync::Arc;

use prost::Message;

use super::pending::{Class, News, Pending};
use crate::proto::{ServerFrame, server_frame::Msg};

#[derive(Debug)]
struct Numbered {
    frame: Arc<ServerFrame>,
    size: usize,
    signal: bool,
}

#[derive(Debug)]
pub(super) struct Backlog {
    /// The seq the next numbered frame gets.
    next_seq: u64,
    /// Numbered frames not acknowledged, contiguous seqs.
    frames: VecDeque<Numbered>,
    bytes: usize,
    /// The highest seq handed to the current connection (or known to the client, after a
    /// resume).
    sent_through: u64,
    /// Signals numbered but not sent: (frames, bytes).
    unsent_signals: (usize, usize),
    /// Every seq <= floor has left `frames` (acknowledged or dropped).
    floor: u64,
    /// Some frame left without being acknowledged.
    dropped_unacked: bool,
    /// Durable mode: frames after this seq are not stored yet and may not go out.
    release_through: u64,
    pending: Pending,
}

impl Default for Backlog {
    fn default() -> Self {
        Self {
            next_seq: 1,
            frames: VecDeque::new(),
            bytes: 0,
            sent_through: 0,
            unsent_signals: (0, 0),
            floor: 0,
            dropped_unacked: false,
            release_through: u64::MAX,
            pending: Pending::default(),
        }
    }
}

impl Backlog {
    /// The seq of the newest numbered frame (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The seq of the newest frame handed to the current connection (or known to its client).
    pub fn sent_through(&self) -> u64 {
        self.sent_through
    }

    /// Nothing waits to be sent: a new frame may be numbered and sent at once.
    pub fn is_drained(&self) -> bool {
        self.sent_through == self.last_seq() && self.pending.is_empty()
    }

    /// Signals waiting to be sent, pending or numbered: (frames, bytes).
    pub fn unsent_signals(&self) -> (usize, usize) {
        let (frames, bytes) = self.pending.signals();
        (
            frames + self.unsent_signals.0,
            bytes + self.unsent_signals.1,
        )
    }

    /// Replies to the session's own requests that wait unnumbered (a client that sends
    /// requests but does not read).
    pub fn pending_replies(&self) -> usize {
        self.pending.replies()
    }

    /// Numbers a frame that goes out at once (the caller checked [`Self::is_drained`] and
    /// that the connection can take it).
    pub fn number_and_send(
        &mut self,
        in_reply_to: u64,
        msg: Msg,
        signal: bool,
    ) -> (Arc<ServerFrame>, usize) {
        debug_assert!(self.is_drained());
        self.number(in_reply_to, msg, signal);
        self.take_next().expect("just numbered")
    }

    /// Appends a frame behind everything waiting.
    pub fn push(&mut self, in_reply_to: u64, msg: Msg, size: usize, class: Class) {
        self.pending.push_frame(in_reply_to, msg, size, class);
    }

    /// Appends presence news (coalesced with earlier news about the same peer and room).
    pub fn push_news(&mut self, room: &str, peer_id: &str, news: News) {
        self.pending.push_news(room, peer_id, news);
    }

    /// The size of the next frame to send, numbering pending frames as needed; `None` when
    /// nothing waits.
    fn next_size(&mut self) -> Option<usize> {
        loop {
            let index = usize::try_from(self.sent_through + 1 - self.first_seq()).ok()?;
            if let Some(next) = self.frames.get(index) {
                return Some(next.size);
            }
            let released = self.pending.pop()?;
            for r in released {
                self.number(r.in_reply_to, r.msg, r.signal);
            }
        }
    }

    /// Hands the next frame (and its encoded size) to the connection; `None` when nothing
    /// waits (or what waits is not stored yet, in durable mode).
    pub fn take_next(&mut self) -> Option<(Arc<ServerFrame>, usize)> {
        if self.sent_through >= self.release_through {
            return None;
        }
        self.next_size()?;
        let index = usize::try_from(self.sent_through + 1 - self.first_seq()).ok()?;
        let next = self.frames.get(index)?;
        self.sent_through += 1;
        if next.signal {
            self.unsent_signals.0 -= 1;
            self.unsent_signals.1 -= next.size;
        }
        Some((next.frame.clone(), next.size))
    }

    /// Numbers everything pending (a resume: the Welcome says where the replay ends).
    pub fn number_pending(&mut self) {
        while let Some(released) = self.pending.pop() {
            for r in released {
                self.number(r.in_reply_to, r.msg, r.signal);
            }
        }
    }

    /// A new connection whose client has processed everything up to `last_seq`: what it has
    /// is acknowledged, everything after is sent again.
    pub fn restart_after(&mut self, last_seq: u64) {
        self.ack(last_seq);
        self.sent_through = last_seq.max(self.floor);
        let (frames, bytes) = self
            .frames
            .iter()
            .filter(|f| f.signal && f.frame.seq > self.sent_through)
            .fold((0, 0), |(n, b), f| (n + 1, b + f.size));
        self.unsent_signals = (frames, bytes);
    }

    /// The client processed everything up to and including `seq`.
    pub fn ack(&mut self, seq: u64) {
        let seq = seq.min(self.sent_through.max(self.last_seq()));
        while let Some(front) = self.frames.front() {
            if front.frame.seq > seq {
                break;
            }
            self.bytes -= front.size;
            if front.frame.seq > self.sent_through && front.signal {
                self.unsent_signals.0 -= 1;
                self.unsent_signals.1 -= front.size;
            }
            self.frames.pop_front();
        }
        self.floor = self.floor.max(seq);
        self.sent_through = self.sent_through.max(self.floor);
    }

    /// Drops the oldest *sent* frames beyond the bounds (their client does not acknowledge).
    pub fn drop_unacked_beyond(&mut self, max_frames: usize, max_bytes: usize) {
        while (self.frames.len() > max_frames || self.bytes > max_bytes)
            && let Some(front) = self.frames.front()
            && front.frame.seq <= self.sent_through
        {
            self.bytes -= front.size;
            self.floor = self.floor.max(front.frame.seq);
            self.dropped_unacked = true;
            self.frames.pop_front();
        }
    }

    /// Every seq up to this one was acknowledged (or dropped).
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Durable mode: frames up to `seq` are stored and may go out (the others wait).
    pub fn release_through(&mut self, seq: u64) {
        self.release_through = seq;
    }

    /// Durable mode: the numbered frames after `seq`, for the next record of the log, in
    /// order, as many as fit in `max_bytes` (at least one).
    pub fn frames_after(&self, seq: u64, max_bytes: usize) -> Vec<(ServerFrame, bool)> {
        let mut bytes = 0;
        self.frames
            .iter()
            .filter(|f| f.frame.seq > seq)
            .take_while(|f| {
                let first = bytes == 0;
                bytes += f.size;
                first || bytes <= max_bytes
            })
            .map(|f| (ServerFrame::clone(&f.frame), f.signal))
            .collect()
    }

    /// Durable mode: the frames numbered `retracted` (all after `after`, none sent) could not
    /// be stored and are taken back; the frames after `after` that stay are numbered again,
    /// from `after + 1`, so that the stream has no hole.
    pub fn retract(&mut self, after: u64, retracted: &std::collections::BTreeSet<u64>) {
        debug_assert!(self.sent_through <= after);
        let keep = self.frames.iter().position(|f| f.frame.seq > after);
        let tail: Vec<Numbered> = match keep {
            Some(at) => self.frames.drain(at..).collect(),
            None => Vec::new(),
        };
        self.next_seq = after + 1;
        for f in tail {
            self.bytes -= f.size;
            if f.signal {
                self.unsent_signals.0 -= 1;
                self.unsent_signals.1 -= f.size;
            }
            if retracted.contains(&f.frame.seq) {
                continue;
            }
            let frame = Arc::unwrap_or_clone(f.frame);
            let in_reply_to = frame.in_reply_to;
            if let Some(msg) = frame.msg {
                self.number(in_reply_to, msg, f.signal);
            }
        }
    }

    /// Can a client that processed everything up to `last_seq` continue without loss?
    pub fn can_resume_from(&self, last_seq: u64) -> bool {
        last_seq >= self.floor || !self.dropped_unacked
    }

    /// Where the stream stands: the next seq, the floor, whether a frame was dropped
    /// unacknowledged.
    pub fn position(&self) -> (u64, u64, bool) {
        (self.next_seq, self.floor, self.dropped_unacked)
    }

    /// Every frame kept (after [`Self::number_pending`], for a hand-over).
    pub fn export(&self) -> Vec<(ServerFrame, bool)> {
        self.frames_after(0, usize::MAX)
    }

    /// A backlog handed over by another gateway (nothing sent on this one yet).
    pub fn import(
        next_seq: u64,
        floor: u64,
        dropped_unacked: bool,
        frames: Vec<(ServerFrame, bool)>,
    ) -> Self {
        let mut backlog = Self {
            next_seq: next_seq.max(1),
            floor,
            dropped_unacked,
            sent_through: floor,
            ..Self::default()
        };
        for (frame, signal) in frames {
            let size = frame.encoded_len();
            backlog.bytes += size;
            backlog.frames.push_back(Numbered {
                frame: Arc::new(frame),
                size,
                signal,
            });
        }
        backlog.restart_after(floor);
        backlog
    }

    fn first_seq(&self) -> u64 {
        self.frames
            .front()
            .map_or(self.next_seq, |front| front.frame.seq)
    }

    fn number(&mut self, in_reply_to: u64, msg: Msg, signal: bool) {
        let frame = ServerFrame {
            seq: self.next_seq,
            in_reply_to,
            msg: Some(msg),
        };
        self.next_seq += 1;
        let size = frame.encoded_len();
        self.bytes += size;
        if signal {
            self.unsent_signals.0 += 1;
            self.unsent_signals.1 += size;
        }
        self.frames.push_back(Numbered {
            frame: Arc::new(frame),
            size,
            signal,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Left, Signal, signal};

    fn reply() -> Msg {
        Msg::Left(Left { room: "r".into() })
    }

    fn sig() -> Msg {
        Msg::Signal(Signal {
            room: "r".into(),
            to: "b".into(),
            from: "a".into(),
            payload: Some(signal::Payload::Data(bytes::Bytes::from_static(
                b"0123456789",
            ))),
        })
    }

    fn send_all(b: &mut Backlog) -> Vec<u64> {
        std::iter::from_fn(|| b.take_next())
            .map(|(f, _)| f.seq)
            .collect()
    }

    #[test]
    fn frames_are_numbered_when_they_go_out_and_acks_forget_them() {
        let mut b = Backlog::default();
        b.push(1, reply(), 4, Class::Reply);
        b.push(0, sig(), 20, Class::Signal);
        assert_eq!(b.last_seq(), 0, "nothing numbered while pending");
        assert_eq!(b.unsent_signals().0, 1);
        assert_eq!(send_all(&mut b), [1, 2]);
        assert!(b.is_drained());
        assert_eq!(b.unsent_signals(), (0, 0));
        b.ack(1);
        assert_eq!(b.frames.len(), 1);
        assert_eq!(b.number_and_send(0, reply(), false).0.seq, 3);
    }

    #[test]
    fn a_resume_sends_again_what_the_client_missed_then_what_waited() {
        let mut b = Backlog::default();
        for _ in 0..3 {
            b.push(0, sig(), 20, Class::Signal);
        }
        assert_eq!(send_all(&mut b), [1, 2, 3]);
        b.push(0, sig(), 20, Class::Signal); // held while away
        b.number_pending();
        assert_eq!(b.last_seq(), 4, "the replay ends at 4");
        b.restart_after(1);
        assert_eq!(b.unsent_signals().0, 3);
        assert_eq!(send_all(&mut b), [2, 3, 4]);
        assert!(b.can_resume_from(1));
    }

    #[test]
    fn only_sent_frames_are_dropped_at_the_bound_and_that_makes_a_gap() {
        let mut b = Backlog::default();
        for _ in 0..5 {
            b.push(0, sig(), 20, Class::Signal);
        }
        let sent: Vec<u64> = (0..2)
            .filter_map(|_| b.take_next())
            .map(|(f, _)| f.seq)
            .collect();
        assert_eq!(sent, [1, 2]);
        for _ in 0..3 {
            b.push(0, sig(), 20, Class::Signal);
        }
        b.number_pending();
        b.drop_unacked_beyond(1, usize::MAX);
        assert_eq!(b.frames.len(), 6, "unsent frames are never dropped");
        assert!(b.can_resume_from(2));
        assert_eq!(send_all(&mut b), [3, 4, 5, 6, 7, 8]);
        b.drop_unacked_beyond(2, usize::MAX);
        assert_eq!(b.frames.len(), 2);
        assert!(!b.can_resume_from(2), "frames 3..=6 were dropped unacked");
        assert!(b.can_resume_from(6));
    }
}
