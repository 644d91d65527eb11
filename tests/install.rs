//! An installed kvci: `cargo install` into a temporary root, run from another directory with a
//! fresh data directory and the source tree hidden, reads its compiled-in recipes (written out
//! under the data directory) and boots `tiny`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::stderr;

/// The target directory the tests were built in (`<target>/debug/kvci`).
fn target_dir() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_kvci"));
    exe.parent().and_then(Path::parent).expect("the binary is in <target>/<profile>/").to_path_buf()
}

/// `cargo install --debug` into `root`. Its own target directory under the tests' (kept, so only
/// the first run compiles): installing builds without the dev-dependencies' features, so in the
/// tests' `debug/` it would rebuild half the tree and replace the `kvci` other tests run.
fn cargo_install(root: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let out = Command::new(cargo)
        .args(["install", "--offline", "--locked", "--debug", "--path", env!("CARGO_MANIFEST_DIR"), "--root"])
        .arg(root)
        .env("CARGO_TARGET_DIR", target_dir().join("install-test"))
        .output()
        .expect("running cargo install");
    assert!(out.status.success(), "cargo install failed:\n{}", stderr(&out));
    eprintln!("cargo install took {:.1}s", started.elapsed().as_secs_f64());
    root.join("bin/kvci")
}

/// The installed kvci, run from `cwd` with `data` as its data directory and no
/// `KVCI_IMAGES_DIR`; as root, in a mount namespace of its own where the source tree is an
/// empty read-only tmpfs, so nothing can be read from there.
struct Installed {
    bin: PathBuf,
    cwd: PathBuf,
    data: PathBuf,
}

impl Installed {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = if nix::unistd::geteuid().is_root() {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "sh", "-c", r#"mount -t tmpfs -o ro kvci-hidden "$0" && exec "$@""#])
                .arg(env!("CARGO_MANIFEST_DIR"))
                .arg(&self.bin);
            c
        } else {
            Command::new(&self.bin)
        };
        c.args(args)
            .current_dir(&self.cwd)
            .env("KVCI_DATA_DIR", &self.data)
            .env_remove("KVCI_IMAGES_DIR")
            .env_remove("KVCI_QEMU")
            .env_remove("CARGO_MANIFEST_DIR");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running the installed kvci")
    }
}

/// `vm down` whatever happens.
struct Down<'a>(&'a Installed, &'a str);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["vm", "down", "--name", self.1, "--timeout", "20"]);
    }
}

#[test]
fn installed_kvci_reads_its_compiled_in_recipes_and_boots_tiny() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, cwd, data) = (tmp.path().join("root"), tmp.path().join("cwd"), tmp.path().join("data"));
    std::fs::create_dir_all(&cwd).unwrap();
    let kvci = Installed { bin: cargo_install(&root), cwd, data: data.clone() };
    let tiny = common::copy_tiny_into(&data);

    // Recipes come from the data directory: the compiled-in tree, written out under its hash.
    let recipes = data.join("cache/recipes").join(kvci::image::recipes::content_hash(kvci::image::recipes::EMBEDDED));
    let out = kvci.run(&["image", "build", "no-such-provider", "--accel", "tcg"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains(&format!("no provider \"no-such-provider\" in {}", recipes.display())), "{err}");
    assert!(err.contains("debian-12, etcd, k8s-1.34"), "{err}");
    let entries: Vec<_> = std::fs::read_dir(data.join("cache/recipes")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries, std::slice::from_ref(&recipes));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("images");
    for f in ["debian-12/provider.toml", "debian-12/rootfs/usr/libexec/kvci/setup", "etcd/up/etcd.sh"] {
        assert_eq!(std::fs::read(recipes.join(f)).unwrap(), std::fs::read(src.join(f)).unwrap(), "{f}");
    }
    let exec = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(recipes.join("etcd/up/etcd.sh")).unwrap().permissions());
    assert_eq!(exec & 0o777, 0o755);

    // tiny's compiled-in recipe matches the copied layer: found, not rebuilt.
    let out = kvci.run(&["image", "build", "tiny"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("tiny:latest {tiny}"));
    assert!(!stderr(&out).contains("building image"), "{}", stderr(&out));

    let name = "it-install";
    let up = kvci.run(&["vm", "up", "--name", name, "--accel", "tcg"]);
    let _down = Down(&kvci, name);
    assert!(up.status.success(), "vm up failed:\n{}", stderr(&up));
    let ssh = kvci.run(&["vm", "ssh", "--name", name, "node01", "--", "true"]);
    assert!(ssh.status.success(), "{}", stderr(&ssh));
    let down = kvci.run(&["vm", "down", "--name", name, "--timeout", "20"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(!data.join("clusters").join(name).exists());
}
