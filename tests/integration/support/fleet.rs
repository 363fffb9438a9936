//! A fleet of real `hoard` processes on 127.0.0.2, .3, .4, ... (all of 127.0.0.0/8 is
//! loopback on Linux), one port for all, reading their member list from one config file
//! so a SIGHUP can change it; and the owner of a URL worked out offline with hoard's own
//! rendezvous function.

use std::time::{Duration, Instant};

use hoard::fleet::rendezvous::{self, MemberHash};

use super::process::Process;

pub(crate) struct Fleet {
    pub port: u16,
    /// Node `i` listens on 127.0.0.(2+i); `None` once killed.
    pub nodes: Vec<Option<Process>>,
    dirs: Vec<tempfile::TempDir>,
    config: tempfile::NamedTempFile,
    flags: Vec<String>,
    /// Flags for one node only, by index.
    node_flags: Vec<Vec<String>>,
    env: Vec<(String, String)>,
}

impl Fleet {
    /// `members` nodes, each listing all of them, started with `flags` too.
    pub(crate) async fn start(members: usize, flags: &[&str]) -> Fleet {
        Fleet::start_with_env(members, flags, Vec::new()).await
    }

    /// Like `start`, with `env` in every node's environment (the shared tier's credentials).
    pub(crate) async fn start_with_env(
        members: usize,
        flags: &[&str],
        env: Vec<(String, String)>,
    ) -> Fleet {
        Fleet::start_each(members, flags, Vec::new(), env).await
    }

    /// Like `start`, node `i` also getting `node_flags[i]`.
    pub(crate) async fn start_each(
        members: usize,
        flags: &[&str],
        node_flags: Vec<Vec<String>>,
        env: Vec<(String, String)>,
    ) -> Fleet {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut fleet = Fleet {
            port,
            nodes: Vec::new(),
            dirs: (0..members).map(|_| tempfile::tempdir().unwrap()).collect(),
            config: tempfile::NamedTempFile::new().unwrap(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            node_flags,
            env,
        };
        fleet.write_members(members);
        for i in 0..members {
            let node = fleet.spawn(i);
            fleet.nodes.push(Some(node));
        }
        // Nodes started with flags of their own may disagree with the others on purpose:
        // only the others are waited for.
        let alike: Vec<usize> = (0..members)
            .filter(|i| fleet.node_flags.get(*i) == fleet.node_flags.first())
            .collect();
        fleet.wait_until_up_on(&alike, members).await;
        fleet
    }

    pub(crate) fn ip(i: usize) -> String {
        format!("127.0.0.{}", 2 + i)
    }

    /// The member names of a fleet of `members`, as every node hashes them.
    pub(crate) fn names(&self, members: usize) -> Vec<String> {
        (0..members)
            .map(|i| format!("http://{}:{}", Fleet::ip(i), self.port))
            .collect()
    }

    /// Writes the member list for `members` nodes into the shared config file.
    pub(crate) fn write_members(&self, members: usize) {
        let list: Vec<String> = self
            .names(members)
            .iter()
            .map(|n| format!("{n:?}"))
            .collect();
        std::fs::write(
            self.config.path(),
            format!("peers = [{}]\n", list.join(", ")),
        )
        .unwrap();
    }

    fn spawn(&mut self, i: usize) -> Process {
        while self.dirs.len() <= i {
            self.dirs.push(tempfile::tempdir().unwrap());
        }
        let ip = Fleet::ip(i);
        let config = self.config.path().to_str().unwrap().to_owned();
        let mut flags: Vec<&str> =
            vec!["--bind", &ip, "--config", &config, "--allow", "127.0.0.0/8"];
        flags.extend(self.flags.iter().map(String::as_str));
        if let Some(own) = self.node_flags.get(i) {
            flags.extend(own.iter().map(String::as_str));
        }
        Process::start_on_port(self.dirs[i].path(), self.port, &flags, &self.env)
    }

    /// Starts node `i` (again, on the cache directory it had, or a new one when `empty`).
    pub(crate) async fn start_node(&mut self, i: usize, empty: bool) {
        if empty && i < self.dirs.len() {
            self.dirs[i] = tempfile::tempdir().unwrap();
        }
        let node = self.spawn(i);
        if i < self.nodes.len() {
            self.nodes[i] = Some(node);
        } else {
            self.nodes.push(Some(node));
        }
    }

    /// `kill -9` of node `i`.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            drop(node);
        }
    }

    pub(crate) fn node(&self, i: usize) -> &Process {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub(crate) fn client(&self, i: usize) -> reqwest::Client {
        self.node(i).client()
    }

    /// Waits until every running node sees `members` members, every running one up.
    pub(crate) async fn wait_until_up(&self, members: usize) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect();
        self.wait_until_up_on(&running, members).await;
    }

    /// Waits until each node in `nodes` sees `members` members, and every one of `nodes`
    /// that runs up.
    pub(crate) async fn wait_until_up_on(&self, nodes: &[usize], members: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        for node in nodes.iter().filter_map(|i| self.nodes[*i].as_ref()) {
            loop {
                let stats = super::stats(node.addr).await;
                let fleet = stats["fleet"].as_array().cloned().unwrap_or_default();
                let running: Vec<String> = nodes
                    .iter()
                    .filter(|i| self.nodes[**i].is_some())
                    .map(|i| format!("http://{}:{}", Fleet::ip(*i), self.port))
                    .collect();
                let ready = fleet.len() == members
                    && fleet.iter().all(|m| {
                        m["up"].as_bool() == Some(true)
                            || !running.contains(&m["name"].as_str().unwrap_or("").to_owned())
                    });
                if ready {
                    break;
                }
                assert!(Instant::now() < deadline, "fleet not ready: {stats}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Which node owns `url` in a fleet of `members`, computed here, not by the nodes.
    pub(crate) fn owner(&self, members: usize, url: &str) -> usize {
        let hashes: Vec<MemberHash> = self
            .names(members)
            .iter()
            .map(|n| MemberHash::of(n))
            .collect();
        let key = hoard::cache::CacheKey::from_uri(&url.parse().unwrap()).unwrap();
        rendezvous::owner(&hashes, rendezvous::routing_key(key.url())).unwrap()
    }

    /// The node that answered as owner, from the first `Cache-Status` entry's name.
    pub(crate) fn answered_by(&self, cache_status: &str) -> usize {
        let name = cache_status
            .split(';')
            .next()
            .and_then(|n| n.strip_prefix("hoard/127.0.0."))
            .and_then(|rest| rest.split(':').next())
            .and_then(|last| last.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no owner named in {cache_status:?}"));
        name - 2
    }
}
