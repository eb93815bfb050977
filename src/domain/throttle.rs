//! Login throttling as a pure rule: every password attempt on an account is
//! counted as a failure until it proves right; after a few free failures the
//! account only accepts a comparison after a back-off that doubles, and after
//! many it is locked for a while. Never permanently: the lock expires, and
//! the count resets after a quiet period or a success.

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures that cost nothing (typos happen).
    pub free_failures: u32,
    /// Back-off after the last free failure; doubles with each failure.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Consecutive failures after which a comparison locks the account.
    pub lock_after: u32,
    pub lock_for: Duration,
    /// A quiet period after which the count starts again from zero.
    pub reset_after: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            free_failures: 5,
            backoff_initial: Duration::seconds(1),
            backoff_max: Duration::seconds(60),
            lock_after: 20,
            lock_for: Duration::minutes(15),
            reset_after: Duration::hours(12),
        }
    }
}

/// What the database keeps per account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginState {
    pub failures: u32,
    pub last_failed_at: Option<DateTime<Utc>>,
    pub throttled_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The password may be compared.
    Compare,
    /// No comparison until then; the answer is the generic failure.
    Throttled { until: DateTime<Utc> },
}

impl ThrottlePolicy {
    /// How long an account waits after its `failures`-th consecutive failure.
    pub fn delay_after(&self, failures: u32) -> Option<Duration> {
        if failures >= self.lock_after {
            return Some(self.lock_for);
        }
        let step = failures.checked_sub(self.free_failures)?;
        let factor = 1i32.checked_shl(step.min(30)).unwrap_or(i32::MAX);
        Some((self.backoff_initial * factor).min(self.backoff_max))
    }

    /// Counts one attempt and decides whether it may compare the password.
    /// The caller stores the returned state atomically with the decision.
    pub fn attempt(&self, state: &LoginState, now: DateTime<Utc>) -> (LoginState, Gate) {
        let quiet = state.last_failed_at.is_none_or(|t| now - t >= self.reset_after);
        let mut next = if quiet { LoginState::default() } else { state.clone() };
        next.failures = next.failures.saturating_add(1);
        next.last_failed_at = Some(now);
        if let Some(until) = next.throttled_until.filter(|u| *u > now) {
            return (next, Gate::Throttled { until });
        }
        next.throttled_until = self.delay_after(next.failures).map(|d| now + d);
        (next, Gate::Compare)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(1_800_000_000 + secs)
    }

    #[test]
    fn five_failures_are_free_then_the_back_off_doubles_up_to_a_minute() {
        let policy = ThrottlePolicy::default();
        let delays: Vec<i64> = (1..=12).map(|n| policy.delay_after(n).map_or(0, |d| d.num_seconds())).collect();
        assert_eq!(delays, [0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(policy.delay_after(20), Some(Duration::minutes(15)));
    }

    #[test]
    fn a_burst_gets_exactly_the_free_comparisons() {
        let policy = ThrottlePolicy::default();
        let mut state = LoginState::default();
        let mut compared = 0;
        for _ in 0..200 {
            let (next, gate) = policy.attempt(&state, at(0));
            state = next;
            compared += usize::from(gate == Gate::Compare);
        }
        assert_eq!(compared, 5);
        assert_eq!(state.failures, 200);
    }

    #[test]
    fn the_lock_expires_and_a_quiet_period_resets_the_count() {
        let policy = ThrottlePolicy::default();
        let state = LoginState { failures: 25, last_failed_at: Some(at(0)), throttled_until: Some(at(900)) };
        assert!(matches!(policy.attempt(&state, at(899)).1, Gate::Throttled { .. }));
        assert_eq!(policy.attempt(&state, at(900)).1, Gate::Compare, "never permanent");
        let (fresh, gate) = policy.attempt(&state, at(12 * 3600));
        assert_eq!((fresh.failures, gate), (1, Gate::Compare));
    }

    proptest! {
        #[test]
        fn a_throttled_attempt_never_moves_the_end_of_the_throttle(gaps in prop::collection::vec(0i64..120, 1..60)) {
            let policy = ThrottlePolicy::default();
            let (mut state, mut now) = (LoginState::default(), 0);
            for gap in gaps {
                now += gap;
                let (next, gate) = policy.attempt(&state, at(now));
                if let Gate::Throttled { until } = gate {
                    prop_assert_eq!(next.throttled_until, Some(until));
                    prop_assert!(until > at(now));
                }
                prop_assert!(next.failures >= 1);
                state = next;
            }
        }
    }
}
