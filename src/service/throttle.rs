//! Per-source throttling of failed authentications: a fixed one-minute
//! window per address, kept in this instance's memory. It bounds password
//! spraying across many accounts from one address; the per-account counter
//! (in the database, shared by all instances) bounds guessing on one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Beyond this many tracked addresses, expired windows are swept.
const SWEEP_AT: usize = 10_000;

#[derive(Debug)]
pub struct SourceLimiter {
    max_failures: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl SourceLimiter {
    pub fn new(max_failures_per_minute: u32) -> Self {
        Self { max_failures: max_failures_per_minute, windows: Mutex::new(HashMap::new()) }
    }

    /// `Err(seconds)` when the address has used up its failures for now.
    pub fn check(&self, source: Option<IpAddr>) -> Result<(), u64> {
        let Some(source) = source else { return Ok(()) };
        let windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match windows.get(&source) {
            Some((start, count)) if *count >= self.max_failures && start.elapsed() < WINDOW => {
                Err(WINDOW.saturating_sub(start.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    pub fn record_failure(&self, source: Option<IpAddr>) {
        let Some(source) = source else { return };
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, (start, _)| start.elapsed() < WINDOW);
        }
        let entry = windows.entry(source).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_failures_and_others_are_not() {
        let limiter = SourceLimiter::new(3);
        let (a, b) = (Some(IpAddr::from([10, 0, 0, 1])), Some(IpAddr::from([10, 0, 0, 2])));
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
            limiter.record_failure(a);
        }
        assert!(limiter.check(a).is_err_and(|secs| (1..=60).contains(&secs)));
        assert!(limiter.check(b).is_ok());
    }
}
