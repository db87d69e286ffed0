//! Exit statuses, the error kinds that choose them, and what Ctrl-C does.

use std::fmt;
use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use snapfs_control::wire::ErrorCode;

/// The exit statuses of DESIGN §9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// The operation was tried and failed.
    Failed,
    /// The command line or an argument was wrong.
    Usage,
    /// Stopped by SIGINT (or SIGTERM during a restore, which cleans up first).
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::Interrupted => 130,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// A wrong argument: exits 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Builds an `anyhow::Error` that exits 2.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// The daemon answered with an error.
#[derive(Debug)]
pub struct DaemonError {
    pub code: ErrorCode,
    pub message: String,
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DaemonError {}

/// The user pressed Ctrl-C while work that needs cleaning up was running.
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// How an error ends the process. `None` means quietly with success: the reader of our stdout
/// went away (`snapfs list … | head -1`), which is what it asked for.
pub fn classify(err: &anyhow::Error) -> Option<Exit> {
    let mut exit = Exit::Failed;
    for cause in err.chain() {
        if let Some(io) = cause.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::BrokenPipe
        {
            return None;
        }
        if cause.is::<Usage>() {
            exit = Exit::Usage;
        } else if cause.is::<Interrupted>() {
            return Some(Exit::Interrupted);
        } else if let Some(d) = cause.downcast_ref::<DaemonError>() {
            exit = match d.code {
                ErrorCode::Invalid => Exit::Usage,
                ErrorCode::NotFound | ErrorCode::Failed => Exit::Failed,
            };
        }
    }
    Some(exit)
}

/// The one line a user sees for an error: the context chain joined with ": ".
pub fn message(err: &anyhow::Error) -> String {
    format!("snapfs: {err:#}")
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_flag(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

extern "C" fn on_sigint_exit(_: libc::c_int) {
    // Only async-signal-safe calls here: end a progress line, then leave with 130.
    // SAFETY: isatty, write and _exit only make system calls; the buffer is static.
    if unsafe { libc::isatty(libc::STDERR_FILENO) } == 1 {
        // SAFETY: as above.
        unsafe { libc::write(libc::STDERR_FILENO, b"\n".as_ptr().cast(), 1) };
    }
    // SAFETY: as above.
    unsafe { libc::_exit(130) };
}

/// For commands that only wait (the daemon keeps the job running): Ctrl-C leaves at once with
/// status 130 instead of dying by the signal, so scripts see the documented status.
pub fn exit_on_interrupt() {
    let handler: extern "C" fn(libc::c_int) = on_sigint_exit;
    // SAFETY: installs a handler that only makes async-signal-safe calls.
    unsafe { libc::signal(libc::SIGINT, handler as libc::sighandler_t) };
}

/// For commands that must clean up (restore removes its temporary copy): Ctrl-C, and SIGTERM
/// (what `kill` and service managers send), only set a flag, which the work checks between
/// blocks.
pub fn flag_on_interrupt() {
    let handler: extern "C" fn(libc::c_int) = on_stop_flag;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(signal, handler as libc::sighandler_t) };
    }
}

/// Fails with [`Interrupted`] once Ctrl-C was pressed under [`flag_on_interrupt`].
pub fn check_interrupt() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(anyhow::Error::new(Interrupted));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn usage_anywhere_in_the_chain_exits_2() {
        let e = Err::<(), _>(usage("bad name"))
            .context("listing")
            .unwrap_err();
        assert_eq!(classify(&e), Some(Exit::Usage));
        assert_eq!(message(&e), "snapfs: listing: bad name");
    }

    #[test]
    fn daemon_codes_map_to_statuses() {
        let d = |code| {
            anyhow::Error::new(DaemonError {
                code,
                message: "x".into(),
            })
        };
        assert_eq!(classify(&d(ErrorCode::Invalid)), Some(Exit::Usage));
        assert_eq!(classify(&d(ErrorCode::NotFound)), Some(Exit::Failed));
        assert_eq!(classify(&d(ErrorCode::Failed)), Some(Exit::Failed));
    }

    #[test]
    fn broken_pipe_is_quiet_success() {
        let e = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe)).context("writing");
        assert_eq!(classify(&e), None);
        let other = anyhow::anyhow!("boom");
        assert_eq!(classify(&other), Some(Exit::Failed));
    }
}
