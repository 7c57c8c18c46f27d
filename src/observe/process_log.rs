//! The process log (stderr, `log.level` / `RUST_LOG`): env_logger behind a
//! filter that gives Pingora's messages about normal events their true
//! level, so that ERROR means an operator must act (README, "Process log").
//!
//! Pingora logs some routine events at ERROR: the successor of a handoff
//! polling for the sockets every second ("No incoming socket transfer"),
//! and a pooled upstream connection that the upstream closed just as a
//! request picked it ("failed to acquire reusable stream"; Pingora then
//! opens a new one, nothing fails). Those are demoted to DEBUG here. Every
//! other record passes unchanged; the proxy's own failure lines are shaped
//! in `proxy` (`request_summary`, `suppress_error_log`).

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Pingora messages that report normal operation: (target prefix, message
/// prefix, the level they are logged at here).
const DEMOTED: &[(&str, &str, Level)] = &[
    (
        "pingora_core::server::transfer_fd",
        "No incoming socket transfer",
        Level::Debug,
    ),
    (
        "pingora_core::connectors",
        "failed to acquire reusable stream",
        Level::Debug,
    ),
];

/// The level a record is written at.
fn level_of(record: &Record) -> Level {
    let level = record.level();
    if level > Level::Warn || !record.target().starts_with("pingora") {
        return level;
    }
    let matches = |prefix: &str| match record.args().as_str() {
        Some(text) => text.starts_with(prefix),
        // Formatted messages: rare (Pingora's warnings and errors only).
        None => record.args().to_string().starts_with(prefix),
    };
    DEMOTED
        .iter()
        .find(|(target, prefix, _)| record.target().starts_with(target) && matches(prefix))
        .map_or(level, |(_, _, demoted)| *demoted)
}

struct ProcessLog {
    inner: env_logger::Logger,
}

impl Log for ProcessLog {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        let level = level_of(record);
        if level == record.level() {
            self.inner.log(record);
            return;
        }
        let metadata = Metadata::builder()
            .level(level)
            .target(record.target())
            .build();
        if !self.inner.enabled(&metadata) {
            return;
        }
        self.inner.log(
            &Record::builder()
                .metadata(metadata)
                .args(*record.args())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Installs the process log: `RUST_LOG` if set, else `default_level`.
pub fn init(default_level: &str) {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
            .build();
    let max: LevelFilter = inner.filter();
    if log::set_boxed_logger(Box::new(ProcessLog { inner })).is_ok() {
        log::set_max_level(max);
    }
}

/// An error and its causes, for a log line: libraries often keep the cause
/// out of their own text ("error performing TLS handshake"), and the cause
/// is what tells an operator what to fix ("invalid peer certificate:
/// UnknownIssuer").
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(target: &str, level: Level, message: std::fmt::Arguments) -> Level {
        level_of(
            &Record::builder()
                .target(target)
                .level(level)
                .args(message)
                .build(),
        )
    }

    #[test]
    fn routine_pingora_errors_are_demoted() {
        assert_eq!(
            level(
                "pingora_core::connectors",
                Level::Error,
                format_args!("failed to acquire reusable stream")
            ),
            Level::Debug
        );
        let interval = std::time::Duration::from_secs(1);
        assert_eq!(
            level(
                "pingora_core::server::transfer_fd",
                Level::Error,
                format_args!("No incoming socket transfer, sleep {interval:?} and try again")
            ),
            Level::Debug
        );
    }

    #[test]
    fn real_failures_keep_their_level() {
        let e = "Connection refused";
        assert_eq!(
            level(
                "pingora_proxy",
                Level::Error,
                format_args!("Fail to proxy: {e}")
            ),
            Level::Error
        );
        assert_eq!(
            level(
                "pingora_core::server::transfer_fd",
                Level::Error,
                format_args!("Error sending socket to: x")
            ),
            Level::Error
        );
        // The same words from the gateway itself are not Pingora's.
        assert_eq!(
            level(
                "robeing_gateway::proxy",
                Level::Error,
                format_args!("failed to acquire reusable stream")
            ),
            Level::Error
        );
    }

    #[test]
    fn causes_are_appended_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("error performing TLS handshake")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other(
            "invalid peer certificate: UnknownIssuer",
        ));
        assert_eq!(
            with_causes(&e),
            "error performing TLS handshake: invalid peer certificate: UnknownIssuer"
        );
    }
}
