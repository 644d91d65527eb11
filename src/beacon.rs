//! The readiness beacon: one JSON line per event that the guest writes to the virtio-serial port
//! `org.kvci.beacon` (see `firmware/beacon`). kvci learns that a
//! node is ready from the node itself, not from sleeps or log scraping.
//!
//! Everything read here comes from the guest: lines are bounded and malformed ones are counted
//! and skipped, never trusted.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// Longest beacon line accepted.
pub const MAX_LINE: usize = 4096;

/// What a node reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `ready`, `shutdown`, …
    pub event: String,
    /// The guest's hostname.
    #[serde(default)]
    pub hostname: String,
    /// The guest's IPv4 address, when it has one.
    #[serde(default)]
    pub address: String,
    /// The guest's global IPv6 address, when it has one.
    #[serde(default)]
    pub address6: String,
    /// Seconds since the guest kernel started.
    #[serde(default)]
    pub uptime: f64,
}

/// A line that is not a beacon message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Longer than [`MAX_LINE`].
    #[error("beacon line longer than {MAX_LINE} bytes")]
    TooLong,
    /// Not the expected JSON.
    #[error("malformed beacon line: {0}")]
    Malformed(String),
}

/// Parses one line the guest wrote.
pub fn parse_line(line: &[u8]) -> Result<Message, ParseError> {
    if line.len() > MAX_LINE {
        return Err(ParseError::TooLong);
    }
    let msg: Message = serde_json::from_slice(line).map_err(|e| ParseError::Malformed(e.to_string()))?;
    if msg.event.is_empty() || msg.event.len() > 64 {
        return Err(ParseError::Malformed("empty or oversized event".into()));
    }
    Ok(msg)
}

/// Reads beacon messages from the host side of the port.
pub struct Reader<R> {
    inner: BufReader<R>,
    /// Lines dropped because they were malformed.
    pub malformed: u64,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Wraps the beacon socket.
    pub fn new(inner: R) -> Self {
        Reader { inner: BufReader::new(inner), malformed: 0 }
    }

    /// Discards input up to and including the next newline, one buffer at a time; false when
    /// the port closed first.
    async fn skip_line(&mut self) -> std::io::Result<bool> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                return Ok(false);
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    self.inner.consume(at + 1);
                    return Ok(true);
                }
                None => {
                    let n = available.len();
                    self.inner.consume(n);
                }
            }
        }
    }

    /// The next well-formed message, or `None` when the port closed (QEMU exited).
    pub async fn next(&mut self) -> std::io::Result<Option<Message>> {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = (&mut self.inner).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            let complete = buf.ends_with(b"\n");
            if !complete && buf.len() > MAX_LINE {
                // Skip the rest of an oversized line without keeping it: a guest writing one
                // endless line must not grow the supervisor's memory.
                self.malformed += 1;
                if !self.skip_line().await? {
                    return Ok(None);
                }
                continue;
            }
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            match parse_line(line) {
                Ok(m) => return Ok(Some(m)),
                Err(e) => {
                    self.malformed += 1;
                    tracing::warn!(error = %e, "beacon: dropped a line from the guest");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` bytes of `x` made as they are read (never held whole), then `tail`.
    struct Endless {
        left: usize,
        tail: std::io::Cursor<Vec<u8>>,
    }

    impl AsyncRead for Endless {
        fn poll_read(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
            if self.left == 0 {
                return std::pin::Pin::new(&mut self.tail).poll_read(cx, buf);
            }
            const X: [u8; 8192] = [b'x'; 8192];
            let n = self.left.min(buf.remaining()).min(X.len());
            buf.put_slice(&X[..n]);
            self.left -= n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn peak_rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok()).unwrap()
    }

    #[tokio::test]
    async fn an_endless_line_is_skipped_in_bounded_memory() {
        let before = peak_rss_kib();
        let tail = b"\n{\"event\":\"ready\",\"hostname\":\"node01\"}\n".to_vec();
        // 1 GiB: far above what other tests running in this process at the same time allocate.
        let mut r = Reader::new(Endless { left: 1 << 30, tail: std::io::Cursor::new(tail) });
        let m = r.next().await.unwrap().expect("the line after the endless one");
        assert_eq!((m.event.as_str(), r.malformed), ("ready", 1));
        let grew = peak_rss_kib().saturating_sub(before);
        assert!(grew < 256 << 10, "skipping a 1 GiB line grew the peak RSS by {grew} KiB");
    }

    #[test]
    fn guest_script_output_parses() {
        let m = parse_line(br#"{"event":"ready","hostname":"node01","address":"","uptime":2.97}"#).unwrap();
        assert_eq!(m.event, "ready");
        assert_eq!(m.hostname, "node01");
        assert!((m.uptime - 2.97).abs() < 1e-9);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse_line(b"ready").is_err());
        assert!(parse_line(br#"{"event":""}"#).is_err());
        assert!(parse_line(&[b'x'; MAX_LINE + 1]).is_err());
        assert!(parse_line(&[0xff, 0xfe]).is_err());
    }

    #[tokio::test]
    async fn reader_skips_bad_lines_and_counts_them() {
        let mut input = Vec::new();
        input.extend_from_slice(b"noise\n\n");
        input.extend(std::iter::repeat(b'a').take(MAX_LINE * 2));
        input.extend_from_slice(b"\n{\"event\":\"ready\",\"hostname\":\"node02\"}\r\n");
        let mut r = Reader::new(&input[..]);
        let m = r.next().await.unwrap().unwrap();
        assert_eq!(m.hostname, "node02");
        assert_eq!(r.malformed, 2);
        assert_eq!(r.next().await.unwrap(), None);
    }

    /// Bounded fuzzing: arbitrary bytes never panic the parser or the reader.
    #[tokio::test]
    async fn random_bytes_never_panic() {
        // Seeded, so a failure reproduces.
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        let mut rand = move || rng.u64(..);
        for _ in 0..2000 {
            let len = (rand() % 300) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| (rand() % 256) as u8).collect();
            if rand() % 3 == 0 {
                bytes.splice(0..0, br#"{"event":"#.iter().copied());
            }
            let _ = parse_line(&bytes);
            let mut r = Reader::new(&bytes[..]);
            while let Ok(Some(_)) = r.next().await {}
        }
    }
}
