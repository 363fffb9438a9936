//! Debian's headless Chromium, as the browser tests drive it: load a page, let it run until
//! it has loaded and is idle (virtual time), and return the DOM it ended with.

use std::time::Duration;

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

/// What Chromium printed for `url`: the final DOM (stdout) and its log (stderr). Each call
/// gets a fresh profile.
pub(crate) async fn dump_dom(url: &str) -> (String, String) {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)"
    );
    let profile = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        // Chromium runs the page until it has loaded and is idle (virtual time), then
        // prints the DOM: the load event has fired and the page's scripts have run.
        .args(["--virtual-time-budget=10000", "--dump-dom", url])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("chromium finished")
        .unwrap();
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
