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

/// The `/metrics` text of a registry where every metric has been given a sample (a labelled family shows only
/// once it has one), the cluster gauges computed from a real node and pod by the controller's own code.
fn sampled_metrics() -> Result<String> {
    use nodesmith::catalog::Catalog;
    use nodesmith::catalog::pricing::PriceTable;
    use nodesmith::controller::cluster_metrics::cluster_gauges;
    use nodesmith::telemetry::{Metrics, ReconcileResult};
    let metrics = Metrics::default();
    metrics.nodeclaim_created("provisioning", "default", false);
    metrics.nodeclaim_terminated("default", "spot", "us-east-1a", 30.0);
    metrics.node_created("default", "us-east-1a");
    metrics.node_drained("default");
    metrics.node_terminated("default", "us-east-1a", 20.0, 3600.0);
    metrics.eviction_requested(429);
    metrics.cloudprovider_error("provisioner", "Create", "InsufficientInstanceCapacity");
    metrics.cloudprovider_call("provisioner", "Create", 0.2);
    metrics.pod_started(40.0);
    metrics.reconciled("nodeclaim.lifecycle", ReconcileResult::Success, 0.01);
    metrics.reconciled("nodeclaim.lifecycle", ReconcileResult::Error, 0.01);
    metrics.scheduling_duration("provisioner", 0.01);
    metrics.unschedulable_pods("provisioner", 0);
    metrics.leading("nodesmith-leader-election", true);
    metrics.interruption_received("spot_interrupted");
    metrics.interruption_refused("foreign_origin");
    metrics.interruption_deleted();
    metrics.interruption_queue_duration(1.0);
    metrics.disruption_decision(&["default"], "delete", "underutilized", "single");
    metrics.disruption_eligible("underutilized", 1);
    metrics.nodeclaim_disrupted("underutilized", "default", "spot");
    metrics.set_allowed_disruptions(&[("default".into(), "underutilized", 1)]);
    metrics.consolidation_timeout("multi");
    let prices = PriceTable::embedded();
    let instance_types = nodesmith::catalog::embedded_instance_types().to_vec();
    metrics.price_offerings_of(std::sync::Arc::new(Catalog { instance_types, prices: prices.clone() }));
    let node: k8s_openapi::api::core::v1::Node = serde_yaml_ng::from_str(NODE)?;
    let pods: Vec<std::sync::Arc<nodesmith::apis::pod::Pod>> =
        POD.split("---").map(|pod| Ok(std::sync::Arc::new(serde_yaml_ng::from_str(pod)?))).collect::<Result<_>>()?;
    let pool: nodesmith::apis::nodepool::NodePool = serde_yaml_ng::from_str(POOL)?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let gauges = cluster_gauges(&[node.into()], &pods, &[pool.into()], &prices, now);
    metrics.gauge_cluster_from(std::sync::Arc::new(nodesmith::telemetry::cluster::FixedGauges(gauges)));
    Ok(metrics.encode())
}

const NODE: &str = r#"
metadata:
  name: ip-10-0-0-1
  labels: {karpenter.sh/nodepool: default, karpenter.sh/capacity-type: spot, node.kubernetes.io/instance-type: m5.large,
           topology.kubernetes.io/zone: us-east-1a, kubernetes.io/arch: amd64}
status:
  capacity: {cpu: "2", memory: 7934Mi, pods: "29"}
  allocatable: {cpu: 1930m, memory: 7134Mi, pods: "29"}
"#;

const POD: &str = r#"
metadata: {name: web-1, namespace: shop}
spec: {nodeName: ip-10-0-0-1, containers: [{name: app, resources: {requests: {cpu: 500m}, limits: {memory: 1Gi}}}]}
status: {phase: Running}
---
metadata: {name: web-2, namespace: shop}
spec: {containers: [{name: app}]}
status: {phase: Pending}
---
metadata: {name: web-3, namespace: shop}
spec: {nodeName: ip-10-0-0-1, containers: [{name: app}]}
status: {phase: Pending}
"#;

const POOL: &str = r#"
metadata: {name: default}
spec:
  template: {spec: {nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}, requirements: []}}
  limits: {cpu: "100"}
status: {resources: {cpu: "2"}}
"#;

#[test]
fn every_dashboard_query_reads_metrics_and_labels_the_controller_exports() -> Result<()> {
    let scraped = dashboards::scraped_series(&sampled_metrics()?);
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
    let text = sampled_metrics()?;
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
