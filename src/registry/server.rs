//! The registry's HTTP/1 server (hyper): accepts on a listener it is handed, parses each
//! request with [`routes`](super::routes), runs the storage work off the runtime thread and
//! answers with the spec's headers and error bodies.

use std::convert::Infallible;
use std::io::{Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::body::Body;
use super::errors::{Code, RegistryError, Result};
use super::manifest::MAX_MANIFEST;
use super::reference::{Digest, Reference};
use super::routes::{self, Action, Page};
use super::storage::{Storage, Upload};
use super::uploads::{append_body, Sessions};

/// A client has this long to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// One registry: its storage and its open uploads.
pub struct Registry {
    storage: Storage,
    sessions: Sessions,
}

/// Serves `storage` on `listener` (bound inside the cluster's namespace) until `stop` turns true.
pub async fn serve(listener: TcpListener, storage: Storage, mut stop: watch::Receiver<bool>) {
    let registry = Arc::new(Registry { storage, sessions: Sessions::default() });
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let registry = registry.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let registry = registry.clone();
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
                });
            }
            _ = stop.changed() => return,
        }
    }
}

/// Runs blocking storage work on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(RegistryError::internal)?
}

fn header(req: &Request<Incoming>, name: hyper::header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
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

fn upload_accepted(name: &str, u: &Upload) -> Response<Body> {
    let r = response(StatusCode::ACCEPTED, Body::Empty);
    let r = with(r, "location", format!("/v2/{name}/blobs/uploads/{}", u.id));
    let r = with(r, "range", upload_range(u.size()));
    let r = with(r, "docker-upload-uuid", &u.id);
    with(r, "content-length", "0")
}

fn blob_created(name: &str, digest: &Digest) -> Response<Body> {
    let r = response(StatusCode::CREATED, Body::Empty);
    let r = with(r, "location", format!("/v2/{name}/blobs/{digest}"));
    let r = with(r, "docker-content-digest", digest.to_string());
    with(r, "content-length", "0")
}

impl Registry {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().as_str().to_string();
        let target = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        let result = match routes::parse(&method, &target) {
            Ok(action) => self.dispatch(action, req).await,
            Err(e) => Err(e),
        };
        let r = result.unwrap_or_else(|e| error(&e));
        tracing::debug!(%method, %target, status = r.status().as_u16(), "registry request");
        r
    }

    async fn dispatch(&self, action: Action, req: Request<Incoming>) -> Result<Response<Body>> {
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
            Action::PutManifest { name, reference } => self.put_manifest(name, reference, req).await,
            Action::GetBlob { digest, head, .. } => self.get_blob(digest, head, &req).await,
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
                    Some(d) => self.finish(name, upload, d, req.into_body()).await,
                    None => {
                        let r = upload_accepted(&name, &upload);
                        self.sessions.put(upload);
                        Ok(r)
                    }
                }
            }
            Action::UploadStatus { name, id } => {
                let upload = self.sessions.take(&name, &id)?;
                let mut r = upload_accepted(&name, &upload);
                *r.status_mut() = StatusCode::NO_CONTENT;
                self.sessions.put(upload);
                Ok(r)
            }
            Action::PatchUpload { name, id } => {
                let upload = self.sessions.take(&name, &id)?;
                if let Some(range) = header(&req, CONTENT_RANGE) {
                    if let Err(e) = check_chunk_start(range, upload.size()) {
                        let r = with(error(&e), "range", upload_range(upload.size()));
                        self.sessions.put(upload);
                        return Ok(r);
                    }
                }
                let (upload, appended) = append_body(upload, req.into_body()).await;
                let r = upload_accepted(&name, &upload);
                self.sessions.put(upload);
                appended.map(|_| r)
            }
            Action::FinishUpload { name, id, digest } => {
                let upload = self.sessions.take(&name, &id)?;
                self.sessions.remove(&id);
                self.finish(name, upload, digest, req.into_body()).await
            }
            Action::CancelUpload { name, id } => {
                let upload = self.sessions.take(&name, &id)?;
                self.sessions.remove(&id);
                let s = self.storage.clone();
                blocking(move || {
                    s.discard(upload);
                    Ok(())
                })
                .await?;
                Ok(with(response(StatusCode::NO_CONTENT, Body::Empty), "content-length", "0"))
            }
        }
    }

    /// Appends the last chunk (maybe empty), verifies and stores the blob; on any failure the
    /// upload is discarded.
    async fn finish(&self, name: String, upload: Upload, digest: Digest, body: Incoming) -> Result<Response<Body>> {
        let (upload, appended) = append_body(upload, body).await;
        let s = self.storage.clone();
        let d = digest.clone();
        blocking(move || match appended {
            Ok(()) => s.commit(upload, &d),
            Err(e) => {
                s.discard(upload);
                Err(e)
            }
        })
        .await?;
        Ok(blob_created(&name, &digest))
    }

    async fn put_manifest(&self, name: String, reference: Reference, req: Request<Incoming>) -> Result<Response<Body>> {
        let content_type = header(&req, CONTENT_TYPE).map(str::to_string);
        let body = http_body_util::Limited::new(req.into_body(), MAX_MANIFEST)
            .collect()
            .await
            .map_err(|e| RegistryError::new(Code::ManifestInvalid, format!("reading the manifest: {e}")))?
            .to_bytes();
        let s = self.storage.clone();
        let n = name.clone();
        let digest = blocking(move || s.put_manifest(&n, &reference, content_type.as_deref(), &body)).await?;
        let r = response(StatusCode::CREATED, Body::Empty);
        let r = with(r, "location", format!("/v2/{name}/manifests/{digest}"));
        let r = with(r, "docker-content-digest", digest.to_string());
        Ok(with(r, "content-length", "0"))
    }

    async fn get_blob(&self, digest: Digest, head: bool, req: &Request<Incoming>) -> Result<Response<Body>> {
        let s = self.storage.clone();
        let d = digest.clone();
        let range = header(req, RANGE).map(str::to_string);
        let (file, total, span) = blocking(move || {
            let (mut file, total) = s.open_blob(&d)?;
            let span = match range.as_deref().map(|r| parse_range(r, total)) {
                None => None,
                Some(None) => {
                    return Err(RegistryError::new(Code::RangeInvalid, format!("range not satisfiable for a blob of {total} bytes")))
                }
                Some(Some((start, end))) => {
                    file.seek(SeekFrom::Start(start)).map_err(RegistryError::internal)?;
                    Some((start, end))
                }
            };
            Ok((file, total, span))
        })
        .await?;
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

/// A chunk's `Content-Range: <start>-<end>` must start where the upload ends.
pub(crate) fn check_chunk_start(range: &str, size: u64) -> Result<()> {
    let start = range.trim().trim_start_matches("bytes ").split('-').next().and_then(|s| s.trim().parse::<u64>().ok());
    match start {
        Some(s) if s == size => Ok(()),
        _ => Err(RegistryError::new(Code::RangeInvalid, format!("chunk range {range:?} does not start at {size}, where the upload ends"))),
    }
}

/// A single `bytes=a-b`, `bytes=a-` or `bytes=-n` range within `total` bytes, inclusive.
pub(crate) fn parse_range(header: &str, total: u64) -> Option<(u64, u64)> {
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
    fn chunk_ranges_must_continue_the_upload() {
        assert!(check_chunk_start("0-99", 0).is_ok());
        assert!(check_chunk_start("100-199", 100).is_ok());
        assert_eq!(check_chunk_start("50-99", 100).unwrap_err().code, Code::RangeInvalid);
        assert!(check_chunk_start("garbage", 0).is_err());
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
