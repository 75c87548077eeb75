//! A `/metrics` page with every metric the controller exports given a sample, for checks of what dashboards and
//! alerts read.

use anyhow::Result;

/// The `/metrics` text of a registry where every metric has been given a sample (a labelled family shows only
/// once it has one), the cluster gauges computed from a real node and pod by the controller's own code.
pub fn sampled() -> Result<String> {
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
