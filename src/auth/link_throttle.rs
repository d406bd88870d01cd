//! The per-address limit on residents' link codes that open nothing (unknown, or their
//! campaign closed): a resident who mistypes a link a few times is never stopped, walking
//! through codes is.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Codes that open nothing, allowed from one address in [`MISS_WINDOW`] (a resident who
/// mistypes a link a few times is never stopped; walking through codes is).
const MISSES: u32 = 10;
const MISS_WINDOW: Duration = Duration::from_secs(600);

/// Counts, per client address, the link codes that opened nothing.
pub struct LinkThrottle {
    clock: DefaultClock,
    misses: DefaultKeyedRateLimiter<IpAddr>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl Default for LinkThrottle {
    fn default() -> Self {
        let burst = NonZeroU32::new(MISSES).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(MISS_WINDOW / MISSES)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            clock: DefaultClock::default(),
            misses: RateLimiter::keyed(quota),
            blocked: Mutex::new(HashMap::new()),
        }
    }
}

impl LinkThrottle {
    /// How long `address` must still wait, if it is refused now.
    pub fn wait(&self, address: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let wait = blocked
            .get(&address)
            .map(|until| until.saturating_duration_since(now))
            .filter(|w| !w.is_zero());
        if wait.is_none() {
            blocked.remove(&address);
        }
        wait
    }

    /// Counts a code that opened nothing; the wait when this one spent the allowance.
    pub fn miss(&self, address: IpAddr) -> Option<Duration> {
        let refused = self.misses.check_key(&address).err()?;
        let wait = refused
            .wait_time_from(self.clock.now())
            .max(MISS_WINDOW / MISSES);
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        blocked.insert(address, Instant::now() + wait);
        // The map holds only addresses still refused.
        let now = Instant::now();
        blocked.retain(|_, until| *until > now);
        self.misses.retain_recent();
        Some(wait)
    }
}
