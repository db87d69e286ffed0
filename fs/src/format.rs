//! Snapshot format (see man/snapfs-format.5).
