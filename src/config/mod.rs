//! Configuration: the command line and config file (`Args`, parsed by clap) and the validated,
//! typed `Config` every other module reads.
//!
//! Each setting is defined once, as a field of `Args`: clap reads the flags, the config file
//! is turned into the same flags (`file.rs`), `--check-config` prints the effective values,
//! a reload compares them (every setting needs a restart unless it is in `RELOADABLE`), and
//! a test checks docs/configuration.md against the list. Two stages, so that nothing
//! downstream re-parses strings: `Args` is what a person typed, `Config` is what hoard runs
//! with. This module must not start anything (sockets, files, runtimes); it only checks and
//! converts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod args;
mod file;
mod rule;

pub use args::{Args, CaCommand, CacheCommand, Command};

use args::loopback;

use clap::{CommandFactory, FromArgMatches};
use http::{HeaderValue, Uri};
use ipnet::IpNet;

use crate::cache::{CacheSettings, PolicySettings};
use crate::fleet::{FleetKey, FleetSettings, PeerSource};
use crate::proxy::{AccessSettings, Mode, ProxySettings, ServerName};
use crate::shared_tier::SharedTierSettings;
use crate::tls::CertPair;
use crate::upstream::UpstreamSettings;

/// What an invalid flag combination or value is, named so the person can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("--upstream {0:?}: {1}")]
    Upstream(String, &'static str),
    #[error("--upstream-host {0:?}: not a valid Host header value")]
    UpstreamHost(String),
    #[error("--self {0:?}: write this node's URL as it appears in --peers (http://HOST:PORT)")]
    SelfUrl(String),
    #[error("--peer-timeout ({0:?}) must be longer than --shared-tier-timeout ({1:?})")]
    PeerTimeout(Duration, Duration),
    #[error("--fleet-key-file {0}: {1}")]
    FleetKey(PathBuf, String),
    #[error("--shared-tier {0}")]
    SharedTier(String),
    #[error("--upstream-host needs --upstream")]
    UpstreamHostWithoutUpstream,
    #[error("--server-name needs --upstream")]
    ServerNameWithoutUpstream,
    #[error("--server-name {0}")]
    ServerName(#[from] crate::proxy::InvalidServerName),
    #[error("--ca-file {0}: {1}")]
    CaFile(PathBuf, String),
    #[error("--max-header-size {0}: must be between 1 KiB and 1 MiB")]
    MaxHeaderSize(u64),
    #[error("no cache directory: pass --cache-dir (neither XDG_CACHE_HOME nor HOME is set)")]
    NoCacheDir,
    #[error("--max-object-size {0} is larger than --cache-disk {1}")]
    ObjectLargerThanDisk(u64, u64),
    #[error("--cache-memory must be at least 1MiB")]
    MemoryTooSmall,
    #[error("--tls-cert and --tls-key come in pairs: {0} certificates, {1} keys")]
    TlsPairs(usize, usize),
    #[error("--tls-port needs --tls-cert and --tls-key")]
    TlsPortWithoutCert,
    #[error("--intercept-skip {0}")]
    InterceptSkip(crate::proxy::InvalidServerName),
    #[error("--intercept-skip needs --intercept")]
    SkipWithoutIntercept,
    #[error("--intercept is for a forward proxy; it cannot be combined with --upstream")]
    InterceptInReverseMode,
    #[error("--rule {0}")]
    Rule(String),
    #[error("--parent {0}")]
    Parent(String),
    #[error("--parent-bypass needs --parent")]
    BypassWithoutParent,
}

/// Why the command line and config file did not give a configuration.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad flags or `--help`/`--version`: clap prints it and picks the exit code.
    #[error(transparent)]
    Usage(#[from] clap::Error),
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// Parses `argv`, reads `--config` if given, and validates the result.
pub fn load<I, T>(argv: I) -> Result<(Config, Action), LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let command = Args::command();
    let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    let mut matches = command.clone().try_get_matches_from(&argv)?;
    // The file and the keys it set, so that an impossible combination is told in its terms.
    let mut from_file_keys: Option<(PathBuf, Vec<String>)> = None;
    if let Some(path) = matches.get_one::<PathBuf>("config").cloned() {
        let file_error = |reason: String| ConfigError::File {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| file_error(e.to_string()))?;
        let from_file = file::as_arguments(&text, &command, &matches).map_err(file_error)?;
        let keys = from_file
            .iter()
            .filter_map(|arg| arg.to_str()?.strip_prefix("--")?.split('=').next())
            .map(str::to_owned)
            .collect();
        from_file_keys = Some((path.clone(), keys));
        let merged = argv
            .iter()
            .take(1)
            .chain(&from_file)
            .chain(argv.iter().skip(1));
        // The command line alone parsed, so what fails now is the file's.
        matches = command
            .clone()
            .try_get_matches_from(merged)
            .map_err(|e| file_error(first_line(&e.to_string())))?;
    }
    let effective = effective_settings(&command, &matches);
    let args = Args::from_arg_matches(&matches)?;
    let action = match (&args.command, args.check_config) {
        (Some(Command::Cache(command)), _) => Action::Cache(command.clone()),
        (Some(Command::Ca(command)), _) => Action::Ca(command.clone()),
        (Some(Command::Man), _) => Action::Man,
        (Some(Command::Completions { shell }), _) => Action::Completions(*shell),
        (None, true) => Action::CheckConfig,
        (None, false) => Action::Serve,
    };
    let mut config = args
        .into_config()
        .map_err(|e| in_file_terms(e, from_file_keys.as_ref()))?;
    config.effective = effective;
    Ok((config, action))
}

/// Settings a SIGHUP applies to the running server (`Rules`, the cache rules and the access
/// log); a change
/// to any other needs a restart, and the reload names it.
pub const RELOADABLE: [&str; 17] = [
    "rule",
    "preset",
    "tls-cert",
    "tls-key",
    "peers",
    "allow",
    "admin-allow",
    "auth-file",
    "connect-ports",
    "max-request-body",
    "follow-redirects",
    "server-name",
    "trust-forwarded",
    "reject-get-body",
    "tunnel-idle-timeout",
    "access-log",
    "log-format",
];

/// Every setting's effective value, as text, in `Args` order.
fn effective_settings(command: &clap::Command, matches: &clap::ArgMatches) -> Vec<Setting> {
    let raw = |id: &str| match matches.try_get_raw(id) {
        Ok(Some(values)) => values.map(|v| v.to_string_lossy().into_owned()).collect(),
        _ => Vec::new(),
    };
    command
        .get_arguments()
        .filter(|arg| file::is_setting(arg))
        .map(|arg| {
            let mut values = raw(arg.get_id().as_str());
            // `--port` is the port argument written as a flag.
            if arg.get_id() == "port" && !raw("port_flag").is_empty() {
                values = raw("port_flag");
            }
            // `--listen` says both; the file it prints must not say them twice.
            if ["port", "bind"].contains(&arg.get_id().as_str()) && !raw("listen").is_empty() {
                values = Vec::new();
            }
            Setting {
                name: file::setting_name(arg),
                list: matches!(arg.get_action(), clap::ArgAction::Append),
                values,
            }
        })
        .collect()
}

/// One setting's effective value, as the command line, the file or the default gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// The file key (the flag without dashes).
    pub name: String,
    /// Whether it takes a list (a repeatable flag).
    pub list: bool,
    pub values: Vec<String>,
}

/// `error` as the config file's reader should see it when it names settings the file set:
/// `--max-object-size` becomes `max-object-size` (the file's key), under the file's name.
fn in_file_terms(error: ConfigError, file: Option<&(PathBuf, Vec<String>)>) -> ConfigError {
    let Some((path, keys)) = file else {
        return error;
    };
    let mut text = error.to_string();
    let mut named = false;
    for key in keys {
        let flag = format!("--{key}");
        let mut from = 0;
        while let Some(at) = text[from..].find(&flag).map(|at| from + at) {
            let end = at + flag.len();
            // The whole flag, not the start of a longer one (`--upstream` in `--upstream-host`).
            let whole = text[end..]
                .chars()
                .next()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-'));
            if whole {
                text.replace_range(at..at + 2, "");
                named = true;
                from = end - 2;
            } else {
                from = end;
            }
        }
    }
    if !named {
        return error;
    }
    ConfigError::File {
        path: path.clone(),
        reason: text,
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    Serve,
    CheckConfig,
    Cache(CacheCommand),
    Ca(CaCommand),
    Man,
    Completions(clap_complete::Shell),
}

/// The command-line interface as clap describes it: what the manual page and the shell
/// completions are generated from, so they always match the flags.
pub fn cli() -> clap::Command {
    Args::command()
}

/// The listener's TLS and HTTP/2.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Empty: no TLS.
    pub certs: Vec<CertPair>,
    /// `Some`: a second listener for TLS; `None`: the main one speaks TLS (if `certs`).
    pub port: Option<u16>,
    pub http2_max_streams: u32,
    /// `--intercept`: the CA's directory.
    pub intercept_ca: Option<PathBuf>,
}

/// The validated configuration hoard runs with: the listener's own settings, and each
/// module's settings in its own type.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub client_header_timeout: Duration,
    /// How long requests in flight may take to finish at shutdown.
    pub shutdown_grace: Duration,
    pub max_header_size: usize,
    pub max_connections: usize,
    pub tls: TlsSettings,
    pub proxy: ProxySettings,
    pub cache: CacheSettings,
    pub fleet: FleetSettings,
    pub shared_tier: Option<SharedTierSettings>,
    pub access_log: Option<PathBuf>,
    pub log_format: crate::logging::LogFormat,
    pub verbose: u8,
    /// Every setting as given (for `--check-config` and reload).
    pub effective: Vec<Setting>,
}

impl Config {
    /// The settings that differ from `other` and that a reload cannot apply (they shape the
    /// listener, the cache or the upstream client built at start).
    pub fn restart_needed(&self, other: &Config) -> Vec<String> {
        let mut changed: Vec<String> = self
            .effective
            .iter()
            .filter(|setting| !RELOADABLE.contains(&setting.name.as_str()))
            .filter(|setting| !other.effective.contains(setting))
            .map(|setting| setting.name.clone())
            .collect();
        // The same file with new certificates in it is a change too.
        if self.proxy.upstream.extra_ca_pem != other.proxy.upstream.extra_ca_pem
            && !changed.iter().any(|n| n == "ca-file")
        {
            changed.push("ca-file".to_owned());
        }
        changed
    }

    /// The effective settings as a config file: what `--check-config` prints.
    pub fn to_file_text(&self) -> String {
        // Numbers and booleans bare, as a person would write them; the rest quoted.
        let quote = |value: &String| {
            let bare = value == "true"
                || value == "false"
                || (value.bytes().all(|b| b.is_ascii_digit())
                    && (value == "0" || !value.is_empty() && !value.starts_with('0')));
            if bare {
                value.clone()
            } else {
                format!("{value:?}")
            }
        };
        self.effective
            .iter()
            .filter(|setting| !setting.values.is_empty())
            .map(|setting| match setting.values.as_slice() {
                [one] if !setting.list => format!("{} = {}\n", setting.name, quote(one)),
                many => {
                    let items: Vec<String> = many.iter().map(quote).collect();
                    format!("{} = [{}]\n", setting.name, items.join(", "))
                }
            })
            .collect()
    }

    /// A warning for the operator when hoard listens beyond this machine.
    pub fn exposure_warning(&self) -> Option<String> {
        if self.listen.ip().is_loopback() {
            return None;
        }
        let allow = &self.proxy.access.allow;
        if allow.iter().any(|net| net.prefix_len() == 0) {
            return Some(format!(
                "hoard is an OPEN PROXY: anyone who can reach {} may use it (--allow lets everyone in)",
                self.listen
            ));
        }
        if *allow == loopback() && self.proxy.admin_listen.is_none() {
            return Some(format!(
                "listening on {} but only loopback clients are allowed; pass --allow CIDR for the clients that \
                 should use this proxy (--allow 0.0.0.0/0 would make it an open proxy)",
                self.listen
            ));
        }
        None
    }
}

impl Args {
    /// Checks every value and builds the typed configuration.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        if !self.server_name.is_empty() && self.upstream.is_none() {
            return Err(ConfigError::ServerNameWithoutUpstream);
        }
        let server_names = self
            .server_name
            .iter()
            .map(|name| name.parse())
            .collect::<Result<Vec<ServerName>, _>>()?;
        let mode = match (self.upstream, self.upstream_host) {
            (None, None) => Mode::Forward,
            (None, Some(_)) => return Err(ConfigError::UpstreamHostWithoutUpstream),
            (Some(raw), host) => {
                let upstream = parse_upstream(&raw)?;
                // It becomes the authority of the URL the cache keys by, so it must be one.
                let upstream_host = host
                    .map(|h| match http::uri::Authority::try_from(h.as_str()) {
                        Ok(authority) if !h.contains('@') => {
                            HeaderValue::from_str(authority.as_str())
                                .map_err(|_| ConfigError::UpstreamHost(h))
                        }
                        _ => Err(ConfigError::UpstreamHost(h)),
                    })
                    .transpose()?;
                Mode::Reverse {
                    upstream,
                    upstream_host,
                }
            }
        };
        if !(1024..=1024 * 1024).contains(&self.max_header_size) {
            return Err(ConfigError::MaxHeaderSize(self.max_header_size));
        }
        let extra_ca_pem = self
            .ca_file
            .map(|path| {
                std::fs::read(&path).map_err(|e| ConfigError::CaFile(path.clone(), e.to_string()))
            })
            .transpose()?;
        let cache_dir = match self.cache_dir {
            Some(dir) => dir,
            None => default_cache_dir().ok_or(ConfigError::NoCacheDir)?,
        };
        if self.max_object_size > self.cache_disk {
            return Err(ConfigError::ObjectLargerThanDisk(
                self.max_object_size,
                self.cache_disk,
            ));
        }
        if self.cache_memory < 1 << 20 {
            return Err(ConfigError::MemoryTooSmall);
        }
        let cache = CacheSettings {
            dir: cache_dir,
            memory_size: self.cache_memory,
            disk_size: self.cache_disk,
            max_object_size: self.max_object_size,
            rules: rule::cache_rules(self.rule, &self.preset).map_err(ConfigError::Rule)?,
            policy: PolicySettings {
                heuristic_max: self.heuristic_max,
                stale_if_error_grace: self.stale_if_error,
                own_cache_control: self.targeted_cache_control,
            },
            // A follower waits as long as its own request to the origin could take.
            collapse_wait: self.connect_timeout + self.first_byte_timeout,
            slice_size: self.slice_size,
        };
        if self.tls_cert.len() != self.tls_key.len() {
            return Err(ConfigError::TlsPairs(
                self.tls_cert.len(),
                self.tls_key.len(),
            ));
        }
        if self.tls_port.is_some() && self.tls_cert.is_empty() {
            return Err(ConfigError::TlsPortWithoutCert);
        }
        if !self.intercept_skip.is_empty() && self.intercept.is_none() {
            return Err(ConfigError::SkipWithoutIntercept);
        }
        if self.intercept.is_some() && matches!(mode, Mode::Reverse { .. }) {
            return Err(ConfigError::InterceptInReverseMode);
        }
        let intercept_skip = self
            .intercept_skip
            .iter()
            .map(|name| name.parse())
            .collect::<Result<Vec<ServerName>, _>>()
            .map_err(ConfigError::InterceptSkip)?;
        let intercept = self.intercept.is_some();
        let tls = TlsSettings {
            certs: self
                .tls_cert
                .into_iter()
                .zip(self.tls_key)
                .map(|(cert, key)| CertPair { cert, key })
                .collect(),
            port: self.tls_port,
            http2_max_streams: self.http2_max_streams.max(1),
            intercept_ca: self.intercept,
        };
        let or_loopback = |list: Vec<IpNet>| if list.is_empty() { loopback() } else { list };
        let upstream = UpstreamSettings {
            extra_ca_pem,
            connect_timeout: self.connect_timeout,
            first_byte_timeout: self.first_byte_timeout,
            read_timeout: self.read_timeout,
            deny_dest: self.deny_dest,
            allow_dest: self.allow_dest,
            parent: match &self.parent {
                Some(url) => Some(
                    crate::upstream::ParentProxy::new(url, &self.parent_bypass)
                        .map_err(ConfigError::Parent)?,
                ),
                None if !self.parent_bypass.is_empty() => {
                    return Err(ConfigError::BypassWithoutParent);
                }
                None => None,
            },
        };
        let access = AccessSettings {
            allow: or_loopback(self.allow),
            admin_allow: or_loopback(self.admin_allow),
            auth_file: self.auth_file,
            server_names,
            trust_forwarded: self.trust_forwarded,
            connect_ports: self.connect_ports,
            tunnel_idle_timeout: self.tunnel_idle_timeout,
            reject_get_body: self.reject_get_body,
            max_request_body: self.max_request_body,
            follow_redirects: self.follow_redirects,
        };
        // An owner's miss may wait for the shared tier before its origin: a peer timeout no
        // longer than that would have every such miss fetched again by the sender.
        if !self.peers.is_empty()
            && self.shared_tier.is_some()
            && self.peer_timeout <= self.shared_tier_timeout
        {
            return Err(ConfigError::PeerTimeout(
                self.peer_timeout,
                self.shared_tier_timeout,
            ));
        }
        Ok(Config {
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::new(self.bind, self.port_flag.unwrap_or(self.port))),
            client_header_timeout: self.client_header_timeout,
            shutdown_grace: self.shutdown_grace,
            max_header_size: self.max_header_size as usize,
            max_connections: self.max_connections.max(1),
            tls,
            proxy: ProxySettings {
                intercept,
                intercept_skip,
                mode,
                local_clients: or_loopback(self.local_clients),
                admin_listen: self.admin_listen,
                request_timeout: (!self.request_timeout.is_zero()).then_some(self.request_timeout),
                upstream,
                access,
            },
            cache,
            fleet: FleetSettings {
                peers: self.peers,
                self_url: self
                    .self_url
                    .map(|url| match url.parse() {
                        Ok(PeerSource::Url { host, port }) => {
                            Ok(crate::fleet::members::name_of(&host, port))
                        }
                        _ => Err(ConfigError::SelfUrl(url)),
                    })
                    .transpose()?,
                peer_timeout: self.peer_timeout,
                hot_copy: self.peer_hot_copy,
                key: self
                    .fleet_key_file
                    .map(|path| {
                        let text = std::fs::read_to_string(&path)
                            .map_err(|e| ConfigError::FleetKey(path.clone(), e.to_string()))?;
                        FleetKey::new(&text).ok_or_else(|| {
                            ConfigError::FleetKey(path, "empty, or not one line of text".into())
                        })
                    })
                    .transpose()?,
            },
            shared_tier: self
                .shared_tier
                .map(|url| {
                    let (bucket, prefix) =
                        SharedTierSettings::parse_url(&url).map_err(ConfigError::SharedTier)?;
                    Ok::<_, ConfigError>(SharedTierSettings {
                        bucket,
                        prefix,
                        endpoint: self.shared_tier_endpoint,
                        timeout: self.shared_tier_timeout,
                        min_ttl: self.shared_tier_min_ttl,
                    })
                })
                .transpose()?,
            access_log: self.access_log,
            log_format: self.log_format.clone(),
            verbose: self.verbose,
            effective: Vec::new(),
        })
    }
}

fn parse_upstream(raw: &str) -> Result<Uri, ConfigError> {
    let err = |why| ConfigError::Upstream(raw.to_owned(), why);
    let uri: Uri = raw.parse().map_err(|_| err("not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(err("must start with http:// or https://")),
    }
    let Some(authority) = uri.authority() else {
        return Err(err("has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(err("must not contain user information"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(err("must be scheme://host[:port] without a path"));
    }
    Ok(uri)
}

/// The XDG cache directory convention, which `~/.cache/hoard` follows on Linux.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("hoard"))
}

#[cfg(test)]
mod tests;
