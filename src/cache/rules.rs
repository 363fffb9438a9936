//! Cache rules (`--rule`, `[[rule]]` in the config file, `--preset`): the operator's word
//! for URLs whose origins say too little or too much, as Squid's `refresh_pattern`, nginx's
//! `proxy_cache_valid` and `proxy_ignore_headers`, and VCL's `beresp.ttl` are. Rules are
//! tried in order against a request's normalised URL and the first that matches applies to
//! that request: its cache key (query parameters left out), whether it is cached at all, the
//! largest response stored, and, through `policy/`, whether and for how long a response is
//! fresh. `Cache-Status` names the rule (`rule="debian-pool"`).
//!
//! Owns matching and what a rule says. It does not parse the text form (`config` does, so
//! every setting is read in one place) and makes no RFC 9111 decision itself: `policy/`
//! asks the rule only where an operator may overrule the origin, and a rule overrules
//! `no-store`, `private` or the origin's own freshness only when it says so.

use std::sync::Arc;

use http::StatusCode;
use regex::RegexSet;

/// One rule: a pattern and what it changes for the URLs it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRule {
    /// Named in `Cache-Status`; letters, digits and `.`, `_`, `:`, `-`.
    pub name: String,
    pub pattern: RulePattern,
    /// Freshness floor (seconds) for a response without explicit freshness of its own.
    pub min_ttl: Option<u64>,
    /// Freshness cap (seconds) for every response, the origin's own freshness included.
    pub max_ttl: Option<u64>,
    /// Freshness (seconds) for a response with no explicit freshness and no validator,
    /// which could otherwise never be used (nor revalidated).
    pub default_ttl: Option<u64>,
    /// Freshness (seconds) by status code for responses without explicit freshness, as
    /// nginx's `proxy_cache_valid 404 1m`; it makes statuses that are not heuristically
    /// cacheable (a 500, say) storable too.
    pub status_ttl: Vec<(u16, u64)>,
    /// Query parameters left out of the cache key (`utm_*`: a `*` matches any characters),
    /// and so out of the request to the origin: a response never depends on what its key
    /// does not hold.
    pub ignore_query: Vec<String>,
    /// Never answered from the cache nor stored.
    pub bypass: bool,
    /// Largest response stored under this rule (never above `--cache-disk`).
    pub max_object_size: Option<u64>,
    /// What of the origin's word this rule overrules.
    pub overrides: Overrides,
}

/// The response directives a rule may overrule, each only when the rule names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `no-store` in the response (a client's `no-store` is always obeyed).
    pub no_store: bool,
    /// `private` in the response.
    pub private: bool,
    /// The origin's explicit freshness (`s-maxage`, `max-age`, `Expires`): the rule's TTLs
    /// apply as if it sent none (Squid's `override-expire`).
    pub max_age: bool,
    /// A client's reload (`no-cache`, `Pragma: no-cache`, `max-age`): a fresh stored
    /// response answers it anyway (Squid's `ignore-reload`), as apt's `max-age=0` on every
    /// index file would otherwise send even files named by their hash to the origin.
    pub reload: bool,
}

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulePattern {
    /// `host/path`, matched against the URL's host (and port) and path, not its scheme or
    /// query: `*` is any characters but `/`, `**` any characters (`a/**/b` also matches
    /// `a/b`), `?` one character but `/`, `{deb,udeb}` either, `[0-9a-f]` a class. A host
    /// without a port matches any port. Hosts are matched in lowercase, paths as sent.
    Glob(String),
    /// A regular expression searched for in the whole URL (`http://host/path?query`),
    /// written `~REGEX`, or `~*REGEX` to ignore case.
    Regex {
        source: String,
        case_insensitive: bool,
    },
}

impl RulePattern {
    /// The regular expression the pattern stands for, matched against a normalised URL.
    pub fn regex(&self) -> String {
        match self {
            RulePattern::Glob(glob) => glob_regex(glob),
            RulePattern::Regex {
                source,
                case_insensitive: true,
            } => format!("(?i:{source})"),
            RulePattern::Regex { source, .. } => format!("(?:{source})"),
        }
    }
}

impl std::fmt::Display for RulePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RulePattern::Glob(glob) => f.write_str(glob),
            RulePattern::Regex {
                source,
                case_insensitive,
            } => write!(f, "~{}{source}", if *case_insensitive { "*" } else { "" }),
        }
    }
}

impl CacheRule {
    /// A rule that matches `pattern` and changes nothing (yet).
    pub fn new(name: String, pattern: RulePattern) -> CacheRule {
        CacheRule {
            name,
            pattern,
            min_ttl: None,
            max_ttl: None,
            default_ttl: None,
            status_ttl: Vec::new(),
            ignore_query: Vec::new(),
            bypass: false,
            max_object_size: None,
            overrides: Overrides::default(),
        }
    }

    /// The lifetime this rule gives a response without explicit freshness of its own (or
    /// whose own it overrules), or `None` when it gives none: a TTL for the status wins;
    /// otherwise, for heuristically cacheable statuses, the heuristic (from
    /// `Last-Modified`) or, with no validator at all, the default, raised to the floor.
    pub fn lifetime_without_explicit(
        &self,
        status: StatusCode,
        heuristically_cacheable: bool,
        heuristic: Option<u64>,
        validator: bool,
    ) -> Option<u64> {
        if let Some(&(_, ttl)) = self
            .status_ttl
            .iter()
            .find(|(code, _)| *code == status.as_u16())
        {
            return Some(ttl);
        }
        if !heuristically_cacheable {
            return None;
        }
        let base = heuristic.or(if validator { None } else { self.default_ttl });
        match (base, self.min_ttl) {
            (Some(base), Some(floor)) => Some(base.max(floor)),
            (base, floor) => base.or(floor),
        }
    }

    /// `lifetime` held to the rule's cap.
    pub fn capped(&self, lifetime: u64) -> u64 {
        self.max_ttl.map_or(lifetime, |cap| lifetime.min(cap))
    }

    /// `url` without the query parameters this rule leaves out of the key (the rest as
    /// written, in order); `None` when none of them is there.
    pub fn key_url(&self, url: &str) -> Option<String> {
        if self.ignore_query.is_empty() {
            return None;
        }
        let (base, query) = url.split_once('?')?;
        let ignored = |pair: &str| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            self.ignore_query
                .iter()
                .any(|pattern| wildcard_matches(pattern, name))
        };
        if !query.split('&').any(ignored) {
            return None;
        }
        let kept: Vec<&str> = query.split('&').filter(|pair| !ignored(pair)).collect();
        Some(if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        })
    }
}

/// The rule that matched a request, carried in its extensions from `Cache::serve` to the
/// admission and revalidation of its response (`RequestHead`).
#[derive(Debug, Clone)]
pub(super) struct Applied(pub(super) Arc<CacheRule>);

/// The rules in the order they are tried, with one set of their patterns so that finding
/// the first match is one pass over the URL, however many rules there are.
#[derive(Debug, Clone, Default)]
pub struct CacheRules {
    rules: Vec<Arc<CacheRule>>,
    patterns: Option<RegexSet>,
}

impl PartialEq for CacheRules {
    fn eq(&self, other: &CacheRules) -> bool {
        self.rules == other.rules
    }
}

impl CacheRules {
    /// The rules, tried in this order. Fails when a pattern is not a valid (or is too
    /// large a) regular expression, naming it.
    pub fn new(rules: Vec<CacheRule>) -> Result<CacheRules, String> {
        if rules.is_empty() {
            return Ok(CacheRules::default());
        }
        for rule in &rules {
            regex::Regex::new(&rule.pattern.regex())
                .map_err(|e| format!("rule {:?}: pattern {}: {e}", rule.name, rule.pattern))?;
        }
        let patterns = RegexSet::new(rules.iter().map(|rule| rule.pattern.regex()))
            .map_err(|e| format!("rules: {e}"))?;
        Ok(CacheRules {
            rules: rules.into_iter().map(Arc::new).collect(),
            patterns: Some(patterns),
        })
    }

    /// The first rule whose pattern matches `url` (normalised, as a cache key holds it).
    pub fn find(&self, url: &str) -> Option<&Arc<CacheRule>> {
        let first = self.patterns.as_ref()?.matches(url).into_iter().next()?;
        self.rules.get(first)
    }

    pub fn iter(&self) -> impl Iterator<Item = &CacheRule> {
        self.rules.iter().map(|rule| &**rule)
    }
}

/// Whether `name` matches `pattern`, in which `*` stands for any characters.
fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A `host/path` glob as a regular expression over a whole normalised URL.
fn glob_regex(glob: &str) -> String {
    let (host, path) = match glob.find('/') {
        Some(at) => glob.split_at(at),
        None => (glob, "/**"),
    };
    let mut regex = String::from("^[a-z][a-z0-9+.-]*://");
    translate(&host.to_ascii_lowercase(), &mut regex);
    if !host.contains(':') {
        regex.push_str("(?::[0-9]+)?");
    }
    translate(path, &mut regex);
    regex.push_str(r"(?:\?.*)?$");
    regex
}

/// Appends the glob `text` to `regex`, translated (see `RulePattern::Glob`).
fn translate(text: &str, regex: &mut String) {
    let mut chars = text.chars().peekable();
    let mut alternatives = 0;
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    // `a/**/b`: any directories between, none included.
                    chars.next();
                    regex.push_str("(?:.*/)?");
                } else {
                    regex.push_str(".*");
                }
            }
            '*' => regex.push_str("[^/]*"),
            '?' => regex.push_str("[^/]"),
            '{' => {
                alternatives += 1;
                regex.push_str("(?:");
            }
            ',' if alternatives > 0 => regex.push('|'),
            '}' if alternatives > 0 => {
                alternatives -= 1;
                regex.push(')');
            }
            '[' => {
                regex.push('[');
                if chars.peek() == Some(&'!') {
                    chars.next();
                    regex.push('^');
                }
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    if c == '\\' || c == '[' {
                        regex.push('\\');
                    }
                    regex.push(c);
                }
                regex.push(']');
            }
            c => regex.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    // An unclosed `{` would leave the expression unbalanced; close it as written.
    for _ in 0..alternatives {
        regex.push(')');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(patterns: &[&str]) -> CacheRules {
        CacheRules::new(
            patterns
                .iter()
                .map(|pattern| {
                    let pattern = match pattern.strip_prefix('~') {
                        Some(source) => RulePattern::Regex {
                            source: source.to_owned(),
                            case_insensitive: false,
                        },
                        None => RulePattern::Glob((*pattern).to_owned()),
                    };
                    CacheRule::new(pattern.to_string(), pattern)
                })
                .collect(),
        )
        .unwrap()
    }

    fn first<'r>(rules: &'r CacheRules, url: &str) -> Option<&'r str> {
        rules.find(url).map(|rule| rule.name.as_str())
    }

    #[test]
    fn globs_match_host_and_path_and_the_first_rule_wins() {
        let rules = rules(&[
            "*/**/pool/**/*.{deb,udeb}",
            "deb.example.org/**",
            "*.example.com/img/*.png",
            "*/v2/**/blobs/sha256:[0-9a-f]*",
        ]);
        let deb = "http://deb.example.org/debian/pool/main/h/hello/hello_2.10_amd64.deb";
        assert_eq!(first(&rules, deb), Some("*/**/pool/**/*.{deb,udeb}"));
        assert_eq!(
            first(&rules, "http://mirror.test:8080/pool/x.udeb?a=b"),
            Some("*/**/pool/**/*.{deb,udeb}"),
            "any port, the query ignored, `**/` matching no directory"
        );
        assert_eq!(
            first(
                &rules,
                "http://deb.example.org/debian/dists/stable/InRelease"
            ),
            Some("deb.example.org/**")
        );
        assert_eq!(
            first(&rules, "https://cdn.example.com/img/a.png"),
            Some("*.example.com/img/*.png")
        );
        assert_eq!(first(&rules, "https://cdn.example.com/img/sub/a.png"), None);
        assert_eq!(first(&rules, "https://example.com/img/a.png"), None);
        assert_eq!(
            first(
                &rules,
                "https://registry.test/v2/library/alpine/blobs/sha256:ab12"
            ),
            Some("*/v2/**/blobs/sha256:[0-9a-f]*")
        );
        assert_eq!(first(&rules, "http://other.test/debian/x.deb"), None);
        assert_eq!(
            first(&rules, "http://deb.example.org.evil.test/debian/x.deb"),
            None,
            "a host glob is the whole host"
        );
    }

    #[test]
    fn regexes_search_the_whole_url() {
        let rules = rules(&[r"~\.iso(\?|$)", "*/**"]);
        assert_eq!(
            first(&rules, "http://a.test/x.iso?v=1"),
            Some(r"~\.iso(\?|$)")
        );
        assert_eq!(first(&rules, "http://a.test/x.isox"), Some("*/**"));
    }

    #[test]
    fn ignored_query_parameters_leave_the_key() {
        let mut rule = CacheRule::new("r".into(), RulePattern::Glob("*/**".into()));
        rule.ignore_query = vec!["utm_*".into(), "fbclid".into()];
        assert_eq!(
            rule.key_url("http://a.test/p?utm_source=x&id=7&fbclid=z&utm_medium"),
            Some("http://a.test/p?id=7".into())
        );
        assert_eq!(
            rule.key_url("http://a.test/p?utm_source=x"),
            Some("http://a.test/p".into())
        );
        assert_eq!(rule.key_url("http://a.test/p?id=7"), None);
        assert_eq!(rule.key_url("http://a.test/p"), None);
        assert!(wildcard_matches("a*b*c", "aXXbYc"));
        assert!(!wildcard_matches("a*bc", "abXc"));
        assert!(wildcard_matches("*", ""));
        assert!(!wildcard_matches("ab*ba", "aba"));
    }

    #[test]
    fn lifetimes_follow_status_then_heuristic_or_default_then_floor_and_cap() {
        let mut rule = CacheRule::new("r".into(), RulePattern::Glob("*/**".into()));
        rule.status_ttl = vec![(404, 60), (500, 5)];
        rule.default_ttl = Some(120);
        rule.min_ttl = Some(30);
        rule.max_ttl = Some(3600);
        let ok = StatusCode::OK;
        assert_eq!(
            rule.lifetime_without_explicit(StatusCode::NOT_FOUND, true, Some(9999), true),
            Some(60)
        );
        assert_eq!(
            rule.lifetime_without_explicit(StatusCode::INTERNAL_SERVER_ERROR, false, None, false),
            Some(5)
        );
        assert_eq!(
            rule.lifetime_without_explicit(StatusCode::BAD_GATEWAY, false, None, false),
            None,
            "no floor for statuses that are not heuristically cacheable"
        );
        assert_eq!(
            rule.lifetime_without_explicit(ok, true, None, false),
            Some(120)
        );
        assert_eq!(
            rule.lifetime_without_explicit(ok, true, Some(10), true),
            Some(30)
        );
        assert_eq!(
            rule.lifetime_without_explicit(ok, true, None, true),
            Some(30)
        );
        assert_eq!(rule.capped(86_400), 3600);
    }
}
