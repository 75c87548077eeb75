//! AWS SDK configuration shared by every AWS client nodesmith builds.
//!
//! The endpoint comes from `AWS_ENDPOINT_URL` when set (the SDK reads it itself), which is how the sandbox points
//! every client at moto.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, retry::RetryConfig, timeout::TimeoutConfig};

/// Loads the SDK configuration: credentials and region from the usual chain, `region` overriding the latter.
pub async fn sdk_config(region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        // Standard retries: exponential backoff with jitter on throttling and transient errors. (Adaptive mode's
        // client-side rate limiter over-reacts to scattered throttles: launches measured 40 s slower behind a
        // proxy throttling one request in five.)
        .retry_config(RetryConfig::standard().with_max_attempts(5))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        );
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_string()));
    }
    loader.load().await
}
