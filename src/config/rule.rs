//! Cache rules as a person writes them: the one-line form of `--rule` (`PATTERN key=value
//! ...`), the config file's `[[rule]]` tables (turned into that one line, so both are read
//! by one parser), and the rules `--preset` ships.
//!
//! Only parsing: what a rule means and how it matches is `cache::rules`.

use crate::cache::{CacheRule, CacheRules, Overrides, RulePattern};

/// What a rule's line may set, as written (for error messages).
const KEYS: &str = "match, name, min-ttl, max-ttl, default-ttl, ttl-NNN (a status code), \
                    ignore-query, bypass, max-object-size, override";

/// Parses `PATTERN key=value ...` (or `match=PATTERN key=value ...`); values holding spaces
/// are written in double quotes.
pub(super) fn parse(line: &str) -> Result<CacheRule, String> {
    let words = split_words(line)?;
    let mut pattern = None;
    let mut settings = Vec::new();
    for (at, word) in words.iter().enumerate() {
        match word.split_once('=') {
            Some(("match", value)) => pattern = Some(value.to_owned()),
            Some((key, value)) => settings.push((key, Some(value))),
            None if at == 0 => pattern = Some(word.clone()),
            None => settings.push((word.as_str(), None)),
        }
    }
    let pattern = pattern.ok_or(
        "a rule starts with the URL pattern it matches, e.g. \
                                `*/**/pool/**/*.deb min-ttl=30d` or `~\\.iso$ bypass`",
    )?;
    let pattern = parse_pattern(&pattern)?;
    let mut rule = CacheRule::new(String::new(), pattern);
    for (key, value) in settings {
        set(&mut rule, key, value).map_err(|e| format!("rule {}: {e}", rule.pattern))?;
    }
    Ok(rule)
}

fn parse_pattern(text: &str) -> Result<RulePattern, String> {
    if let Some(source) = text.strip_prefix("~*") {
        return Ok(RulePattern::Regex {
            source: source.to_owned(),
            case_insensitive: true,
        });
    }
    if let Some(source) = text.strip_prefix('~') {
        return Ok(RulePattern::Regex {
            source: source.to_owned(),
            case_insensitive: false,
        });
    }
    if text.is_empty() || text.contains("://") {
        return Err(format!(
            "pattern {text:?}: write a glob as host/path without the scheme (`*/**/*.deb`, \
             `deb.debian.org/debian/pool/**`) or a regular expression after `~`"
        ));
    }
    Ok(RulePattern::Glob(text.to_owned()))
}

fn set(rule: &mut CacheRule, key: &str, value: Option<&str>) -> Result<(), String> {
    let value_of = |what: &str| {
        value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{key} needs a value: write {key}={what}"))
    };
    let duration = |what: &str| -> Result<u64, String> {
        let text = value_of(what)?;
        humantime::parse_duration(text)
            .map(|d| d.as_secs())
            .map_err(|e| format!("{key}={text}: {e} (write e.g. {key}=10m, {key}=30d)"))
    };
    let list = || -> Result<Vec<String>, String> {
        Ok(value_of("a,b")?
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect())
    };
    match key {
        "name" => {
            let name = value_of("NAME")?;
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b))
            {
                return Err(format!(
                    "name={name:?}: use letters, digits and `.`, `_`, `:`, `-`"
                ));
            }
            rule.name = name.to_owned();
        }
        "min-ttl" => rule.min_ttl = Some(duration("30d")?),
        "max-ttl" => rule.max_ttl = Some(duration("1h")?),
        "default-ttl" => rule.default_ttl = Some(duration("10m")?),
        "ignore-query" => rule.ignore_query = list()?,
        "bypass" => rule.bypass = boolean(key, value)?,
        "max-object-size" => {
            let text = value_of("1GiB")?;
            let size = text
                .parse::<bytesize::ByteSize>()
                .map_err(|e| format!("max-object-size={text}: {e} (write e.g. 1GiB)"))?;
            rule.max_object_size = Some(size.as_u64());
        }
        "override" => {
            let mut overrides = Overrides::default();
            for item in list()? {
                match item.as_str() {
                    "no-store" => overrides.no_store = true,
                    "private" => overrides.private = true,
                    "max-age" => overrides.max_age = true,
                    "reload" => overrides.reload = true,
                    other => {
                        return Err(format!(
                            "override={other}: a rule can override no-store, private, \
                             max-age (the origin's own freshness) or reload (the client's)"
                        ));
                    }
                }
            }
            rule.overrides = overrides;
        }
        _ => {
            let Some(status) = key.strip_prefix("ttl-") else {
                return Err(format!("unknown setting `{key}` (a rule has: {KEYS})"));
            };
            let status = status
                .parse::<u16>()
                .ok()
                .filter(|code| (200..=599).contains(code))
                .ok_or_else(|| format!("{key}: write ttl- and a status code, e.g. ttl-404=1m"))?;
            let ttl = duration("1m")?;
            rule.status_ttl.retain(|(code, _)| *code != status);
            rule.status_ttl.push((status, ttl));
        }
    }
    Ok(())
}

fn boolean(key: &str, value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(format!("{key}={other}: write {key} (or {key}=false)")),
    }
}

/// Splits at spaces outside double quotes; inside them `\"` and `\\` stand for `"` and `\`.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => word.extend(chars.next()),
                        Some(c) => word.push(c),
                        None => return Err(format!("rule {line:?}: a quote is not closed")),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// A `[[rule]]` table of the config file as the one line `parse` reads.
pub(super) fn from_table(table: &toml::Table) -> Result<String, String> {
    let quoted = |text: &str| format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""));
    let mut words = Vec::new();
    for (key, value) in table {
        let text = match value {
            toml::Value::String(text) => quoted(text),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => {
                let items: Result<Vec<&str>, String> = items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .ok_or_else(|| format!("rule: {key} is a list of strings"))
                    })
                    .collect();
                quoted(&items?.join(","))
            }
            other => return Err(format!("rule: {key} cannot be a {}", other.type_str())),
        };
        words.push(format!("{key}={text}"));
    }
    if !table.contains_key("match") {
        return Err(
            "a [[rule]] needs `match`, the URL pattern it applies to, e.g. \
                    match = \"*/**/pool/**/*.deb\""
                .into(),
        );
    }
    Ok(words.join(" "))
}

/// The operator's rules, named by position when they have no name (`rule-1`), then the
/// presets' rules.
pub(super) fn cache_rules(
    mut rules: Vec<CacheRule>,
    presets: &[Preset],
) -> Result<CacheRules, String> {
    for (at, rule) in rules.iter_mut().enumerate() {
        if rule.name.is_empty() {
            rule.name = format!("rule-{}", at + 1);
        }
    }
    for preset in presets {
        for line in preset.lines() {
            rules.push(parse(line)?);
        }
    }
    CacheRules::new(rules)
}

/// Rules hoard ships, added after the operator's own with `--preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// Package mirrors and registries (Debian and Ubuntu, RPM, Alpine, PyPI, npm, crates, Go
    /// modules, container registry blobs): files named by version or hash are kept for a
    /// year, indexes briefly; objects up to 1 GiB are stored.
    Packages,
}

impl Preset {
    /// The preset's rules in their one-line form.
    pub(super) fn lines(self) -> &'static [&'static str] {
        match self {
            Preset::Packages => &PACKAGES,
        }
    }
}

/// `--preset packages`. Files whose names carry their version or hash never change, so
/// they are fresh for a year when the registry says nothing (many send no freshness and no
/// validator at all); indexes that name them change, so they are fresh for two minutes and
/// then fetched again (revalidated when the registry sends a validator). Clients' reloads
/// are answered from fresh copies (apt asks `max-age=0` for every index file, by-hash ones
/// too). The registry's own explicit freshness, `no-store` and `private` are obeyed.
const PACKAGES: [&str; 14] = [
    "*/**/by-hash/** name=debian-by-hash min-ttl=365d override=reload max-object-size=1GiB",
    "*/**/pool/** name=debian-pool min-ttl=365d override=reload max-object-size=1GiB",
    "*/**/dists/** name=debian-indexes min-ttl=2m max-ttl=2m override=reload max-object-size=1GiB",
    "*/**/*.rpm name=rpm min-ttl=365d override=reload max-object-size=1GiB",
    "*/**/repodata/repomd.xml{,.asc,.key} name=rpm-repomd min-ttl=2m max-ttl=2m override=reload",
    "~/repodata/[0-9a-f]{16,}-[^/?]+(\\?|$) name=rpm-repodata min-ttl=365d override=reload \
     max-object-size=1GiB",
    "*/**/*.apk name=alpine min-ttl=365d override=reload max-object-size=1GiB",
    "*/**/APKINDEX.tar.gz name=alpine-index min-ttl=2m max-ttl=2m override=reload",
    "*/**/*.{whl,egg} name=python-packages min-ttl=365d override=reload max-object-size=1GiB",
    "files.pythonhosted.org/packages/** name=pypi-files min-ttl=365d override=reload \
     max-object-size=1GiB",
    "*/**/-/*.tgz name=npm-tarballs min-ttl=365d override=reload max-object-size=1GiB",
    "*/**/*.crate name=crates min-ttl=365d override=reload max-object-size=1GiB",
    "*/**/@v/*.{zip,mod,info} name=go-modules min-ttl=365d override=reload max-object-size=1GiB",
    "*/v2/**/blobs/sha256:* name=container-blobs min-ttl=365d override=reload \
     max-object-size=1GiB",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheRules;

    #[test]
    fn a_line_sets_what_it_names() {
        let rule = parse(
            "*/**/pool/**/*.deb name=debs min-ttl=30d max-ttl=\"365 days\" ttl-404=1m \
             ignore-query=utm_*,fbclid max-object-size=1GiB override=no-store,private",
        )
        .unwrap();
        assert_eq!(rule.name, "debs");
        assert_eq!(rule.pattern, RulePattern::Glob("*/**/pool/**/*.deb".into()));
        assert_eq!(rule.min_ttl, Some(30 * 86_400));
        assert_eq!(rule.max_ttl, Some(365 * 86_400));
        assert_eq!(rule.status_ttl, vec![(404, 60)]);
        assert_eq!(rule.ignore_query, vec!["utm_*", "fbclid"]);
        assert_eq!(rule.max_object_size, Some(1 << 30));
        assert!(rule.overrides.no_store && rule.overrides.private && !rule.overrides.max_age);
        assert!(!rule.bypass);
        let bypass = parse(r"~*\.ISO$ bypass").unwrap();
        assert!(bypass.bypass);
        assert_eq!(
            bypass.pattern,
            RulePattern::Regex {
                source: r"\.ISO$".into(),
                case_insensitive: true
            }
        );
    }

    #[test]
    fn mistakes_are_named_in_the_rule_s_terms() {
        let error = |line: &str| parse(line).unwrap_err();
        assert!(error("*/** min-tll=1d").contains("unknown setting `min-tll`"));
        assert!(error("*/** min-ttl=soon").contains("write e.g. min-ttl=10m"));
        assert!(error("*/** ttl-99=1m").contains("ttl-404=1m"));
        assert!(error("*/** override=cookies").contains("no-store, private, max-age"));
        assert!(error("http://a.test/** min-ttl=1d").contains("without the scheme"));
        assert!(error("*/** name=\"a b\"").contains("letters, digits"));
        assert!(error("*/** name=\"open").contains("quote is not closed"));
        assert!(error("min-ttl=1d").contains("starts with the URL pattern"));
    }

    #[test]
    fn a_table_becomes_the_same_line() {
        let table: toml::Table = r#"
            match = "*/**/*.deb"
            name = "debs"
            min-ttl = "30 days"
            ignore-query = ["utm_*", "ref"]
            bypass = false
        "#
        .parse()
        .unwrap();
        let rule = parse(&from_table(&table).unwrap()).unwrap();
        assert_eq!(rule.name, "debs");
        assert_eq!(rule.min_ttl, Some(30 * 86_400));
        assert_eq!(rule.ignore_query, vec!["utm_*", "ref"]);
        let no_match: toml::Table = "name = \"x\"".parse().unwrap();
        assert!(from_table(&no_match).unwrap_err().contains("needs `match`"));
    }

    #[test]
    fn the_packages_preset_parses_and_matches_what_it_is_for() {
        let rules = CacheRules::new(
            Preset::Packages
                .lines()
                .iter()
                .map(|line| parse(line).unwrap())
                .collect(),
        )
        .unwrap();
        let name = |url: &str| rules.find(url).map(|rule| rule.name.clone());
        for (url, expected) in [
            (
                "http://deb.debian.org/debian/pool/main/h/hello/hello_2.10-3_amd64.deb",
                Some("debian-pool"),
            ),
            (
                "http://deb.debian.org/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/ab12",
                Some("debian-by-hash"),
            ),
            (
                "http://archive.ubuntu.com/ubuntu/dists/noble/InRelease",
                Some("debian-indexes"),
            ),
            (
                "http://mirror.test/fedora/40/x86_64/os/Packages/b/bash-5.2.rpm",
                Some("rpm"),
            ),
            (
                "http://mirror.test/fedora/repodata/repomd.xml",
                Some("rpm-repomd"),
            ),
            (
                "http://mirror.test/fedora/repodata/0a1b2c3d4e5f60718293a4b5-primary.xml.zst",
                Some("rpm-repodata"),
            ),
            (
                "http://dl-cdn.alpinelinux.org/alpine/v3.20/main/x86_64/musl-1.2.5-r0.apk",
                Some("alpine"),
            ),
            (
                "http://dl-cdn.alpinelinux.org/alpine/v3.20/main/x86_64/APKINDEX.tar.gz",
                Some("alpine-index"),
            ),
            (
                "https://files.pythonhosted.org/packages/ab/cd/ef/requests-2.32.3-py3-none-any.whl",
                Some("python-packages"),
            ),
            (
                "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz",
                Some("npm-tarballs"),
            ),
            (
                "https://static.crates.io/crates/serde/serde-1.0.200.crate",
                Some("crates"),
            ),
            (
                "https://proxy.golang.org/golang.org/x/text/@v/v0.14.0.zip",
                Some("go-modules"),
            ),
            (
                "https://registry.test/v2/library/alpine/blobs/sha256:0123abcd",
                Some("container-blobs"),
            ),
            ("https://proxy.golang.org/golang.org/x/text/@v/list", None),
            (
                "https://files.pythonhosted.org/packages/ab/cd/ef/requests-2.32.3.tar.gz",
                Some("pypi-files"),
            ),
            ("https://pypi.org/simple/requests/", None),
            ("http://www.example.com/index.html", None),
        ] {
            assert_eq!(name(url).as_deref(), expected, "{url}");
        }
    }
}
