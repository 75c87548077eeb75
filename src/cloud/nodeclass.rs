//! What an EC2NodeClass's selector terms find in the account: subnets, security groups and AMIs, and the
//! instance profile for its role. Terms are ORed; within a term, every condition must hold (Karpenter's rules).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;

use super::error::CloudError;

/// One selector term: by id, by name, or by tags (a tag value `*` matches any value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectorTerm {
    pub id: Option<String>,
    pub name: Option<String>,
    pub owner: Option<String>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetInfo {
    pub id: String,
    pub zone: String,
    pub zone_id: String,
    pub available_ips: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroupInfo {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub name: String,
    /// `amd64` or `arm64`, as the `kubernetes.io/arch` label says it.
    pub arch: String,
    pub creation_date: String,
    /// Which instance types an alias's image is for: the NVIDIA variant for NVIDIA GPU types, the standard one
    /// for the others. `None` for images chosen by id, name or tags (any type of their architecture).
    pub variant: Option<AmiVariant>,
}

/// The EKS-optimized AMIs an alias family publishes per architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmiVariant {
    Standard,
    /// With the NVIDIA driver and container toolkit: what GPU nodes need to offer `nvidia.com/gpu`.
    Nvidia,
}

fn term_filters(term: &SelectorTerm, id_filter: &str, name_filter: &str) -> Vec<Filter> {
    let mut filters = Vec::new();
    if let Some(id) = &term.id {
        filters.push(Filter::builder().name(id_filter).values(id).build());
    }
    if let Some(name) = &term.name {
        filters.push(Filter::builder().name(name_filter).values(name).build());
    }
    for (key, value) in &term.tags {
        filters.push(if value == "*" {
            Filter::builder().name("tag-key").values(key).build()
        } else {
            Filter::builder().name(format!("tag:{key}")).values(value).build()
        });
    }
    filters
}

/// The subnets any term selects, each once, ordered by id.
pub async fn subnets(ec2: &aws_sdk_ec2::Client, terms: &[SelectorTerm]) -> Result<Vec<SubnetInfo>, CloudError> {
    let mut found: BTreeMap<String, SubnetInfo> = BTreeMap::new();
    for term in terms {
        let filters = term_filters(term, "subnet-id", "tag:Name");
        let mut pages = ec2.describe_subnets().set_filters(Some(filters)).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CloudError::from_sdk("ec2:DescribeSubnets", None, e))?;
            for s in page.subnets() {
                let Some(id) = s.subnet_id() else { continue };
                found.insert(
                    id.to_string(),
                    SubnetInfo {
                        id: id.to_string(),
                        zone: s.availability_zone().unwrap_or_default().to_string(),
                        zone_id: s.availability_zone_id().unwrap_or_default().to_string(),
                        available_ips: i64::from(s.available_ip_address_count().unwrap_or(0)),
                    },
                );
            }
        }
    }
    Ok(found.into_values().collect())
}

/// The security groups any term selects, each once, ordered by id.
pub async fn security_groups(
    ec2: &aws_sdk_ec2::Client,
    terms: &[SelectorTerm],
) -> Result<Vec<SecurityGroupInfo>, CloudError> {
    let mut found: BTreeMap<String, SecurityGroupInfo> = BTreeMap::new();
    for term in terms {
        let filters = term_filters(term, "group-id", "group-name");
        let mut pages = ec2.describe_security_groups().set_filters(Some(filters)).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CloudError::from_sdk("ec2:DescribeSecurityGroups", None, e))?;
            for g in page.security_groups() {
                let Some(id) = g.group_id() else { continue };
                found.insert(
                    id.to_string(),
                    SecurityGroupInfo { id: id.to_string(), name: g.group_name().unwrap_or_default().to_string() },
                );
            }
        }
    }
    Ok(found.into_values().collect())
}

/// The AMIs any term selects (an `alias` term is resolved to an id by the caller, through SSM), newest first.
pub async fn images(ec2: &aws_sdk_ec2::Client, terms: &[SelectorTerm]) -> Result<Vec<ImageInfo>, CloudError> {
    let mut found: BTreeMap<String, ImageInfo> = BTreeMap::new();
    for term in terms {
        let filters = term_filters(term, "image-id", "name");
        let mut request = ec2.describe_images().set_filters(Some(filters));
        if let Some(owner) = &term.owner {
            request = request.owners(owner);
        }
        let answer = request.send().await.map_err(|e| CloudError::from_sdk("ec2:DescribeImages", None, e))?;
        for image in answer.images() {
            let Some(id) = image.image_id() else { continue };
            let arch = match image.architecture().map(|a| a.as_str()) {
                Some("arm64") => "arm64",
                _ => "amd64",
            };
            found.insert(
                id.to_string(),
                ImageInfo {
                    variant: None,
                    id: id.to_string(),
                    name: image.name().unwrap_or_default().to_string(),
                    arch: arch.to_string(),
                    creation_date: image.creation_date().unwrap_or_default().to_string(),
                },
            );
        }
    }
    let mut images: Vec<ImageInfo> = found.into_values().collect();
    images.sort_by(|a, b| b.creation_date.cmp(&a.creation_date).then(a.id.cmp(&b.id)));
    Ok(images)
}

/// The SSM parameter that names the EKS-optimized AMI of an alias (`al2023@latest`, `al2023@v20240807`,
/// `bottlerocket@v1.20.0`) for a Kubernetes version, architecture (`amd64`/`arm64`) and variant: `latest` the
/// family's recommended image, any other version that release, pinned (as Karpenter resolves aliases). `None` for
/// an unknown family, or a variant the family does not publish for that architecture (AL2's GPU image is x86_64
/// only).
pub fn alias_parameter(alias: &str, kubernetes_version: &str, arch: &str, variant: AmiVariant) -> Option<String> {
    let (family, version) = alias.split_once('@').unwrap_or((alias, "latest"));
    let latest = version.eq_ignore_ascii_case("latest");
    let ec2_arch = if arch == "arm64" { "arm64" } else { "x86_64" };
    let nvidia = variant == AmiVariant::Nvidia;
    let base = format!("/aws/service/eks/optimized-ami/{kubernetes_version}");
    match family.to_ascii_lowercase().as_str() {
        "al2023" => {
            let flavour = if nvidia { "nvidia" } else { "standard" };
            let release = if latest {
                "recommended".to_string()
            } else {
                format!("amazon-eks-node-al2023-{ec2_arch}-{flavour}-{kubernetes_version}-{version}")
            };
            Some(format!("{base}/amazon-linux-2023/{ec2_arch}/{flavour}/{release}/image_id"))
        }
        "al2" => {
            let (suffix, image) = match (arch, nvidia) {
                ("arm64", true) => return None,
                ("arm64", false) => ("-arm64", "amazon-eks-arm64-node"),
                (_, true) => ("-gpu", "amazon-eks-gpu-node"),
                _ => ("", "amazon-eks-node"),
            };
            let release =
                if latest { "recommended".to_string() } else { format!("{image}-{kubernetes_version}-{version}") };
            Some(format!("{base}/amazon-linux-2{suffix}/{release}/image_id"))
        }
        "bottlerocket" => {
            let flavour = if nvidia { "-nvidia" } else { "" };
            let release = if latest { "latest" } else { version.trim_start_matches('v') };
            Some(format!(
                "/aws/service/bottlerocket/aws-k8s-{kubernetes_version}{flavour}/{ec2_arch}/{release}/image_id"
            ))
        }
        _ => None,
    }
}

/// The AMI id an SSM parameter names; `None` when the parameter does not exist.
pub async fn image_id_from_parameter(ssm: &aws_sdk_ssm::Client, parameter: &str) -> Result<Option<String>, CloudError> {
    match ssm.get_parameter().name(parameter).send().await {
        Ok(answer) => Ok(answer.parameter().and_then(|p| p.value()).map(str::to_string)),
        Err(error) if error.as_service_error().is_some_and(|e| e.is_parameter_not_found()) => Ok(None),
        Err(error) => Err(CloudError::from_sdk("ssm:GetParameter", Some(parameter), error)),
    }
}

/// The subnet of `zone` with the most free addresses once `in_flight` launches (per subnet) are debited. Under
/// prefix delegation each node takes its addresses in /28 blocks, so a launch costs 16 addresses, not one.
pub fn subnet_with_most_free_ips<'a>(
    subnets: &'a [SubnetInfo],
    zone: &str,
    in_flight: &BTreeMap<String, i64>,
    prefix_delegation: bool,
) -> Option<&'a SubnetInfo> {
    let per_launch = if prefix_delegation { 16 } else { 1 };
    subnets
        .iter()
        .filter(|s| s.zone == zone)
        .map(|s| (s, s.available_ips - in_flight.get(&s.id).copied().unwrap_or(0) * per_launch))
        .filter(|(_, free)| *free >= per_launch)
        // Most free first; the id breaks ties so every replica picks the same subnet.
        .max_by(|(a, fa), (b, fb)| fa.cmp(fb).then(b.id.cmp(&a.id)))
        .map(|(s, _)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(id: &str, zone: &str, free: i64) -> SubnetInfo {
        SubnetInfo { id: id.into(), zone: zone.into(), zone_id: String::new(), available_ips: free }
    }

    #[test]
    fn the_subnet_with_most_free_addresses_after_in_flight_launches_wins() {
        let subnets = [subnet("subnet-a", "z1", 100), subnet("subnet-b", "z1", 90), subnet("subnet-c", "z2", 500)];
        let none = BTreeMap::new();
        assert_eq!(subnet_with_most_free_ips(&subnets, "z1", &none, false).map(|s| s.id.as_str()), Some("subnet-a"));
        let in_flight = BTreeMap::from([("subnet-a".to_string(), 11)]);
        assert_eq!(
            subnet_with_most_free_ips(&subnets, "z1", &in_flight, false).map(|s| s.id.as_str()),
            Some("subnet-b")
        );
        // Under prefix delegation one launch in flight costs 16 addresses.
        let one = BTreeMap::from([("subnet-a".to_string(), 1)]);
        assert_eq!(subnet_with_most_free_ips(&subnets, "z1", &one, true).map(|s| s.id.as_str()), Some("subnet-b"));
        assert_eq!(subnet_with_most_free_ips(&subnets, "z3", &none, false), None);
    }

    #[test]
    fn a_full_subnet_is_never_chosen() {
        let subnets = [subnet("subnet-a", "z1", 10)];
        assert!(subnet_with_most_free_ips(&subnets, "z1", &BTreeMap::new(), true).is_none());
        assert!(subnet_with_most_free_ips(&subnets, "z1", &BTreeMap::new(), false).is_some());
    }

    #[test]
    fn alias_parameters_follow_the_public_ssm_paths() {
        assert_eq!(
            alias_parameter("al2023", "1.36", "amd64", AmiVariant::Standard).as_deref(),
            Some("/aws/service/eks/optimized-ami/1.36/amazon-linux-2023/x86_64/standard/recommended/image_id")
        );
        assert_eq!(
            alias_parameter("al2023", "1.36", "amd64", AmiVariant::Nvidia).as_deref(),
            Some("/aws/service/eks/optimized-ami/1.36/amazon-linux-2023/x86_64/nvidia/recommended/image_id")
        );
        assert_eq!(
            alias_parameter("bottlerocket", "1.36", "arm64", AmiVariant::Standard).as_deref(),
            Some("/aws/service/bottlerocket/aws-k8s-1.36/arm64/latest/image_id")
        );
        assert_eq!(
            alias_parameter("bottlerocket", "1.36", "amd64", AmiVariant::Nvidia).as_deref(),
            Some("/aws/service/bottlerocket/aws-k8s-1.36-nvidia/x86_64/latest/image_id")
        );
        assert_eq!(
            alias_parameter("al2", "1.32", "amd64", AmiVariant::Nvidia).as_deref(),
            Some("/aws/service/eks/optimized-ami/1.32/amazon-linux-2-gpu/recommended/image_id")
        );
        assert_eq!(alias_parameter("al2", "1.32", "arm64", AmiVariant::Nvidia), None);
        assert_eq!(alias_parameter("windows", "1.36", "amd64", AmiVariant::Standard), None);
    }

    #[test]
    fn an_alias_version_pins_that_release() {
        assert_eq!(
            alias_parameter("al2023@latest", "1.30", "amd64", AmiVariant::Standard).as_deref(),
            Some("/aws/service/eks/optimized-ami/1.30/amazon-linux-2023/x86_64/standard/recommended/image_id")
        );
        assert_eq!(
            alias_parameter("al2023@v20240807", "1.30", "arm64", AmiVariant::Nvidia).as_deref(),
            Some(
                "/aws/service/eks/optimized-ami/1.30/amazon-linux-2023/arm64/nvidia/amazon-eks-node-al2023-arm64-nvidia-1.30-v20240807/image_id"
            )
        );
        assert_eq!(
            alias_parameter("al2@v20240807", "1.30", "amd64", AmiVariant::Standard).as_deref(),
            Some("/aws/service/eks/optimized-ami/1.30/amazon-linux-2/amazon-eks-node-1.30-v20240807/image_id")
        );
        assert_eq!(
            alias_parameter("al2@v20240807", "1.30", "arm64", AmiVariant::Standard).as_deref(),
            Some(
                "/aws/service/eks/optimized-ami/1.30/amazon-linux-2-arm64/amazon-eks-arm64-node-1.30-v20240807/image_id"
            )
        );
        assert_eq!(
            alias_parameter("al2@v20240807", "1.30", "amd64", AmiVariant::Nvidia).as_deref(),
            Some("/aws/service/eks/optimized-ami/1.30/amazon-linux-2-gpu/amazon-eks-gpu-node-1.30-v20240807/image_id")
        );
        assert_eq!(
            alias_parameter("bottlerocket@v1.20.0", "1.30", "amd64", AmiVariant::Nvidia).as_deref(),
            Some("/aws/service/bottlerocket/aws-k8s-1.30-nvidia/x86_64/1.20.0/image_id")
        );
    }
}
