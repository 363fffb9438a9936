//! Cache groups (RFC 9875, and Fastly's `Surrogate-Key`): purged by the origin's
//! `Cache-Group-Invalidation` (its own origin only), by the admin (one origin or all) and
//! by the offline tool.

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::support::process::cache_tool;
use crate::support::{Hoard, Origin, get, until_missed};

/// An origin whose `/pN` responses are fresh for ten minutes and in the groups the path's
/// table names; a POST to `/update` invalidates the group `product-1`.
async fn grouped_origin(ip: &str) -> Origin {
    Origin::start_on(ip, |request: Request<Incoming>| async move {
        let mut response = Response::builder().header("cache-control", "max-age=600");
        if request.method() == Method::POST {
            response = response.header("cache-group-invalidation", "\"product-1\"");
        }
        response = match request.uri().path() {
            "/p1" => response.header("cache-groups", "\"product-1\", \"all\""),
            "/p2" => response.header("surrogate-key", "product-2 all"),
            _ => response,
        };
        response
            .body(hoard::body::full(request.uri().path().to_owned()))
            .unwrap()
    })
    .await
}

async fn is_hit(hoard: &Hoard, url: &str) -> bool {
    let got = get(&hoard.client(), url, &[]).await;
    // Give a miss's fill time to be published before the next look.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    got.cache_status.contains("; hit")
}

async fn admin_purge(hoard: &Hoard, query: &str) -> String {
    reqwest::Client::new()
        .post(format!("http://{}/_hoard/purge?{query}", hoard.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn groups_are_purged_by_the_origin_the_admin_and_the_offline_tool() {
    let here = grouped_origin("127.0.0.1").await;
    let elsewhere = grouped_origin("127.0.0.2").await;
    let dir = tempfile::tempdir().unwrap();
    let hoard = Hoard::start_in(dir.path(), &[]).await;
    let urls = [here.url("/p1"), here.url("/p2"), elsewhere.url("/p1")];
    for url in &urls {
        is_hit(&hoard, url).await;
        assert!(is_hit(&hoard, url).await, "{url} stored");
    }

    // The origin invalidates `product-1`: its own /p1 goes, another origin's stays.
    let posted = hoard
        .client()
        .post(here.url("/update"))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !is_hit(&hoard, &urls[0]).await,
        "product-1 of this origin invalidated"
    );
    assert!(is_hit(&hoard, &urls[1]).await, "another group stays");
    assert!(
        is_hit(&hoard, &urls[2]).await,
        "another origin's product-1 stays"
    );

    // The admin purges `all` of one origin (a Surrogate-Key counts), then of every origin.
    let origin = format!("http://{}", here.addr);
    assert_eq!(
        admin_purge(&hoard, &format!("group=all&origin={origin}")).await,
        r#"{"purged":2}"#
    );
    assert!(!is_hit(&hoard, &urls[1]).await);
    assert!(is_hit(&hoard, &urls[2]).await);
    assert_eq!(admin_purge(&hoard, "group=all").await, r#"{"purged":2}"#);
    assert!(!is_hit(&hoard, &urls[2]).await);

    // Offline, with hoard stopped (/p2 and the other origin's /p1 stored again).
    is_hit(&hoard, &urls[1]).await;
    hoard.shutdown().await;
    let (ok, out) = cache_tool(dir.path(), &["purge", "--group", "product-2"]);
    assert!(ok && out.contains("purged 1"), "{out}");
    let (ok, listing) = cache_tool(dir.path(), &["ls"]);
    assert!(ok, "{listing}");
    assert!(!listing.contains("/p2"), "{listing}");
    assert!(listing.contains("/p1"), "{listing}");
}

#[tokio::test]
async fn a_group_purge_and_an_invalidation_reach_every_member_of_a_fleet() {
    let fleet = crate::support::fleet::Fleet::start(3, &[]).await;
    let origin = grouped_origin("127.0.0.1").await;
    let (p1, p2) = (origin.url("/p1"), origin.url("/p2"));
    let stored = |url: String, node: usize| {
        let client = fleet.client(node);
        async move {
            let first = get(&client, &url, &[]).await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            (first, get(&client, &url, &[]).await.cache_status)
        }
    };
    for url in [&p1, &p2] {
        let (_, second) = stored(url.clone(), 0).await;
        assert!(second.contains("; hit"), "{second}");
    }
    // Whichever members own them, a group purge given to one node reaches them all.
    let purge = reqwest::Client::new()
        .post(format!(
            "http://{}/_hoard/purge?group=all",
            fleet.node(1).addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 200, "{}", purge.text().await.unwrap());
    for url in [&p1, &p2] {
        let got = get(&fleet.client(2), url, &[]).await;
        assert!(
            got.cache_status.contains("fwd=uri-miss"),
            "{}",
            got.cache_status
        );
    }
    // An invalidation seen by one node reaches the owner of each response in the group.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let post = fleet
        .client(2)
        .post(origin.url("/update"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    until_missed(&fleet.client(0), &p1).await;
}
