//! `nodesmith status`: each NodePool at a glance, read through the current kubeconfig context: its nodes by
//! instance type and capacity type, what they cost per hour, requested against allocatable CPU and memory, how
//! many more nodes its disruption budgets let go now; and the pods that wait for a node.

use std::collections::BTreeMap;
use std::sync::Arc;

use clap::Args;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use super::output::table;
use super::{CliError, GlobalArgs, Report, cluster_read};
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::nodepool::NodePool;
use crate::apis::pod::Pod;
use crate::catalog::pricing::PriceTable;
use crate::controller::cluster_metrics::node_gauges;
use crate::controller::disruption::snapshot::pool_policy;
use crate::disruption::Reason;
use crate::disruption::budgets::allowed_disruptions;
use crate::names::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, NODEPOOL_LABEL};
use crate::telemetry::cluster::{ByResource, NodeGauges};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this NodePool.
    #[arg(long)]
    pub nodepool: Option<String>,
    /// Price nodes with what AWS says now (the Pricing API and the spot price history) rather than the embedded
    /// prices.
    #[arg(long)]
    pub live_prices: bool,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The API server asked.
    pub server: String,
    pub region: String,
    /// What the prices are.
    pub prices: String,
    pub nodepools: Vec<NodePoolStatus>,
    /// Nodes no NodePool manages (node groups, Fargate, …).
    pub other_nodes: usize,
    /// Pods that no node has taken yet, oldest first.
    pub pending_pods: Vec<PendingPod>,
}

#[derive(Debug, Serialize)]
pub struct NodePoolStatus {
    pub name: String,
    pub nodes: usize,
    pub instance_types: Vec<TypeCount>,
    pub usd_per_hour: f64,
    /// Nodes of a type and zone the price table does not know: left out of `usd_per_hour`.
    pub unpriced_nodes: usize,
    /// Cores.
    pub cpu: Usage,
    /// Bytes.
    pub memory: Usage,
    /// The pool's limits, as written.
    pub limits: BTreeMap<String, String>,
    /// How many more nodes may be disrupted now, for each reason (none when the budgets cannot be read).
    pub disruptions_allowed: BTreeMap<&'static str, usize>,
    /// Why the pool's disruption settings cannot be read (then nothing of it is disrupted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disruption_invalid: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TypeCount {
    pub instance_type: String,
    pub capacity_type: String,
    pub nodes: usize,
}

/// What the pods on the nodes request (DaemonSet pods included) out of what the nodes have.
#[derive(Debug, Default, Serialize)]
pub struct Usage {
    pub requested: f64,
    pub allocatable: f64,
}

#[derive(Debug, Serialize)]
pub struct PendingPod {
    pub pod: String,
    pub waiting_seconds: u64,
}

pub async fn run(args: &StatusArgs, global: &GlobalArgs) -> Result<StatusReport, CliError> {
    let target = cluster_read::connect().await?;
    let kube = &target.client;
    let nodes: Vec<Arc<Node>> = shared(cluster_read::list(kube, "nodes").await?);
    let pods: Vec<Arc<Pod>> = shared(cluster_read::list(kube, "pods").await?);
    let pools: Vec<Arc<NodePool>> = shared(cluster_read::list(kube, "nodepools").await?);
    let claims: Vec<Arc<NodeClaim>> = shared(cluster_read::list(kube, "nodeclaims").await?);
    let region = cluster_read::region(global, nodes.iter().map(AsRef::as_ref));
    let (prices, description) = if args.live_prices {
        let sdk = crate::aws::sdk_config(Some(&region)).await;
        let cloud = crate::cloud::AwsCloud::new(&sdk);
        let mut prices = PriceTable::embedded_for(&region);
        crate::controller::catalog_refresh::read_prices(&cloud, &mut prices).await;
        (prices, format!("{region}'s prices from the Pricing API and the spot price history"))
    } else {
        let prices = PriceTable::embedded_for(&region);
        let description = format!(
            "embedded ({} on-demand, {} spot); --live-prices asks AWS",
            prices.on_demand_source().as_str(),
            prices.spot_source().as_str()
        );
        (prices, description)
    };
    let cluster = Cluster { nodes: &nodes, pods: &pods, pools: &pools, claims: &claims };
    let mut report = status(&cluster, &prices, Timestamp::now());
    if let Some(only) = &args.nodepool {
        if !report.nodepools.iter().any(|p| &p.name == only) {
            return Err(CliError::UnknownNodePool { name: only.clone() });
        }
        report.nodepools.retain(|p| &p.name == only);
    }
    Ok(StatusReport { server: target.server, region, prices: description, ..report })
}

fn shared<K>(objects: Vec<K>) -> Vec<Arc<K>> {
    objects.into_iter().map(Arc::new).collect()
}

/// What `status` reads from the cluster.
pub struct Cluster<'a> {
    pub nodes: &'a [Arc<Node>],
    pub pods: &'a [Arc<Pod>],
    pub pools: &'a [Arc<NodePool>],
    pub claims: &'a [Arc<NodeClaim>],
}

/// The report, from the cluster as read.
pub fn status(cluster: &Cluster<'_>, prices: &PriceTable, now: Timestamp) -> StatusReport {
    let mut pods_by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in cluster.pods {
        if let Some(node) = pod.node_name() {
            pods_by_node.entry(node).or_default().push(pod);
        }
    }
    let mut by_pool: BTreeMap<String, Vec<(&Node, NodeGauges)>> =
        cluster.pools.iter().map(|p| (p.name_any(), Vec::new())).collect();
    let mut other_nodes = 0;
    for node in cluster.nodes {
        let on_node = pods_by_node.get(node.name_any().as_str()).map(Vec::as_slice).unwrap_or_default();
        match node.labels().get(NODEPOOL_LABEL).and_then(|pool| by_pool.get_mut(pool)) {
            Some(nodes) => nodes.push((node, node_gauges(node, on_node, prices, now))),
            None => other_nodes += 1,
        }
    }
    let nodepools = cluster
        .pools
        .iter()
        .map(|pool| {
            let nodes = by_pool.remove(&pool.name_any()).unwrap_or_default();
            pool_status(pool, &nodes, cluster.claims, now)
        })
        .collect();
    let mut pending_pods: Vec<PendingPod> = cluster
        .pods
        .iter()
        .filter(|p| p.node_name().is_none() && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"))
        .map(|p| PendingPod {
            pod: crate::controller::pods::key(p),
            waiting_seconds: p
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| now.duration_since(t.0).as_secs().max(0).unsigned_abs()),
        })
        .collect();
    pending_pods.sort_by(|a, b| b.waiting_seconds.cmp(&a.waiting_seconds).then_with(|| a.pod.cmp(&b.pod)));
    StatusReport {
        server: String::new(),
        region: prices.region().to_string(),
        prices: String::new(),
        nodepools,
        other_nodes,
        pending_pods,
    }
}

fn pool_status(
    pool: &NodePool,
    nodes: &[(&Node, NodeGauges)],
    claims: &[Arc<NodeClaim>],
    now: Timestamp,
) -> NodePoolStatus {
    let mut types: BTreeMap<(String, String), usize> = BTreeMap::new();
    let (mut cpu, mut memory) = (Usage::default(), Usage::default());
    let (mut usd_per_hour, mut unpriced_nodes) = (0.0, 0);
    for (node, gauges) in nodes {
        let label = |key: &str| node.labels().get(key).cloned().unwrap_or_default();
        *types.entry((label(INSTANCE_TYPE_LABEL), label(CAPACITY_TYPE_LABEL))).or_default() += 1;
        let requested = |name: &str| value(&gauges.pod_requests, name) + value(&gauges.daemon_requests, name);
        cpu.requested += requested("cpu");
        cpu.allocatable += value(&gauges.allocatable, "cpu");
        memory.requested += requested("memory");
        memory.allocatable += value(&gauges.allocatable, "memory");
        match gauges.price_per_hour {
            Some(price) => usd_per_hour += price,
            None => unpriced_nodes += 1,
        }
    }
    let name = pool.name_any();
    let of_pool: Vec<&Arc<NodeClaim>> =
        claims.iter().filter(|c| c.labels().get(NODEPOOL_LABEL) == Some(&name)).collect();
    let disrupting = of_pool.iter().filter(|c| c.metadata.deletion_timestamp.is_some()).count();
    let (disruptions_allowed, disruption_invalid) = match pool_policy(pool) {
        Ok(policy) => {
            let allowed = Reason::ALL.into_iter().map(|reason| {
                (reason.metric_label(), allowed_disruptions(&policy.budgets, reason, of_pool.len(), disrupting, now))
            });
            (allowed.collect(), None)
        }
        Err(why) => (BTreeMap::new(), Some(why)),
    };
    NodePoolStatus {
        name,
        nodes: nodes.len(),
        instance_types: types
            .into_iter()
            .map(|((instance_type, capacity_type), nodes)| TypeCount { instance_type, capacity_type, nodes })
            .collect(),
        usd_per_hour,
        unpriced_nodes,
        cpu,
        memory,
        limits: pool.spec.limits.clone(),
        disruptions_allowed,
        disruption_invalid,
    }
}

fn value(resources: &ByResource, name: &str) -> f64 {
    resources.iter().find(|(n, _)| *n == name).map_or(0.0, |(_, v)| *v)
}

impl Report for StatusReport {
    fn human(&self) -> String {
        let mut out = format!("{} ({}; prices {})\n\n", self.server, self.region, self.prices);
        let rows: Vec<Vec<String>> = self
            .nodepools
            .iter()
            .map(|pool| {
                let types = pool
                    .instance_types
                    .iter()
                    .map(|t| format!("{}×{} {}", t.nodes, t.instance_type, t.capacity_type))
                    .collect::<Vec<_>>()
                    .join(", ");
                let unpriced = if pool.unpriced_nodes > 0 {
                    format!(" ({} unpriced)", pool.unpriced_nodes)
                } else {
                    String::new()
                };
                let budget = match &pool.disruption_invalid {
                    None => {
                        pool.disruptions_allowed.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")
                    }
                    Some(why) => format!("none: {why}"),
                };
                vec![
                    pool.name.clone(),
                    pool.nodes.to_string(),
                    if types.is_empty() { "-".into() } else { types },
                    format!("{:.3}{unpriced}", pool.usd_per_hour),
                    share(&pool.cpu, 1.0, ""),
                    share(&pool.memory, f64::from(1u32 << 30), "Gi"),
                    budget,
                ]
            })
            .collect();
        out += &table(
            &[
                "NODEPOOL",
                "NODES",
                "INSTANCE TYPES",
                "$/HOUR",
                "CPU REQUESTED",
                "MEMORY REQUESTED",
                "DISRUPTIONS ALLOWED",
            ],
            &rows,
        );
        if self.other_nodes > 0 {
            out += &format!("\n{} node(s) belong to no NodePool (node groups, Fargate).\n", self.other_nodes);
        }
        match self.pending_pods.as_slice() {
            [] => out += "\nNo pod is waiting for a node.\n",
            pending => {
                out += &format!("\n{} pod(s) wait for a node; the oldest:\n", pending.len());
                for pod in pending.iter().take(10) {
                    out += &format!("  {} (for {} s)\n", pod.pod, pod.waiting_seconds);
                }
                out += "`nodesmith explain pod NAMESPACE/NAME` says why.\n";
            }
        }
        out
    }
}

/// `requested / allocatable (percent)`, in `unit`s of `scale`.
pub(super) fn share(usage: &Usage, scale: f64, unit: &str) -> String {
    let percent = if usage.allocatable > 0.0 { 100.0 * usage.requested / usage.allocatable } else { 0.0 };
    format!("{:.1}{unit} / {:.1}{unit} ({percent:.0}%)", usage.requested / scale, usage.allocatable / scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> Arc<T> {
        Arc::new(serde_yaml_ng::from_str(text).expect("test object"))
    }

    fn node(name: &str, pool: &str, capacity_type: &str) -> Arc<Node> {
        yaml(&format!(
            r#"
metadata:
  name: {name}
  labels: {{karpenter.sh/nodepool: {pool}, karpenter.sh/capacity-type: {capacity_type},
           node.kubernetes.io/instance-type: m5.large, topology.kubernetes.io/zone: us-east-1a}}
status:
  allocatable: {{cpu: "2", memory: 8Gi, pods: "29"}}
"#
        ))
    }

    fn pool(name: &str, budgets: &str) -> Arc<NodePool> {
        yaml(&format!(
            r#"
metadata: {{name: {name}}}
spec:
  template: {{spec: {{nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}}, requirements: []}}}}
  limits: {{cpu: "100"}}
  disruption: {{budgets: {budgets}}}
"#
        ))
    }

    fn claim(name: &str, pool: &str, deleting: bool) -> Arc<NodeClaim> {
        let deletion = if deleting { ", deletionTimestamp: \"2026-12-04T10:00:00Z\"" } else { "" };
        yaml(&format!(
            r#"
metadata: {{name: {name}, labels: {{karpenter.sh/nodepool: {pool}}}{deletion}}}
spec: {{nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}}, requirements: []}}
"#
        ))
    }

    #[test]
    fn each_pool_shows_its_nodes_cost_usage_and_budget_left_and_pending_pods_wait_oldest_first() {
        let nodes = [
            node("a", "web", "spot"),
            node("b", "web", "on-demand"),
            node("c", "web", "spot"),
            node("g", "none", "on-demand"),
        ];
        let pods = [
            yaml::<Pod>(
                "metadata: {name: w1, namespace: shop}\nspec: {nodeName: a, containers: [{name: app, resources: {requests: {cpu: '1', memory: 2Gi}}}]}\nstatus: {phase: Running}",
            ),
            yaml::<Pod>(
                "metadata: {name: p1, namespace: shop, creationTimestamp: '2026-12-04T11:59:00Z'}\nspec: {containers: [{name: app}]}\nstatus: {phase: Pending}",
            ),
            yaml::<Pod>(
                "metadata: {name: p2, namespace: shop, creationTimestamp: '2026-12-04T11:50:00Z'}\nspec: {containers: [{name: app}]}\nstatus: {phase: Pending}",
            ),
        ];
        let pools = [pool("web", r#"[{nodes: "1"}, {nodes: "0", reasons: [Drifted]}]"#), pool("idle", "[]")];
        let claims = [claim("a", "web", false), claim("b", "web", false), claim("c", "web", true)];
        let prices = PriceTable::embedded();
        let now: Timestamp = "2026-12-04T12:00:00Z".parse().expect("time");
        let cluster = Cluster { nodes: &nodes, pods: &pods, pools: &pools, claims: &claims };
        let report = status(&cluster, &prices, now);

        let web = &report.nodepools[0];
        assert_eq!(web.nodes, 3);
        let counts: Vec<(&str, usize)> =
            web.instance_types.iter().map(|t| (t.capacity_type.as_str(), t.nodes)).collect();
        assert_eq!(counts, [("on-demand", 1), ("spot", 2)]);
        let expected = prices.on_demand("m5.large").expect("priced")
            + 2.0 * prices.spot("m5.large", "us-east-1a").expect("priced");
        assert!((web.usd_per_hour - expected).abs() < 1e-9, "{} vs {expected}", web.usd_per_hour);
        assert_eq!((web.cpu.requested, web.cpu.allocatable), (1.0, 6.0));
        assert_eq!(web.memory.requested, f64::from(2u32 << 30));
        // One budget of 1 node, one already going: none left; drift has a budget of 0.
        assert_eq!(web.disruption_invalid, None);
        let allowed = &web.disruptions_allowed;
        assert_eq!(allowed.get("underutilized"), Some(&0));
        assert_eq!(allowed.get("drifted"), Some(&0));
        let idle = &report.nodepools[1];
        assert_eq!((idle.nodes, idle.usd_per_hour), (0, 0.0));
        assert_eq!(report.other_nodes, 1);
        let pending: Vec<(&str, u64)> =
            report.pending_pods.iter().map(|p| (p.pod.as_str(), p.waiting_seconds)).collect();
        assert_eq!(pending, [("shop/p2", 600), ("shop/p1", 60)]);
        let text = report.human();
        assert!(text.contains("2 pod(s) wait for a node"), "{text}");
        assert!(text.contains("1.0 / 6.0 (17%)"), "{text}");
    }

    #[test]
    fn a_pool_whose_budgets_cannot_be_read_says_why() {
        let pools = [pool("web", r#"[{nodes: "ten"}]"#)];
        let prices = PriceTable::embedded();
        let cluster = Cluster { nodes: &[], pods: &[], pools: &pools, claims: &[] };
        let report = status(&cluster, &prices, Timestamp::now());
        let why = report.nodepools[0].disruption_invalid.as_deref().unwrap_or_default();
        assert!(why.contains("budgets[0]"), "{why}");
    }
}
