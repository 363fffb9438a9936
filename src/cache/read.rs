//! Reading stored bodies from disk with their checksum checked. Small bodies are read whole and
//! verified before the first byte is sent; large ones stream in blocks and the last block is held
//! back until the checksum of the whole file is confirmed, so a corrupt body never reaches the
//! client as a complete one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::body::{BoxError, ProxyBody};

const BLOCK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("cached body failed its integrity check ({0})")]
pub struct Corrupt(&'static str);

/// Reads the whole file and checks length and checksum.
pub fn read_verified(
    mut file: File,
    len: u64,
    checksum: &[u8; 32],
) -> std::io::Result<Result<Bytes, Corrupt>> {
    let mut buffer = BytesMut::zeroed(len as usize);
    if let Err(e) = file.read_exact(&mut buffer) {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return Ok(Err(Corrupt("short file")));
        }
        return Err(e);
    }
    let mut probe = [0u8; 1];
    if file.read(&mut probe)? != 0 {
        return Ok(Err(Corrupt("long file")));
    }
    if blake3::hash(&buffer).as_bytes() != checksum {
        return Ok(Err(Corrupt("checksum mismatch")));
    }
    Ok(Ok(buffer.freeze()))
}

/// Streams bytes `start..=end` of a stored body of `len` bytes, hashing the whole file and
/// failing the stream (instead of ending it) when it does not match `checksum`.
/// `on_corrupt` runs once if it does not.
pub fn stream_verified(
    file: File,
    len: u64,
    checksum: [u8; 32],
    (start, end): (u64, u64),
    on_corrupt: Box<dyn FnOnce() + Send>,
) -> ProxyBody {
    let (sender, receiver) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let result = pump(file, len, &checksum, (start, end), &sender);
        if let Err(e) = result {
            if e.downcast_ref::<Corrupt>().is_some() {
                on_corrupt();
            }
            let _ = sender.blocking_send(Err(e));
        }
    });
    http_body_util::BodyExt::boxed_unsync(ChannelBody {
        receiver,
        remaining: end + 1 - start,
    })
}

fn pump(
    mut file: File,
    len: u64,
    checksum: &[u8; 32],
    (start, end): (u64, u64),
    sender: &mpsc::Sender<Result<Bytes, BoxError>>,
) -> Result<(), BoxError> {
    let mut hasher = blake3::Hasher::new();
    let mut offset = 0u64;
    let mut held: Option<Bytes> = None;
    file.seek(SeekFrom::Start(0))?;
    loop {
        let mut block = BytesMut::zeroed(BLOCK);
        let n = file.read(&mut block)?;
        if n == 0 {
            break;
        }
        block.truncate(n);
        hasher.update(&block);
        let block = block.freeze();
        let (block_start, block_end) = (offset, offset + n as u64);
        offset = block_end;
        // The part of this block inside the range, sliced without copying.
        if block_end > start && block_start <= end {
            let from = start.saturating_sub(block_start) as usize;
            let to = ((end + 1).min(block_end) - block_start) as usize;
            if let Some(previous) = held.replace(block.slice(from..to))
                && sender.blocking_send(Ok(previous)).is_err()
            {
                return Ok(());
            }
        }
    }
    if offset != len {
        return Err(Corrupt("length mismatch").into());
    }
    if hasher.finalize().as_bytes() != checksum {
        return Err(Corrupt("checksum mismatch").into());
    }
    if let Some(last) = held {
        let _ = sender.blocking_send(Ok(last));
    }
    Ok(())
}

struct ChannelBody {
    receiver: mpsc::Receiver<Result<Bytes, BoxError>>,
    remaining: u64,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                self.remaining = self.remaining.saturating_sub(bytes.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) if self.remaining > 0 => {
                Poll::Ready(Some(Err("cached body ended early".into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
