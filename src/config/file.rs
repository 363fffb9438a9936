//! The TOML config file (`--config`): the same settings as the flags, under the flags' names
//! without the leading dashes (`connect-timeout = "10s"`). A flag given on the command line wins
//! over the file; the file wins over the built-in default. Unknown keys are errors.

use std::path::PathBuf;

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

use super::{Args, ConfigError, parse_cidr, parse_duration, parse_size};

/// A size written as a number of bytes or with a unit (`"64MiB"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(self) -> Result<u64, String> {
        match self {
            Size::Bytes(bytes) => Ok(bytes),
            Size::Text(text) => parse_size(&text),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct FileConfig {
    port: Option<u16>,
    bind: Option<String>,
    allow: Option<Vec<String>>,
    admin_allow: Option<Vec<String>>,
    auth_file: Option<PathBuf>,
    upstream: Option<String>,
    upstream_host: Option<String>,
    server_name: Option<Vec<String>>,
    trust_forwarded: Option<Vec<String>>,
    allow_dest: Option<Vec<String>>,
    local_clients: Option<Vec<String>>,
    tunnel_idle_timeout: Option<String>,
    reject_get_body: Option<bool>,
    admin_listen: Option<String>,
    connect_ports: Option<Vec<u16>>,
    deny_dest: Option<Vec<String>>,
    ca_file: Option<PathBuf>,
    connect_timeout: Option<String>,
    first_byte_timeout: Option<String>,
    read_timeout: Option<String>,
    client_header_timeout: Option<String>,
    request_timeout: Option<String>,
    max_header_size: Option<Size>,
    max_request_body: Option<Size>,
    max_connections: Option<usize>,
    cache_dir: Option<PathBuf>,
    cache_memory: Option<Size>,
    cache_disk: Option<Size>,
    max_object_size: Option<Size>,
    heuristic_max: Option<String>,
    stale_if_error: Option<String>,
    follow_redirects: Option<bool>,
    access_log: Option<PathBuf>,
    log_format: Option<crate::logging::LogFormat>,
    verbose: Option<u8>,
}

impl FileConfig {
    pub(super) fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Fills in `args` from the file wherever the command line did not set a value.
    pub(super) fn apply(self, args: &mut Args, matches: &ArgMatches) -> Result<(), ConfigError> {
        let from_command_line =
            |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        macro_rules! take {
            ($field:ident, $key:literal, $convert:expr) => {
                if let Some(value) = self.$field {
                    if !from_command_line(stringify!($field)) {
                        args.$field = $convert(value)
                            .map_err(|reason: String| ConfigError::Value { key: $key, reason })?;
                    }
                }
            };
        }
        fn ok<T>(value: T) -> Result<T, String> {
            Ok(value)
        }
        fn some<T>(value: T) -> Result<Option<T>, String> {
            Ok(Some(value))
        }
        let cidrs = |list: Vec<String>| {
            list.iter()
                .map(|s| parse_cidr(s))
                .collect::<Result<Vec<_>, _>>()
        };
        take!(port, "port", ok);
        take!(bind, "bind", |s: String| s
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address")));
        take!(allow, "allow", cidrs);
        take!(admin_allow, "admin-allow", cidrs);
        take!(auth_file, "auth-file", some);
        take!(upstream, "upstream", some);
        take!(upstream_host, "upstream-host", some);
        take!(server_name, "server-name", ok);
        take!(trust_forwarded, "trust-forwarded", cidrs);
        take!(local_clients, "local-clients", cidrs);
        take!(connect_ports, "connect-ports", ok);
        let dest_rules = |rules: Vec<String>| {
            rules
                .iter()
                .map(|rule| rule.parse())
                .collect::<Result<Vec<_>, _>>()
        };
        take!(deny_dest, "deny-dest", dest_rules);
        take!(allow_dest, "allow-dest", dest_rules);
        take!(tunnel_idle_timeout, "tunnel-idle-timeout", |s: String| {
            parse_duration(&s)
        });
        take!(reject_get_body, "reject-get-body", ok);
        take!(admin_listen, "admin-listen", |s: String| s
            .parse()
            .map(Some)
            .map_err(|_| format!("{s:?} is not an address:port")));
        take!(ca_file, "ca-file", some);
        take!(connect_timeout, "connect-timeout", |s: String| {
            parse_duration(&s)
        });
        take!(first_byte_timeout, "first-byte-timeout", |s: String| {
            parse_duration(&s)
        });
        take!(read_timeout, "read-timeout", |s: String| parse_duration(&s));
        take!(
            client_header_timeout,
            "client-header-timeout",
            |s: String| parse_duration(&s)
        );
        take!(request_timeout, "request-timeout", |s: String| {
            parse_duration(&s)
        });
        take!(max_header_size, "max-header-size", |s: Size| s
            .bytes()
            .map(|b| b as usize));
        take!(max_request_body, "max-request-body", Size::bytes);
        take!(max_connections, "max-connections", ok);
        take!(cache_dir, "cache-dir", some);
        take!(cache_memory, "cache-memory", Size::bytes);
        take!(cache_disk, "cache-disk", Size::bytes);
        take!(max_object_size, "max-object-size", Size::bytes);
        take!(heuristic_max, "heuristic-max", |s: String| parse_duration(
            &s
        ));
        take!(
            stale_if_error,
            "stale-if-error",
            |s: String| parse_duration(&s)
        );
        take!(follow_redirects, "follow-redirects", ok);
        take!(access_log, "access-log", some);
        take!(log_format, "log-format", ok);
        take!(verbose, "verbose", ok);
        Ok(())
    }
}
