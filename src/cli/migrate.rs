//! `nodesmith migrate manifests`: old Karpenter manifests (v1alpha5 Provisioners, v1alpha1 AWSNodeTemplates,
//! v1beta1 NodePools and EC2NodeClasses) as v1 objects, with every field that has no v1 meaning reported.

use clap::{Args, Subcommand};
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use serde::Serialize;
use serde_json::Value;

use super::manifests::read_documents;
use super::{CliError, Report};
use crate::migrate::{Finding, FindingKind, Migration, Options, migrate};

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    pub what: MigrateCommand,
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Converts manifests of older Karpenter APIs to v1, field by field as Karpenter's upgrade guides map them;
    /// other objects pass through unchanged. The YAML goes to standard output, what was changed or left out heads
    /// it as comments (and is in --output json).
    Manifests(ManifestsArgs),
    /// Moves a cluster off Cluster Autoscaler, as Karpenter's checklist does by hand: raises the NodePool's limits to
    /// hold the node groups, taints the groups' nodes NoSchedule (all but --keep), scales Cluster Autoscaler to 0,
    /// then drains one node at a time through the Eviction API and terminates its instance with the group's
    /// desired capacity decremented, once its pods run elsewhere. Safe to run again after an interruption: it
    /// resumes where the cluster stands. Needs `nodesmith setup` and the controller running.
    FromClusterAutoscaler(FromClusterAutoscalerArgs),
}

#[derive(Debug, Args)]
pub struct FromClusterAutoscalerArgs {
    /// The EKS cluster (the current kubeconfig context must be its API server).
    #[arg(long)]
    pub cluster: String,
    /// The NodePool the pods move to.
    #[arg(long, default_value = "default")]
    pub nodepool: String,
    /// Cluster Autoscaler's Deployment.
    #[arg(long, value_name = "NAMESPACE/NAME", default_value = "kube-system/cluster-autoscaler", value_parser = parse_deployment)]
    pub autoscaler: (String, String),
    /// Nodes of the groups left running (untainted) for the nodesmith controller itself.
    #[arg(long, default_value_t = 2)]
    pub keep: usize,
    /// How long one node may take to drain, and its pods to run again elsewhere, before the run stops (run it
    /// again to go on).
    #[arg(long, default_value = "15m", value_parser = crate::duration::parse_flag)]
    pub drain_timeout: std::time::Duration,
    /// Print the steps and what each would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Undo: scale Cluster Autoscaler back to its replicas, lift the taints, restore the groups' minimum sizes.
    #[arg(long, conflicts_with = "dry_run")]
    pub rollback: bool,
}

fn parse_deployment(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((namespace.to_string(), name.to_string()))
        }
        _ => Err(format!("{text:?} is not NAMESPACE/NAME")),
    }
}

#[derive(Debug, Args)]
pub struct ManifestsArgs {
    /// Files of YAML documents; `-` reads standard input.
    #[arg(required_unless_present = "from_cluster")]
    pub files: Vec<String>,
    /// Read the old objects from the cluster of the current kubeconfig context instead (Provisioners,
    /// AWSNodeTemplates, and v1beta1 NodePools and EC2NodeClasses, where it serves those APIs).
    #[arg(long, conflicts_with = "files")]
    pub from_cluster: bool,
    /// The IAM role nodes run as, for node templates that relied on Karpenter's global default instance profile
    /// (`nodesmith setup` names it KarpenterNodeRole-<cluster>-<region>).
    #[arg(long, conflicts_with = "instance_profile")]
    pub role: Option<String>,
    /// Or the instance profile they use.
    #[arg(long)]
    pub instance_profile: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MigrateReport {
    #[serde(flatten)]
    pub migration: Migration,
}

/// `migrate from-cluster-autoscaler`: the cluster's endpoint from EKS, the kubeconfig context checked against it.
pub async fn from_cluster_autoscaler(
    args: &FromClusterAutoscalerArgs,
    global: &super::GlobalArgs,
) -> Result<crate::bootstrap::report::Ledger, CliError> {
    use crate::bootstrap::from_cluster_autoscaler::{self as migration, Options};
    use crate::bootstrap::kube_target::{KubeTarget, KubeTargetError};
    let sdk = crate::aws::sdk_config(global.region.as_deref()).await;
    let eks = aws_sdk_eks::Client::new(&sdk);
    let cluster = crate::cloud::cluster::describe_cluster(&eks, &args.cluster, None).await?;
    let target = KubeTarget::infer().await.map_err(|reason| KubeTargetError::NoKubeconfig {
        cluster: args.cluster.clone(),
        what: "migrate from-cluster-autoscaler",
        reason,
    })?;
    let kube = target.for_cluster(&args.cluster, &cluster.endpoint)?;
    let (progress, observer) = super::progress::Progress::start("migrate");
    let options = Options {
        cluster: args.cluster.clone(),
        nodepool: args.nodepool.clone(),
        autoscaler: args.autoscaler.clone(),
        keep: args.keep,
        drain_timeout: args.drain_timeout,
        dry_run: args.dry_run,
        rollback: args.rollback,
        progress: Some(observer),
    };
    let ledger = migration::run(&sdk, kube, &options).await;
    progress.finish();
    Ok(ledger?)
}

pub async fn run(args: &ManifestsArgs) -> Result<MigrateReport, CliError> {
    let mut documents = if args.from_cluster { from_cluster().await? } else { Vec::new() };
    for file in &args.files {
        for document in read_documents(file)? {
            // Through YAML's own value first: it refuses a key given twice, which a JSON value would keep the
            // last of without a word.
            let yaml: serde_yaml_ng::Value = document.parse()?;
            let value: Value = serde_json::to_value(&yaml).map_err(|e| document.error(e.to_string()))?;
            documents.push(value);
        }
    }
    let options = Options { role: args.role.clone(), instance_profile: args.instance_profile.clone() };
    let migration = migrate(&documents, &options)?;
    Ok(MigrateReport { migration })
}

/// The old APIs a cluster may still serve.
const OLD_KINDS: [(&str, &str, &str); 4] = [
    ("karpenter.sh", "v1alpha5", "Provisioner"),
    ("karpenter.k8s.aws", "v1alpha1", "AWSNodeTemplate"),
    ("karpenter.sh", "v1beta1", "NodePool"),
    ("karpenter.k8s.aws", "v1beta1", "EC2NodeClass"),
];

/// Every object of the old Karpenter APIs the cluster serves, through the dynamic API.
async fn from_cluster() -> Result<Vec<Value>, CliError> {
    let target = super::cluster_read::connect().await?;
    let mut documents = Vec::new();
    let mut served = 0;
    for (group, version, kind) in OLD_KINDS {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let Ok((resource, _)) = kube::discovery::pinned_kind(&target.client, &gvk).await else { continue };
        served += 1;
        let api: Api<DynamicObject> = Api::all_with(target.client.clone(), &resource);
        let what = "objects of the old Karpenter APIs";
        let list = api.list(&ListParams::default()).await.map_err(|source| CliError::KubeList { what, source })?;
        for object in list.items {
            let mut value = serde_json::to_value(&object)?;
            value["apiVersion"] = format!("{group}/{version}").into();
            value["kind"] = kind.into();
            documents.push(value);
        }
    }
    if served == 0 {
        return Err(CliError::NoOldKarpenterApi { server: target.server });
    }
    Ok(documents)
}

impl Report for MigrateReport {
    fn human(&self) -> String {
        let mut out = String::new();
        if self.migration.findings.is_empty() {
            out += "# Converted as it was: nothing changed meaning or was left out.\n";
        }
        for Finding { object, field, kind, message } in &self.migration.findings {
            let what = match kind {
                FindingKind::Dropped => "left out",
                FindingKind::Changed => "changed",
                FindingKind::NotConverted => "NOT CONVERTED",
            };
            let at = if field.is_empty() { String::new() } else { format!(" {field}") };
            out += &format!("# {object}{at}: {what}: {message}\n");
        }
        for object in &self.migration.objects {
            out += "---\n";
            out += &serde_yaml_ng::to_string(object).unwrap_or_default();
        }
        out
    }
}
