//! The data-extent allocator. Data lives in block groups (chunks of the device given to data);
//! their free space is kept twice: in the `free_space` table, changed in the same transaction
//! as the extents (so a crash rolls both back together), and in memory for fast allocation.
//! Space freed in the running transaction is "pinned": the last committed state may still
//! point at it, so it is not handed out again until that transaction has committed.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::{
    round_down, BlockGroupRecord, BLOCK_GROUP_DATA, BLOCK_GROUP_READ_ONLY, BLOCK_SIZE,
};
use crate::meta::{DeviceSpace, Meta};

/// A contiguous range of logical data space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub start: u64,
    pub len: u64,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// A block group as the allocator knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockGroup {
    pub logical: u64,
    pub record: BlockGroupRecord,
}

impl BlockGroup {
    pub fn end(&self) -> u64 {
        self.logical + self.record.length
    }

    pub fn contains(&self, addr: u64) -> bool {
        (self.logical..self.end()).contains(&addr)
    }
}

#[derive(Debug, Default)]
pub struct DataAllocator {
    groups: BTreeMap<u64, BlockGroup>,
    /// Start -> length of space that may be allocated now.
    free: BTreeMap<u64, u64>,
    pinned: Vec<Extent>,
    /// Where the last allocation ended, so consecutive writes land consecutively.
    cursor: u64,
    /// Block groups being emptied (balance, shrink): their free space, withheld from
    /// allocation.
    held: BTreeMap<u64, BTreeMap<u64, u64>>,
    /// Counts the commits that made freed space reusable: a reader that resolved blocks
    /// without the engine's lock knows, by it, whether they can have been reused meanwhile.
    reuse_epoch: Arc<AtomicU64>,
    /// Bytes promised away from ordinary writers (swap files' copy-on-write room).
    set_aside: u64,
}

/// How much of the device to give a new data block group.
pub fn data_chunk_size(fs_size: u64) -> u64 {
    round_down(fs_size / 8, 1 << 20).clamp(1 << 20, 1 << 30)
}

/// Device space kept unallocated for metadata growth: data block groups never take it.
pub fn metadata_reserve(fs_size: u64) -> u64 {
    round_down(fs_size / 16, 1 << 20).clamp(1 << 20, 512 << 20)
}

impl DataAllocator {
    /// Loads the block groups and the free space of the committed state.
    pub fn load(meta: Meta<'_>, space: &Mutex<DeviceSpace>) -> Result<Self> {
        let mut alloc = DataAllocator::default();
        for (logical, record) in meta.block_groups().all()? {
            let group = BlockGroup { logical, record };
            if group.record.kind != BLOCK_GROUP_DATA || group.logical != group.record.physical {
                return Err(Error::corrupt(format!("block group {group:?} malformed")));
            }
            if !space
                .lock()
                .unwrap()
                .claim(group.record.physical, group.record.length)
            {
                return Err(Error::corrupt(format!(
                    "block group {group:?} overlaps another chunk"
                )));
            }
            alloc.groups.insert(group.logical, group);
        }
        for (start, len) in meta.free_space().all()? {
            let free = Extent { start, len };
            match alloc.group_of(free.start) {
                Some(g) if free.len > 0 && free.end() <= g.end() => {}
                _ => {
                    return Err(Error::corrupt(format!(
                        "free space {free:?} outside block groups"
                    )))
                }
            }
            if alloc
                .group_of(free.start)
                .is_none_or(|g| g.record.flags & BLOCK_GROUP_READ_ONLY == 0)
            {
                alloc.free.insert(free.start, free.len);
            }
        }
        Ok(alloc)
    }

    pub fn groups(&self) -> impl Iterator<Item = &BlockGroup> {
        self.groups.values()
    }

    pub fn group_of(&self, addr: u64) -> Option<&BlockGroup> {
        self.groups
            .range(..=addr)
            .next_back()
            .map(|(_, g)| g)
            .filter(|g| g.contains(addr))
    }

    /// Where logical data address `addr` is on the device.
    pub fn physical(&self, addr: u64) -> Result<u64> {
        let g = self
            .group_of(addr)
            .ok_or_else(|| Error::corrupt(format!("data address {addr} is in no block group")))?;
        Ok(g.record.physical + (addr - g.logical))
    }

    /// Bytes ordinary writers can allocate now, counting block groups not yet made, less
    /// what is set aside.
    pub fn available(&self, space: &Mutex<DeviceSpace>) -> u64 {
        let space = space.lock().unwrap();
        let free: u64 = self.free.values().sum();
        (free
            + space
                .unallocated()
                .saturating_sub(metadata_reserve(space.fs_size())))
        .saturating_sub(self.set_aside)
    }

    /// Promises `bytes` away from ordinary writers (its owner still allocates from them).
    pub fn set_aside(&mut self, bytes: u64) {
        self.set_aside += bytes;
    }

    pub fn release_set_aside(&mut self, bytes: u64) {
        self.set_aside -= bytes;
    }

    pub fn pinned_bytes(&self) -> u64 {
        self.pinned.iter().map(|e| e.len).sum()
    }

    /// Allocates up to `want` bytes (a block multiple), contiguous; fewer when free space is
    /// fragmented. ENOSPC when nothing is left.
    pub fn allocate(
        &mut self,
        meta: Meta<'_>,
        space: &Mutex<DeviceSpace>,
        want: u64,
    ) -> Result<Extent> {
        let extent = match self.pick(want) {
            Some(e) => e,
            None => {
                self.add_group(meta, space, want)?;
                self.pick(want)
                    .ok_or_else(|| Error::no_space("no free data space"))?
            }
        };
        remove_range(&mut self.free, extent);
        self.cursor = extent.end();
        self.take_persisted(meta, extent)?;
        self.adjust_used(meta, extent, true)?;
        Ok(extent)
    }

    /// Allocates exactly `len` contiguous bytes, or nothing when no free range is that long.
    pub fn allocate_contiguous(
        &mut self,
        meta: Meta<'_>,
        space: &Mutex<DeviceSpace>,
        len: u64,
    ) -> Result<Option<Extent>> {
        if self.pick(len).is_none_or(|e| e.len < len) {
            // A new block group may hold it.
            if self.add_group(meta, space, len).is_err() {
                return Ok(None);
            }
        }
        match self.pick(len) {
            Some(e) if e.len == len => self.allocate(meta, space, len).map(Some),
            _ => Ok(None),
        }
    }

    /// Next fit from the cursor for a range of `want`, else the largest free range.
    fn pick(&self, want: u64) -> Option<Extent> {
        let after = self
            .free
            .range(self.cursor..)
            .chain(self.free.range(..self.cursor));
        let fit = after.clone().find(|(_, l)| **l >= want);
        let (start, len) = fit.or_else(|| self.free.iter().max_by_key(|(_, l)| **l))?;
        Some(Extent {
            start: *start,
            len: (*len).min(want),
        })
    }

    pub fn add_group(
        &mut self,
        meta: Meta<'_>,
        space: &Mutex<DeviceSpace>,
        want: u64,
    ) -> Result<()> {
        let mut space = space.lock().unwrap();
        let reserve = metadata_reserve(space.fs_size());
        let spare = space.unallocated().saturating_sub(reserve);
        let size = data_chunk_size(space.fs_size())
            .max(want)
            .min(round_down(spare, BLOCK_SIZE));
        let size = size.min(round_down(space.largest_free(), BLOCK_SIZE));
        if size == 0 {
            return Err(Error::no_space("the filesystem is full"));
        }
        let physical = space
            .allocate(size)
            .ok_or_else(|| Error::no_space("the filesystem is full"))?;
        drop(space);
        let record = BlockGroupRecord {
            physical,
            length: size,
            kind: BLOCK_GROUP_DATA,
            flags: 0,
            used: 0,
        };
        meta.block_groups().put(&physical, &record)?;
        meta.free_space().put(&physical, &size)?;
        self.groups.insert(
            physical,
            BlockGroup {
                logical: physical,
                record,
            },
        );
        self.free.insert(physical, size);
        Ok(())
    }

    /// Frees an extent whose last reference is gone; reusable after the next commit.
    pub fn free(&mut self, meta: Meta<'_>, extent: Extent) -> Result<()> {
        self.give_persisted(meta, extent)?;
        self.adjust_used(meta, extent, false)?;
        self.pinned.push(extent);
        Ok(())
    }

    /// The count of commits that made freed space reusable, shared with readers.
    pub fn reuse_epoch(&self) -> Arc<AtomicU64> {
        self.reuse_epoch.clone()
    }

    /// The running transaction committed: what it freed may be reused. Returns the freed
    /// space as device ranges (sorted, adjacent ones joined), for the device to be told that
    /// nothing will read them (TRIM) before anything is written there again.
    pub fn unpin(&mut self) -> Vec<Extent> {
        // Before any of it can be handed out again (that happens under the engine's lock).
        self.reuse_epoch.fetch_add(1, Ordering::SeqCst);
        let mut freed: Vec<Extent> = self
            .pinned
            .iter()
            .filter_map(|e| {
                let start = self.physical(e.start).ok()?;
                Some(Extent { start, len: e.len })
            })
            .collect();
        freed.sort_by_key(|e| e.start);
        freed.dedup_by(|next, run| {
            let joins = run.end() == next.start;
            if joins {
                run.len += next.len;
            }
            joins
        });
        for e in std::mem::take(&mut self.pinned) {
            let groups = &self.groups;
            let group = self.group_of(e.start).map(|g| g.logical);
            let set = match group.and_then(|g| self.held.get_mut(&g)) {
                Some(held) => held,
                None => &mut self.free,
            };
            insert_range(set, e, |a, b| same_group(groups, a, b));
        }
        freed
    }

    /// Withholds a block group's free space from allocation, so it can be emptied.
    pub fn hold(&mut self, logical: u64) {
        let Some(g) = self.groups.get(&logical).copied() else {
            return;
        };
        let inside: Vec<(u64, u64)> = self
            .free
            .range(g.logical..g.end())
            .map(|(s, l)| (*s, *l))
            .collect();
        let held = self.held.entry(logical).or_default();
        for (s, l) in inside {
            self.free.remove(&s);
            held.insert(s, l);
        }
    }

    /// Gives a held group's free space back to allocation.
    pub fn release_hold(&mut self, logical: u64) {
        for (s, l) in self.held.remove(&logical).unwrap_or_default() {
            let groups = &self.groups;
            insert_range(&mut self.free, Extent { start: s, len: l }, |a, b| {
                same_group(groups, a, b)
            });
        }
    }

    /// Removes an empty, held block group from the store and the allocator; returns its
    /// physical start, to be released from the device once this transaction commits.
    pub fn remove_group(&mut self, meta: Meta<'_>, logical: u64) -> Result<u64> {
        let g = *self
            .groups
            .get(&logical)
            .ok_or_else(|| Error::not_found(format!("block group {logical}")))?;
        if g.record.used != 0 || self.pinned.iter().any(|e| g.contains(e.start)) {
            return Err(Error::new(
                rustix::io::Errno::BUSY,
                format!("block group {logical} is not empty yet"),
            ));
        }
        let free_space = meta.free_space();
        let inside = (Bound::Included(&g.logical), Bound::Excluded(&g.end()));
        for (start, _) in free_space.range(inside.0, inside.1, usize::MAX)? {
            free_space.remove(&start)?;
        }
        meta.block_groups().remove(&logical)?;
        self.groups.remove(&logical);
        self.held.remove(&logical);
        Ok(g.record.physical)
    }

    fn adjust_used(&mut self, meta: Meta<'_>, extent: Extent, allocated: bool) -> Result<()> {
        let outside = || Error::corrupt(format!("extent {extent:?} is not inside a block group"));
        let logical = self
            .group_of(extent.start)
            .filter(|g| extent.end() <= g.end())
            .ok_or_else(outside)?
            .logical;
        let g = self.groups.get_mut(&logical).expect("group_of returned it");
        g.record.used = if allocated {
            g.record.used + extent.len
        } else {
            g.record.used.checked_sub(extent.len).ok_or_else(|| {
                Error::corrupt(format!(
                    "block group {logical} uses less than the freed {extent:?}"
                ))
            })?
        };
        meta.block_groups().put(&g.logical, &g.record)
    }

    fn take_persisted(&self, meta: Meta<'_>, e: Extent) -> Result<()> {
        let free_space = meta.free_space();
        let (start, len) = free_space
            .at_or_before(&e.start)?
            .ok_or_else(|| Error::corrupt(format!("allocated {e:?} is not free on disk")))?;
        let free = Extent { start, len };
        if free.end() < e.end() {
            return Err(Error::corrupt(format!(
                "allocated {e:?} is not free on disk ({free:?})"
            )));
        }
        free_space.remove(&free.start)?;
        if free.start < e.start {
            free_space.put(&free.start, &(e.start - free.start))?;
        }
        if e.end() < free.end() {
            free_space.put(&e.end(), &(free.end() - e.end()))?;
        }
        Ok(())
    }

    fn give_persisted(&self, meta: Meta<'_>, e: Extent) -> Result<()> {
        let free_space = meta.free_space();
        let mut merged = e;
        if let Some((start, len)) = free_space.at_or_before(&e.start)? {
            let prev = Extent { start, len };
            if prev.end() > e.start {
                return Err(Error::corrupt(format!(
                    "freed {e:?} overlaps free {prev:?}"
                )));
            }
            if prev.end() == e.start && same_group(&self.groups, prev.start, e.start) {
                free_space.remove(&prev.start)?;
                merged = Extent {
                    start: prev.start,
                    len: prev.len + e.len,
                };
            }
        }
        if let Some(len) = free_space.get(&e.end())? {
            if same_group(&self.groups, e.start, e.end()) {
                free_space.remove(&e.end())?;
                merged.len += len;
            }
        }
        let next = free_space.range(Bound::Excluded(&e.start), Bound::Unbounded, 1)?;
        if let Some(&(start, _)) = next.first() {
            if start < merged.end() {
                return Err(Error::corrupt(format!("freed {e:?} overlaps free space")));
            }
        }
        free_space.put(&merged.start, &merged.len)
    }
}

fn same_group(groups: &BTreeMap<u64, BlockGroup>, a: u64, b: u64) -> bool {
    let g = groups.range(..=a).next_back().map(|(_, g)| *g);
    g.is_some_and(|g| g.contains(a) && g.contains(b))
}

/// Removes `e` from a set of disjoint ranges; `e` must lie within one of them.
fn remove_range(set: &mut BTreeMap<u64, u64>, e: Extent) {
    let (&start, &len) = set.range(..=e.start).next_back().expect("range is free");
    debug_assert!(start + len >= e.end());
    set.remove(&start);
    if start < e.start {
        set.insert(start, e.start - start);
    }
    if e.end() < start + len {
        set.insert(e.end(), start + len - e.end());
    }
}

/// Adds `e` to a set of disjoint ranges, merging with neighbours where `mergeable` allows.
fn insert_range(set: &mut BTreeMap<u64, u64>, e: Extent, mergeable: impl Fn(u64, u64) -> bool) {
    let mut merged = e;
    if let Some((&s, &l)) = set.range(..e.start).next_back() {
        if s + l == e.start && mergeable(s, e.start) {
            set.remove(&s);
            merged = Extent {
                start: s,
                len: l + e.len,
            };
        }
    }
    if let Some(&l) = set.get(&e.end()) {
        if mergeable(e.start, e.end()) {
            set.remove(&e.end());
            merged.len += l;
        }
    }
    set.insert(merged.start, merged.len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_and_merge() {
        let mut set = BTreeMap::new();
        set.insert(0, 100);
        remove_range(&mut set, Extent { start: 10, len: 20 });
        assert_eq!(
            set.iter().map(|(s, l)| (*s, *l)).collect::<Vec<_>>(),
            vec![(0, 10), (30, 70)]
        );
        insert_range(&mut set, Extent { start: 10, len: 20 }, |_, _| true);
        assert_eq!(
            set.iter().map(|(s, l)| (*s, *l)).collect::<Vec<_>>(),
            vec![(0, 100)]
        );
        remove_range(&mut set, Extent { start: 50, len: 50 });
        insert_range(&mut set, Extent { start: 50, len: 50 }, |_, _| false);
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn chunk_sizes_scale_with_the_filesystem() {
        assert_eq!(data_chunk_size(16 << 20), 2 << 20);
        assert_eq!(data_chunk_size(1 << 40), 1 << 30);
        assert_eq!(metadata_reserve(16 << 20), 1 << 20);
    }
}
