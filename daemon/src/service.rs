//! The running daemon: builds the backends, the cache, the job engine and the VFS from the
//! configuration, mounts, serves the control socket, and stops cleanly.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use snapfs_control::client::record_paths;
use snapfs_control::paths::Paths;
use snapfs_control::wire::MountRecord;
use snapfs_fs::cache::{BlockCache, CacheConfig};
use snapfs_fs::fuse::{self, MountConfig};
use snapfs_fs::vfs::{Staging, Vfs, VfsConfig};

use crate::cloud::{CloudBackend, Counting, local_dir, open_store};
use crate::config::{Config, Endpoint};
use crate::control::server::{self, Server};
use crate::hivemq::HiveMqBackend;
use crate::jobs::Jobs;
use crate::k8s::Kube;
use crate::lifecycle::Lifecycle;
use crate::metrics::{self, Exposition};
use crate::notify::Notifier;
use crate::registry::Registry;

/// What `snapfsd` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub mountpoint: PathBuf,
    pub mount: MountConfig,
    /// Owner (uid, gid) shown in place of the daemon's user; None: the daemon's.
    pub owner: (Option<u32>, Option<u32>),
    /// Permission bits shown for files and directories of snapshots; None: as stored.
    pub file_mode: Option<u16>,
    pub dir_mode: Option<u16>,
}

/// Lets the kernel read ahead in 1 MiB steps on this mount (its default is 128 KiB).
fn raise_read_ahead(mountpoint: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    if let Err(e) = std::fs::write(&knob, "1024") {
        tracing::debug!(knob, error = %e, "read-ahead left at the kernel default");
    }
}

/// Mounts and serves with `config` (loaded, and so checked, by the caller) until stopped.
pub fn run(opts: Options, config: Config, paths: Paths) -> anyhow::Result<()> {
    // Blocks are megabytes each and come and go all the time, freed by other threads than the
    // ones that made them. With glibc's default of many per-thread heaps the freed space piles up
    // in each and the resident size drifts far above the cache's memory limit; two heaps keep it
    // close to what is really held.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it is called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let mountpoint = std::fs::canonicalize(&opts.mountpoint)
        .with_context(|| format!("mount point {}", opts.mountpoint.display()))?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("snapfsd")
        .build()
        .context("starting the runtime")?;
    let _guard = rt.enter();

    let cache = BlockCache::open(CacheConfig {
        dir: config.cache_dir.join("blocks"),
        max_disk_bytes: config.cache_max,
        min_free_bytes: config.cache_min_free,
        max_memory_bytes: config.cache_memory,
    })
    .with_context(|| format!("opening the cache in {}", config.cache_dir.display()))?;
    let staging = Arc::new(Staging::new(config.cache_dir.join("staging")));

    let mut configured = Vec::new();
    for r in &config.remotes {
        let counting = Counting::default();
        let store = open_store(&r.url, &r.options, &counting)
            .with_context(|| format!("remote {}", r.name))?;
        let mut backend = CloudBackend::new(
            format!("cloud/{}", r.name),
            store,
            cache.clone(),
            r.ttl,
            r.max_snapshots,
        )
        .with_retry_count(&counting);
        if let Some(dir) = local_dir(&r.url) {
            backend = backend.with_local_root(dir);
        }
        configured.push(Arc::new(backend).into_target(r.name.clone(), r.url.clone(), r.retention));
    }
    for c in &config.hivemq {
        let backend =
            Arc::new(HiveMqBackend::new(c, &paths).with_context(|| format!("hivemq {}", c.name))?);
        let description = match &c.endpoint {
            Endpoint::Url(url) => format!("HiveMQ cluster at {url}"),
            Endpoint::Kubernetes(k) => format!("HiveMQ cluster: {k}"),
        };
        configured.push(backend.into_target(c.name.clone(), description));
    }
    let kube = Arc::new(rt.block_on(Kube::connect(
        config.kubernetes.as_deref(),
        &paths,
        config.list_ttl,
        config.reader_idle,
        config.k8s.clone(),
    )));
    // Namespaces become targets when first used; the contexts find them by path.
    let registry = Registry::new(vec![kube.clone()]);
    for target in configured {
        registry.add(target);
    }

    let jobs = Jobs::new(
        registry.clone(),
        staging.clone(),
        paths.state_dir(),
        config.settle,
        config.early,
        rt.handle().clone(),
    );
    let vfs = Arc::new(
        Vfs::new(
            registry.clone(),
            {
                let defaults = VfsConfig::default();
                VfsConfig {
                    list_ttl: config.list_ttl,
                    uid: opts.owner.0.unwrap_or(defaults.uid),
                    gid: opts.owner.1.unwrap_or(defaults.gid),
                    file_mode: opts.file_mode,
                    dir_mode: opts.dir_mode,
                    ..defaults
                }
            },
            cache,
            staging,
            jobs.clone(),
        )
        .with_live(kube.live_mounts()),
    );
    {
        // Snapshots that appear or go outside a request are shown or hidden at once.
        let vfs = Arc::downgrade(&vfs);
        registry.on_change(move |t, name| {
            if let Some(vfs) = vfs.upgrade() {
                vfs.entry_changed(t, name);
            }
        });
    }
    jobs.recover();
    rt.spawn(jobs.clone().run());
    let lifecycle = Lifecycle::new(jobs.clone(), registry.clone(), config.orphan_grace);
    if let Some(interval) = config.lifecycle_interval {
        rt.spawn(lifecycle.clone().run_every(interval));
    }

    // Bound before mounting, so an address in use fails the start rather than a later scrape.
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            rt.block_on(tokio::net::TcpListener::bind(addr))
                .with_context(|| format!("metrics.listen {addr}"))?,
        ),
        None => None,
    };

    let stop = Arc::new(tokio::sync::Notify::new());
    let exited = stop.clone();
    let mounted = fuse::mount(
        vfs.clone(),
        rt.handle().clone(),
        &mountpoint,
        &opts.mount,
        move || exited.notify_one(),
    )
    .with_context(|| format!("mounting {}", mountpoint.display()))?;
    fuse::connect_invalidation(&vfs, &mounted).context("starting the invalidation thread")?;
    raise_read_ahead(&mountpoint);

    let (socket, record) = record_paths(&paths, &mountpoint);
    let listener =
        server::listen(&socket).with_context(|| format!("control socket {}", socket.display()))?;
    let server = Arc::new(Server {
        mountpoint: mountpoint.clone(),
        registry,
        jobs: jobs.clone(),
        cache: vfs.cache().clone(),
        lifecycle,
        vfs: Arc::downgrade(&vfs),
        stop: stop.clone(),
    });
    rt.spawn(server.clone().serve(listener));
    if let Some(listener) = metrics_listener {
        let addr = listener.local_addr()?;
        let exposition = Arc::new(Exposition {
            server,
            ops: mounted.op_stats(),
        });
        rt.spawn(metrics::serve(listener, exposition));
        tracing::info!("metrics at http://{addr}/metrics");
    }
    let rec = MountRecord {
        mountpoint: mountpoint.clone(),
        socket: socket.clone(),
        pid: std::process::id(),
    };
    // Written aside and renamed, so a client never reads half a record.
    let partial = record.with_extension("json.tmp");
    std::fs::write(&partial, serde_json::to_vec_pretty(&rec)?)
        .and_then(|()| std::fs::rename(&partial, &record))
        .context("writing the mount record")?;
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");
    // Only now: the mount answers and so does the control socket.
    let manager = Notifier::from_env();
    if let Some(m) = &manager {
        m.notify(&format!(
            "READY=1\nSTATUS=mounted at {}",
            mountpoint.display()
        ));
    }

    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = stop.notified() => {}
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })?;
    tracing::info!("stopping");
    if let Some(m) = &manager {
        m.notify("STOPPING=1");
    }
    jobs.shutdown();
    rt.block_on(kube.shutdown());
    let _ = std::fs::remove_file(&record);
    let _ = std::fs::remove_file(&socket);
    // Before the runtime goes: no request may be left inside it.
    let unmounted = mounted.unmount();
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    unmounted.with_context(|| format!("unmounting {}", mountpoint.display()))
}
