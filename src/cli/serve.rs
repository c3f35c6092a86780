//! `payhook serve`: loads the configuration (flags over environment over defaults), reports
//! what looked wrong in it, and runs the application until it is stopped.

use std::process::ExitCode;

use payhook::config::{loader, Layered, ProcessEnv};
use payhook::Application;

use super::flags::{GlobalFlags, ServeFlags};

pub async fn run(flags: &ServeFlags, global: &GlobalFlags) -> anyhow::Result<ExitCode> {
    let loaded = loader::load(&Layered(Layered(flags, global), ProcessEnv))?;
    for warning in &loaded.warnings {
        log::warn!("{warning}");
    }
    Application::build(loaded.config)
        .await?
        .run_until_stopped()
        .await?;
    Ok(ExitCode::SUCCESS)
}
