//! One suite every kind of remote runs, against the daemon's `CloudBackend` in process: make,
//! list, open, read and check a snapshot; refuse a second snapshot of the same name; show and
//! read the bucket's other objects; delete.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use snapfs_fs::backend::{Backend, BackendError, RawObjects};
use snapfs_fs::cache::{BlockCache, CacheConfig};
use snapfs_fs::format;
use snapfsd::cloud::{CloudBackend, local_dir, open_store};
use snapfsd::powers::{Deletes, HasLeftovers, InUse, Progress, Run, TakesLocalData, Verifies};

use crate::sh;

/// What a remote kind can do; the suite checks the rest is refused cleanly or skips it, and
/// says so.
#[derive(Debug, Clone, Copy)]
pub struct Powers {
    /// Creating an object only if it is not there (S3 If-None-Match, Azure, GCS generation 0).
    pub conditional_create: bool,
    /// Deleting objects.
    pub delete: bool,
    /// Replacing an object only if it is unchanged (S3 If-Match, Azure, GCS generation), which
    /// repacking needs.
    pub conditional_update: bool,
}

pub const ALL: Powers = Powers {
    conditional_create: true,
    delete: true,
    conditional_update: true,
};

/// A remote as the daemon's configuration gives it.
pub struct Remote {
    pub url: String,
    pub options: BTreeMap<String, String>,
    /// Opened once: every `memory://` store is a new, empty one.
    store: std::sync::OnceLock<Arc<dyn ObjectStore>>,
}

impl Remote {
    pub fn new(url: &str, options: &[(&str, &str)]) -> Remote {
        Remote {
            url: url.to_string(),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            store: std::sync::OnceLock::new(),
        }
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store
            .get_or_init(|| {
                open_store(&self.url, &self.options, &Default::default()).expect("open the store")
            })
            .clone()
    }

    pub fn backend(&self, cache_dir: &std::path::Path) -> Arc<CloudBackend> {
        self.backend_over(self.store(), cache_dir)
    }

    /// A backend of this remote that reaches the bucket through `store` (one that wraps
    /// [`Remote::store`]).
    pub fn backend_over(
        &self,
        store: Arc<dyn ObjectStore>,
        cache_dir: &std::path::Path,
    ) -> Arc<CloudBackend> {
        let cache = BlockCache::open(CacheConfig {
            dir: cache_dir.join("blocks"),
            max_disk_bytes: 1 << 30,
            min_free_bytes: 0,
            max_memory_bytes: 64 << 20,
        })
        .expect("cache");
        let backend = CloudBackend::new("cloud/test".into(), store, cache, None, None);
        // As the daemon makes it: a local folder's manifests are replaced in the folder.
        Arc::new(match local_dir(&self.url) {
            Some(dir) => backend.with_local_root(dir),
            None => backend,
        })
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Makes snapshot `name` of `src` as a new upload straight through `backend`, read in place
/// (as `snapfs snapshot` does) or as a staged copy.
pub async fn commit(
    backend: Arc<CloudBackend>,
    name: &str,
    src: &std::path::Path,
    in_place: bool,
) -> Result<snapfs_fs::backend::SnapshotInfo, BackendError> {
    let (progress, cancel) = (Progress::default(), AtomicBool::new(false));
    let run = Run {
        id: &Run::new_id(),
        size: None,
        progress: &progress,
        cancel: &cancel,
        in_place,
        early: None,
    };
    backend.commit(name, src, &run).await
}

/// Runs the suite on `remote`.
pub fn run(remote: &Remote, powers: Powers) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    sh(&format!(
        "set -e; mkdir -p '{s}/sub'; head -c 9000000 /dev/urandom > '{s}/big.bin'
         echo hello > '{s}/sub/a.txt'; : > '{s}/empty'; ln -s sub/a.txt '{s}/link'",
        s = src.display()
    ));
    let rt = runtime();
    let backend = remote.backend(dir.path());
    let store = remote.store();
    rt.block_on(async {
        let commit = |name: &'static str| commit(backend.clone(), name, &src, true);
        // A snapshot is made, listed, opened and reads back whole.
        let info = commit("first").await.expect("make a snapshot");
        assert_eq!(info.files, 3);
        assert_eq!(info.size, 9_000_006);
        let list = backend.list_snapshots().await.expect("list");
        assert_eq!(list.iter().map(|i| &i.name).collect::<Vec<_>>(), ["first"]);
        let tree = backend.open_snapshot("first").await.expect("open");
        drop(tree);
        let progress = Progress::default();
        let report = Verifies::verify(backend.as_ref(), "first", &progress)
            .await
            .expect("verify");
        let errors = &report.errors;
        assert_eq!((report.files, report.bytes), (3, 9_000_006), "{errors:?}");
        assert!(errors.is_empty(), "{errors:?}");
        let total = progress.total.load(Ordering::Relaxed);
        assert!(total > 0, "verify counts the bytes it reads");
        assert_eq!(progress.done.load(Ordering::Relaxed), total);
        assert!(matches!(
            backend.open_snapshot("nothing").await,
            Err(BackendError::NotFound(_))
        ));

        // The name is taken: refused before work starts, and by the store at commit time.
        assert!(matches!(
            TakesLocalData::check_new(backend.as_ref(), "first").await,
            Err(BackendError::AlreadyExists(_))
        ));
        if powers.conditional_create {
            let again = commit("first").await;
            assert!(
                matches!(again, Err(BackendError::AlreadyExists(_))),
                "a second `first` must be refused: {again:?}"
            );
        } else {
            eprintln!("{}: conditional create not covered", remote.url);
        }

        // Objects made by other tools: listed (snapfs's own folder hidden) and read by range.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        store
            .put(
                &StorePath::from("exports/looker-2025-12-13T14-30-00.db.gz"),
                PutPayload::from(data.clone()),
            )
            .await
            .expect("put a foreign object");
        let top = backend.list_dir("").await.expect("list objects");
        assert_eq!(top.dirs, ["exports"], "{top:?}");
        let sub = backend.list_dir("exports/").await.expect("list a folder");
        assert_eq!(sub.objects.len(), 1);
        assert_eq!(sub.objects[0].name, "looker-2025-12-13T14-30-00.db.gz");
        assert_eq!(sub.objects[0].size, 200_000);
        let part = backend
            .read_range("exports/looker-2025-12-13T14-30-00.db.gz", 1000..1100)
            .await
            .expect("ranged read");
        assert_eq!(&part[..], &data[1000..1100]);
        assert!(matches!(
            backend.read_range("exports/none", 0..1).await,
            Err(BackendError::NotFound(_))
        ));

        if powers.delete {
            // A second snapshot holds the first 4 MiB of the big file, so it shares the big
            // file's first chunk (cuts fall within 4 MiB), at the start of a pack of at least
            // 8 MiB; deleting the first snapshot leaves that pack at most half used, and
            // cleanup repacks it.
            let head = dir.path().join("head");
            sh(&format!(
                "mkdir -p '{d}'; head -c 4194304 '{s}/big.bin' > '{d}/head.bin'",
                d = head.display(),
                s = src.display()
            ));
            let second = crate::conformance::commit(backend.clone(), "second", &head, true)
                .await
                .expect("make a second snapshot");
            assert_eq!(second.size, 4 << 20);
            Deletes::delete(backend.as_ref(), "first")
                .await
                .expect("delete");
            let idle = InUse::default;
            let packs = || async {
                let listed = store.list(Some(&StorePath::from(format::PACK_PREFIX)));
                futures::TryStreamExt::try_collect::<Vec<_>>(listed)
                    .await
                    .expect("list packs")
                    .len()
            };
            let before = packs().await;
            let hour = std::time::Duration::from_secs(3600);
            let cleanup = backend
                .collect_leftovers(&idle, hour, false, &Progress::default())
                .await
                .expect("cleanup");
            let want = u64::from(powers.conditional_update);
            assert_eq!(cleanup.repacked, want, "{}: {cleanup:?}", remote.url);
            let report = Verifies::verify(backend.as_ref(), "second", &Progress::default())
                .await
                .expect("verify after repacking");
            assert_eq!(
                (report.bytes, report.errors.len()),
                (4 << 20, 0),
                "{report:?}"
            );
            // The old pack stays for the grace period, for readers that opened the snapshot
            // before; a cleanup after it takes the pack and the record of it.
            assert_eq!(packs().await, before + want as usize);
            backend
                .collect_leftovers(
                    &idle,
                    std::time::Duration::ZERO,
                    false,
                    &Progress::default(),
                )
                .await
                .expect("cleanup");
            assert_eq!(packs().await, before);
            Deletes::delete(backend.as_ref(), "second")
                .await
                .expect("delete");
            assert!(backend.list_snapshots().await.expect("list").is_empty());
            let left: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(
                store.list(Some(&StorePath::from("snapfs"))),
            )
            .await
            .expect("list the store");
            assert!(left.is_empty(), "packs left after delete: {left:?}");
        } else {
            eprintln!("{}: delete not covered", remote.url);
        }
    });
}

/// A client of the bucket on a moto server at `endpoint` (moto takes any keys).
pub fn moto_store(endpoint: &str) -> Arc<dyn ObjectStore> {
    Remote::new(
        &format!("s3://{}", crate::emulators::BUCKET),
        &[
            ("endpoint", endpoint),
            ("allow_http", "true"),
            ("region", "us-east-1"),
            ("access_key_id", "test"),
            ("secret_access_key", "test"),
        ],
    )
    .store()
}

/// A `[[remote]]` section named `s3` for the bucket on moto at `endpoint`; `extra` is appended
/// to its options (e.g. `, retry_max = "4"`).
pub fn moto_remote(endpoint: &str, extra: &str) -> String {
    format!(
        "[[remote]]\nname = \"s3\"\nurl = \"s3://{}\"\n\
         options = {{ endpoint = \"{endpoint}\", allow_http = \"true\", region = \"us-east-1\", \
         access_key_id = \"test\", secret_access_key = \"test\"{extra} }}\n",
        crate::emulators::BUCKET
    )
}
