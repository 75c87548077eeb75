//! The IAM check: what moto recorded of the requests made with assumed-role credentials
//! (tests/sandbox/iam_recorder.py), evaluated by tests/sandbox/iam/evaluate.mjs against the role's policies.

use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::sandbox_env;

#[derive(Debug, Deserialize)]
pub struct IamReport {
    /// Requests evaluated.
    pub requests: usize,
    /// Authorizations they needed (a launch needs a dozen: the template, the subnet, the image, ...).
    pub authorizations: usize,
    /// Distinct "action resource-type" pairs evaluated.
    pub pairs: Vec<String>,
    pub denies: Vec<serde_json::Value>,
    /// Operations the recorder does not know how AWS authorizes.
    pub unmapped: Vec<String>,
    pub errors: Vec<String>,
}

pub enum Only<'a> {
    /// Requests of role sessions of this name.
    Session(&'a str),
    /// Requests signed with this access key.
    Credential(&'a str),
}

pub fn evaluate(only: Only<'_>) -> Result<IamReport> {
    let env = sandbox_env()?;
    let get = |key: &str| env.get(key).cloned().with_context(|| format!("{key} is not set by the sandbox's env"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sandbox/iam/evaluate.mjs");
    let (flag, value) = match only {
        Only::Session(name) => ("--session", name),
        Only::Credential(key) => ("--credential", key),
    };
    // A list of logs, as PATH is (make test runs two sandboxes and checks what both recorded).
    let logs = get("NODESMITH_IAM_LOG")?;
    let mut command = Command::new("node");
    command.arg(script);
    for log in std::env::split_paths(&logs) {
        command.arg("--log").arg(log);
    }
    let output = command
        .args(["--simulator", &get("NODESMITH_IAM_SIMULATOR")?, flag, value])
        .output()
        .context("running node (Node.js runs the IAM evaluation)")?;
    if !output.status.success() {
        bail!("evaluate.mjs failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    serde_json::from_slice(&output.stdout).context("reading evaluate.mjs's report")
}

impl IamReport {
    /// One line per deny: the action, the resource, the operation that needed it and why.
    pub fn denies_explained(&self) -> String {
        self.denies
            .iter()
            .map(|d| {
                format!(
                    "{} on {} (in {}, x{}): {}",
                    d["action"], d["resource"], d["operation"], d["count"], d["reasons"]
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The role session setup and teardown run as in the tests that prove the operator policy.
pub const OPERATOR_SESSION: &str = "nodesmith-operator";
/// Not `nodesmith-*`: teardown must never take it for one of its own.
const OPERATOR_ROLE: &str = "sandbox-operator";

/// Credentials of a role holding exactly `nodesmith operator-policy`, as environment variables and as an SDK
/// configuration, so that moto records what setup and teardown ask for (tests/sandbox_iam.rs evaluates it).
pub async fn operator(sandbox: &super::Sandbox) -> Result<(Vec<(String, String)>, aws_config::SdkConfig)> {
    use super::controller::{SANDBOX_ACCOUNT, assume_role};
    let iam = aws_sdk_iam::Client::new(&sandbox.sdk);
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{SANDBOX_ACCOUNT}:root")}, "Action": "sts:AssumeRole"}]});
    if iam.get_role().role_name(OPERATOR_ROLE).send().await.is_err() {
        let created =
            iam.create_role().role_name(OPERATOR_ROLE).assume_role_policy_document(trust.to_string()).send().await;
        if let Err(error) = created
            && !error.as_service_error().is_some_and(|e| e.is_entity_already_exists_exception())
        {
            return Err(error.into());
        }
    }
    iam.put_role_policy()
        .role_name(OPERATOR_ROLE)
        .policy_name("nodesmith-operator-policy")
        .policy_document(nodesmith::bootstrap::operator_policy::operator_policy("aws").to_string())
        .send()
        .await?;
    let env = sandbox_env()?;
    let arn = format!("arn:aws:iam::{SANDBOX_ACCOUNT}:role/{OPERATOR_ROLE}");
    let credentials = assume_role(&env, &arn, OPERATOR_SESSION)?;
    let sdk = sandbox
        .sdk
        .to_builder()
        .credentials_provider(aws_sdk_iam::config::SharedCredentialsProvider::new(
            aws_sdk_iam::config::Credentials::new(
                &credentials.access_key_id,
                &credentials.secret_access_key,
                Some(credentials.session_token.clone()),
                None,
                "operator",
            ),
        ))
        .build();
    let vars = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), credentials.access_key_id),
        ("AWS_SECRET_ACCESS_KEY".to_string(), credentials.secret_access_key),
        ("AWS_SESSION_TOKEN".to_string(), credentials.session_token),
    ];
    Ok((vars, sdk))
}
