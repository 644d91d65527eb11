//! The QMP client against a real QEMU (no guest needed: `-machine none`).

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use kvci::qemu::cmdline::{qmp_args, Endpoint};
use kvci::qemu::process::QemuProcess;
use kvci::qemu::qmp::Qmp;

#[tokio::test(flavor = "current_thread")]
async fn real_qemu_answers_typed_commands_and_sends_events() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("qmp.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut args: Vec<String> = ["-machine", "none", "-nodefaults", "-display", "none"].iter().map(|s| s.to_string()).collect();
    args.extend(qmp_args(&Endpoint::Fd(listener.as_raw_fd())));
    let qemu = kvci::tools::QEMU.locate().expect("QEMU is installed for the tests");
    let mut process = QemuProcess::spawn(&qemu, &args, &[listener.as_raw_fd()], &dir.path().join("qemu.log")).unwrap();
    drop(listener);

    let stream = UnixStream::connect(&sock).unwrap();
    stream.set_nonblocking(true).unwrap();
    let qmp = Qmp::handshake(tokio::net::UnixStream::from_std(stream).unwrap()).await.unwrap();
    assert!(qmp.greeting()["QMP"]["version"]["qemu"]["major"].as_u64().unwrap() >= 7);

    let status = qmp.execute(&qapi::qmp::query_status {}).await.unwrap();
    assert!(status.running);

    let mut events = qmp.events();
    qmp.execute(&qapi::qmp::stop {}).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap();
    assert_eq!(ev.event, "STOP");
    assert!(!qmp.execute(&qapi::qmp::query_status {}).await.unwrap().running);

    // A command QEMU rejects comes back as an error, and the connection stays usable.
    let err = qmp.execute(&qapi::qmp::device_del { id: "no-such-device".into() }).await.unwrap_err();
    assert!(err.to_string().contains("no-such-device"), "{err}");
    qmp.execute(&qapi::qmp::cont {}).await.unwrap();

    qmp.execute(&qapi::qmp::quit {}).await.ok();
    qmp.closed().await;
    assert!(process.stop(Duration::from_secs(5)).await.unwrap().success());
}
