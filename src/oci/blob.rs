//! Blobs, streamed: written once while hashed (a temp file renamed to its digest), and read
//! back verified against the digest and size a descriptor promises.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};

/// Copy buffer: large enough that syscalls and hashing calls cost nothing next to the bytes.
pub const BUF: usize = 1 << 20;

/// A blob's sha256 (hex) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

impl BlobRef {
    /// `sha256:<hex>`.
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.sha256)
    }
}

/// The hex part of a `sha256:` digest, checked (by the registry's digest rules, the one place
/// they live); other algorithms are refused.
pub fn sha256_hex(digest: &str) -> Result<&str> {
    crate::registry::reference::Digest::parse(digest)
        .map_err(|e| anyhow::anyhow!("{}; kvci reads sha256 digests only: copy the image again with sha256 (the default)", e.message))?;
    Ok(&digest["sha256:".len()..])
}

/// Writes a blob into `blobs/sha256/` of a layout, hashing as it goes; [`BlobWriter::finish`]
/// renames it to its digest. Dropped unfinished, the temp file goes away.
pub struct BlobWriter {
    file: tempfile::NamedTempFile,
    hash: Sha256,
    size: u64,
    dir: PathBuf,
}

impl BlobWriter {
    /// A new blob in `blobs_dir` (the layout's `blobs/sha256`).
    pub fn new(blobs_dir: &Path) -> Result<BlobWriter> {
        let file = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(blobs_dir)
            .with_context(|| format!("creating a blob in {}", blobs_dir.display()))?;
        Ok(BlobWriter { file, hash: Sha256::new(), size: 0, dir: blobs_dir.to_path_buf() })
    }

    /// Moves the blob to `blobs/sha256/<digest>` (an existing blob of that digest is kept).
    pub fn finish(mut self) -> Result<BlobRef> {
        self.file.flush()?;
        let blob = BlobRef { sha256: format!("{:x}", self.hash.finalize()), size: self.size };
        persist(self.file, &self.dir, blob)
    }
}

/// Names a finished temp blob by its digest.
fn persist(file: tempfile::NamedTempFile, dir: &Path, blob: BlobRef) -> Result<BlobRef> {
    let dest = dir.join(&blob.sha256);
    if dest.exists() {
        return Ok(blob); // same bytes already there; the temp file is removed on drop
    }
    // Blobs are content, readable by whoever serves or copies the layout.
    std::fs::set_permissions(file.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    file.persist(&dest).with_context(|| format!("writing blob {}", dest.display()))?;
    Ok(blob)
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// JSON with object keys sorted (oci-spec keeps annotations in `HashMap`s), so the same image
/// always gets the same digests.
pub fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&serde_json::to_value(value)?)?)
}

/// Copies `src` into a new blob: each chunk read once, then hashed and written at the same time.
pub fn copy_file_into(blobs_dir: &Path, src: &Path) -> Result<BlobRef> {
    let mut from = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(blobs_dir)
        .with_context(|| format!("creating a blob in {}", blobs_dir.display()))?;
    let blob = copy_hashed(&mut from, tmp.as_file_mut()).with_context(|| format!("copying {} into {}", src.display(), blobs_dir.display()))?;
    persist(tmp, blobs_dir, blob)
}

/// Buffers in flight between the reader/writer and the hashing thread.
const IN_FLIGHT: usize = 3;

/// Copies `r` to `w` and returns the sha256 and size of what passed. The hash runs on a
/// second thread over the same buffers while this one writes: the two costs of a copy
/// (hashing, and the kernel filling page cache) overlap instead of adding up.
pub fn copy_hashed(r: &mut impl Read, w: &mut impl Write) -> std::io::Result<BlobRef> {
    use std::sync::{mpsc, Arc};
    let (to_hash, hash_rx) = mpsc::sync_channel::<(Arc<Vec<u8>>, usize)>(IN_FLIGHT);
    let (back, back_rx) = mpsc::channel::<Arc<Vec<u8>>>();
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut h = Sha256::new();
            for (buf, n) in hash_rx {
                h.update(&buf[..n]);
                let _ = back.send(buf);
            }
            format!("{:x}", h.finalize())
        });
        let mut spare: Vec<Vec<u8>> = (0..IN_FLIGHT).map(|_| vec![0u8; BUF]).collect();
        let mut size = 0u64;
        let copied = loop {
            // A buffer is reused once the hasher is done with it (this thread's write is too).
            let mut buf = match spare.pop() {
                Some(b) => b,
                None => match back_rx.recv().ok().and_then(|a| Arc::try_unwrap(a).ok()) {
                    Some(b) => b,
                    None => break Err(std::io::Error::other("the hashing thread stopped")),
                },
            };
            let n = match r.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    spare.push(buf);
                    continue;
                }
                Err(e) => break Err(e),
            };
            let buf = Arc::new(buf);
            if to_hash.send((buf.clone(), n)).is_err() {
                break Err(std::io::Error::other("the hashing thread stopped"));
            }
            if let Err(e) = w.write_all(&buf[..n]) {
                break Err(e);
            }
            size += n as u64;
        };
        drop(to_hash);
        let sha256 = hasher.join().map_err(|_| std::io::Error::other("the hashing thread panicked"))?;
        copied.map(|()| BlobRef { sha256, size })
    })
}

/// Writes `bytes` as a blob.
pub fn write_bytes(blobs_dir: &Path, bytes: &[u8]) -> Result<BlobRef> {
    let mut blob = BlobWriter::new(blobs_dir)?;
    blob.write_all(bytes)?;
    blob.finish()
}

/// Copies everything from `r` to `w` through one large buffer; returns the byte count.
pub fn pump(r: &mut impl Read, w: &mut impl Write) -> std::io::Result<u64> {
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// A reader that hashes what passes through, to check a blob once it has been read whole.
pub struct HashingReader<R> {
    inner: R,
    hash: Sha256,
    size: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hash: Sha256::new(), size: 0 }
    }

    /// Reads what is left (trailing bytes count too), then checks digest and size against
    /// `expected`; `what` names the blob in the error.
    pub fn verify(mut self, expected: &BlobRef, what: &str) -> Result<()> {
        std::io::copy(&mut self, &mut std::io::sink()).with_context(|| format!("reading {what}"))?;
        let got = format!("{:x}", self.hash.finalize());
        if self.size != expected.size || got != expected.sha256 {
            bail!(
                "{what} is damaged: expected sha256:{} ({} bytes), read sha256:{got} ({} bytes); \
                 export or copy the image again",
                expected.sha256,
                expected.size,
                self.size
            );
        }
        Ok(())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// A writer that hashes what passes through (file contents as extracted, for layer ids).
pub struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hash: Sha256::new() }
    }

    /// The sha256 (hex) of everything written, and the inner writer.
    pub fn finish(self) -> (String, W) {
        (format!("{:x}", self.hash.finalize()), self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Copies blob `src` to `dest`, verifying it against `expected` while copying; a damaged blob
/// leaves no `dest` behind.
pub fn copy_verified(src: &Path, expected: &BlobRef, dest: &Path, what: &str) -> Result<()> {
    let mut file = open_sized(src, expected, what)?;
    let mut out = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let copied = copy_hashed(&mut file, &mut out).with_context(|| format!("copying {what} to {}", dest.display()));
    let checked = copied.and_then(|got| same(expected, &got, what));
    if checked.is_err() {
        drop(out);
        let _ = std::fs::remove_file(dest);
    }
    checked
}

/// Reads the blob at `src` and checks it against `expected`, keeping nothing.
pub fn verify(src: &Path, expected: &BlobRef, what: &str) -> Result<()> {
    let mut file = open_sized(src, expected, what)?;
    let got = copy_hashed(&mut file, &mut std::io::sink()).with_context(|| format!("reading {what} ({})", src.display()))?;
    same(expected, &got, what)
}

/// Opens a blob whose size must be `expected.size`.
fn open_sized(src: &Path, expected: &BlobRef, what: &str) -> Result<File> {
    let file = File::open(src).with_context(|| format!("{what} is missing ({}); export or copy the image again", src.display()))?;
    let len = file.metadata()?.len();
    if len != expected.size {
        bail!("{what} is damaged: {} has {len} bytes, the manifest says {}; export or copy the image again", src.display(), expected.size);
    }
    Ok(file)
}

fn same(expected: &BlobRef, got: &BlobRef, what: &str) -> Result<()> {
    if got != expected {
        bail!(
            "{what} is damaged: expected sha256:{} ({} bytes), read sha256:{} ({} bytes); export or copy the image again",
            expected.sha256,
            expected.size,
            got.sha256,
            got.size
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_is_named_by_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let b = write_bytes(dir.path(), b"hello").unwrap();
        assert_eq!(b.sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(std::fs::read(dir.path().join(&b.sha256)).unwrap(), b"hello");
        // The same bytes again: one file, no temp left.
        write_bytes(dir.path(), b"hello").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn damaged_blob_is_refused_and_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let b = write_bytes(dir.path(), b"payload").unwrap();
        let src = dir.path().join(&b.sha256);
        let dest = dir.path().join("out");
        copy_verified(&src, &b, &dest, "blob x").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"payload");
        std::fs::write(&src, b"paylaod").unwrap();
        let err = copy_verified(&src, &b, &dest, "blob x").unwrap_err().to_string();
        assert!(err.contains("damaged") && err.contains("again"), "{err}");
        assert!(!dest.exists());
        let err = copy_verified(&dir.path().join("nope"), &b, &dest, "blob y").unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn pipelined_copy_hashes_what_it_writes() {
        // Several buffers' worth, not a multiple of the buffer size.
        let data: Vec<u8> = (0..(3 * BUF + 12_345)).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        let got = copy_hashed(&mut &data[..], &mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(got, BlobRef { sha256: format!("{:x}", Sha256::digest(&data)), size: data.len() as u64 });
        let empty = copy_hashed(&mut &b""[..], &mut Vec::new()).unwrap();
        assert_eq!(empty.sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        // A failing writer is reported, not hung on.
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert!(copy_hashed(&mut &data[..], &mut Full).unwrap_err().to_string().contains("disk full"));
    }

    #[test]
    fn digests_are_checked_for_form() {
        assert!(sha256_hex(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(sha256_hex(&format!("sha512:{}", "a".repeat(128))).unwrap_err().to_string().contains("sha256"));
        assert!(sha256_hex("sha256:../../etc").is_err());
    }
}
