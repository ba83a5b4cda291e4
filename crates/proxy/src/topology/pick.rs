//! Choosing a read node: `weighted_random`, `round_robin`,
//! `least_outstanding` and `latency`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pgbalancer_config::LoadBalance;
use rand::Rng;

use super::{Node, RouteTable};

/// One in this many `latency` picks is weighted-random instead, so a node
/// that was slow once gets new samples and can win again.
const EXPLORE_ONE_IN: u32 = 20;

/// Round-robin position (shared by every session).
#[derive(Debug, Default)]
pub struct Picker {
    turn: AtomicUsize,
}

impl Picker {
    /// A read node among `table.readers` that `accept` allows, by
    /// `algorithm`; `None` when no reader is acceptable.
    pub fn pick(
        &self,
        algorithm: LoadBalance,
        table: &RouteTable,
        nodes: &[Arc<Node>],
        accept: impl Fn(&Node) -> bool,
    ) -> Option<usize> {
        let ok = |&&(id, _): &&(usize, u32)| accept(&nodes[id]);
        let total: u64 = table.readers.iter().filter(ok).map(|&(_, w)| w as u64).sum();
        if total == 0 {
            return None;
        }
        match algorithm {
            LoadBalance::WeightedRandom => Some(weighted(table, &ok, rand::thread_rng().gen_range(0..total))),
            LoadBalance::RoundRobin => {
                let at = self.turn.fetch_add(1, Ordering::Relaxed) as u64 % total;
                Some(weighted(table, &ok, at))
            }
            LoadBalance::LeastOutstanding => {
                self.best(table, &ok, |id, w| (nodes[id].outstanding() as u128 * SCALE) / w as u128)
            }
            LoadBalance::Latency => {
                let mut rng = rand::thread_rng();
                if rng.gen_ratio(1, EXPLORE_ONE_IN) {
                    return Some(weighted(table, &ok, rng.gen_range(0..total)));
                }
                self.best(table, &ok, |id, w| {
                    let n = &nodes[id];
                    // A node without samples yet goes first, to get one.
                    let ewma = n.ewma().map_or(0, |d| d.as_nanos());
                    ewma * (n.outstanding() as u128 + 1) * SCALE / w as u128
                })
            }
        }
    }

    /// The acceptable reader with the lowest score; ties go round in turn,
    /// so equal nodes share the work.
    fn best(
        &self,
        table: &RouteTable,
        ok: &impl Fn(&&(usize, u32)) -> bool,
        score: impl Fn(usize, u32) -> u128,
    ) -> Option<usize> {
        let n = table.readers.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(u128, usize)> = None;
        for k in 0..n {
            let entry = &table.readers[(start + k) % n];
            if !ok(&entry) {
                continue;
            }
            let s = score(entry.0, entry.1);
            if best.is_none_or(|(b, _)| s < b) {
                best = Some((s, entry.0));
            }
        }
        best.map(|(_, id)| id)
    }
}

/// Fixed-point scale for scores divided by weight.
const SCALE: u128 = 1 << 16;

/// The reader whose weight range holds `at` (0 ≤ at < total of accepted weights).
fn weighted(table: &RouteTable, ok: &impl Fn(&&(usize, u32)) -> bool, mut at: u64) -> usize {
    let mut last = table.readers[0].0;
    for entry in table.readers.iter().filter(ok) {
        last = entry.0;
        if at < entry.1 as u64 {
            return entry.0;
        }
        at -= entry.1 as u64;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::super::{Primary, Topology};
    use super::*;
    use pgbalancer_config::{BackendConfig, BackendRole, Config};
    use std::time::Duration;

    fn topology(weights: &[u32]) -> Topology {
        let mut c = Config { health_check_period: Duration::ZERO, primary_reads: false, ..Config::default() };
        c.backends = vec![BackendConfig { port: 5000, role: BackendRole::Primary, ..BackendConfig::default() }];
        for (i, &w) in weights.iter().enumerate() {
            c.backends.push(BackendConfig {
                port: 5001 + i as u16,
                role: BackendRole::Replica,
                weight: w,
                ..BackendConfig::default()
            });
        }
        Topology::new(&c)
    }

    fn counts(t: &Topology, algo: LoadBalance, n: usize) -> Vec<usize> {
        let mut counts = vec![0; t.nodes().len()];
        for _ in 0..n {
            let id = t.picker.pick(algo, &t.table(), t.nodes(), |_| true).unwrap();
            counts[id] += 1;
        }
        counts
    }

    #[test]
    fn table_has_primary_and_weighted_readers() {
        let t = topology(&[1, 0, 3]);
        let table = t.table();
        assert_eq!(table.primary, Primary::Node(0));
        assert_eq!(table.readers, vec![(1, 1), (3, 3)], "weight 0 takes a node out; the primary reads not");
    }

    #[test]
    fn round_robin_goes_in_turn_by_weight() {
        let t = topology(&[1, 3]);
        assert_eq!(counts(&t, LoadBalance::RoundRobin, 400), vec![0, 100, 300]);
        let t = topology(&[1, 1]);
        let seq: Vec<usize> =
            (0..6).map(|_| t.picker.pick(LoadBalance::RoundRobin, &t.table(), t.nodes(), |_| true).unwrap()).collect();
        assert!(seq.windows(2).all(|w| w[0] != w[1]), "alternates: {seq:?}");
    }

    #[test]
    fn weighted_random_follows_weights() {
        let t = topology(&[1, 3]);
        let c = counts(&t, LoadBalance::WeightedRandom, 4000);
        assert_eq!(c[0], 0);
        assert!((700..1300).contains(&c[1]), "{c:?}");
        assert!((2700..3300).contains(&c[2]), "{c:?}");
    }

    #[test]
    fn least_outstanding_avoids_busy_nodes() {
        let t = topology(&[1, 1]);
        let busy = t.nodes()[1].begin(true);
        for _ in 0..10 {
            assert_eq!(t.picker.pick(LoadBalance::LeastOutstanding, &t.table(), t.nodes(), |_| true), Some(2));
        }
        drop(busy);
        let c = counts(&t, LoadBalance::LeastOutstanding, 100);
        assert_eq!(c, vec![0, 50, 50], "equal nodes share");
    }

    #[test]
    fn latency_prefers_the_fast_node_but_explores() {
        let t = topology(&[1, 1]);
        t.nodes()[1].observe_latency(Duration::from_millis(50));
        t.nodes()[2].observe_latency(Duration::from_millis(1));
        let c = counts(&t, LoadBalance::Latency, 2000);
        assert!(c[2] > 1800, "fast node gets most: {c:?}");
        assert!(c[1] > 10, "slow node still sampled: {c:?}");
    }

    #[test]
    fn accept_filters_readers() {
        let t = topology(&[1, 1]);
        for algo in
            [LoadBalance::WeightedRandom, LoadBalance::RoundRobin, LoadBalance::LeastOutstanding, LoadBalance::Latency]
        {
            for _ in 0..50 {
                assert_eq!(t.picker.pick(algo, &t.table(), t.nodes(), |n| n.id == 2), Some(2));
            }
            assert_eq!(t.picker.pick(algo, &t.table(), t.nodes(), |_| false), None);
        }
    }

    #[test]
    fn detach_and_force_primary_rebuild_the_table() {
        let t = topology(&[1, 1]);
        t.detach(1);
        assert_eq!(t.table().readers, vec![(2, 1)]);
        t.attach(1);
        t.force_primary(Some(2));
        assert_eq!(t.table().primary, Primary::Node(0), "a node in recovery never takes the writes");
        t.nodes()[2].observed.store(0, std::sync::atomic::Ordering::Relaxed);
        t.force_primary(Some(2));
        assert_eq!(t.table().primary, Primary::Node(2), "the operator's word, once it is not a replica");
        t.detach(0);
        t.force_primary(None);
        assert_eq!(t.table().primary, Primary::None);
    }
}
