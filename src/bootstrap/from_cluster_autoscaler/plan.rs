//! The pure half of the move from Cluster Autoscaler: which nodes stay for the controller, which are drained and
//! in what order, and how large the NodePool must be to hold what the node groups could hold.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One Auto Scaling group whose instances are nodes of the cluster (an EKS managed node group's, or a
/// self-managed one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeGroup {
    /// The Auto Scaling group.
    pub name: String,
    /// The EKS managed node group it backs, if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodegroup: Option<String>,
    pub min_size: i32,
    pub max_size: i32,
    pub desired: i32,
    /// Its instances in service, by id.
    pub instances: Vec<String>,
    /// The instance types it launches.
    pub instance_types: Vec<String>,
}

/// A node of a group, as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupNode {
    pub name: String,
    pub group: String,
    pub instance_id: String,
    pub zone: String,
    /// RFC 3339, for a stable order.
    pub created: String,
}

/// The nodes left to the groups for the controller itself (at most `keep`, in as many zones as possible, the
/// oldest first in each zone), and the rest, to drain one at a time, oldest first.
pub fn choose(nodes: &[GroupNode], keep: usize) -> (Vec<String>, Vec<String>) {
    let mut by_age: Vec<&GroupNode> = nodes.iter().collect();
    by_age.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    let mut kept: Vec<&GroupNode> = Vec::new();
    let mut zones: BTreeSet<&str> = BTreeSet::new();
    // One per zone first, then the oldest of the rest.
    for node in &by_age {
        if kept.len() < keep && zones.insert(node.zone.as_str()) {
            kept.push(node);
        }
    }
    for node in &by_age {
        if kept.len() < keep && !kept.iter().any(|k| k.name == node.name) {
            kept.push(node);
        }
    }
    let kept_names: Vec<String> = kept.iter().map(|n| n.name.clone()).collect();
    let drained = by_age.iter().filter(|n| !kept_names.contains(&n.name)).map(|n| n.name.clone()).collect();
    (kept_names, drained)
}

/// The NodePool limits that hold what the groups could grow to: each group at its maximum size (or more, if it
/// holds more now), of its largest instance type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub cpu: u64,
    pub memory_mib: u64,
}

/// `size_of` gives an instance type's vCPUs and memory (MiB), `None` when unknown.
pub fn limits_for(groups: &[NodeGroup], size_of: impl Fn(&str) -> Option<(u32, u64)>) -> Result<Limits, String> {
    let mut limits = Limits { cpu: 0, memory_mib: 0 };
    for group in groups {
        let mut largest: Option<(u32, u64)> = None;
        for name in &group.instance_types {
            let size = size_of(name).ok_or_else(|| format!("group {}: instance type {name} is unknown", group.name))?;
            largest = largest.max(Some(size));
        }
        let Some((vcpus, memory_mib)) = largest else {
            return Err(format!("group {} names no instance type", group.name));
        };
        let count = u64::try_from(group.max_size.max(group.desired)).unwrap_or(0);
        limits.cpu += count * u64::from(vcpus);
        limits.memory_mib += count * memory_mib;
    }
    Ok(limits)
}

/// Whether `current` (a NodePool's `spec.limits`, as quantities) already holds `wanted`: a limit absent holds
/// anything.
pub fn holds(current: &BTreeMap<String, String>, wanted: Limits) -> bool {
    use crate::catalog::resources::{ResourceName, parse_quantity};
    let at_least = |key: &str, resource: ResourceName, value: u64| {
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        current.get(key).is_none_or(|q| parse_quantity(q, resource).is_ok_and(|have| have >= value))
    };
    at_least("cpu", ResourceName::Cpu, wanted.cpu.saturating_mul(1000))
        && at_least("memory", ResourceName::Memory, wanted.memory_mib.saturating_mul(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, zone: &str, created: &str) -> GroupNode {
        GroupNode {
            name: name.into(),
            group: "workers".into(),
            instance_id: format!("i-{name}"),
            zone: zone.into(),
            created: created.into(),
        }
    }

    #[test]
    fn two_nodes_stay_in_two_zones_and_the_rest_drain_oldest_first() {
        let nodes = [
            node("a1", "us-east-1a", "2026-01-01T00:00:00Z"),
            node("a2", "us-east-1a", "2026-01-02T00:00:00Z"),
            node("b1", "us-east-1b", "2026-01-03T00:00:00Z"),
            node("a3", "us-east-1a", "2026-01-04T00:00:00Z"),
        ];
        let (kept, drained) = choose(&nodes, 2);
        assert_eq!(kept, ["a1", "b1"], "one per zone before a second in one");
        assert_eq!(drained, ["a2", "a3"]);
        let (kept, drained) = choose(&nodes[..1], 2);
        assert_eq!((kept.len(), drained.len()), (1, 0), "fewer nodes than kept: nothing drains");
        let (kept, drained) = choose(&nodes, 0);
        assert_eq!((kept.len(), drained.len()), (0, 4));
    }

    fn group(name: &str, max: i32, desired: i32, types: &[&str]) -> NodeGroup {
        NodeGroup {
            name: name.into(),
            nodegroup: None,
            min_size: 0,
            max_size: max,
            desired,
            instances: vec![],
            instance_types: types.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn limits_hold_every_group_at_its_largest_type_and_size() {
        let types = BTreeMap::from([("m5.large", (2, 8192)), ("m5.xlarge", (4, 16384))]);
        let size_of = |name: &str| types.get(name).copied();
        let groups = [group("a", 10, 3, &["m5.large", "m5.xlarge"]), group("b", 2, 5, &["m5.large"])];
        let limits = limits_for(&groups, size_of).expect("known types");
        assert_eq!(limits, Limits { cpu: 10 * 4 + 5 * 2, memory_mib: 10 * 16384 + 5 * 8192 });
        assert!(limits_for(&[group("c", 1, 1, &["x9.huge"])], size_of).is_err());
        let current = BTreeMap::from([("cpu".to_string(), "1000".to_string())]);
        assert!(holds(&current, limits), "no memory limit, and CPU enough");
        let current = BTreeMap::from([("cpu".to_string(), "20".to_string())]);
        assert!(!holds(&current, limits));
    }
}
