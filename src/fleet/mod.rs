//! A fleet of hoard nodes that acts as one cache (`--peers`): every URL has one owner,
//! picked by rendezvous hashing of its scheme, host, path and query (`rendezvous`), and
//! only the owner stores it and asks the origin. Any node takes a request; a node that
//! does not own a cacheable one sends it to the owner over pooled HTTP (`pool`) with a
//! `CDN-Loop` hop marker (RFC 8586), and the owner answers from its cache or fetches once,
//! collapsing the misses of every node into one origin request.
//!
//! Members probe each other (`/_hoard/fleet/health`); one that fails a request or two
//! probes is down, and its keys go to their next candidate until a probe succeeds
//! (`members::Health`). When no owner answers within `--peer-timeout`, the receiving node
//! serves the request itself: a client never fails because a peer is down.
//!
//! This module owns membership, routing and the peer protocol. It must not answer clients
//! or touch the cache: `proxy` asks it where a request goes and what a peer answered.

mod hot;
pub mod members;
mod pool;
mod probe;
pub mod rendezvous;

pub use hot::{HotCopies, HotCopy};
pub use members::{Member, Membership, PeerSource};

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{self, ProxyBody};
use crate::metrics::Metrics;

/// The hop marker a node adds when it sends a request to a member (RFC 8586 `CDN-Loop`).
/// A request that already carries it is never sent to another member again.
pub const CDN_LOOP: HeaderName = HeaderName::from_static("cdn-loop");
const FLEET_ID: &str = "hoard-fleet";

/// Marks a member's answer to a request another member sent it, so that the sender can tell
/// it from a refusal by a node that does not count it as a member.
pub const MEMBER_ANSWER: HeaderName = HeaderName::from_static("hoard-fleet");

/// With `--fleet-key-file`: the fleet's shared key, sent on every request between members
/// and required, beside a member's source address, for a request to count as a member's.
pub const FLEET_KEY: HeaderName = HeaderName::from_static("hoard-fleet-key");

/// The path prefix of the peer protocol's own endpoints, open to members only.
pub const FLEET_PREFIX: &str = "/_hoard/fleet/";

/// How far to trust the destinations of a request a member sent on: the receiving node
/// held its client to the safe destination defaults, or not (`--local-clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTrust {
    Local,
    Restricted,
}

/// The fleet's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSettings {
    /// Every member, this node included; empty: no fleet.
    pub peers: Vec<PeerSource>,
    /// This node's own name in `peers` (`--self`); by default the member at the listen
    /// address is this node.
    pub self_url: Option<String>,
    /// How long an owner may take to answer (connection and response head) before the
    /// receiving node serves the request itself.
    pub peer_timeout: Duration,
    /// `--fleet-key-file`: the key every member sends and requires; `None`: members are
    /// known by their source address alone.
    pub key: Option<FleetKey>,
    /// `--peer-hot-copy`: how long a node keeps a copy of a very hot object it does not
    /// own (`hot.rs`); zero: never.
    pub hot_copy: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot resolve fleet member {0}: {1}")]
    Resolve(String, String),
}

/// Why a member did not answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
    #[error("it does not take this node for a member (is --peers the same on every node?)")]
    NotMember,
}

impl PeerError {
    /// Every `kind`.
    pub const KINDS: [&'static str; 4] = ["connect", "timeout", "failed", "not-member"];

    /// The metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerError::Connect(_) => "connect",
            PeerError::Timeout(_) => "timeout",
            PeerError::Failed(_) => "failed",
            PeerError::NotMember => "not-member",
        }
    }
}

/// What a member answered a forwarded request with.
pub struct PeerAnswer {
    pub member: Arc<Member>,
    pub response: Response<ProxyBody>,
}

/// One member as the status page and `/_hoard/stats` show it.
pub struct MemberStatus {
    pub name: String,
    pub is_self: bool,
    pub up: bool,
    /// The part of all keys it owns now, 0 to 1.
    pub share: f64,
}

pub struct Fleet {
    settings: ArcSwap<FleetSettings>,
    listen: SocketAddr,
    membership: ArcSwap<Membership>,
    metrics: Arc<Metrics>,
    /// Serialises re-resolving (a reload and the periodic DNS refresh).
    resolving: tokio::sync::Mutex<()>,
    /// Copies of very hot objects owned elsewhere (`--peer-hot-copy`).
    pub hot: Option<HotCopies>,
}

impl Fleet {
    /// Resolves the members and starts probing them and re-resolving `dns:` names. `None`
    /// when `settings` names no peers.
    pub async fn start(
        settings: FleetSettings,
        listen: SocketAddr,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Fleet>>, FleetError> {
        if settings.peers.is_empty() {
            return Ok(None);
        }
        let membership =
            members::resolve(&settings, listen, &Membership::empty(), &metrics.fleet).await?;
        if membership.this_node().is_none() {
            tracing::warn!(
                %listen,
                "this node is not in --peers (see --self): it stores nothing and sends every cacheable request to the fleet"
            );
        }
        let hot = (!settings.hot_copy.is_zero()).then(|| HotCopies::new(settings.hot_copy));
        let fleet = Arc::new(Fleet {
            hot,
            settings: ArcSwap::from_pointee(settings),
            listen,
            membership: ArcSwap::from_pointee(membership),
            metrics,
            resolving: tokio::sync::Mutex::new(()),
        });
        probe::start(&fleet);
        Ok(Some(fleet))
    }

    /// Applies a reloaded member list (SIGHUP), keeping the connections of members that
    /// stay. Only the list: the other fleet settings need a restart (the reload names them).
    pub async fn reload(&self, peers: Vec<PeerSource>) -> Result<(), FleetError> {
        let _one_at_a_time = self.resolving.lock().await;
        let settings = FleetSettings {
            peers,
            ..(**self.settings.load()).clone()
        };
        let membership = members::resolve(
            &settings,
            self.listen,
            &self.membership(),
            &self.metrics.fleet,
        )
        .await?;
        self.settings.store(Arc::new(settings));
        self.replace_membership(membership);
        Ok(())
    }

    /// Installs a new member list; the metric series of members that left go with them,
    /// so a fleet whose pods come and go does not grow its metrics forever.
    fn replace_membership(&self, membership: Membership) {
        let old = self.membership.swap(Arc::new(membership));
        let new = self.membership.load();
        for gone in old
            .members
            .iter()
            .filter(|m| !new.members.iter().any(|n| n.name == m.name))
        {
            self.metrics.fleet.forget_peer(&gone.name);
        }
    }

    /// Resolves the list again (for `dns:` members).
    async fn refresh(&self) {
        let _one_at_a_time = self.resolving.lock().await;
        let settings = self.settings.load_full();
        match members::resolve(
            &settings,
            self.listen,
            &self.membership(),
            &self.metrics.fleet,
        )
        .await
        {
            Ok(membership) => self.replace_membership(membership),
            Err(e) => tracing::warn!(error = %e, "fleet: keeping the last member list"),
        }
    }

    pub fn membership(&self) -> Arc<Membership> {
        self.membership.load_full()
    }

    /// This node's name for `Cache-Status` (RFC 9211: each cache on the path names itself).
    pub fn cache_name(&self) -> String {
        let membership = self.membership.load();
        match membership.this_node() {
            Some(me) => format!("hoard/{}", me.name.trim_start_matches("http://")),
            // Not (yet) in the list, say a pod not in its headless service's answer until
            // it is ready: named by its host name, not by a wildcard address.
            None if self.listen.ip().is_unspecified() => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|name| name.trim().to_owned())
                    .unwrap_or_default();
                format!("hoard/{host}:{}", self.listen.port())
            }
            None => format!("hoard/{}", self.listen),
        }
    }

    /// Whether a request from `ip` with these headers was sent on by a member: then it is
    /// served here, never sent on again. Trusted by the source address, which members send
    /// from (`members::source_address`).
    pub fn from_member(&self, ip: IpAddr, headers: &http::HeaderMap) -> Option<ClientTrust> {
        let marker = marker_in(headers)?;
        let settings = self.settings.load();
        if let Some(key) = &settings.key
            && !key.matches(headers.get(FLEET_KEY))
        {
            return None;
        }
        self.membership.load().has_address(ip).then_some(marker)
    }

    /// The fields every request to a member carries: the hop marker and, when configured,
    /// the fleet's key.
    fn member_fields(&self, trust: ClientTrust) -> Vec<(HeaderName, HeaderValue)> {
        let mut fields = vec![(CDN_LOOP, marker_value(trust))];
        if let Some(key) = &self.settings.load().key {
            fields.push((FLEET_KEY, key.0.clone()));
        }
        fields
    }

    /// A request for one of `member`'s `/_hoard/fleet/` endpoints.
    fn endpoint_head(
        &self,
        member: &Member,
        method: http::Method,
        path_and_query: &str,
    ) -> Option<http::request::Parts> {
        let uri: http::Uri = format!("{}{path_and_query}", member.name).parse().ok()?;
        let host = HeaderValue::from_str(uri.authority()?.as_str()).ok()?;
        let mut request = http::Request::new(());
        *request.method_mut() = method;
        request.headers_mut().insert(http::header::HOST, host);
        for (name, value) in self.member_fields(ClientTrust::Restricted) {
            request.headers_mut().insert(name, value);
        }
        *request.uri_mut() = http::Uri::builder()
            .path_and_query(uri.path_and_query()?.clone())
            .build()
            .ok()?;
        Some(request.into_parts().0)
    }

    /// Each member's health and share of the keys (with equal weights, an equal part of
    /// what the members that are up hold; this node always counts as up).
    pub fn status(&self) -> Vec<MemberStatus> {
        let membership = self.membership.load();
        let up = |m: &Member| m.is_self || m.health.is_up();
        let taking = membership.members.iter().filter(|m| up(m)).count().max(1);
        membership
            .members
            .iter()
            .map(|m| MemberStatus {
                name: m.name.to_string(),
                is_self: m.is_self,
                up: up(m),
                share: if up(m) { 1.0 / taking as f64 } else { 0.0 },
            })
            .collect()
    }

    /// The member that is to serve `cache_url` now: its owner, or while that one is down
    /// the next candidate that is up; `None` when that is this node. A member that fails a
    /// request is marked down, so asking again after a failure gives the next candidate.
    pub fn owner_elsewhere(&self, cache_url: &str) -> Option<Arc<Member>> {
        let membership = self.membership.load();
        let key = rendezvous::routing_key(cache_url);
        let members = &membership.members;
        let best = rendezvous::best(&membership.hashes, key, |i| {
            members[i].is_self || members[i].health.is_up()
        })?;
        Some(&members[best]).filter(|m| !m.is_self).cloned()
    }

    /// Sends a body-less request (absolute URI, end-to-end headers) to `member` with the
    /// hop marker. A failure marks the member down.
    pub async fn forward(
        &self,
        member: &Arc<Member>,
        head: &http::request::Parts,
        trust: ClientTrust,
    ) -> Result<Response<ProxyBody>, PeerError> {
        let started = Instant::now();
        let sent = member.pool.send(head, &self.member_fields(trust)).await;
        let peer: &str = &member.name;
        // Only an answer the member marked as a member's is one: anything else (a 403 from a
        // node that does not count this one as a member yet) is not relayed to the client.
        let answered =
            sent.and_then(
                |mut response| match response.headers_mut().remove(MEMBER_ANSWER) {
                    Some(_) => Ok(response),
                    None => Err(PeerError::NotMember),
                },
            );
        match answered {
            Ok(response) => {
                member.metrics.forwarded(started.elapsed());
                Ok(response.map(body::stream))
            }
            Err(e) => {
                // A slow answer is no sign the member is gone; anything else is.
                if !matches!(e, PeerError::Timeout(_)) {
                    member.health.request_failed();
                }
                self.metrics.fleet.failed(peer, e.kind());
                tracing::warn!(peer, error = %e, "fleet: member did not answer, serving elsewhere");
                Err(e)
            }
        }
    }

    /// Sends a fleet endpoint request (`/_hoard/fleet/...`) to every other member at once
    /// and reports each one's status or failure.
    pub async fn tell_others(
        &self,
        method: http::Method,
        path_and_query: &str,
    ) -> Vec<(String, Result<StatusCode, PeerError>)> {
        let membership = self.membership();
        let sends = membership
            .members
            .iter()
            .filter(|m| !m.is_self)
            .map(|member| {
                let head = self.endpoint_head(member, method.clone(), path_and_query);
                async move {
                    let result = match head {
                        Some(head) => member.pool.call(&head).await,
                        None => Err(PeerError::Failed("invalid endpoint URL".into())),
                    };
                    (member.name.to_string(), result)
                }
            });
        futures_util::future::join_all(sends).await
    }

    /// Tells every other member to purge what `pairs` name (`url`, or `group` and `origin`,
    /// as `/_hoard/purge` takes them), in the background: an unsafe method went to the
    /// origin from this node (RFC 9111 §4.4; RFC 9875 for groups). The owner drops what it
    /// stores, the others their hot copies and anything they stored while the owner was
    /// down.
    pub fn invalidate_everywhere(self: &Arc<Self>, pairs: &[(&str, &str)]) {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let fleet = Arc::clone(self);
        tokio::spawn(async move {
            let path = format!("{FLEET_PREFIX}purge?{query}");
            for (peer, result) in fleet.tell_others(http::Method::POST, &path).await {
                if let Err(e) = result {
                    tracing::warn!(peer, error = %e, "fleet: cannot invalidate at a member");
                }
            }
        });
    }
}

/// The answer to `GET /_hoard/fleet/health`: the probe.
pub fn health_response() -> Response<ProxyBody> {
    body::generated(StatusCode::OK, "text/plain; charset=utf-8", "ok\n")
}

fn marker_value(trust: ClientTrust) -> HeaderValue {
    HeaderValue::from_static(match trust {
        ClientTrust::Local => "hoard-fleet; client=local",
        ClientTrust::Restricted => "hoard-fleet",
    })
}

/// The fleet's entry in a `CDN-Loop` field, if there is one.
fn marker_in(headers: &http::HeaderMap) -> Option<ClientTrust> {
    headers
        .get_all(CDN_LOOP)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|entry| {
            let mut params = entry.split(';').map(str::trim);
            (params.next() == Some(FLEET_ID)).then(|| {
                if params.any(|p| p.eq_ignore_ascii_case("client=local")) {
                    ClientTrust::Local
                } else {
                    ClientTrust::Restricted
                }
            })
        })
}

/// Removes the fleet's own `CDN-Loop` entry: from a member's request before it leaves the
/// fleet for the origin, and from every client's request, so that no client can have a
/// node carry the marker to another member (whose trust in a member's source address would
/// then take the client for a member). Other CDNs' entries stay (RFC 8586 §2).
pub fn remove_marker(headers: &mut http::HeaderMap) {
    headers.remove(FLEET_KEY);
    if !headers.contains_key(CDN_LOOP) {
        return;
    }
    // Usually the field is just the fleet's marker, as a member sent it.
    let mut values = headers.get_all(CDN_LOOP).iter();
    if let (Some(only), None) = (values.next(), values.next())
        && only.to_str().is_ok_and(|v| !v.contains(','))
        && marker_in(headers).is_some()
    {
        headers.remove(CDN_LOOP);
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(CDN_LOOP)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter(|entry| entry.split(';').next().map(str::trim) != Some(FLEET_ID))
        .filter_map(|entry| HeaderValue::from_str(entry.trim()).ok())
        .collect();
    headers.remove(CDN_LOOP);
    for value in kept {
        headers.append(CDN_LOOP, value);
    }
}

/// The fleet's key (`--fleet-key-file`), kept out of `Debug` output.
#[derive(Clone, PartialEq)]
pub struct FleetKey(HeaderValue);

impl FleetKey {
    /// A key from the file's text (surrounding whitespace dropped); `None` when empty or
    /// not a valid field value.
    pub fn new(text: &str) -> Option<FleetKey> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let mut value = HeaderValue::from_str(text).ok()?;
        value.set_sensitive(true);
        Some(FleetKey(value))
    }

    /// Whether `sent` is this key, compared in constant time.
    fn matches(&self, sent: Option<&HeaderValue>) -> bool {
        let (ours, theirs) = (
            self.0.as_bytes(),
            sent.map_or(&[][..], HeaderValue::as_bytes),
        );
        ours.len() == theirs.len()
            && ours
                .iter()
                .zip(theirs)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_compared_whole_and_never_printed() {
        let key = FleetKey::new(" s3cret\n").unwrap();
        assert!(key.matches(Some(&HeaderValue::from_static("s3cret"))));
        for wrong in ["s3cre", "s3cret!", "S3cret", ""] {
            assert!(
                !key.matches(Some(&HeaderValue::from_static(wrong))),
                "{wrong}"
            );
        }
        assert!(!key.matches(None));
        assert_eq!(format!("{key:?}"), "FleetKey(..)");
        assert!(FleetKey::new("  \n").is_none());
    }

    #[test]
    fn every_error_kind_is_listed() {
        let errors = [
            PeerError::Connect(String::new()),
            PeerError::Timeout(Duration::ZERO),
            PeerError::Failed(String::new()),
            PeerError::NotMember,
        ];
        let kinds: Vec<&str> = errors.iter().map(PeerError::kind).collect();
        assert_eq!(kinds, PeerError::KINDS);
    }

    #[test]
    fn the_marker_says_who_held_the_client_and_is_removed_alone() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(marker_in(&headers), None);
        headers.append(
            CDN_LOOP,
            HeaderValue::from_static("other-cdn, hoard-fleet; client=local"),
        );
        assert_eq!(marker_in(&headers), Some(ClientTrust::Local));
        remove_marker(&mut headers);
        assert_eq!(marker_in(&headers), None);
        assert_eq!(headers.get(CDN_LOOP).unwrap(), "other-cdn");
        headers.append(CDN_LOOP, marker_value(ClientTrust::Restricted));
        assert_eq!(marker_in(&headers), Some(ClientTrust::Restricted));
    }
}
