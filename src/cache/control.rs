//! `Cache-Control` parsing (RFC 9111 §5.2) for requests and responses, plus `Pragma: no-cache`
//! (§5.4), and the targeted fields of RFC 9213 (hoard's own, then `CDN-Cache-Control`), which
//! take precedence over `Cache-Control` for a response. `Cache-Control` is parsed by hand: the
//! directive grammar is small, and the crates that parse it drop the stale-* extensions this
//! cache acts on. Targeted fields are structured-field dictionaries, parsed with `sfv`.

use http::HeaderMap;
use http::header::{CACHE_CONTROL, HeaderName, PRAGMA};

/// RFC 9213 §3: the field every CDN-like cache obeys.
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// Largest delta-seconds we keep: RFC 9111 §1.2.2 says to treat anything larger as 2^31.
const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// The directives hoard acts on, from every `Cache-Control` line of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    /// `no-cache`, with or without field names: a shared cache revalidates either way.
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    /// RFC 9111 §5.2.2.3: store only if the status code is understood, and then despite
    /// `no-store`.
    pub must_understand: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    /// Request: `Some(None)` is `max-stale` without a value (any staleness is fine).
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
    /// A response's directives came from a targeted field: `Expires` does not count then
    /// (RFC 9213 §2.2).
    pub targeted: bool,
}

impl CacheControl {
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(text) = value.to_str() else { continue };
            for (name, arg) in directives(text) {
                cc.apply(&name, arg.as_deref());
            }
        }
        cc
    }

    /// A response's directives for hoard's own decisions: those of the first targeted field
    /// with a valid, non-empty value, in the order `own` (hoard's field), `CDN-Cache-Control`;
    /// else `Cache-Control` (RFC 9213 §2.2). A targeted field that is not a valid
    /// structured-field dictionary is ignored.
    pub fn parse_response(headers: &HeaderMap, own: &HeaderName) -> CacheControl {
        [own, &CDN_CACHE_CONTROL]
            .into_iter()
            .find_map(|name| targeted(headers, name))
            .unwrap_or_else(|| CacheControl::parse(headers))
    }

    /// A request's directives, with `Pragma: no-cache` counted when there is no
    /// `Cache-Control` (RFC 9111 §5.4).
    pub fn parse_request(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::parse(headers);
        if !headers.contains_key(CACHE_CONTROL) {
            cc.no_cache |= headers.get_all(PRAGMA).iter().any(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',')
                        .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
                })
            });
        }
        cc
    }

    fn apply(&mut self, name: &str, arg: Option<&str>) {
        // An invalid number for a freshness directive makes the response stale rather than
        // fresh forever (RFC 9111 §4.2.1 and §5.2.2.1).
        let seconds = || arg.map_or(Some(0), parse_delta_seconds).or(Some(0));
        // A directive given twice counts the first time (§4.2.1: `max-age=1, max-age=3600`
        // is fresh for one second): later values only fill what is still unset.
        fn first(slot: &mut Option<u64>, value: impl FnOnce() -> Option<u64>) {
            if slot.is_none() {
                *slot = value();
            }
        }
        match name {
            "max-age" => first(&mut self.max_age, seconds),
            "s-maxage" => first(&mut self.s_maxage, seconds),
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "must-understand" => self.must_understand = true,
            "stale-while-revalidate" => first(&mut self.stale_while_revalidate, || {
                arg.and_then(parse_delta_seconds)
            }),
            "stale-if-error" => first(&mut self.stale_if_error, || {
                arg.and_then(parse_delta_seconds)
            }),
            "max-stale" if self.max_stale.is_none() => {
                self.max_stale = Some(arg.and_then(parse_delta_seconds))
            }
            "min-fresh" => first(&mut self.min_fresh, || arg.and_then(parse_delta_seconds)),
            "only-if-cached" => self.only_if_cached = true,
            _ => {}
        }
    }
}

/// The directives of targeted field `name` (its lines combined, RFC 9651 §4.2), if it is
/// present with a valid, non-empty dictionary value. `max-age=60` is an integer, `public` a
/// true boolean, `no-cache="set-cookie"` a string; a directive of another shape is ignored.
fn targeted(headers: &HeaderMap, name: &HeaderName) -> Option<CacheControl> {
    let mut text = String::new();
    for value in headers.get_all(name) {
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push_str(value.to_str().ok()?);
    }
    let dictionary: sfv::Dictionary = sfv::Parser::new(&text).parse().ok()?;
    if dictionary.is_empty() {
        return None;
    }
    let mut cc = CacheControl {
        targeted: true,
        ..CacheControl::default()
    };
    for (key, entry) in &dictionary {
        let sfv::ListEntry::Item(item) = entry else {
            continue;
        };
        let value = &item.bare_item;
        let arg = if value.as_boolean() == Some(true) {
            None
        } else if let Some(seconds) = value.as_integer().map(i64::from) {
            Some(seconds.max(0).to_string())
        } else if let Some(text) = value.as_string() {
            Some(text.as_str().to_owned())
        } else if let Some(token) = value.as_token() {
            Some(token.as_str().to_owned())
        } else {
            continue;
        };
        cc.apply(key.as_str(), arg.as_deref());
    }
    Some(cc)
}

fn parse_delta_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        text.parse::<u64>()
            .unwrap_or(DELTA_SECONDS_MAX)
            .min(DELTA_SECONDS_MAX),
    )
}

/// Splits `a, b=1, c="x, y"` into lowercase names and unquoted arguments; commas inside quoted
/// strings do not split.
fn directives(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find([',', '=']).unwrap_or(rest.len());
        let name = rest[..end].trim().to_ascii_lowercase();
        rest = &rest[end..];
        let mut arg = None;
        if let Some(after_eq) = rest.strip_prefix('=') {
            let after_eq = after_eq.trim_start();
            if let Some(quoted) = after_eq.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut consumed = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => {
                            consumed = i + 1;
                            break;
                        }
                        _ => value.push(c),
                    }
                }
                arg = Some(value);
                rest = &quoted[consumed..];
                rest = rest.find(',').map_or("", |i| &rest[i..]);
            } else {
                let end = after_eq.find(',').unwrap_or(after_eq.len());
                arg = Some(after_eq[..end].trim().to_owned());
                rest = &after_eq[end..];
            }
        }
        rest = rest.strip_prefix(',').unwrap_or(rest);
        if !name.is_empty() {
            out.push((name, arg));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cc(values: &[&str]) -> CacheControl {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
        }
        CacheControl::parse(&headers)
    }

    #[test]
    fn parses_directives_across_lines_and_case() {
        let c = cc(&[
            "Public, MAX-AGE=60",
            "s-maxage=\"120\", stale-while-revalidate=30",
        ]);
        assert!(c.public);
        assert_eq!(c.max_age, Some(60));
        assert_eq!(c.s_maxage, Some(120));
        assert_eq!(c.stale_while_revalidate, Some(30));
    }

    #[test]
    fn quoted_commas_do_not_split() {
        let c = cc(&["no-cache=\"set-cookie, x-a\", max-age=5"]);
        assert!(c.no_cache);
        assert_eq!(c.max_age, Some(5));
    }

    #[test]
    fn invalid_max_age_means_stale() {
        assert_eq!(cc(&["max-age=abc"]).max_age, Some(0));
        assert_eq!(cc(&["max-age=-1"]).max_age, Some(0));
        assert_eq!(cc(&["max-age"]).max_age, Some(0));
    }

    #[test]
    fn huge_delta_seconds_is_capped() {
        assert_eq!(
            cc(&["max-age=99999999999999999999999"]).max_age,
            Some(DELTA_SECONDS_MAX)
        );
    }

    #[test]
    fn max_stale_without_value_allows_any() {
        assert_eq!(cc(&["max-stale"]).max_stale, Some(None));
        assert_eq!(cc(&["max-stale=10"]).max_stale, Some(Some(10)));
    }

    #[test]
    fn pragma_no_cache_counts_only_without_cache_control() {
        let mut headers = HeaderMap::new();
        headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(CacheControl::parse_request(&headers).no_cache);
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
        assert!(!CacheControl::parse_request(&headers).no_cache);
    }

    #[test]
    fn garbage_does_not_panic() {
        for text in [
            "",
            ",,,",
            "=",
            "a=\"",
            "a=\"\\",
            "\"",
            "max-age==3",
            "x=\"a\"b, max-age=2",
        ] {
            let _ = cc(&[text]);
        }
        assert_eq!(cc(&["x=\"a\"b, max-age=2"]).max_age, Some(2));
    }
}
