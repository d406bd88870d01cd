//! Failed-login throttling per username and per client address. Each failure spends one unit
//! of a GCRA allowance (governor) that refills over the configured window; once a key has
//! spent it, that key is refused until it has earned one back — without even checking the
//! password, so guessing gains nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::AuthSettings;
use crate::error::{AppError, AppResult};

pub struct LoginThrottle {
    clock: DefaultClock,
    by_user: DefaultKeyedRateLimiter<String>,
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    blocked: Mutex<HashMap<Key, Instant>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
}

impl LoginThrottle {
    pub fn new(settings: &AuthSettings) -> Self {
        let window = Duration::from_secs(settings.failure_window_secs.max(1));
        Self {
            clock: DefaultClock::default(),
            by_user: RateLimiter::keyed(quota(settings.max_failures_per_user, window)),
            by_address: RateLimiter::keyed(quota(settings.max_failures_per_address, window)),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses the attempt when either the username or the address is throttled.
    pub fn check(&self, username: &str, address: IpAddr) -> AppResult<()> {
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let wait = [Key::User(username.to_owned()), Key::Address(address)]
            .iter()
            .filter_map(|key| {
                blocked
                    .get(key)
                    .map(|until| until.saturating_duration_since(now))
            })
            .max()
            .unwrap_or_default();
        blocked.retain(|_, until| *until > now);
        if wait.is_zero() {
            Ok(())
        } else {
            Err(AppError::TooManyRequests { retry_after: wait })
        }
    }

    /// Spends one failure from both allowances; refuses (and blocks) when either is spent.
    pub fn record_failure(&self, username: &str, address: IpAddr) -> AppResult<()> {
        let user_key = username.to_owned();
        let results = [
            (
                Key::User(user_key.clone()),
                self.by_user.check_key(&user_key).err(),
            ),
            (
                Key::Address(address),
                self.by_address.check_key(&address).err(),
            ),
        ];
        let now = Instant::now();
        let mut longest = Duration::ZERO;
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        for (key, refused) in results {
            if let Some(not_until) = refused {
                let wait = not_until.wait_time_from(self.clock.now());
                blocked.insert(key, now + wait);
                longest = longest.max(wait);
            }
        }
        if longest.is_zero() {
            Ok(())
        } else {
            tracing::warn!(%address, "login throttled after repeated failures");
            Err(AppError::TooManyRequests {
                retry_after: longest,
            })
        }
    }

    /// Forgets keys whose allowance is full again; run from time to time to bound memory.
    pub fn shrink(&self) {
        self.by_user.retain_recent();
        self.by_address.retain_recent();
        let now = Instant::now();
        self.blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, until| *until > now);
    }
}

fn quota(max_failures: u32, window: Duration) -> Quota {
    let burst = NonZeroU32::new(max_failures.max(1)).unwrap_or(NonZeroU32::MIN);
    let period = window / burst.get();
    Quota::with_period(period.max(Duration::from_millis(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_is_blocked_after_its_allowance_and_others_are_not() {
        let settings = AuthSettings {
            max_failures_per_user: 3,
            max_failures_per_address: 100,
            failure_window_secs: 600,
            ..AuthSettings::default()
        };
        let throttle = LoginThrottle::new(&settings);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..3 {
            throttle.check("zhang", ip).unwrap();
            throttle.record_failure("zhang", ip).unwrap();
        }
        let err = throttle.record_failure("zhang", ip).unwrap_err();
        let AppError::TooManyRequests { retry_after } = err else {
            panic!("{err:?}")
        };
        assert!(retry_after > Duration::from_secs(100) && retry_after <= Duration::from_secs(200));
        assert!(throttle.check("zhang", ip).is_err());
        assert!(throttle.check("li", ip).is_ok());
    }
}
