//! The real `apt-get` through hoard with `--preset packages`, against a Debian repository
//! built here (`dpkg-deb`) and served by a plain file server (Python's `http.server`), as a
//! CI runner with an empty apt state would use it: the second run is served whole from the
//! cache.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::support::Hoard;

/// A command that must succeed; its output otherwise.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?}:\n{text}");
    text
}

fn sha256(path: &Path) -> String {
    run(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// A repository under `root/debian` with one suite, `stable`, holding the package
/// `hoard-hello` (its index also by hash, as Debian's are); returns the `.deb`'s path.
fn build_repository(root: &Path) -> PathBuf {
    let package = root.join("package");
    std::fs::create_dir_all(package.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(package.join("usr/share/doc/hoard-hello")).unwrap();
    let control = "Package: hoard-hello\nVersion: 1.0\nArchitecture: all\n\
                   Maintainer: hoard <hoard@localhost>\n";
    std::fs::write(
        package.join("DEBIAN/control"),
        format!("{control}Description: a package for hoard's tests\n"),
    )
    .unwrap();
    std::fs::write(package.join("usr/share/doc/hoard-hello/README"), "hello\n").unwrap();
    let pool = root.join("debian/pool/main/h");
    std::fs::create_dir_all(&pool).unwrap();
    let deb = pool.join("hoard-hello_1.0_all.deb");
    run(Command::new("dpkg-deb")
        .args(["-Zgzip", "--root-owner-group", "--build"])
        .arg(&package)
        .arg(&deb));
    let index_dir = root.join("debian/dists/stable/main/binary-amd64");
    std::fs::create_dir_all(index_dir.join("by-hash/SHA256")).unwrap();
    let packages = format!(
        "{control}Filename: pool/main/h/hoard-hello_1.0_all.deb\nSize: {}\nSHA256: {}\n\
         Description: a package for hoard's tests\n\n",
        std::fs::metadata(&deb).unwrap().len(),
        sha256(&deb)
    );
    let index = index_dir.join("Packages");
    std::fs::write(&index, &packages).unwrap();
    let index_hash = sha256(&index);
    std::fs::write(
        index_dir.join("by-hash/SHA256").join(&index_hash),
        &packages,
    )
    .unwrap();
    std::fs::write(
        root.join("debian/dists/stable/Release"),
        format!(
            "Origin: hoard\nSuite: stable\nCodename: stable\nDate: {}\n\
             Architectures: amd64\nComponents: main\nAcquire-By-Hash: yes\nSHA256:\n \
             {index_hash} {} main/binary-amd64/Packages\n",
            httpdate::fmt_http_date(std::time::SystemTime::now()),
            packages.len()
        ),
    )
    .unwrap();
    deb
}

/// Python's `http.server` serving `dir` on an ephemeral loopback port, logging each request
/// to `log`; killed on drop.
struct FileServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl FileServer {
    fn start(dir: &Path, log: PathBuf) -> FileServer {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 37535 (http://127.0.0.1:37535/) ..."
        let port = line
            .split(" port ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("http.server said {line:?}"));
        FileServer { child, port, log }
    }

    /// The requests it has answered.
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|line| line.contains("\"GET "))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `apt-get update` and `apt-get download hoard-hello` with an empty state of their own in
/// `dir` (a fresh CI runner) and `proxy` as the HTTP proxy; returns the downloaded file.
fn apt_round(dir: &Path, repository_port: u16, proxy: std::net::SocketAddr) -> Vec<u8> {
    for sub in [
        "parts",
        "sources.d",
        "state/lists/partial",
        "cache/archives/partial",
        "out",
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let sources = dir.join("sources.list");
    std::fs::write(
        &sources,
        format!(
            "deb [trusted=yes arch=amd64] http://127.0.0.1:{repository_port}/debian stable main\n"
        ),
    )
    .unwrap();
    let path = |sub: &str| dir.join(sub).to_str().unwrap().to_owned();
    let options = [
        format!("Dir::Etc::sourcelist={}", path("sources.list")),
        format!("Dir::Etc::sourceparts={}", path("sources.d")),
        format!("Dir::Etc::parts={}", path("parts")),
        format!("Dir::State={}", path("state")),
        "Dir::State::status=/dev/null".to_owned(),
        format!("Dir::Cache={}", path("cache")),
        "Debug::NoLocking=1".to_owned(),
        // Root would hand downloads to the `_apt` user, which cannot write here.
        "APT::Sandbox::User=root".to_owned(),
        "Acquire::Languages=none".to_owned(),
        format!("Acquire::http::Proxy=http://{proxy}"),
    ];
    let apt = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command.arg("-q").current_dir(dir.join("out"));
        for option in &options {
            command.arg("-o").arg(option);
        }
        run(command.args(args))
    };
    apt(&["update"]);
    apt(&["download", "hoard-hello"]);
    std::fs::read(dir.join("out/hoard-hello_1.0_all.deb")).unwrap()
}

#[tokio::test]
async fn apt_get_is_served_from_the_cache_the_second_time_under_the_packages_preset() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_repository(&dir.path().join("repository"));
    let server = FileServer::start(
        &dir.path().join("repository"),
        dir.path().join("server.log"),
    );
    let cache_dir = dir.path().join("cache");
    std::fs::create_dir_all(&cache_dir).unwrap();
    let hoard = Hoard::start_in(&cache_dir, &["--preset", "packages"]).await;
    let (port, proxy) = (server.port, hoard.addr);
    let rounds = dir.path().to_owned();
    let (first, second) = tokio::task::spawn_blocking(move || {
        let first = apt_round(&rounds.join("round-1"), port, proxy);
        (first, apt_round(&rounds.join("round-2"), port, proxy))
    })
    .await
    .unwrap();
    let original = std::fs::read(&deb).unwrap();
    assert!(
        first == original && second == original,
        "apt got the package both times"
    );
    let requests = server.requests();
    // InRelease (404), Release, Release.gpg (404), the index by hash, the package.
    assert_eq!(
        requests.len(),
        5,
        "only the first round reached the repository: {requests:#?}"
    );
    hoard.shutdown().await;
    let log = std::fs::read_to_string(cache_dir.join("access.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 10, "{log}");
    for line in &lines[5..] {
        assert!(line.contains("TCP_HIT/"), "second round: {line}");
    }
}
