//! A hash map for keys the gateway numbers itself (connections, sessions): they are counters,
//! never chosen by a client, so they need no protection against crafted collisions and can
//! skip SipHash — which was a quarter of the hub's cost per relayed signal. Maps keyed by what
//! clients send (room names, peer ids, tokens) keep the standard, seeded hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-shift of a single integer (the Fibonacci constant spreads consecutive numbers).
#[derive(Default)]
pub(super) struct CounterHasher(u64);

impl Hasher for CounterHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys that are not a single u64 (none in the hub); still correct.
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(super) type NumberedMap<K, V> = HashMap<K, V, BuildHasherDefault<CounterHasher>>;
