//! `control-plane`: see `control-plane --help` and docs/operations.md.

use clap::Parser;
use control_plane::cli::{run, Cli};

/// mimalloc instead of glibc's allocator: a quarter of the server's CPU under ingest load went
/// to malloc/free (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
