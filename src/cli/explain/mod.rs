//! `nodesmith explain`: why a pod waits or got the node it got, and what disruption would do with a node now. The
//! answers come from the controller's own code (the provisioner's plan, the disruption verdict) run over a one-off
//! read of the cluster of the current kubeconfig context, beside the Events the controller and the scheduler
//! wrote on the object, so `kubectl describe` and `explain` tell the same story.

mod events;
mod node;
mod pod;

use std::sync::Arc;

use clap::{Args, Subcommand};
use kube::ResourceExt;
use serde::Serialize;

use super::controller::DecisionArgs;
use super::plan::PlanCatalog;
use super::{CliError, GlobalArgs, Report, cluster_read};
use crate::apis::nodeclaim::NodeClaim;
use crate::catalog::Catalog;
use crate::controller::state::Objects;
use crate::controller::{ClusterFacts, Context, Settings};
use crate::names::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, ZONE_LABEL};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(subcommand)]
    pub what: ExplainTarget,
    /// Instance types, zones and prices from AWS now (as the controller has them), instead of the embedded
    /// catalog.
    #[arg(long, global = true)]
    pub live: bool,
    #[command(flatten)]
    pub decisions: DecisionArgs,
}

#[derive(Debug, Subcommand)]
pub enum ExplainTarget {
    /// Why a pod is Pending (each NodePool and the first thing that rules it out), or why its node is of the type
    /// and capacity type it is.
    Pod {
        /// NAMESPACE/NAME, or NAME in the default namespace.
        pod: String,
    },
    /// A node or its NodeClaim: age, price, utilization, drift and expiry, and whether disruption would remove or
    /// replace it now or, if not, what holds it.
    Node {
        /// A Node's name or a NodeClaim's.
        name: String,
    },
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ExplainReport {
    Pod(pod::PodExplanation),
    Node(node::NodeExplanation),
}

impl Report for ExplainReport {
    fn human(&self) -> String {
        match self {
            Self::Pod(pod) => pod.human(),
            Self::Node(node) => node.human(),
        }
    }
}

pub async fn run(args: &ExplainArgs, global: &GlobalArgs) -> Result<ExplainReport, CliError> {
    let target = cluster_read::connect().await?;
    let kube = target.client.clone();
    let objects = Objects {
        pods: cluster_read::list(&kube, "pods").await?,
        nodes: cluster_read::list(&kube, "nodes").await?,
        daemonsets: cluster_read::list(&kube, "daemonsets").await?,
        nodeclaims: cluster_read::list(&kube, "nodeclaims").await?,
        nodepools: cluster_read::list(&kube, "nodepools").await?,
        nodeclasses: cluster_read::list(&kube, "ec2nodeclasses").await?,
        pdbs: cluster_read::list(&kube, "poddisruptionbudgets").await?,
        pvcs: cluster_read::list(&kube, "persistentvolumeclaims").await?,
        pvs: cluster_read::list(&kube, "persistentvolumes").await?,
        storageclasses: cluster_read::list(&kube, "storageclasses").await?,
    };
    let region = cluster_read::region(global, objects.nodes.iter());
    let catalog = if args.live { PlanCatalog::live(Some(&region)).await? } else { PlanCatalog::embedded(&region) };
    let description = catalog.description.clone();
    let ctx = reading_context(kube.clone(), objects, catalog, args, &region).await;
    match &args.what {
        ExplainTarget::Pod { pod } => {
            let (namespace, name) = pod.split_once('/').unwrap_or(("default", pod.as_str()));
            let events = events::of(&kube, "Pod", Some(namespace), name).await;
            let scheduler = scheduler_message(&kube, namespace, name).await;
            pod::explain(&ctx, namespace, name, scheduler, events, description).map(ExplainReport::Pod)
        }
        ExplainTarget::Node { name } => {
            let explained = node::explain(&ctx, name, jiff::Timestamp::now(), description)?;
            let mut events = events::of(&kube, "NodeClaim", None, &explained.nodeclaim).await;
            if let Some(node) = &explained.node {
                events.extend(events::of(&kube, "Node", None, node).await);
            }
            Ok(ExplainReport::Node(node::NodeExplanation { events: events::latest(events), ..explained }))
        }
    }
}

/// Where a NodeClaim's node runs, from its Node's labels where it has registered, else from the NodeClaim's.
#[derive(Debug, Clone, Default)]
struct Offering {
    nodepool: String,
    instance_type: String,
    capacity_type: String,
    zone: String,
}

impl Offering {
    fn of(ctx: &Context, claim: &NodeClaim) -> Self {
        let node = claim.status.as_ref().and_then(|s| s.node_name.as_deref()).and_then(|n| ctx.state.node(n));
        let label = |key: &str| {
            let on_node = node.as_ref().and_then(|n| n.labels().get(key).cloned());
            on_node.or_else(|| claim.labels().get(key).cloned()).unwrap_or_default()
        };
        Self {
            nodepool: label(NODEPOOL_LABEL),
            instance_type: label(INSTANCE_TYPE_LABEL),
            capacity_type: label(CAPACITY_TYPE_LABEL),
            zone: label(ZONE_LABEL),
        }
    }
}

/// A moment as the reports show it: RFC 3339 to the second, UTC.
fn rfc3339(time: jiff::Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// kube-scheduler's message on the pod's `PodScheduled: False` condition (the caches keep conditions without
/// their messages).
async fn scheduler_message(kube: &kube::Client, namespace: &str, name: &str) -> Option<String> {
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(kube.clone(), namespace);
    let pod = api.get_opt(name).await.ok().flatten()?;
    let conditions = pod.status?.conditions?;
    conditions.into_iter().find(|c| c.type_ == "PodScheduled" && c.status == "False")?.message
}

/// The controller's context over what was read: caches filled once and never watched, the catalog as `plan` has
/// it, and an AWS client that explaining never calls (the decisions read only the caches and the catalog).
async fn reading_context(
    kube: kube::Client,
    objects: Objects,
    catalog: PlanCatalog,
    args: &ExplainArgs,
    region: &str,
) -> Arc<Context> {
    let settings = Settings {
        cluster_name: String::new(),
        cluster_endpoint: None,
        interruption_queue: None,
        rebalance: crate::controller::interruption::RebalancePolicy::Event,
        batch_idle: std::time::Duration::ZERO,
        batch_max: std::time::Duration::ZERO,
        metrics_port: 0,
        health_port: 0,
        identity: "nodesmith-explain".into(),
        namespace: String::new(),
        disruption: args.decisions.disruption(),
        min_values_policy: args.decisions.min_values_policy,
        catalog_refresh: Default::default(),
        observe: false,
    };
    // Nothing here launches a node: the cluster's EKS facts are not needed, and not asked for.
    let cluster = ClusterFacts {
        name: String::new(),
        arn: String::new(),
        endpoint: String::new(),
        ca_bundle: String::new(),
        service_cidr: String::new(),
        kubernetes_version: String::new(),
    };
    let sdk = crate::aws::sdk_config(Some(region)).await;
    let cloud = Arc::new(crate::cloud::AwsCloud::new(&sdk));
    let catalog = Catalog { instance_types: catalog.instance_types, prices: catalog.prices };
    let metrics = Arc::new(crate::telemetry::Metrics::default());
    Context::new(settings, cluster, kube.clone(), kube, cloud, metrics, objects.into_state(), catalog)
}
