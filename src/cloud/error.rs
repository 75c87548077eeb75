//! AWS errors turned into sentences that say which call failed on what, and why; the AWS error code is kept so
//! callers match on it, not on the sentence.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

#[derive(Debug, thiserror::Error)]
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

    /// Classifies an SDK error of the call `action` (an IAM action name such as `ec2:DescribeInstanceTypes`).
    pub fn from_sdk<E, R>(action: &'static str, resource: Option<&str>, error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let code = error.code().unwrap_or_default().to_string();
        if matches!(code.as_str(), "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation") {
            let on = resource.map(|r| format!(" on {r}")).unwrap_or_default();
            return Self::AccessDenied { action, code, on };
        }
        let message = match error.message() {
            Some(message) => format!("{code}: {message}"),
            None => aws_smithy_types::error::display::DisplayErrorContext(&error).to_string(),
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

    /// The thing asked about does not exist (`InvalidInstanceID.NotFound`, `NoSuchEntity`, ...).
    pub fn is_not_found(&self) -> bool {
        let code = self.code();
        code.ends_with("NotFound") || code == "NoSuchEntity"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
