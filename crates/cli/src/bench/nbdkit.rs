//! An NBD server for the benchmarks' NBD cases: nbdkit (installed with apt-get when missing),
//! serving one export on a Unix socket in the benchmark's directory, stopped when dropped.
//! Loopback on one machine: what the figures show is the cost of the protocol and the hop, not
//! of a network.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::ensure_tool;
use crate::CliResult;

pub(crate) struct Nbdkit {
    socket: PathBuf,
    child: Child,
}

impl Nbdkit {
    /// `nbdkit memory SIZE`: an export in the server's memory, remote memory on this machine.
    pub fn memory(dir: &Path, size: u64) -> CliResult<Nbdkit> {
        Self::start(dir, &["memory".into(), size.to_string()])
    }

    /// `nbdkit file PATH [OPTION]`: an export backed by a file.
    pub fn file(dir: &Path, path: &Path, option: &str) -> CliResult<Nbdkit> {
        Self::start(
            dir,
            &["file".into(), path.display().to_string(), option.into()],
        )
    }

    fn start(dir: &Path, plugin: &[String]) -> CliResult<Nbdkit> {
        ensure_tool("nbdkit", "nbdkit", "the NBD cases need an NBD server")?;
        let socket = dir.join(format!("bench-nbd-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("nbdkit")
            .args(["--foreground", "--exit-with-parent", "--unix"])
            .arg(&socket)
            .args(plugin)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("start nbdkit: {e}"))?;
        let mut server = Nbdkit { socket, child };
        let start = Instant::now();
        while !server.socket.exists() {
            if let Some(status) = server.child.try_wait()? {
                return Err(format!("nbdkit {} exited: {status}", plugin.join(" ")).into());
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err("nbdkit did not start within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
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

impl Drop for Nbdkit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}
