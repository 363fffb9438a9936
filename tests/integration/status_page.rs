//! The status page, `/_hoard/`, as a person sees it in a real browser (Debian's headless
//! Chromium): version, uptime and address, sizes in human units, a chart with axes and a
//! legend, per-site numbers, the effective configuration, and a searchable, paginated list
//! of stored responses whose purge buttons work and follow the admin's cross-site rules;
//! and the gateway's start page, with hoard's real address and the sites this client (and
//! only this client) browsed.

use hoard::body;
use http::Response;

use crate::support::{Hoard, Origin, chromium, fetch, get};

/// An origin of cacheable 3 KiB objects, each naming its path.
async fn origin() -> Origin {
    Origin::start(|request: http::Request<hyper::body::Incoming>| async move {
        let text = format!("{:<3072}", request.uri().path());
        Response::builder()
            .header("cache-control", "max-age=600")
            .body(body::full(text))
            .unwrap()
    })
    .await
}

/// 60 cacheable objects and two hits, through `hoard`.
async fn fill(hoard: &Hoard, origin: &Origin) {
    let client = hoard.client();
    for n in 0..60 {
        fetch(&client, origin.url(&format!("/item/{n:02}"))).await;
    }
    for _ in 0..2 {
        fetch(&client, origin.url("/item/07")).await;
    }
}

/// The text of a DOM element's first row cells, roughly: the `<tr>`s inside `id`.
fn rows<'a>(dom: &'a str, id: &str) -> Vec<&'a str> {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("#{id} in {dom}"));
    let table = &dom[start..dom[start..].find("</table>").unwrap() + start];
    table.split("<tr>").skip(2).collect()
}

#[tokio::test]
async fn the_status_page_shows_numbers_chart_sites_settings_and_stored_responses() {
    let origin = origin().await;
    let hoard = Hoard::start(&["--cache-memory", "8MiB"]).await;
    fill(&hoard, &origin).await;
    let page = format!("http://{}/_hoard/", hoard.addr);
    let (dom, log) = chromium::dump_dom(&page).await;
    assert!(dom.contains("<title>hoard status</title>"), "{dom}\n{log}");
    for expected in [
        format!("version {}", env!("CARGO_PKG_VERSION")),
        format!("listening on {}", hoard.addr),
        " · up ".to_owned(),
        // 62 requests, 60 misses and 2 hits.
        "2 / 60 (3.2% of requests the cache answered)".to_owned(),
        "requests per 10 s (left axis)".to_owned(),
        "hit ratio (right axis)".to_owned(),
        "−30 min".to_owned(),
        ">100%<".to_owned(),
        "60 stored response(s)".to_owned(),
        "page 1 of 2".to_owned(),
        // The settings in effect, as a config file.
        "cache-memory = \"8MiB\"".to_owned(),
    ] {
        assert!(dom.contains(&expected), "{expected:?} in {dom}");
    }
    assert!(
        dom.contains("<th>disk tier</th><td>180.0 KiB in 60 bodies</td>"),
        "sizes in human units: {dom}"
    );
    assert!(dom.contains("<td class=\"num\">3.0 KiB</td>"), "{dom}");
    let objects = rows(&dom, "object-list");
    assert_eq!(objects.len(), hoard::admin::PAGE_SIZE);
    assert!(
        objects[0].contains(&origin.url("/item/00")),
        "{}",
        objects[0]
    );
    assert!(objects[0].contains("purge</button>"));
    // Hits per stored URL: none for /item/00, the two of /item/07 (the hits cell comes
    // right before the tier's).
    assert!(
        objects[0].contains("<td class=\"num\">0</td><td>"),
        "{}",
        objects[0]
    );
    let item_07 = objects
        .iter()
        .find(|row| row.contains("/item/07\""))
        .expect("/item/07 is listed");
    assert!(
        item_07.contains("<td class=\"num\">2</td><td>"),
        "{item_07}"
    );
    let sites = rows(&dom, "hosts");
    let site = origin.addr.to_string();
    assert!(
        sites[0].contains(&format!(">{site}<")) && sites[0].contains(">62<"),
        "{sites:?}"
    );

    // The second page and a search, as the pager's and the form's links make them.
    let (second, _) = chromium::dump_dom(&format!("{page}?page=2")).await;
    assert_eq!(rows(&second, "object-list").len(), 10);
    assert!(second.contains("page 2 of 2") && second.contains("rel=\"prev\""));
    let (found, _) = chromium::dump_dom(&format!("{page}?q=ITEM/0")).await;
    let matching = rows(&found, "object-list");
    assert_eq!(matching.len(), 10, "case-insensitive: /item/00 to /item/09");
    assert!(found.contains("10 stored response(s) matching “ITEM/0”"));
    // A range request answered from the stored response is one more hit, not two.
    let ranged = hoard
        .client()
        .get(origin.url("/item/07"))
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    let (one_more, _) = chromium::dump_dom(&format!("{page}?q=item/07")).await;
    let row = rows(&one_more, "object-list");
    assert!(row[0].contains("<td class=\"num\">3</td><td>"), "{row:?}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium::screenshot(&page, &shot, (1100, 1600)).await;
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real picture"
    );
}

#[tokio::test]
async fn purge_buttons_remove_the_object_and_come_back_to_the_page_but_not_cross_site() {
    let origin = origin().await;
    let hoard = Hoard::start(&[]).await;
    fill(&hoard, &origin).await;
    let target = origin.url("/item/07");
    let action = format!(
        "http://{}/_hoard/purge?{}",
        hoard.addr,
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("url", &target)
            .finish()
    );
    let (dom, _) = chromium::dump_dom(&format!("http://{}/_hoard/?q=item/07", hoard.addr)).await;
    assert!(
        dom.contains(&format!(
            "action=\"{}\"",
            &action[action.find("/_hoard").unwrap()..].replace('&', "&amp;")
        )),
        "the button posts to the purge URL: {dom}"
    );
    // What a browser sends for that form from another site: refused.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let elsewhere = browser
        .post(&action)
        .header("origin", "http://evil.example")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 403);
    // ...and from the status page itself: purged, then back to the page.
    let own = browser
        .post(&action)
        .header("origin", format!("http://{}", hoard.addr))
        .header("accept", "text/html,*/*;q=0.8")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 303);
    assert_eq!(own.headers()["location"], "/_hoard/?purged=1");
    let (after, _) = chromium::dump_dom(&format!("http://{}/_hoard/?purged=1", hoard.addr)).await;
    assert!(after.contains("Purged 1 stored response(s)."), "{after}");
    assert!(after.contains("59 stored response(s)"), "{after}");
    let again = get(&hoard.client(), &target, &[]).await;
    assert!(
        again.cache_status.contains("fwd=uri-miss"),
        "{}",
        again.cache_status
    );
}

#[tokio::test]
async fn the_gateway_start_page_shows_the_real_address_recent_sites_and_the_status_page() {
    let first = origin().await;
    let second = origin().await;
    let hoard = Hoard::start(&[]).await;
    let start = format!("http://{}/", hoard.addr);
    let (dom, log) = chromium::dump_dom(&start).await;
    assert!(
        dom.contains(&format!(
            "<code id=\"proxy-address\">http://{}</code>",
            hoard.addr
        )),
        "{dom}\n{log}"
    );
    assert!(!dom.contains("HOST:PORT") && !dom.contains("Recently browsed"));
    assert!(
        dom.contains("<a href=\"/_hoard/\">Status page</a>"),
        "{dom}"
    );
    // Browse two sites through the gateway, as a person would, then come back.
    for site in [&first, &second] {
        let (page, _) = chromium::dump_dom(&format!("{start}{}/item/1", site.addr)).await;
        assert!(page.contains("/item/1"), "{page}");
    }
    let (dom, _) = chromium::dump_dom(&start).await;
    let recent = rows_of_list(&dom, "recent");
    assert_eq!(
        recent,
        [
            format!("<a href=\"/{0}/\">http://{0}</a>", second.addr),
            format!("<a href=\"/{0}/\">http://{0}</a>", first.addr)
        ],
        "latest first: {dom}"
    );
    // Another client's start page does not show them.
    let other = crate::support::raw::exchange_from(
        "127.0.0.2",
        hoard.addr,
        crate::support::raw::get_request("/", &hoard.addr.to_string(), "").as_bytes(),
    )
    .await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    assert!(!other.contains("Recently browsed"), "{other}");
}

/// The items of the `<ul id=...>` in `dom`.
fn rows_of_list(dom: &str, id: &str) -> Vec<String> {
    let start = dom
        .find(&format!("<ul id=\"{id}\">"))
        .unwrap_or_else(|| panic!("#{id} in {dom}"));
    let list = &dom[start..start + dom[start..].find("</ul>").unwrap()];
    list.split("<li>")
        .skip(1)
        .map(|item| item.trim_end_matches("</li>").to_owned())
        .collect()
}
