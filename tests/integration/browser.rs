//! A real browser (Debian's headless Chromium) browsing a local site through the gateway:
//! images, favicon, stylesheet, redirects and a second site must all work, checked from the
//! browser's DOM and from what each origin received.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use hoard::body;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::support::{Hoard, Origin, chromium};

/// A 1×1 PNG.
const PNG: &[u8] = &[
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 1, 0, 0, 0, 1, 8, 4, 0,
    0, 0, 181, 28, 12, 2, 0, 0, 0, 11, 73, 68, 65, 84, 120, 218, 99, 100, 96, 0, 0, 0, 6, 0, 2, 48,
    129, 208, 47, 0, 0, 0, 0, 73, 69, 78, 68, 174, 66, 96, 130,
];

fn png() -> Response<hoard::body::ProxyBody> {
    Response::builder()
        .header("content-type", "image/png")
        .header("cache-control", "max-age=60")
        .body(body::full(PNG))
        .unwrap()
}

/// The test page. Once everything has loaded, its script writes into `#result` how many
/// images there are and which did not render.
fn page(site1: SocketAddr, site2: SocketAddr) -> String {
    format!(
        r#"<!doctype html><html><head><title>gateway test</title>
<link rel="icon" href="/favicon.ico">
<link rel="stylesheet" href="/style.css">
<style>.block {{ width: 4px; height: 4px; background: url(http://{site1}/style-block.png) }}</style>
</head><body>
<img id="relative" src="rel.png">
<img id="root-relative" src="/root.png">
<img id="absolute" src="http://{site1}/abs.png">
<img id="second-site" src="http://{site2}/second.png">
<img id="redirected" src="/redirect.png">
<img id="favicon-as-image" src="/favicon.ico">
<div class="from-stylesheet" style="width:4px;height:4px"></div>
<div class="block"></div>
<div style="width:4px;height:4px;background:url('http://{site1}/inline-style.png')"></div>
<a id="link" href="http://{site2}/elsewhere.html">second site</a>
<pre id="result">pending</pre>
<script>
window.addEventListener('load', () => {{
  const images = [...document.images];
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.id);
  document.getElementById('result').textContent =
    'images=' + images.length + ' broken=[' + broken.join(',') + '] link=' + document.getElementById('link').getAttribute('href');
}});
</script>
</body></html>"#
    )
}

#[tokio::test]
async fn chromium_browses_a_site_through_the_gateway() {
    let site2 = Origin::start(|_| async { png() }).await;
    let site1_addr = Arc::new(OnceLock::<SocketAddr>::new());
    let site1 = {
        let site1_addr = site1_addr.clone();
        let site2_addr = site2.addr;
        Origin::start(move |request: Request<Incoming>| {
            let me = *site1_addr.get().unwrap();
            async move {
                match request.uri().path() {
                    "/start" => Response::builder()
                        .status(StatusCode::MOVED_PERMANENTLY)
                        .header("location", format!("http://{me}/dir/page.html"))
                        .body(body::empty())
                        .unwrap(),
                    "/dir/page.html" => Response::builder()
                        .header("content-type", "text/html; charset=utf-8")
                        .body(body::full(page(me, site2_addr)))
                        .unwrap(),
                    "/style.css" => Response::builder()
                        .header("content-type", "text/css")
                        .body(body::full(".from-stylesheet { background: url(/bg.png) }"))
                        .unwrap(),
                    "/redirect.png" => Response::builder()
                        .status(StatusCode::FOUND)
                        .header("location", "/real.png")
                        .body(body::empty())
                        .unwrap(),
                    _ => png(),
                }
            }
        })
        .await
    };
    site1_addr.set(site1.addr).unwrap();
    let hoard = Hoard::start(&[]).await;

    let start = format!("http://{}/{}/start", hoard.addr, site1.addr);
    let (dom, stderr) = chromium::dump_dom(&start).await;
    let link = format!("/{}/elsewhere.html", site2.addr);
    let expected = format!("images=6 broken=[] link={link}");
    assert!(
        dom.contains(&expected),
        "want {expected:?} in the DOM:\n{dom}\nstderr:\n{stderr}"
    );

    eprintln!(
        "{}",
        dom.lines()
            .find(|l| l.contains("images="))
            .unwrap_or_default()
    );
    // Every resource reached the right origin, through hoard.
    let seen1: Vec<String> = site1
        .seen()
        .iter()
        .map(|s| s.uri.path().to_owned())
        .collect();
    for path in [
        "/start",
        "/dir/page.html",
        "/dir/rel.png",
        "/root.png",
        "/abs.png",
        "/redirect.png",
        "/real.png",
        "/favicon.ico",
        "/style.css",
        "/bg.png",
        "/style-block.png",
        "/inline-style.png",
    ] {
        assert!(
            seen1.contains(&path.to_owned()),
            "site 1 never got {path}: {seen1:?}"
        );
    }
    let seen2: Vec<String> = site2
        .seen()
        .iter()
        .map(|s| s.uri.path().to_owned())
        .collect();
    assert_eq!(seen2, vec!["/second.png"], "site 2 got only its image");
    for seen in site1.seen().iter().chain(site2.seen().iter()) {
        assert!(
            seen.headers.contains_key("via"),
            "{} bypassed hoard",
            seen.uri
        );
    }
}
