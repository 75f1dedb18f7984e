//! `control-plane`: see `control-plane --help` and docs/operations.md.

use clap::Parser;
use control_plane::cli::{run, Cli};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    control_plane::telemetry::init(cli.config.log_format.as_deref());
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "control-plane failed");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
