//! Names of the AWS resources nodesmith creates (setup's, and the controller's instance profiles), derived from
//! the cluster name and kept within AWS's limits: a name that would be too long is cut and given a short hash of
//! the full name, so it stays unique and the same on every run.

use sha2::{Digest, Sha256};

/// One kind of AWS name: its length limit and the characters it allows.
#[derive(Debug, Clone, Copy)]
pub struct NameRule {
    pub what: &'static str,
    pub max_len: usize,
    pub allowed: fn(char) -> bool,
}

pub const SQS_QUEUE: NameRule =
    NameRule { what: "SQS queue", max_len: 80, allowed: |c| c.is_ascii_alphanumeric() || c == '-' || c == '_' };
pub const EVENTBRIDGE_RULE: NameRule = NameRule {
    what: "EventBridge rule",
    max_len: 64,
    allowed: |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'),
};
pub const IAM_ROLE: NameRule = NameRule {
    what: "IAM role",
    max_len: 64,
    allowed: |c| c.is_ascii_alphanumeric() || matches!(c, '+' | '=' | ',' | '.' | '@' | '-' | '_'),
};
pub const IAM_POLICY: NameRule = NameRule { what: "IAM policy", max_len: 128, ..IAM_ROLE };
pub const INSTANCE_PROFILE: NameRule = NameRule { what: "instance profile", max_len: 128, ..IAM_ROLE };

/// Characters of the hash suffix added to a shortened name.
const HASH_LEN: usize = 8;

/// `base` made valid under `rule`: disallowed characters become `-`; if too long, cut and suffixed with
/// `-<hash of base>`.
pub fn fit(rule: NameRule, base: &str) -> String {
    let cleaned: String = base.chars().map(|c| if (rule.allowed)(c) { c } else { '-' }).collect();
    if cleaned.len() <= rule.max_len {
        return cleaned;
    }
    let digest = Sha256::digest(base.as_bytes());
    let hash: String = digest.iter().take(HASH_LEN / 2).map(|b| format!("{b:02x}")).collect();
    let keep = rule.max_len - HASH_LEN - 1;
    format!("{}-{hash}", cleaned[..keep].trim_end_matches('-'))
}

/// Every name setup gives, for one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNames {
    pub node_role: String,
    pub instance_profile: String,
    pub controller_role: String,
    pub queue: String,
    pub rule_prefix: String,
}

impl ClusterNames {
    /// IAM is global, so IAM names carry the region: the same cluster name in two regions of one account gets two
    /// sets of roles, policies and profiles, set up and torn down independently. Queues and rules are regional.
    pub fn for_cluster(cluster: &str, region: &str) -> Self {
        Self {
            node_role: fit(IAM_ROLE, &format!("nodesmith-node-{cluster}-{region}")),
            instance_profile: fit(INSTANCE_PROFILE, &format!("nodesmith-node-{cluster}-{region}")),
            controller_role: fit(IAM_ROLE, &format!("nodesmith-controller-{cluster}-{region}")),
            queue: fit(SQS_QUEUE, &format!("nodesmith-{cluster}")),
            rule_prefix: format!("nodesmith-{cluster}"),
        }
    }

    /// The name of the EventBridge rule for one kind of event (`spot-interruption`, …).
    pub fn rule(&self, kind: &str) -> String {
        // The kind goes first so that a shortened cluster part never cuts it off.
        fit(EVENTBRIDGE_RULE, &format!("{kind}-{}", self.rule_prefix))
    }

    /// A controller policy, numbered (policies are split to stay under IAM's size limit).
    pub fn controller_policy(&self, part: usize) -> String {
        fit(IAM_POLICY, &format!("{}-{part}", self.controller_role))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn short_names_are_kept_as_they_are() {
        let names = ClusterNames::for_cluster("demo", "us-east-1");
        assert_eq!(names.queue, "nodesmith-demo");
        assert_eq!(names.node_role, "nodesmith-node-demo-us-east-1");
        assert_eq!(names.controller_role, "nodesmith-controller-demo-us-east-1");
        assert_eq!(names.rule("spot-interruption"), "spot-interruption-nodesmith-demo");
    }

    #[test]
    fn long_cluster_names_are_cut_with_a_hash_and_stay_distinct() {
        let a = ClusterNames::for_cluster(&format!("{}-a", "x".repeat(90)), "us-east-1");
        let b = ClusterNames::for_cluster(&format!("{}-b", "x".repeat(90)), "us-east-1");
        assert_eq!(a.queue.len(), 80);
        assert!(a.node_role.len() <= 64);
        assert_ne!(a.queue, b.queue);
        assert_ne!(a.rule("health"), b.rule("health"));
        assert!(a.rule("health").starts_with("health-nodesmith-"));
    }

    #[test]
    fn the_same_cluster_in_two_regions_gets_two_sets_of_iam_names() {
        let east = ClusterNames::for_cluster("demo", "us-east-1");
        let west = ClusterNames::for_cluster("demo", "us-west-2");
        assert_ne!(east.node_role, west.node_role);
        assert_ne!(east.controller_role, west.controller_role);
        assert_ne!(east.instance_profile, west.instance_profile);
        assert_ne!(east.controller_policy(1), west.controller_policy(1));
        // A long cluster name is cut before the region would be: the hash keeps the two apart.
        let long = "c".repeat(60);
        assert_ne!(
            ClusterNames::for_cluster(&long, "us-east-1").node_role,
            ClusterNames::for_cluster(&long, "us-west-2").node_role
        );
    }

    proptest! {
        #[test]
        fn every_name_fits_its_rule(cluster in "[a-zA-Z][a-zA-Z0-9_.-]{0,99}", region in "[a-z]{2}(-gov)?-[a-z]{4,9}-[1-9]") {
            let names = ClusterNames::for_cluster(&cluster, &region);
            let checks = [
                (SQS_QUEUE, names.queue.clone()),
                (IAM_ROLE, names.node_role.clone()),
                (IAM_ROLE, names.controller_role.clone()),
                (INSTANCE_PROFILE, names.instance_profile.clone()),
                (EVENTBRIDGE_RULE, names.rule("capacity-reservation-interruption")),
                (IAM_POLICY, names.controller_policy(3)),
            ];
            for (rule, name) in checks {
                prop_assert!(name.len() <= rule.max_len, "{} {} too long", rule.what, name);
                prop_assert!(name.chars().all(rule.allowed), "{} {} has a bad character", rule.what, name);
                prop_assert!(!name.is_empty());
            }
            // The same cluster always gets the same names.
            prop_assert_eq!(names, ClusterNames::for_cluster(&cluster, &region));
        }
    }
}
