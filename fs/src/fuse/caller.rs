//! Whether the process that sent a request was killed while it waits for the answer.
//!
//! fuser 0.18 answers the kernel's FUSE_INTERRUPT itself, with ENOSYS, and the kernel then
//! sends no more of them on this connection. A caller killed (SIGKILL, or a signal that kills
//! by default, like Ctrl-C of `cat`) after the daemon took its request stays in the kernel
//! until that request is answered. So the daemon looks for itself: the killed thread has
//! SIGKILL pending in `/proc/<pid>/status`, and its request can be answered at once.

use std::time::Duration;

/// Requests are looked at only once they have run this long; most end well before.
const FIRST_LOOK: Duration = Duration::from_millis(200);
/// How often a long request's caller is looked at after that.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// Resolves once the thread `pid` has SIGKILL pending; never for pid 0 (a request the kernel
/// makes for itself, or a caller outside the daemon's pid namespace) or where `/proc` does not
/// tell.
pub(super) async fn killed(pid: u32) {
    if pid == 0 {
        return std::future::pending().await;
    }
    let mut look = tokio::time::interval_at(tokio::time::Instant::now() + FIRST_LOOK, LOOK_EVERY);
    loop {
        look.tick().await;
        // A short read of procfs, on the fuser thread that polls this future.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
        if status.is_ok_and(|s| sigkill_pending(&s)) {
            return;
        }
    }
}

/// Whether a `/proc/<pid>/status` text shows SIGKILL pending for the thread or its process.
fn sigkill_pending(status: &str) -> bool {
    let bit = 1u64 << (libc::SIGKILL - 1);
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("SigPnd:")
                .or_else(|| l.strip_prefix("ShdPnd:"))
        })
        .filter_map(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .any(|mask| mask & bit != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigkill_is_read_from_either_pending_mask() {
        let status =
            |sig: u64, shd: u64| format!("Name:\tls\nSigPnd:\t{sig:016x}\nShdPnd:\t{shd:016x}\n");
        assert!(!sigkill_pending(&status(0, 0)));
        assert!(sigkill_pending(&status(0x100, 0)));
        assert!(sigkill_pending(&status(0, 0x102)));
        // SIGINT (2) alone, caught by a handler, leaves the caller waiting.
        assert!(!sigkill_pending(&status(0x2, 0)));
        assert!(!sigkill_pending("Name:\tls\n"));
    }

    #[test]
    fn a_live_process_is_not_killed() {
        let me = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(!sigkill_pending(&me));
    }
}
