//! Per-node gauges for the capacity dashboard: allocatable, what the pods on the node request, and what the node
//! costs per hour, labelled by node pool, instance type, zone and capacity type. Only the leader reports them, so
//! sums over replicas do not double-count.

use std::sync::Arc;
use std::time::Duration;

use crate::apis::pod::Pod;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use super::Context;
use super::leader::Leadership;
use crate::apis::scheduling_input::pod_requests;
use crate::catalog::CapacityType;
use crate::catalog::pricing::PriceTable;
use crate::catalog::resources::{ResourceName, Resources, parse_quantity};
use crate::names::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, ZONE_LABEL};
use crate::telemetry::{NodeLabels, NodeSample};

const INTERVAL: Duration = Duration::from_secs(15);

/// The resources the dashboard shows, and the unit each is reported in (cores, bytes, pods).
const REPORTED: [ResourceName; 3] = [ResourceName::Cpu, ResourceName::Memory, ResourceName::Pods];

pub async fn run(ctx: Arc<Context>, leadership: Leadership) {
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tick.tick().await;
        let samples = if leadership.is_leader() {
            let pods_by_node = ctx.state.pods_by_node();
            let catalog = ctx.catalog();
            ctx.state
                .nodes
                .state()
                .iter()
                .filter_map(|node| {
                    node_sample(
                        node,
                        pods_by_node.get(&node.name_any()).map(Vec::as_slice).unwrap_or_default(),
                        &catalog.prices,
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        ctx.metrics.set_nodes(&samples);
    }
}

/// The gauges of one node this controller manages (it carries a node pool label); `None` for any other node.
pub fn node_sample(node: &Node, pods: &[Arc<Pod>], prices: &PriceTable) -> Option<NodeSample> {
    let labels = node.labels();
    let label = |key: &str| labels.get(key).cloned().unwrap_or_default();
    let nodepool = labels.get(NODEPOOL_LABEL)?.clone();
    let node_labels = NodeLabels {
        node_name: node.name_any(),
        nodepool,
        instance_type: label(INSTANCE_TYPE_LABEL),
        zone: label(ZONE_LABEL),
        capacity_type: label(CAPACITY_TYPE_LABEL),
    };
    let mut allocatable = Resources::ZERO;
    if let Some(quantities) = node.status.as_ref().and_then(|s| s.allocatable.as_ref()) {
        for name in REPORTED {
            if let Some(value) = quantities.get(name.as_str()).and_then(|q| parse_quantity(&q.0, name).ok()) {
                allocatable.set(name, value);
            }
        }
    }
    let mut requested = Resources::ZERO;
    for pod in pods.iter().filter(|p| is_active(p)) {
        // A pod whose requests cannot be read is left out of the sum rather than failing the whole report.
        if let Some(spec) = pod.spec.as_ref()
            && let Ok(requests) = pod_requests(spec)
        {
            requested += requests;
        }
    }
    let price_per_hour = match node_labels.capacity_type.parse() {
        Ok(CapacityType::Spot) => prices.spot(&node_labels.instance_type, &node_labels.zone),
        _ => prices.on_demand(&node_labels.instance_type),
    };
    let resources = REPORTED
        .into_iter()
        .map(|name| {
            (name.as_str(), reported_unit(name, allocatable.get(name)), reported_unit(name, requested.get(name)))
        })
        .collect();
    Some(NodeSample { labels: node_labels, resources, price_per_hour })
}

/// Pods that hold their requests on the node: not finished.
fn is_active(pod: &Pod) -> bool {
    !matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// CPU in cores (the catalog counts millicores); everything else as counted.
fn reported_unit(name: ResourceName, value: i64) -> f64 {
    match name {
        ResourceName::Cpu => value as f64 / 1000.0,
        _ => value as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(yaml: &str) -> Node {
        serde_yaml_ng::from_str(yaml).expect("test node")
    }

    fn pod(yaml: &str) -> Arc<Pod> {
        Arc::new(serde_yaml_ng::from_str(yaml).expect("test pod"))
    }

    const MANAGED: &str = r#"
metadata:
  name: ip-10-0-0-1
  labels:
    karpenter.sh/nodepool: default
    karpenter.sh/capacity-type: on-demand
    node.kubernetes.io/instance-type: m5.large
    topology.kubernetes.io/zone: us-east-1a
status:
  allocatable: {cpu: 1930m, memory: 7134Mi, pods: "29"}
"#;

    #[test]
    fn a_managed_node_reports_allocatable_requests_of_running_pods_and_its_price() {
        let pods = [
            pod(
                "spec: {containers: [{name: a, resources: {requests: {cpu: 500m, memory: 1Gi}}}]}\nstatus: {phase: Running}",
            ),
            pod("spec: {containers: [{name: b, resources: {requests: {cpu: '1'}}}]}\nstatus: {phase: Pending}"),
            pod("spec: {containers: [{name: done, resources: {requests: {cpu: '8'}}}]}\nstatus: {phase: Succeeded}"),
        ];
        let sample = node_sample(&node(MANAGED), &pods, &PriceTable::embedded()).expect("a managed node");
        assert_eq!(sample.labels.nodepool, "default");
        assert_eq!(sample.labels.instance_type, "m5.large");
        let cpu = sample.resources.iter().find(|(name, _, _)| *name == "cpu").expect("cpu");
        assert_eq!((cpu.1, cpu.2), (1.93, 1.5));
        let memory = sample.resources.iter().find(|(name, _, _)| *name == "memory").expect("memory");
        assert_eq!((memory.1, memory.2), ((7134u64 << 20) as f64, (1u64 << 30) as f64));
        let pods_row = sample.resources.iter().find(|(name, _, _)| *name == "pods").expect("pods");
        assert_eq!((pods_row.1, pods_row.2), (29.0, 2.0));
        assert_eq!(sample.price_per_hour, PriceTable::embedded().on_demand("m5.large"));
        assert!(sample.price_per_hour.is_some_and(|p| p > 0.0));
    }

    #[test]
    fn a_spot_node_is_priced_at_spot_and_an_unmanaged_node_is_left_out() {
        let spot = MANAGED.replace("capacity-type: on-demand", "capacity-type: spot");
        let prices = PriceTable::embedded();
        let sample = node_sample(&node(&spot), &[], &prices).expect("a managed node");
        assert_eq!(sample.price_per_hour, prices.spot("m5.large", "us-east-1a"));
        assert!(sample.price_per_hour < prices.on_demand("m5.large"));
        let unmanaged = MANAGED.replace("karpenter.sh/nodepool: default", "eks.amazonaws.com/nodegroup: system");
        assert!(node_sample(&node(&unmanaged), &[], &prices).is_none());
    }
}
