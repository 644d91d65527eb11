//! The client against [`super::test_server`]: real SSH (handshake, auth, channels, flow control)
//! over 127.0.0.1, with commands run by the local `sh`. Interactive sessions are covered from the
//! PTY and shell requests through the relay, with in-memory input and output instead of the local
//! terminal; raw mode and window size are tested in `tty`, SIGWINCH forwarding is not tested.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;
use tokio::net::TcpStream;

use super::client::shell_quote;
use super::{connect, ensure_keypair, interactive, test_server, KeyPaths, Session, SshError};

struct Fixture {
    dir: TempDir,
    keys: KeyPaths,
    addr: SocketAddr,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let keys = ensure_keypair(&dir.path().join("keys")).unwrap();
    let public = russh::keys::load_public_key(&keys.public).unwrap();
    let addr = test_server::start(public).await;
    Fixture { dir, keys, addr }
}

async fn session(f: &Fixture) -> Session {
    connect(TcpStream::connect(f.addr).await.unwrap(), "root", &f.keys.private).await.unwrap()
}

/// A hang (deadlock in flow control, a lost EOF) fails the test instead of blocking the suite.
async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f).await.expect("timed out")
}

/// Bytes that are not all the same, so a reordering or a dropped chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect()
}

#[tokio::test]
async fn exec_collects_stdout_stderr_and_exit_code() {
    let f = fixture().await;
    let mut s = session(&f).await;
    let out = bounded(s.exec("echo hi; echo oops >&2; exit 3", None)).await.unwrap();
    assert_eq!((out.exit_code, &out.stdout[..], &out.stderr[..]), (3, &b"hi\n"[..], &b"oops\n"[..]));
    // The same session serves further commands.
    let out = bounded(s.exec("echo again", None)).await.unwrap();
    assert_eq!((out.exit_code, &out.stdout[..]), (0, &b"again\n"[..]));
    bounded(s.close()).await.unwrap();
}

#[tokio::test]
async fn exec_passes_stdin() {
    let f = fixture().await;
    let mut s = session(&f).await;
    let out = bounded(s.exec("tr a-z A-Z", Some(b"hello".to_vec()))).await.unwrap();
    assert_eq!((out.exit_code, &out.stdout[..]), (0, &b"HELLO"[..]));
    // Without stdin the command sees EOF at once rather than waiting.
    let out = bounded(s.exec("cat; echo end", None)).await.unwrap();
    assert_eq!(out.stdout, b"end\n");
}

#[tokio::test]
async fn exec_streams_large_stdin_and_stdout_at_once() {
    // Several times the SSH window and russh's channel queue: sending all stdin before reading
    // stdout would deadlock.
    let f = fixture().await;
    let mut s = session(&f).await;
    let data = pattern(6 << 20);
    let out = bounded(s.exec("cat", Some(data.clone()))).await.unwrap();
    assert_eq!(out.exit_code, 0);
    assert!(out.stdout == data, "{} bytes back of {}", out.stdout.len(), data.len());
}

#[tokio::test]
async fn exec_with_unread_stdin_is_not_an_error() {
    let f = fixture().await;
    let mut s = session(&f).await;
    let out = bounded(s.exec("exit 5", Some(pattern(4 << 20)))).await.unwrap();
    assert_eq!(out.exit_code, 5);
}

#[tokio::test]
async fn killed_command_gives_255() {
    let f = fixture().await;
    let mut s = session(&f).await;
    let out = bounded(s.exec("kill -9 $$", None)).await.unwrap();
    assert_eq!(out.exit_code, 255);
}

#[tokio::test]
async fn lost_connection_is_an_error_not_exit_code_255() {
    let f = fixture().await;
    let mut s = session(&f).await;
    let err = bounded(s.exec(test_server::DISCONNECT, None)).await.unwrap_err();
    assert!(matches!(err, SshError::Connection(_)), "{err:?}");
}

#[tokio::test]
async fn exec_streaming_returns_exit_code() {
    let f = fixture().await;
    let mut s = session(&f).await;
    // Output goes to the test's real stdout; only the code is checked.
    assert_eq!(bounded(s.exec_streaming("exit 4", None)).await.unwrap(), 4);
    // Standard input reaches the command, then EOF: `wc -c` counts it and ends.
    let mut input: &[u8] = b"abc\n";
    assert_eq!(bounded(s.exec_streaming("test $(wc -c) -eq 4", Some(&mut input))).await.unwrap(), 0);
}

#[tokio::test]
async fn shell_quote_survives_the_remote_shell() {
    let f = fixture().await;
    let mut s = session(&f).await;
    let nasty = r#"it's "a" $HOME `x` \ ; *"#;
    let out = bounded(s.exec(&format!("printf %s {}", shell_quote(nasty)), None)).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), nasty);
}

#[tokio::test]
async fn unknown_key_is_rejected_with_a_hint() {
    let f = fixture().await;
    let other = ensure_keypair(&f.dir.path().join("other")).unwrap();
    let stream = TcpStream::connect(f.addr).await.unwrap();
    let err = bounded(connect(stream, "root", &other.private)).await.err().expect("must be rejected");
    assert!(matches!(err, SshError::AuthRejected { .. }), "{err:?}");
    assert!(err.to_string().contains("authorized_keys"), "{err}");
}

#[tokio::test]
async fn upload_download_round_trip() {
    let f = fixture().await;
    let mut s = session(&f).await;
    let data = pattern(3 << 20);
    let local = f.dir.path().join("local.bin");
    std::fs::write(&local, &data).unwrap();
    // "Remote" is this machine's file system, through the server's `sh`.
    let remote = f.dir.path().join("it's a remote file.bin");
    let remote_str = remote.to_str().unwrap();
    bounded(s.upload(&local, remote_str)).await.unwrap();
    assert!(std::fs::read(&remote).unwrap() == data, "uploaded content differs");

    let back = f.dir.path().join("back.bin");
    bounded(s.download(remote_str, &back)).await.unwrap();
    assert!(std::fs::read(&back).unwrap() == data, "downloaded content differs");
}

#[tokio::test]
async fn failed_copies_report_the_remote_error_and_leave_nothing() {
    let f = fixture().await;
    let mut s = session(&f).await;
    let back = f.dir.path().join("never.bin");
    let missing = f.dir.path().join("missing");
    let err = bounded(s.download(missing.to_str().unwrap(), &back)).await.unwrap_err();
    assert!(matches!(err, SshError::Remote { code: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("No such file"), "{err}");
    assert!(!back.exists());
    assert_eq!(leftovers(f.dir.path()), 0);

    let local = f.dir.path().join("small");
    std::fs::write(&local, b"x").unwrap();
    let err = bounded(s.upload(&local, "/nonexistent-dir/x")).await.unwrap_err();
    assert!(matches!(err, SshError::Remote { .. }), "{err:?}");
    let err = bounded(s.upload(&f.dir.path().join("no-local"), "/tmp/x")).await.unwrap_err();
    assert!(matches!(err, SshError::Local { .. }), "{err:?}");
}

#[tokio::test]
async fn a_failed_upload_leaves_the_target_as_it_was() {
    let f = fixture().await;
    let mut s = session(&f).await;
    let target = f.dir.path().join("v.json");
    std::fs::write(&target, b"keep me").unwrap();
    let target_str = target.to_str().unwrap();

    // A directory is refused before anything is sent.
    let err = bounded(s.upload(f.dir.path(), target_str)).await.unwrap_err();
    assert!(matches!(err, SshError::NotAFile { .. }), "{err:?}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");

    // Fewer bytes than announced (the sender died): the target stays, the temporary file goes.
    let out = bounded(s.exec(&super::client::upload_script(target_str, "x", 10, 0o644), Some(b"abc".to_vec()))).await.unwrap();
    assert_eq!(out.exit_code, 1, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("received 3 of 10 bytes"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    assert_eq!(leftovers(f.dir.path()), 0, "temporary file left behind");

    // A target below a regular file fails without touching it.
    let local = f.dir.path().join("new");
    std::fs::write(&local, b"new").unwrap();
    let err = bounded(s.upload(&local, &format!("{target_str}/inside"))).await.unwrap_err();
    assert!(matches!(err, SshError::Remote { .. }), "{err:?}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
}

#[tokio::test]
async fn copies_into_a_directory_keep_the_file_name() {
    let f = fixture().await;
    let mut s = session(&f).await;
    let remote_dir = f.dir.path().join("remote dir");
    std::fs::create_dir(&remote_dir).unwrap();
    let local = f.dir.path().join("hostname");
    std::fs::write(&local, b"node01\n").unwrap();
    std::fs::set_permissions(&local, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    bounded(s.upload(&local, &format!("{}/", remote_dir.display()))).await.unwrap();
    let uploaded = remote_dir.join("hostname");
    assert_eq!(std::fs::read(&uploaded).unwrap(), b"node01\n");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&uploaded.metadata().unwrap().permissions()) & 0o777, 0o640);

    let local_dir = f.dir.path().join("local dir");
    std::fs::create_dir(&local_dir).unwrap();
    bounded(s.download(uploaded.to_str().unwrap(), &local_dir)).await.unwrap();
    assert_eq!(std::fs::read(local_dir.join("hostname")).unwrap(), b"node01\n");
}

#[tokio::test]
async fn interactive_shell_and_command_relay_input_output_and_exit_code() {
    let f = fixture().await;
    let s = session(&f).await;
    let run = |command: Option<&'static str>, input: &'static [u8]| {
        let s = &s;
        async move {
            let channel = s.open_channel().await.unwrap();
            let replies = interactive::start(&channel, command, (100, 40)).await.unwrap();
            let (mut input, mut out, mut err) = (input, Vec::new(), Vec::new());
            let code = interactive::relay(channel, replies, &mut input, &mut out, &mut err, &mut None).await.unwrap();
            (code, String::from_utf8_lossy(&out).into_owned())
        }
    };
    assert_eq!(bounded(run(None, b"echo from-shell\nexit 7\n")).await, (7, "from-shell\n".into()));
    assert_eq!(bounded(run(Some("read x; echo got-$x; exit 2"), b"it\n")).await, (2, "got-it\n".into()));
}

fn leftovers(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".kvci"))
        .count()
}
