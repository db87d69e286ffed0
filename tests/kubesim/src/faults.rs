//! Fault switches a test flips at run time, and counters it reads to assert on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Faults to inject. Every switch starts off and can be flipped at any time.
#[derive(Debug, Default)]
pub struct Faults {
    snapshot_never_ready: AtomicBool,
    snapshot_error: Mutex<Option<String>>,
    exec_drop_after: Mutex<Option<u64>>,
    exec_damage_stdin_at: Mutex<Option<u64>>,
    exec_v4_only: AtomicBool,
    latency_ms: AtomicU64,
    snapshot_api_missing: AtomicBool,
    /// Bytes per second of exec stdin and of exec output; 0 is unlimited.
    exec_bandwidth: AtomicU64,
    /// The exec links, one per direction, shared by every session.
    exec_links: Mutex<[Link; 2]>,
}

/// Which way exec data goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    /// Client to command (stdin).
    In = 0,
    /// Command to client (stdout and stderr).
    Out = 1,
}

/// A link of some bandwidth: each chunk goes once the chunks before it have had their time
/// on it, so a sender that waits as told averages the bandwidth. A link idle for a while has
/// `SLACK` of credit: a sender that slept longer than told (timers fire on whole milliseconds,
/// and chunks may need far less) gets that time back, as a link's buffers would give it; a
/// link idle for longer has no more.
#[derive(Debug, Default)]
pub(crate) struct Link {
    free_at: Option<Instant>,
}

/// The most time a link gives back after sitting idle.
const SLACK: Duration = Duration::from_millis(20);

impl Link {
    /// Reserves the link for `bytes` at `rate` bytes per second from `now`: how long the sender
    /// waits until the chunk has gone.
    pub fn reserve(&mut self, bytes: u64, rate: u64, now: Instant) -> Duration {
        let earliest = now.checked_sub(SLACK).unwrap_or(now);
        let start = self.free_at.map_or(now, |t| t.max(earliest));
        let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(rate.max(1));
        let done = start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.free_at = Some(done);
        done.saturating_duration_since(now)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Faults {
    /// Snapshots are bound to a content but never become `readyToUse`.
    pub fn set_snapshot_never_ready(&self, on: bool) {
        self.snapshot_never_ready.store(on, Ordering::Relaxed);
    }

    pub fn snapshot_never_ready(&self) -> bool {
        self.snapshot_never_ready.load(Ordering::Relaxed)
    }

    /// New snapshots fail: `status.error.message` is set to this message and they never become
    /// ready. `None` turns it off (snapshots already failed stay failed).
    pub fn set_snapshot_error(&self, message: Option<&str>) {
        *lock(&self.snapshot_error) = message.map(str::to_string);
    }

    pub fn snapshot_error(&self) -> Option<String> {
        lock(&self.snapshot_error).clone()
    }

    /// Exec sessions drop the connection (no close frame, no status) once this many bytes of
    /// output were sent. `None` turns it off.
    pub fn set_exec_drop_after(&self, bytes: Option<u64>) {
        *lock(&self.exec_drop_after) = bytes;
    }

    pub fn exec_drop_after(&self) -> Option<u64> {
        *lock(&self.exec_drop_after)
    }

    /// Exec sessions flip a bit of the byte at this offset of their stdin, as a link that
    /// damages data would. `None` turns it off.
    pub fn set_exec_damage_stdin_at(&self, offset: Option<u64>) {
        *lock(&self.exec_damage_stdin_at) = offset;
    }

    pub fn exec_damage_stdin_at(&self) -> Option<u64> {
        *lock(&self.exec_damage_stdin_at)
    }

    /// Exec and attach negotiate only `v4.channel.k8s.io`, like an API server older than 1.30.
    pub fn set_exec_v4_only(&self, on: bool) {
        self.exec_v4_only.store(on, Ordering::Relaxed);
    }

    pub fn exec_v4_only(&self) -> bool {
        self.exec_v4_only.load(Ordering::Relaxed)
    }

    /// Every API request waits this long before it is handled.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms
            .store(latency.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(Ordering::Relaxed))
    }

    /// The `snapshot.storage.k8s.io` group disappears from discovery and its paths answer 404,
    /// as on a cluster without the snapshot CRDs.
    pub fn set_snapshot_api_missing(&self, on: bool) {
        self.snapshot_api_missing.store(on, Ordering::Relaxed);
    }

    pub fn snapshot_api_missing(&self) -> bool {
        self.snapshot_api_missing.load(Ordering::Relaxed)
    }

    /// Limits exec stdin and exec output (stdout and stderr), each to this many bytes per
    /// second across all sessions, as a link of that bandwidth would, whatever protocol exec
    /// speaks. `None` removes the limit.
    pub fn set_exec_bandwidth(&self, bytes_per_sec: Option<u64>) {
        self.exec_bandwidth
            .store(bytes_per_sec.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn exec_bandwidth(&self) -> Option<u64> {
        Some(self.exec_bandwidth.load(Ordering::Relaxed)).filter(|b| *b > 0)
    }

    /// How long exec waits before `bytes` more go `direction`; None when unlimited or when they
    /// may go at once (a timer of no time still waits for the timer's next tick).
    pub(crate) fn exec_delay(&self, direction: Direction, bytes: usize) -> Option<Duration> {
        self.exec_delay_at(direction, bytes, Instant::now())
    }

    /// [`Faults::exec_delay`] as seen at `now`.
    fn exec_delay_at(&self, direction: Direction, bytes: usize, now: Instant) -> Option<Duration> {
        let rate = self.exec_bandwidth()?;
        let mut links = lock(&self.exec_links);
        Some(links[direction as usize].reserve(bytes as u64, rate, now)).filter(|d| !d.is_zero())
    }
}

/// What the server did, for tests to assert on. All counts start at zero.
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    watches: AtomicU64,
    exec_sessions: AtomicU64,
    exec_bytes_in: AtomicU64,
    exec_bytes_out: AtomicU64,
    portforward_bytes_in: AtomicU64,
    portforward_bytes_out: AtomicU64,
    created: Mutex<HashMap<String, u64>>,
    deleted: Mutex<HashMap<String, u64>>,
}

impl Counters {
    /// API requests received (every HTTP request, upgrades included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Watch streams opened.
    pub fn watches(&self) -> u64 {
        self.watches.load(Ordering::Relaxed)
    }

    /// Exec sessions started (upgraded to WebSocket).
    pub fn exec_sessions(&self) -> u64 {
        self.exec_sessions.load(Ordering::Relaxed)
    }

    /// Bytes clients sent on exec stdin.
    pub fn exec_bytes_in(&self) -> u64 {
        self.exec_bytes_in.load(Ordering::Relaxed)
    }

    /// Bytes exec sent to clients on stdout and stderr.
    pub fn exec_bytes_out(&self) -> u64 {
        self.exec_bytes_out.load(Ordering::Relaxed)
    }

    /// Bytes clients sent into port-forwards.
    pub fn portforward_bytes_in(&self) -> u64 {
        self.portforward_bytes_in.load(Ordering::Relaxed)
    }

    /// Bytes port-forwards sent to clients.
    pub fn portforward_bytes_out(&self) -> u64 {
        self.portforward_bytes_out.load(Ordering::Relaxed)
    }

    /// Objects of a resource (plural, e.g. `"persistentvolumeclaims"`) created through the API
    /// or by a controller.
    pub fn created(&self, resource: &str) -> u64 {
        lock(&self.created).get(resource).copied().unwrap_or(0)
    }

    /// Objects of a resource whose deletion was requested through the API.
    pub fn deleted(&self, resource: &str) -> u64 {
        lock(&self.deleted).get(resource).copied().unwrap_or(0)
    }

    pub(crate) fn add_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_watch(&self) {
        self.watches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_exec_session(&self) {
        self.exec_sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_exec_in(&self, n: usize) {
        self.exec_bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_exec_out(&self, n: usize) {
        self.exec_bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_portforward_in(&self, n: usize) {
        self.portforward_bytes_in
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_portforward_out(&self, n: usize) {
        self.portforward_bytes_out
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_created(&self, resource: &str) {
        *lock(&self.created).entry(resource.to_string()).or_default() += 1;
    }

    pub(crate) fn add_deleted(&self, resource: &str) {
        *lock(&self.deleted).entry(resource.to_string()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_spaces_chunks_by_their_size() {
        let t0 = Instant::now();
        let mut link = Link::default();
        let rate = 1000;
        assert_eq!(link.reserve(500, rate, t0), Duration::from_millis(500));
        // Back to back: the second chunk waits for the first.
        assert_eq!(link.reserve(250, rate, t0), Duration::from_millis(750));
        // Later, part of that wait has passed.
        assert_eq!(
            link.reserve(250, rate, t0 + Duration::from_millis(600)),
            Duration::from_millis(400)
        );
        // An idle link gives back at most SLACK of the idle time.
        assert_eq!(
            link.reserve(100, rate, t0 + Duration::from_secs(5)),
            Duration::from_millis(100) - SLACK
        );
    }

    #[test]
    fn a_sender_that_slept_too_long_gets_the_time_back() {
        let t0 = Instant::now();
        let mut link = Link::default();
        let rate = 50 << 20;
        // 8 KiB takes 156 µs; the sender's timer wakes it after a whole millisecond.
        let first = link.reserve(8 << 10, rate, t0);
        assert_eq!(first, Duration::from_nanos(156_250));
        let woke = t0 + Duration::from_millis(1);
        // Until the link has caught up with that millisecond, chunks go at once.
        let waits: Vec<Duration> = (0..6).map(|_| link.reserve(8 << 10, rate, woke)).collect();
        assert_eq!(waits[..5], [Duration::ZERO; 5]);
        assert_eq!(waits[5], Duration::from_nanos(7 * 156_250 - 1_000_000));
    }

    #[test]
    fn fifty_mebibytes_a_second() {
        let t0 = Instant::now();
        let mut link = Link::default();
        let rate = 50 << 20;
        let mut waited = Duration::ZERO;
        // 100 MiB in 32 KiB chunks, sent as fast as allowed: the last one is done at 2 s.
        for _ in 0..3200 {
            waited = link.reserve(32 << 10, rate, t0);
        }
        assert_eq!(waited, Duration::from_secs(2));
    }

    #[test]
    fn the_switch_feeds_both_directions_apart() {
        let faults = Faults::default();
        let t0 = Instant::now();
        assert_eq!(faults.exec_delay_at(Direction::In, 1000, t0), None);
        faults.set_exec_bandwidth(Some(1000));
        let second = Duration::from_secs(1);
        // Each direction has its own link: both wait one second, not two.
        assert_eq!(faults.exec_delay_at(Direction::In, 1000, t0), Some(second));
        assert_eq!(faults.exec_delay_at(Direction::Out, 1000, t0), Some(second));
        // The same direction again waits behind the first.
        assert_eq!(
            faults.exec_delay_at(Direction::In, 1000, t0),
            Some(2 * second)
        );
        // What may go at once gets no timer at all.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(faults.exec_delay_at(Direction::Out, 1, later), None);
        faults.set_exec_bandwidth(None);
        assert_eq!(faults.exec_delay_at(Direction::Out, 1000, t0), None);
    }
}
