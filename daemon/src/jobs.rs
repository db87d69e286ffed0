//! The job engine: turns settled uploads (and `snapfs snapshot` requests) into snapshots,
//! keeps their status, survives restarts, and answers the VFS's questions about uploads. It
//! knows targets only through the registry and their powers, never by kind.

mod broker;
mod record;
mod recover;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use snapfs_fs::backend::{BackendError, SnapshotInfo};
use snapfs_fs::vfs::{
    JobKind, Staging, TargetId, UploadHooks, UploadState, UploadStatus, VfsError, VfsResult,
};
use tracing::Instrument;

use crate::powers::{InUse, Power, Progress, Run, StoresEarly};
use crate::registry::{Entry, Registry};
use record::{Persisted, Record, Refused, Source, Store};

/// How often uploads are looked at when none is about to settle; one that is about to is
/// looked at when it settles.
const TICK: Duration = Duration::from_millis(200);

/// How long a staged upload with every file closed must stay quiet to be marked complete
/// (`Staging::mark_complete`): a tick, far longer than a copy takes between two files.
const COMPLETE_QUIET: Duration = TICK;

struct Job {
    /// Tells this run apart from a later one of the same name.
    run: u64,
    status: UploadStatus,
    source: Source,
    upload_id: Option<String>,
    /// Where the target stores the staged files while they are copied, if it does.
    early_id: Option<String>,
    /// Staging generation the running job started from.
    started_gen: Option<u64>,
    /// Staging generation that failed; retried only after new writes.
    failed_gen: Option<u64>,
    progress: Arc<Progress>,
    cancel: Arc<AtomicBool>,
    /// Claim size asked for (`snapfs snapshot --size`), where the target has one.
    size: Option<u64>,
    /// Entries of a staged upload that could not be kept; it fails instead of starting.
    refused: Refused,
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
            early_id: None,
            started_gen: None,
            failed_gen: None,
            progress: Arc::new(Progress::default()),
            cancel: Arc::new(AtomicBool::new(false)),
            size: None,
            refused: Refused::default(),
        }
    }

    fn current(&self) -> UploadStatus {
        let mut s = self.status.clone();
        if s.state == UploadState::Uploading {
            s.bytes_done = self.progress.done.load(Ordering::Relaxed);
            s.bytes_total = self.progress.total.load(Ordering::Relaxed);
            if let Some(w) = lock(&self.progress.waiting).as_ref() {
                s.error = Some(format!("still waiting: {w}"));
            }
        }
        // Said during the run and kept with its outcome.
        if let Some(n) = lock(&self.progress.note).as_ref() {
            s.note = Some(n.clone());
        }
        s
    }
}

type Key = (TargetId, String);

pub struct Jobs {
    registry: Arc<Registry>,
    /// Where work the file system's threads hand on runs.
    rt: tokio::runtime::Handle,
    staging: Arc<Staging>,
    store: Arc<Store>,
    settle: Duration,
    /// Whether targets that can store staged files while they are copied do.
    early: bool,
    /// Held only to read or change job states: never across I/O.
    jobs: Mutex<HashMap<Key, Job>>,
    runs: AtomicU64,
    changed: tokio::sync::watch::Sender<u64>,
    /// Whether uploads are being marked complete (`mark_complete`) on a thread now.
    marking: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks a staged upload complete if it is (`Staging::mark_complete`); says where it cannot.
fn mark_one(staging: &Staging, t: TargetId, path: &str, name: &str, quiet: Duration) {
    if let Err(e) = staging.mark_complete(t, path, name, quiet) {
        tracing::warn!(target = path, snapshot = name, error = %e, "could not mark an upload complete");
    }
}

fn key(target: TargetId, name: &str) -> Key {
    (target, name.to_string())
}

impl Jobs {
    pub fn new(
        registry: Arc<Registry>,
        staging: Arc<Staging>,
        state_dir: PathBuf,
        settle: Duration,
        early: bool,
        rt: tokio::runtime::Handle,
    ) -> Arc<Jobs> {
        Arc::new(Jobs {
            registry,
            rt,
            staging,
            store: Arc::new(Store::new(state_dir.join("jobs"))),
            settle,
            early,
            jobs: Mutex::new(HashMap::new()),
            runs: AtomicU64::new(1),
            changed: tokio::sync::watch::Sender::new(0),
            marking: Arc::new(AtomicBool::new(false)),
        })
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn entry(&self, target: TargetId) -> Option<Arc<Entry>> {
        self.registry.entry(target)
    }

    /// The target's path in the mount; empty for an id that is not registered.
    fn path_of(&self, target: TargetId) -> String {
        self.entry(target)
            .map(|e| e.path().to_string())
            .unwrap_or_default()
    }

    /// What the jobs of `target` use now, which cleanup must leave alone.
    pub fn in_use(&self, target: TargetId) -> InUse {
        let mut in_use = InUse::default();
        for ((t, name), job) in lock(&self.jobs).iter() {
            if *t != target {
                continue;
            }
            if job.status.state == UploadState::Uploading
                && let Some(id) = &job.upload_id
            {
                in_use.running.insert(id.clone());
            }
            if let Some(id) = &job.early_id {
                in_use.running.insert(id.clone());
            }
            if !job.status.state.is_final() {
                in_use.pending.insert(name.clone());
            }
        }
        in_use
    }

    fn upload_path(&self, target: TargetId, name: &str) -> PathBuf {
        self.staging.target_dir(&self.path_of(target)).join(name)
    }

    /// The record of a job as it is now, to write once the jobs lock is released.
    fn record(&self, target: TargetId, name: &str, job: &Job, settled: bool) -> Option<Record> {
        let p = Persisted {
            status: job.status.clone(),
            source: job.source.clone(),
            upload_id: job.upload_id.clone(),
            early_id: job.early_id.clone(),
            settled,
            size: job.size,
            refused: job.refused.clone(),
        };
        Some(self.store.record(&self.path_of(target), name, Some(p)))
    }

    /// Writes a job record on the calling thread: for callers that are not on the runtime
    /// (start-up, shutdown, the file system's own threads).
    fn write(&self, record: Option<Record>) {
        if let Some(r) = record {
            self.store.apply(r);
        }
    }

    /// Writes a job record off the runtime's threads, and waits for it.
    async fn persist(&self, record: Option<Record>) {
        let Some(r) = record else {
            return;
        };
        let store = self.store.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || store.apply(r)).await {
            tracing::warn!(error = %e, "recording the job state did not finish");
        }
    }

    /// Marks staged uploads as complete before a clean stop: every handle is closed by then.
    /// The marks, made once the files are on the disk, also hold if the machine stops next.
    pub fn shutdown(&self) {
        let staged: Vec<_> = lock(&self.jobs)
            .iter()
            .filter(|(_, job)| job.status.state == UploadState::Staging)
            .map(|((t, name), job)| (*t, name.clone(), self.record(*t, name, job, true)))
            .collect();
        for (t, name, r) in staged {
            mark_one(&self.staging, t, &self.path_of(t), &name, Duration::ZERO);
            self.write(r);
        }
    }

    /// Runs forever: starts jobs for uploads that settled, cancels jobs overtaken by writes.
    pub async fn run(self: Arc<Self>) {
        loop {
            for (t, name) in self.due() {
                self.start(t, name);
            }
            self.mark_complete();
            let now = Instant::now();
            let wait = self
                .next_settle(now)
                .map_or(TICK, |at| at.duration_since(now).min(TICK));
            tokio::time::sleep(wait).await;
        }
    }

    /// When the next staged upload with every handle closed settles, if one is yet to: it is
    /// started then, not up to a tick later.
    fn next_settle(&self, now: Instant) -> Option<Instant> {
        lock(&self.jobs)
            .iter()
            .filter(|(_, job)| {
                job.source == Source::Staged
                    && matches!(
                        job.status.state,
                        UploadState::Staging | UploadState::Queued | UploadState::Failed
                    )
            })
            .filter_map(|((t, name), _)| self.staging.activity(*t, name))
            .filter(|a| a.open == 0)
            .map(|a| a.last_change + self.settle)
            .filter(|&at| at > now)
            .min()
    }

    /// Marks on disk the staged uploads whose copy is complete, so that a daemon killed
    /// before they settle resumes them (`recover`). On a thread of its own, as the staged
    /// files go to the disk first: uploads settle and start meanwhile. One marking at a time.
    fn mark_complete(&self) {
        let waiting: Vec<(TargetId, String, String)> = lock(&self.jobs)
            .iter()
            .filter(|(_, job)| {
                job.source == Source::Staged
                    && matches!(job.status.state, UploadState::Staging | UploadState::Queued)
            })
            .map(|((t, name), _)| (*t, self.path_of(*t), name.clone()))
            .collect();
        if waiting.is_empty() || self.marking.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Lets the next marking start, however this one ends.
        struct Done(Arc<AtomicBool>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let (staging, done) = (self.staging.clone(), Done(self.marking.clone()));
        self.rt.spawn_blocking(move || {
            let _done = done;
            for (t, path, name) in waiting {
                mark_one(&staging, t, &path, &name, COMPLETE_QUIET);
            }
        });
    }

    /// Jobs to start now; running jobs overtaken by new writes are told to stop.
    fn due(&self) -> Vec<Key> {
        let mut start = Vec::new();
        let mut jobs = lock(&self.jobs);
        for ((t, name), job) in jobs.iter_mut() {
            if job.source == Source::Backend {
                continue;
            }
            if job.source != Source::Staged {
                if job.status.state == UploadState::Queued {
                    start.push(key(*t, name));
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
                    let Some(generation) = self.staging.settled(*t, name, self.settle) else {
                        if job.status.state != UploadState::Failed || self.rewritten(*t, name, job)
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
                    start.push(key(*t, name));
                }
                UploadState::Done => {}
            }
        }
        start
    }

    fn start(self: &Arc<Self>, target: TargetId, name: String) {
        let Some(entry) = self.entry(target) else {
            return;
        };
        let (run, source, progress, cancel, upload_id, early_id, size, record) = {
            let mut jobs = lock(&self.jobs);
            let Some(job) = jobs.get_mut(&key(target, &name)) else {
                return;
            };
            if let Some(error) = job.refused.error() {
                let record = self.failed(target, &name, job, error);
                drop(jobs);
                self.notify();
                let this = self.clone();
                tokio::spawn(async move { this.persist(record).await });
                return;
            }
            job.run = self.runs.fetch_add(1, Ordering::Relaxed);
            job.status.state = UploadState::Uploading;
            job.status.error = None;
            job.cancel = Arc::new(AtomicBool::new(false));
            job.progress = Arc::new(Progress::default());
            let id = Run::new_id();
            job.upload_id = Some(id.clone());
            let record = self.record(target, &name, job, true);
            (
                job.run,
                job.source.clone(),
                job.progress.clone(),
                job.cancel.clone(),
                id,
                job.early_id.clone(),
                job.size,
                record,
            )
        };
        self.notify();
        let span = tracing::info_span!("job", target = entry.path(), snapshot = %name, run);
        let this = self.clone();
        let job = async move {
            // On disk before the run makes anything, so a restart knows what to clean up.
            this.persist(record).await;
            let path = match &source {
                Source::Staged => this.upload_path(target, &name),
                Source::Local(p) => p.clone(),
                // Never queued (the broker runs it); reaching here ends as unsupported below.
                Source::Backend => PathBuf::new(),
            };
            tracing::info!(upload_id, "upload started");
            let result = match entry.need(&entry.powers.local_data, Power::LocalData) {
                Ok(local) => {
                    let run = Run {
                        id: &upload_id,
                        size,
                        progress: &progress,
                        cancel: &cancel,
                        in_place: matches!(source, Source::Local(_)),
                        early: early_id.as_deref(),
                    };
                    local.commit(&name, &path, &run).await
                }
                Err(e) => Err(e),
            };
            let cancelled = cancel.load(Ordering::Relaxed);
            this.finish(target, &name, run, &source, result, cancelled)
                .await;
        };
        tokio::spawn(job.instrument(span));
    }

    async fn finish(
        &self,
        target: TargetId,
        name: &str,
        run: u64,
        source: &Source,
        result: Result<SnapshotInfo, BackendError>,
        cancelled: bool,
    ) {
        let current =
            |jobs: &HashMap<Key, Job>| jobs.get(&key(target, name)).is_some_and(|j| j.run == run);
        // A snapshot made from staged files: the staged copy goes before the job is seen done,
        // so that `uploads/NAME` is gone by the time `snapfs wait` returns. The deletion runs
        // with no lock held.
        if result.is_ok() && *source == Source::Staged && current(&lock(&self.jobs)) {
            self.remove_staged(target, name).await;
        }
        let path = self.path_of(target);
        let record = {
            let mut jobs = lock(&self.jobs);
            if !current(&jobs) {
                // Discarded while running: nothing to report, its packs are already removed.
                return;
            }
            let Some(job) = jobs.get_mut(&key(target, name)) else {
                return;
            };
            match result {
                Ok(info) => {
                    tracing::info!(bytes = info.size, "snapshot ready");
                    job.status.state = UploadState::Done;
                    // Its run ended what was stored while the files were copied: the
                    // snapshot's manifest holds what it used.
                    job.early_id = None;
                    job.status.bytes_done = job.progress.done.load(Ordering::Relaxed);
                    job.status.bytes_total = job.progress.total.load(Ordering::Relaxed);
                    if *source == Source::Staged {
                        self.staging.forget(target, name);
                    }
                    // Told while the lock is held, so no one sees the job done before the
                    // mount shows the snapshot; the mount never waits on the kernel for it
                    // (`Registry::changed`).
                    self.registry.changed(target, name);
                    Some(self.store.record(&path, name, None))
                }
                Err(_) if cancelled => {
                    tracing::info!("upload overtaken by new writes; waiting for them to settle");
                    job.status.state = UploadState::Staging;
                    self.record(target, name, job, false)
                }
                Err(e) => {
                    // What was stored during the copy goes: a failed upload that waits for
                    // the user must not hold a lease on the bucket meanwhile. Writes from now
                    // on are stored under a new id.
                    if let Some(old) = job.early_id.take() {
                        job.early_id = Some(Run::new_id());
                        self.discard_early(target, old);
                    }
                    self.failed(target, name, job, e.to_string())
                }
            }
        };
        self.persist(record).await;
        self.notify();
    }

    /// Removes what upload id `early` of `target` stored while its files were copied.
    fn discard_early(&self, target: TargetId, early: String) {
        let Some(stores) = self
            .entry(target)
            .and_then(|e| e.powers.stores_early.clone())
        else {
            return;
        };
        self.rt.spawn(async move { stores.discard(&early).await });
    }

    /// An id for a new staged upload of `entry` to store its files under while they are copied,
    /// if the target can and it is wanted.
    fn new_early_id(&self, entry: &Entry) -> Option<String> {
        (self.early && entry.powers.stores_early.is_some()).then(Run::new_id)
    }

    /// The early storing of upload `name` of `target`, and its id, if it has one.
    fn early_of(&self, target: TargetId, name: &str) -> Option<(Arc<dyn StoresEarly>, String)> {
        let id = lock(&self.jobs).get(&key(target, name))?.early_id.clone()?;
        let stores = self.entry(target)?.powers.stores_early.clone()?;
        Some((stores, id))
    }

    /// Ends a job as failed with `error`; it is tried again only after new writes. Answers the
    /// record to write.
    fn failed(&self, target: TargetId, name: &str, job: &mut Job, error: String) -> Option<Record> {
        tracing::warn!(snapshot = name, error, "upload failed");
        job.status.state = UploadState::Failed;
        job.status.error = Some(error);
        job.failed_gen = job.started_gen;
        self.record(target, name, job, true)
    }

    /// Deletes the staged copy of an upload that became a snapshot, off the runtime's threads.
    async fn remove_staged(&self, target: TargetId, name: &str) {
        let staged = self.upload_path(target, name);
        let staging = self.staging.clone();
        let removed =
            tokio::task::spawn_blocking(move || staging.remove(&staged).map_err(|e| (staged, e)))
                .await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err((staged, e))) => {
                tracing::warn!(path = %staged.display(), error = %e, "could not remove staged files");
            }
            Err(e) => tracing::warn!(error = %e, "removing staged files did not finish"),
        }
    }

    /// Starts a snapshot of a local file or folder, read where it is.
    pub async fn snapshot_local(
        self: &Arc<Self>,
        target: TargetId,
        name: &str,
        source: PathBuf,
        size: Option<u64>,
    ) -> Result<(), VfsError> {
        let entry = self.entry(target).ok_or(VfsError::NotFound)?;
        if entry.powers.local_data.is_none() {
            let why = entry.powers.why_not(entry.path(), Power::LocalData);
            return Err(VfsError::InvalidName(why));
        }
        self.admit(target, name).await?;
        let mut job = Job::new(
            entry.path(),
            name,
            Source::Local(source),
            UploadState::Queued,
        );
        job.size = size;
        let record = self.record(target, name, &job, true);
        lock(&self.jobs).insert(key(target, name), job);
        self.persist(record).await;
        self.notify();
        Ok(())
    }

    /// Whether a failed upload was written to since it failed: it is staged again, and
    /// starts over once it settles.
    fn rewritten(&self, target: TargetId, name: &str, job: &Job) -> bool {
        job.status.state == UploadState::Failed
            && job.source == Source::Staged
            && self
                .staging
                .activity(target, name)
                .is_some_and(|a| Some(a.generation) != job.failed_gen)
    }

    /// A job's status as users see it: a failed upload written to since is staging again at
    /// once, not only when the next look at the uploads notices.
    fn current(&self, target: TargetId, name: &str, job: &Job) -> UploadStatus {
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
    pub async fn wait(&self, target: TargetId, name: &str) -> Option<UploadStatus> {
        let mut rx = self.changed.subscribe();
        loop {
            let status = lock(&self.jobs)
                .get(&key(target, name))
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
    async fn admit(&self, target: TargetId, name: &str) -> VfsResult<()> {
        let entry = self.entry(target).ok_or(VfsError::NotFound)?;
        let local = entry.need(&entry.powers.local_data, Power::LocalData)?;
        {
            let jobs = lock(&self.jobs);
            if let Some(job) = jobs.get(&key(target, name))
                && job.status.state != UploadState::Done
            {
                return Err(VfsError::Exists(format!(
                    "an upload named {name} is already in progress"
                )));
            }
        }
        if let Err(e) = local.check_new(name).await {
            tracing::info!(target = entry.path(), snapshot = name, error = %e, "upload refused");
            return Err(e.into());
        }
        self.staging.clear_mark(entry.path(), name);
        let mut job = Job::new(entry.path(), name, Source::Staged, UploadState::Staging);
        job.early_id = self.new_early_id(&entry);
        let record = self.record(target, name, &job, false);
        lock(&self.jobs).insert(key(target, name), job);
        self.persist(record).await;
        self.notify();
        Ok(())
    }

    fn status(&self, target: TargetId, name: &str) -> Option<UploadStatus> {
        lock(&self.jobs)
            .get(&key(target, name))
            .filter(|j| j.source == Source::Staged && j.status.state != UploadState::Done)
            .map(|job| self.current(target, name, job))
    }

    fn discarded(&self, target: TargetId, name: &str) {
        let job = lock(&self.jobs).remove(&key(target, name));
        if let Some(job) = job {
            job.cancel.store(true, Ordering::Relaxed);
            if let Some(early) = job.early_id {
                self.discard_early(target, early);
            }
        }
        self.write(Some(self.store.record(&self.path_of(target), name, None)));
        self.notify();
    }

    fn writing(&self, target: TargetId, name: &str, ino: u64) {
        if let Some((stores, id)) = self.early_of(target, name) {
            stores.writing(&self.rt, &id, name, ino);
        }
    }

    fn written(&self, target: TargetId, name: &str, ino: u64, path: Option<&std::path::Path>) {
        if let Some((stores, id)) = self.early_of(target, name) {
            stores.written(&self.rt, &id, name, ino, path);
        }
    }

    fn removed(&self, target: TargetId, name: &str, ino: u64) {
        if let Some((stores, id)) = self.early_of(target, name) {
            stores.removed(&id, ino);
        }
    }

    fn refused(&self, target: TargetId, name: &str, path: &std::path::Path, what: &str) {
        let record = {
            let mut jobs = lock(&self.jobs);
            let Some(job) = jobs.get_mut(&key(target, name)) else {
                return;
            };
            job.refused.add(path, what);
            self.record(target, name, job, false)
        };
        // On disk before the refusal is answered, so that a restart still fails the upload.
        self.write(record);
        self.notify();
    }
}
