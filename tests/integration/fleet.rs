//! A fleet of three (and four) real hoard processes on 127.0.0.2-.5 in front of one real
//! origin: every URL is fetched once however many nodes are asked, concurrent misses on
//! every node make one origin request, a node killed with -9 costs at most its own share
//! of the keys, a fourth node takes about a quarter of them (the ones the hash computed
//! here gives it), purges apply fleet-wide, and a client cannot pose as a member.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hoard::body;
use http::Response;

use crate::support::fleet::Fleet;
use crate::support::{Origin, get, until_missed};

const OBJECTS: usize = 60;

/// An origin whose objects are fresh for an hour, each body naming its path.
async fn origin() -> Origin {
    Origin::start(|request: http::Request<hyper::body::Incoming>| async move {
        let text = format!("object {}", request.uri().path());
        Response::builder()
            .header("cache-control", "max-age=3600")
            .header("etag", "\"v1\"")
            .body(body::full(text))
            .unwrap()
    })
    .await
}

fn object(origin: &Origin, n: usize) -> String {
    origin.url(&format!("/object/{n}"))
}

/// GETs every object through every node in `nodes`, checking each body; returns, per
/// object, the node that answered as owner (from the first `Cache-Status` entry).
async fn get_all_through(fleet: &Fleet, origin: &Origin, nodes: &[usize]) -> Vec<usize> {
    let mut owners = Vec::new();
    for n in 0..OBJECTS {
        let url = object(origin, n);
        let mut answered = Vec::new();
        for &i in nodes {
            let got = get(&fleet.client(i), &url, &[]).await;
            assert_eq!(got.status, 200, "{url} via node {i}");
            assert_eq!(got.body, format!("object /object/{n}"));
            answered.push(fleet.answered_by(&got.cache_status));
        }
        answered.dedup();
        assert_eq!(answered.len(), 1, "{url}: answered by {answered:?}");
        owners.push(answered[0]);
    }
    owners
}

#[tokio::test]
async fn each_object_is_fetched_once_whichever_nodes_are_asked() {
    let fleet = Fleet::start(3, &[]).await;
    let origin = origin().await;
    let owners = get_all_through(&fleet, &origin, &[0, 1, 2]).await;
    assert_eq!(origin.seen().len(), OBJECTS, "one origin fetch per object");
    for (n, owner) in owners.iter().enumerate() {
        assert_eq!(*owner, fleet.owner(3, &object(&origin, n)), "object {n}");
    }
    for i in 0..3 {
        assert!(
            owners.contains(&i),
            "node {i} owns none of {OBJECTS}: {owners:?}"
        );
    }
    // Through a node that is not the owner: the owner's entry, then this node's own.
    let url = object(&origin, 0);
    let other = (owners[0] + 1) % 3;
    let response = fleet.client(other).get(&url).send().await.unwrap();
    let entries: Vec<&str> = response
        .headers()
        .get_all("cache-status")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries[0].contains("; hit"), "{entries:?}");
    assert!(
        entries[1].starts_with(&format!(
            "hoard/{}:{}; fwd=bypass; fwd-status=200",
            Fleet::ip(other),
            fleet.port
        )),
        "{entries:?}"
    );
    assert_eq!(origin.seen().len(), OBJECTS);
    // The owner was reached with the hop marker and answered it from its own cache; it
    // never sent that marker (nor any fleet header) to the origin.
    assert!(
        origin
            .seen()
            .iter()
            .all(|seen| !seen.headers.contains_key("cdn-loop"))
    );
}

#[tokio::test]
async fn concurrent_misses_on_every_node_make_one_origin_fetch() {
    let fleet = Fleet::start(3, &[]).await;
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let origin = Origin::start(move |_| {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            Response::builder()
                .header("cache-control", "max-age=3600")
                .body(body::full("slow object"))
                .unwrap()
        }
    })
    .await;
    let url = origin.url("/slow");
    let requests = (0..30).map(|i| {
        let client = fleet.client(i % 3);
        let url = url.clone();
        async move { get(&client, &url, &[]).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    for got in &answers {
        assert_eq!((got.status, got.body.as_str()), (200, "slow object"));
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "30 misses on 3 nodes, one origin fetch"
    );
}

#[tokio::test]
async fn a_killed_node_costs_at_most_its_own_share_of_the_keys() {
    let mut fleet = Fleet::start(3, &[]).await;
    let origin = origin().await;
    let owners = get_all_through(&fleet, &origin, &[0, 1, 2]).await;
    let owned_by_killed = owners.iter().filter(|o| **o == 0).count();
    fleet.kill(0);
    // At once, before any probe has noticed: no client request fails.
    for n in 0..OBJECTS {
        for i in [1, 2] {
            let got = get(&fleet.client(i), &object(&origin, n), &[]).await;
            assert_eq!((got.status, got.body), (200, format!("object /object/{n}")));
        }
    }
    let refetched = origin.seen().len() - OBJECTS;
    eprintln!("kill -9: node 0 owned {owned_by_killed} of {OBJECTS}; {refetched} fetched again");
    assert_eq!(
        refetched, owned_by_killed,
        "the killed node's {owned_by_killed} keys were fetched again, once each, by their next candidate"
    );
}

#[tokio::test]
async fn a_fourth_node_takes_about_a_quarter_of_the_keys_and_only_those() {
    let mut fleet = Fleet::start(3, &[]).await;
    let origin = origin().await;
    let before = get_all_through(&fleet, &origin, &[0, 1, 2]).await;
    // The new list: SIGHUP the three, start the fourth.
    fleet.write_members(4);
    for i in 0..3 {
        fleet.node(i).signal("HUP");
    }
    fleet.start_node(3, true).await;
    fleet.wait_until_up(4).await;
    let after = get_all_through(&fleet, &origin, &[0, 1, 2, 3]).await;
    let mut moved = 0;
    for n in 0..OBJECTS {
        let url = object(&origin, n);
        assert_eq!(after[n], fleet.owner(4, &url), "object {n} after");
        if before[n] != after[n] {
            assert_eq!(after[n], 3, "object {n} moved between two old nodes");
            moved += 1;
        }
    }
    eprintln!("add a fourth node: {moved} of {OBJECTS} keys moved, all to it");
    // 60 keys: a quarter is 15; the offline hash decides exactly which.
    assert!((6..=25).contains(&moved), "{moved} of {OBJECTS} keys moved");
    assert_eq!(
        origin.seen().len(),
        OBJECTS + moved,
        "the new node fetched its keys once each"
    );
}

#[tokio::test]
async fn purges_and_unsafe_methods_reach_the_owner() {
    let fleet = Fleet::start(3, &[]).await;
    let origin = origin().await;
    let url = object(&origin, 1);
    let owner = fleet.owner(3, &url);
    let other = (owner + 1) % 3;
    get(&fleet.client(other), &url, &[]).await;
    // A purge given to a node that does not own the URL.
    let purge = reqwest::Client::new()
        .post(format!(
            "http://{}/_hoard/purge?url={}",
            fleet.node(other).addr,
            url::form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 200);
    let report = purge.text().await.unwrap();
    assert!(report.contains("\"purged\""), "{report}");
    let again = get(&fleet.client(other), &url, &[]).await;
    assert!(
        again.cache_status.contains("fwd=uri-miss"),
        "{}",
        again.cache_status
    );
    assert_eq!(origin.seen().len(), 2);
    // A POST through another node goes straight to the origin, and the owner forgets.
    let post = fleet
        .client(other)
        .post(&url)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    until_missed(&fleet.client(owner), &url).await;
}

#[tokio::test]
async fn a_client_cannot_pose_as_a_member() {
    let htpasswd = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        htpasswd.path(),
        format!("alice:{}\n", bcrypt::hash("s3cret", 4).unwrap()),
    )
    .unwrap();
    let fleet = Fleet::start(3, &["--auth-file", htpasswd.path().to_str().unwrap()]).await;
    let origin = origin().await;
    let url = object(&origin, 2);
    let other = (fleet.owner(3, &url) + 1) % 3;
    // The test client connects from 127.0.0.1, no member's address: the hop marker does
    // not take it past authentication...
    let posing = get(
        &fleet.client(other),
        &url,
        &[("cdn-loop", "hoard-fleet; client=local")],
    )
    .await;
    assert_eq!(posing.status, 407);
    // ...while a client with credentials is served through the owner, which trusts the
    // member that sent the request on (by its address) without asking it for them.
    let alice = [("proxy-authorization", "Basic YWxpY2U6czNjcmV0")];
    let served = get(&fleet.client(other), &url, &alice).await;
    assert_eq!(served.status, 200);
    assert_eq!(
        fleet.answered_by(&served.cache_status),
        fleet.owner(3, &url)
    );
    // The marker a client sends is removed, not obeyed: the request is routed like any
    // other, and no node carries it on (where another member would trust it).
    let marked = [alice[0], ("cdn-loop", "hoard-fleet; client=local")];
    let routed = get(&fleet.client(other), &object(&origin, 4), &marked).await;
    assert_eq!(
        fleet.answered_by(&routed.cache_status),
        fleet.owner(3, &object(&origin, 4))
    );
    assert!(
        origin
            .seen()
            .iter()
            .all(|seen| !seen.headers.contains_key("cdn-loop"))
    );
    // The fleet endpoints answer members only.
    let health = reqwest::Client::new()
        .get(format!("http://{}/_hoard/fleet/health", fleet.node(0).addr))
        .header("cdn-loop", "hoard-fleet")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 404);
}

#[tokio::test]
async fn a_non_owner_keeps_very_hot_objects_briefly_only_when_asked_to() {
    let origin = origin().await;
    let url = object(&origin, 3);
    let last_entry = |got: &crate::support::Got| {
        got.headers
            .get_all("cache-status")
            .iter()
            .next_back()
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    // By default a non-owner keeps nothing, however hot.
    let fleet = Fleet::start(3, &[]).await;
    let other = (fleet.owner(3, &url) + 1) % 3;
    for _ in 0..20 {
        let got = get(&fleet.client(other), &url, &[]).await;
        assert!(
            last_entry(&got).contains("detail=peer"),
            "{}",
            last_entry(&got)
        );
    }
    drop(fleet);

    let fleet = Fleet::start(3, &["--peer-hot-copy", "30s"]).await;
    let other = (fleet.owner(3, &url) + 1) % 3;
    let mut kept_after = None;
    for n in 1..=20 {
        let got = get(&fleet.client(other), &url, &[]).await;
        assert_eq!(got.body, "object /object/3");
        if last_entry(&got).contains("detail=hot-copy") {
            kept_after.get_or_insert(n);
        }
    }
    // Hot after 8 requests within one second (a second's boundary may fall among them):
    // the 9th is served from the copy, or a few later.
    let kept_after = kept_after.expect("never served from a hot copy");
    assert!(
        (9..=17).contains(&kept_after),
        "first from the copy: request {kept_after}"
    );
    // A request with its own directives goes to the owner.
    let fresh = get(
        &fleet.client(other),
        &url,
        &[("cache-control", "max-age=0")],
    )
    .await;
    assert!(
        last_entry(&fresh).contains("detail=peer"),
        "{}",
        last_entry(&fresh)
    );
    // A purge given to any node drops the copies.
    let purge = reqwest::Client::new()
        .post(format!(
            "http://{}/_hoard/purge?url={}",
            fleet.node(fleet.owner(3, &url)).addr,
            url::form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 200);
    let after = get(&fleet.client(other), &url, &[]).await;
    assert!(
        last_entry(&after).contains("detail=peer"),
        "{}",
        last_entry(&after)
    );
    assert!(
        after.cache_status.contains("fwd=uri-miss"),
        "{}",
        after.cache_status
    );
}

#[tokio::test]
async fn dns_members_are_resolved_and_this_node_finds_itself_among_them() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let peers = format!("dns:localhost:{port}");
    let node = crate::support::process::Process::start_on_port(
        dir.path(),
        port,
        &["--peers", &peers, "--access-log", "none"],
        &[],
    );
    let stats = crate::support::stats(node.addr).await;
    let text = stats.to_string();
    let members = stats["fleet"].as_array().unwrap();
    let me = members
        .iter()
        .find(|m| m["name"] == format!("http://127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("localhost's address is a member: {text}"));
    assert_eq!(me["this_node"], true, "{text}");
    // Every other address localhost has (::1) is a member too, and nobody listens there.
    assert!(
        members.iter().filter(|m| m["this_node"] == true).count() == 1,
        "{text}"
    );
}

#[tokio::test]
async fn with_a_fleet_key_a_node_without_it_is_no_member() {
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), "fleet-secret\n").unwrap();
    let wrong = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(wrong.path(), "another-secret\n").unwrap();
    let key_flags = |file: &tempfile::NamedTempFile| {
        vec![
            "--fleet-key-file".to_owned(),
            file.path().to_str().unwrap().to_owned(),
        ]
    };
    let fleet = Fleet::start_each(
        3,
        &[],
        vec![key_flags(&key), key_flags(&key), key_flags(&wrong)],
        Vec::new(),
    )
    .await;
    let origin = origin().await;
    // A URL node 0 owns, asked of node 1 (same key) and of node 2 (wrong key).
    let url = (0..)
        .map(|n| object(&origin, n))
        .find(|url| fleet.owner(3, url) == 0)
        .unwrap();
    let good = get(&fleet.client(1), &url, &[]).await;
    assert_eq!(
        fleet.answered_by(&good.cache_status),
        0,
        "{}",
        good.cache_status
    );
    // Node 0 does not take node 2's requests for a member's: node 2 serves it itself, and
    // its client never sees node 0's refusal.
    let refused = get(&fleet.client(2), &url, &[]).await;
    assert_eq!(refused.status, 200);
    assert_eq!(
        fleet.answered_by(&refused.cache_status),
        2,
        "{}",
        refused.cache_status
    );
    // Its probes are refused too: node 2 marks the members with the other key down.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = crate::support::stats(fleet.node(2).addr).await;
        let members = stats["fleet"].as_array().unwrap().clone();
        let down = members.iter().filter(|m| m["up"] == false).count();
        if down == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The key never leaves the fleet.
    assert!(
        origin
            .seen()
            .iter()
            .all(|seen| !seen.headers.contains_key("hoard-fleet-key"))
    );
}
