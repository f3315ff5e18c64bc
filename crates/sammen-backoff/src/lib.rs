//! # sammen-backoff: jittered exponential backoff
//!
//! Why it exists: every loop in Sammen that talks to something which can go away (the AMQP publisher's
//! reconnect, the subscriber's reconnect, the relay's retry of a failed publish) must wait before it tries
//! again, wait longer each time so a sick broker is not hammered, and spread its retries so that many
//! clients do not reconnect in lock step. One small crate keeps that policy in one place, as
//! linkerd2-proxy's `exp-backoff` does.
//!
//! Invariants kept here:
//! - A delay is never below the current base (`min · 2ⁿ`, capped at `max`) and never above `max`.
//! - The base never shrinks until [`Backoff::reset`]; after a reset the next delay starts again from `min`.
//! - Jitter adds at most `jitter · base` on top of the base (then capped at `max`); `jitter = 0` makes the
//!   sequence exact and deterministic.
//! - No I/O and no clock: the caller sleeps, so the policy is testable without time.
#![forbid(unsafe_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// A backoff policy: the smallest delay, the largest delay and the jitter factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialBackoff {
    min: Duration,
    max: Duration,
    jitter: f64,
}

/// Why a backoff policy was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid backoff: {0}")]
pub struct InvalidBackoff(pub &'static str);

// === impl ExponentialBackoff ===

impl ExponentialBackoff {
    /// Upper bound for the jitter factor (as in linkerd: anything larger is surely a typo).
    pub const MAX_JITTER: f64 = 100.0;

    /// A policy that starts at `min`, doubles up to `max`, and adds up to `jitter · delay` at random.
    pub fn try_new(min: Duration, max: Duration, jitter: f64) -> Result<Self, InvalidBackoff> {
        if max.is_zero() {
            return Err(InvalidBackoff("maximum must be non-zero"));
        }
        if min > max {
            return Err(InvalidBackoff("maximum must not be less than minimum"));
        }
        if !jitter.is_finite() {
            return Err(InvalidBackoff("jitter must be finite"));
        }
        if jitter < 0.0 {
            return Err(InvalidBackoff("jitter must not be negative"));
        }
        if jitter > Self::MAX_JITTER {
            return Err(InvalidBackoff("jitter must not be greater than 100"));
        }
        Ok(ExponentialBackoff { min, max, jitter })
    }

    /// Smallest delay.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// Largest delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Jitter factor.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// A fresh sequence of delays, seeded from the process's random state.
    pub fn stream(&self) -> Backoff {
        // RandomState is seeded per process and per instance by std; good enough to de-correlate clients.
        let mut h = RandomState::new().build_hasher();
        h.write_u64(0x5a77_e11e);
        self.stream_with_seed(h.finish())
    }

    /// A fresh sequence of delays with a fixed seed (reproducible, for tests).
    pub fn stream_with_seed(&self, seed: u64) -> Backoff {
        Backoff {
            policy: *self,
            iterations: 0,
            rng: SplitMix64(seed),
        }
    }

    /// The base delay of the `iterations`-th attempt: `min · 2^iterations`, capped at `max`.
    pub fn base(&self, iterations: u32) -> Duration {
        let factor = 2_u32.checked_pow(iterations).unwrap_or(u32::MAX);
        self.min
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// Extra delay for a given base and a uniform sample `u` in `[0, 1)`; never beyond `max`.
    fn jitter_for(&self, base: Duration, u: f64) -> Duration {
        if self.jitter == 0.0 {
            return Duration::ZERO;
        }
        let extra = base.as_secs_f64() * self.jitter * u;
        // try_from_secs_f64 refuses huge values; those are capped by max anyway.
        let extra = Duration::try_from_secs_f64(extra).unwrap_or(self.max);
        extra.min(self.max.saturating_sub(base))
    }
}

impl Default for ExponentialBackoff {
    /// 100 ms doubling to 10 s with 50 % jitter: Sammen's reconnect policy.
    fn default() -> Self {
        ExponentialBackoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
            jitter: 0.5,
        }
    }
}

/// An endless sequence of delays following an [`ExponentialBackoff`] policy.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: ExponentialBackoff,
    iterations: u32,
    rng: SplitMix64,
}

// === impl Backoff ===

impl Backoff {
    /// The next delay to wait before trying again.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.policy.base(self.iterations);
        // Stop counting once the cap is reached: avoids overflow on very long outages.
        if base < self.policy.max {
            self.iterations += 1;
        }
        let u = self.rng.next_unit();
        base + self.policy.jitter_for(base, u)
    }

    /// Start again from `min`: call after a success (e.g. a connection that stayed up).
    pub fn reset(&mut self) {
        self.iterations = 0;
    }

    /// How many delays were handed out since the last reset (capped once `max` is reached).
    pub fn attempts(&self) -> u32 {
        self.iterations
    }

    /// The policy.
    pub fn policy(&self) -> &ExponentialBackoff {
        &self.policy
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

/// SplitMix64: a tiny, well-distributed generator; no cryptographic use, only jitter.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` from the top 53 bits.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rejects_bad_policies() {
        assert_eq!(
            ExponentialBackoff::try_new(ms(0), ms(0), 0.0),
            Err(InvalidBackoff("maximum must be non-zero"))
        );
        assert_eq!(
            ExponentialBackoff::try_new(ms(10), ms(5), 0.0),
            Err(InvalidBackoff("maximum must not be less than minimum"))
        );
        assert!(ExponentialBackoff::try_new(ms(1), ms(5), -0.1).is_err());
        assert!(ExponentialBackoff::try_new(ms(1), ms(5), f64::NAN).is_err());
        assert!(ExponentialBackoff::try_new(ms(1), ms(5), f64::INFINITY).is_err());
        assert!(ExponentialBackoff::try_new(ms(1), ms(5), 100.1).is_err());
        assert!(ExponentialBackoff::try_new(ms(0), ms(5), 100.0).is_ok());
        assert!(ExponentialBackoff::try_new(ms(5), ms(5), 0.0).is_ok());
    }

    #[test]
    fn without_jitter_doubles_then_caps() {
        let b = ExponentialBackoff::try_new(ms(100), ms(1000), 0.0).unwrap();
        let got: Vec<_> = b.stream().take(7).collect();
        assert_eq!(
            got,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000),
                ms(1000),
                ms(1000)
            ]
        );
    }

    #[test]
    fn reset_starts_again_from_min() {
        let b = ExponentialBackoff::try_new(ms(10), ms(10_000), 0.0).unwrap();
        let mut s = b.stream();
        for _ in 0..5 {
            s.next_delay();
        }
        assert_eq!(s.attempts(), 5);
        s.reset();
        assert_eq!(s.attempts(), 0);
        assert_eq!(s.next_delay(), ms(10));
        assert_eq!(s.next_delay(), ms(20));
    }

    #[test]
    fn survives_very_long_outages() {
        let b = ExponentialBackoff::try_new(ms(1), Duration::from_secs(3600), 1.0).unwrap();
        let mut s = b.stream_with_seed(7);
        for _ in 0..100_000 {
            assert!(s.next_delay() <= Duration::from_secs(3600));
        }
    }

    #[test]
    fn jitter_actually_varies() {
        let b = ExponentialBackoff::try_new(ms(100), ms(100_000), 1.0).unwrap();
        let firsts: std::collections::HashSet<_> = (0..50)
            .map(|seed| b.stream_with_seed(seed).next_delay())
            .collect();
        assert!(firsts.len() > 40, "jitter should spread first delays");
    }

    proptest! {
        #[test]
        fn delays_stay_within_bounds(
            min_ms in 0u64..5_000,
            extra_ms in 1u64..60_000,
            jitter in 0.0f64..=100.0,
            seed in any::<u64>(),
            n in 1usize..80,
        ) {
            let (min, max) = (ms(min_ms), ms(min_ms + extra_ms));
            let b = ExponentialBackoff::try_new(min, max, jitter).unwrap();
            let mut s = b.stream_with_seed(seed);
            for i in 0..n {
                let base = b.base(i as u32);
                let d = s.next_delay();
                prop_assert!(d >= base, "below base: {d:?} < {base:?}");
                prop_assert!(d >= min && d <= max);
                // jitter range: at most jitter·base above the base (plus float rounding)
                let cap = base.as_secs_f64() * (1.0 + jitter) + 1e-6;
                prop_assert!(d.as_secs_f64() <= cap, "{d:?} > {cap}");
            }
        }

        #[test]
        fn base_grows_monotonically_to_max(min_ms in 1u64..10_000, extra_ms in 0u64..600_000) {
            let b = ExponentialBackoff::try_new(ms(min_ms), ms(min_ms + extra_ms), 0.0).unwrap();
            let mut prev = Duration::ZERO;
            for i in 0..64 {
                let base = b.base(i);
                prop_assert!(base >= prev);
                if prev < b.max() && i > 0 {
                    prop_assert!(base == b.max() || base == prev * 2);
                }
                prev = base;
            }
            prop_assert_eq!(prev, b.max());
        }

        #[test]
        fn reset_replays_the_base_sequence(seed in any::<u64>(), k in 0usize..40) {
            let b = ExponentialBackoff::try_new(ms(5), ms(5_000), 0.0).unwrap();
            let mut s = b.stream_with_seed(seed);
            let first: Vec<_> = s.by_ref().take(10).collect();
            for _ in 0..k { s.next_delay(); }
            s.reset();
            let again: Vec<_> = s.take(10).collect();
            prop_assert_eq!(first, again);
        }
    }
}
