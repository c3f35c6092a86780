//! The `payhook` binary: parses the command line, starts logging, dispatches (see [`cli`]).

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::logging::init(&cli.log_filter());
    cli::run(cli).await
}
