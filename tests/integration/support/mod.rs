//! Test harness: real origins (hyper, or raw TCP for misbehaving ones) and a real hoard, all on
//! 127.0.0.1 with ephemeral ports and a temporary cache directory.

pub(crate) mod chromium;
pub(crate) mod fleet;
pub(crate) mod moto;
pub(crate) mod origin;
pub(crate) mod process;
pub(crate) mod proxy;
pub(crate) mod raw;
pub(crate) mod small_disk;
pub(crate) mod tls;

pub(crate) use origin::Origin;
pub(crate) use proxy::Hoard;

/// The text of hoard's admin page `path` (`metrics`, `stats`) at `addr`.
async fn admin_page(addr: std::net::SocketAddr, path: &str) -> String {
    reqwest::get(format!("http://{addr}/_hoard/{path}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of a metric without labels, from hoard's `/_hoard/metrics` at `addr`.
pub(crate) async fn metric(addr: std::net::SocketAddr, name: &str) -> u64 {
    let metrics = admin_page(addr, "metrics").await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {metrics}"))
}

/// hoard's `/_hoard/stats` at `addr`, parsed.
pub(crate) async fn stats(addr: std::net::SocketAddr) -> serde_json::Value {
    serde_json::from_str(&admin_page(addr, "stats").await).unwrap()
}

/// What a GET through hoard returned, with `Cache-Status` picked out.
pub(crate) struct Got {
    pub(crate) status: u16,
    pub(crate) cache_status: String,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: String,
}

/// GETs `url` with `client`, sending `headers`: the one response helper of these tests.
pub(crate) async fn get(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    Got {
        status: response.status().as_u16(),
        cache_status: response
            .headers()
            .get("cache-status")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

/// GETs `url` with `client` until the cache no longer has it (a purge or invalidation that
/// reaches it in the background), failing after 5 s.
pub(crate) async fn until_missed(client: &reqwest::Client, url: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let got = get(client, url, &[]).await;
        if got.cache_status.contains("fwd=uri-miss") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {}",
            got.cache_status
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// For a table of header sets served by `Origin::per_path`: GETs each `/N` twice through
/// `hoard` and checks that the second is a hit exactly when `expected[N]` says so.
pub(crate) async fn second_gets_are_hits(
    hoard: &Hoard,
    cases: &'static [&'static [(&'static str, &'static str)]],
    expected: &[bool],
) {
    let origin = Origin::per_path(cases).await;
    let client = hoard.client();
    for (index, expect_hit) in expected.iter().enumerate() {
        let url = origin.url(&format!("/{index}"));
        get(&client, &url, &[]).await;
        let second = get(&client, &url, &[]).await;
        assert_eq!(
            second.cache_status.contains("; hit"),
            *expect_hit,
            "{:?}: {}",
            cases[index],
            second.cache_status
        );
    }
}

/// A reqwest client that uses the hoard at `proxy` as its HTTP proxy.
pub(crate) fn client_through(proxy: std::net::SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{proxy}")).unwrap())
        .build()
        .unwrap()
}

/// GETs `url` with `client` and returns the body (any status).
pub(crate) async fn fetch(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// Flips every byte of each stored copy of `body` in cache directory `dir` (same length), as a
/// bad disk would: in its body file, or where it is packed inside `index.redb`. Returns how
/// many copies were damaged.
pub(crate) fn damage_stored_body(dir: &std::path::Path, body: &[u8]) -> usize {
    let mut damaged = 0;
    let mut places = stored_bodies(dir);
    places.push(dir.join("index.redb"));
    for path in places {
        let mut bytes = std::fs::read(&path).unwrap();
        let mut found = false;
        let mut at = 0;
        while let Some(offset) = bytes[at..].windows(body.len()).position(|w| w == body) {
            let start = at + offset;
            for b in &mut bytes[start..start + body.len()] {
                *b ^= 0xff;
            }
            damaged += 1;
            found = true;
            at = start + body.len();
        }
        if found {
            std::fs::write(&path, bytes).unwrap();
        }
    }
    damaged
}

/// The body files stored in cache directory `dir`, sorted (the disk tier's layout,
/// `objects/XX/ID`, known only here).
pub(crate) fn stored_bodies(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut bodies = Vec::new();
    for shard in std::fs::read_dir(dir.join("objects")).unwrap() {
        let shard = shard.unwrap().path();
        if shard.is_dir() {
            for file in std::fs::read_dir(shard).unwrap() {
                bodies.push(file.unwrap().path());
            }
        }
    }
    bodies.sort();
    bodies
}
