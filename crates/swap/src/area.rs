//! A swap area's slots: one per page after the header, each with a reference count, handed out
//! from clusters of 256 consecutive slots (as Linux does) so swap-out writes are sequential.

use std::collections::VecDeque;

/// Slots per cluster.
pub const CLUSTER: u64 = 256;
/// The count of a slot that must never be used (the header, a bad page).
const UNUSABLE: u16 = u16::MAX;

#[derive(Debug)]
pub struct SlotMap {
    counts: Vec<u16>,
    /// Usable free slots per cluster.
    free_in: Vec<u32>,
    /// Clusters whose every usable slot is free, in order.
    free_clusters: VecDeque<u64>,
    /// The cluster being filled and the next slot to try in it.
    current: Option<(u64, u64)>,
    used: u64,
    usable: u64,
}

impl SlotMap {
    /// Slots for an area of `pages` pages; page 0 (the header) and `bad` pages are unusable.
    pub fn new(pages: u64, bad: &[u32]) -> Self {
        let mut counts = vec![0u16; pages as usize];
        counts[0] = UNUSABLE;
        for b in bad.iter().filter(|b| u64::from(**b) < pages) {
            counts[*b as usize] = UNUSABLE;
        }
        let clusters = pages.div_ceil(CLUSTER);
        let free_in: Vec<u32> = (0..clusters)
            .map(|c| {
                counts[(c * CLUSTER) as usize..((c + 1) * CLUSTER).min(pages) as usize]
                    .iter()
                    .filter(|n| **n == 0)
                    .count() as u32
            })
            .collect();
        let full =
            |c: u64| free_in[c as usize] as u64 == ((c + 1) * CLUSTER).min(pages) - c * CLUSTER;
        let free_clusters = (0..clusters).filter(|c| full(*c) || *c == 0).collect();
        let usable = free_in.iter().map(|n| u64::from(*n)).sum();
        SlotMap {
            counts,
            free_in,
            free_clusters,
            current: None,
            used: 0,
            usable,
        }
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn usable(&self) -> u64 {
        self.usable
    }

    /// A free slot, taken with a count of one; None when the area is full.
    pub fn allocate(&mut self) -> Option<u64> {
        if self.used == self.usable {
            return None;
        }
        let slot = self
            .next_in_current()
            .or_else(|| self.next_in_free_cluster())
            .or_else(|| self.scan())?;
        self.take(slot);
        Some(slot)
    }

    fn next_in_current(&mut self) -> Option<u64> {
        let (cluster, mut next) = self.current?;
        let end = ((cluster + 1) * CLUSTER).min(self.counts.len() as u64);
        while next < end && self.counts[next as usize] != 0 {
            next += 1;
        }
        if next < end {
            self.current = Some((cluster, next + 1));
            Some(next)
        } else {
            self.current = None;
            None
        }
    }

    fn next_in_free_cluster(&mut self) -> Option<u64> {
        while let Some(cluster) = self.free_clusters.pop_front() {
            if self.free_in[cluster as usize] > 0 {
                self.current = Some((cluster, cluster * CLUSTER));
                return self.next_in_current();
            }
        }
        None
    }

    /// The slow path when no cluster is wholly free: the first free slot anywhere.
    fn scan(&mut self) -> Option<u64> {
        let slot = self.counts.iter().position(|n| *n == 0)? as u64;
        self.current = Some((slot / CLUSTER, slot + 1));
        Some(slot)
    }

    fn take(&mut self, slot: u64) {
        self.counts[slot as usize] = 1;
        self.free_in[(slot / CLUSTER) as usize] -= 1;
        self.used += 1;
    }

    /// Takes a particular free slot; false when it is in use or unusable.
    pub fn claim(&mut self, slot: u64) -> bool {
        if self.counts.get(slot as usize) != Some(&0) {
            return false;
        }
        self.take(slot);
        true
    }

    /// Another reference to a slot in use; false when it is not in use or the count is full.
    pub fn duplicate(&mut self, slot: u64) -> bool {
        match self.counts.get_mut(slot as usize) {
            Some(n) if *n != 0 && *n < UNUSABLE - 1 => {
                *n += 1;
                true
            }
            _ => false,
        }
    }

    /// Drops a reference; the slot is free again with its last. False when not in use.
    pub fn free(&mut self, slot: u64) -> bool {
        let Some(n) = self
            .counts
            .get_mut(slot as usize)
            .filter(|n| **n != 0 && **n != UNUSABLE)
        else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            let cluster = slot / CLUSTER;
            self.free_in[cluster as usize] += 1;
            self.used -= 1;
            let size = ((cluster + 1) * CLUSTER).min(self.counts.len() as u64) - cluster * CLUSTER;
            if u64::from(self.free_in[cluster as usize]) == size
                && self.current.map(|c| c.0) != Some(cluster)
            {
                self.free_clusters.push_back(cluster);
            }
        }
        true
    }

    pub fn in_use(&self, slot: u64) -> bool {
        self.counts
            .get(slot as usize)
            .is_some_and(|n| *n != 0 && *n != UNUSABLE)
    }

    /// Every slot in use.
    pub fn used_slots(&self) -> Vec<u64> {
        (0..self.counts.len() as u64)
            .filter(|s| self.in_use(*s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_come_sequentially_from_clusters() {
        let mut map = SlotMap::new(1024, &[]);
        assert_eq!(map.usable(), 1023);
        let first: Vec<u64> = (0..300).map(|_| map.allocate().unwrap()).collect();
        assert_eq!(
            first,
            (1..301).collect::<Vec<_>>(),
            "sequential, header skipped"
        );
        assert!(map.free(5));
        assert!(!map.free(5), "freeing twice is refused");
        assert!(map.duplicate(6));
        assert!(map.free(6) && map.in_use(6) && map.free(6) && !map.in_use(6));
        assert_eq!(map.used(), 298);
    }

    #[test]
    fn bad_pages_and_a_full_area() {
        let mut map = SlotMap::new(10, &[3, 4]);
        let all: Vec<u64> = std::iter::from_fn(|| map.allocate()).collect();
        assert_eq!(all, vec![1, 2, 5, 6, 7, 8, 9]);
        assert!(map.allocate().is_none());
        map.free(7);
        assert_eq!(map.allocate(), Some(7));
    }
}
