//! Request line → what to do: the distribution spec's endpoints, parsed from method, path and
//! query with every name, reference, digest and upload id validated. Pure, so it is unit-tested
//! and fuzzed without a server.
//!
//! Repository names contain slashes, so a path is read from its end: `…/tags/list`,
//! `…/manifests/<ref>`, `…/blobs/uploads/[<id>]`, `…/blobs/<digest>`, the rest being the name.

use super::errors::{Code, RegistryError, Result};
use super::reference::{validate_name, Digest, Reference};

/// Pagination of `tags/list` and `_catalog` (`?n=&last=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// At most this many entries.
    pub n: Option<usize>,
    /// Only entries sorting after this one.
    pub last: Option<String>,
}

/// A cross-repository mount asked for on `POST …/blobs/uploads/?mount=&from=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The blob.
    pub digest: Digest,
    /// The repository it comes from (blobs are shared, so only checked for syntax).
    pub from: Option<String>,
}

/// One request the registry understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `GET /v2/`: the API version check.
    CheckApi,
    /// `GET /v2/_catalog`.
    Catalog(Page),
    /// `GET /v2/<name>/tags/list`.
    ListTags {
        /// Repository.
        name: String,
        /// Pagination.
        page: Page,
    },
    /// `GET`/`HEAD /v2/<name>/manifests/<ref>`.
    GetManifest {
        /// Repository.
        name: String,
        /// Tag or digest.
        reference: Reference,
        /// `HEAD`: headers only.
        head: bool,
    },
    /// `PUT /v2/<name>/manifests/<ref>`.
    PutManifest {
        /// Repository.
        name: String,
        /// Tag or digest.
        reference: Reference,
    },
    /// `GET`/`HEAD /v2/<name>/blobs/<digest>`.
    GetBlob {
        /// Repository.
        name: String,
        /// Blob.
        digest: Digest,
        /// `HEAD`: headers only.
        head: bool,
    },
    /// `POST /v2/<name>/blobs/uploads/`: a session, a monolithic upload (`?digest=`) or a mount.
    StartUpload {
        /// Repository.
        name: String,
        /// Monolithic upload: the body is the whole blob.
        digest: Option<Digest>,
        /// Cross-repository mount.
        mount: Option<Mount>,
    },
    /// `GET /v2/<name>/blobs/uploads/<id>`: how much has arrived.
    UploadStatus {
        /// Repository.
        name: String,
        /// Session id.
        id: String,
    },
    /// `PATCH /v2/<name>/blobs/uploads/<id>`: append a chunk.
    PatchUpload {
        /// Repository.
        name: String,
        /// Session id.
        id: String,
    },
    /// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: last chunk (maybe empty), verify, store.
    FinishUpload {
        /// Repository.
        name: String,
        /// Session id.
        id: String,
        /// What the whole upload must hash to.
        digest: Digest,
    },
    /// `DELETE /v2/<name>/blobs/uploads/<id>`: abandon the session.
    CancelUpload {
        /// Repository.
        name: String,
        /// Session id.
        id: String,
    },
}

/// Parses one request. `target` is the request target (path and optional `?query`).
pub fn parse(method: &str, target: &str) -> Result<Action> {
    let (raw_path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = percent_decode(raw_path).ok_or_else(|| RegistryError::not_found(raw_path))?;
    let query = Query::parse(query)?;
    let rest = path.strip_prefix("/v2").ok_or_else(|| RegistryError::not_found(&path))?;
    if rest.is_empty() || rest == "/" {
        return only(method, &["GET", "HEAD"], Action::CheckApi);
    }
    let rest = rest.strip_prefix('/').ok_or_else(|| RegistryError::not_found(&path))?;
    if rest == "_catalog" {
        return only(method, &["GET"], Action::Catalog(query.page()?));
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        let name = repo(name)?;
        return only(method, &["GET"], Action::ListTags { name, page: query.page()? });
    }
    if let Some(name) = rest.strip_suffix("/blobs/uploads/").or_else(|| rest.strip_suffix("/blobs/uploads")) {
        let name = repo(name)?;
        let digest = query.get("digest").map(Digest::parse).transpose()?;
        let mount = match query.get("mount") {
            Some(m) => {
                let from = query.get("from").map(|f| validate_name(f).map(|_| f.to_string())).transpose()?;
                Some(Mount { digest: Digest::parse(m)?, from })
            }
            None => None,
        };
        return only(method, &["POST"], Action::StartUpload { name, digest, mount });
    }
    let (head, last) = rest.rsplit_once('/').ok_or_else(|| RegistryError::not_found(&path))?;
    if let Some(name) = head.strip_suffix("/blobs/uploads") {
        let (name, id) = (repo(name)?, upload_id(last)?);
        return match method {
            "GET" => Ok(Action::UploadStatus { name, id }),
            "PATCH" => Ok(Action::PatchUpload { name, id }),
            "PUT" => {
                let digest = query
                    .get("digest")
                    .ok_or_else(|| RegistryError::new(Code::DigestInvalid, "the digest query parameter is required to finish an upload"))?;
                Ok(Action::FinishUpload { name, id, digest: Digest::parse(digest)? })
            }
            "DELETE" => Ok(Action::CancelUpload { name, id }),
            _ => Err(method_not_allowed(method)),
        };
    }
    if let Some(name) = head.strip_suffix("/blobs") {
        let (name, digest) = (repo(name)?, Digest::parse(last)?);
        return match method {
            "GET" | "HEAD" => Ok(Action::GetBlob { name, digest, head: method == "HEAD" }),
            _ => Err(method_not_allowed(method)),
        };
    }
    if let Some(name) = head.strip_suffix("/manifests") {
        let (name, reference) = (repo(name)?, Reference::parse(last)?);
        return match method {
            "GET" | "HEAD" => Ok(Action::GetManifest { name, reference, head: method == "HEAD" }),
            "PUT" => Ok(Action::PutManifest { name, reference }),
            _ => Err(method_not_allowed(method)),
        };
    }
    Err(RegistryError::not_found(&path))
}

fn only(method: &str, allowed: &[&str], action: Action) -> Result<Action> {
    if allowed.contains(&method) {
        Ok(action)
    } else {
        Err(method_not_allowed(method))
    }
}

fn method_not_allowed(method: &str) -> RegistryError {
    RegistryError::new(Code::Unsupported, format!("method {method} is not supported here"))
}

fn repo(name: &str) -> Result<String> {
    validate_name(name).map(|_| name.to_string())
}

/// Upload ids are kvci's own (hex), so anything else is unknown; never a path component.
fn upload_id(id: &str) -> Result<String> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Ok(id.to_string())
    } else {
        Err(RegistryError::new(Code::BlobUploadUnknown, format!("no upload {id:?}")))
    }
}

/// Decoded `key=value` pairs of a query string.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Result<Query> {
        let bad = || RegistryError::new(Code::Unsupported, "malformed query string").with_status(hyper::StatusCode::BAD_REQUEST);
        let mut pairs = Vec::new();
        for part in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let k = percent_decode(&k.replace('+', " ")).ok_or_else(bad)?;
            let v = percent_decode(&v.replace('+', " ")).ok_or_else(bad)?;
            pairs.push((k, v));
        }
        Ok(Query(pairs))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn page(&self) -> Result<Page> {
        let n = match self.get("n") {
            Some(n) => Some(n.parse::<usize>().map_err(|_| {
                RegistryError::new(Code::Unsupported, format!("invalid page size n={n:?}")).with_status(hyper::StatusCode::BAD_REQUEST)
            })?),
            None => None,
        };
        Ok(Page { n, last: self.get("last").map(str::to_string) })
    }
}

/// `%XX` decoding; `None` for a broken escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn digest() -> Digest {
        Digest::parse(D).unwrap()
    }

    #[test]
    fn base_and_catalog() {
        assert_eq!(parse("GET", "/v2/").unwrap(), Action::CheckApi);
        assert_eq!(parse("HEAD", "/v2").unwrap(), Action::CheckApi);
        assert_eq!(parse("GET", "/v2/_catalog?n=10&last=a%2Fb").unwrap(), Action::Catalog(Page { n: Some(10), last: Some("a/b".into()) }));
        assert_eq!(parse("GET", "/v3/").unwrap_err().status(), hyper::StatusCode::NOT_FOUND);
        assert_eq!(parse("POST", "/v2/").unwrap_err().status(), hyper::StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn names_with_slashes_are_read_from_the_end() {
        assert_eq!(parse("GET", "/v2/a/b/c/tags/list").unwrap(), Action::ListTags { name: "a/b/c".into(), page: Page::default() });
        // A repository may itself be called `blobs` or `manifests`.
        assert_eq!(
            parse("GET", &format!("/v2/x/blobs/blobs/{D}")).unwrap(),
            Action::GetBlob { name: "x/blobs".into(), digest: digest(), head: false }
        );
        assert_eq!(
            parse("HEAD", "/v2/manifests/manifests/v1").unwrap(),
            Action::GetManifest { name: "manifests".into(), reference: Reference::Tag("v1".into()), head: true }
        );
        assert_eq!(
            parse("PUT", &format!("/v2/k/v/manifests/{D}")).unwrap(),
            Action::PutManifest { name: "k/v".into(), reference: Reference::Digest(digest()) }
        );
    }

    #[test]
    fn uploads() {
        assert_eq!(parse("POST", "/v2/a/blobs/uploads/").unwrap(), Action::StartUpload { name: "a".into(), digest: None, mount: None });
        assert_eq!(
            parse("POST", "/v2/a/blobs/uploads/?digest=sha256%3Ae3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855").unwrap(),
            Action::StartUpload { name: "a".into(), digest: Some(digest()), mount: None }
        );
        assert_eq!(
            parse("POST", &format!("/v2/a/blobs/uploads/?mount={D}&from=b/c")).unwrap(),
            Action::StartUpload { name: "a".into(), digest: None, mount: Some(Mount { digest: digest(), from: Some("b/c".into()) }) }
        );
        assert_eq!(parse("PATCH", "/v2/a/blobs/uploads/abc123").unwrap(), Action::PatchUpload { name: "a".into(), id: "abc123".into() });
        assert_eq!(parse("GET", "/v2/a/blobs/uploads/abc123").unwrap(), Action::UploadStatus { name: "a".into(), id: "abc123".into() });
        assert_eq!(parse("DELETE", "/v2/a/blobs/uploads/abc123").unwrap(), Action::CancelUpload { name: "a".into(), id: "abc123".into() });
        assert_eq!(
            parse("PUT", &format!("/v2/a/blobs/uploads/abc123?digest={D}")).unwrap(),
            Action::FinishUpload { name: "a".into(), id: "abc123".into(), digest: digest() }
        );
        assert_eq!(parse("PUT", "/v2/a/blobs/uploads/abc123").unwrap_err().code, Code::DigestInvalid);
        assert_eq!(parse("PATCH", "/v2/a/blobs/uploads/..").unwrap_err().code, Code::BlobUploadUnknown);
        assert_eq!(parse("PATCH", "/v2/a/blobs/uploads/..%2F..").unwrap_err().status(), hyper::StatusCode::NOT_FOUND);
    }

    #[test]
    fn bad_names_digests_and_methods_are_refused() {
        assert_eq!(parse("GET", "/v2/UPPER/tags/list").unwrap_err().code, Code::NameInvalid);
        assert_eq!(parse("GET", "/v2/a/../b/tags/list").unwrap_err().code, Code::NameInvalid);
        assert_eq!(parse("GET", "/v2/a/%2e%2e/tags/list").unwrap_err().code, Code::NameInvalid);
        assert_eq!(parse("GET", "/v2/a/blobs/sha256:abc").unwrap_err().code, Code::DigestInvalid);
        assert_eq!(parse("GET", "/v2/a/blobs/md5:abc").unwrap_err().code, Code::DigestInvalid);
        assert_eq!(parse("GET", "/v2/a/manifests/-bad").unwrap_err().code, Code::TagInvalid);
        assert_eq!(parse("DELETE", &format!("/v2/a/blobs/{D}")).unwrap_err().code, Code::Unsupported);
        assert_eq!(parse("GET", "/v2/a/nothing/here").unwrap_err().status(), hyper::StatusCode::NOT_FOUND);
        assert_eq!(parse("GET", "/v2/a%ff/tags/list").unwrap_err().status(), hyper::StatusCode::NOT_FOUND);
        assert_eq!(parse("GET", "/v2/_catalog?n=x").unwrap_err().status(), hyper::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("sha256%3Aab").as_deref(), Some("sha256:ab"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%c3%a4").as_deref(), Some("ä"));
    }
}
