//! Streaming a guest script's output to the terminal while keeping its tail for errors.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// Bytes of output kept for error messages.
const TAIL_BYTES: usize = 8 * 1024;

/// Writes through to stderr with a prefix per line and remembers the last bytes.
pub struct Tee {
    prefix: String,
    at_line_start: bool,
    tail: Arc<Mutex<Vec<u8>>>,
}

impl Tee {
    /// A writer that prefixes lines with `prefix` and appends to the shared `tail`.
    pub fn new(prefix: &str, tail: Arc<Mutex<Vec<u8>>>) -> Tee {
        Tee { prefix: prefix.to_string(), at_line_start: true, tail }
    }
}

/// The last lines of what was kept.
pub fn tail_lines(tail: &Mutex<Vec<u8>>, lines: usize) -> String {
    tail.lock().map(|t| crate::tools::tail(&t, lines)).unwrap_or_default()
}

impl AsyncWrite for Tee {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        use std::io::Write;
        let mut out = Vec::with_capacity(buf.len() + 16);
        for &b in buf {
            if self.at_line_start {
                out.extend_from_slice(self.prefix.as_bytes());
            }
            out.push(b);
            self.at_line_start = b == b'\n';
        }
        // Terminal output is best effort; the tail is what errors report.
        let _ = std::io::stderr().write_all(&out);
        if let Ok(mut t) = self.tail.lock() {
            t.extend_from_slice(buf);
            let excess = t.len().saturating_sub(TAIL_BYTES);
            t.drain(..excess);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn tail_keeps_the_end() {
        let tail = Arc::new(Mutex::new(Vec::new()));
        let mut t = Tee::new("  | ", tail.clone());
        for i in 0..5000 {
            t.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
        }
        let last = tail_lines(&tail, 2);
        assert_eq!(last, "line 4998\nline 4999");
        assert!(tail.lock().unwrap().len() <= TAIL_BYTES);
    }
}
