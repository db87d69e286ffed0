//! The server handle: listener, shared state, seeding and shutdown.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::{Access, Users};
use crate::backups::{Backup, Backups, Seed, SeedError};
use crate::faults::{Counters, Faults};

/// How long operations take. Real backups take seconds to hours; tests want less, so the
/// defaults are a guess at "short but observable".
#[derive(Debug, Clone)]
pub struct Timings {
    /// IN_PROGRESS → COMPLETED or FAILED.
    pub backup: Duration,
    /// RESTORE_IN_PROGRESS → RESTORE_COMPLETED or RESTORE_FAILED.
    pub restore: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            backup: Duration::from_millis(200),
            restore: Duration::from_millis(200),
        }
    }
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    pub timings: Timings,
    /// The size of the file of a backup created through the API.
    pub backup_size: u64,
    /// The status answered when a backup or restore is requested while another runs. A guess:
    /// HiveMQ's OpenAPI lists only 503 for create and 400/404/503 for restore, and names no code
    /// for this case; 409 by default, settable so that clients can be tested against 400 or 503.
    pub busy_status: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 0,
            timings: Timings::default(),
            backup_size: 64 * 1024,
            busy_status: 409,
        }
    }
}

/// Everything request handlers share.
pub(crate) struct State {
    backups: Mutex<Backups>,
    pub faults: Faults,
    pub counters: Arc<Counters>,
    pub users: Users,
    pub config: Config,
    addr: SocketAddr,
    /// Bumped to drop every connection at shutdown.
    epoch: watch::Sender<u64>,
}

impl State {
    pub fn backups(&self) -> MutexGuard<'_, Backups> {
        self.backups.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running HiveMQ REST test server. Dropping it stops it.
pub struct HiveMqSim {
    state: Arc<State>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

async fn accept_loop(state: Arc<State>, listener: TcpListener) {
    let mut epoch = state.epoch.subscribe();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = epoch.changed() => return,
        };
        let state = state.clone();
        let mut conn_epoch = state.epoch.subscribe();
        tokio::spawn(async move {
            let service = {
                let state = state.clone();
                service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(crate::api::handle(&state, req)) }
                })
            };
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = conn => {
                    // Dropped downloads end here too, by design.
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended");
                    }
                }
                _ = conn_epoch.changed() => {}
            }
        });
    }
}

impl HiveMqSim {
    /// Starts a server on 127.0.0.1 with no backups and no users (an open API).
    pub async fn start(config: Config) -> io::Result<HiveMqSim> {
        let listener = TcpListener::bind(("127.0.0.1", config.port)).await?;
        let addr = listener.local_addr()?;
        let (epoch, _) = watch::channel(0);
        let state = Arc::new(State {
            backups: Mutex::new(Backups::default()),
            faults: Faults::default(),
            counters: Arc::new(Counters::default()),
            users: Users::default(),
            config,
            addr,
            epoch,
        });
        let accept = tokio::spawn(accept_loop(state.clone(), listener));
        tracing::info!(%addr, "hivemqsim listening");
        Ok(HiveMqSim {
            state,
            accept: Mutex::new(Some(accept)),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.state.addr)
    }

    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    pub fn counters(&self) -> &Counters {
        &self.state.counters
    }

    /// Accepts basic authentication as `user`. Once any user exists, requests without valid
    /// credentials answer 401.
    pub fn add_user(&self, user: &str, password: &str, access: Access) {
        self.state.users.add(user, password, access);
    }

    /// Adds a COMPLETED backup without the API.
    pub fn seed(&self, seed: Seed) -> Result<Backup, SeedError> {
        self.state.backups().seed(Instant::now(), seed)
    }

    /// Every backup, oldest first, as the list endpoint shows them now.
    pub fn backups(&self) -> Vec<Backup> {
        self.state.backups().list(Instant::now())
    }

    /// One backup as the get endpoint shows it now.
    pub fn backup(&self, id: &str) -> Option<Backup> {
        self.state.backups().get(Instant::now(), id)
    }

    /// The file the download endpoint serves for a backup, once it has one.
    pub fn file(&self, id: &str) -> Option<Bytes> {
        let mut backups = self.state.backups();
        backups.file(Instant::now(), id).ok().map(|(_, file)| file)
    }

    async fn stop_serving(&self) {
        self.state.epoch.send_modify(|e| *e += 1);
        let accept = self.accept.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(accept) = accept {
            // The accept loop returns on the epoch change; joining makes sure the port is free.
            let _ = accept.await;
        }
    }

    /// Stops serving: the port is closed and open connections are dropped.
    pub async fn shutdown(self) {
        self.stop_serving().await;
    }
}

impl Drop for HiveMqSim {
    fn drop(&mut self) {
        self.state.epoch.send_modify(|e| *e += 1);
        if let Some(accept) = self.accept.lock().unwrap_or_else(|p| p.into_inner()).take() {
            accept.abort();
        }
    }
}
