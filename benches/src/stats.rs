//! Latency histograms, error tallies and delivery bitmaps.

use std::collections::BTreeMap;
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency histogram in microseconds (3 significant digits, grows as needed).
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new(3).expect("3 significant digits is valid"))
    }
}

impl Latency {
    pub fn record_us(&mut self, us: u64) {
        // Auto-resizing histogram: recording only fails for absurd values; clamp to 1 h.
        let _ = self.0.record(us.clamp(1, 3_600_000_000));
    }

    pub fn merge(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn summary_ms(&self) -> LatencySummary {
        let ms = |us: u64| round3(us as f64 / 1000.0);
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.0.len(),
            p50: ms(self.0.value_at_quantile(0.50)),
            p90: ms(self.0.value_at_quantile(0.90)),
            p99: ms(self.0.value_at_quantile(0.99)),
            max: ms(self.0.max()),
            mean: ms(self.0.mean() as u64),
        }
    }

    /// A compact cumulative distribution in milliseconds: `[quantile, ms]` pairs at
    /// [`CDF_QUANTILES`] (dense up to 0.9, then spaced to show the tail), the last one
    /// `[1.0, max]`. Values never decrease. Empty when nothing was recorded.
    pub fn cdf_ms(&self) -> Vec<[f64; 2]> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let mut last = 0.0_f64;
        CDF_QUANTILES
            .iter()
            .map(|&q| {
                let us = if q >= 1.0 { self.0.max() } else { self.0.value_at_quantile(q) };
                // value_at_quantile never decreases with q; the max() keeps it so after rounding.
                last = last.max(round3(us as f64 / 1000.0));
                [q, last]
            })
            .collect()
    }
}

/// The quantiles of [`Latency::cdf_ms`]: 0.01, then every 0.02 up to 0.90, then the tail.
pub const CDF_QUANTILES: [f64; 54] = {
    let mut q = [0.0; 54];
    q[0] = 0.01;
    let mut i = 1;
    while i <= 45 {
        q[i] = (2 * i) as f64 / 100.0;
        i += 1;
    }
    let tail = [0.925, 0.95, 0.975, 0.99, 0.995, 0.999, 0.9999, 1.0];
    let mut j = 0;
    while j < tail.len() {
        q[46 + j] = tail[j];
        j += 1;
    }
    q
};

#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// A latency histogram shared by many tasks: a few mutex-guarded shards so concurrent
/// recorders rarely contend, merged at the end.
pub struct SharedLatency {
    shards: Vec<Mutex<Latency>>,
}

impl SharedLatency {
    pub fn new(shards: usize) -> Self {
        SharedLatency { shards: (0..shards.max(1)).map(|_| Mutex::new(Latency::default())).collect() }
    }

    pub fn record_us(&self, shard_key: usize, us: u64) {
        let shard = &self.shards[shard_key % self.shards.len()];
        shard.lock().unwrap_or_else(|p| p.into_inner()).record_us(us);
    }

    pub fn merged(&self) -> Latency {
        let mut all = Latency::default();
        for s in &self.shards {
            all.merge(&s.lock().unwrap_or_else(|p| p.into_inner()));
        }
        all
    }
}

/// Counts of error frames (or failures) by code.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct ErrorCounts(pub BTreeMap<String, u64>);

impl ErrorCounts {
    pub fn add(&mut self, code: &str) {
        *self.0.entry(code.to_owned()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &ErrorCounts) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// A growable bitmap of sequence numbers.
#[derive(Debug, Clone, Default)]
pub struct SeqSet(Vec<u64>);

impl SeqSet {
    /// Sets `seq`; returns false if it was already set (a duplicate).
    pub fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let had = self.0[word] & (1 << bit) != 0;
        self.0[word] |= 1 << bit;
        !had
    }

    pub fn len(&self) -> u64 {
        self.0.iter().map(|w| w.count_ones() as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many members are also in `other`.
    pub fn intersection_len(&self, other: &SeqSet) -> u64 {
        self.0.iter().zip(&other.0).map(|(a, b)| (a & b).count_ones() as u64).sum()
    }
}

/// Rounds to 3 decimals for readable JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqset_counts_duplicates_and_intersections() {
        let mut a = SeqSet::default();
        assert!(a.insert(3));
        assert!(!a.insert(3));
        assert!(a.insert(130));
        let mut b = SeqSet::default();
        b.insert(3);
        b.insert(4);
        assert_eq!(a.len(), 2);
        assert_eq!(a.intersection_len(&b), 1);
        assert_eq!(b.intersection_len(&a), 1);
    }

    #[test]
    fn latency_summary_is_in_ms() {
        let mut l = Latency::default();
        for us in [1000, 2000, 3000] {
            l.record_us(us);
        }
        let s = l.summary_ms();
        assert_eq!(s.count, 3);
        assert!((s.max - 3.0).abs() < 0.01);
    }

    #[test]
    fn cdf_is_monotone_and_ends_at_max() {
        let mut l = Latency::default();
        assert!(l.cdf_ms().is_empty());
        // A long tail: 10 000 values from 100 µs to ~1 s, squared to skew them.
        for i in 1..=10_000u64 {
            l.record_us(100 + i * i / 100);
        }
        let cdf = l.cdf_ms();
        assert_eq!(cdf.len(), CDF_QUANTILES.len());
        assert!((40..=60).contains(&cdf.len()), "about 50 points, got {}", cdf.len());
        for w in cdf.windows(2) {
            assert!(w[0][0] < w[1][0], "quantiles rise: {w:?}");
            assert!(w[0][1] <= w[1][1], "values never fall: {w:?}");
        }
        let [q_last, ms_last] = *cdf.last().unwrap();
        assert_eq!(q_last, 1.0);
        assert_eq!(ms_last, l.summary_ms().max);
        let p99 = cdf.iter().find(|p| p[0] == 0.99).unwrap()[1];
        assert_eq!(p99, l.summary_ms().p99);
        assert!(cdf[0][1] < p99 && p99 < ms_last);
    }
}
