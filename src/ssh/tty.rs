//! The local terminal for interactive sessions: raw mode with guaranteed restore, window size,
//! and a stdin reader that can be dropped without leaving a blocked thread behind.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use nix::sys::termios::{self, SetArg, Termios};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, ReadBuf};

/// Puts a terminal into raw mode; its Drop puts back the settings found, on every exit path
/// (errors, early returns, panics that unwind).
pub(super) struct RawMode {
    // A duplicate of the terminal's fd: termios settings belong to the terminal, not to the fd.
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Raw mode on `fd`, or `None` if it is not a terminal (piped input needs no raw mode).
    pub(super) fn enter(fd: impl AsFd) -> io::Result<Option<RawMode>> {
        let fd = fd.as_fd().try_clone_to_owned()?;
        let saved = match termios::tcgetattr(&fd) {
            Ok(t) => t,
            Err(nix::errno::Errno::ENOTTY) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&fd, SetArg::TCSADRAIN, &raw)?;
        Ok(Some(RawMode { fd, saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing to report to at this point; a terminal that went away needs no restore.
        let _ = termios::tcsetattr(&self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}

mod ioctl {
    nix::ioctl_read_bad!(
        /// TIOCGWINSZ: the terminal's size in characters and pixels.
        tiocgwinsz,
        nix::libc::TIOCGWINSZ,
        nix::libc::winsize
    );
}

/// `(columns, rows)` of the terminal on `fd`, or `None` if it is not a terminal.
pub(super) fn window_size(fd: impl AsFd) -> Option<(u32, u32)> {
    let mut ws = nix::libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes exactly one `struct winsize` through the pointer, which points to
    // a live, properly aligned local; the fd is borrowed for the duration of the call.
    let r = unsafe { ioctl::tiocgwinsz(fd.as_fd().as_raw_fd(), &mut ws) };
    match r {
        Ok(_) if ws.ws_col > 0 && ws.ws_row > 0 => Some((u32::from(ws.ws_col), u32::from(ws.ws_row))),
        _ => None,
    }
}

/// Local standard input for an interactive session.
pub(super) enum Stdin {
    /// A terminal or pipe, reopened through /proc with O_NONBLOCK: the new open file description is
    /// ours alone, so non-blocking mode does not leak to the parent shell, and a pending read is
    /// just an epoll registration that dropping cancels. (tokio's stdin reads on a blocking thread
    /// that cannot be cancelled: it would eat the user's next keystroke after the session, and
    /// hold up the runtime's shutdown until then.)
    Reopened(AsyncFd<File>),
    /// Anything epoll cannot watch (a regular file, /dev/null): tokio's stdin; such input ends by
    /// itself.
    Other(tokio::io::Stdin),
}

impl Stdin {
    /// Local stdin, reopened non-blocking where possible.
    pub(super) fn open() -> Stdin {
        let reopened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open("/proc/self/fd/0")
            .and_then(|file| {
                // SAFETY: the File owns its fd and is moved into the AsyncFd, which never
                // replaces or closes it: the fd stays open and the same until the AsyncFd drops.
                unsafe { AsyncFd::register(file) }.map_err(io::Error::from)
            });
        match reopened {
            Ok(fd) => Stdin::Reopened(fd),
            Err(e) => {
                tracing::debug!("stdin cannot be reopened non-blocking ({e}); using tokio's stdin");
                Stdin::Other(tokio::io::stdin())
            }
        }
    }
}

impl AsyncRead for Stdin {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stdin::Other(s) => Pin::new(s).poll_read(cx, buf),
            Stdin::Reopened(fd) => loop {
                let mut ready = ready!(fd.poll_read_ready(cx))?;
                match ready.try_io(|f| f.get_ref().read(buf.initialize_unfilled())) {
                    Ok(Ok(n)) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Ok(Err(e)) => return Poll::Ready(Err(e)),
                    Err(_would_block) => continue,
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::termios::LocalFlags;

    #[test]
    fn raw_mode_is_restored_on_drop_and_size_is_read() {
        let ws = nix::pty::Winsize { ws_row: 40, ws_col: 100, ws_xpixel: 0, ws_ypixel: 0 };
        let pty = nix::pty::openpty(Some(&ws), None).unwrap();
        let canonical = |fd: &OwnedFd| termios::tcgetattr(fd).unwrap().local_flags.contains(LocalFlags::ICANON);
        assert!(canonical(&pty.slave));
        {
            let _raw = RawMode::enter(&pty.slave).unwrap().expect("a pty is a terminal");
            assert!(!canonical(&pty.slave));
        }
        assert!(canonical(&pty.slave));
        assert_eq!(window_size(&pty.slave), Some((100, 40)));
    }

    #[test]
    fn not_a_terminal() {
        let file = tempfile::tempfile().unwrap();
        assert!(RawMode::enter(&file).unwrap().is_none());
        assert_eq!(window_size(&file), None);
    }
}
