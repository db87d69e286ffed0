//! The job engine: turns settled uploads (and `snapfs snapshot` requests) into snapshots,
//! keeps their status, survives restarts, and answers the VFS's questions about uploads.

mod broker;
mod record;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use snapfs_fs::backend::BackendError;
use snapfs_fs::vfs::{
    JobKind, Staging, UploadHooks, UploadState, UploadStatus, VfsError, VfsResult,
};

use crate::cloud::{Progress, new_upload_id};
use crate::target::TargetBackend;
use record::{Persisted, Source, Store};

/// How often settled uploads are looked for.
const TICK: Duration = Duration::from_millis(200);

struct Job {
    /// Tells this run apart from a later one of the same name.
    run: u64,
    status: UploadStatus,
    source: Source,
    upload_id: Option<String>,
    /// Staging generation the running job started from.
    started_gen: Option<u64>,
    /// Staging generation that failed; retried only after new writes.
    failed_gen: Option<u64>,
    progress: Arc<Progress>,
    cancel: Arc<AtomicBool>,
    /// Claim size asked for (`snapfs snapshot --size`), where the target has one.
    size: Option<u64>,
}

impl Job {
    fn new(target: &str, name: &str, source: Source, state: UploadState) -> Job {
        Job {
            run: 0,
            status: UploadStatus {
                kind: JobKind::Upload,
                state,
                bytes_done: 0,
                bytes_total: 0,
                target: target.to_string(),
                snapshot: name.to_string(),
                error: None,
                note: None,
            },
            source,
            upload_id: None,
            started_gen: None,
            failed_gen: None,
            progress: Arc::new(Progress::default()),
            cancel: Arc::new(AtomicBool::new(false)),
            size: None,
        }
    }

    fn current(&self) -> UploadStatus {
        let mut s = self.status.clone();
        if s.state == UploadState::Uploading {
            s.bytes_done = self.progress.done.load(Ordering::Relaxed);
            s.bytes_total = self.progress.total.load(Ordering::Relaxed);
            let waiting = self
                .progress
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(w) = waiting.as_ref() {
                s.error = Some(format!("still waiting: {w}"));
            }
        }
        // Said during the run and kept with its outcome.
        if let Some(n) = self
            .progress
            .note
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            s.note = Some(n.clone());
        }
        s
    }
}

/// Told a target index and a name when a snapshot appears there.
type ReadyHook = Box<dyn Fn(usize, &str) + Send + Sync>;

/// The target at a path (`k8s/prod/shop`), if one can be there.
type Resolve = Box<dyn Fn(&str) -> Option<TargetBackend> + Send + Sync>;

/// Finds targets not configured but found while the mount runs (a Kubernetes namespace), and
/// adds them to the mount.
pub struct Registrar {
    /// The target at a path (`k8s/prod/shop`), if one can be there.
    pub resolve: Resolve,
    /// Adds it to the mount; returns its index there.
    pub add: Box<dyn Fn(&TargetBackend) -> usize + Send + Sync>,
}

pub struct Jobs {
    /// Indexed like the VFS's targets; only ever grows.
    backends: RwLock<Vec<TargetBackend>>,
    registrar: OnceLock<Registrar>,
    staging: Arc<Staging>,
    store: Store,
    settle: Duration,
    jobs: Mutex<HashMap<(usize, String), Job>>,
    runs: AtomicU64,
    changed: tokio::sync::watch::Sender<u64>,
    on_ready: OnceLock<ReadyHook>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Jobs {
    pub fn new(
        backends: Vec<TargetBackend>,
        staging: Arc<Staging>,
        state_dir: PathBuf,
        settle: Duration,
    ) -> Arc<Jobs> {
        Arc::new(Jobs {
            backends: RwLock::new(backends),
            registrar: OnceLock::new(),
            staging,
            store: Store::new(state_dir.join("jobs")),
            settle,
            jobs: Mutex::new(HashMap::new()),
            runs: AtomicU64::new(1),
            changed: tokio::sync::watch::Sender::new(0),
            on_ready: OnceLock::new(),
        })
    }

    /// Called with a target index and a name whenever a snapshot appeared there.
    pub fn on_ready(&self, f: impl Fn(usize, &str) + Send + Sync + 'static) {
        let _ = self.on_ready.set(Box::new(f));
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn set_registrar(&self, r: Registrar) {
        let _ = self.registrar.set(r);
    }

    /// The index of the target at `path`, added if the registrar knows it.
    pub fn target_index(&self, path: &str) -> Option<usize> {
        if let Some(t) = self.backends().iter().position(|b| b.path() == path) {
            return Some(t);
        }
        let r = self.registrar.get()?;
        let mut backends = self.backends.write().unwrap_or_else(|e| e.into_inner());
        // Someone may have added it since the look above.
        if let Some(t) = backends.iter().position(|b| b.path() == path) {
            return Some(t);
        }
        let backend = (r.resolve)(path)?;
        let at = (r.add)(&backend);
        if at != backends.len() {
            tracing::error!(
                target = path,
                "target indexes differ between the mount and the jobs"
            );
            return None;
        }
        tracing::info!(target = path, "target added");
        backends.push(backend);
        Some(at)
    }

    pub fn backends(&self) -> Vec<TargetBackend> {
        self.backends
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn backend(&self, target: usize) -> Option<TargetBackend> {
        self.backends
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(target)
            .cloned()
    }

    /// The target's path in the mount; empty for an index that does not exist.
    fn path_of(&self, target: usize) -> String {
        self.backend(target)
            .map(|b| b.path().to_string())
            .unwrap_or_default()
    }

    /// Upload ids of the jobs of `target` writing packs now; cleanup leaves their packs alone.
    pub fn running_uploads(&self, target: usize) -> HashSet<String> {
        lock(&self.jobs)
            .iter()
            .filter(|((t, _), job)| *t == target && job.status.state == UploadState::Uploading)
            .filter_map(|(_, job)| job.upload_id.clone())
            .collect()
    }

    /// Names of the jobs of `target` that have not ended: a run to come may still finish
    /// what an earlier one made for them.
    pub fn pending_names(&self, target: usize) -> HashSet<String> {
        lock(&self.jobs)
            .iter()
            .filter(|((t, _), job)| *t == target && !job.status.state.is_final())
            .map(|((_, name), _)| name.clone())
            .collect()
    }

    fn upload_path(&self, target: usize, name: &str) -> PathBuf {
        self.staging.target_dir(&self.path_of(target)).join(name)
    }

    fn persist(&self, target: usize, name: &str, job: &Job, settled: bool) {
        // The broker keeps the state of what it runs itself; a restart asks it again.
        if job.source == Source::Backend {
            return;
        }
        let p = Persisted {
            status: job.status.clone(),
            source: job.source.clone(),
            upload_id: job.upload_id.clone(),
            settled,
            size: job.size,
        };
        if let Err(e) = self.store.save(&self.path_of(target), name, &p) {
            tracing::warn!(snapshot = name, error = %e, "could not record job state");
        }
    }

    /// Picks up what a previous run left: staged uploads and unfinished jobs.
    pub fn recover(self: &Arc<Self>) {
        // Targets found while the mount ran are found again by what they left.
        for root in [self.staging.target_dir("k8s"), self.store.dir().join("k8s")] {
            for context in std::fs::read_dir(root).into_iter().flatten().flatten() {
                for ns in std::fs::read_dir(context.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let (c, n) = (context.file_name(), ns.file_name());
                    if let (Some(c), Some(n)) = (c.to_str(), n.to_str()) {
                        self.target_index(&format!("k8s/{c}/{n}"));
                    }
                }
            }
        }
        for (t, backend) in self.backends().iter().enumerate() {
            // Only targets that take local data have anything staged or recorded.
            if !backend.takes_local_data() {
                continue;
            }
            let mut names: Vec<String> = Vec::new();
            if let Ok(dir) = std::fs::read_dir(self.staging.target_dir(backend.path())) {
                names.extend(
                    dir.filter_map(|e| e.ok())
                        .filter_map(|e| e.file_name().into_string().ok()),
                );
            }
            let persisted = self.store.load_all(backend.path());
            for (name, p) in &persisted {
                if matches!(p.source, Source::Local(_)) && !p.status.state.is_final() {
                    names.push(name.clone());
                }
            }
            for name in names {
                let p = persisted.get(&name);
                let source = p.map_or(Source::Staged, |p| p.source.clone());
                let mut job = Job::new(backend.path(), &name, source.clone(), UploadState::Queued);
                job.run = self.runs.fetch_add(1, Ordering::Relaxed);
                if let Some(p) = p {
                    job.size = p.size;
                    if let Some(id) = &p.upload_id
                        && p.status.state == UploadState::Uploading
                        && let Some(backend) = backend.cloud()
                    {
                        // Interrupted mid-upload: its packs are removed and it starts over. (A
                        // namespace's next run finds and finishes or removes what it made.)
                        let (b, id) = (backend.clone(), id.clone());
                        tokio::spawn(async move {
                            if let Err(e) = b.delete_upload(&id).await {
                                tracing::warn!(upload_id = id, error = %e, "could not remove packs of an interrupted upload");
                            }
                        });
                    }
                    match p.status.state {
                        UploadState::Failed => {
                            job.status = p.status.clone();
                            job.failed_gen = Some(0);
                        }
                        UploadState::Staging if !p.settled => {
                            job.status.state = UploadState::Failed;
                            job.status.error = Some(
                                "snapfsd stopped while files were still being written; check the copy and write again, or remove it"
                                    .into(),
                            );
                            job.failed_gen = Some(0);
                        }
                        _ => {}
                    }
                }
                if source == Source::Staged {
                    self.staging.adopt(t, &name);
                }
                tracing::info!(target = backend.path(), snapshot = name, state = ?job.status.state, "resuming upload");
                self.persist(t, &name, &job, true);
                lock(&self.jobs).insert((t, name), job);
            }
        }
    }

    /// Marks staged uploads as complete before a clean stop: every handle is closed by then.
    pub fn shutdown(&self) {
        let jobs = lock(&self.jobs);
        for ((t, name), job) in jobs.iter() {
            if job.status.state == UploadState::Staging {
                self.persist(*t, name, job, true);
            }
        }
    }

    /// Runs forever: starts jobs for uploads that settled, cancels jobs overtaken by writes.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tick.tick().await;
            let mut start = Vec::new();
            {
                let mut jobs = lock(&self.jobs);
                for ((t, name), job) in jobs.iter_mut() {
                    if job.source == Source::Backend {
                        continue;
                    }
                    if job.source != Source::Staged {
                        if job.status.state == UploadState::Queued {
                            start.push((*t, name.clone()));
                        }
                        continue;
                    }
                    let activity = self.staging.activity(*t, name);
                    match job.status.state {
                        UploadState::Uploading => {
                            if activity.map(|a| a.generation) != job.started_gen {
                                job.cancel.store(true, Ordering::Relaxed);
                            }
                        }
                        UploadState::Staging | UploadState::Queued | UploadState::Failed => {
                            let Some(generation) = self.staging.settled(*t, name, self.settle)
                            else {
                                if job.status.state != UploadState::Failed
                                    || self.rewritten(*t, name, job)
                                {
                                    job.status.state = UploadState::Staging;
                                    job.status.error = None;
                                }
                                continue;
                            };
                            if job.failed_gen == Some(generation) {
                                continue;
                            }
                            job.started_gen = Some(generation);
                            start.push((*t, name.clone()));
                        }
                        UploadState::Done => {}
                    }
                }
            }
            for (t, name) in start {
                self.start(t, name);
            }
        }
    }

    fn start(self: &Arc<Self>, target: usize, name: String) {
        let (run, source, progress, cancel, upload_id, size) = {
            let mut jobs = lock(&self.jobs);
            let Some(job) = jobs.get_mut(&(target, name.clone())) else {
                return;
            };
            job.run = self.runs.fetch_add(1, Ordering::Relaxed);
            job.status.state = UploadState::Uploading;
            job.status.error = None;
            job.cancel = Arc::new(AtomicBool::new(false));
            job.progress = Arc::new(Progress::default());
            let id = new_upload_id();
            job.upload_id = Some(id.clone());
            self.persist(target, &name, job, true);
            (
                job.run,
                job.source.clone(),
                job.progress.clone(),
                job.cancel.clone(),
                id,
                job.size,
            )
        };
        self.notify();
        let this = self.clone();
        tokio::spawn(async move {
            let path = match &source {
                Source::Staged => this.upload_path(target, &name),
                Source::Local(p) => p.clone(),
                // Never queued (the broker runs it); reaching here ends as unsupported below.
                Source::Backend => PathBuf::new(),
            };
            let Some(target_backend) = this.backend(target) else {
                return;
            };
            tracing::info!(
                target = target_backend.path(),
                snapshot = name,
                upload_id,
                "upload started"
            );
            let result = match &target_backend {
                TargetBackend::Cloud(b) => {
                    b.commit(&name, &path, &upload_id, &progress, &cancel).await
                }
                TargetBackend::Kube(b) => {
                    b.commit(&name, &path, &upload_id, size, &progress, &cancel)
                        .await
                }
                TargetBackend::HiveMq(_) => Err(BackendError::Unsupported(format!(
                    "{} takes no local data",
                    target_backend.path()
                ))),
            };
            this.finish(
                target,
                &name,
                run,
                &source,
                result,
                cancel.load(Ordering::Relaxed),
            );
        });
    }

    fn finish(
        &self,
        target: usize,
        name: &str,
        run: u64,
        source: &Source,
        result: Result<snapfs_fs::backend::SnapshotInfo, BackendError>,
        cancelled: bool,
    ) {
        let path = self.path_of(target);
        let path = path.as_str();
        let mut jobs = lock(&self.jobs);
        let key = (target, name.to_string());
        let Some(job) = jobs.get_mut(&key).filter(|j| j.run == run) else {
            // Discarded while running: nothing to report, its packs are already removed.
            return;
        };
        match result {
            Ok(info) => {
                tracing::info!(
                    target = path,
                    snapshot = name,
                    bytes = info.size,
                    "snapshot ready"
                );
                job.status.state = UploadState::Done;
                job.status.bytes_done = job.progress.done.load(Ordering::Relaxed);
                job.status.bytes_total = job.progress.total.load(Ordering::Relaxed);
                if *source == Source::Staged {
                    let staged = self.upload_path(target, name);
                    let removed = if staged.is_dir() {
                        std::fs::remove_dir_all(&staged)
                    } else {
                        std::fs::remove_file(&staged)
                    };
                    if let Err(e) = removed {
                        tracing::warn!(path = %staged.display(), error = %e, "could not remove staged files");
                    }
                    self.staging.forget(target, name);
                }
                self.store.remove(path, name);
                if let Some(f) = self.on_ready.get() {
                    f(target, name);
                }
            }
            Err(_) if cancelled => {
                tracing::info!(
                    target = path,
                    snapshot = name,
                    "upload overtaken by new writes; waiting for them to settle"
                );
                job.status.state = UploadState::Staging;
                self.persist(target, name, job, false);
            }
            Err(e) => {
                tracing::warn!(target = path, snapshot = name, error = %e, "upload failed");
                job.status.state = UploadState::Failed;
                job.status.error = Some(e.to_string());
                job.failed_gen = job.started_gen;
                self.persist(target, name, job, true);
            }
        }
        drop(jobs);
        self.notify();
    }

    /// Starts a snapshot of a local file or folder, read where it is.
    pub async fn snapshot_local(
        self: &Arc<Self>,
        target: usize,
        name: &str,
        source: PathBuf,
        size: Option<u64>,
    ) -> Result<(), VfsError> {
        match self.backend(target) {
            Some(b) if b.takes_local_data() => {}
            Some(t) => {
                return Err(VfsError::InvalidName(format!(
                    "{} makes its own snapshots: give no SOURCE",
                    t.path()
                )));
            }
            None => return Err(VfsError::NotFound),
        }
        self.admit(target, name).await?;
        let mut jobs = lock(&self.jobs);
        let mut job = Job::new(
            &self.path_of(target),
            name,
            Source::Local(source),
            UploadState::Queued,
        );
        job.size = size;
        self.persist(target, name, &job, true);
        jobs.insert((target, name.to_string()), job);
        drop(jobs);
        self.notify();
        Ok(())
    }

    /// Whether a failed upload was written to since it failed: it is staged again, and
    /// starts over once it settles.
    fn rewritten(&self, target: usize, name: &str, job: &Job) -> bool {
        job.status.state == UploadState::Failed
            && job.source == Source::Staged
            && self
                .staging
                .activity(target, name)
                .is_some_and(|a| Some(a.generation) != job.failed_gen)
    }

    /// A job's status as users see it: a failed upload written to since is staging again at
    /// once, not only when the next look at the uploads notices.
    fn current(&self, target: usize, name: &str, job: &Job) -> UploadStatus {
        let mut s = job.current();
        if self.rewritten(target, name, job) {
            s.state = UploadState::Staging;
            s.error = None;
        }
        s
    }

    /// Every job that is not done, and those done since the daemon started.
    pub fn all(&self) -> Vec<UploadStatus> {
        let mut out: Vec<UploadStatus> = lock(&self.jobs)
            .iter()
            .map(|((t, name), job)| self.current(*t, name, job))
            .collect();
        out.sort_by(|a, b| (&a.target, &a.snapshot).cmp(&(&b.target, &b.snapshot)));
        out
    }

    /// Blocks until the job ends; None when there is no such job.
    pub async fn wait(&self, target: usize, name: &str) -> Option<UploadStatus> {
        let mut rx = self.changed.subscribe();
        loop {
            let status = lock(&self.jobs)
                .get(&(target, name.to_string()))
                .map(|job| self.current(target, name, job))?;
            if status.state.is_final() {
                return Some(status);
            }
            if rx.changed().await.is_err() {
                return Some(status);
            }
        }
    }
}

#[async_trait]
impl UploadHooks for Jobs {
    async fn admit(&self, target: usize, name: &str) -> VfsResult<()> {
        let backend = self.backend(target).ok_or(VfsError::NotFound)?;
        {
            let jobs = lock(&self.jobs);
            if let Some(job) = jobs.get(&(target, name.to_string()))
                && job.status.state != UploadState::Done
            {
                return Err(VfsError::Exists(format!(
                    "an upload named {name} is already in progress"
                )));
            }
        }
        if let Err(e) = backend.check_new(name).await {
            tracing::info!(target = backend.path(), snapshot = name, error = %e, "upload refused");
            return Err(e.into());
        }
        let job = Job::new(backend.path(), name, Source::Staged, UploadState::Staging);
        self.persist(target, name, &job, false);
        lock(&self.jobs).insert((target, name.to_string()), job);
        self.notify();
        Ok(())
    }

    fn status(&self, target: usize, name: &str) -> Option<UploadStatus> {
        lock(&self.jobs)
            .get(&(target, name.to_string()))
            .filter(|j| j.source == Source::Staged && j.status.state != UploadState::Done)
            .map(|job| self.current(target, name, job))
    }

    fn discarded(&self, target: usize, name: &str) {
        if let Some(job) = lock(&self.jobs).remove(&(target, name.to_string())) {
            job.cancel.store(true, Ordering::Relaxed);
        }
        self.store.remove(&self.path_of(target), name);
        self.notify();
    }

    fn target(&self, path: &str) -> Option<usize> {
        self.target_index(path)
    }
}
