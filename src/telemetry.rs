//! Logging setup. Metrics and the health server join here with the controller.

use tracing_subscriber::EnvFilter;

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid --log-level {filter:?}: {source}; use error, warn, info, debug, trace or a directive like nodesmith=debug"
)]
pub struct LogLevelError {
    filter: String,
    source: tracing_subscriber::filter::ParseError,
}

/// Logs go to stderr so that stdout carries only the command's report.
pub fn init_logging(filter: &str) -> Result<(), LogLevelError> {
    let env_filter =
        EnvFilter::try_new(filter).map_err(|source| LogLevelError { filter: filter.to_string(), source })?;
    tracing_subscriber::fmt().with_env_filter(env_filter).with_writer(std::io::stderr).init();
    Ok(())
}
