//! Every clap type lives here, so the whole command line reads in one place. Each subcommand has a file of its
//! own that returns one report struct; `output` prints it as a table or as JSON.

mod cluster_read;
mod controller;
mod crds;
mod explain;
mod manifests;
mod max_pods;
mod migrate;
mod operator_policy;
mod output;
mod plan;
mod progress;
mod render;
mod setup;
mod status;
mod teardown;
mod version;

use clap::{Args, Parser, Subcommand};

pub use output::{OutputFormat, Report};

/// Just-in-time nodes for Amazon EKS.
#[derive(Debug, Parser)]
#[command(name = "nodesmith", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// AWS region; defaults to the SDK's usual chain (AWS_REGION, the profile, IMDS).
    #[arg(long, global = true, env = "AWS_REGION")]
    pub region: Option<String>,
    /// How results are printed.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// Log filter: a level (error, warn, info, debug, trace) or a tracing directive such as `nodesmith=debug`.
    #[arg(long, global = true, env = "NODESMITH_LOG_LEVEL", default_value = "warn")]
    pub log_level: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the in-cluster controller: provisioning, launch, node lifecycle, termination, garbage collection.
    Controller(controller::ControllerArgs),
    /// The CustomResourceDefinitions nodesmith serves (Karpenter v1's NodePool, NodeClaim, EC2NodeClass) as YAML.
    Crds(crds::CrdsArgs),
    /// Why a pod waits or got the node it got; what disruption would do with a node now, or what holds it. Read
    /// from the cluster of the current kubeconfig context.
    Explain(explain::ExplainArgs),
    /// Moving in: old Karpenter manifests to v1.
    Migrate(migrate::MigrateArgs),
    /// Pod density per instance type (ENI-limited, or with VPC CNI prefix delegation).
    MaxPods(max_pods::MaxPodsArgs),
    /// The IAM policy whoever runs setup and teardown needs (JSON, to paste into IAM or Terraform).
    OperatorPolicy(operator_policy::OperatorPolicyArgs),
    /// Which nodes these pods would get, and at what price (offline, from the embedded catalog).
    Plan(plan::PlanArgs),
    /// The NodePool and EC2NodeClass manifests of nodeclasses/, filled in for a cluster.
    Render(render::RenderArgs),
    /// Create (or bring up to date) the AWS side of a cluster: IAM, interruption queue and rules, discovery tags,
    /// subnets. Idempotent.
    Setup(setup::SetupArgs),
    /// Each NodePool at a glance, from the cluster of the current kubeconfig context: nodes by type and capacity
    /// type, $/hour, requested against allocatable CPU and memory, disruptions its budgets allow now; pending pods.
    Status(status::StatusArgs),
    /// Delete what setup and the controller made for a cluster (found by their tags), and nothing else.
    Teardown(teardown::TeardownArgs),
    /// Print the version of nodesmith and of the APIs it serves.
    Version,
}

/// Runs the parsed command and prints its report.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let format = cli.global.output;
    match &cli.command {
        Command::Controller(args) => controller::run(args, &cli.global).await,
        Command::Crds(args) => output::print(&crds::run(args)?, format, "crds"),
        Command::Explain(args) => output::print(&explain::run(args, &cli.global).await?, format, "explain"),
        Command::Migrate(args) => match &args.what {
            migrate::MigrateCommand::Manifests(args) => output::print(&migrate::run(args).await?, format, "migrate"),
            migrate::MigrateCommand::FromClusterAutoscaler(args) => {
                output::print(&migrate::from_cluster_autoscaler(args, &cli.global).await?, format, "migrate")
            }
        },
        Command::MaxPods(args) => output::print(&max_pods::run(args, &cli.global).await?, format, "max-pods"),
        Command::OperatorPolicy(args) => output::print(&operator_policy::run(args), format, "operator-policy"),
        Command::Plan(args) => output::print(&plan::run(args, cli.global.region.as_deref()).await?, format, "plan"),
        Command::Render(args) => output::print(&render::run(args, cli.global.region.as_deref())?, format, "render"),
        Command::Setup(args) => output::print(&setup::run(args, &cli.global).await?, format, "setup"),
        Command::Status(args) => output::print(&status::run(args, &cli.global).await?, format, "status"),
        Command::Teardown(args) => output::print(&teardown::run(args, &cli.global).await?, format, "teardown"),
        Command::Version => output::print(&version::report(), format, "version"),
    }
}

/// What the command line reports to the user: one sentence that says what went wrong and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("could not write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("could not encode the output as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Crd(#[from] crate::apis::crds::CrdError),
    #[error("`{command}` has no tab-separated form; use --output human or --output json")]
    NoTsv { command: &'static str },
    #[error("unknown instance type {name:?}{suggestion}")]
    UnknownInstanceType { name: String, suggestion: String },
    #[error(transparent)]
    Cloud(#[from] crate::cloud::error::CloudError),
    #[error(transparent)]
    Manifest(#[from] manifests::ManifestError),
    #[error(transparent)]
    Setup(#[from] crate::bootstrap::setup::SetupError),
    #[error(transparent)]
    Teardown(#[from] crate::bootstrap::teardown::TeardownError),
    #[error(transparent)]
    Controller(#[from] crate::controller::StartError),
    #[error("{0}")]
    NotConfirmed(String),
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    #[error(transparent)]
    Migrate(#[from] crate::migrate::MigrateError),
    #[error(transparent)]
    FromClusterAutoscaler(#[from] crate::bootstrap::from_cluster_autoscaler::MigrationError),
    #[error(transparent)]
    KubeTarget(#[from] crate::bootstrap::kube_target::KubeTargetError),
    #[error(
        "{server} serves none of Karpenter's older APIs (v1alpha5 Provisioner, v1alpha1 AWSNodeTemplate, v1beta1 \
         NodePool or EC2NodeClass): nothing to convert there; give the manifests as files instead"
    )]
    NoOldKarpenterApi { server: String },
    #[error("could not write the chart values: {0}")]
    Values(String),
    #[error(
        "the node role setup creates is named for the cluster's region: pass --region (or set AWS_REGION), or name \
         the role with --node-role"
    )]
    NoRegionForNodeRole,
    #[error(
        "no Kubernetes cluster to read ({reason}): set KUBECONFIG or run aws eks update-kubeconfig --name <cluster>"
    )]
    NoKubeconfig { reason: String },
    #[error(
        "the cluster does not serve {what} (Karpenter v1): install nodesmith's CRDs (`nodesmith crds | kubectl \
         apply -f -`, or the Helm chart)"
    )]
    KarpenterApiMissing { what: &'static str },
    #[error("could not list {what} through the current kubeconfig context: {source}")]
    KubeList { what: &'static str, source: kube::Error },
    #[error("no NodePool {name:?} in this cluster")]
    UnknownNodePool { name: String },
    #[error("no {kind} {name:?} in this cluster{hint}")]
    NotFound { kind: &'static str, name: String, hint: String },
    #[error("could not write {path}: {source}")]
    WriteFile { path: std::path::PathBuf, source: std::io::Error },
}
