//! Vary (RFC 9111 §4.1): content-negotiation fields compared by the preference they express,
//! other fields by their exact value.

use hoard::body;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::support::{Hoard, Origin, get};

#[tokio::test]
async fn negotiation_fields_match_by_preference_not_by_spelling() {
    let origin = Origin::start(|request: Request<Incoming>| async move {
        let language = request
            .headers()
            .get("accept-language")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Response::builder()
            .header("cache-control", "max-age=600")
            .header("vary", "Accept-Language, Accept-Encoding")
            .body(body::full(format!("for {language}")))
            .unwrap()
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let url = origin.url("/page");
    let ask = |language: &'static str, encoding: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            get(
                &client,
                &url,
                &[("accept-language", language), ("accept-encoding", encoding)],
            )
            .await
        }
    };
    let first = ask("en, fr", "gzip, br").await;
    assert!(
        first.cache_status.contains("fwd=uri-miss"),
        "{}",
        first.cache_status
    );
    for (language, encoding) in [
        ("fr;q=0.9, en", "gzip;q=1.0, br"),
        ("EN , FR", "GZIP,br;q=1"),
    ] {
        let same = ask(language, encoding).await;
        assert!(
            same.cache_status.contains("; hit") && same.body == "for en, fr",
            "{language} / {encoding}: {}",
            same.cache_status
        );
    }
    let other = ask("fr, en", "gzip, br").await;
    assert!(
        other.cache_status.contains("fwd=vary-miss"),
        "{}",
        other.cache_status
    );
}
