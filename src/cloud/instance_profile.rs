//! The instance profile an EC2NodeClass's nodes launch with: the one named in `spec.instanceProfile`, or, for
//! `spec.role`, a profile of this cluster holding that role (reused if setup or an earlier run made one).

use aws_sdk_iam::types::Tag;

use super::error::CloudError;
use super::instances::{NODECLASS_TAG, cluster_tag_key};
use crate::bootstrap::setup::OWNER_TAG;

fn ours(tags: &[Tag], cluster: &str) -> bool {
    let cluster_key = cluster_tag_key(cluster);
    tags.iter()
        .any(|t| (t.key() == OWNER_TAG && t.value() == cluster) || (t.key() == cluster_key && t.value() == "owned"))
}

/// A profile name within IAM's 128 characters: `nodesmith-<cluster>-<nodeclass>`, hashed when too long.
pub fn profile_name(cluster: &str, nodeclass: &str) -> String {
    crate::bootstrap::names::fit(crate::bootstrap::names::INSTANCE_PROFILE, &format!("nodesmith-{cluster}-{nodeclass}"))
}

/// Returns the name of a profile of this cluster that holds `role`, creating it when there is none.
pub async fn ensure_for_role(
    iam: &aws_sdk_iam::Client,
    cluster: &str,
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
        if ours(tags, cluster) {
            return Ok(name.to_string());
        }
    }
    let name = profile_name(cluster, nodeclass);
    let created = iam
        .create_instance_profile()
        .instance_profile_name(&name)
        .tags(
            Tag::builder()
                .key(cluster_tag_key(cluster))
                .value("owned")
                .build()
                .map_err(|e| CloudError::call("iam:CreateInstanceProfile", e.to_string()))?,
        )
        .tags(
            Tag::builder()
                .key(NODECLASS_TAG)
                .value(nodeclass)
                .build()
                .map_err(|e| CloudError::call("iam:CreateInstanceProfile", e.to_string()))?,
        )
        .send()
        .await;
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
