//! `sendfile(2)` on a non-blocking socket, driven by tokio's readiness: the kernel copies
//! from the page cache to the socket and hoard never touches the bytes. (A body whose file is
//! not in the page cache makes the call wait for the disk, as nginx's `sendfile on` does.)

use std::io;

use tokio::io::Interest;
use tokio::net::tcp::OwnedWriteHalf;

use super::FileRegion;

/// Sends `length` bytes of `region`: the bytes sent, and the error that stopped it early if
/// one did (a file shorter than `length` is `UnexpectedEof`).
pub(super) async fn send(
    writer: &mut OwnedWriteHalf,
    region: &FileRegion<'_>,
    length: u64,
) -> (u64, Option<io::Error>) {
    let socket: &tokio::net::TcpStream = writer.as_ref();
    let mut offset = region.offset;
    let end = region.offset + length;
    while offset < end {
        // At most 1 GiB a call, as Linux caps one sendfile near 2 GiB.
        let count = (end - offset).min(1 << 30) as usize;
        let sent = socket
            .async_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(socket, region.file, Some(&mut offset), count)
                    .map_err(io::Error::from)
            })
            .await;
        match sent {
            Ok(0) => {
                return (
                    offset - region.offset,
                    Some(io::ErrorKind::UnexpectedEof.into()),
                );
            }
            Ok(_) => {}
            Err(e) => return (offset - region.offset, Some(e)),
        }
    }
    (length, None)
}
