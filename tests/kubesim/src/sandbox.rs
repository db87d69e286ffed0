//! Container file systems: a busybox root per container, entered by exec'd commands in a private
//! mount namespace with the pod's volumes bind-mounted at their mount paths. A container's own
//! command runs there too, as the init of a PID namespace of its own, as in a real container.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Device nodes bind-mounted from the host into every container's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "random", "urandom"];

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";

/// A volume as a container sees it.
#[derive(Debug, Clone)]
pub(crate) struct Mount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// Who the process runs as, from the pod's security context.
#[derive(Debug, Clone, Default)]
pub(crate) struct Identity {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub groups: Vec<u32>,
}

/// How a command runs in a container.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    /// Exec'd into the running container.
    Exec,
    /// The container's own command: the init of a PID namespace of its own (see
    /// `Plan::become_init`), which gets no signal it has no handler for. The process spawned
    /// is the one that waits for the init; `init_of` finds the init.
    Main,
}

pub(crate) struct Sandbox {
    busybox: PathBuf,
}

/// Everything the child needs after fork, prepared before it (no allocation after fork).
struct Plan {
    binds: Vec<(CString, CString, bool)>,
    root: CString,
    workdir: CString,
    identity: Identity,
    /// Run as the init of a new PID namespace, under a process that waits for it.
    init: bool,
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Plan {
    /// Runs in the forked child: private mounts, binds, chroot, identity.
    fn enter(&self) -> io::Result<()> {
        // SAFETY: plain system calls on pointers to NUL-terminated strings prepared before fork.
        unsafe {
            let namespaces = if self.init {
                libc::CLONE_NEWNS | libc::CLONE_NEWPID
            } else {
                libc::CLONE_NEWNS
            };
            check(libc::unshare(namespaces))?;
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (source, target, read_only) in &self.binds {
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                if *read_only {
                    check(libc::mount(
                        std::ptr::null(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
            }
            check(libc::chroot(self.root.as_ptr()))?;
            check(libc::chdir(self.workdir.as_ptr()))?;
            if !self.identity.groups.is_empty() || self.identity.gid.is_some() {
                let groups: &[libc::gid_t] = &self.identity.groups;
                check(libc::setgroups(groups.len(), groups.as_ptr()))?;
            }
            if let Some(gid) = self.identity.gid {
                check(libc::setgid(gid))?;
            }
            if let Some(uid) = self.identity.uid {
                check(libc::setuid(uid))?;
            }
            if self.init {
                self.become_init()?;
            }
        }
        Ok(())
    }

    /// Forks the init of the new PID namespace, which returns to exec the command; this
    /// process stays to wait for it and ends as it ended. Each goes when its parent does (a
    /// killed server leaves no container behind), set after the identity, which clears it.
    ///
    /// # Safety
    /// Only in the forked child, before exec: it makes system calls and nothing else.
    unsafe fn become_init(&self) -> io::Result<()> {
        // SAFETY: system calls only, on this process.
        unsafe {
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                0 => check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL)),
                init => {
                    // The pipe on which the spawner learns that exec worked is shut here, so
                    // that it hears of the init's exec, not of this process's end.
                    libc::syscall(libc::SYS_close_range, 3, libc::c_uint::MAX, 0);
                    let mut status = 0;
                    while libc::waitpid(init, &mut status, 0) < 0 {
                        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                            libc::_exit(127);
                        }
                    }
                    libc::_exit(if libc::WIFEXITED(status) {
                        libc::WEXITSTATUS(status)
                    } else {
                        128 + libc::WTERMSIG(status)
                    })
                }
            }
        }
    }
}

/// Puts the host's program `name` in `root`'s /bin, with every shared library it loads (as
/// `ldd` names them) at the same paths.
fn add_host_program(root: &Path, name: &str) -> io::Result<()> {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no {name} on PATH")))?;
    let ldd = std::process::Command::new("ldd").arg(&found).output()?;
    let libraries: Vec<PathBuf> = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|l| {
            // `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)` or `/lib64/ld-linux… (0x…)`
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    for library in libraries {
        let inside = root.join(library.strip_prefix("/").map_err(io::Error::other)?);
        if let Some(dir) = inside.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if !inside.exists() {
            std::fs::copy(&library, &inside)?;
        }
    }
    let target = root.join("bin").join(name);
    if !target.exists() {
        std::fs::copy(&found, &target)?;
    }
    Ok(())
}

impl Sandbox {
    pub fn new(busybox: PathBuf) -> Sandbox {
        Sandbox { busybox }
    }

    fn applets(&self) -> io::Result<Vec<String>> {
        let out = std::process::Command::new(&self.busybox)
            .arg("--list")
            .output()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("running {}: {e}", self.busybox.display()))
            })?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Lays out a container root: busybox and its applet links in /bin, /tmp, /etc, /dev; for
    /// an `image` whose name holds `zstd`, the host's `zstd` too.
    pub fn prepare_root(&self, root: &Path, image: &str) -> io::Result<()> {
        for dir in ["bin", "etc", "dev", "tmp", "root", "proc"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
        let target = root.join("bin/busybox");
        if !target.exists() && std::fs::hard_link(&self.busybox, &target).is_err() {
            std::fs::copy(&self.busybox, &target)?;
        }
        for applet in self.applets()? {
            let link = root.join("bin").join(&applet);
            if applet != "busybox" && link.symlink_metadata().is_err() {
                std::os::unix::fs::symlink("busybox", link)?;
            }
        }
        if image.contains("zstd") {
            add_host_program(root, "zstd")?;
        }
        std::fs::write(root.join("etc/passwd"), PASSWD)?;
        std::fs::write(root.join("etc/group"), GROUP)?;
        std::fs::write(root.join("etc/hostname"), "kubesim\n")?;
        for dev in DEVICES {
            let node = root.join("dev").join(dev);
            if !node.exists() {
                std::fs::write(node, b"")?;
            }
        }
        Ok(())
    }

    /// The command `argv` inside container root `root` with `mounts`, stdio null, run as
    /// `role` says. NotFound when the program does not exist in the container.
    pub fn command(
        &self,
        root: &Path,
        mounts: &[Mount],
        argv: &[String],
        env: &[(String, String)],
        identity: Identity,
        role: Role,
    ) -> io::Result<tokio::process::Command> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let resolved = if program.contains('/') {
            let inside = root.join(program.trim_start_matches('/'));
            inside.symlink_metadata().is_ok().then(|| program.clone())
        } else {
            ["bin", "sbin", "usr/bin", "usr/sbin"]
                .iter()
                .find(|dir| root.join(dir).join(program).symlink_metadata().is_ok())
                .map(|dir| format!("/{dir}/{program}"))
        };
        let Some(resolved) = resolved else {
            return Err(io::Error::new(io::ErrorKind::NotFound, program.clone()));
        };
        let mut binds = Vec::new();
        for mount in mounts {
            let target = root.join(mount.target.trim_start_matches('/'));
            std::fs::create_dir_all(&target)?;
            binds.push((cstring(&mount.source)?, cstring(&target)?, mount.read_only));
        }
        for dev in DEVICES {
            binds.push((
                cstring(&Path::new("/dev").join(dev))?,
                cstring(&root.join("dev").join(dev))?,
                false,
            ));
        }
        let plan = Plan {
            binds,
            root: cstring(root)?,
            workdir: c"/".to_owned(),
            identity,
            init: matches!(role, Role::Main),
        };
        let mut cmd = tokio::process::Command::new(&resolved);
        cmd.arg0(program)
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: `enter` only makes system calls on data owned by the closure.
        unsafe {
            cmd.pre_exec(move || plan.enter());
        }
        Ok(cmd)
    }
}

/// The host's id of the init that the process `waiter` (spawned from `Sandbox::command` with
/// `Role::Main`) waits for; none once it has ended.
pub(crate) fn init_of(waiter: u32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{waiter}/task/{waiter}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
