//! The targets, by where their input comes from.

pub mod broker;
pub mod config;
pub mod control;
pub mod format;
pub mod pod;
