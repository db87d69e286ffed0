//! The status of an upload or other job: what `uploads/NAME.status` holds and what the daemon
//! answers about a job.

use serde::{Deserialize, Serialize};

/// Where an upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    /// Files are being written.
    Staging,
    /// Settled; waiting for a job slot.
    Queued,
    Uploading,
    Done,
    Failed,
}

impl UploadState {
    pub const ALL: [UploadState; 5] = [
        UploadState::Staging,
        UploadState::Queued,
        UploadState::Uploading,
        UploadState::Done,
        UploadState::Failed,
    ];

    /// The word people and metrics labels see for this state.
    pub fn word(self) -> &'static str {
        match self {
            UploadState::Staging => "staging",
            UploadState::Queued => "queued",
            UploadState::Uploading => "uploading",
            UploadState::Done => "done",
            UploadState::Failed => "failed",
        }
    }

    /// The `user.snapfs.state` word for this state.
    pub fn snapshot_state(self) -> &'static str {
        match self {
            UploadState::Staging | UploadState::Queued | UploadState::Uploading => "creating",
            UploadState::Done => "ready",
            UploadState::Failed => "failed",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, UploadState::Done | UploadState::Failed)
    }
}

/// What a job makes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// A snapshot of local data (`uploads/NAME`, or a SOURCE given to `snapfs snapshot`).
    #[default]
    Upload,
    /// A snapshot the backend makes itself (a HiveMQ backup).
    Backup,
    /// A snapshot restored inside the backend (a HiveMQ restore).
    Restore,
}

impl JobKind {
    pub fn is_upload(&self) -> bool {
        *self == JobKind::Upload
    }
}

/// The content of `uploads/NAME.status`, and the status of every other job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadStatus {
    /// Left out for uploads, so their status files read as they always did. Named
    /// `operation` on the wire, as control responses use `kind` for their own tag.
    #[serde(
        rename = "operation",
        default,
        skip_serializing_if = "JobKind::is_upload"
    )]
    pub kind: JobKind,
    pub state: UploadState,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// The target's path in the mount (`cloud/local`).
    pub target: String,
    /// The snapshot name being made.
    pub snapshot: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the user should know of how the snapshot was made (owners that could not be
    /// kept), when it is not an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Response;

    fn status(kind: JobKind) -> UploadStatus {
        UploadStatus {
            kind,
            state: UploadState::Uploading,
            bytes_done: 1,
            bytes_total: 2,
            target: "hivemq/b".into(),
            snapshot: "s".into(),
            error: None,
            note: None,
        }
    }

    #[test]
    fn upload_status_files_read_as_before_and_jobs_keep_their_kind() {
        let upload = serde_json::to_value(status(JobKind::Upload)).unwrap();
        assert!(upload.get("operation").is_none(), "{upload}");
        // In a response, `kind` is the response's own tag; the job's is `operation`.
        let job = Response::Job(status(JobKind::Backup));
        let text = serde_json::to_string(&job).unwrap();
        assert!(text.contains(r#""kind":"job""#) && text.contains(r#""operation":"backup""#));
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), job);
    }
}
