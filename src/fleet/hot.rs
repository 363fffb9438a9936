//! Short-lived memory copies of very hot objects on a node that does not own them
//! (`--peer-hot-copy DURATION`; off by default, as Traffic Server's
//! `cache_peer_result=false`): a URL this node sent to its owner at least `HOT_AFTER` times
//! within one second has the owner's next plain 200 answer kept here for at most DURATION,
//! so a flash crowd spread over the fleet does not make every request cross to one owner.
//!
//! Only what is safe to repeat to anyone for a moment is kept: a 200 to a plain GET (no
//! conditionals, no range, no request directives), without `Vary` or `Set-Cookie`, that the
//! owner answered from its cache or stored, of a known length up to `MAX_OBJECT`. Copies
//! are dropped on any purge or invalidation this node sees, and age as the owner's did.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};

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

    /// Whether the owner's answer may be kept: then its body (which must be read whole
    /// first) is handed to `keep`.
    pub fn may_keep<B>(response: &Response<B>) -> bool {
        let headers = response.headers();
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let from_owner_cache = headers
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("; hit") || v.contains("; stored"));
        response.status() == StatusCode::OK
            && length.is_some_and(|len| len <= MAX_OBJECT)
            && from_owner_cache
            && !headers.contains_key(header::VARY)
            && !headers.contains_key(header::SET_COOKIE)
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
    matches!(*request.method(), http::Method::GET | http::Method::HEAD)
        && [
            header::RANGE,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
            header::CACHE_CONTROL,
            header::PRAGMA,
            header::AUTHORIZATION,
        ]
        .iter()
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
        let answer = |headers: &[(&str, &str)]| {
            let mut response = Response::new(());
            for (name, value) in headers {
                response.headers_mut().insert(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            response
        };
        let hit = [("content-length", "10"), ("cache-status", "hoard/a:1; hit")];
        assert!(HotCopies::may_keep(&answer(&hit)));
        assert!(!HotCopies::may_keep(&answer(&hit[..1])));
        let with = |extra: (&'static str, &'static str)| {
            let mut headers = hit.to_vec();
            headers.push(extra);
            HotCopies::may_keep(&answer(&headers))
        };
        assert!(!with(("vary", "accept")));
        assert!(!with(("set-cookie", "a=b")));
        assert!(!HotCopies::may_keep(&answer(&[
            ("content-length", "999999999"),
            ("cache-status", "hoard/a:1; hit")
        ])));
    }
}
