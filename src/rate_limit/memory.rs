//! The in-memory limiter: one theoretical arrival time per key, in a map
//! swept of keys whose time has passed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Limiter, RateLimitDecision, RateLimitPolicy, gcra};
use crate::clock::SharedClock;
use crate::error::Result;

/// Checks between two sweeps of the map.
const SWEEP_EVERY: u64 = 4_096;

pub(super) struct MemoryLimiter {
    clock: SharedClock,
    tats: Mutex<HashMap<String, i64>>,
    checks: AtomicU64,
}

impl std::fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.tats.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("MemoryLimiter")
            .field("keys", &keys)
            .finish()
    }
}

impl MemoryLimiter {
    pub(super) fn new(clock: SharedClock) -> Self {
        MemoryLimiter {
            clock,
            tats: Mutex::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// How many keys are held (for tests of the sweep).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.tats.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl Limiter for MemoryLimiter {
    async fn check(
        &self,
        policy: &RateLimitPolicy,
        key: &str,
        cost: u32,
    ) -> Result<RateLimitDecision> {
        let now = self.clock.now().timestamp_micros();
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        // A key whose arrival time has passed is back to its full burst:
        // dropping it loses nothing, so the map holds only active keys.
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            tats.retain(|_, tat| *tat > now);
        }
        let (decision, next) = gcra(policy, tats.get(key).copied(), now, cost);
        if let Some(tat) = next {
            match tats.get_mut(key) {
                Some(slot) => *slot = tat,
                None => {
                    tats.insert(key.to_owned(), tat);
                }
            }
        }
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_keys_are_swept() {
        let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
        let limiter = MemoryLimiter::new(Arc::new(clock.clone()));
        let policy = RateLimitPolicy::per_second(10).unwrap();
        for i in 0..SWEEP_EVERY - 1 {
            limiter.check(&policy, &format!("k{i}"), 1).await.unwrap();
        }
        assert_eq!(limiter.len(), (SWEEP_EVERY - 1) as usize);
        clock.advance(chrono::Duration::from_std(Duration::from_secs(2)).unwrap());
        limiter.check(&policy, "last", 1).await.unwrap();
        assert_eq!(limiter.len(), 1);
    }
}
