//! The HTML status page, `/_hoard/`: version, uptime and address; the main numbers in human
//! units; a chart of the last 30 minutes with axes and a legend; the fleet; a searchable,
//! paginated list of stored responses with a purge button each; and the effective
//! configuration. Rendered here, on the server, as one self-contained page: no scripts, no
//! CDN, so it works in any browser and in `curl`.
//!
//! It reads; the purge buttons are forms that POST to `/_hoard/purge`, which the admin's
//! cross-site rules guard like any other purge.

use std::fmt::Write as _;

use bytesize::ByteSize;

use crate::cache::Cache;
use crate::fleet::Fleet;
use crate::html::escape;
use crate::metrics::Metrics;

/// What the page says about this process besides its numbers.
#[derive(Debug, Clone, Default)]
pub struct About {
    /// Where hoard listens (`127.0.0.1:8080`, ...).
    pub listening: Vec<std::net::SocketAddr>,
    /// The effective configuration, as a config file (`hoard --check-config` prints the same).
    pub settings: String,
}

/// Stored responses per page of the listing.
pub const PAGE_SIZE: usize = 50;

/// The page's query: `?q=TEXT&page=N` (and `purged=N` after a purge button).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusQuery {
    /// Only URLs containing this (case-insensitive).
    pub search: String,
    /// From 1.
    pub page: usize,
    /// How many responses the purge that led here removed.
    pub purged: Option<usize>,
}

impl StatusQuery {
    pub fn parse(query: Option<&str>) -> StatusQuery {
        let mut parsed = StatusQuery {
            page: 1,
            ..StatusQuery::default()
        };
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match name.as_ref() {
                "q" => parsed.search = value.trim().to_owned(),
                "page" => parsed.page = value.parse().unwrap_or(1).max(1),
                "purged" => parsed.purged = value.parse().ok(),
                _ => {}
            }
        }
        parsed
    }

    /// This query as a link to page `page`.
    fn link(&self, page: usize) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if !self.search.is_empty() {
            query.append_pair("q", &self.search);
        }
        query.append_pair("page", &page.to_string());
        format!("/_hoard/?{}#objects", query.finish())
    }
}

/// `3d 4h`, `2h 5m`, `42s`: a duration as a person reads it.
fn human_duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn bytes(n: u64) -> String {
    ByteSize(n).display().iec().to_string()
}

pub(super) fn page(
    query: &StatusQuery,
    cache: &Cache,
    metrics: &Metrics,
    fleet: Option<&Fleet>,
    about: &About,
) -> String {
    let stats = metrics.stats(cache, fleet);
    let number = |path: &[&str]| {
        let mut value = &stats;
        for key in path {
            value = &value[*key];
        }
        value.as_u64().unwrap_or(0)
    };
    let (hits, misses) = (number(&["cache", "hits"]), number(&["cache", "misses"]));
    let ratio = |part: u64, whole: u64| {
        if whole > 0 {
            format!("{:.1}%", 100.0 * part as f64 / whole as f64)
        } else {
            "–".to_owned()
        }
    };
    let (from_cache, from_origin) = (
        number(&["cache", "bytes_from_cache"]),
        number(&["cache", "bytes_from_origin"]),
    );
    let rows = [
        ("requests", number(&["requests"]).to_string()),
        (
            "cache hits / misses",
            format!(
                "{hits} / {misses} ({} of requests the cache answered)",
                ratio(hits, hits + misses)
            ),
        ),
        (
            "bytes from cache / origin",
            format!(
                "{} / {} ({} from cache)",
                bytes(from_cache),
                bytes(from_origin),
                ratio(from_cache, from_cache + from_origin)
            ),
        ),
        ("cached URLs", number(&["cache", "urls"]).to_string()),
        (
            "memory tier",
            format!(
                "{} in {} bodies",
                bytes(number(&["cache", "memory", "bytes"])),
                number(&["cache", "memory", "objects"])
            ),
        ),
        (
            "disk tier",
            format!(
                "{} in {} bodies",
                bytes(number(&["cache", "disk", "bytes"])),
                number(&["cache", "disk", "objects"])
            ),
        ),
        (
            "evictions / corrupt bodies / store failures",
            format!(
                "{} / {} / {}",
                number(&["cache", "evictions"]),
                number(&["cache", "corrupt_bodies"]),
                number(&["cache", "store_failures"])
            ),
        ),
        (
            "open connections",
            stats["open_connections"].as_i64().unwrap_or(0).to_string(),
        ),
    ];
    let mut numbers = String::new();
    for (name, value) in rows {
        let _ = write!(numbers, "<tr><th>{name}</th><td>{value}</td></tr>");
    }
    let listening: Vec<String> = about.listening.iter().map(|a| a.to_string()).collect();
    let purged = query.purged.map_or_else(String::new, |n| {
        format!("<p class=\"notice\" role=\"status\">Purged {n} stored response(s).</p>")
    });
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width">{refresh}<title>hoard status</title><style>
body{{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:64em;padding:0 1em;color:#222}}
h1 small{{font-size:.55em;color:#666;font-weight:normal}}th{{text-align:left;padding-right:2em;font-weight:normal;color:#555}}
table.list{{border-collapse:collapse;width:100%;font-size:.92em}}table.list th,table.list td{{border-bottom:1px solid #eee;padding:.25em .5em .25em 0}}
table.list td.url{{word-break:break-all}}td.num{{text-align:right;white-space:nowrap}}svg{{background:#fafafa;border:1px solid #ddd}}
.rate{{stroke:#1f77b4}}.ratio{{stroke:#2ca02c}}polyline{{fill:none;stroke-width:1.5}}.axis{{stroke:#999}}.grid{{stroke:#e4e4e4}}
svg text{{font-size:11px;fill:#555}}.key{{display:inline-block;width:1em;height:.25em;vertical-align:middle;margin-right:.3em}}
pre{{background:#f6f6f6;padding:1em;overflow:auto}}.notice{{background:#e8f5e9;padding:.5em 1em}}form.inline{{display:inline;margin:0}}
</style></head><body>
<h1>hoard <small>version {version} · up {uptime} · listening on {listening}</small></h1>
{purged}<table id="numbers">{numbers}</table>
{fleet}{chart}{hosts}{objects}
<h2 id="configuration">Configuration</h2><p>The settings in effect, as a config file (<code>hoard --check-config</code> prints the same):</p>
<pre>{settings}</pre>
<p><a href="/_hoard/metrics">metrics (Prometheus)</a> · <a href="/_hoard/stats">stats (JSON)</a> · <a href="/">gateway start page</a></p>
</body></html>
"#,
        // Live: the page reloads itself, except while a search is being read.
        refresh = if query.search.is_empty() {
            r#"<meta http-equiv="refresh" content="10">"#
        } else {
            ""
        },
        version = env!("CARGO_PKG_VERSION"),
        uptime = human_duration(metrics.uptime().as_secs()),
        listening = escape(&listening.join(", ")),
        fleet = fleet.map_or_else(String::new, fleet_table),
        chart = chart(&metrics.timeline()),
        hosts = hosts_table(metrics),
        objects = objects(query, cache),
        settings = escape(&about.settings),
    )
}

/// Requests per 10 s (left axis) and the hit ratio (right axis, 0–100%) over the last 30
/// minutes, with time along the bottom.
fn chart(series: &[(u64, u64)]) -> String {
    let (left, top, width, height) = (48.0, 12.0, 640.0, 160.0);
    let step = width / (series.len().max(2) - 1) as f64;
    let peak = series.iter().map(|(r, _)| *r).max().unwrap_or(0).max(1);
    // A round top for the left axis: 1, 2 or 5 times a power of ten.
    let scale = {
        let mut scale = 1;
        while scale < peak {
            scale = match scale.to_string().as_bytes()[0] {
                b'1' => scale * 2,
                b'2' => scale / 2 * 5,
                _ => scale * 2,
            };
        }
        scale
    };
    let y = |fraction: f64| top + height - fraction * height;
    let points = |value: &dyn Fn(u64, u64) -> f64| -> String {
        series
            .iter()
            .enumerate()
            .map(|(i, (requests, hits))| {
                format!(
                    "{:.1},{:.1}",
                    left + i as f64 * step,
                    y(value(*requests, *hits))
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let rate = points(&|requests, _| requests as f64 / scale as f64);
    let hit_ratio = points(&|requests, hits| {
        if requests > 0 {
            hits as f64 / requests as f64
        } else {
            0.0
        }
    });
    let mut axes = String::new();
    for tick in 0..=4 {
        let fraction = tick as f64 / 4.0;
        let _ = write!(
            axes,
            r#"<line class="grid" x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text x="{}" y="{:.1}" text-anchor="end">{}</text><text x="{}" y="{:.1}">{}%</text>"#,
            left + width,
            left - 6.0,
            y(fraction) + 4.0,
            (scale as f64 * fraction).round() as u64,
            left + width + 6.0,
            y(fraction) + 4.0,
            tick * 25,
            y = y(fraction),
        );
    }
    for (minutes, label) in [
        (30, "−30 min"),
        (20, "−20 min"),
        (10, "−10 min"),
        (0, "now"),
    ] {
        let x = left + width * (1.0 - minutes as f64 / 30.0);
        let _ = write!(
            axes,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            top + height + 16.0
        );
    }
    format!(
        r#"<h2>Last 30 minutes</h2>
<p id="legend"><span class="key" style="background:#1f77b4"></span>requests per 10 s (left axis) <span class="key" style="background:#2ca02c"></span>hit ratio (right axis)</p>
<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="requests per 10 seconds and hit ratio over the last 30 minutes">
{axes}<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{bottom}"/><line class="axis" x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}"/>
<polyline class="rate" points="{rate}"/><polyline class="ratio" points="{hit_ratio}"/></svg>
"#,
        w = left + width + 44.0,
        h = top + height + 24.0,
        bottom = top + height,
        right = left + width,
    )
}

/// Hit ratio and bytes per site, busiest first.
fn hosts_table(metrics: &Metrics) -> String {
    let hosts = metrics.hosts();
    if hosts.is_empty() {
        return String::new();
    }
    let mut rows = String::new();
    for host in hosts.iter().take(20) {
        let looked_up = host.hits + host.misses;
        let _ = write!(
            rows,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&host.host),
            host.requests,
            if looked_up > 0 {
                format!("{:.1}%", 100.0 * host.hits as f64 / looked_up as f64)
            } else {
                "–".to_owned()
            },
            bytes(host.bytes_from_cache),
            bytes(host.bytes_from_origin),
        );
    }
    format!(
        "<h2>Sites</h2><table class=\"list\" id=\"hosts\"><tr><th>site</th><th>requests</th><th>hit ratio</th><th>from cache</th><th>from origin</th></tr>{rows}</table>\n"
    )
}

/// The stored responses matching the search, one page of them, each with a purge button.
fn objects(query: &StatusQuery, cache: &Cache) -> String {
    let needle = query.search.to_lowercase();
    let matching: Vec<_> = cache
        .entries("")
        .into_iter()
        .filter(|entry| needle.is_empty() || entry.key.url().to_lowercase().contains(&needle))
        .collect();
    let pages = matching.len().div_ceil(PAGE_SIZE).max(1);
    let page = query.page.min(pages);
    let now = crate::cache::policy::now_secs();
    let mut rows = String::new();
    for entry in matching.iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE) {
        let age = entry.freshness.age(now);
        let ttl = entry.freshness.lifetime.saturating_sub(age);
        let url = entry.key.url();
        let purge = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("url", url)
            .finish();
        let _ = write!(
            rows,
            "<tr><td class=\"url\"><a href=\"{href}\">{url_text}</a></td><td class=\"num\">{status}</td><td class=\"num\">{size}</td><td class=\"num\">{age}</td><td class=\"num\">{ttl}</td><td class=\"num\">{hits}</td><td>{tier}</td>\
             <td><form class=\"inline\" method=\"post\" action=\"/_hoard/purge?{purge}\"><button type=\"submit\">purge</button></form></td></tr>",
            href = escape(url),
            url_text = escape(url),
            status = entry.status.as_u16(),
            size = bytes(entry.body_len),
            age = human_duration(age),
            ttl = if ttl > 0 {
                human_duration(ttl)
            } else {
                "stale".to_owned()
            },
            hits = cache.hits(entry),
            tier = if cache.in_memory(entry) {
                "memory + disk"
            } else {
                "disk"
            },
        );
    }
    let mut pager = String::new();
    if page > 1 {
        let _ = write!(
            pager,
            "<a rel=\"prev\" href=\"{}\">← previous</a> ",
            escape(&query.link(page - 1))
        );
    }
    let _ = write!(pager, "page {page} of {pages}");
    if page < pages {
        let _ = write!(
            pager,
            " <a rel=\"next\" href=\"{}\">next →</a>",
            escape(&query.link(page + 1))
        );
    }
    format!(
        r#"<h2 id="objects">Stored responses</h2>
<form method="get" action="/_hoard/#objects" role="search"><input type="search" name="q" value="{search}" placeholder="part of a URL" aria-label="search stored URLs"> <button type="submit">search</button></form>
<p>{count} stored response(s){matching_text} · {pager}</p>
<table class="list" id="object-list"><tr><th>URL</th><th>status</th><th>size</th><th>age</th><th>fresh for</th><th title="requests that found this URL stored since it was stored or last refreshed">hits</th><th>tier</th><th></th></tr>{rows}</table>
"#,
        search = escape(&query.search),
        count = matching.len(),
        matching_text = if query.search.is_empty() {
            String::new()
        } else {
            format!(" matching “{}”", escape(&query.search))
        },
    )
}

/// The fleet's members: each one's health and share of the keys.
fn fleet_table(fleet: &Fleet) -> String {
    let rows: String = fleet
        .status()
        .iter()
        .map(|member| {
            format!(
                "<tr><th>{}{}</th><td>{}</td><td>{:.1}% of keys</td></tr>",
                escape(&member.name),
                if member.is_self { " (this node)" } else { "" },
                if member.up { "up" } else { "down" },
                member.share * 100.0
            )
        })
        .collect();
    format!("<h2>Fleet</h2><table>{rows}</table>\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_durations_read_as_a_person_writes_them() {
        assert_eq!(
            StatusQuery::parse(Some("q=img%2F&page=3&purged=2")),
            StatusQuery {
                search: "img/".into(),
                page: 3,
                purged: Some(2)
            }
        );
        assert_eq!(StatusQuery::parse(Some("page=0")).page, 1);
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(3 * 3600 + 120), "3h 2m");
        assert_eq!(human_duration(2 * 86_400 + 5 * 3600), "2d 5h");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
