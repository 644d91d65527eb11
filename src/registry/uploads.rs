//! Upload sessions: which are open, which are busy with a request, and streaming a request body
//! into one. Bodies go to disk in bounded buffers, written and hashed off the runtime thread
//! while the next buffer is read, so memory stays at a few MiB whatever the blob's size.

use std::collections::HashMap;
use std::sync::Mutex;

use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::errors::{Code, RegistryError, Result};
use super::storage::Upload;

/// Bytes collected from the body before they are handed to a blocking write.
const WRITE_BUFFER: usize = 1024 * 1024;

enum Slot {
    /// Waiting for the next request.
    Idle(Upload),
    /// A request is writing to it.
    Busy,
}

/// The open upload sessions of one registry.
#[derive(Default)]
pub struct Sessions {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Sessions {
    /// Keeps `upload` for its next request.
    pub fn put(&self, upload: Upload) {
        self.lock().insert(upload.id.clone(), Slot::Idle(upload));
    }

    /// Takes session `id` of repository `repo` for one request; [`Sessions::put`] gives it back.
    pub fn take(&self, repo: &str, id: &str) -> Result<Upload> {
        let mut slots = self.lock();
        match slots.get(id) {
            Some(Slot::Idle(u)) if u.repo == repo => {}
            Some(Slot::Busy) => return Err(RegistryError::new(Code::BlobUploadInvalid, format!("upload {id} is busy with another request"))),
            _ => return Err(RegistryError::new(Code::BlobUploadUnknown, format!("no upload {id} for repository {repo}"))),
        }
        match slots.insert(id.to_string(), Slot::Busy) {
            Some(Slot::Idle(u)) => Ok(u),
            _ => unreachable!("checked above"),
        }
    }

    /// Forgets a session taken with [`Sessions::take`] (finished or cancelled).
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
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

/// Appends all of `body` to `upload`. The upload comes back in every case, holding what did
/// arrive, with the first error (client gone, disk full) if any.
pub async fn append_body(upload: Upload, mut body: Incoming) -> (Upload, Result<()>) {
    let mut upload = Some(upload);
    let mut pending: Option<tokio::task::JoinHandle<(Upload, std::io::Result<()>)>> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BUFFER);
    let mut failed: Option<RegistryError> = None;
    loop {
        let frame = body.frame().await;
        let end = match frame {
            None => true,
            Some(Err(e)) => {
                failed = Some(RegistryError::new(Code::BlobUploadInvalid, format!("reading the request body: {e}")));
                true
            }
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    buf.extend_from_slice(&data);
                }
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
    (upload.expect("upload returned by the last write"), failed.map_or(Ok(()), Err))
}

async fn finish_write(p: tokio::task::JoinHandle<(Upload, std::io::Result<()>)>) -> (Upload, Result<()>) {
    match p.await {
        Ok((u, r)) => (u, r.map_err(RegistryError::internal)),
        // The closure does not panic short of a bug; losing the file handle is acceptable then.
        Err(e) => panic!("upload write task failed: {e}"),
    }
}
