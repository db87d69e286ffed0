//! `hivemqsim --port N [--user U --password-env VAR] [--seed BYTES]...`: serves until killed.

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// The backup endpoints of HiveMQ's REST API, for tests.
#[derive(Parser)]
#[command(name = "hivemqsim", version)]
struct Args {
    /// Port on 127.0.0.1 (default: a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Require HTTP basic authentication as this user (full access).
    #[arg(long, requires = "password_env")]
    user: Option<String>,
    /// The environment variable holding the user's password (never on the command line).
    #[arg(long, requires = "user")]
    password_env: Option<String>,
    /// Start with a completed backup whose file is this many bytes (repeatable; its id is
    /// printed on a line of its own after the URL).
    #[arg(long)]
    seed: Vec<u64>,
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
    let password = match &args.password_env {
        Some(var) => {
            Some(std::env::var(var).with_context(|| format!("reading the password from ${var}"))?)
        }
        None => None,
    };
    let config = hivemqsim::Config {
        port: args.port,
        ..Default::default()
    };
    let sim = hivemqsim::HiveMqSim::start(config)
        .await
        .context("starting the server")?;
    if let (Some(user), Some(password)) = (&args.user, &password) {
        sim.add_user(user, password, hivemqsim::Access::Full);
    }
    println!("{}", sim.url());
    for size in &args.seed {
        let backup = sim
            .seed(hivemqsim::Seed::with_size(*size))
            .with_context(|| format!("seeding a backup of {size} bytes"))?;
        println!("{}", backup.id);
    }
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    sim.shutdown().await;
    Ok(())
}
