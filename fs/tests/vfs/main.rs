//! The VFS core driven directly, without a kernel mount: an in-memory backend serving snapshots
//! in the real format, with counters and injected faults, and a real cache and staging area on
//! temporary disk.

mod fake;
mod fixture;
mod live;
mod model;
mod objects;
mod read;
mod tree;
mod uploads;
mod whole;
