//! hivemqsim: the backup and restore endpoints of HiveMQ's REST API (4.4+), for tests, with
//! fault switches and counters.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use hivemqsim::{Access, Config, HiveMqSim, Seed};
//! let sim = HiveMqSim::start(Config::default()).await?;
//! sim.add_user("admin", "secret", Access::Full);
//! let backup = sim.seed(Seed::with_size(1 << 20)).expect("a fresh id");
//! sim.faults().set_drop_download_after(Some(1000));
//! assert_eq!(sim.counters().downloads(), 0);
//! println!("{} serves {}", sim.url(), backup.id);
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod api;
mod archive;
mod auth;
mod backups;
mod download;
mod faults;
mod server;

pub use archive::MAX_GENERATED_SIZE;
pub use auth::{Access, basic_auth};
pub use backups::{Backup, BackupState, Seed, SeedError};
pub use faults::{Counters, Faults};
pub use server::{Config, HiveMqSim, Timings};
