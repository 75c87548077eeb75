//! The command line against the sandbox's AWS (moto). Needs `make sandbox-up` (run by `make test`).

mod support;

use anyhow::{Context, Result};

/// Runs nodesmith with the sandbox environment (AWS_ENDPOINT_URL and credentials pointing at moto).
fn nodesmith_in_sandbox(args: &[&str]) -> Result<std::process::Output> {
    Ok(support::nodesmith()?.args(args).output()?)
}

#[test]
#[ignore = "needs the sandbox: make sandbox-up"]
fn max_pods_live_reads_describe_instance_types() -> Result<()> {
    let output = nodesmith_in_sandbox(&[
        "max-pods",
        "--live",
        "--output",
        "tsv",
        "--instance-type",
        "m5.large",
        "--instance-type",
        "c6gn.16xlarge",
    ])?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).context("utf-8")?;
    assert_eq!(text, "m5.large\t29\nc6gn.16xlarge\t737\n");
    Ok(())
}
