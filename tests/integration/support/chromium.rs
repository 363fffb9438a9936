//! Debian's headless Chromium, as the browser tests drive it: load a page, let it run until
//! it has loaded and is idle (virtual time), and return the DOM it ended with; or take a
//! screenshot of a page.

use std::time::Duration;

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium run headless with a fresh profile and nothing of its own on the network, with
/// `args` after those; stdout and stderr once it has finished.
async fn run(args: &[String]) -> (String, String) {
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
        .args(args)
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

/// What Chromium printed for `url`: the final DOM (stdout) and its log (stderr).
pub(crate) async fn dump_dom(url: &str) -> (String, String) {
    // Chromium runs the page until it has loaded and is idle (virtual time), then prints
    // the DOM: the load event has fired and the page's scripts have run.
    run(&[
        "--virtual-time-budget=10000".into(),
        "--dump-dom".into(),
        url.into(),
    ])
    .await
}

/// Chromium's screenshot of `url` at `width`×`height`, written to `png`.
pub(crate) async fn screenshot(url: &str, png: &std::path::Path, (width, height): (u32, u32)) {
    let (_, log) = run(&[
        "--hide-scrollbars".into(),
        format!("--window-size={width},{height}"),
        format!("--screenshot={}", png.display()),
        url.into(),
    ])
    .await;
    assert!(png.exists(), "no screenshot: {log}");
}
