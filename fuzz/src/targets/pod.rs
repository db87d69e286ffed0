//! What passes between snapfs and a pod: the `stat` lines a container prints, which become a
//! directory, and the tar stream an upload sends, which the container's `tar` unpacks.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use snapfsd::k8s::exec::listed;
use snapfsd::k8s::tarball;

use snapfs_fs::tree::is_file_name;

/// A container's answer to a directory listing: every entry shown has a name a directory can
/// hold.
pub fn stat_lines(data: &[u8]) {
    for e in listed(data) {
        assert!(is_file_name(&e.name), "entry shown as {:?}", e.name);
        assert_eq!(e.perm & !0o555, 0, "{}: writable bits shown", e.name);
    }
}

/// What a folder holds, by path ('/'-separated, folders without a trailing '/').
#[derive(Debug, PartialEq, Eq)]
enum Item {
    Dir,
    File(Vec<u8>),
    Link(String),
}

/// A folder described by the input (lines of a kind byte `f`, `d` or `l`, a path, `\x01`, and a
/// file's content or a link's target) is made on disk, sent through the tar writer, and read
/// back with another tar reader: the same folders, files and links must come out, and the
/// stream must be as long as planned.
pub fn tar_stream(data: &[u8]) {
    // In memory where the machine has it: the folder is made and removed on every input.
    let shm = Path::new("/dev/shm");
    let made = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    let Ok(dir) = made else {
        return;
    };
    let root = dir.path().join("root");
    if std::fs::create_dir(&root).is_err() {
        return;
    }
    for line in data.split(|&b| b == b'\n') {
        make(&root, line);
    }
    let Some(want) = read_folder(&root) else {
        return;
    };
    let Ok(plan) = tarball::plan(&root, "root") else {
        return;
    };
    let mut stream = Vec::new();
    let sent = tarball::write(&plan, |piece| {
        stream.extend_from_slice(&piece);
        Ok(())
    });
    if let Err(e) = sent {
        panic!("the stream of an unchanged folder fails: {e}");
    }
    assert_eq!(
        stream.len() as u64,
        plan.total,
        "the stream is not as long as planned"
    );
    assert_eq!(read_tar(&stream), want, "the tar reader finds other files");
}

/// Makes one entry; lines that cannot be made (bad names, clashes) are skipped.
fn make(root: &Path, line: &[u8]) {
    let Some((&kind, rest)) = line.split_first() else {
        return;
    };
    let (path, body) = match rest.iter().position(|&b| b == 1) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    if path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return;
    }
    let at = root.join(path);
    if let Some(parent) = at.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = match kind {
        b'd' => std::fs::create_dir_all(&at),
        b'l' => match std::str::from_utf8(body) {
            Ok(target) if !target.is_empty() && !target.contains('\0') => {
                std::os::unix::fs::symlink(target, &at)
            }
            _ => return,
        },
        _ => std::fs::write(&at, body),
    };
}

/// The folder as it is on disk; None if it holds what the writer does not send (a name that is
/// not UTF-8 cannot be made from a `str`, so only reading can fail).
fn read_folder(root: &Path) -> Option<BTreeMap<String, Item>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = todo.pop() {
        for entry in std::fs::read_dir(&dir).ok()? {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let path = format!("{rel}{name}");
            let kind = entry.file_type().ok()?;
            if kind.is_dir() {
                todo.push((entry.path(), format!("{path}/")));
                out.insert(path, Item::Dir);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(entry.path()).ok()?;
                out.insert(
                    path,
                    Item::Link(target.into_os_string().into_string().ok()?),
                );
            } else {
                out.insert(path, Item::File(std::fs::read(entry.path()).ok()?));
            }
        }
    }
    Some(out)
}

/// The entries of a tar stream as another implementation reads them.
fn read_tar(stream: &[u8]) -> BTreeMap<String, Item> {
    let mut archive = tar::Archive::new(stream);
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(e) => panic!("the stream is not a tar archive: {e}"),
    };
    let mut out = BTreeMap::new();
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => panic!("an entry of the stream does not read: {e}"),
        };
        let path = match entry.path() {
            Ok(p) => p.to_string_lossy().trim_end_matches('/').to_string(),
            Err(e) => panic!("an entry's path does not read: {e}"),
        };
        let item = match entry.header().entry_type() {
            tar::EntryType::Directory => Item::Dir,
            tar::EntryType::Symlink => match entry.link_name() {
                Ok(Some(target)) => Item::Link(target.to_string_lossy().into_owned()),
                other => panic!("{path}: a link without a readable target: {other:?}"),
            },
            tar::EntryType::Regular => {
                let mut bytes = Vec::new();
                if let Err(e) = entry.read_to_end(&mut bytes) {
                    panic!("{path}: content does not read: {e}");
                }
                Item::File(bytes)
            }
            other => panic!("{path}: unexpected entry type {other:?}"),
        };
        out.insert(path, item);
    }
    out
}
