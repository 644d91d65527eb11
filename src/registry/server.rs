//! The registry's HTTP/1 server (hyper): accepts on a listener it is handed, parses each
//! request with [`routes`](super::routes), runs the storage work off the runtime thread and
//! answers with the spec's headers and error bodies. A timer drops upload sessions left idle.

use std::convert::Infallible;
use std::io::{Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use super::body::Body;
use super::errors::{Code, RegistryError, Result};
use super::intake;
use super::manifest::{self, MAX_MANIFEST};
use super::ranges::{chunk_length, parse_range};
use super::reference::{Digest, Reference};
use super::routes::{self, Action, Page};
use super::storage::{Storage, Upload};
use super::uploads::{append_body, Sessions};

/// A client has this long to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Default of [`Settings::upload_idle`]: ample between the chunks of a live push, short enough
/// that a push cut half-way does not hold its disk space for long.
pub const UPLOAD_IDLE: Duration = Duration::from_secs(10 * 60);

/// What can be tuned in one registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// An upload session with no request for this long is dropped with its file, and a request
    /// body with no data for this long is given up on.
    pub upload_idle: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { upload_idle: UPLOAD_IDLE }
    }
}

/// One registry: its storage and its open uploads.
pub struct Registry {
    storage: Storage,
    sessions: Sessions,
    settings: Settings,
    timer_started: std::sync::atomic::AtomicBool,
}

/// Serves `storage` on `listener` (bound inside the cluster's namespace) until `stop` turns true.
pub async fn serve(listener: TcpListener, storage: Storage, stop: watch::Receiver<bool>) {
    Registry::new(storage, Settings::default()).serve(listener, stop).await
}

/// As [`serve`] on several listeners (the bridge's IPv4 and IPv6 addresses) sharing one
/// registry: the same blobs and upload sessions whichever address a client used.
pub async fn serve_all(listeners: Vec<TcpListener>, storage: Storage, stop: watch::Receiver<bool>) {
    let registry = Registry::new(storage, Settings::default());
    let tasks: Vec<_> = listeners.into_iter().map(|l| tokio::spawn(registry.clone().serve(l, stop.clone()))).collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// Runs blocking storage work on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(RegistryError::internal)?
}

fn header(headers: &HeaderMap, name: hyper::header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The request body, which each request reads once.
fn take_body(slot: &mut Option<Incoming>) -> Result<Incoming> {
    slot.take().ok_or_else(|| RegistryError::internal("the request body was already read"))
}

/// A response with the API version header every answer carries.
fn response(status: StatusCode, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert("Docker-Distribution-API-Version", HeaderValue::from_static("registry/2.0"));
    r
}

fn with(mut r: Response<Body>, name: &'static str, value: impl AsRef<str>) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        r.headers_mut().insert(name, v);
    }
    r
}

fn json(value: serde_json::Value) -> Response<Body> {
    let text = value.to_string();
    let r = with(response(StatusCode::OK, Body::full(text.clone())), "content-type", "application/json");
    with(r, "content-length", text.len().to_string())
}

fn error(e: &RegistryError) -> Response<Body> {
    let body = e.body();
    let r = with(response(e.status(), Body::full(body.clone())), "content-type", "application/json");
    with(r, "content-length", body.len().to_string())
}

/// `0-<last byte>` as the spec's upload `Range` header has it (`0-0` when empty).
fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

/// Where upload `u` stands: the headers of every answer about it.
fn upload_headers(r: Response<Body>, name: &str, u: &Upload) -> Response<Body> {
    let r = with(r, "location", format!("/v2/{name}/blobs/uploads/{}", u.id));
    let r = with(r, "range", upload_range(u.size()));
    with(r, "docker-upload-uuid", &u.id)
}

fn upload_accepted(name: &str, u: &Upload) -> Response<Body> {
    with(upload_headers(response(StatusCode::ACCEPTED, Body::Empty), name, u), "content-length", "0")
}

/// A refused chunk: the error, and where the upload still stands so the client can resume.
fn chunk_refused(name: &str, u: &Upload, e: &RegistryError) -> Response<Body> {
    upload_headers(error(e), name, u)
}

fn blob_created(name: &str, digest: &Digest) -> Response<Body> {
    let r = response(StatusCode::CREATED, Body::Empty);
    let r = with(r, "location", format!("/v2/{name}/blobs/{digest}"));
    let r = with(r, "docker-content-digest", digest.to_string());
    with(r, "content-length", "0")
}

/// 416 for a blob `Range` that misses the blob, with `Content-Range: bytes */<size>` as RFC 9110
/// asks. The body is plain text, not the spec's JSON error: a JSON error must carry one of the
/// spec's codes, and none means "range outside the blob" (`BLOB_UPLOAD_INVALID` is about
/// uploads; the spec has no `RANGE_INVALID`). The reference registry answers in plain text too.
fn range_not_satisfiable(total: u64) -> Response<Body> {
    let text = format!("range not satisfiable: the blob has {total} bytes\n");
    let r = with(response(StatusCode::RANGE_NOT_SATISFIABLE, Body::full(text.clone())), "content-type", "text/plain; charset=utf-8");
    let r = with(r, "content-range", format!("bytes */{total}"));
    with(r, "content-length", text.len().to_string())
}

impl Registry {
    /// A registry on `storage`.
    pub fn new(storage: Storage, settings: Settings) -> Arc<Registry> {
        Arc::new(Registry { storage, sessions: Sessions::default(), settings, timer_started: Default::default() })
    }

    /// Serves on `listener` until `stop` turns true (or its sender is dropped), dropping idle
    /// upload sessions on a timer meanwhile.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        // One timer per registry, however many listeners it has.
        if !self.timer_started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tokio::spawn(self.clone().expire_on_a_timer(stop.clone()));
        }
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    tokio::spawn(self.clone().serve_connection(stream));
                }
                _ = stop.changed() => return,
            }
        }
    }

    async fn serve_connection(self: Arc<Self>, stream: tokio::net::TcpStream) {
        let service = hyper::service::service_fn(move |req| {
            let registry = self.clone();
            async move { Ok::<_, Infallible>(registry.handle(req).await) }
        });
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service)
            .await;
        if let Err(e) = served {
            tracing::debug!(error = %e, "registry connection ended");
        }
    }

    /// Runs [`Registry::expire_idle_uploads`] a few times per idle period until `stop`.
    async fn expire_on_a_timer(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let period = (self.settings.upload_idle / 4).max(Duration::from_millis(1));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    self.expire_idle_uploads(Instant::now()).await;
                }
                _ = stop.changed() => return,
            }
        }
    }

    /// Drops the upload sessions that at `now` have had no request for
    /// [`Settings::upload_idle`], with their files; returns how many. `now` is a parameter so
    /// tests can look ahead instead of waiting.
    pub async fn expire_idle_uploads(&self, now: Instant) -> usize {
        let gone = self.sessions.expire(now, self.settings.upload_idle);
        let n = gone.len();
        if n > 0 {
            // Removing large files can take a while: off the runtime thread.
            let removed = blocking(move || {
                drop(gone);
                Ok(())
            });
            if let Err(e) = removed.await {
                tracing::warn!(error = %e, "removing idle uploads");
            }
            tracing::info!(sessions = n, idle = ?self.settings.upload_idle, "dropped idle upload sessions");
        }
        n
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let method = parts.method.as_str().to_string();
        let target = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        let mut body = Some(body);
        let result = match routes::parse(&method, &target) {
            Ok(action) => self.dispatch(action, &parts.headers, &mut body).await,
            Err(e) => Err(e),
        };
        if let Some(unread) = body {
            // Refused before the body mattered: read it so the client, maybe still sending,
            // gets to read the answer instead of a reset.
            intake::drain(unread, self.settings.upload_idle).await;
        }
        let r = result.unwrap_or_else(|e| error(&e));
        tracing::debug!(%method, %target, status = r.status().as_u16(), "registry request");
        r
    }

    async fn dispatch(&self, action: Action, headers: &HeaderMap, body: &mut Option<Incoming>) -> Result<Response<Body>> {
        match action {
            Action::CheckApi => Ok(json(serde_json::json!({}))),
            Action::Catalog(page) => {
                let s = self.storage.clone();
                let all = blocking(move || s.catalog()).await?;
                let (repos, next) = paginate(all, &page);
                let r = json(serde_json::json!({ "repositories": repos }));
                Ok(match next {
                    Some(last) => with(r, "link", format!("</v2/_catalog?n={}&last={last}>; rel=\"next\"", page.n.unwrap_or(0))),
                    None => r,
                })
            }
            Action::ListTags { name, page } => {
                let (s, n) = (self.storage.clone(), name.clone());
                let all = blocking(move || s.tags(&n)).await?;
                let (tags, next) = paginate(all, &page);
                let r = json(serde_json::json!({ "name": name, "tags": tags }));
                Ok(match next {
                    Some(last) => with(r, "link", format!("</v2/{name}/tags/list?n={}&last={last}>; rel=\"next\"", page.n.unwrap_or(0))),
                    None => r,
                })
            }
            Action::GetManifest { name, reference, head } => {
                let s = self.storage.clone();
                let (media_type, digest, body) = blocking(move || s.get_manifest(&name, &reference)).await?;
                let len = body.len();
                let r = response(StatusCode::OK, if head { Body::Empty } else { Body::full(body) });
                let r = with(r, "content-type", media_type);
                let r = with(r, "docker-content-digest", digest.to_string());
                Ok(with(r, "content-length", len.to_string()))
            }
            Action::PutManifest { name, reference } => self.put_manifest(name, reference, headers, take_body(body)?).await,
            Action::GetBlob { digest, head, .. } => self.get_blob(digest, head, headers).await,
            Action::StartUpload { name, digest, mount } => {
                if let Some(m) = mount {
                    if self.storage.blob_size(&m.digest).is_some() {
                        return Ok(blob_created(&name, &m.digest));
                    }
                    // Not here: the client gets an ordinary session and uploads it.
                }
                let s = self.storage.clone();
                let n = name.clone();
                let upload = blocking(move || s.start_upload(&n)).await?;
                match digest {
                    Some(d) => self.finish(name, upload, d, take_body(body)?).await,
                    None => {
                        let r = upload_accepted(&name, &upload);
                        self.sessions.put(upload);
                        Ok(r)
                    }
                }
            }
            Action::UploadStatus { name, id } => {
                let (upload, lease) = self.sessions.take(&name, &id)?;
                let mut r = upload_accepted(&name, &upload);
                *r.status_mut() = StatusCode::NO_CONTENT;
                lease.put_back(upload);
                Ok(r)
            }
            Action::PatchUpload { name, id } => self.patch(name, id, headers, body).await,
            Action::FinishUpload { name, id, digest } => {
                // The session ends with this request, whatever its outcome.
                let (upload, _lease) = self.sessions.take(&name, &id)?;
                self.finish(name, upload, digest, take_body(body)?).await
            }
            Action::CancelUpload { name, id } => {
                let (upload, _lease) = self.sessions.take(&name, &id)?;
                blocking(move || {
                    drop(upload);
                    Ok(())
                })
                .await?;
                Ok(with(response(StatusCode::NO_CONTENT, Body::Empty), "content-length", "0"))
            }
        }
    }

    /// Appends one chunk, all or nothing: a chunk that fails half-way (client gone or silent, a
    /// length other than its `Content-Range` announced) leaves the upload where it was.
    async fn patch(&self, name: String, id: String, headers: &HeaderMap, body: &mut Option<Incoming>) -> Result<Response<Body>> {
        let (upload, lease) = self.sessions.take(&name, &id)?;
        // The Content-Length, when the client sent one.
        let sent = body.as_ref().and_then(|b| b.size_hint().exact());
        let announced = match header(headers, CONTENT_RANGE).map(|range| chunk_length(range, upload.size(), sent)) {
            Some(Err(e)) => {
                let r = chunk_refused(&name, &upload, &e);
                lease.put_back(upload);
                return Ok(r);
            }
            Some(Ok(n)) => Some(n),
            None => None,
        };
        let mark = upload.mark();
        let (upload, appended) = append_body(upload, take_body(body)?, self.settings.upload_idle).await;
        let failed = match appended {
            Ok(n) => announced.filter(|&a| a != n).map(|a| {
                RegistryError::new(Code::RangeInvalid, format!("the Content-Range announced {a} bytes, the body had {n}"))
            }),
            Err(e) => Some(e),
        };
        let Some(e) = failed else {
            let r = upload_accepted(&name, &upload);
            lease.put_back(upload);
            return Ok(r);
        };
        // A rewind that fails drops the upload (and its file) and, with the lease, the session.
        let upload = blocking(move || {
            let mut upload = upload;
            upload.rewind(mark).map_err(RegistryError::internal)?;
            Ok(upload)
        })
        .await?;
        let r = chunk_refused(&name, &upload, &e);
        lease.put_back(upload);
        Ok(r)
    }

    /// Appends the last chunk (maybe empty), verifies and stores the blob; on any failure the
    /// upload is discarded.
    async fn finish(&self, name: String, upload: Upload, digest: Digest, body: Incoming) -> Result<Response<Body>> {
        let (upload, appended) = append_body(upload, body, self.settings.upload_idle).await;
        let s = self.storage.clone();
        let d = digest.clone();
        // On an error the upload is dropped in there, its file removed off the runtime thread.
        blocking(move || appended.and_then(|_| s.commit(upload, &d))).await?;
        Ok(blob_created(&name, &digest))
    }

    async fn put_manifest(&self, name: String, reference: Reference, headers: &HeaderMap, body: Incoming) -> Result<Response<Body>> {
        let content_type = header(headers, CONTENT_TYPE).map(str::to_string);
        let body = intake::collect_at_most(body, MAX_MANIFEST, self.settings.upload_idle)
            .await
            .map_err(|e| RegistryError::new(Code::ManifestInvalid, format!("reading the manifest: {e}")))?
            .ok_or_else(manifest::too_large)?;
        let s = self.storage.clone();
        let n = name.clone();
        let digest = blocking(move || s.put_manifest(&n, &reference, content_type.as_deref(), &body)).await?;
        let r = response(StatusCode::CREATED, Body::Empty);
        let r = with(r, "location", format!("/v2/{name}/manifests/{digest}"));
        let r = with(r, "docker-content-digest", digest.to_string());
        Ok(with(r, "content-length", "0"))
    }

    async fn get_blob(&self, digest: Digest, head: bool, headers: &HeaderMap) -> Result<Response<Body>> {
        let s = self.storage.clone();
        let d = digest.clone();
        let range = header(headers, RANGE).map(str::to_string);
        // The span asked for: `None` the whole blob, `Some(None)` a range that misses it.
        let (file, total, span) = blocking(move || {
            let (mut file, total) = s.open_blob(&d)?;
            let span = range.map(|r| parse_range(&r, total));
            if let Some(Some((start, _))) = span {
                file.seek(SeekFrom::Start(start)).map_err(RegistryError::internal)?;
            }
            Ok((file, total, span))
        })
        .await?;
        let span = match span {
            Some(None) => return Ok(range_not_satisfiable(total)),
            Some(Some(s)) => Some(s),
            None => None,
        };
        let len = span.map_or(total, |(a, b)| b - a + 1);
        let body = if head { Body::Empty } else { Body::file(file, len) };
        let mut r = response(if span.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK }, body);
        if let Some((a, b)) = span {
            r = with(r, "content-range", format!("bytes {a}-{b}/{total}"));
        }
        let r = with(r, "content-type", "application/octet-stream");
        let r = with(r, "accept-ranges", "bytes");
        let r = with(r, "docker-content-digest", digest.to_string());
        Ok(with(r, CONTENT_LENGTH.as_str(), len.to_string()))
    }
}

/// Entries after `page.last`, at most `page.n`; the last one returned when more remain.
fn paginate(all: Vec<String>, page: &Page) -> (Vec<String>, Option<String>) {
    let mut v: Vec<String> = match &page.last {
        Some(l) => all.into_iter().filter(|x| x > l).collect(),
        None => all,
    };
    match page.n {
        Some(n) if v.len() > n => {
            v.truncate(n);
            let last = v.last().cloned();
            (v, last)
        }
        _ => (v, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::loopback_tests::uploads_on_disk;

    #[tokio::test(start_paused = true)]
    async fn the_timer_drops_uploads_idle_past_the_timeout() {
        let idle = Duration::from_secs(60);
        let t = tempfile::tempdir().unwrap();
        let storage = Storage::open(t.path()).unwrap();
        let registry = Registry::new(storage.clone(), Settings { upload_idle: idle });
        let mut u = storage.start_upload("r").unwrap();
        u.append(&[7; 4096]).unwrap();
        registry.sessions.put(u);
        let (_stop, stop) = watch::channel(false);
        tokio::spawn(registry.clone().expire_on_a_timer(stop));

        // Paused time: each sleep returns once everything else, the timer's work included, is done.
        tokio::time::sleep(idle - Duration::from_secs(1)).await;
        assert_eq!((registry.sessions.len(), uploads_on_disk(t.path())), (1, (1, 4096)));
        tokio::time::sleep(idle / 2).await;
        assert_eq!((registry.sessions.len(), uploads_on_disk(t.path())), (0, (0, 0)));
    }

    #[test]
    fn pages() {
        let all: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(paginate(all.clone(), &Page::default()), (all.clone(), None));
        assert_eq!(paginate(all.clone(), &Page { n: Some(2), last: None }), (vec!["a".into(), "b".into()], Some("b".into())));
        assert_eq!(paginate(all.clone(), &Page { n: Some(2), last: Some("b".into()) }), (vec!["c".into(), "d".into()], None));
        assert_eq!(paginate(all, &Page { n: Some(0), last: None }), (vec![], None));
    }
}
