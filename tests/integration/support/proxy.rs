//! Starts hoard in-process, configured by the same flags a person would type.

use std::net::SocketAddr;

use hoard::server::Server;
use tokio::sync::oneshot;

pub(crate) struct Hoard {
    pub addr: SocketAddr,
    /// The `--tls-port` listener, when asked for.
    pub tls_addr: Option<SocketAddr>,
    _cache_dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Hoard {
    /// A hoard with a fresh temporary cache directory.
    pub(crate) async fn start(flags: &[&str]) -> Hoard {
        let cache_dir = tempfile::tempdir().unwrap();
        let mut hoard = Hoard::start_in(cache_dir.path(), flags).await;
        hoard._cache_dir = Some(cache_dir);
        hoard
    }

    /// A hoard using `dir` as its cache directory (to test what survives a restart).
    pub(crate) async fn start_in(dir: &std::path::Path, flags: &[&str]) -> Hoard {
        let log = dir.join("access.log").to_str().unwrap().to_owned();
        let dir = dir.to_str().unwrap().to_owned();
        // The access log goes to a file: in-process, stderr is the test runner's.
        let mut argv = vec!["hoard", "0", "--cache-dir", &dir, "--access-log", &log];
        argv.extend_from_slice(flags);
        let (config, _) = hoard::config::load(argv).unwrap();
        let server = Server::bind(&config).await.unwrap();
        let addr = server.local_addr();
        let tls_addr = server.tls_addr();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Hoard {
            addr,
            tls_addr,
            _cache_dir: None,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A reqwest client that uses this hoard as its HTTP proxy.
    pub(crate) fn client(&self) -> reqwest::Client {
        super::client_through(self.addr)
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server to end.
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}
