//! A minimal logger for the daemon and the commands: one line per message on stderr
//! (or on the file the daemon redirected stderr to). Level from `EZFS_LOG`
//! (error, warn, info, debug; default info). Key material is never logged anywhere.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger;

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) || !r.target().starts_with("ezfs") {
            return;
        }
        let level = match r.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug | Level::Trace => "debug",
        };
        // one write per line, so lines from several threads never interleave
        let line = format!("ezfs[{}]: {level}: {}\n", std::process::id(), r.args());
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }
    fn flush(&self) {}
}

pub fn init() {
    let level = match std::env::var("EZFS_LOG").as_deref() {
        Ok("error") => LevelFilter::Error,
        Ok("warn") => LevelFilter::Warn,
        Ok("debug") => LevelFilter::Debug,
        _ => LevelFilter::Info,
    };
    if log::set_logger(&Logger).is_ok() {
        log::set_max_level(level);
    }
}
