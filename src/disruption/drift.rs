//! Is a node still what its NodePool and EC2NodeClass describe? Drifted when a hash it was stamped with no longer
//! matches (same hash version), when its labels no longer meet the NodePool's requirements, or when its AMI is no
//! longer one the EC2NodeClass resolves.

use std::collections::BTreeMap;

use crate::scheduling::Requirement;

/// What drift compares for one NodeClaim.
pub struct DriftInput<'a> {
    /// (hash, version) the NodeClaim carries, and the NodePool's current (hash, version).
    pub nodepool_hash: Option<(&'a str, &'a str)>,
    pub current_nodepool_hash: (&'a str, &'a str),
    /// The same for the EC2NodeClass; `current_nodeclass_hash` is None while the class is missing.
    pub nodeclass_hash: Option<(&'a str, &'a str)>,
    pub current_nodeclass_hash: Option<(&'a str, &'a str)>,
    pub requirements: &'a [Requirement],
    pub labels: &'a BTreeMap<String, String>,
    pub image_id: Option<&'a str>,
    /// The AMIs the class resolves now; empty while it has resolved none (then nothing is judged by AMI).
    pub amis: &'a [String],
    /// The subnet and security groups the instance was launched with (None: not recorded), and what the class
    /// selects now (empty: not resolved; not judged).
    pub subnet: Option<&'a str>,
    pub subnets: &'a [String],
    pub security_groups: Option<Vec<&'a str>>,
    pub class_security_groups: &'a [String],
}

/// The drift reason, as Karpenter names it, or None.
pub fn drift_reason(input: &DriftInput<'_>) -> Option<&'static str> {
    if let Some((hash, version)) = input.nodepool_hash
        && version == input.current_nodepool_hash.1
        && hash != input.current_nodepool_hash.0
    {
        return Some("NodePoolDrifted");
    }
    if let (Some((hash, version)), Some(current)) = (input.nodeclass_hash, input.current_nodeclass_hash)
        && version == current.1
        && hash != current.0
    {
        return Some("NodeClassDrifted");
    }
    // A key the node does not carry as a label cannot be judged from labels (it may be an instance-type
    // property): only present labels, and keys that must be absent, are compared.
    let unmet = input.requirements.iter().any(|r| {
        let value = input.labels.get(&r.key).map(String::as_str);
        value.is_some() && !r.matches(value)
    });
    if unmet {
        return Some("RequirementsDrifted");
    }
    if let Some(image) = input.image_id
        && !input.amis.is_empty()
        && !input.amis.iter().any(|a| a == image)
    {
        return Some("AMIDrift");
    }
    if let Some(subnet) = input.subnet
        && !input.subnets.is_empty()
        && !input.subnets.iter().any(|s| s == subnet)
    {
        return Some("SubnetDrift");
    }
    if let Some(groups) = &input.security_groups
        && !input.class_security_groups.is_empty()
    {
        let mut launched: Vec<&str> = groups.clone();
        let mut selected: Vec<&str> = input.class_security_groups.iter().map(String::as_str).collect();
        launched.sort_unstable();
        launched.dedup();
        selected.sort_unstable();
        selected.dedup();
        if launched != selected {
            return Some("SecurityGroupDrift");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::Operator;

    fn input<'a>(
        labels: &'a BTreeMap<String, String>,
        requirements: &'a [Requirement],
        amis: &'a [String],
    ) -> DriftInput<'a> {
        DriftInput {
            nodepool_hash: Some(("aaa", "v1")),
            current_nodepool_hash: ("aaa", "v1"),
            nodeclass_hash: Some(("ccc", "v1")),
            current_nodeclass_hash: Some(("ccc", "v1")),
            requirements,
            labels,
            image_id: Some("ami-1"),
            amis,
            subnet: Some("subnet-1"),
            subnets: &[],
            security_groups: Some(vec!["sg-2", "sg-1"]),
            class_security_groups: &[],
        }
    }

    #[test]
    fn each_kind_of_drift_is_named() {
        let labels = BTreeMap::from([("karpenter.sh/capacity-type".to_string(), "spot".to_string())]);
        let amis = vec!["ami-1".to_string()];
        let spot = [Requirement::new("karpenter.sh/capacity-type", Operator::In, &["spot"])];
        assert_eq!(drift_reason(&input(&labels, &spot, &amis)), None);

        let mut changed = input(&labels, &spot, &amis);
        changed.current_nodepool_hash = ("bbb", "v1");
        assert_eq!(drift_reason(&changed), Some("NodePoolDrifted"));
        changed.current_nodepool_hash = ("bbb", "v2");
        assert_eq!(drift_reason(&changed), None, "another hash version is re-stamped, not drifted");

        let mut class = input(&labels, &spot, &amis);
        class.current_nodeclass_hash = Some(("ddd", "v1"));
        assert_eq!(drift_reason(&class), Some("NodeClassDrifted"));

        let on_demand = [Requirement::new("karpenter.sh/capacity-type", Operator::In, &["on-demand"])];
        assert_eq!(drift_reason(&input(&labels, &on_demand, &amis)), Some("RequirementsDrifted"));
        let unknown_key = [Requirement::new("karpenter.k8s.aws/instance-family", Operator::In, &["m5"])];
        assert_eq!(drift_reason(&input(&labels, &unknown_key, &amis)), None);

        let newer = vec!["ami-2".to_string()];
        assert_eq!(drift_reason(&input(&labels, &spot, &newer)), Some("AMIDrift"));
        assert_eq!(drift_reason(&input(&labels, &spot, &[])), None, "no AMI resolved yet: not judged");

        let subnets = vec!["subnet-1".to_string(), "subnet-9".to_string()];
        let groups = vec!["sg-1".to_string(), "sg-2".to_string()];
        let mut placed = input(&labels, &spot, &amis);
        placed.subnets = &subnets;
        placed.class_security_groups = &groups;
        assert_eq!(drift_reason(&placed), None, "same subnet, same groups in another order");
        let moved = vec!["subnet-9".to_string()];
        placed.subnets = &moved;
        assert_eq!(drift_reason(&placed), Some("SubnetDrift"));
        placed.subnets = &subnets;
        let fewer = vec!["sg-1".to_string()];
        placed.class_security_groups = &fewer;
        assert_eq!(drift_reason(&placed), Some("SecurityGroupDrift"));
        placed.security_groups = None;
        assert_eq!(drift_reason(&placed), None, "launched before nodesmith recorded them: not judged");
    }
}
