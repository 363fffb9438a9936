//! Loading flags and files into a `Config`: defaults, overrides, validation messages.

use super::*;

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
    let flags: Vec<String> = command
        .get_arguments()
        .map(|arg| {
            arg.get_long()
                .map_or_else(|| arg.get_id().to_string(), str::to_owned)
        })
        .filter(|name| {
            ![
                "config",
                "check-config",
                "help",
                "version",
                "cache-dir-global",
            ]
            .contains(&name.as_str())
        })
        .map(|name| name.replace('_', "-").to_lowercase())
        .collect();
    assert!(flags.len() >= 27, "{flags:?}");
    for flag in flags {
        // A wrong type is fine here; an unknown key is not.
        if let Err(e) = file::FileConfig::parse(&format!("{flag} = 0")) {
            assert!(
                !e.contains("unknown field"),
                "--{flag} has no config file key: {e}"
            );
        }
    }
}

#[test]
fn the_example_file_loads() {
    let config = with_file(include_str!("../../hoard.example.toml"), &[]).unwrap();
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.cache.memory_size, 128 << 20);
    assert_eq!(config.connect_timeout, Duration::from_secs(5));
}

#[test]
fn flags_override_the_file_and_the_file_overrides_defaults() {
    let text =
        "port = 9000\ncache-dir = \"/tmp/h\"\nconnect-timeout = \"3s\"\ncache-disk = 1048576000\n";
    let config = with_file(text, &["--connect-timeout", "7s"]).unwrap();
    assert_eq!(config.listen.port(), 9000);
    assert_eq!(config.connect_timeout, Duration::from_secs(7));
    assert_eq!(config.cache.disk_size, 1_048_576_000);
    assert_eq!(
        config.first_byte_timeout,
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
    let impossible = with_file("cache-disk = \"1MiB\"\ncache-dir = \"/x\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(impossible.contains("--max-object-size"), "{impossible}");
}

#[test]
fn defaults_listen_on_loopback_8080() {
    let config = parse(&["--cache-dir", "/tmp/x"]).unwrap();
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert!(matches!(config.mode, Mode::Forward));
    assert_eq!(config.connect_ports, vec![443]);
}

#[test]
fn access_lists_default_to_loopback_and_take_addresses_or_blocks() {
    let config = parse(&["--cache-dir", "/tmp/x"]).unwrap();
    let allowed = |list: &[IpNet], ip: &str| {
        list.iter()
            .any(|net| net.contains(&ip.parse::<IpAddr>().unwrap()))
    };
    assert!(allowed(&config.allow, "127.0.0.1") && allowed(&config.allow, "127.9.9.9"));
    assert!(allowed(&config.allow, "::1") && !allowed(&config.allow, "10.0.0.1"));
    let config = parse(&[
        "--cache-dir",
        "/tmp/x",
        "--allow",
        "10.0.0.0/8",
        "--allow",
        "192.0.2.7",
    ])
    .unwrap();
    assert!(allowed(&config.allow, "10.1.2.3") && allowed(&config.allow, "192.0.2.7"));
    assert!(
        !allowed(&config.allow, "127.0.0.1"),
        "an explicit list replaces the default"
    );
    assert!(allowed(&config.admin_allow, "127.0.0.1"));
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
