//! Identifiers the gateway hands out: peer ids (public) and resume tokens (secret).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

fn random_text(rng: &SystemRandom, bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS random source failing is not something a gateway can continue through.
    rng.fill(&mut buf)
        .expect("the operating system's random number generator failed");
    URL_SAFE_NO_PAD.encode(&buf)
}

/// 72 random bits: unique among live sessions with overwhelming probability (the hub still
/// checks), short enough to read in logs.
pub fn new_peer_id(rng: &SystemRandom) -> String {
    format!("p-{}", random_text(rng, 9))
}

/// 256 random bits: whoever holds a resume token can take the session over.
pub fn new_resume_token(rng: &SystemRandom) -> String {
    random_text(rng, 32)
}
