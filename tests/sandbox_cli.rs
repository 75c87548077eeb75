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

/// `plan --live` asks the region's AWS: its zones, the Pricing API's list prices and the spot price history, each
/// node's price exactly what AWS answers for its type and zone, and the two regions' plans priced apart.
#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn plan_live_prices_each_region_from_the_pricing_api_and_the_spot_price_history() -> Result<()> {
    let sandbox = support::Sandbox::connect().await?;
    let mut totals = Vec::new();
    for region in ["us-east-1", "eu-west-1"] {
        let args =
            ["plan", "--live", "--pods", "tests/data/plan/workloads.yaml", "--region", region, "--output", "json"];
        let output = nodesmith_in_sandbox(&args)?;
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let plan: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        assert_eq!(plan["region"], region);
        assert_eq!(plan["on_demand_prices"], "pricing-api", "{plan}");
        assert_eq!(plan["spot_prices"], "spot-price-history", "{plan}");
        assert!(plan["catalog"].as_str().is_some_and(|c| c.starts_with("live")), "{plan}");
        let nodes = plan["nodes"].as_array().context("nodes")?;
        let capacity_types: Vec<&str> = nodes.iter().filter_map(|n| n["capacity_type"].as_str()).collect();
        assert!(capacity_types.contains(&"spot") && capacity_types.contains(&"on-demand"), "{capacity_types:?}");
        for node in nodes {
            let (instance_type, zone) =
                (node["instance_type"].as_str().context("type")?, node["zone"].as_str().context("zone")?);
            assert!(zone.starts_with(region) && zone.len() == region.len() + 1, "a zone of {region}: {zone}");
            let price = node["price_per_hour"].as_f64().context("price")?;
            let (expected, source) = if node["capacity_type"] == "spot" {
                (support::prices::spot_price_in_history(&sandbox.sdk, zone, instance_type).await?, "spot-price-history")
            } else {
                (support::prices::list_price(&sandbox.sdk, region, instance_type).await?, "pricing-api")
            };
            assert!(
                (price - expected).abs() < 1e-9,
                "{instance_type} in {zone}: planned at {price}, AWS says {expected}"
            );
            assert_eq!(node["price_source"], source, "{node}");
        }
        totals.push(plan["total_price_per_hour"].as_f64().context("total")?);
    }
    assert!((totals[0] - totals[1]).abs() > 1e-6, "us-east-1 and eu-west-1 cost the same: {totals:?}");
    Ok(())
}

/// Linked as `kubectl-nodesmith` on the PATH, the binary is a kubectl plugin: `kubectl nodesmith ...` runs it
/// against the kubeconfig kubectl uses.
#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn linked_as_kubectl_nodesmith_it_runs_as_a_kubectl_plugin() -> Result<()> {
    let sandbox = support::Sandbox::connect().await?;
    support::controller::install_crds(&sandbox).await?;
    let env = support::sandbox_env()?;
    let bin = std::path::PathBuf::from(env.get("NODESMITH_SANDBOX_BIN").context("NODESMITH_SANDBOX_BIN is not set")?);
    let plugins = std::env::temp_dir().join(support::unique_name("kubectl-plugins"));
    std::fs::create_dir_all(&plugins)?;
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nodesmith"), plugins.join("kubectl-nodesmith"))?;
    let path = format!("{}:{}", plugins.display(), std::env::var("PATH").unwrap_or_default());
    let run = |args: &[&str]| {
        std::process::Command::new(bin.join("kubectl")).envs(&env).env("PATH", &path).args(args).output()
    };
    let listed = run(&["plugin", "list", "--name-only"])?;
    let explained = run(&["nodesmith", "explain", "node", "no-such-node"])?;
    let status = run(&["nodesmith", "status", "--output", "json"])?;
    std::fs::remove_dir_all(&plugins)?;
    assert!(String::from_utf8_lossy(&listed.stdout).contains("kubectl-nodesmith"), "{listed:?}");
    // Through kubectl, to the sandbox's API server: the answer comes from the cluster.
    let stderr = String::from_utf8_lossy(&explained.stderr);
    assert!(stderr.contains("no node \"no-such-node\" in this cluster (neither a Node nor a NodeClaim)"), "{stderr}");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let report: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    assert!(report["nodepools"].is_array(), "{report}");
    Ok(())
}
