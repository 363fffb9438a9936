//! Access control, `/_hoard/` (metrics, stats, purge) and the PURGE method.

use crate::support::{Hoard, Origin, fetch, raw};

/// `GET path` with `Host: host`.
fn get_from(path: &str, host: std::net::SocketAddr) -> Vec<u8> {
    raw::get_request(path, &host.to_string(), "").into_bytes()
}

#[tokio::test]
async fn clients_outside_allow_get_403_and_allowed_ones_are_served() {
    let origin = Origin::fixed("hello").await;
    let hoard = Hoard::start(&["--allow", "127.0.0.2"]).await;
    let request = get_from(&origin.url("/"), origin.addr);
    let refused = raw::exchange_from("127.0.0.1", hoard.addr, &request).await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("not allowed"), "{refused}");
    let served = raw::exchange_from("127.0.0.2", hoard.addr, &request).await;
    assert!(
        served.starts_with("HTTP/1.1 200") && served.ends_with("hello"),
        "{served}"
    );
    assert_eq!(
        origin.seen().len(),
        1,
        "the refused request never reached the origin"
    );
}

#[tokio::test]
async fn admin_pages_are_only_for_admin_clients() {
    let hoard = Hoard::start(&["--allow", "127.0.0.0/8", "--admin-allow", "127.0.0.3"]).await;
    let refused = raw::exchange_from(
        "127.0.0.1",
        hoard.addr,
        &get_from("/_hoard/stats", hoard.addr),
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    let served = raw::exchange_from(
        "127.0.0.3",
        hoard.addr,
        &get_from("/_hoard/stats", hoard.addr),
    )
    .await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    let missing = raw::exchange_from(
        "127.0.0.3",
        hoard.addr,
        &get_from("/_hoard/nope", hoard.addr),
    )
    .await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}

#[tokio::test]
async fn metrics_and_stats_count_requests_and_cache_outcomes() {
    let origin = Origin::with_headers(&[("cache-control", "max-age=60")]).await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let scrape = || async {
        reqwest::get(format!("http://{}/_hoard/metrics", hoard.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape().await;
    assert!(
        before.contains("hoard_cache_outcomes_total{outcome=\"HIT\"} 0"),
        "every outcome is listed from the start: {before}"
    );
    assert!(before.contains("hoard_cache_urls 0"), "{before}");
    for _ in 0..3 {
        fetch(&client, origin.url("/m")).await;
    }
    let metrics = scrape().await;
    for line in [
        "hoard_cache_outcomes_total{outcome=\"MISS\"} 1",
        "hoard_cache_outcomes_total{outcome=\"HIT\"} 2",
        "hoard_requests_total{mode=\"Forward\",method=\"GET\",status=\"200\"} 3",
        // Two hits of "/m #1".
        "hoard_response_bytes_total{source=\"cache\"} 10",
        "hoard_cache_urls 1",
        "hoard_cache_tier_objects{tier=\"disk\"} 1",
        // Three proxied requests and the first scrape.
        "hoard_request_duration_seconds_count 4",
        "hoard_requests_total{mode=\"Admin\",method=\"GET\",status=\"200\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    let stats = reqwest::Client::new()
        .get(format!("http://{}/_hoard/stats", hoard.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["cache"]["hits"], 2);
    assert_eq!(stats["cache"]["misses"], 1);
    assert_eq!(stats["cache"]["bytes_from_cache"], 10);
}

#[tokio::test]
async fn purge_by_url_and_by_prefix_forgets_entries() {
    let origin = Origin::with_headers(&[("cache-control", "max-age=600")]).await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let status = |response: reqwest::Response| {
        response.headers()["cache-status"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    for path in ["/one", "/img/a", "/img/b"] {
        fetch(&client, origin.url(path)).await;
        assert!(status(client.get(origin.url(path)).send().await.unwrap()).contains("hit"));
    }
    let purge = reqwest::Method::from_bytes(b"PURGE").unwrap();
    let purged = client
        .request(purge.clone(), origin.url("/one"))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    assert_eq!(purged.text().await.unwrap(), r#"{"purged":1}"#);
    let again = client
        .request(purge, origin.url("/one"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404, "nothing left to purge");
    assert!(status(client.get(origin.url("/one")).send().await.unwrap()).contains("fwd=uri-miss"));

    let prefix = format!(
        "http://{}/_hoard/purge?prefix={}",
        hoard.addr,
        origin.url("/img/")
    );
    // A GET (a link, a prefetch, a crawler) never purges: 405, and it says what would.
    let by_get = reqwest::Client::new().get(&prefix).send().await.unwrap();
    assert_eq!(by_get.status(), 405);
    assert_eq!(by_get.headers()["allow"], "POST");
    assert!(status(client.get(origin.url("/img/a")).send().await.unwrap()).contains("hit"));
    let by_prefix = reqwest::Client::new().post(prefix).send().await.unwrap();
    assert_eq!(by_prefix.text().await.unwrap(), r#"{"purged":2}"#);
    for path in ["/img/a", "/img/b"] {
        assert!(
            status(client.get(origin.url(path)).send().await.unwrap()).contains("fwd=uri-miss")
        );
    }
}

#[tokio::test]
async fn the_status_page_shows_the_numbers_and_a_chart() {
    let origin = Origin::with_headers(&[("cache-control", "max-age=60")]).await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    for _ in 0..4 {
        fetch(&client, origin.url("/s")).await;
    }
    let page = reqwest::get(format!("http://{}/_hoard/", hoard.addr))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("<th>requests</th><td>4</td>"), "{html}");
    assert!(
        html.contains("3 / 1 (75.0% of requests the cache answered)"),
        "{html}"
    );
    assert!(html.contains(r#"<meta http-equiv="refresh" content="10">"#));
    assert!(
        html.contains("<svg") && html.contains("<polyline class=\"rate\""),
        "{html}"
    );
    assert!(
        !html.contains("<script") && !html.contains("https://"),
        "served from the binary alone"
    );
}

#[tokio::test]
async fn auth_file_users_must_authenticate_for_proxy_and_gateway_requests() {
    use base64::Engine;
    let origin = Origin::fixed("members only").await;
    let htpasswd = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        htpasswd.path(),
        format!("alice:{}\n", bcrypt::hash("s3cret", 4).unwrap()),
    )
    .unwrap();
    let hoard = Hoard::start(&["--auth-file", htpasswd.path().to_str().unwrap()]).await;
    let basic = |pair: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    let proxied = |credential: Option<String>| {
        let extra = credential
            .map(|c| format!("Proxy-Authorization: {c}\r\n"))
            .unwrap_or_default();
        format!(
            "GET {} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n",
            origin.url("/p")
        )
        .into_bytes()
    };

    let missing = raw::exchange(hoard.addr, &proxied(None)).await;
    assert!(missing.starts_with("HTTP/1.1 407"), "{missing}");
    assert!(
        missing
            .to_ascii_lowercase()
            .contains("proxy-authenticate: basic realm=\"hoard\""),
        "{missing}"
    );
    let wrong = raw::exchange(hoard.addr, &proxied(Some(basic("alice:nope")))).await;
    assert!(wrong.starts_with("HTTP/1.1 407"), "{wrong}");
    let right = raw::exchange(hoard.addr, &proxied(Some(basic("alice:s3cret")))).await;
    assert!(
        right.starts_with("HTTP/1.1 200") && right.ends_with("members only"),
        "{right}"
    );
    assert!(!origin.last().headers.contains_key("proxy-authorization"));

    let mut tunnel = tokio::net::TcpStream::connect(hoard.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut tunnel,
        b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n",
    )
    .await
    .unwrap();
    let head = raw::read_until(&mut tunnel, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 407"), "{head}");

    let gateway = |credential: Option<String>| {
        let extra = credential
            .map(|c| format!("Authorization: {c}\r\n"))
            .unwrap_or_default();
        format!(
            "GET /{}/g HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n",
            origin.addr
        )
        .into_bytes()
    };
    let challenged = raw::exchange(hoard.addr, &gateway(None)).await;
    assert!(challenged.starts_with("HTTP/1.1 401"), "{challenged}");
    assert!(
        challenged
            .to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{challenged}"
    );
    let admitted = raw::exchange(hoard.addr, &gateway(Some(basic("alice:s3cret")))).await;
    assert!(admitted.starts_with("HTTP/1.1 200"), "{admitted}");
    assert!(
        !origin.last().headers.contains_key("authorization"),
        "hoard's credential stays with hoard"
    );
    assert_eq!(origin.seen().len(), 2);
}

#[tokio::test]
async fn denied_destinations_get_403_even_when_a_name_resolves_to_them() {
    let origin = Origin::fixed("private service").await;
    let port = origin.addr.port().to_string();
    let status = |hoard: &Hoard, url: String| {
        let client = hoard.client();
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    // By address, by a name that resolves into a denied block, by host name, by port.
    let by_net = Hoard::start(&["--deny-dest", "127.0.0.0/8"]).await;
    assert_eq!(status(&by_net, origin.url("/")).await, 403);
    assert_eq!(
        status(&by_net, format!("http://localhost:{port}/")).await,
        403,
        "checked after DNS"
    );
    let by_name = Hoard::start(&["--deny-dest", "localhost"]).await;
    assert_eq!(
        status(&by_name, format!("http://localhost:{port}/")).await,
        403
    );
    assert_eq!(
        status(&by_name, origin.url("/")).await,
        200,
        "other names are fine"
    );
    let by_port = Hoard::start(&["--deny-dest", &format!(":{port}")]).await;
    assert_eq!(status(&by_port, origin.url("/")).await, 403);
    assert_eq!(
        origin.seen().len(),
        1,
        "only the allowed request reached the origin"
    );

    // CONNECT tunnels obey the same rules.
    let tunnels = Hoard::start(&["--deny-dest", "127.0.0.0/8", "--connect-ports", &port]).await;
    let mut stream = tokio::net::TcpStream::connect(tunnels.addr).await.unwrap();
    let connect = format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut stream, connect.as_bytes())
        .await
        .unwrap();
    let head = raw::read_until(&mut stream, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}
