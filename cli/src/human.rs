//! How jobs and their progress look to a person.

use snapfs_control::units::format_size_rounded;
use snapfs_control::wire::{UploadState, UploadStatus};

/// Whole percent done, 0 when nothing is known yet (100 once done).
pub fn percent(job: &UploadStatus) -> u64 {
    if job.state == UploadState::Done {
        return 100;
    }
    percent_of(job.bytes_done, job.bytes_total)
}

/// Whole percent of `total` that `done` is; 0 for an unknown (zero) total.
pub fn percent_of(done: u64, total: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    let p = u128::from(done.min(total)) * 100 / u128::from(total);
    u64::try_from(p).unwrap_or(100)
}

/// `[#####.....]  52%`
pub fn bar(pct: u64) -> String {
    const WIDTH: usize = 10;
    let filled = usize::try_from(pct.min(100)).unwrap_or(0) * WIDTH / 100;
    format!(
        "[{}{}] {pct:>3}%",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled)
    )
}

/// `[#####.....]  52%  104.0 MiB / 200.0 MiB  uploading  cloud/local/db`
pub fn job_line(job: &UploadStatus) -> String {
    format!(
        "{}  {} / {}  {}  {}/{}",
        bar(percent(job)),
        format_size_rounded(job.bytes_done),
        format_size_rounded(job.bytes_total),
        job.state.word(),
        job.target,
        job.snapshot
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(done: u64, total: u64, state: UploadState) -> UploadStatus {
        UploadStatus {
            kind: Default::default(),
            state,
            bytes_done: done,
            bytes_total: total,
            target: "cloud/local".into(),
            snapshot: "db".into(),
            error: None,
            note: None,
        }
    }

    #[test]
    fn progress_line() {
        let mib = 1024 * 1024;
        assert_eq!(
            job_line(&job(104 * mib, 200 * mib, UploadState::Uploading)),
            "[#####.....]  52%  104.0 MiB / 200.0 MiB  uploading  cloud/local/db"
        );
        assert!(job_line(&job(0, 0, UploadState::Staging)).starts_with("[..........]   0%"));
        assert!(job_line(&job(0, 0, UploadState::Done)).starts_with("[##########] 100%"));
        // A total that shrank below what is done never overflows the bar.
        assert!(job_line(&job(300, 200, UploadState::Uploading)).starts_with("[##########] 100%"));
    }
}
