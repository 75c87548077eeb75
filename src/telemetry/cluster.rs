//! The cluster's gauges under Karpenter's names and labels (nodes, pods, NodePools, cluster state), so its
//! capacity dashboard works unchanged. They are computed from the controller's caches at each scrape and dropped
//! once encoded: held between scrapes, ten thousand pods' and a thousand nodes' labels would cost the controller
//! more memory than its caches.

use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use super::objects::{ConditionGauge, ObjectKind, TerminatingGauge};

/// (resource_type, value), with cpu in cores and memory in bytes as Karpenter reports them.
pub type ByResource = Vec<(&'static str, f64)>;

/// One node's gauges.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeGauges {
    /// Karpenter's labels of a node gauge (nodepool, zone, instance_type, arch, …, node_name, phase, managed).
    pub labels: Vec<(&'static str, String)>,
    pub allocatable: ByResource,
    /// Requests and limits of the pods on the node, DaemonSet pods apart.
    pub pod_requests: ByResource,
    pub pod_limits: ByResource,
    pub daemon_requests: ByResource,
    pub daemon_limits: ByResource,
    /// Capacity less allocatable: what the kubelet, the system and eviction thresholds hold back.
    pub system_overhead: ByResource,
    pub lifetime_seconds: f64,
    /// What the node costs per hour (its offering's spot or on-demand price), when its type is known.
    pub price_per_hour: Option<f64>,
}

/// One NodePool's usage (what its nodes have) and limits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodePoolGauges {
    pub nodepool: String,
    pub usage: ByResource,
    pub limits: ByResource,
}

/// Everything the leader last computed from its caches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterGauges {
    pub nodes: Vec<NodeGauges>,
    /// Each pod's labels of `karpenter_pods_state` (name, namespace, owner, node, phase, …).
    pub pods: Vec<Vec<(&'static str, String)>>,
    /// (namespace, name, seconds since creation) of each pod not bound to a node yet.
    pub unbound: Vec<(String, String, f64)>,
    /// (namespace, name, seconds since creation) of each pod bound but not running yet.
    pub unstarted: Vec<(String, String, f64)>,
    /// Pods the provisioner has decided to place: (namespace, name, seconds since it decided) of those not bound
    /// yet, and of those bound but not running yet.
    pub provisioning_unbound: Vec<(String, String, f64)>,
    pub provisioning_unstarted: Vec<(String, String, f64)>,
    /// (namespace, name, seconds since the provisioner first saw it) of each pending pod it has not decided on.
    pub scheduling_undecided: Vec<(String, String, f64)>,
    pub nodepools: Vec<NodePoolGauges>,
    /// What each NodePool's nodes cost per hour, in US dollars (nodes whose price is unknown left out).
    pub nodepool_costs: Vec<(String, f64)>,
    /// Every status condition of NodeClaims, Nodes, NodePools and EC2NodeClasses.
    pub conditions: Vec<ConditionGauge>,
    /// Those objects being deleted.
    pub terminating: Vec<TerminatingGauge>,
    /// Requested over allocatable of every node, in percent.
    pub utilization: ByResource,
    pub node_count: usize,
    pub synced: bool,
}

/// Where the gauges come from, asked at each scrape.
pub trait GaugeSource: Send + Sync + std::fmt::Debug {
    /// The gauges as the cluster is now; None where this process reports none (a replica that does not lead).
    fn gauges(&self) -> Option<ClusterGauges>;
}

/// Gauges computed beforehand, reported as they are (tests, benchmarks).
#[derive(Debug)]
pub struct FixedGauges(pub ClusterGauges);

impl GaugeSource for FixedGauges {
    fn gauges(&self) -> Option<ClusterGauges> {
        Some(self.0.clone())
    }
}

/// Asks its source at each scrape; reports nothing until it has one.
#[derive(Debug, Default)]
pub struct ClusterCollector {
    source: RwLock<Option<Arc<dyn GaugeSource>>>,
}

impl ClusterCollector {
    pub fn read_from(&self, source: Arc<dyn GaugeSource>) {
        *self.source.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(source);
    }
}

type Labels<'a> = Vec<(&'a str, &'a str)>;

fn gauge_family<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl Iterator<Item = (Labels<'a>, f64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge without labels.
fn single_gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> std::fmt::Result {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// One sample per waiting pod, labelled by name and namespace.
fn waiting(pods: &[(String, String, f64)]) -> impl Iterator<Item = (Labels<'_>, f64)> {
    pods.iter()
        .map(|(namespace, name, seconds)| (vec![("name", name.as_str()), ("namespace", namespace.as_str())], *seconds))
}

fn labels_of<'a>(labels: &'a [(&'static str, String)]) -> Labels<'a> {
    labels.iter().map(|(name, value)| (*name, value.as_str())).collect()
}

fn node_labels(node: &NodeGauges) -> Labels<'_> {
    node.labels.iter().map(|(name, value)| (*name, value.as_str())).collect()
}

/// One sample per node and resource of `pick`.
fn per_resource<'a>(
    nodes: &'a [NodeGauges],
    pick: impl Fn(&'a NodeGauges) -> &'a ByResource + 'a,
) -> impl Iterator<Item = (Labels<'a>, f64)> + 'a {
    nodes.iter().flat_map(move |node| {
        pick(node).iter().map(move |(resource, value)| {
            let mut labels = node_labels(node);
            labels.push(("resource_type", resource));
            (labels, *value)
        })
    })
}

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(source) = self.source.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone() else {
            return Ok(());
        };
        let Some(gauges) = source.gauges() else { return Ok(()) };
        let nodes = gauges.nodes.as_slice();
        let e = &mut encoder;
        gauge_family(
            e,
            "karpenter_nodes_allocatable",
            "Allocatable of each node, by resource (cpu in cores, memory in bytes)",
            per_resource(nodes, |n| &n.allocatable),
        )?;
        gauge_family(
            e,
            "karpenter_nodes_total_pod_requests",
            "Requests of the pods on each node, DaemonSet pods apart",
            per_resource(nodes, |n| &n.pod_requests),
        )?;
        gauge_family(
            e,
            "karpenter_nodes_total_pod_limits",
            "Limits of the pods on each node, DaemonSet pods apart",
            per_resource(nodes, |n| &n.pod_limits),
        )?;
        gauge_family(
            e,
            "karpenter_nodes_total_daemon_requests",
            "Requests of the DaemonSet pods on each node",
            per_resource(nodes, |n| &n.daemon_requests),
        )?;
        gauge_family(
            e,
            "karpenter_nodes_total_daemon_limits",
            "Limits of the DaemonSet pods on each node",
            per_resource(nodes, |n| &n.daemon_limits),
        )?;
        gauge_family(
            e,
            "karpenter_nodes_system_overhead",
            "Capacity less allocatable of each node: what kubelet, system and eviction reservations hold back",
            per_resource(nodes, |n| &n.system_overhead),
        )?;
        gauge_family(
            e,
            "karpenter_nodes_current_lifetime_seconds",
            "How long each node has existed",
            nodes.iter().map(|n| (node_labels(n), n.lifetime_seconds)),
        )?;
        gauge_family(
            e,
            "nodesmith_nodes_price_per_hour_dollars",
            "What each node costs per hour (the spot or on-demand price of its offering)",
            nodes.iter().filter_map(|n| Some((node_labels(n), n.price_per_hour?))),
        )?;
        gauge_family(
            e,
            "karpenter_pods_state",
            "One per pod, labelled with its phase, its node and the node's pool, zone, type and capacity type",
            gauges.pods.iter().map(|labels| (labels.iter().map(|(k, v)| (*k, v.as_str())).collect(), 1.0)),
        )?;
        gauge_family(
            e,
            "karpenter_pods_unbound_time_seconds",
            "How long each pod not yet bound to a node has existed",
            waiting(&gauges.unbound),
        )?;
        gauge_family(
            e,
            "karpenter_pods_unstarted_time_seconds",
            "How long each pod bound but not yet running has existed",
            waiting(&gauges.unstarted),
        )?;
        gauge_family(
            e,
            "karpenter_pods_provisioning_unbound_time_seconds",
            "How long each pod the provisioner placed has waited, since it was placed, to be bound",
            waiting(&gauges.provisioning_unbound),
        )?;
        gauge_family(
            e,
            "karpenter_pods_provisioning_unstarted_time_seconds",
            "How long each pod the provisioner placed and the scheduler bound has waited, since it was placed, to run",
            waiting(&gauges.provisioning_unstarted),
        )?;
        gauge_family(
            e,
            "karpenter_pods_provisioning_scheduling_undecided_time_seconds",
            "How long each pending pod has waited, since the provisioner first saw it, for a decision",
            waiting(&gauges.scheduling_undecided),
        )?;
        gauge_family(
            e,
            "karpenter_nodepools_cost_total",
            "What each NodePool's nodes cost per hour, in US dollars",
            gauges.nodepool_costs.iter().map(|(pool, cost)| (vec![("nodepool", pool.as_str())], *cost)),
        )?;
        for kind in ObjectKind::ALL {
            let prefix = kind.prefix();
            let conditions = || gauges.conditions.iter().filter(move |c| c.kind == kind);
            gauge_family(
                e,
                &format!("{prefix}_status_condition_count"),
                &kind.help("1 per status condition (by type, status and reason)"),
                conditions().map(|c| (labels_of(&c.labels), 1.0)),
            )?;
            gauge_family(
                e,
                &format!("{prefix}_status_condition_current_status_seconds"),
                &kind.help("How long each status condition has held its status"),
                conditions().map(|c| (labels_of(&c.labels), c.seconds)),
            )?;
            gauge_family(
                e,
                &format!("{prefix}_termination_current_time_seconds"),
                &kind.help("How long each one being deleted has been"),
                gauges.terminating.iter().filter(|t| t.kind == kind).map(|t| (labels_of(&t.labels), t.seconds)),
            )?;
        }
        let pools = gauges.nodepools.as_slice();
        let pool_samples = |pick: fn(&NodePoolGauges) -> &ByResource| {
            pools.iter().flat_map(move |pool| {
                pick(pool).iter().map(move |(resource, value)| {
                    (vec![("nodepool", pool.nodepool.as_str()), ("resource_type", *resource)], *value)
                })
            })
        };
        gauge_family(
            e,
            "karpenter_nodepools_usage",
            "What each NodePool's nodes have, by resource",
            pool_samples(|p| &p.usage),
        )?;
        gauge_family(
            e,
            "karpenter_nodepools_limit",
            "Each NodePool's limits, by resource",
            pool_samples(|p| &p.limits),
        )?;
        gauge_family(
            e,
            "karpenter_cluster_utilization_percent",
            "Requests over allocatable of every node, in percent",
            gauges.utilization.iter().map(|(resource, value)| (vec![("resource_type", *resource)], *value)),
        )?;
        single_gauge(
            e,
            "karpenter_cluster_state_node_count",
            "Nodes in the controller's view of the cluster",
            gauges.node_count as f64,
        )?;
        single_gauge(
            e,
            "karpenter_cluster_state_unsynced_time_seconds",
            "How long the controller's caches have not been synced (0: synced)",
            if gauges.synced { 0.0 } else { f64::NAN },
        )?;
        single_gauge(
            e,
            "karpenter_cluster_state_synced",
            "1 when the controller's caches of the cluster are synced",
            if gauges.synced { 1.0 } else { 0.0 },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn encoded(collector: Arc<ClusterCollector>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(collector));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        text
    }

    #[test]
    fn nodes_pods_and_pools_are_encoded_under_karpenters_names_and_labels() {
        let collector = Arc::new(ClusterCollector::default());
        assert!(!encoded(collector.clone()).contains("karpenter_nodes_allocatable{"), "nothing without a source");
        let node = NodeGauges {
            labels: vec![("nodepool", "default".into()), ("arch", "amd64".into()), ("node_name", "ip-1".into())],
            allocatable: vec![("cpu", 1.93)],
            pod_requests: vec![("cpu", 1.5)],
            daemon_requests: vec![("cpu", 0.1)],
            price_per_hour: Some(0.04),
            lifetime_seconds: 60.0,
            ..NodeGauges::default()
        };
        collector.read_from(Arc::new(FixedGauges(ClusterGauges {
            nodes: vec![node],
            pods: vec![vec![("name", "web-1".into()), ("phase", "Running".into())]],
            nodepools: vec![NodePoolGauges {
                nodepool: "default".into(),
                usage: vec![("cpu", 2.0)],
                limits: vec![("cpu", 100.0)],
            }],
            utilization: vec![("cpu", 82.9)],
            unbound: vec![("shop".into(), "web-2".into(), 12.0)],
            unstarted: vec![],
            provisioning_unbound: vec![("shop".into(), "web-2".into(), 3.0)],
            scheduling_undecided: vec![("shop".into(), "web-3".into(), 1.0)],
            nodepool_costs: vec![("default".into(), 0.04)],
            conditions: vec![ConditionGauge {
                kind: ObjectKind::NodeClaim,
                labels: vec![("name", "default-a".into()), ("type", "Ready".into()), ("status", "True".into())],
                seconds: 30.0,
            }],
            terminating: vec![TerminatingGauge {
                kind: ObjectKind::Node,
                labels: vec![("name", "ip-2".into())],
                seconds: 5.0,
            }],
            node_count: 1,
            synced: true,
            ..ClusterGauges::default()
        })));
        let text = encoded(collector.clone());
        let node = r#"nodepool="default",arch="amd64",node_name="ip-1""#;
        for expected in [
            format!(r#"karpenter_nodes_allocatable{{{node},resource_type="cpu"}} 1.93"#),
            format!(r#"karpenter_nodes_total_pod_requests{{{node},resource_type="cpu"}} 1.5"#),
            format!(r#"karpenter_nodes_total_daemon_requests{{{node},resource_type="cpu"}} 0.1"#),
            format!("karpenter_nodes_current_lifetime_seconds{{{node}}} 60.0"),
            format!("nodesmith_nodes_price_per_hour_dollars{{{node}}} 0.04"),
            r#"karpenter_pods_state{name="web-1",phase="Running"} 1.0"#.to_string(),
            r#"karpenter_nodepools_usage{nodepool="default",resource_type="cpu"} 2.0"#.to_string(),
            r#"karpenter_nodepools_limit{nodepool="default",resource_type="cpu"} 100.0"#.to_string(),
            r#"karpenter_cluster_utilization_percent{resource_type="cpu"} 82.9"#.to_string(),
            r#"karpenter_pods_unbound_time_seconds{name="web-2",namespace="shop"} 12.0"#.to_string(),
            "karpenter_cluster_state_unsynced_time_seconds 0.0".to_string(),
            "karpenter_cluster_state_node_count 1.0".to_string(),
            "karpenter_cluster_state_synced 1.0".to_string(),
            r#"karpenter_pods_provisioning_unbound_time_seconds{name="web-2",namespace="shop"} 3.0"#.to_string(),
            r#"karpenter_pods_provisioning_scheduling_undecided_time_seconds{name="web-3",namespace="shop"} 1.0"#
                .to_string(),
            r#"karpenter_nodepools_cost_total{nodepool="default"} 0.04"#.to_string(),
            r#"operator_nodeclaim_status_condition_count{name="default-a",type="Ready",status="True"} 1.0"#.to_string(),
            r#"operator_nodeclaim_status_condition_current_status_seconds{name="default-a",type="Ready",status="True"} 30.0"#
                .to_string(),
            r#"operator_node_termination_current_time_seconds{name="ip-2"} 5.0"#.to_string(),
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected} in\n{text}");
        }
        collector.read_from(Arc::new(NotLeading));
        assert!(!encoded(collector).contains("ip-1"), "a replica that stops leading reports no nodes");
    }

    #[derive(Debug)]
    struct NotLeading;

    impl GaugeSource for NotLeading {
        fn gauges(&self) -> Option<ClusterGauges> {
            None
        }
    }
}
