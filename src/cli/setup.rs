//! `nodesmith setup`: the whole AWS side of a cluster, idempotently.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::output::table;
use super::render::write_nodeclasses;
use super::{CliError, GlobalArgs, Report};
use crate::bootstrap::kube_target::{KubeTarget, KubeTargetError};
use crate::bootstrap::report::Ledger;
use crate::bootstrap::setup::{self, DiscoveryValue, Identity, NodeAccess, SetupOptions};
use crate::render::NodeClassValues;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiscoveryScope {
    /// `karpenter.sh/discovery=<cluster name>`.
    Cluster,
    /// `karpenter.sh/discovery=<the VPC's Name tag>`, for several clusters sharing one VPC's subnets.
    Vpc,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The EKS cluster.
    #[arg(long)]
    pub cluster: String,
    /// Namespace of the controller's ServiceAccount (trusted through IRSA, or named by the Pod Identity
    /// association).
    #[arg(long, default_value = "nodesmith")]
    pub namespace: String,
    /// The controller's ServiceAccount.
    #[arg(long, default_value = "nodesmith")]
    pub service_account: String,
    /// How the controller's pods get its role.
    #[arg(long, value_enum, default_value_t = Identity::Irsa)]
    pub identity: Identity,
    /// How nodes are let into the cluster. aws-auth writes the ConfigMap through the current kubeconfig context,
    /// which must be this cluster's.
    #[arg(long, value_enum, default_value_t = NodeAccess::AccessEntry)]
    pub node_access: NodeAccess,
    /// Also server-side apply the CRDs and the rendered EC2NodeClass and NodePools (current kubeconfig context,
    /// which must be this cluster's).
    #[arg(long)]
    pub apply: bool,
    /// What the discovery tag's value is.
    #[arg(long, value_enum, default_value_t = DiscoveryScope::Cluster)]
    pub discovery_scope: DiscoveryScope,
    /// An explicit discovery tag value (overrides --discovery-scope).
    #[arg(long)]
    pub discovery_value: Option<String>,
    /// Create one subnet of this prefix length (e.g. 22) per zone from the VPC's free space.
    #[arg(long, value_name = "PREFIX", value_parser = clap::value_parser!(u8).range(16..=28))]
    pub create_subnets: Option<u8>,
    /// Show what would change, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the Helm chart values for this cluster (IRSA role annotation, cluster name and endpoint, queue).
    #[arg(long, value_name = "FILE")]
    pub values_out: Option<PathBuf>,
    /// Render the nodeclasses/ templates (EC2NodeClass, NodePools) for this cluster into this directory.
    #[arg(long, value_name = "DIR")]
    pub nodeclasses_out: Option<PathBuf>,
}

pub async fn run(args: &SetupArgs, global: &GlobalArgs) -> Result<Ledger, CliError> {
    let sdk = crate::aws::sdk_config(global.region.as_deref()).await;
    // Kubernetes is needed only for aws-auth and --apply; setup checks that the context is this cluster's.
    let needs_kube = args.node_access == NodeAccess::AwsAuth || args.apply;
    let kube = match needs_kube {
        true => Some(KubeTarget::infer().await.map_err(|reason| {
            setup::SetupError::from(KubeTargetError::NoKubeconfig {
                cluster: args.cluster.clone(),
                what: if args.apply { "--apply" } else { "--node-access aws-auth" },
                reason,
            })
        })?),
        false => None,
    };
    let (progress, observer) = super::progress::Progress::start("setup");
    let options = SetupOptions {
        cluster: args.cluster.clone(),
        namespace: args.namespace.clone(),
        service_account: args.service_account.clone(),
        identity: args.identity,
        node_access: args.node_access,
        apply: args.apply,
        kube,
        progress: Some(observer),
        discovery: match (&args.discovery_value, args.discovery_scope) {
            (Some(value), _) => DiscoveryValue::Explicit(value.clone()),
            (None, DiscoveryScope::Cluster) => DiscoveryValue::Cluster,
            (None, DiscoveryScope::Vpc) => DiscoveryValue::Vpc,
        },
        create_subnets: args.create_subnets,
        dry_run: args.dry_run,
    };
    let ledger = setup::run(&sdk, &options).await;
    progress.finish();
    let ledger = ledger?;
    let output = |key: &str| ledger.outputs.get(key).cloned().unwrap_or_default();
    if let Some(path) = &args.values_out {
        std::fs::write(
            path,
            chart_values(
                args,
                &output("controller_role_arn"),
                &output("cluster_endpoint"),
                &output("interruption_queue"),
            )?,
        )?;
    }
    if let Some(dir) = &args.nodeclasses_out {
        let values = NodeClassValues::for_cluster(&args.cluster, &output("node_role"), &output("discovery_value"));
        write_nodeclasses(&values, Some(dir))?;
    }
    Ok(ledger)
}

/// The chart values setup's resources call for: the ServiceAccount the role trusts (annotated with the role under
/// IRSA; Pod Identity's association names it instead), the cluster, its endpoint and the queue.
fn chart_values(args: &SetupArgs, role_arn: &str, endpoint: &str, queue: &str) -> Result<String, CliError> {
    let annotations = match args.identity {
        Identity::Irsa => serde_json::json!({"eks.amazonaws.com/role-arn": role_arn}),
        Identity::PodIdentity => serde_json::json!({}),
    };
    let values = serde_json::json!({
        "serviceAccount": {"name": args.service_account, "annotations": annotations},
        "settings": {"clusterName": args.cluster, "clusterEndpoint": endpoint, "interruptionQueue": queue},
    });
    serde_yaml_ng::to_string(&values).map_err(|e| CliError::Values(e.to_string()))
}

impl Report for Ledger {
    fn human(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .resources
            .iter()
            .map(|r| {
                let action = serde_json::to_value(r.action).ok().and_then(|v| v.as_str().map(str::to_string));
                vec![r.kind.to_string(), r.id.clone(), action.unwrap_or_default(), r.note.clone().unwrap_or_default()]
            })
            .collect();
        let mut out = table(&["KIND", "ID", "ACTION", "NOTE"], &rows);
        let verb = if self.dry_run { "would make" } else { "made" };
        out += &format!("\n{verb} {} mutating call{}\n", self.changes, if self.changes == 1 { "" } else { "s" });
        out
    }
}
