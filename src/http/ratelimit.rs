//! Per-client token buckets (GCRA, from the `governor` crate) for the control plane and the token
//! endpoint. A key is whatever identifies the caller: a token's subject, a peer address.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Longest and shortest `Retry-After` we announce, in seconds (the Acronis contract: 1..3600).
const RETRY_AFTER_MIN: u64 = 1;
const RETRY_AFTER_MAX: u64 = 3600;

/// Idle keys are dropped every this many checks, so the key map stays as small as the set of
/// recently active clients.
const SWEEP_EVERY: u64 = 4096;

pub struct RateLimits {
    /// None: rate limiting is off.
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    checks: AtomicU64,
}

impl RateLimits {
    /// `per_second` requests per second per key, `burst` at once; `per_second == 0` turns
    /// limiting off, `burst == 0` means a burst of one second's worth.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::dashmap(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            checks: AtomicU64::new(0),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.limiter.is_some()
    }

    /// Takes one token from `key`'s bucket, or tells how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }
}

/// The `Retry-After` value for a wait: whole seconds, rounded up, within 1..3600.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused_with_a_wait() {
        let limits = RateLimits::new(1, 2);
        assert!(limits.check("a").is_ok());
        assert!(limits.check("a").is_ok());
        let wait = limits.check("a").unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limits.check("b").is_ok(), "keys have their own buckets");
    }

    #[test]
    fn zero_rate_disables() {
        let limits = RateLimits::new(0, 0);
        assert!(!limits.is_enabled());
        assert!((0..1000).all(|_| limits.check("a").is_ok()));
    }

    #[test]
    fn retry_after_is_whole_clamped_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(100_000)), 3600);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
