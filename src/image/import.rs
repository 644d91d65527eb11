//! Root layers from outside: a local qcow2 with its kernel and initrd, or the same downloaded
//! over HTTP(S) with a progress bar and sha256 checks. Also the one place root-layer manifests
//! are written (the debootstrap builder uses it too).

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::provider::{Download, Loaded};
use super::store::{Image, Manifest, Store};

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Downloads `d` to `dest`, streaming (never the whole file in memory), and checks its sha256.
/// A mismatch removes the file and says both digests.
pub fn download(d: &Download, dest: &Path) -> Result<()> {
    let response = ureq::get(&d.url).call().with_context(|| format!("downloading {}", d.url))?;
    let total = response.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let bar = indicatif::ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(d.url.rsplit('/').next().unwrap_or("download").to_string());
    let mut body = response.into_body().into_reader();
    let mut out = std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = body.read(&mut buf).with_context(|| format!("reading {}", d.url))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let got = format!("{:x}", h.finalize());
    if !got.eq_ignore_ascii_case(d.sha256.trim()) {
        drop(out);
        let _ = std::fs::remove_file(dest);
        bail!("sha256 mismatch for {}: the recipe says {}, the download is {got}", d.url, d.sha256);
    }
    Ok(())
}

/// Commits a root layer from a disk (any format qemu-img reads; made standalone qcow2), a kernel
/// and an initrd (takes the store lock for the commit only).
pub fn commit_root_layer(store: &Store, provider: &Loaded, files: [&Path; 3], append: &str, id: &str, name: &str) -> Result<Image> {
    let [disk, kernel, initrd] = files;
    let staging = store.staging()?;
    crate::disk::check(disk).with_context(|| format!("{} is not a usable disk image", disk.display()))?;
    crate::disk::standalone(disk, &staging.path().join("disk.qcow2")).with_context(|| format!("{} is not a usable disk image", disk.display()))?;
    std::fs::copy(kernel, staging.path().join("vmlinuz")).with_context(|| format!("copying {}", kernel.display()))?;
    std::fs::copy(initrd, staging.path().join("initrd.img")).with_context(|| format!("copying {}", initrd.display()))?;
    let append = format!("{append} {}", provider.recipe.kernel_args).trim().to_string();
    let defaults = &provider.recipe.defaults;
    let manifest = Manifest {
        nodes: defaults.nodes,
        shape: defaults.shape()?,
        ..Manifest::root(name, id, append, defaults.memory_mib.unwrap_or(1024), defaults.cpus.unwrap_or(1))
    };
    store.commit_staged(&store.lock()?, staging, manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_once(body: &'static [u8]) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes());
            let _ = s.write_all(body);
        });
        format!("http://{addr}/file")
    }

    #[test]
    fn download_checks_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let good = format!("{:x}", Sha256::digest(b"payload"));
        download(&Download { url: serve_once(b"payload"), sha256: good }, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"payload");

        let err = download(&Download { url: serve_once(b"payload"), sha256: "00".repeat(32) }, &dest).unwrap_err().to_string();
        assert!(err.contains("sha256 mismatch"), "{err}");
        assert!(!dest.exists(), "a bad download was kept");
    }
}
