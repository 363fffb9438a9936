//! Cache keys: the primary key is the normalised absolute URI (RFC 9111 §2); the secondary key
//! is the request's values of the fields the response's `Vary` names (§4.1).
//!
//! Keys are hashed for lookups and never become file names: bodies are stored under random
//! ids, so no URL can steer a path on disk.

use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use http::Uri;
use http::header::{self, HeaderMap, HeaderName};

/// Between a URL and the part of its body a key stands for: ` part=slice0-1048575` (a slice,
/// see `slice.rs`) or ` part=100-199` (a piece, a 206 stored as it came).  Both name their
/// bytes, so a slice stored under another `--slice-size` is never taken for this one. No URL can hold it (a
/// parsed URI holds no space).
const PART_MARK: &str = " part=";

/// A part of a URL's body stored on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// A slice: bytes `a..=b` asked for as one of `--slice-size` bytes.
    Slice(u64, u64),
    /// Bytes `a..=b`, as an origin's 206 had them.
    Piece(u64, u64),
}

/// The primary key of a cached resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    url: String,
    hash: u128,
}

impl CacheKey {
    /// Scheme and host in lowercase, default port dropped, path and query as sent.
    pub fn from_uri(uri: &Uri) -> Option<CacheKey> {
        use std::fmt::Write as _;
        let scheme = uri.scheme_str()?;
        let default_port = if scheme.eq_ignore_ascii_case("http") {
            80
        } else if scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            return None;
        };
        let authority = uri.authority()?;
        let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
        // The authority's text is host[:port] once user information is ruled out, which
        // saves parsing it again; with user information the host is picked out.
        let text = authority.as_str();
        let (host, port) = if text.contains('@') {
            (authority.host(), authority.port_u16())
        } else {
            let host = authority.host();
            (
                host,
                text[host.len()..]
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok()),
            )
        };
        // One allocation: this runs on every request.
        let mut url = String::with_capacity(scheme.len() + 3 + host.len() + 6 + path.len());
        url.push_str(scheme);
        url.push_str("://");
        url.push_str(host);
        url.make_ascii_lowercase();
        if let Some(port) = port.filter(|&p: &u16| p != default_port) {
            // Writing into a String cannot fail.
            let _ = write!(url, ":{port}");
        }
        url.push_str(path);
        Some(CacheKey::from_url(url))
    }

    /// A key from an already normalised URL (as stored in the index).
    pub fn from_url(url: String) -> CacheKey {
        // Two SipHash-1-3 values with this process's random keys: a tenth of a cryptographic
        // hash's cost on every request, and no one outside can aim for a collision. The hash
        // is never stored (the index is keyed anew from URLs at start-up), and a collision
        // would only cost a miss: lookups compare the URL too.
        static KEYS: OnceLock<RandomState> = OnceLock::new();
        let keys = KEYS.get_or_init(RandomState::new);
        let high = keys.hash_one((0u8, url.as_str()));
        let low = keys.hash_one((1u8, url.as_str()));
        CacheKey {
            hash: (u128::from(high) << 64) | u128::from(low),
            url,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key of `part` of this URL's body.
    pub(super) fn part(&self, part: Part) -> CacheKey {
        CacheKey::from_url(match part {
            Part::Slice(first, last) => format!("{}{PART_MARK}slice{first}-{last}", self.url),
            Part::Piece(start, end) => format!("{}{PART_MARK}{start}-{end}", self.url),
        })
    }

    /// Whether this is the key of a part of a body rather than of a whole response.
    pub(super) fn is_part(&self) -> bool {
        self.url.contains(PART_MARK)
    }

    /// For a part's key: the key of the URL it is a part of, and which part.
    pub(super) fn part_of(&self) -> Option<(CacheKey, Part)> {
        let (url, part) = self.url.split_once(PART_MARK)?;
        let (slice, span) = match part.strip_prefix("slice") {
            Some(span) => (true, span),
            None => (false, part),
        };
        let (first, last) = span.split_once('-')?;
        let (first, last) = (first.parse().ok()?, last.parse().ok()?);
        let part = if slice {
            Part::Slice(first, last)
        } else {
            Part::Piece(first, last)
        };
        Some((CacheKey::from_url(url.to_owned()), part))
    }

    pub fn hash(&self) -> u128 {
        self.hash
    }
}

/// The field names a response varies on, lowercase; `None` for `Vary: *` (never matches).
pub(super) fn vary_fields(response: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut fields = Vec::new();
    for value in response.get_all(header::VARY) {
        for name in value.to_str().unwrap_or("").split(',') {
            let name = name.trim();
            if name == "*" {
                return None;
            }
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes())
                && !fields.contains(&name)
            {
                fields.push(name);
            }
        }
    }
    Some(fields)
}

/// The content-negotiation fields (RFC 9110 §12.5): lists of tokens (media ranges, codings,
/// charsets, language tags, all case-insensitive) with q-values, compared by the preference
/// they express rather than by their text (`negotiation_key`).
const NEGOTIATION_FIELDS: [HeaderName; 4] = [
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
    header::ACCEPT_CHARSET,
];

/// The request's values for `fields`, normalised only as far as each field's grammar allows
/// (RFC 9111 §4.1): the content-negotiation fields by the preference they express
/// (`negotiation_key`); any other field keeps its exact bytes (a token, a cookie or an
/// authorization differs by case), its lines joined with `,`. An absent field is `None`,
/// which only matches absence.
pub(super) fn vary_values(
    request: &HeaderMap,
    fields: &[HeaderName],
) -> Vec<(String, Option<String>)> {
    fields
        .iter()
        .map(|name| {
            let lines: Vec<String> = request
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            let value = (!lines.is_empty()).then(|| {
                if NEGOTIATION_FIELDS.contains(name) {
                    negotiation_key(&lines.join(","))
                } else {
                    lines.join(",")
                }
            });
            (name.as_str().to_owned(), value)
        })
        .collect()
}

/// A negotiation list by the preference it expresses: its members (token and parameters
/// other than `q`; token and parameter names lowercased, parameter values kept) in order of
/// preference (by q-value, ties in the order given), then the refused ones (`q=0`) sorted.
/// So `en, fr` and `fr;q=0.9, en` are one key, `fr, en` another, and `de;q=0` differs from
/// no `de` at all.
fn negotiation_key(list: &str) -> String {
    let mut accepted: Vec<(u32, usize, String)> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for (position, member) in split_outside_quotes(list, ',').into_iter().enumerate() {
        let mut parts = split_outside_quotes(member, ';').into_iter();
        let token = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        if token.is_empty() {
            continue;
        }
        let mut key = token;
        let mut quality = 1000;
        for parameter in parts {
            let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            let name = name.trim().to_ascii_lowercase();
            if name == "q" {
                quality = parse_quality(value.trim()).unwrap_or(1000);
            } else if !name.is_empty() {
                key.push(';');
                key.push_str(&name);
                key.push('=');
                key.push_str(value.trim());
            }
        }
        if quality == 0 {
            refused.push(key);
        } else {
            accepted.push((quality, position, key));
        }
    }
    accepted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    refused.sort();
    refused.dedup();
    let mut out: Vec<String> = Vec::new();
    for (_, _, key) in accepted {
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out.extend(refused.into_iter().map(|key| key + ";q=0"));
    out.join(",")
}

/// A q-value (RFC 9110 §12.4.2: `0` to `1` with up to three decimals) in thousandths.
fn parse_quality(text: &str) -> Option<u32> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if !matches!(whole, "0" | "1")
        || fraction.len() > 3
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u32>().ok()?;
    let value = whole.parse::<u32>().ok()? * 1000 + thousandths;
    (value <= 1000).then_some(value)
}

/// Splits on `separator` except inside double quotes.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn negotiation_lists_compare_by_preference() {
        let key = |text| negotiation_key(text);
        assert_eq!(key("en, fr"), key("fr;q=0.9, en"));
        assert_eq!(key("EN-us , De"), key("en-US,de"));
        assert_eq!(key("gzip;q=1.0, br;Q=0.5"), key("gzip, br;q=0.5"));
        assert_ne!(key("en, fr"), key("fr, en"));
        assert_ne!(key("en, de;q=0"), key("en"));
        assert_eq!(
            key("text/html;level=1;q=0.5, */*;q=0.1"),
            "text/html;level=1,*/*"
        );
        assert_eq!(
            key("text/plain;format=\"A,b\", text/html"),
            "text/plain;format=\"A,b\",text/html",
            "parameter values keep their case and quoted commas"
        );
    }

    #[test]
    fn scheme_host_and_default_port_are_normalised() {
        let a = CacheKey::from_uri(&"HTTP://Example.COM:80/a?b".parse().unwrap()).unwrap();
        let b = CacheKey::from_uri(&"http://example.com/a?b".parse().unwrap()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.url(), "http://example.com/a?b");
        let c = CacheKey::from_uri(&"http://example.com:8080/a?b".parse().unwrap()).unwrap();
        assert_ne!(a.hash(), c.hash());
        assert!(CacheKey::from_uri(&"/relative".parse().unwrap()).is_none());
    }

    #[test]
    fn vary_values_ignore_whitespace_and_case() {
        let fields = vec![HeaderName::from_static("accept-encoding")];
        let mut one = HeaderMap::new();
        one.insert("accept-encoding", HeaderValue::from_static("GZIP,  br"));
        let mut two = HeaderMap::new();
        two.append("accept-encoding", HeaderValue::from_static("gzip"));
        two.append("accept-encoding", HeaderValue::from_static(" br"));
        assert_eq!(vary_values(&one, &fields), vary_values(&two, &fields));
        assert_ne!(
            vary_values(&one, &fields),
            vary_values(&HeaderMap::new(), &fields)
        );
    }

    #[test]
    fn vary_values_keep_the_case_of_case_sensitive_fields() {
        let one_of = |name: &'static str, value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static(value));
            vary_values(&headers, &[HeaderName::from_static(name)])
        };
        assert_ne!(one_of("x-token", "AbCdEf"), one_of("x-token", "abcdef"));
        assert_ne!(
            one_of("cookie", "sess=SeCrEt"),
            one_of("cookie", "sess=secret")
        );
        assert_ne!(
            one_of("authorization", "Bearer AbC"),
            one_of("authorization", "Bearer abc")
        );
        assert_ne!(one_of("x-token", "a  b"), one_of("x-token", "a b"));
        assert_eq!(
            one_of("accept-language", "EN-us, de"),
            one_of("accept-language", "en-US,de")
        );
        assert_eq!(one_of("accept", "Text/HTML"), one_of("accept", "text/html"));
    }

    #[test]
    fn vary_star_is_none() {
        let mut response = HeaderMap::new();
        response.insert("vary", HeaderValue::from_static("Accept, *"));
        assert!(vary_fields(&response).is_none());
    }
}
