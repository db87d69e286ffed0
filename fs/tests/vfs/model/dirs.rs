//! Directory listings through open directory handles, read a few entries per call from the
//! offset the last call ended at, as the FUSE adapter answers READDIR and READDIRPLUS.

use std::collections::BTreeSet;

use snapfs_fs::vfs::{DirEntry, Entry, VfsResult};

use super::ops::Op;
use super::reference::View;
use super::run::{Handle, Harness, Outcome, check_attr, join, names_of};

/// An open directory and what it has given so far.
pub struct DirHandle {
    pub fh: u64,
    ino: u64,
    path: String,
    /// Where the next call starts, as the kernel passes back the offset of the last entry.
    offset: u64,
    /// Names given so far, "." and ".." left out.
    seen: Vec<String>,
    /// Names there at some moment since the directory was opened.
    ever: BTreeSet<String>,
    /// Names there at every moment since.
    always: BTreeSet<String>,
    /// How many entries had gone when it was opened.
    gone: usize,
}

impl Harness {
    /// Opens a directory and reads it to the end at once: the names are exactly the model's.
    pub(super) async fn readdir(
        &mut self,
        op: &Op,
        path: &str,
        plus: bool,
        chunk: usize,
    ) -> Outcome {
        let Some(i) = self.opendir_at(op, path).await? else {
            return Ok(());
        };
        let ended = loop {
            match self.next_entries(op, i, plus, chunk).await {
                Ok(Some(true)) => continue,
                Ok(Some(false)) => break Ok(true),
                // A fault stopped it halfway.
                Ok(None) => break Ok(false),
                Err(e) => break Err(e),
            }
        };
        let h = self.handles.remove(i);
        self.f.vfs.release(h.fh());
        let Handle::Dir(d) = h else {
            return Ok(());
        };
        if !ended? {
            return Ok(());
        }
        let listed: BTreeSet<String> = d.seen.iter().cloned().collect();
        let want = names_of(&self.model, path);
        if listed != want || listed.len() != d.seen.len() {
            return Err(format!("listed {:?}, model: {want:?}", d.seen));
        }
        super::run::count(3);
        Ok(())
    }

    pub(super) async fn opendir(&mut self, op: &Op, path: &str) -> Outcome {
        self.opendir_at(op, path).await.map(drop)
    }

    /// Opens the directory at `path`; the index of its handle, if it is one and opened.
    async fn opendir_at(&mut self, op: &Op, path: &str) -> Result<Option<usize>, String> {
        let Some((entry, View::Dir(_))) = self.walk_checked(op, path).await? else {
            return Ok(None);
        };
        let opened = match self.f.vfs.opendir(entry.attr.ino).await {
            Ok(o) => o,
            Err(e) => {
                let may_fail = self.may_fail(path);
                self.judge_error(op, may_fail, &e, &[])?;
                return Ok(None);
            }
        };
        let names = names_of(&self.model, path);
        self.handles.push(Handle::Dir(DirHandle {
            fh: opened.fh,
            ino: entry.attr.ino,
            path: path.to_string(),
            offset: 0,
            seen: Vec::new(),
            ever: names.clone(),
            always: names,
            gone: self.inos.gone(),
        }));
        Ok(Some(self.handles.len() - 1))
    }

    pub(super) async fn read_dir(
        &mut self,
        op: &Op,
        n: usize,
        plus: bool,
        chunk: usize,
    ) -> Outcome {
        let Some(i) = self.pick(n, |h| matches!(h, Handle::Dir(_))) else {
            return Ok(());
        };
        self.next_entries(op, i, plus, chunk).await.map(drop)
    }

    /// One READDIR(PLUS) call on the directory handle at `i`: `Some(true)` if it gave
    /// entries, `Some(false)` at the end (where what it gave is checked), `None` if a fault
    /// stopped it.
    async fn next_entries(
        &mut self,
        op: &Op,
        i: usize,
        plus: bool,
        chunk: usize,
    ) -> Result<Option<bool>, String> {
        let Handle::Dir(d) = &self.handles[i] else {
            return Ok(None);
        };
        let (fh, ino, offset, path) = (d.fh, d.ino, d.offset, d.path.clone());
        let fresh = d.gone == self.inos.gone();
        // With the offset each entry gives the next call, as the adapter passes it on.
        let got: VfsResult<Vec<(u64, DirEntry, Option<Entry>)>> = if plus {
            let listed = self.f.vfs.readdir_plus_at(ino, fh, offset, chunk).await;
            listed.map(|v| v.into_iter().map(|(n, d, e)| (n, d, Some(e))).collect())
        } else {
            let listed = self.f.vfs.readdir_at(fh, offset, chunk);
            listed.map(|v| (offset + 1..).zip(v).map(|(n, d)| (n, d, None)).collect())
        };
        let entries = match got {
            Ok(entries) => entries,
            Err(e) => {
                let may_fail = plus && self.may_fail(&path);
                self.judge_error(op, may_fail, &e, &[])?;
                return Ok(None);
            }
        };
        if entries.is_empty() {
            self.check_listing(i)?;
            return Ok(Some(false));
        }
        for (_, dirent, entry) in &entries {
            let name = dirent.name.to_string_lossy().into_owned();
            match name.as_str() {
                "." => {
                    if dirent.ino != ino {
                        return Err(format!("{path:?}: \".\" is inode {}", dirent.ino));
                    }
                }
                ".." => {
                    let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
                    let want = if path.is_empty() {
                        Some(ino)
                    } else {
                        self.inos.get(parent)
                    };
                    if want.is_some_and(|w| w != dirent.ino) {
                        return Err(format!("{path:?}: \"..\" is inode {}", dirent.ino));
                    }
                }
                _ => {
                    let child = join(&path, &name);
                    // Only names that are there now are held to the model. The kernel takes
                    // READDIRPLUS's inode and kind from the lookup, READDIR's from the listing
                    // taken at opendir, which may be out of date if anything went since.
                    if let Ok(view) = self.model.resolve(&child) {
                        let (ino, kind) = match entry {
                            Some(e) => {
                                check_attr(e, &view).map_err(|m| format!("{child:?}: {m}"))?;
                                (Some(e.attr.ino), e.attr.kind)
                            }
                            None if fresh => (Some(dirent.ino), dirent.kind),
                            None => (None, view.kind()),
                        };
                        if kind != view.kind() {
                            return Err(format!("{child:?} listed as {kind:?}"));
                        }
                        if let Some(ino) = ino {
                            self.see(&child, ino)?;
                        }
                    }
                    if let Handle::Dir(d) = &mut self.handles[i] {
                        d.seen.push(name);
                    }
                }
            }
        }
        if let (Handle::Dir(d), Some((next, ..))) = (&mut self.handles[i], entries.last()) {
            d.offset = *next;
        }
        Ok(Some(true))
    }

    /// At the end of a listing: no name twice, none that never existed, none missing that
    /// was there throughout.
    fn check_listing(&self, i: usize) -> Outcome {
        let Handle::Dir(d) = &self.handles[i] else {
            return Ok(());
        };
        let mut once = BTreeSet::new();
        for name in &d.seen {
            if !once.insert(name) {
                return Err(format!("{:?}: {name:?} listed twice: {:?}", d.path, d.seen));
            }
            if !d.ever.contains(name) {
                return Err(format!("{:?}: {name:?} listed, never there", d.path));
            }
        }
        if let Some(missing) = d.always.iter().find(|n| !once.contains(n)) {
            return Err(format!(
                "{:?}: {missing:?} not listed: {:?}",
                d.path, d.seen
            ));
        }
        Ok(())
    }

    /// Brings what each open directory has held up to date after an operation.
    pub(super) fn track_dirs(&mut self) {
        for h in &mut self.handles {
            if let Handle::Dir(d) = h {
                let now = names_of(&self.model, &d.path);
                d.always.retain(|n| now.contains(n));
                d.ever.extend(now);
            }
        }
    }
}
