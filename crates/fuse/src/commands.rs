//! The control ioctls on the daemon's side: swap pins, and whole-filesystem commands
//! (snapshot, subvolumes, defrag, balance, resize, scrub, fiemap) run by the command runner
//! the mount was given. A command that adds or removes names behind the kernel's back is
//! followed by telling the kernel to drop what it cached of them.

use cowfs::InodeId;
use fuser::Request;

use crate::control::{self, Refusal};
use crate::served::CowfsFuse;
use crate::swapfile::require_root;

/// The commands a mount runs: the ones that change no file's data behind the kernel's page
/// cache (defrag and balance move data without changing it; a property says how new data is
/// stored).
const ALLOWED: [&str; 13] = [
    "snapshot",
    "subvol",
    "subvol_create",
    "subvol_delete",
    "subvol_list",
    "defrag",
    "balance",
    "resize",
    "scrub",
    "fiemap",
    "map-swapfile",
    "property",
    "swap-status",
];

impl CowfsFuse {
    /// Runs a control ioctl; None when `cmd` is not one.
    pub(crate) fn control(
        &self,
        req: &Request,
        id: InodeId,
        cmd: u32,
        input: &[u8],
    ) -> Option<Vec<u8>> {
        let result = match cmd {
            control::SWAP_ACTIVATE => self.pin_swapfile(req, id),
            control::SWAP_DEACTIVATE => self.unpin_swapfile(req, id),
            control::SWAP_ACTIVATE_THROUGH_FS => self.activate_through_fs(req, id),
            control::SWAP_DEACTIVATE_THROUGH_FS => self.deactivate_through_fs(req, id),
            control::COMMAND => self.command(req, &control::text(input)),
            _ => return None,
        };
        Some(control::encode(result, control::arg_len(cmd)))
    }

    fn command(&self, req: &Request, line: &str) -> Result<String, Refusal> {
        require_root(req)?;
        let name = line.split_whitespace().next().unwrap_or_default();
        if !ALLOWED.contains(&name) {
            return Err(Refusal {
                errno: libc::EINVAL,
                reason: format!("{name:?} is not a command a mount runs"),
            });
        }
        let runner = self.runner.as_ref().ok_or_else(|| Refusal {
            errno: libc::ENOTTY,
            reason: "this mount was started without commands".into(),
        })?;
        // The names the command may add or remove, found while they still resolve.
        let named: Vec<(InodeId, String)> = line
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
            .filter_map(|path| self.fs.resolve_parent(path).ok())
            .map(|(dir, name)| (dir, name.to_string()))
            .collect();
        let result = runner.run(&self.fs, line);
        let last = named
            .iter()
            .map(|(dir, name)| self.forget_name(*dir, name))
            .max();
        if let Some(seq) = last {
            self.wait_forgotten(seq);
        }
        result
    }
}
