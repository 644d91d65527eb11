//! Reading request bodies: the next piece of data with a deadline (a client that stops sending
//! must not hold a request forever), a bounded buffer (manifests), and draining what a refused
//! request still sends. hyper closes a connection whose request body was left unread, and a
//! client still sending then sees a reset instead of the answer.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes};

/// Bytes of a refused request's body read and dropped at most; past that, the connection closes
/// under the client, which is cheaper than reading an arbitrarily large refused body.
pub const DRAIN_LIMIT: u64 = 64 << 20;

/// Why a request body could not be read to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The client sent nothing for this long.
    #[error("the client sent nothing for {0:?}")]
    Stalled(Duration),
    /// The connection broke (closed or reset half-way, bad chunked framing).
    #[error("reading the request body: {0}")]
    Broken(String),
}

/// The next data of `body`, `None` at its end; other frames (trailers) are skipped.
pub async fn next_data<B>(body: &mut B, idle: Duration) -> Result<Option<Bytes>, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(ReadError::Stalled(idle)),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(ReadError::Broken(e.to_string())),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// All of `body` if it is at most `limit` bytes; `None` (the rest drained) if it is larger.
pub async fn collect_at_most<B>(mut body: B, limit: usize, idle: Duration) -> Result<Option<Vec<u8>>, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut buf = Vec::new();
    // A declared Content-Length over the limit is refused without buffering anything.
    if body.size_hint().lower() > limit as u64 {
        drain(body, idle).await;
        return Ok(None);
    }
    while let Some(data) = next_data(&mut body, idle).await? {
        if buf.len() + data.len() > limit {
            drain(body, idle).await;
            return Ok(None);
        }
        buf.extend_from_slice(&data);
    }
    Ok(Some(buf))
}

/// Reads and drops what is left of `body`, up to [`DRAIN_LIMIT`] bytes, so a client still
/// sending gets to read the answer. Returns whether the body was read to its end.
pub async fn drain<B>(mut body: B, idle: Duration) -> bool
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    if body.size_hint().lower() > DRAIN_LIMIT {
        return false;
    }
    let mut left = DRAIN_LIMIT;
    loop {
        match next_data(&mut body, idle).await {
            Ok(None) => return true,
            Ok(Some(data)) if (data.len() as u64) < left => left -= data.len() as u64,
            _ => return false,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use futures_util::stream::{self, StreamExt};
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    /// A body that sends `chunks`, then ends with `end` (`None`: sends nothing more, forever).
    pub(crate) fn body(chunks: &[&[u8]], end: Option<Result<(), &'static str>>) -> impl Body<Data = Bytes, Error = &'static str> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, &'static str>> = chunks.iter().map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
        let (last, forever) = match end {
            Some(Err(e)) => (vec![Err(e)], false),
            Some(Ok(())) => (Vec::new(), false),
            None => (Vec::new(), true),
        };
        let silence = stream::pending().take(if forever { usize::MAX } else { 0 });
        StreamBody::new(stream::iter(frames).chain(stream::iter(last)).chain(silence))
    }

    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_bounded_body_is_collected_or_refused_whole() {
        assert_eq!(collect_at_most(body(&[b"ab", b"cd"], Some(Ok(()))), 4, IDLE).await, Ok(Some(b"abcd".to_vec())));
        assert_eq!(collect_at_most(body(&[b"ab", b"cde"], Some(Ok(()))), 4, IDLE).await, Ok(None));
        let broken = collect_at_most(body(&[b"ab"], Some(Err("reset"))), 4, IDLE).await;
        assert_eq!(broken, Err(ReadError::Broken("reset".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_sending_is_given_up_after_the_idle_time() {
        let started = tokio::time::Instant::now();
        let mut b = body(&[b"some"], None);
        assert_eq!(next_data(&mut b, IDLE).await, Ok(Some(Bytes::from_static(b"some"))));
        assert_eq!(next_data(&mut b, IDLE).await, Err(ReadError::Stalled(IDLE)));
        assert_eq!(started.elapsed(), IDLE);
        assert!(!drain(body(&[b"x"], None), IDLE).await);
        assert!(drain(body(&[b"x", b"y"], Some(Ok(()))), IDLE).await);
    }
}
