//! Reading paths of container layer tars safely: entry names normalised to components under
//! the image root, `..` refused, link targets that leave the root (or are absolute) refused,
//! and overlayfs whiteouts (`.wh.NAME`, `.wh..wh..opq`) recognised.

/// Why a tar entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeEntry {
    /// The entry's own path has `..` or is not UTF-8.
    #[error("tar entry {path:?} has an unsafe path ({why})")]
    Path {
        /// The path as written in the tar.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A symlink or hard link whose target is absolute or leaves the image root.
    #[error("tar entry {path:?} links to {target:?}, which {why}")]
    Link {
        /// The link's path.
        path: String,
        /// Its target.
        target: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// The components of an entry path relative to the image root. A leading `/` or `./` is the
/// root itself (as in `docker save` tars); `.` components are dropped; `..` is refused.
pub fn components(raw: &[u8]) -> Result<Vec<String>, UnsafeEntry> {
    let lossy = || String::from_utf8_lossy(raw).into_owned();
    let text = std::str::from_utf8(raw).map_err(|_| UnsafeEntry::Path { path: lossy(), why: "not UTF-8" })?;
    if text.contains('\0') {
        return Err(UnsafeEntry::Path { path: lossy(), why: "NUL byte" });
    }
    let mut out = Vec::new();
    for c in text.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(UnsafeEntry::Path { path: lossy(), why: "`..` component" }),
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

/// Checks a link at `at` (components) pointing to `target`: hard link targets are archive
/// paths (from the root); symlink targets are relative to the link's directory. Either must
/// stay inside the root; absolute symlink targets are refused.
pub fn check_link(at: &[String], target: &[u8], hard: bool) -> Result<(), UnsafeEntry> {
    let path = at.join("/");
    let t = String::from_utf8_lossy(target).into_owned();
    let refuse = |why| Err(UnsafeEntry::Link { path: path.clone(), target: t.clone(), why });
    if target.is_empty() {
        return refuse("is empty");
    }
    if !hard && target.starts_with(b"/") {
        return refuse("is absolute");
    }
    let mut depth: i64 = if hard { 0 } else { at.len().saturating_sub(1) as i64 };
    for c in t.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return refuse("leaves the image root");
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// An overlayfs whiteout entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whiteout {
    /// `DIR/.wh.NAME`: `DIR/NAME` of lower layers is deleted.
    Remove(Vec<String>),
    /// `DIR/.wh..wh..opq`: everything in `DIR` from lower layers is deleted.
    Opaque(Vec<String>),
    /// Another `.wh..wh.*` marker (aufs bookkeeping): ignored.
    Meta,
}

/// Whether `path` (components) is a whiteout, and of what.
pub fn whiteout(path: &[String]) -> Option<Whiteout> {
    let (name, dir) = path.split_last()?;
    let rest = name.strip_prefix(".wh.")?;
    if rest == ".wh..opq" {
        return Some(Whiteout::Opaque(dir.to_vec()));
    }
    if rest.starts_with(".wh.") || rest.is_empty() {
        return Some(Whiteout::Meta);
    }
    let mut target = dir.to_vec();
    target.push(rest.to_string());
    Some(Whiteout::Remove(target))
}

impl Whiteout {
    /// Whether this whiteout deletes `path` (components) of a lower layer.
    pub fn hides(&self, path: &[String]) -> bool {
        match self {
            Whiteout::Remove(t) => path.starts_with(t),
            Whiteout::Opaque(d) => path.len() > d.len() && path.starts_with(d),
            Whiteout::Meta => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(p: &str) -> Vec<String> {
        components(p.as_bytes()).unwrap()
    }

    #[test]
    fn paths_are_normalised_under_the_root() {
        assert_eq!(c("/box.qcow2"), vec!["box.qcow2"]);
        assert_eq!(c("./disk01.qcow2"), vec!["disk01.qcow2"]);
        assert_eq!(c("usr//bin/./qemu"), vec!["usr", "bin", "qemu"]);
        assert_eq!(c("./"), Vec::<String>::new());
        for bad in ["../etc/passwd", "a/../../b", "/../box.qcow2", "a/.."] {
            assert!(matches!(components(bad.as_bytes()), Err(UnsafeEntry::Path { .. })), "{bad}");
        }
        assert!(components(b"\xff\xfe").is_err());
    }

    #[test]
    fn link_targets_must_stay_inside() {
        assert!(check_link(&c("usr/bin/python"), b"python3", false).is_ok());
        assert!(check_link(&c("etc/localtime"), b"../usr/share/zoneinfo/UTC", false).is_ok());
        assert!(check_link(&c("bin"), b"usr/bin", false).is_ok());
        let err = check_link(&c("evil"), b"/etc/shadow", false).unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
        assert!(check_link(&c("a/b"), b"../../etc", false).unwrap_err().to_string().contains("leaves"));
        assert!(check_link(&c("a"), b"x/../../y", false).is_err());
        assert!(check_link(&c("a"), b"", false).is_err());
        // Hard links name archive paths, from the root.
        assert!(check_link(&c("a/b"), b"box.qcow2", true).is_ok());
        assert!(check_link(&c("a/b"), b"/box.qcow2", true).is_ok());
        assert!(check_link(&c("a/b"), b"../x", true).is_err());
    }

    #[test]
    fn whiteouts_are_recognised() {
        assert_eq!(whiteout(&c(".wh.box.qcow2")), Some(Whiteout::Remove(c("box.qcow2"))));
        assert_eq!(whiteout(&c("etc/.wh.motd")), Some(Whiteout::Remove(c("etc/motd"))));
        assert_eq!(whiteout(&c(".wh..wh..opq")), Some(Whiteout::Opaque(vec![])));
        assert_eq!(whiteout(&c("var/.wh..wh..opq")), Some(Whiteout::Opaque(c("var"))));
        assert_eq!(whiteout(&c(".wh..wh.plnk")), Some(Whiteout::Meta));
        assert_eq!(whiteout(&c("box.qcow2")), None);
        assert_eq!(whiteout(&c("a.wh.b")), None);
    }

    #[test]
    fn whiteouts_hide_what_they_name() {
        let root_opaque = Whiteout::Opaque(vec![]);
        assert!(root_opaque.hides(&c("box.qcow2")));
        assert!(!Whiteout::Opaque(c("var")).hides(&c("box.qcow2")));
        assert!(!Whiteout::Opaque(c("var")).hides(&c("var")), "the directory itself stays");
        assert!(Whiteout::Remove(c("disk03.qcow2")).hides(&c("disk03.qcow2")));
        assert!(!Whiteout::Remove(c("disk03.qcow2")).hides(&c("disk03.qcow2.bak")));
        assert!(Whiteout::Remove(c("dir")).hides(&c("dir/file")));
        assert!(!Whiteout::Meta.hides(&c("x")));
    }
}
