//! Test harness: real origins (hyper, or raw TCP for misbehaving ones) and a real hoard, all on
//! 127.0.0.1 with ephemeral ports and a temporary cache directory.

pub mod origin;
pub mod proxy;
pub mod raw;
pub mod small_disk;
pub mod tls;

pub use origin::Origin;
pub use proxy::Hoard;
