//! `Args`: every setting hoard has, defined once, with its flag, default, parser and help
//! text; the config file's keys are these flags' names (see `file.rs`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;

use crate::upstream::DestRule;

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

    /// The same as the port argument, for those who write it as a flag (`hoard --port 3128`).
    #[arg(
        long = "port",
        id = "port_flag",
        value_name = "PORT",
        conflicts_with = "port"
    )]
    pub port_flag: Option<u16>,

    /// Address and port to listen on, in one (`0.0.0.0:3128`, `[::]:8080`): instead of
    /// `--bind` and the port.
    #[arg(long, value_name = "ADDR:PORT", conflicts_with_all = ["port", "port_flag", "bind"])]
    pub listen: Option<SocketAddr>,

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
    pub deny_dest: Vec<DestRule>,

    /// Re-opens, for clients outside `--local-clients`, destinations the safe defaults deny
    /// (repeatable, the same forms as `--deny-dest`): e.g. `127.0.0.1`, `intranet.example`,
    /// `:8443`. `--deny-dest` still wins.
    #[arg(long, value_name = "RULE")]
    pub allow_dest: Vec<DestRule>,

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

    /// Reach origins through this upstream HTTP proxy, `http://[USER:PASSWORD@]HOST:PORT`
    /// (a corporate proxy, another hoard): plain requests go to it in absolute form, https
    /// origins and CONNECT tunnels through a CONNECT to it; credentials in the URL are sent
    /// as `Proxy-Authorization`.
    #[arg(long, value_name = "URL")]
    pub parent: Option<String>,

    /// Hosts reached directly, not through `--parent` (comma-separated, no_proxy style):
    /// `example.org` (and its subdomains), `.example.org` (only subdomains), an address or
    /// CIDR block, `*` for every host.
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    pub parent_bypass: Vec<String>,

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

    /// After SIGTERM or Ctrl-C, how long requests in flight may take to finish before their
    /// connections are closed (the index is saved either way); a second signal ends hoard
    /// at once.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

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

    /// Answer range requests from slices of this size (e.g. `1MiB`), like nginx's `slice`
    /// module: only the slices a range covers are fetched (with a range request of their
    /// own), and each is stored and revalidated on its own, so a large file is never fetched
    /// whole for one range. `0`: no slices; a range of an object not stored whole is fetched
    /// as asked and its 206 stored as a piece for later ranges inside it.
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_size)]
    pub slice_size: u64,

    /// A cache rule, tried in order (the first whose pattern matches a URL applies), before
    /// those of `--preset`: `PATTERN key=value ...`, e.g. `*/**/pool/**/*.deb min-ttl=30d`,
    /// `'~\.iso$' bypass`, `*/** ignore-query=utm_*,fbclid`, `api.example/** ttl-404=1m`.
    /// The config file writes them as `[[rule]]` tables. See docs/configuration.md.
    #[arg(long, value_name = "RULE", value_parser = super::rule::parse)]
    pub rule: Vec<crate::cache::CacheRule>,

    /// Rules hoard ships, tried after `--rule`s (repeatable).
    #[arg(long, value_enum)]
    pub preset: Vec<super::rule::Preset>,

    /// Upper bound on heuristic freshness (10% of the time since Last-Modified).
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = parse_duration)]
    pub heuristic_max: Duration,

    /// Serve a stale response up to this long past its freshness when the origin is down,
    /// times out or answers 5xx, even without `stale-if-error` (as Squid's `max_stale` and
    /// Traffic Server's `max_stale_age` do); never for `must-revalidate`,
    /// `proxy-revalidate`, `s-maxage` or `no-cache` responses. `0s` turns it off.
    #[arg(long, value_name = "DURATION", default_value = "1w", value_parser = parse_duration)]
    pub stale_if_error: Duration,

    /// The targeted cache-control field hoard obeys above `CDN-Cache-Control` and
    /// `Cache-Control` (RFC 9213), and removes from responses before they go downstream,
    /// e.g. `Surrogate-Control` for origins written for Fastly or Varnish.
    #[arg(long, value_name = "FIELD", default_value = "Hoard-Cache-Control", value_parser = parse_field_name)]
    pub targeted_cache_control: http::HeaderName,

    /// In the gateway, follow origin redirects (at most 10) and return the final response,
    /// instead of handing the redirect to the browser.
    #[arg(long)]
    pub follow_redirects: bool,

    /// Write the access log to this file (reopened on SIGUSR1, for logrotate) instead of
    /// stderr; `none` turns it off.
    #[arg(long, value_name = "FILE|none")]
    pub access_log: Option<PathBuf>,

    /// Every node of a fleet that acts as one cache, this one included, the same list on
    /// every node (comma-separated): `http://10.0.0.5:8080,http://10.0.0.6:8080`, or
    /// `dns:NAME:PORT` for every address NAME resolves to (a Kubernetes headless service),
    /// re-resolved every 30 s. Each URL has one owner among them (rendezvous hashing);
    /// other nodes send its cacheable requests there. See docs/fleet.md.
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    pub peers: Vec<crate::fleet::PeerSource>,

    /// This node's own URL in `--peers`, when its listen address does not say it (a wildcard
    /// `--bind`, a name, a NAT).
    #[arg(long = "self", value_name = "URL")]
    pub self_url: Option<String>,

    /// How long the owner of a URL may take to answer (connecting and the response head)
    /// before the node that received the request serves it itself.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub peer_timeout: Duration,

    /// A file holding the fleet's shared key: every member sends it to the others and requires
    /// it, beside a member's source address, before it takes a request as a member's (for
    /// networks where other hosts may share a member's address, such as behind NAT).
    #[arg(long, value_name = "FILE")]
    pub fleet_key_file: Option<PathBuf>,

    /// Keep a memory copy of a very hot object this node does not own (one asked of it 8
    /// times within a second) for this long, so a flash crowd does not all cross to one
    /// owner; `0s`: never (non-owners store nothing, like Traffic Server's
    /// `cache_peer_result=false`). Purges and invalidations seen here drop the copies.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub peer_hot_copy: Duration,

    /// A shared tier behind the fleet's owners on any S3-compatible object store,
    /// `s3://BUCKET/PREFIX`: a miss looks there before the origin, and a stored response with
    /// at least `--shared-tier-min-ttl` of freshness left is written there in the background.
    /// Credentials come from the standard AWS environment variables or
    /// `~/.aws/credentials`. See docs/fleet.md.
    #[arg(long, value_name = "URL")]
    pub shared_tier: Option<String>,

    /// The shared tier's endpoint for S3-compatible stores other than AWS, e.g.
    /// `http://minio.internal:9000` or `https://ACCOUNT.r2.cloudflarestorage.com`.
    #[arg(long, value_name = "URL")]
    pub shared_tier_endpoint: Option<String>,

    /// Longest a shared-tier read or write may take; a slower one counts as failed (after 5
    /// failures in a row the tier is skipped for 30 s).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub shared_tier_timeout: Duration,

    /// Only responses with at least this much freshness left are written to the shared tier.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub shared_tier_min_ttl: Duration,

    /// Serve TLS with this PEM certificate chain (RSA or ECDSA). Repeat it with `--tls-key`
    /// for several sites: the certificate is chosen by the name the client asks for (SNI),
    /// the first being the default. Without `--tls-port`, the main port speaks TLS.
    /// Certificates are read again on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Vec<PathBuf>,

    /// The private key of the `--tls-cert` in the same position (PKCS#8, RSA or EC PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Vec<PathBuf>,

    /// Also listen for TLS on this port, keeping the main port plain HTTP (80 and 443 from
    /// one process).
    #[arg(long, value_name = "PORT")]
    pub tls_port: Option<u16>,

    /// HTTP/2 streams one client connection may have open at once.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub http2_max_streams: u32,

    /// Intercept HTTPS: answer CONNECT with a TLS handshake under a certificate minted by the
    /// CA in DIR (made by `hoard ca init DIR`), and serve and cache the requests inside. Only
    /// for clients that trust that CA; see docs/security.md.
    #[arg(long, value_name = "DIR")]
    pub intercept: Option<PathBuf>,

    /// With `--intercept`, hosts still tunnelled blind (repeatable; `*.bank.example` matches
    /// subdomains): pinned apps, banking.
    #[arg(long, value_name = "HOST")]
    pub intercept_skip: Vec<String>,

    /// Access-log line format: squid, combined, json, or a template of nginx-style
    /// variables ('$remote_addr [$time_iso8601] "$request" $status $cache_status
    /// $request_time $request_id').
    #[arg(long, default_value = "squid", value_name = "FORMAT")]
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

pub(super) fn loopback() -> Vec<IpNet> {
    vec![
        IpNet::V4(ipnet::Ipv4Net::new_assert(Ipv4Addr::LOCALHOST, 8)),
        IpNet::V6(ipnet::Ipv6Net::new_assert(
            std::net::Ipv6Addr::LOCALHOST,
            128,
        )),
    ]
}

fn parse_field_name(s: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("{s:?} is not a field name"))
}

fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("{s:?}: {e} (write e.g. 512MiB, 1GiB, 4096)"))
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
    /// The certificate authority for `--intercept`.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Print the manual page (roff) to stdout: `hoard man > /usr/local/share/man/man1/hoard.1`.
    Man,
    /// Print shell completions to stdout: `hoard completions bash > /etc/bash_completion.d/hoard`.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CaCommand {
    /// Create DIR/ca.crt (to give to clients) and DIR/ca.key (mode 0600), and print how to
    /// trust the CA.
    Init { dir: PathBuf },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CacheCommand {
    /// URLs, stored responses and bytes on disk.
    Stats,
    /// One line per stored response (status, bytes, age, freshness, URL), optionally only
    /// URLs starting with PREFIX.
    Ls { prefix: Option<String> },
    /// Forget every stored response of URL, or with `--group` every one in that cache group
    /// (`Cache-Groups`, `Surrogate-Key`).
    Purge {
        #[arg(required_unless_present = "group", conflicts_with = "group")]
        url: Option<String>,
        /// A cache group's name.
        #[arg(long)]
        group: Option<String>,
        /// With `--group`: only that origin's responses (`https://example.org`).
        #[arg(long, requires = "group")]
        origin: Option<String>,
    },
    /// Check every stored body against its checksum and remove the bad ones (exit 1 if any).
    Verify,
}
