//! FUSE node ids for cowfs inodes. An inode is (subvolume, inode number), so two subvolumes and
//! every snapshot have inodes with the same number; the kernel needs one 64-bit id per inode
//! of the mount. Ids are handed out on first sight and kept for the life of the mount, so
//! `st_ino` is unique across subvolumes and snapshots of one mount.

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
}

impl NodeTable {
    /// A table where the mount's root (node 1, as FUSE requires) is `root`.
    pub fn new(root: InodeId) -> Self {
        NodeTable {
            inner: Mutex::new(Nodes {
                by_inode: HashMap::from([(root, INodeNo::ROOT.0)]),
                by_node: HashMap::from([(INodeNo::ROOT.0, root)]),
                next: INodeNo::ROOT.0 + 1,
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
}
