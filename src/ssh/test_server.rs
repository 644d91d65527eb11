//! A minimal sshd for the client's tests, built on russh's server side (no sshd is installed on
//! the build machines): public-key auth against one key, and exec requests run by the local
//! `sh -c` with stdin, stdout, stderr and the exit status wired to the channel, which is what a
//! guest's dropbear does. PTY requests are accepted but the command still runs on pipes; a shell
//! request runs `sh` reading commands from the channel.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg, Disconnect, Pty, Sig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// The command that makes the server drop the connection instead of answering.
pub(super) const DISCONNECT: &str = "kvci-test-disconnect";

/// Listens on 127.0.0.1 (random port) until the test's runtime ends; accepts only `authorized`.
pub(super) async fn start(authorized: PublicKey) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local_addr");
    let config = Arc::new(server::Config {
        keys: vec![PrivateKey::from(Ed25519Keypair::from_seed(&[7; 32]))],
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    });
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let handler = Conn { authorized: authorized.clone() };
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok(session) = server::run_stream(config, socket, handler).await {
                    let _ = session.await;
                }
            });
        }
    });
    addr
}

struct Conn {
    authorized: PublicKey,
}

impl server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey(&mut self, _user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        Ok(if key.public_key.key_data() == self.authorized.key_data() { Auth::Accept } else { Auth::reject() })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let handle = session.handle();
        reply.accept().await;
        tokio::spawn(serve(channel, handle));
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Accepted but not honoured: the command still runs on pipes.
        session.channel_success(channel)
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _command: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The command itself reaches `serve` through the channel.
        session.channel_success(channel)
    }
}

/// Runs the channel's exec request to completion.
async fn serve(channel: Channel<Msg>, handle: server::Handle) {
    let id = channel.id();
    let (mut rx, tx) = channel.split();
    let command = loop {
        match rx.wait().await {
            Some(ChannelMsg::Exec { command, .. }) => break command,
            Some(ChannelMsg::RequestShell { .. }) => break b"exec sh".to_vec(),
            Some(_) => {}
            None => return,
        }
    };
    if command == DISCONNECT.as_bytes() {
        let _ = handle.disconnect(Disconnect::ByApplication, "test".into(), "en".into()).await;
        return;
    }
    let spawned = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(OsStr::from_bytes(&command))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = spawned else {
        let _ = tx.close().await;
        return;
    };
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return;
    };
    // Client data → the command's stdin, until EOF. Queued without bound: russh's server loop
    // stops (and with it our output and window adjustments) while a channel's queue is full, so
    // waiting on a command busy writing its stdout here would deadlock.
    let (queue, mut queued) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(msg) = rx.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    let _ = queue.send(data);
                }
                ChannelMsg::Eof => break,
                _ => {}
            }
        }
    });
    let feed = tokio::spawn(async move {
        while let Some(data) = queued.recv().await {
            if stdin.write_all(&data).await.is_err() {
                break; // The command stopped reading: drop the rest.
            }
        }
        // Dropping stdin here closes the command's input.
    });
    let (mut out, mut err) = (tx.make_writer(), tx.make_writer_ext(Some(1)));
    let _ = tokio::join!(tokio::io::copy(&mut stdout, &mut out), tokio::io::copy(&mut stderr, &mut err));
    if let Ok(status) = child.wait().await {
        match (status.code(), status.signal()) {
            (Some(code), _) => {
                let _ = tx.exit_status(code as u32).await;
            }
            (None, Some(signal)) => {
                let sig = if signal == 9 { Sig::KILL } else { Sig::Custom(signal.to_string()) };
                let _ = handle.exit_signal_request(id, sig, false, String::new(), String::new()).await;
            }
            (None, None) => {}
        }
    }
    let _ = tx.eof().await;
    let _ = tx.close().await;
    reader.abort();
    feed.abort();
}
