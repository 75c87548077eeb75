//! Logging, the metrics registry (Karpenter's metric names, so existing dashboards keep working) and the metrics
//! and health servers.

pub mod api_requests;
pub mod cluster;
mod metrics;
pub mod objects;
pub mod summary;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

pub use metrics::{Metrics, ObservedLaunch, OfferingPlace, ReconcileResult, UnavailableSource};

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid --log-level {filter:?}: {source}; use error, warn, info, debug, trace or a directive like nodesmith=debug"
)]
pub struct LogLevelError {
    filter: String,
    source: tracing_subscriber::filter::ParseError,
}

/// Logs go to stderr so that stdout carries only the command's report; `json` for the controller.
pub fn init_logging(filter: &str) -> Result<(), LogLevelError> {
    let env_filter =
        EnvFilter::try_new(filter).map_err(|source| LogLevelError { filter: filter.to_string(), source })?;
    tracing_subscriber::fmt().with_env_filter(env_filter).with_writer(std::io::stderr).init();
    Ok(())
}

pub fn init_json_logging(filter: &str) -> Result<(), LogLevelError> {
    let env_filter =
        EnvFilter::try_new(filter).map_err(|source| LogLevelError { filter: filter.to_string(), source })?;
    tracing_subscriber::fmt().json().with_env_filter(env_filter).with_writer(std::io::stderr).init();
    Ok(())
}

/// Serves `/metrics` on one port and `/healthz`, `/readyz` on another (ready once the caches synced).
pub async fn serve(
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    metrics_port: u16,
    health_port: u16,
) -> std::io::Result<()> {
    use axum::routing::get;
    let metrics_app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode())
            }
        }),
    );
    let health_app = axum::Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/readyz",
        get(move || {
            let ready = ready.clone();
            async move {
                if ready.load(Ordering::Relaxed) {
                    (axum::http::StatusCode::OK, "ok")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                }
            }
        }),
    );
    let metrics_listener = tokio::net::TcpListener::bind(("0.0.0.0", metrics_port)).await?;
    let health_listener = tokio::net::TcpListener::bind(("0.0.0.0", health_port)).await?;
    tokio::try_join!(axum::serve(metrics_listener, metrics_app), axum::serve(health_listener, health_app))?;
    Ok(())
}
