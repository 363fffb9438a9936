//! Short-lived memory copies of very hot objects on a node that does not own them
//! (`--peer-hot-copy DURATION`; off by default, as Traffic Server's
//! `cache_peer_result=false`): a URL this node sent to its owner at least `HOT_AFTER` times
//! within one second has the owner's next plain 200 answer kept here for at most DURATION,
//! so a flash crowd spread over the fleet does not make every request cross to one owner.
//!
//! Only what is safe to repeat to anyone for a moment is kept (`may_keep`): a 200 to a GET
//! without `Vary` or `Set-Cookie`, shareable without revalidation, that the owner's own
//! `Cache-Status` entry says it served from its cache or stored with at least the copy's
//! lifetime of freshness left, of a known length up to `MAX_OBJECT`. Copies answer only plain
//! requests (no validators, range, directives or credentials), are dropped on any purge or
//! invalidation this node sees, and age as the owner's answer did.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, StatusCode};

use crate::cache::CONDITIONALS;
use crate::cache::control::CacheControl;

/// Requests within one second that make a URL hot.
const HOT_AFTER: u32 = 8;
/// Largest body kept.
const MAX_OBJECT: u64 = 256 * 1024;
/// Memory all copies may take.
const CAPACITY: u64 = 64 * 1024 * 1024;

/// One kept answer.
#[derive(Clone)]
pub struct HotCopy {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    kept_at: Instant,
    /// The owner's `Age` when it answered.
    age: u64,
}

impl HotCopy {
    /// Its headers as of now: `Age` moved on by the time it has been kept.
    pub fn headers_now(&self) -> HeaderMap {
        let mut headers = self.headers.clone();
        let age = self.age + self.kept_at.elapsed().as_secs();
        headers.insert(header::AGE, HeaderValue::from(age));
        headers
    }
}

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<String, Arc<HotCopy>> for Weight {
    fn weight(&self, url: &String, copy: &Arc<HotCopy>) -> u64 {
        (url.len() + copy.body.len() + 512) as u64
    }
}

/// A URL's requests in the current second.
#[derive(Default)]
struct Heat {
    second: AtomicU64,
    requests: AtomicU32,
}

pub struct HotCopies {
    ttl: Duration,
    started: Instant,
    heat: quick_cache::sync::Cache<String, Arc<Heat>>,
    copies: quick_cache::sync::Cache<String, Arc<HotCopy>, Weight>,
}

impl HotCopies {
    pub fn new(ttl: Duration) -> HotCopies {
        HotCopies {
            ttl,
            started: Instant::now(),
            heat: quick_cache::sync::Cache::new(16_384),
            copies: quick_cache::sync::Cache::with_weighter(4_096, CAPACITY, Weight),
        }
    }

    /// A copy of `url` still young enough to serve `request`, if any.
    pub fn get<B>(&self, url: &str, request: &Request<B>) -> Option<Arc<HotCopy>> {
        if !plain(request) {
            return None;
        }
        let copy = self.copies.get(url)?;
        if copy.kept_at.elapsed() < self.ttl {
            Some(copy)
        } else {
            self.copies.remove(url);
            None
        }
    }

    /// Counts one request for `url` sent to its owner; whether it is hot now.
    pub fn is_hot<B>(&self, url: &str, request: &Request<B>) -> bool {
        if !plain(request) {
            return false;
        }
        let second = self.started.elapsed().as_secs();
        let heat = match self.heat.get(url) {
            Some(heat) => heat,
            None => {
                let heat = Arc::new(Heat::default());
                self.heat.insert(url.to_owned(), Arc::clone(&heat));
                heat
            }
        };
        if heat.second.swap(second, Ordering::Relaxed) != second {
            heat.requests.store(0, Ordering::Relaxed);
        }
        heat.requests.fetch_add(1, Ordering::Relaxed) + 1 >= HOT_AFTER
    }

    /// Whether the owner's answer to a `method` request may be kept (its body, which must
    /// be read whole first, then goes to `keep`): a 200 to a GET (a HEAD's answer has no
    /// body to keep) of known length up to `MAX_OBJECT`, without `Vary` or `Set-Cookie`,
    /// shareable with no revalidation (no `private`, `no-cache`, `no-store`,
    /// `must-revalidate`, `proxy-revalidate`), which the owner's own `Cache-Status` entry
    /// (the last one: entries are added in order) says it served from its cache or stored,
    /// with at least the copy's lifetime of freshness left.
    pub fn may_keep(&self, method: &http::Method, head: &http::response::Parts) -> bool {
        let headers = &head.headers;
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let owner_entry = headers
            .get_all("cache-status")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .filter(|entry| entry.starts_with("hoard/"));
        let fresh_enough = owner_entry.is_some_and(|entry| {
            let params: Vec<&str> = entry.split(';').map(str::trim).collect();
            let cached = params.contains(&"hit") || params.contains(&"stored");
            let ttl = params
                .iter()
                .find_map(|p| p.strip_prefix("ttl="))
                .and_then(|t| t.parse::<i64>().ok());
            cached && ttl.is_some_and(|ttl| ttl >= self.ttl.as_secs() as i64)
        });
        let cc = CacheControl::parse_request(headers);
        *method == http::Method::GET
            && head.status == StatusCode::OK
            && length.is_some_and(|len| len <= MAX_OBJECT)
            && fresh_enough
            && !headers.contains_key(header::VARY)
            && !headers.contains_key(header::SET_COOKIE)
            && !(cc.private
                || cc.no_cache
                || cc.no_store
                || cc.must_revalidate
                || cc.proxy_revalidate)
    }

    pub fn keep(&self, url: &str, status: StatusCode, headers: &HeaderMap, body: Bytes) {
        let age = headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let copy = HotCopy {
            status,
            headers: headers.clone(),
            body,
            kept_at: Instant::now(),
            age,
        };
        self.copies.insert(url.to_owned(), Arc::new(copy));
    }

    /// Forgets every copy (a purge or an invalidation went by).
    pub fn clear(&self) {
        self.copies.clear();
    }
}

/// A GET or HEAD any client would be answered alike: no validators, no range, no request
/// directives, no credentials.
fn plain<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    const OTHERS: [header::HeaderName; 5] = [
        header::RANGE,
        header::IF_RANGE,
        header::CACHE_CONTROL,
        header::PRAGMA,
        header::AUTHORIZATION,
    ];
    matches!(*request.method(), http::Method::GET | http::Method::HEAD)
        && CONDITIONALS
            .iter()
            .chain(&OTHERS)
            .all(|field| !headers.contains_key(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get() -> Request<()> {
        Request::new(())
    }

    #[test]
    fn a_url_is_hot_after_enough_requests_in_a_second_and_copies_expire() {
        let hot = HotCopies::new(Duration::from_millis(50));
        for _ in 1..HOT_AFTER {
            assert!(!hot.is_hot("http://a/x", &get()));
        }
        assert!(hot.is_hot("http://a/x", &get()));
        let mut no_cache = get();
        no_cache
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        assert!(!hot.is_hot("http://a/x", &no_cache));
        let mut headers = HeaderMap::new();
        headers.insert(header::AGE, HeaderValue::from_static("7"));
        hot.keep(
            "http://a/x",
            StatusCode::OK,
            &headers,
            Bytes::from_static(b"x"),
        );
        let copy = hot.get("http://a/x", &get()).unwrap();
        assert_eq!(copy.headers_now().get(header::AGE).unwrap(), "7");
        assert!(hot.get("http://a/x", &no_cache).is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert!(hot.get("http://a/x", &get()).is_none());
    }

    #[test]
    fn only_shareable_answers_from_the_owners_cache_are_kept() {
        let copies = HotCopies::new(Duration::from_secs(10));
        let answer = |headers: &[(&str, &str)]| {
            let mut response = http::Response::new(());
            for (name, value) in headers {
                response.headers_mut().append(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            response.into_parts().0
        };
        let get = http::Method::GET;
        let hit = [
            ("content-length", "10"),
            ("cache-status", "hoard/a:1; hit; ttl=60"),
        ];
        let keeps = |extra: &[(&'static str, &'static str)]| {
            let mut headers = hit.to_vec();
            headers.extend_from_slice(extra);
            copies.may_keep(&get, &answer(&headers))
        };
        assert!(keeps(&[]));
        assert!(!copies.may_keep(&http::Method::HEAD, &answer(&hit)));
        assert!(!copies.may_keep(&get, &answer(&hit[..1])));
        assert!(!keeps(&[("vary", "accept")]));
        assert!(!keeps(&[("set-cookie", "a=b")]));
        assert!(!keeps(&[("cache-control", "private")]));
        assert!(!keeps(&[("cache-control", "no-cache")]));
        assert!(!keeps(&[("cache-control", "max-age=60, must-revalidate")]));
        // The owner's entry is the last one: an origin's own "hit" earlier counts for nothing.
        let spoofed = [
            ("content-length", "10"),
            ("cache-status", "app; hit"),
            ("cache-status", "hoard/a:1; fwd=uri-miss; ttl=60"),
        ];
        assert!(!copies.may_keep(&get, &answer(&spoofed)));
        // Less freshness left than the copy would live: not kept.
        let short = [
            ("content-length", "10"),
            ("cache-status", "hoard/a:1; hit; ttl=5"),
        ];
        assert!(!copies.may_keep(&get, &answer(&short)));
        let large = [
            ("content-length", "999999999"),
            ("cache-status", "hoard/a:1; hit; ttl=60"),
        ];
        assert!(!copies.may_keep(&get, &answer(&large)));
    }
}
