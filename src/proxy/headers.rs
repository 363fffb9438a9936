//! Header rewriting between hops: hop-by-hop removal, `Via`, and the reverse-proxy
//! `X-Forwarded-For` / `Forwarded` fields. Pure functions over `HeaderMap`s.

use std::net::IpAddr;

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// RFC 9110 §7.6.1: fields that describe one connection, never forwarded. `Proxy-Connection`
/// and `Keep-Alive` are the pre-standard ones that clients still send.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop fields, including every field the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests carry none of these (HTTP/1.1 keep-alive needs no `Connection`): one pass
    // over the few names present is cheaper than nine removals, each a hash and a probe.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// This process's `Via` entry. The received-by name is `hoard`; the comment carries an id
/// unique to this process, so a request that comes back to the same hoard is recognised
/// while a chain of distinct hoards is not mistaken for a loop (RFC 9110 §7.6.3).
#[derive(Debug, Clone)]
pub struct ViaEntry {
    marker: String,
    http10: HeaderValue,
    http11: HeaderValue,
    http2: HeaderValue,
}

impl ViaEntry {
    pub fn new(instance_id: u64) -> Self {
        let marker = format!("{instance_id:016x}");
        let value = |version: &str| {
            HeaderValue::from_str(&format!(
                "{version} hoard (hoard/{} {marker})",
                env!("CARGO_PKG_VERSION")
            ))
            .expect("ASCII without control characters")
        };
        ViaEntry {
            http10: value("1.0"),
            http11: value("1.1"),
            http2: value("2"),
            marker,
        }
    }

    /// Appends this hop, labelled with the protocol version of the message it received.
    pub fn append(&self, headers: &mut HeaderMap, received: Version) {
        let value = match received {
            Version::HTTP_10 => &self.http10,
            Version::HTTP_2 => &self.http2,
            _ => &self.http11,
        };
        headers.append(header::VIA, value.clone());
    }

    /// True when an earlier hop of this message was this very process.
    pub fn seen_in(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::VIA)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains(&self.marker)))
    }
}

/// Request fields that tell an application where the request came from or what it "really"
/// was. Many applications build URLs, redirects or even routing from them, yet no cache keys
/// on them, so one client's value would land in an entry served to everyone: they are taken
/// only from `--trust-forwarded` clients.
const FORWARDING: [&str; 16] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-scheme",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-prefix",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
    "x-host",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Removes every field in `FORWARDING` (the client is not a proxy hoard trusts).
pub fn remove_untrusted_forwarding(headers: &mut HeaderMap) {
    // Runs on every request, hits included: most carry none, and every name in the list
    // starts with `x-` or is `forwarded`, which rules out most fields at their first bytes.
    let listed = |name: &HeaderName| {
        let name = name.as_str();
        (name.starts_with("x-") || name == "forwarded") && FORWARDING.contains(&name)
    };
    if !headers.keys().any(listed) {
        return;
    }
    for name in FORWARDING {
        headers.remove(name);
    }
}

/// The scheme the client used to reach hoard, for the forwarding fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http,
    Https,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Http => "http",
            Proto::Https => "https",
        }
    }
}

/// Reverse mode: tells the origin who the client was and what it asked for
/// (`X-Forwarded-For`, `-Proto`, `-Host`, and RFC 7239 `Forwarded`), appending to what a
/// trusted proxy in front wrote (untrusted values are already gone).
pub fn append_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    host: Option<&HeaderValue>,
    proto: Proto,
) {
    let client_text = client.to_string();
    let xff = match headers.get(HeaderName::from_static("x-forwarded-for")) {
        Some(existing) => format!("{}, {client_text}", existing.to_str().unwrap_or_default()),
        None => client_text.clone(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    let xfp = HeaderName::from_static("x-forwarded-proto");
    if !headers.contains_key(&xfp) {
        headers.insert(xfp, HeaderValue::from_static(proto.as_str()));
    }
    let xfh = HeaderName::from_static("x-forwarded-host");
    if let Some(host) = host
        && !headers.contains_key(&xfh)
    {
        headers.insert(xfh, host.clone());
    }
    // RFC 7239 §6: an IPv6 node is a quoted, bracketed string.
    let node = match client {
        IpAddr::V4(_) => client_text,
        IpAddr::V6(_) => format!("\"[{client_text}]\""),
    };
    let mut forwarded = format!("for={node};proto={}", proto.as_str());
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        forwarded.push_str(";host=");
        push_quoted(&mut forwarded, host);
    }
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.append(header::FORWARDED, v);
    }
}

/// An RFC 7230 quoted-string: `"` and `\` escaped, so a value cannot end the string early
/// and add elements of its own.
fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// The bytes of an RFC 3986 reg-name (unreserved, `%` of percent-encoding, sub-delims), as a
/// table: `valid_host` runs on every request.
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

/// RFC 9110 §7.2 / RFC 3986 §3.2: `Host` is `uri-host [ ":" port ]`, where the host is an IP
/// literal in brackets or a reg-name (unreserved, percent-encoded and sub-delimiter
/// characters). Anything else (quotes, spaces, `@`, `/`, a second colon) is refused.
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(close) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..close];
        let ok = std::str::from_utf8(literal)
            .is_ok_and(|text| text.parse::<std::net::Ipv6Addr>().is_ok());
        if !ok {
            return false;
        }
        (&value[..=close], &value[close + 1..])
    } else {
        let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        let host = &value[..end];
        let reg_name = host.iter().all(|&b| REG_NAME[usize::from(b)]);
        if !reg_name {
            return false;
        }
        (host, &value[end..])
    };
    let port_ok = match port.strip_prefix(b":") {
        None => port.is_empty(),
        Some(digits) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
    };
    !host.is_empty() && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_fields_named_in_connection() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn via_marks_only_this_process() {
        let ours = ViaEntry::new(1);
        let other = ViaEntry::new(2);
        let mut headers = HeaderMap::new();
        other.append(&mut headers, Version::HTTP_11);
        assert!(!ours.seen_in(&headers));
        ours.append(&mut headers, Version::HTTP_10);
        assert!(ours.seen_in(&headers));
        assert!(
            headers
                .get_all(header::VIA)
                .iter()
                .nth(1)
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("1.0 hoard ")
        );
    }

    #[test]
    fn forwarded_appends_to_earlier_proxies() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        append_forwarded(
            &mut headers,
            "::1".parse().unwrap(),
            Some(&HeaderValue::from_static("a.example")),
            Proto::Http,
        );
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, ::1");
        assert_eq!(
            headers[header::FORWARDED],
            "for=\"[::1]\";proto=http;host=\"a.example\""
        );
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "a.example");
    }

    #[test]
    fn forwarded_values_are_quoted() {
        let mut headers = HeaderMap::new();
        append_forwarded(
            &mut headers,
            "192.0.2.1".parse().unwrap(),
            Some(&HeaderValue::from_static(
                "a.example\", for=6.6.6.6;host=\"b",
            )),
            Proto::Https,
        );
        assert_eq!(
            headers[header::FORWARDED],
            "for=192.0.2.1;proto=https;host=\"a.example\\\", for=6.6.6.6;host=\\\"b\""
        );
    }

    #[test]
    fn host_grammar() {
        for good in [
            "a.example",
            "a.example:8080",
            "127.0.0.1:80",
            "[::1]:8080",
            "[::ffff:127.0.0.1]",
            "xn--bcher-kva.example",
            "a_b.example",
        ] {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "a.example\", for=6.6.6.6",
            "a b",
            "user@a.example",
            "a.example/x",
            "a.example:80:80",
            "a.example:x",
            "[::1",
            "[nonsense]",
            ":80",
            "a.example:123456",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }
}
