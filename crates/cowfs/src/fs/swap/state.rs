//! What the engine holds for its swap files: the active ones and their pins, and the swap
//! pages written since the last commit. Only the swap module reads or changes it; the rest of
//! the engine asks the swap module's methods.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::format::{Compression, BLOCK_SIZE};
use crate::fs::common::Decode;
use crate::fs::{InodeId, SwapExtent, SwapMode};

#[derive(Debug, Default)]
pub(crate) struct SwapState {
    pub(in crate::fs::swap) files: HashMap<InodeId, ActiveSwap>,
    /// Bytes of swap pages written since the last commit.
    pub(in crate::fs::swap) written: u64,
}

/// An active swap file's pins.
#[derive(Debug)]
pub(crate) struct ActiveSwap {
    pub(in crate::fs::swap) mode: SwapMode,
    pub(in crate::fs::swap) pages: u64,
    /// Block groups holding its extents (pinned mode): never relocated while active.
    pub(in crate::fs::swap) groups: BTreeSet<u64>,
    /// Data space set aside for its copy-on-write (through-filesystem mode).
    pub(in crate::fs::swap) reserved: u64,
    /// The page -> device map (pinned mode), fixed until deactivation.
    pub(in crate::fs::swap) extents: Vec<SwapExtent>,
    /// Cleared at deactivation: pinned I/O handles given out stop working then.
    pub(in crate::fs::swap) live: Arc<AtomicBool>,
    /// Bytes of swap writes since activation, and bytes they put on the device (fewer when
    /// compressed).
    pub(in crate::fs::swap) swapped_out: u64,
    pub(in crate::fs::swap) stored: u64,
    /// Its pages written since the last commit, not yet in the tables (through the
    /// filesystem, copy-on-write).
    pub(in crate::fs::swap) journal: SwapJournal,
    /// Its pages written since the last commit that are in the tables: written there
    /// directly (NOCOW files) or put there from the journal.
    pub(in crate::fs::swap) uncommitted: BTreeSet<u64>,
    /// Pages whose newest copy went with a failed transaction: their swap-ins are EIO, never
    /// an older copy.
    pub(in crate::fs::swap) lost: BTreeSet<u64>,
}

impl SwapState {
    /// The running transaction failed and the engine goes back to the last commit: the pages
    /// swap writes changed since then are lost (and their journals dropped).
    pub(crate) fn lose_uncommitted(&mut self) {
        for active in self.files.values_mut() {
            let journal = std::mem::take(&mut active.journal);
            let uncommitted = std::mem::take(&mut active.uncommitted);
            active
                .lost
                .extend(journal.pages.into_keys().chain(uncommitted));
        }
    }

    /// A commit freed the copies the swap writes since the last one replaced.
    pub(crate) fn committed(&mut self) {
        self.written = 0;
        for active in self.files.values_mut() {
            active.uncommitted.clear();
        }
    }
}

impl ActiveSwap {
    pub(crate) fn is_pinned(&self) -> bool {
        self.mode == SwapMode::Pinned
    }
}

/// Where a journaled page's newest copy is.
#[derive(Debug, Clone, Copy)]
pub(in crate::fs::swap) enum JournalPage {
    /// Stored plainly in the block at `logical`, whose checksum is `sum`.
    Plain { logical: u64, sum: u32 },
    /// Page `index` of the journal's compressed piece number `piece`.
    Packed { piece: usize, index: usize },
}

/// A compressed piece of a journaled swap write: pages from `first` on, encoded and stored in
/// the blocks from `logical` on, one checksum per block.
#[derive(Debug)]
pub(in crate::fs::swap) struct JournalPiece {
    pub(in crate::fs::swap) first: u64,
    pub(in crate::fs::swap) pages: u64,
    pub(in crate::fs::swap) how: Compression,
    pub(in crate::fs::swap) logical: u64,
    pub(in crate::fs::swap) sums: Vec<u32>,
}

/// A copy-on-write swap file's pages written since the last commit (`fs::swap::journal`).
#[derive(Debug, Default)]
pub(crate) struct SwapJournal {
    /// File page -> its copy written in the running transaction.
    pub(in crate::fs::swap) pages: BTreeMap<u64, JournalPage>,
    /// The compressed pieces written in the running transaction, in the order they were.
    pub(in crate::fs::swap) pieces: Vec<JournalPiece>,
    /// The clusters allocated in the running transaction, by logical start -> length.
    pub(in crate::fs::swap) clusters: BTreeMap<u64, u64>,
    /// The next free block of the newest cluster, and that cluster's end.
    pub(in crate::fs::swap) next: u64,
    pub(in crate::fs::swap) end: u64,
}

/// A piece of a swap read: pages in the journal, or pages to read from the file's extents.
#[derive(Debug)]
pub(crate) enum SwapRun {
    Journal(JournalRun),
    Stored { at: usize, offset: u64, len: usize },
}

/// Journaled pages of a swap read, at `at` of its buffer: the blocks from `logical` on, one
/// checksum each, holding them plainly or, with `decode`, the compressed piece they are in.
#[derive(Debug)]
pub(crate) struct JournalRun {
    pub(crate) at: usize,
    pub(crate) logical: u64,
    pub(crate) sums: Vec<u32>,
    pub(crate) decode: Option<Decode>,
}

impl JournalRun {
    /// The bytes of the read it fills.
    pub(crate) fn len(&self) -> usize {
        self.decode
            .map_or(self.sums.len() * BLOCK_SIZE as usize, |d| d.len)
    }
}

impl SwapJournal {
    pub(crate) fn is_empty(&self) -> bool {
        self.pages.is_empty() && self.clusters.is_empty()
    }

    /// Hands out up to `blocks` blocks side by side from the newest cluster: their first
    /// logical address and how many; None when the cluster is used up.
    pub(in crate::fs::swap) fn take(&mut self, blocks: u64) -> Option<(u64, u64)> {
        let n = blocks.min((self.end - self.next) / BLOCK_SIZE);
        if n == 0 {
            return None;
        }
        let at = self.next;
        self.next += n * BLOCK_SIZE;
        Some((at, n))
    }

    /// `blocks` blocks side by side from the newest cluster, all or none: the first one's
    /// logical address; None when the cluster has fewer left (they stay unused).
    pub(in crate::fs::swap) fn take_exactly(&mut self, blocks: u64) -> Option<u64> {
        if (self.end - self.next) / BLOCK_SIZE < blocks {
            return None;
        }
        self.take(blocks).map(|(at, _)| at)
    }

    /// Runs of pages for a read of `pages` pages from `page` on.
    pub(in crate::fs::swap) fn runs(&self, page: u64, pages: u64) -> Vec<SwapRun> {
        let mut runs: Vec<SwapRun> = Vec::new();
        for p in page..page + pages {
            let at = ((p - page) * BLOCK_SIZE) as usize;
            match (self.pages.get(&p), runs.last_mut()) {
                (Some(JournalPage::Plain { logical, sum }), Some(SwapRun::Journal(run)))
                    if run.decode.is_none()
                        && run.logical + run.sums.len() as u64 * BLOCK_SIZE == *logical =>
                {
                    run.sums.push(*sum)
                }
                (Some(&JournalPage::Plain { logical, sum }), _) => {
                    runs.push(SwapRun::Journal(JournalRun {
                        at,
                        logical,
                        sums: vec![sum],
                        decode: None,
                    }))
                }
                (Some(&JournalPage::Packed { piece, index }), last) => {
                    let packed = &self.pieces[piece];
                    let within = index * BLOCK_SIZE as usize;
                    let decode = match last {
                        Some(SwapRun::Journal(run)) if run.logical == packed.logical => {
                            run.decode.as_mut()
                        }
                        _ => None,
                    };
                    match decode {
                        Some(decode) if decode.within + decode.len == within => {
                            decode.len += BLOCK_SIZE as usize
                        }
                        _ => runs.push(SwapRun::Journal(JournalRun {
                            at,
                            logical: packed.logical,
                            sums: packed.sums.clone(),
                            decode: Some(Decode {
                                how: packed.how,
                                ram_len: packed.pages * BLOCK_SIZE,
                                within,
                                len: BLOCK_SIZE as usize,
                            }),
                        })),
                    }
                }
                (None, Some(SwapRun::Stored { len, .. })) => *len += BLOCK_SIZE as usize,
                (None, _) => runs.push(SwapRun::Stored {
                    at,
                    offset: p * BLOCK_SIZE,
                    len: BLOCK_SIZE as usize,
                }),
            }
        }
        runs
    }
}
