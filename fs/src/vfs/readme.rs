//! The generated `README` at the root of the mount: the layout of the kinds of targets this
//! mount has, and the targets themselves.

use super::Vfs;

/// Layout lines per kind of target.
fn layout(kind: &str) -> &'static str {
    match kind {
        "cloud" => {
            "  cloud/<remote>/snapshots/<name>   read-only snapshot (a file or a folder tree)\n\
             \x20 cloud/<remote>/snapshots/latest   symlink to the newest snapshot\n\
             \x20 cloud/<remote>/uploads/<name>     copy a file or folder here to make snapshot <name>\n\
             \x20 cloud/<remote>/uploads/<name>.status  progress of that upload (JSON)\n\
             \x20 cloud/<remote>/objects/           the bucket's other objects, read-only\n"
        }
        "hivemq" => {
            "  hivemq/<cluster>/snapshots/<id>.backup  a HiveMQ backup, streamed on read\n\
             \x20 hivemq/<cluster>/snapshots/latest       symlink to the newest completed backup\n\
             \x20 (`snapfs snapshot hivemq/<cluster>` makes a backup; `snapfs restore` restores one)\n"
        }
        "k8s" => {
            "  k8s/<context>/<namespace>/snapshots/<name>  a ready VolumeSnapshot, read-only\n\
             \x20 k8s/<context>/<namespace>/snapshots/latest  symlink to the newest ready one\n\
             \x20 k8s/<context>/<namespace>/uploads/<name>    copy a folder here to make VolumeSnapshot <name>\n\
             \x20 k8s/<context>/<namespace>/pods/<pod>/<container>/  live read-only view of the container\n\
             \x20 k8s/<context>/<namespace>/workloads/<name>  symlink to a ready pod of a Deployment or StatefulSet\n"
        }
        _ => "",
    }
}

impl Vfs {
    pub(super) fn readme(&self) -> String {
        let mut s = String::from("snapfs: snapshots as paths\n\nLayout\n");
        for kind in self.groups() {
            s.push_str(layout(kind));
        }
        let targets = self.targets.all();
        // Every live tree (a Kubernetes context) has uploads/ in its namespaces.
        if targets.iter().any(|t| t.uploads) || !self.live.is_empty() {
            s.push_str(
                "\nAn upload starts once every file under uploads/<name> is closed and nothing was\n\
                 written for a short while; `snapfs wait <path>` blocks until it ends.\n",
            );
        }
        s.push_str(
            "Extended attributes (getfattr -d) carry state, creation time, size and checksum.\n\
             \n\
             Targets\n",
        );
        // Targets inside live trees are listed with their tree.
        for t in targets.iter().filter(|t| !t.name.contains('/')) {
            s.push_str(&format!("  {:<32} {}\n", t.path(), t.description));
        }
        for m in &self.live {
            let path = format!("{}/{}", m.kind, m.name);
            s.push_str(&format!("  {:<32} {}\n", path, m.description));
        }
        s.push_str("\nSee snapfs(1) for the command-line client.\n");
        s
    }
}
