//! The chart's files that need no cluster: the version matches the binary's, and the dashboards query only
//! metrics the controller exports.

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};

const CHART_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/nodesmith");

#[test]
fn the_chart_version_and_app_version_are_the_binarys() -> Result<()> {
    let chart: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(format!("{CHART_DIR}/Chart.yaml"))?)?;
    ensure!(chart["version"] == env!("CARGO_PKG_VERSION"), "Chart.yaml version {} ≠ Cargo.toml", chart["version"]);
    ensure!(chart["appVersion"] == env!("CARGO_PKG_VERSION"), "Chart.yaml appVersion {}", chart["appVersion"]);
    Ok(())
}

/// The series names `/metrics` can show: each family's name plus the suffixes its type adds. A labelled family
/// is only listed once it has a sample, so every one gets one first.
fn exported_series() -> BTreeSet<String> {
    use nodesmith::telemetry::{Metrics, NodeLabels, NodeSample};
    let metrics = Metrics::default();
    metrics.nodeclaim_created("default");
    metrics.nodeclaim_terminated("default");
    metrics.cloudprovider_error("provisioner", "Create", "InsufficientInstanceCapacity");
    metrics.cloudprovider_call("provisioner", "Create", 0.2);
    metrics.interruption_received("spot_interrupted");
    let labels = NodeLabels {
        node_name: "n".into(),
        nodepool: "default".into(),
        instance_type: "m5.large".into(),
        zone: "us-east-1a".into(),
        capacity_type: "spot".into(),
    };
    metrics.set_nodes(&[NodeSample { labels, resources: vec![("cpu", 2.0, 1.0)], price_per_hour: Some(0.03) }]);
    let text = metrics.encode();
    let mut series = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else { continue };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        series.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
    }
    series
}

/// Metric names in a PromQL expression: identifiers that start like ours.
fn metric_names(expr: &str) -> impl Iterator<Item = &str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("karpenter_") || word.starts_with("nodesmith_"))
}

#[test]
fn every_dashboard_panel_queries_metrics_the_controller_exports() -> Result<()> {
    let exported = exported_series();
    ensure!(exported.contains("karpenter_nodes_allocatable"), "{exported:?}");
    let mut queried = 0;
    for entry in std::fs::read_dir(format!("{CHART_DIR}/dashboards"))? {
        let path = entry?.path();
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        ensure!(dashboard["uid"].is_string() && dashboard["title"].is_string(), "{}: uid and title", path.display());
        let panels = dashboard["panels"].as_array().context("no panels")?;
        for panel in panels {
            let targets = panel["targets"].as_array().context("a panel without targets")?;
            ensure!(!targets.is_empty(), "{}: panel {} queries nothing", path.display(), panel["title"]);
            for target in targets {
                let expr = target["expr"].as_str().context("a target without expr")?;
                for name in metric_names(expr) {
                    ensure!(exported.contains(name), "{}: {name} is not a metric nodesmith exports", path.display());
                    queried += 1;
                }
            }
        }
    }
    ensure!(queried > 20, "the dashboards query only {queried} metrics");
    Ok(())
}
