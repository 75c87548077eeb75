//! The NodeClaim the provisioner (and disruption, for a replacement) creates for one planned node.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use super::drift_hash;
use super::ec2nodeclass::EC2NodeClass;
use super::nodeclaim::{NodeClaim, NodeClaimResources, NodeClaimSpec};
use super::nodepool::{NodePool, NodeSelectorRequirementWithMinValues};
use super::scheduling_input::resource_quantities;
use crate::names::{
    CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, MIN_VALUES_RELAXED_ANNOTATION, NODEPOOL_LABEL, TERMINATION_FINALIZER,
    ZONE_LABEL,
};
use crate::scheduling::NewNode;

/// Characters of a generated name's suffix: the API server's own (no vowels, so no words, and no look-alikes).
const NAME_SUFFIX_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `POOL-xxxxx`, as the API server's generateName makes it.
pub fn fresh_name(pool: &str) -> String {
    let suffix: String =
        (0..5).map(|_| char::from(NAME_SUFFIX_CHARS[fastrand::usize(..NAME_SUFFIX_CHARS.len())])).collect();
    format!("{pool}-{suffix}")
}

/// The NodeClaim for one planned node: the NodePool's template, narrowed to the instance types, zones and capacity
/// types the plan allows, and the plan's requests; stamped with the NodePool's and EC2NodeClass's hashes, so
/// that drift can tell when either changes.
pub fn for_planned_node(node: &NewNode, pool: &NodePool, class: Option<&EC2NodeClass>) -> NodeClaim {
    let template = &pool.spec.template;
    let narrowed = [INSTANCE_TYPE_LABEL, ZONE_LABEL, CAPACITY_TYPE_LABEL];
    let mut requirements: Vec<NodeSelectorRequirementWithMinValues> =
        template.spec.requirements.iter().filter(|r| !narrowed.contains(&r.key.as_str())).cloned().collect();
    let min_values = |key: &str| template.spec.requirements.iter().find(|r| r.key == key).and_then(|r| r.min_values);
    // Relaxed (BestEffort), it asks no more distinct types than it got.
    let type_count = u32::try_from(node.instance_type_options.len()).unwrap_or(u32::MAX);
    requirements.push(NodeSelectorRequirementWithMinValues {
        key: INSTANCE_TYPE_LABEL.into(),
        operator: "In".into(),
        values: node.instance_type_options.clone(),
        min_values: min_values(INSTANCE_TYPE_LABEL).map(|min| min.min(type_count)),
    });
    requirements.push(NodeSelectorRequirementWithMinValues {
        key: ZONE_LABEL.into(),
        operator: "In".into(),
        values: node.zones.clone(),
        min_values: None,
    });
    requirements.push(NodeSelectorRequirementWithMinValues {
        key: CAPACITY_TYPE_LABEL.into(),
        operator: "In".into(),
        values: node.capacity_types.iter().map(|c| c.as_str().to_string()).collect(),
        min_values: None,
    });
    let mut labels = template.metadata.labels.clone();
    labels.insert(NODEPOOL_LABEL.into(), pool.name_any());
    let owner = OwnerReference {
        api_version: NodePool::api_version(&()).into_owned(),
        kind: NodePool::kind(&()).into_owned(),
        name: pool.name_any(),
        uid: pool.metadata.uid.clone().unwrap_or_default(),
        block_owner_deletion: Some(true),
        controller: None,
    };
    let mut annotations = template.metadata.annotations.clone();
    let stamps = class.into_iter().flat_map(|c| drift_hash::nodeclass_annotations(&c.spec));
    for (key, value) in drift_hash::nodepool_annotations(&pool.spec).into_iter().chain(stamps) {
        annotations.insert(key.into(), value);
    }
    if node.min_values_relaxed {
        annotations.insert(MIN_VALUES_RELAXED_ANNOTATION.into(), "true".into());
    }
    NodeClaim {
        metadata: ObjectMeta {
            // Named here, as the API server's generateName would: the launch may then be prepared under this name
            // before the create is answered.
            name: Some(fresh_name(&pool.name_any())),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            // Made with its finalizer, not given it by the first reconcile: one API round trip less between the
            // plan and the launch.
            finalizers: Some(vec![TERMINATION_FINALIZER.into()]),
            ..Default::default()
        },
        spec: NodeClaimSpec {
            taints: template.spec.taints.clone(),
            startup_taints: template.spec.startup_taints.clone(),
            requirements,
            resources: NodeClaimResources { requests: resource_quantities(&node.requests) },
            node_class_ref: template.spec.node_class_ref.clone(),
            termination_grace_period: template.spec.termination_grace_period.clone(),
            expire_after: template.spec.expire_after.clone(),
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CapacityType;
    use crate::catalog::resources::Resources;

    #[test]
    fn a_planned_node_becomes_a_nodeclaim_of_its_pool_narrowed_to_the_plan_and_ready_to_launch() {
        let pool: NodePool = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "general", "uid": "u-1"},
            "spec": {"template": {
                "metadata": {"labels": {"team": "web"}},
                "spec": {
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                    "requirements": [
                        {"key": INSTANCE_TYPE_LABEL, "operator": "Exists", "minValues": 2},
                        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    ],
                }
            }}
        }))
        .expect("a NodePool");
        let node = NewNode {
            nodepool: "general".into(),
            instance_type: "m5.large".into(),
            zone: "us-east-1a".into(),
            capacity_type: CapacityType::Spot,
            price_per_hour: 0.03,
            pods: vec!["shop/web-1".into()],
            requests: Resources::default(),
            allocatable: Resources::default(),
            instance_type_options: vec!["m5.large".into(), "c5.xlarge".into()],
            zones: vec!["us-east-1a".into()],
            capacity_types: vec![CapacityType::Spot, CapacityType::OnDemand],
            labels: Default::default(),
            min_values_relaxed: false,
        };
        let claim = for_planned_node(&node, &pool, None);
        let requirement = |key: &str| claim.spec.requirements.iter().find(|r| r.key == key).cloned();
        let types = requirement(INSTANCE_TYPE_LABEL).expect("instance types");
        assert_eq!((types.operator.as_str(), types.values.as_slice()), ("In", &node.instance_type_options[..]));
        assert_eq!(types.min_values, Some(2), "the pool's minValues carries over");
        assert_eq!(requirement(ZONE_LABEL).map(|r| r.values), Some(vec!["us-east-1a".to_string()]));
        assert_eq!(
            requirement(CAPACITY_TYPE_LABEL).map(|r| r.values),
            Some(vec!["spot".to_string(), "on-demand".to_string()])
        );
        assert_eq!(requirement("kubernetes.io/arch").map(|r| r.values), Some(vec!["amd64".to_string()]));
        assert_eq!(claim.labels().get(NODEPOOL_LABEL).map(String::as_str), Some("general"));
        assert_eq!(claim.labels().get("team").map(String::as_str), Some("web"));
        let owner = claim.owner_references().first().cloned().expect("owned by its pool");
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("NodePool", "u-1"));
        // Made with the termination finalizer: its first reconcile launches instead of adding it.
        assert_eq!(claim.finalizers(), [TERMINATION_FINALIZER]);
        assert!(!claim.annotations().contains_key(MIN_VALUES_RELAXED_ANNOTATION));

        // BestEffort gave it a single type: it says so, and asks for no more than it has.
        let relaxed = NewNode { instance_type_options: vec!["m5.large".into()], min_values_relaxed: true, ..node };
        let claim = for_planned_node(&relaxed, &pool, None);
        assert_eq!(claim.annotations().get(MIN_VALUES_RELAXED_ANNOTATION).map(String::as_str), Some("true"));
        let types = claim.spec.requirements.iter().find(|r| r.key == INSTANCE_TYPE_LABEL).expect("instance types");
        assert_eq!(types.min_values, Some(1));
    }
}
