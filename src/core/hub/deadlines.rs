//! Per-item deadlines: every key has at most one deadline, replaced or cancelled in place, so
//! nothing stale piles up (a heap of fire-and-forget entries grows with every presence flap
//! and must be checked, entry by entry, for whether it still applies).

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

#[derive(Debug)]
pub(super) struct Deadlines<K> {
    by_time: BTreeSet<(Instant, K)>,
    by_key: HashMap<K, Instant>,
}

impl<K: Ord + Hash + Copy> Deadlines<K> {
    pub fn new() -> Self {
        Self {
            by_time: BTreeSet::new(),
            by_key: HashMap::new(),
        }
    }

    /// Sets (or moves) the deadline of `key`.
    pub fn set(&mut self, key: K, at: Instant) {
        if let Some(old) = self.by_key.insert(key, at) {
            self.by_time.remove(&(old, key));
        }
        self.by_time.insert((at, key));
    }

    pub fn cancel(&mut self, key: K) {
        if let Some(at) = self.by_key.remove(&key) {
            self.by_time.remove(&(at, key));
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Removes and returns a key whose deadline is at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        let &(at, key) = self.by_time.first()?;
        if at > now {
            return None;
        }
        self.by_time.pop_first();
        self.by_key.remove(&key);
        Some(key)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn clear(&mut self) {
        self.by_time.clear();
        self.by_key.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_key_has_one_deadline_that_moves_or_goes() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut d = Deadlines::new();
        d.set('a', at(5));
        d.set('b', at(3));
        d.set('a', at(1)); // moved, not added
        assert_eq!(d.len(), 2);
        assert_eq!(d.next(), Some(at(1)));
        d.cancel('a');
        assert_eq!(d.next(), Some(at(3)));
        assert_eq!(d.pop_due(at(2)), None);
        assert_eq!(d.pop_due(at(3)), Some('b'));
        assert_eq!(d.pop_due(at(9)), None);
        assert_eq!(d.len(), 0);
    }
}
