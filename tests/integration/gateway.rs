//! The path-prefix gateway: `http://hoard/HOST:PORT/path` as a plain browser uses it.

use std::io::Write;
use std::net::SocketAddr;

use hoard::body;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::support::{Hoard, Origin, raw};

/// A client that talks to hoard as a web server (no proxy), never following redirects.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn gateway_url(hoard: &Hoard, origin: &Origin, path: &str) -> String {
    format!("http://{}/{}{}", hoard.addr, origin.addr, path)
}

#[tokio::test]
async fn landing_page_explains_and_its_form_redirects_into_the_gateway() {
    let hoard = Hoard::start(&[]).await;
    let page = browser()
        .get(format!("http://{}/", hoard.addr))
        .send()
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
    assert!(
        html.contains("<form") && html.contains("name=\"url\""),
        "{html}"
    );

    let form = browser()
        .get(format!(
            "http://{}/?url=http%3A%2F%2Fwww.example.com%2Fx",
            hoard.addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 302);
    assert_eq!(form.headers()["location"], "/www.example.com/x");
}

#[tokio::test]
async fn a_gateway_path_fetches_the_site_through_the_cache() {
    let origin = Origin::with_headers(&[("cache-control", "max-age=60")]).await;
    let hoard = Hoard::start(&[]).await;
    let client = browser();
    let first = client
        .get(gateway_url(&hoard, &origin, "/a/b?c=d"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert!(
        first.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("fwd=uri-miss")
    );
    assert_eq!(first.text().await.unwrap(), "/a/b #1");
    let seen = origin.last();
    assert_eq!(seen.uri, "/a/b?c=d");
    assert_eq!(seen.headers["host"], origin.addr.to_string());

    let second = client
        .get(gateway_url(&hoard, &origin, "/a/b?c=d"))
        .send()
        .await
        .unwrap();
    assert!(
        second.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("hit"),
        "the gateway shares the cache"
    );
    // The explicit http:// form is the same resource.
    let explicit = client
        .get(format!(
            "http://{}/http://{}/a/b?c=d",
            hoard.addr, origin.addr
        ))
        .send()
        .await
        .unwrap();
    assert!(
        explicit.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("hit")
    );
    assert_eq!(origin.seen().len(), 1);
}

#[tokio::test]
async fn root_relative_requests_resolve_from_the_referer() {
    let origin = Origin::fixed("image bytes").await;
    let hoard = Hoard::start(&[]).await;
    let referer = gateway_url(&hoard, &origin, "/dir/page.html");
    let response = browser()
        .get(format!("http://{}/logo.png", hoard.addr))
        .header("referer", &referer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = origin.last();
    assert_eq!(seen.uri, "/logo.png");
    assert_eq!(
        seen.headers["referer"],
        format!("http://{}/dir/page.html", origin.addr).as_str(),
        "the origin sees its own URL as Referer"
    );
}

/// Sends a GET from `source` (another loopback address) and returns the status line.
async fn get_from(source: &str, hoard: SocketAddr, path: &str) -> String {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {hoard}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    );
    let response = raw::exchange_from(source, hoard, request.as_bytes()).await;
    response.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn without_a_referer_the_clients_last_site_is_used_per_client() {
    let origin = Origin::fixed("ok").await;
    let hoard = Hoard::start(&[]).await;
    // Client A visits a page, then asks for /favicon.ico without a Referer.
    assert!(
        get_from(
            "127.0.0.1",
            hoard.addr,
            &format!("/{}/page.html", origin.addr)
        )
        .await
        .contains("200")
    );
    assert!(
        get_from("127.0.0.1", hoard.addr, "/favicon.ico")
            .await
            .contains("200")
    );
    assert_eq!(origin.last().uri, "/favicon.ico");
    // Client B has visited nothing: hoard does not guess from A's history.
    assert!(
        get_from("127.0.0.2", hoard.addr, "/favicon.ico")
            .await
            .contains("400")
    );
    assert_eq!(origin.seen().len(), 2);
}

#[tokio::test]
async fn redirects_are_rewritten_into_the_gateway() {
    let origin_addr = std::sync::Arc::new(std::sync::OnceLock::<SocketAddr>::new());
    let addr_for_handler = origin_addr.clone();
    let origin = Origin::start(move |request: Request<Incoming>| {
        let me = *addr_for_handler.get().unwrap();
        async move {
            let location = match request.uri().path() {
                "/absolute" => format!("http://{me}/new"),
                "/elsewhere" => "https://secure.example/x".to_owned(),
                _ => "sibling?q=1".to_owned(),
            };
            Response::builder()
                .status(StatusCode::MOVED_PERMANENTLY)
                .header("location", location)
                .body(body::empty())
                .unwrap()
        }
    })
    .await;
    origin_addr.set(origin.addr).unwrap();
    let hoard = Hoard::start(&[]).await;
    let client = browser();
    for (path, expected) in [
        ("/absolute", format!("/{}/new", origin.addr)),
        ("/dir/relative", format!("/{}/dir/sibling?q=1", origin.addr)),
        ("/elsewhere", "/https://secure.example/x".to_owned()),
    ] {
        let response = client
            .get(gateway_url(&hoard, &origin, path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 301);
        assert_eq!(response.headers()["location"], expected.as_str(), "{path}");
    }
}

#[tokio::test]
async fn follow_redirects_returns_the_final_response_and_stops_loops() {
    let origin = Origin::start(|request: Request<Incoming>| async move {
        let path = request.uri().path().to_owned();
        let redirect = |to: String| {
            Response::builder()
                .status(StatusCode::FOUND)
                .header("location", to)
                .body(body::empty())
                .unwrap()
        };
        if let Some(n) = path.strip_prefix("/chain/") {
            let n: u32 = n.parse().unwrap();
            return if n == 0 {
                Response::new(body::full("arrived"))
            } else {
                redirect(format!("/chain/{}", n - 1))
            };
        }
        match path.as_str() {
            "/loop-a" => redirect("/loop-b".into()),
            _ => redirect("/loop-a".into()),
        }
    })
    .await;
    let hoard = Hoard::start(&["--follow-redirects"]).await;
    let client = browser();
    let followed = client
        .get(gateway_url(&hoard, &origin, "/chain/3"))
        .send()
        .await
        .unwrap();
    assert_eq!(followed.status(), 200);
    assert_eq!(followed.text().await.unwrap(), "arrived");
    let looped = client
        .get(gateway_url(&hoard, &origin, "/loop-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(looped.status(), 508);
    let too_long = client
        .get(gateway_url(&hoard, &origin, "/chain/11"))
        .send()
        .await
        .unwrap();
    assert_eq!(too_long.status(), 508);
    let ten = client
        .get(gateway_url(&hoard, &origin, "/chain/10"))
        .send()
        .await
        .unwrap();
    assert_eq!(ten.status(), 200, "ten hops are allowed");
}

#[tokio::test]
async fn gzip_html_is_decoded_and_its_absolute_links_rewritten() {
    let html = r#"<html><body><a href="http://other.example/page">x</a><img src="https://cdn.example/i.png"></body></html>"#;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(html.as_bytes()).unwrap();
    let gzipped = bytes::Bytes::from(encoder.finish().unwrap());
    let origin = Origin::start(move |_| {
        let gzipped = gzipped.clone();
        async move {
            Response::builder()
                .header("content-type", "text/html; charset=utf-8")
                .header("content-encoding", "gzip")
                .header("set-cookie", "session=abc; Domain=other.example; Path=/")
                .body(body::full(gzipped))
                .unwrap()
        }
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let response = browser()
        .get(gateway_url(&hoard, &origin, "/page"))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("content-encoding").is_none());
    assert_eq!(
        response.headers()["set-cookie"],
        format!("session=abc; Path=/{}/", origin.addr).as_str()
    );
    let body = response.text().await.unwrap();
    assert!(body.contains(r#"href="/other.example/page""#), "{body}");
    assert!(
        body.contains(r#"src="/https://cdn.example/i.png""#),
        "{body}"
    );
}
