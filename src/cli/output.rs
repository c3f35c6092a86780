//! What the CLI prints besides its commands' own lines: errors, and counts as tab-separated
//! rows a shell can read.

use payhook::store::DatabaseUrl;

/// `payhook: <error chain>` on one line: the chain says what to do, a backtrace would not.
/// Anything that quotes the database's password (a driver message) has it replaced.
pub fn report_error(error: &anyhow::Error, database_url: Option<&DatabaseUrl>) {
    let message = format!("{error:#}");
    let message = match database_url {
        Some(url) => url.scrub(&message),
        None => message,
    };
    eprintln!("payhook: {message}");
}

/// `<table>\t<status>\t<count>` per row.
pub fn print_counts<S: std::fmt::Display>(table: &str, rows: &[(S, i64)]) {
    for (status, n) in rows {
        println!("{table}\t{status}\t{n}");
    }
}
