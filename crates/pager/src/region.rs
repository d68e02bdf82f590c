//! A region: anonymous memory registered with the pager. It is plain memory to its users, from
//! any number of threads; pages the pager evicted come back on the next access.

use std::io;
use std::sync::Arc;

use crate::pager::{Inner, PAGE};

pub struct Region {
    base: *mut u8,
    pages: usize,
    pager: Arc<Inner>,
}

// SAFETY: the region is plain memory; synchronising accesses to it is its users' business, as
// for any shared buffer, and the pager's own state is behind its lock.
unsafe impl Send for Region {}
// SAFETY: as for Send: the pager's state is behind its lock, the memory is its users' to share.
unsafe impl Sync for Region {}

impl Region {
    pub(crate) fn map(pager: Arc<Inner>, pages: usize) -> io::Result<Region> {
        let len = pages.max(1) * PAGE;
        // SAFETY: a fresh anonymous private mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let region = Region {
            base: base.cast(),
            pages: pages.max(1),
            pager,
        };
        region.pager.register(base as usize, region.pages)?;
        Ok(region)
    }

    pub fn len(&self) -> usize {
        self.pages * PAGE
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.base
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping lives as long as the region.
        unsafe { std::slice::from_raw_parts(self.base, self.len()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.base, self.len()) }
    }

    /// The region as a slice of `T` (any type every bit pattern of which is valid, such as
    /// integers), for typed use.
    ///
    /// # Safety
    /// `T` must be valid for every bit pattern and need no more than page alignment.
    pub unsafe fn typed<T>(&mut self) -> &mut [T] {
        let n = self.len() / std::mem::size_of::<T>();
        // SAFETY: page-aligned, inside the mapping, and `T` accepts any bits (the caller's word).
        unsafe { std::slice::from_raw_parts_mut(self.base.cast::<T>(), n) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.pager.unregister(self.base as usize, self.pages);
        // SAFETY: the mapping was made by `map` with this length and is no longer registered.
        unsafe { libc::munmap(self.base.cast(), self.len()) };
    }
}
