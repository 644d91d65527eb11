//! An ssh client session to one node: commands, interactive shells, file copies.
//!
//! Host keys are not checked: nodes are disposable VMs whose host keys are generated at first
//! boot, reached over the cluster's own network or a port forward on the host that kvci set up
//! itself. There is no known_hosts entry to compare with, so kvci accepts any host key and logs
//! its fingerprint (debug level) for whoever needs to compare.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Msg};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{Channel, ChannelMsg, ChannelWriteHalf, Disconnect};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::keys::load_private_key;
use super::SshError;

/// Exit code reported when the server sent no exit status (the command was killed by a signal,
/// or the channel closed early), as OpenSSH's `ssh` does.
pub const NO_EXIT_STATUS: i32 = 255;

/// An authenticated ssh connection to a node. Each call opens its own channel, so calls can be
/// made one after another on the same session.
pub struct Session {
    handle: client::Handle<AnyHostKey>,
}

/// What a command did, collected in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The command's exit status, or [`NO_EXIT_STATUS`] (255) if the server sent none or the
    /// command died of a signal.
    pub exit_code: i32,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

/// The russh callbacks: accept any host key (see the module docs for why).
struct AnyHostKey;

impl client::Handler for AnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let fingerprint = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.fingerprint(HashAlg::Sha256).to_string(),
            PublicKeyOrCertificate::Certificate(cert) => cert.public_key().fingerprint(HashAlg::Sha256).to_string(),
        };
        tracing::debug!(%fingerprint, "accepting the node's host key (disposable VM, not checked)");
        Ok(true)
    }
}

/// Runs the SSH handshake over `stream` (already connected by the caller, possibly through a port
/// forward) and authenticates as `user` with the private key at `key`. Any host key is accepted.
///
/// There is no timeout here: wrap the call in `tokio::time::timeout` where a hung peer matters.
pub async fn connect(stream: TcpStream, user: &str, key: &Path) -> Result<Session, SshError> {
    connect_with(stream, user, load_private_key(key)?).await
}

/// As [`connect`] with a key already loaded (an image's own login key, say).
pub async fn connect_with(stream: TcpStream, user: &str, key: russh::keys::PrivateKey) -> Result<Session, SshError> {
    // Interactive keystrokes are tiny packets; don't let Nagle hold them back.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("set_nodelay: {e}");
    }
    let config = client::Config {
        // Notice a node that vanished (killed QEMU) during a long interactive session.
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        ..Default::default()
    };
    let mut handle = client::connect_stream(Arc::new(config), stream, AnyHostKey).await.map_err(SshError::Handshake)?;
    // RSA keys sign with SHA-2 (the server's sshd refuses ssh-rsa/SHA-1 since OpenSSH 8.8).
    let hash = (key.algorithm().is_rsa()).then_some(HashAlg::Sha512);
    let auth = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
        .await
        .map_err(SshError::Handshake)?;
    if !auth.success() {
        return Err(SshError::AuthRejected { user: user.into() });
    }
    Ok(Session { handle })
}

impl Session {
    /// Runs `command` (through the remote user's shell), feeding it `stdin` if given (else an
    /// immediately closed stdin), and collects its output and exit code. A non-zero exit code is
    /// not an error.
    pub async fn exec(&mut self, command: &str, stdin: Option<Vec<u8>>) -> Result<ExecOutput, SshError> {
        let channel = self.exec_channel(command).await?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut input = stdin.as_deref().map(Input::Bytes);
        let exit_code = self.finished(relay(channel, input.as_mut(), &mut stdout, &mut stderr).await?)?;
        Ok(ExecOutput { exit_code, stdout, stderr })
    }

    /// Runs `command`, copying its stdout and stderr to the local ones as they arrive; returns its
    /// exit code. `stdin` (if any) is streamed to the command, then closed, as `ssh` does; the
    /// command may exit before reading all of it.
    pub async fn exec_streaming(&mut self, command: &str, stdin: Option<&mut (dyn AsyncRead + Unpin + Send)>) -> Result<i32, SshError> {
        let channel = self.exec_channel(command).await?;
        let mut input = stdin.map(|r| Input::Reader(r, Path::new("standard input")));
        self.finished(relay(channel, input.as_mut(), &mut tokio::io::stdout(), &mut tokio::io::stderr()).await?)
    }

    /// Runs `command`, writing its stdout and stderr to the given writers as they arrive;
    /// returns the exit code.
    pub async fn exec_into(
        &mut self,
        command: &str,
        stdout: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
        stderr: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<i32, SshError> {
        let channel = self.exec_channel(command).await?;
        self.finished(relay(channel, None, stdout, stderr).await?)
    }

    /// Runs `command`, or a login shell if `None`, on a remote terminal connected to the local
    /// one, until the remote side closes; returns the exit code. The local terminal (if stdin is
    /// one) is in raw mode meanwhile, so Ctrl-C and friends go to the remote program; it is
    /// restored on every way out of this function.
    pub async fn interactive(&mut self, command: Option<&str>) -> Result<i32, SshError> {
        let code = super::interactive::run(self.open_channel().await?, command).await?;
        self.finished(code)
    }

    /// Copies the local file `local` to `remote` on the node, streaming it; a `remote` that is a
    /// directory gets the file under its own name, as with `scp`. The data lands in a temporary
    /// file beside the target, which is renamed over it only once every byte arrived: a failed
    /// copy leaves the target as it was. The new file gets `local`'s permission bits.
    pub async fn upload(&mut self, local: &Path, remote: &str) -> Result<(), SshError> {
        let local_err = |action, source| SshError::Local { action, path: local.into(), source };
        let file = tokio::fs::File::open(local).await.map_err(|e| local_err("open", e))?;
        let meta = file.metadata().await.map_err(|e| local_err("read", e))?;
        if !meta.is_file() {
            return Err(SshError::NotAFile { path: local.into() });
        }
        let base = local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let command = upload_script(remote, &base, meta.len(), std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777);
        let channel = self.exec_channel(&command).await?;
        let mut stderr = Vec::new();
        // Exactly the size the remote side checks for, even if the file grows meanwhile.
        let mut file = file.take(meta.len());
        let input = Some(&mut Input::Reader(&mut file, local));
        let code = self.finished(relay(channel, input, &mut tokio::io::sink(), &mut stderr).await?)?;
        check(format!("copy to {remote}"), code, stderr)
    }

    /// Copies `remote` from the node to the local file `local` (or into `local` under the remote
    /// file's name when `local` is a directory, as with `scp`), streaming it. The local file
    /// appears only once the copy is complete (written to a temporary file beside it, then
    /// renamed).
    pub async fn download(&mut self, remote: &str, local: &Path) -> Result<(), SshError> {
        let local = if local.is_dir() {
            let base = remote.trim_end_matches('/').rsplit('/').next().filter(|b| !b.is_empty() && *b != "." && *b != "..");
            let Some(base) = base else {
                return Err(SshError::Remote { command: format!("copy {remote}"), code: 1, stderr: b"not a file name".to_vec() });
            };
            local.join(base)
        } else {
            local.to_path_buf()
        };
        let local = local.as_path();
        let dir = match local.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let local_err = |action, source| SshError::Local { action, path: local.into(), source };
        let tmp = tempfile::Builder::new()
            .prefix(".kvci-download-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(|e| local_err("create a temporary file for", e))?;
        let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(|e| local_err("write", e))?);
        let command = format!("cat -- {}", shell_quote(remote));
        let channel = self.exec_channel(&command).await?;
        let mut stderr = Vec::new();
        let code = match relay(channel, None, &mut file, &mut stderr).await {
            // `relay` does not know the file's name.
            Err(SshError::Local { action: "write", source, .. }) => return Err(local_err("write", source)),
            result => self.finished(result?)?,
        };
        check(command, code, stderr)?;
        file.sync_all().await.map_err(|e| local_err("write", e))?;
        tmp.persist(local).map_err(|e| local_err("write", e.error))?;
        Ok(())
    }

    /// Says goodbye to the server. Dropping the session also closes the connection, less politely.
    pub async fn close(self) -> Result<(), SshError> {
        self.handle.disconnect(Disconnect::ByApplication, "", "en").await.map_err(SshError::Connection)
    }

    /// `code` as returned by [`relay`], unless the connection died: no exit status came because
    /// there was no one left to send it.
    fn finished(&self, code: i32) -> Result<i32, SshError> {
        if code == NO_EXIT_STATUS && self.handle.is_closed() {
            return Err(SshError::Connection(russh::Error::Disconnect));
        }
        Ok(code)
    }

    pub(super) async fn open_channel(&self) -> Result<Channel<Msg>, SshError> {
        self.handle.channel_open_session().await.map_err(SshError::Connection)
    }

    async fn exec_channel(&self, command: &str) -> Result<Channel<Msg>, SshError> {
        let channel = self.open_channel().await?;
        channel.exec(true, command).await.map_err(SshError::Connection)?;
        Ok(channel)
    }
}

/// What to send to the remote command's stdin.
pub(super) enum Input<'a> {
    Bytes(&'a [u8]),
    /// A local file; its path is for error messages.
    Reader(&'a mut (dyn AsyncRead + Unpin + Send), &'a Path),
}

/// Copies `input` to the channel (then EOF) while copying the channel's stdout and stderr to the
/// given writers, until the channel closes; returns the exit code.
///
/// Both directions run at once: russh stops reading the connection while a channel's incoming
/// queue is full, so sending a large stdin before reading would deadlock against a command that
/// writes as it reads (`cat`).
async fn relay(
    channel: Channel<Msg>,
    input: Option<&mut Input<'_>>,
    stdout: &mut (dyn AsyncWrite + Unpin + Send),
    stderr: &mut (dyn AsyncWrite + Unpin + Send),
) -> Result<i32, SshError> {
    let (mut rx, tx) = channel.split();
    let send = send_input(&tx, input);
    tokio::pin!(send);
    let mut sending = true;
    let mut state = Replies::new(&["exec"]);
    let finished = async {
        loop {
            tokio::select! {
                sent = &mut send, if sending => {
                    sending = false;
                    sent?;
                }
                msg = rx.wait() => if !state.on_message(msg, &mut *stdout, &mut *stderr).await? {
                    return Ok(state.exit_code.unwrap_or(NO_EXIT_STATUS));
                },
            }
        }
    }
    .await;
    if finished.is_err() {
        // Stop the remote side: it must not take a truncated input for whole, nor keep writing
        // to a local side that gave up.
        let _ = tx.close().await;
    }
    finished
}

/// What the server told about a channel so far.
pub(super) struct Replies {
    /// The requests sent with want_reply, in order (`pty`, `exec`, …), to name a refused one.
    requests: &'static [&'static str],
    answered: usize,
    /// From exit-status, or [`NO_EXIT_STATUS`] after exit-signal.
    pub(super) exit_code: Option<i32>,
}

impl Replies {
    pub(super) fn new(requests: &'static [&'static str]) -> Self {
        Replies { requests, answered: 0, exit_code: None }
    }

    /// Handles one message from [`russh::ChannelReadHalf::wait`]: output goes to the writers (and
    /// is flushed), replies and exit status are recorded. Returns false once the channel closed.
    pub(super) async fn on_message(
        &mut self,
        msg: Option<ChannelMsg>,
        stdout: &mut (dyn AsyncWrite + Unpin + Send),
        stderr: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<bool, SshError> {
        match msg {
            None | Some(ChannelMsg::Close) => return Ok(false),
            Some(ChannelMsg::Data { data }) => write(stdout, &data).await?,
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => write(stderr, &data).await?,
            Some(ChannelMsg::ExitStatus { exit_status }) => {
                self.exit_code = Some(i32::try_from(exit_status).unwrap_or(NO_EXIT_STATUS));
            }
            Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                tracing::debug!("remote command killed by signal {signal_name:?}");
                self.exit_code = Some(NO_EXIT_STATUS);
            }
            Some(ChannelMsg::Success) => self.answered += 1,
            Some(ChannelMsg::Failure) if self.answered < self.requests.len() => {
                return Err(SshError::Refused { what: self.requests[self.answered] });
            }
            Some(_) => {}
        }
        Ok(true)
    }
}

/// Sends the input, then EOF. A local read error is returned; a channel that stopped taking data
/// is not an error (the command may well exit without reading all of its stdin).
async fn send_input(tx: &ChannelWriteHalf<Msg>, input: Option<&mut Input<'_>>) -> Result<(), SshError> {
    let sent = match input {
        None => Ok(()),
        Some(Input::Bytes(bytes)) => tx.data(*bytes).await,
        Some(Input::Reader(reader, path)) => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = reader.read(&mut buf).await.map_err(|source| SshError::Local {
                    action: "read",
                    path: path.to_path_buf(),
                    source,
                })?;
                if n == 0 {
                    break Ok(());
                }
                if let Err(e) = tx.data(&buf[..n]).await {
                    break Err(e);
                }
            }
        }
    };
    let sent = match sent {
        Ok(()) => tx.eof().await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::debug!("remote stdin closed early: {e}");
            Ok(())
        }
    }
}

async fn write(out: &mut (dyn AsyncWrite + Unpin + Send), data: &[u8]) -> Result<(), SshError> {
    // Flushed each time: streamed output must show up as it arrives (no-op for Vec and files).
    out.write_all(data).await.map_err(local_write)?;
    out.flush().await.map_err(local_write)
}

fn local_write(source: std::io::Error) -> SshError {
    SshError::Local { action: "write", path: "local output".into(), source }
}

fn check(command: String, code: i32, stderr: Vec<u8>) -> Result<(), SshError> {
    if code == 0 {
        Ok(())
    } else {
        Err(SshError::Remote { command, code, stderr })
    }
}

/// The remote side of an upload, for any POSIX shell (busybox's too): resolve a directory
/// target, receive into a temporary file beside the target, check the byte count, then rename.
/// The temporary file is removed on every other way out.
pub(super) fn upload_script(remote: &str, base: &str, size: u64, mode: u32) -> String {
    format!(
        "t={t}; case $t in /*) ;; *) t=./$t ;; esac; \
         if [ -d \"$t\" ]; then t=\"${{t%/}}\"/{b}; fi; \
         tmp=\"${{t%/*}}/.kvci-scp.$$\"; \
         trap 'rm -f -- \"$tmp\"' EXIT; trap 'exit 1' HUP INT TERM PIPE; \
         cat > \"$tmp\" || exit 1; \
         n=$(wc -c < \"$tmp\"); \
         if [ $n -ne {size} ]; then echo \"received $n of {size} bytes; $t is unchanged\" >&2; exit 1; fi; \
         chmod {mode:o} \"$tmp\" && mv -f -- \"$tmp\" \"$t\"",
        t = shell_quote(remote),
        b = shell_quote(base),
    )
}

/// Quotes `s` as one word for a POSIX shell: `'…'`, with each `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
