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
    let output = Command::new("node")
        .arg(script)
        .args(["--log", &get("NODESMITH_IAM_LOG")?, "--simulator", &get("NODESMITH_IAM_SIMULATOR")?, flag, value])
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
