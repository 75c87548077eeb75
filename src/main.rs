#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use nodesmith::cli::{self, Cli};

/// jemalloc returns freed pages to the system on its own and fragments less than glibc's malloc under the watch
/// caches' churn: resident memory stays close to the live heap (benches/controller-bench.sh memory).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The controller logs JSON for log pipelines; commands log plain text for people.
    let logging = if matches!(cli.command, cli::Command::Controller(_)) {
        nodesmith::telemetry::init_json_logging(&cli.global.log_level)
    } else {
        nodesmith::telemetry::init_logging(&cli.global.log_level)
    };
    if let Err(error) = logging {
        eprintln!("error: {error}");
        return ExitCode::from(2);
    }
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
