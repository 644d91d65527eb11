//! The CLI side of the control socket: one request, one response, blocking.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::cluster::layout::ClusterDir;
use crate::supervisor::protocol::{Request, Response};

/// Talking to a supervisor failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No supervisor listens (cluster not up, or its supervisor died).
    #[error("cluster {0:?} is not running")]
    NotRunning(String),
    /// I/O on the socket.
    #[error("talking to the supervisor of {name:?}")]
    Io {
        /// Cluster name.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The supervisor answered nonsense or hung up.
    #[error("bad answer from the supervisor of {0:?}")]
    Protocol(String),
}

/// Sends `request` and returns the response. For `Down`, and a `Freeze` that takes the cluster
/// down, also waits until the supervisor has exited (its end of the socket closes when the
/// process is gone), so the name is free when this returns.
pub fn request(dir: &ClusterDir, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let name = dir.name().to_string();
    let io = |source| ClientError::Io { name: name.clone(), source };
    let mut stream = match UnixStream::connect(dir.control_socket()) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Err(ClientError::NotRunning(name));
        }
        Err(e) => return Err(io(e)),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_string(request).map_err(|_| ClientError::Protocol(name.clone()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(io)?;
    let response: Response = serde_json::from_str(&answer).map_err(|_| ClientError::Protocol(name.clone()))?;
    let ends_cluster = matches!(request, Request::Down { .. } | Request::Freeze { keep_running: false, .. });
    if ends_cluster && !matches!(response, Response::Error { .. }) {
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
    }
    Ok(response)
}
