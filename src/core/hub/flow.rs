//! How much a connection is handed before it proves that it drained it.
//!
//! The hub gives a connection at most a window of numbered frames; every quarter window it
//! asks for a checkpoint ([`super::Output::Checkpoint`]), which the runtime reports back once
//! everything before it was written to the socket ([`super::Hub::connection_drained`]). So a
//! replay of a thousand held frames, or a burst to a slow reader, waits in the session's
//! backlog — where it is bounded and counted — instead of overflowing the connection's
//! outbound queue and getting the client closed as a slow consumer for the gateway's own
//! backlog.

use std::collections::VecDeque;

#[derive(Debug)]
pub(super) struct Flow {
    window_frames: usize,
    window_bytes: usize,
    /// Handed to the connection, not yet confirmed drained: (frames, bytes).
    in_flight: (usize, usize),
    /// In flight since the last checkpoint.
    unmarked: (usize, usize),
    /// Checkpoints asked for and what was handed before each.
    checkpoints: VecDeque<(u64, usize, usize)>,
    next_checkpoint: u64,
}

impl Flow {
    pub fn new(window_frames: usize, window_bytes: usize) -> Self {
        Self {
            window_frames: window_frames.max(4),
            window_bytes: window_bytes.max(1),
            in_flight: (0, 0),
            unmarked: (0, 0),
            checkpoints: VecDeque::new(),
            next_checkpoint: 1,
        }
    }

    /// May another frame go out? (The last one may exceed the byte window.)
    pub fn can_take(&self) -> bool {
        self.in_flight.0 < self.window_frames && self.in_flight.1 < self.window_bytes
    }

    /// A frame of `size` bytes went out; returns a checkpoint to ask for, every quarter window.
    pub fn sent(&mut self, size: usize) -> Option<u64> {
        self.in_flight.0 += 1;
        self.in_flight.1 += size;
        self.unmarked.0 += 1;
        self.unmarked.1 += size;
        if self.unmarked.0 >= self.window_frames / 4 || self.unmarked.1 >= self.window_bytes / 4 {
            return self.checkpoint();
        }
        None
    }

    /// A checkpoint for what went out since the last one (when sending stops with frames
    /// waiting, so that the window is sure to reopen); `None` if there is nothing unmarked.
    pub fn checkpoint(&mut self) -> Option<u64> {
        if self.unmarked.0 == 0 {
            return None;
        }
        let mark = self.next_checkpoint;
        self.next_checkpoint += 1;
        self.checkpoints
            .push_back((mark, self.unmarked.0, self.unmarked.1));
        self.unmarked = (0, 0);
        Some(mark)
    }

    /// Everything before checkpoint `mark` was written.
    pub fn drained(&mut self, mark: u64) {
        while let Some(&(m, frames, bytes)) = self.checkpoints.front() {
            if m > mark {
                break;
            }
            self.in_flight.0 -= frames;
            self.in_flight.1 -= bytes;
            self.checkpoints.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_closes_until_a_checkpoint_is_confirmed() {
        let mut f = Flow::new(8, 1 << 20);
        let mut marks = Vec::new();
        while f.can_take() {
            marks.extend(f.sent(10));
        }
        assert_eq!(marks, [1, 2, 3, 4], "a checkpoint every quarter window");
        assert_eq!(f.checkpoint(), None, "everything in flight is marked");
        f.drained(1);
        assert!(f.can_take());
        f.drained(0); // late, repeated reports are harmless
        f.drained(4);
        assert_eq!(f.in_flight, (0, 0));
    }

    #[test]
    fn bytes_close_the_window_too_and_a_stop_asks_for_a_checkpoint() {
        let mut f = Flow::new(64, 100);
        assert_eq!(f.sent(10), None);
        assert_eq!(f.sent(20), Some(1), "a quarter of the bytes");
        assert_eq!(f.sent(80), Some(2));
        assert!(!f.can_take());
        let mut g = Flow::new(64, 1000);
        g.sent(5);
        assert_eq!(g.checkpoint(), Some(1));
        g.drained(1);
        assert_eq!(g.in_flight, (0, 0));
    }
}
