//! A minimal stderr logger for `--log-level`: one line per record, with the
//! time since start so `debug` output doubles as a rough profile.

use std::time::Instant;

struct StderrLogger {
    start: Instant,
}

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let t = self.start.elapsed();
            eprintln!("[{:>4}.{:03}ms {:5}] {}", t.as_millis(), t.subsec_micros() % 1000, r.level(), r.args());
        }
    }

    fn flush(&self) {}
}

/// Installs the logger at `level`.
pub fn init(level: log::LevelFilter) {
    let logger = Box::leak(Box::new(StderrLogger { start: Instant::now() }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}
