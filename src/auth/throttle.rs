//! Failed-login throttling. Each failure spends one unit of a GCRA allowance (governor) that
//! refills over the configured window; once a key has spent it, that key is refused until it
//! has earned one back — without even checking the password, so guessing gains nothing.
//!
//! Two keys, so that the colleagues of someone who mistypes are not locked out with her when
//! a village office shares one address behind NAT:
//! - a username *at* an address (`max_failures_per_user`): one person's typos block only her,
//!   and only from there;
//! - the address (`max_failures_per_address`), spent by failures for usernames that do not
//!   exist and by the first failure of each further username: guessing across many names
//!   from one place blocks the place;
//! - and, as a backstop against guessing one account from many addresses, the username
//!   everywhere after ten times its per-address allowance.

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
    window: Duration,
    by_user: DefaultKeyedRateLimiter<(String, IpAddr)>,
    by_user_anywhere: DefaultKeyedRateLimiter<String>,
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    /// When each (username, address) last failed: a username failing again within the
    /// window does not spend the address's allowance again.
    recent: Mutex<HashMap<(String, IpAddr), Instant>>,
    blocked: Mutex<HashMap<Key, Instant>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    User(String, IpAddr),
    UserAnywhere(String),
    Address(IpAddr),
}

impl LoginThrottle {
    pub fn new(settings: &AuthSettings) -> Self {
        let window = Duration::from_secs(settings.failure_window_secs.max(1));
        Self {
            clock: DefaultClock::default(),
            window,
            by_user: RateLimiter::keyed(quota(settings.max_failures_per_user, window)),
            by_user_anywhere: RateLimiter::keyed(quota(
                settings
                    .max_failures_per_user
                    .saturating_mul(ACROSS_ADDRESSES),
                window,
            )),
            by_address: RateLimiter::keyed(quota(settings.max_failures_per_address, window)),
            recent: Mutex::new(HashMap::new()),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses the attempt when the username at this address, or the address, is throttled.
    pub fn check(&self, username: &str, address: IpAddr) -> AppResult<()> {
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let wait = [
            Key::User(username.to_owned(), address),
            Key::UserAnywhere(username.to_owned()),
            Key::Address(address),
        ]
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

    /// Records a failed login for `username` (`known`: whether such a user exists) from
    /// `address`; refuses (and blocks) when an allowance is spent.
    pub fn record_failure(&self, username: &str, known: bool, address: IpAddr) -> AppResult<()> {
        let pair = (username.to_owned(), address);
        let now = Instant::now();
        let repeated = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pair.clone(), now)
            .is_some_and(|last| now.duration_since(last) < self.window);
        let mut results = vec![(
            Key::User(pair.0.clone(), address),
            self.by_user.check_key(&pair).err(),
        )];
        if known {
            results.push((
                Key::UserAnywhere(pair.0.clone()),
                self.by_user_anywhere.check_key(&pair.0).err(),
            ));
        }
        if !known || !repeated {
            results.push((
                Key::Address(address),
                self.by_address.check_key(&address).err(),
            ));
        }
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
        self.by_user_anywhere.retain_recent();
        self.by_address.retain_recent();
        let now = Instant::now();
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, last| now.duration_since(*last) < self.window);
        self.blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, until| *until > now);
    }
}

/// How many per-address allowances one username has in all before it is throttled from
/// everywhere.
const ACROSS_ADDRESSES: u32 = 10;

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

    fn throttle(per_user: u32, per_address: u32) -> LoginThrottle {
        LoginThrottle::new(&AuthSettings {
            max_failures_per_user: per_user,
            max_failures_per_address: per_address,
            failure_window_secs: 600,
            ..AuthSettings::default()
        })
    }

    #[test]
    fn a_username_is_blocked_at_its_address_after_its_allowance_and_others_are_not() {
        let throttle = throttle(3, 100);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let elsewhere: IpAddr = "10.9.9.9".parse().unwrap();
        for _ in 0..3 {
            throttle.check("zhang", ip).unwrap();
            throttle.record_failure("zhang", true, ip).unwrap();
        }
        let err = throttle.record_failure("zhang", true, ip).unwrap_err();
        let AppError::TooManyRequests { retry_after } = err else {
            panic!("{err:?}")
        };
        assert!(retry_after > Duration::from_secs(100) && retry_after <= Duration::from_secs(200));
        assert!(throttle.check("zhang", ip).is_err());
        assert!(throttle.check("li", ip).is_ok());
        assert!(throttle.check("zhang", elsewhere).is_ok());
    }

    #[test]
    fn one_account_guessed_from_many_addresses_is_throttled_everywhere() {
        let throttle = throttle(2, 100);
        let mut refused = 0;
        for i in 0..=40u8 {
            let ip = IpAddr::from([10, 0, 1, i]);
            for _ in 0..2 {
                if throttle.record_failure("zhang", true, ip).is_err() {
                    refused += 1;
                }
            }
        }
        assert!(refused > 0);
        assert!(
            throttle
                .check("zhang", "10.9.9.9".parse().unwrap())
                .is_err()
        );
        assert!(throttle.check("li", "10.9.9.9".parse().unwrap()).is_ok());
    }

    #[test]
    fn one_person_mistyping_does_not_spend_the_address() {
        let throttle = throttle(5, 3);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..25 {
            let _ = throttle.record_failure("zhang", true, ip);
        }
        assert!(throttle.check("li", ip).is_ok());
        // Unknown usernames spend the address every time.
        for name in ["x1", "x2"] {
            throttle.record_failure(name, false, ip).unwrap();
        }
        assert!(throttle.record_failure("x3", false, ip).is_err());
        assert!(throttle.check("li", ip).is_err());
    }
}
