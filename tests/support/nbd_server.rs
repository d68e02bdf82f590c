//! An NBD server for the tests of every crate (included with `#[path]`): nbdkit, installed
//! with apt-get when missing, serving one export on a Unix socket in a directory the test owns,
//! killed when dropped. Without nbdkit (and no way to install it) a test skips with the reason,
//! or fails under CI=true.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct NbdServer {
    dir: tempfile::TempDir,
    socket: PathBuf,
    /// A loopback TCP port instead of the socket, when the server listens there.
    port: Option<u16>,
    /// The plugin and its arguments, to start the same server again.
    plugin: Vec<String>,
    child: Option<Child>,
}

fn run(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure nbdkit is installed; the reason it is not otherwise.
fn nbdkit() -> Result<(), String> {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let present = || run(Command::new("nbdkit").arg("--version"));
    if present() {
        return Ok(());
    }
    let install = || run(Command::new("apt-get").args(["install", "-y", "-q", "nbdkit"]));
    let installed = install() || (run(Command::new("apt-get").args(["update", "-q"])) && install());
    if installed && present() {
        return Ok(());
    }
    Err("nbdkit is missing and apt-get install nbdkit failed".into())
}

impl NbdServer {
    /// `nbdkit memory SIZE`: an export in the server's RAM (remote memory, on one machine).
    pub fn memory(size: &str) -> Option<NbdServer> {
        Self::start(&["memory", size])
    }

    /// `nbdkit file PATH`: an export backed by a file, which outlives the server.
    pub fn file(path: &Path) -> Option<NbdServer> {
        Self::start(&["file", &path.display().to_string()])
    }

    /// `nbdkit memory SIZE` on a free loopback TCP port.
    pub fn memory_tcp(size: &str) -> Option<NbdServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        Self::start_at(&["memory", size], Some(port))
    }

    /// A server of `plugin` (with nbdkit filters or plugin arguments); `None` is a skip.
    pub fn start(plugin: &[&str]) -> Option<NbdServer> {
        Self::start_at(plugin, None)
    }

    fn start_at(plugin: &[&str], port: Option<u16>) -> Option<NbdServer> {
        if let Err(why) = nbdkit() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "required in CI: {why}"
            );
            eprintln!("skipped: {why}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut server = NbdServer {
            socket: dir.path().join("nbd.sock"),
            port,
            dir,
            plugin: plugin.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.restart();
        Some(server)
    }

    /// The export's address.
    pub fn uri(&self) -> String {
        match self.port {
            Some(port) => format!("nbd://127.0.0.1:{port}/"),
            None => format!("nbd+unix:///?socket={}", self.socket.display()),
        }
    }

    /// A directory of the test's, removed with the server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server at once (SIGKILL): connections reset, requests in flight unanswered.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Starts the server (again), and waits until it takes connections.
    pub fn restart(&mut self) {
        self.kill();
        // nbdkit writes its PID file once it listens: the sign it is ready.
        let ready = self.dir.path().join("nbdkit.pid");
        let _ = std::fs::remove_file(&ready);
        let mut command = Command::new("nbdkit");
        command.args(["--foreground", "--exit-with-parent", "--pidfile"]);
        command.arg(&ready);
        match self.port {
            Some(port) => command.args(["--ipaddr", "127.0.0.1", "--port", &port.to_string()]),
            None => command.arg("--unix").arg(&self.socket),
        };
        let child = command
            .args(&self.plugin)
            .stdout(Stdio::null())
            .spawn()
            .expect("start nbdkit");
        self.child = Some(child);
        let start = Instant::now();
        while !ready.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nbdkit did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
