//! Writing an initramfs: a newc cpio archive (what the kernel unpacks), built in memory from a
//! list of entries so it is the same bytes for the same inputs.

use std::io::Write;

use cpio::newc::{Builder, ModeFileType};

/// One file or directory in the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory (mode 0755).
    Dir(String),
    /// A regular file with its permission bits.
    File {
        /// Path inside the archive, no leading slash.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Contents.
        data: Vec<u8>,
    },
}

/// Writes `entries` as a newc archive (owner root, mtime 0, with the trailer).
pub fn write<W: Write>(entries: &[Entry], out: W) -> std::io::Result<W> {
    let mut out = out;
    for (i, entry) in entries.iter().enumerate() {
        let ino = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let (builder, data): (Builder, &[u8]) = match entry {
            Entry::Dir(path) => (
                Builder::new(path).mode(0o755).set_mode_file_type(ModeFileType::Directory).nlink(2),
                &[],
            ),
            Entry::File { path, mode, data } => {
                (Builder::new(path).mode(*mode).set_mode_file_type(ModeFileType::Regular).nlink(1), data)
            }
        };
        let size = u32::try_from(data.len()).map_err(|_| std::io::Error::other("file too large for cpio"))?;
        let mut w = builder.ino(ino).uid(0).gid(0).mtime(0).write(out, size);
        w.write_all(data)?;
        out = w.finish()?;
    }
    cpio::newc::trailer(out)
}

/// Adds the parent directories of `path` to `entries` (once each, parents first).
pub fn add_parents(entries: &mut Vec<Entry>, path: &str) {
    let mut prefix = String::new();
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        let dir = Entry::Dir(prefix.clone());
        if !entries.contains(&dir) {
            entries.push(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn archive_reads_back() {
        let mut entries = Vec::new();
        add_parents(&mut entries, "lib/modules/drivers/virtio.ko");
        entries.push(Entry::File { path: "lib/modules/drivers/virtio.ko".into(), mode: 0o644, data: b"ko".to_vec() });
        entries.push(Entry::File { path: "init".into(), mode: 0o755, data: b"#!/bin/sh\n".to_vec() });
        let bytes = write(&entries, Vec::new()).unwrap();
        assert_eq!(bytes.len() % 4, 0);

        let mut names = Vec::new();
        let mut rest = &bytes[..];
        loop {
            let mut r = cpio::NewcReader::new(rest).unwrap();
            if r.entry().is_trailer() {
                break;
            }
            let e = r.entry();
            let name = e.name().to_string();
            names.push((name.clone(), e.mode(), e.uid()));
            let mut data = Vec::new();
            r.read_to_end(&mut data).unwrap();
            if name == "init" {
                assert_eq!(data, b"#!/bin/sh\n");
            }
            rest = r.finish().unwrap();
        }
        assert_eq!(names[0], ("lib".to_string(), 0o040755, 0));
        assert_eq!(names.len(), 5);
        assert_eq!(names[4], ("init".to_string(), 0o100755, 0));
    }

    #[test]
    fn same_input_same_bytes() {
        let e = [Entry::Dir("bin".into()), Entry::File { path: "bin/x".into(), mode: 0o755, data: vec![1, 2, 3] }];
        assert_eq!(write(&e, Vec::new()).unwrap(), write(&e, Vec::new()).unwrap());
    }
}
