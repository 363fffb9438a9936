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

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

mod file;
mod server_name;

pub use server_name::ServerName;

use clap::{CommandFactory, FromArgMatches, Parser};
use http::{HeaderValue, Uri};
use ipnet::IpNet;

use crate::cache::{CacheSettings, PolicySettings};

/// What an invalid flag combination or value is, named so the person can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("--upstream {0:?}: {1}")]
    Upstream(String, &'static str),
    #[error("--upstream-host {0:?}: not a valid Host header value")]
    UpstreamHost(String),
    #[error("--upstream-host needs --upstream")]
    UpstreamHostWithoutUpstream,
    #[error("--server-name needs --upstream")]
    ServerNameWithoutUpstream,
    #[error("--server-name {0:?}: not a host name (write e.g. www.example.org or *.example.org)")]
    ServerName(String),
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
}

/// hoard: a caching HTTP proxy.
///
/// Forward proxy (`curl -x http://127.0.0.1:8080 http://site/`), HTTPS via CONNECT, and a
/// reverse proxy (accelerator) with `--upstream`.
#[derive(Debug, Parser)]
#[command(name = "hoard", version)]
pub struct Args {
    /// Read settings from this TOML file (keys are the flag names without dashes); flags given
    /// on the command line override it. See docs/configuration.md.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the flags and the config file, print the result, and exit (0 when valid).
    #[arg(long)]
    pub check_config: bool,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// TCP port to listen on.
    #[arg(default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on. The default accepts only local clients; binding to a public
    /// address makes hoard reachable by anyone who can reach that address.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,

    /// Clients allowed to use hoard (CIDR, repeatable); others get 403. Default: loopback only.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub allow: Vec<IpNet>,

    /// Clients allowed to use `/_hoard/` (metrics, stats, purge) and PURGE (CIDR,
    /// repeatable). Default: loopback only.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub admin_allow: Vec<IpNet>,

    /// Require Basic authentication from the users in this htpasswd file (bcrypt entries, as
    /// `htpasswd -B` writes them): proxy requests get 407, gateway requests 401.
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,

    /// Reverse-proxy (accelerator) mode: send every origin-form request to this origin,
    /// e.g. `http://127.0.0.1:3000` or `https://example.org`.
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,

    /// In reverse mode, the Host header sent to the upstream (default: the client's Host).
    #[arg(long, value_name = "HOST")]
    pub upstream_host: Option<String>,

    /// In reverse mode, the host names hoard answers for (repeatable; `*.example.org` matches
    /// subdomains), like nginx's `server_name`; requests for other hosts get 421. Default:
    /// any Host (each is cached separately).
    #[arg(long, value_name = "NAME")]
    pub server_name: Vec<String>,

    /// Clients whose `X-Forwarded-*` and `Forwarded` headers are believed and passed on (a
    /// load balancer in front of hoard; CIDR, repeatable). From anyone else they are removed,
    /// with `X-Original-URL`, `X-Rewrite-URL` and the method-override headers.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub trust_forwarded: Vec<IpNet>,

    /// Destinations no client may reach, checked after DNS resolution (repeatable): an address
    /// or CIDR block (`10.0.0.0/8`, `169.254.169.254`), a host name and its subdomains
    /// (`metadata.internal`), or a port (`:25`). Requests to them get 403.
    #[arg(long, value_name = "RULE")]
    pub deny_dest: Vec<crate::upstream::DestRule>,

    /// Re-opens, for clients outside `--local-clients`, destinations the safe defaults deny
    /// (repeatable, the same forms as `--deny-dest`): e.g. `127.0.0.1`, `intranet.example`,
    /// `:8443`. `--deny-dest` still wins.
    #[arg(long, value_name = "RULE")]
    pub allow_dest: Vec<crate::upstream::DestRule>,

    /// Clients that may reach this host's own services, link-local addresses and any port
    /// through hoard (CIDR, repeatable). Everyone else is held to the safe defaults (see
    /// docs/security.md). Default: loopback only.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub local_clients: Vec<IpNet>,

    /// Ports that CONNECT tunnels may reach (comma-separated).
    #[arg(
        long,
        value_name = "PORTS",
        value_delimiter = ',',
        default_value = "443"
    )]
    pub connect_ports: Vec<u16>,

    /// Close a CONNECT tunnel after this long with no bytes either way.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub tunnel_idle_timeout: Duration,

    /// Answer GET and HEAD requests that carry a body with 400 instead of passing them
    /// through uncached.
    #[arg(long)]
    pub reject_get_body: bool,

    /// Serve the admin interface (`/_hoard/`, purge) on this address of its own, e.g.
    /// `127.0.0.1:8081`; the proxy port then serves no admin pages.
    #[arg(long, value_name = "ADDR:PORT")]
    pub admin_listen: Option<SocketAddr>,

    /// Extra CA certificate(s) to trust for https origins, in PEM (added to the system roots).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,

    /// How long to wait for a TCP (and TLS) connection to an origin, e.g. `10s`, `500ms`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// How long to wait for an origin's response head after sending the request.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub first_byte_timeout: Duration,

    /// Longest silence allowed between an origin's body chunks; beyond it the response is cut
    /// off (the client connection is aborted) and nothing is stored.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub read_timeout: Duration,

    /// How long a client may take to send a request head (slowloris protection).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub client_header_timeout: Duration,

    /// Longest a request may take, response body included, e.g. `10m` (0: no limit): the head
    /// gets 504, a body still streaming is cut off (the connection is aborted).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Largest request head (request line and headers) a client may send; beyond it: 431.
    #[arg(long, value_name = "SIZE", default_value = "64KiB", value_parser = parse_size)]
    pub max_header_size: u64,

    /// Largest request body a client may send (e.g. `10MiB`); beyond it: 413. 0: no limit.
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_size)]
    pub max_request_body: u64,

    /// Most client connections served at once; further connections wait in the listen queue
    /// until one closes.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Cache directory (default: $XDG_CACHE_HOME/hoard or ~/.cache/hoard).
    #[arg(long, value_name = "DIR", global = true)]
    pub cache_dir: Option<PathBuf>,

    /// Size of the memory tier, e.g. `64MiB`.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub cache_memory: u64,

    /// Size of the disk tier, e.g. `1GiB`.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub cache_disk: u64,

    /// Responses larger than this stream through without being stored.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub max_object_size: u64,

    /// Upper bound on heuristic freshness (10% of the time since Last-Modified).
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = parse_duration)]
    pub heuristic_max: Duration,

    /// Serve a stale response this long past its freshness when the origin is down, times
    /// out or answers 5xx, even without `stale-if-error` (unless `must-revalidate`).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub stale_if_error: Duration,

    /// In the gateway, follow origin redirects (at most 10) and return the final response,
    /// instead of handing the redirect to the browser.
    #[arg(long)]
    pub follow_redirects: bool,

    /// Write the access log to this file (reopened on SIGUSR1, for logrotate) instead of
    /// stderr; `none` turns it off.
    #[arg(long, value_name = "FILE|none")]
    pub access_log: Option<PathBuf>,

    /// Access-log line format.
    #[arg(long, value_enum, default_value = "squid")]
    pub log_format: crate::logging::LogFormat,

    /// Trace every step: request and response heads on both sides (-v). The access log line
    /// per request is always written to stderr.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// A CIDR block, or a single address (`10.0.0.0/8`, `192.0.2.7`, `::1`).
fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or CIDR block (write e.g. 10.0.0.0/8)"))
}

fn loopback() -> Vec<IpNet> {
    vec![
        IpNet::V4(ipnet::Ipv4Net::new_assert(Ipv4Addr::LOCALHOST, 8)),
        IpNet::V6(ipnet::Ipv6Net::new_assert(
            std::net::Ipv6Addr::LOCALHOST,
            128,
        )),
    ]
}

fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("{s:?}: {e} (write e.g. 512MiB, 1GiB, 4096)"))
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
    if let Some(path) = matches.get_one::<PathBuf>("config").cloned() {
        let file_error = |reason: String| ConfigError::File {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| file_error(e.to_string()))?;
        let from_file = file::as_arguments(&text, &command, &matches).map_err(file_error)?;
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
        (None, true) => Action::CheckConfig,
        (None, false) => Action::Serve,
    };
    let mut config = args.into_config()?;
    config.effective = effective;
    Ok((config, action))
}

/// Settings a SIGHUP applies to the running server (`Rules` and the access log); a change
/// to any other needs a restart, and the reload names it.
pub const RELOADABLE: [&str; 12] = [
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
    command
        .get_arguments()
        .filter(|arg| file::is_setting(arg))
        .map(|arg| Setting {
            name: file::setting_name(arg),
            list: matches!(arg.get_action(), clap::ArgAction::Append),
            values: match matches.try_get_raw(arg.get_id().as_str()) {
                Ok(Some(values)) => values.map(|v| v.to_string_lossy().into_owned()).collect(),
                _ => Vec::new(),
            },
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

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (write e.g. 10s, 500ms, 2m)"))
}

/// What to do instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Inspect or repair the cache directory while hoard is stopped.
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CacheCommand {
    /// URLs, stored responses and bytes on disk.
    Stats,
    /// One line per stored response (status, bytes, age, freshness, URL), optionally only
    /// URLs starting with PREFIX.
    Ls { prefix: Option<String> },
    /// Forget every stored response of URL.
    Purge { url: String },
    /// Check every stored body against its checksum and remove the bad ones (exit 1 if any).
    Verify,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    Serve,
    CheckConfig,
    Cache(CacheCommand),
}

/// Where origin-form requests go.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Absolute-form requests and CONNECT; origin-form requests are gateway requests.
    Forward,
    /// Every origin-form request goes to one origin.
    Reverse {
        upstream: Uri,
        upstream_host: Option<HeaderValue>,
    },
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Forward => "forward proxy",
            Mode::Reverse { .. } => "reverse proxy",
        }
    }
}

/// The validated configuration hoard runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Who may use the proxy.
    pub allow: Vec<IpNet>,
    /// Who may use `/_hoard/` and PURGE.
    pub admin_allow: Vec<IpNet>,
    pub auth_file: Option<PathBuf>,
    pub mode: Mode,
    /// Reverse mode: the Host names answered for (empty: any).
    pub server_names: Vec<ServerName>,
    pub trust_forwarded: Vec<IpNet>,
    pub connect_ports: Vec<u16>,
    pub deny_dest: Vec<crate::upstream::DestRule>,
    pub allow_dest: Vec<crate::upstream::DestRule>,
    pub local_clients: Vec<IpNet>,
    pub tunnel_idle_timeout: Duration,
    pub reject_get_body: bool,
    pub admin_listen: Option<SocketAddr>,
    /// PEM bytes of extra trusted CAs, read once at start-up.
    pub extra_ca_pem: Option<Vec<u8>>,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub read_timeout: Duration,
    pub client_header_timeout: Duration,
    /// `None`: no limit.
    pub request_timeout: Option<Duration>,
    pub max_header_size: usize,
    /// 0: no limit.
    pub max_request_body: u64,
    pub max_connections: usize,
    pub cache: CacheSettings,
    pub follow_redirects: bool,
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
        if self.extra_ca_pem != other.extra_ca_pem && !changed.iter().any(|n| n == "ca-file") {
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
        if self.allow.iter().any(|net| net.prefix_len() == 0) {
            return Some(format!(
                "hoard is an OPEN PROXY: anyone who can reach {} may use it (--allow lets everyone in)",
                self.listen
            ));
        }
        if self.allow == loopback() && self.admin_listen.is_none() {
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
            policy: PolicySettings {
                heuristic_max: self.heuristic_max,
                stale_if_error_grace: self.stale_if_error,
            },
            // A follower waits as long as its own request to the origin could take.
            collapse_wait: self.connect_timeout + self.first_byte_timeout,
        };
        let or_loopback = |list: Vec<IpNet>| if list.is_empty() { loopback() } else { list };
        Ok(Config {
            listen: SocketAddr::new(self.bind, self.port),
            allow: or_loopback(self.allow),
            admin_allow: or_loopback(self.admin_allow),
            auth_file: self.auth_file,
            mode,
            server_names,
            trust_forwarded: self.trust_forwarded,
            connect_ports: self.connect_ports,
            deny_dest: self.deny_dest,
            allow_dest: self.allow_dest,
            local_clients: or_loopback(self.local_clients),
            tunnel_idle_timeout: self.tunnel_idle_timeout,
            reject_get_body: self.reject_get_body,
            admin_listen: self.admin_listen,
            extra_ca_pem,
            connect_timeout: self.connect_timeout,
            first_byte_timeout: self.first_byte_timeout,
            read_timeout: self.read_timeout,
            client_header_timeout: self.client_header_timeout,
            request_timeout: (!self.request_timeout.is_zero()).then_some(self.request_timeout),
            max_header_size: self.max_header_size as usize,
            max_request_body: self.max_request_body,
            max_connections: self.max_connections.max(1),
            cache,
            follow_redirects: self.follow_redirects,
            access_log: self.access_log,
            log_format: self.log_format,
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
