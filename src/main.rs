#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use nodesmith::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = nodesmith::telemetry::init_logging(&cli.global.log_level) {
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
