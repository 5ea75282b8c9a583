//! A minimal logger for `--log-level`: one line per record, with the time
//! since start so `debug` output doubles as a rough profile. Lines go to
//! stderr, or to a file once [`to_file`] names one (`criu -o LOG`: under
//! `criu swrk` stderr is the restored container's).

use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

struct Logger {
    start: Instant,
    /// None: stderr.
    file: Mutex<Option<std::fs::File>>,
    /// Whether stderr may be written at all.
    stderr: Mutex<bool>,
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let t = self.start.elapsed();
        let line = format!("[{:>4}.{:03}ms {:5}] {}\n", t.as_millis(), t.subsec_micros() % 1000, r.level(), r.args());
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        match file.as_mut() {
            Some(f) => {
                let _ = f.write_all(line.as_bytes());
            }
            None if *self.stderr.lock().unwrap_or_else(|e| e.into_inner()) => eprint!("{line}"),
            None => {}
        }
    }

    fn flush(&self) {}
}

static LOGGER: std::sync::OnceLock<Logger> = std::sync::OnceLock::new();

fn logger() -> &'static Logger {
    LOGGER.get_or_init(|| Logger { start: Instant::now(), file: Mutex::new(None), stderr: Mutex::new(true) })
}

/// Installs the logger at `level`.
pub fn init(level: log::LevelFilter) {
    if log::set_logger(logger()).is_ok() {
        log::set_max_level(level);
    }
}

/// Sends further lines to `path` (appended) at `level`; without a path,
/// drops them instead of writing to stderr when `quiet`. Returns whether
/// lines now go to a file.
pub fn to_file(path: Option<&std::path::Path>, level: log::LevelFilter, quiet: bool) -> bool {
    let l = logger();
    *l.stderr.lock().unwrap_or_else(|e| e.into_inner()) = !quiet;
    log::set_max_level(level);
    if let Some(p) = path {
        match std::fs::OpenOptions::new().create(true).append(true).open(p) {
            Ok(f) => {
                *l.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
                return true;
            }
            Err(e) => log::warn!("cannot open log file {}: {e}", p.display()),
        }
    }
    false
}
