//! EKS environments in moto: the sandbox's `demo` one (DESIGN.md: a VPC named `demo-vpc`, three private /24
//! subnets in three zones, a node security group, an EKS cluster with an OIDC issuer), and the isolated ones tests
//! make for themselves. Every step looks before it creates, so seeding twice changes nothing.

use anyhow::{Context, Result};
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use aws_sdk_eks::types::VpcConfigRequest;
use serde_json::{Value, json};

const KUBERNETES_VERSION: &str = "1.36";

/// An EKS cluster and the network it runs in.
#[derive(Debug, Clone)]
pub struct Environment {
    pub cluster: String,
    /// The VPC's `Name` tag; None leaves the VPC unnamed.
    pub vpc_name: Option<String>,
    pub vpc_cidr: String,
    /// (zone letter, CIDR) of each private subnet.
    pub subnets: Vec<(String, String)>,
}

impl Environment {
    /// The sandbox's `demo` environment (DESIGN.md's contract), for a cluster of that name.
    pub fn demo(cluster: &str) -> Self {
        Self::named(cluster, Some("demo-vpc"))
    }

    /// The demo's layout (10.0.0.0/16, three /24s), with its own VPC name.
    pub fn named(cluster: &str, vpc_name: Option<&str>) -> Self {
        Self {
            cluster: cluster.to_string(),
            vpc_name: vpc_name.map(str::to_string),
            vpc_cidr: "10.0.0.0/16".to_string(),
            subnets: [("a", "10.0.1.0/24"), ("b", "10.0.2.0/24"), ("c", "10.0.3.0/24")]
                .iter()
                .map(|(zone, cidr)| (zone.to_string(), cidr.to_string()))
                .collect(),
        }
    }
}

pub async fn seed_demo(sdk: &aws_config::SdkConfig, cluster: &str) -> Result<Value> {
    seed(sdk, &Environment::demo(cluster)).await
}

/// Creates the environment; returns its ids.
pub async fn seed(sdk: &aws_config::SdkConfig, env: &Environment) -> Result<Value> {
    let cluster = env.cluster.as_str();
    let ec2 = aws_sdk_ec2::Client::new(sdk);
    let eks = aws_sdk_eks::Client::new(sdk);
    let region = sdk.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into());

    // An unnamed VPC is found by a tag naming its cluster instead.
    let (key, value) = match &env.vpc_name {
        Some(name) => ("Name", name.clone()),
        None => ("sandbox.nodesmith.dev/vpc-of", cluster.to_string()),
    };
    let vpc_id = vpc_tagged(&ec2, key, &value, &env.vpc_cidr).await?;
    let mut subnet_ids = Vec::new();
    for (zone_letter, cidr) in &env.subnets {
        let zone = format!("{region}{zone_letter}");
        subnet_ids.push(subnet(&ec2, &vpc_id, &zone, cidr).await?);
    }
    let security_group_id = node_security_group(&ec2, &vpc_id, cluster).await?;
    let cluster_info = eks_cluster(&eks, cluster, &subnet_ids, &security_group_id).await?;

    Ok(json!({
        "vpc_id": vpc_id,
        "subnet_ids": subnet_ids,
        "node_security_group_id": security_group_id,
        "cluster": cluster_info,
    }))
}

fn tags(resource: ResourceType, pairs: &[(&str, &str)]) -> TagSpecification {
    let mut spec = TagSpecification::builder().resource_type(resource);
    for (key, value) in pairs {
        spec = spec.tags(Tag::builder().key(*key).value(*value).build());
    }
    spec.build()
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

async fn vpc_tagged(ec2: &aws_sdk_ec2::Client, key: &str, value: &str, cidr: &str) -> Result<String> {
    let found = ec2.describe_vpcs().filters(filter(&format!("tag:{key}"), value)).send().await?;
    if let Some(id) = found.vpcs().iter().find_map(|v| v.vpc_id()) {
        return Ok(id.to_string());
    }
    let created = ec2
        .create_vpc()
        .cidr_block(cidr)
        .tag_specifications(tags(ResourceType::Vpc, &[(key, value)]))
        .send()
        .await
        .context("creating the VPC")?;
    created.vpc().and_then(|v| v.vpc_id()).map(str::to_string).context("CreateVpc returned no id")
}

async fn subnet(ec2: &aws_sdk_ec2::Client, vpc_id: &str, zone: &str, cidr: &str) -> Result<String> {
    let found =
        ec2.describe_subnets().filters(filter("vpc-id", vpc_id)).filters(filter("cidr-block", cidr)).send().await?;
    if let Some(id) = found.subnets().iter().find_map(|s| s.subnet_id()) {
        return Ok(id.to_string());
    }
    let name = format!("demo-private-{zone}");
    let created = ec2
        .create_subnet()
        .vpc_id(vpc_id)
        .availability_zone(zone)
        .cidr_block(cidr)
        .tag_specifications(tags(ResourceType::Subnet, &[("Name", &name), ("kubernetes.io/role/internal-elb", "1")]))
        .send()
        .await
        .with_context(|| format!("creating subnet {cidr} in {zone}"))?;
    created.subnet().and_then(|s| s.subnet_id()).map(str::to_string).context("CreateSubnet returned no id")
}

async fn node_security_group(ec2: &aws_sdk_ec2::Client, vpc_id: &str, cluster: &str) -> Result<String> {
    let group_name = format!("{cluster}-node");
    let found = ec2
        .describe_security_groups()
        .filters(filter("vpc-id", vpc_id))
        .filters(filter("group-name", &group_name))
        .send()
        .await?;
    if let Some(id) = found.security_groups().iter().find_map(|g| g.group_id()) {
        return Ok(id.to_string());
    }
    let created = ec2
        .create_security_group()
        .vpc_id(vpc_id)
        .group_name(&group_name)
        .description(format!("nodes of EKS cluster {cluster}"))
        .tag_specifications(tags(ResourceType::SecurityGroup, &[("Name", &group_name)]))
        .send()
        .await
        .context("creating the node security group")?;
    created.group_id().map(str::to_string).context("CreateSecurityGroup returned no id")
}

async fn eks_cluster(
    eks: &aws_sdk_eks::Client,
    name: &str,
    subnet_ids: &[String],
    security_group_id: &str,
) -> Result<Value> {
    let cluster = match eks.describe_cluster().name(name).send().await {
        Ok(found) => found.cluster,
        Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
            eks.create_cluster()
                .name(name)
                .version(KUBERNETES_VERSION)
                .role_arn(format!("arn:aws:iam::123456789012:role/{name}-cluster"))
                .resources_vpc_config(
                    VpcConfigRequest::builder()
                        .set_subnet_ids(Some(subnet_ids.to_vec()))
                        .security_group_ids(security_group_id)
                        .endpoint_private_access(true)
                        .build(),
                )
                .send()
                .await
                .context("creating the EKS cluster")?
                .cluster
        }
        Err(error) => return Err(error).context("describing the EKS cluster"),
    };
    let cluster = cluster.context("EKS returned no cluster")?;
    Ok(json!({
        "name": cluster.name(),
        "arn": cluster.arn(),
        "version": cluster.version(),
        "endpoint": cluster.endpoint(),
        "oidc_issuer": cluster.identity().and_then(|i| i.oidc()).and_then(|o| o.issuer()),
    }))
}
