//! The hashes NodeClaims carry so that drift can be seen: `karpenter.sh/nodepool-hash` over the NodePool
//! template fields whose change means a node is no longer what its pool describes, and
//! `karpenter.k8s.aws/ec2nodeclass-hash` over the EC2NodeClass spec. Karpenter leaves out of these hashes what it
//! checks another way (requirements against the node's labels; subnets, security groups and AMIs against what
//! the class resolves) and what may change without replacing nodes (expireAfter, terminationGracePeriod); so do
//! these. The values are nodesmith's own (SHA-256 of the fields' JSON), so the versions say so: a NodeClaim
//! stamped by Karpenter, or by an older nodesmith, is re-stamped rather than taken as drifted.

use sha2::{Digest, Sha256};

use super::ec2nodeclass::EC2NodeClassSpec;
use super::nodepool::NodePoolSpec;
use crate::names::{
    EC2NODECLASS_HASH_ANNOTATION, EC2NODECLASS_HASH_VERSION_ANNOTATION, NODEPOOL_HASH_ANNOTATION,
    NODEPOOL_HASH_VERSION_ANNOTATION,
};

pub const NODEPOOL_HASH_VERSION: &str = "nodesmith-v1";
pub const EC2NODECLASS_HASH_VERSION: &str = "nodesmith-v1";

fn digest(value: &serde_json::Value) -> String {
    let hash = Sha256::digest(value.to_string().as_bytes());
    // 16 hex digits: as short as Karpenter's, ample against accidental equality.
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

pub fn nodepool_hash(spec: &NodePoolSpec) -> String {
    let template = &spec.template;
    digest(&serde_json::json!({
        "labels": template.metadata.labels,
        "annotations": template.metadata.annotations,
        "taints": template.spec.taints,
        "startupTaints": template.spec.startup_taints,
        "nodeClassRef": template.spec.node_class_ref,
    }))
}

pub fn nodeclass_hash(spec: &EC2NodeClassSpec) -> String {
    let mut value = serde_json::to_value(spec).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        for checked_through_status in [
            "subnetSelectorTerms",
            "securityGroupSelectorTerms",
            "amiSelectorTerms",
            "capacityReservationSelectorTerms",
        ] {
            fields.remove(checked_through_status);
        }
    }
    digest(&value)
}

/// The annotations that stamp a NodeClaim with its NodePool's hash and the hash's version.
pub fn nodepool_annotations(spec: &NodePoolSpec) -> [(&'static str, String); 2] {
    [(NODEPOOL_HASH_ANNOTATION, nodepool_hash(spec)), (NODEPOOL_HASH_VERSION_ANNOTATION, NODEPOOL_HASH_VERSION.into())]
}

/// The annotations that stamp a NodeClaim with its EC2NodeClass's hash and the hash's version.
pub fn nodeclass_annotations(spec: &EC2NodeClassSpec) -> [(&'static str, String); 2] {
    [
        (EC2NODECLASS_HASH_ANNOTATION, nodeclass_hash(spec)),
        (EC2NODECLASS_HASH_VERSION_ANNOTATION, EC2NODECLASS_HASH_VERSION.into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(extra: serde_json::Value) -> NodePoolSpec {
        let mut spec = serde_json::json!({
            "template": {"spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                "requirements": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}],
            }},
        });
        json_merge(&mut spec, extra);
        serde_json::from_value(spec).expect("a NodePool spec")
    }

    fn class(extra: serde_json::Value) -> EC2NodeClassSpec {
        let mut spec = serde_json::json!({
            "role": "node", "amiSelectorTerms": [{"alias": "al2023@latest"}],
            "subnetSelectorTerms": [{"tags": {"a": "b"}}], "securityGroupSelectorTerms": [{"tags": {"a": "b"}}],
        });
        json_merge(&mut spec, extra);
        serde_json::from_value(spec).expect("an EC2NodeClass spec")
    }

    fn json_merge(base: &mut serde_json::Value, extra: serde_json::Value) {
        match (base, extra) {
            (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
                for (key, value) in extra {
                    json_merge(base.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
            (base, extra) => *base = extra,
        }
    }

    #[test]
    fn the_nodepool_hash_moves_with_labels_and_taints_not_requirements_or_expiry() {
        let base = nodepool_hash(&pool(serde_json::json!({})));
        assert_eq!(base, nodepool_hash(&pool(serde_json::json!({}))), "stable");
        assert_ne!(
            base,
            nodepool_hash(&pool(serde_json::json!({"template": {"metadata": {"labels": {"team": "a"}}}})))
        );
        assert_ne!(
            base,
            nodepool_hash(&pool(
                serde_json::json!({"template": {"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}})
            ))
        );
        let requirements = serde_json::json!({"template": {"spec": {"requirements": [], "expireAfter": "1h"}}});
        assert_eq!(base, nodepool_hash(&pool(requirements)), "checked against node labels instead");
        assert_eq!(base, nodepool_hash(&pool(serde_json::json!({"disruption": {"consolidateAfter": "5m"}}))));
    }

    #[test]
    fn the_nodeclass_hash_moves_with_tags_and_user_data_not_selectors() {
        let base = nodeclass_hash(&class(serde_json::json!({})));
        assert_ne!(base, nodeclass_hash(&class(serde_json::json!({"tags": {"team": "a"}}))));
        assert_ne!(base, nodeclass_hash(&class(serde_json::json!({"userData": "echo hi"}))));
        let selectors =
            serde_json::json!({"amiSelectorTerms": [{"id": "ami-1"}], "subnetSelectorTerms": [{"id": "subnet-1"}]});
        assert_eq!(base, nodeclass_hash(&class(selectors)), "checked against the class's status instead");
    }
}
