//! Pause, resume and cancel for the running exclusive operation (balance): requests come from
//! other threads, and the operation looks at them between its steps.

use std::sync::{Condvar, Mutex};

use crate::error::{Errno, Error, Result};

/// Pause and cancel requests for the running exclusive operation.
#[derive(Debug, Default)]
pub(in crate::fs) struct Control {
    state: Mutex<ControlState>,
    wake: Condvar,
}

#[derive(Debug, Default)]
pub(in crate::fs) struct ControlState {
    running: bool,
    pub(in crate::fs) paused: bool,
    pub(in crate::fs) cancel: bool,
}

impl Control {
    pub(in crate::fs) fn start(&self) {
        *self.state.lock().unwrap() = ControlState {
            running: true,
            paused: false,
            cancel: false,
        };
    }

    pub(in crate::fs) fn stop(&self) {
        self.state.lock().unwrap().running = false;
        self.wake.notify_all();
    }

    /// Waits while paused; true when the operation is to stop.
    pub(in crate::fs) fn should_stop(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        while state.paused && !state.cancel {
            state = self.wake.wait(state).unwrap();
        }
        state.cancel
    }

    pub(in crate::fs) fn request(&self, change: impl FnOnce(&mut ControlState)) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        if !state.running {
            return Err(Error::new(Errno::INVAL, "no balance is running"));
        }
        change(&mut state);
        self.wake.notify_all();
        Ok(())
    }
}
