//! The immutable content of one snapshot: a tree of entries whose file data is a list of blocks,
//! each a byte range of some stored object. Plain data: backends build it, the format fills it
//! from a manifest, the VFS serves it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

/// Longest file name a Linux call accepts (NAME_MAX).
pub const NAME_MAX: usize = 255;

/// Whether `name` can be one entry of a directory listing: the kernel refuses a whole listing
/// that holds a name with '/' or NUL, and "." and ".." name other directories.
pub fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= NAME_MAX
        && !name.contains(['/', '\0'])
}

/// A file is cut into blocks of at most this size: the snapshot format's frames, and the ranged
/// reads of a raw object.
pub const BLOCK_SIZE: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    Symlink,
}

/// How a block's stored bytes become file bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A chunk of the snapshot format with this BLAKE3 hash: `at` bytes into one zstd frame
    /// that decompresses to `frame` bytes (the chunk alone when `frame` is its length).
    Chunk { id: [u8; 32], at: u32, frame: u32 },
    /// Stored as is; checked when a checksum is known.
    Raw { crc32c: Option<u32> },
}

/// One block of a file: `len` file bytes starting at `start`, stored as `stored_len` bytes at
/// `offset` of `object`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub start: u64,
    pub len: u32,
    pub object: Arc<str>,
    pub offset: u64,
    pub stored_len: u32,
    pub encoding: Encoding,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeNode {
    pub name: String,
    pub kind: FileKind,
    pub perm: u16,
    pub mtime: SystemTime,
    pub size: u64,
    pub crc32c: Option<u32>,
    pub symlink: Option<String>,
    pub blocks: Vec<Block>,
    children: Vec<u32>,
}

impl TreeNode {
    pub fn new(kind: FileKind, perm: u16, mtime: SystemTime) -> Self {
        TreeNode {
            name: String::new(),
            kind,
            perm,
            mtime,
            size: 0,
            crc32c: None,
            symlink: None,
            blocks: Vec::new(),
            children: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("snapshot tree: {0}")]
pub struct TreeError(String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTree {
    nodes: Vec<TreeNode>,
}

impl SnapshotTree {
    pub const ROOT: u32 = 0;

    /// Builds a tree from (path, node) pairs: the root first with path "", every parent before
    /// its children, paths '/'-separated and already checked to be plain relative paths.
    pub fn build(entries: impl IntoIterator<Item = (String, TreeNode)>) -> Result<Self, TreeError> {
        let mut nodes: Vec<TreeNode> = Vec::new();
        let mut index: HashMap<String, u32> = HashMap::new();
        for (path, mut node) in entries {
            let id =
                u32::try_from(nodes.len()).map_err(|_| TreeError("too many entries".into()))?;
            if nodes.is_empty() {
                if !path.is_empty() {
                    return Err(TreeError("the first entry must be the root".into()));
                }
            } else {
                let (parent, name) = match path.rsplit_once('/') {
                    Some((p, n)) => (p, n),
                    None => ("", path.as_str()),
                };
                let Some(&pid) = index.get(parent) else {
                    return Err(TreeError(format!("{path}: parent missing")));
                };
                let parent_node = &mut nodes[pid as usize];
                if parent_node.kind != FileKind::Dir {
                    return Err(TreeError(format!("{path}: parent is not a directory")));
                }
                parent_node.children.push(id);
                node.name = name.to_string();
            }
            node.children.clear();
            if index.insert(path.clone(), id).is_some() {
                return Err(TreeError(format!("{path}: listed twice")));
            }
            nodes.push(node);
        }
        if nodes.is_empty() {
            return Err(TreeError("no root".into()));
        }
        // Children sorted by name so lookups can bisect; taken out to sort against `nodes`.
        for i in 0..nodes.len() {
            let mut children = std::mem::take(&mut nodes[i].children);
            children.sort_by(|a, b| nodes[*a as usize].name.cmp(&nodes[*b as usize].name));
            nodes[i].children = children;
        }
        Ok(SnapshotTree { nodes })
    }

    pub fn node(&self, id: u32) -> Option<&TreeNode> {
        self.nodes.get(id as usize)
    }

    pub fn root(&self) -> &TreeNode {
        &self.nodes[0]
    }

    pub fn child(&self, dir: u32, name: &str) -> Option<u32> {
        let children = &self.node(dir)?.children;
        children
            .binary_search_by(|c| self.nodes[*c as usize].name.as_str().cmp(name))
            .ok()
            .map(|i| children[i])
    }

    pub fn children(&self, dir: u32) -> impl Iterator<Item = (u32, &TreeNode)> + '_ {
        self.node(dir)
            .into_iter()
            .flat_map(|n| n.children.iter())
            .map(|c| (*c, &self.nodes[*c as usize]))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Nodes with their '/'-separated paths, parents before children.
    pub fn walk(&self) -> Vec<(String, u32)> {
        let mut out = vec![(String::new(), Self::ROOT)];
        let mut i = 0;
        while i < out.len() {
            let (path, id) = out[i].clone();
            for (child, node) in self.children(id) {
                let p = if path.is_empty() {
                    node.name.clone()
                } else {
                    format!("{path}/{}", node.name)
                };
                out.push((p, child));
            }
            i += 1;
        }
        out
    }
}

/// Blocks of the first `size` bytes of a raw object (no compression, no checksum), cut at
/// [`BLOCK_SIZE`]: a file whose bytes are a plain object or download.
pub fn raw_blocks(key: &str, size: u64) -> Vec<Block> {
    let object: Arc<str> = Arc::from(key);
    let step = BLOCK_SIZE as u64;
    (0..size.div_ceil(step))
        .map(|i| {
            let start = i * step;
            let len = step.min(size - start) as u32;
            Block {
                start,
                len,
                object: object.clone(),
                offset: start,
                stored_len: len,
                encoding: Encoding::Raw { crc32c: None },
            }
        })
        .collect()
}

/// The blocks of `blocks` (consecutive, in file order) that overlap `[offset, end)`.
pub fn blocks_covering(blocks: &[Block], offset: u64, end: u64) -> &[Block] {
    if offset >= end {
        return &[];
    }
    let first = blocks.partition_point(|b| b.start + u64::from(b.len) <= offset);
    let last = blocks.partition_point(|b| b.start < end);
    if first >= last {
        &[]
    } else {
        &blocks[first..last]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> TreeNode {
        TreeNode::new(FileKind::Dir, 0o755, SystemTime::UNIX_EPOCH)
    }
    fn file() -> TreeNode {
        TreeNode::new(FileKind::File, 0o644, SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn builds_and_looks_up() {
        let t = SnapshotTree::build([
            (String::new(), dir()),
            ("b".into(), dir()),
            ("a".into(), file()),
            ("b/c".into(), file()),
        ])
        .unwrap();
        let b = t.child(SnapshotTree::ROOT, "b").unwrap();
        assert_eq!(t.node(b).unwrap().name, "b");
        assert!(t.child(b, "c").is_some());
        assert!(t.child(SnapshotTree::ROOT, "c").is_none());
        let names: Vec<_> = t.children(0).map(|(_, n)| n.name.clone()).collect();
        assert_eq!(names, ["a", "b"]);
        let paths: Vec<_> = t.walk().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["", "a", "b", "b/c"]);
    }

    #[test]
    fn refuses_bad_shapes() {
        assert!(SnapshotTree::build([("x".into(), dir())]).is_err());
        assert!(SnapshotTree::build([(String::new(), dir()), ("a/b".into(), file())]).is_err());
        assert!(
            SnapshotTree::build([
                (String::new(), dir()),
                ("a".into(), file()),
                ("a/b".into(), file())
            ])
            .is_err()
        );
        assert!(
            SnapshotTree::build([
                (String::new(), dir()),
                ("a".into(), file()),
                ("a".into(), file())
            ])
            .is_err()
        );
    }

    #[test]
    fn covering_blocks() {
        let obj: Arc<str> = Arc::from("o");
        let blocks: Vec<Block> = (0..4)
            .map(|i| Block {
                start: i * 10,
                len: 10,
                object: obj.clone(),
                offset: i * 10,
                stored_len: 10,
                encoding: Encoding::Raw { crc32c: None },
            })
            .collect();
        assert_eq!(blocks_covering(&blocks, 0, 1).len(), 1);
        assert_eq!(blocks_covering(&blocks, 9, 11).len(), 2);
        assert_eq!(blocks_covering(&blocks, 10, 20)[0].start, 10);
        assert_eq!(blocks_covering(&blocks, 35, 100).len(), 1);
        assert_eq!(blocks_covering(&blocks, 40, 100).len(), 0);
        assert_eq!(blocks_covering(&blocks, 5, 5).len(), 0);
    }
}
