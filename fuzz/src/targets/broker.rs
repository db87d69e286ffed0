//! A HiveMQ broker's answers: the backup listing, which becomes a directory.

use snapfsd::hivemq::{backups_of, id_of, info_of};

use snapfs_fs::tree::is_file_name;

/// The body of `GET backups`: every backup a listing shows has a name a directory can hold,
/// which leads back to its id.
pub fn listing(data: &[u8]) {
    let Ok(backups) = backups_of(data) else {
        return;
    };
    for b in &backups {
        let Some(info) = info_of(b) else {
            continue;
        };
        assert!(is_file_name(&info.name), "backup shown as {:?}", info.name);
        assert_eq!(
            id_of(&info.name),
            b.id.as_deref(),
            "name does not lead back to the id"
        );
    }
}
