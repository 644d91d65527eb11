//! An interactive session: a remote PTY wired to the local terminal (see
//! [`Session::interactive`](super::Session::interactive)).

use std::io;

use russh::client::Msg;
use russh::Channel;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::client::{Replies, NO_EXIT_STATUS};
use super::tty::{self, RawMode};
use super::SshError;

/// Used when the local side is not a terminal (or does not know its size).
const DEFAULT_SIZE: (u32, u32) = (80, 24);

pub(super) async fn run(channel: Channel<Msg>, command: Option<&str>) -> Result<i32, SshError> {
    let replies = start(&channel, command, local_size()).await?;
    // From here on every return, early or not, drops the guard and restores the terminal.
    let _raw = RawMode::enter(io::stdin()).map_err(terminal("set raw mode on"))?;
    let mut winch = signal(SignalKind::window_change()).ok();
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    relay(channel, replies, &mut tty::Stdin::open(), &mut stdout, &mut stderr, &mut winch).await
}

/// Requests a PTY of `size` (columns, rows) with `$TERM`, then `command` or a shell.
pub(super) async fn start(
    channel: &Channel<Msg>,
    command: Option<&str>,
    (cols, rows): (u32, u32),
) -> Result<Replies, SshError> {
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
    let conn = SshError::Connection;
    channel.request_pty(true, &term, cols, rows, 0, 0, &[]).await.map_err(conn)?;
    Ok(match command {
        Some(command) => {
            channel.exec(true, command).await.map_err(conn)?;
            Replies::new(&["pty", "exec"])
        }
        None => {
            channel.request_shell(true).await.map_err(conn)?;
            Replies::new(&["pty", "shell"])
        }
    })
}

/// Relays `input` to the channel and the channel to the outputs until the channel closes, and
/// window-size changes (each `winch` signal) to the server; returns the exit code.
pub(super) async fn relay(
    channel: Channel<Msg>,
    mut replies: Replies,
    input: &mut (dyn AsyncRead + Unpin + Send),
    stdout: &mut (dyn AsyncWrite + Unpin + Send),
    stderr: &mut (dyn AsyncWrite + Unpin + Send),
    winch: &mut Option<Signal>,
) -> Result<i32, SshError> {
    let (mut rx, tx) = channel.split();
    let mut buf = vec![0u8; 8 * 1024];
    let mut input_open = true;
    loop {
        tokio::select! {
            n = input.read(&mut buf), if input_open => {
                let n = n.map_err(terminal("read"))?;
                // Input ends at EOF (piped input: the remote side sees EOF, as with `ssh -t cmd <
                // file`), or when the channel stops taking it: the remote side is closing, and its
                // exit status is still to be read below.
                let sent = if n == 0 { tx.eof().await } else { tx.data(&buf[..n]).await };
                if n == 0 || sent.is_err() {
                    input_open = false;
                }
            }
            Some(()) = next(winch) => {
                let (cols, rows) = local_size();
                // Best effort, like the input: a closing channel is noticed below.
                let _ = tx.window_change(cols, rows, 0, 0).await;
            }
            msg = rx.wait() => if !replies.on_message(msg, stdout, stderr).await? {
                break;
            },
        }
    }
    Ok(replies.exit_code.unwrap_or(NO_EXIT_STATUS))
}

fn local_size() -> (u32, u32) {
    tty::window_size(io::stdout()).or_else(|| tty::window_size(io::stdin())).unwrap_or(DEFAULT_SIZE)
}

/// The next SIGWINCH, or never if the handler could not be installed.
async fn next(winch: &mut Option<Signal>) -> Option<()> {
    match winch {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

fn terminal(action: &'static str) -> impl Fn(io::Error) -> SshError {
    move |source| SshError::Local { action, path: "/dev/stdin".into(), source }
}
