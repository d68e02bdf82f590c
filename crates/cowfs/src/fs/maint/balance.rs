//! Balance: relocates block groups (all, or those under a usage threshold), compacting data
//! and returning emptied chunks to the device. It runs as an exclusive operation in steps,
//! taking the engine lock for one batch of extents at a time, so the filesystem stays usable;
//! between steps it can be paused, resumed or cancelled from another thread.

use crate::error::{Error, Result};
use crate::fs::{BlockGroup, Filesystem};

/// Extents moved per step (per turn with the engine lock).
const EXTENTS_PER_STEP: usize = 32;

/// Which block groups to relocate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BalanceFilter {
    /// Only groups less than this percent full (btrfs's `-dusage`).
    pub usage_below: Option<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalanceReport {
    /// Logical starts of the groups relocated and removed.
    pub relocated: Vec<u64>,
    /// Groups left alone, with the reason.
    pub skipped: Vec<(u64, String)>,
    pub bytes_moved: u64,
    pub cancelled: bool,
}

/// Where a running balance is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BalanceProgress {
    pub groups_done: usize,
    pub groups_total: usize,
    pub bytes_moved: u64,
    pub bytes_total: u64,
}

impl Filesystem {
    /// Relocates the block groups `filter` selects. Returns what was done; a cancelled
    /// balance reports what it finished before stopping.
    pub fn balance(
        &self,
        filter: BalanceFilter,
        progress: &mut dyn FnMut(&BalanceProgress),
    ) -> Result<BalanceReport> {
        if let Some(usage) = filter.usage_below.filter(|u| *u > 100) {
            return Err(Error::invalid(format!(
                "usage {usage} is not a percent (0 to 100)"
            )));
        }
        self.with(|e| e.begin_exclusive("balance"))?;
        self.balance_control().start();
        let result = self.run_balance(filter, progress);
        self.balance_control().stop();
        self.with(|e| {
            e.end_exclusive();
            Ok(())
        })?;
        result
    }

    pub fn pause_balance(&self) -> Result<()> {
        self.balance_control().request(|s| s.paused = true)
    }

    pub fn resume_balance(&self) -> Result<()> {
        self.balance_control().request(|s| s.paused = false)
    }

    pub fn cancel_balance(&self) -> Result<()> {
        self.balance_control().request(|s| s.cancel = true)
    }

    fn run_balance(
        &self,
        filter: BalanceFilter,
        progress: &mut dyn FnMut(&BalanceProgress),
    ) -> Result<BalanceReport> {
        let groups: Vec<BlockGroup> = self.with(|e| Ok(e.alloc.groups().copied().collect()))?;
        let mut report = BalanceReport::default();
        let pinned = self.with(|e| Ok(e.pinned_groups()))?;
        for g in groups.iter().filter(|g| pinned.contains(&g.logical)) {
            report
                .skipped
                .push((g.logical, "holds an active swapfile".into()));
        }
        let chosen: Vec<BlockGroup> = groups
            .into_iter()
            .filter(|g| !pinned.contains(&g.logical))
            .collect::<Vec<_>>()
            .into_iter()
            .filter(|g| {
                filter
                    .usage_below
                    .is_none_or(|limit| g.record.used * 100 < u64::from(limit) * g.record.length)
            })
            .collect();
        let mut status = BalanceProgress {
            groups_total: chosen.len(),
            bytes_total: chosen.iter().map(|g| g.record.used).sum(),
            ..BalanceProgress::default()
        };
        // With room for all of it elsewhere, hold every chosen group from the start, so no
        // data moves into a group that is itself about to be emptied.
        let room = self.with(|e| Ok(e.unallocated_for_data()))?;
        if room >= status.bytes_total {
            self.with(|e| {
                chosen.iter().for_each(|g| e.alloc.hold(g.logical));
                Ok(())
            })?;
        }
        let result = self.empty_groups(&chosen, &mut report, &mut status, progress);
        self.with(|e| {
            chosen.iter().for_each(|g| e.alloc.release_hold(g.logical));
            Ok(())
        })?;
        result?;
        report.bytes_moved = status.bytes_moved;
        Ok(report)
    }

    fn empty_groups(
        &self,
        chosen: &[BlockGroup],
        report: &mut BalanceReport,
        status: &mut BalanceProgress,
        progress: &mut dyn FnMut(&BalanceProgress),
    ) -> Result<()> {
        for g in chosen {
            match self.empty_group(g.logical, status, progress)? {
                true => report.relocated.push(g.logical),
                false => {
                    report.cancelled = true;
                    break;
                }
            }
            status.groups_done += 1;
            progress(status);
        }
        Ok(())
    }

    /// Moves every extent out of a group and removes it; false if cancelled first.
    pub(in crate::fs) fn empty_group(
        &self,
        group: u64,
        status: &mut BalanceProgress,
        progress: &mut dyn FnMut(&BalanceProgress),
    ) -> Result<bool> {
        self.with(|e| {
            e.alloc.hold(group);
            Ok(())
        })?;
        let moved = loop {
            if self.balance_control().should_stop() {
                break Ok(false);
            }
            match self.with(|e| e.relocate_some(group, EXTENTS_PER_STEP)) {
                Ok((bytes, done)) => {
                    status.bytes_moved += bytes;
                    progress(status);
                    if done {
                        break Ok(true);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        match moved {
            Ok(true) => self.with(|e| e.retire_group(group)).map(|()| true),
            other => {
                self.with(|e| {
                    e.alloc.release_hold(group);
                    Ok(())
                })?;
                other
            }
        }
    }
}
