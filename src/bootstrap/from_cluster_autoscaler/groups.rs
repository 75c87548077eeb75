//! The AWS half of the move from Cluster Autoscaler: the cluster's node groups (EKS managed node groups and the
//! Auto Scaling groups tagged for the cluster), and the two changes made to them: a lower minimum size, and one
//! instance terminated with the desired capacity decremented (so the group does not replace it).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_autoscaling::types::AutoScalingGroup;

use super::plan::NodeGroup;
use crate::cloud::error::CloudError;
use crate::names::cluster_tag_key;

/// The tags EKS puts on a managed node group's Auto Scaling group.
const EKS_CLUSTER_TAG: &str = "eks:cluster-name";
const EKS_NODEGROUP_TAG: &str = "eks:nodegroup-name";

pub struct Groups {
    autoscaling: aws_sdk_autoscaling::Client,
    eks: aws_sdk_eks::Client,
    ec2: aws_sdk_ec2::Client,
}

impl Groups {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            autoscaling: aws_sdk_autoscaling::Client::new(sdk),
            eks: aws_sdk_eks::Client::new(sdk),
            ec2: aws_sdk_ec2::Client::new(sdk),
        }
    }

    /// Every Auto Scaling group of the cluster: those behind its EKS managed node groups, and those tagged
    /// `kubernetes.io/cluster/<cluster>` (owned or shared) or `eks:cluster-name=<cluster>`.
    pub async fn of_cluster(&self, cluster: &str) -> Result<Vec<NodeGroup>, CloudError> {
        let managed = self.managed_groups(cluster).await?;
        let mut pages = self.autoscaling.describe_auto_scaling_groups().into_paginator().send();
        let mut groups = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CloudError::from_sdk("autoscaling:DescribeAutoScalingGroups", None, e))?;
            for group in page.auto_scaling_groups() {
                let name = group.auto_scaling_group_name().unwrap_or_default().to_string();
                let tag = |key: &str| {
                    group.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value()).map(str::to_string)
                };
                let tagged = tag(&cluster_tag_key(cluster)).is_some_and(|v| v == "owned" || v == "shared")
                    || tag(EKS_CLUSTER_TAG).as_deref() == Some(cluster);
                let nodegroup = managed.get(&name).cloned().or_else(|| tag(EKS_NODEGROUP_TAG));
                if !tagged && !managed.contains_key(&name) {
                    continue;
                }
                let instance_types = self.instance_types(group).await?;
                groups.push(NodeGroup {
                    name,
                    nodegroup,
                    min_size: group.min_size().unwrap_or_default(),
                    max_size: group.max_size().unwrap_or_default(),
                    desired: group.desired_capacity().unwrap_or_default(),
                    instances: group
                        .instances()
                        .iter()
                        .filter(|i| {
                            i.lifecycle_state().is_some_and(|s| s.as_str() == "InService" || s.as_str() == "Pending")
                        })
                        .filter_map(|i| i.instance_id().map(str::to_string))
                        .collect(),
                    instance_types,
                });
            }
        }
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(groups)
    }

    /// Auto Scaling group name → EKS managed node group name.
    async fn managed_groups(&self, cluster: &str) -> Result<BTreeMap<String, String>, CloudError> {
        let mut by_group = BTreeMap::new();
        let mut pages = self.eks.list_nodegroups().cluster_name(cluster).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CloudError::from_sdk("eks:ListNodegroups", Some(cluster), e))?;
            for nodegroup in page.nodegroups() {
                let described = self
                    .eks
                    .describe_nodegroup()
                    .cluster_name(cluster)
                    .nodegroup_name(nodegroup)
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("eks:DescribeNodegroup", Some(nodegroup), e))?;
                let groups = described.nodegroup().and_then(|n| n.resources()).map(|r| r.auto_scaling_groups());
                for group in groups.unwrap_or_default() {
                    if let Some(name) = group.name() {
                        by_group.insert(name.to_string(), nodegroup.clone());
                    }
                }
            }
        }
        Ok(by_group)
    }

    /// The types a group launches: its instances' now, a mixed instances policy's overrides, and its launch
    /// template's.
    async fn instance_types(&self, group: &AutoScalingGroup) -> Result<Vec<String>, CloudError> {
        let mut types: BTreeSet<String> =
            group.instances().iter().filter_map(|i| i.instance_type().map(str::to_string)).collect();
        let mixed = group.mixed_instances_policy().and_then(|m| m.launch_template());
        types.extend(
            mixed
                .map(|t| t.overrides())
                .unwrap_or_default()
                .iter()
                .filter_map(|o| o.instance_type().map(str::to_string)),
        );
        let template = group.launch_template().cloned().or_else(|| mixed?.launch_template_specification().cloned());
        if let Some(template) = template {
            let mut request = self.ec2.describe_launch_template_versions();
            request = match (template.launch_template_id(), template.launch_template_name()) {
                (Some(id), _) => request.launch_template_id(id),
                (None, Some(name)) => request.launch_template_name(name),
                (None, None) => return Ok(types.into_iter().collect()),
            };
            let version = template.version().unwrap_or("$Default");
            let described = request
                .versions(version)
                .send()
                .await
                .map_err(|e| CloudError::from_sdk("ec2:DescribeLaunchTemplateVersions", None, e))?;
            for version in described.launch_template_versions() {
                let instance_type = version.launch_template_data().and_then(|d| d.instance_type());
                types.extend(instance_type.map(|t| t.as_str().to_string()));
            }
        }
        Ok(types.into_iter().collect())
    }

    /// Lowers (or, on rollback, restores) a group's minimum size; the desired capacity is raised to it if below.
    pub async fn set_min_size(&self, group: &str, min_size: i32, desired: i32) -> Result<(), CloudError> {
        self.autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(group)
            .min_size(min_size)
            .desired_capacity(desired.max(min_size))
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("autoscaling:UpdateAutoScalingGroup", Some(group), e))?;
        Ok(())
    }

    /// Terminates one instance of its group and decrements the group's desired capacity, so it is not replaced.
    pub async fn terminate(&self, instance_id: &str) -> Result<(), CloudError> {
        self.autoscaling
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .map_err(|e| {
                CloudError::from_sdk("autoscaling:TerminateInstanceInAutoScalingGroup", Some(instance_id), e)
            })?;
        Ok(())
    }
}
