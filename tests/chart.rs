//! The chart's files that need no cluster: the version matches the binary's, and the dashboards query only
//! metrics the controller exports.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::dashboards;

use anyhow::{Result, bail, ensure};

const CHART_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/nodesmith");

#[test]
fn the_chart_version_and_app_version_are_the_binarys() -> Result<()> {
    let chart: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(format!("{CHART_DIR}/Chart.yaml"))?)?;
    ensure!(chart["version"] == env!("CARGO_PKG_VERSION"), "Chart.yaml version {} ≠ Cargo.toml", chart["version"]);
    ensure!(chart["appVersion"] == env!("CARGO_PKG_VERSION"), "Chart.yaml appVersion {}", chart["appVersion"]);
    Ok(())
}

#[test]
fn every_dashboard_query_reads_metrics_and_labels_the_controller_exports() -> Result<()> {
    let scraped = dashboards::scraped_series(&support::metrics::sampled()?);
    for dir in [dashboards::CHART_DASHBOARDS, dashboards::KARPENTER_DASHBOARDS] {
        let reads = dashboards::reads_of_dashboards(dir)?;
        ensure!(reads.len() > 20, "{dir}: only {} metrics read", reads.len());
        let missing = dashboards::missing(&reads, &scraped)?;
        ensure!(missing.is_empty(), "{dir}:\n{}", missing.join("\n"));
    }
    Ok(())
}

#[test]
fn every_karpenter_metric_is_exported_with_its_type_and_labels_or_listed_as_not() -> Result<()> {
    let text = support::metrics::sampled()?;
    let types: BTreeMap<&str, &str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_once(' ')).collect();
    let scraped = dashboards::scraped_series(&text);
    let not_exported = dashboards::documented_as_not_exported()?;
    let documented = std::fs::read_to_string(format!("{}/karpenter-metrics.tsv", dashboards::KARPENTER_DASHBOARDS))?;
    let mut wrong = Vec::new();
    let mut exported = 0;
    for row in documented.lines().filter(|l| !l.starts_with('#')) {
        let [name, kind, labels] = row.split('\t').collect::<Vec<_>>()[..] else { bail!("a row of 3 cells: {row:?}") };
        if not_exported.contains_key(name) {
            continue;
        }
        // The family name: what `# TYPE` says (counters without `_total`).
        let family = if kind == "counter" { name.strip_suffix("_total").unwrap_or(name) } else { name };
        let Some(&exported_kind) = types.get(family) else {
            wrong.push(format!("{name}: not exported, and not in the chart README's list"));
            continue;
        };
        if exported_kind != kind {
            wrong.push(format!("{name}: a {exported_kind}, Karpenter's is a {kind}"));
        }
        let expected: BTreeSet<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
        let series = match kind {
            "histogram" => format!("{name}_count"),
            _ => name.to_string(),
        };
        let ours: BTreeSet<&str> = scraped
            .get(&series)
            .map(|l| l.iter().map(String::as_str).filter(|l| *l != "quantile").collect())
            .unwrap_or_default();
        if ours != expected {
            wrong.push(format!("{name}: labels {ours:?}, Karpenter's {expected:?}"));
        }
        exported += 1;
    }
    for listed in not_exported.keys() {
        ensure!(
            documented.lines().any(|l| l.split('\t').next() == Some(listed.as_str()))
                || !listed.starts_with("karpenter_"),
            "the chart README lists {listed}, which Karpenter does not document"
        );
    }
    ensure!(wrong.is_empty(), "{}", wrong.join("\n"));
    ensure!(exported >= 40, "only {exported} of Karpenter's metrics exported");
    Ok(())
}
