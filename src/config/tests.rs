//! Loading flags and files into a `Config`: defaults, overrides, validation messages.

use super::*;
use std::net::IpAddr;

fn parse(args: &[&str]) -> Result<Config, ConfigError> {
    let mut full = vec!["hoard"];
    full.extend_from_slice(args);
    match load(full) {
        Ok((config, _)) => Ok(config),
        Err(LoadError::Invalid(e)) => Err(e),
        Err(LoadError::Usage(e)) => panic!("flags do not parse: {e}"),
    }
}

fn with_file(text: &str, flags: &[&str]) -> Result<Config, ConfigError> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let path = file.path().to_str().unwrap().to_owned();
    let mut args = vec!["--config", path.as_str()];
    args.extend_from_slice(flags);
    parse(&args)
}

#[test]
fn every_flag_has_a_config_file_key() {
    let command = Args::command();
    let given = command.clone().get_matches_from(["hoard"]);
    let settings: Vec<String> = command
        .get_arguments()
        .filter(|arg| file::is_setting(arg))
        .map(file::setting_name)
        .collect();
    assert!(settings.len() >= 27, "{settings:?}");
    for name in &settings {
        // A wrong type is fine here; an unknown key is not.
        if let Err(e) = file::as_arguments(&format!("{name} = 0"), &command, &given) {
            assert!(!e.contains("unknown key"), "--{name} has no file key: {e}");
        }
    }
    for name in RELOADABLE {
        assert!(
            settings.iter().any(|s| s == name),
            "RELOADABLE names {name}"
        );
    }
}

#[test]
fn check_config_prints_a_file_that_loads_to_the_same_settings() {
    let config = with_file(
        include_str!("../../hoard.example.toml"),
        &["--allow", "10.0.0.0/8", "--reject-get-body", "-vv"],
    )
    .unwrap();
    let printed = config.to_file_text();
    assert!(printed.contains("allow = [\"10.0.0.0/8\"]\n"), "{printed}");
    assert!(printed.contains("connect-timeout = \"5s\"\n"), "{printed}");
    let again = with_file(&printed, &[]).unwrap();
    assert_eq!(again.effective, config.effective, "{printed}");
    assert_eq!(again.verbose, 2);
    assert!(again.proxy.access.reject_get_body);
}

#[test]
fn a_reload_names_every_changed_setting_that_needs_a_restart() {
    let base = ["--cache-dir", "/tmp/x"];
    let started = parse(&base).unwrap();
    let mut changed_args = base.to_vec();
    changed_args.extend([
        "--allow",
        "10.0.0.0/8",
        "--cache-memory",
        "32MiB",
        "--request-timeout",
        "5s",
        "--verbose",
    ]);
    let changed = parse(&changed_args).unwrap();
    assert_eq!(
        started.restart_needed(&changed),
        ["request-timeout", "cache-memory", "verbose"],
        "allow is applied by the reload"
    );
    assert!(started.restart_needed(&parse(&base).unwrap()).is_empty());
}

#[test]
fn the_configuration_reference_lists_every_setting_and_what_a_reload_applies() {
    let docs = include_str!("../../docs/configuration.md");
    let command = Args::command();
    for arg in command.get_arguments().filter(|arg| file::is_setting(arg)) {
        let name = file::setting_name(arg);
        assert!(
            docs.contains(&format!("| `{name}`")),
            "docs/configuration.md has no row for `{name}`"
        );
    }
    let reloading = docs
        .split("## Reloading")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Reloading section");
    // "applies ...: `allow`, ... Changes to `port`, ... need a restart".
    let applied = reloading.split("Changes to").next().unwrap_or(reloading);
    for name in RELOADABLE {
        assert!(
            applied.contains(&format!("`{name}`")),
            "the Reloading section does not list `{name}` as applied"
        );
    }
}

#[test]
fn the_example_file_loads() {
    let config = with_file(include_str!("../../hoard.example.toml"), &[]).unwrap();
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.cache.memory_size, 128 << 20);
    assert_eq!(
        config.proxy.upstream.connect_timeout,
        Duration::from_secs(5)
    );
}

#[test]
fn flags_override_the_file_and_the_file_overrides_defaults() {
    let text =
        "port = 9000\ncache-dir = \"/tmp/h\"\nconnect-timeout = \"3s\"\ncache-disk = 1048576000\n";
    let config = with_file(text, &["--connect-timeout", "7s"]).unwrap();
    assert_eq!(config.listen.port(), 9000);
    assert_eq!(
        config.proxy.upstream.connect_timeout,
        Duration::from_secs(7)
    );
    assert_eq!(config.cache.disk_size, 1_048_576_000);
    assert_eq!(
        config.proxy.upstream.first_byte_timeout,
        Duration::from_secs(60),
        "untouched default"
    );
}

#[test]
fn bad_files_name_the_key_and_the_reason() {
    let unknown = with_file("cache-dri = \"/tmp\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("cache-dri"), "{unknown}");
    let bad = with_file("connect-timeout = \"soon\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains("connect-timeout") && bad.contains("soon"),
        "{bad}"
    );
    // In the file's terms: the key as written and the line to write instead.
    for (text, expected) in [
        (
            "connect-timeout = 10\n",
            "connect-timeout = 10: a duration needs a unit; write connect-timeout = \"10s\"",
        ),
        (
            "allow = 10.0.0.0/8\n",
            "allow is a list: allow = [\"10.0.0.0/8\"]",
        ),
        ("bind = 0.0.0.0\n", "write bind = \"0.0.0.0\""),
        (
            "cache_dir = \"/tmp\"\n",
            "unknown key `cache_dir`; did you mean `cache-dir`?",
        ),
        (
            "max-connections = \"many\"\n",
            "max-connections is a whole number, e.g. max-connections = 10000",
        ),
    ] {
        let error = with_file(text, &[]).unwrap_err().to_string();
        assert!(error.contains(expected), "{text}: {error}");
        assert!(
            !error.contains("'--"),
            "names the key, not the flag: {error}"
        );
    }
    let impossible = with_file("cache-disk = \"1MiB\"\ncache-dir = \"/x\"\n", &[])
        .unwrap_err()
        .to_string();
    // Settings the file set are named by their keys; a flag given on the command line stays
    // a flag.
    assert!(
        impossible.contains("max-object-size 67108864 is larger than cache-disk 1048576")
            && !impossible.contains("--cache-disk"),
        "{impossible}"
    );
    let mixed = with_file("cache-disk = \"1MiB\"\n", &["--max-object-size", "2MiB"])
        .unwrap_err()
        .to_string();
    assert!(
        mixed.contains("--max-object-size 2097152 is larger than cache-disk 1048576"),
        "{mixed}"
    );
    let flags_only = parse(&["--cache-disk", "1MiB"]).unwrap_err().to_string();
    assert!(flags_only.contains("--cache-disk"), "{flags_only}");
}

#[test]
fn defaults_listen_on_loopback_8080() {
    let config = parse(&["--cache-dir", "/tmp/x"]).unwrap();
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert!(matches!(config.proxy.mode, Mode::Forward));
    assert_eq!(config.proxy.access.connect_ports, vec![443]);
}

#[test]
fn the_port_is_an_argument_a_flag_or_part_of_listen_and_the_printed_file_says_it_once() {
    let listen = |args: &[&str]| parse(args).unwrap().listen.to_string();
    assert_eq!(listen(&["3128"]), "127.0.0.1:3128");
    assert_eq!(listen(&["--port", "3128"]), "127.0.0.1:3128");
    assert_eq!(listen(&["--listen", "[::1]:3129"]), "[::1]:3129");
    assert_eq!(
        with_file("listen = \"127.0.0.2:3130\"\n", &[])
            .unwrap()
            .listen
            .to_string(),
        "127.0.0.2:3130"
    );
    for clash in [
        &["3128", "--port", "3129"][..],
        &["--listen", "127.0.0.1:1", "--bind", "::1"],
    ] {
        let mut argv = vec!["hoard"];
        argv.extend_from_slice(clash);
        assert!(matches!(load(argv), Err(LoadError::Usage(_))), "{clash:?}");
    }
    for args in [&["--port", "3128"][..], &["--listen", "127.0.0.2:3130"]] {
        let config = parse(args).unwrap();
        let printed = config.to_file_text();
        let again = with_file(&printed, &[]).unwrap();
        assert_eq!(again.listen, config.listen, "{printed}");
    }
}

#[test]
fn access_lists_default_to_loopback_and_take_addresses_or_blocks() {
    let config = parse(&["--cache-dir", "/tmp/x"]).unwrap();
    let allowed = |list: &[IpNet], ip: &str| {
        list.iter()
            .any(|net| net.contains(&ip.parse::<IpAddr>().unwrap()))
    };
    assert!(
        allowed(&config.proxy.access.allow, "127.0.0.1")
            && allowed(&config.proxy.access.allow, "127.9.9.9")
    );
    assert!(
        allowed(&config.proxy.access.allow, "::1")
            && !allowed(&config.proxy.access.allow, "10.0.0.1")
    );
    let config = parse(&[
        "--cache-dir",
        "/tmp/x",
        "--allow",
        "10.0.0.0/8",
        "--allow",
        "192.0.2.7",
    ])
    .unwrap();
    assert!(
        allowed(&config.proxy.access.allow, "10.1.2.3")
            && allowed(&config.proxy.access.allow, "192.0.2.7")
    );
    assert!(
        !allowed(&config.proxy.access.allow, "127.0.0.1"),
        "an explicit list replaces the default"
    );
    assert!(allowed(&config.proxy.access.admin_allow, "127.0.0.1"));
    assert!(matches!(
        load(["hoard", "--allow", "everyone"]),
        Err(LoadError::Usage(_))
    ));
}

#[test]
fn public_listeners_get_a_warning() {
    assert!(
        parse(&["--cache-dir", "/x"])
            .unwrap()
            .exposure_warning()
            .is_none()
    );
    let public = parse(&["--cache-dir", "/x", "--bind", "0.0.0.0"]).unwrap();
    assert!(public.exposure_warning().unwrap().contains("--allow"));
    let open = parse(&[
        "--cache-dir",
        "/x",
        "--bind",
        "0.0.0.0",
        "--allow",
        "0.0.0.0/0",
    ])
    .unwrap();
    assert!(open.exposure_warning().unwrap().contains("OPEN PROXY"));
    let scoped = parse(&[
        "--cache-dir",
        "/x",
        "--bind",
        "0.0.0.0",
        "--allow",
        "10.0.0.0/8",
    ])
    .unwrap();
    assert!(scoped.exposure_warning().is_none());
}

#[test]
fn upstream_with_path_is_rejected() {
    let err = parse(&["--upstream", "http://h/x"]).unwrap_err();
    assert!(err.to_string().contains("without a path"), "{err}");
}

#[test]
fn upstream_host_needs_upstream() {
    assert!(matches!(
        parse(&["--upstream-host", "a"]),
        Err(ConfigError::UpstreamHostWithoutUpstream)
    ));
}

#[test]
fn sizes_take_human_units() {
    let config = parse(&[
        "--cache-dir",
        "/tmp/x",
        "--cache-memory",
        "512MiB",
        "--cache-disk",
        "2GiB",
    ])
    .unwrap();
    assert_eq!(config.cache.memory_size, 512 << 20);
    assert_eq!(config.cache.disk_size, 2 << 30);
    assert!(matches!(
        load(["hoard", "--cache-disk", "lots"]),
        Err(LoadError::Usage(_))
    ));
}

#[test]
fn bad_duration_is_a_parse_error() {
    assert!(matches!(
        load(["hoard", "--connect-timeout", "soon"]),
        Err(LoadError::Usage(_))
    ));
}
