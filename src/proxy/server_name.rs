//! `--server-name`: the host names a reverse proxy answers for, exact or `*.domain`.

/// A `--server-name` that is not a host name or `*.domain`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a host name (write e.g. www.example.org or *.example.org)")]
pub struct InvalidServerName(pub String);

/// One `--server-name`: a host name, or `*.` and a domain for its subdomains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerName {
    Exact(String),
    /// `*.example.org`: any name ending in `.example.org`.
    Subdomains(String),
}

impl std::str::FromStr for ServerName {
    type Err = InvalidServerName;

    fn from_str(s: &str) -> Result<Self, InvalidServerName> {
        let name = s.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, domain) = match name.strip_prefix("*.") {
            Some(domain) => (true, domain.to_owned()),
            None => (false, name),
        };
        let valid = !domain.is_empty()
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
        if !valid {
            return Err(InvalidServerName(s.to_owned()));
        }
        Ok(if wildcard {
            ServerName::Subdomains(domain)
        } else {
            ServerName::Exact(domain)
        })
    }
}

impl ServerName {
    /// Whether a Host's name (lowercase, without its port) is this one.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            ServerName::Exact(name) => host == name,
            ServerName::Subdomains(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        }
    }
}
