//! `kubesim --kubeconfig FILE [--port N]`: serves until killed.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// A Kubernetes API server, kubelet, provisioner and snapshot controller for tests.
#[derive(Parser)]
#[command(name = "kubesim", version)]
struct Args {
    /// Where to write a kubeconfig whose context `kubesim` points at this server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Port on 127.0.0.1 (default: a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Directory for volumes, snapshots and container files (default: a temporary one).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The static busybox binary exec runs.
    #[arg(long, default_value = "/usr/bin/busybox")]
    busybox: PathBuf,
    /// Connects port-forwards to a pod's container port to a TCP address:
    /// `NAMESPACE/POD:PORT=HOST:PORT`, where POD may be `sts/NAME` (every pod of that
    /// StatefulSet). Repeatable.
    #[arg(long = "route", value_name = "NAMESPACE/POD:PORT=HOST:PORT")]
    routes: Vec<kubesim::PortRoute>,
    /// Limits exec stdin and exec output each to this many bytes per second (`50Mi`, `1G`,
    /// `65536`), as a link of that bandwidth would.
    #[arg(long, value_name = "BYTES_PER_SEC", value_parser = snapfs_control::units::parse_size)]
    exec_bandwidth: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SNAPFS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    // Before the address is printed: whoever reads it may stop the server at once.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let config = kubesim::Config {
        port: args.port,
        data_dir: args.data_dir,
        busybox: args.busybox,
        ..Default::default()
    };
    let sim = kubesim::KubeSim::start(config)
        .await
        .context("starting the server")?;
    sim.faults().set_exec_bandwidth(args.exec_bandwidth);
    for route in &args.routes {
        sim.add_route(route);
    }
    sim.write_kubeconfig(&args.kubeconfig)
        .with_context(|| format!("writing {}", args.kubeconfig.display()))?;
    println!("{}", sim.url());
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    sim.shutdown().await;
    Ok(())
}
