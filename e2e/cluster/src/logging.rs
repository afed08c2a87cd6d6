//! The supervisor's own log lines: to stderr (if anyone still reads it) and to
//! `<dir>/logs/supervisor.log`, with the time since start.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();
static FILE: Mutex<Option<File>> = Mutex::new(None);

/// Marks the start of the supervisor (the origin of logged times).
pub fn init() {
    START.get_or_init(Instant::now);
}

/// Also appends every later line to `path`.
pub fn log_to(path: &Path) -> std::io::Result<()> {
    let file = File::options().create(true).append(true).open(path)?;
    *FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
    Ok(())
}

/// Writes one log line. Write errors are ignored: the reader of stderr (a test
/// binary) may be gone while the supervisor tears the cluster down.
pub fn log(msg: impl std::fmt::Display) {
    let elapsed = START.get_or_init(Instant::now).elapsed();
    let line = format!("[e2e-cluster {:>7.2}s] {msg}\n", elapsed.as_secs_f64());
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(file) = FILE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        let _ = file.write_all(line.as_bytes());
    }
}
