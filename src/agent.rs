//! The host side of kvci's guest agent (`firmware/agent`): one request line, one reply line, on
//! the virtio-serial port `org.kvci.agent`. The guest waits in `read` while it runs, so a node
//! resumed from frozen RAM gets its fix-ups within milliseconds, with no ssh handshake.
//!
//! Replies come from the guest: they are bounded and checked, never trusted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest reply line accepted.
pub const MAX_REPLY: usize = 256;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The port broke (QEMU exited).
    #[error("agent port: {0}")]
    Io(#[from] std::io::Error),
    /// The port closed before a reply.
    #[error("the guest agent closed its port")]
    Closed,
    /// No reply in time.
    #[error("the guest agent did not answer within {0:?} (is /usr/libexec/kvci/agent running in the guest?)")]
    Timeout(Duration),
    /// The guest answered something else than `ok <request>`.
    #[error("the guest agent refused `{request}`: {reply:?}")]
    Refused {
        /// What was asked.
        request: String,
        /// What came back.
        reply: String,
    },
}

/// The `fixup` request: step the clock to `now` and mix `entropy` into the guest's RNG.
/// Both the exact time (GNU date) and the rounded one (busybox date) are sent.
pub fn fixup_line(now: SystemTime, entropy: &[u8]) -> String {
    let t = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let rounded = (t + Duration::from_millis(500)).as_secs();
    let hex: String = entropy.iter().map(|b| format!("{b:02x}")).collect();
    format!("fixup {}.{:09} {rounded} {hex}\n", t.as_secs(), t.subsec_nanos())
}

/// Whether `reply` acknowledges the request named `verb`.
pub fn is_ok(reply: &str, verb: &str) -> bool {
    reply.strip_prefix("ok ").is_some_and(|rest| rest == verb)
}

/// An open agent port.
pub struct Agent<S> {
    inner: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Agent<S> {
    /// Wraps the host end of the port.
    pub fn new(inner: S) -> Self {
        Agent { inner: BufReader::new(inner) }
    }

    /// Sends one request line and waits for the reply line.
    pub async fn request(&mut self, line: &str, timeout: Duration) -> Result<(), AgentError> {
        let verb = line.split_whitespace().next().unwrap_or_default().to_string();
        let exchange = async {
            self.inner.get_mut().write_all(line.as_bytes()).await?;
            let mut buf = Vec::new();
            let n = (&mut self.inner).take(MAX_REPLY as u64).read_until(b'\n', &mut buf).await?;
            if n == 0 {
                return Err(AgentError::Closed);
            }
            let reply = String::from_utf8_lossy(&buf).trim().to_string();
            if is_ok(&reply, &verb) {
                Ok(())
            } else {
                Err(AgentError::Refused { request: verb.clone(), reply })
            }
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| AgentError::Timeout(timeout))?
    }

    /// Steps the guest clock to the host's and reseeds its RNG.
    pub async fn fixup(&mut self, entropy: &[u8], timeout: Duration) -> Result<(), AgentError> {
        self.request(&fixup_line(SystemTime::now(), entropy), timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixup_line_carries_exact_and_rounded_time_and_hex() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 600_000_000);
        assert_eq!(fixup_line(t, &[0, 0xab, 0xff]), "fixup 1700000000.600000000 1700000001 00abff\n");
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 400_000_000);
        assert!(fixup_line(t, &[]).starts_with("fixup 1700000000.400000000 1700000000 "));
    }

    #[test]
    fn only_ok_for_the_same_verb_counts() {
        assert!(is_ok("ok fixup", "fixup"));
        assert!(!is_ok("ok ping", "fixup"));
        assert!(!is_ok("err fixup", "fixup"));
        assert!(!is_ok("", "fixup"));
    }

    #[tokio::test]
    async fn request_gets_its_reply_and_refusals_are_errors() {
        let (host, guest) = tokio::io::duplex(4096);
        let peer = tokio::spawn(async move {
            let mut g = BufReader::new(guest);
            let mut line = String::new();
            g.read_line(&mut line).await.unwrap();
            assert!(line.starts_with("fixup "));
            g.get_mut().write_all(b"ok fixup\n").await.unwrap();
            line.clear();
            g.read_line(&mut line).await.unwrap();
            g.get_mut().write_all(b"err fixup\n").await.unwrap();
            line.clear();
            g.read_line(&mut line).await.unwrap();
            // Silence: the host must time out rather than hang.
            g
        });
        let mut a = Agent::new(host);
        a.fixup(&[1, 2, 3], Duration::from_secs(5)).await.unwrap();
        assert!(matches!(a.fixup(&[1], Duration::from_secs(5)).await, Err(AgentError::Refused { .. })));
        assert!(matches!(a.request("ping\n", Duration::from_millis(50)).await, Err(AgentError::Timeout(_))));
        drop(peer.await.unwrap());
    }

    #[tokio::test]
    async fn endless_garbage_from_the_guest_is_bounded() {
        let (host, guest) = tokio::io::duplex(1 << 16);
        let writer = tokio::spawn(async move {
            let mut g = guest;
            let _ = g.write_all(&[b'x'; 10_000]).await;
            g
        });
        let mut a = Agent::new(host);
        let r = a.request("ping\n", Duration::from_secs(5)).await;
        assert!(matches!(r, Err(AgentError::Refused { ref reply, .. }) if reply.len() <= MAX_REPLY), "{r:?}");
        drop(writer.await.unwrap());
    }
}
