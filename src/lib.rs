//! hoard: a caching HTTP proxy.
//!
//! A request meets the modules in this order: `server` (accept) → `http1` (hoard's own
//! client-facing HTTP/1.1) → `proxy` (decide
//! the mode, check and rewrite heads, answer errors) → `cache` (answer from storage, or ask
//! the origin and store) → `upstream` (pooled, policy-checked origin connections). It comes
//! back as the response and one `exchange::Exchange`, the record of what happened, which
//! `logging` (the access log) and `metrics` read. `config` builds the settings all of them
//! read. `docs/ARCHITECTURE.md` has the full map.

pub mod admin;
pub mod body;
pub mod cache;
pub mod cache_tool;
pub mod config;
pub mod exchange;
pub mod fleet;
pub mod html;
pub mod http1;
pub mod http2;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod shared_tier;
pub mod tls;
pub mod upstream;
