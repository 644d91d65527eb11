//! Test-only fault injection: a cluster directory's `inject-fault` file names steps (one per
//! line, like `freeze:copy`) that fail when reached, so tests can check what each failure leaves
//! behind. Without the file nothing happens; users never create it.

use std::path::Path;

/// The file that arms the fault points of the cluster in `dir`.
pub const FILE: &str = "inject-fault";

/// A fault that was injected.
#[derive(Debug, thiserror::Error)]
#[error("injected fault at {0} (the test-only {FILE} file of this cluster asked for it)")]
pub struct Injected(pub String);

/// Fails when `dir/inject-fault` lists `point`.
pub fn check(dir: &Path, point: &str) -> Result<(), Injected> {
    match std::fs::read_to_string(dir.join(FILE)) {
        Ok(text) if text.lines().any(|l| l.trim() == point) => Err(Injected(point.to_string())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_points_fail() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check(dir.path(), "freeze:copy").is_ok());
        std::fs::write(dir.path().join(FILE), "freeze:key\nfreeze:copy\n").unwrap();
        assert!(check(dir.path(), "freeze:copy").unwrap_err().to_string().contains("freeze:copy"));
        assert!(check(dir.path(), "freeze:save").is_ok());
    }
}
