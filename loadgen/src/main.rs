//! `control-plane-loadgen`: see `control-plane-loadgen --help` and docs/benchmarks.md.

use clap::Parser;
use loadgen::Cli;

/// The same allocator as the server, so the load generator's own CPU share in the reports
/// stays comparable with the figures measured when it was part of the server's binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match loadgen::run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
