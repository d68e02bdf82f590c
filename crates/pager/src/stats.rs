//! What the pager counts: faults by kind, pages and bytes moved, what prefetch and eviction
//! did, and how long faults took to serve.

use std::time::Duration;

/// Fault service times in power-of-two buckets of nanoseconds.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    buckets: [u64; 32],
    count: u64,
}

impl Histogram {
    pub fn record(&mut self, took: Duration) {
        let ns = took.as_nanos().max(1) as u64;
        let bucket = (63 - ns.leading_zeros() as usize).min(self.buckets.len() - 1);
        self.buckets[bucket] += 1;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The time below which `q` (0..=1) of the samples fall, to the bucket's upper edge.
    pub fn quantile(&self, q: f64) -> Duration {
        let want = (self.count as f64 * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Duration::from_nanos(2u64 << i);
            }
        }
        Duration::ZERO
    }
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Missing pages read back from swap.
    pub major_faults: u64,
    /// Missing pages that had never been written: filled with zeros, no I/O.
    pub zero_faults: u64,
    /// First writes to clean pages (the page becomes dirty).
    pub write_faults: u64,
    /// Pages read from swap (faulting pages and prefetched ones).
    pub pages_in: u64,
    /// Pages written to swap (dirty pages evicted).
    pub pages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Pages brought in ahead of a fault.
    pub prefetched: u64,
    /// Prefetched pages the access stream then went through without faulting.
    pub prefetch_hits: u64,
    /// Pages evicted.
    pub evicted: u64,
    /// Evicted without writing: clean pages whose slot still held them.
    pub clean_drops: u64,
    /// Evicted without writing: pages that held nothing but zeros.
    pub zero_drops: u64,
    /// Faults that could not be served (I/O error, checksum mismatch): the access got SIGBUS.
    pub poisoned: u64,
    /// Evictions that could not write their pages (no free slot, an I/O error): the pages
    /// stayed in memory, over the budget.
    pub swap_out_failures: u64,
    /// Pages resident now, and the most ever.
    pub resident: u64,
    pub peak_resident: u64,
    pub latency: Histogram,
}
