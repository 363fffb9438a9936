//! Cache rules (`--rule`, `[[rule]]`, `--preset packages`) against a real origin that says
//! as little as a package registry does: the first matching rule applies, `Cache-Status`
//! names it, and `no-store` and `private` stand unless a rule overrides them by name.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::support::{Hoard, Origin, get};

/// An origin like the Debian registry: `Content-Type`, `Content-Length` and `Date` only (no
/// freshness, no validator), the body naming the path. Paths ask for a little more:
/// `no-store`, `private` and `max-age` add those directives; `missing` is a 404, `broken` a
/// 500; `big` is 100 KB.
async fn registry_like_origin() -> Origin {
    Origin::start(|request: Request<Incoming>| async move {
        let path = request.uri().path().to_owned();
        let mut response = Response::builder().header("content-type", "application/octet-stream");
        for directive in ["no-store", "private", "max-age=3600"] {
            if path.contains(directive.trim_end_matches("=3600")) {
                response = response.header("cache-control", directive);
            }
        }
        if path.contains("missing") {
            response = response.status(StatusCode::NOT_FOUND);
        }
        if path.contains("broken") {
            response = response.status(StatusCode::INTERNAL_SERVER_ERROR);
        }
        let body = if path.contains("big") {
            "x".repeat(100_000)
        } else {
            path
        };
        response.body(hoard::body::full(body)).unwrap()
    })
    .await
}

/// GETs `path` twice through `hoard` (with `headers`) and returns both `Cache-Status`es.
async fn twice(
    hoard: &Hoard,
    origin: &Origin,
    path: &str,
    headers: &[(&str, &str)],
) -> [String; 2] {
    let client = hoard.client();
    let url = origin.url(path);
    let first = get(&client, &url, headers).await;
    // A fill is published once its body is stored, just after the client has it.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let second = get(&client, &url, headers).await;
    assert_eq!(first.body, second.body, "{path}");
    [first.cache_status, second.cache_status]
}

#[tokio::test]
async fn a_registry_that_sends_no_freshness_gives_hits_under_the_packages_preset() {
    let origin = registry_like_origin().await;
    let deb = "/debian/pool/main/h/hello/hello_2.10-3_amd64.deb";
    let plain = Hoard::start(&[]).await;
    let [first, second] = twice(&plain, &origin, deb, &[]).await;
    assert!(first.contains("detail=no-freshness"), "{first}");
    assert!(second.contains("fwd=uri-miss"), "{second}");
    assert!(!second.contains("rule="), "no rule, none named: {second}");

    let preset = Hoard::start(&["--preset", "packages"]).await;
    let before = origin.seen().len();
    let [first, second] = twice(&preset, &origin, deb, &[]).await;
    assert!(
        first.contains("stored") && first.ends_with("rule=\"debian-pool\""),
        "{first}"
    );
    assert!(
        second.contains("; hit; ttl=3153") && second.ends_with("rule=\"debian-pool\""),
        "a year of freshness: {second}"
    );
    // apt asks `max-age=0` for every index file; the preset answers it from a fresh copy.
    let index = "/debian/dists/stable/main/binary-amd64/Packages";
    let [first, second] = twice(&preset, &origin, index, &[("cache-control", "max-age=0")]).await;
    assert!(first.contains("ttl=120"), "kept two minutes: {first}");
    assert!(
        second.contains("; hit") && second.ends_with("rule=\"debian-indexes\""),
        "{second}"
    );
    assert_eq!(origin.seen().len() - before, 2, "one fetch each");
    // The registry's own word still stands, and other URLs are left alone.
    let [_, second] = twice(&preset, &origin, "/debian/pool/main/no-store.deb", &[]).await;
    assert!(second.contains("fwd=uri-miss"), "{second}");
    let [first, _] = twice(&preset, &origin, "/index.html", &[]).await;
    assert!(
        first.contains("detail=no-freshness") && !first.contains("rule="),
        "{first}"
    );
}

#[tokio::test]
async fn rules_are_tried_in_order_and_cache_status_names_the_one_that_applied() {
    let origin = registry_like_origin().await;
    let hoard = Hoard::start(&[
        "--max-object-size",
        "1KiB",
        "--rule",
        "*/static/** name=static min-ttl=1h max-object-size=1MiB",
        "--rule",
        r"~/skip/ bypass",
        "--rule",
        "*/** ttl-404=1m ttl-500=10s ignore-query=utm_*,fbclid",
    ])
    .await;
    let [first, second] = twice(&hoard, &origin, "/static/app.js", &[]).await;
    assert!(
        first.contains("ttl=3600") && first.ends_with("rule=\"static\""),
        "{first}"
    );
    assert!(second.contains("; hit"), "{second}");
    // The third rule, unnamed, is named by its position.
    let [first, second] = twice(&hoard, &origin, "/missing", &[]).await;
    assert!(first.contains("fwd=uri-miss"), "{first}");
    assert!(
        second.contains("; hit; ttl=") && second.ends_with("rule=\"rule-3\""),
        "a 404 kept a minute: {second}"
    );
    let [first, second] = twice(&hoard, &origin, "/broken", &[]).await;
    assert!(first.contains("stored; ttl=10"), "{first}");
    assert!(second.contains("; hit"), "{second}");
    let [first, second] = twice(&hoard, &origin, "/skip/x", &[]).await;
    for status in [&first, &second] {
        assert!(
            status.contains("fwd=bypass; detail=rule; rule=\"rule-2\""),
            "{status}"
        );
    }
    // Tracking parameters leave the key, and the request with it, so nothing a client puts
    // there can reach what others are served.
    let client = hoard.client();
    let tagged = get(&client, &origin.url("/missing?utm_source=mail&id=7"), &[]).await;
    assert!(
        tagged.cache_status.contains("stored"),
        "{}",
        tagged.cache_status
    );
    assert_eq!(origin.last().uri.to_string(), "/missing?id=7");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let other = get(
        &client,
        &origin.url("/missing?id=7&fbclid=x&utm_medium=y"),
        &[],
    )
    .await;
    assert!(
        other.cache_status.contains("; hit"),
        "{}",
        other.cache_status
    );
    // A rule's object size stands in for the global one.
    let [first, _] = twice(&hoard, &origin, "/static/big", &[]).await;
    assert!(first.contains("stored"), "{first}");
    let [first, _] = twice(&hoard, &origin, "/other/big/max-age", &[]).await;
    assert!(first.contains("detail=too-large"), "{first}");
}

#[tokio::test]
async fn no_store_private_and_explicit_freshness_stand_unless_a_rule_names_them() {
    let origin = registry_like_origin().await;
    let hoard = Hoard::start(&[
        "--rule",
        "*/forced/** min-ttl=1h override=no-store,private",
        "--rule",
        "*/capped/** max-ttl=5s",
        "--rule",
        "*/overruled/** min-ttl=2h override=max-age",
        "--rule",
        "*/** min-ttl=1h",
    ])
    .await;
    for path in ["/no-store", "/private"] {
        let [first, second] = twice(&hoard, &origin, path, &[]).await;
        assert!(first.contains(&format!("detail={}", &path[1..])), "{first}");
        assert!(second.contains("fwd=uri-miss"), "{second}");
        let [_, second] = twice(&hoard, &origin, &format!("/forced{path}"), &[]).await;
        assert!(second.contains("; hit"), "{path} overridden: {second}");
    }
    let [first, _] = twice(&hoard, &origin, "/max-age", &[]).await;
    assert!(
        first.contains("ttl=3600"),
        "the origin's freshness: {first}"
    );
    let [first, _] = twice(&hoard, &origin, "/capped/max-age", &[]).await;
    assert!(first.contains("ttl=5;"), "capped: {first}");
    let [first, _] = twice(&hoard, &origin, "/overruled/max-age", &[]).await;
    assert!(first.contains("ttl=7200"), "the rule's freshness: {first}");
    // A client's reload is obeyed unless the rule overrides it.
    let [_, second] = twice(&hoard, &origin, "/reload", &[("cache-control", "no-cache")]).await;
    assert!(second.contains("fwd="), "{second}");
}

#[tokio::test]
async fn rules_in_the_config_file_are_tables() {
    let origin = registry_like_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hoard.toml");
    std::fs::write(
        &file,
        r#"
[[rule]]
match = "*/files/**"
name = "files"
min-ttl = "10m"
ignore-query = ["v"]
"#,
    )
    .unwrap();
    let hoard = Hoard::start(&["--config", file.to_str().unwrap()]).await;
    let client = hoard.client();
    let first = get(&client, &origin.url("/files/a?v=1"), &[]).await;
    assert!(
        first.cache_status.contains("ttl=600") && first.cache_status.ends_with("rule=\"files\""),
        "{}",
        first.cache_status
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let second = get(&client, &origin.url("/files/a?v=2"), &[]).await;
    assert!(
        second.cache_status.contains("; hit"),
        "{}",
        second.cache_status
    );
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[[rule]]\nmatch = \"*/**\"\nmin-tll = \"1d\"\n").unwrap();
    let error = hoard::config::load(["hoard", "--config", broken.to_str().unwrap()])
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("unknown setting `min-tll`"), "{error}");
}

#[tokio::test]
async fn a_sighup_reloads_the_rules() {
    let origin = registry_like_origin().await;
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[[rule]]\nmatch = \"*/**\"\nname = \"before\"\n",
    )
    .unwrap();
    let process =
        crate::support::process::Process::start(&["--config", config.path().to_str().unwrap()]);
    let client = process.client();
    let named = |got: crate::support::Got| got.cache_status;
    assert!(named(get(&client, &origin.url("/a"), &[]).await).ends_with("rule=\"before\""));
    std::fs::write(
        config.path(),
        "[[rule]]\nmatch = \"*/**\"\nname = \"after\"\nmin-ttl = \"1h\"\n",
    )
    .unwrap();
    process.signal("HUP");
    process.wait_for_log("configuration reloaded");
    let got = named(get(&client, &origin.url("/b"), &[]).await);
    assert!(
        got.contains("ttl=3600") && got.ends_with("rule=\"after\""),
        "{got}"
    );
    let stderr = process.stop();
    assert!(
        !stderr.contains("after a restart"),
        "rules need no restart: {stderr}"
    );
}
