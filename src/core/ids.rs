//! Identifiers the gateway hands out: peer ids (public) and resume tokens (secret), drawn from
//! an injected [`Entropy`] so that tests and fuzzers get deterministic ids, as quinn-proto and
//! str0m take their randomness from the caller.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

/// A source of random bytes.
pub trait Entropy: Send {
    fn fill(&mut self, buf: &mut [u8]);
}

/// The operating system's cryptographic random number generator: what the gateway runs with.
#[derive(Debug)]
pub struct SystemEntropy(SystemRandom);

impl Default for SystemEntropy {
    fn default() -> Self {
        Self(SystemRandom::new())
    }
}

impl Entropy for SystemEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        // The OS random source failing is not something a gateway can continue through.
        self.0
            .fill(buf)
            .expect("the operating system's random number generator failed");
    }
}

/// A reproducible sequence (splitmix64) for tests and fuzzing. Never for a real gateway:
/// its resume tokens would be guessable.
#[derive(Debug, Clone)]
pub struct SeededEntropy(u64);

impl SeededEntropy {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Entropy for SeededEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

fn random_text(entropy: &mut dyn Entropy, bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    entropy.fill(&mut buf);
    URL_SAFE_NO_PAD.encode(&buf)
}

/// 72 random bits: unique among live sessions with overwhelming probability (the hub still
/// checks), short enough to read in logs.
pub fn new_peer_id(entropy: &mut dyn Entropy) -> String {
    format!("p-{}", random_text(entropy, 9))
}

/// 256 random bits: whoever holds a resume token can take the session over.
pub fn new_resume_token(entropy: &mut dyn Entropy) -> String {
    random_text(entropy, 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_entropy_repeats_and_differs_by_seed() {
        let mut a = SeededEntropy::new(7);
        let mut b = SeededEntropy::new(7);
        let mut c = SeededEntropy::new(8);
        let ids: Vec<String> = (0..3).map(|_| new_peer_id(&mut a)).collect();
        assert_eq!(ids, (0..3).map(|_| new_peer_id(&mut b)).collect::<Vec<_>>());
        assert_ne!(ids[0], new_peer_id(&mut c));
        assert_ne!(ids[0], ids[1]);
        assert_eq!(new_resume_token(&mut a).len(), 43);
    }
}
