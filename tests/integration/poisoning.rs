//! One client must never change what another is served: the cache key in reverse mode, the
//! request fields an application reflects, cookies, GET bodies and Vary values (issue 11,
//! classes 1, 4, 7, 8, 9, 15), and reverse mode never being a forward proxy (class 2).

use bytes::Bytes;
use hoard::body;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::support::{Hoard, Origin, raw};

/// An application that builds its page and its redirect from what it is told about the
/// request: Host, X-Forwarded-Host, X-Original-URL, X-Token. Cacheable for a minute.
async fn reflecting_app() -> Origin {
    Origin::start(|request: Request<Incoming>| async move {
        let field = |name: &str| {
            request
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let host = field("x-forwarded-host")
            .or_else(|| field("host"))
            .unwrap_or_default();
        let path = field("x-original-url").unwrap_or_else(|| request.uri().path().to_owned());
        let response = Response::builder().header("cache-control", "max-age=60");
        if path == "/moved" {
            return response
                .status(301)
                .header("location", format!("http://{host}/new"))
                .body(body::empty())
                .unwrap();
        }
        response
            .header("vary", "X-Token")
            .body(body::full(format!(
                "page {path} for {host} token {}",
                field("x-token").unwrap_or_default()
            )))
            .unwrap()
    })
    .await
}

/// A reverse-mode hoard in front of `app`, with `extra` flags.
async fn accelerator(app: &Origin, extra: &[&str]) -> Hoard {
    let upstream = app.url("");
    let mut flags = vec!["--upstream", upstream.as_str()];
    flags.extend_from_slice(extra);
    Hoard::start(&flags).await
}

/// The body after the head.
fn body_of(response: &str) -> &str {
    response.split("\r\n\r\n").nth(1).unwrap_or_default()
}

#[tokio::test]
async fn reverse_mode_keys_the_cache_by_the_host_the_upstream_sees() {
    let app = reflecting_app().await;
    let hoard = accelerator(&app, &[]).await;

    let evil = raw::exchange(
        hoard.addr,
        raw::get_request("/p", "evil.example", "").as_bytes(),
    )
    .await;
    assert_eq!(body_of(&evil), "page /p for evil.example token ");
    let good = raw::exchange(
        hoard.addr,
        raw::get_request("/p", "www.good.example", "").as_bytes(),
    )
    .await;
    assert_eq!(
        body_of(&good),
        "page /p for www.good.example token ",
        "{good}"
    );
    let again = raw::exchange(
        hoard.addr,
        raw::get_request("/p", "WWW.Good.Example", "").as_bytes(),
    )
    .await;
    assert!(
        again.contains("hoard; hit"),
        "host case does not matter: {again}"
    );
    assert_eq!(body_of(&again), "page /p for www.good.example token ");

    raw::exchange(
        hoard.addr,
        raw::get_request("/moved", "evil.example", "").as_bytes(),
    )
    .await;
    let moved = raw::exchange(
        hoard.addr,
        raw::get_request("/moved", "www.good.example", "").as_bytes(),
    )
    .await;
    assert!(
        moved.contains("location: http://www.good.example/new"),
        "a redirect built from Host is per host: {moved}"
    );
    assert_eq!(app.seen().len(), 4, "two hosts, two paths, four fills");
}

#[tokio::test]
async fn a_fixed_upstream_host_is_one_key_for_every_client_host() {
    let app = reflecting_app().await;
    let hoard = accelerator(&app, &["--upstream-host", "app.internal"]).await;
    let first = raw::exchange(
        hoard.addr,
        raw::get_request("/p", "a.example", "").as_bytes(),
    )
    .await;
    assert_eq!(body_of(&first), "page /p for app.internal token ");
    let second = raw::exchange(
        hoard.addr,
        raw::get_request("/p", "b.example", "").as_bytes(),
    )
    .await;
    assert!(second.contains("hoard; hit"), "{second}");
    assert_eq!(app.seen().len(), 1);
}

#[tokio::test]
async fn server_names_answer_their_hosts_and_421_the_rest() {
    let app = reflecting_app().await;
    let hoard = accelerator(
        &app,
        &[
            "--server-name",
            "www.good.example",
            "--server-name",
            "*.static.example",
        ],
    )
    .await;
    for host in [
        "www.good.example",
        "www.good.example:8080",
        "img.static.example",
    ] {
        let answer = raw::exchange(hoard.addr, raw::get_request("/p", host, "").as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
    for host in ["evil.example", "static.example", "good.example.evil"] {
        let answer = raw::exchange(hoard.addr, raw::get_request("/p", host, "").as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 421"), "{host}: {answer}");
    }
    assert_eq!(app.seen().len(), 3);
}

#[tokio::test]
async fn reverse_mode_is_never_a_forward_proxy_or_a_tunnel() {
    let app = reflecting_app().await;
    let internal = Origin::fixed("internal secret").await;
    let hoard = accelerator(
        &app,
        &[
            "--allow",
            "0.0.0.0/0",
            "--connect-ports",
            &internal.addr.port().to_string(),
        ],
    )
    .await;
    let absolute = raw::exchange(
        hoard.addr,
        raw::get_request(&internal.url("/"), &internal.addr.to_string(), "").as_bytes(),
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.1 400"), "{absolute}");
    let connect = raw::exchange(
        hoard.addr,
        format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", internal.addr).as_bytes(),
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    assert!(internal.seen().is_empty() && internal.connections() == 0);

    // An absolute-form target naming the upstream itself is an ordinary request.
    let own = raw::exchange(
        hoard.addr,
        raw::get_request(&app.url("/p"), "x", "").as_bytes(),
    )
    .await;
    assert!(own.starts_with("HTTP/1.1 200"), "{own}");
}

#[tokio::test]
async fn a_host_that_is_not_an_authority_is_400_and_forwarded_values_are_quoted() {
    let app = reflecting_app().await;
    let hoard = accelerator(&app, &[]).await;
    let injected = raw::exchange(
        hoard.addr,
        raw::get_request("/p", "a.example\", for=6.6.6.6;host=\"b.example", "").as_bytes(),
    )
    .await;
    assert!(injected.starts_with("HTTP/1.1 400"), "{injected}");
    assert!(app.seen().is_empty());

    raw::exchange(
        hoard.addr,
        raw::get_request("/p", "a.example", "Forwarded: for=6.6.6.6\r\n").as_bytes(),
    )
    .await;
    let forwarded = app.last().headers["forwarded"].to_str().unwrap().to_owned();
    assert_eq!(forwarded, "for=127.0.0.1;proto=http;host=\"a.example\"");
}

#[tokio::test]
async fn unkeyed_forwarding_fields_from_clients_never_reach_the_app() {
    let app = reflecting_app().await;
    let hoard = accelerator(&app, &[]).await;
    let attack = "X-Forwarded-Host: evil.example\r\nX-Original-URL: /admin\r\n\
                  X-Rewrite-URL: /admin\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Scheme: https\r\n\
                  X-HTTP-Method-Override: DELETE\r\nX-Forwarded-For: 6.6.6.6\r\n";
    let attacked = raw::exchange(
        hoard.addr,
        raw::get_request("/p", "www.good.example", attack).as_bytes(),
    )
    .await;
    assert_eq!(body_of(&attacked), "page /p for www.good.example token ");
    let seen = app.last().headers;
    for name in [
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-scheme",
        "x-http-method-override",
    ] {
        assert!(!seen.contains_key(name), "{name} reached the app");
    }
    assert_eq!(seen["x-forwarded-host"], "www.good.example");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    let victim = raw::exchange(
        hoard.addr,
        raw::get_request("/p", "www.good.example", "").as_bytes(),
    )
    .await;
    assert!(victim.contains("hoard; hit"), "{victim}");
    assert_eq!(body_of(&victim), "page /p for www.good.example token ");
}

#[tokio::test]
async fn forwarding_fields_from_a_trusted_balancer_are_kept() {
    let app = reflecting_app().await;
    let hoard = accelerator(&app, &["--trust-forwarded", "127.0.0.0/8"]).await;
    let extra = "X-Forwarded-Host: public.example\r\nX-Forwarded-Proto: https\r\n\
                 X-Forwarded-For: 192.0.2.4\r\n";
    let answer = raw::exchange(
        hoard.addr,
        raw::get_request("/p", "lb.internal", extra).as_bytes(),
    )
    .await;
    assert_eq!(body_of(&answer), "page /p for public.example token ");
    let seen = app.last().headers;
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-forwarded-for"], "192.0.2.4, 127.0.0.1");
}

#[tokio::test]
async fn vary_keeps_the_case_of_values_whose_grammar_is_case_sensitive() {
    let app = reflecting_app().await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let token = |value: &'static str| {
        let request = client.get(app.url("/v")).header("x-token", value).send();
        async move { request.await.unwrap().text().await.unwrap() }
    };
    assert!(token("AbCdEf").await.ends_with("token AbCdEf"));
    assert!(token("abcdef").await.ends_with("token abcdef"));
    assert_eq!(app.seen().len(), 2, "two variants");
    assert!(token("AbCdEf").await.ends_with("token AbCdEf"));
    assert_eq!(app.seen().len(), 2, "the first variant is a hit");
}

/// A revalidating origin: 200 with an ETag the first time, then 304 with `not_modified`'s
/// fields (and a cookie) to every conditional request.
async fn revalidating_origin(not_modified: &'static [(&'static str, &'static str)]) -> Origin {
    Origin::start(move |request: Request<Incoming>| async move {
        if request.headers().contains_key("if-none-match") {
            let mut response = Response::builder()
                .status(304)
                .header("etag", "\"v1\"")
                .header("set-cookie", "sess=alice-secret");
            for (name, value) in not_modified {
                response = response.header(*name, *value);
            }
            return response.body(body::empty()).unwrap();
        }
        Response::builder()
            .header("etag", "\"v1\"")
            .header("cache-control", "max-age=0")
            .body(body::full(Bytes::from_static(b"the page")))
            .unwrap()
    })
    .await
}

/// Stores `/r`, lets alice revalidate it (she gets the 304's cookie and the stored body), and
/// returns what bob gets next.
async fn alice_then_bob(hoard: &Hoard, origin: &Origin) -> reqwest::Response {
    let client = hoard.client();
    client.get(origin.url("/r")).send().await.unwrap();
    let alice = client.get(origin.url("/r")).send().await.unwrap();
    assert_eq!(alice.headers()["set-cookie"], "sess=alice-secret");
    assert_eq!(alice.text().await.unwrap(), "the page");
    client.get(origin.url("/r")).send().await.unwrap()
}

#[tokio::test]
async fn a_cookie_in_a_304_goes_to_its_client_and_never_into_the_entry() {
    let origin = revalidating_origin(&[("cache-control", "public, max-age=60")]).await;
    let hoard = Hoard::start(&[]).await;
    let bob = alice_then_bob(&hoard, &origin).await;
    assert!(
        bob.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("hit"),
        "{:?}",
        bob.headers()
    );
    assert!(bob.headers().get("set-cookie").is_none(), "alice's cookie");
    assert_eq!(bob.text().await.unwrap(), "the page");
}

#[tokio::test]
async fn a_304_that_makes_the_response_private_refreshes_nothing_for_others() {
    for fields in [
        &[("cache-control", "private, max-age=60")][..],
        &[("cache-control", "no-store")][..],
        // A cookie without explicit shared freshness: not for a shared cache.
        &[("cache-control", "max-age=60")][..],
    ] {
        let origin = revalidating_origin(fields).await;
        let hoard = Hoard::start(&[]).await;
        let bob = alice_then_bob(&hoard, &origin).await;
        assert!(bob.headers().get("set-cookie").is_none(), "{fields:?}");
        let status = bob.headers()["cache-status"].to_str().unwrap().to_owned();
        assert!(!status.contains("hit"), "{fields:?}: {status}");
        assert_eq!(origin.seen().len(), 3, "{fields:?}: bob went to the origin");
    }
}

#[tokio::test]
async fn a_stored_response_with_a_cookie_is_served_without_it() {
    let origin = Origin::with_headers(&[
        ("cache-control", "s-maxage=60"),
        ("set-cookie", "sess=alice-secret"),
        ("set-cookie2", "old=alice"),
    ])
    .await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let alice = client.get(origin.url("/c")).send().await.unwrap();
    assert_eq!(alice.headers()["set-cookie"], "sess=alice-secret");
    let bob = client.get(origin.url("/c")).send().await.unwrap();
    assert!(
        bob.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("hit")
    );
    assert!(bob.headers().get("set-cookie").is_none());
    assert!(bob.headers().get("set-cookie2").is_none());
}

#[tokio::test]
async fn a_get_with_a_body_is_never_cached_and_its_connection_is_not_reused() {
    let app = reflecting_app().await;
    let hoard = Hoard::start(&[]).await;
    let smuggled = format!("GET /secret HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
    let fat = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{smuggled}",
        app.url("/a"),
        app.addr,
        smuggled.len()
    );
    let answer = raw::exchange(hoard.addr, fat.as_bytes()).await;
    assert!(
        answer.contains("hoard; fwd=bypass; detail=request-body"),
        "{answer}"
    );
    assert_eq!(app.last().headers["connection"], "close");

    let client = hoard.client();
    let plain = client.get(app.url("/a")).send().await.unwrap();
    assert!(
        !plain.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("hit"),
        "the fat GET's answer was not stored"
    );
    let seen = app.seen();
    assert_eq!(seen.len(), 2);
    assert_ne!(
        seen[0].connection, seen[1].connection,
        "the connection that carried a body was closed"
    );
    let hit = client.get(app.url("/a")).send().await.unwrap();
    assert!(
        hit.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("hit")
    );

    let strict = Hoard::start(&["--reject-get-body"]).await;
    let refused = raw::exchange(strict.addr, fat.as_bytes()).await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert_eq!(app.seen().len(), 2);
}
