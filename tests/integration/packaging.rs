//! What installs hoard: the manual page and shell completions the binary prints, the
//! systemd unit in `contrib/` (checked by `systemd-analyze verify` and its security
//! score), and the Dockerfile (its inputs exist and its command line is one hoard accepts).

use std::path::Path;
use std::process::Command;

const HOARD: &str = env!("CARGO_BIN_EXE_hoard");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `hoard args...`: (success, stdout, stderr).
fn hoard(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(HOARD).args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_manual_page_documents_every_flag_and_subcommand() {
    let (ok, page, _) = hoard(&["man"]);
    assert!(ok);
    assert!(page.contains(".TH hoard 1"), "{page}");
    for argument in hoard::config::cli().get_arguments() {
        if let Some(long) = argument.get_long() {
            let roff = format!("\\fB\\-\\-{}\\fR", long.replace('-', "\\-"));
            assert!(
                page.contains(&roff),
                "--{long} missing from the manual page"
            );
        }
    }
    for subcommand in ["cache", "ca", "man", "completions"] {
        assert!(
            page.contains(&format!("hoard\\-{subcommand}(1)")),
            "{subcommand}"
        );
    }
}

#[test]
fn shell_completions_are_valid_scripts_that_know_the_flags() {
    let (ok, bash, _) = hoard(&["completions", "bash"]);
    assert!(ok && bash.contains("--cache-dir") && bash.contains("complete -F _hoard"));
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), &bash).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(script.path())
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    let (ok, zsh, _) = hoard(&["completions", "zsh"]);
    assert!(ok && zsh.starts_with("#compdef hoard") && zsh.contains("--cache-dir"));
    let (ok, fish, _) = hoard(&["completions", "fish"]);
    assert!(ok && fish.contains("complete -c hoard") && fish.contains("cache-dir"));
    let (ok, _, error) = hoard(&["completions", "tcsh"]);
    assert!(!ok && error.contains("possible values"), "{error}");
}

/// The arguments of the unit's `ExecStart=` (after the program).
fn exec_start(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    line.split_whitespace().skip(1).map(str::to_owned).collect()
}

/// The flags of a hoard command line, with the config file and the cache directory
/// replaced by ones this test has, then `--check-config`: whether hoard accepts them.
fn accepts(args: &[String], cache_dir: &Path) -> (bool, String) {
    let example = format!("{ROOT}/hoard.example.toml");
    let mut args: Vec<String> = args.to_vec();
    for i in 1..args.len() {
        match args[i - 1].as_str() {
            "--config" => args[i] = example.clone(),
            "--cache-dir" => args[i] = cache_dir.display().to_string(),
            _ => {}
        }
    }
    let output = Command::new(HOARD)
        .args(&args)
        .arg("--check-config")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

#[test]
fn the_systemd_unit_verifies_is_hardened_and_starts_hoard_with_valid_flags() {
    let unit = std::fs::read_to_string(format!("{ROOT}/contrib/hoard.service")).unwrap();
    // systemd-analyze checks that the program exists: point it at the one built here.
    let dir = tempfile::tempdir().unwrap();
    let checked = dir.path().join("hoard.service");
    std::fs::write(&checked, unit.replace("/usr/local/bin/hoard", HOARD)).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&checked)
        .output()
        .expect("systemd-analyze (Debian's systemd package; .ci/run installs it)");
    let complaints = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    // Unknown keys are only warnings to systemd: any output at all fails here.
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&checked)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for hoard.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {report}"));
    assert!(
        exposure <= 2.0,
        "systemd rates the unit's exposure {exposure} (0 is best, 10 worst):\n{report}"
    );
    for directive in [
        "DynamicUser=yes",
        "CacheDirectory=hoard",
        "ProtectSystem=strict",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|line| line == directive), "{directive}");
    }
    let cache = tempfile::tempdir().unwrap();
    let (ok, said) = accepts(&exec_start(&unit), cache.path());
    assert!(ok, "hoard refuses the unit's ExecStart flags: {said}");
}

#[test]
fn the_dockerfile_copies_what_exists_and_runs_a_command_hoard_accepts() {
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).unwrap();
    let stages = dockerfile
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .count();
    assert_eq!(stages, 2, "a build stage and a runtime stage");
    for line in dockerfile.lines().filter(|line| line.starts_with("COPY ")) {
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        if parts[0].starts_with("--from=") {
            assert!(
                parts[1].ends_with("/target/release/hoard"),
                "the runtime copies the release binary: {line}"
            );
            continue;
        }
        for source in &parts[..parts.len() - 1] {
            assert!(
                Path::new(ROOT).join(source).exists(),
                "COPY {source}: not in the repository"
            );
        }
    }
    assert!(dockerfile.contains("cargo build --release --locked --bin hoard"));
    let entrypoint = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("ENTRYPOINT "))
        .expect("ENTRYPOINT");
    let command: Vec<String> = serde_json::from_str(entrypoint).unwrap();
    assert_eq!(command[0], "/usr/local/bin/hoard");
    let cache = tempfile::tempdir().unwrap();
    let (ok, said) = accepts(&command[1..], cache.path());
    assert!(ok, "hoard refuses the image's command line: {said}");
    assert!(said.contains("listen 0.0.0.0:8080"), "{said}");
    // Every file the build needs is copied in: the manifest's declared targets too.
    let manifest = std::fs::read_to_string(format!("{ROOT}/Cargo.toml")).unwrap();
    if manifest.contains("[[bench]]") {
        assert!(dockerfile.contains("COPY benches"));
    }
}
