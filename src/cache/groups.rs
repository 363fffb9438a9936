//! Cache groups (RFC 9875): responses name the groups they belong to (`Cache-Groups:
//! "product-7", "listings"`, or Fastly's `Surrogate-Key: product-7 listings`), and a group
//! is forgotten at once, for one origin, when the response to an unsafe request says so
//! (`Cache-Group-Invalidation`), or by the operator (`POST /_hoard/purge?group=`, `hoard
//! cache purge --group`). Groups are scoped to an origin (scheme, host and port) and
//! compared exactly.
//!
//! Owns reading the fields and the purge. The index keeps a row per (group, origin,
//! response) beside each entry's (`index/slots.rs`), so purging a group of one origin reads
//! that group's rows only; a group of every origin reads every head.

use std::sync::Arc;

use http::header::{HeaderMap, HeaderName};

use super::{Cache, CacheKey, StoredResponse};

const CACHE_GROUPS: HeaderName = HeaderName::from_static("cache-groups");
const CACHE_GROUP_INVALIDATION: HeaderName = HeaderName::from_static("cache-group-invalidation");
const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");

/// The groups a response belongs to.
pub(super) fn groups_of(headers: &HeaderMap) -> impl Iterator<Item = String> {
    let surrogate_keys: Vec<String> = headers
        .get_all(SURROGATE_KEY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(str::split_ascii_whitespace)
        .map(str::to_owned)
        .collect();
    strings(headers, &CACHE_GROUPS)
        .into_iter()
        .chain(surrogate_keys)
}

/// Whether `entry` is in `group` of `origin` (`None`: of any origin).
pub(super) fn is_in(entry: &StoredResponse, origin: Option<&str>, group: &str) -> bool {
    origin.is_none_or(|origin| origin_of(entry.key.url()) == origin)
        && groups_of(&entry.headers).any(|name| name == group)
}

/// The groups the response to an unsafe request invalidates.
pub fn invalidated_groups(headers: &HeaderMap) -> Vec<String> {
    strings(headers, &CACHE_GROUP_INVALIDATION)
}

/// A field that is a structured list of strings (RFC 8941); a list that does not parse is
/// ignored whole, and members that are not strings are skipped (RFC 9875 §2).
fn strings(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    let mut text = String::new();
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else {
            return Vec::new();
        };
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push_str(value);
    }
    if text.is_empty() {
        return Vec::new();
    }
    let Ok(list) = sfv::Parser::new(&text).parse::<sfv::List>() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|entry| match entry {
            sfv::ListEntry::Item(item) => item.bare_item.as_string().map(|s| s.as_str().to_owned()),
            sfv::ListEntry::InnerList(_) => None,
        })
        .collect()
}

/// `scheme://host[:port]` of a normalised URL.
pub fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    url[after_scheme..]
        .find('/')
        .map_or(url, |at| &url[..after_scheme + at])
}

/// `origin` (`https://Example.com:443`) as cache keys spell it (`https://example.com`).
pub fn normalised_origin(origin: &str) -> Option<String> {
    let key = CacheKey::from_uri(&format!("{}/", origin.trim_end_matches('/')).parse().ok()?)?;
    Some(origin_of(key.url()).to_owned())
}

impl Cache {
    /// Forgets every stored response in `group` of `origin` (as `normalised_origin` gives
    /// it; `None`: of every origin), its parts and shared-tier copy too; returns how many
    /// variants went. Blocking: reads the group's rows (for every origin, every row).
    pub fn purge_group(&self, origin: Option<&str>, group: &str) -> usize {
        let entries: Vec<Arc<StoredResponse>> = match origin {
            Some(origin) => self.index.entries_in_group(origin, group),
            // Of every origin: the group's rows are keyed by origin, so every head is read.
            None => self
                .index
                .entries_with_prefix("")
                .into_iter()
                .filter(|entry| is_in(entry, None, group))
                .collect(),
        };
        for entry in &entries {
            self.index.remove_variant(entry);
            if !entry.key.is_part() {
                self.forget_parts(&entry.key);
                self.forget_in_shared_tier(&entry.key);
            }
        }
        entries.len()
    }

    /// After an unsafe request to `key` succeeded: forgets the groups its response names,
    /// for the key's origin, off the reactor.
    pub(super) fn invalidate_groups(self: &Arc<Self>, key: &CacheKey, response: &HeaderMap) {
        let groups = invalidated_groups(response);
        if groups.is_empty() {
            return;
        }
        let (cache, origin) = (Arc::clone(self), origin_of(key.url()).to_owned());
        self.background.spawn_blocking(move || {
            for group in groups {
                let purged = cache.purge_group(Some(&origin), &group);
                tracing::debug!(%origin, %group, purged, "Cache-Group-Invalidation");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn groups_come_from_cache_groups_and_surrogate_key() {
        let response = headers(&[
            ("cache-groups", "\"product-7\", \"listings\""),
            ("cache-groups", "\"a b\""),
            ("surrogate-key", "sk-1  sk-2"),
        ]);
        assert_eq!(
            groups_of(&response).collect::<Vec<_>>(),
            ["product-7", "listings", "a b", "sk-1", "sk-2"]
        );
        // Not a list of strings: a token is skipped, a broken list ignored whole.
        assert_eq!(
            groups_of(&headers(&[("cache-groups", "\"x\", token")])).collect::<Vec<_>>(),
            ["x"]
        );
        assert_eq!(groups_of(&headers(&[("cache-groups", "\"x")])).count(), 0);
        assert_eq!(
            invalidated_groups(&headers(&[("cache-group-invalidation", "\"product-7\"")])),
            ["product-7"]
        );
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        assert_eq!(origin_of("http://a.test:8080/x/y?z"), "http://a.test:8080");
        assert_eq!(origin_of("https://a.test"), "https://a.test");
        assert_eq!(
            normalised_origin("HTTPS://A.test:443/").as_deref(),
            Some("https://a.test")
        );
        assert_eq!(normalised_origin("not an origin"), None);
    }
}
