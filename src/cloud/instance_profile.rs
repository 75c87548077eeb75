//! The instance profile an EC2NodeClass's nodes launch with: the one named in `spec.instanceProfile`, or, for
//! `spec.role`, a profile of this cluster holding that role (reused if setup or an earlier run made one).

use aws_sdk_iam::types::Tag;

use super::error::CloudError;
use crate::names::{NODECLASS_TAG, OWNER_TAG, REGION_TAG, cluster_tag_key};

/// The other region an IAM resource is tagged for, if it is: it serves that region's cluster of the same name.
pub fn other_region<'a>(tags: &'a [Tag], region: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == REGION_TAG && t.value() != region).map(|t| t.value())
}

/// Made by nodesmith (setup, the Terraform module or the controller) for this cluster, and not in another region
/// (a profile tagged with one is that region's). The cluster tag alone is not enough: Karpenter's profiles carry it
/// too, and they stay Karpenter's (its teardown deletes them), even once nodesmith runs its nodes.
fn ours(tags: &[Tag], cluster: &str, region: &str) -> bool {
    let owned = tags.iter().any(|t| t.key() == OWNER_TAG && t.value() == cluster);
    owned && other_region(tags, region).is_none()
}

pub fn profile_tags(cluster: &str, region: &str, nodeclass: &str) -> [(String, String); 5] {
    [
        (cluster_tag_key(cluster), "owned".into()),
        (OWNER_TAG.into(), cluster.into()),
        ("eks:eks-cluster-name".into(), cluster.into()),
        (REGION_TAG.into(), region.into()),
        (NODECLASS_TAG.into(), nodeclass.into()),
    ]
}

/// A profile name within IAM's 128 characters: `nodesmith-<cluster>-<region>-<nodeclass>` (IAM names are global;
/// the same cluster and class in another region get their own), hashed when too long.
pub fn profile_name(cluster: &str, region: &str, nodeclass: &str) -> String {
    super::resource_names::fit(
        super::resource_names::INSTANCE_PROFILE,
        &format!("nodesmith-{cluster}-{region}-{nodeclass}"),
    )
}

/// Returns the name of a profile of this cluster that holds `role`, creating it when there is none.
pub async fn ensure_for_role(
    iam: &aws_sdk_iam::Client,
    cluster: &str,
    region: &str,
    nodeclass: &str,
    role: &str,
) -> Result<String, CloudError> {
    // `role` may be a name or an ARN; IAM calls want the name.
    let role_name = role.rsplit('/').next().unwrap_or(role);
    let listed = iam
        .list_instance_profiles_for_role()
        .role_name(role_name)
        .send()
        .await
        .map_err(|e| CloudError::from_sdk("iam:ListInstanceProfilesForRole", Some(role_name), e))?;
    for profile in listed.instance_profiles() {
        let name = profile.instance_profile_name();
        // Read from the profile itself: ListInstanceProfiles* answers leave tags out.
        let described = iam
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("iam:GetInstanceProfile", Some(name), e))?;
        let tags = described.instance_profile().map(|p| p.tags()).unwrap_or_default();
        if ours(tags, cluster, region) {
            return Ok(name.to_string());
        }
    }
    let name = profile_name(cluster, region, nodeclass);
    // The tags the controller policy's conditions on instance profiles ask for.
    let mut create = iam.create_instance_profile().instance_profile_name(&name);
    for (key, value) in profile_tags(cluster, region, nodeclass) {
        let tag = Tag::builder()
            .key(key)
            .value(value)
            .build()
            .map_err(|e| CloudError::call("iam:CreateInstanceProfile", e.to_string()))?;
        create = create.tags(tag);
    }
    let created = create.send().await;
    match created {
        Ok(_) => {}
        Err(error) if error.as_service_error().is_some_and(|e| e.is_entity_already_exists_exception()) => {}
        Err(error) => return Err(CloudError::from_sdk("iam:CreateInstanceProfile", Some(&name), error)),
    }
    let added = iam.add_role_to_instance_profile().instance_profile_name(&name).role_name(role_name).send().await;
    match added {
        Ok(_) => Ok(name),
        // Already holds it (a profile holds at most one role).
        Err(error) if error.as_service_error().is_some_and(|e| e.is_limit_exceeded_exception()) => Ok(name),
        Err(error) => Err(CloudError::from_sdk("iam:AddRoleToInstanceProfile", Some(&name), error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Vec<Tag> {
        pairs.iter().filter_map(|(k, v)| Tag::builder().key(*k).value(*v).build().ok()).collect()
    }

    #[test]
    fn a_profile_is_ours_when_made_for_this_cluster_in_this_region() {
        let made = profile_tags("demo", "us-east-1", "default");
        let made: Vec<(&str, &str)> = made.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(ours(&tags(&made), "demo", "us-east-1"));
        assert!(!ours(&tags(&made), "demo", "eu-west-1"), "the same cluster name in another region");
        assert!(!ours(&tags(&made), "other", "us-east-1"));
        // Setup's profile carries the owner tag and no region.
        assert!(ours(&tags(&[(OWNER_TAG, "demo")]), "demo", "us-east-1"));
        assert!(!ours(&tags(&[("karpenter.k8s.aws/ec2nodeclass", "default")]), "demo", "us-east-1"));
        // Karpenter v1's (EC2NodeClass.InstanceProfileTags): the same cluster and region, and not ours to reuse.
        let karpenter = [
            ("kubernetes.io/cluster/demo", "owned"),
            ("eks:eks-cluster-name", "demo"),
            ("karpenter.k8s.aws/ec2nodeclass", "default"),
            ("topology.kubernetes.io/region", "us-east-1"),
        ];
        assert!(!ours(&tags(&karpenter), "demo", "us-east-1"));
    }
}
