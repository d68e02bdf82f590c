//! A mount in the foreground until it is unmounted: by `umount`, by `cowfs umount`, or by
//! SIGINT, SIGTERM or SIGHUP to the daemon, which unmount it. Either way the session ends,
//! and the filesystem commits everything before the daemon exits.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cowfs::Filesystem;

use crate::{spawn_mount, CommandRunner, MountOptions};
use std::sync::Arc;

const STOP_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn stop_signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset and sigaddset initialise and fill a set on our own stack.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for signal in STOP_SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Blocks the stop signals in this thread and every thread it starts from now on, so that
/// only the waiter in [`serve`] receives them. Call it before opening the filesystem: its
/// commit thread must not be the one a signal kills.
pub fn block_stop_signals() -> io::Result<()> {
    let set = stop_signal_set();
    // SAFETY: the set is initialised; a null old set is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Marks this thread, and every thread it starts from now on (the flag is per thread and
/// inherited), as part of the I/O path (PR_SET_IO_FLUSHER): their allocations never wait on
/// I/O reclaim, which could need this very daemon. Call it before opening the filesystem, so
/// its commit and writeback threads have it too. Needs CAP_SYS_RESOURCE (root).
pub fn become_io_flusher() -> io::Result<()> {
    const PR_SET_IO_FLUSHER: i32 = 57;
    // SAFETY: prctl with an option and integer arguments.
    if unsafe { libc::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Mounts `fs` and serves it until the mount goes away; then commits. `ready` runs once the
/// mount is visible.
pub fn serve(
    fs: Filesystem,
    mountpoint: &Path,
    options: &MountOptions,
    runner: Option<Arc<dyn CommandRunner>>,
    ready: impl FnOnce(),
) -> io::Result<()> {
    let mount = spawn_mount(fs, mountpoint, options, runner)?;
    ready();
    let target = mountpoint.to_path_buf();
    std::thread::Builder::new()
        .name("cowfs-signals".into())
        .spawn(move || unmount_on_signal(target))?;
    mount.join()
}

/// A signal unmounts. When something still uses the mount (an open file) it is detached
/// instead, and the session ends, with its commit, when the last user lets go; but never while
/// the kernel swaps to a file on it: a detached swap file has no path left for swapoff.
fn unmount_on_signal(mountpoint: PathBuf) {
    let set = stop_signal_set();
    let mut signal = 0;
    // SAFETY: the set is initialised and the signals in it are blocked in every thread.
    while unsafe { libc::sigwait(&set, &mut signal) } == 0 {
        match unmount_for_signal(&mountpoint) {
            Ok(()) => return,
            Err(e) => tracing::warn!(
                "not unmounting {} on signal {signal}: {e}",
                mountpoint.display()
            ),
        }
    }
}

fn unmount_for_signal(mountpoint: &Path) -> io::Result<()> {
    // Checked first: the kernel reaches a swap file through a bind mount of it (`swaps`), so
    // the mount point itself is not busy, yet unmounting it would leave the swap file with no
    // path in the mount.
    if let Some(area) = crate::swaps::under(mountpoint)?.first() {
        return Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "{} is an active swap file; swapoff it first",
                area.file.display()
            ),
        ));
    }
    match unmount(mountpoint) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => unmount_lazily(mountpoint),
        other => other,
    }
}

/// Unmounts a mount point; EBUSY while something uses it, as umount(8) says.
pub fn unmount(mountpoint: &Path) -> io::Result<()> {
    let path = CString::new(mountpoint.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // A file or directory just closed can keep the mount busy until the kernel has sent its
    // release: EBUSY is tried again for a moment before it is the answer.
    for _ in 0..20 {
        // SAFETY: `path` is a valid NUL-terminated string.
        if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(err);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(io::Error::from_raw_os_error(libc::EBUSY))
}

/// Detaches a mount now; the session ends when its last user lets go.
pub fn unmount_lazily(mountpoint: &Path) -> io::Result<()> {
    let path = CString::new(mountpoint.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `path` is a valid NUL-terminated string.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    Err(io::Error::last_os_error())
}
