//! `nodesmith operator-policy`: the IAM policy to grant whoever runs `setup` and `teardown`.

use clap::Args;
use serde::Serialize;

use super::Report;

#[derive(Debug, Args)]
pub struct OperatorPolicyArgs {
    /// The AWS partition the ARNs are in.
    #[arg(long, default_value = "aws", value_parser = ["aws", "aws-cn", "aws-us-gov"])]
    pub partition: String,
}

/// The policy document itself, in every output format: it is meant to be pasted into IAM or Terraform.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct OperatorPolicyReport(serde_json::Value);

pub fn run(args: &OperatorPolicyArgs) -> OperatorPolicyReport {
    OperatorPolicyReport(crate::bootstrap::operator_policy::operator_policy(&args.partition))
}

impl Report for OperatorPolicyReport {
    fn human(&self) -> String {
        serde_json::to_string_pretty(&self.0).unwrap_or_default() + "\n"
    }
}
