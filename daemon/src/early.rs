//! What every target that stores a staged upload's files while they are copied (`StoresEarly`)
//! keeps of them: which files have a writer, and an epoch per file that each open for writing,
//! close and removal moves on. A file stored at an epoch counts only while no writer has it
//! open and its epoch is still that one: content that changed after it was read is never
//! taken for it. And the file the storing has open, which a removal makes it let go of.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What the file system last told of one staged file.
#[derive(Default)]
struct FileState {
    writers: u32,
    epoch: u64,
}

/// The staged files of one upload, by inode in the staging folder.
#[derive(Default)]
pub struct Files(Mutex<HashMap<u64, FileState>>);

impl Files {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, FileState>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// File `ino` was opened for writing, or made.
    pub fn writing(&self, ino: u64) {
        let mut files = self.lock();
        let f = files.entry(ino).or_default();
        f.writers += 1;
        f.epoch += 1;
    }

    /// A writer of file `ino` closed it: answers the epoch to read it at if it was the last.
    pub fn written(&self, ino: u64) -> Option<u64> {
        let mut files = self.lock();
        let f = files.entry(ino).or_default();
        f.writers = f.writers.saturating_sub(1);
        f.epoch += 1;
        (f.writers == 0).then_some(f.epoch)
    }

    /// File `ino` was removed: what was read of it no longer counts.
    pub fn removed(&self, ino: u64) {
        if let Some(f) = self.lock().get_mut(&ino) {
            f.epoch += 1;
        }
    }

    /// Whether file `ino`, read at `epoch`, still is what was read.
    pub fn current(&self, ino: u64, epoch: u64) -> bool {
        self.lock()
            .get(&ino)
            .is_some_and(|f| f.writers == 0 && f.epoch == epoch)
    }
}

/// The file a reader has open, by a key of the caller's, and a way to make it let go: a
/// removed file's space comes back only once no one has it open, so whoever removes a file
/// being read waits until the reader closed it.
#[derive(Default)]
pub struct Held {
    key: Mutex<Option<u64>>,
    let_go: AtomicBool,
    closed: Condvar,
}

/// How long a removal waits for a reader to let go; a reader checks between two reads.
const LET_GO_WAIT: Duration = Duration::from_secs(5);

impl Held {
    /// The reader has the file of `key` open from now on (before its open), or none (after
    /// its close).
    pub fn set(&self, key: Option<u64>) {
        *self.key.lock().unwrap_or_else(PoisonError::into_inner) = key;
        self.let_go.store(false, Ordering::Relaxed);
        self.closed.notify_all();
    }

    /// Whether the reader is asked to let go of the file it has open.
    pub fn must_let_go(&self) -> bool {
        self.let_go.load(Ordering::Relaxed)
    }

    /// The key of the file the reader has open.
    #[cfg(test)]
    pub fn key(&self) -> Option<u64> {
        *self.key.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the reader let go of the file of `key` if it has it open, and waits until it did.
    pub fn release(&self, key: u64) {
        let mut held = self.key.lock().unwrap_or_else(PoisonError::into_inner);
        let deadline = Instant::now() + LET_GO_WAIT;
        while *held == Some(key) {
            self.let_go.store(true, Ordering::Relaxed);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            held = match self.closed.wait_timeout(held, left) {
                Ok((held, _)) => held,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_counts_only_at_the_epoch_it_was_read_with_no_writer() {
        let files = Files::default();
        files.writing(7);
        files.writing(7);
        assert_eq!(files.written(7), None, "a writer still has it");
        let epoch = files.written(7).unwrap();
        assert!(files.current(7, epoch));
        files.writing(7);
        assert!(!files.current(7, epoch), "a writer has it again");
        let again = files.written(7).unwrap();
        assert!(!files.current(7, epoch) && files.current(7, again));
        files.removed(7);
        assert!(!files.current(7, again));
        assert!(!files.current(8, 0), "a file never told of");
    }
}
