//! Logging: tracing to stderr at the level `-v` / `-q` asks for, and, once a
//! run directory is known, everything at info level and above to
//! RUN/supervisor.log as well (appended, so a resume adds to it). A
//! pipeline's stages run side by side, each a thread: each stage's thread
//! writes to its stage's supervisor.log, every other thread to the
//! pipeline's.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

static RUN_LOG: Mutex<Option<File>> = Mutex::new(None);

thread_local! {
    /// The log of the stage this thread supervises, if it supervises one.
    static STAGE_LOG: RefCell<Option<File>> = const { RefCell::new(None) };
}

/// Writes to RUN/supervisor.log once attached; before that, nowhere.
#[derive(Clone, Copy)]
struct RunLog;

impl Write for RunLog {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let stage = STAGE_LOG.with(|log| log.borrow_mut().as_mut().map(|f| f.write(bytes)));
        if let Some(written) = stage {
            return written;
        }
        let mut guard = RUN_LOG
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match guard.as_mut() {
            Some(file) => file.write(bytes),
            None => Ok(bytes.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        STAGE_LOG.with(|log| log.borrow_mut().as_mut().map_or(Ok(()), File::flush))?;
        let mut guard = RUN_LOG
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.as_mut().map_or(Ok(()), File::flush)
    }
}

impl<'a> MakeWriter<'a> for RunLog {
    type Writer = RunLog;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Installs the subscriber: stderr at `stderr_level`, the run log at info.
pub fn init(stderr_level: LevelFilter) {
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_target(false)
        .with_filter(stderr_level);
    let file = tracing_subscriber::fmt::layer()
        .with_writer(RunLog)
        .with_ansi(false)
        .with_target(false)
        .with_filter(run_log_level());
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
}

/// The run log's level: info, or NIGHTSHIFT_RUN_LOG=debug (benchmarks use it
/// to see when each record was counted).
fn run_log_level() -> LevelFilter {
    match std::env::var("NIGHTSHIFT_RUN_LOG").as_deref() {
        Ok("debug") => LevelFilter::DEBUG,
        Ok("trace") => LevelFilter::TRACE,
        _ => LevelFilter::INFO,
    }
}

/// From now on, log lines also go to `path`.
pub fn attach_run_log(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    *RUN_LOG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(file);
    Ok(())
}

/// From now on, log lines of this thread go to `path` instead (a pipeline's
/// stage).
pub fn attach_thread_log(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    STAGE_LOG.with(|log| *log.borrow_mut() = Some(file));
    Ok(())
}
