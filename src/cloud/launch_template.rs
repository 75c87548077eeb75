//! Launch templates: one per distinct launch configuration (AMI, user data, security groups, instance profile,
//! metadata options, block devices), named by a hash of it, so equal NodeClaims share one and a changed NodeClass
//! gets a new one. Unused templates are deleted by garbage collection.

use aws_sdk_ec2::types::{
    Filter, LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
    LaunchTemplateHttpTokensState, LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateInstanceMetadataProtocolIpv6, LaunchTemplateInstanceNetworkInterfaceSpecificationRequest,
    LaunchTemplateTagSpecificationRequest, RequestLaunchTemplateData, ResourceType, Tag, TagSpecification, VolumeType,
};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::error::CloudError;

/// Prefix of every launch template name nodesmith makes (EC2 allows `/` in names).
pub const NAME_PREFIX: &str = "nodesmith";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetadataOptions {
    pub http_endpoint: String,
    pub http_protocol_ipv6: String,
    pub http_put_response_hop_limit: i32,
    pub http_tokens: String,
}

impl Default for MetadataOptions {
    /// Karpenter's defaults: IMDSv2 only, one hop (pods cannot reach the node's credentials).
    fn default() -> Self {
        Self {
            http_endpoint: "enabled".into(),
            http_protocol_ipv6: "disabled".into(),
            http_put_response_hop_limit: 1,
            http_tokens: "required".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockDevice {
    pub device_name: String,
    pub volume_size_gib: Option<i32>,
    pub volume_type: Option<String>,
    pub iops: Option<i32>,
    pub throughput: Option<i32>,
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
    pub snapshot_id: Option<String>,
    pub delete_on_termination: Option<bool>,
}

/// Everything that makes two launches different beyond the instance type and subnet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LaunchTemplateSpec {
    pub cluster: String,
    pub image_id: String,
    pub user_data: String,
    pub security_group_ids: Vec<String>,
    pub instance_profile: String,
    pub metadata: MetadataOptions,
    pub block_devices: Vec<BlockDevice>,
    pub associate_public_ip: Option<bool>,
    pub detailed_monitoring: bool,
    /// Tags of the template itself and of what it launches (volumes, network interfaces).
    pub tags: Vec<(String, String)>,
}

impl LaunchTemplateSpec {
    /// `nodesmith/<cluster>/<hash of the spec>`; stable across restarts and replicas.
    pub fn name(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(format!("{self:?}"));
        let digest = hasher.finalize();
        let hash: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
        format!("{NAME_PREFIX}/{}/{hash}", self.cluster)
    }
}

/// Returns the template's name, creating the template if it does not exist yet.
pub async fn ensure(ec2: &aws_sdk_ec2::Client, spec: &LaunchTemplateSpec) -> Result<String, CloudError> {
    let name = spec.name();
    // Created straight away rather than looked up first: a new template is one call on the launch path instead of
    // two, and one that exists answers AlreadyExists just as fast. (The caller remembers names it has ensured.)
    let created = ec2
        .create_launch_template()
        .launch_template_name(&name)
        .launch_template_data(template_data(spec))
        .tag_specifications(
            spec.tags
                .iter()
                .fold(TagSpecification::builder().resource_type(ResourceType::LaunchTemplate), |b, (k, v)| {
                    b.tags(Tag::builder().key(k).value(v).build())
                })
                .build(),
        )
        .send()
        .await;
    match created {
        Ok(_) => Ok(name),
        // This or another replica made it before: the same name means the same content.
        Err(error)
            if error.as_service_error().and_then(|e| aws_sdk_ec2::error::ProvideErrorMetadata::code(e))
                == Some("InvalidLaunchTemplateName.AlreadyExistsException") =>
        {
            Ok(name)
        }
        Err(error) => Err(CloudError::from_sdk("ec2:CreateLaunchTemplate", Some(&name), error)),
    }
}

fn template_data(spec: &LaunchTemplateSpec) -> RequestLaunchTemplateData {
    let user_data = base64::engine::general_purpose::STANDARD.encode(spec.user_data.as_bytes());
    let metadata = LaunchTemplateInstanceMetadataOptionsRequest::builder()
        .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::from(spec.metadata.http_endpoint.as_str()))
        .http_protocol_ipv6(LaunchTemplateInstanceMetadataProtocolIpv6::from(spec.metadata.http_protocol_ipv6.as_str()))
        .http_put_response_hop_limit(spec.metadata.http_put_response_hop_limit)
        .http_tokens(LaunchTemplateHttpTokensState::from(spec.metadata.http_tokens.as_str()))
        .build();
    let mut data = RequestLaunchTemplateData::builder().image_id(&spec.image_id).user_data(user_data);
    data = match spec.associate_public_ip {
        // EC2 takes security groups either on the template or on its network interfaces, not both; a public-IP
        // choice needs the primary interface spelled out, so the groups go with it.
        Some(associate) => data.network_interfaces(
            LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                .device_index(0)
                .associate_public_ip_address(associate)
                .set_groups(Some(spec.security_group_ids.clone()))
                .build(),
        ),
        None => data.set_security_group_ids(Some(spec.security_group_ids.clone())),
    };
    data = data
        .iam_instance_profile(
            LaunchTemplateIamInstanceProfileSpecificationRequest::builder().name(&spec.instance_profile).build(),
        )
        .metadata_options(metadata)
        .monitoring(
            aws_sdk_ec2::types::LaunchTemplatesMonitoringRequest::builder().enabled(spec.detailed_monitoring).build(),
        );
    for device in &spec.block_devices {
        let ebs = LaunchTemplateEbsBlockDeviceRequest::builder()
            .set_volume_size(device.volume_size_gib)
            .set_volume_type(device.volume_type.as_deref().map(VolumeType::from))
            .set_iops(device.iops)
            .set_throughput(device.throughput)
            .set_encrypted(device.encrypted)
            .set_kms_key_id(device.kms_key_id.clone())
            .set_snapshot_id(device.snapshot_id.clone())
            .set_delete_on_termination(device.delete_on_termination)
            .build();
        data = data.block_device_mappings(
            LaunchTemplateBlockDeviceMappingRequest::builder().device_name(&device.device_name).ebs(ebs).build(),
        );
    }
    // Every resource a launch from this template creates carries the tags the controller policy's conditions ask
    // for (a spot request included: RunInstances is authorized on spot-instances-request/* with them).
    for resource in [ResourceType::Volume, ResourceType::NetworkInterface, ResourceType::SpotInstancesRequest] {
        let tags = spec
            .tags
            .iter()
            .fold(LaunchTemplateTagSpecificationRequest::builder().resource_type(resource), |b, (k, v)| {
                b.tags(Tag::builder().key(k).value(v).build())
            });
        data = data.tag_specifications(tags.build());
    }
    data.build()
}

/// Deletes the cluster's templates that none of `in_use` names and that are older than `min_age` (a template made
/// for a launch in flight is never taken from under it). Instances already launched do not need their template.
pub async fn delete_unused(
    ec2: &aws_sdk_ec2::Client,
    cluster: &str,
    in_use: &std::collections::HashSet<String>,
    min_age: std::time::Duration,
) -> Result<Vec<String>, CloudError> {
    let mut pages = ec2
        .describe_launch_templates()
        .filters(
            Filter::builder().name(format!("tag:{}", crate::names::cluster_tag_key(cluster))).values("owned").build(),
        )
        .max_results(200)
        .into_paginator()
        .send();
    let mut unused = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| CloudError::from_sdk("ec2:DescribeLaunchTemplates", None, e))?;
        for template in page.launch_templates() {
            let Some(name) = template.launch_template_name() else { continue };
            let age = template
                .create_time()
                .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                .and_then(|t| t.elapsed().ok());
            if deletable(name, age, cluster, in_use, min_age) {
                unused.push(name.to_string());
            }
        }
    }
    let mut deleted = Vec::new();
    for name in unused {
        ec2.delete_launch_template()
            .launch_template_name(&name)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("ec2:DeleteLaunchTemplate", Some(&name), e))?;
        deleted.push(name);
    }
    Ok(deleted)
}

/// A template this cluster's controller made (by its name: Karpenter's, `karpenter.k8s.aws/…`, carry the same
/// cluster tag and stay Karpenter's), not in use and older than `min_age` (an unknown age is young).
fn deletable(
    name: &str,
    age: Option<std::time::Duration>,
    cluster: &str,
    in_use: &std::collections::HashSet<String>,
    min_age: std::time::Duration,
) -> bool {
    let ours = name
        .strip_prefix(NAME_PREFIX)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.strip_prefix(cluster));
    ours.is_some_and(|rest| rest.starts_with('/')) && !in_use.contains(name) && age.is_some_and(|age| age >= min_age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_clusters_own_idle_templates_are_deleted() {
        let hour = std::time::Duration::from_secs(3600);
        let old = Some(2 * hour);
        let none = std::collections::HashSet::new();
        assert!(deletable("nodesmith/demo/abc", old, "demo", &none, hour));
        assert!(!deletable("nodesmith/demo/abc", Some(hour / 2), "demo", &none, hour), "young");
        assert!(!deletable("nodesmith/demo/abc", None, "demo", &none, hour), "age unknown");
        let used = std::collections::HashSet::from(["nodesmith/demo/abc".to_string()]);
        assert!(!deletable("nodesmith/demo/abc", old, "demo", &used, hour), "in use");
        assert!(!deletable("nodesmith/demo-2/abc", old, "demo", &none, hour), "another cluster's");
        // Karpenter v1 names its templates karpenter.k8s.aws/<hash> and tags them with the same cluster.
        assert!(!deletable("karpenter.k8s.aws/15616957348189460630", old, "demo", &none, hour));
    }

    fn spec() -> LaunchTemplateSpec {
        LaunchTemplateSpec {
            cluster: "demo".into(),
            image_id: "ami-1".into(),
            user_data: "data".into(),
            security_group_ids: vec!["sg-1".into()],
            instance_profile: "profile".into(),
            metadata: MetadataOptions::default(),
            block_devices: Vec::new(),
            associate_public_ip: None,
            detailed_monitoring: false,
            tags: Vec::new(),
        }
    }

    #[test]
    fn equal_specs_share_a_name_and_any_change_gives_another() {
        assert_eq!(spec().name(), spec().name());
        assert!(spec().name().starts_with("nodesmith/demo/"));
        assert_ne!(spec().name(), LaunchTemplateSpec { user_data: "other".into(), ..spec() }.name());
        assert_ne!(spec().name(), LaunchTemplateSpec { image_id: "ami-2".into(), ..spec() }.name());
        assert_ne!(spec().name(), LaunchTemplateSpec { associate_public_ip: Some(false), ..spec() }.name());
    }

    #[test]
    fn security_groups_go_on_the_template_unless_a_public_ip_choice_needs_the_interface() {
        let plain = template_data(&spec());
        assert_eq!(plain.security_group_ids(), ["sg-1"]);
        assert!(plain.network_interfaces().is_empty());

        for associate in [true, false] {
            let data = template_data(&LaunchTemplateSpec { associate_public_ip: Some(associate), ..spec() });
            assert!(data.security_group_ids().is_empty());
            let [interface] = data.network_interfaces() else { panic!("{:?}", data.network_interfaces()) };
            assert_eq!(interface.device_index(), Some(0));
            assert_eq!(interface.associate_public_ip_address(), Some(associate));
            assert_eq!(interface.groups(), ["sg-1"]);
        }
    }
}
