//! Faults served in the faulting thread: with UFFD_FEATURE_SIGBUS the kernel raises SIGBUS in
//! the thread that touched a missing or write-protected page of a region, and this handler
//! serves the fault there and returns, so the access is retried. No hand-off between threads
//! (the hand-off is what a fault thread costs), but a fault the kernel itself takes fails with
//! EFAULT. One pager of this mode per process: the handler finds it in a static.
//!
//! The handler takes the pager's locks and does its I/O. That is safe as long as no thread
//! touches region memory while it holds the pager's locks, which only the pager's own code
//! could do, and it only touches pages that are resident. Its buffers are allocated up front.

use std::io;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::pager::Inner;

/// The pager whose faults come as SIGBUS.
static PAGER: Mutex<Option<Weak<Inner>>> = Mutex::new(None);
/// The SIGBUS action before ours: a SIGBUS that is not the pager's goes back to it.
static PREVIOUS: OnceLock<usize> = OnceLock::new();

/// Makes `pager` the one the SIGBUS handler serves, installing the handler.
pub(crate) fn register(pager: &Arc<Inner>) -> io::Result<()> {
    let mut current = PAGER.lock().unwrap_or_else(|p| p.into_inner());
    if current.as_ref().is_some_and(|w| w.strong_count() > 0) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "one in-thread pager per process",
        ));
    }
    *current = Some(Arc::downgrade(pager));
    // SAFETY: a sigaction with a handler of the SA_SIGINFO shape, installed process-wide; the
    // one it replaced the first time is kept (leaked on purpose: the handler may need it at
    // any time). Installed again each time: a foreign SIGBUS may have put the old one back.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        let previous: &'static mut libc::sigaction = Box::leak(Box::new(std::mem::zeroed()));
        if libc::sigaction(libc::SIGBUS, &action, previous) != 0 {
            return Err(io::Error::last_os_error());
        }
        if previous.sa_sigaction != action.sa_sigaction {
            let _ = PREVIOUS.set(previous as *const libc::sigaction as usize);
        }
    }
    Ok(())
}

extern "C" fn on_sigbus(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo for a SA_SIGINFO handler.
    let address = unsafe { (*info).si_addr() } as usize;
    let pager = PAGER
        .lock()
        .ok()
        .and_then(|p| p.as_ref().and_then(Weak::upgrade));
    if pager.is_some_and(|p| p.fault_in_thread(address)) {
        return;
    }
    // Not a fault this pager serves (or a poisoned page): the action from before the pager,
    // the default one if there was none, on the retry of the access.
    // SAFETY: sigaction(2) is async-signal-safe, and the saved action lives for good.
    unsafe {
        match PREVIOUS.get() {
            Some(&previous) => libc::sigaction(
                libc::SIGBUS,
                previous as *const libc::sigaction,
                std::ptr::null_mut(),
            ),
            None => libc::signal(libc::SIGBUS, libc::SIG_DFL) as libc::c_int,
        };
    }
}
