//! Where hoard may connect on a client's behalf: the operator's `--deny-dest` rules, the safe
//! defaults for clients outside `--local-clients` (not the proxy host, not link-local or cloud
//! metadata, no unsafe low ports; `--allow-dest` re-opens them), and never hoard's own
//! listening addresses (a request to itself would be a loop around the access rules).
//!
//! Addresses are compared in one canonical form: IPv4-mapped and IPv4-compatible IPv6 are
//! their IPv4 address, and the unspecified addresses (`0.0.0.0`, `::`) are the host itself,
//! which is what connecting to them reaches. They are checked before connecting (literal or
//! resolved) and again on the address actually connected to, so no spelling of an address
//! gets past a rule that names it.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use ipnet::IpNet;

/// One `--deny-dest` or `--allow-dest` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestRule {
    Net(IpNet),
    /// A host name and its subdomains.
    Host(String),
    Port(u16),
}

impl std::str::FromStr for DestRule {
    type Err = String;

    /// `10.0.0.0/8`, `169.254.169.254`, `::1`, `::1/128`, `metadata.internal`, `:25`.
    fn from_str(s: &str) -> Result<Self, String> {
        // `:25` is a port; `::1` is an address.
        if let Some(port) = s.strip_prefix(':')
            && !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
        {
            return port
                .parse()
                .map(DestRule::Port)
                .map_err(|_| format!("{s:?}: not a port"));
        }
        let unbracketed = s.trim_start_matches('[').trim_end_matches(']');
        if let Ok(net) = unbracketed.parse::<IpNet>() {
            return Ok(DestRule::Net(net));
        }
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(DestRule::Net(ip.into()));
        }
        let host = s.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(format!(
                "{s:?}: not an address, CIDR block, host name or :port"
            ));
        }
        Ok(DestRule::Host(host))
    }
}

impl DestRule {
    fn matches(&self, dest: &Dest<'_>) -> bool {
        match self {
            DestRule::Port(port) => dest.port == Some(*port),
            DestRule::Host(name) => {
                dest.host == name
                    || dest
                        .host
                        .strip_suffix(name.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }
            DestRule::Net(net) => dest.addrs().any(|ip| net.contains(&ip)),
        }
    }
}

/// Why a destination was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// An operator's `--deny-dest` rule.
    Rule,
    /// The proxy host itself (loopback, unspecified, one of its interface addresses).
    ProxyHost,
    /// Link-local addresses, where cloud metadata services live.
    LinkLocal,
    /// A port below 1024 outside Squid's `Safe_ports`.
    UnsafePort,
    /// One of hoard's own listening addresses.
    Itself,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("destination {target} is denied: {}", match .reason {
    DenyReason::Rule => "hoard's --deny-dest rules",
    DenyReason::ProxyHost => "the proxy host itself (--allow-dest re-opens it)",
    DenyReason::LinkLocal => "a link-local or metadata address (--allow-dest re-opens it)",
    DenyReason::UnsafePort => "a port below 1024 that is not a web port (--allow-dest :PORT re-opens it)",
    DenyReason::Itself => "it is this hoard, so the request loops back to it",
})]
pub struct Denied {
    pub target: String,
    pub reason: DenyReason,
}

/// Ports below 1024 a client outside `--local-clients` may reach (Squid's `Safe_ports`).
pub(super) const SAFE_PORTS: [u16; 9] = [80, 443, 21, 70, 210, 280, 488, 591, 777];

/// Link-local and metadata blocks denied by default.
const LINK_LOCAL: [&str; 3] = ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"];

/// What is known about a destination at one point: its name (or literal), its port once
/// known, its address once known.
#[derive(Debug)]
struct Dest<'a> {
    host: &'a str,
    port: Option<u16>,
    addr: Option<IpAddr>,
}

impl Dest<'_> {
    /// The canonical address, and for an unspecified one the host's loopback addresses too:
    /// connecting to `0.0.0.0` or `::` reaches this host.
    fn addrs(&self) -> impl Iterator<Item = IpAddr> {
        let addr = self.addr.map(canonical);
        let host_itself = addr.is_some_and(|ip| ip.is_unspecified());
        addr.into_iter().chain(
            host_itself
                .then_some([
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ])
                .into_iter()
                .flatten(),
        )
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`) IPv6 addresses are the
/// IPv4 address they carry; `::` and `::1` stay IPv6.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let segments = v6.segments();
            if segments[..6] == [0; 6] && !v6.is_unspecified() && !v6.is_loopback() {
                return IpAddr::V4(Ipv4Addr::from_bits(v6.to_bits() as u32));
            }
            ip
        }
        v4 => v4,
    }
}

/// The destination rules one kind of client is held to.
#[derive(Debug)]
pub struct DestinationPolicy {
    deny: Vec<DestRule>,
    /// `--allow-dest`: exceptions to the safe defaults (never to `deny`).
    reopen: Vec<DestRule>,
    /// Whether the safe defaults apply (clients outside `--local-clients`).
    restricted: bool,
    /// hoard's own listening addresses.
    own: Vec<SocketAddr>,
    /// This host's interface addresses, read once at start.
    host_addrs: Vec<IpAddr>,
    link_local: Vec<IpNet>,
}

impl DestinationPolicy {
    pub fn new(
        deny: Vec<DestRule>,
        reopen: Vec<DestRule>,
        restricted: bool,
        own: Vec<SocketAddr>,
    ) -> DestinationPolicy {
        let host_addrs = if_addrs::get_if_addrs()
            .map(|interfaces| interfaces.iter().map(|i| canonical(i.ip())).collect())
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot list this host's addresses for the destination rules");
                Vec::new()
            });
        DestinationPolicy {
            deny,
            reopen,
            restricted,
            own,
            host_addrs,
            link_local: LINK_LOCAL
                .iter()
                .filter_map(|net| net.parse().ok())
                .collect(),
        }
    }

    /// The explicit rules only, with no listening address of its own (offline checks, tests).
    pub fn rules_only(deny: Vec<DestRule>) -> DestinationPolicy {
        DestinationPolicy::new(deny, Vec::new(), false, Vec::new())
    }

    /// Checks what is known before resolving: the host name (or literal address) and port.
    pub fn check_target(&self, host: &str, port: u16) -> Result<(), Denied> {
        let host = normalise_host(host);
        // RFC 6761 §6.3: `localhost` and its subdomains are always the loopback address.
        let localhost = host == "localhost" || host.ends_with(".localhost");
        let addr = host
            .parse::<IpAddr>()
            .ok()
            .or(localhost.then_some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        self.check(&Dest {
            host: &host,
            port: Some(port),
            addr,
        })
    }

    /// Checks what a URI names before resolving: its host and port (the scheme's default
    /// when it has none). A URI without a host names no destination.
    pub fn check_uri(&self, uri: &http::Uri) -> Result<(), Denied> {
        let Some(authority) = uri.authority() else {
            return Ok(());
        };
        let default_port = if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        };
        self.check_target(
            authority.host(),
            authority.port_u16().unwrap_or(default_port),
        )
    }

    /// Checks an address `host` resolved to (port unknown: hyper's resolver is not told it).
    pub fn check_resolved(&self, host: &str, addr: IpAddr) -> Result<(), Denied> {
        let host = normalise_host(host);
        self.check(&Dest {
            host: &host,
            port: None,
            addr: Some(addr),
        })
    }

    /// Checks the address a connection to `host` actually reached.
    pub fn check_connected(&self, host: &str, peer: SocketAddr) -> Result<(), Denied> {
        let host = normalise_host(host);
        self.check(&Dest {
            host: &host,
            port: Some(peer.port()),
            addr: Some(peer.ip()),
        })
    }

    fn check(&self, dest: &Dest<'_>) -> Result<(), Denied> {
        let denied = |reason| {
            Err(Denied {
                target: match (dest.addr, dest.port) {
                    (Some(ip), Some(port)) => SocketAddr::new(ip, port).to_string(),
                    (Some(ip), None) => ip.to_string(),
                    (None, Some(port)) => format!("{}:{port}", dest.host),
                    (None, None) => dest.host.to_owned(),
                },
                reason,
            })
        };
        if self.is_own(dest) {
            return denied(DenyReason::Itself);
        }
        if self.deny.iter().any(|rule| rule.matches(dest)) {
            return denied(DenyReason::Rule);
        }
        if !self.restricted {
            return Ok(());
        }
        let reopened = |wanted: fn(&DestRule) -> bool| {
            self.reopen
                .iter()
                .any(|rule| wanted(rule) && rule.matches(dest))
        };
        let address_rule = |rule: &DestRule| !matches!(rule, DestRule::Port(_));
        let port_rule = |rule: &DestRule| matches!(rule, DestRule::Port(_));
        for ip in dest.addrs() {
            let host_itself = ip.is_loopback()
                || ip.is_unspecified()
                || matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 0)
                || self.host_addrs.contains(&ip);
            if host_itself && !reopened(address_rule) {
                return denied(DenyReason::ProxyHost);
            }
            if self.link_local.iter().any(|net| net.contains(&ip)) && !reopened(address_rule) {
                return denied(DenyReason::LinkLocal);
            }
        }
        if let Some(port) = dest.port
            && port < 1024
            && !SAFE_PORTS.contains(&port)
            && !reopened(port_rule)
        {
            return denied(DenyReason::UnsafePort);
        }
        Ok(())
    }

    /// Whether `dest` is one of hoard's listening sockets: the same port on the bound
    /// address, or on any address of this host when bound to the unspecified address.
    fn is_own(&self, dest: &Dest<'_>) -> bool {
        let Some(port) = dest.port else {
            return false;
        };
        dest.addrs().any(|ip| {
            self.own.iter().any(|own| {
                let bound = canonical(own.ip());
                own.port() == port
                    && (bound == ip
                        || (bound.is_unspecified()
                            && (ip.is_loopback() || self.host_addrs.contains(&ip))))
            })
        })
    }

    /// What a client held to these rules cannot reach, for the start-up warning.
    pub fn describe_restrictions(&self) -> String {
        let reopened: Vec<String> = self.reopen.iter().map(describe_rule).collect();
        let mut text = format!(
            "clients outside --local-clients may reach any destination except this host \
             (loopback, 0.0.0.0, ::, its interface addresses), link-local and metadata \
             addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254) and ports below 1024 other \
             than {}",
            SAFE_PORTS.map(|p| p.to_string()).join(", ")
        );
        if !reopened.is_empty() {
            text.push_str(&format!(
                "; re-opened by --allow-dest: {}",
                reopened.join(", ")
            ));
        }
        if !self.deny.is_empty() {
            let denied: Vec<String> = self.deny.iter().map(describe_rule).collect();
            text.push_str(&format!("; denied to everyone: {}", denied.join(", ")));
        }
        text
    }
}

fn describe_rule(rule: &DestRule) -> String {
    match rule {
        DestRule::Net(net) => net.to_string(),
        DestRule::Host(host) => host.clone(),
        DestRule::Port(port) => format!(":{port}"),
    }
}

/// Lowercase, without brackets or a trailing dot.
fn normalise_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Resolves `name:port` and fails if any address is denied.
pub async fn resolve(
    policy: &DestinationPolicy,
    name: &str,
    port: u16,
) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port)).await?.collect();
    for addr in &addrs {
        policy
            .check_resolved(name, addr.ip())
            .map_err(|denied| io::Error::new(io::ErrorKind::PermissionDenied, denied))?;
    }
    Ok(addrs)
}

/// hyper-util's resolver, with every resolved address checked against the policy: a name
/// with a denied address fails to resolve (an `io::ErrorKind::PermissionDenied` carrying
/// `Denied`).
#[derive(Clone)]
pub(super) struct DenyingResolver {
    policy: Arc<DestinationPolicy>,
}

impl DenyingResolver {
    pub(super) fn new(policy: Arc<DestinationPolicy>) -> DenyingResolver {
        DenyingResolver { policy }
    }
}

impl tower_service::Service<Name> for DenyingResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move { resolve(&policy, name.as_str(), 0).await.map(Vec::into_iter) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(rules: &[&str]) -> Vec<DestRule> {
        rules.iter().map(|r| r.parse().unwrap()).collect()
    }

    fn list(deny: &[&str]) -> DestinationPolicy {
        DestinationPolicy::rules_only(rules(deny))
    }

    fn addr(ip: &str) -> IpAddr {
        ip.parse().unwrap()
    }

    #[test]
    fn rules_parse_and_match() {
        let deny = list(&["10.0.0.0/8", "169.254.169.254", "metadata.internal", ":25"]);
        assert!(deny.check_target("example.org", 80).is_ok());
        assert!(deny.check_target("mail.example.org", 25).is_err());
        assert!(deny.check_target("metadata.internal", 80).is_err());
        assert!(deny.check_target("a.metadata.internal.", 80).is_err());
        assert!(deny.check_target("xmetadata.internal", 80).is_ok());
        assert!(deny.check_target("10.1.2.3", 80).is_err());
        assert!(deny.check_resolved("x", addr("10.9.9.9")).is_err());
        assert!(deny.check_resolved("x", addr("192.0.2.1")).is_ok());
        assert!("bad host!".parse::<DestRule>().is_err());
    }

    #[test]
    fn rules_starting_with_colons_are_addresses() {
        assert_eq!(
            "::1".parse::<DestRule>().unwrap(),
            DestRule::Net(addr("::1").into())
        );
        assert_eq!(
            "::1/128".parse::<DestRule>().unwrap(),
            DestRule::Net("::1/128".parse().unwrap())
        );
        assert_eq!(
            "[::1]".parse::<DestRule>().unwrap(),
            DestRule::Net(addr("::1").into())
        );
        assert_eq!(":25".parse::<DestRule>().unwrap(), DestRule::Port(25));
        assert!(":99999".parse::<DestRule>().is_err());
    }

    #[test]
    fn every_spelling_of_a_denied_address_is_denied() {
        let deny = list(&["127.0.0.0/8", "169.254.169.254", "::1"]);
        for host in [
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[::ffff:169.254.169.254]",
            "[::127.0.0.1]",
            "0.0.0.0",
            "[::]",
            "[::1]",
            "127.1.2.3",
        ] {
            assert!(deny.check_target(host, 80).is_err(), "{host}");
        }
        for ip in ["::ffff:127.0.0.1", "0.0.0.0", "::", "::ffff:a9fe:a9fe"] {
            assert!(deny.check_resolved("x", addr(ip)).is_err(), "{ip}");
        }
        assert!(deny.check_target("[::ffff:192.0.2.1]", 80).is_ok());
        assert_eq!(canonical(addr("::1")), addr("::1"), "::1 is not 0.0.0.1");
    }

    #[test]
    fn restricted_clients_get_safe_defaults_that_allow_dest_reopens() {
        let policy = DestinationPolicy::new(Vec::new(), Vec::new(), true, Vec::new());
        for (host, port) in [
            ("127.0.0.1", 8080),
            ("[::1]", 80),
            ("0.0.0.0", 80),
            ("[::]", 80),
            ("[::ffff:127.0.0.1]", 80),
            ("169.254.169.254", 80),
            ("[fe80::1]", 80),
            ("[fd00:ec2::254]", 80),
            ("192.0.2.1", 22),
            ("192.0.2.1", 25),
        ] {
            assert!(policy.check_target(host, port).is_err(), "{host}:{port}");
        }
        for port in [80, 443, 21, 70, 210, 280, 488, 591, 777, 1024, 8080] {
            assert!(policy.check_target("192.0.2.1", port).is_ok(), "{port}");
        }
        for own in &policy.host_addrs {
            assert!(policy.check_resolved("me", *own).is_err(), "{own}");
        }
        let reopened = DestinationPolicy::new(
            rules(&["127.0.0.2"]),
            rules(&["127.0.0.0/8", "metadata.internal", ":25"]),
            true,
            Vec::new(),
        );
        assert!(reopened.check_target("127.0.0.1", 8080).is_ok());
        assert!(
            reopened.check_target("127.0.0.2", 8080).is_err(),
            "deny wins"
        );
        assert!(reopened.check_target("192.0.2.1", 25).is_ok());
        assert!(reopened.check_target("192.0.2.1", 22).is_err());
        assert!(
            reopened
                .check_resolved("metadata.internal", addr("169.254.169.254"))
                .is_ok()
        );
        let local = DestinationPolicy::new(Vec::new(), Vec::new(), false, Vec::new());
        assert!(local.check_target("127.0.0.1", 22).is_ok());
    }

    #[test]
    fn hoards_own_address_is_refused_however_spelled() {
        let own = |bound: &str| {
            DestinationPolicy::new(Vec::new(), Vec::new(), false, vec![bound.parse().unwrap()])
        };
        let policy = own("127.0.0.1:3128");
        for host in ["127.0.0.1", "[::ffff:127.0.0.1]", "0.0.0.0", "[::]"] {
            assert!(policy.check_target(host, 3128).is_err(), "{host}");
        }
        assert!(policy.check_target("127.0.0.1", 3129).is_ok());
        assert!(
            policy
                .check_connected("x", "127.0.0.1:3128".parse().unwrap())
                .is_err()
        );
        let any = own("0.0.0.0:3128");
        assert!(any.check_target("127.0.0.5", 3128).is_err());
        assert!(any.check_target("[::1]", 3128).is_err());
        for ip in &any.host_addrs {
            assert!(
                any.check_connected("x", SocketAddr::new(*ip, 3128))
                    .is_err()
            );
        }
        assert!(any.check_target("192.0.2.1", 3128).is_ok());
    }
}
