//! Who is in the fleet: the `--peers` list as written (`PeerSource`), resolved into members
//! (`Member`: a canonical name that every node hashes alike, where to connect, whether it is
//! this node, its health and its connection pool), and `Membership`, one resolved list that
//! routing reads without locks and a reload or a DNS refresh replaces whole.
//!
//! It must not decide routing (that is `rendezvous`) or send requests (`pool`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::pool::Pool;
use super::rendezvous::MemberHash;
use super::{FleetError, FleetSettings};
use crate::metrics::{FleetMetrics, PeerMetrics};

/// One entry of `--peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSource {
    /// `http://HOST:PORT`: one member, named by this URL.
    Url { host: String, port: u16 },
    /// `dns:NAME:PORT`: every A/AAAA address NAME resolves to, re-resolved periodically.
    Dns { name: String, port: u16 },
}

impl std::str::FromStr for PeerSource {
    type Err = String;

    fn from_str(text: &str) -> Result<PeerSource, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("dns:") {
            let (name, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{text:?}: write dns:NAME:PORT"))?;
            let port = port
                .parse()
                .map_err(|_| format!("{text:?}: {port:?} is not a port"))?;
            if name.is_empty() {
                return Err(format!("{text:?}: write dns:NAME:PORT"));
            }
            return Ok(PeerSource::Dns {
                name: name.to_ascii_lowercase(),
                port,
            });
        }
        let url = url::Url::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!(
                "{text:?}: fleet members are reached over http:// (TLS between nodes is not supported yet)"
            ));
        }
        if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
            return Err(format!("{text:?}: write a member as http://HOST:PORT"));
        }
        let host = url
            .host_str()
            .ok_or_else(|| format!("{text:?}: no host"))?
            .to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(80);
        Ok(PeerSource::Url { host, port })
    }
}

/// How a member's health stands, from probes and forwarded requests.
#[derive(Debug, Default)]
pub struct Health {
    down: AtomicBool,
    failed_probes: AtomicU32,
    /// A probe is in flight (a member that does not answer is not probed twice at once).
    probing: AtomicBool,
}

/// Probes that must fail in a row before a member is marked down (one failed request
/// marks it down at once: a client is waiting).
const PROBES_TO_MARK_DOWN: u32 = 2;

impl Health {
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    /// A request to it failed: its keys go to their next candidate until a probe succeeds.
    pub fn request_failed(&self) {
        self.down.store(true, Ordering::Relaxed);
    }

    pub fn probe_failed(&self) {
        if self.failed_probes.fetch_add(1, Ordering::Relaxed) + 1 >= PROBES_TO_MARK_DOWN {
            self.down.store(true, Ordering::Relaxed);
        }
    }

    /// Takes the member's probe slot; false when its last probe has not ended yet.
    pub fn start_probe(&self) -> bool {
        !self.probing.swap(true, Ordering::AcqRel)
    }

    pub fn end_probe(&self) {
        self.probing.store(false, Ordering::Release);
    }

    pub fn probe_succeeded(&self) {
        self.failed_probes.store(0, Ordering::Relaxed);
        self.down.store(false, Ordering::Relaxed);
    }
}

/// One node of the fleet.
pub struct Member {
    /// `http://HOST:PORT` as the list names it: what every node hashes.
    pub name: Arc<str>,
    pub hash: MemberHash,
    /// Where it is reached.
    pub addr: SocketAddr,
    /// This node itself.
    pub is_self: bool,
    pub health: Health,
    pub(super) pool: Pool,
    pub(super) metrics: PeerMetrics,
}

/// The resolved member list, in `--peers` order.
pub struct Membership {
    pub members: Vec<Arc<Member>>,
    /// `members[i].hash`, in one slice for `rendezvous`.
    pub hashes: Vec<MemberHash>,
}

impl Membership {
    pub fn empty() -> Membership {
        Membership {
            members: Vec::new(),
            hashes: Vec::new(),
        }
    }

    /// Whether `ip` is the address of a member (their requests are trusted as peers').
    pub fn has_address(&self, ip: IpAddr) -> bool {
        self.members.iter().any(|m| m.addr.ip() == ip)
    }

    pub fn this_node(&self) -> Option<&Arc<Member>> {
        self.members.iter().find(|m| m.is_self)
    }
}

/// Resolves `settings.peers` into members, keeping the `Member` (pool, health) of every
/// name `previous` already had, so a reload or a refresh does not drop connections.
pub async fn resolve(
    settings: &FleetSettings,
    listen: SocketAddr,
    previous: &Membership,
    metrics: &FleetMetrics,
) -> Result<Membership, FleetError> {
    let mut found: Vec<(String, SocketAddr)> = Vec::new();
    for source in &settings.peers {
        match source {
            PeerSource::Url { host, port } => {
                let addr = lookup(host, *port)
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| FleetError::Resolve(host.clone(), "no address".into()))?;
                found.push((name_of(host, *port), addr));
            }
            PeerSource::Dns { name, port } => {
                for addr in lookup(name, *port).await? {
                    found.push((name_of(&addr.ip().to_string(), *port), addr));
                }
            }
        }
    }
    // The same list on every node, in one order, however DNS answered.
    found.sort();
    found.dedup_by(|a, b| a.0 == b.0);
    let local_addresses = local_addresses();
    let members: Vec<Arc<Member>> = found
        .into_iter()
        .map(|(name, addr)| {
            let is_self = match &settings.self_url {
                Some(own) => *own == name,
                None => is_listen_address(addr, listen, &local_addresses),
            };
            match previous
                .members
                .iter()
                .find(|m| *m.name == *name && m.addr == addr)
            {
                Some(kept) if kept.is_self == is_self => Arc::clone(kept),
                _ => Arc::new(Member {
                    hash: MemberHash::of(&name),
                    metrics: metrics.peer(&name),
                    pool: Pool::new(addr, source_address(listen), settings.peer_timeout),
                    name: name.into(),
                    addr,
                    is_self,
                    health: Health::default(),
                }),
            }
        })
        .collect();
    Ok(Membership {
        hashes: members.iter().map(|m| m.hash).collect(),
        members,
    })
}

/// The canonical member name: what every node hashes, so it must not depend on DNS order
/// or letter case.
pub fn name_of(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    }
}

async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, FleetError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| FleetError::Resolve(host.to_owned(), e.to_string()))?
        .collect();
    Ok(addrs)
}

/// Whether a member at `addr` is this node listening on `listen`: the same address, or for
/// a wildcard listener, the same port on one of this machine's addresses.
fn is_listen_address(addr: SocketAddr, listen: SocketAddr, local: &[IpAddr]) -> bool {
    addr.port() == listen.port()
        && (addr.ip() == listen.ip()
            || (listen.ip().is_unspecified() && local.contains(&addr.ip())))
}

fn local_addresses() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .map(|interfaces| interfaces.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default()
}

/// The address peer connections leave from: the listen address when it is a specific one,
/// so the member at the other end recognises this node by its source address.
fn source_address(listen: SocketAddr) -> Option<IpAddr> {
    Some(listen.ip()).filter(|ip| !ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_members_and_dns_names() {
        assert_eq!(
            "http://Node-1.example:8080".parse(),
            Ok(PeerSource::Url {
                host: "node-1.example".into(),
                port: 8080
            })
        );
        assert_eq!(
            "http://10.0.0.5".parse(),
            Ok(PeerSource::Url {
                host: "10.0.0.5".into(),
                port: 80
            })
        );
        assert_eq!(
            "dns:hoard.default.svc.cluster.local:8080".parse(),
            Ok(PeerSource::Dns {
                name: "hoard.default.svc.cluster.local".into(),
                port: 8080
            })
        );
        for bad in [
            "https://a:1",
            "http://a:1/path",
            "dns:name",
            "dns::80",
            "a:1",
        ] {
            assert!(bad.parse::<PeerSource>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_wildcard_listener_is_any_local_address_on_its_port() {
        let listen: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let local = ["10.0.0.5".parse().unwrap()];
        assert!(is_listen_address(
            "10.0.0.5:8080".parse().unwrap(),
            listen,
            &local
        ));
        assert!(!is_listen_address(
            "10.0.0.6:8080".parse().unwrap(),
            listen,
            &local
        ));
        assert!(!is_listen_address(
            "10.0.0.5:8081".parse().unwrap(),
            listen,
            &local
        ));
        let specific: SocketAddr = "127.0.0.2:8080".parse().unwrap();
        assert!(is_listen_address(specific, specific, &[]));
        assert_eq!(name_of("::1", 80), "http://[::1]:80");
    }
}
