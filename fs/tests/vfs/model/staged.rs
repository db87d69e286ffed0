//! Changes to the upload area: mkdir, create, truncate, unlink, rmdir and rename, each with
//! the error the model expects where it refuses.

use std::ffi::OsStr;

use snapfs_fs::vfs::{Entry, VfsResult};

use super::ops::Op;
use super::reference::{Node, View, status_of, upload_parts};
use super::run::{Handle, Harness, Outcome, check_attr, split};

impl Harness {
    /// mkdir, or create (which also opens the file for writing).
    pub(super) async fn make(&mut self, op: &Op, path: &str, file: bool) -> Outcome {
        let (parent, name) = split(path);
        let Some((dir, View::Dir(children))) = self.walk_checked(op, parent).await? else {
            return Ok(());
        };
        let expected: Result<(), i32> = match upload_parts(path) {
            // Reserved for status files, whether there is one or not.
            None if status_of(path).is_some() => Err(libc::EINVAL),
            None => Err(libc::EROFS),
            Some((upload, below)) if below.is_empty() => {
                if upload == "Bad_Name" {
                    Err(libc::EINVAL)
                } else if self.model.taken(upload) || children.contains_key(name) {
                    Err(libc::EEXIST)
                } else {
                    Ok(())
                }
            }
            Some(_) if children.contains_key(name) => Err(libc::EEXIST),
            Some(_) => Ok(()),
        };
        let ino = dir.attr.ino;
        let name = OsStr::new(name);
        let got: VfsResult<(Entry, Option<u64>)> = if file {
            let made = self.f.vfs.create(ino, name, 0o644, 0o022).await;
            made.map(|(e, o)| (e, Some(o.fh)))
        } else {
            let made = self.f.vfs.mkdir(ino, name, 0o755, 0o022).await;
            made.map(|e| (e, None))
        };
        match (got, expected) {
            (Ok((entry, opened)), Ok(())) => {
                let node = if file {
                    Node::file(b"")
                } else {
                    Node::Dir(Default::default())
                };
                self.model.add_staged(path, node, None);
                let view = self.model.resolve(path).map_err(|m| format!("{m:?}"))?;
                check_attr(&entry, &view)?;
                self.see(path, entry.attr.ino)?;
                if let (Some(fh), View::File(Some(content))) = (opened, view) {
                    let upload = self.model.upload_of(path);
                    self.handles.push(Handle::Staged {
                        fh,
                        content,
                        writable: true,
                        upload,
                    });
                }
                Ok(())
            }
            (Ok((_, opened)), Err(want)) => {
                if let Some(fh) = opened {
                    self.f.vfs.release(fh);
                }
                Err(format!("made, model: errno {want}"))
            }
            (Err(e), want) => {
                let want: Vec<i32> = want.err().into_iter().collect();
                self.judge_error(op, false, &e, &want)
            }
        }
    }

    pub(super) async fn truncate(&mut self, op: &Op, path: &str, size: u64) -> Outcome {
        let Some((entry, View::File(content))) = self.walk_checked(op, path).await? else {
            return Ok(());
        };
        let set = snapfs_fs::vfs::SetAttr {
            size: Some(size),
            ..Default::default()
        };
        let got = self.f.vfs.setattr(entry.attr.ino, set, None).await;
        match (got, content) {
            (Ok(e), Some(content)) if upload_parts(path).is_some() => {
                content.borrow_mut().resize(size as usize, 0);
                if e.attr.size != size {
                    return Err(format!("size {} after truncating to {size}", e.attr.size));
                }
                Ok(())
            }
            (Ok(_), _) => Err("truncated a read-only file".into()),
            (Err(e), _) if upload_parts(path).is_some() => Err(format!("unexpected error {e}")),
            (Err(e), _) => self.judge_error(op, false, &e, &[libc::EROFS]),
        }
    }

    pub(super) async fn remove(&mut self, op: &Op, path: &str, dir: bool) -> Outcome {
        let (parent, name) = split(path);
        let Some((parent_entry, View::Dir(_))) = self.walk_checked(op, parent).await? else {
            return Ok(());
        };
        let expected = if let Some(upload) = status_of(path) {
            if self.model.uploads.contains_key(upload) {
                Err(libc::EROFS)
            } else {
                Err(libc::ENOENT)
            }
        } else if upload_parts(path).is_none() {
            Err(libc::EROFS)
        } else {
            match self.model.resolve(path) {
                Err(_) => Err(libc::ENOENT),
                Ok(View::Dir(_)) if !dir => Err(libc::EISDIR),
                Ok(View::Dir(c)) if !c.is_empty() => Err(libc::ENOTEMPTY),
                Ok(View::Dir(_)) => Ok(()),
                Ok(_) if dir => Err(libc::ENOTDIR),
                Ok(_) => Ok(()),
            }
        };
        let got = self
            .f
            .vfs
            .remove(parent_entry.attr.ino, OsStr::new(name), dir)
            .await;
        match (got, expected) {
            (Ok(()), Ok(())) => {
                self.model.remove_staged(path);
                self.inos.retire(path);
                Ok(())
            }
            (Ok(()), Err(want)) => Err(format!("removed, model: errno {want}")),
            (Err(e), want) => {
                let want: Vec<i32> = want.err().into_iter().collect();
                self.judge_error(op, false, &e, &want)
            }
        }
    }

    /// A rename, as the kernel sends it: never of an entry onto itself.
    pub(super) async fn rename(&mut self, op: &Op, from: &str, to: &str) -> Outcome {
        let ((from_parent, from_name), (to_parent, to_name)) = (split(from), split(to));
        if from == to || from_name.is_empty() || to_name.is_empty() {
            return Ok(());
        }
        // What renaming a status file, or onto one, answers is not modelled.
        if status_of(from).is_some() || status_of(to).is_some() {
            return Ok(());
        }
        let source = self.model.resolve(from);
        // Where a file removed but still open counts after its folder moved is not modelled.
        let orphans = self.handles.iter().any(|h| {
            matches!(h, Handle::Staged { content, .. } if self.model.holder_of(content).is_none())
        });
        if orphans && matches!(source, Ok(View::Dir(_))) {
            return Ok(());
        }
        let Some((src_dir, View::Dir(_))) = self.walk_checked(op, from_parent).await? else {
            return Ok(());
        };
        let Some((dst_dir, View::Dir(_))) = self.walk_checked(op, to_parent).await? else {
            return Ok(());
        };
        let top = upload_parts(to)
            .filter(|(_, below)| below.is_empty())
            .map(|(u, _)| u);
        let expected: Result<(), i32> = if upload_parts(from).is_none() {
            Err(libc::EROFS)
        } else if upload_parts(to).is_none() {
            Err(libc::EXDEV)
        } else if top == Some("Bad_Name") {
            Err(libc::EINVAL)
        } else if top.is_some_and(|u| self.model.taken(u)) {
            Err(libc::EEXIST)
        } else {
            match (&source, self.model.resolve(to)) {
                (Err(_), _) => Err(libc::ENOENT),
                _ if to.starts_with(&format!("{from}/")) => Err(libc::EINVAL),
                // Onto a folder it is in: that folder is not empty.
                _ if from.starts_with(&format!("{to}/")) => Err(libc::ENOTEMPTY),
                (Ok(View::Dir(_)), Ok(View::Dir(c))) if !c.is_empty() => Err(libc::ENOTEMPTY),
                (Ok(View::Dir(_)), Ok(View::File(_) | View::Symlink(_))) => Err(libc::ENOTDIR),
                (Ok(View::File(_) | View::Symlink(_)), Ok(View::Dir(_))) => Err(libc::EISDIR),
                _ => Ok(()),
            }
        };
        let got = self
            .f
            .vfs
            .rename(
                src_dir.attr.ino,
                OsStr::new(from_name),
                dst_dir.attr.ino,
                OsStr::new(to_name),
            )
            .await;
        match (got, expected) {
            (Ok(()), Ok(())) => {
                self.move_staged(from, to);
                Ok(())
            }
            (Ok(()), Err(want)) => Err(format!("renamed, model: errno {want}")),
            (Err(e), want) => {
                let want: Vec<i32> = want.err().into_iter().collect();
                self.judge_error(op, false, &e, &want)
            }
        }
    }

    /// Moves an entry in the model, its inode numbers with it, and each open file's count to
    /// the upload it is in now.
    fn move_staged(&mut self, from: &str, to: &str) {
        let Some((node, from_instance)) = self.model.remove_staged(from) else {
            return;
        };
        let top = upload_parts(to)
            .filter(|(_, below)| below.is_empty())
            .map(|(u, _)| u);
        let replaced = top.and_then(|u| self.model.uploads.get(u).map(|u| u.instance));
        self.model.add_staged(to, node, top.and(from_instance));
        self.inos.retire(to);
        self.inos.rename(from, to);
        let now = self.model.upload_of(to);
        for h in &mut self.handles {
            if let Handle::Staged {
                content, upload, ..
            } = h
            {
                // Files left open in an upload replaced by this one count for it now.
                if replaced.is_some() && *upload == replaced {
                    *upload = now;
                }
                if let Some(holder) = self.model.holder_of(content) {
                    *upload = Some(holder);
                }
            }
        }
    }
}
