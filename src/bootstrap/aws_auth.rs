//! The `aws-auth` ConfigMap's `mapRoles` (the pre-access-entry way EKS maps IAM roles to Kubernetes groups): adding
//! the node role's mapping and taking it away again, leaving every other mapping as it was written.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};

pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "aws-auth";
pub const MAP_ROLES: &str = "mapRoles";
/// What EKS's own node groups write for a node role.
pub const NODE_USERNAME: &str = "system:node:{{EC2PrivateDNSName}}";
pub const NODE_GROUPS: [&str; 2] = ["system:bootstrappers", "system:nodes"];

#[derive(Debug, thiserror::Error)]
#[error(
    "kube-system/aws-auth mapRoles is not a YAML list of role mappings ({0}); fix it by hand or use --node-access access-entry"
)]
pub struct MapRolesError(String);

/// One entry of `mapRoles`; fields nodesmith does not know are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RoleMapping {
    rolearn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty", skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// `groups: null` (or `groups:` with nothing after it) is an empty list.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

/// The same groups, in any order.
fn same_groups(a: &[String], b: &[String]) -> bool {
    a.iter().collect::<std::collections::BTreeSet<_>>() == b.iter().collect::<std::collections::BTreeSet<_>>()
}

fn parse(map_roles: &str) -> Result<Vec<RoleMapping>, MapRolesError> {
    if map_roles.trim().is_empty() {
        return Ok(Vec::new());
    }
    let parsed: Option<Vec<RoleMapping>> =
        serde_yaml_ng::from_str(map_roles).map_err(|e| MapRolesError(e.to_string()))?;
    Ok(parsed.unwrap_or_default())
}

fn node_mapping(role_arn: &str) -> RoleMapping {
    RoleMapping {
        rolearn: role_arn.to_string(),
        username: Some(NODE_USERNAME.to_string()),
        groups: NODE_GROUPS.iter().map(|g| g.to_string()).collect(),
        other: serde_json::Map::new(),
    }
}

/// `mapRoles` with the node role mapped as EKS maps node roles; `None` if it already is (nothing to write).
pub fn with_node_role(map_roles: &str, role_arn: &str) -> Result<Option<String>, MapRolesError> {
    let mut mappings = parse(map_roles)?;
    let wanted = node_mapping(role_arn);
    match mappings.iter_mut().find(|m| m.rolearn == role_arn) {
        Some(existing) if existing.username == wanted.username && same_groups(&existing.groups, &wanted.groups) => {
            return Ok(None);
        }
        Some(existing) => {
            existing.username = wanted.username;
            existing.groups = wanted.groups;
        }
        None => mappings.push(wanted),
    }
    serde_yaml_ng::to_string(&mappings).map(Some).map_err(|e| MapRolesError(e.to_string()))
}

/// `mapRoles` without the role's mapping; `None` if it has none.
pub fn without_role(map_roles: &str, role_arn: &str) -> Result<Option<String>, MapRolesError> {
    let mut mappings = parse(map_roles)?;
    let before = mappings.len();
    mappings.retain(|m| m.rolearn != role_arn);
    if mappings.len() == before {
        return Ok(None);
    }
    serde_yaml_ng::to_string(&mappings).map(Some).map_err(|e| MapRolesError(e.to_string()))
}

/// What [`edit_map_roles`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// The edit changed nothing.
    Unchanged,
    /// The ConfigMap was written (or, with `write` false, would have been).
    Written,
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error(transparent)]
    MapRoles(#[from] MapRolesError),
    #[error("kube-system/aws-auth: {0}")]
    Kube(#[from] kube::Error),
    #[error("kube-system/aws-auth kept changing under us ({EDIT_ATTEMPTS} conflicting writes): run again")]
    KeptChanging,
}

/// Writes to aws-auth race other writers (eksctl, other setups): each conflict re-reads and edits again.
const EDIT_ATTEMPTS: usize = 5;

/// Applies `edit` to kube-system/aws-auth's mapRoles (an absent ConfigMap reads as empty, and is created if the
/// edit adds something). Each write carries the resourceVersion it read, so a concurrent writer's change is never
/// lost: on a conflict the ConfigMap is read and edited again. With `write` false, only says what would change.
pub async fn edit_map_roles(
    client: &kube::Client,
    write: bool,
    edit: impl Fn(&str) -> Result<Option<String>, MapRolesError>,
) -> Result<Edit, EditError> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), NAMESPACE);
    for _ in 0..EDIT_ATTEMPTS {
        let current = api.get_opt(NAME).await?;
        let map_roles =
            current.as_ref().and_then(|c| c.data.as_ref()).and_then(|d| d.get(MAP_ROLES)).cloned().unwrap_or_default();
        let Some(updated) = edit(&map_roles)? else { return Ok(Edit::Unchanged) };
        if !write {
            return Ok(Edit::Written);
        }
        let written = match current {
            Some(mut config_map) => {
                config_map.data.get_or_insert_with(Default::default).insert(MAP_ROLES.into(), updated);
                api.replace(NAME, &PostParams::default(), &config_map).await
            }
            None => {
                let config_map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(NAME.into()),
                        namespace: Some(NAMESPACE.into()),
                        ..Default::default()
                    },
                    data: Some([(MAP_ROLES.to_string(), updated)].into()),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &config_map).await
            }
        };
        match written {
            Ok(_) => return Ok(Edit::Written),
            // Someone else wrote (or created it) in between: read again.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(EditError::KeptChanging)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE_ROLE: &str = "arn:aws:iam::123456789012:role/nodesmith-node-demo";
    const EXISTING: &str = r#"- rolearn: arn:aws:iam::123456789012:role/eks-node-group
  username: system:node:{{EC2PrivateDNSName}}
  groups:
    - system:bootstrappers
    - system:nodes
- rolearn: arn:aws:iam::123456789012:role/admins
  username: admin
  groups: [system:masters]
  extra: kept
"#;

    #[test]
    fn the_node_role_is_added_once_and_other_mappings_are_kept() {
        let added = with_node_role(EXISTING, NODE_ROLE).expect("parses").expect("a change");
        let mappings = parse(&added).expect("still a list");
        assert_eq!(mappings.len(), 3);
        assert_eq!(mappings[2], node_mapping(NODE_ROLE));
        assert_eq!(mappings[1].other.get("extra"), Some(&serde_json::json!("kept")));
        assert_eq!(with_node_role(&added, NODE_ROLE).expect("parses"), None, "a second run changes nothing");
    }

    #[test]
    fn a_wrong_mapping_of_the_node_role_is_corrected() {
        let wrong = format!("- rolearn: {NODE_ROLE}\n  username: someone\n  groups: [system:masters]\n");
        let fixed = with_node_role(&wrong, NODE_ROLE).expect("parses").expect("a change");
        assert_eq!(parse(&fixed).expect("a list"), vec![node_mapping(NODE_ROLE)]);
    }

    #[test]
    fn removing_takes_only_the_node_role() {
        let added = with_node_role(EXISTING, NODE_ROLE).expect("parses").expect("a change");
        let removed = without_role(&added, NODE_ROLE).expect("parses").expect("a change");
        assert_eq!(parse(&removed).expect("a list"), parse(EXISTING).expect("a list"));
        assert_eq!(without_role(&removed, NODE_ROLE).expect("parses"), None);
    }

    #[test]
    fn groups_in_another_order_are_the_same_and_null_groups_parse() {
        let reordered = format!(
            "- rolearn: {NODE_ROLE}\n  username: system:node:{{{{EC2PrivateDNSName}}}}\n  groups: [system:nodes, system:bootstrappers]\n"
        );
        assert_eq!(with_node_role(&reordered, NODE_ROLE).expect("parses"), None);
        let null_groups = "- rolearn: arn:aws:iam::123456789012:role/x\n  username: x\n  groups: null\n";
        let added = with_node_role(null_groups, NODE_ROLE).expect("parses").expect("a change");
        assert_eq!(parse(&added).expect("a list").len(), 2);
    }

    #[test]
    fn an_empty_or_missing_list_starts_one_and_garbage_is_refused() {
        assert!(with_node_role("", NODE_ROLE).expect("empty is fine").is_some());
        assert!(with_node_role("not: [a list", NODE_ROLE).is_err());
    }
}
