//! `kvci image check`: every layer against the content hashes recorded when it was committed
//! (`content.json`), every image name against the layers it needs.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::store::{Manifest, Store};

/// The file in each layer directory that records its files' hashes.
pub const CONTENT: &str = "content.json";

/// What a layer held when it was committed: relative path → sha256 (hex).
pub type Content = BTreeMap<String, String>;

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damage {
    /// The image name or layer id concerned.
    pub what: String,
    /// What is wrong with it.
    pub problem: String,
}

/// What `check` found.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Layers whose files all match their record.
    pub layers_ok: usize,
    /// Layers from an older kvci, with no record to check against.
    pub layers_unrecorded: Vec<String>,
    /// Images whose layers are all there and intact.
    pub images_ok: usize,
    /// Everything damaged.
    pub damaged: Vec<Damage>,
}

/// sha256 of every regular file under `dir` (relative paths), except the record itself.
pub fn hash_tree(dir: &Path) -> Result<Content> {
    let mut out = Content::new();
    hash_into(dir, dir, &mut out)?;
    Ok(out)
}

fn hash_into(root: &Path, dir: &Path, out: &mut Content) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let p = e.path();
        let kind = e.file_type()?;
        if kind.is_dir() {
            hash_into(root, &p, out)?;
        } else if kind.is_file() {
            let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().into_owned();
            if rel != CONTENT {
                out.insert(rel, hash_file(&p)?);
            }
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", h.finalize()))
}

/// Compares a layer directory with its record.
pub fn check_layer(dir: &Path, recorded: &Content) -> Vec<String> {
    let mut problems = Vec::new();
    let found = match hash_tree(dir) {
        Ok(f) => f,
        Err(e) => return vec![format!("{e:#}")],
    };
    for (file, sum) in recorded {
        match found.get(file) {
            None => problems.push(format!("{file} is missing")),
            Some(s) if s != sum => problems.push(format!("{file} changed since it was committed (torn or edited)")),
            Some(_) => {}
        }
    }
    for file in found.keys().filter(|f| !recorded.contains_key(*f)) {
        problems.push(format!("{file} was not part of the layer"));
    }
    problems
}

/// Checks the whole store (read-only; no lock needed).
pub fn check(store: &Store) -> Result<Report> {
    let mut report = Report::default();
    let layers_dir = store.root().join("layers");
    for e in std::fs::read_dir(&layers_dir)? {
        let e = e?;
        let id = e.file_name().to_string_lossy().into_owned();
        let record = e.path().join(CONTENT);
        match std::fs::read(&record) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => report.layers_unrecorded.push(id),
            Err(err) => report.damaged.push(Damage { what: format!("layer {id}"), problem: format!("cannot read {CONTENT}: {err}") }),
            Ok(bytes) => match serde_json::from_slice::<Content>(&bytes) {
                Err(err) => report.damaged.push(Damage { what: format!("layer {id}"), problem: format!("{CONTENT} is unreadable: {err}") }),
                Ok(recorded) => {
                    let problems = check_layer(&e.path(), &recorded);
                    if problems.is_empty() {
                        report.layers_ok += 1;
                    }
                    for p in problems {
                        report.damaged.push(Damage { what: format!("layer {id}"), problem: p });
                    }
                }
            },
        }
    }
    let listing = store.list()?;
    for (path, why) in &listing.unreadable {
        report.damaged.push(Damage { what: path.display().to_string(), problem: format!("image manifest cannot be read: {why}") });
    }
    for m in &listing.images {
        let problems = image_problems(store, m);
        if problems.is_empty() {
            report.images_ok += 1;
        }
        for p in problems {
            report.damaged.push(Damage { what: format!("image {}", m.name), problem: p });
        }
    }
    Ok(report)
}

/// What an image needs that is missing: its layer, every parent, its boot layer, the files
/// its manifest names.
fn image_problems(store: &Store, m: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    let dir = store.layer_dir(&m.id);
    if !dir.is_dir() {
        return vec![format!("its layer {} is missing", m.id)];
    }
    let mut files = vec![m.disk.clone()];
    if let Some(f) = &m.frozen {
        files.extend(f.nodes.iter().flat_map(|n| [n.disk.clone(), n.state.clone()]));
    }
    for f in files {
        if !dir.join(&f).exists() {
            problems.push(format!("{f} is missing from its layer"));
        }
    }
    let mut parent = m.parent.clone();
    while let Some(p) = parent {
        match store.layer_manifest(&p) {
            Ok(Some(pm)) => parent = pm.parent,
            _ => {
                problems.push(format!("parent layer {p} is missing"));
                break;
            }
        }
    }
    if let Some(boot) = &m.boot_layer {
        if !store.layer_dir(boot).is_dir() {
            problems.push(format!("boot layer {boot} (kernel, initrd) is missing"));
        }
    }
    problems
}
