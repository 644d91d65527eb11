//! The registry on disk. Blocking calls: the server runs them off its runtime thread.
//!
//! ```text
//! <root>/blobs/sha256/<hex>                     content-addressed blobs and manifests
//! <root>/uploads/<scratch>/<id>                 uploads in progress (same filesystem), one
//!                                               scratch directory per live registry
//! <root>/repositories/<name>/_manifests/<hex>   this repository has manifest <hex>; holds its media type
//! <root>/repositories/<name>/_tags/<tag>        tag → `sha256:<hex>`
//! ```
//!
//! Everything lands by rename from `uploads/`, so a crash leaves no half-written blob, manifest
//! or tag, only garbage in `uploads/` that a later start removes (see [`super::scratch`]).
//! Repository components cannot start with `_`, so `_manifests` and `_tags` never collide with
//! a nested repository.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use super::errors::{Code, RegistryError, Result};
use super::manifest;
use super::reference::{Digest, Reference};
use super::scratch::{self, Scratch};

/// A registry directory. Clones share one scratch directory, made on the first write.
#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
    scratch: Arc<Mutex<Option<Scratch>>>,
}

/// An upload in progress: the file and the hash of everything appended so far. Dropped
/// without becoming a blob, it removes its file.
pub struct Upload {
    /// Session id (a file name in this registry's scratch directory).
    pub id: String,
    /// The repository it was started for.
    pub repo: String,
    /// The file, until [`Storage::commit`] renames it into `blobs/`.
    path: Option<PathBuf>,
    file: File,
    hasher: Sha256,
    size: u64,
}

/// Where an upload stood before a chunk, to go back to if the chunk fails.
pub struct Mark {
    size: u64,
    hasher: Sha256,
}

impl Upload {
    /// Appends `data`, hashing it on the way.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.hasher.update(data);
        self.size += data.len() as u64;
        Ok(())
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the upload stands now.
    pub fn mark(&self) -> Mark {
        Mark { size: self.size, hasher: self.hasher.clone() }
    }

    /// Cuts the file, the hash and the size back to `mark`.
    pub fn rewind(&mut self, mark: Mark) -> io::Result<()> {
        self.file.set_len(mark.size)?;
        self.file.seek(SeekFrom::Start(mark.size))?;
        self.hasher = mark.hasher;
        self.size = mark.size;
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = fs::remove_file(path);
        }
    }
}

fn io_err(e: io::Error) -> RegistryError {
    RegistryError::internal(e)
}

impl Storage {
    /// Opens the registry at `root`, removing the uploads no live registry holds. Directories
    /// are made on the first write, so a cluster that never pushes leaves nothing behind.
    pub fn open(root: &Path) -> io::Result<Storage> {
        let s = Storage { root: root.to_path_buf(), scratch: Arc::default() };
        let removed = scratch::sweep(&s.uploads())?;
        if removed > 0 {
            tracing::info!(dir = %root.display(), removed, "removed uploads left by stopped registries");
        }
        Ok(s)
    }

    /// The registry's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// This registry's scratch directory, made and locked on first use.
    fn scratch(&self) -> Result<PathBuf> {
        // A panic while holding it leaves an Option that is still consistent.
        let mut held = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = held.as_ref() {
            return Ok(s.path().to_path_buf());
        }
        let made = held.insert(Scratch::create(&self.uploads(), random_id).map_err(io_err)?);
        Ok(made.path().to_path_buf())
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    fn repo(&self, name: &str) -> PathBuf {
        self.root.join("repositories").join(name)
    }

    /// The size of blob `d`, if it is stored.
    pub fn blob_size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(d)).ok().filter(|m| m.is_file()).map(|m| m.len())
    }

    /// Opens blob `d` for reading, with its size.
    pub fn open_blob(&self, d: &Digest) -> Result<(File, u64)> {
        let f = File::open(self.blob_path(d)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RegistryError::new(Code::BlobUnknown, format!("blob {d} is not in the registry")),
            _ => io_err(e),
        })?;
        let len = f.metadata().map_err(io_err)?.len();
        Ok((f, len))
    }

    /// Starts an upload for `repo`.
    pub fn start_upload(&self, repo: &str) -> Result<Upload> {
        let id = random_id();
        let path = self.scratch()?.join(&id);
        let file = File::options().write(true).create_new(true).open(&path).map_err(io_err)?;
        Ok(Upload { id, repo: repo.to_string(), path: Some(path), file, hasher: Sha256::new(), size: 0 })
    }

    /// Verifies everything uploaded against `expected` and stores it as that blob. On a
    /// mismatch (or any failure) the upload is discarded and nothing is stored.
    pub fn commit(&self, mut upload: Upload, expected: &Digest) -> Result<()> {
        let got = Digest::from_sha256(&std::mem::take(&mut upload.hasher).finalize());
        if &got != expected {
            return Err(RegistryError::new(Code::DigestInvalid, format!("upload hashes to {got}, not {expected}: discarded")));
        }
        // Durable before visible: the name must never point at content still in flight.
        upload.file.sync_data().map_err(io_err)?;
        if self.blob_size(expected).is_some() {
            return Ok(());
        }
        let dest = self.blob_path(expected);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err)?;
        }
        let path = upload.path.as_ref().expect("an upload keeps its path until committed");
        fs::rename(path, dest).map_err(io_err)?;
        upload.path = None;
        Ok(())
    }

    /// Writes `data` to `dest` through a temporary file in the scratch directory and a rename.
    fn write_atomic(&self, dest: &Path, data: &[u8]) -> Result<()> {
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(io_err)?;
        }
        let tmp = self.scratch()?.join(format!("tmp-{}", random_id()));
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(data)?;
            f.sync_data()
        });
        match written.and_then(|_| fs::rename(&tmp, dest)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(io_err(e))
            }
        }
    }

    /// Validates and stores a manifest under `name`, linking `reference` when it is a tag.
    /// Every blob and child manifest it references must be stored already.
    pub fn put_manifest(&self, name: &str, reference: &Reference, content_type: Option<&str>, body: &[u8]) -> Result<Digest> {
        let checked = manifest::check(content_type, body)?;
        let digest = Digest::of(body);
        if let Reference::Digest(d) = reference {
            if d != &digest {
                return Err(RegistryError::new(Code::DigestInvalid, format!("manifest hashes to {digest}, not {d}")));
            }
        }
        let repo = self.repo(name);
        for r in &checked.references {
            // An index's children are fetched from this repository, so they must be linked here.
            let linked = !checked.is_index || repo.join("_manifests").join(r.digest.hex()).is_file();
            match self.blob_size(&r.digest).filter(|_| linked) {
                None => {
                    return Err(RegistryError::new(Code::ManifestBlobUnknown, format!("manifest references {}, which is not in the registry", r.digest)))
                }
                Some(size) if size != r.size => {
                    return Err(RegistryError::new(
                        Code::ManifestInvalid,
                        format!("descriptor of {} says {} bytes, the stored blob has {size}", r.digest, r.size),
                    ))
                }
                Some(_) => {}
            }
        }
        if self.blob_size(&digest).is_none() {
            self.write_atomic(&self.blob_path(&digest), body)?;
        }
        self.write_atomic(&repo.join("_manifests").join(digest.hex()), checked.media_type.as_bytes())?;
        if let Reference::Tag(tag) = reference {
            self.write_atomic(&repo.join("_tags").join(tag), digest.to_string().as_bytes())?;
        }
        Ok(digest)
    }

    /// A manifest of `name`: its media type, digest and bytes.
    pub fn get_manifest(&self, name: &str, reference: &Reference) -> Result<(String, Digest, Vec<u8>)> {
        let unknown = || RegistryError::new(Code::ManifestUnknown, format!("manifest {name}:{reference} is not in the registry"));
        let repo = self.repo(name);
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => {
                let link = read_small(&repo.join("_tags").join(t)).ok_or_else(unknown)?;
                Digest::parse(String::from_utf8_lossy(&link).trim()).map_err(|_| unknown())?
            }
        };
        let media_type = read_small(&repo.join("_manifests").join(digest.hex())).ok_or_else(unknown)?;
        let body = read_small(&self.blob_path(&digest)).ok_or_else(unknown)?;
        Ok((String::from_utf8_lossy(&media_type).into_owned(), digest, body))
    }

    /// The tags of `name`, sorted.
    pub fn tags(&self, name: &str) -> Result<Vec<String>> {
        let repo = self.repo(name);
        if !repo.join("_manifests").is_dir() {
            return Err(RegistryError::new(Code::NameUnknown, format!("repository {name} is not in the registry")));
        }
        let mut tags: Vec<String> = match fs::read_dir(repo.join("_tags")) {
            Ok(rd) => rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(e)),
        };
        tags.sort();
        Ok(tags)
    }

    /// Every repository holding at least one manifest, sorted.
    pub fn catalog(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![(self.root.join("repositories"), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.filter_map(|e| e.ok()) {
                let Ok(component) = e.file_name().into_string() else { continue };
                if component.starts_with('_') || !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = if prefix.is_empty() { component } else { format!("{prefix}/{component}") };
                if e.path().join("_manifests").is_dir() {
                    out.push(name.clone());
                }
                stack.push((e.path(), name));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Reads a link or manifest (bounded: these are small).
fn read_small(path: &Path) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path).ok()?.take(manifest::MAX_MANIFEST as u64 + 1).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// 128 random bits as hex: upload ids and temporary names.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Unique within this process is enough for a file name: time and a counter.
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        bytes[..8].copy_from_slice(&t.to_le_bytes());
        bytes[8..].copy_from_slice(&(n ^ u64::from(std::process::id())).to_le_bytes());
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::manifest::tests::image;
    use crate::registry::manifest::OCI_MANIFEST;

    fn store() -> (tempfile::TempDir, Storage) {
        let t = tempfile::tempdir().unwrap();
        let s = Storage::open(t.path()).unwrap();
        (t, s)
    }

    fn upload(s: &Storage, data: &[u8]) -> Digest {
        let d = Digest::of(data);
        let mut u = s.start_upload("r").unwrap();
        for chunk in data.chunks(3) {
            u.append(chunk).unwrap();
        }
        s.commit(u, &d).unwrap();
        d
    }

    fn entries(dir: &Path) -> usize {
        fs::read_dir(dir).map_or(0, |rd| rd.count())
    }

    #[test]
    fn nothing_is_created_until_something_is_written() {
        let t = tempfile::tempdir().unwrap();
        let s = Storage::open(&t.path().join("reg")).unwrap();
        assert_eq!(s.catalog().unwrap(), Vec::<String>::new());
        assert_eq!(s.blob_size(&Digest::of(b"")), None);
        assert!(!t.path().join("reg").exists());
    }

    #[test]
    fn an_upload_in_chunks_becomes_a_blob() {
        let (_t, s) = store();
        let d = upload(&s, b"hello registry");
        assert_eq!(s.blob_size(&d), Some(14));
        let (mut f, len) = s.open_blob(&d).unwrap();
        let mut back = String::new();
        f.read_to_string(&mut back).unwrap();
        assert_eq!((back.as_str(), len), ("hello registry", 14));
        assert_eq!(entries(&s.scratch().unwrap()), 0);
        // The same content again: stored once, no error.
        upload(&s, b"hello registry");
        assert_eq!(entries(&s.root.join("blobs/sha256")), 1);
    }

    #[test]
    fn a_wrong_digest_stores_nothing() {
        let (_t, s) = store();
        let mut u = s.start_upload("r").unwrap();
        u.append(b"actual").unwrap();
        let claimed = Digest::of(b"claimed");
        let e = s.commit(u, &claimed).unwrap_err();
        assert_eq!(e.code, Code::DigestInvalid);
        assert_eq!(s.blob_size(&claimed), None);
        assert_eq!(s.blob_size(&Digest::of(b"actual")), None);
        assert_eq!(entries(&s.scratch().unwrap()), 0);
        assert_eq!(s.open_blob(&claimed).unwrap_err().code, Code::BlobUnknown);
    }

    #[test]
    fn a_discarded_upload_leaves_nothing() {
        let (_t, s) = store();
        let mut u = s.start_upload("r").unwrap();
        u.append(b"x").unwrap();
        drop(u);
        assert_eq!(entries(&s.scratch().unwrap()), 0);
    }

    #[test]
    fn a_rewound_upload_is_back_where_it_was() {
        let (_t, s) = store();
        let mut u = s.start_upload("r").unwrap();
        u.append(b"kept ").unwrap();
        let mark = u.mark();
        u.append(b"half a chunk").unwrap();
        u.rewind(mark).unwrap();
        assert_eq!(u.size(), 5);
        assert_eq!(fs::metadata(s.scratch().unwrap().join(&u.id)).unwrap().len(), 5);
        u.append(b"rest").unwrap();
        s.commit(u, &Digest::of(b"kept rest")).unwrap();
        assert_eq!(s.blob_size(&Digest::of(b"kept rest")), Some(9));
    }

    #[test]
    fn manifests_need_their_blobs_and_tags_list_sorted() {
        let (_t, s) = store();
        let config = upload(&s, b"{}");
        let missing = Digest::of(b"never uploaded");
        let m = image(&config, 2, &[(&missing, 14)]);
        let e = s.put_manifest("a/b", &Reference::Tag("v1".into()), Some(OCI_MANIFEST), &m).unwrap_err();
        assert_eq!(e.code, Code::ManifestBlobUnknown);
        assert_eq!(s.tags("a/b").unwrap_err().code, Code::NameUnknown);

        let layer = upload(&s, b"never uploaded");
        let m = image(&config, 2, &[(&layer, 14)]);
        let d = s.put_manifest("a/b", &Reference::Tag("v2".into()), Some(OCI_MANIFEST), &m).unwrap();
        s.put_manifest("a/b", &Reference::Tag("v10".into()), Some(OCI_MANIFEST), &m).unwrap();
        s.put_manifest("a/b", &Reference::Tag("latest".into()), Some(OCI_MANIFEST), &m).unwrap();
        assert_eq!(d, Digest::of(&m));
        assert_eq!(s.tags("a/b").unwrap(), ["latest", "v10", "v2"]);

        let (mt, got, body) = s.get_manifest("a/b", &Reference::Tag("v2".into())).unwrap();
        assert_eq!((mt.as_str(), &got, &body), (OCI_MANIFEST, &d, &m));
        assert_eq!(s.get_manifest("a/b", &Reference::Digest(d.clone())).unwrap().2, m);
        // Only repositories that have it can name it by digest.
        assert_eq!(s.get_manifest("other", &Reference::Digest(d)).unwrap_err().code, Code::ManifestUnknown);
        assert_eq!(s.get_manifest("a/b", &Reference::Tag("nope".into())).unwrap_err().code, Code::ManifestUnknown);
    }

    #[test]
    fn descriptor_sizes_must_match_and_digest_references_must_match_content() {
        let (_t, s) = store();
        let config = upload(&s, b"{}");
        let e = s.put_manifest("r", &Reference::Tag("t".into()), Some(OCI_MANIFEST), &image(&config, 3, &[])).unwrap_err();
        assert_eq!(e.code, Code::ManifestInvalid);
        let m = image(&config, 2, &[]);
        let e = s.put_manifest("r", &Reference::Digest(Digest::of(b"other")), Some(OCI_MANIFEST), &m).unwrap_err();
        assert_eq!(e.code, Code::DigestInvalid);
        let d = s.put_manifest("r", &Reference::Digest(Digest::of(&m)), Some(OCI_MANIFEST), &m).unwrap();
        assert_eq!(s.tags("r").unwrap(), Vec::<String>::new());
        assert_eq!(s.get_manifest("r", &Reference::Digest(d)).unwrap().0, OCI_MANIFEST);
    }

    #[test]
    fn an_index_needs_its_manifests_in_the_same_repository() {
        let (_t, s) = store();
        let config = upload(&s, b"{}");
        let m = image(&config, 2, &[]);
        let d = s.put_manifest("one", &Reference::Tag("t".into()), Some(OCI_MANIFEST), &m).unwrap();
        let index = serde_json::json!({ "schemaVersion": 2, "mediaType": manifest::OCI_INDEX,
            "manifests": [{ "mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": m.len() }] })
        .to_string();
        let e = s.put_manifest("two", &Reference::Tag("multi".into()), Some(manifest::OCI_INDEX), index.as_bytes()).unwrap_err();
        assert_eq!(e.code, Code::ManifestBlobUnknown);
        s.put_manifest("one", &Reference::Tag("multi".into()), Some(manifest::OCI_INDEX), index.as_bytes()).unwrap();
        assert_eq!(s.tags("one").unwrap(), ["multi", "t"]);
    }

    #[test]
    fn the_catalog_finds_nested_repositories() {
        let (_t, s) = store();
        let config = upload(&s, b"{}");
        let m = image(&config, 2, &[]);
        for name in ["z", "a/b/c", "a", "a/b-d"] {
            s.put_manifest(name, &Reference::Tag("t".into()), Some(OCI_MANIFEST), &m).unwrap();
        }
        assert_eq!(s.catalog().unwrap(), ["a", "a/b-d", "a/b/c", "z"]);
    }

    #[test]
    fn uploads_of_stopped_registries_are_removed_on_open_and_live_ones_kept() {
        let (t, s) = store();
        let mut live = s.start_upload("r").unwrap();
        live.append(b"still coming").unwrap();
        // What a killed registry leaves: an unlocked scratch directory, and a loose upload file
        // from a kvci before scratch directories.
        let killed = s.uploads().join("killed");
        fs::create_dir(&killed).unwrap();
        fs::write(killed.join("abc"), vec![0u8; 1 << 20]).unwrap();
        fs::write(s.uploads().join("def"), b"older layout").unwrap();

        Storage::open(t.path()).unwrap();
        assert!(!killed.exists());
        assert!(!s.uploads().join("def").exists());
        assert_eq!(fs::metadata(s.scratch().unwrap().join(&live.id)).unwrap().len(), 12);
        assert_eq!(entries(&s.uploads()), 1);
    }
}
