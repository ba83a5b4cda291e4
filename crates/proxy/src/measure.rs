//! Lock-free measurements the admin API exports: latency histograms with
//! fixed buckets (Prometheus style) and byte counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (the last bucket is +Inf).
pub const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

const BOUNDS_NS: [u64; 14] = {
    let mut b = [0u64; 14];
    let mut i = 0;
    while i < 14 {
        b[i] = (BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    b
};

/// Durations counted into [`BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last is above every bound.
    counts: [AtomicU64; 15],
    sum_ns: AtomicU64,
}

/// A histogram as Prometheus shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, cumulative count), without +Inf.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        let i = BOUNDS_NS.iter().position(|&b| ns <= b).unwrap_or(BOUNDS_NS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(BUCKETS.len());
        for (i, bound) in BUCKETS.iter().enumerate() {
            total += self.counts[i].load(Ordering::Relaxed);
            buckets.push((*bound, total));
        }
        total += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        HistogramSnapshot { buckets, count: total, sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9 }
    }
}

impl HistogramSnapshot {
    /// Adds `other`'s counts (same buckets) to this one.
    pub fn add(&mut self, other: &HistogramSnapshot) {
        if self.buckets.is_empty() {
            *self = other.clone();
            return;
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            a.1 += b.1;
        }
        self.count += other.count;
        self.sum_seconds += other.sum_seconds;
    }
}

/// Bytes through the proxy, process-wide. Sessions count locally and add
/// here when a transaction ends, so the hot path touches no shared line
/// per message.
#[derive(Debug, Default)]
pub struct Traffic {
    /// From clients to servers.
    pub client_bytes: AtomicU64,
    /// From servers to clients.
    pub server_bytes: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets[0], (0.0005, 2), "bounds are inclusive");
        assert_eq!(s.buckets[3], (0.005, 3));
        assert_eq!(s.buckets.last(), Some(&(10.0, 3)), "60 s only in +Inf");
        assert!((s.sum_seconds - 60.0036).abs() < 1e-9, "{}", s.sum_seconds);
        let mut total = HistogramSnapshot { buckets: vec![], count: 0, sum_seconds: 0.0 };
        total.add(&s);
        total.add(&s);
        assert_eq!((total.count, total.buckets[0].1), (8, 4));
    }
}
