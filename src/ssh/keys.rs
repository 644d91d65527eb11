//! The cluster's ssh key pair: `id_ed25519` (OpenSSH private key, mode 0600) and
//! `id_ed25519.pub` (`ssh-ed25519 AAAA… kvci`), created once and reused.

use std::fs::{self, DirBuilder, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey, PublicKey};

use super::SshError;

/// Comment on the generated key: tells whoever reads a guest's authorized_keys where it came from.
pub const KEY_COMMENT: &str = "kvci";

/// Where a key pair lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPaths {
    /// `DIR/id_ed25519`, OpenSSH private key format, mode 0600.
    pub private: PathBuf,
    /// `DIR/id_ed25519.pub`, one OpenSSH public key line.
    pub public: PathBuf,
}

impl KeyPaths {
    /// The paths of the pair in `dir` (nothing is created).
    pub fn in_dir(dir: &Path) -> Self {
        KeyPaths { private: dir.join("id_ed25519"), public: dir.join("id_ed25519.pub") }
    }
}

/// Creates `dir` (mode 0700) and the key pair in it if missing, or loads the existing pair.
///
/// The public file is rewritten from the private key if it is missing or does not match it, so
/// that what guests get as authorized_keys always belongs to the key kvci signs with. Safe against
/// a concurrent call: the private key is written to a temporary file and linked into place only
/// if no other process got there first.
pub fn ensure_keypair(dir: &Path) -> Result<KeyPaths, SshError> {
    let paths = KeyPaths::in_dir(dir);
    DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|source| SshError::KeyIo {
        action: "create",
        path: dir.into(),
        source,
    })?;
    let key = match load_private_key(&paths.private) {
        Ok(key) => key,
        Err(SshError::KeyIo { source, .. }) if source.kind() == ErrorKind::NotFound => {
            create_private(dir, &paths.private)?
        }
        Err(e) => return Err(e),
    };
    let line = public_line(&key)?;
    let current = fs::read_to_string(&paths.public).ok();
    if current.as_deref().map(str::trim) != Some(line.as_str()) {
        write_new(dir, &paths.public, 0o644, format!("{line}\n").as_bytes(), true)?;
    }
    Ok(paths)
}

/// The line to put into a guest's `authorized_keys`: the content of `paths.public`, checked to be
/// an OpenSSH public key.
pub fn authorized_keys_line(paths: &KeyPaths) -> Result<String, SshError> {
    let text = fs::read_to_string(&paths.public).map_err(|source| SshError::KeyIo {
        action: "read",
        path: paths.public.clone(),
        source,
    })?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or("");
    PublicKey::from_openssh(line)
        .map_err(|e| SshError::KeyInvalid { path: paths.public.clone(), reason: e.to_string() })?;
    Ok(line.to_string())
}

/// Loads an unencrypted ed25519 private key in OpenSSH format.
pub fn load_private_key(path: &Path) -> Result<PrivateKey, SshError> {
    let text =
        fs::read_to_string(path).map_err(|source| SshError::KeyIo { action: "read", path: path.into(), source })?;
    let invalid = |reason: String| SshError::KeyInvalid { path: path.into(), reason };
    let key = PrivateKey::from_openssh(text).map_err(|e| invalid(e.to_string()))?;
    if key.is_encrypted() {
        return Err(invalid("it is encrypted with a passphrase".into()));
    }
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(invalid(format!("it is {}, kvci uses ed25519", key.algorithm())));
    }
    Ok(key)
}

/// Reads an image's own login key (kubevirtci ships Vagrant's insecure key: RSA, PEM or
/// OpenSSH format; ed25519 works too). Unlike the cluster key, any algorithm russh speaks.
pub fn load_login_key(path: &Path) -> Result<PrivateKey, SshError> {
    let text =
        fs::read_to_string(path).map_err(|source| SshError::KeyIo { action: "read", path: path.into(), source })?;
    russh::keys::decode_secret_key(&text, None).map_err(|e| SshError::KeyInvalid { path: path.into(), reason: e.to_string() })
}

fn public_line(key: &PrivateKey) -> Result<String, SshError> {
    let mut public = key.public_key().clone();
    public.set_comment(KEY_COMMENT);
    // Encoding an in-memory ed25519 key cannot fail; map it anyway rather than panic.
    public.to_openssh().map_err(|e| SshError::KeyInvalid { path: "(generated key)".into(), reason: e.to_string() })
}

fn create_private(dir: &Path, path: &Path) -> Result<PrivateKey, SshError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| SshError::KeyIo { action: "read", path: "getrandom(2)".into(), source: e.into() })?;
    let key = PrivateKey::new(KeypairData::Ed25519(Ed25519Keypair::from_seed(&seed)), KEY_COMMENT)
        .map_err(|e| SshError::KeyInvalid { path: path.into(), reason: e.to_string() })?;
    seed.fill(0);
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| SshError::KeyInvalid { path: path.into(), reason: e.to_string() })?;
    if write_new(dir, path, 0o600, pem.as_bytes(), false)? {
        Ok(key)
    } else {
        // Another kvci created the key between our look and our write: use theirs.
        load_private_key(path)
    }
}

/// Writes `bytes` to a temporary file created with `mode` in `dir` (never wider, not even for a
/// moment), then moves it to `path`. Without `overwrite`, returns false if `path` already exists.
fn write_new(dir: &Path, path: &Path, mode: u32, bytes: &[u8], overwrite: bool) -> Result<bool, SshError> {
    let io = |action, source| SshError::KeyIo { action, path: path.into(), source };
    let mut tmp = tempfile::Builder::new()
        .prefix(".kvci-key-")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(|e| io("create", e))?;
    tmp.write_all(bytes).and_then(|()| tmp.as_file().sync_all()).map_err(|e| io("write", e))?;
    if overwrite {
        tmp.persist(path).map_err(|e| io("write", e.error))?;
        return Ok(true);
    }
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(true),
        Err(e) if e.error.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io("create", e.error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn creates_pair_with_private_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ssh");
        let paths = ensure_keypair(&dir).unwrap();
        assert_eq!(paths, KeyPaths::in_dir(&dir));
        assert_eq!(mode(&paths.private), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let line = authorized_keys_line(&paths).unwrap();
        assert!(line.starts_with("ssh-ed25519 AAAA"), "{line}");
        assert!(line.ends_with(" kvci"), "{line}");
        assert_eq!(fs::read_to_string(&paths.public).unwrap(), format!("{line}\n"));
    }

    #[test]
    fn second_call_returns_same_key() {
        let tmp = tempfile::tempdir().unwrap();
        let first = ensure_keypair(tmp.path()).unwrap();
        let private = fs::read(&first.private).unwrap();
        let line = authorized_keys_line(&first).unwrap();
        let second = ensure_keypair(tmp.path()).unwrap();
        assert_eq!(fs::read(&second.private).unwrap(), private);
        assert_eq!(authorized_keys_line(&second).unwrap(), line);
        // No temporary files left behind.
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 2);
    }

    #[test]
    fn private_key_loads_back_with_russh() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = ensure_keypair(tmp.path()).unwrap();
        let key = russh::keys::load_secret_key(&paths.private, None).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
        let public = russh::keys::load_public_key(&paths.public).unwrap();
        assert_eq!(key.public_key().key_data(), public.key_data());
    }

    #[test]
    fn missing_or_stale_public_file_is_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = ensure_keypair(tmp.path()).unwrap();
        let line = authorized_keys_line(&paths).unwrap();
        fs::remove_file(&paths.public).unwrap();
        ensure_keypair(tmp.path()).unwrap();
        assert_eq!(authorized_keys_line(&paths).unwrap(), line);
        let other = ensure_keypair(&tmp.path().join("other")).unwrap();
        fs::copy(&other.public, &paths.public).unwrap();
        ensure_keypair(tmp.path()).unwrap();
        assert_eq!(authorized_keys_line(&paths).unwrap(), line);
    }

    #[test]
    fn garbage_private_key_is_an_error_that_says_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("id_ed25519"), "not a key").unwrap();
        let err = ensure_keypair(tmp.path()).unwrap_err();
        assert!(matches!(err, SshError::KeyInvalid { .. }), "{err:?}");
        assert!(err.to_string().contains("remove it"), "{err}");
    }
}
