//! Fault switches a test flips at run time, and counters it reads to assert on.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Faults to inject. Every switch starts off and can be flipped at any time; the backup and
/// restore switches apply to operations started after the flip.
#[derive(Debug, Default)]
pub struct Faults {
    slow_backup: Mutex<Option<Duration>>,
    backup_failure: Mutex<Option<String>>,
    restore_failure: Mutex<Option<String>>,
    unavailable: AtomicBool,
    unavailable_next: AtomicU64,
    drop_download_after: Mutex<Option<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Faults {
    /// New backups stay IN_PROGRESS this long instead of `Timings::backup`. `None` turns it off.
    pub fn set_slow_backup(&self, duration: Option<Duration>) {
        *lock(&self.slow_backup) = duration;
    }

    pub fn slow_backup(&self) -> Option<Duration> {
        *lock(&self.slow_backup)
    }

    /// New backups end FAILED with this `failReason` instead of COMPLETED. `None` turns it off.
    pub fn set_backup_failure(&self, reason: Option<&str>) {
        *lock(&self.backup_failure) = reason.map(str::to_string);
    }

    pub fn backup_failure(&self) -> Option<String> {
        lock(&self.backup_failure).clone()
    }

    /// New restores end RESTORE_FAILED with this `failReason`. `None` turns it off.
    pub fn set_restore_failure(&self, reason: Option<&str>) {
        *lock(&self.restore_failure) = reason.map(str::to_string);
    }

    pub fn restore_failure(&self) -> Option<String> {
        lock(&self.restore_failure).clone()
    }

    /// Every request answers 503 while this is on.
    pub fn set_unavailable(&self, on: bool) {
        self.unavailable.store(on, Ordering::Relaxed);
    }

    /// The next `n` requests answer 503 (on top of `set_unavailable`).
    pub fn fail_next(&self, n: u64) {
        self.unavailable_next.store(n, Ordering::Relaxed);
    }

    /// Whether this request answers 503; uses up one of `fail_next`.
    pub(crate) fn take_unavailable(&self) -> bool {
        self.unavailable.load(Ordering::Relaxed)
            || self
                .unavailable_next
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
    }

    /// Downloads close the connection after sending this many bytes of content (counted from
    /// the start of the requested range), short of their `Content-Length`. `None` turns it off.
    pub fn set_drop_download_after(&self, bytes: Option<u64>) {
        *lock(&self.drop_download_after) = bytes;
    }

    pub fn drop_download_after(&self) -> Option<u64> {
        *lock(&self.drop_download_after)
    }
}

/// What the server did, for tests to assert on. All counts start at zero.
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    unavailable: AtomicU64,
    downloads: AtomicU64,
    download_bytes: AtomicU64,
    backups_created: AtomicU64,
    restores: AtomicU64,
}

impl Counters {
    /// HTTP requests received, whatever their answer.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests answered 503 by the fault switches.
    pub fn unavailable(&self) -> u64 {
        self.unavailable.load(Ordering::Relaxed)
    }

    /// Downloads answered 200 or 206.
    pub fn downloads(&self) -> u64 {
        self.downloads.load(Ordering::Relaxed)
    }

    /// Content bytes handed to download connections.
    pub fn download_bytes(&self) -> u64 {
        self.download_bytes.load(Ordering::Relaxed)
    }

    /// Backups started through the API (seeds are not counted).
    pub fn backups_created(&self) -> u64 {
        self.backups_created.load(Ordering::Relaxed)
    }

    /// Restores started through the API.
    pub fn restores(&self) -> u64 {
        self.restores.load(Ordering::Relaxed)
    }

    pub(crate) fn add_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_unavailable(&self) {
        self.unavailable.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_download(&self) {
        self.downloads.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_download_bytes(&self, n: usize) {
        self.download_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_backup(&self) {
        self.backups_created.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_restore(&self) {
        self.restores.fetch_add(1, Ordering::Relaxed);
    }
}
