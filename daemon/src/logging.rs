//! Where the daemon's log goes and how it looks. The filter is `--log-level`, else
//! `SNAPFS_LOG`, else `RUST_LOG`, else `info`. Lines go to standard error, or to a file that is
//! rotated by size; JSON lines on request; and when standard error is systemd's journal, plain
//! lines with the journal's priority prefix and no timestamp, which the journal adds itself.

mod json;
mod rotate;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{self, FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

pub use rotate::RotatingFile;

/// How the log is asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// A filter such as `debug` or `info,snapfs_fs=debug`; None: from the environment.
    pub level: Option<String>,
    /// None: standard error.
    pub file: Option<PathBuf>,
    /// A log file is rotated when it would grow past this.
    pub max_size: u64,
    pub json: bool,
}

/// Old log files kept beside the current one: FILE.1 (the newest) to FILE.3.
pub const KEEP: usize = 3;

/// Sets up the log for the whole process.
pub fn init(opts: &LogOptions) -> anyhow::Result<()> {
    let filter = match &opts.level {
        Some(level) => EnvFilter::try_new(level)
            .with_context(|| format!("--log-level {level:?} is not a log filter"))?,
        None => ["SNAPFS_LOG", "RUST_LOG"]
            .iter()
            .filter(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
            .find_map(|var| EnvFilter::try_from_env(var).ok())
            .unwrap_or_else(|| EnvFilter::new("info")),
    };
    let (writer, terminal, journal) = match &opts.file {
        Some(path) => {
            let file = RotatingFile::open(path.clone(), opts.max_size, KEEP)
                .with_context(|| format!("opening the log file {}", path.display()))?;
            (BoxMakeWriter::new(Arc::new(file)), false, false)
        }
        None => {
            let stderr = std::io::stderr();
            let terminal = std::io::IsTerminal::is_terminal(&stderr);
            (
                BoxMakeWriter::new(std::io::stderr),
                terminal,
                stderr_is_journal(),
            )
        }
    };
    let colour = terminal && std::env::var_os("NO_COLOR").is_none();
    let layer = fmt::layer().with_writer(writer).with_ansi(colour);
    let registry = tracing_subscriber::registry().with(filter);
    let done = if opts.json {
        registry
            .with(layer.event_format(json::JsonLines))
            .try_init()
    } else if journal {
        let plain = fmt::format().without_time().with_ansi(false);
        registry
            .with(layer.event_format(Prioritised(plain)))
            .try_init()
    } else {
        registry.with(layer).try_init()
    };
    done.context("setting up the log")
}

/// Whether standard error is the journal stream systemd connected (`JOURNAL_STREAM` names its
/// device and inode), rather than something a child of the unit redirected it to.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(fd) = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()))
}

/// Lines that start with the syslog priority of their level (`<3>` for an error), which the
/// journal reads as the entry's priority.
struct Prioritised<F>(F);

impl<S, N, F> FormatEvent<S, N> for Prioritised<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}
