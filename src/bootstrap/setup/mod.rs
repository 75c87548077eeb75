//! `nodesmith setup`: reads the cluster, then gets or creates, step by step, the AWS side the controller needs.
//! Every step looks before it writes, so a second run makes no mutating call.

mod access;
mod iam;
mod manifests;
mod network;
pub mod queue;

use aws_sdk_ec2::types::Tag as Ec2Tag;

use super::aws_auth::MapRolesError;
use super::kube_target::{KubeTarget, KubeTargetError};
use super::report::{Ledger, ProgressObserver};
use crate::cloud::error::CloudError;
use crate::cloud::resource_names::ClusterNames;
use crate::names::{DISCOVERY_TAG, OWNER_TAG};

#[derive(Debug, Clone)]
pub enum DiscoveryValue {
    /// The cluster's name.
    Cluster,
    /// The VPC's `Name` tag.
    Vpc,
    Explicit(String),
}

/// How the controller's pods get the controller role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Identity {
    /// IAM Roles for Service Accounts: the role trusts the cluster's OIDC provider (created if absent).
    #[default]
    Irsa,
    /// EKS Pod Identity: the role trusts pods.eks.amazonaws.com, and an association names the ServiceAccount.
    PodIdentity,
}

/// How nodes with the node role are let into the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeAccess {
    /// An EKS access entry of type EC2_LINUX (clusters with the API or API_AND_CONFIG_MAP authentication mode).
    #[default]
    AccessEntry,
    /// A mapping in the kube-system/aws-auth ConfigMap, written through the Kubernetes API.
    AwsAuth,
}

#[derive(Debug, Clone)]
pub struct SetupOptions {
    pub cluster: String,
    /// The controller's ServiceAccount.
    pub namespace: String,
    pub service_account: String,
    pub identity: Identity,
    pub node_access: NodeAccess,
    pub discovery: DiscoveryValue,
    /// Prefix length of one new subnet per zone, if any.
    pub create_subnets: Option<u8>,
    /// Server-side apply the CRDs and the rendered EC2NodeClass and NodePools.
    pub apply: bool,
    pub dry_run: bool,
    /// The Kubernetes API, for `--node-access aws-auth` and `--apply`; used only if it is the cluster's.
    pub kube: Option<KubeTarget>,
    /// Told of each step and resource as setup goes (spinners, plain lines).
    pub progress: Option<ProgressObserver>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("EKS cluster {cluster:?} was not found in {region}: check --cluster and --region")]
    ClusterNotFound { cluster: String, region: String },
    #[error(
        "the VPC {vpc} of cluster {cluster} has no Name tag to use as the discovery value: tag it, or pass \
         --discovery-value (or --discovery-scope cluster)"
    )]
    VpcWithoutName { vpc: String, cluster: String },
    #[error(
        "{kind} {name} exists but was not made by nodesmith for cluster {cluster} (no {OWNER_TAG}={cluster} tag): \
         delete or rename it, or use another cluster name"
    )]
    NotOurs { kind: &'static str, name: String, cluster: String },
    #[error(
        "{kind} {name} is tagged for region {region}: it belongs to cluster {cluster} there, not here; delete it or \
         run setup in {region}"
    )]
    OtherRegion { kind: &'static str, name: String, cluster: String, region: String },
    #[error(
        "IAM role {role} trusts {trusted}, not this cluster ({wanted}): it belongs to another cluster of the same \
         name (or to this one before it was recreated). Run `nodesmith teardown` for that cluster, or delete the role"
    )]
    TrustsAnother { role: String, trusted: String, wanted: String },
    #[error(
        "{resource} already has {DISCOVERY_TAG}={existing}, not {wanted}: another cluster discovers it; pass --discovery-value {existing} to share it"
    )]
    DiscoveryConflict { resource: String, existing: String, wanted: String },
    #[error(
        "no free /{prefix} is left in VPC {vpc} for {zone}; free ranges: {free}. Add a secondary CIDR block to the VPC or ask for smaller subnets"
    )]
    NoRoomForSubnet { prefix: u8, vpc: String, zone: String, free: String },
    #[error("cluster {cluster} reports no {what}")]
    Incomplete { cluster: String, what: &'static str },
    #[error("{0}")]
    Conflict(String),
    #[error("Kubernetes: {0}")]
    Kube(String),
    #[error(transparent)]
    KubeTarget(#[from] KubeTargetError),
    #[error(transparent)]
    MapRoles(#[from] MapRolesError),
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

/// What setup learns from DescribeCluster.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub name: String,
    pub arn: String,
    pub partition: String,
    pub region: String,
    pub account_id: String,
    pub endpoint: String,
    pub version: String,
    pub vpc_id: String,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub oidc_issuer: Option<String>,
    /// API, API_AND_CONFIG_MAP or CONFIG_MAP (None when EKS does not say, as moto does not).
    pub authentication_mode: Option<String>,
}

/// The clients and facts every step shares.
pub struct Setup<'a> {
    pub options: &'a SetupOptions,
    pub cluster: ClusterInfo,
    pub names: ClusterNames,
    pub ec2: aws_sdk_ec2::Client,
    pub iam: aws_sdk_iam::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub eks: aws_sdk_eks::Client,
    pub ledger: Ledger,
}

/// Runs every step in order and returns what each did.
pub async fn run(sdk: &aws_config::SdkConfig, options: &SetupOptions) -> Result<Ledger, SetupError> {
    let ec2 = aws_sdk_ec2::Client::new(sdk);
    let eks = aws_sdk_eks::Client::new(sdk);
    let cluster = describe_cluster(&eks, &ec2, &options.cluster, sdk).await?;
    let mut setup = Setup {
        options,
        names: ClusterNames::for_cluster(&options.cluster, &cluster.region),
        cluster,
        ec2,
        iam: aws_sdk_iam::Client::new(sdk),
        sqs: aws_sdk_sqs::Client::new(sdk),
        events: aws_sdk_eventbridge::Client::new(sdk),
        eks,
        ledger: Ledger::with_observer(options.dry_run, options.progress.clone()),
    };
    // Before any change: nodes let in a way the cluster ignores would never join.
    match (options.node_access, setup.cluster.authentication_mode.as_deref()) {
        (NodeAccess::AwsAuth, Some("API")) => {
            return Err(SetupError::Conflict(format!(
                "cluster {} authenticates with access entries only (authentication mode API), so aws-auth is \
                 ignored: use --node-access access-entry",
                options.cluster
            )));
        }
        (NodeAccess::AccessEntry, Some("CONFIG_MAP")) => {
            return Err(SetupError::Conflict(format!(
                "cluster {} has no access entries (authentication mode CONFIG_MAP): use --node-access aws-auth, or \
                 switch the cluster to API_AND_CONFIG_MAP (aws eks update-cluster-config --access-config \
                 authenticationMode=API_AND_CONFIG_MAP)",
                options.cluster
            )));
        }
        _ => {}
    }
    // Before any change: a kubeconfig on another cluster must stop setup, not leave it half done.
    if options.node_access == NodeAccess::AwsAuth {
        setup.kube_client("--node-access aws-auth")?;
    }
    if options.apply {
        setup.kube_client("--apply")?;
    }
    setup.ledger.step("node role and instance profile");
    let node_role_arn = setup.node_role().await?;
    setup.instance_profile().await?;
    setup.ledger.step("node access");
    setup.node_access(&node_role_arn).await?;
    setup.ledger.step("controller role");
    let controller_role = setup.controller_role().await?;
    let controller_role_arn =
        format!("arn:{}:iam::{}:role/{controller_role}", setup.cluster.partition, setup.cluster.account_id);
    if options.identity == Identity::PodIdentity {
        setup.pod_identity_association(&controller_role_arn).await?;
    }
    setup.ledger.step("interruption queue");
    let queue_arn = setup.interruption_queue().await?;
    setup.ledger.step("controller policies");
    setup.controller_policies(&controller_role, &node_role_arn, &queue_arn).await?;
    setup.ledger.step("EventBridge rules");
    setup.interruption_rules(&queue_arn).await?;
    setup.ledger.step("spot service-linked role");
    setup.spot_service_linked_role().await?;
    setup.ledger.step("discovery tags");
    let discovery_value = setup.discovery_value().await?;
    setup.discovery_tags(&discovery_value).await?;
    if let Some(prefix) = options.create_subnets {
        setup.ledger.step("subnets");
        setup.subnets(prefix, &discovery_value).await?;
    }
    if options.apply {
        setup.ledger.step("CRDs and nodeclasses");
        setup.apply_manifests(&discovery_value).await?;
    }
    let cluster = &setup.cluster;
    let outputs = [
        ("node_role", setup.names.node_role.clone()),
        ("node_role_arn", node_role_arn),
        ("instance_profile", setup.names.instance_profile.clone()),
        ("controller_role_arn", controller_role_arn),
        ("interruption_queue", setup.names.queue.clone()),
        ("interruption_queue_arn", queue_arn),
        ("cluster_endpoint", cluster.endpoint.clone()),
        ("discovery_value", discovery_value),
    ];
    setup.ledger.outputs.extend(outputs);
    Ok(setup.ledger)
}

async fn describe_cluster(
    eks: &aws_sdk_eks::Client,
    ec2: &aws_sdk_ec2::Client,
    name: &str,
    sdk: &aws_config::SdkConfig,
) -> Result<ClusterInfo, SetupError> {
    let region = sdk.region().map(ToString::to_string).unwrap_or_default();
    let described = match eks.describe_cluster().name(name).send().await {
        Ok(described) => described,
        Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
            return Err(SetupError::ClusterNotFound { cluster: name.to_string(), region });
        }
        Err(error) => return Err(CloudError::from_sdk("eks:DescribeCluster", Some(name), error).into()),
    };
    let incomplete = |what| SetupError::Incomplete { cluster: name.to_string(), what };
    let cluster = described.cluster.ok_or_else(|| incomplete("cluster"))?;
    let arn = cluster.arn().ok_or_else(|| incomplete("ARN"))?.to_string();
    // arn:<partition>:eks:<region>:<account>:cluster/<name>
    let parts: Vec<&str> = arn.split(':').collect();
    let vpc = cluster.resources_vpc_config().ok_or_else(|| incomplete("VPC configuration"))?;
    let mut security_group_ids: Vec<String> = vpc.security_group_ids().to_vec();
    if let Some(cluster_sg) = vpc.cluster_security_group_id() {
        security_group_ids.push(cluster_sg.to_string());
    }
    Ok(ClusterInfo {
        name: name.to_string(),
        partition: parts.get(1).copied().unwrap_or("aws").to_string(),
        region: parts.get(3).map_or(region, |r| r.to_string()),
        account_id: parts.get(4).copied().unwrap_or_default().to_string(),
        arn: arn.clone(),
        endpoint: cluster.endpoint().unwrap_or_default().to_string(),
        version: cluster.version().unwrap_or_default().to_string(),
        vpc_id: match vpc.vpc_id() {
            Some(id) => id.to_string(),
            // Some EKS look-alikes (moto) leave it out: the subnets know.
            None => vpc_of_subnets(ec2, vpc.subnet_ids()).await?.ok_or_else(|| incomplete("VPC"))?,
        },
        subnet_ids: vpc.subnet_ids().to_vec(),
        security_group_ids,
        oidc_issuer: cluster.identity().and_then(|i| i.oidc()).and_then(|o| o.issuer()).map(str::to_string),
        authentication_mode: cluster
            .access_config()
            .and_then(|a| a.authentication_mode())
            .map(|m| m.as_str().to_string()),
    })
}

async fn vpc_of_subnets(ec2: &aws_sdk_ec2::Client, subnet_ids: &[String]) -> Result<Option<String>, SetupError> {
    if subnet_ids.is_empty() {
        return Ok(None);
    }
    let subnets = ec2
        .describe_subnets()
        .set_subnet_ids(Some(subnet_ids.to_vec()))
        .send()
        .await
        .map_err(|e| CloudError::from_sdk("ec2:DescribeSubnets", subnet_ids.first().map(String::as_str), e))?;
    Ok(subnets.subnets().iter().find_map(|s| s.vpc_id()).map(str::to_string))
}

impl Setup<'_> {
    /// The Kubernetes client, once it is shown to talk to this cluster's API server.
    fn kube_client(&self, what: &'static str) -> Result<kube::Client, SetupError> {
        let target = self.options.kube.as_ref().ok_or_else(|| KubeTargetError::NoKubeconfig {
            cluster: self.options.cluster.clone(),
            what,
            reason: "none was given".into(),
        })?;
        Ok(target.for_cluster(&self.options.cluster, &self.cluster.endpoint)?.clone())
    }

    fn owner(&self) -> (String, String) {
        (OWNER_TAG.to_string(), self.options.cluster.clone())
    }

    fn ec2_owner_tag(&self) -> Ec2Tag {
        Ec2Tag::builder().key(OWNER_TAG).value(&self.options.cluster).build()
    }
}
