//! FUSE node ids for cowfs inodes. An inode is (subvolume, inode number), so two subvolumes and
//! every snapshot have inodes with the same number; the kernel needs one 64-bit id per inode
//! of the mount. Ids are handed out on first sight and kept for the life of the mount, so
//! `st_ino` is unique across subvolumes and snapshots of one mount. The table also counts the
//! kernel's references to each node (one per entry reply, dropped by forget): while the kernel
//! references an inode it may have it open, so the engine holds it past its last unlink.

use std::collections::HashMap;
use std::sync::Mutex;

use cowfs::InodeId;
use fuser::INodeNo;

pub struct NodeTable {
    inner: Mutex<Nodes>,
}

struct Nodes {
    by_inode: HashMap<InodeId, u64>,
    by_node: HashMap<u64, InodeId>,
    next: u64,
    /// The kernel's lookup count of each node it references.
    lookups: HashMap<u64, u64>,
}

impl NodeTable {
    /// A table where the mount's root (node 1, as FUSE requires) is `root`.
    pub fn new(root: InodeId) -> Self {
        NodeTable {
            inner: Mutex::new(Nodes {
                by_inode: HashMap::from([(root, INodeNo::ROOT.0)]),
                by_node: HashMap::from([(INodeNo::ROOT.0, root)]),
                next: INodeNo::ROOT.0 + 1,
                lookups: HashMap::new(),
            }),
        }
    }

    /// The node id of `id`, assigned now if the kernel has not seen it.
    pub fn node(&self, id: InodeId) -> INodeNo {
        let mut nodes = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(node) = nodes.by_inode.get(&id) {
            return INodeNo(*node);
        }
        let node = nodes.next;
        nodes.next += 1;
        nodes.by_inode.insert(id, node);
        nodes.by_node.insert(node, id);
        INodeNo(node)
    }

    /// The inode behind a node id the kernel passes in.
    pub fn inode(&self, node: INodeNo) -> Option<InodeId> {
        let nodes = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        nodes.by_node.get(&node.0).copied()
    }

    /// The kernel got `node` in an entry reply. True the first time it references it.
    pub fn looked_up(&self, node: INodeNo) -> bool {
        let mut nodes = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let count = nodes.lookups.entry(node.0).or_insert(0);
        *count += 1;
        *count == 1
    }

    /// The kernel dropped `n` references to `node`; the inode when it references it no more.
    pub fn forgotten(&self, node: INodeNo, n: u64) -> Option<InodeId> {
        let mut nodes = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let count = nodes.lookups.get_mut(&node.0)?;
        *count = count.saturating_sub(n);
        if *count > 0 {
            return None;
        }
        nodes.lookups.remove(&node.0);
        nodes.by_node.get(&node.0).copied()
    }
}
