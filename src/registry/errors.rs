//! The OCI distribution spec's error codes, their HTTP statuses and the JSON body
//! (`{"errors":[{"code":…,"message":…}]}`) every failed request answers with.

use hyper::StatusCode;

/// An error code of the distribution spec (plus `UNSUPPORTED` for what kvci does not do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The blob is not in the registry.
    BlobUnknown,
    /// The upload failed and must be restarted.
    BlobUploadInvalid,
    /// No such upload session.
    BlobUploadUnknown,
    /// The content does not match the digest, or the digest is malformed.
    DigestInvalid,
    /// A manifest references a blob or manifest the registry lacks.
    ManifestBlobUnknown,
    /// The manifest is not valid JSON of its declared type.
    ManifestInvalid,
    /// No such manifest.
    ManifestUnknown,
    /// The repository name is malformed.
    NameInvalid,
    /// No such repository.
    NameUnknown,
    /// A declared size does not match the content.
    SizeInvalid,
    /// The operation is not supported.
    Unsupported,
    /// A chunk's `Content-Range` that does not continue the upload or match the chunk: 416 with
    /// `BLOB_UPLOAD_INVALID`, as the spec asks. (A blob `Range` that misses is answered apart.)
    RangeInvalid,
    /// The request itself is malformed (bad tag, bad query).
    TagInvalid,
}

impl Code {
    /// The spec's name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unsupported => "UNSUPPORTED",
            Code::RangeInvalid => "BLOB_UPLOAD_INVALID",
            Code::TagInvalid => "TAG_INVALID",
        }
    }

    /// The HTTP status it is sent with.
    pub fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown | Code::BlobUploadUnknown | Code::ManifestUnknown | Code::NameUnknown => StatusCode::NOT_FOUND,
            Code::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A request the registry refuses, with the message the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct RegistryError {
    /// The spec's code.
    pub code: Code,
    /// Human-readable detail.
    pub message: String,
    /// Overrides the code's usual status (an unrouted path is 404, not 405).
    pub status: Option<StatusCode>,
}

impl RegistryError {
    /// An error with the code's usual status.
    pub fn new(code: Code, message: impl Into<String>) -> RegistryError {
        RegistryError { code, message: message.into(), status: None }
    }

    /// The same error sent with another status.
    pub fn with_status(self, status: StatusCode) -> RegistryError {
        RegistryError { status: Some(status), ..self }
    }

    /// A path no route matches.
    pub fn not_found(path: &str) -> RegistryError {
        RegistryError { code: Code::Unsupported, message: format!("no such endpoint: {path}"), status: Some(StatusCode::NOT_FOUND) }
    }

    /// A storage failure (disk full, permissions): 500, reported as the spec has no code for it.
    pub fn internal(e: impl std::fmt::Display) -> RegistryError {
        RegistryError { code: Code::Unsupported, message: format!("storage error: {e}"), status: Some(StatusCode::INTERNAL_SERVER_ERROR) }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.code.status())
    }

    /// The JSON body of the answer.
    pub fn body(&self) -> String {
        serde_json::json!({ "errors": [{ "code": self.code.as_str(), "message": self.message, "detail": null }] }).to_string()
    }
}

/// A shorthand for registry results.
pub type Result<T> = std::result::Result<T, RegistryError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_follows_the_spec() {
        let e = RegistryError::new(Code::BlobUnknown, "blob sha256:ab is not here");
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(v["errors"][0]["message"], "blob sha256:ab is not here");
        assert_eq!(v["errors"].as_array().unwrap().len(), 1);
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn statuses_match_the_spec() {
        assert_eq!(RegistryError::new(Code::DigestInvalid, "").status(), StatusCode::BAD_REQUEST);
        assert_eq!(RegistryError::new(Code::ManifestBlobUnknown, "").status(), StatusCode::BAD_REQUEST);
        assert_eq!(RegistryError::new(Code::NameInvalid, "").status(), StatusCode::BAD_REQUEST);
        assert_eq!(RegistryError::new(Code::ManifestUnknown, "").status(), StatusCode::NOT_FOUND);
        assert_eq!(RegistryError::not_found("/x").status(), StatusCode::NOT_FOUND);
        assert_eq!(RegistryError::internal("disk").status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
