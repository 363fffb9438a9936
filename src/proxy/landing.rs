//! The gateway's start page, `/`: what the gateway is, a form to type a URL, the address to
//! set as a browser's proxy (the one this browser reached hoard by), the sites this client
//! browsed lately, and a link to the status page.
//!
//! It only renders; which sites a client browsed is `gateway::RecentSites`'.

use std::net::SocketAddr;

use http::HeaderValue;

use super::gateway::Site;
use crate::html::escape;

/// The start page for a browser that asked with `host` (its `Host` header) on a hoard
/// listening on `listening`, having browsed `recent` (latest first).
pub(super) fn page(
    host: Option<&HeaderValue>,
    listening: &[SocketAddr],
    recent: &[Site],
) -> String {
    // The address this browser used is the one that works for it; without a Host (HTTP/1.0),
    // the first listener.
    let address = host
        .and_then(|host| host.to_str().ok())
        .filter(|host| !host.is_empty())
        .map(str::to_owned)
        .or_else(|| listening.first().map(SocketAddr::to_string))
        .unwrap_or_default();
    let address = escape(&address);
    let recent = if recent.is_empty() {
        String::new()
    } else {
        let items: String = recent
            .iter()
            .map(|site| {
                format!(
                    "<li><a href=\"{}/\">{}</a></li>",
                    escape(&site.prefix()),
                    escape(&site.origin())
                )
            })
            .collect();
        format!("<h2>Recently browsed</h2><ul id=\"recent\">{items}</ul>\n")
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>hoard</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;line-height:1.5}}
input[type=text]{{width:70%;padding:.4em}}code{{background:#f3f3f3;padding:0 .2em}}</style></head>
<body><h1>hoard</h1>
<p>A caching HTTP proxy. Browse any site through it by putting the site after the slash:
<code>http://{address}/www.example.com/</code> fetches <code>http://www.example.com/</code>, and
<code>http://{address}/https://www.example.com/</code> fetches it over HTTPS.</p>
<form action="/" method="get"><input type="text" name="url" placeholder="www.example.com/page" aria-label="URL to browse" autofocus>
<input type="submit" value="Go"></form>
{recent}<p>Or set <code id="proxy-address">http://{address}</code> as your browser's HTTP proxy, or use
<code>curl -x http://{address} http://www.example.com/</code>.</p>
<p><a href="/_hoard/">Status page</a> (cache contents, hit ratio, settings) · <a href="/_hoard/metrics">metrics</a></p>
</body></html>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_page_names_the_address_used_and_escapes_what_a_client_sent() {
        let listening = ["127.0.0.1:8080".parse().unwrap()];
        let page_for =
            |host: &'static str| page(Some(&HeaderValue::from_static(host)), &listening, &[]);
        assert!(page_for("proxy.lan:3128").contains("http://proxy.lan:3128/www.example.com/"));
        let hostile = page_for("x\"><script>");
        assert!(!hostile.contains("<script>") && hostile.contains("x&quot;&gt;&lt;script&gt;"));
        assert!(
            page(None, &listening, &[])
                .contains("<code id=\"proxy-address\">http://127.0.0.1:8080</code>")
        );
        assert!(!page(None, &listening, &[]).contains("Recently browsed"));
    }
}
