//! AWS errors turned into sentences that say which call failed on what, and why; the AWS error code is kept so
//! callers match on it, not on the sentence.

use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

/// An answer AWS would not give (an HTML page from a proxy, a service the endpoint does not serve): its status and
/// the start of its body, never a dump of the SDK's internals.
fn unexpected_answer(code: &str, on: &str, response: &HttpResponse) -> String {
    let status = response.status().as_u16();
    let body = response.body().bytes().map(String::from_utf8_lossy).unwrap_or_default();
    let start: String = body.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(80).collect();
    let code = if code.is_empty() { String::new() } else { format!(" {code}") };
    format!(
        "the answer{on} was HTTP {status}{code} with a body that is not an AWS error ({start:?}): the endpoint \
         does not serve this API as AWS does; check AWS_ENDPOINT_URL if set, the region, and that the service is \
         offered there"
    )
}

/// Clone: one batched call's failure is every waiting lookup's.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CloudError {
    #[error("{action} was denied ({code}): grant {action} to the caller's IAM role{on}")]
    AccessDenied { action: &'static str, code: String, on: String },
    /// `code` is AWS's error code (`InvalidInstanceID.NotFound`), empty when the failure is not AWS's answer.
    #[error("{action} failed: {message}")]
    Call { action: &'static str, code: String, message: String },
}

impl CloudError {
    /// A failure of `action` that carries no AWS error code.
    pub fn call(action: &'static str, message: impl Into<String>) -> Self {
        Self::Call { action, code: String::new(), message: message.into() }
    }

    /// Classifies an SDK error of the call `action` (an IAM action name such as `ec2:DescribeInstanceTypes`) into
    /// one sentence: the call, AWS's code and message, and, where AWS gave none, what went wrong and what to check.
    pub fn from_sdk<E>(action: &'static str, resource: Option<&str>, error: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let code = error.code().unwrap_or_default().to_string();
        let on = resource.map(|r| format!(" on {r}")).unwrap_or_default();
        if matches!(code.as_str(), "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation") {
            return Self::AccessDenied { action, code, on };
        }
        let message = match (error.message(), &error) {
            (Some(message), _) => format!("{code}{on}: {message}"),
            (None, SdkError::TimeoutError(_)) => {
                format!("no answer from AWS in time{on}: retry, and check the network path to the AWS endpoint")
            }
            (None, SdkError::DispatchFailure(failure)) => format!(
                "AWS could not be reached{on} ({}): check the network, AWS_ENDPOINT_URL if set, and the region",
                if failure.is_io() {
                    "a connection error"
                } else if failure.is_timeout() {
                    "a timeout"
                } else {
                    "no connection"
                }
            ),
            (None, _) => match error.raw_response() {
                Some(response) => unexpected_answer(&code, &on, response),
                None => format!("{code}{on}: {}", aws_smithy_types::error::display::DisplayErrorContext(&error)),
            },
        };
        Self::Call { action, code, message }
    }

    /// The call that failed, as an IAM action name.
    pub fn action(&self) -> &'static str {
        match self {
            Self::AccessDenied { action, .. } | Self::Call { action, .. } => action,
        }
    }

    /// AWS's error code; empty when there is none.
    pub fn code(&self) -> &str {
        match self {
            Self::AccessDenied { code, .. } | Self::Call { code, .. } => code,
        }
    }

    /// A failure that says nothing about what was asked: AWS did not answer, throttled the call, or failed on its
    /// own side (after the SDK's own retries). Asking again later is the answer; anything else is AWS's answer about
    /// the request itself.
    pub fn is_transient(&self) -> bool {
        const TRANSIENT_CODES: &[&str] = &[
            "Throttling",
            "ThrottlingException",
            "RequestLimitExceeded",
            "RequestThrottled",
            "TooManyRequestsException",
            "ServiceUnavailable",
            "ServiceUnavailableException",
            "InternalError",
            "InternalFailure",
            "InternalServerError",
            "ServiceFailure",
        ];
        match self {
            Self::AccessDenied { .. } => false,
            // No code: no AWS answer at all (a timeout, a dropped connection).
            Self::Call { code, .. } => code.is_empty() || TRANSIENT_CODES.contains(&code.as_str()),
        }
    }

    /// The thing asked about does not exist (`InvalidInstanceID.NotFound`, `NoSuchEntity`, ...).
    pub fn is_not_found(&self) -> bool {
        let code = self.code();
        code.ends_with("NotFound") || code == "NoSuchEntity"
    }
}

#[cfg(test)]
mod tests {
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    /// An SDK error as the EKS client makes it of an HTML page where JSON was expected.
    fn html_answer() -> SdkError<aws_sdk_eks::operation::describe_access_entry::DescribeAccessEntryError, HttpResponse>
    {
        let response = HttpResponse::new(
            StatusCode::try_from(404).expect("a status"),
            SdkBody::from("<!doctype html>\n<html><title>404 Not Found</title></html>"),
        );
        SdkError::service_error(
            aws_sdk_eks::operation::describe_access_entry::DescribeAccessEntryError::unhandled(
                "Error at offset 0: unexpected token '<'",
            ),
            response,
        )
    }

    #[test]
    fn an_answer_that_is_not_an_aws_error_is_one_sentence_not_a_dump() {
        let error = CloudError::from_sdk("eks:DescribeAccessEntry", Some("cluster demo"), html_answer());
        let sentence = error.to_string();
        assert!(
            sentence.starts_with("eks:DescribeAccessEntry failed: the answer on cluster demo was HTTP 404"),
            "{sentence}"
        );
        assert!(sentence.contains("<!doctype html> <html><title>404 Not Found"), "{sentence}");
        assert!(sentence.contains("check AWS_ENDPOINT_URL"), "{sentence}");
        for dump in ["SdkBody", "Once(", "unhandled error", "\n"] {
            assert!(!sentence.contains(dump), "{dump} in {sentence}");
        }
    }

    #[test]
    fn not_found_is_read_from_the_code_not_the_sentence() {
        let gone = CloudError::Call {
            action: "ec2:DescribeInstances",
            code: "InvalidInstanceID.NotFound".into(),
            message: "The instance ID 'i-1' does not exist".into(),
        };
        assert!(gone.is_not_found());
        assert_eq!(gone.code(), "InvalidInstanceID.NotFound");
        let other = CloudError::call("ec2:DescribeInstances", "InvalidInstanceID.NotFound mentioned in prose");
        assert!(!other.is_not_found());
        assert_eq!(other.action(), "ec2:DescribeInstances");
    }

    #[test]
    fn only_throttling_outages_and_silence_are_transient() {
        let with_code = |code: &str| CloudError::Call {
            action: "iam:ListInstanceProfilesForRole",
            code: code.into(),
            message: format!("{code}: ..."),
        };
        for code in ["Throttling", "RequestLimitExceeded", "ServiceUnavailable", "InternalFailure"] {
            assert!(with_code(code).is_transient(), "{code}");
        }
        assert!(CloudError::call("iam:ListInstanceProfilesForRole", "no answer from AWS in time").is_transient());
        for code in ["NoSuchEntity", "ValidationError", "InvalidParameterValue"] {
            assert!(!with_code(code).is_transient(), "{code}");
        }
        let denied = CloudError::AccessDenied {
            action: "iam:ListInstanceProfilesForRole",
            code: "AccessDenied".into(),
            on: String::new(),
        };
        assert!(!denied.is_transient());
    }
}
