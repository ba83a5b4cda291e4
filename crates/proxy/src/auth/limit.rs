//! Per-source limiting of failed logins (`auth_failure_limit` within
//! `auth_failure_window`): once a source failed that often within one
//! window, its logins are refused without an exchange until the window
//! after the last counted failure has passed.
//!
//! A source is an IPv4 address, or an IPv6 /64 (one host usually holds a
//! whole /64; counting single addresses would let it try 2^64 times). An
//! IPv4-mapped IPv6 address counts as its IPv4 address.
//!
//! Memory is bounded: at most [`MAX_SOURCES`] sources are tracked; when the
//! table is full, sources whose window is over are dropped, and if none is,
//! the one whose window started longest ago.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most sources tracked at once (each entry is a few dozen bytes).
pub const MAX_SOURCES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    /// The first 64 bits.
    V6(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.into()),
                None => Source::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

impl Entry {
    fn expired(&self, now: Instant, window: Duration) -> bool {
        self.blocked_until.is_none_or(|t| t <= now) && now.saturating_duration_since(self.window_start) >= window
    }
}

/// Failed logins per source. Locked for a few instructions per login.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    sources: Mutex<HashMap<Source, Entry>>,
}

impl FailureLimiter {
    /// `Err(time left)` while `ip`'s source is blocked.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        match sources.get(&Source::of(ip)).and_then(|e| e.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts a failed login from `ip`; returns true when this failure
    /// blocked the source (`limit` failures within `window`). `limit` 0
    /// counts nothing.
    pub fn failure(&self, ip: IpAddr, limit: u32, window: Duration, now: Instant) -> bool {
        if limit == 0 {
            return false;
        }
        let source = Source::of(ip);
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if !sources.contains_key(&source) && sources.len() >= MAX_SOURCES {
            sources.retain(|_, e| !e.expired(now, window));
            if sources.len() >= MAX_SOURCES {
                let oldest = sources.iter().min_by_key(|(_, e)| e.window_start).map(|(s, _)| *s);
                if let Some(s) = oldest {
                    sources.remove(&s);
                }
            }
        }
        let e = sources.entry(source).or_insert(Entry { window_start: now, failures: 0, blocked_until: None });
        if e.expired(now, window) {
            *e = Entry { window_start: now, failures: 0, blocked_until: None };
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= limit {
            let newly = e.blocked_until.is_none_or(|t| t <= now);
            e.blocked_until = Some(now + window);
            // The next window starts when the block ends.
            e.window_start = now;
            e.failures = 0;
            return newly;
        }
        false
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.sources.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const W: Duration = Duration::from_secs(60);

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn blocks_after_the_limit_within_the_window() {
        let l = FailureLimiter::default();
        let t = Instant::now();
        assert!(!l.failure(v4(1), 3, W, t));
        assert!(!l.failure(v4(1), 3, W, t + Duration::from_secs(1)));
        assert_eq!(l.check(v4(1), t + Duration::from_secs(2)), Ok(()));
        assert!(l.failure(v4(1), 3, W, t + Duration::from_secs(2)), "the third failure blocks");
        let left = l.check(v4(1), t + Duration::from_secs(3)).unwrap_err();
        assert_eq!(left, W - Duration::from_secs(1));
        assert_eq!(l.check(v4(2), t + Duration::from_secs(3)), Ok(()), "other sources are not affected");
        assert_eq!(l.check(v4(1), t + Duration::from_secs(62)), Ok(()), "the block ends");
    }

    #[test]
    fn failures_spread_over_windows_do_not_block() {
        let l = FailureLimiter::default();
        let t = Instant::now();
        for i in 0..10u64 {
            assert!(!l.failure(v4(1), 3, W, t + Duration::from_secs(i * 31)), "failure {i}");
        }
        assert_eq!(l.check(v4(1), t + Duration::from_secs(400)), Ok(()));
        // Limit 0: nothing is counted.
        assert!(!l.failure(v4(9), 0, W, t));
        assert_eq!(l.check(v4(9), t), Ok(()));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_as_ipv4() {
        let l = FailureLimiter::default();
        let t = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::7".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(!l.failure(a, 2, W, t));
        assert!(l.failure(b, 2, W, t), "same /64");
        assert!(l.check(a, t).is_err());
        assert_eq!(l.check(other, t), Ok(()));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert!(!l.failure(mapped, 2, W, t));
        assert!(l.failure(v4(1), 2, W, t));
        assert!(l.check(mapped, t).is_err());
        assert_eq!(l.check(IpAddr::V6(Ipv6Addr::LOCALHOST), t), Ok(()));
    }

    #[test]
    fn memory_is_bounded() {
        let l = FailureLimiter::default();
        let t = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 5000) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
            l.failure(ip, 1000, W, t + Duration::from_millis(u64::from(i)));
            assert!(l.len() <= MAX_SOURCES);
        }
        assert_eq!(l.len(), MAX_SOURCES);
        // Blocked sources survive the churn of new ones while others expire.
        let l = FailureLimiter::default();
        assert!(l.failure(v4(1), 1, W, t));
        for i in 0..(MAX_SOURCES as u32 * 2) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0c00_0000 + i));
            l.failure(ip, 1000, Duration::from_millis(1), t + Duration::from_millis(u64::from(i) + 10));
        }
        assert!(l.len() <= MAX_SOURCES);
        assert!(l.check(v4(1), t + Duration::from_secs(1)).is_err(), "the blocked source is still blocked");
    }
}
