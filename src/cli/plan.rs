//! `nodesmith plan`: which nodes these pods would get, and at what price: offline from the embedded catalog of the
//! region, or (`--live`) from what AWS says now.

use std::collections::BTreeMap;

use clap::Args;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::manifests::{Document, ManifestError, read_documents};
use super::output::table;
use super::{CliError, Report};
use crate::apis::ec2nodeclass::{EC2NodeClassSpec, PrefixDelegation};
use crate::apis::nodepool::NodePoolSpec as KubeNodePoolSpec;
use crate::apis::scheduling_input::{daemonset_pod, existing_node, nodepool, pod_request};
use crate::catalog::instance_type::InstanceTypeInfo;
use crate::catalog::max_pods::MaxPodsSettings;
use crate::catalog::pricing::{HOME_REGION, PriceSource, PriceTable};
use crate::catalog::resources::ResourceName;
use crate::catalog::{CapacityType, EMBEDDED_CATALOG_PROVENANCE, embedded_instance_types, embedded_instance_types_in};
use crate::cloud::CloudProvider;
use crate::scheduling::{self, NodePoolSpec, Operator, PodRequest, Requirement, SchedulingInput};

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Pods and workloads (Pod, Deployment, StatefulSet, ReplicaSet, Job) as YAML; `-` reads stdin.
    #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
    pub pods: Vec<String>,
    /// NodePools (karpenter.sh/v1). Without any, a general-purpose default: amd64 Linux, categories c/m/r of
    /// generation 3 or later, spot or on-demand.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub nodepool: Vec<String>,
    /// An EC2NodeClass whose kubelet maxPods/podsPerCore and prefixDelegation set pod density.
    #[arg(long, value_name = "FILE")]
    pub nodeclass: Option<String>,
    /// Nodes that exist already: their allocatable is used first.
    #[arg(long, value_name = "FILE")]
    pub nodes: Option<String>,
    /// DaemonSets whose pods every new node carries.
    #[arg(long, value_name = "FILE")]
    pub daemonsets: Option<String>,
    /// As if the VPC CNI runs with prefix delegation (more pods per node).
    #[arg(long)]
    pub prefix_delegation: bool,
    /// Ask AWS for the region's instance types, zones and prices (DescribeInstanceTypes and
    /// DescribeInstanceTypeOfferings, the Pricing API, the spot price history) instead of the embedded catalog.
    #[arg(long)]
    pub live: bool,
}

#[derive(Debug, Serialize)]
pub struct PlanReport {
    /// The region planned for (`--region` / AWS_REGION, else us-east-1) and where most of its prices come from
    /// (each node says where its own price comes from).
    pub region: String,
    pub on_demand_prices: PriceSource,
    pub spot_prices: PriceSource,
    /// What the instance types, zones and prices describe, and when.
    pub catalog: String,
    /// Set when the offline catalog does not know the region's zones: nodes are then planned region-wide, each
    /// reported in a "zone" named after the region.
    pub zones_note: Option<String>,
    pub nodes: Vec<PlannedNodeReport>,
    /// Existing node → pods planned onto it.
    pub existing: BTreeMap<String, Vec<String>>,
    pub unschedulable: Vec<scheduling::UnschedulablePod>,
    pub total_price_per_hour: f64,
}

#[derive(Debug, Serialize)]
pub struct PlannedNodeReport {
    pub nodepool: String,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    pub price_per_hour: f64,
    pub price_source: PriceSource,
    pub pods: Vec<String>,
    pub cpu_use_percent: f64,
    pub memory_use_percent: f64,
    pub instance_type_options: Vec<String>,
}

pub async fn run(args: &PlanArgs, region: Option<&str>) -> Result<PlanReport, CliError> {
    let max_pods = max_pods_settings(args)?;
    let mut pods = Vec::new();
    for path in &args.pods {
        for doc in read_documents(path)? {
            pods.extend(workload_pods(&doc)?);
        }
    }
    let mut pools = Vec::new();
    for path in &args.nodepool {
        for doc in read_documents(path)? {
            expect_kind(&doc, &["NodePool"])?;
            let spec: NodePoolSpec = nodepool_of(&doc, max_pods)?;
            pools.push(spec);
        }
    }
    if pools.is_empty() {
        pools.push(default_nodepool(max_pods));
    }
    let existing = match &args.nodes {
        Some(path) => read_documents(path)?
            .iter()
            .map(|doc| {
                expect_kind(doc, &["Node"])?;
                existing_node(&doc.parse::<Node>()?).map_err(|e| doc.error(e.0).into())
            })
            .collect::<Result<Vec<_>, CliError>>()?,
        None => Vec::new(),
    };
    let daemonsets = match &args.daemonsets {
        Some(path) => read_documents(path)?
            .iter()
            .map(|doc| {
                expect_kind(doc, &["DaemonSet"])?;
                let spec = doc.parse::<DaemonSet>()?.spec.and_then(|s| s.template.spec).unwrap_or_default();
                daemonset_pod(&spec).map_err(|e| doc.error(e.0).into())
            })
            .collect::<Result<Vec<_>, CliError>>()?,
        None => Vec::new(),
    };

    let PlanCatalog { region, instance_types, prices, zones_note, description } =
        if args.live { PlanCatalog::live(region).await? } else { PlanCatalog::embedded(region.unwrap_or(HOME_REGION)) };
    let plan = scheduling::solve(&SchedulingInput {
        pods: &pods,
        nodepools: &pools,
        instance_types: &instance_types,
        prices: &prices,
        existing: &existing,
        daemonsets: &daemonsets,
        unavailable: &Default::default(),
    });
    Ok(PlanReport {
        region,
        on_demand_prices: prices.on_demand_source(),
        spot_prices: prices.spot_source(),
        catalog: description,
        zones_note,
        total_price_per_hour: plan.total_price_per_hour(),
        nodes: plan.new_nodes.into_iter().map(|node| node_report(node, &prices)).collect(),
        existing: plan.existing_placements,
        unschedulable: plan.unschedulable,
    })
}

fn node_report(node: scheduling::NewNode, prices: &PriceTable) -> PlannedNodeReport {
    let percent = |resource| {
        let allocatable = node.allocatable.get(resource);
        if allocatable == 0 {
            0.0
        } else {
            (node.requests.get(resource) as f64 * 1000.0 / allocatable as f64).round() / 10.0
        }
    };
    let price_source = prices
        .price(&node.instance_type, &node.zone, node.capacity_type)
        .map_or(PriceSource::HomeRegionStandIn, |p| p.source);
    PlannedNodeReport {
        price_source,
        cpu_use_percent: percent(ResourceName::Cpu),
        memory_use_percent: percent(ResourceName::Memory),
        nodepool: node.nodepool,
        instance_type: node.instance_type,
        zone: node.zone,
        capacity_type: node.capacity_type,
        price_per_hour: node.price_per_hour,
        pods: node.pods,
        instance_type_options: node.instance_type_options,
    }
}

fn expect_kind(doc: &Document, kinds: &[&str]) -> Result<(), ManifestError> {
    if kinds.contains(&doc.kind.as_str()) {
        Ok(())
    } else {
        Err(doc.error(format!("kind {} is not expected here (expected {})", doc.kind, kinds.join(" or "))))
    }
}

/// The pods a workload runs at once: a Pod itself, `replicas` of a controller's template, `parallelism` of a Job.
fn workload_pods(doc: &Document) -> Result<Vec<PodRequest>, CliError> {
    expect_kind(doc, &["Pod", "Deployment", "StatefulSet", "ReplicaSet", "Job"])?;
    let template_labels = |t: &Option<ObjectMeta>| t.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    let (spec, labels, count): (Option<PodSpec>, BTreeMap<String, String>, i32) = match doc.kind.as_str() {
        "Pod" => {
            let pod = doc.parse::<Pod>()?;
            (pod.spec, pod.metadata.labels.unwrap_or_default(), 1)
        }
        "Deployment" => {
            let spec = doc.parse::<Deployment>()?.spec.unwrap_or_default();
            (spec.template.spec, template_labels(&spec.template.metadata), spec.replicas.unwrap_or(1))
        }
        "StatefulSet" => {
            let spec = doc.parse::<StatefulSet>()?.spec.unwrap_or_default();
            (spec.template.spec, template_labels(&spec.template.metadata), spec.replicas.unwrap_or(1))
        }
        "ReplicaSet" => {
            let spec = doc.parse::<ReplicaSet>()?.spec.unwrap_or_default();
            let template = spec.template.unwrap_or_default();
            (template.spec, template_labels(&template.metadata), spec.replicas.unwrap_or(1))
        }
        _ => {
            let spec = doc.parse::<Job>()?.spec.unwrap_or_default();
            let parallelism = spec.parallelism.unwrap_or(1);
            let count = spec.completions.map_or(parallelism, |c| c.min(parallelism));
            (spec.template.spec, template_labels(&spec.template.metadata), count)
        }
    };
    let spec = spec.ok_or_else(|| doc.error(format!("{} {} has no pod spec", doc.kind, doc.name)))?;
    let spec = crate::apis::pod::PodSpec::from_template(&spec).map_err(|e| doc.error(e.to_string()))?;
    let prefix = format!("{}/{}", doc.namespace, doc.name);
    (0..count.max(0))
        .map(|i| {
            let id = if doc.kind == "Pod" { prefix.clone() } else { format!("{prefix}-{i}") };
            pod_request(&id, &labels, &spec).map_err(|e| doc.error(e.0).into())
        })
        .collect()
}

#[derive(Deserialize)]
struct NodePoolDocument {
    spec: KubeNodePoolSpec,
}

fn nodepool_of(doc: &Document, max_pods: MaxPodsSettings) -> Result<NodePoolSpec, CliError> {
    let parsed: NodePoolDocument = doc.parse()?;
    Ok(nodepool(&doc.name, &parsed.spec, max_pods).map_err(|e| doc.error(e.0))?)
}

fn max_pods_settings(args: &PlanArgs) -> Result<MaxPodsSettings, CliError> {
    let mut settings = MaxPodsSettings { prefix_delegation: args.prefix_delegation, ..Default::default() };
    if let Some(path) = &args.nodeclass {
        #[derive(Deserialize)]
        struct NodeClassDocument {
            spec: EC2NodeClassSpec,
        }
        for doc in read_documents(path)? {
            expect_kind(&doc, &["EC2NodeClass"])?;
            let spec = doc.parse::<NodeClassDocument>()?.spec;
            if let Some(kubelet) = spec.kubelet {
                settings.max_pods = kubelet.max_pods;
                settings.pods_per_core = kubelet.pods_per_core;
            }
            match spec.prefix_delegation {
                Some(PrefixDelegation::Enabled) => settings.prefix_delegation = true,
                Some(PrefixDelegation::Disabled) => settings.prefix_delegation = false,
                None | Some(PrefixDelegation::Auto) => {}
            }
        }
    }
    Ok(settings)
}

/// What a plan is made with: the region's instance types, zones and prices, and what they describe.
pub(super) struct PlanCatalog {
    pub(super) region: String,
    pub(super) instance_types: Vec<InstanceTypeInfo>,
    pub(super) prices: PriceTable,
    pub(super) zones_note: Option<String>,
    pub(super) description: String,
}

impl PlanCatalog {
    /// The embedded catalog as `region` has it. A region it does not cover gets every type its prices list, in
    /// one region-wide "zone".
    pub(super) fn embedded(region: &str) -> Self {
        let prices = PriceTable::embedded_for(region);
        let (instance_types, zones_note) = match embedded_instance_types_in(region) {
            Some(types) => (types, None),
            None => {
                let types = embedded_instance_types()
                    .iter()
                    .filter(|t| prices.on_demand(&t.name).is_some())
                    .map(|t| InstanceTypeInfo { zones: vec![region.to_string()], ..t.clone() })
                    .collect();
                let note = format!(
                    "the offline catalog does not know {region}'s zones: nodes are planned region-wide (zone \"{region}\")"
                );
                (types, Some(note))
            }
        };
        let description = format!("embedded, {region}: {EMBEDDED_CATALOG_PROVENANCE}");
        Self { region: region.to_string(), instance_types, prices, zones_note, description }
    }

    /// What the region's AWS says now; prices it does not give keep their embedded value (and say so).
    pub(super) async fn live(region: Option<&str>) -> Result<Self, CliError> {
        let sdk = crate::aws::sdk_config(region).await;
        let region = sdk.region().map_or_else(|| HOME_REGION.to_string(), ToString::to_string);
        let cloud = crate::cloud::AwsCloud::new(&sdk);
        let instance_types = cloud.instance_types().await?;
        let mut prices = PriceTable::embedded_for(&region);
        crate::controller::catalog_refresh::read_prices(&cloud, &mut prices).await;
        let description = format!(
            "live: {region}'s instance types and zones (DescribeInstanceTypes, DescribeInstanceTypeOfferings) and \
             prices (the Pricing API, the spot price history; the embedded ones where AWS gave none) at {}",
            jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ")
        );
        Ok(Self { region, instance_types, prices, zones_note: None, description })
    }
}

/// A general-purpose NodePool like Karpenter's getting-started one.
fn default_nodepool(max_pods: MaxPodsSettings) -> NodePoolSpec {
    NodePoolSpec {
        name: "default".into(),
        weight: 0,
        requirements: vec![
            Requirement::equals("kubernetes.io/arch", "amd64"),
            Requirement::equals("kubernetes.io/os", "linux"),
            Requirement::new("karpenter.sh/capacity-type", Operator::In, &["spot", "on-demand"]),
            Requirement::new("karpenter.k8s.aws/instance-category", Operator::In, &["c", "m", "r"]),
            Requirement::new("karpenter.k8s.aws/instance-generation", Operator::Gt, &["2"]),
        ],
        labels: BTreeMap::new(),
        taints: vec![],
        startup_taints: vec![],
        limits: None,
        max_pods,
        overhead: Default::default(),
        ephemeral_storage: Default::default(),
        min_values_policy: Default::default(),
    }
}

impl Report for PlanReport {
    fn human(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.nodepool.clone(),
                    n.instance_type.clone(),
                    n.zone.clone(),
                    n.capacity_type.as_str().to_string(),
                    format!("{:.4}", n.price_per_hour),
                    n.pods.len().to_string(),
                    format!("{:.1}", n.cpu_use_percent),
                    format!("{:.1}", n.memory_use_percent),
                ]
            })
            .collect();
        let mut out =
            table(&["NODEPOOL", "INSTANCE TYPE", "ZONE", "CAPACITY", "USD/HOUR", "PODS", "CPU %", "MEMORY %"], &rows);
        let pods: usize = self.nodes.iter().map(|n| n.pods.len()).sum();
        out += &format!(
            "\n{} for {}, {:.4} USD/hour",
            count(self.nodes.len(), "new node"),
            count(pods, "pod"),
            self.total_price_per_hour
        );
        out += &format!(
            "\nin {}: on-demand from {}; spot from {}\ncatalog: {}",
            self.region,
            self.on_demand_prices.describe(),
            self.spot_prices.describe(),
            self.catalog
        );
        if let Some(note) = &self.zones_note {
            out += &format!("\n{note}");
        }
        let on_existing: usize = self.existing.values().map(Vec::len).sum();
        if on_existing > 0 {
            out += &format!("; {} fit on {}", count(on_existing, "pod"), count(self.existing.len(), "existing node"));
        }
        out += "\n";
        if !self.unschedulable.is_empty() {
            out += &match self.unschedulable.len() {
                1 => "\n1 pod fits nowhere:\n".to_string(),
                n => format!("\n{n} pods fit nowhere:\n"),
            };
            for u in &self.unschedulable {
                out += &format!("  {}: {}\n", u.pod, u.reason);
            }
        }
        out
    }
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}
