//! The command line as a user meets it: the real binary, its output and its exit codes.

use std::process::Command;

use serde_json::Value;

fn nodesmith(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nodesmith"))
        .args(args)
        .output()
        .expect("the nodesmith binary runs")
}

#[test]
fn version_as_json_names_the_served_apis() {
    let output = nodesmith(&["version", "--output", "json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        report["api_versions"],
        serde_json::json!(["karpenter.sh/v1", "karpenter.k8s.aws/v1"])
    );
}

#[test]
fn version_as_a_table_for_people() {
    let output = nodesmith(&["version"]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).expect("utf-8");
    assert!(
        text.starts_with(&format!("version  {}\n", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(
        text.contains("apis     karpenter.sh/v1, karpenter.k8s.aws/v1"),
        "{text}"
    );
}

#[test]
fn a_wrong_flag_is_a_usage_error_that_names_it() {
    let output = nodesmith(&["version", "--outptu", "json"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--outptu"), "{stderr}");
    assert!(
        stderr.contains("--output"),
        "suggests the flag meant: {stderr}"
    );
}

#[test]
fn an_invalid_log_level_is_refused_with_what_to_use() {
    let output = nodesmith(&["--log-level", "nodesmith=loud", "version"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid --log-level"), "{stderr}");
    assert!(output.stdout.is_empty());
}
