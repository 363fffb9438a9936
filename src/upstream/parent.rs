//! The parent proxy (`--parent`): misses and CONNECT tunnels reach the internet through an
//! upstream HTTP proxy, as Squid's `cache_peer ... parent` and tinyproxy's `upstream` do.
//! Plain `http://` requests go to it in absolute form; `https://` origins and tunnels go
//! through a CONNECT to it. Credentials in its URL are sent as `Proxy-Authorization`, and
//! hosts matching `--parent-bypass` (no_proxy style) are reached directly.
//!
//! Owns reaching the parent and the CONNECT handshake with it, and nothing about what is
//! sent inside. The parent resolves origin names itself, so hoard's destination rules apply
//! to what a request names (literals and names), not to the addresses behind them.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use http::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The upstream proxy misses go through.
#[derive(Clone, PartialEq)]
pub struct ParentProxy {
    /// `host:port` to connect to.
    address: String,
    /// `http://user@host:port`, for messages: never the password.
    shown: String,
    authorization: Option<HeaderValue>,
    bypass: Vec<Bypass>,
}

impl std::fmt::Debug for ParentProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParentProxy")
            .field("parent", &self.shown)
            .field("bypass", &self.bypass)
            .finish_non_exhaustive()
    }
}

/// One `--parent-bypass` entry.
#[derive(Debug, Clone, PartialEq)]
enum Bypass {
    /// `*`: every host.
    All,
    /// `example.org` (and its subdomains), `.example.org` or `*.example.org` (only them).
    Domain { name: String, subdomains_only: bool },
    /// An address or block, for hosts written as addresses.
    Net(ipnet::IpNet),
}

/// The parent could not be reached, or refused a tunnel.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the parent proxy {parent} failed: {reason}")]
pub struct ParentError {
    pub parent: String,
    pub reason: String,
}

/// The largest CONNECT response head read from the parent.
const MAX_HEAD: usize = 16 * 1024;

impl ParentProxy {
    /// `http://[user:password@]host:port` and the hosts reached without it.
    pub fn new(url_text: &str, bypass: &[String]) -> Result<ParentProxy, String> {
        // Errors name the URL without its password.
        let url = &without_password(url_text);
        let parsed = url::Url::parse(url_text).map_err(|e| format!("{url:?}: {e}"))?;
        if parsed.scheme() != "http" {
            return Err(format!(
                "{url:?}: hoard speaks to a parent proxy in plain HTTP; write http://HOST:PORT"
            ));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("{url:?}: no host"))?;
        if parsed.path() != "/" || parsed.query().is_some() {
            return Err(format!(
                "{url:?}: write only http://[USER:PASSWORD@]HOST:PORT"
            ));
        }
        let port = parsed.port().unwrap_or(3128);
        let decode = |text: &str| {
            percent_decode(text).ok_or_else(|| format!("{url:?}: bad %-escape in credentials"))
        };
        let authorization = if parsed.username().is_empty() {
            None
        } else {
            let user = decode(parsed.username())?;
            let password = decode(parsed.password().unwrap_or(""))?;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let mut value = HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|_| format!("{url:?}: credentials that cannot be sent"))?;
            value.set_sensitive(true);
            Some(value)
        };
        let user = if parsed.username().is_empty() {
            String::new()
        } else {
            format!("{}@", parsed.username())
        };
        Ok(ParentProxy {
            address: format!("{host}:{port}"),
            shown: format!("http://{user}{host}:{port}"),
            authorization,
            bypass: bypass
                .iter()
                .map(|entry| parse_bypass(entry))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The parent as messages name it (without the password).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// `Proxy-Authorization` for requests sent to the parent, when its URL had credentials.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// Whether a request for `host` goes through the parent (not bypassed).
    pub fn applies_to(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let address = host.parse::<IpAddr>().ok();
        !self.bypass.iter().any(|entry| match entry {
            Bypass::All => true,
            Bypass::Net(net) => address.is_some_and(|address| net.contains(&address)),
            Bypass::Domain {
                name,
                subdomains_only,
            } => {
                host.strip_suffix(name.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
                    || (!subdomains_only && host == *name)
            }
        })
    }

    /// The parent answered 407: hoard's credentials (or their absence) were refused.
    pub fn refused_credentials(&self) -> ParentError {
        self.failed(if self.authorization.is_some() {
            "it refused the credentials in --parent (407)"
        } else {
            "it asks for credentials (407): write them in --parent as http://USER:PASSWORD@HOST:PORT"
        })
    }

    fn failed(&self, reason: impl std::fmt::Display) -> ParentError {
        ParentError {
            parent: self.shown.clone(),
            reason: reason.to_string(),
        }
    }

    /// A TCP connection to the parent, within `timeout`.
    pub async fn connect(&self, timeout: Duration) -> Result<TcpStream, ParentError> {
        match tokio::time::timeout(timeout, TcpStream::connect(&self.address)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(e)) => Err(self.failed(e)),
            Err(_) => Err(self.failed(format!("no connection within {timeout:?}"))),
        }
    }

    /// A connection to `host:port` through the parent (a CONNECT it answered with 2xx),
    /// connected and answered within `timeout`.
    pub async fn tunnel(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<TcpStream, ParentError> {
        let mut stream = self.connect(timeout).await?;
        let target = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
        if let Some(authorization) = &self.authorization {
            head.extend_from_slice(b"Proxy-Authorization: ");
            head.extend_from_slice(authorization.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let handshake = async {
            stream.write_all(&head).await.map_err(|e| self.failed(e))?;
            let status = self.read_connect_answer(&mut stream).await?;
            if status == 407 {
                return Err(self.refused_credentials());
            }
            if !(200..300).contains(&status) {
                return Err(self.failed(format!("it answered CONNECT {target} with {status}")));
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, handshake).await {
            Ok(result) => result.map(|()| stream),
            Err(_) => Err(self.failed(format!("no answer to CONNECT {target} within {timeout:?}"))),
        }
    }

    /// Reads the parent's answer to a CONNECT, byte by byte so that nothing after its head
    /// (the start of the tunnel) is taken; returns its status.
    async fn read_connect_answer(&self, stream: &mut TcpStream) -> Result<u16, ParentError> {
        let mut head = Vec::with_capacity(256);
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_HEAD {
                return Err(self.failed("its answer to CONNECT is too long"));
            }
            match stream.read_u8().await {
                Ok(byte) => head.push(byte),
                Err(e) => return Err(self.failed(format!("it closed the connection ({e})"))),
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(_)) => response
                .code
                .ok_or_else(|| self.failed("its answer to CONNECT has no status")),
            _ => Err(self.failed("its answer to CONNECT is not HTTP")),
        }
    }
}

/// `http://user:secret@host` as `http://user:***@host`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) if credentials.contains(':') => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

fn parse_bypass(entry: &str) -> Result<Bypass, String> {
    let entry = entry.trim().to_ascii_lowercase();
    if entry == "*" {
        return Ok(Bypass::All);
    }
    if let Ok(net) = entry.parse::<ipnet::IpNet>() {
        return Ok(Bypass::Net(net));
    }
    let bare = entry.trim_start_matches('[').trim_end_matches(']');
    if let Ok(address) = bare.parse::<IpAddr>() {
        return Ok(Bypass::Net(address.into()));
    }
    let (name, subdomains_only) = match entry.strip_prefix("*.").or_else(|| entry.strip_prefix('.'))
    {
        Some(name) => (name, true),
        None => (entry.as_str(), false),
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(format!(
            "--parent-bypass {entry:?}: write a host (example.org, with its subdomains), \
             .example.org (only subdomains), an address or CIDR block, or *"
        ));
    }
    Ok(Bypass::Domain {
        name: name.trim_end_matches('.').to_owned(),
        subdomains_only,
    })
}

/// `%XX` escapes in a URL's user information, decoded.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = std::str::from_utf8(bytes.get(at + 1..at + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_gives_address_credentials_and_a_name_without_the_password() {
        let parent = ParentProxy::new("http://al%40ce:p%3Ass@proxy.corp:8080", &[]).unwrap();
        assert_eq!(parent.address, "proxy.corp:8080");
        assert_eq!(parent.shown(), "http://al%40ce@proxy.corp:8080");
        let expected = base64::engine::general_purpose::STANDARD.encode("al@ce:p:ss");
        assert_eq!(
            parent.authorization().unwrap(),
            &format!("Basic {expected}")
        );
        assert!(!format!("{parent:?}").contains("p%3Ass"));
        let bare = ParentProxy::new("http://proxy.corp", &[]).unwrap();
        assert_eq!(bare.address, "proxy.corp:3128");
        assert!(bare.authorization().is_none());
        assert!(ParentProxy::new("https://proxy.corp", &[]).is_err());
        assert!(ParentProxy::new("http://proxy.corp/path", &[]).is_err());
        let error = ParentProxy::new("https://u:hunter2@proxy.corp", &[]).unwrap_err();
        assert!(
            error.contains("u:***@proxy.corp") && !error.contains("hunter2"),
            "{error}"
        );
    }

    #[test]
    fn bypass_entries_match_like_no_proxy() {
        let bypass =
            ["example.org", ".internal", "10.0.0.0/8", "::1", "localhost"].map(str::to_owned);
        let parent = ParentProxy::new("http://p:3128", &bypass).unwrap();
        for direct in [
            "example.org",
            "www.EXAMPLE.org",
            "a.internal",
            "10.1.2.3",
            "[::1]",
            "localhost",
        ] {
            assert!(!parent.applies_to(direct), "{direct}");
        }
        for through in ["notexample.org", "internal", "11.0.0.1", "example.org.evil"] {
            assert!(parent.applies_to(through), "{through}");
        }
        let all = ParentProxy::new("http://p:3128", &["*".to_owned()]).unwrap();
        assert!(!all.applies_to("anything.test"));
        assert!(ParentProxy::new("http://p:3128", &["bad host".to_owned()]).is_err());
    }
}
