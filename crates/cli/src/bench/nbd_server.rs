//! nbdkit for the benchmarks' NBD cases (installed with apt-get when missing), serving one
//! export on a Unix socket in the benchmark's directory, stopped when dropped: `nbdkit memory`
//! (remote memory) or `nbdkit file` over an image, as a user would run them. Loopback on one
//! machine: what the figures show is the cost of the protocol, the hop and the server, not of
//! a network.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::ensure_tool;
use crate::CliResult;

pub(crate) struct NbdServer {
    socket: PathBuf,
    child: Child,
}

impl NbdServer {
    /// `nbdkit memory SIZE`: an export in the server's memory, remote memory on this machine.
    pub fn memory(dir: &Path, size: u64) -> CliResult<NbdServer> {
        Self::nbdkit(dir, &["memory", &size.to_string()])
    }

    /// `nbdkit file IMAGE cache=none`: an export backed by an image file, the server keeping
    /// none of it in the host's page cache, as the local cases' O_DIRECT image keeps none.
    pub fn file(dir: &Path, image: &Path) -> CliResult<NbdServer> {
        Self::nbdkit(dir, &["file", &image.display().to_string(), "cache=none"])
    }

    fn nbdkit(dir: &Path, plugin: &[&str]) -> CliResult<NbdServer> {
        ensure_tool("nbdkit", "nbdkit", "the NBD cases need nbdkit")?;
        let socket = Self::socket(dir);
        let ready = socket.with_extension("pid");
        let _ = std::fs::remove_file(&ready);
        let mut command = Command::new("nbdkit");
        command
            .args(["--foreground", "--exit-with-parent", "--pidfile"])
            .arg(&ready)
            .arg("--unix")
            .arg(&socket)
            .args(plugin);
        Self::start(command, socket, ready)
    }

    fn socket(dir: &Path) -> PathBuf {
        let socket = dir.join(format!("bench-nbd-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        socket
    }

    /// Starts the server and waits for `ready`, the PID file nbdkit writes once it listens.
    fn start(mut command: Command, socket: PathBuf, ready: PathBuf) -> CliResult<NbdServer> {
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("start {command:?}: {e}"))?;
        let mut server = NbdServer { socket, child };
        let start = Instant::now();
        while !ready.exists() {
            if let Some(status) = server.child.try_wait()? {
                return Err(format!("{command:?} exited: {status}").into());
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!("{command:?} did not start within 10 s").into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(&ready);
        Ok(server)
    }

    /// The export's address, with at most `connections` connections.
    pub fn uri(&self, connections: usize) -> String {
        format!(
            "nbd+unix:///?socket={}&connections={connections}",
            self.socket.display()
        )
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}
