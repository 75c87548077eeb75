//! The scheduler's answer: nodes to launch, pods that go to existing nodes, and pods that fit nowhere (with why).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::CapacityType;
use crate::catalog::resources::Resources;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub new_nodes: Vec<NewNode>,
    /// Existing node name → the pods planned onto it.
    pub existing_placements: BTreeMap<String, Vec<String>>,
    pub unschedulable: Vec<UnschedulablePod>,
}

impl Plan {
    pub fn total_price_per_hour(&self) -> f64 {
        self.new_nodes.iter().map(|n| n.price_per_hour).sum()
    }
}

/// One NodeClaim to create.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewNode {
    pub nodepool: String,
    /// The cheapest option, and where and how it is cheapest.
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    pub price_per_hour: f64,
    /// `namespace/name` of each pod planned onto it.
    pub pods: Vec<String>,
    /// What those pods request in total.
    pub requests: Resources,
    /// Allocatable of `instance_type`, after DaemonSet overhead.
    pub allocatable: Resources,
    /// Every type that holds all of `pods`, cheapest first, at most 60 (more only where `minValues` needs them).
    pub instance_type_options: Vec<String>,
    pub zones: Vec<String>,
    pub capacity_types: Vec<CapacityType>,
    /// Labels the node will carry beyond its instance type's: the NodePool's, zone and capacity type.
    pub labels: BTreeMap<String, String>,
    /// Its NodePool's `minValues` were relaxed for it (BestEffort): its options have fewer distinct values.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub min_values_relaxed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnschedulablePod {
    pub pod: String,
    /// Every NodePool's refusal in one sentence (what Events and logs say).
    pub reason: String,
    /// Each NodePool and the first thing that rules it out.
    pub nodepools: Vec<NodePoolRefusal>,
}

impl UnschedulablePod {
    pub fn new(pod: String, nodepools: Vec<NodePoolRefusal>) -> Self {
        let reason = if nodepools.is_empty() {
            "no NodePool to launch a node from, and no existing node fits".to_string()
        } else {
            nodepools.iter().map(|r| format!("NodePool {}: {}", r.nodepool, r.reason)).collect::<Vec<_>>().join("; ")
        };
        Self { pod, reason, nodepools }
    }
}

/// Why a NodePool cannot give a pod a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePoolRefusal {
    pub nodepool: String,
    pub reason: String,
}
