//! Destination deny rules (`--deny-dest`): addresses, CIDR blocks, host names (and their
//! subdomains) and ports that no client may reach through hoard, e.g. the proxy host's own
//! private services or a cloud metadata endpoint. Addresses are checked after DNS resolution,
//! on the addresses hoard actually connects to, so a name that resolves to a denied address
//! is denied too.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use ipnet::IpNet;

/// One `--deny-dest` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyRule {
    Net(IpNet),
    /// A host name and its subdomains.
    Host(String),
    Port(u16),
}

impl std::str::FromStr for DenyRule {
    type Err = String;

    /// `10.0.0.0/8`, `169.254.169.254`, `metadata.internal`, `:25`.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(port) = s.strip_prefix(':') {
            return port
                .parse()
                .map(DenyRule::Port)
                .map_err(|_| format!("{s:?}: not a port"));
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(DenyRule::Net(net));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(DenyRule::Net(ip.into()));
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
        Ok(DenyRule::Host(host))
    }
}

/// Why a destination was refused.
#[derive(Debug, thiserror::Error)]
#[error("destination {0} is denied by hoard's rules")]
pub struct Denied(pub String);

#[derive(Debug, Default)]
pub struct DenyList {
    rules: Vec<DenyRule>,
}

impl DenyList {
    pub fn new(rules: Vec<DenyRule>) -> DenyList {
        DenyList { rules }
    }

    /// Checks what is known before resolving: the host name (or literal address) and port.
    pub fn check_target(&self, host: &str, port: u16) -> Result<(), Denied> {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let literal = host.parse::<IpAddr>().ok();
        for rule in &self.rules {
            let denied = match rule {
                DenyRule::Port(denied) => *denied == port,
                DenyRule::Host(name) => host == *name || host.ends_with(&format!(".{name}")),
                DenyRule::Net(net) => literal.is_some_and(|ip| net.contains(&ip)),
            };
            if denied {
                return Err(Denied(format!("{host}:{port}")));
            }
        }
        Ok(())
    }

    /// Checks a resolved address.
    pub fn check_addr(&self, addr: IpAddr) -> Result<(), Denied> {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        for rule in &self.rules {
            if let DenyRule::Net(net) = rule
                && net.contains(&addr)
            {
                return Err(Denied(addr.to_string()));
            }
        }
        Ok(())
    }
}

/// hyper-util's resolver, with every resolved address checked against the deny list: a name
/// with a denied address fails to resolve (an `io::ErrorKind::PermissionDenied` carrying
/// `Denied`).
#[derive(Clone)]
pub struct DenyingResolver {
    deny: Arc<DenyList>,
}

impl DenyingResolver {
    pub fn new(deny: Arc<DenyList>) -> DenyingResolver {
        DenyingResolver { deny }
    }
}

/// Resolves `name:port` and fails if any address is denied.
pub async fn resolve(deny: &DenyList, name: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port)).await?.collect();
    for addr in &addrs {
        deny.check_addr(addr.ip())
            .map_err(|denied| io::Error::new(io::ErrorKind::PermissionDenied, denied))?;
    }
    Ok(addrs)
}

impl tower_service::Service<Name> for DenyingResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let deny = Arc::clone(&self.deny);
        Box::pin(async move { resolve(&deny, name.as_str(), 0).await.map(Vec::into_iter) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(rules: &[&str]) -> DenyList {
        DenyList::new(rules.iter().map(|r| r.parse().unwrap()).collect())
    }

    #[test]
    fn rules_parse_and_match() {
        let deny = list(&["10.0.0.0/8", "169.254.169.254", "metadata.internal", ":25"]);
        assert!(deny.check_target("example.org", 80).is_ok());
        assert!(deny.check_target("mail.example.org", 25).is_err());
        assert!(deny.check_target("metadata.internal", 80).is_err());
        assert!(deny.check_target("a.metadata.internal.", 80).is_err());
        assert!(deny.check_target("10.1.2.3", 80).is_err());
        assert!(deny.check_addr("10.9.9.9".parse().unwrap()).is_err());
        assert!(
            deny.check_addr("::ffff:10.0.0.1".parse().unwrap()).is_err(),
            "v4-mapped v6"
        );
        assert!(deny.check_addr("192.0.2.1".parse().unwrap()).is_ok());
        assert!("bad host!".parse::<DenyRule>().is_err());
    }
}
