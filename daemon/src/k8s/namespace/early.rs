//! Uploads that start while `cp` into `uploads/NAME` still runs (`StoresEarly`, DESIGN §6):
//! the first file made starts the upload's claim and pod, and each file goes into the stream
//! once its last writer closed it, as `<inode>-<epoch>` in a folder of the upload's own at the
//! volume's root (`early_dir`). When the upload settles, its run sends the tree into the same
//! stream, each file that arrived early and is unchanged since (same epoch, size, mode, owner
//! and time) as a hard link to what arrived.
//!
//! The claim has the namespace's minimum size (`k8s.min_size`). Once what the files copied
//! take, with the claim's margin, passes it, the stream stops; the run then gives the early
//! claim and pod up and makes its own, as does a run whose tree needs more, one that finds the
//! stream ended (the pod went), and one after a restart, which knows nothing sent before it.
//! What an early upload made carries the upload's labels and its early id as the job, so that
//! the upload's next run and cleanup find it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use snapfs_fs::backend::BackendError;
use tokio::task::JoinHandle;

use super::manifests::{self, PER_FILE, on_volume, with_margin};
use super::transfer::{Feed, Part, Parts, early_dir, stream};
use super::{KubeTarget, Progress, lock};
use crate::early::{Files, Held};
use crate::k8s::labels::resource_name;
use crate::k8s::tarball::{self, Meta, Plan};
use crate::powers::StoresEarly;

/// How long an early upload's pod and stream may wait for the copy to end and settle.
const EARLY_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// The stream's session, once the pod runs.
type Session = JoinHandle<Result<(), BackendError>>;

/// The early upload of one staged upload id.
enum Slot {
    Open(Arc<Early>),
    /// A run took it: files of the id go no more early.
    Taken,
}

/// The uploads started early, by upload id.
#[derive(Default)]
pub(super) struct EarlyUploads(Mutex<HashMap<String, Slot>>);

/// A file that arrived early.
struct Sent {
    epoch: u64,
    meta: Meta,
    link: String,
}

pub(super) struct Early {
    /// The upload's name, and the name of its claim and pod.
    name: String,
    rname: String,
    /// Where the files arrive (`early_dir`).
    dir: String,
    /// The claim's size.
    size: u64,
    files: Files,
    held: Arc<Held>,
    feed: Mutex<Option<Feed>>,
    sent: Arc<Mutex<HashMap<u64, Sent>>>,
    /// What the files sent so far take on the claim (`PER_FILE` each beside their size),
    /// rewritten ones included: the pod removes them only at the end.
    taken: AtomicU64,
    /// Whether the files copied outgrew the claim: the stream stopped then.
    full: AtomicBool,
    /// Set once the early upload is given up; stops its start.
    cancel: Arc<AtomicBool>,
    /// A run sends its tree into the stream: the claim and pod are the run's now.
    used: AtomicBool,
    start: Mutex<Option<JoinHandle<Result<Session, BackendError>>>>,
}

impl KubeTarget {
    /// The early upload of `id`, started on `rt` if it has not begun; none once a run took it.
    fn early(
        self: &Arc<Self>,
        rt: &tokio::runtime::Handle,
        id: &str,
        name: &str,
    ) -> Option<Arc<Early>> {
        let mut all = lock(&self.early.0);
        match all.get(id) {
            Some(Slot::Open(e)) => return Some(e.clone()),
            Some(Slot::Taken) => return None,
            None => {}
        }
        let (feed, parts) = stream();
        let early = Arc::new(Early {
            name: name.to_string(),
            rname: resource_name(name, id),
            dir: early_dir(id),
            size: self.settings.min_size,
            files: Files::default(),
            held: Arc::default(),
            feed: Mutex::new(Some(feed)),
            sent: Arc::default(),
            taken: AtomicU64::new(0),
            full: AtomicBool::new(false),
            cancel: Arc::default(),
            used: AtomicBool::new(false),
            start: Mutex::new(None),
        });
        let start = {
            let (this, e, id) = (self.clone(), early.clone(), id.to_string());
            // The stream's own lines name the upload, as a run's do.
            let span = tracing::info_span!("early", target = this.path, snapshot = e.name);
            rt.spawn(tracing::Instrument::instrument(
                async move {
                    let started = this.start_early(&e, &id, parts).await;
                    if let Err(err) = &started {
                        tracing::info!(error = %err, "the upload could not start during the copy; it starts once the copy settles");
                    }
                    started
                },
                span,
            ))
        };
        *lock(&early.start) = Some(start);
        all.insert(id.to_string(), Slot::Open(early.clone()));
        Some(early)
    }

    /// Makes the early upload's claim and pod and starts its stream.
    async fn start_early(
        &self,
        e: &Early,
        id: &str,
        parts: Parts,
    ) -> Result<Session, BackendError> {
        let p = self.preflight(true).await?;
        self.claim_and_pod(&e.rname, &e.name, id, &p, e.size, EARLY_LIMIT, &e.cancel)
            .await?;
        let as_root = manifests::as_root(self.settings.pod_uid, p.restricted);
        Ok(self.start_stream(&e.rname, parts, !as_root, EARLY_LIMIT, Some(&e.dir)))
    }

    /// The early upload of `id` for its run, which from now on owns it.
    pub(super) fn take_early(&self, id: &str) -> Option<Arc<Early>> {
        match lock(&self.early.0).insert(id.to_string(), Slot::Taken) {
            Some(Slot::Open(e)) => Some(e),
            _ => None,
        }
    }

    /// The run of an upload is over: its id will not be used again.
    pub(super) fn forget_early(&self, id: &str) {
        lock(&self.early.0).remove(id);
    }

    /// Stops early upload `e` and removes its pod and claim; once only, however often asked.
    pub(super) async fn give_up(&self, e: &Early) {
        if e.cancel.swap(true, Ordering::Relaxed) {
            return;
        }
        drop(lock(&e.feed).take());
        let start = lock(&e.start).take();
        if let Some(start) = start
            && let Ok(Ok(session)) = start.await
        {
            // Ended here, not waited for: a connection that hangs would hold the removal.
            session.abort();
        }
        let removed = async {
            self.delete_pod(&e.rname).await?;
            self.remove(&self.claims(), "persistentvolumeclaim", &e.rname)
                .await
        };
        if let Err(err) = removed.await {
            tracing::warn!(target = self.path, snapshot = e.name, pod = e.rname, error = %err, "pod or claim of an upload started during the copy not removed; cleanup removes it");
        }
    }

    /// The early upload `e` as the run of `plan` can use it: its stream, running, and the
    /// plan that links the files that arrived early; or why it cannot. `size` is the claim
    /// size the run asks for, if it asks for one. The files handed to the stream before go
    /// first, so that none goes twice.
    pub(super) async fn early_for(
        &self,
        e: &Early,
        plan: &Plan,
        size: Option<u64>,
        progress: &Progress,
        cancel: &AtomicBool,
    ) -> Result<(Feed, Session, Plan), String> {
        if e.full.load(Ordering::Relaxed) {
            return Err("the copy outgrew its claim".to_string());
        }
        let start = lock(&e.start).take().ok_or("it did not start")?;
        let session = match start.await {
            Ok(Ok(session)) => session,
            Ok(Err(err)) => return Err(format!("it did not start: {err}")),
            Err(err) => return Err(format!("it did not start: {err}")),
        };
        if session.is_finished() {
            let why = match session.await {
                Ok(Err(err)) => err.to_string(),
                _ => "the stream ended".to_string(),
            };
            return Err(format!("its stream ended: {why}"));
        }
        match self.link_early(e, plan, size, progress, cancel).await {
            Ok((feed, linked)) => Ok((feed, session, linked)),
            Err(why) => {
                session.abort();
                Err(why)
            }
        }
    }

    /// The stream of `e` once the files handed to it went, and `plan` with the files that
    /// arrived unchanged as links; or why they cannot be used.
    async fn link_early(
        &self,
        e: &Early,
        plan: &Plan,
        size: Option<u64>,
        progress: &Progress,
        cancel: &AtomicBool,
    ) -> Result<(Feed, Plan), String> {
        if plan.has_top(&e.dir) {
            return Err(format!("the tree has a {} of its own", e.dir));
        }
        if let Some(asked) = size.filter(|&s| s != e.size) {
            return Err(format!("a claim of {asked} bytes was asked for"));
        }
        // The tree alone may be too much for the claim: known before anything is waited for.
        let raw = on_volume(plan);
        let tree = with_margin(raw, &self.settings);
        if tree > e.size {
            return Err(too_big(tree, e.size));
        }
        let Some(mut feed) = lock(&e.feed).take() else {
            return Err("its stream was given up".to_string());
        };
        feed.count_from_here();
        if !feed.drain(plan.total, progress, cancel).await {
            return Err("its stream ended before the files copied went".to_string());
        }
        let mut linked = plan.clone();
        let (files, bytes) = {
            let sent = lock(&e.sent);
            linked.link_sent(|m| {
                sent.get(&m.ino)
                    .filter(|s| s.meta == *m && e.files.current(m.ino, s.epoch))
                    .map(|s| s.link.clone())
            })
        };
        // The claim holds the tree and, until the pod removes them at the end, the files sent
        // early that the tree does not use.
        let dead = e
            .taken
            .load(Ordering::Relaxed)
            .saturating_sub(bytes + PER_FILE * files);
        let need = with_margin(raw.saturating_add(dead), &self.settings);
        if need > e.size {
            return Err(too_big(need, e.size));
        }
        tracing::info!(
            target = self.path,
            snapshot = e.name,
            files,
            bytes,
            "files sent during the copy are used"
        );
        e.used.store(true, Ordering::Relaxed);
        Ok((feed, linked))
    }
}

#[async_trait]
impl StoresEarly for KubeTarget {
    /// File `ino` was opened for writing or made; the first file of an upload starts it.
    fn writing(self: Arc<Self>, rt: &tokio::runtime::Handle, id: &str, name: &str, ino: u64) {
        if let Some(e) = self.early(rt, id, name) {
            e.files.writing(ino);
        }
    }

    /// The last writer of file `ino` closed it: it goes into the stream if it still fits on
    /// the claim.
    fn written(
        self: Arc<Self>,
        rt: &tokio::runtime::Handle,
        id: &str,
        name: &str,
        ino: u64,
        path: Option<&Path>,
    ) {
        let Some(e) = self.early(rt, id, name) else {
            return;
        };
        let (Some(epoch), Some(path)) = (e.files.written(ino), path) else {
            return;
        };
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if !meta.is_file() {
            return;
        }
        let take = meta.len().saturating_add(PER_FILE);
        let taken = e.taken.load(Ordering::Relaxed).saturating_add(take);
        if with_margin(taken, &self.settings) > e.size {
            if !e.full.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    target = self.path,
                    snapshot = e.name,
                    claim = e.size,
                    "the files copied so far outgrow the early claim; the upload goes whole once the copy settles"
                );
                // Nothing more goes early: what went cannot be used.
                drop(lock(&e.feed).take());
            }
            return;
        }
        e.taken.fetch_add(take, Ordering::Relaxed);
        let link = format!("{}/{ino}-{epoch}", e.dir);
        let sent = e.sent.clone();
        let done = {
            let link = link.clone();
            Box::new(move |m: Option<Meta>| {
                let mut sent = lock(&sent);
                match m {
                    Some(meta) => {
                        sent.insert(ino, Sent { epoch, meta, link });
                    }
                    None => {
                        sent.remove(&ino);
                    }
                }
            })
        };
        let len = tarball::file_entry_len(&link, &meta);
        if let Some(feed) = lock(&e.feed).as_ref() {
            let part = Part::File {
                name: link,
                path: path.to_path_buf(),
                held: e.held.clone(),
                key: ino,
                done,
            };
            feed.put_file(part, len);
        }
    }

    /// File `ino` was removed: if it is being read, the reading lets go of it first.
    fn removed(&self, id: &str, ino: u64) {
        let e = match lock(&self.early.0).get(id) {
            Some(Slot::Open(e)) => e.clone(),
            _ => return,
        };
        e.files.removed(ino);
        e.held.release(ino);
    }

    /// Upload `id` ended without a snapshot: its early claim and pod go.
    async fn discard(&self, id: &str) {
        let slot = lock(&self.early.0).remove(id);
        if let Some(Slot::Open(e)) = slot {
            self.give_up(&e).await;
        }
    }
}

impl Early {
    pub(super) fn rname(&self) -> &str {
        &self.rname
    }

    /// Whether a run sent its tree into the stream, and so removes the claim and pod itself.
    pub(super) fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }
}

fn too_big(need: u64, size: u64) -> String {
    format!("the tree needs a claim of {need} bytes, more than its {size}")
}
