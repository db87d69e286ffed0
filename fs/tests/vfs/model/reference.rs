//! The reference model: what a user of the mount should see, as plain trees in memory. It knows
//! nothing of inodes, caches or backends.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use snapfs_fs::tree::FileKind;

use crate::fixture::standard;

/// The bytes of one file; shared by the tree and the handles open on it, as an inode is.
pub type Content = Rc<RefCell<Vec<u8>>>;

#[derive(Debug, Clone)]
pub enum Node {
    Dir(BTreeMap<String, Node>),
    File(Content),
    Symlink(String),
}

impl Node {
    pub fn file(data: &[u8]) -> Node {
        Node::File(Rc::new(RefCell::new(data.to_vec())))
    }

    pub fn kind(&self) -> FileKind {
        match self {
            Node::Dir(_) => FileKind::Dir,
            Node::File(_) => FileKind::File,
            Node::Symlink(_) => FileKind::Symlink,
        }
    }

    /// A copy sharing no content, as a snapshot copies what was staged.
    pub fn deep_copy(&self) -> Node {
        match self {
            Node::Dir(children) => Node::Dir(
                children
                    .iter()
                    .map(|(n, c)| (n.clone(), c.deep_copy()))
                    .collect(),
            ),
            Node::File(c) => Node::file(&c.borrow()),
            Node::Symlink(t) => Node::Symlink(t.clone()),
        }
    }

    fn view(&self) -> View {
        match self {
            Node::Dir(children) => View::Dir(
                children
                    .iter()
                    .map(|(n, c)| (n.clone(), c.kind()))
                    .collect(),
            ),
            Node::File(c) => View::File(Some(c.clone())),
            Node::Symlink(t) => View::Symlink(t.clone()),
        }
    }
}

/// Why a path does not resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    NotFound,
    /// A component on the way is not a directory.
    NotDir,
}

/// What a path shows.
#[derive(Debug, Clone)]
pub enum View {
    Dir(BTreeMap<String, FileKind>),
    /// `None` for generated files whose bytes the model does not know (the README).
    File(Option<Content>),
    Symlink(String),
}

impl View {
    pub fn kind(&self) -> FileKind {
        match self {
            View::Dir(_) => FileKind::Dir,
            View::File(_) => FileKind::File,
            View::Symlink(_) => FileKind::Symlink,
        }
    }
}

pub struct Snapshot {
    /// Orders snapshots for `latest`.
    pub created: i64,
    pub root: Node,
}

pub struct Upload {
    pub root: Node,
    /// Tells apart two uploads of the same name, one removed before the other was made.
    pub instance: u64,
}

pub const TARGET: &str = "cloud/local";

pub struct Model {
    pub snapshots: BTreeMap<String, Snapshot>,
    /// Names the backend holds but does not show (a snapshot still being made).
    pub hidden: Vec<String>,
    pub uploads: BTreeMap<String, Upload>,
    /// The bucket's objects, packs included, by key: what `objects/` shows.
    pub objects: BTreeMap<String, Content>,
    next_instance: u64,
}

/// Splits a path of the upload area into the upload's name and the names below it; none for
/// a status file, which is not staged.
pub fn upload_parts(path: &str) -> Option<(&str, Vec<&str>)> {
    let rest = path.strip_prefix(TARGET)?.strip_prefix("/uploads/")?;
    let mut parts = rest.split('/');
    let upload = parts.next().filter(|u| !u.is_empty())?;
    let below: Vec<&str> = parts.collect();
    if below.is_empty() && upload.ends_with(".status") {
        return None;
    }
    Some((upload, below))
}

/// The upload whose status file `path` is (`uploads/NAME.status`).
pub fn status_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(TARGET)?.strip_prefix("/uploads/")?;
    rest.strip_suffix(".status").filter(|u| !u.contains('/'))
}

fn walk<'a>(mut node: &'a Node, names: &[&str]) -> Result<&'a Node, Miss> {
    for name in names {
        let Node::Dir(children) = node else {
            return Err(Miss::NotDir);
        };
        node = children.get(*name).ok_or(Miss::NotFound)?;
    }
    Ok(node)
}

fn walk_mut<'a>(mut node: &'a mut Node, names: &[&str]) -> Option<&'a mut Node> {
    for name in names {
        let Node::Dir(children) = node else {
            return None;
        };
        node = children.get_mut(*name)?;
    }
    Some(node)
}

fn dir(entries: &[(&str, FileKind)]) -> View {
    View::Dir(entries.iter().map(|(n, k)| (n.to_string(), *k)).collect())
}

impl Model {
    /// What the standard bucket, holding `objects`, shows.
    pub fn standard(objects: BTreeMap<String, bytes::Bytes>) -> Model {
        let s = standard();
        let db1 = Node::Dir(BTreeMap::from([
            (
                "data".to_string(),
                Node::Dir(BTreeMap::from([
                    ("big.bin".to_string(), Node::file(&s.big)),
                    ("empty".to_string(), Node::file(b"")),
                ])),
            ),
            ("hello.txt".to_string(), Node::file(s.hello)),
            ("link".to_string(), Node::Symlink("data/big.bin".into())),
        ]));
        let snapshots = BTreeMap::from([
            (
                "db-1".to_string(),
                Snapshot {
                    created: 1,
                    root: db1,
                },
            ),
            (
                "db-2".to_string(),
                Snapshot {
                    created: 2,
                    root: Node::file(&s.single),
                },
            ),
        ]);
        Model {
            snapshots,
            hidden: vec!["db-3".into()],
            uploads: BTreeMap::new(),
            objects: objects
                .into_iter()
                .map(|(k, v)| (k, Rc::new(RefCell::new(v.to_vec()))))
                .collect(),
            next_instance: 1,
        }
    }

    /// The snapshot `latest` points at.
    pub fn latest(&self) -> Option<&str> {
        self.snapshots
            .iter()
            .max_by(|a, b| a.1.created.cmp(&b.1.created).then(a.0.cmp(b.0)))
            .map(|(n, _)| n.as_str())
    }

    /// Whether the backend holds a snapshot of that name, shown or not.
    pub fn taken(&self, name: &str) -> bool {
        self.snapshots.contains_key(name) || self.hidden.iter().any(|h| h == name)
    }

    pub fn resolve(&self, path: &str) -> Result<View, Miss> {
        use FileKind::{Dir, File, Symlink};
        let names: Vec<&str> = path.split('/').filter(|n| !n.is_empty()).collect();
        match names.as_slice() {
            [] => Ok(dir(&[("README", File), ("cloud", Dir)])),
            ["README"] => Ok(View::File(None)),
            ["README", ..] => Err(Miss::NotDir),
            ["cloud"] => Ok(dir(&[("local", Dir)])),
            ["cloud", "local"] => Ok(dir(&[
                ("snapshots", Dir),
                ("uploads", Dir),
                ("objects", Dir),
            ])),
            ["cloud", "local", "snapshots"] => {
                let mut entries: BTreeMap<String, FileKind> = self
                    .snapshots
                    .iter()
                    .map(|(n, s)| (n.clone(), s.root.kind()))
                    .collect();
                if self.latest().is_some() {
                    entries.insert("latest".into(), Symlink);
                }
                Ok(View::Dir(entries))
            }
            ["cloud", "local", "snapshots", "latest"] => self
                .latest()
                .map(|l| View::Symlink(l.to_string()))
                .ok_or(Miss::NotFound),
            ["cloud", "local", "snapshots", name, rest @ ..] => {
                let snap = self.snapshots.get(*name).ok_or(Miss::NotFound)?;
                walk(&snap.root, rest).map(Node::view)
            }
            ["cloud", "local", "objects", rest @ ..] => self.object(&rest.join("/")),
            ["cloud", "local", "uploads"] => {
                let staged = self.uploads.iter().map(|(n, u)| (n.clone(), u.root.kind()));
                // Every upload has a status file while it is there.
                let status = self.uploads.keys().map(|n| (format!("{n}.status"), File));
                Ok(View::Dir(staged.chain(status).collect()))
            }
            ["cloud", "local", "uploads", name] if status_of(path).is_some() => {
                let upload = name.strip_suffix(".status").unwrap_or(name);
                self.uploads
                    .get(upload)
                    .map(|_| View::File(None))
                    .ok_or(Miss::NotFound)
            }
            ["cloud", "local", "uploads", name, rest @ ..] => {
                let upload = self.uploads.get(*name).ok_or(Miss::NotFound)?;
                walk(&upload.root, rest).map(Node::view)
            }
            _ => Err(Miss::NotFound),
        }
    }

    /// What `objects/` shows at `prefix` ("" for its top): an object, or a folder of the keys
    /// below it.
    fn object(&self, prefix: &str) -> Result<View, Miss> {
        if let Some(c) = self.objects.get(prefix) {
            return Ok(View::File(Some(c.clone())));
        }
        let below = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let mut entries = BTreeMap::new();
        for key in self.objects.keys() {
            let Some(rest) = key.strip_prefix(&below) else {
                continue;
            };
            match rest.split_once('/') {
                Some((dir, _)) => entries.insert(dir.to_string(), FileKind::Dir),
                None => entries.insert(rest.to_string(), FileKind::File),
            };
        }
        if entries.is_empty() && !prefix.is_empty() {
            // A file on the way has no folder below it.
            let on_the_way = prefix
                .match_indices('/')
                .any(|(i, _)| self.objects.contains_key(&prefix[..i]));
            return Err(if on_the_way {
                Miss::NotDir
            } else {
                Miss::NotFound
            });
        }
        Ok(View::Dir(entries))
    }

    /// Adds `node` at a path of the upload area whose parent exists and is a directory, in
    /// place of what was there; a new upload is a new instance unless one is given.
    pub fn add_staged(&mut self, path: &str, node: Node, instance: Option<u64>) {
        let Some((upload, names)) = upload_parts(path) else {
            return;
        };
        let Some((name, parents)) = names.split_last() else {
            let instance = instance.unwrap_or_else(|| {
                self.next_instance += 1;
                self.next_instance
            });
            let upload = upload.to_string();
            self.uploads.insert(
                upload,
                Upload {
                    root: node,
                    instance,
                },
            );
            return;
        };
        if let Some(Node::Dir(children)) = self
            .uploads
            .get_mut(upload)
            .and_then(|u| walk_mut(&mut u.root, parents))
        {
            children.insert(name.to_string(), node);
        }
    }

    /// Takes the entry at a path of the upload area out, with the instance of the upload it
    /// was when it was a whole upload.
    pub fn remove_staged(&mut self, path: &str) -> Option<(Node, Option<u64>)> {
        let (upload, names) = upload_parts(path)?;
        let Some((name, parents)) = names.split_last() else {
            let u = self.uploads.remove(upload)?;
            return Some((u.root, Some(u.instance)));
        };
        let Node::Dir(children) = walk_mut(&mut self.uploads.get_mut(upload)?.root, parents)?
        else {
            return None;
        };
        children.remove(*name).map(|n| (n, None))
    }

    /// The instance of the upload a staged path is in.
    pub fn upload_of(&self, path: &str) -> Option<u64> {
        let (upload, _) = upload_parts(path)?;
        self.uploads.get(upload).map(|u| u.instance)
    }

    /// The instance of the upload holding file `content`, if it is still in one.
    pub fn holder_of(&self, content: &Content) -> Option<u64> {
        fn holds(node: &Node, content: &Content) -> bool {
            match node {
                Node::File(c) => Rc::ptr_eq(c, content),
                Node::Dir(children) => children.values().any(|c| holds(c, content)),
                Node::Symlink(_) => false,
            }
        }
        self.uploads
            .values()
            .find(|u| holds(&u.root, content))
            .map(|u| u.instance)
    }
}
