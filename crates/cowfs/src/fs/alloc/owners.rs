//! Which extents are known to have one owner, so an in-place overwrite can be judged safe
//! without reading every reference (see `extents::bytes_exclusive`).

use std::cell::RefCell;
use std::collections::HashMap;

use crate::fs::InodeId;

/// Extents known to be referenced by one file only, every reference a piece of one record
/// (the same origin: file offset less extent offset), so that an in-place overwrite of any of
/// its bytes touches no one else's. Learnt by a full look at an extent's references; forgotten
/// when a reference is added by anything but a split of such a piece, and when the extent is
/// freed. Held in memory only: a remount learns it again.
#[derive(Debug, Default)]
pub(crate) struct SoleOwners(RefCell<HashMap<u64, (InodeId, u64)>>);

/// Kept across the counting of a new piece of a record: restores the extent's sole owner if the
/// piece is the owner's own.
#[must_use]
pub(in crate::fs) struct OwnerToKeep(Option<(u64, InodeId, u64)>);

impl SoleOwners {
    pub(in crate::fs::alloc) fn is(&self, extent: u64, owner: InodeId, origin: u64) -> bool {
        self.0.borrow().get(&extent) == Some(&(owner, origin))
    }

    pub(in crate::fs::alloc) fn set(&self, extent: u64, owner: InodeId, origin: u64) {
        self.0.borrow_mut().insert(extent, (owner, origin));
    }

    pub(in crate::fs) fn forget(&self, extent: u64) {
        let mut known = self.0.borrow_mut();
        if !known.is_empty() {
            known.remove(&extent);
        }
    }

    /// A reference is about to be added for `owner`'s record at `offset` mapping `extent`
    /// from `extent_offset`: whether it is one more piece of the sole owner's record.
    pub(in crate::fs::alloc) fn keep_piece(
        &self,
        extent: u64,
        owner: InodeId,
        offset: u64,
        extent_offset: u64,
    ) -> OwnerToKeep {
        let origin = offset.wrapping_sub(extent_offset);
        OwnerToKeep(
            self.is(extent, owner, origin)
                .then_some((extent, owner, origin)),
        )
    }
}

impl OwnerToKeep {
    pub(in crate::fs::alloc) fn restore(self, owners: &SoleOwners) {
        if let Some((extent, owner, origin)) = self.0 {
            owners.set(extent, owner, origin);
        }
    }
}
