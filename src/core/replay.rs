//! The frames a session may still need after a reconnect.
//!
//! Every ServerFrame of a session's ordered stream goes here before it is written to the
//! connection. The client's Ack (or the `last_seq` of a resuming Hello) removes what it has
//! processed. While the session is unreachable this buffer *is* the hold for frames addressed
//! to it, so its bounds are the hold bounds.

use std::collections::VecDeque;

use crate::proto::ServerFrame;

#[derive(Debug, Default)]
pub struct ReplayBuffer {
    frames: VecDeque<(ServerFrame, usize)>,
    bytes: usize,
    /// Every frame with seq <= floor has left the buffer (acked or evicted).
    floor: u64,
    /// Whether any frame left the buffer without being acknowledged.
    evicted_unacked: bool,
}

impl ReplayBuffer {
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends the next frame of the stream; `size` is its encoded length.
    pub fn push(&mut self, frame: ServerFrame, size: usize) {
        debug_assert!(self.frames.back().is_none_or(|(f, _)| f.seq < frame.seq));
        self.bytes += size;
        self.frames.push_back((frame, size));
    }

    /// The client processed everything up to and including `seq`.
    pub fn ack(&mut self, seq: u64) {
        while let Some((front, size)) = self.frames.front() {
            if front.seq > seq {
                break;
            }
            self.bytes -= size;
            self.frames.pop_front();
        }
        self.floor = self.floor.max(seq);
    }

    /// Drops the oldest frame although it is not acknowledged (the client does not ack and
    /// the bound is reached). A later resume from before it is then refused as a gap.
    pub fn evict_oldest(&mut self) {
        if let Some((frame, size)) = self.frames.pop_front() {
            self.bytes -= size;
            self.floor = self.floor.max(frame.seq);
            self.evicted_unacked = true;
        }
    }

    /// Can a client that processed everything up to `last_seq` continue without loss?
    pub fn can_resume_from(&self, last_seq: u64) -> bool {
        last_seq >= self.floor || !self.evicted_unacked
    }

    /// The frames after `last_seq`, oldest first.
    pub fn after(&self, last_seq: u64) -> impl Iterator<Item = &ServerFrame> {
        self.frames
            .iter()
            .map(|(frame, _)| frame)
            .filter(move |frame| frame.seq > last_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> ServerFrame {
        ServerFrame {
            seq,
            ..Default::default()
        }
    }

    fn filled(n: u64) -> ReplayBuffer {
        let mut b = ReplayBuffer::default();
        for seq in 1..=n {
            b.push(frame(seq), 10);
        }
        b
    }

    #[test]
    fn ack_trims_what_was_processed_and_keeps_the_rest_in_order() {
        let mut b = filled(5);
        b.ack(3);
        assert_eq!(b.len(), 2);
        assert_eq!(b.bytes(), 20);
        let seqs: Vec<u64> = b.after(3).map(|f| f.seq).collect();
        assert_eq!(seqs, [4, 5]);
        b.ack(2); // an old ack changes nothing
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn replay_after_returns_only_newer_frames() {
        let b = filled(5);
        let seqs: Vec<u64> = b.after(2).map(|f| f.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(b.after(5).count(), 0);
    }

    #[test]
    fn eviction_makes_older_resume_points_a_gap() {
        let mut b = filled(5);
        assert!(b.can_resume_from(0));
        b.evict_oldest();
        b.evict_oldest();
        assert!(!b.can_resume_from(0));
        assert!(!b.can_resume_from(1));
        assert!(b.can_resume_from(2));
        assert_eq!(b.bytes(), 30);
    }

    #[test]
    fn acked_frames_are_no_gap() {
        let mut b = filled(5);
        b.ack(4);
        // A client that says it processed only 2 after acking 4 is inconsistent, but nothing
        // it needs was lost by the gateway.
        assert!(b.can_resume_from(2));
    }
}
