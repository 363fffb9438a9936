//! Integration tests: one binary, one module per area, real origins and a real hoard on
//! loopback (see `support/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod apt;
mod bad_input;
mod binary;
mod browser;
mod cache;
mod connection;
mod damaged_index;
mod destinations;
mod errors;
mod exposure;
mod fleet;
mod forward;
mod freshness;
mod gateway;
mod groups;
mod http2;
mod https;
mod invalidation;
mod logs;
mod metrics;
mod origin_faults;
mod parent;
mod poisoning;
mod reverse;
mod rules;
mod shared_tier;
mod slices;
mod small_objects;
mod stale;
mod support;
mod targeted;
mod tls;
mod vary;
