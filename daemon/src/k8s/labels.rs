//! How snapfs marks what it makes in a cluster (DESIGN §6): `managed-by`, a role, the job,
//! and a digest of the upload's name (a label value holds 63 bytes, a name 253), with the full
//! name in an annotation; and the names of an upload's claim and pod.

use kube::core::ObjectMeta;
use serde_json::{Value, json};

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const ROLE: &str = "snapfs.io/role";
pub const JOB: &str = "snapfs.io/job";
/// A short digest of the upload's name.
pub const UPLOAD: &str = "snapfs.io/upload";
/// The upload's full name, which the digest stands for.
pub const SNAPSHOT: &str = "snapfs.io/snapshot";

/// `snapfs-up-<name>-<run>`: which upload, which run; a valid object name for any upload name.
pub fn resource_name(name: &str, job: &str) -> String {
    let short: String = name.chars().take(40).collect();
    let short = short.trim_end_matches(['-', '.']);
    let run: String = job
        .rsplit('-')
        .next()
        .unwrap_or(job)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(10)
        .collect();
    format!("snapfs-up-{short}-{}", run.to_ascii_lowercase())
}

pub fn name_digest(name: &str) -> String {
    format!("{:08x}", crc32c::crc32c(name.as_bytes()))
}

/// A job id as a label value.
pub fn job_label(job: &str) -> String {
    job.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(63)
        .collect()
}

/// The labels of an object an upload makes.
pub fn labels(role: &str, name: &str, job: &str) -> Value {
    json!({
        MANAGED_BY: "snapfs",
        ROLE: role,
        JOB: job_label(job),
        UPLOAD: name_digest(name),
    })
}

pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

pub fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// Made by snapfs for upload `name`.
pub fn made_for(meta: &ObjectMeta, name: &str) -> bool {
    label(meta, MANAGED_BY) == Some("snapfs") && annotation(meta, SNAPSHOT) == Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_are_valid_for_any_upload_name() {
        let n = resource_name(&"a.b-".repeat(60), "20261122T010203Z-0123456789ABCDEF");
        assert!(n.len() <= 63, "{n}");
        assert!(n.starts_with("snapfs-up-a.b-a"), "{n}");
        assert!(n.ends_with("-0123456789"), "{n}");
        assert_eq!(name_digest("db"), name_digest("db"));
        assert_ne!(name_digest("db"), name_digest("db2"));
        assert_eq!(job_label("20261122T010203Z-ab_cd"), "20261122T010203Z-abcd");
    }
}
