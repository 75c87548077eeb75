//! What disruption decides over: the cluster as plain data (no Kubernetes or AWS types), and what it decides.

use std::collections::HashSet;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::budgets::Budget;
use crate::catalog::instance_type::InstanceTypeInfo;
use crate::catalog::pricing::PriceTable;
use crate::catalog::{CapacityType, OfferingKey};
use crate::scheduling::{DaemonSetPod, ExistingNode, NewNode, NodePoolSpec, PodRequest};

/// Why a node is voluntarily disrupted; budgets may be scoped to one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Reason {
    Empty,
    Underutilized,
    Drifted,
}

impl Reason {
    pub const ALL: [Reason; 3] = [Reason::Empty, Reason::Underutilized, Reason::Drifted];

    /// As Karpenter spells it in budgets, metrics and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Underutilized => "Underutilized",
            Self::Drifted => "Drifted",
        }
    }

    /// The metric label value Karpenter uses (`empty`, `underutilized`, `drifted`).
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Underutilized => "underutilized",
            Self::Drifted => "drifted",
        }
    }
}

/// `spec.disruption.consolidationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Policy {
    WhenEmpty,
    WhenEmptyOrUnderutilized,
    /// Underutilized nodes only where the savings outweigh the disruption (Karpenter 1.14: score ≥ 1/2).
    Balanced,
}

impl Policy {
    /// As the NodePool spells it, and Karpenter's `policy` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WhenEmpty => "WhenEmpty",
            Self::WhenEmptyOrUnderutilized => "WhenEmptyOrUnderutilized",
            Self::Balanced => "Balanced",
        }
    }
}

/// What draining a node costs before any pod is counted (cordon, drain, API calls): Karpenter's
/// `PerNodeBaseDisruptionCost`.
pub const PER_NODE_DISRUPTION_COST: f64 = 1.0;

/// A NodePool's disruption settings.
#[derive(Debug, Clone)]
pub struct PoolPolicy {
    pub name: String,
    pub policy: Policy,
    /// None: `consolidateAfter: Never`.
    pub consolidate_after: Option<Duration>,
    pub budgets: Vec<Budget>,
}

/// A pod on a candidate node that would have to move.
#[derive(Debug, Clone)]
pub struct MovablePod {
    pub request: PodRequest,
    /// Why it cannot be moved voluntarily (do-not-disrupt, a PodDisruptionBudget that allows no eviction, no
    /// controller to recreate it); None when it can.
    pub blocker: Option<String>,
    /// What evicting it costs (Karpenter's eviction cost: 1, raised by priority and pod-deletion-cost).
    pub eviction_cost: f64,
}

/// One node nodesmith manages (a NodeClaim, with its Node once registered).
#[derive(Debug, Clone)]
pub struct ManagedNode {
    /// The NodeClaim's name: what commands name.
    pub claim: String,
    pub node: Option<String>,
    pub nodepool: String,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    pub price: f64,
    pub created: Timestamp,
    /// When it became Initialized; None while it is not.
    pub initialized_at: Option<Timestamp>,
    /// `status.lastPodEventTime`.
    pub last_pod_event: Option<Timestamp>,
    /// The last time a pod left it (finished, deleted, or began terminating); where the controller cannot tell
    /// (a pod event from before it began looking), its last pod event. None when no pod has left it.
    pub last_pod_departure: Option<Timestamp>,
    /// Being deleted already.
    pub deleting: bool,
    /// Its Node is Ready (a NotReady node counts against budgets as if it were being disrupted).
    pub ready: bool,
    /// Pods have just been planned onto it: it is about to be used.
    pub nominated: bool,
    /// `karpenter.sh/do-not-disrupt: "true"` on the Node or NodeClaim.
    pub do_not_disrupt: bool,
    /// Launched by consolidation to replace other nodes.
    pub consolidation_replacement: bool,
    /// Why it is drifted (`NodePoolDrifted`, `AMIDrift`, …); None when it is not.
    pub drifted: Option<String>,
    /// Pods that would have to move (DaemonSet, mirror and finished pods are not among them).
    pub pods: Vec<MovablePod>,
    /// The node as room for other nodes' pods: its allocatable minus what its pods request.
    pub room: ExistingNode,
}

impl ManagedNode {
    /// What moving this node's pods costs, Karpenter's way: the per-node base plus each pod's eviction cost (none
    /// below zero).
    pub fn reschedule_cost(&self) -> f64 {
        PER_NODE_DISRUPTION_COST + self.pods.iter().map(|p| p.eviction_cost.max(0.0)).sum::<f64>()
    }

    /// Dollars an hour its removal saves per unit of disruption: consolidation looks at the highest first.
    pub fn savings_ratio(&self) -> f64 {
        self.price / self.reschedule_cost()
    }

    /// The last moment something happened to it that resets `consolidateAfter`.
    pub fn quiet_since(&self) -> Option<Timestamp> {
        match (self.last_pod_event, self.initialized_at) {
            (Some(event), Some(initialized)) => Some(event.max(initialized)),
            (None, initialized) => initialized,
            (event, None) => event,
        }
    }
}

/// How consolidation may act, from the controller's flags.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Replace a spot node with a cheaper spot node (Karpenter's SpotToSpotConsolidation feature gate).
    pub spot_to_spot: bool,
    /// A replacement must cost at most `1 - min_savings` of what it replaces (0.05: save at least 5%).
    pub min_savings: f64,
    /// Multi-node consolidation looks at most at this many candidates (Karpenter: 100).
    pub max_multi_node_candidates: usize,
    /// Multi-node consolidation stops looking after this long in one pass, single-node after three times as long
    /// (Karpenter's 1 and 3 minutes); the rest waits for the next pass, and the timeout is counted.
    pub consolidation_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            spot_to_spot: false,
            min_savings: 0.05,
            max_multi_node_candidates: 100,
            consolidation_timeout: Duration::from_secs(60),
        }
    }
}

/// The cluster at one moment.
pub struct Snapshot<'a> {
    pub now: Timestamp,
    pub pools: &'a [PoolPolicy],
    pub nodes: &'a [ManagedNode],
    /// Nodes nodesmith does not manage, as room.
    pub other_room: &'a [ExistingNode],
    /// NodeClaims still launching (no Node yet), as room less what is nominated to them. Not initialized: no
    /// candidate's pod is planned onto them, as capacity that may never come is no place to move a running pod.
    pub in_flight: &'a [ExistingNode],
    /// Pods waiting for a place and nominated nowhere yet. Every simulation plans them first, as the provisioner
    /// will, so that consolidation never takes the room they need and never runs while they need new nodes.
    pub pending: &'a [PodRequest],
    /// What a replacement may be: the ready NodePools as the scheduler sees them, and the catalog.
    pub nodepools: &'a [NodePoolSpec],
    pub instance_types: &'a [InstanceTypeInfo],
    pub prices: &'a PriceTable,
    pub daemonsets: &'a [DaemonSetPod],
    pub unavailable: &'a HashSet<OfferingKey>,
    pub settings: Settings,
}

impl Snapshot<'_> {
    pub fn pool(&self, name: &str) -> Option<&PoolPolicy> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// When `consolidateAfter` will have passed since the node's last pod event (or its initialization); None when
    /// its NodePool never consolidates or the node has not started.
    pub fn consolidatable_from(&self, node: &ManagedNode) -> Option<Timestamp> {
        node.quiet_since()?.checked_add(self.consolidate_after(node)?).ok()
    }

    /// The node's NodePool's `consolidateAfter`; None when it never consolidates.
    fn consolidate_after(&self, node: &ManagedNode) -> Option<jiff::SignedDuration> {
        jiff::SignedDuration::try_from(self.pool(&node.nodepool)?.consolidate_after?).ok()
    }

    /// Whether the node lost pods within its NodePool's `consolidateAfter`: consolidation plans no other node's
    /// pods onto it. A scale-down leaves holes; the node may be about to go itself, which moves fewer pods than
    /// filling it would. A node that only gained pods (a consolidation's move, a replacement just up) is room
    /// like any other, so one command's moves do not hold the next back for `consolidateAfter`.
    pub fn settling(&self, node: &ManagedNode) -> bool {
        let Some(after) = self.consolidate_after(node) else { return false };
        !node.deleting
            && node.last_pod_departure.and_then(|left| left.checked_add(after).ok()).is_some_and(|t| t > self.now)
    }
}

/// Which method found a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Method {
    Drift,
    Emptiness,
    MultiNodeConsolidation,
    SingleNodeConsolidation,
}

impl Method {
    /// The reason of the commands this method gives.
    pub fn reason(self) -> Reason {
        match self {
            Self::Drift => Reason::Drifted,
            Self::Emptiness => Reason::Empty,
            Self::MultiNodeConsolidation | Self::SingleNodeConsolidation => Reason::Underutilized,
        }
    }

    /// Whether its commands wait the validation delay (15 s) and are checked again before they run.
    /// Consolidation's do (emptiness included): a choice to remove a node rests on the cluster holding still. A
    /// drifted node goes whatever comes next, so a drift command is checked again at once and runs; Karpenter's drift
    /// has no validation delay either, and with one a rollout took 15 s a node.
    pub fn waits_before_it_runs(self) -> bool {
        !matches!(self, Self::Drift)
    }

    /// Karpenter's `consolidation_type` metric label.
    pub fn consolidation_type(self) -> &'static str {
        match self {
            Self::Drift => "",
            Self::Emptiness => "empty",
            Self::MultiNodeConsolidation => "multi",
            Self::SingleNodeConsolidation => "single",
        }
    }
}

/// One thing to do: delete `candidates` (NodeClaim names), after launching `replacements` and seeing them
/// initialized.
#[derive(Debug, Clone, Serialize)]
pub struct Command {
    pub method: Method,
    pub reason: Reason,
    pub candidates: Vec<String>,
    pub replacements: Vec<NewNode>,
    /// $/h the candidates cost.
    pub candidates_price: f64,
    /// $/h the replacements cost (their cheapest option).
    pub replacements_price: f64,
    /// Candidates that joined a single-node move after it was found (`decide::joined_by_others`); 0 for a command
    /// a method found whole. Logged, so a run's log tells the joins from multi-node's own commands.
    pub joined: usize,
}

impl Command {
    /// `delete` or `replace`, as Karpenter's decision metric names it.
    pub fn decision(&self) -> &'static str {
        if self.replacements.is_empty() { "delete" } else { "replace" }
    }
}

/// A node a method looked at and left alone, and why, for an Event a person can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    pub claim: String,
    pub reason: String,
}

/// What one pass decided.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Decision {
    /// At most one command per pass; the next pass sees its effect.
    pub command: Option<Command>,
    /// Nodes a method considered and could not disrupt, with why.
    pub blocked: Vec<Blocked>,
    /// Nodes eligible per reason (before budgets): the `eligible_nodes` metric.
    pub eligible: Vec<(Reason, usize)>,
    /// Disruptions each NodePool's budgets allow now, per reason: the `allowed_disruptions` metric.
    pub allowed: Vec<(String, Reason, usize)>,
    /// Consolidation methods that ran out of time before every candidate was evaluated.
    pub timed_out: Vec<Method>,
    /// Nodes of each NodePool counted against its budgets now (being deleted or not ready), per reason.
    pub consuming: Vec<(String, Reason, usize)>,
    /// How long each method evaluated took, in the order they ran.
    #[serde(skip)]
    pub evaluated: Vec<(Method, std::time::Duration)>,
    /// Consolidation moves weighed this pass, as Karpenter counts them (`karpenter_consolidation_moves_total`,
    /// `_score`).
    pub moves: Vec<WeighedMove>,
}

/// One consolidation move weighed for one NodePool among its candidates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeighedMove {
    pub nodepool: String,
    pub policy: Policy,
    /// Whether the move as a whole was approved.
    pub approved: bool,
    /// The pool's score and whether it approved, where the pool is Balanced (other policies are not scored).
    pub score: Option<(f64, bool)>,
}
