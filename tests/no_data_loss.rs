//! Everyday commands that used to lose data or do something other than they say: `vm ssh`
//! stdin and command lines, `vm scp` targets, `vm freeze --to` over an existing image, image
//! names that were paths, imports of damaged layouts, and misleading messages. Real guests (TCG).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{data_dir, run, stderr, TestCluster};

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "kvci failed:\n{}", stderr(&out));
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `kvci vm ssh --name NAME node01 -- WORDS…` with `input` on its stdin.
fn ssh_with_stdin(name: &str, words: &[&str], input: &[u8]) -> Output {
    let mut child = common::kvci()
        .args(["vm", "ssh", "--name", name, "node01", "--"])
        .args(words)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn ssh(name: &str, words: &[&str]) -> Output {
    let mut args = vec!["vm", "ssh", "--name", name, "node01", "--"];
    args.extend_from_slice(words);
    run(&args)
}

/// kvci with another data directory.
fn kvci_at(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvci")).arg("--data-dir").arg(data).args(args).env_remove("KVCI_QEMU").output().unwrap()
}

#[test]
fn ssh_scp_and_freeze_keep_the_users_data() {
    let c = TestCluster::up("it-nodataloss", &[]);
    let name = c.name.as_str();

    // 1. stdin reaches the command, as with OpenSSH; -n closes it.
    let out = ssh_with_stdin(name, &["wc", "-c"], b"abc\n");
    assert_eq!(stdout(&out).trim(), "4", "{}", stderr(&out));
    let out = run(&["vm", "ssh", "--name", name, "-n", "node01", "--", "wc", "-c"]);
    assert_eq!(stdout(&out).trim(), "0", "{}", stderr(&out));

    // 2. The words are one command line for the remote shell, as ssh sends them.
    let out = ssh(name, &["uname -a; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("Linux node01"), "{}", stdout(&out));
    assert_eq!(stdout(&ssh(name, &["echo", "a  b"])), "a b\n");
    assert_eq!(stdout(&ssh(name, &["echo", "'a  b'"])), "a  b\n");
    assert_eq!(stdout(&ssh(name, &["printf", "%s-", "x", "y"])), "x-y-");

    // 3. A failed copy leaves the remote file alone; directories as targets work like scp.
    let work = tempfile::tempdir().unwrap();
    let some_dir = work.path().join("some-dir");
    std::fs::create_dir(&some_dir).unwrap();
    ok(ssh(name, &["echo keep > /root/v.json"]));
    let out = run(&["vm", "scp", "--name", name, some_dir.to_str().unwrap(), "node01:/root/v.json"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a regular file"), "{}", stderr(&out));
    assert_eq!(stdout(&ssh(name, &["cat /root/v.json"])), "keep\n", "the failed copy touched the target");
    let local_file = work.path().join("payload.txt");
    std::fs::write(&local_file, b"payload\n").unwrap();
    let out = run(&["vm", "scp", "--name", name, local_file.to_str().unwrap(), "node01:/root/v.json/x"]);
    assert!(!out.status.success(), "a path below a file must fail");
    assert_eq!(stdout(&ssh(name, &["cat /root/v.json"])), "keep\n");
    ok(run(&["vm", "scp", "--name", name, local_file.to_str().unwrap(), "node01:/root/"]));
    assert_eq!(stdout(&ssh(name, &["cat /root/payload.txt; ls -a /root | grep -c kvci-scp"])), "payload\n0\n");
    let into = work.path().join("into");
    std::fs::create_dir(&into).unwrap();
    ok(run(&["vm", "scp", "--name", name, "node01:/etc/hostname", &format!("{}/", into.display())]));
    assert_eq!(std::fs::read_to_string(into.join("hostname")).unwrap(), "node01\n");

    // 4. Freezing to an existing name is refused (the cluster runs on); --force replaces it.
    let image = "it-nodataloss-frozen";
    let _ = run(&["image", "rm", image]);
    ok(run(&["vm", "freeze", "--name", name, "--to", image, "--keep-running"]));
    let first = ok(run(&["image", "inspect", image])).stdout;
    let out = run(&["vm", "freeze", "--name", name, "--to", &format!("{image}:latest"), "--keep-running"]);
    assert!(!out.status.success(), "a second freeze to the same name succeeded");
    assert!(stderr(&out).contains("already exists") && stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(ok(run(&["image", "inspect", image])).stdout, first, "the existing image changed");
    let out = run(&["vm", "freeze", "--name", name, "--to", "tiny", "--keep-running"]);
    assert!(stderr(&out).contains("tiny:latest already exists"), "`--to tiny` is tiny:latest: {}", stderr(&out));
    assert_eq!(stdout(&ssh(name, &["cat /root/v.json"])), "keep\n", "the cluster must run on after a refused freeze");
    ok(run(&["vm", "freeze", "--name", name, "--to", image, "--keep-running", "--force"]));
    assert_ne!(ok(run(&["image", "inspect", image])).stdout, first, "--force did not replace the image");
    let names: Vec<String> = serde_json::from_slice::<Vec<serde_json::Value>>(&ok(run(&["image", "ls", "--output", "json"])).stdout)
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.iter().all(|n| n.contains(':')), "every name has its tag: {names:?}");
    ok(run(&["image", "rm", image]));
}

#[test]
fn image_names_are_never_paths() {
    ok(run(&["image", "build", "tiny"]));
    let copy = tempfile::NamedTempFile::with_suffix(".json").unwrap();
    std::fs::copy(data_dir().join("images/manifests/tiny:latest.json"), copy.path()).unwrap();
    let as_path = copy.path().with_extension("");
    let as_path = as_path.to_str().unwrap();
    for args in [
        vec!["image", "rm", as_path],
        vec!["image", "inspect", as_path],
        vec!["vm", "up", "--name", "it-names", "--image", "../manifests/tiny"],
        vec!["vm", "up", "--name", "it-names", "--image", as_path],
    ] {
        let out = run(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains("never a path"), "{args:?}: {}", stderr(&out));
    }
    assert!(copy.path().exists(), "a file outside the store was removed");
    assert!(ok(run(&["image", "inspect", "tiny"])).status.success());
    assert!(!data_dir().join("clusters/it-names").exists());
}

#[test]
fn import_checks_every_blob_even_of_layers_the_store_has() {
    let tiny = ok(run(&["image", "build", "tiny"]));
    assert!(tiny.status.success());
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("oci");
    ok(run(&["image", "export", "tiny", "--oci", layout.to_str().unwrap()]));
    let config: serde_json::Value = {
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let digest = index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(digest)).unwrap()).unwrap()
    };
    // The biggest layer blob is the disk.
    let disk = config["layers"].as_array().unwrap().iter().max_by_key(|l| l["size"].as_u64().unwrap()).unwrap();
    let blob = layout.join("blobs/sha256").join(disk["digest"].as_str().unwrap().trim_start_matches("sha256:"));
    let pristine = std::fs::read(&blob).unwrap();
    let import = || run(&["image", "import", layout.to_str().unwrap(), "--name", "it-damaged-import"]);

    let mut flipped = pristine.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    for (what, bytes) in [("a flipped byte", Some(flipped)), ("a truncated blob", Some(pristine[..pristine.len() / 2].to_vec())), ("a missing blob", None)]
    {
        std::fs::remove_file(&blob).unwrap();
        if let Some(b) = &bytes {
            std::fs::write(&blob, b).unwrap();
        }
        let out = import();
        assert!(!out.status.success(), "{what} was imported");
        let err = stderr(&out);
        assert!(err.contains("damaged") || err.contains("missing"), "{what}: {err}");
        assert!(run(&["image", "inspect", "it-damaged-import"]).status.code() != Some(0), "{what}: the name was made");
    }
    std::fs::remove_file(&blob).ok();
    std::fs::write(&blob, &pristine).unwrap();
    ok(import());
    ok(run(&["image", "rm", "it-damaged-import"]));
}

#[test]
fn messages_say_what_is_wrong() {
    let out = run(&["image", "pull", "127.0.0.1:99999/r:t"]);
    assert!(stderr(&out).contains("\"99999\" is not a TCP port"), "{}", stderr(&out));
    let out = run(&["image", "pull", "justaname"]);
    assert!(stderr(&out).contains("names no registry"), "{}", stderr(&out));

    // A store with a manifest kvci cannot read: `image ls` says so instead of listing nothing.
    let store = tempfile::tempdir().unwrap();
    ok(kvci_at(store.path(), &["image", "ls"]));
    std::fs::write(store.path().join("images/manifests/broken:latest.json"), b"{ not json").unwrap();
    let out = ok(kvci_at(store.path(), &["image", "ls"]));
    assert!(stderr(&out).contains("cannot read image manifest") && stderr(&out).contains("broken:latest.json"), "{}", stderr(&out));
    let out = kvci_at(store.path(), &["image", "prune"]);
    assert!(!out.status.success() && stderr(&out).contains("not pruning"), "{}", stderr(&out));
}

#[test]
fn a_node_dying_on_a_damaged_base_disk_names_the_file() {
    ok(run(&["image", "build", "tiny"]));
    let tiny: serde_json::Value = serde_json::from_slice(&ok(run(&["image", "inspect", "tiny"])).stdout).unwrap();
    let id = tiny["id"].as_str().unwrap();
    // A store of its own holding a copy of tiny whose disk lost its second half.
    let store = tempfile::tempdir().unwrap();
    let images = store.path().join("images");
    let layer = images.join("layers").join(id);
    std::fs::create_dir_all(&layer).unwrap();
    std::fs::create_dir_all(images.join("manifests")).unwrap();
    for f in std::fs::read_dir(data_dir().join("images/layers").join(id)).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), layer.join(f.file_name())).unwrap();
    }
    std::fs::copy(data_dir().join("images/manifests/tiny:latest.json"), images.join("manifests/tiny:latest.json")).unwrap();
    let disk = layer.join("disk.qcow2");
    let len = disk.metadata().unwrap().len();
    std::fs::set_permissions(&disk, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::OpenOptions::new().write(true).open(&disk).unwrap().set_len(len / 2).unwrap();

    let out = kvci_at(store.path(), &["vm", "up", "--name", "it-damaged", "--accel", "tcg", "--boot-timeout", "120"]);
    let _ = kvci_at(store.path(), &["vm", "down", "--name", "it-damaged"]);
    assert!(!out.status.success(), "a truncated base booted");
    let err = stderr(&out);
    assert!(err.contains("disk chain is damaged") && err.contains(disk.to_str().unwrap()), "{err}");
}

/// `kvci image check` on a store with a name whose layer is gone and a manifest it cannot read:
/// both are reported and the exit code says so; JSON lists them too.
#[test]
fn image_check_reports_what_is_damaged_and_fails() {
    let data = tempfile::tempdir().unwrap();
    let kvci = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_kvci")).arg("--data-dir").arg(data.path()).args(args).output().unwrap();
    let clean = kvci(&["image", "check"]);
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stderr));
    let manifests = data.path().join("images/manifests");
    let ghost = r#"{"name":"ghost:latest","id":"0000","kernel":"vmlinuz","initrd":"initrd.img","disk":"disk.qcow2","append":"","memory_mib":512,"cpus":1,"created":0,"size":0}"#;
    std::fs::write(manifests.join("ghost:latest.json"), ghost).unwrap();
    std::fs::write(manifests.join("torn:latest.json"), "{\"name\":").unwrap();
    let out = kvci(&["image", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DAMAGED image ghost:latest: its layer 0000 is missing"), "{text}");
    assert!(text.contains("torn:latest.json: image manifest cannot be read"), "{text}");
    let json: serde_json::Value = serde_json::from_slice(&kvci(&["image", "check", "--output", "json"]).stdout).unwrap();
    assert_eq!(json["damaged"].as_array().unwrap().len(), 2, "{json}");
}
