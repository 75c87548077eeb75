//! IAM is eventually consistent: a role or OIDC provider created a moment ago can be refused for some seconds as a
//! principal (CreateRole's trust policy naming a new OIDC provider, CreateAccessEntry, CreatePodIdentityAssociation
//! naming a new role). Such refusals are retried with backoff instead of failing setup.

use std::future::Future;
use std::time::Duration;

use aws_sdk_iam::error::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// About a minute in all: AWS documents propagation "usually within seconds".
const DELAYS_MS: [u64; 8] = [500, 1_000, 2_000, 4_000, 8_000, 15_000, 15_000, 15_000];

/// Whether an error says a principal that setup just made does not exist (yet).
pub fn is_propagation_delay(code: Option<&str>, message: Option<&str>) -> bool {
    let message = message.unwrap_or_default().to_ascii_lowercase();
    let about_a_principal = ["principal", "role", "instance profile", "provider"].iter().any(|w| message.contains(w));
    let not_there_yet = ["does not exist", "not found", "invalid principal", "cannot be assumed", "not authorized"]
        .iter()
        .any(|w| message.contains(w));
    matches!(
        code,
        Some("MalformedPolicyDocument" | "InvalidParameterException" | "InvalidParameterValue" | "NoSuchEntity")
    ) && about_a_principal
        && not_there_yet
}

/// Runs `call` until it succeeds, fails for another reason, or the delays run out.
pub async fn retry_while_propagating<T, E, R, F, Fut>(mut call: F) -> Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, R>>>,
{
    let mut delays = DELAYS_MS.iter();
    loop {
        match call().await {
            Err(error) if is_propagation_delay(error.code(), error.message()) => match delays.next() {
                Some(&delay) => {
                    tracing::info!("waiting for IAM to propagate: {}", error.message().unwrap_or_default());
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                None => return Err(error),
            },
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_not_yet_there_is_a_delay_and_other_errors_are_not() {
        assert!(is_propagation_delay(
            Some("MalformedPolicyDocument"),
            Some("Invalid principal in policy: \"AWS\":\"arn:aws:iam::123456789012:role/nodesmith-node-demo\"")
        ));
        assert!(is_propagation_delay(
            Some("InvalidParameterException"),
            Some("The specified principal arn:aws:iam::123456789012:role/x does not exist")
        ));
        assert!(!is_propagation_delay(Some("AccessDenied"), Some("User is not authorized to perform iam:CreateRole")));
        assert!(!is_propagation_delay(Some("MalformedPolicyDocument"), Some("Syntax error at position 3")));
        assert!(!is_propagation_delay(None, None));
    }
}
