//! The tar stream an upload sends into its pod: planned from a walk of the source first, so its
//! exact length is known before the first byte goes out (exact progress).
//!
//! POSIX ustar headers, with a PAX extended header in front of an entry whose path, link
//! target, size or owner does not fit the fixed fields. Times are whole seconds, as ustar keeps
//! them.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use crate::early::Held;

const BLOCK: u64 = 512;
/// Size of the pieces the stream is cut into.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    /// A file whose content is already on the far side, at `link` (`Plan::link_sent`).
    HardLink,
}

/// What a file's tar entry carries besides its content, and the inode it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub ino: u64,
    pub size: u64,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

impl Meta {
    fn of(meta: &std::fs::Metadata) -> Meta {
        Meta {
            ino: meta.ino(),
            size: meta.len(),
            mode: meta.mode() & 0o7777,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            mtime: u64::try_from(meta.mtime()).unwrap_or(0),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// Relative to the upload's root, '/'-separated; directories end in '/'.
    path: String,
    kind: Kind,
    /// Its size is that of the entry's content: none for folders and links.
    meta: Meta,
    link: Option<String>,
    source: PathBuf,
}

impl Entry {
    fn file(path: String, source: PathBuf, meta: Meta) -> Entry {
        Entry {
            path,
            kind: Kind::File,
            meta,
            link: None,
            source,
        }
    }
}

/// What will be sent, and how long the stream is.
#[derive(Debug, Clone)]
pub struct Plan {
    entries: Vec<Entry>,
    /// Bytes of the whole stream, its end-of-archive marker included.
    pub total: u64,
    /// Bytes of file content.
    pub data: u64,
    /// Regular files, by path, with their sizes: what must be found on the far side.
    pub files: Vec<(String, u64)>,
}

impl Plan {
    /// Files, folders and links to send.
    pub fn entries(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Whether the tree has an entry `name` at its top.
    pub fn has_top(&self, name: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.path.trim_end_matches('/') == name)
    }

    /// Sends each file that `sent` finds already on the far side, as it is now, as a hard link
    /// to where it is there; answers how many, and their bytes. `total` follows; `data` and
    /// `files` stay what the tree holds.
    pub fn link_sent(&mut self, mut sent: impl FnMut(&Meta) -> Option<String>) -> (u64, u64) {
        let (mut linked, mut bytes) = (0, 0);
        for e in &mut self.entries {
            if e.kind != Kind::File {
                continue;
            }
            if let Some(target) = sent(&e.meta) {
                self.total -= header_len(e) + padded(e.meta.size);
                bytes += e.meta.size;
                e.kind = Kind::HardLink;
                e.meta.size = 0;
                e.link = Some(target);
                self.total += header_len(e);
                linked += 1;
            }
        }
        (linked, bytes)
    }
}

/// Bytes of the entry `Tar::file_as` makes of a file with `meta` under `name`.
pub fn file_entry_len(name: &str, meta: &std::fs::Metadata) -> u64 {
    let e = Entry::file(name.to_string(), PathBuf::new(), Meta::of(meta));
    header_len(&e) + padded(e.meta.size)
}

/// Walks `root`: a folder's content, or a single file, which is sent under `name`.
pub fn plan(root: &Path, name: &str) -> std::io::Result<Plan> {
    let mut entries = Vec::new();
    let meta = std::fs::symlink_metadata(root)?;
    if meta.is_dir() {
        walk(root, "", &mut entries)?;
    } else {
        entries.push(entry(root, name.to_string(), &meta)?);
    }
    let mut total = 2 * BLOCK;
    let (mut data, mut files) = (0, Vec::new());
    for e in &entries {
        total += header_len(e) + padded(e.meta.size);
        if e.kind == Kind::File {
            data += e.meta.size;
            files.push((e.path.clone(), e.meta.size));
        }
    }
    Ok(Plan {
        entries,
        total,
        data,
        files,
    })
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<Entry>) -> std::io::Result<()> {
    let mut children: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    children.sort_by_key(|c| c.file_name());
    for c in children {
        let name = c.file_name().into_string().map_err(|n| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{rel}{}: a file name that is not UTF-8",
                    n.to_string_lossy()
                ),
            )
        })?;
        if name.contains('\n') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{rel}{name:?}: a file name with a newline cannot be checked on arrival"),
            ));
        }
        let path = c.path();
        let meta = std::fs::symlink_metadata(&path)?;
        let e = entry(&path, format!("{rel}{name}"), &meta)?;
        let is_dir = e.kind == Kind::Dir;
        let sub = e.path.clone();
        out.push(e);
        if is_dir {
            walk(&path, &sub, out)?;
        }
    }
    Ok(())
}

fn entry(path: &Path, rel: String, meta: &std::fs::Metadata) -> std::io::Result<Entry> {
    let ft = meta.file_type();
    let (kind, size, link, rel) = if ft.is_dir() {
        (Kind::Dir, 0, None, format!("{rel}/"))
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path)?;
        let target = target.into_os_string().into_string().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{rel}: a link target that is not UTF-8"),
            )
        })?;
        (Kind::Symlink, 0, Some(target), rel)
    } else if ft.is_file() {
        (Kind::File, meta.len(), None, rel)
    } else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{rel}: only files, folders and symlinks can be sent"),
        ));
    };
    let meta = Meta {
        size,
        ..Meta::of(meta)
    };
    Ok(Entry {
        kind,
        link,
        ..Entry::file(rel, path.to_path_buf(), meta)
    })
}

fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// Octal field limits of ustar.
const MAX_ID: u64 = 0o7777777;
const MAX_SIZE: u64 = 0o77777777777;

/// The PAX records an entry needs, if any.
fn pax_records(e: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    if split_path(&e.path).is_none() {
        record(&mut out, "path", &e.path);
    }
    if let Some(l) = &e.link
        && l.len() > 100
    {
        record(&mut out, "linkpath", l);
    }
    let m = &e.meta;
    if m.size > MAX_SIZE {
        record(&mut out, "size", &m.size.to_string());
    }
    if m.uid > MAX_ID {
        record(&mut out, "uid", &m.uid.to_string());
    }
    if m.gid > MAX_ID {
        record(&mut out, "gid", &m.gid.to_string());
    }
    out
}

/// One `LEN key=value\n` record; LEN counts the whole record, its own digits included.
fn record(out: &mut Vec<u8>, key: &str, value: &str) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while body + len.to_string().len() != len {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}={value}\n").as_bytes());
}

/// ustar's (prefix, name) split of a path, if it fits.
fn split_path(path: &str) -> Option<(&str, &str)> {
    if path.len() <= 100 {
        return Some(("", path));
    }
    // Split at a '/' so that the prefix holds ≤ 155 bytes and the name ≤ 100 and is not empty.
    let bytes = path.as_bytes();
    (0..bytes.len()).rev().find_map(|i| {
        (bytes[i] == b'/' && i <= 155 && path.len() - i - 1 <= 100 && i + 1 < path.len())
            .then(|| (&path[..i], &path[i + 1..]))
    })
}

fn header_len(e: &Entry) -> u64 {
    let pax = pax_records(e).len() as u64;
    BLOCK + if pax > 0 { BLOCK + padded(pax) } else { 0 }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    let s = s.as_bytes();
    // A value too big for the field is carried by a PAX record; the field holds the maximum.
    let start = s.len().saturating_sub(field.len() - 1);
    let last = field.len() - 1;
    if start > 0 {
        field[..last].fill(b'7');
    } else {
        field[..s.len()].copy_from_slice(s);
    }
    field[last] = 0;
}

fn put(field: &mut [u8], s: &str) {
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

fn header(path: &str, kind: u8, size: u64, e: &Entry, link: &str) -> [u8; 512] {
    let mut h = [0u8; 512];
    let (prefix, name) = split_path(path).unwrap_or(("", path));
    put(&mut h[0..100], name);
    octal(&mut h[100..108], u64::from(e.meta.mode));
    octal(&mut h[108..116], e.meta.uid.min(MAX_ID));
    octal(&mut h[116..124], e.meta.gid.min(MAX_ID));
    octal(&mut h[124..136], size.min(MAX_SIZE));
    octal(&mut h[136..148], e.meta.mtime.min(0o77777777777));
    h[156] = kind;
    put(&mut h[157..257], link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    put(&mut h[345..500], prefix);
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h[148..155], sum);
    h[155] = b' ';
    h
}

/// Produces the stream in pieces of at most `CHUNK` bytes, handing each to `send`; stops at
/// the first error `send` returns. A file that no longer has the size the plan saw fails the
/// stream: what arrives must be what was planned.
pub fn write(plan: &Plan, send: impl FnMut(Bytes) -> std::io::Result<()>) -> std::io::Result<()> {
    let mut tar = Tar::new(send);
    tar.plan(plan)?;
    tar.end()
}

/// A tar stream being written, cut into pieces of at most `CHUNK` bytes for `send`.
pub struct Tar<F> {
    buf: BytesMut,
    send: F,
}

impl<F: FnMut(Bytes) -> std::io::Result<()>> Tar<F> {
    pub fn new(send: F) -> Self {
        Tar {
            buf: BytesMut::with_capacity(CHUNK),
            send,
        }
    }

    fn flush(&mut self, force: bool) -> std::io::Result<()> {
        if self.buf.len() >= CHUNK || (force && !self.buf.is_empty()) {
            (self.send)(self.buf.split().freeze())?;
            self.buf.reserve(CHUNK);
        }
        Ok(())
    }

    /// The entries of `plan`, each file read as the plan saw it.
    pub fn plan(&mut self, plan: &Plan) -> std::io::Result<()> {
        for e in &plan.entries {
            self.header(e)?;
            if e.kind != Kind::File {
                continue;
            }
            let mut f = Some(std::fs::File::open(&e.source)?);
            if !self.content(&mut f, e.meta.size, None)? {
                return Err(changed(e));
            }
            // Longer than planned is as wrong as shorter.
            if let Some(f) = f.as_mut()
                && f.read(&mut [0u8; 1])? != 0
            {
                return Err(changed(e));
            }
        }
        Ok(())
    }

    /// File `source` under the name `name`, as it is when opened. Answers what was sent of it,
    /// or None where nothing was (it is gone, moved, or not a file), or where it shrank or was
    /// removed while read (`held` asks to let go): its entry is then filled up with zeros and
    /// what arrives is not the file. Only a failure to send is an error.
    pub fn file_as(
        &mut self,
        name: String,
        source: &Path,
        held: &Held,
    ) -> std::io::Result<Option<Meta>> {
        let Ok(f) = std::fs::File::open(source) else {
            return Ok(None);
        };
        let Ok(stat) = f.metadata() else {
            return Ok(None);
        };
        if !stat.is_file() {
            return Ok(None);
        }
        let meta = Meta::of(&stat);
        self.header(&Entry::file(name, source.to_path_buf(), meta))?;
        let whole = self.content(&mut Some(f), meta.size, Some(held))?;
        Ok(whole.then_some(meta))
    }

    /// Sends what is held, then an empty piece: the receiver is to pass on what it holds too.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.flush(true)?;
        (self.send)(Bytes::new())
    }

    /// The end-of-archive marker, and the last piece.
    pub fn end(mut self) -> std::io::Result<()> {
        self.buf.extend_from_slice(&[0u8; 2 * BLOCK as usize]);
        self.flush(true)
    }

    fn header(&mut self, e: &Entry) -> std::io::Result<()> {
        let pax = pax_records(e);
        if !pax.is_empty() {
            let short: String = e
                .path
                .trim_end_matches('/')
                .chars()
                .rev()
                .take(80)
                .collect();
            let short: String = short.chars().rev().collect();
            let name = format!("PaxHeaders/{short}");
            self.buf
                .extend_from_slice(&header(&name, b'x', pax.len() as u64, e, ""));
            self.buf.extend_from_slice(&pax);
            pad(&mut self.buf, pax.len() as u64);
        }
        let (kind, link) = match e.kind {
            Kind::File => (b'0', ""),
            Kind::Dir => (b'5', ""),
            Kind::Symlink => (b'2', e.link.as_deref().unwrap_or("")),
            Kind::HardLink => (b'1', e.link.as_deref().unwrap_or("")),
        };
        self.buf
            .extend_from_slice(&header(&e.path, kind, e.meta.size, e, link));
        self.flush(false)
    }

    /// `size` bytes of `f` and the padding after them. Where `f` ends early, or `held` asks to
    /// let go, zeros stand for the rest, and the answer is false; a file let go of is closed at
    /// once (`f` is None then), and `held` told so.
    fn content(
        &mut self,
        f: &mut Option<std::fs::File>,
        size: u64,
        held: Option<&Held>,
    ) -> std::io::Result<bool> {
        let (mut left, mut whole) = (size, true);
        while left > 0 {
            let room = (CHUNK - self.buf.len().min(CHUNK)).max(64 << 10) as u64;
            let want = left.min(room) as usize;
            let at = self.buf.len();
            self.buf.resize(at + want, 0);
            if whole && let Some(file) = f.as_mut() {
                whole = match held {
                    // A file sent early that cannot be read is not sent, but its entry is
                    // already in the stream.
                    Some(h) => {
                        !h.must_let_go()
                            && read_full(file, &mut self.buf[at..]).is_ok_and(|n| n == want)
                    }
                    None => read_full(file, &mut self.buf[at..])? == want,
                };
                if !whole && let Some(h) = held {
                    *f = None;
                    h.set(None);
                }
            }
            left -= want as u64;
            self.flush(false)?;
        }
        pad(&mut self.buf, size);
        self.flush(false)?;
        Ok(whole)
    }
}

fn changed(e: &Entry) -> std::io::Error {
    std::io::Error::other(format!("{} changed while it was being sent", e.path))
}

fn pad(buf: &mut BytesMut, len: u64) {
    let n = (padded(len) - len) as usize;
    buf.extend_from_slice(&[0u8; BLOCK as usize][..n]);
}

fn read_full(f: &mut std::fs::File, mut buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while !buf.is_empty() {
        match f.read(buf) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                buf = &mut buf[k..];
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
