//! The real `hoard` binary as a child process: started on a cache directory, used through its
//! port, signalled and stopped, its console output read back; and `hoard cache ...` runs.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A running `hoard` process; killed when dropped.
pub(crate) struct Process {
    child: Child,
    pub addr: SocketAddr,
    /// The `--tls-port` listener's address, if any.
    pub tls_addr: Option<SocketAddr>,
    cache_dir: Option<tempfile::TempDir>,
    /// Everything hoard has written to stderr so far, collected as it comes so a test can
    /// wait for a line (`wait_for_log`).
    stderr: Arc<(Mutex<String>, Condvar)>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    pub(crate) fn start(flags: &[&str]) -> Process {
        Process::start_in(tempfile::tempdir().unwrap(), flags)
    }

    /// A hoard whose cache directory lives (and is deleted) with it.
    pub(crate) fn start_in(cache_dir: tempfile::TempDir, flags: &[&str]) -> Process {
        let mut process = Process::start_at(cache_dir.path(), flags);
        process.cache_dir = Some(cache_dir);
        process
    }

    /// A hoard using `cache_dir`, which the caller owns.
    pub(crate) fn start_at(cache_dir: &Path, flags: &[&str]) -> Process {
        Process::start_on_port(cache_dir, 0, flags, &[])
    }

    /// A hoard listening on `port` (a fleet's members must know each other's ports), with
    /// `env` added to its environment.
    pub(crate) fn start_on_port(
        cache_dir: &Path,
        port: u16,
        flags: &[&str],
        env: &[(String, String)],
    ) -> Process {
        let mut child = spawn(cache_dir, port, flags, env);
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "hoard listening on http://127.0.0.1:PORT (forward proxy), cache directory DIR"
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("start line: {line:?}"))
            .parse()
            .unwrap();
        let tls_addr = line
            .split(" and https://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|addr| addr.parse().unwrap());
        assert!(
            line.contains("forward proxy") && line.contains(cache_dir.to_str().unwrap()),
            "{line}"
        );
        let stderr: Arc<(Mutex<String>, Condvar)> = Arc::default();
        let mut pipe = child.stderr.take().unwrap();
        let collected = Arc::clone(&stderr);
        let stderr_reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                let (text, arrived) = &*collected;
                text.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
                arrived.notify_all();
            }
        });
        Process {
            child,
            addr,
            tls_addr,
            cache_dir: None,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// Waits until hoard has written `needle` to stderr (at most 10 s) and returns all of it.
    pub(crate) fn wait_for_log(&self, needle: &str) -> String {
        let (text, arrived) = &*self.stderr;
        let (text, timeout) = arrived
            .wait_timeout_while(text.lock().unwrap(), Duration::from_secs(10), |text| {
                !text.contains(needle)
            })
            .unwrap();
        assert!(!timeout.timed_out(), "no {needle:?} in stderr:\n{text}");
        text.clone()
    }

    pub(crate) fn client(&self) -> reqwest::Client {
        super::client_through(self.addr)
    }

    /// Peak resident memory so far, from /proc (VmHWM), in bytes.
    pub(crate) fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// `kill -9`: no shutdown, no flush; hands back the cache directory.
    pub(crate) fn kill_hard(mut self) -> tempfile::TempDir {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.cache_dir.take().expect("started with start_in")
    }

    /// Like `stop`, but hands back the cache directory so it outlives the process.
    pub(crate) fn stop_keeping_dir(mut self) -> (String, tempfile::TempDir) {
        let dir = self.cache_dir.take().expect("started with start_in");
        (self.stop(), dir)
    }

    pub(crate) async fn metric(&self, name: &str) -> u64 {
        crate::support::metric(self.addr, name).await
    }

    /// Sends `signal` ("HUP", "USR1", ...) with kill(1).
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Sends SIGTERM and returns what hoard wrote to stderr; asserts a clean exit.
    pub(crate) fn stop(self) -> String {
        self.signal("TERM");
        let (status, stderr) = self.wait_exit();
        assert!(status.success(), "exit status {status:?}");
        stderr
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until hoard exits (signalled by the caller); its status and stderr.
    pub(crate) fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        (status, self.stderr.0.lock().unwrap().clone())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a `hoard` on `cache_dir` that is expected not to start, and returns how it ended; one
/// still running after `within` is killed (its output then shows how far it got).
pub(crate) fn run_to_exit(cache_dir: &Path, flags: &[&str], within: Duration) -> Output {
    let mut child = spawn(cache_dir, 0, flags, &[]);
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

/// Runs `hoard cache ...` on `dir`.
pub(crate) fn cache_tool_output(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hoard"))
        .arg("cache")
        .args(args)
        .arg("--cache-dir")
        .arg(dir)
        .output()
        .unwrap()
}

/// Runs `hoard cache ...` on `dir`; returns (success, stdout).
pub(crate) fn cache_tool(dir: &Path, args: &[&str]) -> (bool, String) {
    let output = cache_tool_output(dir, args);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// `hoard PORT --cache-dir DIR FLAGS...` with its output piped.
fn spawn(
    cache_dir: &Path,
    port: u16,
    flags: &[&str],
    env: &[(String, String)],
) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_hoard"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg(port.to_string())
        .arg("--cache-dir")
        .arg(cache_dir)
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}
