//! hoard: a caching HTTP proxy.
//!
//! A request meets the modules in this order: `server` (accept, HTTP/1.1) → `proxy` (classify,
//! rewrite heads, answer errors) → `upstream` (pooled origin connections). `config` builds the
//! settings all of them read; `logging` writes the access log and the verbose trace.
//! `docs/ARCHITECTURE.md` has the full map.

pub mod admin;
pub mod body;
pub mod cache;
pub mod cache_tool;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod upstream;
