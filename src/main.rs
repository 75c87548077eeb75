#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use nodesmith::cli::{self, Cli};

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
