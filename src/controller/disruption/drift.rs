//! What drift compares each NodeClaim with, worked out once per pass rather than once per NodeClaim: each
//! NodePool's hash and requirements, and each EC2NodeClass's hash and what it resolves now.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use super::super::Context;
use crate::apis::drift_hash::{EC2NODECLASS_HASH_VERSION, NODEPOOL_HASH_VERSION, nodeclass_hash, nodepool_hash};
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::scheduling_input::nodepool as scheduling_nodepool;
use crate::disruption::drift::{DriftInput, drift_reason};
use crate::names::{
    EC2NODECLASS_HASH_ANNOTATION, EC2NODECLASS_HASH_VERSION_ANNOTATION, NODEPOOL_HASH_ANNOTATION,
    NODEPOOL_HASH_VERSION_ANNOTATION, NODEPOOL_LABEL, SECURITY_GROUPS_ANNOTATION, SUBNET_ANNOTATION,
};
use crate::scheduling::Requirement;

struct PoolNow {
    hash: String,
    requirements: Vec<Requirement>,
}

struct ClassNow {
    hash: String,
    amis: Vec<String>,
    subnets: Vec<String>,
    security_groups: Vec<String>,
}

pub struct DriftReference {
    pools: HashMap<String, PoolNow>,
    classes: HashMap<String, ClassNow>,
}

impl DriftReference {
    pub fn new(ctx: &Context) -> Self {
        let pools = ctx
            .state
            .nodepools
            .state()
            .iter()
            .map(|pool| {
                let requirements = scheduling_nodepool(&pool.name_any(), &pool.spec, Default::default())
                    .map(|p| p.requirements)
                    .unwrap_or_default();
                (pool.name_any(), PoolNow { hash: nodepool_hash(&pool.spec), requirements })
            })
            .collect();
        let classes = ctx
            .state
            .nodeclasses
            .state()
            .iter()
            .map(|class| {
                let status = class.status.clone().unwrap_or_default();
                let now = ClassNow {
                    hash: nodeclass_hash(&class.spec),
                    amis: status.amis.iter().map(|a| a.id.clone()).collect(),
                    subnets: status.subnets.iter().map(|s| s.id.clone()).collect(),
                    security_groups: status.security_groups.iter().map(|g| g.id.clone()).collect(),
                };
                (class.name_any(), now)
            })
            .collect();
        Self { pools, classes }
    }

    /// The drift reason of a registered NodeClaim, or None.
    pub fn drift_of(&self, claim: &NodeClaim, node: &Node) -> Option<String> {
        let pool = self.pools.get(claim.labels().get(NODEPOOL_LABEL)?)?;
        let class = self.classes.get(&claim.spec.node_class_ref.name);
        let annotations = claim.annotations();
        let pair =
            |hash: &str, version: &str| Some((annotations.get(hash)?.as_str(), annotations.get(version)?.as_str()));
        let none: &[String] = &[];
        drift_reason(&DriftInput {
            nodepool_hash: pair(NODEPOOL_HASH_ANNOTATION, NODEPOOL_HASH_VERSION_ANNOTATION),
            current_nodepool_hash: (&pool.hash, NODEPOOL_HASH_VERSION),
            nodeclass_hash: pair(EC2NODECLASS_HASH_ANNOTATION, EC2NODECLASS_HASH_VERSION_ANNOTATION),
            current_nodeclass_hash: class.map(|c| (c.hash.as_str(), EC2NODECLASS_HASH_VERSION)),
            requirements: &pool.requirements,
            labels: node.labels(),
            image_id: claim.status.as_ref().and_then(|s| s.image_id.as_deref()),
            amis: class.map_or(none, |c| &c.amis),
            subnet: annotations.get(SUBNET_ANNOTATION).map(String::as_str),
            subnets: class.map_or(none, |c| &c.subnets),
            security_groups: annotations.get(SECURITY_GROUPS_ANNOTATION).map(|g| g.split(',').collect()),
            class_security_groups: class.map_or(none, |c| &c.security_groups),
        })
        .map(str::to_string)
    }
}
