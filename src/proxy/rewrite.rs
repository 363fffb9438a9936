//! Gateway responses rewritten so the browser stays inside the gateway: redirect `Location`s,
//! `Set-Cookie` scopes, and absolute URLs in HTML (attributes, `srcset`, meta refresh, CSS
//! `url()` in `<style>` and `style=`), streamed through lol_html chunk by chunk, after undoing
//! gzip or brotli. Pages built by JavaScript are out of reach by design.

use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http::Response;
use http::header::{self, HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::Frame;
use lol_html::html_content::ContentType;
use lol_html::send::{HtmlRewriter, Settings};
use lol_html::{element, text};
use tokio_util::io::{ReaderStream, StreamReader};

use super::gateway::to_gateway_path;
use crate::body::{self, BoxError, ProxyBody};

/// Rewrites a gateway response for a page fetched from `page_url`.
/// Everything a page normally does, except keep hoard's origin (no `allow-same-origin`).
pub(super) const GATEWAY_SANDBOX: &str = "sandbox allow-scripts allow-forms allow-popups \
     allow-popups-to-escape-sandbox allow-modals allow-downloads \
     allow-top-navigation-by-user-activation allow-pointer-lock allow-presentation";

pub(super) fn gateway_response(
    response: Response<ProxyBody>,
    page_url: &url::Url,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    rewrite_location(&mut parts.headers, page_url);
    rewrite_cookies(&mut parts.headers, page_url);
    // Every site browsed through the gateway shares hoard's origin (and with it the admin
    // interface's): sandboxed, a page gets an opaque origin of its own, so its scripts can
    // neither read another site's pages nor `/_hoard/`, and what they send says `Origin: null`.
    parts.headers.append(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(GATEWAY_SANDBOX),
    );
    let is_html = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            let t = t.trim_start().to_ascii_lowercase();
            t.starts_with("text/html") || t.starts_with("application/xhtml+xml")
        });
    let encoding = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let decodable = matches!(
        encoding.as_deref(),
        None | Some("identity" | "gzip" | "x-gzip" | "br")
    );
    if !is_html || !decodable || parts.status.as_u16() == 304 {
        return Response::from_parts(parts, body);
    }
    // The body's length and encoding change.
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    let data = body.into_data_stream().map_err(io::Error::other);
    let decoded: std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>> =
        match encoding.as_deref() {
            Some("gzip" | "x-gzip") => Box::pin(ReaderStream::new(
                async_compression::tokio::bufread::GzipDecoder::new(StreamReader::new(data)),
            )),
            Some("br") => Box::pin(ReaderStream::new(
                async_compression::tokio::bufread::BrotliDecoder::new(StreamReader::new(data)),
            )),
            _ => Box::pin(data),
        };
    let rewritten = rewrite_html(decoded, page_url.clone());
    Response::from_parts(
        parts,
        body::stream(http_body_util::StreamBody::new(
            rewritten.map_ok(Frame::data),
        )),
    )
}

/// §15.4: a redirect to an absolute or relative URL becomes a gateway path.
fn rewrite_location(headers: &mut HeaderMap, page_url: &url::Url) {
    let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let Ok(target) = page_url.join(location) else {
        return;
    };
    if let Some(path) = to_gateway_path(target.as_str(), page_url.scheme())
        && let Ok(value) = HeaderValue::from_str(&path)
    {
        headers.insert(header::LOCATION, value);
    }
}

/// `url` as a gateway path: absolute and scheme-relative URLs name their site, and a
/// root-relative one (`/`, `/about`) is the page's own site, which the browser would
/// otherwise resolve against hoard (`href="/"` landing on hoard's start page).
fn gatewayed(url: &str, page: &url::Url) -> Option<String> {
    let url = url.trim();
    if url.starts_with('/') && !url.starts_with("//") {
        return to_gateway_path(page.join(url).ok()?.as_str(), page.scheme());
    }
    to_gateway_path(url, page.scheme())
}

/// Cookies are scoped to the site's gateway prefix: `Domain` is dropped (the browser talks to
/// hoard's host) and `Path` is moved under the prefix.
fn rewrite_cookies(headers: &mut HeaderMap, page_url: &url::Url) {
    let Some(prefix) = to_gateway_path(&page_url[..url::Position::BeforePath], page_url.scheme())
    else {
        return;
    };
    let prefix = prefix.trim_end_matches('/').to_owned();
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    if cookies.is_empty() {
        return;
    }
    headers.remove(header::SET_COOKIE);
    for cookie in cookies {
        let Ok(text) = cookie.to_str() else {
            headers.append(header::SET_COOKIE, cookie);
            continue;
        };
        let mut out: Vec<String> = Vec::new();
        let mut has_path = false;
        for (i, part) in text.split(';').enumerate() {
            let trimmed = part.trim();
            let name = trimmed
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if i > 0 && name == "domain" {
                continue;
            }
            if i > 0 && name == "path" {
                has_path = true;
                let path = trimmed.split_once('=').map_or("/", |(_, p)| p.trim());
                out.push(format!("Path={prefix}{path}"));
                continue;
            }
            out.push(trimmed.to_owned());
        }
        if !has_path {
            out.push(format!("Path={prefix}/"));
        }
        if let Ok(value) = HeaderValue::from_str(&out.join("; ")) {
            headers.append(header::SET_COOKIE, value);
        }
    }
}

/// Streams HTML through lol_html with handlers that move absolute URLs into the gateway.
fn rewrite_html(
    input: std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>,
    page: url::Url,
) -> impl Stream<Item = Result<Bytes, BoxError>> + Send {
    let output = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = Arc::clone(&output);
    let rewriter = new_rewriter(page, move |chunk: &[u8]| {
        sink.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(chunk);
    });
    let take = move |output: &Arc<Mutex<Vec<u8>>>| {
        Bytes::from(std::mem::take(
            &mut *output.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    };
    futures_util::stream::unfold(
        (input, Some(rewriter), output),
        move |(mut input, mut rewriter, output)| async move {
            loop {
                let active = rewriter.as_mut()?;
                match input.next().await {
                    Some(Ok(chunk)) => {
                        if let Err(e) = active.write(&chunk) {
                            return Some((
                                Err(BoxError::from(e.to_string())),
                                (input, None, output),
                            ));
                        }
                        let produced = take(&output);
                        if !produced.is_empty() {
                            return Some((Ok(produced), (input, rewriter, output)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(BoxError::from(e)), (input, None, output))),
                    None => {
                        let finished = rewriter.take().map(HtmlRewriter::end);
                        if let Some(Err(e)) = finished {
                            return Some((
                                Err(BoxError::from(e.to_string())),
                                (input, None, output),
                            ));
                        }
                        let produced = take(&output);
                        return (!produced.is_empty())
                            .then_some((Ok(produced), (input, None, output)));
                    }
                }
            }
        },
    )
}

fn new_rewriter<'h, O: lol_html::OutputSink + Send + 'h>(
    page: url::Url,
    sink: O,
) -> HtmlRewriter<'h, O> {
    let url_attr = |attr: &'static str, page: url::Url| {
        element!(format!("[{attr}]"), move |el| {
            if let Some(value) = el.get_attribute(attr)
                && let Some(rewritten) = gatewayed(&value, &page)
            {
                el.set_attribute(attr, &rewritten)?;
            }
            Ok(())
        })
    };
    let srcset_page = page.clone();
    let style_page = page.clone();
    let refresh_page = page.clone();
    let css_page = page.clone();
    let mut style_text = String::new();
    let handlers = vec![
        url_attr("href", page.clone()),
        url_attr("src", page.clone()),
        url_attr("action", page.clone()),
        url_attr("poster", page.clone()),
        element!("[srcset]", move |el| {
            if let Some(value) = el.get_attribute("srcset") {
                el.set_attribute("srcset", &rewrite_srcset(&value, &srcset_page))?;
            }
            Ok(())
        }),
        element!("[style]", move |el| {
            if let Some(value) = el.get_attribute("style") {
                el.set_attribute("style", &rewrite_css(&value, &style_page))?;
            }
            Ok(())
        }),
        element!("meta[http-equiv]", move |el| {
            let refresh = el
                .get_attribute("http-equiv")
                .is_some_and(|v| v.eq_ignore_ascii_case("refresh"));
            if let (true, Some(content)) = (refresh, el.get_attribute("content")) {
                el.set_attribute("content", &rewrite_refresh(&content, &refresh_page))?;
            }
            Ok(())
        }),
        // A stylesheet's text can arrive in pieces; it is collected (style blocks are
        // small) and rewritten whole.
        text!("style", move |chunk| {
            style_text.push_str(chunk.as_str());
            if chunk.last_in_text_node() {
                let css = rewrite_css(&std::mem::take(&mut style_text), &css_page);
                chunk.replace(&css, ContentType::Html);
            } else {
                chunk.remove();
            }
            Ok(())
        }),
    ];
    let settings = handlers.into_iter().fold(
        Settings::new_send(),
        Settings::append_element_content_handler,
    );
    HtmlRewriter::new(settings, sink)
}

/// `a.png 1x, http://h/b.png 2x` → each candidate's URL rewritten.
fn rewrite_srcset(value: &str, page: &url::Url) -> String {
    value
        .split(',')
        .map(|candidate| {
            let candidate = candidate.trim();
            let (url, descriptor) = candidate
                .split_once(char::is_whitespace)
                .unwrap_or((candidate, ""));
            let url = gatewayed(url, page).unwrap_or_else(|| url.to_owned());
            if descriptor.is_empty() {
                url
            } else {
                format!("{url} {}", descriptor.trim())
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `5; url=http://h/x` → `5; url=/h/x`.
fn rewrite_refresh(content: &str, page: &url::Url) -> String {
    let lower = content.to_ascii_lowercase();
    let Some(at) = lower.find("url=") else {
        return content.to_owned();
    };
    let url = content[at + 4..].trim().trim_matches(['\'', '"']);
    match gatewayed(url, page) {
        Some(rewritten) => format!("{}{rewritten}", &content[..at + 4]),
        None => content.to_owned(),
    }
}

/// Rewrites every `url(...)` in CSS text whose URL is absolute.
fn rewrite_css(css: &str, page: &url::Url) -> String {
    let mut out = String::with_capacity(css.len());
    let mut rest = css;
    while let Some(at) = rest.to_ascii_lowercase().find("url(") {
        out.push_str(&rest[..at + 4]);
        rest = &rest[at + 4..];
        let Some(close) = rest.find(')') else { break };
        let inner = &rest[..close];
        let trimmed = inner.trim();
        let quote = trimmed.chars().next().filter(|c| *c == '"' || *c == '\'');
        let url = quote.map_or(trimmed, |q| trimmed.trim_matches(q));
        match gatewayed(url, page) {
            Some(rewritten) => {
                let q = quote.map(String::from).unwrap_or_default();
                out.push_str(&format!("{q}{rewritten}{q}"));
            }
            None => out.push_str(inner),
        }
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn rewrite(html: &str) -> String {
        let chunks: Vec<io::Result<Bytes>> = html
            .as_bytes()
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let page = url::Url::parse("http://www.example.com/dir/page").unwrap();
        let stream = rewrite_html(Box::pin(futures_util::stream::iter(chunks)), page);
        let parts: Vec<Bytes> = stream.try_collect().await.unwrap();
        String::from_utf8(parts.concat()).unwrap()
    }

    #[tokio::test]
    async fn absolute_and_root_relative_urls_in_html_move_into_the_gateway() {
        let html = r#"<a href="http://a.example/x">a</a><img src="https://b.example/i.png" srcset="http://a.example/1.png 1x, /rel.png 2x">
<form action="//c.example/post"></form><meta http-equiv="refresh" content="3; url=http://a.example/next">
<div style="background:url('http://a.example/bg.png')"></div><style>body{background:url(http://a.example/s.png)} p{color:red}</style>
<a href="/root">r</a><a href="rel">r</a><a href="/">home</a>"#;
        let out = rewrite(html).await;
        for expected in [
            r#"href="/a.example/x""#,
            r#"src="/https://b.example/i.png""#,
            r#"srcset="/a.example/1.png 1x, /www.example.com/rel.png 2x""#,
            r#"action="/c.example/post""#,
            r#"content="3; url=/a.example/next""#,
            r#"background:url('/a.example/bg.png')"#,
            "background:url(/a.example/s.png)} p{color:red}",
            // Root-relative URLs are the page's own site's, never hoard's.
            r#"href="/www.example.com/root""#,
            r#"href="/www.example.com/">home"#,
            r#"href="rel""#,
        ] {
            assert!(out.contains(expected), "{expected} missing in {out}");
        }
    }

    #[test]
    fn locations_and_cookies_are_scoped_to_the_site() {
        let page = url::Url::parse("http://www.example.com/dir/page").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, HeaderValue::from_static("../new?q=1"));
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_static("a=1; Domain=.example.com; Path=/; HttpOnly"),
        );
        headers.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        rewrite_location(&mut headers, &page);
        rewrite_cookies(&mut headers, &page);
        assert_eq!(headers[header::LOCATION], "/www.example.com/new?q=1");
        let cookies: Vec<_> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            cookies,
            vec![
                "a=1; Path=/www.example.com/; HttpOnly",
                "b=2; Path=/www.example.com/"
            ]
        );
    }
}
