//! Telling the kernel to drop what it cached (FUSE_NOTIFY_INVAL_ENTRY and _INODE), from a
//! thread of its own. The kernel carries out an entry invalidation under the directory's lock,
//! which a process in LOOKUP or READDIR of that directory holds while it waits for a serving
//! thread: a notification sent from a serving thread can wait for itself, and the whole mount
//! hangs. So serving threads only queue notifications; this thread sends them, and a serving
//! thread waits for its own to land only for a bounded time.

use std::ffi::OsString;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fuser::{INodeNo, Notifier};

enum Invalidation {
    /// A name in a directory (and the directory's attributes with it).
    Entry { parent: INodeNo, name: OsString },
    /// An inode's attributes and cached data.
    Inode(INodeNo),
}

/// The queue serving threads put invalidations on.
pub(crate) struct Invalidator {
    queue: Mutex<Sender<(u64, Invalidation)>>,
    /// Taken by the sending thread when the session starts.
    pending: Mutex<Option<Receiver<(u64, Invalidation)>>>,
    /// Numbers handed out, and the last one the sending thread finished.
    queued: Mutex<u64>,
    sent: Arc<(Mutex<u64>, Condvar)>,
}

impl Invalidator {
    pub(crate) fn new() -> Invalidator {
        let (queue, pending) = mpsc::channel();
        Invalidator {
            queue: Mutex::new(queue),
            pending: Mutex::new(Some(pending)),
            queued: Mutex::new(0),
            sent: Arc::new((Mutex::new(0), Condvar::new())),
        }
    }

    /// Starts the sending thread (once); what was queued before goes first.
    pub(crate) fn start(&self, notifier: Notifier) {
        let Some(pending) = self.pending.lock().unwrap().take() else {
            return;
        };
        let sent = self.sent.clone();
        let spawned = std::thread::Builder::new()
            .name("cowfs-invalidate".into())
            .spawn(move || send_all(&notifier, &pending, &sent));
        if let Err(e) = spawned {
            tracing::error!("cannot start the invalidation thread: {e}");
        }
    }

    /// Queues dropping `name` in `parent`; returns its number for [`Self::wait_sent`].
    pub(crate) fn entry(&self, parent: INodeNo, name: &str) -> u64 {
        self.push(Invalidation::Entry {
            parent,
            name: name.into(),
        })
    }

    /// Queues dropping an inode's cached attributes and data.
    pub(crate) fn inode(&self, node: INodeNo) -> u64 {
        self.push(Invalidation::Inode(node))
    }

    fn push(&self, what: Invalidation) -> u64 {
        let mut queued = self.queued.lock().unwrap();
        *queued += 1;
        // A closed queue means the session ended: nothing is cached any more.
        let _ = self.queue.lock().unwrap().send((*queued, what));
        *queued
    }

    /// Waits until invalidation `seq` was sent, for at most `limit`; whether it was.
    pub(crate) fn wait_sent(&self, seq: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let (done, wake) = &*self.sent;
        let mut done = done.lock().unwrap();
        while *done < seq {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = wake.wait_timeout(done, left).unwrap().0;
        }
        true
    }
}

fn send_all(
    notifier: &Notifier,
    pending: &Receiver<(u64, Invalidation)>,
    sent: &(Mutex<u64>, Condvar),
) {
    for (seq, what) in pending {
        // ENOENT: the kernel no longer has it cached, which is what was wanted.
        let _ = match &what {
            Invalidation::Entry { parent, name } => notifier.inval_entry(*parent, name),
            Invalidation::Inode(node) => notifier.inval_inode(*node, -1, 0),
        };
        let (done, wake) = sent;
        *done.lock().unwrap() = seq;
        wake.notify_all();
    }
}
