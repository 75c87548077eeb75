//! AWS errors turned into sentences that say which call failed on what, and why.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("{action} was denied ({code}): grant {action} to the caller's IAM role{on}")]
    AccessDenied { action: &'static str, code: String, on: String },
    #[error("{action} failed: {message}")]
    Call { action: &'static str, message: String },
}

impl CloudError {
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
        Self::Call { action, message }
    }
}
