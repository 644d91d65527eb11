//! The `Range` header of blob reads and the `Content-Range` of upload chunks, pure, so they are
//! unit-tested and fuzzed without a server.

use super::errors::{Code, RegistryError, Result};

/// The length a chunk's `Content-Range: <start>-<end>` announces. It must start where the upload
/// ends and, when the client sent a Content-Length, agree with it; else 416, as the spec has it.
pub fn chunk_length(range: &str, size: u64, content_length: Option<u64>) -> Result<u64> {
    let refuse = |why: String| Err(RegistryError::new(Code::RangeInvalid, format!("chunk range {range:?} {why}")));
    let Some((start, end)) = parse_content_range(range) else { return refuse("is malformed".into()) };
    if start != size {
        return refuse(format!("does not start at {size}, where the upload ends"));
    }
    let Some(len) = (end - start).checked_add(1) else { return refuse("is too long".into()) };
    match content_length {
        Some(n) if n != len => refuse(format!("announces {len} bytes, the Content-Length {n}")),
        _ => Ok(len),
    }
}

/// `<start>-<end>`, inclusive, optionally as `bytes <start>-<end>/<total>`.
fn parse_content_range(range: &str) -> Option<(u64, u64)> {
    let r = range.trim();
    let r = r.strip_prefix("bytes ").unwrap_or(r);
    let r = r.split_once('/').map_or(r, |(span, _total)| span);
    let (a, b) = r.split_once('-')?;
    let (start, end): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (start <= end).then_some((start, end))
}

/// A single `bytes=a-b`, `bytes=a-` or `bytes=-n` range within `total` bytes, inclusive.
pub fn parse_range(header: &str, total: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || total == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (total.checked_sub(n.min(total))?, total - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() { total - 1 } else { b.parse::<u64>().ok()?.min(total - 1) };
        (start, end)
    };
    (start <= end && start < total).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    #[test]
    fn byte_ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=90-200", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-4", 100), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=0-0", 0), None);
    }

    #[test]
    fn chunk_ranges_must_continue_the_upload_and_match_the_body() {
        assert_eq!(chunk_length("0-99", 0, None), Ok(100));
        assert_eq!(chunk_length("100-199", 100, Some(100)), Ok(100));
        assert_eq!(chunk_length("bytes 100-199/1000", 100, None), Ok(100));
        assert_eq!(chunk_length("50-99", 100, None).unwrap_err().code, Code::RangeInvalid);
        assert_eq!(chunk_length("0-99", 0, Some(50)).unwrap_err().code, Code::RangeInvalid);
        assert_eq!(chunk_length("0-99", 0, Some(50)).unwrap_err().status(), StatusCode::RANGE_NOT_SATISFIABLE);
        for bad in ["garbage", "9-0", "-5", "0-", "0-x", "", "0-18446744073709551615"] {
            assert!(chunk_length(bad, 0, None).is_err(), "{bad}");
        }
    }
}
