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
    /// Lines starting with [`STEP`] are also collected here, when set.
    steps: Option<Arc<Mutex<Vec<String>>>>,
    line: Vec<u8>,
}

/// How a hook reports a finished step and its duration: `kvci-step NAME SECONDS`.
pub const STEP: &str = "kvci-step ";

impl Tee {
    /// A writer that prefixes lines with `prefix` and appends to the shared `tail`.
    pub fn new(prefix: &str, tail: Arc<Mutex<Vec<u8>>>) -> Tee {
        Tee { prefix: prefix.to_string(), at_line_start: true, tail, steps: None, line: Vec::new() }
    }

    /// Also collects the `kvci-step …` lines (without the marker) into `steps`.
    pub fn with_steps(mut self, steps: Arc<Mutex<Vec<String>>>) -> Tee {
        self.steps = Some(steps);
        self
    }
}

/// The last lines of what was kept.
pub fn tail_lines(tail: &Mutex<Vec<u8>>, lines: usize) -> String {
    tail.lock().map(|t| crate::tools::tail(&t, lines)).unwrap_or_default()
}

impl Tee {
    fn collect_step(&mut self, b: u8) {
        if b != b'\n' {
            // Only the start of a line matters; a long line is not kept whole.
            if self.line.len() < 256 {
                self.line.push(b);
            }
            return;
        }
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        if let (Some(step), Some(steps)) = (line.strip_prefix(STEP), &self.steps) {
            if let Ok(mut s) = steps.lock() {
                s.push(step.trim().to_string());
            }
        }
    }
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
            if self.steps.is_some() {
                self.collect_step(b);
            }
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
    async fn step_lines_are_collected() {
        let (tail, steps) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let mut t = Tee::new("  | ", tail).with_steps(steps.clone());
        t.write_all(b"noise\nkvci-step kubeadm-init 12.5\nmore kvci-step x 1\nkvci-st").await.unwrap();
        t.write_all(b"ep flannel 0.4\n").await.unwrap();
        assert_eq!(*steps.lock().unwrap(), ["kubeadm-init 12.5", "flannel 0.4"]);
    }

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
