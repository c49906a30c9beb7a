//! Token bucket: `rate` requests per second on average, bursts up to `burst`.

use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    pub fn new(now: Instant, rate_per_sec: u32, burst: u32) -> Self {
        Self {
            rate_per_sec: f64::from(rate_per_sec),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            refilled_at: now,
        }
    }

    /// `count` requests per `period` on average (e.g. one per 2 s), bursts up to `burst`.
    pub fn new_per(now: Instant, count: u32, period: std::time::Duration, burst: u32) -> Self {
        let mut bucket = Self::new(now, 0, burst);
        bucket.rate_per_sec = f64::from(count) / period.as_secs_f64().max(f64::MIN_POSITIVE);
        bucket
    }

    /// The tokens there are at `now`.
    fn tokens_at(&self, now: Instant) -> f64 {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        (self.tokens + elapsed * self.rate_per_sec).min(self.burst)
    }

    /// Whether the bucket has refilled completely by `now`: it then says nothing a new one
    /// would not (a table of buckets may forget it).
    pub fn is_full(&self, now: Instant) -> bool {
        self.tokens_at(now) >= self.burst
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.tokens = self.tokens_at(now);
        self.refilled_at = self.refilled_at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0, 10, 5);
        assert_eq!((0..20).filter(|_| b.try_take(t0)).count(), 5);
        // 10/s: one token per 100 ms.
        assert!(!b.try_take(t0 + Duration::from_millis(50)));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        assert!(!b.try_take(t0 + Duration::from_millis(110)));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| b.try_take(later)).count(), 5);
    }
}
