//! `/_hoard/metrics` as monitoring tools read it: Prometheus's own linter (`promtool check
//! metrics`) passes the Prometheus text format, the Python client's strict parser reads the
//! OpenMetrics a Prometheus scraper asks for, the `process_*` and build-info families are
//! there, `/_hoard/stats` leaves hoard's own pages out of the origin's bytes, and the
//! Grafana dashboard in `contrib/` queries only metrics hoard exports.

use std::collections::BTreeSet;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::support::fleet::Fleet;
use crate::support::{Hoard, Origin, fetch, get, stats};

/// The `Accept` Prometheus 2.x sends with every scrape.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
     application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The content type and text of a scrape sending `accept`.
async fn scrape(addr: std::net::SocketAddr, accept: Option<&str>) -> (String, String) {
    let mut request = reqwest::Client::new().get(format!("http://{addr}/_hoard/metrics"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (content_type, response.text().await.unwrap())
}

/// Runs `program args` with `input` on stdin: (success, stdout and stderr).
async fn run_with_input(program: &str, args: &[&str], input: &str) -> (bool, String) {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (.ci/run installs it)"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// Reads OpenMetrics from stdin with the Python client's parser, which rejects anything
/// the specification does not allow, and prints each family's name and type.
const OPENMETRICS_PARSE: &str = "
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    print(family.name, family.type, len(family.samples))
";

#[tokio::test]
async fn scrapes_pass_promtool_and_the_strict_openmetrics_parser() {
    let origin = Origin::with_headers(&[("cache-control", "max-age=60")]).await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    for _ in 0..2 {
        fetch(&client, origin.url("/m")).await;
    }
    let direct = reqwest::Client::new();
    assert_eq!(
        get(&direct, &format!("http://{}/_hoard/nope", hoard.addr), &[])
            .await
            .status,
        404
    );

    let (content_type, text) = scrape(hoard.addr, None).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let (clean, lint) = run_with_input("promtool", &["check", "metrics"], &text).await;
    assert!(clean && lint.trim().is_empty(), "promtool: {lint}\n{text}");
    for line in [
        "# TYPE hoard_requests_total counter",
        "# TYPE hoard_cache_evictions_total counter",
        "# TYPE hoard_cache_urls gauge",
        "# TYPE process_cpu_seconds_total counter",
        "hoard_cache_urls 1",
        "hoard_cache_outcomes_total{outcome=\"HIT\"} 1",
        concat!(
            "hoard_build_info{version=\"",
            env!("CARGO_PKG_VERSION"),
            "\"} 1"
        ),
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    for family in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_virtual_memory_bytes",
    ] {
        let value: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix(family)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{family} in\n{text}"))
            .parse()
            .unwrap();
        assert!(value > 0.0, "{family} = {value}");
    }

    let (content_type, text) = scrape(hoard.addr, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    let (parsed, families) = run_with_input("python3", &["-c", OPENMETRICS_PARSE], &text).await;
    assert!(parsed, "OpenMetrics parser: {families}\n{text}");
    for family in [
        "hoard_requests counter",
        "hoard_build info",
        "hoard_request_duration_seconds histogram",
        "process_cpu_seconds counter",
        "hoard_cache_tier_bytes gauge",
    ] {
        assert!(families.contains(family), "{family} in\n{families}");
    }
    // A scraper preferring the old format, or curl's `*/*`, gets the Prometheus text.
    for accept in [
        "text/plain;version=0.0.4",
        "*/*",
        "application/openmetrics-text;q=0",
    ] {
        let (content_type, _) = scrape(hoard.addr, Some(accept)).await;
        assert!(
            content_type.starts_with("text/plain"),
            "{accept}: {content_type}"
        );
    }
}

#[tokio::test]
async fn bytes_from_the_origin_leave_out_hoards_own_pages_and_errors() {
    let origin = Origin::fixed("hello").await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    assert_eq!(fetch(&client, origin.url("/a")).await, "hello");
    let direct = reqwest::Client::new();
    for page in ["/_hoard/", "/_hoard/nope", "/_hoard/stats"] {
        get(&direct, &format!("http://{}{page}", hoard.addr), &[]).await;
    }
    // A refused connection: the 502 is hoard's answer, not the origin's.
    let refused = get(&client, "http://127.0.0.1:1/", &[]).await;
    assert_eq!(refused.status, 502);
    let numbers = stats(hoard.addr).await;
    assert_eq!(numbers["cache"]["bytes_from_origin"], 5, "{numbers}");
    let (_, text) = scrape(hoard.addr, None).await;
    assert!(
        text.contains("hoard_response_bytes_total{source=\"origin\"} 5"),
        "{text}"
    );
    let own: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("hoard_response_bytes_total{source=\"hoard\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        own > 1000,
        "the status page and errors count as hoard's: {own}"
    );
}

/// Metric names a PromQL expression reads (`hoard_*` and `process_*`).
fn queried_metrics(expr: &str) -> Vec<String> {
    let name = regex::Regex::new(r"\b(?:hoard|process)_[a-z_]+").unwrap();
    name.find_iter(expr)
        .map(|m| m.as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn the_grafana_dashboard_queries_only_metrics_hoard_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../contrib/grafana/hoard.json")).unwrap();
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queried.extend(queried_metrics(target["expr"].as_str().unwrap()));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            queried.extend(queried_metrics(query));
        }
    }
    assert!(queried.len() > 20, "{queried:?}");

    // A fleet of two, so the fleet's families have samples: requests sent to the other
    // node, then failures once it is gone.
    let mut fleet = Fleet::start(2, &[]).await;
    let origin = Origin::with_headers(&[("cache-control", "max-age=60")]).await;
    let client = fleet.client(0);
    let urls: Vec<String> = (0..12).map(|n| origin.url(&format!("/o/{n}"))).collect();
    for url in &urls {
        fetch(&client, url).await;
        fetch(&client, url).await;
    }
    // An origin that refuses connections: an upstream error, on node 0 itself (a URL the
    // other node owns would fail there instead).
    let refused = (0..)
        .map(|n| format!("http://127.0.0.1:1/{n}"))
        .find(|url| fleet.owner(2, url) == 0)
        .unwrap();
    assert_eq!(get(&client, &refused, &[]).await.status, 502);
    fleet.kill(1);
    let owned_by_gone: Vec<String> = (0..12)
        .map(|n| origin.url(&format!("/after-kill/{n}")))
        .filter(|url| fleet.owner(2, url) == 1)
        .collect();
    assert!(!owned_by_gone.is_empty());
    for url in owned_by_gone {
        fetch(&client, url).await;
    }
    let addr = fleet.node(0).addr;
    let (_, text) = scrape(addr, None).await;
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| !exported.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which hoard does not export:\n{text}"
    );
}
