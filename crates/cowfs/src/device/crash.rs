//! A device that remembers every write since it was made, grouped by the flushes between them,
//! so a test can build the image a power cut would have left at any moment: everything flushed
//! is there; of the writes after the last flush, any subset may have landed, in any order, and a
//! write may be torn at 512-byte sector boundaries.

use std::io;
use std::sync::Mutex;

use super::{check_aligned, BlockDevice};

/// The hardware sector: a torn write lands whole sectors, never part of one.
pub const SECTOR_SIZE: usize = 512;

#[derive(Debug, Clone)]
pub struct PendingWrite {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Where the power goes out: after `flushes` flushes completed, with the writes issued since
/// then filtered by `landed` (which may keep, drop or tear each one).
pub struct CrashPoint<'a> {
    pub flushes: usize,
    pub landed: &'a mut dyn FnMut(usize, &PendingWrite) -> Landing,
}

/// What became of one unflushed write at the power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    Lost,
    Whole,
    /// Only the sectors whose bit is set in the mask (sector i of the write is bit i % 64).
    Torn(u64),
}

#[derive(Debug)]
pub struct CrashDevice {
    state: Mutex<History>,
}

#[derive(Debug)]
struct History {
    base: Vec<u8>,
    /// Writes between consecutive flushes; the last epoch is the unflushed one.
    epochs: Vec<Vec<PendingWrite>>,
    /// Size changes: (epoch, writes of that epoch before it, new length).
    resizes: Vec<(usize, usize, u64)>,
    live: Vec<u8>,
}

impl CrashDevice {
    pub fn new(len: u64) -> Self {
        Self::from_image(vec![0; len as usize])
    }

    pub fn from_image(image: Vec<u8>) -> Self {
        CrashDevice {
            state: Mutex::new(History {
                live: image.clone(),
                base: image,
                epochs: vec![vec![]],
                resizes: vec![],
            }),
        }
    }

    /// How many flushes have completed so far.
    pub fn flush_count(&self) -> usize {
        self.state.lock().unwrap().epochs.len() - 1
    }

    /// The image a power cut at `point` leaves behind. Size changes count as done when issued
    /// (a file's size is metadata the host keeps with its own journal).
    pub fn crash_image(&self, point: CrashPoint<'_>) -> Vec<u8> {
        let state = self.state.lock().unwrap();
        let mut image = state.base.clone();
        let resize_at = |image: &mut Vec<u8>, epoch: usize, index: usize| {
            for &(_, _, len) in state
                .resizes
                .iter()
                .filter(|(e, i, _)| *e == epoch && *i == index)
            {
                image.resize(len as usize, 0);
            }
        };
        for (e, epoch) in state.epochs.iter().enumerate().take(point.flushes + 1) {
            let inflight = e == point.flushes;
            for (i, w) in epoch.iter().enumerate() {
                resize_at(&mut image, e, i);
                let landing = if inflight {
                    (point.landed)(i, w)
                } else {
                    Landing::Whole
                };
                apply(&mut image, w, landing);
            }
            resize_at(&mut image, e, epoch.len());
        }
        image
    }

    /// The image a clean power cut right after flush number `flushes` leaves.
    pub fn image_at_flush(&self, flushes: usize) -> Vec<u8> {
        self.crash_image(CrashPoint {
            flushes,
            landed: &mut |_, _| Landing::Lost,
        })
    }

    /// The writes issued after flush number `flushes` and before the next.
    pub fn writes_after_flush(&self, flushes: usize) -> usize {
        self.state
            .lock()
            .unwrap()
            .epochs
            .get(flushes)
            .map_or(0, Vec::len)
    }
}

fn apply(image: &mut Vec<u8>, w: &PendingWrite, landing: Landing) {
    let end = w.offset as usize + w.data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    for (i, sector) in w.data.chunks(SECTOR_SIZE).enumerate() {
        let lands = match landing {
            Landing::Lost => false,
            Landing::Whole => true,
            Landing::Torn(mask) => mask & (1 << (i % 64)) != 0,
        };
        if lands {
            let at = w.offset as usize + i * SECTOR_SIZE;
            image[at..at + sector.len()].copy_from_slice(sector);
        }
    }
}

impl BlockDevice for CrashDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let state = self.state.lock().unwrap();
        check_aligned(offset, buf.len(), state.live.len() as u64)?;
        buf.copy_from_slice(&state.live[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        check_aligned(offset, data.len(), state.live.len() as u64)?;
        state.live[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        let w = PendingWrite {
            offset,
            data: data.to_vec(),
        };
        state.epochs.last_mut().expect("an open epoch").push(w);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.state.lock().unwrap().epochs.push(vec![]);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.state.lock().unwrap().live.len() as u64
    }

    fn resize(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.live.resize(len as usize, 0);
        let epoch = state.epochs.len() - 1;
        let index = state.epochs[epoch].len();
        state.resizes.push((epoch, index, len));
        Ok(())
    }
}
