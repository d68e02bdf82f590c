//! The swap subsystem: active swap areas with priorities (higher used first, equal ones in
//! turn, as Linux), slot allocation, batched page I/O, swapoff, the /proc/swaps listing and
//! statistics.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use cowfs::{Errno, Error, Result};

use crate::area::{SlotMap, CLUSTER};
use crate::backing::Backing;
use crate::header::{SwapHeader, PAGE_SIZE};

/// A page of swap: which area, which page of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    pub area: usize,
    pub page: u64,
}

/// A line of `swapon --show` / /proc/swaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapInfo {
    pub area: usize,
    pub name: String,
    pub kind: &'static str,
    pub size_kib: u64,
    pub used_kib: u64,
    pub priority: i32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwapStats {
    pub pages_in: u64,
    pub pages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Backing calls made: one per contiguous run of pages.
    pub reads: u64,
    pub writes: u64,
}

struct Area {
    backing: Box<dyn Backing>,
    header: SwapHeader,
    priority: i32,
    /// Locked on its own, so that slots are taken and given back while other threads do I/O.
    slots: Mutex<SlotMap>,
}

impl Area {
    fn slots(&self) -> MutexGuard<'_, SlotMap> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
pub struct SwapSystem {
    areas: Vec<Option<Area>>,
    /// Linux gives areas without a priority -2, -3, ...
    next_priority: i32,
    /// Among areas of one priority, the one to take the next cluster from.
    turn: AtomicUsize,
    /// Reads and writes take `&self`, so several can run at once (a pager serving faults and
    /// writing evicted pages on several threads); their counts are atomics.
    reads: IoCounts,
    writes: IoCounts,
}

/// Backing calls, pages and bytes moved in one direction.
#[derive(Default)]
struct IoCounts([AtomicU64; 3]);

impl IoCounts {
    fn add(&self, pages: usize) {
        let counts = [1, pages as u64, (pages * PAGE_SIZE) as u64];
        for (counter, n) in self.0.iter().zip(counts) {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// (calls, pages, bytes)
    fn get(&self) -> [u64; 3] {
        self.0.each_ref().map(|c| c.load(Ordering::Relaxed))
    }
}

/// Reads one slot's page back into memory so its area can go (see [`SwapSystem::swapoff`]).
pub type BringBack<'a> = dyn FnMut(&mut SwapSystem, Slot) -> Result<()> + 'a;

impl SwapSystem {
    pub fn new() -> Self {
        SwapSystem {
            next_priority: -2,
            ..SwapSystem::default()
        }
    }

    /// Activates a backing and reads its header; the area is what the header says (a longer
    /// file is fine). Returns the area's number.
    pub fn swapon(
        &mut self,
        mut backing: Box<dyn Backing>,
        priority: Option<i32>,
    ) -> Result<usize> {
        if self
            .areas
            .iter()
            .flatten()
            .any(|a| a.backing.name() == backing.name())
        {
            return Err(Error::new(
                Errno::BUSY,
                format!("{}: already a swap area", backing.name()),
            ));
        }
        let pages = backing.activate()?;
        let header = match read_header(backing.as_ref(), pages) {
            Ok(h) => h,
            Err(e) => {
                let _ = backing.deactivate();
                return Err(e);
            }
        };
        let priority = priority.unwrap_or_else(|| {
            self.next_priority -= 1;
            self.next_priority + 1
        });
        let slots = Mutex::new(SlotMap::new(header.pages, &header.bad_pages));
        let area = Area {
            backing,
            header,
            priority,
            slots,
        };
        let index = self
            .areas
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.areas.len());
        if index == self.areas.len() {
            self.areas.push(None);
        }
        self.areas[index] = Some(area);
        Ok(index)
    }

    /// Deactivates an area. With slots in use it is EBUSY, unless `bring_back` is given: it is
    /// called with every slot in use (to read the page back) before the area goes.
    pub fn swapoff(&mut self, area: usize, bring_back: Option<&mut BringBack<'_>>) -> Result<()> {
        let used = self.area(area)?.slots().used_slots();
        match bring_back {
            None if !used.is_empty() => {
                return Err(Error::new(
                    Errno::BUSY,
                    format!("{} slots of the area are in use", used.len()),
                ));
            }
            Some(bring_back) => {
                for page in used {
                    bring_back(self, Slot { area, page })?;
                }
            }
            None => {}
        }
        if self.area(area)?.slots().used() != 0 {
            return Err(Error::new(Errno::BUSY, "slots are still in use"));
        }
        let mut gone = self.areas[area].take().expect("checked above");
        gone.backing.deactivate()
    }

    fn area(&self, area: usize) -> Result<&Area> {
        self.areas
            .get(area)
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::invalid(format!("no swap area {area}")))
    }

    /// `n` free slots: from the highest-priority areas first; areas of equal priority take
    /// turns a cluster at a time. ENOSPC (and nothing taken) when swap is full.
    pub fn allocate(&self, n: usize) -> Result<Vec<Slot>> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let Some(area) = self.pick_area() else {
                for slot in &got {
                    self.free(*slot)?;
                }
                return Err(Error::no_space("swap space exhausted"));
            };
            let mut slots = self.area(area)?.slots();
            let take = (n - got.len()).min(CLUSTER as usize);
            for _ in 0..take {
                match slots.allocate() {
                    Some(page) => got.push(Slot { area, page }),
                    None => break,
                }
            }
            self.turn.fetch_add(1, Ordering::Relaxed);
        }
        Ok(got)
    }

    /// The area with free slots and the highest priority, taking turns among equals.
    fn pick_area(&self) -> Option<usize> {
        let open = |a: &Area| {
            let slots = a.slots();
            slots.used() < slots.usable()
        };
        let best = self
            .areas
            .iter()
            .flatten()
            .filter(|a| open(a))
            .map(|a| a.priority)
            .max()?;
        let equals: Vec<usize> = (0..self.areas.len())
            .filter(|i| {
                self.areas[*i]
                    .as_ref()
                    .is_some_and(|a| open(a) && a.priority == best)
            })
            .collect();
        Some(equals[self.turn.load(Ordering::Relaxed) % equals.len()])
    }

    /// Takes a particular free slot (for tools that address pages directly).
    pub fn claim(&self, slot: Slot) -> Result<()> {
        if !self.area(slot.area)?.slots().claim(slot.page) {
            return Err(Error::new(
                Errno::BUSY,
                format!("slot {slot:?} is in use or unusable"),
            ));
        }
        Ok(())
    }

    /// Whether a slot is in use.
    pub fn in_use(&self, slot: Slot) -> bool {
        self.area(slot.area)
            .is_ok_and(|a| a.slots().in_use(slot.page))
    }

    /// Another reference to a slot (a page shared by two owners).
    pub fn duplicate(&self, slot: Slot) -> Result<()> {
        if !self.area(slot.area)?.slots().duplicate(slot.page) {
            return Err(Error::invalid(format!("slot {slot:?} is not in use")));
        }
        Ok(())
    }

    pub fn free(&self, slot: Slot) -> Result<()> {
        if !self.area(slot.area)?.slots().free(slot.page) {
            return Err(Error::invalid(format!("slot {slot:?} is not in use")));
        }
        Ok(())
    }

    /// Writes one page per slot (`data` holds them in order), one backing call per run of
    /// consecutive slots. Writes may run in parallel with each other and with reads.
    pub fn write(&self, slots: &[Slot], data: &[u8]) -> Result<()> {
        self.check_io(slots, data.len())?;
        for (start, range) in runs(slots) {
            let bytes = &data[range.start * PAGE_SIZE..range.end * PAGE_SIZE];
            self.area(start.area)?
                .backing
                .write_pages(start.page, bytes)?;
            self.writes.add(range.len());
        }
        Ok(())
    }

    /// Reads one page per slot into `buf`, one backing call per run of consecutive slots.
    /// Reads may run in parallel with each other.
    pub fn read(&self, slots: &[Slot], buf: &mut [u8]) -> Result<()> {
        self.check_io(slots, buf.len())?;
        for (start, range) in runs(slots) {
            let bytes = &mut buf[range.start * PAGE_SIZE..range.end * PAGE_SIZE];
            self.area(start.area)?
                .backing
                .read_pages(start.page, bytes)?;
            self.reads.add(range.len());
        }
        Ok(())
    }

    fn check_io(&self, slots: &[Slot], len: usize) -> Result<()> {
        if len != slots.len() * PAGE_SIZE {
            return Err(Error::invalid("one page per slot"));
        }
        for (start, range) in runs(slots) {
            let map = self.area(start.area)?.slots();
            let pages = start.page..start.page + range.len() as u64;
            if let Some(page) = pages.into_iter().find(|p| !map.in_use(*p)) {
                let slot = Slot { page, ..start };
                return Err(Error::invalid(format!("slot {slot:?} is not in use")));
            }
        }
        Ok(())
    }

    pub fn list(&self) -> Vec<SwapInfo> {
        let kib = |pages: u64| pages * PAGE_SIZE as u64 / 1024;
        (0..self.areas.len())
            .filter_map(|i| self.areas[i].as_ref().map(|a| (i, a)))
            .map(|(area, a)| SwapInfo {
                area,
                name: a.backing.name(),
                kind: a.backing.kind(),
                size_kib: kib(a.header.usable_pages()),
                used_kib: kib(a.slots().used()),
                priority: a.priority,
            })
            .collect()
    }

    /// The listing as /proc/swaps prints it.
    pub fn proc_swaps(&self) -> String {
        let mut out = String::from("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
        for s in self.list() {
            out += &format!(
                "{:<40}{:<16}{:<16}{:<16}{}\n",
                s.name, s.kind, s.size_kib, s.used_kib, s.priority
            );
        }
        out
    }

    pub fn stats(&self) -> SwapStats {
        let [reads, pages_in, bytes_in] = self.reads.get();
        let [writes, pages_out, bytes_out] = self.writes.get();
        SwapStats {
            pages_in,
            pages_out,
            bytes_in,
            bytes_out,
            reads,
            writes,
        }
    }

    /// The area a backing named `name` is, if active.
    pub fn find(&self, name: &str) -> Option<usize> {
        (0..self.areas.len()).find(|i| {
            self.areas[*i]
                .as_ref()
                .is_some_and(|a| a.backing.name() == name)
        })
    }
}

fn read_header(backing: &dyn Backing, pages: u64) -> Result<SwapHeader> {
    if pages == 0 {
        return Err(Error::invalid("Empty swap-file"));
    }
    let mut page = vec![0u8; PAGE_SIZE];
    backing.read_pages(0, &mut page)?;
    Ok(SwapHeader::decode(&page, pages, backing.is_file())?)
}

/// Runs of slots consecutive in one area: (first slot, index range in `slots`).
fn runs(slots: &[Slot]) -> Vec<(Slot, std::ops::Range<usize>)> {
    let mut out: Vec<(Slot, std::ops::Range<usize>)> = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        match out.last_mut() {
            Some((first, r)) if first.area == s.area && first.page + r.len() as u64 == s.page => {
                r.end = i + 1
            }
            _ => out.push((*s, i..i + 1)),
        }
    }
    out
}
