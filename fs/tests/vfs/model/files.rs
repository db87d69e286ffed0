//! Open files: opens, reads at any offset, writes, fsync. Reads are compared byte for byte
//! with the model; under a fault they may fail, never give other bytes.

use super::ops::{At, Op};
use super::reference::{View, upload_parts};
use super::run::{Handle, Harness, Outcome, count};
use crate::fixture::noise;

impl Harness {
    pub(super) async fn open(
        &mut self,
        op: &Op,
        path: &str,
        write: bool,
        truncate: bool,
    ) -> Outcome {
        let Some((entry, view)) = self.walk_checked(op, path).await? else {
            return Ok(());
        };
        let staged = upload_parts(path).is_some();
        let expected = match &view {
            // The kernel follows symlinks itself, and opens directories with opendir.
            View::Symlink(_) | View::Dir(_) => return Ok(()),
            View::File(_) if write && !staged => Err(libc::EROFS),
            View::File(_) => Ok(()),
        };
        let got = self.f.vfs.open(entry.attr.ino, write, truncate).await;
        let opened = match (got, expected) {
            (Ok(o), Ok(())) => o,
            (Ok(o), Err(want)) => {
                self.f.vfs.release(o.fh);
                return Err(format!("opened, model: errno {want}"));
            }
            (Err(e), want) => {
                let want: Vec<i32> = want.err().into_iter().collect();
                return self.judge_error(op, false, &e, &want);
            }
        };
        let fh = opened.fh;
        let handle = match view {
            View::File(None) => Handle::Generated {
                fh,
                size: entry.attr.size,
            },
            View::File(Some(content)) if staged => {
                if write && truncate {
                    content.borrow_mut().clear();
                }
                Handle::Staged {
                    fh,
                    content,
                    writable: write,
                    upload: self.model.upload_of(path),
                }
            }
            View::File(Some(content)) => Handle::Snapshot {
                fh,
                data: content.borrow().clone(),
            },
            View::Dir(_) | View::Symlink(_) => return Err("opened a non-file".into()),
        };
        self.handles.push(handle);
        Ok(())
    }

    /// The `n % count`-th handle for which `pick` holds.
    pub(super) fn pick(&self, n: usize, pick: impl Fn(&Handle) -> bool) -> Option<usize> {
        let fit: Vec<usize> = (0..self.handles.len())
            .filter(|i| pick(&self.handles[*i]))
            .collect();
        (!fit.is_empty()).then(|| fit[n % fit.len()])
    }

    pub(super) async fn read(&mut self, op: &Op, n: usize, offset: u64, len: u32) -> Outcome {
        let Some(i) = self.pick(n, |h| !matches!(h, Handle::Dir(_))) else {
            return Ok(());
        };
        let fh = self.handles[i].fh();
        let got = self.f.vfs.read(fh, offset, len).await;
        let (want, may_fail) = match &self.handles[i] {
            Handle::Snapshot { data, .. } => (
                Some(range(data, offset, len).to_vec()),
                self.faults.reading(),
            ),
            Handle::Staged { content, .. } => {
                (Some(range(&content.borrow(), offset, len).to_vec()), false)
            }
            Handle::Generated { size, .. } => {
                let n = size.saturating_sub(offset).min(u64::from(len));
                match &got {
                    Ok(b) if b.len() as u64 == n => return Ok(()),
                    Ok(b) => return Err(format!("{} bytes, expected {n}", b.len())),
                    Err(_) => (None, false),
                }
            }
            Handle::Dir(_) => return Ok(()),
        };
        match (got, want) {
            (Ok(b), Some(want)) if b[..] == want[..] => {
                count(2);
                Ok(())
            }
            (Ok(b), Some(want)) => {
                let first = b.iter().zip(&want).position(|(x, y)| x != y);
                Err(format!(
                    "WRONG BYTES: {} bytes, expected {}; first difference at {first:?}",
                    b.len(),
                    want.len()
                ))
            }
            (Ok(_), None) => Ok(()),
            (Err(e), _) => self.judge_error(op, may_fail, &e, &[]),
        }
    }

    pub(super) fn write(&mut self, n: usize, at: At, len: usize, seed: u8) -> Outcome {
        let writable = |h: &Handle| matches!(h, Handle::Staged { writable: true, .. });
        let Some(i) = self.pick(n, writable) else {
            return Ok(());
        };
        let Handle::Staged { fh, content, .. } = &self.handles[i] else {
            return Ok(());
        };
        let offset = match at {
            At::Start => 0,
            At::End => content.borrow().len() as u64,
            At::Offset(o) => o,
        };
        let data = noise(len, u64::from(seed) + 1);
        match self.f.vfs.write(*fh, offset, &data) {
            Ok(w) if w as usize == len => {}
            Ok(w) => return Err(format!("wrote {w} of {len} bytes")),
            Err(e) => return Err(format!("unexpected error {e}")),
        }
        if len > 0 {
            let mut c = content.borrow_mut();
            let end = offset as usize + len;
            if c.len() < end {
                c.resize(end, 0);
            }
            c[offset as usize..end].copy_from_slice(&data);
        }
        Ok(())
    }

    pub(super) fn fsync(&mut self, n: usize) -> Outcome {
        let Some(i) = self.pick(n, |h| !matches!(h, Handle::Dir(_))) else {
            return Ok(());
        };
        self.f
            .vfs
            .fsync(self.handles[i].fh())
            .map_err(|e| format!("unexpected error {e}"))
    }
}

/// The bytes a read of `[offset, offset + len)` must give.
fn range(data: &[u8], offset: u64, len: u32) -> &[u8] {
    let start = offset.min(data.len() as u64) as usize;
    let end = offset.saturating_add(u64::from(len)).min(data.len() as u64) as usize;
    &data[start..end]
}
