//! Logging: env_logger, with the client errors actix-http reports at ERROR lowered to WARN.
//!
//! actix-http logs `stream error: request parse error: message head is too large` (the 431
//! for oversized headers), malformed requests and slow clients at ERROR. Any client can
//! trigger those lines, so at ERROR they page whoever alerts on server errors for something
//! that is not one. The wrapper re-levels exactly those records; everything else passes
//! through unchanged, and env_logger's filter then applies to the new level.

use log::{Level, Log, Metadata, Record};

/// Installs the logger with `filter` (env_logger syntax). Call once, before anything logs.
pub fn init(filter: &str) {
    let inner = env_logger::Builder::new()
        .parse_filters(filter)
        .format_timestamp_millis()
        .build();
    let max_level = inner.filter();
    // Fails only if a logger is already installed, and then that one keeps logging.
    if log::set_boxed_logger(Box::new(ClientErrorsAsWarnings { inner })).is_ok() {
        log::set_max_level(max_level);
    }
}

struct ClientErrorsAsWarnings {
    inner: env_logger::Logger,
}

impl Log for ClientErrorsAsWarnings {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // An ERROR record that is lowered is only shown if WARN is: the inner filter decides
        // again in `log`, on the lowered record.
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if record.level() == Level::Error && record.target().starts_with("actix_http") {
            let message = record.args().to_string();
            let level = level_of_actix_error(&message);
            self.inner.log(
                &Record::builder()
                    .args(format_args!("{message}"))
                    .level(level)
                    .target(record.target())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            );
        } else {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// What actix-http reports at ERROR and a client alone causes: an unparsable or oversized
/// request head, a client too slow to send its request or to close, a client that went away
/// mid-request, or pipelined data past the buffer limit.
const CLIENT_ERRORS: &[&str] = &[
    "stream error: request parse error",
    "stream error: request did not complete within the specified timeout",
    "stream error: connection shutdown timeout",
    "stream error: I/O error",
    "stream error: handler dropped payload before reading EOF",
    "MAX_BUFFER_SIZE unprocessed data reached",
];

fn level_of_actix_error(message: &str) -> Level {
    if CLIENT_ERRORS.iter().any(|p| message.starts_with(p)) {
        Level::Warn
    } else {
        Level::Error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_warnings_server_errors_stay_errors() {
        for message in [
            "stream error: request parse error: message head is too large",
            "stream error: request parse error: invalid Header provided",
            "stream error: request did not complete within the specified timeout",
            "stream error: I/O error: Connection reset by peer (os error 104)",
        ] {
            assert_eq!(level_of_actix_error(message), Level::Warn, "{message}");
        }
        for message in [
            "stream error: internal error",
            "Internal server error: unexpected eof",
            "Initialization of HTTP service error: ()",
        ] {
            assert_eq!(level_of_actix_error(message), Level::Error, "{message}");
        }
    }
}
