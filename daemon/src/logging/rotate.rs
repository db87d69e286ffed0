//! A log file rotated by size: when a line would take FILE past its limit, FILE becomes
//! FILE.1 (FILE.1 becomes FILE.2, and so on; the oldest kept is dropped) and a new FILE starts.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    keep: usize,
    /// The open file and its size.
    current: Mutex<(File, u64)>,
}

fn open_append(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

impl RotatingFile {
    /// Opens `path` for appending; it is rotated once it would grow past `max_size` bytes,
    /// keeping `keep` old files.
    pub fn open(path: PathBuf, max_size: u64, keep: usize) -> io::Result<RotatingFile> {
        let current = Mutex::new(open_append(&path)?);
        Ok(RotatingFile {
            path,
            max_size,
            keep,
            current,
        })
    }

    fn numbered(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&self) -> io::Result<(File, u64)> {
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                match std::fs::rename(self.numbered(n), self.numbered(n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, self.numbered(1))?;
        }
        open_append(&self.path)
    }
}

/// Each call is one whole line (the formatter writes an event at once), so a rotation never
/// splits one.
impl Write for &RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut current = self
            .current
            .lock()
            .map_err(|_| io::Error::other("log file lock poisoned"))?;
        if current.1 > 0 && current.1 + buf.len() as u64 > self.max_size {
            // A file that cannot be rotated (a full disk, a removed folder) is written on.
            match self.rotate() {
                Ok(fresh) => *current = fresh,
                Err(e) => eprintln!("snapfsd: rotating {}: {e}", self.path.display()),
            }
        }
        let n = current.0.write(buf)?;
        current.1 += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_limit_keeping_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        let log = RotatingFile::open(path.clone(), 10, 2).unwrap();
        for line in [
            "aaaa\n", "bbbb\n", "cccc\n", "dddd\n", "eeee\n", "ffff\n", "gg\n",
        ] {
            (&log).write_all(line.as_bytes()).unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&path), "gg\n");
        assert_eq!(read(&dir.path().join("d.log.1")), "eeee\nffff\n");
        assert_eq!(read(&dir.path().join("d.log.2")), "cccc\ndddd\n");
        assert!(!dir.path().join("d.log.3").exists());
    }

    #[test]
    fn appends_to_an_existing_file_and_never_rotates_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        std::fs::write(&path, "old\n").unwrap();
        let log = RotatingFile::open(path.clone(), 100, 1).unwrap();
        (&log).write_all(b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\nnew\n");
        // A line longer than the limit is written whole into a fresh file.
        let long = "x".repeat(200);
        (&log).write_all(long.as_bytes()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), long);
    }
}
