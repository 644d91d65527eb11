//! Response bodies: nothing, a small buffer (JSON, manifests), or a blob streamed from its file
//! in fixed chunks, so a 1 GiB blob never sits in memory.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use hyper::body::{Bytes, Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read from a blob file per frame.
const CHUNK: usize = 256 * 1024;

/// The body of a registry response.
pub enum Body {
    /// Nothing (HEAD, 201/202/204).
    Empty,
    /// A small buffer, sent once.
    Full(Option<Bytes>),
    /// `remaining` bytes of a file from its current position.
    File {
        /// The open blob.
        file: tokio::fs::File,
        /// Bytes still to send.
        remaining: u64,
        /// Reused read buffer.
        buf: Vec<u8>,
    },
}

impl Body {
    /// A buffer.
    pub fn full(data: impl Into<Bytes>) -> Body {
        Body::Full(Some(data.into()))
    }

    /// `len` bytes of `file` from where it is positioned.
    pub fn file(file: std::fs::File, len: u64) -> Body {
        Body::File { file: tokio::fs::File::from_std(file), remaining: len, buf: Vec::new() }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Body::File { file, remaining, buf } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let want = (*remaining).min(CHUNK as u64) as usize;
                buf.resize(want, 0);
                let mut rb = ReadBuf::new(buf);
                ready!(Pin::new(file).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                if n == 0 {
                    // The blob shrank under us: never send fewer bytes than Content-Length says.
                    return Poll::Ready(Some(Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "blob file ended early"))));
                }
                *remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(&buf[..n])))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(d) => d.is_none(),
            Body::File { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Body::File { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}
