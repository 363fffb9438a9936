//! hoard's own client-facing HTTP/1.1: the connection that reads requests and writes
//! responses (`conn.rs`) and its parts: request heads parsed with `httparse` under hoard's
//! limits and smuggling rules (`head.rs`), request bodies decoded from the socket
//! (`decode.rs`, `body.rs`), response heads written with the origin's header spelling
//! (`encode.rs`, `case.rs`), interim (1xx) responses relayed, bodies sent with `writev` or
//! `sendfile` (`sendfile.rs`, `write.rs`), over a plain socket or any stream such as TLS
//! (`transport.rs`), and sockets handed to CONNECT tunnels (`upgrade.rs`).
//!
//! hyper serves the origin side still; it cannot send 1xx, keeps 16 KiB of buffers per idle
//! connection and cannot send a file without copying it through user space, which is why this
//! side is hoard's own. This module knows HTTP/1.1 framing only; what a request means is the
//! service's business.

mod body;
mod case;
mod conn;
pub mod decode;
mod encode;
pub mod head;
mod sendfile;
mod transport;
mod upgrade;
mod write;

pub use body::{BodyError, RequestBody};
pub use case::HeaderCase;
pub use conn::{Service, Settings, serve};
pub use head::HeadError;
pub use transport::{Io, Stream, Transport};
pub use upgrade::{NotUpgraded, OnUpgrade, Upgraded};

use std::sync::{Arc, Mutex};

use http::{HeaderMap, StatusCode};
use tokio::sync::Notify;

/// An interim response for the exchange numbered `.0` on its connection.
type InterimHead = (u64, StatusCode, HeaderMap);

/// A connection's queue of interim responses: one small allocation for its life (a tokio
/// channel would keep a 3.5 KB block per idle connection).
#[derive(Debug, Default)]
struct InterimQueue {
    heads: Mutex<Vec<InterimHead>>,
    arrived: Notify,
}

impl InterimQueue {
    fn take(&self) -> Vec<InterimHead> {
        std::mem::take(&mut *self.heads.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// In each request's extensions: sends an interim (1xx) response to the client ahead of the
/// final one. Whoever fetches from the origin relays the origin's 1xx through it. One queue
/// serves a connection's exchanges; each is numbered, so a late one is not sent to the next.
#[derive(Debug, Clone)]
pub struct Interim {
    queue: Arc<InterimQueue>,
    exchange: u64,
}

impl Interim {
    /// Queues `status` (1xx) with its fields; ignored once the final response has begun.
    pub fn send(&self, status: StatusCode, headers: HeaderMap) {
        if status.is_informational() {
            let mut heads = self.queue.heads.lock().unwrap_or_else(|p| p.into_inner());
            heads.push((self.exchange, status, headers));
            drop(heads);
            self.queue.arrived.notify_one();
        }
    }
}

/// Part of a file that a response body is exactly, so the connection can send it with
/// `sendfile(2)`: from the page cache to the socket without passing through user space.
#[derive(Debug)]
pub struct FileRegion<'a> {
    pub file: &'a std::fs::File,
    pub offset: u64,
}

/// A response body that may be a file region.
pub trait FileBody {
    /// The region, if the body is one and has not been read from yet.
    fn file(&mut self) -> Option<FileRegion<'_>>;

    /// The connection sent `bytes` of the region itself; the body will not be read.
    fn sent_from_file(&mut self, bytes: u64);
}
