//! The gauges of Karpenter's capacity dashboard, computed from the caches at each scrape: per node (allocatable,
//! what its pods and DaemonSet pods request and limit, system overhead, lifetime, price), per pod
//! (`karpenter_pods_state`), per NodePool (usage and limits) and for the cluster. Only the leader reports them, so
//! sums over replicas do not double-count.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::Context;
use super::leader::Leadership;
use super::object_metrics::object_gauges;
use super::pods::is_daemonset_pod;
use crate::apis::nodepool::NodePool;
use crate::apis::pod::Pod;
use crate::apis::scheduling_input::{pod_limits, pod_requests};
use crate::catalog::CapacityType;
use crate::catalog::pricing::PriceTable;
use crate::catalog::resources::{ResourceName, Resources, parse_quantity};
use crate::names::{ARCH_LABEL, CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, ZONE_LABEL};
use crate::telemetry::cluster::{ByResource, ClusterGauges, GaugeSource, NodeGauges, NodePoolGauges};

/// Karpenter's labels of a node gauge and the node label each is read from (empty when the node has none).
const NODE_LABELS: [(&str, &str); 36] = [
    ("nodepool", NODEPOOL_LABEL),
    ("zone", ZONE_LABEL),
    ("region", "topology.kubernetes.io/region"),
    ("instance_type", INSTANCE_TYPE_LABEL),
    ("arch", ARCH_LABEL),
    ("os", "kubernetes.io/os"),
    ("capacity_type", CAPACITY_TYPE_LABEL),
    ("windows_build", "node.kubernetes.io/windows-build"),
    ("capacity_reservation_id", "karpenter.k8s.aws/capacity-reservation-id"),
    ("capacity_reservation_type", "karpenter.k8s.aws/capacity-reservation-type"),
    ("capacity_reservation_interruptible", "karpenter.k8s.aws/capacity-reservation-interruptible"),
    ("instance_hypervisor", "karpenter.k8s.aws/instance-hypervisor"),
    ("instance_encryption_in_transit_supported", "karpenter.k8s.aws/instance-encryption-in-transit-supported"),
    ("instance_category", "karpenter.k8s.aws/instance-category"),
    ("instance_capability_flex", "karpenter.k8s.aws/instance-capability-flex"),
    ("instance_family", "karpenter.k8s.aws/instance-family"),
    ("instance_generation", "karpenter.k8s.aws/instance-generation"),
    ("instance_size", "karpenter.k8s.aws/instance-size"),
    ("instance_local_nvme", "karpenter.k8s.aws/instance-local-nvme"),
    ("instance_cpu", "karpenter.k8s.aws/instance-cpu"),
    ("instance_cpu_manufacturer", "karpenter.k8s.aws/instance-cpu-manufacturer"),
    ("instance_cpu_sustained_clock_speed_mhz", "karpenter.k8s.aws/instance-cpu-sustained-clock-speed-mhz"),
    ("instance_memory", "karpenter.k8s.aws/instance-memory"),
    ("instance_ebs_bandwidth", "karpenter.k8s.aws/instance-ebs-bandwidth"),
    ("instance_network_bandwidth", "karpenter.k8s.aws/instance-network-bandwidth"),
    ("instance_gpu_name", "karpenter.k8s.aws/instance-gpu-name"),
    ("instance_gpu_manufacturer", "karpenter.k8s.aws/instance-gpu-manufacturer"),
    ("instance_gpu_count", "karpenter.k8s.aws/instance-gpu-count"),
    ("instance_gpu_memory", "karpenter.k8s.aws/instance-gpu-memory"),
    ("instance_accelerator_name", "karpenter.k8s.aws/instance-accelerator-name"),
    ("instance_accelerator_manufacturer", "karpenter.k8s.aws/instance-accelerator-manufacturer"),
    ("instance_accelerator_count", "karpenter.k8s.aws/instance-accelerator-count"),
    ("zone_id", "topology.k8s.aws/zone-id"),
    ("instance_tenancy", "karpenter.k8s.aws/instance-tenancy"),
    ("placement_group_id", "karpenter.k8s.aws/placement-group-id"),
    ("placement_group_partition", "karpenter.k8s.aws/placement-group-partition"),
];

/// Where a pod's node is not known (not scheduled, or the node is not in the cache), as Karpenter labels it.
const NOT_APPLICABLE: &str = "N/A";

/// The caches, read at each scrape while this replica leads.
#[derive(Debug)]
struct LiveGauges {
    ctx: Weak<Context>,
    leadership: Leadership,
}

impl GaugeSource for LiveGauges {
    fn gauges(&self) -> Option<ClusterGauges> {
        let ctx = self.ctx.upgrade().filter(|_| self.leadership.is_leader())?;
        let state = &ctx.state;
        let (nodes, pods, pools) = (state.nodes.state(), state.pods.state(), state.nodepools.state());
        let now = Timestamp::now();
        let mut gauges = cluster_gauges(&nodes, &pods, &pools, &ctx.catalog().prices, now);
        for node in gauges.nodes.iter().filter(|n| n.price_per_hour.is_none()) {
            if let Some(pool) = nodepool_of(node) {
                ctx.metrics.cost_tracker_error(pool);
            }
        }
        let (conditions, terminating) = (&mut gauges.conditions, &mut gauges.terminating);
        object_gauges(&state.nodeclaims.state(), now, conditions, terminating);
        object_gauges(&nodes, now, conditions, terminating);
        object_gauges(&pools, now, conditions, terminating);
        object_gauges(&state.nodeclasses.state(), now, conditions, terminating);
        if let Ok(clock) = ctx.pod_clock.lock() {
            let waiting = clock.waiting(now);
            gauges.provisioning_unbound = by_name(waiting.unbound);
            gauges.provisioning_unstarted = by_name(waiting.unstarted);
            gauges.scheduling_undecided = by_name(waiting.undecided);
        }
        Some(gauges)
    }
}

/// (namespace, name, seconds) of each (pod key, seconds).
fn by_name(pods: Vec<(String, f64)>) -> Vec<(String, String, f64)> {
    pods.into_iter()
        .map(|(key, seconds)| {
            let (namespace, name) = key.split_once('/').unwrap_or(("default", key.as_str()));
            (namespace.to_string(), name.to_string(), seconds)
        })
        .collect()
}

/// From now on, the controller's metrics report the cluster's gauges while `leadership` says this replica leads.
pub fn report(ctx: &Arc<Context>, leadership: Leadership) {
    ctx.metrics.gauge_cluster_from(Arc::new(LiveGauges { ctx: Arc::downgrade(ctx), leadership }));
}

/// Every gauge, from the caches as they are now.
pub fn cluster_gauges(
    nodes: &[Arc<Node>],
    pods: &[Arc<Pod>],
    pools: &[Arc<NodePool>],
    prices: &PriceTable,
    now: Timestamp,
) -> ClusterGauges {
    let mut pods_by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in pods {
        if let Some(node) = pod.node_name() {
            pods_by_node.entry(node).or_default().push(pod);
        }
    }
    let node_gauges: Vec<NodeGauges> = nodes
        .iter()
        .map(|node| {
            let on_node = pods_by_node.get(node.name_any().as_str()).map(Vec::as_slice).unwrap_or_default();
            node_gauges(node, on_node, prices, now)
        })
        .collect();
    let by_name: BTreeMap<String, &Node> = nodes.iter().map(|n| (n.name_any(), n.as_ref())).collect();
    let pod_states = pods.iter().map(|pod| pod_state(pod, pod.node_name().and_then(|n| by_name.get(n).copied())));
    let (mut unbound, mut unstarted) = (Vec::new(), Vec::new());
    for pod in pods.iter().filter(|p| is_active(p)) {
        let waiting = (pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running")).then(|| {
            let meta = &pod.metadata;
            let age = meta.creation_timestamp.as_ref().map_or(0.0, |t| now.duration_since(t.0).as_secs_f64().max(0.0));
            (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default(), age)
        });
        match (waiting, pod.node_name()) {
            (Some(waiting), None) => unbound.push(waiting),
            (Some(waiting), Some(_)) => unstarted.push(waiting),
            (None, _) => {}
        }
    }
    ClusterGauges {
        unbound,
        unstarted,
        nodepool_costs: nodepool_costs(&node_gauges),
        utilization: utilization(&node_gauges),
        node_count: nodes.len(),
        pods: pod_states.collect(),
        nodepools: pools.iter().map(|pool| nodepool_gauges(pool)).collect(),
        nodes: node_gauges,
        synced: true,
        ..ClusterGauges::default()
    }
}

/// The NodePool a node's gauges are labelled with, if any.
fn nodepool_of(node: &NodeGauges) -> Option<&str> {
    node.labels.iter().find(|(name, pool)| *name == "nodepool" && !pool.is_empty()).map(|(_, pool)| pool.as_str())
}

/// What each NodePool's nodes cost per hour: the sum of their prices (nodes of no pool, or of no known price, left
/// out). Every pool with a node is reported.
fn nodepool_costs(nodes: &[NodeGauges]) -> Vec<(String, f64)> {
    let mut costs: BTreeMap<&str, f64> = BTreeMap::new();
    for node in nodes {
        let Some(pool) = nodepool_of(node) else {
            continue;
        };
        *costs.entry(pool).or_default() += node.price_per_hour.unwrap_or_default();
    }
    costs.into_iter().map(|(pool, cost)| (pool.to_string(), cost)).collect()
}

/// One node's gauges, whoever manages it (`managed` says whether nodesmith does).
pub fn node_gauges(node: &Node, pods: &[&Pod], prices: &PriceTable, now: Timestamp) -> NodeGauges {
    let node_labels = node.labels();
    let label = |key: &str| node_labels.get(key).cloned().unwrap_or_default();
    let mut labels: Vec<(&'static str, String)> = NODE_LABELS.iter().map(|(name, key)| (*name, label(key))).collect();
    labels.push(("node_name", node.name_any()));
    let phase = node.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    labels.push(("phase", phase));
    labels.push(("managed", node_labels.contains_key(NODEPOOL_LABEL).to_string()));

    let status = node.status.as_ref();
    let allocatable = quantities(status.and_then(|s| s.allocatable.as_ref()));
    let capacity = quantities(status.and_then(|s| s.capacity.as_ref()));
    let (mut pod_requests_sum, mut pod_limits_sum) = (Resources::ZERO, Resources::ZERO);
    let (mut daemon_requests, mut daemon_limits) = (Resources::ZERO, Resources::ZERO);
    for pod in pods.iter().filter(|p| is_active(p)) {
        // A pod whose resources cannot be read is left out of the sums rather than failing the whole report.
        let Some(spec) = pod.spec.as_ref() else { continue };
        let (Ok(requests), Ok(limits)) = (pod_requests(spec), pod_limits(spec)) else { continue };
        if is_daemonset_pod(pod) {
            daemon_requests += requests;
            daemon_limits += limits;
        } else {
            pod_requests_sum += requests;
            pod_limits_sum += limits;
        }
    }
    let mut overhead = Resources::ZERO;
    for name in ResourceName::ALL {
        overhead.set(name, (capacity.get(name) - allocatable.get(name)).max(0));
    }
    let reported = |resources: &Resources, present: &Resources| -> ByResource {
        ResourceName::ALL
            .into_iter()
            .filter(|name| name.is_node_resource() && present.get(*name) > 0)
            .map(|name| (name.as_str(), reported_unit(name, resources.get(name))))
            .collect()
    };
    let lifetime_seconds = node
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0.0, |created| now.duration_since(created.0).as_secs_f64().max(0.0));
    let (instance_type, zone) = (label(INSTANCE_TYPE_LABEL), label(ZONE_LABEL));
    let price_per_hour = match label(CAPACITY_TYPE_LABEL).parse() {
        Ok(CapacityType::Spot) => prices.spot(&instance_type, &zone),
        Ok(_) => prices.on_demand(&instance_type),
        Err(_) => None,
    };
    NodeGauges {
        allocatable: reported(&allocatable, &allocatable),
        pod_requests: reported(&pod_requests_sum, &allocatable),
        pod_limits: reported(&pod_limits_sum, &allocatable),
        daemon_requests: reported(&daemon_requests, &allocatable),
        daemon_limits: reported(&daemon_limits, &allocatable),
        system_overhead: reported(&overhead, &capacity),
        lifetime_seconds,
        price_per_hour,
        labels,
    }
}

/// `karpenter_pods_state`'s labels of one pod, with its node's (when known).
pub fn pod_state(pod: &Pod, node: Option<&Node>) -> Vec<(&'static str, String)> {
    let meta = &pod.metadata;
    let namespace = meta.namespace.clone().unwrap_or_default();
    // Karpenter writes the owner as the self link its API path would have.
    let owner = meta.owner_references.iter().flatten().next().map_or_else(String::new, |o| {
        format!("/apis/{}/namespaces/{namespace}/{}s/{}", o.api_version, o.kind.to_lowercase(), o.name)
    });
    let status = pod.status.as_ref();
    let condition = |kind: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == kind))
            .is_some_and(|c| c.status == "True")
    };
    let node_label = |key: &str| {
        node.map_or_else(|| NOT_APPLICABLE.to_string(), |n| n.labels().get(key).cloned().unwrap_or_default())
    };
    vec![
        ("name", meta.name.clone().unwrap_or_default()),
        ("namespace", namespace.clone()),
        ("owner", owner),
        ("node", pod.node_name().unwrap_or_default().to_string()),
        ("scheduled", condition("PodScheduled").to_string()),
        ("nodepool", node_label(NODEPOOL_LABEL)),
        ("zone", node_label(ZONE_LABEL)),
        ("arch", node_label(ARCH_LABEL)),
        ("capacity_type", node_label(CAPACITY_TYPE_LABEL)),
        ("instance_type", node_label(INSTANCE_TYPE_LABEL)),
        ("phase", status.and_then(|s| s.phase.clone()).unwrap_or_default()),
        ("ready", condition("Ready").to_string()),
        ("managed", node.is_some_and(|n| n.labels().contains_key(NODEPOOL_LABEL)).to_string()),
    ]
}

/// A NodePool's usage (its status, as the NodePool controller keeps it) and limits, in reported units.
fn nodepool_gauges(pool: &NodePool) -> NodePoolGauges {
    let read = |entries: &BTreeMap<String, String>| -> ByResource {
        entries
            .iter()
            .filter_map(|(name, quantity)| {
                let resource = ResourceName::from_kubernetes(name)?;
                let value = parse_quantity(quantity, resource).ok()?;
                Some((resource.as_str(), reported_unit(resource, value)))
            })
            .collect()
    };
    let usage = pool.status.as_ref().map(|s| read(&s.resources)).unwrap_or_default();
    NodePoolGauges { nodepool: pool.name_any(), usage, limits: read(&pool.spec.limits) }
}

/// Requested (pods and DaemonSet pods) over allocatable of every node, in percent, by resource.
fn utilization(nodes: &[NodeGauges]) -> ByResource {
    let mut totals: BTreeMap<&'static str, (f64, f64)> = BTreeMap::new();
    for node in nodes {
        for (resource, value) in &node.allocatable {
            totals.entry(resource).or_default().1 += value;
        }
        for (resource, value) in node.pod_requests.iter().chain(&node.daemon_requests) {
            totals.entry(resource).or_default().0 += value;
        }
    }
    totals
        .into_iter()
        .filter(|(_, (_, allocatable))| *allocatable > 0.0)
        .map(|(resource, (requested, allocatable))| (resource, 100.0 * requested / allocatable))
        .collect()
}

fn quantities(listed: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>) -> Resources {
    let mut resources = Resources::ZERO;
    for (name, quantity) in listed.into_iter().flatten() {
        if let Some(resource) = ResourceName::from_kubernetes(name)
            && let Ok(value) = parse_quantity(&quantity.0, resource)
        {
            resources.set(resource, value);
        }
    }
    resources
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

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).expect("test pod")
    }

    const MANAGED: &str = r#"
metadata:
  name: ip-10-0-0-1
  creationTimestamp: "2026-12-04T10:00:00Z"
  labels:
    karpenter.sh/nodepool: default
    karpenter.sh/capacity-type: on-demand
    node.kubernetes.io/instance-type: m5.large
    topology.kubernetes.io/zone: us-east-1a
    kubernetes.io/arch: amd64
    karpenter.k8s.aws/instance-family: m5
status:
  capacity: {cpu: "2", memory: 7934Mi, pods: "29"}
  allocatable: {cpu: 1930m, memory: 7134Mi, pods: "29"}
"#;

    fn value(resources: &ByResource, name: &str) -> f64 {
        resources.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).unwrap_or_else(|| panic!("{name} in {resources:?}"))
    }

    fn label<'a>(labels: &'a [(&'static str, String)], name: &str) -> &'a str {
        labels.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("label {name}"))
    }

    #[test]
    fn a_node_reports_pods_and_daemonset_pods_apart_its_overhead_lifetime_and_price() {
        let pods = [
            pod(
                "spec: {containers: [{name: a, resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {memory: 2Gi}}}]}\nstatus: {phase: Running}",
            ),
            pod("spec: {containers: [{name: b, resources: {requests: {cpu: '1'}}}]}\nstatus: {phase: Pending}"),
            pod("spec: {containers: [{name: done, resources: {requests: {cpu: '8'}}}]}\nstatus: {phase: Succeeded}"),
            pod(
                "metadata: {ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: proxy, uid: u}]}\nspec: {containers: [{name: proxy, resources: {requests: {cpu: 100m}, limits: {cpu: 200m}}}]}\nstatus: {phase: Running}",
            ),
        ];
        let pods: Vec<&Pod> = pods.iter().collect();
        let now: Timestamp = "2026-12-04T11:00:00Z".parse().expect("time");
        let gauges = node_gauges(&node(MANAGED), &pods, &PriceTable::embedded(), now);
        assert_eq!(label(&gauges.labels, "nodepool"), "default");
        assert_eq!(label(&gauges.labels, "arch"), "amd64");
        assert_eq!(label(&gauges.labels, "instance_family"), "m5");
        assert_eq!(label(&gauges.labels, "instance_gpu_name"), "", "a label the node lacks is empty");
        assert_eq!(label(&gauges.labels, "node_name"), "ip-10-0-0-1");
        assert_eq!(label(&gauges.labels, "managed"), "true");
        assert_eq!(gauges.labels.len(), 39, "Karpenter's node labels");
        assert_eq!(value(&gauges.allocatable, "cpu"), 1.93);
        assert_eq!(value(&gauges.pod_requests, "cpu"), 1.5);
        assert_eq!(value(&gauges.pod_requests, "pods"), 2.0);
        assert_eq!(value(&gauges.pod_limits, "memory"), (2u64 << 30) as f64);
        assert_eq!(value(&gauges.daemon_requests, "cpu"), 0.1);
        assert_eq!(value(&gauges.daemon_limits, "cpu"), 0.2);
        assert!((value(&gauges.system_overhead, "cpu") - 0.07).abs() < 1e-9);
        assert_eq!(value(&gauges.system_overhead, "memory"), (800u64 << 20) as f64);
        assert_eq!(gauges.lifetime_seconds, 3600.0);
        assert_eq!(gauges.price_per_hour, PriceTable::embedded().on_demand("m5.large"));
    }

    #[test]
    fn a_spot_node_is_priced_at_spot_and_an_unmanaged_node_is_reported_as_such() {
        let spot = MANAGED.replace("capacity-type: on-demand", "capacity-type: spot");
        let prices = PriceTable::embedded();
        let now = Timestamp::now();
        let gauges = node_gauges(&node(&spot), &[], &prices, now);
        assert_eq!(gauges.price_per_hour, prices.spot("m5.large", "us-east-1a"));
        let unmanaged = MANAGED
            .replace("karpenter.sh/nodepool: default", "eks.amazonaws.com/nodegroup: system")
            .replace("karpenter.sh/capacity-type: on-demand", "eks.amazonaws.com/capacityType: ON_DEMAND");
        let gauges = node_gauges(&node(&unmanaged), &[], &prices, now);
        assert_eq!(label(&gauges.labels, "managed"), "false");
        assert_eq!(label(&gauges.labels, "nodepool"), "");
        assert_eq!(gauges.price_per_hour, None, "no capacity type label: not priced");
    }

    #[test]
    fn a_pod_state_names_its_owner_and_its_nodes_pool_or_not_applicable() {
        let web = pod(r#"
metadata:
  name: web-1
  namespace: shop
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8, uid: u}]
spec: {nodeName: ip-10-0-0-1, containers: [{name: app}]}
status:
  phase: Running
  conditions: [{type: PodScheduled, status: "True"}, {type: Ready, status: "True"}]
"#);
        let labels = pod_state(&web, Some(&node(MANAGED)));
        assert_eq!(label(&labels, "owner"), "/apis/apps/v1/namespaces/shop/replicasets/web-5d8");
        assert_eq!(label(&labels, "nodepool"), "default");
        assert_eq!(label(&labels, "instance_type"), "m5.large");
        assert_eq!(label(&labels, "scheduled"), "true");
        assert_eq!(label(&labels, "ready"), "true");
        assert_eq!(label(&labels, "managed"), "true");
        assert_eq!(labels.len(), 13, "Karpenter's pod labels");
        let pending =
            pod("metadata: {name: p, namespace: shop}\nspec: {containers: [{name: app}]}\nstatus: {phase: Pending}");
        let labels = pod_state(&pending, None);
        assert_eq!(label(&labels, "nodepool"), NOT_APPLICABLE);
        assert_eq!(label(&labels, "phase"), "Pending");
        assert_eq!(label(&labels, "scheduled"), "false");
    }

    #[test]
    fn pools_report_usage_and_limits_and_the_cluster_its_utilization() {
        let pool: NodePool = serde_yaml_ng::from_str(
            r#"
metadata: {name: default}
spec:
  template: {spec: {nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}, requirements: []}}
  limits: {cpu: "100", memory: 400Gi}
status: {resources: {cpu: "2", memory: 7934Mi, nodes: "1"}}
"#,
        )
        .expect("pool");
        let web = pod(
            "spec: {nodeName: ip-10-0-0-1, containers: [{name: a, resources: {requests: {cpu: 965m}}}]}\nstatus: {phase: Running}",
        );
        let gauges = cluster_gauges(
            &[Arc::new(node(MANAGED))],
            &[Arc::new(web)],
            &[Arc::new(pool)],
            &PriceTable::embedded(),
            Timestamp::now(),
        );
        let pool = &gauges.nodepools[0];
        assert_eq!(value(&pool.limits, "cpu"), 100.0);
        assert_eq!(value(&pool.limits, "memory"), (400u64 << 30) as f64);
        assert_eq!(value(&pool.usage, "cpu"), 2.0);
        assert!((value(&gauges.utilization, "cpu") - 50.0).abs() < 1e-9);
        assert_eq!((gauges.node_count, gauges.pods.len()), (1, 1));
    }
}
