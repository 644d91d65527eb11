//! Upload sessions: which are open, which are busy with a request, which sat idle too long, and
//! streaming a request body into one. Bodies go to disk in bounded buffers, written and hashed
//! off the runtime thread while the next buffer is read, so memory stays at a few MiB whatever
//! the blob's size.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hyper::body::{Body, Bytes};
use tokio::time::Instant;

use super::errors::{Code, RegistryError, Result};
use super::intake::next_data;
use super::storage::Upload;

/// Bytes collected from the body before they are handed to a blocking write.
const WRITE_BUFFER: usize = 1024 * 1024;

enum Slot {
    /// Waiting for the next request since `since` (boxed, so a busy slot stays small).
    Idle { upload: Box<Upload>, since: Instant },
    /// A request is writing to it.
    Busy,
}

/// The open upload sessions of one registry.
#[derive(Default)]
pub struct Sessions {
    slots: Mutex<HashMap<String, Slot>>,
}

/// A session taken by one request. [`Lease::put_back`] keeps it for the next request; dropped
/// without that (finished, cancelled, or the request's future dropped half-way) the session
/// ends, and the upload's own drop removes its file.
#[must_use = "dropping a lease ends the session"]
pub struct Lease<'a> {
    sessions: &'a Sessions,
    id: String,
}

impl Lease<'_> {
    /// Keeps `upload` (the one this lease was taken for) for its next request.
    pub fn put_back(self, upload: Upload) {
        debug_assert_eq!(upload.id, self.id);
        self.sessions.put(upload);
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut slots = self.sessions.lock();
        if matches!(slots.get(&self.id), Some(Slot::Busy)) {
            slots.remove(&self.id);
        }
    }
}

impl Sessions {
    /// Keeps `upload` for its next request; its idle time starts now.
    pub fn put(&self, upload: Upload) {
        self.lock().insert(upload.id.clone(), Slot::Idle { upload: Box::new(upload), since: Instant::now() });
    }

    /// Takes session `id` of repository `repo` for one request.
    pub fn take(&self, repo: &str, id: &str) -> Result<(Upload, Lease<'_>)> {
        let mut slots = self.lock();
        match slots.get(id) {
            Some(Slot::Idle { upload, .. }) if upload.repo == repo => {}
            Some(Slot::Busy) => return Err(RegistryError::new(Code::BlobUploadInvalid, format!("upload {id} is busy with another request"))),
            _ => return Err(RegistryError::new(Code::BlobUploadUnknown, format!("no upload {id} for repository {repo}"))),
        }
        match slots.insert(id.to_string(), Slot::Busy) {
            Some(Slot::Idle { upload, .. }) => Ok((*upload, Lease { sessions: self, id: id.to_string() })),
            _ => unreachable!("checked above"),
        }
    }

    /// Ends the sessions that at `now` have waited `idle` or longer for a request, and returns
    /// their uploads (dropping them removes the files). Busy sessions are left alone: their
    /// request gives up on a silent client by itself.
    pub fn expire(&self, now: Instant, idle: Duration) -> Vec<Upload> {
        let mut slots = self.lock();
        let stale: Vec<String> = slots
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Idle { since, .. } if now.saturating_duration_since(*since) >= idle))
            .map(|(id, _)| id.clone())
            .collect();
        stale
            .iter()
            .filter_map(|id| match slots.remove(id) {
                Some(Slot::Idle { upload, .. }) => Some(*upload),
                _ => None,
            })
            .collect()
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding it leaves a map that is still consistent.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Appends all of `body` to `upload` and returns how many bytes it had. The upload comes back in
/// every case, holding what did arrive, with the first error (client gone or silent for
/// `idle`, disk full) if any.
pub async fn append_body<B>(upload: Upload, mut body: B, idle: Duration) -> (Upload, Result<u64>)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut upload = Some(upload);
    let mut pending: Option<tokio::task::JoinHandle<(Upload, std::io::Result<()>)>> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BUFFER);
    let mut failed: Option<RegistryError> = None;
    let mut received = 0u64;
    loop {
        let end = match next_data(&mut body, idle).await {
            Ok(None) => true,
            Err(e) => {
                failed = Some(RegistryError::new(Code::BlobUploadInvalid, e.to_string()));
                true
            }
            Ok(Some(data)) => {
                received += data.len() as u64;
                buf.extend_from_slice(&data);
                false
            }
        };
        if buf.len() >= WRITE_BUFFER || (end && !buf.is_empty()) {
            // One write in flight: wait for the previous one, then hand this buffer over.
            if let Some(p) = pending.take() {
                let (u, r) = finish_write(p).await;
                upload = Some(u);
                if let Err(e) = r {
                    failed.get_or_insert(e);
                    break;
                }
            }
            let mut u = upload.take().expect("upload is here between writes");
            let data = std::mem::replace(&mut buf, Vec::with_capacity(if end { 0 } else { WRITE_BUFFER }));
            pending = Some(tokio::task::spawn_blocking(move || {
                let r = u.append(&data);
                (u, r)
            }));
        }
        if end {
            break;
        }
    }
    if let Some(p) = pending.take() {
        let (u, r) = finish_write(p).await;
        upload = Some(u);
        if let Err(e) = r {
            failed.get_or_insert(e);
        }
    }
    (upload.expect("upload returned by the last write"), failed.map_or(Ok(received), Err))
}

async fn finish_write(p: tokio::task::JoinHandle<(Upload, std::io::Result<()>)>) -> (Upload, Result<()>) {
    match p.await {
        Ok((u, r)) => (u, r.map_err(RegistryError::internal)),
        // The closure does not panic short of a bug; losing the file handle is acceptable then.
        Err(e) => panic!("upload write task failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::intake::tests::body;
    use crate::registry::storage::Storage;

    const IDLE: Duration = Duration::from_secs(600);

    #[tokio::test(start_paused = true)]
    async fn only_sessions_idle_past_the_timeout_expire() {
        let t = tempfile::tempdir().unwrap();
        let s = Storage::open(t.path()).unwrap();
        let sessions = Sessions::default();
        let old = s.start_upload("r").unwrap();
        let old_id = old.id.clone();
        sessions.put(old);
        tokio::time::advance(IDLE / 2).await;
        let young = s.start_upload("r").unwrap();
        let young_id = young.id.clone();
        sessions.put(young);
        let busy = s.start_upload("r").unwrap();
        let busy_id = busy.id.clone();
        sessions.put(busy);
        let (busy, lease) = sessions.take("r", &busy_id).unwrap();

        let gone = sessions.expire(Instant::now() + IDLE / 2, IDLE);
        assert_eq!(gone.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), [old_id.as_str()]);
        assert_eq!(sessions.take("r", &old_id).err().map(|e| e.code), Some(Code::BlobUploadUnknown));
        assert_eq!(sessions.len(), 2, "the young and the busy one stay");
        lease.put_back(busy);
        let mut gone: Vec<String> = sessions.expire(Instant::now() + IDLE, IDLE).into_iter().map(|u| u.id.clone()).collect();
        gone.sort();
        let mut expected = vec![young_id, busy_id];
        expected.sort();
        assert_eq!(gone, expected, "both idle now, the busy one since it was put back");
    }

    #[test]
    fn a_dropped_lease_ends_its_session() {
        let t = tempfile::tempdir().unwrap();
        let s = Storage::open(t.path()).unwrap();
        let sessions = Sessions::default();
        let u = s.start_upload("r").unwrap();
        let id = u.id.clone();
        sessions.put(u);
        let (u, lease) = sessions.take("r", &id).unwrap();
        assert_eq!(sessions.take("r", &id).err().map(|e| e.code), Some(Code::BlobUploadInvalid), "busy");
        // What a request cancelled half-way does: neither puts it back nor ends it explicitly.
        drop((u, lease));
        assert!(sessions.is_empty());
        assert_eq!(sessions.take("r", &id).err().map(|e| e.code), Some(Code::BlobUploadUnknown));
    }

    #[tokio::test]
    async fn a_body_is_appended_and_counted_and_a_broken_one_reported() {
        let t = tempfile::tempdir().unwrap();
        let s = Storage::open(t.path()).unwrap();
        let u = s.start_upload("r").unwrap();
        let (u, r) = append_body(u, body(&[b"abc", b"de"], Some(Ok(()))), IDLE).await;
        assert_eq!((r, u.size()), (Ok(5), 5));
        let (u, r) = append_body(u, body(&[b"fg"], Some(Err("connection reset"))), IDLE).await;
        assert_eq!(r.unwrap_err().code, Code::BlobUploadInvalid);
        assert_eq!(u.size(), 7, "what did arrive is there for the caller to keep or rewind");
    }
}
