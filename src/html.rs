//! Escaping for the HTML pages hoard writes itself (the status page, the gateway's start
//! page, error pages): any text that came from a request, an origin or the cache goes
//! through `escape` before it is put into a page.

/// `text` with `& < > " '` as entities: safe in element content and in quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
